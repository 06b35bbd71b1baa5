//! Webhook endpoints (docs/webhooks.md#endpoints): where a merchant wants to be told,
//! which types, and the secrets that sign what it is sent. Every change writes its
//! event in the same transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{signing, types};
use crate::error::{Error, Result};
use crate::events::{self, Actor, NewEvent};
use crate::validate::{self, Errors, double_option};

/// At most this many endpoints per merchant.
pub const MAX_PER_MERCHANT: i64 = 16;
/// How long a rotated-out secret keeps signing, unless the request says otherwise.
pub const DEFAULT_OVERLAP_SECS: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "webhook_endpoint_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub status: EndpointStatus,
    pub description: Option<String>,
    pub metadata: Value,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint as the API shows it. `secret` only in the answers that create one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub status: EndpointStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs (after a rotation).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    pub fn view(&self) -> EndpointView {
        EndpointView {
            id: self.id,
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            status: self.status,
            secret: None,
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            disabled_reason: self.disabled_reason.clone(),
            failing_since: self.failing_since,
            last_success_at: self.last_success_at,
            previous_secret_expires_at: self.previous_secret_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The view with the secret: only right after it was made.
    pub fn view_with_secret(&self) -> EndpointView {
        EndpointView { secret: Some(self.secret.clone()), ..self.view() }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEndpoint {
    pub url: String,
    /// Exact types, `prefix.*` or `*` (the default).
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub status: Option<EndpointStatus>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing (0 to 604800; default 86400).
    pub expires_in_seconds: Option<i64>,
}

/// `https://` always; `http://` only for sandbox merchants. No credentials in the URL.
fn check_url(errors: &mut Errors, url: &str, sandbox: bool) {
    if url.len() > 2048 {
        errors.push(crate::error::FieldError::new("url", "must be at most 2048 characters"));
        return;
    }
    match url::Url::parse(url) {
        Err(_) => errors.push(crate::error::FieldError::new("url", "must be an absolute URL")),
        Ok(u) => {
            let scheme_ok = u.scheme() == "https" || (sandbox && u.scheme() == "http");
            if !scheme_ok {
                let allowed =
                    if sandbox { "https:// or http://" } else { "https:// (http:// only for sandbox merchants)" };
                errors.push(crate::error::FieldError::new("url", format!("must start with {allowed}")));
            } else if u.host_str().is_none_or(str::is_empty) {
                errors.push(crate::error::FieldError::new("url", "must name a host"));
            } else if !u.username().is_empty() || u.password().is_some() {
                errors.push(crate::error::FieldError::new("url", "must not carry credentials"));
            }
        }
    }
}

fn check_types(errors: &mut Errors, given: &[String]) {
    if given.is_empty() || given.len() > 64 {
        errors.push(crate::error::FieldError::new("eventTypes", "must list 1 to 64 types"));
    }
    for (i, t) in given.iter().enumerate() {
        if !types::valid_pattern(t) {
            errors.push(crate::error::FieldError::new(
                format!("eventTypes[{i}]"),
                "must be a known event type, `<object>.*` or `*`",
            ));
        }
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|t| seen.insert(t.clone()));
    v
}

/// A statement that yields whole endpoints: `$head`, every column (the enum typed),
/// then `$tail`, checked as one query.
macro_rules! query_endpoints {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Endpoint,
            $head
                + r#"id, merchant_id, url, event_types, status AS "status: EndpointStatus", description, metadata,
                    secret, previous_secret, previous_secret_expires_at, disabled_reason, failing_since,
                    last_success_at, created_at, updated_at"#
                + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Endpoint> {
    query_endpoints!("SELECT ", " FROM webhook_endpoints WHERE merchant_id = $1 AND id = $2", merchant_id, id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("webhook endpoint"))
}

async fn lock(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Endpoint> {
    query_endpoints!(
        "SELECT ",
        " FROM webhook_endpoints WHERE merchant_id = $1 AND id = $2 FOR NO KEY UPDATE",
        merchant_id,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("webhook endpoint"))
}

pub async fn list(conn: &mut PgConnection, merchant_id: Uuid) -> Result<Vec<Endpoint>> {
    Ok(query_endpoints!("SELECT ", " FROM webhook_endpoints WHERE merchant_id = $1 ORDER BY id", merchant_id)
        .fetch_all(conn)
        .await?)
}

/// Every merchant's endpoints (operators: `recur webhooks endpoints`).
pub async fn list_all(conn: &mut PgConnection) -> Result<Vec<Endpoint>> {
    Ok(query_endpoints!("SELECT ", " FROM webhook_endpoints ORDER BY merchant_id, id").fetch_all(conn).await?)
}

fn event(e: &Endpoint, kind: &'static str, data: Value, actor: Actor) -> NewEvent {
    NewEvent::new(e.merchant_id, "webhook_endpoint", e.id, kind, data, actor)
}

fn status_event(e: &Endpoint, from: EndpointStatus, actor: Actor, reason: Option<&str>) -> NewEvent {
    event(e, "status_changed", json!({"from": from, "to": e.status, "reason": reason}), actor)
}

pub async fn create(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    sandbox: bool,
    req: CreateEndpoint,
) -> Result<Endpoint> {
    let mut errors = Errors::new();
    check_url(&mut errors, &req.url, sandbox);
    let event_types = dedup(req.event_types.unwrap_or_else(|| vec!["*".into()]));
    check_types(&mut errors, &event_types);
    validate::opt_text(&mut errors, "description", req.description.as_deref(), 500);
    let metadata = req.metadata.unwrap_or_else(|| json!({}));
    validate::metadata(&mut errors, "metadata", &metadata);
    validate::finish(errors)?;
    // One creation at a time per merchant, so the cap holds under concurrent requests.
    sqlx::query!("SELECT id FROM merchants WHERE id = $1 FOR NO KEY UPDATE", merchant_id).fetch_one(&mut *conn).await?;
    let count =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM webhook_endpoints WHERE merchant_id = $1"#, merchant_id)
            .fetch_one(&mut *conn)
            .await?;
    if count >= MAX_PER_MERCHANT {
        return Err(Error::conflict(format!("a merchant has at most {MAX_PER_MERCHANT} webhook endpoints")));
    }
    let e = query_endpoints!(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, description, metadata, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        "",
        Uuid::now_v7(),
        merchant_id,
        req.url,
        &event_types,
        req.description,
        metadata,
        signing::new_secret(),
    )
    .fetch_one(&mut *conn)
    .await?;
    events::record_one(conn, event(&e, "created", json!({"url": e.url, "eventTypes": e.event_types}), Actor::Merchant))
        .await?;
    Ok(e)
}

pub async fn update(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    sandbox: bool,
    id: Uuid,
    req: UpdateEndpoint,
) -> Result<Endpoint> {
    let mut errors = Errors::new();
    if let Some(url) = &req.url {
        check_url(&mut errors, url, sandbox);
    }
    let event_types = req.event_types.map(dedup);
    if let Some(t) = &event_types {
        check_types(&mut errors, t);
    }
    if let Some(d) = &req.description {
        validate::opt_text(&mut errors, "description", d.as_deref(), 500);
    }
    if let Some(m) = &req.metadata {
        validate::metadata(&mut errors, "metadata", m);
    }
    validate::finish(errors)?;
    let before = lock(conn, merchant_id, id).await?;
    let status = req.status.unwrap_or(before.status);
    let enabling = before.status == EndpointStatus::Disabled && status == EndpointStatus::Enabled;
    let after = query_endpoints!(
        "UPDATE webhook_endpoints SET url = $2, event_types = $3, status = $4, description = $5, metadata = $6,
            disabled_reason = CASE WHEN $4::webhook_endpoint_status = 'enabled' THEN NULL WHEN $7 THEN 'disabled by the merchant' ELSE disabled_reason END,
            failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END
         WHERE id = $1 RETURNING ",
        "",
        id,
        req.url.clone().unwrap_or_else(|| before.url.clone()),
        &event_types.clone().unwrap_or_else(|| before.event_types.clone()),
        status as EndpointStatus,
        req.description.clone().unwrap_or_else(|| before.description.clone()),
        req.metadata.clone().unwrap_or_else(|| before.metadata.clone()),
        before.status == EndpointStatus::Enabled && status == EndpointStatus::Disabled,
        enabling,
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut evs = Vec::new();
    let mut changed = serde_json::Map::new();
    if after.url != before.url {
        changed.insert("url".into(), json!(after.url));
    }
    if after.event_types != before.event_types {
        changed.insert("eventTypes".into(), json!(after.event_types));
    }
    if after.description != before.description {
        changed.insert("description".into(), json!(after.description));
    }
    if after.metadata != before.metadata {
        changed.insert("metadata".into(), after.metadata.clone());
    }
    if !changed.is_empty() {
        evs.push(event(&after, "updated", Value::Object(changed), Actor::Merchant));
    }
    if after.status != before.status {
        evs.push(status_event(&after, before.status, Actor::Merchant, None));
    }
    events::record(conn, &evs).await?;
    Ok(after)
}

/// A new secret; the old one keeps signing for `expires_in_seconds`.
pub async fn rotate(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, req: RotateSecret) -> Result<Endpoint> {
    let overlap = req.expires_in_seconds.unwrap_or(DEFAULT_OVERLAP_SECS);
    let mut errors = Errors::new();
    validate::range(&mut errors, "expiresInSeconds", overlap, 0, 7 * 86_400);
    validate::finish(errors)?;
    lock(conn, merchant_id, id).await?;
    let e = query_endpoints!(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,
            previous_secret_expires_at = now() + make_interval(secs => $3)
         WHERE id = $1 RETURNING ",
        "",
        id,
        signing::new_secret(),
        overlap as f64,
    )
    .fetch_one(&mut *conn)
    .await?;
    let data = json!({"previousSecretExpiresAt": e.previous_secret_expires_at});
    events::record_one(conn, event(&e, "secret_rotated", data, Actor::Merchant)).await?;
    Ok(e)
}

/// Remove an endpoint and its deliveries.
pub async fn delete(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Endpoint> {
    let e = lock(conn, merchant_id, id).await?;
    sqlx::query!("DELETE FROM webhook_endpoints WHERE id = $1", id).execute(&mut *conn).await?;
    events::record_one(conn, event(&e, "deleted", json!({"url": e.url}), Actor::Merchant)).await?;
    Ok(e)
}

/// Disable an endpoint recur gave up on (410 Gone, or 5 days without a success), with
/// its event. The caller holds no lock on it; a concurrent merchant change wins.
pub async fn disable(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<bool> {
    let e = query_endpoints!(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2
         WHERE id = $1 AND status = 'enabled' RETURNING ",
        "",
        id,
        reason,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(e) = e else { return Ok(false) };
    events::record_one(conn, status_event(&e, EndpointStatus::Enabled, Actor::System, Some(reason))).await?;
    Ok(true)
}

/// The merchant of an endpoint, whoever asks (operators).
pub async fn merchant_of(conn: &mut PgConnection, id: Uuid) -> Result<Uuid> {
    sqlx::query_scalar!("SELECT merchant_id FROM webhook_endpoints WHERE id = $1", id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("webhook endpoint"))
}
