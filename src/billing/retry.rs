//! Manual retry of a `failed` or `error` cycle (SPEC 5).

use jobs::{ChargeTransaction, Job};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::cycles::{self, BillingCycle, CycleStatus};
use super::transactions::{self, TransactionKind};
use crate::error::{Error, Result};
use crate::events::{self, Actor, NewEvent};

/// Open a `manual_retry` transaction on a failed or errored cycle; returns the job
/// that charges it. Any other status is a conflict.
pub async fn manual(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
    lease_secs: i64,
) -> Result<(BillingCycle, Job)> {
    let cycle: BillingCycle = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM billing_cycles WHERE id = $1 AND merchant_id = $2 FOR UPDATE",
        cycles::COLUMNS
    )))
    .bind(cycle_id)
    .bind(merchant_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("billing cycle"))?;
    if !matches!(cycle.status, CycleStatus::Failed | CycleStatus::Error) {
        return Err(Error::conflict(format!(
            "only failed or error cycles can be retried; this one is {}",
            serde_json::to_value(cycle.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        )));
    }
    let (payment_method, subscription_status): (Option<String>, crate::subscriptions::SubscriptionStatus) =
        sqlx::query_as("SELECT payment_method, status FROM subscriptions WHERE id = $1")
            .bind(cycle.subscription_id)
            .fetch_one(&mut *conn)
            .await?;
    let Some(payment_method) = payment_method else {
        return Err(Error::conflict("the subscription has no payment method"));
    };
    let txn_id = Uuid::now_v7();
    let attempt = cycle.attempts + 1;
    sqlx::query(
        "INSERT INTO transactions (id, merchant_id, billing_cycle_id, kind, amount, currency, payment_method, idempotency_key, attempt, enqueued_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))",
    )
    .bind(txn_id)
    .bind(merchant_id)
    .bind(cycle.id)
    .bind(TransactionKind::ManualRetry)
    .bind(cycle.amount)
    .bind(&cycle.currency)
    .bind(&payment_method)
    .bind(transactions::idempotency_key(txn_id))
    .bind(attempt)
    .bind(lease_secs as f64)
    .execute(&mut *conn)
    .await?;
    let updated: BillingCycle = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE billing_cycles SET status = 'retrying', attempts = $2, next_retry_at = NULL, enqueued_until = NULL
         WHERE id = $1 RETURNING {}",
        cycles::COLUMNS
    )))
    .bind(cycle.id)
    .bind(attempt)
    .fetch_one(&mut *conn)
    .await?;
    events::record(
        conn,
        &[
            NewEvent::new(merchant_id, "transaction", txn_id, "created", json!({"kind": "manual_retry", "attempt": attempt}), Actor::Merchant),
            NewEvent::new(
                merchant_id,
                "billing_cycle",
                cycle.id,
                "status_changed",
                json!({"from": cycle.status, "to": "retrying", "manualRetry": true, "subscriptionStatus": subscription_status}),
                Actor::Merchant,
            ),
        ],
    )
    .await?;
    Ok((updated, Job::ChargeTransaction(ChargeTransaction { transaction_id: txn_id, attempt: 0 })))
}

/// The latest `error` attempt of an errored cycle: (transaction id, idempotency key).
pub async fn errored_attempt(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    cycle_id: Uuid,
) -> Result<Option<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.idempotency_key FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
         WHERE c.id = $1 AND c.merchant_id = $2 AND c.status = 'error' AND t.status = 'error'
         ORDER BY t.attempt DESC LIMIT 1",
    )
    .bind(cycle_id)
    .bind(merchant_id)
    .fetch_optional(conn)
    .await?)
}

/// The gateway says an errored attempt went through after all (a timeout after the
/// charge): record it as succeeded instead of charging again.
pub async fn settle_errored(conn: &mut PgConnection, transaction_id: Uuid, reference: &str) -> Result<bool> {
    let row: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE transactions SET status = 'succeeded', gateway_reference = $2, error_message = NULL, settled_at = now()
         WHERE id = $1 AND status = 'error' RETURNING merchant_id, billing_cycle_id",
    )
    .bind(transaction_id)
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((merchant, cycle)) = row else { return Ok(false) };
    let sub: Option<Uuid> = sqlx::query_scalar(
        "UPDATE billing_cycles SET status = 'succeeded', failure_code = NULL WHERE id = $1 AND status = 'error' RETURNING subscription_id",
    )
    .bind(cycle)
    .fetch_optional(&mut *conn)
    .await?;
    let mut evs = vec![
        NewEvent::new(
            merchant,
            "transaction",
            transaction_id,
            "charge_succeeded",
            json!({"gatewayReference": reference, "reconciled": true}),
            Actor::System,
        ),
        NewEvent::new(
            merchant,
            "billing_cycle",
            cycle,
            "status_changed",
            json!({"from": "error", "to": "succeeded", "reconciled": true}),
            Actor::System,
        ),
    ];
    if let Some(sub) = sub {
        let moved = sqlx::query("UPDATE subscriptions SET status = 'active' WHERE id = $1 AND status = 'past_due'")
            .bind(sub)
            .execute(&mut *conn)
            .await?;
        if moved.rows_affected() == 1 {
            evs.push(NewEvent::new(
                merchant,
                "subscription",
                sub,
                "status_changed",
                json!({"from": "past_due", "to": "active"}),
                Actor::System,
            ));
        }
    }
    events::record(conn, &evs).await?;
    Ok(true)
}
