//! Keeps apalis-redis's keys healthy, in small chunks:
//!
//! - deletes finished tasks (apalis-redis keeps every task's data, metadata and id
//!   forever), so memory stays flat under sustained load;
//! - moves due tasks from the scheduled set to the active list. apalis-redis puts every
//!   push in the scheduled set and its fetch moves *all* due ids in one Lua `unpack`,
//!   which fails past about 8,000: a backlog that built up while no worker ran (an
//!   outage, a deploy, a burst of API creations) would otherwise make every fetch
//!   fail for ever (docs/architecture.md#apalis-redis-tuning).

use std::sync::LazyLock;
use std::time::Duration;

use jobs::Queue;
use redis::Script;
use tokio::sync::watch;

use crate::queue::Enqueuer;

const CHUNK: usize = 1000;

static CLEANUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('SPOP', KEYS[1], ARGV[2])
for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('UNLINK', ARGV[1] .. ':' .. id)
end
return #ids
"#,
    )
});

static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then
    redis.call('RPUSH', KEYS[2], unpack(ids))
    redis.call('ZREM', KEYS[1], unpack(ids))
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
end
return #ids
"#,
    )
});

/// Move up to `CHUNK` due tasks of a queue from its scheduled set to its active list,
/// as apalis-redis's fetch does, in a bounded chunk; how many moved.
pub async fn promote(q: &Enqueuer, queue: Queue) -> redis::RedisResult<usize> {
    let c = q.keys().config(queue);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut conn = q.connection();
    PROMOTE
        .key(c.scheduled_jobs_set())
        .key(c.active_jobs_list())
        .key(c.signal_list())
        .arg(now)
        .arg(CHUNK)
        .invoke_async(&mut conn)
        .await
}

/// Remove up to `CHUNK` finished tasks of a queue; how many went.
pub async fn sweep(q: &Enqueuer, queue: Queue) -> redis::RedisResult<usize> {
    let c = q.keys().config(queue);
    let mut conn = q.connection();
    CLEANUP
        .key(c.done_jobs_set())
        .key(c.job_data_hash())
        .arg(c.job_meta_hash())
        .arg(CHUNK)
        .invoke_async(&mut conn)
        .await
}

pub async fn run(q: Enqueuer, queues: Vec<Queue>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        for &queue in &queues {
            if let Err(e) = chunks(|| promote(&q, queue)).await {
                tracing::warn!(%queue, error = %e, "janitor could not promote due tasks");
            }
            if let Err(e) = chunks(|| sweep(&q, queue)).await {
                tracing::debug!(%queue, error = %e, "janitor sweep failed");
            }
        }
    }
}

/// Run a chunked step until a chunk comes back short (nothing more to do now).
async fn chunks<F: Future<Output = redis::RedisResult<usize>>>(mut step: impl FnMut() -> F) -> redis::RedisResult<()> {
    while step().await? == CHUNK {}
    Ok(())
}
