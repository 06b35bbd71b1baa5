//! The audit trail: every change writes an event in the same transaction (docs/guarantees.md#one-event-per-change).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "event_actor", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Merchant,
    System,
    Operator,
}

/// An event not yet written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub merchant_id: Uuid,
    pub object_type: &'static str,
    pub object_id: Uuid,
    pub kind: &'static str,
    pub data: Value,
    pub actor: Actor,
}

impl NewEvent {
    pub fn new(
        merchant_id: Uuid,
        object_type: &'static str,
        object_id: Uuid,
        kind: &'static str,
        data: Value,
        actor: Actor,
    ) -> NewEvent {
        NewEvent { merchant_id, object_type, object_id, kind, data, actor }
    }
}

/// Write events, many in one statement, with their webhook deliveries: the same
/// statement adds one delivery per enabled endpoint of the merchant subscribed to each
/// event's type (the outbox, docs/webhooks.md#never-lost). Events that got a delivery
/// keep a snapshot of their object as it is now, so call this after the writes the
/// events describe. Order within the batch is kept per object.
pub async fn record(conn: &mut PgConnection, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut merchants = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut objects = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut public = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    let mut actors = Vec::with_capacity(events.len());
    for e in events {
        ids.push(Uuid::now_v7());
        merchants.push(e.merchant_id);
        types.push(e.object_type);
        objects.push(e.object_id);
        kinds.push(e.kind);
        public.push(crate::webhooks::types::public(e.object_type, e.kind, &e.data));
        data.push(e.data.clone());
        actors.push(e.actor);
    }
    let wanted = sqlx::query_scalar!(
        "WITH ev AS (
            INSERT INTO events (id, merchant_id, object_type, object_id, type, webhook_type, data, actor)
            SELECT id, m, ot, oi, ty, wt, d, a
            FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::event_actor[])
              WITH ORDINALITY AS t(id, m, ot, oi, ty, wt, d, a, ord) ORDER BY ord
            RETURNING id, merchant_id, webhook_type, created_at)
         INSERT INTO webhook_deliveries (endpoint_id, event_id, merchant_id, type, event_at)
         SELECT w.id, ev.id, ev.merchant_id, ev.webhook_type, ev.created_at
         FROM ev JOIN webhook_endpoints w ON w.merchant_id = ev.merchant_id AND w.status = 'enabled'
           AND webhook_subscribed(w.event_types, ev.webhook_type)
         ON CONFLICT DO NOTHING
         RETURNING event_id",
        &ids,
        &merchants,
        &types as &[&str],
        &objects,
        &kinds as &[&str],
        &public,
        &data,
        &actors as &[Actor],
    )
    .fetch_all(&mut *conn)
    .await?;
    if !wanted.is_empty() {
        let wanted: std::collections::HashSet<Uuid> = wanted.into_iter().collect();
        let snap: Vec<crate::webhooks::snapshot::Wanted> = ids
            .iter()
            .zip(events)
            .filter(|(id, _)| wanted.contains(id))
            .map(|(id, e)| crate::webhooks::snapshot::Wanted {
                event_id: *id,
                merchant_id: e.merchant_id,
                object_type: e.object_type.to_owned(),
                object_id: e.object_id,
            })
            .collect();
        crate::webhooks::snapshot::store(conn, &snap).await?;
    }
    Ok(())
}

pub async fn record_one(conn: &mut PgConnection, event: NewEvent) -> Result<()> {
    record(conn, std::slice::from_ref(&event)).await
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: Uuid,
    pub object_type: String,
    pub object_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    pub actor: Actor,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub seq: i64,
}

#[derive(Debug, Default)]
pub struct EventFilter {
    pub object_type: Option<String>,
    pub object_id: Option<Uuid>,
    pub kind: Option<String>,
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// A merchant's events, oldest first (so each object's events are in order).
pub async fn list(conn: &mut PgConnection, merchant_id: Uuid, f: &EventFilter) -> Result<Vec<Event>> {
    Ok(sqlx::query_as!(
        Event,
        r#"SELECT seq, id, object_type, object_id, type AS kind, data, actor AS "actor: Actor", created_at FROM events
         WHERE merchant_id = $1
           AND ($2::text IS NULL OR object_type = $2)
           AND ($3::uuid IS NULL OR object_id = $3)
           AND ($4::text IS NULL OR type = $4)
           AND ($5::bigint IS NULL OR seq > $5)
         ORDER BY seq LIMIT $6"#,
        merchant_id,
        f.object_type,
        f.object_id,
        f.kind,
        f.after_seq,
        f.limit,
    )
    .fetch_all(conn)
    .await?)
}
