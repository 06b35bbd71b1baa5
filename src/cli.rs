//! The `recur` command line: one binary, one subcommand per role (SPEC 1).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::app::App;
use crate::clock::Clock;
use crate::config::Settings;
use crate::gateway::{Gateway, sandbox::Sandbox};
use crate::queue::Enqueuer;

#[derive(Debug, Parser)]
#[command(name = "recur", version, about = "Recurring and merchant-initiated card charges")]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API, scheduler and worker in one process.
    All(AllArgs),
    /// The HTTP API only (stateless; run N behind a load balancer).
    Api(ApiArgs),
    /// Run jobs from the queues (run N of them anywhere).
    Worker(WorkerArgs),
    /// Sweep Postgres for due work and enqueue it (safe to run several).
    Scheduler(SchedulerCommandArgs),
    /// Apply migrations and exit.
    Migrate,
    /// Dead-letter queues: list, show, replay, drain.
    #[command(subcommand)]
    Dlq(crate::ops::DlqCommand),
    /// The billing-day benchmark (creates and drops its own databases).
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments of the `recur-bench` binary, passed through (see `recur bench --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Per-queue counts: pending, scheduled, running, dead, workers.
    Queues {
        #[arg(long)]
        json: bool,
    },
    /// Merchant administration.
    #[command(subcommand)]
    Merchant(MerchantCommand),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address the API listens on.
    #[arg(long, env = "RECUR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Create a sandbox demo merchant and subscription at start and print how to call the API.
    #[arg(long, env = "RECUR_DEMO")]
    pub demo: bool,
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
}

impl EngineArgs {
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

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant; prints its merchantKey and secret as JSON.
    Create {
        #[arg(long)]
        name: String,
        /// A sandbox merchant (charges go to the sandbox gateway).
        #[arg(long)]
        sandbox: bool,
    },
}

pub async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `recur --redis-url URL bench …`: the benchmark must get that URL too.
    let redis_flag = matches.value_source("redis_url") == Some(ValueSource::CommandLine);
    crate::telemetry::init_tracing();
    if let Command::Bench { args } = cli.command {
        return match bench(redis_flag.then_some(cli.settings.redis_url.as_str()), args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("recur: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every role needs: Postgres (migrated), Redis, the clock and the gateway.
pub struct Runtime {
    pub settings: Settings,
    pub pool: sqlx::PgPool,
    pub clock: Clock,
    pub gateway: Arc<dyn Gateway>,
    pub queue: Enqueuer,
}

impl Runtime {
    pub async fn start(settings: &Settings) -> anyhow::Result<Runtime> {
        let pool = crate::db::connect(&settings.database_url, settings.db_pool).await?;
        if !settings.no_migrate {
            crate::db::migrate(&pool).await?;
        }
        let queue = Enqueuer::connect(&settings.redis_url, &settings.redis_namespace).await?;
        let clock = Clock::new(settings.clock, &pool).await?;
        if settings.gateway != "sandbox" {
            anyhow::bail!(
                "RECUR_GATEWAY={:?} is not available: this build ships the sandbox gateway",
                settings.gateway
            );
        }
        let gateway: Arc<dyn Gateway> =
            Arc::new(Sandbox::new(pool.clone(), std::time::Duration::from_millis(settings.sandbox_latency_ms)));
        Ok(Runtime { settings: settings.clone(), pool, clock, gateway, queue })
    }

    pub fn engine(&self, args: &EngineArgs) -> Arc<crate::worker::Engine> {
        crate::worker::Engine::new(
            self.pool.clone(),
            self.clock.clone(),
            self.gateway.clone(),
            self.queue.clone(),
            args.overrides(),
            self.settings.lease_seconds,
        )
    }

    pub fn scheduler(&self, args: &SchedulerArgs) -> crate::scheduler::Scheduler {
        crate::scheduler::Scheduler {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            queue: self.queue.clone(),
            opts: crate::scheduler::SchedulerOptions {
                tick: std::time::Duration::from_millis(args.tick_ms.max(10)),
                batch: args.batch.max(1),
                high_water: args.high_water.max(1),
                lease_secs: self.settings.lease_seconds,
            },
            cursor: Default::default(),
        }
    }

    pub fn app(&self) -> App {
        App {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            gateway: self.gateway.clone(),
            queue: self.queue.clone(),
            admin_token: self.settings.admin_token.as_deref().map(Arc::from),
            lease_secs: self.settings.lease_seconds,
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let s = cli.settings;
    match cli.command {
        Command::Migrate => {
            let pool = crate::db::connect(&s.database_url, 2).await?;
            crate::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Merchant(MerchantCommand::Create { name, sandbox }) => {
            let pool = crate::db::connect(&s.database_url, 2).await?;
            if !s.no_migrate {
                crate::db::migrate(&pool).await?;
            }
            let creds = crate::merchants::create(&pool, &name, sandbox)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.problem().detail))?;
            println!("{}", serde_json::to_string_pretty(&creds)?);
            Ok(())
        }
        Command::Bench { .. } => anyhow::bail!("recur bench runs recur-bench (see main)"),
        Command::Dlq(cmd) => {
            let rt = Runtime::start(&s).await?;
            crate::ops::dlq(&rt, cmd).await
        }
        Command::Queues { json } => {
            let rt = Runtime::start(&s).await?;
            crate::ops::queues(&rt, json).await
        }
        Command::Api(args) => {
            crate::telemetry::init_metrics();
            let rt = Runtime::start(&s).await?;
            serve_api(rt.app(), args.listen, shutdown_signal()).await
        }
        Command::All(args) => {
            crate::telemetry::init_metrics();
            let rt = Runtime::start(&s).await?;
            let listener = TcpListener::bind(args.api.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.api.listen))?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let opts = crate::worker::WorkerOptions {
                queues: jobs::Queue::ALL.to_vec(),
                concurrency: None,
                drain_timeout: args.engine.drain_timeout,
            };
            let worker = tokio::spawn(crate::worker::run(rt.engine(&args.engine), opts, stopped.clone()));
            let scheduler = rt.scheduler(&args.scheduler);
            let sched_stop = stopped.clone();
            let sched = tokio::spawn(async move { scheduler.run(sched_stop).await });
            if args.demo {
                crate::demo::announce(&rt, listener.local_addr()?).await?;
            }
            let mut api_stop = stopped.clone();
            let api = axum::serve(listener, crate::api::router(rt.app())).with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|s| *s).await;
            });
            let api = tokio::spawn(async move { api.await });
            shutdown_signal().await;
            let _ = stop.send(true);
            let _ = tokio::join!(api, sched);
            worker.await??;
            Ok(())
        }
        Command::Worker(args) => {
            crate::telemetry::init_metrics();
            let rt = Runtime::start(&s).await?;
            let queues = parse_queues(&args.queues)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let opts = crate::worker::WorkerOptions {
                queues,
                concurrency: args.concurrency,
                drain_timeout: args.engine.drain_timeout,
            };
            let metrics = tokio::spawn(crate::telemetry::serve(
                args.metrics.metrics_listen,
                rt.pool.clone(),
                rt.queue.connection(),
                stopped.clone(),
            ));
            let worker = tokio::spawn(crate::worker::run(rt.engine(&args.engine), opts, stopped));
            shutdown_signal().await;
            let _ = stop.send(true);
            worker.await??;
            metrics.abort();
            Ok(())
        }
        Command::Scheduler(args) => {
            crate::telemetry::init_metrics();
            let rt = Runtime::start(&s).await?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let scheduler = rt.scheduler(&args.scheduler);
            let metrics = tokio::spawn(crate::telemetry::serve(
                args.metrics.metrics_listen,
                rt.pool.clone(),
                rt.queue.connection(),
                stopped.clone(),
            ));
            let task = tokio::spawn(async move { scheduler.run(stopped).await });
            shutdown_signal().await;
            let _ = stop.send(true);
            task.await?;
            metrics.abort();
            Ok(())
        }
    }
}

pub async fn serve_api(
    app: App,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "api listening");
    axum::serve(listener, crate::api::router(app)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// `recur bench ARGS`: the benchmark lives in its own binary, `recur-bench`, next to
/// this one; run it in this process's place so signals and the exit status are its own.
fn bench(redis_url: Option<&str>, args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let bench = exe.with_file_name(format!("recur-bench{}", std::env::consts::EXE_SUFFIX));
    if !bench.is_file() {
        anyhow::bail!(
            "the benchmark binary {} is missing: build it with cargo build --release -p recur-bench",
            bench.display()
        );
    }
    let mut cmd = std::process::Command::new(&bench);
    cmd.args(args);
    if let Some(url) = redis_url {
        cmd.env("REDIS_URL", url);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        Err(anyhow::Error::new(e).context(format!("cannot run {}", bench.display())))
    }
    #[cfg(not(unix))]
    {
        let status =
            cmd.status().map_err(|e| anyhow::Error::new(e).context(format!("cannot run {}", bench.display())))?;
        Ok(ExitCode::from(status.code().map_or(1, |c| c as u8)))
    }
}

fn parse_queues(names: &[String]) -> anyhow::Result<Vec<jobs::Queue>> {
    if names.is_empty() {
        return Ok(jobs::Queue::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            jobs::Queue::parse(n.trim()).ok_or_else(|| {
                let all: Vec<&str> = jobs::Queue::ALL.iter().map(|q| q.name()).collect();
                anyhow::anyhow!("unknown queue {n:?}; queues are {}", all.join(", "))
            })
        })
        .collect()
}
