//! Baselines measured in the same run on the same Postgres.

use std::time::{Duration, Instant};

use sqlx::Connection;
use uuid::Uuid;

use crate::scenario::BenchDb;

/// pgbench TPC-B (scale 16) for `secs` with `clients` connections; tps.
pub async fn pgbench(pg: &str, clients: u32, secs: u64) -> anyhow::Result<f64> {
    let db = BenchDb::create(pg, "pgbench").await?;
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let init = std::process::Command::new("pgbench").args(["-i", "-q", "-s", "16", &url]).output()?;
        anyhow::ensure!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        let run = std::process::Command::new("pgbench")
            .args(["-c", &clients.to_string(), "-j", "2", "-T", &secs.to_string(), &url])
            .output()?;
        anyhow::ensure!(run.status.success(), "pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
        Ok(String::from_utf8_lossy(&run.stdout).into_owned())
    })
    .await??;
    db.drop_db().await;
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps line in pgbench output (is postgresql-contrib installed?)"))
}

/// One charge's writes with no queue: INSERT cycle + INSERT transaction + UPDATE
/// subscription in one transaction, from `clients` connections; charges/s.
pub async fn sql_loop(pg: &str, clients: u32, secs: u64) -> anyhow::Result<f64> {
    let db = BenchDb::create(pg, "sqlloop").await?;
    let (merchant, subs) = db.seed(10_000, "2100-01-01T00:00:00Z".parse()?, "pm_sandbox_ok").await?;
    let subs = std::sync::Arc::new(subs);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients as usize {
        let (url, subs) = (db.url.clone(), subs.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let mut n = 0u64;
            let mut i = c;
            while Instant::now() < deadline {
                let sub = subs[i % subs.len()];
                i += clients as usize;
                let mut tx = conn.begin().await?;
                let seq: i32 = sqlx::query_scalar("SELECT next_sequence FROM subscriptions WHERE id = $1 FOR UPDATE")
                    .bind(sub)
                    .fetch_one(&mut *tx)
                    .await?;
                let (cycle, txn) = (Uuid::now_v7(), Uuid::now_v7());
                sqlx::query(
                    "INSERT INTO billing_cycles (id, merchant_id, subscription_id, sequence, period_start, period_end, due_at, amount, currency, status, attempts)
                     VALUES ($1, $2, $3, $4, now(), now() + interval '1 month', now(), 9.99, 'EUR', 'succeeded', 1)",
                )
                .bind(cycle).bind(merchant).bind(sub).bind(seq)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO transactions (id, merchant_id, billing_cycle_id, kind, amount, currency, payment_method, idempotency_key, attempt, status, settled_at)
                     VALUES ($1, $2, $3, 'scheduled', 9.99, 'EUR', 'pm_sandbox_ok', $4, 1, 'succeeded', now())",
                )
                .bind(txn).bind(merchant).bind(cycle).bind(format!("k{txn}"))
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE subscriptions SET next_sequence = next_sequence + 1, next_charge_at = next_charge_at + interval '1 month' WHERE id = $1")
                    .bind(sub)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64().max(secs as f64);
    db.drop_db().await;
    Ok(total as f64 / elapsed)
}
