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
pub(crate) struct Acquirer {
    sim: Option<Simulator>,
    args: AcquirerArgs,
    pub(crate) addr: SocketAddr,
    pub(crate) secret: String,
    pub(crate) pool: sqlx::PgPool,
    _cleanup: DatabaseGuard,
}

pub(crate) async fn acquirer(tweak: impl FnOnce(&mut AcquirerArgs)) -> Acquirer {
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
    pub(crate) fn url(&self) -> String {
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
    pub(crate) async fn charged(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM acquirer_charges WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn ledger_size(&self) -> i64 {
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
        h2c: false,
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
    match g.lookup(Uuid::nil(), &key).await {
        Ok(Some(ChargeOutcome::Approved { reference })) => assert!(!reference.is_empty()),
        other => panic!("lookup: {other:?}"),
    }
    assert_eq!(g.lookup(Uuid::nil(), "recur_txn_never_sent").await.unwrap(), None);

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
    assert!(matches!(g.lookup(Uuid::nil(), &key).await, Ok(Some(ChargeOutcome::Approved { .. }))));
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
    assert!(matches!(g.lookup(req.merchant_key, &req.idempotency_key).await, Err(GatewayError::CircuitOpen(_))));
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

/// TCP connections the acquirer accepted so far, this scrape's own included.
async fn connections_accepted(acq: &Acquirer) -> u64 {
    let text = reqwest::get(format!("{}/metrics", acq.url())).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("acquirer_connections_accepted_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the acquirer counts its connections") as u64
}

/// docs/gateway-protocol.md#connections: over HTTP/1.1 every call in flight holds a
/// connection of its own; with h2c they share one per 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_carries_every_call_in_flight_on_one_connection() {
    let acq = acquirer(|a| a.latency_ms = 200).await;
    let burst = |g: Arc<HttpGateway>, n: usize| async move {
        let started = Instant::now();
        let calls = (0..n).map(|_| {
            let g = g.clone();
            async move { g.charge(request("pm_ok")).await }
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| matches!(r, Ok(ChargeOutcome::Approved { .. }))), "{results:?}");
        started.elapsed()
    };

    let before = connections_accepted(&acq).await;
    let h1 = Arc::new(acq.gateway(opts(5_000, 50, 5, 1_000)));
    burst(h1, 50).await;
    let after_h1 = connections_accepted(&acq).await;
    assert!(after_h1 - before - 1 > 10, "50 calls at once over HTTP/1.1: {} connections", after_h1 - before - 1);

    let h2c = Arc::new(acq.gateway(HttpGatewayOptions { h2c: true, ..opts(5_000, 50, 5, 1_000) }));
    let took = burst(h2c.clone(), 50).await;
    // 50 calls of 200 ms one after another would take 10 s: they were multiplexed.
    assert!(took < Duration::from_secs(3), "50 calls over one h2c connection took {took:?}");
    burst(h2c, 50).await;
    let after_h2c = connections_accepted(&acq).await;
    assert_eq!(after_h2c - after_h1 - 1, 1, "100 calls over h2c, 50 at a time, on one connection");

    let wide = Arc::new(acq.gateway(HttpGatewayOptions { h2c: true, ..opts(5_000, 300, 5, 1_000) }));
    let took = burst(wide, 300).await;
    assert!(took < Duration::from_secs(3), "300 calls over h2c, 300 in flight, took {took:?}");
    let after_wide = connections_accepted(&acq).await;
    assert_eq!(after_wide - after_h2c - 1, 3, "300 calls in flight over h2c: one connection per 100");
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
    errors.push(g.lookup(Uuid::nil(), "recur_txn_x").await.unwrap_err());

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

/// The state a settled first charge left: (cycle status, failure code, next retry at,
/// subscription status, cancellation reason, the attempt's settled at).
type Settled = (
    String,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
    String,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
);

async fn settled_state(app: &TestApp, sub: Uuid) -> Settled {
    first_charge(app, sub).await;
    sqlx::query_as(
        "SELECT c.status::text, c.failure_code, c.next_retry_at, s.status::text, s.cancellation_reason, t.settled_at
         FROM billing_cycles c JOIN subscriptions s ON s.id = c.subscription_id
         JOIN transactions t ON t.billing_cycle_id = c.id AND t.attempt = 1
         WHERE c.subscription_id = $1 AND c.sequence = 1",
    )
    .bind(sub)
    .fetch_one(app.pool())
    .await
    .unwrap()
}

async fn retry_hours(app: &TestApp, sub: Uuid) -> Vec<i32> {
    sqlx::query_scalar("SELECT retry_schedule_hours FROM subscriptions WHERE id = $1")
        .bind(sub)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

/// Attempts of a subscription's first cycle that reached the acquirer.
async fn attempts_at_acquirer(app: &TestApp, acq: &Acquirer, sub: Uuid) -> i64 {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT t.idempotency_key FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
         WHERE c.subscription_id = $1 AND c.sequence = 1",
    )
    .bind(sub)
    .fetch_all(app.pool())
    .await
    .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM acquirer_charges WHERE idempotency_key = ANY($1)")
        .bind(&keys)
        .fetch_one(&acq.pool)
        .await
        .unwrap()
}

/// Every class of acquirer token, through a worker: the cycle and subscription states of
/// docs/states.md#dunning and docs/governor.md (categories, advice codes, revocations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_class_settles_as_dunning_and_the_governor_say() {
    let app = spawn_app().await;
    let acq = acquirer(|_| {}).await;
    let ok = due_subscription(&app, "pm_ok").await;
    let visa_51 = due_subscription(&app, "pm_visa_decline_51").await;
    let visa_43 = due_subscription(&app, "pm_visa_decline_43").await;
    let visa_r1 = due_subscription(&app, "pm_visa_decline_R1").await;
    let mc_21 = due_subscription(&app, "pm_mc_decline_05_mac_21").await;
    let mc_03 = due_subscription(&app, "pm_mc_decline_51_mac_03").await;
    let mc_25 = due_subscription(&app, "pm_mc_decline_91_mac_25").await;
    let recover = due_subscription(&app, "pm_recover_after_1").await;
    let _engine = start_http_engine(&app, acq.gateway(HttpGatewayOptions::default()));

    let s = settled_state(&app, ok).await;
    assert_eq!((s.0.as_str(), s.3.as_str()), ("succeeded", "active"));

    // Visa 51, category 2: the merchant's schedule.
    let s = settled_state(&app, visa_51).await;
    let first_step = chrono::Duration::hours(i64::from(retry_hours(&app, visa_51).await[0]));
    assert_eq!((s.0.as_str(), s.1.as_deref(), s.3.as_str()), ("retrying", Some("insufficient_funds"), "past_due"));
    assert_eq!(s.2, Some(s.5 + first_step));

    // Visa 43 (lost card), category 1: never retried.
    let s = settled_state(&app, visa_43).await;
    assert_eq!((s.0.as_str(), s.2), ("failed", None));
    let cycle_events = app.events_of(&cycle_id(&app, visa_43).await.to_string()).await;
    let failed =
        cycle_events.iter().find(|(t, d)| t == "status_changed" && d["to"] == "failed").expect("a failed event");
    assert_eq!(failed.1["rule"], "visa_category_1", "{failed:?}");

    // Revocations: Visa R1 and Mastercard advice 21 cancel the subscription.
    for sub in [visa_r1, mc_21] {
        let s = settled_state(&app, sub).await;
        assert_eq!((s.0.as_str(), s.2), ("failed", None));
        assert_eq!((s.3.as_str(), s.4.as_deref()), ("cancelled", Some("authorization_revoked")));
    }

    // Mastercard advice 03: do not try again.
    // Not a revocation: the subscription is left to its grace period.
    let s = settled_state(&app, mc_03).await;
    assert_eq!((s.0.as_str(), s.2), ("failed", None));
    assert_ne!(s.4.as_deref(), Some("authorization_revoked"));

    // Mastercard advice 25: the retry waits 24 hours, whatever the schedule says.
    let s = settled_state(&app, mc_25).await;
    assert_eq!(s.0, "retrying");
    assert_eq!(s.2, Some(s.5 + chrono::Duration::hours(24)));

    // pm_recover_after_1: a soft decline, then the scheduled retry is approved.
    let s = settled_state(&app, recover).await;
    assert_eq!(s.0, "retrying");
    let until_retry = (s.2.unwrap() - app.clock_now().await).num_seconds();
    assert!(until_retry > 3_600, "{until_retry}");
    // An hour short of the MAC 25 delay nothing is retried...
    let mac_25_due = settled_state(&app, mc_25).await.2.unwrap();
    app.advance((mac_25_due - app.clock_now().await).num_seconds() - 3_600).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(attempts_at_acquirer(&app, &acq, mc_25).await, 1, "retried before the advice code's delay");
    // ...and once both are due, both are retried.
    let latest = s.2.unwrap().max(mac_25_due);
    app.advance((latest - app.clock_now().await).num_seconds() + 1).await;
    eventually("the due retries to reach the acquirer", Duration::from_secs(30), async || {
        let (r, m) = (attempts_at_acquirer(&app, &acq, recover).await, attempts_at_acquirer(&app, &acq, mc_25).await);
        if r == 2 && m == 2 { Ok(()) } else { Err(format!("recover {r}, mac 25 {m}")) }
    })
    .await;
    eventually("the recovering card's cycle to succeed", Duration::from_secs(30), async || {
        let st: String = sqlx::query_scalar("SELECT status::text FROM billing_cycles WHERE subscription_id = $1")
            .bind(recover)
            .fetch_one(app.pool())
            .await
            .unwrap();
        if st == "succeeded" { Ok(()) } else { Err(st) }
    })
    .await;
}

async fn cycle_id(app: &TestApp, sub: Uuid) -> Uuid {
    sqlx::query_scalar("SELECT id FROM billing_cycles WHERE subscription_id = $1 AND sequence = 1")
        .bind(sub)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

/// `n` subscriptions on one card created while a worker runs: due a minute from now, the
/// acquirer token written, then the clock moved to their due time. Returns once each
/// first charge has settled.
async fn settled_on_card(app: &TestApp, token: &str, n: usize) -> Vec<Uuid> {
    let start = app.clock_now().await + chrono::Duration::seconds(60);
    let mut subs = Vec::with_capacity(n);
    for _ in 0..n {
        let s = app
            .subscription(json!({"customer": {"customerAccountId": format!("c-{}", Uuid::now_v7())},
                "amount": "10.00", "currency": "EUR", "interval": {"unit": "month", "count": 1},
                "startAt": start.to_rfc3339(), "paymentMethod": "pm_sandbox_ok"}))
            .await;
        subs.push(s["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    sqlx::query("UPDATE subscriptions SET payment_method = $2 WHERE id = ANY($1)")
        .bind(&subs)
        .bind(token)
        .execute(app.pool())
        .await
        .unwrap();
    app.advance(61).await;
    for sub in &subs {
        first_charge(app, *sub).await;
    }
    subs
}

/// The card networks' counts, over the acquirer and the test clock: the 16th Visa decline
/// in 30 days and the 11th Mastercard decline in 24 hours are never sent; a manual retry
/// of a card the rules forbid answers 409 naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governor_refuses_the_16th_visa_and_the_11th_mastercard_decline() {
    let app = spawn_app().await;
    let acq = acquirer(|_| {}).await;
    // Seeded before the worker runs: all fifteen are charged, none refused.
    let visa = "pm_visa_decline_05";
    let seeded: Vec<Uuid> = futures::future::join_all((0..15).map(|_| due_subscription(&app, visa))).await;
    let _engine = start_http_engine(&app, acq.gateway(HttpGatewayOptions::default()));
    for sub in &seeded {
        let s = settled_state(&app, *sub).await;
        assert_eq!(s.0, "retrying", "Visa 05 is retried on the schedule");
    }
    let sixteenth = settled_on_card(&app, visa, 1).await[0];
    let (cycle, txn, code, key) = first_charge(&app, sixteenth).await;
    assert_eq!((cycle.as_str(), txn.as_str(), code.as_deref()), ("failed", "declined", Some("retry_limit_reached")));
    assert_eq!(acq.charged(&key).await, 0, "a refused attempt never reaches the acquirer");
    let events = app.events_of(&cycle_id(&app, sixteenth).await.to_string()).await;
    let blocked = events.iter().find(|(t, _)| t == "retry_blocked").expect("a retry_blocked event");
    assert_eq!(blocked.1["rule"], "visa_15_in_30_days");
    let visa_charged: i64 = sqlx::query_scalar("SELECT count(*) FROM acquirer_charges WHERE payment_method = $1")
        .bind(visa)
        .fetch_one(&acq.pool)
        .await
        .unwrap();
    assert_eq!(visa_charged, 15);

    // A manual retry of that cycle is refused too, naming the rule, and opens nothing.
    let before = app.count("SELECT count(*) FROM transactions").await;
    let (status, body) =
        app.post(&format!("/v1/billing-cycles/{}/retry", cycle_id(&app, sixteenth).await), json!({})).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert_eq!(body["rule"], "visa_15_in_30_days", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("visa_15_in_30_days"), "{body}");
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, before);

    // Mastercard: ten declines in 24 hours (advice 03, so no retries follow), the 11th refused...
    let mc = "pm_mc_decline_05_mac_03";
    let first_ten = settled_on_card(&app, mc, 10).await;
    let refused = settled_on_card(&app, mc, 1).await[0];
    let (_, _, code, key) = first_charge(&app, refused).await;
    assert_eq!(code.as_deref(), Some("retry_limit_reached"));
    assert_eq!(acq.charged(&key).await, 0);
    let events = app.events_of(&cycle_id(&app, refused).await.to_string()).await;
    assert!(events.iter().any(|(t, d)| t == "retry_blocked" && d["rule"] == "mastercard_10_in_24_hours"), "{events:?}");
    // ...and a manual retry after an advice 03 decline is refused by that rule.
    let (status, body) =
        app.post(&format!("/v1/billing-cycles/{}/retry", cycle_id(&app, first_ten[0]).await), json!({})).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert_eq!(body["rule"], "mastercard_mac_03", "{body}");
    // A day later the 24-hour count is back to zero (10 of 35 in 30 days): charged again.
    app.advance(24 * 3_600 + 60).await;
    let next_day = settled_on_card(&app, mc, 1).await[0];
    let (_, txn, code, key) = first_charge(&app, next_day).await;
    assert_eq!((txn.as_str(), code.as_deref()), ("declined", Some("invalid_account")));
    assert_eq!(acq.charged(&key).await, 1);
}

/// Unknown outcomes are resolved first (docs/gateway-protocol.md): an attempt whose
/// answers were all lost ends `error`; a manual retry looks it up at the merchant's
/// gateway by its idempotency key, finds the charge and records it, charging nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_retry_looks_up_the_unknown_attempt_before_charging_again() {
    let mut settings = crate::support::fresh_settings();
    settings.secret_key = Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".to_owned().into());
    let app = crate::support::spawn_app_with(settings).await;
    let acq = acquirer(|a| a.lost_response_rate = 1.0).await;
    let (status, body) = TestApp::send(
        app.admin(reqwest::Method::PATCH, &format!("/admin/merchants/{}", app.merchant.key))
            .json(&json!({"gateway": {"kind": "http", "baseUrl": acq.url(), "secret": acq.secret}})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let o = EngineOpts { max_attempts: Some(2), ..EngineOpts::default() };
    let _engine = start_http_engine_with(&app, acq.gateway(opts(1_000, 4, 100, 1_000)), o);
    let now = app.clock_now().await;
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "unknown-1"}, "amount": "10.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "startAt": now.to_rfc3339(), "paymentMethod": "pm_ok"}))
        .await;
    let sub: Uuid = s["id"].as_str().unwrap().parse().unwrap();
    let cycle = eventually("the attempt to end in error", Duration::from_secs(60), async || {
        let row: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, status::text FROM billing_cycles WHERE subscription_id = $1 AND status = 'error'",
        )
        .bind(sub)
        .fetch_optional(app.pool())
        .await
        .unwrap();
        row.map(|r| r.0)
    })
    .await;
    let (_, _, _, key) = first_charge(&app, sub).await;
    assert_eq!(acq.charged(&key).await, 1, "the lost answers were of a charge made once");

    let (status, body) = app.post(&format!("/v1/billing-cycles/{cycle}/retry"), json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "the lookup found the charge: {body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    let attempts = app.count(&format!("SELECT count(*) FROM transactions WHERE billing_cycle_id = '{cycle}'")).await;
    assert_eq!(attempts, 1, "no new attempt was opened");
    assert_eq!(acq.ledger_size().await, 1, "nothing charged twice");
}
