//! `charge-transaction`: call the gateway for one transaction and record the outcome.
//!
//! Exactly-once comes from three places: the gateway dedups on the transaction's
//! idempotency key (a repeated call returns the first result and charges nothing);
//! recording is conditional on the transaction still being `pending`, so a duplicate
//! delivery records nothing twice; and every write of one outcome (transaction,
//! cycle, subscription, events) commits in one Postgres transaction. Loads and
//! records are group-committed across concurrent jobs.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::card_history::{self, CardHistory};
use super::cycles::CycleStatus;
use super::dunning::{self, CycleChange, Settled};
use super::governor;
use super::locks::{self, LockedCycle, LockedSubscription};
use super::transactions::{TransactionKind, TransactionStatus};
use super::{cycle_state, transaction_state};
use crate::events::{self, Actor, NewEvent};
use crate::subscriptions::{SubscriptionStatus, changes, lifecycle, repo};

/// Everything needed to charge one transaction, read in one batched query.
#[derive(Debug, Clone)]
pub struct ChargeContext {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub merchant_key: Uuid,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub amount: Decimal,
    pub currency: String,
    pub payment_method: Option<String>,
    pub idempotency_key: String,
    pub attempt: i32,
    pub customer_account_id: String,
    pub cycle_id: Option<Uuid>,
    pub cycle_sequence: Option<i32>,
    pub cycle_status: Option<CycleStatus>,
    pub due_at: Option<DateTime<Utc>>,
    pub subscription_id: Option<Uuid>,
    pub subscription_status: Option<SubscriptionStatus>,
    pub retry_schedule_hours: Option<Vec<i32>>,
    pub authorized_limit: Option<Decimal>,
    pub series_id: Option<Uuid>,
    /// The subscription's test clock, if it follows one (crate::test_clocks).
    pub test_clock_id: Option<Uuid>,
}

impl ChargeContext {
    /// The scope the sandbox counts attempts in: the cycle, or the transaction itself.
    pub fn scope(&self) -> Uuid {
        self.cycle_id.unwrap_or(self.id)
    }
}

pub async fn load_batch(pool: &PgPool, ids: Vec<Uuid>) -> anyhow::Result<Vec<Option<ChargeContext>>> {
    let rows = sqlx::query_as!(
        ChargeContext,
        r#"SELECT t.id, t.merchant_id, m.merchant_key, t.kind AS "kind: TransactionKind",
                t.status AS "status: TransactionStatus", t.amount, t.currency, t.payment_method,
                t.idempotency_key, t.attempt, cu.customer_account_id,
                c.id AS "cycle_id?", c.sequence AS "cycle_sequence?", c.status AS "cycle_status?: CycleStatus", c.due_at AS "due_at?",
                s.id AS "subscription_id?", s.status AS "subscription_status?: SubscriptionStatus",
                s.retry_schedule_hours AS "retry_schedule_hours?", s.authorized_limit,
                t.payment_series_id AS series_id, s.test_clock_id AS "test_clock_id?"
         FROM transactions t
         JOIN merchants m ON m.id = t.merchant_id
         LEFT JOIN billing_cycles c ON c.id = t.billing_cycle_id
         LEFT JOIN subscriptions s ON s.id = c.subscription_id
         LEFT JOIN payment_series p ON p.id = t.payment_series_id
         JOIN customers cu ON cu.id = COALESCE(s.customer_id, p.customer_id)
         WHERE t.id = ANY($1)"#,
        &ids
    )
    .fetch_all(pool)
    .await?;
    let by_id: HashMap<Uuid, ChargeContext> = rows.into_iter().map(|r| (r.id, r)).collect();
    Ok(ids.iter().map(|id| by_id.get(id).cloned()).collect())
}

