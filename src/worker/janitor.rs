//! Deletes finished tasks from Redis in small chunks (apalis-redis keeps every task's
//! data, metadata and id forever), so memory stays flat under sustained load.

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
            loop {
                match sweep(&q, queue).await {
                    Ok(n) if n == CHUNK => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(%queue, error = %e, "janitor sweep failed");
                        break;
                    }
                }
            }
        }
    }
}
