//! `charge-transaction`: call the gateway for one transaction and record the outcome.
//!
//! Exactly-once comes from three places: the gateway dedups on the transaction's
//! idempotency key (a repeated call returns the first result and charges nothing);
//! recording is conditional on the transaction still being `pending`, so a duplicate
//! delivery records nothing twice; and every write of one outcome (transaction,
//! cycle, subscription, events) commits in one Postgres transaction. Loads and
//! records are group-committed across concurrent jobs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::cycles::CycleStatus;
use super::dunning::{self, CycleChange, Settled};
use super::transactions::{TransactionKind, TransactionStatus};
use crate::events::{self, Actor, NewEvent};
use crate::subscriptions::SubscriptionStatus;

/// Everything needed to charge one transaction, read in one batched query.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    pub cycle_status: Option<CycleStatus>,
    pub due_at: Option<DateTime<Utc>>,
    pub subscription_id: Option<Uuid>,
    pub subscription_status: Option<SubscriptionStatus>,
    pub retry_schedule_hours: Option<Vec<i32>>,
    pub authorized_limit: Option<Decimal>,
    pub series_id: Option<Uuid>,
}

impl ChargeContext {
    /// The scope the sandbox counts attempts in: the cycle, or the transaction itself.
    pub fn scope(&self) -> Uuid {
        self.cycle_id.unwrap_or(self.id)
    }
}

