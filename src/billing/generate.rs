//! Opening cycles: `generate-cycle` (batched), `trial-end` and `retry-charge`.
//! Each is idempotent: the cycle is unique on (subscription, sequence) and the
//! transaction on (cycle, attempt); a re-run finds what exists and returns the same
//! charge job instead of opening anything twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jobs::{ChargeTransaction, Job};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::transaction_state::{self, NewAttempt};
use super::transactions::TransactionKind;
use super::{cycle_state, locks};
use crate::clock::Clock;
use crate::events::{self, Actor, NewEvent};
use crate::paylinks::{self, CollectionMethod};
use crate::subscriptions::lifecycle::clamp_to_end;
use crate::subscriptions::{Subscription, SubscriptionStatus as S, repo as subs};

fn charge(txn: Uuid) -> Job {
    Job::ChargeTransaction(ChargeTransaction { transaction_id: txn, attempt: 0 })
}

/// Generate the requested cycles in one transaction. Returns, per item, the charge
/// job to enqueue (also for a cycle that already existed with its charge pending).
pub async fn generate_batch(
    pool: &PgPool,
    clock: &Clock,
    items: Vec<(Uuid, i32)>,
    lease_secs: i64,
) -> anyhow::Result<Vec<Option<Job>>> {
    let now = clock.now().await?;
    let mut tx = pool.begin().await?;
    let mut ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    let locked = subs::lock_many(&mut tx, &ids, None).await?;
    // Subscriptions on a test clock are due by its time (crate::test_clocks); the
    // clocks are read only when the batch has such a subscription.
    let clock_ids: Vec<Uuid> = locked.iter().filter_map(|s| s.test_clock_id).collect();
    let frozen = crate::test_clocks::frozen_times(&mut tx, &clock_ids).await?;
    let now_of = |s: &Subscription| s.test_clock_id.and_then(|c| frozen.get(&c).copied()).unwrap_or(now);
    let by_id: HashMap<Uuid, Subscription> = locked.into_iter().map(|s| (s.id, s)).collect();
    let mut due: Vec<Subscription> = Vec::new();
    for (id, seq) in &items {
        if let Some(s) = by_id.get(id)
            && s.next_sequence == *seq
            && is_due(s, now_of(s))
            && !due.iter().any(|d| d.id == *id)
        {
            due.push(s.clone());
        }
    }
    let opened = open_cycles(&mut tx, due, now, lease_secs).await?;
    let mut out = Vec::with_capacity(items.len());
    for (id, seq) in &items {
        let Some(s) = by_id.get(id) else {
            out.push(None);
            continue;
        };
        out.push(match opened.get(id) {
            Some(txn) if s.next_sequence == *seq => Some(charge(*txn)),
            // A re-run for a cycle that already exists: hand back its pending charge.
            _ if s.next_sequence > *seq => pending_charge(&mut tx, *id, *seq).await?,
            _ => None,
        });
    }
    tx.commit().await?;
    Ok(out)
}

fn is_due(s: &Subscription, now: DateTime<Utc>) -> bool {
    matches!(s.status, S::Active | S::PastDue)
        && (s.payment_method.is_some() || s.collection_method == CollectionMethod::SendPaymentLink)
        && s.next_charge_at.is_some_and(|t| t <= now)
        && s.cancel_at.is_none_or(|c| s.next_charge_at.is_none_or(|t| c > t))
}

async fn pending_charge(conn: &mut PgConnection, subscription_id: Uuid, sequence: i32) -> anyhow::Result<Option<Job>> {
    let txn = sqlx::query_scalar!(
        "SELECT t.id FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
         WHERE c.subscription_id = $1 AND c.sequence = $2 AND t.status = 'pending' ORDER BY t.attempt DESC LIMIT 1",
        subscription_id,
        sequence
    )
    .fetch_optional(conn)
    .await?;
    Ok(txn.map(charge))
}

