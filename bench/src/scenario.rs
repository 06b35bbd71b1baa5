//! The measured scenarios: a surge of due charges (also with gateway latency, and
//! over the `http` gateway against `recur acquirer`), and a large store with a small
//! due set (scale).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::BenchArgs;
use crate::acquirer::Acquirer;
use crate::procs::{self, Proc};

/// A database of its own for one measurement, dropped afterwards.
pub struct BenchDb {
    pub url: String,
    pub name: String,
    pub pg: String,
    pub pool: PgPool,
}

impl BenchDb {
    pub async fn create(pg: &str, tag: &str) -> anyhow::Result<BenchDb> {
        let name = format!("recur_bench_{tag}_{}", Uuid::now_v7().simple());
        let url = format!("{pg}/{name}");
        let pool = recur::db::connect(&url, 20).await?;
        recur::db::migrate(&pool).await?;
        Ok(BenchDb { url, name, pg: pg.to_owned(), pool })
    }

    /// `n` active monthly subscriptions (one customer each) due at `due`.
    pub async fn seed(&self, n: i64, due: DateTime<Utc>, payment_method: &str) -> anyhow::Result<(Uuid, Vec<Uuid>)> {
        let merchant =
            recur::merchants::create(&self.pool, "bench", true).await.map_err(|e| anyhow::anyhow!("{e}"))?.merchant_id;
        self.seed_more(merchant, n, due, payment_method).await?;
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM subscriptions LIMIT 100000").fetch_all(&self.pool).await?;
        Ok((merchant, ids))
    }

    pub async fn seed_more(&self, merchant: Uuid, n: i64, due: DateTime<Utc>, pm: &str) -> anyhow::Result<()> {
        let mut done = 0;
        while done < n {
            let chunk = (n - done).min(250_000);
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "CREATE TEMP TABLE seed ON COMMIT DROP AS
                 SELECT gen_random_uuid() AS cust, gen_random_uuid() AS sub FROM generate_series(1, $1)",
            )
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO customers (id, merchant_id, customer_account_id) SELECT cust, $1, 'bench-' || sub FROM seed")
                .bind(merchant)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO subscriptions (id, merchant_id, customer_id, amount, currency, interval_unit, interval_count,
                    retry_schedule_hours, start_at, payment_method, status, anchor_at, anchor_sequence, next_sequence, next_charge_at)
                 SELECT sub, $1, cust, 9.99, 'EUR', 'month', 1, '{24,72,120}', $2, $3, 'active', $2, 1, 1, $2 FROM seed",
            )
            .bind(merchant)
            .bind(due)
            .bind(pm)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            done += chunk;
        }
        // Only what was seeded: an ANALYZE of the still-empty charge tables would record
        // them as empty, and plans cached from that (FK checks included) would scan.
        sqlx::query("ANALYZE customers, subscriptions").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{}/postgres", self.pg)).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
                .execute(&mut c)
                .await;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SurgeResult {
    pub elapsed_s: f64,
    pub charges_per_s: f64,
    pub lag_p50: f64,
    pub lag_p95: f64,
    pub lag_p99: f64,
    /// (role, peak RSS MB, CPU seconds)
    pub procs: Vec<(String, f64, f64)>,
    /// The whole machine's CPU seconds while the surge ran: busy, idle.
    pub machine: (f64, f64),
    /// Concurrency bound: in-flight ÷ latency (0 without latency).
    pub bound: f64,
    /// With a webhook endpoint: what its receiver got.
    pub webhooks: Option<WebhookFigures>,
    /// Over the `http` gateway: what the acquirer saw.
    pub http: Option<HttpFigures>,
}