pub async fn load_batch(pool: &PgPool, ids: Vec<Uuid>) -> anyhow::Result<Vec<Option<ChargeContext>>> {
    let rows: Vec<ChargeContext> = sqlx::query_as(
        "SELECT t.id, t.merchant_id, m.merchant_key, t.kind, t.status, t.amount, t.currency, t.payment_method,
                t.idempotency_key, t.attempt, cu.customer_account_id,
                c.id AS cycle_id, c.status AS cycle_status, c.due_at,
                s.id AS subscription_id, s.status AS subscription_status, s.retry_schedule_hours, s.authorized_limit,
                t.payment_series_id AS series_id
         FROM transactions t
         JOIN merchants m ON m.id = t.merchant_id
         LEFT JOIN billing_cycles c ON c.id = t.billing_cycle_id
         LEFT JOIN subscriptions s ON s.id = c.subscription_id
         LEFT JOIN payment_series p ON p.id = t.payment_series_id
         JOIN customers cu ON cu.id = COALESCE(s.customer_id, p.customer_id)
         WHERE t.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let by_id: HashMap<Uuid, ChargeContext> = rows.into_iter().map(|r| (r.id, r)).collect();
    Ok(ids.iter().map(|id| by_id.get(id).cloned()).collect())
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

/// Record many outcomes in one transaction, set-based.
pub async fn record_batch(pool: &PgPool, items: Vec<Settlement>) -> anyhow::Result<Vec<Recorded>> {
    // Two deliveries of one transaction can share a batch (duplicate jobs in flight at
    // once are group-committed together). Only the first copy is recorded: the UPDATE
    // below changes the row once, but the events, the cycle change and the `Recorded`
    // answer (metrics) would otherwise be produced once per copy. Later copies answer
    // "not recorded", exactly like a duplicate that arrives in a later batch.
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let first: Vec<bool> = items.iter().map(|i| seen.insert(i.ctx.id)).collect();
    let mut unique: Vec<&Settlement> = items.iter().zip(&first).filter(|(_, f)| **f).map(|(i, _)| i).collect();
    // Rows are locked in id order (transactions, then cycles, then subscriptions), so
    // two batches sharing rows (duplicate deliveries on two workers) cannot deadlock.
    unique.sort_by_key(|i| i.ctx.id);
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = unique.iter().map(|i| i.ctx.id).collect();
    let statuses: Vec<TransactionStatus> = unique.iter().map(|i| i.outcome.transaction_status()).collect();
    let refs: Vec<Option<String>> = unique
        .iter()
        .map(|i| match &i.outcome {
            Settled::Approved { reference } => Some(reference.clone()),
            Settled::Declined { .. } => None,
        })
        .collect();
    let codes: Vec<Option<String>> = unique
        .iter()
        .map(|i| match &i.outcome {
            Settled::Declined { code, .. } => Some(code.clone()),
            Settled::Approved { .. } => None,
        })
        .collect();
    let ats: Vec<DateTime<Utc>> = unique.iter().map(|i| i.at).collect();
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "WITH locked AS (SELECT id FROM transactions WHERE id = ANY($1) AND status = 'pending' ORDER BY id FOR UPDATE)
         UPDATE transactions t SET status = u.st, gateway_reference = u.r, decline_code = u.c, settled_at = u.at, enqueued_until = NULL
         FROM unnest($1::uuid[], $2::transaction_status[], $3::text[], $4::text[], $5::timestamptz[]) AS u(id, st, r, c, at), locked
         WHERE t.id = u.id AND locked.id = t.id AND t.status = 'pending'
         RETURNING t.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&refs)
    .bind(&codes)
    .bind(&ats)
    .fetch_all(&mut *tx)
    .await?;
    let changed: std::collections::HashSet<Uuid> = changed.into_iter().collect();

    let mut evs = Vec::new();
    let (mut c_ids, mut c_status, mut c_retry, mut c_code, mut c_at) = (vec![], vec![], vec![], vec![], vec![]);
    let mut sub_targets: HashMap<Uuid, (SubscriptionStatus, Uuid)> = HashMap::new();
    for i in unique.iter().filter(|i| changed.contains(&i.ctx.id)) {
        let ctx = &i.ctx;
        let kind = match i.outcome {
            Settled::Approved { .. } => "charge_succeeded",
            Settled::Declined { .. } => "charge_declined",
        };
        evs.push(NewEvent::new(
            ctx.merchant_id,
            "transaction",
            ctx.id,
            kind,
            outcome_json(&i.outcome, ctx),
            Actor::System,
        ));
        let Some(cycle_id) = ctx.cycle_id else { continue };
        let schedule = ctx.retry_schedule_hours.clone().unwrap_or_default();
        let change: CycleChange = dunning::after(ctx.kind, ctx.attempt, &schedule, &i.outcome, i.at);
        c_ids.push(cycle_id);
        c_status.push(change.status);
        c_retry.push(change.next_retry_at);
        c_code.push(change.failure_code.clone());
        c_at.push(i.at);
        if let Some(sid) = ctx.subscription_id {
            sub_targets.insert(sid, (change.subscription, ctx.merchant_id));
        }
    }
    if !c_ids.is_empty() {
        // A success is recorded even on a cycle cancelled meanwhile: the money moved.
        let moved: Vec<(Uuid, Uuid, CycleStatus, CycleStatus, Option<DateTime<Utc>>)> = sqlx::query_as(
            "WITH old AS (SELECT id, status FROM billing_cycles WHERE id = ANY($1) ORDER BY id FOR UPDATE)
             UPDATE billing_cycles c SET status = u.st, next_retry_at = u.nr, failure_code = u.fc,
                failed_at = CASE WHEN u.st = 'failed' THEN u.at ELSE c.failed_at END,
                first_attempt_at = COALESCE(c.first_attempt_at, u.at), enqueued_until = NULL
             FROM unnest($1::uuid[], $2::cycle_status[], $3::timestamptz[], $4::text[], $5::timestamptz[]) AS u(id, st, nr, fc, at), old
             WHERE c.id = u.id AND old.id = c.id AND (u.st = 'succeeded' OR c.status IN ('pending', 'retrying'))
             RETURNING c.id, c.merchant_id, old.status, c.status, c.next_retry_at",
        )
        .bind(&c_ids)
        .bind(&c_status)
        .bind(&c_retry)
        .bind(&c_code)
        .bind(&c_at)
        .fetch_all(&mut *tx)
        .await?;
        for (id, merchant, from, to, next_retry_at) in moved {
            if from != to {
                evs.push(NewEvent::new(
                    merchant,
                    "billing_cycle",
                    id,
                    "status_changed",
                    json!({"from": from, "to": to}),
                    Actor::System,
                ));
            }
            if to == CycleStatus::Retrying {
                evs.push(NewEvent::new(
                    merchant,
                    "billing_cycle",
                    id,
                    "retry_scheduled",
                    json!({"nextRetryAt": next_retry_at}),
                    Actor::System,
                ));
            }
        }
    }
    if !sub_targets.is_empty() {
        let (s_ids, s_status): (Vec<Uuid>, Vec<SubscriptionStatus>) =
            sub_targets.iter().map(|(id, (st, _))| (*id, *st)).unzip();
        let moved: Vec<(Uuid, Uuid, SubscriptionStatus, SubscriptionStatus)> = sqlx::query_as(
            "WITH old AS (SELECT id, status FROM subscriptions WHERE id = ANY($1) ORDER BY id FOR UPDATE)
             UPDATE subscriptions s SET status = u.st
             FROM unnest($1::uuid[], $2::subscription_status[]) AS u(id, st), old
             WHERE s.id = u.id AND old.id = s.id AND s.status IN ('active', 'past_due') AND s.status <> u.st
             RETURNING s.id, s.merchant_id, old.status, s.status",
        )
        .bind(&s_ids)
        .bind(&s_status)
        .fetch_all(&mut *tx)
        .await?;
        for (id, merchant, from, to) in moved {
            evs.push(NewEvent::new(
                merchant,
                "subscription",
                id,
                "status_changed",
                json!({"from": from, "to": to}),
                Actor::System,
            ));
        }
    }
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(items.iter().zip(&first).map(|(i, f)| *f && changed.contains(&i.ctx.id)).collect())
}

fn outcome_json(o: &Settled, ctx: &ChargeContext) -> serde_json::Value {
    match o {
        Settled::Approved { reference } => {
            json!({"gatewayReference": reference, "attempt": ctx.attempt, "amount": ctx.amount.normalize().to_string(), "currency": ctx.currency})
        }
        Settled::Declined { code, soft } => json!({"declineCode": code, "soft": soft, "attempt": ctx.attempt}),
    }
}

/// A transaction whose job ran out of attempts: it and its cycle become `error`.
pub async fn mark_error(pool: &PgPool, transaction_id: Uuid, message: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "UPDATE transactions SET status = 'error', error_message = $2, enqueued_until = NULL
         WHERE id = $1 AND status = 'pending' RETURNING merchant_id, billing_cycle_id",
    )
    .bind(transaction_id)
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((merchant, cycle)) = row else { return Ok(()) };
    let mut evs = vec![
        NewEvent::new(
            merchant,
            "transaction",
            transaction_id,
            "charge_error",
            json!({"error": message}),
            Actor::System,
        ),
        NewEvent::new(
            merchant,
            "transaction",
            transaction_id,
            "dead_lettered",
            json!({"queue": "charge-transaction"}),
            Actor::System,
        ),
    ];
    if let Some(cycle) = cycle {
        mark_cycle_error(&mut tx, merchant, cycle, &mut evs).await?;
    }
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn mark_cycle_error(
    conn: &mut sqlx::PgConnection,
    merchant: Uuid,
    cycle: Uuid,
    evs: &mut Vec<NewEvent>,
) -> anyhow::Result<()> {
    let from: Option<CycleStatus> = sqlx::query_scalar(
        "WITH old AS (SELECT id, status FROM billing_cycles WHERE id = $1 FOR UPDATE)
         UPDATE billing_cycles c SET status = 'error', next_retry_at = NULL, enqueued_until = NULL FROM old
         WHERE c.id = old.id AND c.status IN ('pending', 'retrying') RETURNING old.status",
    )
    .bind(cycle)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(from) = from {
        evs.push(NewEvent::new(
            merchant,
            "billing_cycle",
            cycle,
            "status_changed",
            json!({"from": from, "to": "error"}),
            Actor::System,
        ));
    }
    Ok(())
}

/// Push a transaction's lease past a scheduled job retry, so the sweep does not
/// enqueue a second copy while the first waits out its backoff.
pub async fn extend_lease(pool: &PgPool, transaction_id: Uuid, secs: f64) -> anyhow::Result<()> {
    sqlx::query("UPDATE transactions SET enqueued_until = now() + make_interval(secs => $2) WHERE id = $1 AND status = 'pending'")
        .bind(transaction_id)
        .bind(secs)
        .execute(pool)
        .await?;
    Ok(())
}
