//! Per-queue counts for operators and metrics: pending (due, waiting for a worker),
//! scheduled (waiting for their time: retries in backoff), running (fetched by a
//! live worker), dead (in the DLQ), and live workers.

use jobs::Queue;
use serde::Serialize;

use super::{Enqueuer, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub scheduled: u64,
    pub running: u64,
    pub dead: u64,
    pub workers: u64,
}

pub async fn stats(q: &Enqueuer, queue: Queue) -> Result<QueueStats> {
    let c = q.keys().config(queue);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let alive_after = now.saturating_sub(c.orphaned_duration().as_secs());
    let mut conn = q.connection();
    let (active, due, later, dead, workers): (u64, u64, u64, u64, Vec<String>) = redis::pipe()
        .llen(c.active_jobs_list())
        .zcount(c.scheduled_jobs_set(), "-inf", now)
        .zcount(c.scheduled_jobs_set(), format!("({now}"), "+inf")
        .hlen(q.keys().dead_letters(queue))
        .zrangebyscore(c.workers_set(), alive_after, "+inf")
        .query_async(&mut conn)
        .await?;
    let mut running = 0;
    if !workers.is_empty() {
        let mut p = redis::pipe();
        for w in &workers {
            p.scard(format!("{}:{w}", c.inflight_jobs_set()));
        }
        let counts: Vec<u64> = p.query_async(&mut conn).await?;
        running = counts.iter().sum();
    }
    Ok(QueueStats {
        queue: queue.name().to_owned(),
        pending: active + due,
        scheduled: later,
        running,
        dead,
        workers: workers.len() as u64,
    })
}

/// Every queue's counts. A domain result because `recur queues` reports its errors as
/// the API would.
pub async fn all(q: &Enqueuer) -> crate::Result<Vec<QueueStats>> {
    let mut out = Vec::with_capacity(Queue::ALL.len());
    for queue in Queue::ALL {
        out.push(stats(q, queue).await?);
    }
    Ok(out)
}