/// Open the next cycle of each (locked, due) subscription with its first transaction,
/// and advance the subscription to the following period. A change of terms waiting
/// for the period's end applies first (docs/amendments.md). Set-based: six statements
/// whatever the batch size. Returns subscription id → new transaction id. A
/// subscription collected by payment links gets its cycle with a link and no
/// transaction: nothing is charged until the customer pays (docs/payment-links.md).
pub async fn open_cycles(
    conn: &mut PgConnection,
    mut due: Vec<Subscription>,
    now: DateTime<Utc>,
    lease_secs: i64,
) -> anyhow::Result<HashMap<Uuid, Uuid>> {
    if due.is_empty() {
        return Ok(HashMap::new());
    }
    let mut evs = Vec::with_capacity(2 * due.len() + 1);
    crate::subscriptions::changes::apply_scheduled(conn, &mut due, &mut evs).await?;
    let n = due.len();
    let (mut cyc_ids, mut merchants, mut sub_ids, mut seqs) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut starts, mut ends, mut dues, mut amounts) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::<Decimal>::with_capacity(n));
    let (mut currencies, mut attempts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut links) = (Vec::with_capacity(n), Vec::new());
    let (mut next_charge, mut opened) = (Vec::with_capacity(n), HashMap::with_capacity(n));
    for s in &due {
        let cal = s.calendar();
        let seq = s.next_sequence;
        let (start, end) = (cal.period_start(seq), cal.period_end(seq));
        let due_at = s.next_charge_at.unwrap_or(now);
        let cycle_id = Uuid::now_v7();
        let txn_id = Uuid::now_v7();
        let mut next = s.clone();
        next.next_charge_at = Some(end);
        clamp_to_end(&mut next);
        cyc_ids.push(cycle_id);
        merchants.push(s.merchant_id);
        sub_ids.push(s.id);
        seqs.push(seq);
        starts.push(start);
        ends.push(end);
        dues.push(due_at);
        amounts.push(s.amount);
        currencies.push(s.currency.clone());
        next_charge.push(next.next_charge_at);
        evs.push(NewEvent::new(
            s.merchant_id,
            "billing_cycle",
            cycle_id,
            "created",
            json!({"subscriptionId": s.id, "sequence": seq, "dueAt": due_at, "periodStart": start, "periodEnd": end}),
            Actor::System,
        ));
        if s.collection_method == CollectionMethod::SendPaymentLink {
            counts.push(0);
            links.push(paylinks::NewLink {
                merchant_id: s.merchant_id,
                billing_cycle_id: cycle_id,
                expires_at: due_at + chrono::Duration::days(i64::from(s.days_until_due)),
                issued_at: now,
            });
            continue;
        }
        counts.push(1);
        opened.insert(s.id, txn_id);
        let attempt = NewAttempt {
            id: txn_id,
            merchant_id: s.merchant_id,
            billing_cycle_id: cycle_id,
            kind: TransactionKind::Scheduled,
            amount: s.amount,
            currency: s.currency.clone(),
            payment_method: s.payment_method.clone().unwrap_or_default(),
            attempt: 1,
        };
        evs.push(transaction_state::created_event(
            &attempt,
            json!({"billingCycleId": cycle_id, "kind": "scheduled", "attempt": 1}),
            Actor::System,
        ));
        attempts.push(attempt);
    }
    sqlx::query!(
        "INSERT INTO billing_cycles (id, merchant_id, subscription_id, sequence, period_start, period_end, due_at, amount, currency, attempts)
         SELECT id, m, s, q, ps, pe, d, a, c, n FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::timestamptz[],
            $6::timestamptz[], $7::timestamptz[], $8::numeric[], $9::text[], $10::int[]) AS u(id, m, s, q, ps, pe, d, a, c, n)",
        &cyc_ids,
        &merchants,
        &sub_ids,
        &seqs,
        &starts,
        &ends,
        &dues,
        &amounts,
        &currencies,
        &counts,
    )
    .execute(&mut *conn)
    .await?;
    transaction_state::open(conn, &attempts, lease_secs).await?;
    paylinks::insert(conn, &links, Actor::System, &mut evs).await?;
    sqlx::query!(
        "UPDATE subscriptions s SET next_sequence = s.next_sequence + 1, next_charge_at = u.nc,
            current_period_start = u.ps, current_period_end = u.pe, enqueued_until = NULL
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[]) AS u(id, nc, ps, pe)
         WHERE s.id = u.id",
        &sub_ids,
        &next_charge as &[Option<DateTime<Utc>>],
        &starts,
        &ends,
    )
    .execute(&mut *conn)
    .await?;
    events::record(conn, &evs).await?;
    Ok(opened)
}

