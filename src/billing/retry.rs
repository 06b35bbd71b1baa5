//! Manual retry of a `failed` or `error` cycle (docs/states.md#billing-cycles), and the
//! reconciliation of an errored attempt that went through after all.

use chrono::{DateTime, Utc};
use jobs::{ChargeTransaction, Job};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::card_history;
use super::cycles::{self, BillingCycle, CycleStatus};
use super::governor;
use super::transaction_state::{self, NewAttempt};
use super::transactions::TransactionKind;
use super::{cycle_state, locks};
use crate::error::{Error, Result};
use crate::events::{self, Actor, NewEvent};
use crate::subscriptions::SubscriptionStatus;

/// Open a `manual_retry` transaction on a failed or errored cycle; returns the job
/// that charges it. Any other status is a conflict.
pub async fn manual(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> Result<(BillingCycle, Job)> {
    manual_by(conn, merchant_id, cycle_id, lease_secs, now, Actor::Merchant).await
}

/// `manual`, asked by `actor` (a customer who gave a new card on a checkout page).
pub async fn manual_by(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
    lease_secs: i64,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<(BillingCycle, Job)> {
    let (sub, cycle) =
        locks::cycle(conn, cycle_id, Some(merchant_id)).await?.ok_or(Error::NotFound("billing cycle"))?;
    if crate::subscriptions::changes::is_proration_cycle(conn, cycle.id).await? {
        return Err(Error::conflict("a proration charge is not retried: request the change again"));
    }
    let cause = cycle_state::Cause::ManualRetry;
    if !cycle_state::permits(cause, cycle.status, CycleStatus::Retrying) {
        return Err(Error::conflict(format!(
            "only failed or error cycles can be retried; this one is {}",
            serde_json::to_value(cycle.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        )));
    }
    let Some(payment_method) = sub.payment_method.clone() else {
        return Err(Error::conflict("the subscription has no payment method"));
    };
    // One attempt in flight per cycle (docs/guarantees.md#one-attempt-in-flight-per-cycle):
    // an `error` cycle may still hold a pending attempt (a customer paying its link).
    if transaction_state::in_flight(conn, cycle.id).await? {
        return Err(Error::conflict("a payment of this billing cycle is in progress"));
    }
    // The card networks' rules apply to a merchant's retry as to recur's own.
    let card = card_history::load(conn, &[(merchant_id, payment_method.clone())]).await?.pop().unwrap_or_default();
    if let Err(refusal) = card.check(TransactionKind::ManualRetry, now) {
        metrics::counter!(governor::METRIC, "rule" => refusal.rule()).increment(1);
        return Err(Error::RetryRefused(refusal));
    }
    let attempt = NewAttempt {
        id: Uuid::now_v7(),
        merchant_id,
        billing_cycle_id: cycle.id,
        kind: TransactionKind::ManualRetry,
        amount: cycle.amount,
        currency: cycle.currency.clone(),
        payment_method,
        attempt: cycle.attempts + 1,
    };
    transaction_state::open(conn, std::slice::from_ref(&attempt), lease_secs).await?;
    let mut evs = vec![transaction_state::created_event(
        &attempt,
        json!({"kind": "manual_retry", "attempt": attempt.attempt}),
        actor,
    )];
    let mut m = cycle_state::Move::new(&cycle, cause, CycleStatus::Retrying, actor)
        .extra(json!({"manualRetry": true, "subscriptionStatus": sub.status}));
    m.attempts = Some(attempt.attempt);
    cycle_state::apply(conn, &[m], &mut evs).await?;
    events::record(conn, &evs).await?;
    let updated = cycles::get(conn, merchant_id, cycle.id).await?;
    Ok((updated, Job::ChargeTransaction(ChargeTransaction { transaction_id: attempt.id, attempt: 0 })))
}

/// Bring the next retry of a `retrying` cycle forward to `now`, because the customer
/// gave a new card (docs/pages.md#the-checkout): the `retry-charge` job it returns opens
/// the next attempt with the subscription's payment method, under every rule of an
/// automatic retry (the retry governor included). `None` when the cycle is not
/// retrying or its retry is already due.
pub async fn bring_forward(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Option<Job>> {
    let Some((_, cycle)) = locks::cycle(conn, cycle_id, Some(merchant_id)).await? else {
        return Err(Error::NotFound("billing cycle"));
    };
    if cycle.status != CycleStatus::Retrying {
        return Ok(None);
    }
    if cycle.next_retry_at.is_none_or(|t| t > now) {
        cycle_state::retry_at(conn, cycle_id, now).await?;
        events::record_one(
            conn,
            NewEvent::new(
                merchant_id,
                "billing_cycle",
                cycle_id,
                "retry_scheduled",
                json!({"nextRetryAt": now, "attempt": cycle.attempts + 1, "reason": "payment_method_replaced"}),
                actor,
            ),
        )
        .await?;
    }
    Ok(Some(Job::RetryCharge(jobs::RetryCharge {
        billing_cycle_id: cycle_id,
        cycle_attempt: cycle.attempts + 1,
        attempt: 0,
    })))
}

/// The latest `error` attempt of an errored cycle: (transaction id, idempotency key).
pub async fn errored_attempt(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
) -> Result<Option<(Uuid, String)>> {
    let row = sqlx::query!(
        "SELECT t.id, t.idempotency_key FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
         WHERE c.id = $1 AND c.merchant_id = $2 AND c.status = 'error' AND t.status = 'error'
         ORDER BY t.attempt DESC LIMIT 1",
        cycle_id,
        merchant_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.idempotency_key)))
}

/// The gateway says an errored attempt went through after all (a timeout after the
/// charge): record it as succeeded instead of charging again.
pub async fn settle_errored(conn: &mut PgConnection, transaction_id: Uuid, reference: &str) -> Result<bool> {
    let Some((parents, _)) = locks::transaction(conn, transaction_id).await? else { return Ok(false) };
    let mut evs = Vec::new();
    if transaction_state::reconcile(conn, transaction_id, reference, &mut evs).await?.is_none() {
        return Ok(false);
    }
    if let Some((sub, cycle)) = parents {
        let cause = cycle_state::Cause::Reconciled;
        if cycle_state::permits(cause, cycle.status, CycleStatus::Succeeded) {
            let mut m = cycle_state::Move::new(&cycle, cause, CycleStatus::Succeeded, Actor::System)
                .extra(json!({"reconciled": true}));
            m.failure_code = Some(None);
            cycle_state::apply(conn, &[m], &mut evs).await?;
            if sub.status == SubscriptionStatus::PastDue {
                crate::subscriptions::repo::set_status(conn, sub.id, SubscriptionStatus::Active).await?;
                evs.push(NewEvent::new(
                    sub.merchant_id,
                    "subscription",
                    sub.id,
                    "status_changed",
                    json!({"from": "past_due", "to": "active"}),
                    Actor::System,
                ));
            }
        }
    }
    events::record(conn, &evs).await?;
    Ok(true)
}

/// Before a manual retry of an `error` cycle, ask the merchant's gateway whether its
/// errored attempt went through after all (a timeout after the charge): the attempt
/// to settle (transaction id, gateway reference), or `None` to charge again. An
/// unreachable gateway is `Unavailable`: retrying blind could charge twice.
pub async fn reconcile_first(
    conn: &mut PgConnection,
    gateways: &crate::gateway::registry::Gateways,
    merchant_key: Uuid,
    merchant_id: Uuid,
    cycle_id: Uuid,
) -> Result<Option<(Uuid, String)>> {
    use crate::gateway::{ChargeOutcome, Gateway};
    let Some((txn, gateway_key)) = errored_attempt(conn, merchant_id, cycle_id).await? else { return Ok(None) };
    match gateways.lookup(merchant_key, &gateway_key).await {
        Ok(Some(ChargeOutcome::Approved { reference })) => Ok(Some((txn, reference))),
        Ok(_) => Ok(None),
        Err(_) => Err(Error::Unavailable("the gateway cannot confirm the last attempt; retry later".into())),
    }
}

/// A merchant's manual retry (`POST /v1/billing-cycles/{id}/retry`, the dashboard's
/// "Retry now"), in the caller's transaction, after [`reconcile_first`]: settles the
/// errored attempt the gateway approved (no job), or opens a `manual_retry` attempt
/// and returns the job that charges it.
pub async fn manual_or_settle(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
    reconciled: Option<&(Uuid, String)>,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> Result<(BillingCycle, Option<Job>)> {
    if let Some((txn, reference)) = reconciled
        && settle_errored(conn, *txn, reference).await?
    {
        return Ok((cycles::get(conn, merchant_id, cycle_id).await?, None));
    }
    let (cycle, job) = manual(conn, merchant_id, cycle_id, lease_secs, now).await?;
    Ok((cycle, Some(job)))
}
