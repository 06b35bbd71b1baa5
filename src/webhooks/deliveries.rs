//! Webhook deliveries (docs/webhooks.md#deliveries): one row per (endpoint, event),
//! written with the event. `pending` until a 2xx (`succeeded`) or until the retry
//! schedule is spent or the endpoint answers 410 (`failed`: in the DLQ, replayable).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::endpoints::{self, EndpointStatus};
use super::snapshot;
use crate::error::{Error, Result};
use crate::events::{self, Actor, NewEvent};

/// The event a delivery sent again makes (`webhook_endpoint.delivery_retried`).
fn retried(merchant_id: Uuid, endpoint_id: Uuid, id: Uuid, event_id: Uuid, actor: Actor) -> NewEvent {
    let data = json!({"deliveryId": id, "eventId": event_id});
    NewEvent::new(merchant_id, "webhook_endpoint", endpoint_id, "delivery_retried", data, actor)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "webhook_delivery_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery as the API shows it (the receiver's own answer is not repeated).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// When the next attempt goes (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            kind: d.kind.clone(),
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
            delivered_at: d.delivered_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub kind: Option<String>,
    /// Keyset cursor: deliveries after this one, in id order.
    pub after: Option<Uuid>,
    pub limit: i64,
}

macro_rules! query_deliveries {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Delivery,
            $head
                + r#"id, endpoint_id, event_id, type AS kind, status AS "status: DeliveryStatus", attempts,
                    last_status_code, last_error, last_response, next_attempt_at, delivered_at, created_at, updated_at"#
                + $tail
            $(, $arg)*
        )
    };
}

/// An endpoint's deliveries in event order (oldest event first).
pub async fn list(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    endpoint_id: Uuid,
    f: &DeliveryFilter,
) -> Result<Vec<Delivery>> {
    endpoints::get(conn, merchant_id, endpoint_id).await?;
    Ok(query_deliveries!(
        "SELECT ",
        " FROM webhook_deliveries WHERE endpoint_id = $1
           AND ($2::webhook_delivery_status IS NULL OR status = $2) AND ($3::text IS NULL OR type = $3)
           AND ($4::uuid IS NULL OR event_id > (SELECT event_id FROM webhook_deliveries WHERE id = $4))
         ORDER BY event_id LIMIT $5",
        endpoint_id,
        f.status as Option<DeliveryStatus>,
        f.kind,
        f.after,
        f.limit,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Delivery> {
    query_deliveries!("SELECT ", " FROM webhook_deliveries WHERE merchant_id = $1 AND id = $2", merchant_id, id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("webhook delivery"))
}

/// Make a delivery go again now, whatever its status; the caller enqueues it.
pub async fn retry_now(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, lease_secs: i64) -> Result<Delivery> {
    let d = get(conn, merchant_id, id).await?;
    let endpoint = endpoints::get(conn, merchant_id, d.endpoint_id).await?;
    if endpoint.status == EndpointStatus::Disabled {
        return Err(Error::conflict("the endpoint is disabled: enable it first"));
    }
    sqlx::query!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now() WHERE id = $1",
        id
    )
    .execute(&mut *conn)
    .await?;
    crate::lease::stamp_delivery(conn, id, lease_secs).await?;
    events::record_one(conn, retried(merchant_id, d.endpoint_id, id, d.event_id, Actor::Merchant)).await?;
    get(conn, merchant_id, id).await
}

/// A failed delivery replayed from the DLQ: pending again, its job enqueued by the
/// caller (the lease is stamped here).
pub async fn reopen(conn: &mut PgConnection, id: Uuid, lease_secs: i64) -> Result<bool> {
    let moved = sqlx::query!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'failed' RETURNING merchant_id, endpoint_id, event_id",
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    crate::lease::stamp_delivery(conn, id, lease_secs).await?;
    let Some(d) = moved else { return Ok(false) };
    events::record_one(conn, retried(d.merchant_id, d.endpoint_id, id, d.event_id, Actor::Operator)).await?;
    Ok(true)
}

/// Send again every event of `[since, until)` the endpoint subscribes to (whether or
/// not it was sent before); the scheduler picks them up at once. Events from before
/// any endpoint wanted them carry their object as it is now.
pub async fn replay(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    actor: Actor,
) -> Result<i64> {
    let endpoint = endpoints::get(conn, merchant_id, endpoint_id).await?;
    if endpoint.status == EndpointStatus::Disabled {
        return Err(Error::conflict("the endpoint is disabled: enable it first"));
    }
    let events = sqlx::query!(
        "WITH ev AS (SELECT id, webhook_type, created_at FROM events
            WHERE merchant_id = $1 AND created_at >= $3 AND created_at < $4 AND webhook_subscribed($5, webhook_type)
            ORDER BY seq LIMIT $6)
         INSERT INTO webhook_deliveries (endpoint_id, event_id, merchant_id, type, event_at)
         SELECT $2, id, $1, webhook_type, created_at FROM ev
         ON CONFLICT ON CONSTRAINT webhook_deliveries_endpoint_event_key
           DO UPDATE SET status = 'pending', next_attempt_at = now(), enqueued_until = NULL, updated_at = now()
         RETURNING event_id",
        merchant_id,
        endpoint_id,
        since,
        until,
        &endpoint.event_types,
        MAX_REPLAY,
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = events.iter().map(|r| r.event_id).collect();
    let missing = sqlx::query!(
        "SELECT id, merchant_id, object_type, object_id FROM events WHERE id = ANY($1) AND object IS NULL",
        &ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    if !missing.is_empty() {
        let event_ids: Vec<Uuid> = missing.iter().map(|m| m.id).collect();
        let wanted: Vec<snapshot::Wanted> = missing
            .into_iter()
            .map(|m| snapshot::Wanted {
                merchant_id: m.merchant_id,
                object_type: m.object_type,
                object_id: m.object_id,
            })
            .collect();
        snapshot::store(conn, &event_ids, &wanted).await?;
    }
    let data = json!({"since": since, "until": until, "replayed": ids.len()});
    events::record_one(conn, NewEvent::new(merchant_id, "webhook_endpoint", endpoint_id, "replayed", data, actor))
        .await?;
    Ok(ids.len() as i64)
}

/// At most this many events per replay request.
pub const MAX_REPLAY: i64 = 100_000;
