//! One attempt of one delivery (the `deliver-webhook` job): build the message from
//! the event row, sign it with a fresh timestamp, POST it, and record what happened
//! (docs/webhooks.md#delivery). Recording is conditional on the attempt count read
//! before the call, so two copies of a job count one attempt; the receiver may see the
//! message twice (at least once), always with the same `webhook-id`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::PgPool;
use uuid::Uuid;

use super::client::{Answer, Client};
use super::endpoints::{self, EndpointStatus};
use super::schedule::Schedule;
use super::signing;
use super::snapshot::Object;
use jobs::{DeliverWebhook, Job};
use tokio::sync::Semaphore;

use crate::batch::Batcher;
use crate::dlq::{self, DeadLetter};
use crate::error::Result;
use crate::queue::Enqueuer;

/// Give up on an endpoint that has not taken a message for this long.
pub const DISABLE_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(5);
/// The longest `Retry-After` honoured.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Everything one attempt needs: read in one query for a job, or handed over by the
/// transaction that committed the event (`Outgoing::born`, before the row exists).
pub struct Outgoing {
    id: Uuid,
    /// Set while the delivery has no row yet: its birth, which the row's first write
    /// settles (docs/webhooks.md#never-lost).
    birth: Option<Arc<Birth>>,
    merchant_id: Uuid,
    status: super::DeliveryStatus,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    endpoint_id: Uuid,
    url: String,
    endpoint_status: EndpointStatus,
    secret: String,
    previous_secret: Option<String>,
    failing_since: Option<DateTime<Utc>>,
    event_id: Uuid,
    webhook_type: String,
    sequence: i64,
    event_at: DateTime<Utc>,
    object: Option<Object>,
}

/// An enabled endpoint as the transaction writing an event read it.
pub struct Target<'a> {
    pub id: Uuid,
    pub url: &'a str,
    pub secret: &'a str,
    pub previous_secret: Option<&'a str>,
    pub failing_since: Option<DateTime<Utc>>,
}

/// A delivery owed to an endpoint by an event just written.
pub struct Written<'a> {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub event_id: Uuid,
    pub webhook_type: &'a str,
    pub sequence: i64,
    pub event_at: DateTime<Utc>,
    pub object: Option<&'a RawValue>,
}

/// Without the endpoint's secrets or URL (they do not belong in logs).
impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The deliveries one transaction owes, named by one `webhook_births` row until each
/// has its own row: the last of them to be written deletes the birth.
pub struct Birth {
    id: Uuid,
    unwritten: AtomicUsize,
}

impl Birth {
    pub fn new(id: Uuid, deliveries: usize) -> Arc<Birth> {
        Arc::new(Birth { id, unwritten: AtomicUsize::new(deliveries) })
    }
}

impl Outgoing {
    /// A delivery owed by an event just committed, before its row and first attempt.
    pub fn born(endpoint: &Target, d: Written, birth: Arc<Birth>) -> Outgoing {
        Outgoing {
            id: d.id,
            birth: Some(birth),
            merchant_id: d.merchant_id,
            status: super::DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: d.event_at,
            delivered_at: None,
            endpoint_id: endpoint.id,
            url: endpoint.url.to_owned(),
            endpoint_status: EndpointStatus::Enabled,
            secret: endpoint.secret.to_owned(),
            previous_secret: endpoint.previous_secret.map(str::to_owned),
            failing_since: endpoint.failing_since,
            event_id: d.event_id,
            webhook_type: d.webhook_type.to_owned(),
            sequence: d.sequence,
            event_at: d.event_at,
            object: d.object.map(RawValue::to_owned),
        }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }
}

/// The message body (docs/webhooks.md#payload).
#[derive(Serialize)]
struct Message<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: DateTime<Utc>,
    sequence: i64,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    object: &'a RawValue,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Nothing to do: delivered, failed, its endpoint disabled or gone, or not due yet.
    Skipped,
    Delivered,
    /// Failed; another attempt at the given time.
    Retrying(DateTime<Utc>),
    /// Failed for good: the schedule is spent or the endpoint answered 410.
    GaveUp {
        attempts: i32,
        error: String,
    },
}

