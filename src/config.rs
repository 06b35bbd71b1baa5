//! Settings shared by every role, each a flag or an environment variable.

use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Postgres connection URL; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/recur", global = true)]
    pub database_url: String,

    /// Redis connection URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    pub redis_url: String,

    /// Prefix of every Redis key recur writes (lets several deployments or tests share one Redis).
    #[arg(long, env = "RECUR_REDIS_NAMESPACE", default_value = "recur", global = true)]
    pub redis_namespace: String,

    /// Postgres pool size per process.
    #[arg(long, env = "RECUR_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool: u32,

    /// `system` (wall clock) or `manual` (test clock stored in Postgres, moved by /admin/clock).
    #[arg(long, env = "RECUR_CLOCK", default_value = "system", global = true)]
    pub clock: ClockMode,

    /// Payment gateway: only `sandbox` ships with recur.
    #[arg(long, env = "RECUR_GATEWAY", default_value = "sandbox", global = true)]
    pub gateway: String,

    /// Latency added to every sandbox gateway call, in milliseconds.
    #[arg(long, env = "RECUR_SANDBOX_LATENCY_MS", default_value_t = 0, global = true)]
    pub sandbox_latency_ms: u64,

    /// Bearer token of the admin API; the admin API is off when unset.
    #[arg(long, env = "RECUR_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Seconds an enqueued job owns its Postgres row; after that the scheduler assumes
    /// Redis lost the job and enqueues it again (wall clock, not the test clock).
    #[arg(long, env = "RECUR_LEASE_SECONDS", default_value_t = crate::lease::DEFAULT_SECONDS, global = true)]
    pub lease_seconds: i64,

    /// Skip applying migrations on start.
    #[arg(long, env = "RECUR_NO_MIGRATE", global = true)]
    pub no_migrate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    System,
    Manual,
}

pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
