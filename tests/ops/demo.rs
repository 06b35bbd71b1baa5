//! The README's first command, `recur all --demo`: it starts the whole engine, makes a
//! sandbox merchant and a subscription due at once, and shows the charge going through
//! (README "Quick start"). Checked on what it prints and on the Postgres rows.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Child, free_port, spawn_app};

#[tokio::test]
async fn the_demo_charges_its_subscription_within_seconds() {
    let app = spawn_app().await;
    let (api, metrics) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.args(["all", "--demo"])
        .envs(app.child_env())
        .env("RECUR_LISTEN", format!("127.0.0.1:{api}"))
        .env("RECUR_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Child(cmd.spawn().expect("recur binary starts"));
    let stdout = child.0.stdout.take().unwrap();
    // Read its lines on a thread until the charge is told (or a minute passes).
    let told = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("demo charge:") || Instant::now() > deadline {
                return (Some(line), printed);
            }
        }
        (None, printed)
    });
    let (line, printed) = tokio::time::timeout(Duration::from_secs(90), told).await.expect("output").unwrap();
    let line = line.unwrap_or_else(|| panic!("no charge told; the demo printed:\n{printed}"));
    assert!(printed.contains(&format!("recur is running on http://127.0.0.1:{api}")), "{printed}");
    assert!(line.contains(": succeeded EUR 9.99 (gateway reference sbx_"), "{line}");

    // What it printed is what Postgres holds: the demo merchant's subscription has its
    // first cycle succeeded, with one approved charge and one sandbox ledger entry.
    let (status, approved, ledger): (String, i64, i64) = sqlx::query_as(
        "SELECT c.status::text,
                (SELECT count(*) FROM transactions t WHERE t.billing_cycle_id = c.id AND t.status = 'succeeded'),
                (SELECT count(*) FROM sandbox_charges s JOIN transactions t ON t.idempotency_key = s.idempotency_key
                  WHERE t.billing_cycle_id = c.id)
         FROM billing_cycles c JOIN subscriptions s ON s.id = c.subscription_id
         JOIN merchants m ON m.id = s.merchant_id
         WHERE m.name = 'demo' AND s.description = 'recur demo subscription' AND c.sequence = 1",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), approved, ledger), ("succeeded", 1, 1));
    child.sigterm();
    let exit = child.wait_exit(Duration::from_secs(30)).expect("the demo stops on SIGTERM");
    assert_eq!(exit.code(), Some(0));
}
