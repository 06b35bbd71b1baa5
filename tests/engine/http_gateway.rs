//! The `http` gateway against a real `recur acquirer` (docs/gateway-protocol.md),
//! started in-process on loopback over a fresh database per test: charges through a
//! worker, declines, lost responses, the breaker, the concurrency cap, and errors
//! that never quote the secret. The fault run is in gateway_fault_run.rs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use recur::acquirer::{AcquirerArgs, Simulator};
use recur::gateway::http::{HttpGateway, HttpGatewayOptions};
use recur::gateway::{ChargeOutcome, ChargeRequest, Gateway, GatewayError};
use recur::webhooks::signing;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::support::{DatabaseGuard, EngineOpts, TestApp, eventually, pg_base, spawn_app};

/// One simulator over its own database, dropped with the test.
struct Acquirer {
    sim: Option<Simulator>,
    args: AcquirerArgs,
    addr: SocketAddr,
    secret: String,
    pool: sqlx::PgPool,
    _cleanup: DatabaseGuard,
}

async fn acquirer(tweak: impl FnOnce(&mut AcquirerArgs)) -> Acquirer {
    let name = format!("recur_acquirer_test_{}", Uuid::now_v7().simple());
    let url = format!("{}/{name}", pg_base());
    let cleanup = DatabaseGuard { name };
    let mut args = AcquirerArgs::new(&url);
    args.listen = "127.0.0.1:0".parse().unwrap();
    args.secret = Some(signing::new_secret());
    tweak(&mut args);
    let sim = Simulator::start(&args).await.expect("the simulator starts");
    // A restart binds the same port, so the gateway's URL stays right.
    args.listen = sim.addr;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    Acquirer { addr: sim.addr, secret: sim.secret.clone(), sim: Some(sim), args, pool, _cleanup: cleanup }
}

impl Acquirer {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn gateway(&self, opts: HttpGatewayOptions) -> HttpGateway {
        HttpGateway::new(&self.url(), &self.secret, opts).expect("the gateway builds")
    }

    async fn stop(&mut self) {
        self.sim.take().expect("running").stop().await.unwrap();
    }

    async fn restart(&mut self) {
        self.sim = Some(Simulator::start(&self.args).await.expect("the simulator restarts"));
    }

    /// Rows of the acquirer's ledger for a key.
    async fn charged(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM acquirer_charges WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn ledger_size(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM acquirer_charges").fetch_one(&self.pool).await.unwrap()
    }
}

pub(crate) fn opts(
    timeout_ms: u64,
    max_in_flight: usize,
    breaker_failures: u32,
    cooldown_ms: u64,
) -> HttpGatewayOptions {
    HttpGatewayOptions {
        timeout: Duration::from_millis(timeout_ms),
        max_in_flight,
        breaker_failures,
        breaker_cooldown: Duration::from_millis(cooldown_ms),
    }
}

fn request(payment_method: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: format!("recur_txn_{}", Uuid::now_v7().simple()),
        merchant_key: Uuid::now_v7(),
        amount: Decimal::new(1000, 2),
        currency: "EUR".into(),
        customer_account_id: "cust_1".into(),
        payment_method: payment_method.into(),
        scope: Uuid::now_v7(),
        sequence: Some(1),
    }
}

