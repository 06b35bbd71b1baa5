//! Billing cycles: one per due period of a subscription, with its attempts.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::transactions::{self, TransactionView};
use crate::error::{Error, Result};
use crate::money::format_amount;
use crate::paylinks::{self, CollectionMethod, LinkView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "cycle_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CycleStatus {
    Pending,
    Retrying,
    Succeeded,
    Failed,
    Error,
    Cancelled,
}

/// A calendar period, or the proration of a change inside one (docs/amendments.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "cycle_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CycleKind {
    Period,
    Proration,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BillingCycle {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub subscription_id: Uuid,
    pub sequence: i32,
    pub kind: CycleKind,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub amount: Decimal,
    pub currency: String,
    pub status: CycleStatus,
    pub attempts: i32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CycleView {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub sequence: i32,
    /// `period`, or `proration` for the prorated charge of a change (docs/amendments.md).
    pub kind: CycleKind,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub amount: String,
    pub currency: String,
    pub status: CycleStatus,
    pub attempts: i32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    /// Its attempts, oldest first.
    pub transactions: Vec<TransactionView>,
    /// How the cycle is collected: its subscription's method (docs/payment-links.md).
    pub collection_method: CollectionMethod,
    /// The cycle's latest payment link, for a `send_payment_link` subscription's cycle
    /// or one that got a fresh link; `null` otherwise.
    pub payment_link: Option<LinkView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CycleView {
    fn new(
        c: &BillingCycle,
        transactions: Vec<TransactionView>,
        collection_method: CollectionMethod,
        payment_link: Option<LinkView>,
    ) -> CycleView {
        CycleView {
            id: c.id,
            subscription_id: c.subscription_id,
            sequence: c.sequence,
            kind: c.kind,
            period_start: c.period_start,
            period_end: c.period_end,
            due_at: c.due_at,
            amount: format_amount(c.amount, &c.currency),
            currency: c.currency.clone(),
            status: c.status,
            attempts: c.attempts,
            next_retry_at: c.next_retry_at,
            failure_code: c.failure_code.clone(),
            transactions,
            collection_method,
            payment_link,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Cycles with their transactions, in the order given.
pub async fn with_transactions(conn: &mut PgConnection, cycles: &[BillingCycle]) -> Result<Vec<CycleView>> {
    let ids: Vec<Uuid> = cycles.iter().map(|c| c.id).collect();
    let txns = transactions::for_cycles(conn, &ids).await?;
    let methods = paylinks::methods_of(conn, &ids).await?;
    let links = paylinks::latest_of(conn, &ids).await?;
    Ok(cycles
        .iter()
        .map(|c| {
            let mine = txns.iter().filter(|t| t.billing_cycle_id == Some(c.id)).map(TransactionView::from).collect();
            let method = methods.get(&c.id).copied().unwrap_or(CollectionMethod::ChargeAutomatically);
            CycleView::new(c, mine, method, links.get(&c.id).map(|l| l.view(c.status)))
        })
        .collect())
}

/// Cycles of the merchant (`id`), or of one subscription after a sequence.
async fn select(
    conn: &mut PgConnection,
    merchant_id: Option<Uuid>,
    id: Option<Uuid>,
    subscription_id: Option<Uuid>,
    after_sequence: Option<i32>,
    limit: i64,
) -> Result<Vec<BillingCycle>> {
    Ok(sqlx::query_as!(
        BillingCycle,
        r#"SELECT id, merchant_id, subscription_id, sequence, kind AS "kind: CycleKind", period_start, period_end,
            due_at, amount, currency,
            status AS "status: CycleStatus", attempts, next_retry_at, failure_code, created_at, updated_at
         FROM billing_cycles
         WHERE ($1::uuid IS NULL OR merchant_id = $1) AND ($2::uuid IS NULL OR id = $2)
           AND ($3::uuid IS NULL OR subscription_id = $3) AND ($4::int IS NULL OR sequence > $4)
         ORDER BY sequence LIMIT $5"#,
        merchant_id,
        id,
        subscription_id,
        after_sequence,
        limit,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<BillingCycle> {
    select(conn, Some(merchant_id), Some(id), None, None, 1).await?.pop().ok_or(Error::NotFound("billing cycle"))
}

/// Cycles by id, in no particular order (webhook snapshots).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<BillingCycle>> {
    Ok(sqlx::query_as!(
        BillingCycle,
        r#"SELECT id, merchant_id, subscription_id, sequence, kind AS "kind: CycleKind", period_start, period_end,
            due_at, amount, currency,
            status AS "status: CycleStatus", attempts, next_retry_at, failure_code, created_at, updated_at
         FROM billing_cycles WHERE id = ANY($1)"#,
        ids,
    )
    .fetch_all(conn)
    .await?)
}

/// A subscription's cycles ordered by sequence, after `after_sequence`.
pub async fn list(
    conn: &mut PgConnection,
    subscription_id: Uuid,
    after_sequence: Option<i32>,
    limit: i64,
) -> Result<Vec<BillingCycle>> {
    select(conn, None, None, Some(subscription_id), after_sequence, limit).await
}
