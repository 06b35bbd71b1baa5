//! `recur acquirer`: an acquirer simulator, the far end of recur's HTTP gateway
//! protocol (docs/gateway-protocol.md). A real HTTP server with its own Postgres
//! ledger: tokens decide outcomes, requests are signed, repeated idempotency keys get
//! the first answer, and faults (latency, 503s, held requests, lost responses) are
//! injected on demand.

mod cards;
mod charges;
mod faults;
mod ledger;
mod metrics;
mod openapi;
mod payment_methods;
mod server;
mod signature;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cards::visa_category;
pub use faults::parse_rate;
pub use payment_methods::TEST_CARDS;

use crate::batch::Batcher;
use crate::runtime::Signals;
use crate::webhooks::signing;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/recur_acquirer";
const DATABASE_URL_ENV: &str = "RECUR_ACQUIRER_DATABASE_URL";
const POOL_SIZE: u32 = 16;
/// Charges per group-committed ledger write, and such writes in flight at once.
const LEDGER_BATCH: usize = 1000;
const LEDGER_BATCHES: usize = 4;

#[derive(Debug, Clone, clap::Args)]
pub struct AcquirerArgs {
    /// Address the simulator listens on.
    #[arg(long, env = "RECUR_ACQUIRER_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// The simulator's own Postgres database (created if missing).
    #[arg(long, env = DATABASE_URL_ENV, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Shared signing secret, `whsec_<base64>`; one is generated and printed when unset.
    #[arg(long, env = "RECUR_ACQUIRER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Latency added to every charge, in milliseconds.
    #[arg(long, env = "RECUR_ACQUIRER_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency per charge, uniform from 0 to this many milliseconds.
    #[arg(long, env = "RECUR_ACQUIRER_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Probability (0..1) of answering a charge 503 without charging.
    #[arg(long, env = "RECUR_ACQUIRER_ERROR_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Probability (0..1) of holding a charge (see --timeout-hold-ms), then 504, without charging.
    #[arg(long, env = "RECUR_ACQUIRER_TIMEOUT_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub timeout_rate: f64,
    /// Probability (0..1) of charging, then dropping the connection without an answer.
    #[arg(long, env = "RECUR_ACQUIRER_LOST_RESPONSE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub lost_response_rate: f64,
    /// How long a timeout fault holds the request, in milliseconds.
    #[arg(long, env = "RECUR_ACQUIRER_TIMEOUT_HOLD_MS", default_value_t = 30_000)]
    pub timeout_hold_ms: u64,
}

impl AcquirerArgs {
    /// Defaults for everything but the database, for tests and embedding.
    pub fn new(database_url: &str) -> AcquirerArgs {
        AcquirerArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            database_url: database_url.to_owned(),
            secret: None,
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
            lost_response_rate: 0.0,
            timeout_hold_ms: 30_000,
        }
    }

    /// `--database-url` is also recur's global flag, and clap lets recur's
    /// `DATABASE_URL` win over this command's default: the simulator never takes its
    /// database from `DATABASE_URL`, only from its own flag or variable.
    pub fn ignore_recur_database_url(&mut self, matches: &clap::ArgMatches) {
        let source = matches.subcommand_matches("acquirer").and_then(|m| m.value_source("database_url"));
        if source == Some(ValueSource::EnvVariable) && std::env::var_os(DATABASE_URL_ENV).is_none() {
            DEFAULT_DATABASE_URL.clone_into(&mut self.database_url);
        }
    }

    fn faults(&self) -> anyhow::Result<faults::Faults> {
        for (flag, rate) in [
            ("--error-rate", self.error_rate),
            ("--timeout-rate", self.timeout_rate),
            ("--lost-response-rate", self.lost_response_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                anyhow::bail!("{flag} must be a probability from 0 to 1, not {rate}");
            }
        }
        Ok(faults::Faults {
            latency: Duration::from_millis(self.latency_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            error_rate: self.error_rate,
            timeout_rate: self.timeout_rate,
            lost_response_rate: self.lost_response_rate,
            timeout_hold: Duration::from_millis(self.timeout_hold_ms),
        })
    }
}

/// A valid secret: `whsec_` and non-empty base64 (never quoted in the message).
fn check_secret(secret: &str) -> anyhow::Result<()> {
    use base64::Engine;
    let key = secret.strip_prefix(signing::PREFIX).context("the acquirer secret must start with whsec_")?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => anyhow::bail!("the acquirer secret must be whsec_ followed by base64"),
    }
}

/// A running simulator.
pub struct Simulator {
    pub addr: SocketAddr,
    pub secret: String,
    pool: sqlx::PgPool,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Simulator {
    /// Connect (creating the database), migrate, bind and serve.
    pub async fn start(args: &AcquirerArgs) -> anyhow::Result<Simulator> {
        let faults = args.faults()?;
        let secret = args.secret.clone().unwrap_or_else(signing::new_secret);
        check_secret(&secret)?;
        let pool = crate::db::connect(&args.database_url, POOL_SIZE).await?;
        ledger::migrate(&pool).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let (stop, stopping) = watch::channel(false);
        let metrics = metrics::Metrics::new()?;
        let listener = metrics::Counted { inner: faults::CuttableListener(listener), metrics: metrics.clone() };
        let p = pool.clone();
        let ledger =
            Batcher::spawn("acquirer_ledger", LEDGER_BATCH, LEDGER_BATCHES, move |items: Vec<ledger::Pending>| {
                let pool = p.clone();
                async move { ledger::charge_batch(&pool, &items).await }
            });
        let shared = server::Shared {
            pool: pool.clone(),
            ledger,
            secret: secret.clone(),
            faults,
            metrics,
            stopping: stopping.clone(),
        };
        let app = server::router(Arc::new(shared)).into_make_service_with_connect_info::<faults::Cutter>();
        let mut until = stopping;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = until.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(listen = %addr, "acquirer simulator listening");
        Ok(Simulator { addr, secret, pool, stop, task })
    }

    /// Stop accepting, let held requests go, wait for the answers in flight.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the acquirer's server task failed")??;
        self.pool.close().await;
        Ok(())
    }
}

/// `recur acquirer`: serve until SIGTERM or SIGINT.
pub async fn run(args: AcquirerArgs, signals: &Signals) -> anyhow::Result<()> {
    let Some(sim) = signals.unless_signalled(Simulator::start(&args)).await.transpose()? else {
        return Ok(());
    };
    if args.secret.is_none() {
        // On stdout, for the operator to copy; never in a log line.
        println!("RECUR_ACQUIRER_SECRET={}", sim.secret);
    }
    println!("recur acquirer listening on http://{}", sim.addr);
    signals.received().await;
    sim.stop().await
}