/// `load_batch`, with the history of each charge's card the retry governor reads
/// (docs/governor.md): what a worker needs before calling the gateway.
pub async fn load_for_charge(
    pool: &PgPool,
    ids: Vec<Uuid>,
) -> anyhow::Result<Vec<Option<(ChargeContext, CardHistory)>>> {
    let contexts = load_batch(pool, ids).await?;
    let cards: Vec<(Uuid, String)> =
        contexts.iter().flatten().filter_map(|c| Some((c.merchant_id, c.payment_method.clone()?))).collect();
    let mut histories = card_history::load(&mut *pool.acquire().await?, &cards).await?.into_iter();
    Ok(contexts
        .into_iter()
        .map(|c| {
            let c = c?;
            let card =
                if c.payment_method.is_some() { histories.next().unwrap_or_default() } else { CardHistory::default() };
            Some((c, card))
        })
        .collect())
}

/// One outcome to record.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub ctx: ChargeContext,
    pub outcome: Settled,
    pub at: DateTime<Utc>,
}

/// Did this record change anything (false: a duplicate delivery found it settled)?
pub type Recorded = bool;

/// Record many outcomes in one transaction, set-based, taking the rows' locks in the
/// lock order (subscriptions, cycles, transactions: `super::locks`). Also returns the
/// webhook deliveries the outcomes' events made, leased for the caller to send.
pub async fn record_batch(
    pool: &PgPool,
    items: Vec<Settlement>,
) -> anyhow::Result<(Vec<Recorded>, Vec<crate::webhooks::send::Outgoing>)> {
    // Two deliveries of one transaction can share a batch (duplicate jobs in flight at
    // once are group-committed together). Only the first copy is recorded: later
    // copies answer "not recorded", exactly like a duplicate in a later batch.
    let mut seen = HashSet::with_capacity(items.len());
    let first: Vec<bool> = items.iter().map(|i| seen.insert(i.ctx.id)).collect();
    let mut unique: Vec<&Settlement> = items.iter().zip(&first).filter(|(_, f)| **f).map(|(i, _)| i).collect();
    unique.sort_by_key(|i| i.ctx.id);
    let mut tx = pool.begin().await?;
    let sub_ids: Vec<Uuid> = unique.iter().filter_map(|i| i.ctx.subscription_id).collect();
    let mut subs: HashMap<Uuid, LockedSubscription> =
        locks::subscriptions(&mut tx, &sub_ids).await?.into_iter().map(|s| (s.id, s)).collect();
    let cycle_ids: Vec<Uuid> = unique.iter().filter_map(|i| i.ctx.cycle_id).collect();
    let mut cycles: HashMap<Uuid, LockedCycle> =
        locks::cycles(&mut tx, &cycle_ids).await?.into_iter().map(|c| (c.id, c)).collect();

    let mut evs = Vec::new();
    let settlements: Vec<transaction_state::Settlement> = unique
        .iter()
        .map(|i| transaction_state::Settlement {
            id: i.ctx.id,
            merchant_id: i.ctx.merchant_id,
            outcome: &i.outcome,
            at: i.at,
            data: outcome_json(&i.outcome, &i.ctx),
        })
        .collect();
    let changed: HashSet<Uuid> =
        transaction_state::settle(&mut tx, &settlements, &mut evs).await?.into_iter().collect();

    // Dunning decides each cycle's next state; the state machine says whether the
    // cycle may take it (a decline does not touch a cycle cancelled meanwhile, an
    // approval is recorded whatever happened: the money moved).
    let mut rounds: Vec<Vec<cycle_state::Move>> = Vec::new();
    let mut sub_targets: HashMap<Uuid, SubscriptionStatus> = HashMap::new();
    let mut revoked: HashSet<Uuid> = HashSet::new();
    let mut prorations: Vec<changes::ProrationOutcome> = Vec::new();
    for i in unique.iter().filter(|i| changed.contains(&i.ctx.id)) {
        let ctx = &i.ctx;
        let Some(cycle) = ctx.cycle_id.and_then(|id| cycles.get_mut(&id)) else { continue };
        let schedule = ctx.retry_schedule_hours.clone().unwrap_or_default();
        let change: CycleChange = dunning::after(ctx.kind, ctx.attempt, &schedule, &i.outcome, i.at);
        let cause = match i.outcome {
            Settled::Approved { .. } => cycle_state::Cause::Approved,
            Settled::Declined { .. } | Settled::Refused { .. } => cycle_state::Cause::Declined,
        };
        if let Settled::Refused { rule } = i.outcome {
            evs.push(NewEvent::new(
                ctx.merchant_id,
                "billing_cycle",
                cycle.id,
                "retry_blocked",
                json!({"rule": rule, "transactionId": ctx.id, "attempt": ctx.attempt}),
                Actor::System,
            ));
        }
        // A declined link payment of a cycle still in its link's window leaves the cycle
        // `pending` and the link payable: the customer may try another card
        // (docs/payment-links.md#paying).
        if ctx.kind == TransactionKind::PaymentLink
            && cause == cycle_state::Cause::Declined
            && cycle.status == CycleStatus::Pending
        {
            continue;
        }
        if cycle_state::permits(cause, cycle.status, change.status) {
            let mut m = cycle_state::Move::new(cycle, cause, change.status, Actor::System);
            if let Some(rule) = change.rule {
                m = m.extra(json!({"rule": rule}));
            }
            m.next_retry_at = change.next_retry_at;
            m.failure_code = Some(change.failure_code.clone());
            m.settled_at = Some(i.at);
            cycle.status = change.status;
            // One UPDATE writes each cycle once: a second attempt of the same cycle in
            // this batch goes in the next round.
            match rounds.iter_mut().find(|r| r.iter().all(|x| x.id != m.id)) {
                Some(round) => round.push(m),
                None => rounds.push(vec![m]),
            }
        }
        if let Some(sid) = ctx.subscription_id {
            if change.cancel_subscription {
                revoked.insert(sid);
            }
            if ctx.kind == TransactionKind::Proration {
                // A proration decides its change, not the subscription's status: a
                // declined one leaves the old terms in force (docs/amendments.md).
                prorations.push(changes::ProrationOutcome {
                    subscription_id: sid,
                    billing_cycle_id: cycle.id,
                    declined: i.outcome.decline_code().map(str::to_owned),
                });
            } else {
                sub_targets.insert(sid, change.subscription);
            }
        }
    }
    for round in &rounds {
        cycle_state::apply(&mut tx, round, &mut evs).await?;
    }
    if !prorations.is_empty() {
        let at = unique.iter().map(|i| i.at).max().unwrap_or_else(Utc::now);
        changes::settle_prorations(&mut tx, &prorations, at, &mut evs).await?;
    }

    // Only live subscriptions follow their cycles (active ⇄ past_due).
    let mut moved_subs: Vec<(Uuid, SubscriptionStatus)> = Vec::new();
    for (sid, target) in sub_targets.into_iter().filter(|(sid, _)| !revoked.contains(sid)) {
        let Some(s) = subs.get_mut(&sid) else { continue };
        if matches!(s.status, SubscriptionStatus::Active | SubscriptionStatus::PastDue) && s.status != target {
            evs.push(NewEvent::new(
                s.merchant_id,
                "subscription",
                sid,
                "status_changed",
                json!({"from": s.status, "to": target}),
                Actor::System,
            ));
            s.status = target;
            moved_subs.push((sid, target));
        }
    }
    if !moved_subs.is_empty() {
        let (ids, statuses): (Vec<Uuid>, Vec<SubscriptionStatus>) = moved_subs.into_iter().unzip();
        sqlx::query!(
            "UPDATE subscriptions s SET status = u.st
             FROM unnest($1::uuid[], $2::subscription_status[]) AS u(id, st) WHERE s.id = u.id",
            &ids,
            &statuses as _,
        )
        .execute(&mut *tx)
        .await?;
    }
    let deliveries = events::record_leased(&mut tx, &evs, Some(crate::lease::WEBHOOK_MIN_SECONDS)).await?;
    // After the events above, so each object's events stay in order. The subscription's
    // lock, held since the start, guards the cycles `cancel_locked` takes next.
    let mut revoked: Vec<Uuid> = revoked.into_iter().collect();
    revoked.sort_unstable();
    for sid in revoked {
        let at = unique.iter().find(|i| i.ctx.subscription_id == Some(sid)).map_or_else(Utc::now, |i| i.at);
        if let Some(s) = repo::lock_any(&mut tx, sid).await?.filter(|s| !s.status.is_final()) {
            lifecycle::cancel_locked(&mut tx, s, governor::CANCEL_REASON, at, Actor::System).await?;
        }
    }
    tx.commit().await?;
    Ok((items.iter().zip(&first).map(|(i, f)| *f && changed.contains(&i.ctx.id)).collect(), deliveries))
}

