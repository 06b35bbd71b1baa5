//! The transaction (gateway attempt) state machine (docs/states.md#transactions).
//!
//! An attempt is opened `pending` with a lease and settles once: `succeeded` or
//! `declined` from the gateway, `error` when its job is dead-lettered or its cycle was
//! cancelled first. An operator's replay reopens an `error` attempt; a reconciliation
//! records that an `error` attempt went through after all. `TRANSITIONS` lists every
//! move; each function below writes one kind of move, guarded in SQL by the table's
//! source states, with its event. Callers hold the rows' locks in the lock order
//! (`super::locks`) when they change more than the transaction.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::dunning::Settled;
use super::governor;
use super::transactions::{
    TransactionKind,
    TransactionStatus::{self, *},
    idempotency_key,
};
use crate::error::Result;
use crate::events::{Actor, NewEvent};

/// Why an attempt moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The gateway answered.
    Settled,
    /// Its job was dead-lettered, or its cycle was cancelled before the charge.
    Errored,
    /// An operator replayed its dead letter.
    Replayed,
    /// The gateway confirmed that an errored attempt went through.
    Reconciled,
}

/// (cause, from, to): every move an attempt can make.
pub const TRANSITIONS: &[(Cause, &[TransactionStatus], &[TransactionStatus])] = &[
    (Cause::Settled, &[Pending], &[Succeeded, Declined]),
    (Cause::Errored, &[Pending], &[Error]),
    (Cause::Replayed, &[Error, Pending], &[Pending]),
    (Cause::Reconciled, &[Error], &[Succeeded]),
];

pub fn permits(cause: Cause, from: TransactionStatus, to: TransactionStatus) -> bool {
    TRANSITIONS.iter().any(|(c, f, t)| *c == cause && f.contains(&from) && t.contains(&to))
}

/// The states `cause` may move an attempt out of: the guard of its UPDATE.
pub fn sources(cause: Cause) -> Vec<TransactionStatus> {
    TRANSITIONS.iter().filter(|(c, _, _)| *c == cause).flat_map(|(_, f, _)| f.iter().copied()).collect()
}

/// A new attempt of a billing cycle.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub billing_cycle_id: Uuid,
    pub kind: TransactionKind,
    pub amount: Decimal,
    pub currency: String,
    pub payment_method: String,
    pub attempt: i32,
}

/// Open attempts `pending`, each leased for `lease_secs` to the job the caller
/// enqueues after commit (docs/architecture.md#the-lease), with their `created` events.
pub async fn open(conn: &mut PgConnection, attempts: &[NewAttempt], lease_secs: i64) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = attempts.iter().map(|a| a.id).collect();
    let merchants: Vec<Uuid> = attempts.iter().map(|a| a.merchant_id).collect();
    let cycles: Vec<Uuid> = attempts.iter().map(|a| a.billing_cycle_id).collect();
    let kinds: Vec<TransactionKind> = attempts.iter().map(|a| a.kind).collect();
    let amounts: Vec<Decimal> = attempts.iter().map(|a| a.amount).collect();
    let currencies: Vec<String> = attempts.iter().map(|a| a.currency.clone()).collect();
    let methods: Vec<String> = attempts.iter().map(|a| a.payment_method.clone()).collect();
    let keys: Vec<String> = attempts.iter().map(|a| idempotency_key(a.id)).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    sqlx::query!(
        "INSERT INTO transactions (id, merchant_id, billing_cycle_id, kind, amount, currency, payment_method,
            idempotency_key, attempt, enqueued_until)
         SELECT id, m, c, k, a, cur, pm, key, n, now() + make_interval(secs => $10)
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::transaction_kind[], $5::numeric[], $6::text[],
            $7::text[], $8::text[], $9::int[]) AS u(id, m, c, k, a, cur, pm, key, n)",
        &ids,
        &merchants,
        &cycles,
        &kinds as _,
        &amounts,
        &currencies,
        &methods,
        &keys,
        &numbers,
        lease_secs as f64,
    )
    .execute(conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some(ONE_PENDING_PER_CYCLE) => {
            crate::Error::conflict("a payment of this billing cycle is in progress")
        }
        _ => e.into(),
    })?;
    Ok(())
}