/// `trial-end`: trialing → active, and cycle 1 opened at once.
pub async fn trial_end(
    pool: &PgPool,
    clock: &Clock,
    subscription_id: Uuid,
    lease_secs: i64,
) -> anyhow::Result<Vec<Job>> {
    let mut tx = pool.begin().await?;
    let Some(mut s) = subs::lock_any(&mut tx, subscription_id).await? else { return Ok(vec![]) };
    let now = crate::test_clocks::now_of(&mut tx, clock, s.test_clock_id).await?;
    if s.status != S::Trialing || s.trial_end_at.is_none_or(|t| t > now) {
        return Ok(vec![]);
    }
    let cal = crate::billing::calendar::Calendar::starting(s.anchor_at, s.interval(), now);
    s.status = S::Active;
    s.anchor_sequence = cal.anchor_sequence;
    s.next_charge_at = Some(cal.period_start(s.next_sequence).max(now));
    clamp_to_end(&mut s);
    let s = subs::save(&mut tx, &s).await?;
    events::record_one(
        &mut tx,
        NewEvent::new(
            s.merchant_id,
            "subscription",
            s.id,
            "status_changed",
            json!({"from": "trialing", "to": "active", "reason": "trial_ended"}),
            Actor::System,
        ),
    )
    .await?;
    let jobs = if is_due(&s, now) {
        open_cycles(&mut tx, vec![s], now, lease_secs).await?.into_values().map(charge).collect()
    } else {
        vec![]
    };
    tx.commit().await?;
    Ok(jobs)
}

/// `resume`: paused → active when resumeAt has come (docs/states.md#subscriptions).
pub async fn resume(pool: &PgPool, clock: &Clock, subscription_id: Uuid) -> anyhow::Result<Vec<Job>> {
    let mut tx = pool.begin().await?;
    let Some(s) = subs::lock_any(&mut tx, subscription_id).await? else { return Ok(vec![]) };
    let now = crate::test_clocks::now_of(&mut tx, clock, s.test_clock_id).await?;
    if s.status != S::Paused || s.resume_at.is_none_or(|t| t > now) {
        return Ok(vec![]);
    }
    let changed = crate::subscriptions::lifecycle::resume_locked(&mut tx, s, now, Actor::System).await?;
    tx.commit().await?;
    Ok(changed.jobs)
}

/// `retry-charge`: open attempt `cycle_attempt` of a retrying cycle whose retry is due.
pub async fn retry_charge(
    pool: &PgPool,
    clock: &Clock,
    cycle_id: Uuid,
    cycle_attempt: i32,
    lease_secs: i64,
) -> anyhow::Result<Vec<Job>> {
    let mut tx = pool.begin().await?;
    let Some((sub, cycle)) = locks::cycle(&mut tx, cycle_id, None).await? else { return Ok(vec![]) };
    let now = crate::test_clocks::now_for_subscription(&mut tx, clock, None, sub.id).await?;
    if cycle.attempts >= cycle_attempt {
        // Already opened: re-run the charge if it is still pending.
        let pending = sqlx::query_scalar!(
            "SELECT id FROM transactions WHERE billing_cycle_id = $1 AND attempt = $2 AND status = 'pending'",
            cycle_id,
            cycle_attempt
        )
        .fetch_optional(&mut *tx)
        .await?;
        return Ok(pending.map(charge).into_iter().collect());
    }
    let due = cycle.status == super::CycleStatus::Retrying
        && cycle.attempts + 1 == cycle_attempt
        && cycle.next_retry_at.is_some_and(|t| t <= now)
        && !matches!(sub.status, S::Paused | S::Cancelled | S::Completed);
    let Some(payment_method) = sub.payment_method.filter(|_| due) else { return Ok(vec![]) };
    let attempt = NewAttempt {
        id: Uuid::now_v7(),
        merchant_id: cycle.merchant_id,
        billing_cycle_id: cycle_id,
        kind: TransactionKind::Retry,
        amount: cycle.amount,
        currency: cycle.currency.clone(),
        payment_method,
        attempt: cycle_attempt,
    };
    transaction_state::open(&mut tx, std::slice::from_ref(&attempt), lease_secs).await?;
    cycle_state::open_attempt(&mut tx, cycle_id, cycle_attempt).await?;
    events::record_one(
        &mut tx,
        transaction_state::created_event(
            &attempt,
            json!({"billingCycleId": cycle_id, "kind": "retry", "attempt": cycle_attempt}),
            Actor::System,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(vec![charge(attempt.id)])
}
