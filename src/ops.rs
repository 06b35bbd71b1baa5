//! Operator commands: `recur dlq …`, `recur webhooks …` (`webhooks`) and `recur queues` over the same code as the
//! admin API (tables for people, `--json` for scripts; unknown ids exit non-zero),
//! `recur migrate`, `recur merchant create` and `recur bench`.

pub mod webhooks;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use jobs::Queue;
use uuid::Uuid;

use crate::config::Settings;
use crate::dlq::{self, DeadLetter, Filter};
use crate::queue::stats;
use crate::runtime::{Runtime, Signals, operator_error};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only entries whose last error contains this text (case-insensitive).
        #[arg(long)]
        error_contains: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on their live queue with attempts reset.
    Replay {
        ids: Vec<Uuid>,
        /// Replay every dead letter (narrowed by --queue / --error-contains).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        error_contains: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Archive dead letters in Postgres and remove them from Redis.
    Drain {
        #[arg(long)]
        queue: Option<String>,
        /// Only entries that failed at least this long ago (e.g. 7d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Show what would be drained, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

fn queue(name: Option<&str>) -> anyhow::Result<Option<Queue>> {
    name.map(|n| {
        Queue::parse(n).with_context(|| {
            let all: Vec<&str> = Queue::ALL.iter().map(|q| q.name()).collect();
            format!("unknown queue {n:?}; queues are {}", all.join(", "))
        })
    })
    .transpose()
}

pub async fn dlq(rt: &Runtime, cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List { queue: q, limit, error_contains, json } => {
            let f = Filter { queue: queue(q.as_deref())?, error_contains, failed_before: None };
            let found = dlq::find(&rt.queue, &f, limit).await.map_err(operator_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                print!("{}", table(&found));
            }
        }
        DlqCommand::Show { id, json } => {
            let d = dlq::get(&rt.queue, id).await.map_err(|e| match e {
                crate::Error::NotFound(_) => anyhow::anyhow!("no dead letter with id {id}"),
                e => operator_error(e),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "id:         {}\nqueue:      {}\nattempts:   {}\nfailed at:  {}\nconcerns:   {} {}\nlast error: {}\njob:        {}",
                    d.id,
                    d.queue,
                    d.attempts,
                    d.failed_at.to_rfc3339(),
                    d.object_type,
                    d.object_id,
                    d.last_error,
                    serde_json::to_string(&d.job)?
                );
            }
        }
        DlqCommand::Replay { ids, all, queue: q, error_contains, json } => {
            let targets = match (ids.is_empty(), all) {
                (false, false) => {
                    let mut found = Vec::new();
                    for id in &ids {
                        found.push(dlq::get(&rt.queue, *id).await.map_err(|e| match e {
                            crate::Error::NotFound(_) => anyhow::anyhow!("no dead letter with id {id}"),
                            e => operator_error(e),
                        })?);
                    }
                    found
                }
                (true, true) => {
                    let f = Filter { queue: queue(q.as_deref())?, error_contains, failed_before: None };
                    dlq::find(&rt.queue, &f, usize::MAX).await.map_err(operator_error)?
                }
                (false, true) => bail!("give ids or --all, not both"),
                (true, false) => bail!("give the ids to replay, or --all"),
            };
            let now = rt.clock.now().await.map_err(operator_error)?;
            let (mut replayed, mut superseded) = (Vec::new(), Vec::new());
            for d in &targets {
                match dlq::replay(&rt.pool, &rt.queue, d, now, rt.settings.lease_seconds)
                    .await
                    .map_err(operator_error)?
                {
                    dlq::Replayed::Requeued => replayed.push(d),
                    dlq::Replayed::Superseded => superseded.push(d),
                }
            }
            if json {
                let ids = |ds: &[&dlq::DeadLetter]| ds.iter().map(|d| d.id).collect::<Vec<Uuid>>();
                println!("{}", serde_json::json!({"replayed": ids(&replayed), "superseded": ids(&superseded)}));
            } else {
                println!("replayed {} dead letter(s)", replayed.len());
                for d in &replayed {
                    println!("  {}  {}  {} {}", d.id, d.queue, d.object_type, d.object_id);
                }
                if !superseded.is_empty() {
                    println!(
                        "removed {} superseded by a later attempt of their cycle (nothing charged)",
                        superseded.len()
                    );
                }
                for d in &superseded {
                    println!("  {}  {}  {} {}", d.id, d.queue, d.object_type, d.object_id);
                }
            }
        }
        DlqCommand::Drain { queue: q, older_than, dry_run, json } => {
            let failed_before =
                older_than.map(|d| chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or_default());
            let f = Filter { queue: queue(q.as_deref())?, error_contains: None, failed_before };
            let drained = dlq::drain(&rt.pool, &rt.queue, &f, dry_run).await.map_err(operator_error)?;
            if json {
                let ids: Vec<Uuid> = drained.iter().map(|d| d.id).collect();
                println!("{}", serde_json::json!({"drained": ids, "dryRun": dry_run}));
            } else {
                let verb = if dry_run { "would drain" } else { "drained (archived in dead_letter_archive)" };
                println!("{verb} {} dead letter(s)", drained.len());
                print!("{}", table(&drained));
            }
        }
    }
    Ok(())
}

pub async fn queues(rt: &Runtime, json: bool) -> anyhow::Result<()> {
    let all = stats::all(&rt.queue).await.map_err(operator_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!("{:<20} {:>9} {:>10} {:>8} {:>6} {:>8}", "QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD", "WORKERS");
    for s in all {
        println!(
            "{:<20} {:>9} {:>10} {:>8} {:>6} {:>8}",
            s.queue, s.pending, s.scheduled, s.running, s.dead, s.workers
        );
    }
    Ok(())
}

/// A dead-letter table: id, queue, attempts, failed at, object, last error.
pub fn table(rows: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<36}  {:<18}  {:>8}  {:<20}  {:<50}  {}\n",
        "ID", "QUEUE", "ATTEMPTS", "FAILED AT", "OBJECT", "LAST ERROR"
    );
    for d in rows {
        let error: String = d.last_error.chars().take(60).collect();
        out.push_str(&format!(
            "{:<36}  {:<18}  {:>8}  {:<20}  {:<50}  {}\n",
            d.id,
            d.queue,
            d.attempts,
            d.failed_at.format("%Y-%m-%d %H:%M:%S"),
            format!("{} {}", d.object_type, d.object_id),
            error
        ));
    }
    if rows.is_empty() {
        out.push_str("(no dead letters)\n");
    }
    out
}

/// `recur migrate`.
pub async fn migrate(s: &Settings) -> anyhow::Result<()> {
    let pool = crate::db::connect(&s.database_url, 2).await?;
    crate::db::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

/// `recur merchant create`: prints the new merchant's credentials as JSON.
pub async fn create_merchant(s: &Settings, name: &str, sandbox: bool) -> anyhow::Result<()> {
    let pool = crate::db::connect(&s.database_url, 2).await?;
    if !s.no_migrate {
        crate::db::migrate(&pool).await?;
    }
    let creds = crate::merchants::create(&pool, name, sandbox).await.map_err(operator_error)?;
    println!("{}", serde_json::to_string_pretty(&creds)?);
    Ok(())
}

/// `recur bench ARGS`: the benchmark lives in its own binary, `recur-bench`, next to
/// this one; run it in this process's place so signals and the exit status are its own.
pub fn bench(redis_url: Option<&str>, args: Vec<OsString>, signals: &Signals) -> anyhow::Result<ExitCode> {
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
    if let Some(sig) = signals.pending() {
        return Ok(ExitCode::from(sig.exit_code()));
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
