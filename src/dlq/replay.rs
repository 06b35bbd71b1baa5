//! Replay: a dead job goes back to its live queue with attempts reset and the same
//! payload, so a charge keeps its transaction and gateway idempotency key and
//! "continues where it stopped". The billing objects it had marked `error` are
//! reopened first, in one Postgres transaction with a `replayed` event.
//!
//! Only a cycle's latest attempt is ever reopened: once a manual retry (or a later
//! scheduled retry) superseded a dead-lettered attempt, replaying the old one would
//! put a second charge beside the newer attempt. Such a dead letter is resolved as
//! `superseded`: removed, with an event, and nothing enqueued.

use chrono::{DateTime, Utc};
use jobs::Job;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{DeadLetter, remove};
use crate::error::{Error, Result};
use crate::events::{self, Actor, NewEvent};
use crate::queue::Enqueuer;

/// What a replay did with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Replayed {
    /// Back on its live queue.
    Requeued,
    /// A later attempt of the same cycle replaced it: removed, nothing enqueued.
    Superseded,
}

/// `now` is the billing clock: a replayed `retry-charge` becomes due at once.
pub async fn replay(
    pool: &PgPool,
    q: &Enqueuer,
    d: &DeadLetter,
    now: DateTime<Utc>,
    lease_secs: i64,
) -> Result<Replayed> {
    let mut tx = pool.begin().await?;
    let mut evs = Vec::new();
    let data = json!({"deadLetterId": d.id, "queue": d.queue, "attempts": d.attempts, "lastError": d.last_error});
    match &d.job {
        Job::ChargeTransaction(j) => {
            if let Some(merchant) = superseded(&mut tx, j.transaction_id).await? {
                evs.push(NewEvent::new(
                    merchant,
                    "transaction",
                    j.transaction_id,
                    "replay_superseded",
                    data,
                    Actor::Operator,
                ));
                events::record(&mut tx, &evs).await?;
                tx.commit().await?;
                if !remove(q, d).await? {
                    return Err(Error::NotFound("dead letter"));
                }
                metrics::counter!("recur_dlq_superseded_total", "queue" => d.job.queue().name()).increment(1);
                return Ok(Replayed::Superseded);
            }
            // A cycle's charge is replayed with the subscription's payment method as it
            // is now: a card the merchant replaced since the failure is not charged.
            let row: Option<(Uuid, Option<Uuid>, crate::billing::TransactionKind, Option<String>)> = sqlx::query_as(
                "UPDATE transactions t SET status = 'pending', error_message = NULL,
                    enqueued_until = now() + make_interval(secs => $2),
                    payment_method = COALESCE((SELECT s.payment_method FROM billing_cycles c
                        JOIN subscriptions s ON s.id = c.subscription_id WHERE c.id = t.billing_cycle_id), t.payment_method)
                 WHERE t.id = $1 AND t.status IN ('error', 'pending')
                 RETURNING t.merchant_id, t.billing_cycle_id, t.kind, t.payment_method",
            )
            .bind(j.transaction_id)
            .bind(lease_secs as f64)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((merchant, cycle, kind, payment_method)) = row {
                let mut data = data.clone();
                data["paymentMethod"] = json!(payment_method);
                evs.push(NewEvent::new(merchant, "transaction", j.transaction_id, "replayed", data, Actor::Operator));
                if let Some(cycle) = cycle {
                    // The reopened transaction is the cycle's open attempt: no retry is
                    // scheduled beside it (that would open a second charge).
                    let to = if kind == crate::billing::TransactionKind::Scheduled { "pending" } else { "retrying" };
                    reopen_cycle(&mut tx, merchant, cycle, to, None, &mut evs).await?;
                }
            }
        }
        Job::RetryCharge(j) => {
            let merchant: Option<Uuid> = sqlx::query_scalar("SELECT merchant_id FROM billing_cycles WHERE id = $1")
                .bind(j.billing_cycle_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(m) = merchant {
                evs.push(NewEvent::new(
                    m,
                    "billing_cycle",
                    j.billing_cycle_id,
                    "replayed",
                    data.clone(),
                    Actor::Operator,
                ));
                reopen_cycle(&mut tx, m, j.billing_cycle_id, "retrying", Some(now), &mut evs).await?;
            }
        }
        Job::GenerateCycle(_) | Job::TrialEnd(_) | Job::Resume(_) => {
            let (_, sub) = d.job.object();
            // Lift the hold the dead-lettering put on the scheduler's sweep.
            let merchant: Option<Uuid> = sqlx::query_scalar(
                "UPDATE subscriptions SET enqueued_until = NULL WHERE id = $1 RETURNING merchant_id",
            )
            .bind(sub)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(m) = merchant {
                evs.push(NewEvent::new(m, "subscription", sub, "replayed", data.clone(), Actor::Operator));
            }
        }
    }
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    // Removed before it is pushed: two operators replaying at once push it once.
    if !remove(q, d).await? {
        return Err(Error::NotFound("dead letter"));
    }
    q.push(&[d.job.clone().with_attempt(0)]).await?;
    metrics::counter!("recur_dlq_replayed_total", "queue" => d.job.queue().name()).increment(1);
    Ok(Replayed::Requeued)
}

/// The merchant of a cycle's transaction that a later attempt of the cycle replaced,
/// or None. The cycle is locked first, as a manual retry locks it before opening an
/// attempt, so the check (a statement of its own, on a fresh snapshot) sees any
/// attempt opened meanwhile, and none can be opened until this replay commits.
async fn superseded(conn: &mut sqlx::PgConnection, transaction: Uuid) -> Result<Option<Uuid>> {
    sqlx::query(
        "SELECT 1 FROM billing_cycles WHERE id = (SELECT billing_cycle_id FROM transactions WHERE id = $1) FOR UPDATE",
    )
    .bind(transaction)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT t.merchant_id FROM transactions t WHERE t.id = $1
         AND EXISTS (SELECT 1 FROM transactions l WHERE l.billing_cycle_id = t.billing_cycle_id AND l.attempt > t.attempt)",
    )
    .bind(transaction)
    .fetch_optional(conn)
    .await?)
}

async fn reopen_cycle(
    conn: &mut sqlx::PgConnection,
    merchant: Uuid,
    cycle: Uuid,
    to: &str,
    next_retry_at: Option<DateTime<Utc>>,
    evs: &mut Vec<NewEvent>,
) -> Result<()> {
    let moved = sqlx::query(
        "UPDATE billing_cycles SET status = $2::cycle_status, next_retry_at = $3, enqueued_until = NULL
         WHERE id = $1 AND status = 'error'",
    )
    .bind(cycle)
    .bind(to)
    .bind(next_retry_at)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 1 {
        evs.push(NewEvent::new(
            merchant,
            "billing_cycle",
            cycle,
            "status_changed",
            json!({"from": "error", "to": to, "reason": "replayed"}),
            Actor::Operator,
        ));
    }
    Ok(())
}
