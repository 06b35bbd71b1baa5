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

/// What one run of a queue's loop needs, handed to `run_queue!` whole.
struct LoopRun<'a> {
    engine: &'a Arc<Engine>,
    conn: redis::aio::ConnectionManager,
    keys: &'a Keys,
    queue: Queue,
    concurrency: usize,
    restart: u32,
    beat: &'a Heartbeat,
}

macro_rules! run_queue {
    ($payload:ty, $variant:ident, $run:expr, $stop:expr) => {{
        async fn handle(job: $payload, task: Option<TaskId>, engine: Data<Arc<Engine>>) -> Result<(), BoxDynError> {
            let job = Job::$variant(job);
            let span = job_span(&job, task.as_ref());
            engine.execute(job).instrument(span).await
        }
        let run: LoopRun = $run;
        let storage = RedisStorage::<$payload>::new(run.conn)
            .with_config(run.keys.config(run.queue))
            .poll_with_interval(engine::poll_interval());
        let beat = run.beat.clone();
        let worker = WorkerBuilder::new(worker_name(run.queue, run.restart))
            .backend(storage)
            .on_event(move |_, event| {
                if matches!(event, Event::Start | Event::HeartBeat) {
                    beat.alive();
                }
            })
            .data(run.engine.clone())
            .concurrency(run.concurrency)
            .build(handle);
        worker.run_until($stop).await
    }};
}

/// How long a worker loop may go without a heartbeat (every 2 s, `src/queue/keys.rs`)
/// before it is taken for stalled (docs/architecture.md#apalis-redis-tuning).
pub const STALLED: Duration = Duration::from_secs(15);

/// When a worker loop last showed it was alive (started or beat), watched on tokio's
/// clock: apalis's own heartbeat runs on another timer, and a loop whose wake-ups stop
/// coming would otherwise sit silent for ever with its queue full.
#[derive(Clone)]
struct Heartbeat(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl Heartbeat {
    fn new() -> Heartbeat {
        Heartbeat(Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())))
    }

    fn alive(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Resolves once the loop has been silent for `limit`; never while stopping (a
    /// draining loop is left to finish its jobs).
    async fn stalled(&self, limit: Duration, shutdown: &watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return std::future::pending().await;
            }
            let silent = self.silent_for();
            if silent >= limit {
                return;
            }
            tokio::time::sleep(limit - silent).await;
        }
    }
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
        let beat = Heartbeat::new();
        let lr = LoopRun { engine: &engine, conn, keys: &keys, queue, concurrency, restart, beat: &beat };
        let run = async {
            match queue {
                Queue::GenerateCycle => run_queue!(jobs::GenerateCycle, GenerateCycle, lr, stop),
                Queue::ChargeTransaction => run_queue!(jobs::ChargeTransaction, ChargeTransaction, lr, stop),
                Queue::RetryCharge => run_queue!(jobs::RetryCharge, RetryCharge, lr, stop),
                Queue::TrialEnd => run_queue!(jobs::TrialEnd, TrialEnd, lr, stop),
                Queue::Resume => run_queue!(jobs::Resume, Resume, lr, stop),
                Queue::DeliverWebhook => run_queue!(jobs::DeliverWebhook, DeliverWebhook, lr, stop),
            }
        };
        // A loop that stops beating is dropped and started again under a new name: its
        // jobs in flight, if any, return to the queue like a killed worker's.
        let result = tokio::select! {
            result = run => Some(result),
            () = beat.stalled(STALLED, &shutdown) => None,
        };
        if *shutdown.borrow() {
            return;
        }
        match result {
            Some(Ok(())) => tracing::warn!(%queue, "worker loop ended; restarting"),
            Some(Err(e)) => tracing::warn!(%queue, error = %e, "worker loop failed; restarting"),
            None => tracing::warn!(%queue, silent_secs = STALLED.as_secs(), "worker loop stopped beating; restarting"),
        }
        metrics::counter!("recur_worker_restarts_total", "queue" => queue.name()).increment(1);
        restart += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{sleep, timeout};

    #[tokio::test]
    async fn a_loop_that_beats_is_not_stalled_and_one_that_stops_is() {
        let (_tx, shutdown) = watch::channel(false);
        let beat = Heartbeat::new();
        let beating = {
            let beat = beat.clone();
            tokio::spawn(async move {
                for _ in 0..60 {
                    beat.alive();
                    sleep(Duration::from_millis(25)).await;
                }
            })
        };
        // Beating every 25 ms for 1.5 s: a 1 s limit is never reached meanwhile.
        assert!(timeout(Duration::from_millis(1200), beat.stalled(Duration::from_secs(1), &shutdown)).await.is_err());
        beating.await.unwrap();
        // Silent: the watch resolves once the limit has passed since the last beat.
        let started = tokio::time::Instant::now();
        timeout(Duration::from_secs(10), beat.stalled(Duration::from_millis(300), &shutdown))
            .await
            .expect("a silent loop is found stalled");
        assert!(beat.silent_for() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_stopping_loop_is_never_taken_for_stalled() {
        let (tx, shutdown) = watch::channel(false);
        let beat = Heartbeat::new();
        tx.send(true).unwrap();
        sleep(Duration::from_millis(50)).await;
        assert!(timeout(Duration::from_millis(400), beat.stalled(Duration::from_millis(10), &shutdown)).await.is_err());
    }
}
