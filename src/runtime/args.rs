//! The options of each long-running role, as flags and environment variables (the
//! CLI flattens them into its subcommands; tests build them directly).

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address the API listens on.
    #[arg(long, env = "RECUR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

// The roles of `recur all`, in one process.
#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Address of /metrics, /healthz and /readyz for this worker or scheduler.
    #[arg(long, env = "RECUR_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Queues to run (default: all five).
    #[arg(long, env = "RECUR_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Jobs run at once per queue (default: each queue's policy).
    #[arg(long, env = "RECUR_CONCURRENCY")]
    pub concurrency: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl WorkerArgs {
    /// The queues named by `--queues`, all of them when none is.
    pub fn queues(&self) -> anyhow::Result<Vec<jobs::Queue>> {
        if self.queues.is_empty() {
            return Ok(jobs::Queue::ALL.to_vec());
        }
        self.queues
            .iter()
            .map(|n| {
                jobs::Queue::parse(n.trim()).ok_or_else(|| {
                    let all: Vec<&str> = jobs::Queue::ALL.iter().map(|q| q.name()).collect();
                    anyhow::anyhow!("unknown queue {n:?}; queues are {}", all.join(", "))
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Override every job's max attempts.
    #[arg(long, env = "RECUR_JOB_MAX_ATTEMPTS")]
    pub job_max_attempts: Option<u32>,
    /// Override every job's initial backoff (ms).
    #[arg(long, env = "RECUR_JOB_BACKOFF_INITIAL_MS")]
    pub job_backoff_initial_ms: Option<u64>,
    /// Override every job's backoff cap (ms).
    #[arg(long, env = "RECUR_JOB_BACKOFF_MAX_MS")]
    pub job_backoff_max_ms: Option<u64>,
    /// How long a stopping worker lets in-flight jobs finish (e.g. 30s).
    #[arg(long, env = "RECUR_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Let webhooks reach loopback and private addresses (development and tests only).
    #[arg(long, env = "RECUR_WEBHOOK_ALLOW_PRIVATE", value_parser = clap::builder::FalseyValueParser::new())]
    pub webhook_allow_private: bool,
    /// The webhook retry schedule, seconds comma-separated (default 5 s … 24 h, docs/webhooks.md#retries).
    #[arg(long, env = "RECUR_WEBHOOK_SCHEDULE", value_parser = crate::webhooks::schedule::Schedule::parse)]
    pub webhook_schedule: Option<crate::webhooks::schedule::Schedule>,
}

impl EngineArgs {
    pub fn webhooks(&self) -> anyhow::Result<crate::webhooks::Sender> {
        Ok(crate::webhooks::Sender {
            client: crate::webhooks::client::Client::new(self.webhook_allow_private)?,
            schedule: self.webhook_schedule.clone().unwrap_or_default(),
        })
    }

    pub fn overrides(&self) -> jobs::PolicyOverrides {
        jobs::PolicyOverrides {
            max_attempts: self.job_max_attempts,
            backoff_initial: self.job_backoff_initial_ms.map(std::time::Duration::from_millis),
            backoff_max: self.job_backoff_max_ms.map(std::time::Duration::from_millis),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerCommandArgs {
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Milliseconds between sweeps when nothing is due.
    #[arg(long, env = "RECUR_SCHEDULER_TICK_MS", default_value_t = 1000)]
    pub tick_ms: u64,
    /// Rows claimed per sweep statement.
    #[arg(long, env = "RECUR_SCHEDULER_BATCH", default_value_t = 1000)]
    pub batch: i64,
    /// Stop enqueueing while a queue holds this many waiting jobs (apalis-redis fails
    /// to fetch from a backlog of ~8,000 due jobs).
    #[arg(long, env = "RECUR_QUEUE_HIGH_WATER", default_value_t = 4000)]
    pub high_water: u64,
}
