//! The lock order under contention (docs/lock-order.md): a merchant's cancel, pause or
//! manual retry, or an operator's DLQ replay, racing the recording of a charge of the
//! same cycle. A third connection holds the subscription row while both writers start,
//! so they are queued on it at the same moment; then it lets go. Each pair runs in both
//! queue orders, several times. With the writers taking rows parent first, both finish:
//! no deadlock, no 5xx, and the rows end in a state one of the two serial orders gives.

use std::time::Duration;

use recur::billing::charge::{Settlement, load_batch, record_batch};
use recur::billing::dunning::Settled;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, spawn_app, wait_for};

/// A subscription due now whose cycle 1 is open with its charge pending (no worker
/// runs: the test records the charge itself). Returns (subscription, cycle, charge).
async fn pending_charge(app: &TestApp, n: usize) -> (Uuid, Uuid, Uuid) {
    let s = app
        .subscription(json!({"customer": {"customerAccountId": format!("race-{n}")}, "amount": "9.00",
            "currency": "EUR", "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid: Uuid = s["id"].as_str().unwrap().parse().unwrap();
    let jobs = recur::billing::generate::generate_batch(app.pool(), &app.rt.clock, vec![(sid, 1)], 30).await.unwrap();
    let Some(Some(jobs::Job::ChargeTransaction(c))) = jobs.into_iter().next() else { panic!("cycle 1 not opened") };
    let cycle: Uuid = sqlx::query_scalar("SELECT billing_cycle_id FROM transactions WHERE id = $1")
        .bind(c.transaction_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    (sid, cycle, c.transaction_id)
}

/// Connections of this test's database waiting on a row lock.
async fn waiting_on_locks(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        .await
}

type Writer = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// Hold the subscription row, start `first`, wait until it queues on the row, start
/// `second`, wait until it queues too, then let go and return both results.
async fn race(app: &TestApp, sub: Uuid, first: Writer, second: Writer) -> (String, String) {
    let mut hold = app.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM subscriptions WHERE id = $1 FOR UPDATE").bind(sub).execute(&mut *hold).await.unwrap();
    let a = tokio::spawn(first);
    wait_for("the first writer to queue on the subscription", 10, || async { waiting_on_locks(app).await >= 1 }).await;
    let b = tokio::spawn(second);
    wait_for("the second writer to queue on the subscription", 10, || async { waiting_on_locks(app).await >= 2 }).await;
    hold.commit().await.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(20), async { (a.await.unwrap(), b.await.unwrap()) })
        .await
        .expect("both writers finish");
    (a, b)
}

/// Record the charge's outcome as a worker would; "ok" or the error.
fn record(app: &TestApp, txn: Uuid, outcome: Settled) -> Writer {
    let pool = app.pool().clone();
    let clock = app.rt.clock.clone();
    Box::pin(async move {
        let ctx = load_batch(&pool, vec![txn]).await.unwrap().pop().flatten().unwrap();
        let at = clock.now().await.unwrap();
        match record_batch(&pool, vec![Settlement { ctx, outcome, at }]).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("record failed: {e:#}"),
        }
    })
}

/// A request as the merchant (or the operator); its status code as text.
fn call(rb: reqwest::RequestBuilder, body: Value) -> Writer {
    Box::pin(async move {
        let r = rb.json(&body).send().await.unwrap();
        r.status().as_u16().to_string()
    })
}

fn approved() -> Settled {
    Settled::Approved { reference: format!("race-{}", Uuid::now_v7()) }
}

async fn status_of(app: &TestApp, table: &str, id: Uuid) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT status::text FROM {table} WHERE id = $1")))
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_a_recorded_charge_never_deadlocks() {
    let app = spawn_app().await;
    for n in 0..2 * ROUNDS {
        let (sub, cycle, txn) = pending_charge(&app, n).await;
        let cancel = call(app.request(Method::POST, &format!("/v1/subscriptions/{sub}/cancel")), json!({}));
        let rec = record(&app, txn, approved());
        let (a, b) = if n % 2 == 0 { race(&app, sub, cancel, rec).await } else { race(&app, sub, rec, cancel).await };
        let (cancelled, recorded) = if n % 2 == 0 { (a, b) } else { (b, a) };
        assert_eq!((cancelled.as_str(), recorded.as_str()), ("200", "ok"), "round {n}");
        // An approval is recorded on a cycle cancelled meanwhile: the money moved.
        assert_eq!(status_of(&app, "transactions", txn).await, "succeeded", "round {n}");
        assert_eq!(status_of(&app, "billing_cycles", cycle).await, "succeeded", "round {n}");
        assert_eq!(status_of(&app, "subscriptions", sub).await, "cancelled", "round {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_racing_a_recorded_charge_never_deadlocks() {
    let app = spawn_app().await;
    for n in 0..2 * ROUNDS {
        let (sub, cycle, txn) = pending_charge(&app, n).await;
        let pause = call(app.request(Method::POST, &format!("/v1/subscriptions/{sub}/pause")), json!({}));
        let rec = record(&app, txn, approved());
        let (a, b) = if n % 2 == 0 { race(&app, sub, pause, rec).await } else { race(&app, sub, rec, pause).await };
        let (paused, recorded) = if n % 2 == 0 { (a, b) } else { (b, a) };
        assert_eq!((paused.as_str(), recorded.as_str()), ("200", "ok"), "round {n}");
        assert_eq!(status_of(&app, "billing_cycles", cycle).await, "succeeded", "round {n}");
        assert_eq!(status_of(&app, "subscriptions", sub).await, "paused", "round {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_retry_racing_a_recorded_decline_never_deadlocks() {
    let app = spawn_app().await;
    for n in 0..2 * ROUNDS {
        let (sub, cycle, txn) = pending_charge(&app, n).await;
        let retry = call(app.request(Method::POST, &format!("/v1/billing-cycles/{cycle}/retry")), json!({}));
        let hard = Settled::Declined { code: "expired_card".into(), soft: false, network: None };
        let rec = record(&app, txn, hard);
        let (a, b) = if n % 2 == 0 { race(&app, sub, retry, rec).await } else { race(&app, sub, rec, retry).await };
        let (retried, recorded) = if n % 2 == 0 { (a, b) } else { (b, a) };
        assert_eq!(recorded, "ok", "round {n}");
        // Before the decline the cycle is pending (409); after it, failed and retried (202).
        let attempts =
            app.count(&format!("SELECT count(*) FROM transactions WHERE billing_cycle_id = '{cycle}'")).await;
        match retried.as_str() {
            "409" => {
                assert_eq!(attempts, 1, "round {n}");
                assert_eq!(status_of(&app, "billing_cycles", cycle).await, "failed", "round {n}");
            }
            "202" => {
                assert_eq!(attempts, 2, "round {n}");
                assert_eq!(status_of(&app, "billing_cycles", cycle).await, "retrying", "round {n}");
            }
            other => panic!("round {n}: manual retry answered {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dlq_replay_racing_a_recorded_charge_never_deadlocks() {
    let app = spawn_app().await;
    for n in 0..2 * ROUNDS {
        // The charge's job was dead-lettered but the worker that marks it `error` died
        // first: the transaction is still pending and a redelivery is recording it.
        let (sub, cycle, txn) = pending_charge(&app, n).await;
        let job = jobs::Job::ChargeTransaction(jobs::ChargeTransaction { transaction_id: txn, attempt: 0 });
        let dead = recur::dlq::DeadLetter::new(job, 8, "gateway: gateway timeout");
        recur::dlq::put(&app.rt.queue, &dead).await.unwrap();
        let replay = call(app.admin(Method::POST, "/admin/dlq/replay"), json!({"ids": [dead.id]}));
        let rec = record(&app, txn, approved());
        let (a, b) = if n % 2 == 0 { race(&app, sub, replay, rec).await } else { race(&app, sub, rec, replay).await };
        let (replayed, recorded) = if n % 2 == 0 { (a, b) } else { (b, a) };
        assert_eq!((replayed.as_str(), recorded.as_str()), ("200", "ok"), "round {n}");
        assert_eq!(status_of(&app, "transactions", txn).await, "succeeded", "round {n}");
        assert_eq!(status_of(&app, "billing_cycles", cycle).await, "succeeded", "round {n}");
        let charged = format!("SELECT count(*) FROM events WHERE object_id = '{txn}' AND type = 'charge_succeeded'");
        assert_eq!(app.count(&charged).await, 1, "round {n}");
    }
}
