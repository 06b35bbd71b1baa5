//! The lease (docs/architecture.md#the-lease): how Postgres knows that a job for a row
//! is in Redis, so that work is enqueued once and, if Redis loses it, again.
//!
//! A row that needs a job (a due subscription, a retrying cycle, a pending
//! transaction) carries `enqueued_until`, a wall-clock instant. Whoever enqueues the
//! row's job stamps it `now() + lease` in the same statement that claims or creates
//! the row; until it passes, no scheduler enqueues that row again. A job that settles
//! its row releases the lease (`NULL`) in the statement of the transition
//! (`billing::cycle_state`, `billing::transaction_state`, `subscriptions::repo::save`).
//! A lease that passes with the work still due means the job was lost: the next sweep
//! claims the row again. Leases use the database's clock (`now()`), never the billing
//! clock, so the test clock moves due dates, not timeouts.
//!
//! The claims below take rows with `FOR UPDATE SKIP LOCKED`: they never wait on a row
//! another writer holds, so they stand outside the lock order and several schedulers
//! can run at once.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::Result;

/// How long (wall-clock seconds) an enqueued job owns its row before the scheduler
/// assumes Redis lost it and enqueues it again (`RECUR_LEASE_SECONDS`).
pub const DEFAULT_SECONDS: i64 = 30;

/// How long the sweep leaves a subscription alone after one of its jobs was
/// dead-lettered: the job waits in the DLQ for an operator.
pub const DEAD_LETTER_HOLD_SECONDS: f64 = 3600.0;

/// A subscription due for its next cycle.
#[derive(Debug, Clone, Copy)]
pub struct DueSubscription {
    pub id: Uuid,
    pub next_sequence: i32,
    pub next_charge_at: Option<DateTime<Utc>>,
}

/// Claim up to `limit` due subscriptions on the deployment's clock in
/// (next_charge_at, id) order after `after`. The hot claim: it reads
/// `subscriptions_due_idx`, whose predicate leaves out test-clock subscriptions.
pub async fn claim_due_subscriptions(
    pool: &PgPool,
    now: DateTime<Utc>,
    after: (DateTime<Utc>, Uuid),
    limit: i64,
    secs: i64,
) -> Result<Vec<DueSubscription>> {
    Ok(sqlx::query_as!(
        DueSubscription,
        "WITH due AS (SELECT id FROM subscriptions
            WHERE status IN ('active', 'past_due') AND next_charge_at IS NOT NULL AND test_clock_id IS NULL
              AND next_charge_at <= $1 AND (next_charge_at, id) > ($4, $5)
              AND (enqueued_until IS NULL OR enqueued_until < now())
            ORDER BY next_charge_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE subscriptions s SET enqueued_until = now() + make_interval(secs => $3) FROM due WHERE s.id = due.id
         RETURNING s.id, s.next_sequence, s.next_charge_at",
        now,
        limit,
        secs as f64,
        after.0,
        after.1,
    )
    .fetch_all(pool)
    .await?)
}

/// Claim up to `limit` due subscriptions of test clock `clock`, whose time is `now`
/// (through `subscriptions_test_clock_idx`).
pub async fn claim_due_on_clock(
    pool: &PgPool,
    clock: Uuid,
    now: DateTime<Utc>,
    limit: i64,
    secs: i64,
) -> Result<Vec<DueSubscription>> {
    Ok(sqlx::query_as!(
        DueSubscription,
        "WITH due AS (SELECT id FROM subscriptions
            WHERE test_clock_id = $4 AND next_charge_at <= $1 AND status IN ('active', 'past_due')
              AND (enqueued_until IS NULL OR enqueued_until < now())
            ORDER BY next_charge_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE subscriptions s SET enqueued_until = now() + make_interval(secs => $3) FROM due WHERE s.id = due.id
         RETURNING s.id, s.next_sequence, s.next_charge_at",
        now,
        limit,
        secs as f64,
        clock,
    )
    .fetch_all(pool)
    .await?)
}

/// Claim trialing subscriptions whose trial has ended, on the deployment's clock
/// (`clock` None) or on one test clock.
pub async fn claim_trial_ends(
    pool: &PgPool,
    clock: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
    secs: i64,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "WITH due AS (SELECT id FROM subscriptions
            WHERE status = 'trialing' AND trial_end_at <= $1 AND (enqueued_until IS NULL OR enqueued_until < now())
              AND test_clock_id IS NOT DISTINCT FROM $4
            LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE subscriptions s SET enqueued_until = now() + make_interval(secs => $3) FROM due WHERE s.id = due.id
         RETURNING s.id",
        now,
        limit,
        secs as f64,
        clock,
    )
    .fetch_all(pool)
    .await?)
}

/// Claim paused subscriptions whose resume date has come (clock as for trials).
pub async fn claim_resumes(
    pool: &PgPool,
    clock: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
    secs: i64,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "WITH due AS (SELECT id FROM subscriptions
            WHERE status = 'paused' AND resume_at <= $1 AND (enqueued_until IS NULL OR enqueued_until < now())
              AND test_clock_id IS NOT DISTINCT FROM $4
            LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE subscriptions s SET enqueued_until = now() + make_interval(secs => $3) FROM due WHERE s.id = due.id
         RETURNING s.id",
        now,
        limit,
        secs as f64,
        clock,
    )
    .fetch_all(pool)
    .await?)
}

/// A retrying cycle whose next attempt is due.
#[derive(Debug, Clone, Copy)]
pub struct DueRetry {
    pub id: Uuid,
    /// The cycle attempt the retry opens.
    pub attempt: i32,
}

