//! The Redis side of the queues: pushing jobs in apalis-redis's format, reading
//! depths, and the key layout. Postgres is the truth; Redis only carries work.

mod error;
pub mod keys;
pub mod stats;

use std::time::{Duration, SystemTime};

use apalis_core::task::builder::TaskBuilder;
use apalis_redis::{Config as QueueConfig, RedisTask};
use jobs::{Job, Queue};
use redis::aio::ConnectionManager;

pub use error::{Error, Result};
pub use keys::Keys;

/// Pushes jobs onto the apalis-redis queues of one namespace.
#[derive(Clone)]
pub struct Enqueuer {
    conn: ConnectionManager,
    keys: Keys,
}

impl Enqueuer {
    pub async fn connect(url: &str, namespace: &str) -> anyhow::Result<Enqueuer> {
        let conn = connect(url).await?;
        Ok(Enqueuer { conn, keys: Keys::new(namespace) })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Push jobs to run now, one Redis round trip per queue.
    pub async fn push(&self, jobs: &[Job]) -> Result<()> {
        self.push_at(jobs, None).await
    }

    /// Push jobs to run after `delay` (apalis-redis schedules with 1 s resolution).
    pub async fn push_after(&self, jobs: &[Job], delay: Duration) -> Result<()> {
        self.push_at(jobs, Some(SystemTime::now() + delay)).await
    }

    async fn push_at(&self, jobs: &[Job], at: Option<SystemTime>) -> Result<()> {
        for queue in Queue::ALL {
            let tasks: Vec<RedisTask> =
                jobs.iter().filter(|j| j.queue() == queue).map(|j| task(j, at)).collect::<Result<_>>()?;
            for chunk in tasks.chunks(500) {
                let mut conn = self.conn.clone();
                apalis_redis::queries::push_tasks(&mut conn, &self.keys.config(queue), chunk)
                    .await
                    .map_err(|source| Error::Enqueue { queue, source })?;
            }
            if !tasks.is_empty() {
                metrics::counter!("recur_jobs_enqueued_total", "queue" => queue.name()).increment(tasks.len() as u64);
            }
        }
        Ok(())
    }

    /// Jobs waiting in a queue (due or scheduled, not yet fetched).
    pub async fn waiting(&self, queue: Queue) -> Result<u64> {
        let c = self.keys.config(queue);
        let mut conn = self.conn.clone();
        let (scheduled, active): (u64, u64) =
            redis::pipe().zcard(c.scheduled_jobs_set()).llen(c.active_jobs_list()).query_async(&mut conn).await?;
        Ok(scheduled + active)
    }
}

/// A job as an apalis-redis task: its JSON payload, attempts as our own counter.
fn task(job: &Job, at: Option<SystemTime>) -> Result<RedisTask> {
    let bytes = payload_bytes(job)?;
    let mut b = TaskBuilder::new(bytes).attempt(job.attempt() as usize).max_attempts(u16::MAX as usize);
    if let Some(t) = at {
        b = b.run_at_time(t);
    }
    Ok(b.build())
}

/// The wire form of a job's payload (the per-queue payload type, as JSON).
pub fn payload_bytes(job: &Job) -> Result<Vec<u8>> {
    let v = match job {
        Job::GenerateCycle(j) => serde_json::to_vec(j),
        Job::ChargeTransaction(j) => serde_json::to_vec(j),
        Job::RetryCharge(j) => serde_json::to_vec(j),
        Job::TrialEnd(j) => serde_json::to_vec(j),
        Job::Resume(j) => serde_json::to_vec(j),
        Job::DeliverWebhook(j) => serde_json::to_vec(j),
    };
    Ok(v?)
}

pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    use anyhow::Context;
    let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client.get_connection_manager_with_config(cfg).await.with_context(|| {
        format!(
            "cannot reach Redis at {url} — is it running? Start it with: \
             redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no"
        )
    })
}

pub fn default_config() -> QueueConfig {
    QueueConfig::default()
}
