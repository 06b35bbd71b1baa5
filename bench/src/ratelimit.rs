//! `--only rate-limits`: fair use under a flood (docs/operations.md#rate-limits). One
//! `recur api` process with the default limits (writes 100/s, burst 200); a
//! well-behaved merchant creates plans at half its write limit, alone and then while
//! a second merchant floods the same API at ten times its limit. What counts is the
//! well-behaved merchant's latency and success rate in both phases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::BenchArgs;
use crate::procs;
use crate::scenario::BenchDb;

/// The default write limit the scenario runs against (`RECUR_RATE_LIMIT_WRITES`).
pub const WRITE_LIMIT_PER_S: u32 = 100;

#[derive(Debug, Clone, Default)]
pub struct RateLimitResult {
    pub calm_alone: Phase,
    pub calm_flooded: Phase,
    /// The flooding merchant's answers per second during the flood.
    pub flood_sent_per_s: f64,
    pub flood_served_per_s: f64,
    pub flood_refused_per_s: f64,
    pub flood_other: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub sent: u64,
    pub ok: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Phase {
    pub fn success_pct(&self) -> f64 {
        100.0 * self.ok as f64 / self.sent.max(1) as f64
    }
}

struct Creds {
    key: Uuid,
    secret: String,
}

fn plan_body(i: u64) -> String {
    format!(r#"{{"name":"bench {i}","amount":"9.99","currency":"EUR","interval":{{"unit":"month","count":1}}}}"#)
}

async fn post(client: &reqwest::Client, base: &str, m: &Creds, i: u64) -> (u16, f64) {
    let start = Instant::now();
    let res = client
        .post(format!("{base}/v1/plans"))
        .basic_auth(m.key, Some(&m.secret))
        .header("X-API-KEY", m.key.to_string())
        .header("content-type", "application/json")
        .body(plan_body(i))
        .send()
        .await;
    let status = match res {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    };
    (status, start.elapsed().as_secs_f64() * 1000.0)
}

/// `per_s` requests a second, open loop (a slow answer does not delay the next
/// request), for `for_`; at most `in_flight` at once. Each answer's status and latency.
async fn paced(
    client: reqwest::Client,
    base: Arc<str>,
    m: Arc<Creds>,
    per_s: u32,
    for_: Duration,
    in_flight: usize,
) -> Vec<(u16, f64)> {
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_s);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while start.elapsed() < for_ {
        tick.tick().await;
        i += 1;
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let (client, base, m) = (client.clone(), base.clone(), m.clone());
        tasks.push(tokio::spawn(async move {
            let r = post(&client, &base, &m, i).await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn phase(answers: &[(u16, f64)]) -> Phase {
    let mut ms: Vec<f64> = answers.iter().map(|a| a.1).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    Phase {
        sent: answers.len() as u64,
        ok: answers.iter().filter(|a| a.0 == 201).count() as u64,
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
    }
}

pub async fn run(recur: &std::path::Path, args: &BenchArgs, redis_url: &str) -> anyhow::Result<RateLimitResult> {
    let db = BenchDb::create(&args.pg, "ratelimit").await?;
    let creds = async |name: &str| -> anyhow::Result<Creds> {
        let c = recur::merchants::create(&db.pool, name, true).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Creds { key: c.merchant_key, secret: c.secret })
    };
    let calm = Arc::new(creds("calm").await?);
    let flooder = Arc::new(creds("flooding").await?);
    let ns = format!("bench-{}", Uuid::now_v7().simple());
    let port = procs::free_port();
    let env = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        ("RECUR_REDIS_NAMESPACE".to_owned(), ns.clone()),
        ("RECUR_DB_POOL".to_owned(), args.clients.to_string()),
        ("RECUR_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        ("RECUR_NO_MIGRATE".to_owned(), "true".to_owned()),
        ("RECUR_RATE_LIMIT_WRITES".to_owned(), format!("{WRITE_LIMIT_PER_S}/s:{}", 2 * WRITE_LIMIT_PER_S)),
        ("RECUR_LOG".to_owned(), std::env::var("RECUR_LOG").unwrap_or_else(|_| "warn".into())),
    ];
    let mut api = procs::spawn_on(recur, "api", &env, port, "/readyz")?;
    api.ready().await?;
    let base: Arc<str> = Arc::from(format!("http://127.0.0.1:{port}"));
    let for_ = Duration::from_secs(args.rate_limit_secs);
    let calm_rate = WRITE_LIMIT_PER_S / 2;
    let flood_rate = WRITE_LIMIT_PER_S * 10;
    // Each merchant is a client of its own (its own connections).
    let calm_client = reqwest::Client::new();
    let flood_client = reqwest::Client::new();
    // Warm-up: connections and the authentication cache, not measured.
    paced(calm_client.clone(), base.clone(), calm.clone(), calm_rate, Duration::from_secs(1), 64).await;

    let alone = paced(calm_client.clone(), base.clone(), calm.clone(), calm_rate, for_, 64).await;
    // The flood's bucket starts full: let the calm phase begin once it is spent.
    let flood = tokio::spawn(paced(flood_client, base.clone(), flooder.clone(), flood_rate, for_, 512));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flooded =
        paced(calm_client, base.clone(), calm.clone(), calm_rate, for_ - Duration::from_millis(500), 64).await;
    let flood = flood.await?;
    api.stop();
    db.drop_db().await;
    clear_namespace(redis_url, &ns).await;

    let secs = for_.as_secs_f64();
    let count = |s: u16| flood.iter().filter(|a| a.0 == s).count() as f64;
    Ok(RateLimitResult {
        calm_alone: phase(&alone),
        calm_flooded: phase(&flooded),
        flood_sent_per_s: flood.len() as f64 / secs,
        flood_served_per_s: count(201) / secs,
        flood_refused_per_s: count(429) / secs,
        flood_other: flood.iter().filter(|a| a.0 != 201 && a.0 != 429).count() as u64,
    })
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
