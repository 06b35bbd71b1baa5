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
use crate::billing::locks::{self, LockedCycle};
use crate::billing::{CycleStatus, TransactionKind, cycle_state, transaction_state};
use crate::error::{Error, Result};
use crate::events::{self, Actor, NewEvent};
use crate::lease;
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
            // The transaction's subscription, cycle and itself, in the lock order. With
            // the cycle locked no manual retry can open an attempt until this commits,
            // and the check below (a statement of its own) sees any opened before.
            let locked = locks::transaction(&mut tx, j.transaction_id).await?;
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
            let reopened = transaction_state::reopen(&mut tx, j.transaction_id, lease_secs, data, &mut evs).await?;
            if let (Some(r), Some((Some((_, cycle)), _))) = (reopened, locked) {
                // The reopened transaction is the cycle's open attempt: no retry is
                // scheduled beside it (that would open a second charge).
                let to = if matches!(r.kind, TransactionKind::Scheduled | TransactionKind::Proration) {
                    CycleStatus::Pending
                } else {
                    CycleStatus::Retrying
                };
                reopen_cycle(&mut tx, &cycle, to, None, &mut evs).await?;
            }
        }
        Job::RetryCharge(j) => {
            if let Some((sub, cycle)) = locks::cycle(&mut tx, j.billing_cycle_id, None).await? {
                // Due at once on the subscription's own clock (a sandbox test clock).
                let now = crate::test_clocks::frozen_of_subscription(&mut tx, sub.id).await?.unwrap_or(now);
                evs.push(NewEvent::new(
                    cycle.merchant_id,
                    "billing_cycle",
                    cycle.id,
                    "replayed",
                    data.clone(),
                    Actor::Operator,
                ));
                reopen_cycle(&mut tx, &cycle, CycleStatus::Retrying, Some(now), &mut evs).await?;
            }
        }
        Job::DeliverWebhook(j) => {
            // Failed → pending, one more attempt now (docs/webhooks.md#retries).
            crate::webhooks::deliveries::reopen(&mut tx, j.delivery_id, lease_secs).await?;
        }
        Job::GenerateCycle(_) | Job::TrialEnd(_) | Job::Resume(_) => {
            let (_, sub) = d.job.object();
            // Lift the hold the dead-lettering put on the scheduler's sweep.
            if let Some(m) = lease::release_subscription(&mut tx, sub).await? {
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
/// or None. The caller holds the cycle locked.
async fn superseded(conn: &mut sqlx::PgConnection, transaction: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT t.merchant_id FROM transactions t WHERE t.id = $1
         AND EXISTS (SELECT 1 FROM transactions l WHERE l.billing_cycle_id = t.billing_cycle_id AND l.attempt > t.attempt)",
        transaction
    )
    .fetch_optional(conn)
    .await?)
}

/// error → pending | retrying, on a cycle the caller holds locked.
async fn reopen_cycle(
    conn: &mut sqlx::PgConnection,
    cycle: &LockedCycle,
    to: CycleStatus,
    next_retry_at: Option<DateTime<Utc>>,
    evs: &mut Vec<NewEvent>,
) -> Result<()> {
    let cause = cycle_state::Cause::Replayed;
    if cycle_state::permits(cause, cycle.status, to) {
        let mut m = cycle_state::Move::new(cycle, cause, to, Actor::Operator).extra(json!({"reason": "replayed"}));
        m.next_retry_at = next_retry_at;
        cycle_state::apply(conn, &[m], evs).await?;
    }
    Ok(())
}
