//! The engine inside a test process: a worker and a scheduler running on their own,
//! or a worker whose scheduler the test sweeps by hand, so that "nothing happened"
//! is checked after the work was done rather than after a guessed delay.

use std::sync::LazyLock;
use std::time::Duration;

use recur::scheduler::{Scheduler, Sweep};

use super::TestApp;
use super::wait::eventually;

/// Per queue (keys: active list, scheduled set, workers set; argument: the prefix of
/// the workers' in-flight sets): jobs waiting, scheduled and in flight.
static JOBS_LEFT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local counts = {}
for q = 1, #ARGV do
    local k = (q - 1) * 3
    local in_flight = 0
    for _, w in ipairs(redis.call('ZRANGE', KEYS[k + 3], 0, -1)) do
        in_flight = in_flight + redis.call('SCARD', ARGV[q] .. ':' .. w)
    end
    table.insert(counts, redis.call('LLEN', KEYS[k + 1]))
    table.insert(counts, redis.call('ZCARD', KEYS[k + 2]))
    table.insert(counts, in_flight)
end
return counts
"#,
    )
});

/// Options for an in-process engine (worker + scheduler) of a test.
#[derive(Clone)]
pub struct EngineOpts {
    pub queues: Vec<jobs::Queue>,
    pub concurrency: Option<usize>,
    pub max_attempts: Option<u32>,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub scheduler: bool,
    pub worker: bool,
    pub tick_ms: u64,
    pub high_water: u64,
    /// The webhook retry schedule (seconds, comma-separated); the default one if None.
    pub webhook_schedule: Option<String>,
}

impl EngineOpts {
    /// A worker only: the test sweeps the scheduler itself with [`TestApp::run_due`].
    pub fn stepped() -> EngineOpts {
        EngineOpts { scheduler: false, ..EngineOpts::default() }
    }
}

impl Default for EngineOpts {
    fn default() -> Self {
        EngineOpts {
            queues: jobs::Queue::ALL.to_vec(),
            concurrency: None,
            max_attempts: None,
            backoff_initial_ms: 50,
            backoff_max_ms: 200,
            scheduler: true,
            worker: true,
            tick_ms: 50,
            high_water: 4000,
            webhook_schedule: None,
        }
    }
}

/// A running in-process engine; stops (and waits) on `stop()`, aborts on drop.
pub struct EngineHandle {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EngineHandle {
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TestApp {
    pub fn engine_args(&self, o: &EngineOpts) -> recur::cli::EngineArgs {
        recur::cli::EngineArgs {
            job_max_attempts: o.max_attempts,
            job_backoff_initial_ms: Some(o.backoff_initial_ms),
            job_backoff_max_ms: Some(o.backoff_max_ms),
            drain_timeout: std::time::Duration::from_secs(10),
            // Receivers of tests listen on loopback.
            webhook_allow_private: true,
            webhook_schedule: o
                .webhook_schedule
                .as_deref()
                .map(|s| recur::webhooks::schedule::Schedule::parse(s).unwrap()),
        }
    }

    /// Start a worker and a scheduler inside the test process.
    pub fn start_engine(&self, o: EngineOpts) -> EngineHandle {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        if o.worker {
            let engine = self.rt.engine(&self.engine_args(&o)).expect("engine builds");
            let opts = recur::worker::WorkerOptions {
                queues: o.queues.clone(),
                concurrency: o.concurrency,
                drain_timeout: std::time::Duration::from_secs(10),
            };
            let s = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let _ = recur::worker::run(engine, opts, s).await;
            }));
        }
        if o.scheduler {
            let sched = self.scheduler(&o);
            let s = stopped.clone();
            tasks.push(tokio::spawn(async move { sched.run(s).await }));
        }
        EngineHandle { stop, tasks }
    }

    /// The scheduler [`TestApp::start_engine`] runs, for a test to sweep by hand.
    pub fn scheduler(&self, o: &EngineOpts) -> Scheduler {
        self.rt.scheduler(&recur::cli::SchedulerArgs { tick_ms: o.tick_ms, batch: 1000, high_water: o.high_water })
    }

    /// Run the work due at the test clock to its end, as the scheduler and the worker
    /// would: sweep, let the worker drain the queues, and again until a sweep finds
    /// nothing (a job can make more work due: a trial end opens a cycle). Needs a
    /// running worker and no other scheduler (`EngineOpts::stepped()`): a scheduler
    /// between its claim and its push would leave work this sweep cannot see.
    pub async fn run_due(&self) {
        let sched = self.scheduler(&EngineOpts::default());
        eventually("the due work to run to its end", Duration::from_secs(60), async || {
            self.wait_drained().await;
            match sched.sweep().await {
                Ok(s) if s == Sweep::default() => Ok(()),
                Ok(s) => Err(format!("the last sweep did {s:?}")),
                Err(e) => Err(format!("the last sweep failed: {e:#}")),
            }
        })
        .await
    }

    /// The jobs Redis still holds for this namespace, per queue: waiting, scheduled
    /// (retries in backoff) and in flight at any worker, live or dead (a killed
    /// worker's jobs return to the queue once its heartbeat has expired). A job pushes
    /// its follow-ups before it is acknowledged, so none left means no work in hand.
    /// Read in one script: queue by queue, a job finishing in one could hide the
    /// follow-up it had just pushed to a queue read a moment earlier.
    pub async fn jobs_left(&self) -> Result<(), String> {
        let mut script = JOBS_LEFT.prepare_invoke();
        for q in jobs::Queue::ALL {
            let c = self.rt.queue.keys().config(q);
            script
                .key(c.active_jobs_list())
                .key(c.scheduled_jobs_set())
                .key(c.workers_set())
                .arg(c.inflight_jobs_set());
        }
        let counts: Vec<u64> = script
            .invoke_async(&mut self.rt.queue.connection())
            .await
            .map_err(|e| format!("reading the queues: {e}"))?;
        let left: Vec<String> = jobs::Queue::ALL
            .iter()
            .zip(counts.chunks(3))
            .filter(|(_, n)| n.iter().sum::<u64>() > 0)
            .map(|(q, n)| format!("{q}: {} waiting, {} scheduled, {} in flight", n[0], n[1], n[2]))
            .collect();
        if left.is_empty() { Ok(()) } else { Err(left.join("; ")) }
    }

    /// Wait until Redis holds no job of this namespace: every delivery, late
    /// duplicates included, has run. Needs a live worker for the jobs left.
    pub async fn wait_drained(&self) {
        eventually("the queues to drain", Duration::from_secs(30), async || self.jobs_left().await).await
    }
}
