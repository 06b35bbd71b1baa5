//! `recur-bench` (run as `recur bench`): the billing-day benchmark (a command, not a
//! test), a binary of its own so the product library does not carry it.
//!
//! It creates its own database and Redis namespace, starts the scheduler and W
//! workers as separate `recur` processes, and reports medians over several runs,
//! each as a ratio to baselines measured in the same run on the same Postgres:
//! pgbench TPC-B and a raw SQL loop doing one charge's writes with no queue; the
//! `http` gateway's runs, against `recur acquirer` over loopback, as ratios to the
//! in-process sandbox's.

mod acquirer;
mod baseline;
mod procs;
mod ratelimit;
mod receiver;
mod report;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};

use report::Report;
use scenario::Shape;

// `recur bench`'s command line: the benchmark's flags, and recur's settings (of which
// it uses the Redis URL) so every flag `recur bench` took still parses.
#[derive(Debug, Parser)]
#[command(name = "recur-bench", version, about = "The billing-day benchmark (creates and drops its own databases)")]
struct Cli {
    #[command(flatten)]
    settings: recur::config::Settings,
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    recur::telemetry::init_tracing();
    match run(cli.bench, cli.settings.redis_url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `recur` binary the benchmark starts its workers and scheduler from: the one
/// next to this binary (cargo builds both into the same directory).
fn recur_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let recur = exe.with_file_name(format!("recur{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        recur.is_file(),
        "no recur binary next to {}: build both with cargo build --release --workspace",
        exe.display()
    );
    Ok(recur)
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Postgres server (no database part): bench databases are created on it and dropped.
    #[arg(long, env = "RECUR_BENCH_PG", default_value = "postgres://postgres@127.0.0.1:5432")]
    pub pg: String,
    /// Runs per figure (medians are reported, with min–max).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Subscriptions due at one instant in the surge scenario.
    #[arg(long, default_value_t = 100_000)]
    pub surge: i64,
    /// Worker process counts to run the surge with.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Due charges in the latency scenario.
    #[arg(long, default_value_t = 20_000)]
    pub latency_charges: i64,
    /// Sandbox latency in the latency scenario (ms).
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Charge concurrency per worker in the latency scenario; each value is one point
    /// (1000 is the default policy; a lower one shows the bound where CPU does not cap it).
    #[arg(long, value_delimiter = ',', default_value = "1000,300")]
    pub latency_concurrency: Vec<usize>,
    /// Stored subscriptions in the scale scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_total: i64,
    /// Of which due.
    #[arg(long, default_value_t = 10_000)]
    pub scale_due: i64,
    /// Seconds over which the scale scenario's due set falls due.
    #[arg(long, default_value_t = 10)]
    pub scale_window_secs: u64,
    /// Seconds of pgbench and of the raw SQL loop.
    #[arg(long, default_value_t = 20)]
    pub baseline_secs: u64,
    /// Connections for the baselines (recur's processes use the same pool size).
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// Calls in flight in the http scenarios: the http gateway's cap per worker process,
    /// and the charge concurrency of http-latency's one worker.
    #[arg(long, default_value_t = 1000)]
    pub http_in_flight: usize,
    /// The http scenarios over h2c (RECUR_GATEWAY_H2C): one multiplexed connection per
    /// worker instead of one per call in flight.
    #[arg(long)]
    pub h2c: bool,
    /// Only these scenarios (surge, baseline, latency, scale, webhooks: the surge with
    /// one webhook endpoint on billing_cycle.succeeded and .failed, one worker;
    /// http-surge: the surge over the http gateway against `recur acquirer`;
    /// http-latency: that with --latency-ms added by the acquirer, one worker;
    /// rate-limits: one `recur api`, a merchant at half its write limit alone and while
    /// another floods at ten times its limit).
    #[arg(long, value_delimiter = ',', default_value = "surge,baseline,latency,scale")]
    pub only: Vec<String>,
    /// Seconds of each phase of the rate-limits scenario (alone, flooded).
    #[arg(long, default_value_t = 15)]
    pub rate_limit_secs: u64,
    /// Write the report here as Markdown (table + JSON).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

async fn run(args: BenchArgs, redis_url: String) -> anyhow::Result<()> {
    let recur = recur_binary()?;
    let mut report = Report::new(&args);
    let want = |s: &str| args.only.iter().any(|o| o == s);
    for run in 1..=args.runs {
        eprintln!("== run {run}/{}", args.runs);
        if want("baseline") {
            let pg = baseline::pgbench(&args.pg, args.clients, args.baseline_secs).await?;
            eprintln!("pgbench TPC-B: {pg:.0} tps");
            report.add("baseline", "pgbench_tpcb_tps", pg);
            let raw = baseline::sql_loop(&args.pg, args.clients, args.baseline_secs).await?;
            eprintln!("raw SQL charge loop: {raw:.0} charges/s");
            report.add("baseline", "sql_loop_charges_per_s", raw);
        }
        if want("surge") {
            for &w in &args.workers {
                let r = scenario::surge(&recur, &args, &redis_url, args.surge, w, Shape::default()).await?;
                eprintln!("surge W={w}: {:.0} charges/s, lag p99 {:.2}s", r.charges_per_s, r.lag_p99);
                report.surge(w, &r);
            }
        }
        if want("http-surge") {
            for &w in &args.workers {
                let shape = Shape { http_in_flight: Some(args.http_in_flight), ..Shape::default() };
                let r = scenario::surge(&recur, &args, &redis_url, args.surge, w, shape).await?;
                let c = r.http.clone().unwrap_or_default().connections;
                eprintln!("http surge W={w}: {:.0} charges/s, {c} connections", r.charges_per_s);
                report.http_surge(w, args.surge, &r);
            }
        }
        if want("http-latency") {
            let shape = Shape {
                latency_ms: args.latency_ms,
                concurrency: Some(args.http_in_flight),
                hook: None,
                http_in_flight: Some(args.http_in_flight),
            };
            let r = scenario::surge(&recur, &args, &redis_url, args.latency_charges, 1, shape).await?;
            let c = r.http.clone().unwrap_or_default().connections;
            eprintln!(
                "http latency: {:.0} charges/s (in flight ÷ latency {:.0}), {c} connections",
                r.charges_per_s, r.bound
            );
            report.http_latency(args.latency_charges, &r);
        }
        if want("webhooks") {
            let receiver = receiver::Receiver::start().await?;
            let r = scenario::surge(
                &recur,
                &args,
                &redis_url,
                args.surge,
                1,
                Shape { hook: Some(&receiver), ..Shape::default() },
            )
            .await?;
            let w = r.webhooks.clone().unwrap_or_default();
            eprintln!(
                "webhooks W=1: {:.0} charges/s, {:.0} deliveries/s, lag p50 {:.2}s p99 {:.2}s, last delivery {:.2}s after the last charge",
                r.charges_per_s, w.per_s, w.lag_p50, w.lag_p99, w.behind_last_charge
            );
            report.webhooks(&r);
        }
        if want("latency") {
            for &c in &args.latency_concurrency {
                let r = scenario::surge(
                    &recur,
                    &args,
                    &redis_url,
                    args.latency_charges,
                    1,
                    Shape { latency_ms: args.latency_ms, concurrency: Some(c), ..Shape::default() },
                )
                .await?;
                eprintln!("latency c={c}: {:.0} charges/s (bound {:.0})", r.charges_per_s, r.bound);
                report.latency(c, &r);
            }
        }
        if want("rate-limits") {
            let r = ratelimit::run(&recur, &args, &redis_url).await?;
            eprintln!(
                "rate limits: calm alone p50 {:.2} ms p99 {:.2} ms ({:.1} % ok); flooded p50 {:.2} ms p99 {:.2} ms ({:.1} % ok); \
                 flood {:.0}/s sent, {:.0}/s served, {:.0}/s refused",
                r.calm_alone.p50_ms,
                r.calm_alone.p99_ms,
                r.calm_alone.success_pct(),
                r.calm_flooded.p50_ms,
                r.calm_flooded.p99_ms,
                r.calm_flooded.success_pct(),
                r.flood_sent_per_s,
                r.flood_served_per_s,
                r.flood_refused_per_s
            );
            report.rate_limits(&r);
        }
        if want("scale") {
            let r = scenario::scale(&recur, &args, &redis_url).await?;
            eprintln!("scale: sweep {:.1} ms/tick, lag p99 {:.2}s", r.sweep_ms, r.lag_p99);
            report.scale(&r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = report.render();
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
