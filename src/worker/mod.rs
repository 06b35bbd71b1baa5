//! `recur worker`: apalis workers over apalis-redis, one per queue, supervised.
//!
//! apalis-redis is configured with task locking off, 50 ms polling, 2 s heartbeat (a
//! killed worker's jobs come back after ~6 s), and a unique worker name per process
//! and restart. The janitor deletes finished tasks so Redis memory stays flat. Each
//! delivery runs in a `job` span (see `job_span`).

mod engine;
pub mod janitor;

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use jobs::{Job, Queue};
use tokio::sync::watch;
use tracing::Instrument;

pub use engine::Engine;

use crate::queue::Keys;

/// What runs in one worker process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub queues: Vec<Queue>,
    /// Overrides every queue's default concurrency.
    pub concurrency: Option<usize>,
    pub drain_timeout: Duration,
}

/// A name no other live worker has: host, pid, a random suffix, the queue and the
/// restart count (apalis-redis refuses a name seen alive within its threshold).
pub fn worker_name(queue: Queue, restart: u32) -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".into());
    let suffix: u32 = rand::random::<u32>() & 0xffffff;
    format!("{host}-{}-{suffix:06x}-{}-{restart}", std::process::id(), queue.name())
}

/// The span of one delivery: every log line of the job carries its queue, apalis task
/// id, our attempt counter (technical failures so far) and the billing object.
fn job_span(job: &Job, task: Option<&TaskId>) -> tracing::Span {
    let (object, object_id) = job.object();
    tracing::info_span!(
        "job",
        queue = job.queue().name(),
        job_id = task.map(tracing::field::display),
        attempt = job.attempt(),
        object,
        %object_id,
    )
}

macro_rules! run_queue {
    ($payload:ty, $variant:ident, $engine:expr, $conn:expr, $keys:expr, $queue:expr, $concurrency:expr, $restart:expr, $stop:expr) => {{
        async fn handle(job: $payload, task: Option<TaskId>, engine: Data<Arc<Engine>>) -> Result<(), BoxDynError> {
            let job = Job::$variant(job);
            let span = job_span(&job, task.as_ref());
            engine.execute(job).instrument(span).await
        }
        let storage = RedisStorage::<$payload>::new($conn)
            .with_config($keys.config($queue))
            .poll_with_interval(engine::poll_interval());
        let worker = WorkerBuilder::new(worker_name($queue, $restart))
            .backend(storage)
            .data($engine.clone())
            .concurrency($concurrency)
            .build(handle);
        worker.run_until($stop).await
    }};
}

/// Run the queues until `shutdown` flips, restarting any worker loop that fails.
pub async fn run(engine: Arc<Engine>, opts: WorkerOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    crate::telemetry::register_worker_metrics(&opts.queues);
    let mut tasks = tokio::task::JoinSet::new();
    for queue in opts.queues.clone() {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let concurrency = opts.concurrency.unwrap_or(queue.policy().concurrency);
        tasks.spawn(supervise(engine, queue, concurrency, shutdown));
    }
    tasks.spawn(janitor::run(engine.queue.clone(), opts.queues.clone(), shutdown.clone()));
    let mut sd = shutdown.clone();
    let _ = sd.wait_for(|s| *s).await;
    // Workers stop fetching at once; in-flight jobs, then the first attempts of the
    // webhooks their charges made, get the drain timeout.
    let drained = async {
        while tasks.join_next().await.is_some() {}
        engine.webhooks.drain().await;
    };
    if tokio::time::timeout(opts.drain_timeout, drained).await.is_err() {
        tracing::warn!(timeout = ?opts.drain_timeout, "drain timeout: unfinished jobs return to the queue via orphan recovery");
        tasks.abort_all();
    }
    Ok(())
}

async fn supervise(engine: Arc<Engine>, queue: Queue, concurrency: usize, shutdown: watch::Receiver<bool>) {
    let keys: Keys = engine.queue.keys().clone();
    let mut restart = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let conn = engine.queue.connection();
        let mut sd = shutdown.clone();
        let stop = async move {
            let _ = sd.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        let result = match queue {
            Queue::GenerateCycle => {
                run_queue!(jobs::GenerateCycle, GenerateCycle, engine, conn, keys, queue, concurrency, restart, stop)
            }
            Queue::ChargeTransaction => {
                run_queue!(
                    jobs::ChargeTransaction,
                    ChargeTransaction,
                    engine,
                    conn,
                    keys,
                    queue,
                    concurrency,
                    restart,
                    stop
                )
            }
            Queue::RetryCharge => {
                run_queue!(jobs::RetryCharge, RetryCharge, engine, conn, keys, queue, concurrency, restart, stop)
            }
            Queue::TrialEnd => {
                run_queue!(jobs::TrialEnd, TrialEnd, engine, conn, keys, queue, concurrency, restart, stop)
            }
            Queue::Resume => run_queue!(jobs::Resume, Resume, engine, conn, keys, queue, concurrency, restart, stop),
            Queue::DeliverWebhook => {
                run_queue!(jobs::DeliverWebhook, DeliverWebhook, engine, conn, keys, queue, concurrency, restart, stop)
            }
        };
        if *shutdown.borrow() {
            return;
        }
        match result {
            Ok(()) => tracing::warn!(%queue, "worker loop ended; restarting"),
            Err(e) => tracing::warn!(%queue, error = %e, "worker loop failed; restarting"),
        }
        metrics::counter!("recur_worker_restarts_total", "queue" => queue.name()).increment(1);
        restart += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
