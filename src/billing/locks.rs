//! The lock order, in code (docs/lock-order.md).
//!
//! Every writer that changes more than one billing row takes its row locks parent
//! first, and within one table in id order:
//!
//! 1. subscriptions (or the payment series of a series charge),
//! 2. billing cycles,
//! 3. transactions.
//!
//! A writer may skip a level, never go back up one: two writers that share rows then
//! always wait for each other in the same direction, so they cannot deadlock. New child
//! rows (a cycle, an attempt) are inserted under their parent's lock. Scheduler claims
//! use `SKIP LOCKED` and never wait, so they stand outside the order.
//!
//! Locks are `FOR NO KEY UPDATE`, the strength an UPDATE takes itself, so the foreign
//! key checks of concurrent inserts (`FOR KEY SHARE` on the parent) do not wait on them.

use sqlx::PgConnection;
use uuid::Uuid;

use super::cycles::CycleStatus;
use super::transactions::{TransactionKind, TransactionStatus};
use crate::error::Result;
use crate::subscriptions::SubscriptionStatus;

/// A subscription row held for update.
#[derive(Debug, Clone)]
pub struct LockedSubscription {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: SubscriptionStatus,
    pub payment_method: Option<String>,
}

/// A billing cycle row held for update.
#[derive(Debug, Clone)]
pub struct LockedCycle {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub subscription_id: Uuid,
    pub status: CycleStatus,
    pub attempts: i32,
    pub amount: rust_decimal::Decimal,
    pub currency: String,
    pub next_retry_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A transaction row held for update.
#[derive(Debug, Clone)]
pub struct LockedTransaction {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub billing_cycle_id: Option<Uuid>,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub attempt: i32,
}

fn sorted(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Level 1: subscriptions, in id order.
pub async fn subscriptions(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<LockedSubscription>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(sqlx::query_as!(
        LockedSubscription,
        r#"SELECT id, merchant_id, status AS "status: SubscriptionStatus", payment_method
           FROM subscriptions WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"#,
        &sorted(ids)
    )
    .fetch_all(conn)
    .await?)
}

/// Level 2: billing cycles, in id order.
pub async fn cycles(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<LockedCycle>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(sqlx::query_as!(
        LockedCycle,
        r#"SELECT id, merchant_id, subscription_id, status AS "status: CycleStatus", attempts,
                  amount, currency, next_retry_at
           FROM billing_cycles WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"#,
        &sorted(ids)
    )
    .fetch_all(conn)
    .await?)
}

/// Level 2, every open (pending or retrying) cycle of one subscription, whose lock the
/// caller already holds.
pub async fn open_cycles_of(conn: &mut PgConnection, subscription_id: Uuid) -> Result<Vec<LockedCycle>> {
    Ok(sqlx::query_as!(
        LockedCycle,
        r#"SELECT id, merchant_id, subscription_id, status AS "status: CycleStatus", attempts,
                  amount, currency, next_retry_at
           FROM billing_cycles WHERE subscription_id = $1 AND status IN ('pending', 'retrying')
           ORDER BY id FOR NO KEY UPDATE"#,
        subscription_id
    )
    .fetch_all(conn)
    .await?)
}

/// Level 3: transactions, in id order.
pub async fn transactions(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<LockedTransaction>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(sqlx::query_as!(
        LockedTransaction,
        r#"SELECT id, merchant_id, billing_cycle_id, kind AS "kind: TransactionKind",
                  status AS "status: TransactionStatus", attempt
           FROM transactions WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"#,
        &sorted(ids)
    )
    .fetch_all(conn)
    .await?)
}

/// A cycle and its subscription, locked in order. `merchant` scopes the lookup for
/// requests; jobs pass `None`. The parent ids never change, so reading them before
/// taking the locks is safe.
pub async fn cycle(
    conn: &mut PgConnection,
    cycle_id: Uuid,
    merchant: Option<Uuid>,
) -> Result<Option<(LockedSubscription, LockedCycle)>> {
    let sub = sqlx::query_scalar!(
        "SELECT subscription_id FROM billing_cycles WHERE id = $1 AND ($2::uuid IS NULL OR merchant_id = $2)",
        cycle_id,
        merchant
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(sub) = sub else { return Ok(None) };
    let s = subscriptions(conn, &[sub]).await?.pop();
    let c = cycles(conn, &[cycle_id]).await?.pop();
    Ok(s.zip(c))
}

/// A transaction with its cycle and subscription (when it has them), locked in order.
pub async fn transaction(
    conn: &mut PgConnection,
    transaction_id: Uuid,
) -> Result<Option<(Option<(LockedSubscription, LockedCycle)>, LockedTransaction)>> {
    let cycle_id = sqlx::query_scalar!("SELECT billing_cycle_id FROM transactions WHERE id = $1", transaction_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(cycle_id) = cycle_id else { return Ok(None) };
    let parents = match cycle_id {
        Some(c) => cycle(conn, c, None).await?,
        None => None,
    };
    let t = transactions(conn, &[transaction_id]).await?.pop();
    Ok(t.map(|t| (parents, t)))
}
