//! Payment series: a customer's stored payment method under which the merchant
//! triggers unscheduled, merchant-initiated charges.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::billing::transactions::{self, Transaction, TransactionKind, TransactionView};
use crate::billing::{card_history, governor};
use crate::customers::{self, CustomerInput};
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::money::{AmountInput, Currency, parse_amount};
use crate::subscriptions::CustomerRef;
use crate::validate::{self, Errors};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "series_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum SeriesStatus {
    Pending,
    Active,
    Cancelled,
}

impl SeriesStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesStatus::Pending => "pending",
            SeriesStatus::Active => "active",
            SeriesStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSeries {
    pub customer: CustomerInput,
    pub payment_method: String,
    pub currency: String,
    pub description: Option<String>,
    pub partner_reference: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSeriesTransaction {
    pub amount: AmountInput,
    pub description: Option<String>,
    pub partner_reference: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Series {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub customer_account_id: String,
    pub payment_method: String,
    pub currency: String,
    pub description: Option<String>,
    pub partner_reference: Option<String>,
    pub metadata: Value,
    pub status: SeriesStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesView {
    pub id: Uuid,
    pub customer: CustomerRef,
    pub payment_method: String,
    pub currency: String,
    pub description: Option<String>,
    pub partner_reference: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: SeriesStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Series> for SeriesView {
    fn from(s: &Series) -> SeriesView {
        SeriesView {
            id: s.id,
            customer: CustomerRef { customer_account_id: s.customer_account_id.clone() },
            payment_method: s.payment_method.clone(),
            currency: s.currency.clone(),
            description: s.description.clone(),
            partner_reference: s.partner_reference.clone(),
            metadata: s.metadata.clone(),
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

fn event(s: &Series, kind: &'static str, data: Value) -> NewEvent {
    NewEvent::new(s.merchant_id, "payment_series", s.id, kind, data, Actor::Merchant)
}

/// The merchant's series `id`, or its series after `after`, in id order.
async fn select(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Series>> {
    Ok(sqlx::query_as!(
        Series,
        r#"SELECT p.id, p.merchant_id, c.customer_account_id, p.payment_method, p.currency, p.description,
            p.partner_reference, p.metadata, p.status AS "status: SeriesStatus", p.created_at, p.updated_at
         FROM payment_series p JOIN customers c ON c.id = p.customer_id
         WHERE p.merchant_id = $1 AND ($2::uuid IS NULL OR p.id = $2) AND ($3::uuid IS NULL OR p.id > $3)
         ORDER BY p.id LIMIT $4"#,
        merchant_id,
        id,
        after,
        limit,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Series> {
    select(conn, merchant_id, Some(id), None, 1).await?.pop().ok_or(Error::NotFound("payment series"))
}

pub async fn list(conn: &mut PgConnection, merchant_id: Uuid, after: Option<Uuid>, limit: i64) -> Result<Vec<Series>> {
    select(conn, merchant_id, None, after, limit).await
}

/// The charges of the merchant's payment series `series_id`, oldest
/// first, after `after`, at most `limit`.
pub async fn payments(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    series_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Transaction>> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM transactions WHERE merchant_id = $1 AND payment_series_id = $2
           AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
        merchant_id,
        series_id,
        after,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = transactions::by_ids(conn, &ids).await?;
    rows.sort_by_key(|t| t.id);
    Ok(rows)
}

pub async fn create(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    req: CreateSeries,
    pm_accepted: bool,
) -> Result<Series> {
    let mut e = Errors::new();
    req.customer.check("customer", &mut e);
    if Currency::parse(&req.currency).is_none() {
        e.push(FieldError::new("currency", "must be an ISO 4217 currency code such as EUR"));
    }
    validate::opt_text(&mut e, "description", req.description.as_deref(), 2000);
    if let Some(r) = &req.partner_reference {
        validate::text(&mut e, "partnerReference", r, 1, 255);
    }
    let metadata = req.metadata.clone().unwrap_or_else(|| json!({}));
    validate::metadata(&mut e, "metadata", &metadata);
    crate::subscriptions::check_payment_method(&mut e, Some(&req.payment_method), pm_accepted);
    crate::subscriptions::finish_with_payment_method(e)?;

    let customer_id = customers::upsert(conn, merchant_id, &req.customer).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query!(
        "INSERT INTO payment_series (id, merchant_id, customer_id, payment_method, currency, description, partner_reference, metadata, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active')
         ON CONFLICT ON CONSTRAINT payment_series_partner_reference_key DO NOTHING",
        id,
        merchant_id,
        customer_id,
        req.payment_method,
        req.currency,
        req.description,
        req.partner_reference,
        metadata,
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        let r = req.partner_reference.clone().unwrap_or_default();
        let existing = sqlx::query_scalar!(
            "SELECT id FROM payment_series WHERE merchant_id = $1 AND partner_reference = $2",
            merchant_id,
            r
        )
        .fetch_optional(&mut *conn)
        .await?;
        return Err(Error::Conflict {
            detail: format!("a payment series with partnerReference {r:?} already exists"),
            existing,
        });
    }
    let s = get(conn, merchant_id, id).await?;
    let data = serde_json::to_value(SeriesView::from(&s)).unwrap_or_default();
    events::record_one(conn, event(&s, "created", data)).await?;
    Ok(s)
}

pub async fn cancel(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Series> {
    let s = get(conn, merchant_id, id).await?;
    if s.status == SeriesStatus::Cancelled {
        return Err(Error::conflict("the payment series is already cancelled"));
    }
    sqlx::query!("UPDATE payment_series SET status = 'cancelled' WHERE id = $1 AND status <> 'cancelled'", id)
        .execute(&mut *conn)
        .await?;
    let s = get(conn, merchant_id, id).await?;
    events::record_one(conn, event(&s, "status_changed", json!({"from": "active", "to": "cancelled"}))).await?;
    Ok(s)
}

/// Open a `payment_series` transaction; the caller enqueues its charge after commit.
pub async fn create_transaction(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    series_id: Uuid,
    req: CreateSeriesTransaction,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> Result<Transaction> {
    let s = get(conn, merchant_id, series_id).await?;
    let mut e = Errors::new();
    let amount = parse_amount(&req.amount.0, Currency::parse(&s.currency)).unwrap_or_else(|m| {
        e.push(FieldError::new("amount", m));
        Default::default()
    });
    validate::opt_text(&mut e, "description", req.description.as_deref(), 2000);
    if let Some(r) = &req.partner_reference {
        validate::text(&mut e, "partnerReference", r, 1, 255);
    }
    validate::finish(e)?;
    if s.status != SeriesStatus::Active {
        return Err(Error::conflict("the payment series is not active"));
    }
    // The card networks' limits count series charges too (docs/governor.md#refusals).
    let card = card_history::load(conn, &[(merchant_id, s.payment_method.clone())]).await?.pop().unwrap_or_default();
    if let Err(refusal) = card.check(TransactionKind::PaymentSeries, now) {
        metrics::counter!(governor::METRIC, "rule" => refusal.rule()).increment(1);
        return Err(Error::RetryRefused(refusal));
    }
    if let Some(r) = &req.partner_reference
        && let Some(existing) = transactions::by_partner_reference(conn, merchant_id, r).await?
    {
        return Err(Error::Conflict {
            detail: format!("a transaction with partnerReference {r:?} already exists: {existing}"),
            existing: Some(existing),
        });
    }
    let id = Uuid::now_v7();
    // Leased to the charge job the caller enqueues after commit (docs/architecture.md#the-lease).
    let inserted = sqlx::query!(
        "INSERT INTO transactions (id, merchant_id, payment_series_id, kind, amount, currency, payment_method,
            description, idempotency_key, attempt, partner_reference, enqueued_until)
         VALUES ($1, $2, $3, 'payment_series', $4, $5, $6, $7, $8, 1, $9, now() + make_interval(secs => $10))
         ON CONFLICT ON CONSTRAINT transactions_partner_reference_key DO NOTHING",
        id,
        merchant_id,
        series_id,
        amount,
        s.currency,
        s.payment_method,
        req.description,
        transactions::idempotency_key(id),
        req.partner_reference,
        lease_secs as f64,
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        let r = req.partner_reference.unwrap_or_default();
        let existing = transactions::by_partner_reference(conn, merchant_id, &r).await?;
        return Err(Error::Conflict {
            detail: format!("a transaction with partnerReference {r:?} already exists"),
            existing,
        });
    }
    let txn: Transaction = transactions::get(conn, merchant_id, id).await?;
    let data = serde_json::to_value(TransactionView::from(&txn)).unwrap_or_default();
    events::record_one(conn, NewEvent::new(merchant_id, "transaction", txn.id, "created", data, Actor::Merchant))
        .await?;
    Ok(txn)
}

/// Replace the card of a `pending` or `active` series with one a checkout collected
/// (docs/pages.md#the-checkout); the change is an event by `actor`.
pub async fn replace_payment_method(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    token: &str,
    card: &crate::cards::Kept,
    actor: Actor,
) -> Result<Series> {
    let updated = sqlx::query_scalar!(
        "UPDATE payment_series SET payment_method = $3
         WHERE id = $1 AND merchant_id = $2 AND status IN ('pending', 'active') RETURNING id",
        id,
        merchant_id,
        token,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if updated.is_none() {
        let s = get(conn, merchant_id, id).await?;
        return Err(Error::conflict(format!("a {} payment series cannot get a new card", s.status.as_str())));
    }
    let s = get(conn, merchant_id, id).await?;
    let data = json!({"paymentMethod": token, "paymentMethodDetails": card});
    events::record_one(conn, NewEvent::new(merchant_id, "payment_series", id, "updated", data, actor)).await?;
    Ok(s)
}
