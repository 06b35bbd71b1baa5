//! The audit trail: every change writes an event in the same transaction (docs/guarantees.md#one-event-per-change).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use std::collections::HashMap;

use crate::error::Result;
use crate::webhooks::send::{Birth, Outgoing, Target, Written};
use crate::webhooks::snapshot::Object;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "event_actor", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Merchant,
    System,
    Operator,
    /// The merchant's customer, on a page recur serves (docs/pages.md#events).
    Customer,
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

/// A batch of events, column by column, for `with_events!`.
struct Columns<'a> {
    ids: &'a [Uuid],
    merchant_ids: Vec<Uuid>,
    types: &'a [&'a str],
    object_ids: Vec<Uuid>,
    kinds: &'a [&'a str],
    public: &'a [String],
    data: Vec<Value>,
    actors: Vec<Actor>,
    objects: Vec<Option<&'a str>>,
}

/// The statement inserting a batch of events (`$1`–`$9`, from `Columns`), in order, as
/// the CTE `ev`, followed by `$tail`, which uses `ev` and its own parameters from `$10`.
macro_rules! with_events {
    ($tail:literal, $c:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query!(
            "WITH ev AS (
                INSERT INTO events (id, merchant_id, object_type, object_id, type, webhook_type, data, actor, object)
                SELECT id, m, ot, oi, ty, wt, d, a, o::json
                FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::jsonb[],
                    $8::event_actor[], $9::text[])
                  WITH ORDINALITY AS t(id, m, ot, oi, ty, wt, d, a, o, ord) ORDER BY ord
                RETURNING id, merchant_id, webhook_type, created_at, seq) "
                + $tail,
            $c.ids,
            &$c.merchant_ids,
            $c.types as &[&str],
            &$c.object_ids,
            $c.kinds as &[&str],
            $c.public,
            &$c.data,
            &$c.actors as &[Actor],
            &$c.objects as &[Option<&str>]
            $(, $arg)*
        )
    };
}

/// Write events, many in one statement, with their webhook deliveries: one delivery
/// per enabled endpoint of the merchant subscribed to each event's type (the outbox,
/// docs/webhooks.md#never-lost). Events that get a delivery keep a snapshot of their
/// object as it is now, so call this after the writes the events describe. Order
/// within the batch is kept per object.
///
/// The endpoints are read first and held `FOR KEY SHARE` until the transaction ends:
/// an endpoint deleted meanwhile waits for this commit (and then takes its deliveries
/// with it) instead of failing this transaction on the deliveries' foreign key.
pub async fn record(conn: &mut PgConnection, events: &[NewEvent]) -> Result<()> {
    record_leased(conn, events, None).await.map(drop)
}