/// The unique index that keeps one attempt of a cycle in flight at a time
/// (docs/guarantees.md#one-attempt-in-flight-per-cycle, `migrations/0012_payment_links.sql`).
pub const ONE_PENDING_PER_CYCLE: &str = "transactions_one_pending_per_cycle";

/// Whether a cycle (held locked by the caller) has an attempt in flight (`pending`).
pub async fn in_flight(conn: &mut PgConnection, cycle_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM transactions WHERE billing_cycle_id = $1 AND status = 'pending') AS "e!""#,
        cycle_id
    )
    .fetch_one(conn)
    .await?)
}

/// The `created` event of a new attempt; `data` is what the caller's history has
/// always said about it.
pub fn created_event(a: &NewAttempt, data: Value, actor: Actor) -> NewEvent {
    NewEvent::new(a.merchant_id, "transaction", a.id, "created", data, actor)
}

/// One gateway answer to record.
pub struct Settlement<'a> {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub outcome: &'a Settled,
    pub at: DateTime<Utc>,
    /// The `charge_succeeded` / `charge_declined` event's data.
    pub data: Value,
}

/// pending → succeeded | declined, set-based, locking the rows in id order (level 3
/// of the lock order). Returns the ids that moved: an attempt already settled (a
/// duplicate delivery) does not move and writes no event.
pub async fn settle(conn: &mut PgConnection, items: &[Settlement<'_>], evs: &mut Vec<NewEvent>) -> Result<Vec<Uuid>> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
    let statuses: Vec<TransactionStatus> = items.iter().map(|i| i.outcome.transaction_status()).collect();
    let refs: Vec<Option<String>> = items
        .iter()
        .map(|i| match i.outcome {
            Settled::Approved { reference } => Some(reference.clone()),
            Settled::Declined { .. } | Settled::Refused { .. } => None,
        })
        .collect();
    let codes: Vec<Option<String>> = items.iter().map(|i| i.outcome.decline_code().map(str::to_owned)).collect();
    let network = |f: fn(&governor::Network) -> Option<String>| -> Vec<Option<String>> {
        items.iter().map(|i| i.outcome.network().and_then(f)).collect()
    };
    let schemes = network(|n| Some(n.scheme.as_str().to_owned()));
    let net_codes = network(|n| Some(n.response_code.clone()));
    let advices = network(|n| n.advice_code.clone());
    let categories: Vec<Option<i16>> =
        items.iter().map(|i| i.outcome.network().and_then(|n| n.visa_category()).map(i16::from)).collect();
    let ats: Vec<DateTime<Utc>> = items.iter().map(|i| i.at).collect();
    let moved = sqlx::query_scalar!(
        "WITH locked AS (SELECT id FROM transactions WHERE id = ANY($1) AND status = ANY($6::transaction_status[])
            ORDER BY id FOR NO KEY UPDATE)
         UPDATE transactions t SET status = u.st, gateway_reference = u.r, decline_code = u.c, settled_at = u.at,
            enqueued_until = NULL, network_scheme = u.ns, network_code = u.nc, network_category = u.ncat,
            network_advice = u.na
         FROM unnest($1::uuid[], $2::transaction_status[], $3::text[], $4::text[], $5::timestamptz[],
                     $7::text[], $8::text[], $9::int2[], $10::text[]) AS u(id, st, r, c, at, ns, nc, ncat, na),
            locked
         WHERE t.id = u.id AND locked.id = t.id AND t.status = ANY($6::transaction_status[])
         RETURNING t.id",
        &ids,
        &statuses as _,
        &refs as &[Option<String>],
        &codes as &[Option<String>],
        &ats,
        &sources(Cause::Settled) as _,
        &schemes as &[Option<String>],
        &net_codes as &[Option<String>],
        &categories as &[Option<i16>],
        &advices as &[Option<String>],
    )
    .fetch_all(conn)
    .await?;
    for i in items.iter().filter(|i| moved.contains(&i.id)) {
        let kind = match i.outcome {
            Settled::Approved { .. } => "charge_succeeded",
            Settled::Declined { .. } | Settled::Refused { .. } => "charge_declined",
        };
        evs.push(NewEvent::new(i.merchant_id, "transaction", i.id, kind, i.data.clone(), Actor::System));
    }
    Ok(moved)
}

