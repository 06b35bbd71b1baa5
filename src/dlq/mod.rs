//! Dead-letter queues: one Redis hash per job queue (`<ns>:dlq:<queue>`), entry id →
//! the job, its attempts and last error. A job lands here when the project's own
//! policy (jobs::JobPolicy) runs out of attempts; the billing objects it concerns are
//! marked `error` in Postgres in the same step. A job is dead-lettered once however
//! many deliveries of it fail (`<ns>:dlq-index:<queue>` maps the job to its entry).
//! Operators list, replay and drain (archive to Postgres) them through `recur dlq` or
//! `/admin/dlq`, which share this code: those operations answer the domain error
//! (`NotFound` for an unknown id), the Redis-only steps answer `queue::Error`.

mod replay;
mod restore;

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use jobs::{Job, Queue};
use redis::Script;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::queue::{self, Enqueuer};

pub use replay::{Replayed, replay};
pub use restore::restore_if_lost;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: Uuid,
    pub queue: String,
    #[schema(value_type = Object)]
    pub job: Job,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: DateTime<Utc>,
    pub object_type: String,
    pub object_id: Uuid,
}

impl DeadLetter {
    pub fn new(job: Job, attempts: u32, last_error: &str) -> DeadLetter {
        let (object_type, object_id) = job.object();
        DeadLetter {
            id: Uuid::now_v7(),
            queue: job.queue().name().to_owned(),
            attempts,
            last_error: last_error.chars().take(2000).collect(),
            failed_at: Utc::now(),
            object_type: object_type.to_owned(),
            object_id,
            job,
        }
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub queue: Option<Queue>,
    pub error_contains: Option<String>,
    /// Only entries that failed before this instant.
    pub failed_before: Option<DateTime<Utc>>,
}

impl Filter {
    fn queues(&self) -> Vec<Queue> {
        self.queue.map(|q| vec![q]).unwrap_or_else(|| Queue::ALL.to_vec())
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        self.error_contains.as_ref().is_none_or(|s| d.last_error.to_lowercase().contains(&s.to_lowercase()))
            && self.failed_before.is_none_or(|t| d.failed_at < t)
    }
}

/// Insert unless the same job (two deliveries of it) is already dead: KEYS = the DLQ
/// hash and its index; ARGV = job key, entry id, entry JSON. Returns the live entry's id.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing and redis.call('HEXISTS', KEYS[1], existing) == 1 then
    return existing
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return ARGV[2]
"#,
    )
});

/// Remove an entry and its index line: KEYS = the DLQ hash and its index; ARGV = entry
/// id, job key. Returns 1 if the entry was there.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
    redis.call('HDEL', KEYS[2], ARGV[2])
end
return n
"#,
    )
});

/// What identifies a dead job across its deliveries: the payload without attempts.
fn job_key(job: &Job) -> queue::Result<String> {
    Ok(serde_json::to_string(&job.clone().with_attempt(0))?)
}

/// Dead-letter a job. A job already in the DLQ (a duplicate delivery of it failed
/// too) keeps its one entry: returns false and adds nothing.
pub async fn put(q: &Enqueuer, dl: &DeadLetter) -> queue::Result<bool> {
    let queue = Queue::parse(&dl.queue).ok_or_else(|| queue::Error::UnknownQueue(dl.queue.clone()))?;
    let json = serde_json::to_string(dl)?;
    let mut conn = q.connection();
    let id: String = PUT
        .key(q.keys().dead_letters(queue))
        .key(q.keys().dead_letter_index(queue))
        .arg(job_key(&dl.job)?)
        .arg(dl.id.to_string())
        .arg(json)
        .invoke_async(&mut conn)
        .await?;
    Ok(id == dl.id.to_string())
}

/// Every dead letter of a queue, oldest first.
async fn all_of(q: &Enqueuer, queue: Queue) -> queue::Result<Vec<DeadLetter>> {
    let mut conn = q.connection();
    let raw: Vec<String> = redis::cmd("HVALS").arg(q.keys().dead_letters(queue)).query_async(&mut conn).await?;
    let mut out: Vec<DeadLetter> = raw.iter().filter_map(|r| serde_json::from_str(r).ok()).collect();
    out.sort_by_key(|d| d.id);
    Ok(out)
}

pub async fn list(q: &Enqueuer, queue: Queue) -> queue::Result<Vec<DeadLetter>> {
    all_of(q, queue).await
}

/// Dead letters matching `f`, oldest first, at most `limit`.
pub async fn find(q: &Enqueuer, f: &Filter, limit: usize) -> Result<Vec<DeadLetter>> {
    find_after(q, f, None, limit).await
}

/// One dead letter by id, searching every queue.
pub async fn get(q: &Enqueuer, id: Uuid) -> Result<DeadLetter> {
    find_by_id(q, id).await?.ok_or(Error::NotFound("dead letter"))
}

async fn find_by_id(q: &Enqueuer, id: Uuid) -> queue::Result<Option<DeadLetter>> {
    let mut conn = q.connection();
    for queue in Queue::ALL {
        let raw: Option<String> =
            redis::cmd("HGET").arg(q.keys().dead_letters(queue)).arg(id.to_string()).query_async(&mut conn).await?;
        if let Some(r) = raw {
            return Ok(Some(serde_json::from_str(&r)?));
        }
    }
    Ok(None)
}

/// Remove an entry; true if it was there (so concurrent replays act once).
pub(crate) async fn remove(q: &Enqueuer, d: &DeadLetter) -> queue::Result<bool> {
    let queue = Queue::parse(&d.queue).unwrap_or(Queue::ChargeTransaction);
    let mut conn = q.connection();
    let n: u32 = REMOVE
        .key(q.keys().dead_letters(queue))
        .key(q.keys().dead_letter_index(queue))
        .arg(d.id.to_string())
        .arg(job_key(&d.job)?)
        .invoke_async(&mut conn)
        .await?;
    Ok(n == 1)
}