/// Claim retrying cycles whose retry is due, unless their subscription stopped
/// (clock as for trials: the subscription's).
pub async fn claim_retries(
    pool: &PgPool,
    clock: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
    secs: i64,
) -> Result<Vec<DueRetry>> {
    Ok(sqlx::query_as!(
        DueRetry,
        r#"WITH due AS (SELECT c.id FROM billing_cycles c
            WHERE c.status = 'retrying' AND c.next_retry_at <= $1 AND (c.enqueued_until IS NULL OR c.enqueued_until < now())
              AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = c.subscription_id
                          AND s.status NOT IN ('paused', 'cancelled', 'completed')
                          AND s.test_clock_id IS NOT DISTINCT FROM $4)
            LIMIT $2 FOR UPDATE OF c SKIP LOCKED)
         UPDATE billing_cycles c SET enqueued_until = now() + make_interval(secs => $3) FROM due WHERE c.id = due.id
         RETURNING c.id, c.attempts + 1 AS "attempt!""#,
        now,
        limit,
        secs as f64,
        clock,
    )
    .fetch_all(pool)
    .await?)
}

/// Claim pending charges whose lease passed: their job was lost (Redis flushed, a
/// worker killed before apalis-redis's orphan recovery, an enqueue that failed).
pub async fn claim_lost_charges(pool: &PgPool, limit: i64, secs: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "WITH due AS (SELECT id FROM transactions
            WHERE status = 'pending' AND (enqueued_until IS NULL OR enqueued_until < now())
            LIMIT $1 FOR UPDATE SKIP LOCKED)
         UPDATE transactions t SET enqueued_until = now() + make_interval(secs => $2) FROM due WHERE t.id = due.id
         RETURNING t.id",
        limit,
        secs as f64,
    )
    .fetch_all(pool)
    .await?)
}

/// Push a pending charge's lease past a scheduled job retry, so the sweep does not
/// enqueue a second copy while the first waits out its backoff.
pub async fn extend_charge(pool: &PgPool, transaction_id: Uuid, secs: f64) -> Result<()> {
    sqlx::query!(
        "UPDATE transactions SET enqueued_until = now() + make_interval(secs => $2) WHERE id = $1 AND status = 'pending'",
        transaction_id,
        secs
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Stamp a subscription whose job the API enqueues itself after commit, so the next
/// sweep does not enqueue a second copy.
pub async fn stamp_subscription(conn: &mut PgConnection, id: Uuid, secs: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET enqueued_until = now() + make_interval(secs => $2) WHERE id = $1",
        id,
        secs as f64
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Hold a subscription off the sweep after its job was dead-lettered; its merchant.
pub async fn hold_subscription(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "UPDATE subscriptions SET enqueued_until = now() + make_interval(secs => $2) WHERE id = $1 RETURNING merchant_id",
        id,
        DEAD_LETTER_HOLD_SECONDS
    )
    .fetch_optional(conn)
    .await?)
}

/// Lift that hold (the dead letter was replayed); the subscription's merchant.
pub async fn release_subscription(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!("UPDATE subscriptions SET enqueued_until = NULL WHERE id = $1 RETURNING merchant_id", id)
        .fetch_optional(conn)
        .await?)
}

/// A webhook delivery owns its row at least this long: one attempt may take the
/// receiver's 15 s plus recording, and a second copy must not go out meanwhile.
pub const WEBHOOK_MIN_SECONDS: i64 = crate::webhooks::client::TIMEOUT.as_secs() as i64 + 10;

/// Claim due webhook deliveries of enabled endpoints (wall clock: webhook timing
/// never follows the test clock), oldest due first.
pub async fn claim_webhook_deliveries(pool: &PgPool, limit: i64, secs: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "WITH due AS (SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= now()
              AND (d.enqueued_until IS NULL OR d.enqueued_until < now()) AND w.status = 'enabled'
            ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED)
         UPDATE webhook_deliveries d SET enqueued_until = now() + make_interval(secs => $2) FROM due WHERE d.id = due.id
         RETURNING d.id",
        limit,
        secs.max(WEBHOOK_MIN_SECONDS) as f64,
    )
    .fetch_all(pool)
    .await?)
}

/// Write the deliveries of births whose lease ran out (the worker that committed their
/// events died, or could not write them): pending rows with the ids the birth named,
/// due now, for the claim below. Rows already written and endpoints deleted since are
/// skipped; the births go. Returns how many rows this wrote.
pub async fn recover_webhook_births(pool: &PgPool, limit: i64) -> Result<u64> {
    Ok(sqlx::query!(
        "WITH gone AS (
            DELETE FROM webhook_births WHERE id IN (SELECT id FROM webhook_births WHERE lease_until < now()
                ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
            RETURNING delivery_ids, endpoint_ids, event_ids),
         u AS (SELECT x.id, x.endpoint_id, x.event_id
            FROM gone, unnest(gone.delivery_ids, gone.endpoint_ids, gone.event_ids) AS x(id, endpoint_id, event_id)),
         w AS (SELECT id FROM webhook_endpoints WHERE id IN (SELECT endpoint_id FROM u) FOR KEY SHARE)
         INSERT INTO webhook_deliveries (id, endpoint_id, event_id, merchant_id, type, event_at)
         SELECT u.id, u.endpoint_id, e.id, e.merchant_id, e.webhook_type, e.created_at
         FROM u JOIN w ON w.id = u.endpoint_id JOIN events e ON e.id = u.event_id
         ON CONFLICT DO NOTHING",
        limit,
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Stamp a delivery the API enqueues itself (retry now).
pub async fn stamp_delivery(conn: &mut PgConnection, id: Uuid, secs: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE webhook_deliveries SET enqueued_until = now() + make_interval(secs => $2) WHERE id = $1",
        id,
        secs.max(WEBHOOK_MIN_SECONDS) as f64
    )
    .execute(conn)
    .await?;
    Ok(())
}