/// A worker whose engine charges through `gateway`, plus the app's scheduler; stopped
/// and aborted on drop.
pub(crate) struct HttpEngine {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HttpEngine {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn start_http_engine(app: &TestApp, gateway: HttpGateway) -> HttpEngine {
    start_http_engine_with(app, gateway, EngineOpts::default())
}

pub(crate) fn start_http_engine_with(app: &TestApp, gateway: HttpGateway, o: EngineOpts) -> HttpEngine {
    let args = app.engine_args(&o);
    let engine = recur::worker::Engine::new(
        app.pool().clone(),
        app.rt.clock.clone(),
        Arc::new(gateway),
        app.rt.queue.clone(),
        args.overrides(),
        app.settings.lease_seconds,
        args.webhooks().unwrap(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker_opts = recur::worker::WorkerOptions {
        queues: o.queues.clone(),
        concurrency: None,
        drain_timeout: Duration::from_secs(10),
    };
    let s = stopped.clone();
    let worker = tokio::spawn(async move {
        let _ = recur::worker::run(engine, worker_opts, s).await;
    });
    let sched = app.scheduler(&o);
    let scheduler = tokio::spawn(async move { sched.run(stopped).await });
    HttpEngine { stop, tasks: vec![worker, scheduler] }
}

/// A subscription due now, charged with an acquirer token. The API checks tokens with
/// the app runtime's gateway (the sandbox), so it is created with a sandbox token and
/// the acquirer token is then written with SQL, before any worker runs: into the
/// subscription and into any transaction already opened for it.
async fn due_subscription(app: &TestApp, acquirer_token: &str) -> Uuid {
    let now = app.clock_now().await;
    let s = app
        .subscription(json!({"customer": {"customerAccountId": format!("c-{}", Uuid::now_v7())}, "amount": "10.00",
            "currency": "EUR", "interval": {"unit": "month", "count": 1}, "startAt": now.to_rfc3339(),
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let id: Uuid = s["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("UPDATE subscriptions SET payment_method = $2 WHERE id = $1")
        .bind(id)
        .bind(acquirer_token)
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE transactions SET payment_method = $2 WHERE billing_cycle_id IN
           (SELECT id FROM billing_cycles WHERE subscription_id = $1)",
    )
    .bind(id)
    .bind(acquirer_token)
    .execute(app.pool())
    .await
    .unwrap();
    id
}

/// (cycle status, transaction status, decline code, idempotency key) of a
/// subscription's first cycle, once its first transaction is no longer pending.
async fn first_charge(app: &TestApp, sub: Uuid) -> (String, String, Option<String>, String) {
    eventually("the first charge to settle", Duration::from_secs(30), async || {
        let row: Option<(String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT c.status::text, t.status::text, t.decline_code, t.idempotency_key
             FROM billing_cycles c JOIN transactions t ON t.billing_cycle_id = c.id
             WHERE c.subscription_id = $1 AND c.sequence = 1 AND t.attempt = 1",
        )
        .bind(sub)
        .fetch_optional(app.pool())
        .await
        .unwrap();
        row.filter(|r| r.1 != "pending")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_charged_once_through_a_worker() {
    let app = spawn_app().await;
    let acq = acquirer(|_| {}).await;
    let sub = due_subscription(&app, "pm_ok").await;
    let _engine = start_http_engine(&app, acq.gateway(HttpGatewayOptions::default()));

    let (cycle, txn, decline, key) = first_charge(&app, sub).await;
    assert_eq!((cycle.as_str(), txn.as_str(), decline), ("succeeded", "succeeded", None));
    let (txn_id, reference): (Uuid, Option<String>) =
        sqlx::query_as("SELECT id, gateway_reference FROM transactions WHERE idempotency_key = $1")
            .bind(&key)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(key, format!("recur_txn_{}", txn_id.simple()));
    assert_eq!(acq.charged(&key).await, 1, "one row in the acquirer's ledger");
    assert_eq!(acq.ledger_size().await, 1);
    let (acquirer_reference, sequence): (String, Option<i32>) =
        sqlx::query_as("SELECT reference, recurring_sequence FROM acquirer_charges WHERE idempotency_key = $1")
            .bind(&key)
            .fetch_one(&acq.pool)
            .await
            .unwrap();
    assert_eq!(reference.as_deref(), Some(acquirer_reference.as_str()));
    assert_eq!(sequence, Some(1), "the acquirer is told which cycle the charge pays");
}

/// An acquirer down for longer than the job's whole retry policy: the charge is
/// deferred while the circuit is open (no attempt used, no dead letter, no `error`
/// cycle) and settles once, when the acquirer is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquirer_outage_defers_charges_instead_of_failing_them() {
    let app = spawn_app().await;
    let mut acq = acquirer(|_| {}).await;
    acq.stop().await;
    let sub = due_subscription(&app, "pm_ok").await;
    // Two attempts in all: without deferral the charge would be dead-lettered at once.
    let o = EngineOpts { max_attempts: Some(2), ..EngineOpts::default() };
    let engine = start_http_engine_with(&app, acq.gateway(opts(1_000, 4, 1, 300)), o);
    let key: String = eventually("the first attempt to be opened", Duration::from_secs(20), async || {
        sqlx::query_scalar::<_, String>(
            "SELECT t.idempotency_key FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
             WHERE c.subscription_id = $1",
        )
        .bind(sub)
        .fetch_optional(app.pool())
        .await
        .unwrap()
        .ok_or("no transaction yet")
    })
    .await;
    // Many cooldowns of outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cycle, txn): (String, String) = sqlx::query_as(
        "SELECT c.status::text, t.status::text FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
         WHERE t.idempotency_key = $1",
    )
    .bind(&key)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((cycle.as_str(), txn.as_str()), ("pending", "pending"), "the charge waits, it does not fail");
    let out = app.run_cli(&["dlq", "list", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.json().as_array().map(Vec::len), Some(0), "nothing dead-lettered: {}", out.stdout);

    acq.restart().await;
    let (cycle, txn, _, settled_key) = first_charge(&app, sub).await;
    assert_eq!((cycle.as_str(), txn.as_str(), settled_key.as_str()), ("succeeded", "succeeded", key.as_str()));
    assert_eq!(acq.charged(&key).await, 1, "charged once, when the acquirer came back");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visa_51_is_a_soft_decline_and_r1_a_hard_one() {
    let app = spawn_app().await;
    let acq = acquirer(|_| {}).await;
    let soft = due_subscription(&app, "pm_visa_decline_51").await;
    let hard = due_subscription(&app, "pm_visa_decline_R1").await;
    let _engine = start_http_engine(&app, acq.gateway(HttpGatewayOptions::default()));

    let (cycle, txn, decline, key) = first_charge(&app, soft).await;
    assert_eq!(
        (cycle.as_str(), txn.as_str(), decline.as_deref()),
        ("retrying", "declined", Some("insufficient_funds"))
    );
    assert_eq!(acq.charged(&key).await, 1);
    let (cycle, txn, decline, key) = first_charge(&app, hard).await;
    // A category 1 decline is hard: never retried (docs/states.md#dunning).
    assert_eq!((cycle.as_str(), txn.as_str(), decline.as_deref()), ("failed", "declined", Some("invalid_account")));
    assert_eq!(acq.charged(&key).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_unknown_never_a_decline_and_lookup_finds_the_charge() {
    let acq = acquirer(|a| a.lost_response_rate = 1.0).await;
    let g = acq.gateway(opts(5_000, 4, 100, 1_000));
    let req = request("pm_ok");
    let key = req.idempotency_key.clone();
    let err = g.charge(req.clone()).await.expect_err("no answer came");
    assert!(matches!(err, GatewayError::Unavailable(_) | GatewayError::Timeout), "{err:?}");
    assert_eq!(acq.charged(&key).await, 1, "the acquirer charged and committed");
    match g.lookup(&key).await {
        Ok(Some(ChargeOutcome::Approved { reference })) => assert!(!reference.is_empty()),
        other => panic!("lookup: {other:?}"),
    }
    assert_eq!(g.lookup("recur_txn_never_sent").await.unwrap(), None);

    // Through a worker: the attempt stays unknown (pending, or error once the job
    // gives up), no decline is recorded, and the acquirer holds the one charge.
    let app = spawn_app().await;
    let sub = due_subscription(&app, "pm_ok").await;
    let _engine = start_http_engine(&app, acq.gateway(opts(5_000, 4, 100, 1_000)));
    let key: String = eventually("the charge to reach the acquirer", Duration::from_secs(30), async || {
        let key: Option<String> = sqlx::query_scalar(
            "SELECT t.idempotency_key FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
             WHERE c.subscription_id = $1",
        )
        .bind(sub)
        .fetch_optional(app.pool())
        .await
        .unwrap();
        match key {
            Some(k) if acq.charged(&k).await == 1 => Some(k),
            _ => None,
        }
    })
    .await;
    // Give the worker's retries time to come back (all lost again).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cycle, txn, decline): (String, String, Option<String>) = sqlx::query_as(
        "SELECT c.status::text, t.status::text, t.decline_code FROM transactions t
         JOIN billing_cycles c ON c.id = t.billing_cycle_id WHERE t.idempotency_key = $1",
    )
    .bind(&key)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(txn == "pending" || txn == "error", "transaction {txn}");
    assert_eq!(decline, None);
    assert!(cycle == "pending" || cycle == "error", "cycle {cycle}");
    assert_eq!(acq.charged(&key).await, 1, "repeats of the key charge nothing new");
    assert!(matches!(g.lookup(&key).await, Ok(Some(ChargeOutcome::Approved { .. }))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_acquirer_opens_the_breaker_which_closes_after_the_cooldown() {
    let mut acq = acquirer(|_| {}).await;
    let cooldown = Duration::from_millis(800);
    let g = acq.gateway(opts(2_000, 4, 3, cooldown.as_millis() as u64));
    assert!(matches!(g.charge(request("pm_ok")).await, Ok(ChargeOutcome::Approved { .. })));

    acq.stop().await;
    for i in 0..3 {
        match g.charge(request("pm_ok")).await {
            Err(GatewayError::Unavailable(_)) if i < 2 => {}
            // The third failure opens the circuit and reports the outage.
            Err(GatewayError::CircuitOpen(_)) if i == 2 => {}
            other => panic!("call {i} to a stopped acquirer: {other:?}"),
        }
    }
    // Open: fails fast, even once the acquirer is back, and never reaches it.
    acq.restart().await;
    let opened = Instant::now();
    let req = request("pm_ok");
    let started = Instant::now();
    match g.charge(req.clone()).await {
        Err(GatewayError::CircuitOpen(_)) => {}
        other => panic!("an open circuit: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(100), "fail fast took {:?}", started.elapsed());
    assert!(matches!(g.lookup(&req.idempotency_key).await, Err(GatewayError::CircuitOpen(_))));
    assert_eq!(acq.charged(&req.idempotency_key).await, 0, "the acquirer never saw the call");
    assert_eq!(acq.ledger_size().await, 1);

    // After the cooldown one trial goes through and closes the circuit.
    tokio::time::sleep(cooldown.saturating_sub(opened.elapsed()) + Duration::from_millis(50)).await;
    assert!(matches!(g.charge(req.clone()).await, Ok(ChargeOutcome::Approved { .. })));
    assert_eq!(acq.charged(&req.idempotency_key).await, 1);
    assert!(matches!(g.charge(request("pm_ok")).await, Ok(ChargeOutcome::Approved { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_holds() {
    let acq = acquirer(|a| a.latency_ms = 200).await;
    let g = Arc::new(acq.gateway(opts(5_000, 2, 5, 1_000)));
    let started = Instant::now();
    let calls = (0..6).map(|_| {
        let g = g.clone();
        async move { g.charge(request("pm_ok")).await }
    });
    let results = futures::future::join_all(calls).await;
    let took = started.elapsed();
    assert!(results.iter().all(|r| matches!(r, Ok(ChargeOutcome::Approved { .. }))), "{results:?}");
    assert!(took >= Duration::from_millis(600), "6 calls of 200 ms, 2 at a time, took {took:?}");

    // Waiting for a permit counts against the timeout: with one slot and two calls
    // of 200 ms ahead, a third call gives up after 300 ms, unsent.
    let g = Arc::new(acq.gateway(opts(300, 1, 100, 1_000)));
    let mut ahead = Vec::new();
    for _ in 0..2 {
        let g = g.clone();
        ahead.push(tokio::spawn(async move { g.charge(request("pm_ok")).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = request("pm_ok");
    let started = Instant::now();
    assert!(matches!(g.charge(waiting.clone()).await, Err(GatewayError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
    for call in ahead {
        assert!(matches!(call.await.unwrap(), Ok(ChargeOutcome::Approved { .. })));
    }
    assert_eq!(acq.charged(&waiting.idempotency_key).await, 0, "a call that got no permit is never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_quote_the_secret_the_credentials_or_the_body() {
    let mut acq = acquirer(|_| {}).await;
    let other_secret = signing::new_secret();
    let mut errors = Vec::new();

    // 401: signed with a secret the acquirer does not know, via a URL with credentials.
    let with_creds = format!("http://operator:hunter2@{}", acq.addr);
    let g = HttpGateway::new(&with_creds, &other_secret, opts(2_000, 4, 100, 1_000)).unwrap();
    errors.push(g.charge(request("pm_ok")).await.unwrap_err());
    errors.push(g.lookup("recur_txn_x").await.unwrap_err());

    // 409: one key, another amount.
    let g = acq.gateway(opts(2_000, 4, 1, 60_000));
    let mut req = request("pm_ok");
    g.charge(req.clone()).await.unwrap();
    req.amount = Decimal::new(2000, 2);
    let e = g.charge(req).await.unwrap_err();
    assert!(e.to_string().contains("409"), "{e}");
    errors.push(e);

    // Connection refused, then the open circuit.
    acq.stop().await;
    errors.push(g.charge(request("pm_ok")).await.unwrap_err());
    errors.push(g.charge(request("pm_ok")).await.unwrap_err());

    // A held request: the per-call timeout.
    let held = acquirer(|a| {
        a.timeout_rate = 1.0;
        a.timeout_hold_ms = 5_000;
    })
    .await;
    let g = held.gateway(opts(300, 4, 100, 1_000));
    errors.push(g.charge(request("pm_ok")).await.unwrap_err());
    assert!(matches!(errors.last(), Some(GatewayError::Timeout)));

    let key_part = |s: &str| s.trim_start_matches(signing::PREFIX).to_owned();
    for e in &errors {
        for text in [format!("{e}"), format!("{e:?}")] {
            for secret in [&acq.secret, &other_secret, &held.secret] {
                assert!(!text.contains(secret.as_str()) && !text.contains(&key_part(secret)), "{text}");
            }
            assert!(!text.contains("hunter2") && !text.contains("operator"), "{text}");
            assert!(!text.contains("problem") && !text.contains("127.0.0.1"), "{text}");
        }
    }
}