/// `record`, for a caller that sends the deliveries itself once it commits: instead of
/// their rows, one birth row names them, leased for `lease_secs` (the scheduler turns
/// it into rows only if that caller dies before writing them), and they are returned
/// ready to send; each attempt writes its delivery's row (`webhooks::send`).
pub async fn record_leased(
    conn: &mut PgConnection,
    events: &[NewEvent],
    lease_secs: Option<i64>,
) -> Result<Vec<Outgoing>> {
    if events.is_empty() {
        return Ok(vec![]);
    }
    let mut merchants: Vec<Uuid> = events.iter().map(|e| e.merchant_id).collect();
    merchants.sort_unstable();
    merchants.dedup();
    let endpoints = sqlx::query!(
        "SELECT id, merchant_id, event_types, url, secret, failing_since,
             CASE WHEN previous_secret_expires_at > now() THEN previous_secret END AS previous_secret
         FROM webhook_endpoints WHERE merchant_id = ANY($1) AND status = 'enabled' ORDER BY id FOR KEY SHARE",
        &merchants,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::with_capacity(events.len());
    let mut public = Vec::with_capacity(events.len());
    let (mut to_endpoint, mut to_event) = (Vec::new(), Vec::new());
    let mut wanted = Vec::new();
    let mut keep = Vec::with_capacity(events.len());
    for e in events {
        let id = Uuid::now_v7();
        let kind = crate::webhooks::types::public(e.object_type, e.kind, &e.data);
        let mut subscribed = false;
        for w in endpoints.iter().filter(|w| w.merchant_id == e.merchant_id) {
            if crate::webhooks::types::subscribed(&w.event_types, &kind) {
                to_endpoint.push(w.id);
                to_event.push(id);
                subscribed = true;
            }
        }
        if subscribed {
            wanted.push(crate::webhooks::snapshot::Wanted {
                merchant_id: e.merchant_id,
                object_type: e.object_type.to_owned(),
                object_id: e.object_id,
            });
        }
        ids.push(id);
        public.push(kind);
        keep.push(subscribed);
    }
    let mut snapshots = crate::webhooks::snapshot::take(conn, &wanted).await?.into_iter();
    let objects: Vec<Option<Object>> = keep.iter().map(|&k| if k { snapshots.next() } else { None }).collect();
    let types: Vec<&str> = events.iter().map(|e| e.object_type).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let c = Columns {
        ids: &ids,
        merchant_ids: events.iter().map(|e| e.merchant_id).collect(),
        types: &types,
        object_ids: events.iter().map(|e| e.object_id).collect(),
        kinds: &kinds,
        public: &public,
        data: events.iter().map(|e| e.data.clone()).collect(),
        actors: events.iter().map(|e| e.actor).collect(),
        objects: objects.iter().map(|o| o.as_deref().map(RawValue::get)).collect(),
    };
    // Time-ordered ids: the primary key grows at one end instead of at random pages.
    let delivery_ids: Vec<Uuid> = to_event.iter().map(|_| Uuid::now_v7()).collect();
    let Some(lease) = lease_secs.map(|s| s.max(crate::lease::WEBHOOK_MIN_SECONDS) as f64) else {
        with_events!(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, merchant_id, type, event_at)
             SELECT u.id, u.endpoint_id, ev.id, ev.merchant_id, ev.webhook_type, ev.created_at
             FROM unnest($10::uuid[], $11::uuid[], $12::uuid[]) AS u(id, endpoint_id, event_id)
             JOIN ev ON ev.id = u.event_id",
            c,
            &delivery_ids,
            &to_endpoint,
            &to_event,
        )
        .execute(&mut *conn)
        .await?;
        return Ok(vec![]);
    };
    // The deliveries' rows are written by their first attempts; until then one birth
    // row names them, leased to this caller (docs/webhooks.md#never-lost).
    let birth = Uuid::now_v7();
    let written = with_events!(
        ", b AS (
            INSERT INTO webhook_births (id, delivery_ids, endpoint_ids, event_ids, lease_until)
            SELECT $14, $10, $11, $12, now() + make_interval(secs => $13::float8)
            WHERE cardinality($10::uuid[]) > 0)
         SELECT ev.id AS \"id!\", ev.seq AS \"seq!\", ev.created_at AS \"created_at!\" FROM ev",
        c,
        &delivery_ids,
        &to_endpoint,
        &to_event,
        lease,
        birth,
    )
    .fetch_all(&mut *conn)
    .await?;
    if delivery_ids.is_empty() {
        return Ok(vec![]);
    }
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let at: HashMap<Uuid, (i64, DateTime<Utc>)> = written.into_iter().map(|r| (r.id, (r.seq, r.created_at))).collect();
    let birth = Birth::new(birth, delivery_ids.len());
    Ok(delivery_ids
        .iter()
        .zip(to_endpoint.iter().zip(&to_event))
        .filter_map(|(id, (endpoint_id, event_id))| {
            let w = endpoints.iter().find(|w| w.id == *endpoint_id)?;
            let i = index[event_id];
            let (sequence, event_at) = *at.get(event_id)?;
            let target = Target {
                id: w.id,
                url: &w.url,
                secret: &w.secret,
                previous_secret: w.previous_secret.as_deref(),
                failing_since: w.failing_since,
            };
            Some(Outgoing::born(
                &target,
                Written {
                    id: *id,
                    merchant_id: events[i].merchant_id,
                    event_id: *event_id,
                    webhook_type: &public[i],
                    sequence,
                    event_at,
                    object: objects[i].as_deref(),
                },
                birth.clone(),
            ))
        })
        .collect())
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

/// The events of one object, whatever its merchant, oldest first: the operator
/// console's view of a dead letter's billing object (docs/dashboard.md#dead-letters).
pub async fn for_object(conn: &mut PgConnection, object_id: Uuid, limit: i64) -> Result<Vec<Event>> {
    Ok(sqlx::query_as!(
        Event,
        r#"SELECT seq, id, object_type, object_id, type AS kind, data, actor AS "actor: Actor", created_at FROM events
         WHERE object_id = $1 ORDER BY seq LIMIT $2"#,
        object_id,
        limit,
    )
    .fetch_all(conn)
    .await?)
}