/// How deliveries go out: the HTTP client and the retry schedule.
pub struct Sender {
    pub client: Client,
    pub schedule: Schedule,
}

/// A successful attempt, to record (`attempts` as read before the call).
struct Success {
    id: Uuid,
    attempts: i32,
    endpoint_id: Uuid,
    code: Option<i32>,
    body: Option<String>,
    /// A first attempt whose row does not exist yet: what the row is made of.
    born: Option<Unwritten>,
}

/// What a delivery's row holds besides its attempt.
struct Unwritten {
    event_id: Uuid,
    merchant_id: Uuid,
    webhook_type: String,
    event_at: DateTime<Utc>,
}

/// The sender at work in one process: concurrent deliveries share their reads and
/// their success records (group commit, like charges), so a surge of messages costs
/// Postgres a few statements per batch rather than a transaction each. Failures stay
/// one transaction each: they are rare and touch the endpoint's state.
///
/// First attempts of the deliveries a worker's own transaction wrote go out from that
/// worker at once (`send_born`), without a job: they are leased at birth, so if the
/// worker dies before recording them the lease runs out and the scheduler sends them
/// through the queue (docs/webhooks.md#never-lost). Every other attempt is a job.
pub struct Deliverer {
    sender: Sender,
    pool: PgPool,
    queue: Enqueuer,
    loads: Batcher<Uuid, Option<Arc<Outgoing>>>,
    successes: Batcher<Success, bool>,
    births: Batcher<Uuid, ()>,
    /// First attempts in flight outside the queue; beyond it, born deliveries are jobs.
    inline: Arc<Semaphore>,
    room: u32,
}