#[derive(Debug, Clone, Default)]
pub struct HttpFigures {
    /// TCP connections the acquirer accepted from recur's processes.
    pub connections: u64,
    /// Mean time the acquirer took to answer a charge (s).
    pub answer_mean_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct WebhookFigures {
    pub delivered: i64,
    /// Deliveries per second from the first event to the last delivery.
    pub per_s: f64,
    /// Event committed → delivered.
    pub lag_p50: f64,
    pub lag_p99: f64,
    /// Last delivery after the last charge's event.
    pub behind_last_charge: f64,
    pub refused: u64,
}

fn env(db: &BenchDb, redis_url: &str, ns: &str, latency_ms: u64, clients: u32) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), db.url.clone()),
        ("REDIS_URL".into(), redis_url.into()),
        ("RECUR_REDIS_NAMESPACE".into(), ns.into()),
        ("RECUR_SANDBOX_LATENCY_MS".into(), latency_ms.to_string()),
        ("RECUR_DB_POOL".into(), clients.to_string()),
        ("RECUR_CLOCK".into(), "system".into()),
        ("RECUR_WEBHOOK_ALLOW_PRIVATE".into(), "1".into()),
        ("RECUR_LOG".into(), std::env::var("RECUR_LOG").unwrap_or_else(|_| "warn".into())),
    ]
}

async fn wait_settled(pool: &PgPool, n: i64, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'")
            .fetch_one(pool)
            .await?;
        if done >= n {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < timeout, "only {done} of {n} charges settled within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lag(pool: &PgPool) -> anyhow::Result<(f64, f64, f64)> {
    let v: Vec<f64> = sqlx::query_scalar(
        "SELECT unnest(percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
            (ORDER BY extract(epoch FROM first_attempt_at - due_at)))::float8 FROM billing_cycles",
    )
    .fetch_all(pool)
    .await?;
    Ok((v.first().copied().unwrap_or(0.0), v.get(1).copied().unwrap_or(0.0), v.get(2).copied().unwrap_or(0.0)))
}

async fn clear_namespace(redis_url: &str, ns: &str) {
    if let Ok(mut conn) = recur::queue::connect(redis_url).await {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{ns}:*")).query_async(&mut conn).await.unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await;
        }
    }
}

/// How a surge runs besides its size: gateway latency, charge concurrency per worker,
/// a webhook endpoint (with its receiver) on the cycles' outcomes, and the gateway:
/// the in-process sandbox, or `http` against a `recur acquirer` process with this cap
/// on the calls in flight per process.
#[derive(Default, Clone, Copy)]
pub struct Shape<'a> {
    pub latency_ms: u64,
    pub concurrency: Option<usize>,
    pub hook: Option<&'a crate::receiver::Receiver>,
    pub http_in_flight: Option<usize>,
}

