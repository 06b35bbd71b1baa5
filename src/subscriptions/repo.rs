//! Subscription storage.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CollectionMethod, Subscription, SubscriptionStatus};
use crate::billing::calendar::IntervalUnit;
use crate::error::{Error, Result};

/// A statement that yields whole subscriptions (with their customer's account id):
/// `SELECT` every column `FROM` the join, then `$tail`, checked as one query.
macro_rules! query_subscriptions {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Subscription,
            r#"SELECT s.id, s.merchant_id, s.customer_id, c.customer_account_id, s.plan_id, s.description, s.amount,
            s.currency, s.interval_unit AS "interval_unit: IntervalUnit", s.interval_count, s.grace_period_days,
            s.retry_schedule_hours, s.start_at, s.end_at, s.charge_hour, s.payment_method, s.trial_days,
            s.authorized_limit, s.partner_reference, s.metadata, s.status AS "status: SubscriptionStatus",
            s.anchor_at, s.anchor_sequence, s.next_sequence, s.next_charge_at, s.current_period_start,
            s.current_period_end, s.trial_end_at, s.paused_at, s.resume_at, s.cancel_at, s.cancelled_at,
            s.cancellation_reason, s.test_clock_id, s.created_at, s.updated_at, s.payment_method_brand,
            s.payment_method_last4, s.payment_method_exp_month, s.payment_method_exp_year,
            s.collection_method AS "collection_method: CollectionMethod", s.days_until_due
         FROM subscriptions s JOIN customers c ON c.id = s.customer_id"#
                + $tail
            $(, $arg)*
        )
    };
}

/// The merchant's subscriptions matching `f` (or the one `id`), in id order.
async fn select(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Option<Uuid>,
    f: &SubscriptionFilter,
) -> Result<Vec<Subscription>> {
    Ok(query_subscriptions!(
        r#" WHERE s.merchant_id = $1
           AND ($2::uuid IS NULL OR s.id = $2)
           AND ($3::subscription_status IS NULL OR s.status = $3)
           AND ($4::text IS NULL OR c.customer_account_id = $4)
           AND ($5::uuid IS NULL OR s.plan_id = $5)
           AND ($6::uuid IS NULL OR s.id > $6)
         ORDER BY s.id LIMIT $7"#,
        merchant_id,
        id,
        f.status as _,
        f.customer_account_id,
        f.plan_id,
        f.after,
        f.limit,
    )
    .fetch_all(conn)
    .await?)
}

/// Lock subscriptions for a state change, in id order (level 1 of the lock order,
/// docs/lock-order.md); `merchant` scopes requests, jobs pass `None`.
pub async fn lock_many(conn: &mut PgConnection, ids: &[Uuid], merchant: Option<Uuid>) -> Result<Vec<Subscription>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    Ok(query_subscriptions!(
        r#" WHERE s.id = ANY($1) AND ($2::uuid IS NULL OR s.merchant_id = $2)
         ORDER BY s.id FOR NO KEY UPDATE OF s"#,
        &ids,
        merchant,
    )
    .fetch_all(conn)
    .await?)
}

/// Subscriptions by id, in no particular order (webhook snapshots).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Subscription>> {
    Ok(query_subscriptions!(" WHERE s.id = ANY($1)", ids).fetch_all(conn).await?)
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Subscription> {
    select(conn, merchant_id, Some(id), &SubscriptionFilter::one()).await?.pop().ok_or(Error::NotFound("subscription"))
}

/// Lock the row for a state change (merchant-scoped).
pub async fn lock(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Subscription> {
    lock_many(conn, &[id], Some(merchant_id)).await?.pop().ok_or(Error::NotFound("subscription"))
}

/// Lock by id alone, for jobs (which carry no merchant). `None` when it does not exist.
pub async fn lock_any(conn: &mut PgConnection, id: Uuid) -> Result<Option<Subscription>> {
    Ok(lock_many(conn, &[id], None).await?.pop())
}

pub struct SubscriptionFilter {
    pub status: Option<SubscriptionStatus>,
    pub customer_account_id: Option<String>,
    pub plan_id: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl SubscriptionFilter {
    fn one() -> SubscriptionFilter {
        SubscriptionFilter { status: None, customer_account_id: None, plan_id: None, after: None, limit: 1 }
    }
}

pub async fn list(conn: &mut PgConnection, merchant_id: Uuid, f: &SubscriptionFilter) -> Result<Vec<Subscription>> {
    select(conn, merchant_id, None, f).await
}

/// Write back every mutable field of `s` (the caller holds the row lock).
pub async fn save(conn: &mut PgConnection, s: &Subscription) -> Result<Subscription> {
    let id = sqlx::query_scalar!(
        "UPDATE subscriptions SET description = $2, payment_method = $3, authorized_limit = $4,
            metadata = $5, status = $6, anchor_at = $7, anchor_sequence = $8, next_sequence = $9,
            next_charge_at = $10, current_period_start = $11, current_period_end = $12,
            trial_end_at = $13, paused_at = $14, resume_at = $15, cancel_at = $16,
            cancelled_at = $17, cancellation_reason = $18, end_at = $19, enqueued_until = NULL,
            payment_method_brand = $20, payment_method_last4 = $21, payment_method_exp_month = $22,
            payment_method_exp_year = $23, charge_hour = $24
         WHERE id = $1 RETURNING id",
        s.id,
        s.description,
        s.payment_method,
        s.authorized_limit,
        s.metadata,
        s.status as _,
        s.anchor_at,
        s.anchor_sequence,
        s.next_sequence,
        s.next_charge_at,
        s.current_period_start,
        s.current_period_end,
        s.trial_end_at,
        s.paused_at,
        s.resume_at,
        s.cancel_at,
        s.cancelled_at,
        s.cancellation_reason,
        s.end_at,
        s.payment_method_brand,
        s.payment_method_last4,
        s.payment_method_exp_month,
        s.payment_method_exp_year,
        s.charge_hour,
    )
    .fetch_one(&mut *conn)
    .await?;
    get(conn, s.merchant_id, id).await
}

/// The id of the merchant's subscription that already has this partner reference.
pub async fn by_partner_reference(conn: &mut PgConnection, merchant_id: Uuid, reference: &str) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM subscriptions WHERE merchant_id = $1 AND partner_reference = $2",
        merchant_id,
        reference
    )
    .fetch_optional(conn)
    .await?)
}

/// Set the status of a subscription the caller holds locked, outside the lifecycle
/// functions: a charge outcome moving it between active and past_due.
pub async fn set_status(conn: &mut PgConnection, id: Uuid, status: SubscriptionStatus) -> Result<()> {
    sqlx::query!("UPDATE subscriptions SET status = $2 WHERE id = $1", id, status as _).execute(conn).await?;
    Ok(())
}

pub async fn has_retrying_cycle(conn: &mut PgConnection, subscription_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM billing_cycles WHERE subscription_id = $1 AND status = 'retrying') AS "exists!""#,
        subscription_id
    )
    .fetch_one(conn)
    .await?)
}

pub fn after(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> bool {
    t.is_some_and(|t| t > now)
}