/// pending → error, with the reason kept on the row and in a `charge_error` event.
/// Returns (merchant, cycle) when it moved.
pub async fn error(
    conn: &mut PgConnection,
    id: Uuid,
    message: &str,
    event_error: &str,
    evs: &mut Vec<NewEvent>,
) -> Result<Option<(Uuid, Option<Uuid>)>> {
    let row = sqlx::query!(
        "UPDATE transactions SET status = 'error', error_message = $2, enqueued_until = NULL
         WHERE id = $1 AND status = ANY($3::transaction_status[]) RETURNING merchant_id, billing_cycle_id",
        id,
        message,
        &sources(Cause::Errored) as _,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| {
        evs.push(NewEvent::new(
            r.merchant_id,
            "transaction",
            id,
            "charge_error",
            json!({"error": event_error}),
            Actor::System,
        ));
        (r.merchant_id, r.billing_cycle_id)
    }))
}

/// What a replay reopened.
pub struct Reopened {
    pub merchant_id: Uuid,
    pub billing_cycle_id: Option<Uuid>,
    pub kind: TransactionKind,
    pub payment_method: Option<String>,
}

/// error (or a pending one whose job died) → pending, leased again for the replayed
/// job, with the subscription's payment method as it is now (a card the merchant
/// replaced since the failure is not charged). `data` is the `replayed` event's data.
pub async fn reopen(
    conn: &mut PgConnection,
    id: Uuid,
    lease_secs: i64,
    mut data: Value,
    evs: &mut Vec<NewEvent>,
) -> Result<Option<Reopened>> {
    let row = sqlx::query_as!(
        Reopened,
        r#"UPDATE transactions t SET status = 'pending', error_message = NULL,
            enqueued_until = now() + make_interval(secs => $2),
            payment_method = COALESCE((SELECT s.payment_method FROM billing_cycles c
                JOIN subscriptions s ON s.id = c.subscription_id WHERE c.id = t.billing_cycle_id), t.payment_method)
         WHERE t.id = $1 AND t.status = ANY($3::transaction_status[])
         RETURNING t.merchant_id, t.billing_cycle_id, t.kind AS "kind: TransactionKind", t.payment_method"#,
        id,
        lease_secs as f64,
        &sources(Cause::Replayed) as _,
    )
    .fetch_optional(conn)
    .await?;
    if let Some(r) = &row {
        data["paymentMethod"] = json!(r.payment_method);
        evs.push(NewEvent::new(r.merchant_id, "transaction", id, "replayed", data, Actor::Operator));
    }
    Ok(row)
}

/// error → succeeded: the gateway says the attempt went through after all.
/// Returns (merchant, cycle) when it moved.
pub async fn reconcile(
    conn: &mut PgConnection,
    id: Uuid,
    reference: &str,
    evs: &mut Vec<NewEvent>,
) -> Result<Option<(Uuid, Option<Uuid>)>> {
    let row = sqlx::query!(
        "UPDATE transactions SET status = 'succeeded', gateway_reference = $2, error_message = NULL, settled_at = now()
         WHERE id = $1 AND status = ANY($3::transaction_status[]) RETURNING merchant_id, billing_cycle_id",
        id,
        reference,
        &sources(Cause::Reconciled) as _,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| {
        evs.push(NewEvent::new(
            r.merchant_id,
            "transaction",
            id,
            "charge_succeeded",
            json!({"gatewayReference": reference, "reconciled": true}),
            Actor::System,
        ));
        (r.merchant_id, r.billing_cycle_id)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_settles_once() {
        assert!(permits(Cause::Settled, Pending, Succeeded));
        assert!(!permits(Cause::Settled, Declined, Succeeded));
        assert!(!permits(Cause::Settled, Error, Succeeded));
        assert!(!permits(Cause::Replayed, Succeeded, Pending));
        assert!(!permits(Cause::Replayed, Declined, Pending));
        assert_eq!(sources(Cause::Reconciled), vec![Error]);
    }
}