pub async fn depth(q: &Enqueuer, queue: Queue) -> queue::Result<u64> {
    let mut conn = q.connection();
    Ok(redis::cmd("HLEN").arg(q.keys().dead_letters(queue)).query_async(&mut conn).await?)
}

/// Drain: archive matching entries in Postgres, then remove them from Redis. With
/// `dry_run`, only report what would go. Returns the entries (to be) drained.
pub async fn drain(pool: &PgPool, q: &Enqueuer, f: &Filter, dry_run: bool) -> Result<Vec<DeadLetter>> {
    let found = find(q, f, usize::MAX).await?;
    if dry_run || found.is_empty() {
        return Ok(found);
    }
    for chunk in found.chunks(500) {
        let mut tx = pool.begin().await?;
        for d in chunk {
            let job = serde_json::to_value(&d.job).map_err(queue::Error::from)?;
            let attempts = d.attempts as i32;
            sqlx::query!(
                "INSERT INTO dead_letter_archive (id, queue, job, attempts, last_error, failed_at, object_type, object_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                d.id,
                d.queue,
                job,
                attempts,
                d.last_error,
                d.failed_at,
                d.object_type,
                d.object_id,
            )
            .execute(&mut *tx)
            .await?;
        }
        // Archived first, removed second: a crash in between leaves a copy, never none.
        tx.commit().await?;
        for d in chunk {
            remove(q, d).await?;
        }
    }
    metrics::counter!("recur_dlq_drained_total").increment(found.len() as u64);
    Ok(found)
}

/// A drained dead letter, as kept in Postgres (`dead_letter_archive`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Archived {
    pub id: Uuid,
    pub queue: String,
    pub job: serde_json::Value,
    pub attempts: i32,
    pub last_error: String,
    pub failed_at: DateTime<Utc>,
    pub object_type: String,
    pub object_id: Uuid,
    pub drained_at: DateTime<Utc>,
}

/// The archive, newest drained first, filtered like the live entries (queue, error
/// text), paged by `before` (the last id of the previous page).
pub async fn archive(pool: &PgPool, f: &Filter, before: Option<Uuid>, limit: i64) -> Result<Vec<Archived>> {
    let queue = f.queue.map(|q| q.name().to_owned());
    let pattern = f
        .error_contains
        .as_ref()
        .map(|s| format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    Ok(sqlx::query_as!(
        Archived,
        "SELECT id, queue, job, attempts, last_error, failed_at, object_type, object_id, drained_at
         FROM dead_letter_archive
         WHERE ($1::text IS NULL OR queue = $1)
           AND ($2::text IS NULL OR last_error ILIKE $2)
           AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        queue,
        pattern,
        before,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// Entries read from Redis at a time while filtering (one `HMGET` per queue).
const CHUNK: usize = 200;

/// The entry ids of these queues with their queue, oldest first: entry ids are UUID
/// v7, so their order is the order the jobs died in. Only the ids are read (the
/// hash's fields), not the entries.
async fn ids_of(q: &Enqueuer, queues: &[Queue]) -> queue::Result<Vec<(Uuid, Queue)>> {
    let mut conn = q.connection();
    let mut pipe = redis::pipe();
    for &queue in queues {
        pipe.hkeys(q.keys().dead_letters(queue));
    }
    let keys: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
    let mut ids: Vec<(Uuid, Queue)> = queues
        .iter()
        .zip(keys)
        .flat_map(|(&queue, ids)| ids.into_iter().filter_map(move |id| Some((Uuid::parse_str(&id).ok()?, queue))))
        .collect();
    ids.sort_by_key(|(id, _)| *id);
    Ok(ids)
}

/// The entries of `ids` still there (a replay or drain may have removed some since),
/// in the order of `ids`.
async fn entries(q: &Enqueuer, ids: &[(Uuid, Queue)]) -> queue::Result<Vec<DeadLetter>> {
    let mut conn = q.connection();
    let mut pipe = redis::pipe();
    let queues: Vec<Queue> = Queue::ALL.into_iter().filter(|q| ids.iter().any(|(_, of)| of == q)).collect();
    for &queue in &queues {
        let fields: Vec<String> = ids.iter().filter(|(_, of)| *of == queue).map(|(id, _)| id.to_string()).collect();
        pipe.cmd("HMGET").arg(q.keys().dead_letters(queue)).arg(fields);
    }
    let raw: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
    let mut out: Vec<DeadLetter> =
        raw.into_iter().flatten().flatten().filter_map(|r| serde_json::from_str(&r).ok()).collect();
    out.sort_by_key(|d| d.id);
    Ok(out)
}

/// A page of dead letters matching `f`, oldest first, after the entry `after`, at
/// most `limit`. The ids are listed first, then the entries after `after` are read
/// and filtered [`CHUNK`] at a time until the page is full: a huge DLQ is never
/// loaded whole to show 25 of it.
pub async fn find_after(q: &Enqueuer, f: &Filter, after: Option<Uuid>, limit: usize) -> Result<Vec<DeadLetter>> {
    let mut ids = ids_of(q, &f.queues()).await?;
    ids.retain(|(id, _)| after.is_none_or(|a| *id > a));
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        if out.len() >= limit {
            break;
        }
        let room = limit - out.len();
        out.extend(entries(q, chunk).await?.into_iter().filter(|d| f.matches(d)).take(room));
    }
    Ok(out)
}
