//! Subscription transitions the passage of time causes: cancel at period end, cancel
//! after the grace period of a failed cycle (`payment_failed`), complete after endAt.
//! Each runs in one transaction per batch, with its events.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::events::{self, Actor, NewEvent};
use crate::subscriptions::{SubscriptionStatus, lifecycle, repo};

/// Cancel the given subscriptions, locking them in id order (docs/lock-order.md).
async fn cancel_all(
    tx: &mut Transaction<'_, Postgres>,
    mut ids: Vec<Uuid>,
    reason: &str,
    now: DateTime<Utc>,
) -> crate::Result<usize> {
    ids.sort_unstable();
    for id in &ids {
        // Another scheduler may have got there first: act only on live subscriptions.
        if let Some(s) = repo::lock_any(tx, *id).await?.filter(|s| !s.status.is_final()) {
            lifecycle::cancel_locked(tx, s, reason, now, Actor::System).await?;
        }
    }
    Ok(ids.len())
}

/// `clock`: the subscriptions on the deployment's clock (None), or on one test clock
/// whose time is `now`; the same for the grace period.
pub async fn cancel_at_period_end(
    pool: &PgPool,
    clock: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
) -> crate::Result<usize> {
    let mut tx = pool.begin().await?;
    let ids = sqlx::query_scalar!(
        "SELECT id FROM subscriptions WHERE cancel_at <= $1 AND status NOT IN ('cancelled', 'completed')
           AND test_clock_id IS NOT DISTINCT FROM $3
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
        clock,
    )
    .fetch_all(&mut *tx)
    .await?;
    let n = cancel_all(&mut tx, ids, "requested", now).await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn cancel_after_grace(
    pool: &PgPool,
    clock: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
) -> crate::Result<usize> {
    let mut tx = pool.begin().await?;
    // Starts from the failed cycles (a small partial index), not from the store.
    let ids = sqlx::query_scalar!(
        r#"SELECT DISTINCT c.subscription_id AS "id!" FROM billing_cycles c
           WHERE c.status = 'failed' AND c.kind = 'period' AND c.due_at <= $1
             AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = c.subscription_id
                         AND s.status NOT IN ('cancelled', 'completed')
                         AND s.test_clock_id IS NOT DISTINCT FROM $3
                         AND c.due_at + make_interval(days => s.grace_period_days) <= $1)
           LIMIT $2"#,
        now,
        limit,
        clock,
    )
    .fetch_all(&mut *tx)
    .await?;
    let n = cancel_all(&mut tx, ids, "payment_failed", now).await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn complete_ended(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> crate::Result<usize> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query!(
        r#"WITH ended AS (SELECT id, status FROM subscriptions s
            WHERE s.status IN ('active', 'past_due') AND s.next_charge_at IS NULL AND s.end_at IS NOT NULL
              AND $1::timestamptz IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM billing_cycles c WHERE c.subscription_id = s.id
                              AND (c.status IN ('pending', 'retrying')
                                   OR (c.kind = 'period' AND c.status IN ('failed', 'error'))))
            LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE subscriptions s SET status = 'completed', enqueued_until = NULL FROM ended WHERE s.id = ended.id
         RETURNING s.id, s.merchant_id, ended.status AS "from: SubscriptionStatus""#,
        now,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let evs: Vec<NewEvent> = done
        .iter()
        .map(|r| {
            NewEvent::new(
                r.merchant_id,
                "subscription",
                r.id,
                "status_changed",
                json!({"from": r.from, "to": "completed"}),
                Actor::System,
            )
        })
        .collect();
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(done.len())
}
