//! Transactions: one gateway attempt each, for a billing cycle or a payment series.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::money::format_amount;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "transaction_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Scheduled,
    Retry,
    ManualRetry,
    PaymentSeries,
    /// The prorated charge of a subscription change (docs/amendments.md).
    Proration,
    /// A customer paid the cycle's payment link (docs/payment-links.md).
    PaymentLink,
}

impl TransactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::Scheduled => "scheduled",
            TransactionKind::Retry => "retry",
            TransactionKind::ManualRetry => "manual_retry",
            TransactionKind::PaymentSeries => "payment_series",
            TransactionKind::Proration => "proration",
            TransactionKind::PaymentLink => "payment_link",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "transaction_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Pending,
    Succeeded,
    Declined,
    Error,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Transaction {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub billing_cycle_id: Option<Uuid>,
    pub payment_series_id: Option<Uuid>,
    pub kind: TransactionKind,
    pub amount: Decimal,
    pub currency: String,
    pub description: Option<String>,
    pub status: TransactionStatus,
    pub gateway_reference: Option<String>,
    pub decline_code: Option<String>,
    pub idempotency_key: String,
    pub attempt: i32,
    pub partner_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    pub id: Uuid,
    pub billing_cycle_id: Option<Uuid>,
    pub payment_series_id: Option<Uuid>,
    pub kind: TransactionKind,
    pub amount: String,
    pub currency: String,
    pub description: Option<String>,
    pub status: TransactionStatus,
    pub gateway_reference: Option<String>,
    pub decline_code: Option<String>,
    pub idempotency_key: String,
    pub attempt: i32,
    pub partner_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

impl From<&Transaction> for TransactionView {
    fn from(t: &Transaction) -> TransactionView {
        TransactionView {
            id: t.id,
            billing_cycle_id: t.billing_cycle_id,
            payment_series_id: t.payment_series_id,
            kind: t.kind,
            amount: format_amount(t.amount, &t.currency),
            currency: t.currency.clone(),
            description: t.description.clone(),
            status: t.status,
            gateway_reference: t.gateway_reference.clone(),
            decline_code: t.decline_code.clone(),
            idempotency_key: t.idempotency_key.clone(),
            attempt: t.attempt,
            partner_reference: t.partner_reference.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            settled_at: t.settled_at,
        }
    }
}

/// The gateway idempotency key of a transaction: derived from its id, so every call
/// for this attempt, on any worker, at any time, carries the same key.
pub fn idempotency_key(transaction_id: Uuid) -> String {
    format!("recur_txn_{}", transaction_id.simple())
}

/// A statement that yields whole transactions: `SELECT`, every column (the enums
/// typed), then `$tail`, checked as one query.
macro_rules! query_transactions {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Transaction,
            "SELECT "
                + r#"id, merchant_id, billing_cycle_id, payment_series_id, kind AS "kind: TransactionKind", amount,
            currency, description, status AS "status: TransactionStatus", gateway_reference, decline_code,
            idempotency_key, attempt, partner_reference, created_at, updated_at, settled_at"#
                + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Transaction> {
    query_transactions!(" FROM transactions WHERE merchant_id = $1 AND id = $2", merchant_id, id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("transaction"))
}

/// The attempts of some cycles, by cycle then attempt. One index lookup per cycle,
/// written as such: as `billing_cycle_id = ANY($1)` the statement's generic plan,
/// made while `transactions` was still small, was a sequential scan testing every row
/// against the whole list, and stayed one as the table grew.
pub async fn for_cycles(conn: &mut PgConnection, cycle_ids: &[Uuid]) -> Result<Vec<Transaction>> {
    let mut ids = cycle_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    Ok(query_transactions!(
        " FROM unnest($1::uuid[]) AS c(cycle)
          CROSS JOIN LATERAL (SELECT * FROM transactions WHERE billing_cycle_id = c.cycle ORDER BY attempt) t
          ORDER BY billing_cycle_id, attempt",
        &ids
    )
    .fetch_all(conn)
    .await?)
}

/// Transactions by id, in no particular order (webhook snapshots).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Transaction>> {
    Ok(query_transactions!(" FROM transactions WHERE id = ANY($1)", ids).fetch_all(conn).await?)
}

pub async fn by_partner_reference(conn: &mut PgConnection, merchant_id: Uuid, r: &str) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM transactions WHERE merchant_id = $1 AND partner_reference = $2",
        merchant_id,
        r
    )
    .fetch_optional(conn)
    .await?)
}
