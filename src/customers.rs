//! Customers: the merchant's own account ids, upserted when a subscription or a
//! payment series names one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};

/// The customer block of a request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerInput {
    /// The merchant's id for the customer. Without one, the customer is looked up by
    /// `email` or `phone`, or created with a generated id (docs/payment-links.md#customer-lookup).
    pub customer_account_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl CustomerInput {
    pub fn check(&self, prefix: &str, errors: &mut Vec<FieldError>) {
        let id = self.customer_account_id.as_deref();
        let n = id.map(|id| id.chars().count());
        if id.is_none() && self.email.is_none() && self.phone.is_none() {
            errors.push(FieldError::new(
                format!("{prefix}.customerAccountId"),
                "is required unless the customer is given by email or phone",
            ));
        } else if n.is_some_and(|n| n == 0 || n > 255) {
            errors.push(FieldError::new(format!("{prefix}.customerAccountId"), "must be 1 to 255 characters"));
        } else if id.is_some_and(|id| id.chars().any(char::is_control)) {
            errors.push(FieldError::new(format!("{prefix}.customerAccountId"), "must not contain control characters"));
        }
        if let Some(email) = &self.email {
            let ok = email.len() <= 254
                && email
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                errors.push(FieldError::new(format!("{prefix}.email"), "is not a valid email address"));
            }
        }
        if let Some(phone) = &self.phone {
            let digits = phone.chars().filter(char::is_ascii_digit).count();
            let ok = (4..=20).contains(&digits) && phone.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
            if !ok {
                errors.push(FieldError::new(format!("{prefix}.phone"), "is not a valid phone number"));
            }
        }
        for (field, v) in [("firstName", &self.first_name), ("lastName", &self.last_name)] {
            if v.as_ref().is_some_and(|s| s.chars().count() > 255) {
                errors.push(FieldError::new(format!("{prefix}.{field}"), "must be at most 255 characters"));
            } else if v.as_ref().is_some_and(|s| s.chars().any(char::is_control)) {
                errors.push(FieldError::new(format!("{prefix}.{field}"), "must not contain control characters"));
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    #[serde(skip)]
    pub id: Uuid,
    pub customer_account_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The digits of a phone number (and a leading `+`), as phones are compared.
fn phone_key(phone: &str) -> String {
    phone.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect()
}

/// Paymennt's customer lookup: the merchant's one customer with this email or phone
/// (emails compared without case, phones by their digits), or a new account id
/// (`cus_…`) when there is none. An email of one customer and a phone of another, or
/// a value several customers share, is ambiguous: 422 on `customer`. Lookups of one
/// merchant are serialised (a transaction-scoped advisory lock), so two requests for a
/// new customer create one.
async fn look_up(conn: &mut PgConnection, merchant_id: Uuid, c: &CustomerInput) -> Result<String> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('customer-lookup:' || $1::uuid::text, 0))",
        merchant_id
    )
    .execute(&mut *conn)
    .await?;
    let phone = c.phone.as_deref().map(phone_key);
    let found = sqlx::query_scalar!(
        "SELECT customer_account_id FROM customers WHERE merchant_id = $1
           AND (lower(email) = lower($2) OR regexp_replace(phone, '[^0-9+]', '', 'g') = $3)
         ORDER BY id LIMIT 3",
        merchant_id,
        c.email,
        phone,
    )
    .fetch_all(&mut *conn)
    .await?;
    match found.as_slice() {
        [] => Ok(format!("cus_{}", Uuid::now_v7().simple())),
        [one] => Ok(one.clone()),
        _ => {
            Err(Error::validation("customer", "the email and phone match different customers: give customerAccountId"))
        }
    }
}

/// Insert or update the customer; given fields overwrite, absent ones are kept. A
/// creation or an actual change writes its event; naming an unchanged customer does not.
/// A customer given by email or phone only is looked up first (`look_up`).
pub async fn upsert(conn: &mut PgConnection, merchant_id: Uuid, c: &CustomerInput) -> Result<Uuid> {
    let Some(account) = c.customer_account_id.as_deref() else {
        let account = look_up(conn, merchant_id, c).await?;
        let c = CustomerInput { customer_account_id: Some(account), ..c.clone() };
        return Box::pin(upsert(conn, merchant_id, &c)).await;
    };
    let changed = sqlx::query!(
        r#"INSERT INTO customers (id, merchant_id, customer_account_id, email, phone, first_name, last_name)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT customers_merchant_account_key DO UPDATE SET
           email = COALESCE(EXCLUDED.email, customers.email),
           phone = COALESCE(EXCLUDED.phone, customers.phone),
           first_name = COALESCE(EXCLUDED.first_name, customers.first_name),
           last_name = COALESCE(EXCLUDED.last_name, customers.last_name)
         WHERE (customers.email, customers.phone, customers.first_name, customers.last_name)
           IS DISTINCT FROM (COALESCE(EXCLUDED.email, customers.email), COALESCE(EXCLUDED.phone, customers.phone),
                             COALESCE(EXCLUDED.first_name, customers.first_name), COALESCE(EXCLUDED.last_name, customers.last_name))
         RETURNING id, (xmax = 0) AS "inserted!""#,
        Uuid::now_v7(),
        merchant_id,
        account,
        c.email,
        c.phone,
        c.first_name,
        c.last_name,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let data = serde_json::json!({
        "customerAccountId": c.customer_account_id, "email": c.email, "phone": c.phone,
        "firstName": c.first_name, "lastName": c.last_name,
    });
    match changed {
        Some(row) => {
            let kind = if row.inserted { "created" } else { "updated" };
            events::record_one(conn, NewEvent::new(merchant_id, "customer", row.id, kind, data, Actor::Merchant))
                .await?;
            Ok(row.id)
        }
        None => Ok(sqlx::query_scalar!(
            "SELECT id FROM customers WHERE merchant_id = $1 AND customer_account_id = $2",
            merchant_id,
            account,
        )
        .fetch_one(conn)
        .await?),
    }
}

/// A statement that yields customers: `SELECT`, every column, then `$tail`, checked as one query.
macro_rules! query_customers {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Customer,
            "SELECT id, customer_account_id, email, phone, first_name, last_name, created_at, updated_at" + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, account_id: &str) -> Result<Customer> {
    if account_id.contains('\0') {
        // Postgres text cannot hold U+0000, so no stored customer has it.
        return Err(Error::NotFound("customer"));
    }
    query_customers!(" FROM customers WHERE merchant_id = $1 AND customer_account_id = $2", merchant_id, account_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("customer"))
}

/// A customer by its id (webhook snapshots).
pub async fn by_id(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Customer> {
    query_customers!(" FROM customers WHERE merchant_id = $1 AND id = $2", merchant_id, id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("customer"))
}
