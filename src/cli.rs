//! The `recur` command line: one binary, one subcommand per role. This module only
//! parses arguments and hands each command to `runtime` (the roles), `ops` or `demo`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Settings;
use crate::runtime::{AllArgs, ApiArgs, SchedulerCommandArgs, Signals, WorkerArgs};

// Where the test harness and earlier callers name the runtime and the role options.
pub use crate::runtime::{EngineArgs, Runtime, SchedulerArgs};

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
    All(AllCommand),
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
    /// Webhook endpoints and deliveries: list, replay.
    #[command(subcommand)]
    Webhooks(crate::ops::webhooks::WebhooksCommand),
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
    /// An acquirer simulator with its own ledger (docs/gateway-protocol.md).
    Acquirer(crate::acquirer::AcquirerArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct AllCommand {
    #[command(flatten)]
    pub roles: AllArgs,
    /// Create a sandbox demo merchant and subscription at start and print how to call the API.
    #[arg(long, env = "RECUR_DEMO")]
    pub demo: bool,
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

/// `signals` must be installed before this is called (see `main.rs`).
pub async fn main(signals: Signals) -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Acquirer(args) = &mut cli.command {
        args.ignore_recur_database_url(&matches);
    }
    // `recur --redis-url URL bench …`: the benchmark must get that URL too.
    let redis_flag = matches.value_source("redis_url") == Some(ValueSource::CommandLine);
    crate::telemetry::init_tracing();
    match run(cli, redis_flag, &signals).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recur: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, redis_flag: bool, signals: &Signals) -> anyhow::Result<ExitCode> {
    let s = cli.settings;
    match cli.command {
        // The long-running roles answer a signal with a clean stop.
        Command::Api(args) => crate::runtime::api(&s, &args, signals).await.map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => crate::runtime::worker(&s, &args, signals).await.map(|()| ExitCode::SUCCESS),
        Command::Scheduler(args) => crate::runtime::scheduler(&s, &args, signals).await.map(|()| ExitCode::SUCCESS),
        Command::All(AllCommand { mut roles, demo }) => {
            // The demo's hint sends webhooks to a receiver on this machine.
            roles.engine.webhook_allow_private |= demo;
            let on_listening = async |rt: &Runtime, addr| {
                if demo { crate::demo::announce(rt, addr).await } else { Ok(()) }
            };
            crate::runtime::all(&s, &roles, signals, on_listening).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Bench { args } => crate::ops::bench(redis_flag.then_some(s.redis_url.as_str()), args, signals),
        Command::Migrate => one_shot(signals, crate::ops::migrate(&s)).await,
        Command::Merchant(MerchantCommand::Create { name, sandbox }) => {
            one_shot(signals, crate::ops::create_merchant(&s, &name, sandbox)).await
        }
        Command::Dlq(cmd) => one_shot(signals, async { crate::ops::dlq(&Runtime::start(&s).await?, cmd).await }).await,
        Command::Webhooks(cmd) => {
            one_shot(signals, async { crate::ops::webhooks::run(&Runtime::start(&s).await?, cmd).await }).await
        }
        Command::Acquirer(args) => crate::acquirer::run(args, signals).await.map(|()| ExitCode::SUCCESS),
        Command::Queues { json } => {
            one_shot(signals, async { crate::ops::queues(&Runtime::start(&s).await?, json).await }).await
        }
    }
}

/// A one-shot command stops where it is on a signal, with the status of a kill by it
/// (as before handlers were installed; its writes are transactional).
async fn one_shot(signals: &Signals, work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    tokio::select! {
        biased;
        signal = signals.received() => Ok(ExitCode::from(signal.exit_code())),
        done = work => done.map(|()| ExitCode::SUCCESS),
    }
}