fn outcome_json(o: &Settled, ctx: &ChargeContext) -> serde_json::Value {
    match o {
        Settled::Approved { reference } => {
            json!({"gatewayReference": reference, "attempt": ctx.attempt, "amount": ctx.amount.normalize().to_string(), "currency": ctx.currency})
        }
        Settled::Declined { code, soft, network } => {
            let mut data = json!({"declineCode": code, "soft": soft, "attempt": ctx.attempt});
            if let Some(n) = network {
                data["network"] = json!({"scheme": n.scheme.as_str(), "responseCode": n.response_code,
                    "category": n.visa_category(), "adviceCode": n.advice_code});
                if let Some(rule) = governor::after_decline(n).rule {
                    data["rule"] = json!(rule);
                }
            }
            data
        }
        Settled::Refused { rule } => {
            json!({"declineCode": governor::FAILURE_CODE, "soft": false, "attempt": ctx.attempt, "rule": rule})
        }
    }
}

/// A transaction whose job ran out of attempts: it and its cycle become `error`.
pub async fn mark_error(pool: &PgPool, transaction_id: Uuid, message: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let Some((parents, _)) = locks::transaction(&mut tx, transaction_id).await? else { return Ok(()) };
    let mut evs = Vec::new();
    let Some((merchant, _)) = transaction_state::error(&mut tx, transaction_id, message, message, &mut evs).await?
    else {
        return Ok(());
    };
    evs.push(NewEvent::new(
        merchant,
        "transaction",
        transaction_id,
        "dead_lettered",
        json!({"queue": "charge-transaction"}),
        Actor::System,
    ));
    if let Some((_, cycle)) = parents {
        cycle_error(&mut tx, &cycle, &mut evs).await?;
    }
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(())
}

/// A `retry-charge` job ran out of attempts: its cycle becomes `error`, with a
/// `dead_lettered` event first.
pub async fn mark_cycle_dead(pool: &PgPool, cycle_id: Uuid, error: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let Some((_, cycle)) = locks::cycle(&mut tx, cycle_id, None).await? else { return Ok(()) };
    let mut evs = vec![NewEvent::new(
        cycle.merchant_id,
        "billing_cycle",
        cycle_id,
        "dead_lettered",
        json!({"queue": "retry-charge", "error": error}),
        Actor::System,
    )];
    cycle_error(&mut tx, &cycle, &mut evs).await?;
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(())
}

/// pending | retrying → error, on a cycle the caller holds locked.
async fn cycle_error(
    conn: &mut sqlx::PgConnection,
    cycle: &LockedCycle,
    evs: &mut Vec<NewEvent>,
) -> anyhow::Result<()> {
    let cause = cycle_state::Cause::DeadLettered;
    if cycle_state::permits(cause, cycle.status, CycleStatus::Error) {
        cycle_state::apply(conn, &[cycle_state::Move::new(cycle, cause, CycleStatus::Error, Actor::System)], evs)
            .await?;
    }
    Ok(())
}