impl Deliverer {
    pub fn spawn(pool: PgPool, queue: Enqueuer, sender: Sender, inline: usize) -> Arc<Deliverer> {
        let p = pool.clone();
        let loads = Batcher::spawn("webhook_load", 500, 2, move |ids: Vec<Uuid>| {
            let p = p.clone();
            async move { load_batch(&p, ids).await }
        });
        let p = pool.clone();
        let successes = Batcher::spawn("webhook_record", 500, 2, move |items: Vec<Success>| {
            let p = p.clone();
            async move { record_successes(&p, items).await }
        });
        let p = pool.clone();
        let births = Batcher::spawn("webhook_births", 500, 1, move |ids: Vec<Uuid>| {
            let p = p.clone();
            async move {
                let n = ids.len();
                sqlx::query!("DELETE FROM webhook_births WHERE id = ANY($1)", &ids).execute(&p).await?;
                Ok(vec![(); n])
            }
        });
        let room = inline.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize) as u32;
        Arc::new(Deliverer {
            sender,
            pool,
            queue,
            loads,
            successes,
            births,
            inline: Arc::new(Semaphore::new(room as usize)),
            room,
        })
    }

    /// Wait until no first attempt is in flight (a worker stopping). One cut short
    /// keeps its lease, and the scheduler sends it again when that runs out.
    pub async fn drain(&self) {
        let _all = self.inline.acquire_many(self.room).await;
    }

    /// The `deliver-webhook` job: one attempt of a delivery as Postgres has it now.
    pub async fn deliver(&self, delivery_id: Uuid) -> Result<Sent> {
        let loaded = self.loads.submit(delivery_id).await.map_err(crate::Error::Internal)?;
        let Some(d) = loaded else { return Ok(Sent::Skipped) };
        self.attempt(&d).await
    }

    /// Send the first attempts of deliveries this process's transaction just committed:
    /// as many as there is room for right away; the rest get their rows, leased, and
    /// become jobs.
    pub async fn send_born(self: &Arc<Self>, born: Vec<Outgoing>) {
        let mut overflow = Vec::new();
        for d in born {
            let Ok(permit) = self.inline.clone().try_acquire_owned() else {
                overflow.push(d);
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let sent = this.attempt(&d).await;
                if let Err(e) = this.settle(d.id, sent).await {
                    // Its lease runs out and the scheduler sends it again.
                    tracing::warn!(error = %e, delivery = %d.id, "webhook attempt not recorded; the scheduler will retry it");
                }
            });
        }
        if overflow.is_empty() {
            return;
        }
        // Not written: their birth's lease runs out and the scheduler writes and sends them.
        let lease = Some(crate::lease::WEBHOOK_MIN_SECONDS as f64);
        if let Err(e) = write_unwritten(&self.pool, &overflow, lease).await {
            tracing::warn!(error = %e, count = overflow.len(), "webhook deliveries not written; the scheduler will");
            return;
        }
        for d in &overflow {
            self.written(d).await;
        }
        let queued: Vec<Job> =
            overflow.iter().map(|d| Job::DeliverWebhook(DeliverWebhook { delivery_id: d.id, attempt: 0 })).collect();
        // Written and leased already: if Redis refuses them now, their lease runs out
        // and the scheduler sends them.
        if let Err(e) = self.queue.push(&queued).await {
            tracing::warn!(error = %e, count = queued.len(), "webhook jobs not enqueued; the scheduler will");
        }
    }

    /// A born delivery's row exists now; the last of its birth deletes the birth. A
    /// birth left behind is harmless: the scheduler finds its rows already written.
    async fn written(&self, d: &Outgoing) {
        let Some(birth) = &d.birth else { return };
        if birth.unwritten.fetch_sub(1, Ordering::AcqRel) == 1
            && let Err(e) = self.births.submit(birth.id).await
        {
            tracing::warn!(error = %e, birth = %birth.id, "webhook birth not deleted; the scheduler will find it settled");
        }
    }

    /// After an attempt: a delivery that gave up waits in the dead-letter queue, where
    /// an operator can replay it with the other queues' tools.
    pub async fn settle(&self, delivery_id: Uuid, sent: Result<Sent>) -> Result<()> {
        if let Sent::GaveUp { attempts, error } = sent? {
            let dead = DeadLetter::new(
                Job::DeliverWebhook(DeliverWebhook { delivery_id, attempt: 0 }),
                attempts.max(0) as u32,
                &error,
            );
            dlq::put(&self.queue, &dead).await.map_err(|e| crate::Error::Internal(e.into()))?;
        }
        Ok(())
    }

    async fn attempt(&self, d: &Outgoing) -> Result<Sent> {
        let now = Utc::now();
        // A copy of a job whose attempt was already recorded and rescheduled.
        let early = d.next_attempt_at > now + chrono::TimeDelta::seconds(1);
        if d.status != super::DeliveryStatus::Pending || d.endpoint_status != EndpointStatus::Enabled || early {
            return Ok(Sent::Skipped);
        }
        let null = RawValue::NULL;
        let body = serde_json::to_vec(&Message {
            id: d.event_id,
            kind: &d.webhook_type,
            timestamp: d.event_at,
            sequence: d.sequence,
            data: Data { object: d.object.as_deref().unwrap_or(null) },
        })
        .map_err(|e| crate::Error::Internal(e.into()))?;
        let answer = self.sender.client.post(&d.url, headers(d, &body), body).await;
        metrics::histogram!("recur_webhook_delivery_duration_seconds").record(answer.took.as_secs_f64());
        if !answer.ok() {
            return self.record_failure(d, &answer).await;
        }
        let success = Success {
            id: d.id,
            attempts: d.attempts,
            endpoint_id: d.endpoint_id,
            code: answer.status.map(i32::from),
            body: answer.body,
            born: d.birth.as_ref().map(|_| Unwritten {
                event_id: d.event_id,
                merchant_id: d.merchant_id,
                webhook_type: d.webhook_type.clone(),
                event_at: d.event_at,
            }),
        };
        let moved = self.successes.submit(success).await.map_err(crate::Error::Internal)?;
        self.written(d).await;
        if !moved {
            return Ok(Sent::Skipped);
        }
        metrics::counter!("recur_webhook_deliveries_total", "outcome" => "ok").increment(1);
        if d.delivered_at.is_none() {
            let lag = (Utc::now() - d.event_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("recur_webhook_lag_seconds").record(lag);
        }
        Ok(Sent::Delivered)
    }

    async fn record_failure(&self, d: &Outgoing, a: &Answer) -> Result<Sent> {
        let sent = self.record_failure_tx(d, a).await?;
        self.written(d).await;
        Ok(sent)
    }

    async fn record_failure_tx(&self, d: &Outgoing, a: &Answer) -> Result<Sent> {
        let mut tx = self.pool.begin().await?;
        if d.birth.is_some() {
            write_unwritten(&mut *tx, std::slice::from_ref(d), None).await?;
        }
        let code = a.status.map(i32::from);
        let error = a.error.clone().unwrap_or_default();
        let attempts = d.attempts + 1;
        let gone = a.status == Some(410);
        let honour = matches!(a.status, Some(429 | 502 | 503 | 504));
        // Retry-After replaces the schedule's wait, never its length: a receiver that
        // keeps answering 429 still runs out of attempts.
        let step = self.sender.schedule.delay(attempts as usize, rand::random::<f64>());
        let delay = match (honour, a.retry_after) {
            (true, Some(after)) => step.map(|_| after.min(RETRY_AFTER_CAP)),
            _ => step,
        };
        let next = delay.filter(|_| !gone).map(|d| Utc::now() + chrono::TimeDelta::from_std(d).unwrap_or_default());
        let moved = sqlx::query!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $3, last_error = $4,
                last_response = $5, enqueued_until = NULL, updated_at = now(),
                status = CASE WHEN $6::timestamptz IS NULL THEN 'failed' ELSE 'pending' END::webhook_delivery_status,
                next_attempt_at = COALESCE($6, next_attempt_at)
             WHERE id = $1 AND status = 'pending' AND attempts = $2",
            d.id,
            d.attempts,
            code,
            error,
            a.body,
            next,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.commit().await?;
            return Ok(Sent::Skipped);
        }
        if gone {
            endpoints::disable(&mut tx, d.endpoint_id, "the endpoint answered 410 Gone").await?;
        } else if d.failing_since.is_some_and(|since| Utc::now() - since >= DISABLE_AFTER) {
            endpoints::disable(&mut tx, d.endpoint_id, "no successful delivery for 5 days").await?;
        } else if d.failing_since.is_none() {
            sqlx::query!(
                "UPDATE webhook_endpoints SET failing_since = now() WHERE id = $1 AND failing_since IS NULL",
                d.endpoint_id
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(match next {
            Some(at) => {
                metrics::counter!("recur_webhook_deliveries_total", "outcome" => "retry").increment(1);
                Sent::Retrying(at)
            }
            None => {
                metrics::counter!("recur_webhook_deliveries_total", "outcome" => "failed").increment(1);
                Sent::GaveUp { attempts, error }
            }
        })
    }
}

/// The three Standard Webhooks headers, signed now (a fresh timestamp on every attempt).
fn headers(d: &Outgoing, body: &[u8]) -> HeaderMap {
    let id = d.event_id.to_string();
    let timestamp = Utc::now().timestamp();
    let secrets = std::iter::once(d.secret.as_str()).chain(d.previous_secret.as_deref());
    let signature = signing::header(secrets, &id, timestamp, body);
    let mut h = HeaderMap::new();
    for (name, value) in
        [("webhook-id", id), ("webhook-timestamp", timestamp.to_string()), ("webhook-signature", signature)]
    {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

/// Read a batch of deliveries with their endpoint and event; one answer per id, in order.
async fn load_batch(pool: &PgPool, ids: Vec<Uuid>) -> anyhow::Result<Vec<Option<Arc<Outgoing>>>> {
    let rows = sqlx::query!(
        r#"SELECT d.id, d.merchant_id, d.status AS "status: super::DeliveryStatus", d.attempts, d.next_attempt_at, d.delivered_at,
            w.id AS endpoint_id, w.url, w.status AS "endpoint_status: EndpointStatus", w.secret,
            CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END AS previous_secret,
            w.failing_since, e.id AS event_id, e.webhook_type, e.seq AS sequence, e.created_at AS event_at,
            e.object::text AS object
         FROM webhook_deliveries d
         JOIN webhook_endpoints w ON w.id = d.endpoint_id
         JOIN events e ON e.id = d.event_id
         WHERE d.id = ANY($1)"#,
        &ids,
    )
    .fetch_all(pool)
    .await?;
    let mut by_id: HashMap<Uuid, Arc<Outgoing>> = HashMap::with_capacity(rows.len());
    for r in rows {
        let object = r.object.map(RawValue::from_string).transpose()?;
        let d = Outgoing {
            id: r.id,
            birth: None,
            merchant_id: r.merchant_id,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            delivered_at: r.delivered_at,
            endpoint_id: r.endpoint_id,
            url: r.url,
            endpoint_status: r.endpoint_status,
            secret: r.secret,
            previous_secret: r.previous_secret,
            failing_since: r.failing_since,
            event_id: r.event_id,
            webhook_type: r.webhook_type,
            sequence: r.sequence,
            event_at: r.event_at,
            object,
        };
        by_id.insert(d.id, Arc::new(d));
    }
    Ok(ids.iter().map(|id| by_id.get(id).cloned()).collect())
}

/// Record a batch of successes in one transaction; `true` for each item whose attempt
/// this recorded. Two copies of one attempt in a batch: the first records it.
async fn record_successes(pool: &PgPool, items: Vec<Success>) -> anyhow::Result<Vec<bool>> {
    let mut seen = HashSet::new();
    let first: Vec<bool> = items.iter().map(|s| seen.insert(s.id)).collect();
    let mut ids = Vec::new();
    let mut attempts = Vec::new();
    let mut codes = Vec::new();
    let mut bodies = Vec::new();
    let mut born = BornRows::default();
    for s in items.iter().zip(&first).filter(|(_, f)| **f).map(|(s, _)| s) {
        match &s.born {
            Some(u) => born.push(s, u),
            None => {
                ids.push(s.id);
                attempts.push(s.attempts);
                codes.push(s.code);
                bodies.push(s.body.clone());
            }
        }
    }
    let mut endpoints: Vec<Uuid> = items.iter().map(|s| s.endpoint_id).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let mut tx = pool.begin().await?;
    let mut moved: HashSet<Uuid> = sqlx::query_scalar!(
        r#"UPDATE webhook_deliveries d SET status = 'succeeded', attempts = d.attempts + 1, last_status_code = u.code,
            last_error = NULL, last_response = u.body, delivered_at = COALESCE(d.delivered_at, now()), enqueued_until = NULL,
            updated_at = now()
         FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::text[]) AS u(id, attempts, code, body)
         WHERE d.id = u.id AND d.status = 'pending' AND d.attempts = u.attempts
         RETURNING d.id"#,
        &ids,
        &attempts,
        &codes as &[Option<i32>],
        &bodies as &[Option<String>],
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    if !born.ids.is_empty() {
        moved.extend(born.write_succeeded(&mut tx).await?);
    }
    // Touch an endpoint row only when it changes (it is shared by every delivery).
    sqlx::query!(
        "UPDATE webhook_endpoints SET last_success_at = now(), failing_since = NULL
         WHERE id = ANY($1) AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < now() - interval '10 seconds')",
        &endpoints,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(items.iter().zip(first).map(|(s, f)| f && moved.contains(&s.id)).collect())
}

/// Born deliveries' rows, column by column.
#[derive(Default)]
struct BornRows {
    ids: Vec<Uuid>,
    endpoints: Vec<Uuid>,
    events: Vec<Uuid>,
    merchants: Vec<Uuid>,
    types: Vec<String>,
    event_at: Vec<DateTime<Utc>>,
    codes: Vec<Option<i32>>,
    bodies: Vec<Option<String>>,
}

impl BornRows {
    fn push(&mut self, s: &Success, u: &Unwritten) {
        self.ids.push(s.id);
        self.endpoints.push(s.endpoint_id);
        self.events.push(u.event_id);
        self.merchants.push(u.merchant_id);
        self.types.push(u.webhook_type.clone());
        self.event_at.push(u.event_at);
        self.codes.push(s.code);
        self.bodies.push(s.body.clone());
    }

    /// Write the rows of first attempts that succeeded, in their final state: one write
    /// per delivery. A row already there (the scheduler wrote it after the birth's
    /// lease ran out, or a replay did) is moved to `succeeded` if still pending. Rows of
    /// endpoints deleted meanwhile are not written; the endpoints are held until commit
    /// so none is deleted under the insert. Returns the ids recorded.
    async fn write_succeeded(&self, tx: &mut sqlx::PgConnection) -> anyhow::Result<Vec<Uuid>> {
        let written = sqlx::query!(
            r#"WITH w AS (SELECT id FROM webhook_endpoints WHERE id = ANY($2) FOR KEY SHARE)
             INSERT INTO webhook_deliveries AS d (id, endpoint_id, event_id, merchant_id, type, event_at,
                 next_attempt_at, status, attempts, last_status_code, last_response, delivered_at)
             SELECT u.id, u.endpoint_id, u.event_id, u.merchant_id, u.type, u.event_at, u.event_at, 'succeeded', 1,
                 u.code, u.body, now()
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::int4[],
                 $8::text[]) AS u(id, endpoint_id, event_id, merchant_id, type, event_at, code, body)
             JOIN w ON w.id = u.endpoint_id
             ON CONFLICT ON CONSTRAINT webhook_deliveries_endpoint_event_key DO UPDATE SET status = 'succeeded',
                 attempts = d.attempts + 1, last_status_code = EXCLUDED.last_status_code, last_error = NULL,
                 last_response = EXCLUDED.last_response, delivered_at = COALESCE(d.delivered_at, now()),
                 enqueued_until = NULL, updated_at = now()
             WHERE d.status = 'pending'
             RETURNING d.endpoint_id, d.event_id"#,
            &self.ids,
            &self.endpoints,
            &self.events,
            &self.merchants,
            &self.types,
            &self.event_at,
            &self.codes as &[Option<i32>],
            &self.bodies as &[Option<String>],
        )
        .fetch_all(&mut *tx)
        .await?;
        let pairs: HashSet<(Uuid, Uuid)> = written.into_iter().map(|r| (r.endpoint_id, r.event_id)).collect();
        Ok((0..self.ids.len())
            .filter(|&i| pairs.contains(&(self.endpoints[i], self.events[i])))
            .map(|i| self.ids[i])
            .collect())
    }
}

/// Write born deliveries' rows as `pending` with no attempt yet (leased for `lease`
/// seconds, or not), skipping endpoints deleted meanwhile and rows already there.
async fn write_unwritten<'c, E>(conn: E, born: &[Outgoing], lease: Option<f64>) -> Result<()>
where
    E: sqlx::PgExecutor<'c>,
{
    let ids: Vec<Uuid> = born.iter().map(|d| d.id).collect();
    let endpoints: Vec<Uuid> = born.iter().map(|d| d.endpoint_id).collect();
    let events: Vec<Uuid> = born.iter().map(|d| d.event_id).collect();
    let merchants: Vec<Uuid> = born.iter().map(|d| d.merchant_id).collect();
    let types: Vec<&str> = born.iter().map(|d| d.webhook_type.as_str()).collect();
    let event_at: Vec<DateTime<Utc>> = born.iter().map(|d| d.event_at).collect();
    sqlx::query!(
        "WITH w AS (SELECT id FROM webhook_endpoints WHERE id = ANY($2) FOR KEY SHARE)
         INSERT INTO webhook_deliveries (id, endpoint_id, event_id, merchant_id, type, event_at, next_attempt_at,
             enqueued_until)
         SELECT u.id, u.endpoint_id, u.event_id, u.merchant_id, u.type, u.event_at, u.event_at,
             now() + make_interval(secs => $7::float8)
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[])
             AS u(id, endpoint_id, event_id, merchant_id, type, event_at)
         JOIN w ON w.id = u.endpoint_id
         ON CONFLICT DO NOTHING",
        &ids,
        &endpoints,
        &events,
        &merchants,
        &types as &[&str],
        &event_at,
        lease,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery whose job recur itself could not finish (its attempts ran out): failed,
/// with the reason, for an operator to replay from the DLQ.
/// The error itself stays in the dead letter (operators), not on the row (merchants).
pub async fn mark_dead(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE webhook_deliveries SET status = 'failed', enqueued_until = NULL, updated_at = now(),
            last_error = 'recur could not finish this delivery; it waits in the dead-letter queue'
         WHERE id = $1 AND status = 'pending'",
        id,
    )
    .execute(pool)
    .await?;
    Ok(())
}
