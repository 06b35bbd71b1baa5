//! Subscription transitions the passage of time causes: cancel at period end, cancel
//! after the grace period of a failed cycle (`payment_failed`), complete after endAt.
//! Each runs in one transaction per batch, with its events.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::events::{self, Actor, NewEvent};
use crate::subscriptions::{lifecycle, repo};

async fn cancel_each(
    pool: &PgPool,
    sql: &'static str,
    now: DateTime<Utc>,
    limit: i64,
    reason: &str,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(sql).bind(now).bind(limit).fetch_all(&mut *tx).await?;
    for id in &ids {
        // Another scheduler may have got there first: act only on live subscriptions.
        if let Some(s) = repo::lock_any(&mut tx, *id).await?.filter(|s| !s.status.is_final()) {
            lifecycle::cancel_locked(&mut tx, s, reason, now, Actor::System)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    tx.commit().await?;
    Ok(ids.len())
}

pub async fn cancel_at_period_end(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> anyhow::Result<usize> {
    cancel_each(
        pool,
        "SELECT id FROM subscriptions WHERE cancel_at <= $1 AND status NOT IN ('cancelled', 'completed')
         LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
        "requested",
    )
    .await
}

pub async fn cancel_after_grace(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> anyhow::Result<usize> {
    cancel_each(
        pool,
        // Starts from the failed cycles (a small partial index), not from the store.
        "SELECT DISTINCT c.subscription_id FROM billing_cycles c
         WHERE c.status = 'failed' AND c.due_at <= $1
           AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = c.subscription_id
                       AND s.status NOT IN ('cancelled', 'completed')
                       AND c.due_at + make_interval(days => s.grace_period_days) <= $1)
         LIMIT $2",
        now,
        limit,
        "payment_failed",
    )
    .await
}

pub async fn complete_ended(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let done: Vec<(Uuid, Uuid, crate::subscriptions::SubscriptionStatus)> = sqlx::query_as(
        "WITH ended AS (SELECT id, status FROM subscriptions s
            WHERE s.status IN ('active', 'past_due') AND s.next_charge_at IS NULL AND s.end_at IS NOT NULL
              AND $1::timestamptz IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM billing_cycles c WHERE c.subscription_id = s.id
                              AND c.status IN ('pending', 'retrying', 'failed', 'error'))
            LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE subscriptions s SET status = 'completed', enqueued_until = NULL FROM ended WHERE s.id = ended.id
         RETURNING s.id, s.merchant_id, ended.status",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let evs: Vec<NewEvent> = done
        .iter()
        .map(|(id, m, from)| {
            NewEvent::new(
                *m,
                "subscription",
                *id,
                "status_changed",
                json!({"from": from, "to": "completed"}),
                Actor::System,
            )
        })
        .collect();
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(done.len())
}