/// `n` subscriptions all due at one instant; W worker processes and a scheduler.
pub async fn surge(
    recur: &std::path::Path,
    args: &BenchArgs,
    redis_url: &str,
    n: i64,
    workers: usize,
    shape: Shape<'_>,
) -> anyhow::Result<SurgeResult> {
    let Shape { latency_ms, concurrency, hook, http_in_flight } = shape;
    let acquirer = match http_in_flight {
        Some(_) => Some(Acquirer::start(recur, &args.pg, latency_ms).await?),
        None => None,
    };
    let db = BenchDb::create(&args.pg, "surge").await?;
    let far: DateTime<Utc> = "2100-01-01T00:00:00Z".parse()?;
    // Tokens the gateway approves (docs/gateway-protocol.md#tokens for the acquirer's).
    let token = if acquirer.is_some() { "pm_ok" } else { "pm_sandbox_ok" };
    let (merchant, _) = db.seed(n, far, token).await?;
    if let Some(r) = hook {
        let req = recur::webhooks::endpoints::CreateEndpoint {
            url: r.url.clone(),
            event_types: Some(vec!["billing_cycle.succeeded".into(), "billing_cycle.failed".into()]),
            description: None,
            metadata: None,
        };
        let mut tx = db.pool.begin().await?;
        let e = recur::webhooks::endpoints::create(&mut tx, merchant, true, req)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
        let _ = r.counts.secret.set(e.secret.clone());
    }
    let ns = format!("bench-{}", Uuid::now_v7().simple());
    let sandbox_latency_ms = if acquirer.is_some() { 0 } else { latency_ms };
    let mut env = env(&db, redis_url, &ns, sandbox_latency_ms, args.clients);
    if let Some(c) = concurrency {
        env.push(("RECUR_CONCURRENCY".into(), c.to_string()));
    }
    if let (Some(a), Some(cap)) = (&acquirer, http_in_flight) {
        env.extend(a.gateway_env(cap, args.h2c));
    }
    let mut procs: Vec<Proc> = Vec::new();
    for _ in 0..workers {
        procs.push(procs::spawn(recur, "worker", &env)?);
    }
    procs.push(procs::spawn(recur, "scheduler", &env)?);
    for p in &procs {
        p.ready().await?;
    }
    let before = match &acquirer {
        Some(a) => a.scrape().await.0,
        None => 0,
    };
    // Everything becomes due at one instant, a moment from now.
    let due = recur::clock::truncate(Utc::now() + chrono::Duration::milliseconds(1500));
    sqlx::query("UPDATE subscriptions SET next_charge_at = $1").bind(due).execute(&db.pool).await?;
    let wait = (due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let start = Instant::now();
    let cpu_before = procs::machine_cpu();
    wait_settled(&db.pool, n, Duration::from_secs(1800)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = procs::machine_cpu();
    let machine = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let (p50, p95, p99) = lag(&db.pool).await?;
    let webhooks = match hook {
        Some(r) => Some(webhook_figures(&db.pool, n, r).await?),
        None => None,
    };
    let http = match &acquirer {
        Some(a) => {
            // Both scrapes' own connections are counted: the second one's is taken off.
            let (after, answer_mean_s) = a.scrape().await;
            Some(HttpFigures { connections: after.saturating_sub(before + 1), answer_mean_s })
        }
        None => None,
    };
    let usage = procs.iter().chain(acquirer.as_ref().map(|a| &a.proc)).map(|p| {
        let (rss, cpu) = p.usage();
        (p.role.clone(), rss, cpu)
    });
    let usage: Vec<_> = usage.collect();
    for p in &mut procs {
        p.stop();
    }
    if let Some(a) = acquirer {
        a.stop().await;
    }
    let per_worker = concurrency.unwrap_or(jobs::Queue::ChargeTransaction.policy().concurrency);
    let in_flight = workers as f64 * per_worker as f64;
    let bound = if latency_ms > 0 { in_flight / (latency_ms as f64 / 1000.0) } else { 0.0 };
    db.drop_db().await;
    clear_namespace(redis_url, &ns).await;
    Ok(SurgeResult {
        elapsed_s: elapsed,
        charges_per_s: n as f64 / elapsed,
        lag_p50: p50,
        lag_p95: p95,
        lag_p99: p99,
        procs: usage,
        machine,
        bound,
        webhooks,
        http,
    })
}

/// Wait for every `billing_cycle.succeeded` delivery, then its figures.
async fn webhook_figures(pool: &PgPool, n: i64, r: &crate::receiver::Receiver) -> anyhow::Result<WebhookFigures> {
    let start = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
            .fetch_one(pool)
            .await?;
        if done >= n {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(900), "only {done} of {n} webhooks delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row: (f64, f64, f64, f64, i64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - event_at))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - event_at))::float8,
                extract(epoch FROM max(delivered_at) - min(event_at))::float8,
                extract(epoch FROM max(delivered_at) - max(event_at))::float8,
                count(*)
         FROM webhook_deliveries WHERE status = 'succeeded'",
    )
    .fetch_one(pool)
    .await?;
    Ok(WebhookFigures {
        delivered: row.4,
        per_s: row.4 as f64 / row.2.max(1e-9),
        lag_p50: row.0,
        lag_p99: row.1,
        behind_last_charge: row.3,
        refused: r.counts.refused.load(std::sync::atomic::Ordering::Relaxed),
    })
}

#[derive(Debug, Clone, Default)]
pub struct ScaleResult {
    /// Mean scheduler sweep while the due set is processed and while idle (ms).
    pub sweep_ms: f64,
    pub idle_sweep_ms: f64,
    pub lag_p99: f64,
    pub elapsed_s: f64,
}

fn histogram_mean(metrics: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}

/// A large store with a small due set: the sweep must cost what is due, not what is stored.
pub async fn scale(recur: &std::path::Path, args: &BenchArgs, redis_url: &str) -> anyhow::Result<ScaleResult> {
    let db = BenchDb::create(&args.pg, "scale").await?;
    let far: DateTime<Utc> = "2100-01-01T00:00:00Z".parse()?;
    let (merchant, _) = db.seed(args.scale_total - args.scale_due, far, "pm_sandbox_ok").await?;
    // The due set is marked by an earlier (still future) date, then made due at once.
    let marked: DateTime<Utc> = "2098-01-01T00:00:00Z".parse()?;
    db.seed_more(merchant, args.scale_due, marked, "pm_sandbox_ok").await?;
    let ns = format!("bench-{}", Uuid::now_v7().simple());
    let env = env(&db, redis_url, &ns, 0, args.clients);
    let mut worker = procs::spawn(recur, "worker", &env)?;
    let mut scheduler = procs::spawn(recur, "scheduler", &env)?;
    worker.ready().await?;
    scheduler.ready().await?;
    // Idle sweeps over the whole store first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s0, c0) = histogram_mean(&scheduler.metrics().await, "recur_scheduler_sweep_duration_seconds");
    // The due set falls due over a window (not at one instant: that is the surge
    // scenario), so the lag measured is the scheduler's, not a backlog's.
    let due = recur::clock::truncate(Utc::now() + chrono::Duration::milliseconds(1000));
    sqlx::query(
        "UPDATE subscriptions SET next_charge_at = date_trunc('milliseconds', $1 + random() * make_interval(secs => $2))
         WHERE next_charge_at < '2099-01-01'",
    )
    .bind(due)
    .bind(args.scale_window_secs as f64)
    .execute(&db.pool)
    .await?;
    tokio::time::sleep((due - Utc::now()).to_std().unwrap_or_default()).await;
    let start = Instant::now();
    wait_settled(&db.pool, args.scale_due, Duration::from_secs(600)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let (s1, c1) = histogram_mean(&scheduler.metrics().await, "recur_scheduler_sweep_duration_seconds");
    let (p50, p95, p99) = lag(&db.pool).await?;
    let late: Vec<(f64, i64)> = sqlx::query_as(
        "SELECT width_bucket(extract(epoch FROM first_attempt_at - due_at)::float8, 0, 2, 8)::float8 * 0.25, count(*)
         FROM billing_cycles GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await?;
    let split: Vec<f64> = sqlx::query_scalar(
        "SELECT unnest(ARRAY[
            percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - due_at)),
            percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - due_at)),
            percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_attempt_at - created_at)),
            percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM first_attempt_at - created_at))])::float8
         FROM billing_cycles",
    )
    .fetch_all(&db.pool)
    .await?;
    eprintln!(
        "scale lag p50 {p50:.3}s p95 {p95:.3}s p99 {p99:.3}s; histogram (upper bound s, count): {late:?}; due→created p50/p99, created→attempt p50/p99: {split:?}"
    );
    worker.stop();
    scheduler.stop();
    db.drop_db().await;
    clear_namespace(redis_url, &ns).await;
    let mean = |s: f64, c: f64| if c > 0.0 { s / c * 1000.0 } else { 0.0 };
    Ok(ScaleResult { sweep_ms: mean(s1 - s0, c1 - c0), idle_sweep_ms: mean(s0, c0), lag_p99: p99, elapsed_s: elapsed })
}
