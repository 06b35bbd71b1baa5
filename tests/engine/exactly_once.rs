//! Exactly-once under faults (docs/guarantees.md#exactly-once-charges):
//! duplicate job delivery, racing workers and schedulers, `kill -9` of a worker, and
//! the loss of every Redis key. Every test asserts on the sandbox ledger and on the
//! Postgres rows, then again once Redis holds no job at all, to catch late duplicates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs::{ChargeTransaction, GenerateCycle, Job, Queue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{self, EngineOpts, TestApp, eventually, seed_due, spawn_app, spawn_app_with, try_eventually};

/// Due charges of the racing, crash and Redis-loss tests.
const N: i64 = 2000;

async fn succeeded(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await
}

/// What the engine is doing, for a timeout's panic message.
async fn diagnostics(app: &TestApp) -> String {
    let cycles: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM billing_cycles GROUP BY 1 ORDER BY 1")
            .fetch_all(app.pool())
            .await
            .unwrap();
    let txns: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM transactions GROUP BY 1 ORDER BY 1")
            .fetch_all(app.pool())
            .await
            .unwrap();
    let due = app.count("SELECT count(*) FROM subscriptions WHERE next_sequence = 1").await;
    let mut queues = Vec::new();
    for q in Queue::ALL {
        queues.push(format!("{q}={}", app.rt.queue.waiting(q).await.unwrap_or(u64::MAX)));
    }
    let mut dlq = Vec::new();
    for q in Queue::ALL {
        dlq.push(format!("{q}={}", recur::dlq::depth(&app.rt.queue, q).await.unwrap_or(u64::MAX)));
    }
    format!(
        "cycles {cycles:?}, transactions {txns:?}, subscriptions without a cycle {due}, ledger {}, waiting [{}], dlq [{}]",
        app.ledger_count().await,
        queues.join(" "),
        dlq.join(" ")
    )
}

/// Wait (up to `secs`) until at least `n` cycles have succeeded; how long it took, or
/// a panic with the engine's state.
async fn wait_succeeded(app: &TestApp, n: i64, secs: u64) -> Duration {
    let start = Instant::now();
    let waited = try_eventually(Duration::from_secs(secs), async || {
        let done = succeeded(app).await;
        if done >= n { Ok(()) } else { Err(done) }
    })
    .await;
    if let Err(done) = waited {
        panic!("timed out after {secs}s waiting for {n} succeeded cycles ({done} did): {}", diagnostics(app).await);
    }
    start.elapsed()
}

/// Wait until at least one cycle succeeded (the "mid-run" instant of a fault).
async fn wait_first_success(app: &TestApp, secs: u64) {
    wait_succeeded(app, 1, secs).await;
}

/// The end state of `n` seeded subscriptions that were each due once with
/// `pm_sandbox_ok`: one cycle each, one approved transaction each, one ledger entry
/// per customer, one event per change; checked twice: at once, and again when Redis
/// holds no job (any late duplicate delivery has run by then).
async fn assert_each_charged_once(app: &TestApp, n: i64) {
    for round in 0..2 {
        if round == 1 {
            app.wait_drained().await;
        }
        let ctx = format!("round {round}: {}", diagnostics(app).await);
        assert_eq!(succeeded(app).await, n, "succeeded cycles; {ctx}");
        assert_eq!(app.ledger_count().await, n, "ledger entries; {ctx}");
        assert_eq!(app.count("SELECT count(*) FROM billing_cycles").await, n, "one cycle per subscription; {ctx}");
        assert_eq!(
            app.count("SELECT count(*) FROM (SELECT DISTINCT subscription_id, sequence FROM billing_cycles) d").await,
            n,
            "one cycle per (subscription, sequence); {ctx}"
        );
        assert_eq!(app.count("SELECT count(*) FROM transactions").await, n, "one transaction per cycle; {ctx}");
        assert_eq!(
            app.count("SELECT count(*) FROM transactions WHERE status <> 'succeeded'").await,
            0,
            "unsettled transactions; {ctx}"
        );
        // Independent of idempotency keys: no customer was charged twice.
        assert_eq!(
            app.count(
                "SELECT count(*) FROM (SELECT customer_account_id FROM sandbox_charges GROUP BY 1 HAVING count(*) > 1) d"
            )
            .await,
            0,
            "a customer has two ledger entries; {ctx}"
        );
        assert_eq!(
            app.count(
                "SELECT count(*) FROM subscriptions WHERE next_sequence <> 2 OR status <> 'active'
                 OR next_charge_at <= (SELECT now FROM clock)"
            )
            .await,
            0,
            "every subscription advanced exactly one period; {ctx}"
        );
        // Every change leaves exactly one event (docs/guarantees.md#one-event-per-change), duplicates or not.
        assert_eq!(
            app.count("SELECT count(*) FROM events WHERE object_type = 'transaction' AND type = 'charge_succeeded'")
                .await,
            n,
            "charge_succeeded events; {ctx}"
        );
        assert_eq!(
            app.count("SELECT count(*) FROM events WHERE object_type = 'billing_cycle' AND type = 'created'").await,
            n,
            "billing_cycle created events; {ctx}"
        );
        assert_eq!(
            app.count(
                "SELECT count(*) FROM (SELECT object_id FROM events WHERE type IN ('charge_succeeded', 'created', 'status_changed')
                 GROUP BY object_id, type, data HAVING count(*) > 1) d"
            )
            .await,
            0,
            "an object has the same event twice; {ctx}"
        );
        app.assert_exactly_once().await;
    }
}

async fn subscription_ids(app: &TestApp) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM subscriptions ORDER BY id").fetch_all(app.pool()).await.unwrap()
}

fn generate_job(subscription_id: Uuid, sequence: i32) -> Job {
    Job::GenerateCycle(GenerateCycle { subscription_id, sequence, attempt: 0 })
}

fn charge_job(transaction_id: Uuid) -> Job {
    Job::ChargeTransaction(ChargeTransaction { transaction_id, attempt: 0 })
}

fn times(jobs: &[Job], n: usize) -> Vec<Job> {
    jobs.iter().flat_map(|j| std::iter::repeat_n(j.clone(), n)).collect()
}

/// A worker engine of its own (own gateway client and batchers), as a second worker
/// process would have, sharing the test's database and Redis namespace.
fn separate_engine(app: &TestApp, latency_ms: u64) -> Arc<recur::worker::Engine> {
    let gateway: Arc<dyn recur::gateway::Gateway> =
        Arc::new(recur::gateway::sandbox::Sandbox::new(app.pool().clone(), Duration::from_millis(latency_ms)));
    let args = app.engine_args(&EngineOpts::default());
    recur::worker::Engine::new(
        app.pool().clone(),
        app.rt.clock.clone(),
        gateway,
        app.rt.queue.clone(),
        args.overrides(),
        app.settings.lease_seconds,
        args.webhooks().unwrap(),
    )
}

async fn redis_conn(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.settings.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Live workers registered on a queue (apalis-redis's `<queue>:workers` sorted set).
async fn registered_workers(app: &TestApp, queue: Queue) -> u64 {
    let mut conn = redis_conn(app).await;
    let key = format!("{}:workers", app.rt.queue.keys().queue_name(queue));
    redis::cmd("ZCARD").arg(key).query_async(&mut conn).await.unwrap()
}

async fn due_minute_ago(app: &TestApp) -> chrono::DateTime<chrono::Utc> {
    app.clock_now().await - chrono::Duration::minutes(1)
}

/// Every generate-cycle and charge-transaction job delivered several times: queued
/// before the worker starts (so copies share fetch batches and group commits), pushed
/// again while it runs, executed concurrently by two more engines, and pushed once
/// more after everything settled, with stale and future sequences as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_charges_each_cycle_once() {
    let mut settings = support::fresh_settings();
    // Latency keeps copies of a charge in flight at the same time.
    settings.sandbox_latency_ms = 30;
    let app = spawn_app_with(settings).await;
    let due = due_minute_ago(&app).await;

    // Group A: only generate-cycle jobs are pushed; they open the cycles.
    seed_due(&app, 150, due, "pm_sandbox_ok").await;
    let group_a = subscription_ids(&app).await;
    // Group B: cycles opened here, then only their charge jobs are pushed.
    seed_due(&app, 150, due, "pm_sandbox_ok").await;
    let group_b: Vec<Uuid> = subscription_ids(&app).await.into_iter().filter(|s| !group_a.contains(s)).collect();
    let items: Vec<(Uuid, i32)> = group_b.iter().map(|s| (*s, 1)).collect();
    let opened = recur::billing::generate::generate_batch(app.pool(), &app.rt.clock, items, app.settings.lease_seconds)
        .await
        .unwrap();
    let charges: Vec<Job> = opened.into_iter().map(|j| j.expect("a charge job per opened cycle")).collect();
    assert_eq!(charges.len(), 150);
    let generates: Vec<Job> = group_a.iter().map(|s| generate_job(*s, 1)).collect();

    // Three copies of every job in one push, before any worker runs.
    app.rt.queue.push(&times(&generates, 3)).await.unwrap();
    app.rt.queue.push(&times(&charges, 3)).await.unwrap();

    // Two independent engines race on the first 50 charges, each job twice per engine.
    let e1 = separate_engine(&app, 30);
    let e2 = separate_engine(&app, 30);
    let mut racing = Vec::new();
    for job in charges.iter().take(50) {
        for e in [&e1, &e2, &e1, &e2] {
            let (e, job) = (e.clone(), job.clone());
            racing.push(tokio::spawn(async move { e.execute(job).await.map_err(|e| e.to_string()) }));
        }
    }
    // ... while the test's worker runs (no scheduler: only these pushes drive work).
    let engine = app.start_engine(EngineOpts { scheduler: false, ..Default::default() });
    for _ in 0..3 {
        app.rt.queue.push(&generates).await.unwrap();
        app.rt.queue.push(&charges).await.unwrap();
        // The scenario: copies arrive spread over the worker's run, not in one burst.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for r in racing {
        r.await.unwrap().expect("a racing delivery failed");
    }

    let took = wait_succeeded(&app, 300, 60).await;
    eprintln!("duplicate delivery: 300 cycles succeeded in {took:?}");

    // Settled work delivered again, plus stale (1) and future (2) sequences of group B.
    let mut late = times(&generates, 2);
    late.extend(times(&charges, 2));
    late.extend(group_b.iter().flat_map(|s| [generate_job(*s, 1), generate_job(*s, 2)]));
    app.rt.queue.push(&late).await.unwrap();
    for job in charges.iter().take(20) {
        e1.execute(job.clone()).await.unwrap();
    }
    // Let the worker run the late copies.
    app.wait_drained().await;
    assert_each_charged_once(&app, 300).await;
    engine.stop().await;
}

/// Two worker OS processes race on 2,000 due charges fed by one scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_race_on_2000_due_charges() {
    let app = spawn_app().await;
    seed_due(&app, N, due_minute_ago(&app).await, "pm_sandbox_ok").await;
    let _w1 = app.spawn_process(&["worker"], &[]);
    let _w2 = app.spawn_process(&["worker"], &[]);
    // Both workers are up before any work is enqueued, so both race on all of it.
    eventually("two workers registered", Duration::from_secs(60), async || {
        let registered = (
            registered_workers(&app, Queue::ChargeTransaction).await,
            registered_workers(&app, Queue::GenerateCycle).await,
        );
        if registered.0 >= 2 && registered.1 >= 2 { Ok(()) } else { Err(format!("{registered:?}")) }
    })
    .await;
    let sched = app.start_engine(EngineOpts { worker: false, ..Default::default() });
    let took = wait_succeeded(&app, N, 90).await;
    eprintln!("two workers: {N} cycles succeeded in {took:?}");
    assert_each_charged_once(&app, N).await;
    sched.stop().await;
}

/// `kill -9` of the only worker while charges are in flight, then of its replacement;
/// a fresh worker takes over (apalis-redis returns the dead workers' jobs, the scheduler
/// re-enqueues charges whose lease passed) and every cycle is charged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_mid_run_loses_and_doubles_nothing() {
    let app = spawn_app().await;
    seed_due(&app, N, due_minute_ago(&app).await, "pm_sandbox_ok").await;
    let latency = [("RECUR_SANDBOX_LATENCY_MS", "20")];
    let mut w1 = app.spawn_process(&["worker"], &latency);
    eventually("the worker registered", Duration::from_secs(60), async || {
        registered_workers(&app, Queue::ChargeTransaction).await >= 1
    })
    .await;
    let sched = app.start_engine(EngineOpts { worker: false, ..Default::default() });
    wait_first_success(&app, 60).await;
    w1.kill9();
    let at_kill = succeeded(&app).await;
    eprintln!("kill -9 with {at_kill} of {N} cycles succeeded: {}", diagnostics(&app).await);
    assert!(at_kill < N, "everything finished before the kill; the test proved nothing");

    // The replacement is killed too, later in the run (the first worker's in-flight
    // jobs only come back after ~6 s, so it cannot have finished yet) ...
    let mut w2 = app.spawn_process(&["worker"], &latency);
    let target = at_kill + 200;
    wait_succeeded(&app, target, 60).await;
    w2.kill9();
    let at_kill2 = succeeded(&app).await;
    eprintln!("second kill -9 with {at_kill2} of {N} cycles succeeded: {}", diagnostics(&app).await);
    assert!(at_kill2 < N, "everything finished before the second kill; the test proved less than it should");

    // ... and a third worker inherits the work of both.
    let _w3 = app.spawn_process(&["worker"], &latency);
    let took = wait_succeeded(&app, N, 90).await;
    eprintln!("after two kills: {N} cycles succeeded {took:?} after the last restart");
    assert_each_charged_once(&app, N).await;
    sched.stop().await;
}

/// Every Redis key of the namespace is deleted while charges are in flight (queues,
/// in-flight sets, worker registrations): the scheduler re-derives the work from
/// Postgres once the leases pass, and every cycle is charged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_redis_key_mid_run_loses_and_doubles_nothing() {
    let mut settings = support::fresh_settings();
    settings.sandbox_latency_ms = 20;
    let app = spawn_app_with(settings).await;
    seed_due(&app, N, due_minute_ago(&app).await, "pm_sandbox_ok").await;
    let engine = app.start_engine(EngineOpts::default());
    wait_first_success(&app, 60).await;
    let mut conn = redis_conn(&app).await;
    support::delete_namespace(&mut conn, &app.settings.redis_namespace).await;
    let at_loss = succeeded(&app).await;
    eprintln!("Redis namespace deleted with {at_loss} of {N} cycles succeeded: {}", diagnostics(&app).await);
    assert!(at_loss < N, "everything finished before Redis was lost; the test proved nothing");
    // And once more while the engine is recovering: once its worker has registered
    // again (the wipe took the registration; the worker restarts to register anew).
    eventually("the worker registered again after the wipe", Duration::from_secs(60), async || {
        registered_workers(&app, Queue::ChargeTransaction).await >= 1
    })
    .await;
    support::delete_namespace(&mut conn, &app.settings.redis_namespace).await;

    let took = wait_succeeded(&app, N, 90).await;
    eprintln!("after Redis loss: {N} cycles succeeded {took:?} after the first wipe");
    assert_each_charged_once(&app, N).await;
    engine.stop().await;
}

/// Three schedulers (two in-process, one process) sweep the same 2,000 due
/// subscriptions at once for one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_schedulers_never_double_charge() {
    let app = spawn_app().await;
    seed_due(&app, N, due_minute_ago(&app).await, "pm_sandbox_ok").await;
    let _s3 = app.spawn_process(&["scheduler"], &[]);
    let engine = app.start_engine(EngineOpts::default());
    let second = app.start_engine(EngineOpts { worker: false, ..Default::default() });
    let took = wait_succeeded(&app, N, 90).await;
    eprintln!("three schedulers: {N} cycles succeeded in {took:?}");
    assert_each_charged_once(&app, N).await;
    second.stop().await;
    engine.stop().await;
}

/// Payment-series charges delivered several times concurrently (two engines at once,
/// copies in Redis, the API's own job and the scheduler's recovery sweep), plus client
/// retries: one ledger entry per transaction request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_series_charge_delivered_twice_concurrently_charges_once() {
    let mut settings = support::fresh_settings();
    settings.sandbox_latency_ms = 30;
    let app = spawn_app_with(settings).await;
    let (s, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": "mit-1"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{series}");
    let sid = series["id"].as_str().unwrap().to_owned();

    // 20 charges; the API enqueues each one (no worker runs yet).
    let mut txns = Vec::new();
    for i in 0..20 {
        let (s, t) = app
            .post(
                &format!("/v1/payment-series/{sid}/transactions"),
                json!({"amount": "5.00", "partnerReference": format!("top-up-{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{t}");
        assert_eq!(t["status"], "pending");
        txns.push(t["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    // Client retries: the same Idempotency-Key replays, the same partnerReference conflicts.
    let retry = |key: &str| {
        app.request(Method::POST, &format!("/v1/payment-series/{sid}/transactions"))
            .header("Idempotency-Key", key)
            .json(&json!({"amount": "7.00"}))
    };
    let first = support::send_full(retry("client-retry-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let again = support::send_full(retry("client-retry-1")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"], "an Idempotency-Key replay opened a second transaction");
    txns.push(first.body["id"].as_str().unwrap().parse().unwrap());
    let (s, b) = app
        .post(
            &format!("/v1/payment-series/{sid}/transactions"),
            json!({"amount": "5.00", "partnerReference": "top-up-0"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let total = txns.len() as i64;

    // Every charge delivered concurrently by two engines (as two workers would) ...
    let jobs: Vec<Job> = txns.iter().map(|t| charge_job(*t)).collect();
    app.rt.queue.push(&times(&jobs, 2)).await.unwrap();
    let (e1, e2) = (separate_engine(&app, 30), separate_engine(&app, 30));
    let mut racing = Vec::new();
    for job in &jobs {
        for e in [&e1, &e2] {
            let (e, job) = (e.clone(), job.clone());
            racing.push(tokio::spawn(async move { e.execute(job).await.map_err(|e| e.to_string()) }));
        }
    }
    // ... while a worker and a scheduler (whose recovery sweep finds the series
    // transactions without a lease) deliver the queued copies.
    let engine = app.start_engine(EngineOpts::default());
    for r in racing {
        r.await.unwrap().expect("a racing delivery failed");
    }
    eventually("every series charge settled", Duration::from_secs(30), async || {
        let done = app.count("SELECT count(*) FROM transactions WHERE status = 'succeeded'").await;
        if done == total { Ok(()) } else { Err(done) }
    })
    .await;
    // Again once Redis holds no job: any late duplicate delivery has run by then.
    for round in 0..2 {
        if round == 1 {
            app.wait_drained().await;
        }
        assert_eq!(app.ledger_count().await, total, "round {round}: ledger entries");
        assert_eq!(app.count("SELECT count(*) FROM transactions").await, total, "round {round}: transactions");
        assert_eq!(
            app.count("SELECT count(*) FROM events WHERE type = 'charge_succeeded'").await,
            total,
            "round {round}: one charge_succeeded event per transaction"
        );
        let keys: i64 = app
            .count(
                "SELECT count(*) FROM transactions t JOIN sandbox_charges l ON l.idempotency_key = t.idempotency_key
                 WHERE t.payment_series_id IS NOT NULL",
            )
            .await;
        assert_eq!(keys, total, "round {round}: one ledger entry per transaction key");
        app.assert_exactly_once().await;
    }
    for t in &txns {
        let (s, v): (StatusCode, Value) = app.get(&format!("/v1/transactions/{t}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    engine.stop().await;
}

/// Two workers group-committing the same outcomes (duplicate deliveries of the same
/// charges) in opposite orders: both batches complete, one records each outcome and
/// the other finds it settled. Rows are locked in id order, so this does not depend
/// on the join order Postgres picks for the batch update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_record_batches_in_opposite_orders_do_not_deadlock() {
    use recur::billing::charge::{Settlement, load_batch, record_batch};
    use recur::billing::dunning::Settled;
    let app = spawn_app().await;
    let (s, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": "mit-2"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{series}");
    let sid = series["id"].as_str().unwrap().to_owned();
    let mut recorded = 0;
    for round in 0..5 {
        let mut ids = Vec::new();
        for _ in 0..60 {
            let (s, t) = app.post(&format!("/v1/payment-series/{sid}/transactions"), json!({"amount": "1.00"})).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{t}");
            ids.push(t["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        let now = app.clock_now().await;
        let settled: Vec<Settlement> = load_batch(app.pool(), ids)
            .await
            .unwrap()
            .into_iter()
            .map(|ctx| Settlement {
                outcome: Settled::Approved { reference: format!("ref-{}", ctx.as_ref().unwrap().id) },
                ctx: ctx.unwrap(),
                at: now,
            })
            .collect();
        let mut reversed = settled.clone();
        reversed.reverse();
        let (p1, p2) = (app.pool().clone(), app.pool().clone());
        let (a, b) = tokio::join!(
            tokio::spawn(async move { record_batch(&p1, settled).await }),
            tokio::spawn(async move { record_batch(&p2, reversed).await })
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_ok() && b.is_ok(), "round {round}: {a:?} / {b:?}");
        let (a, b) = (a.unwrap().0, b.unwrap().0);
        for (i, (x, y)) in a.iter().zip(b.iter().rev()).enumerate() {
            assert!(x ^ y, "round {round}: outcome {i} recorded {} times", u8::from(*x) + u8::from(*y));
        }
        recorded += a.iter().chain(&b).filter(|r| **r).count();
    }
    assert_eq!(recorded, 300);
    assert_eq!(app.count("SELECT count(*) FROM transactions WHERE status = 'succeeded'").await, 300);
    assert_eq!(app.count("SELECT count(*) FROM events WHERE type = 'charge_succeeded'").await, 300);
}

/// The same charges sent at once through two sandbox gateways (two workers), in
/// opposite orders: their batched ledger inserts used to take the unique-key locks in
/// arrival order and could deadlock. Keys are now inserted in order: every call is
/// answered, and both gateways answer each key with the one ledger entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_sandbox_charges_in_opposite_orders_do_not_deadlock() {
    use recur::gateway::{ChargeOutcome, ChargeRequest, Gateway, sandbox::Sandbox};
    let app = spawn_app().await;
    for round in 0..5 {
        let requests: Vec<ChargeRequest> = (0..200)
            .map(|i| ChargeRequest {
                idempotency_key: format!("recur_txn_deadlock_{round}_{i}"),
                merchant_key: app.merchant.key,
                amount: "1.00".parse().unwrap(),
                currency: "EUR".into(),
                customer_account_id: format!("c-{i}"),
                payment_method: "pm_sandbox_ok".into(),
                scope: Uuid::now_v7(),
                sequence: None,
            })
            .collect();
        let (a, b) = (
            Arc::new(Sandbox::new(app.pool().clone(), Duration::ZERO)),
            Arc::new(Sandbox::new(app.pool().clone(), Duration::ZERO)),
        );
        let calls = requests
            .iter()
            .cloned()
            .map(|r| (a.clone(), r))
            .chain(requests.iter().rev().cloned().map(|r| (b.clone(), r)));
        let tasks: Vec<_> =
            calls.map(|(g, r)| tokio::spawn(async move { (r.idempotency_key.clone(), g.charge(r).await) })).collect();
        let mut references = std::collections::HashMap::new();
        for t in tasks {
            let (key, outcome) = t.await.unwrap();
            let Ok(ChargeOutcome::Approved { reference }) = outcome else {
                panic!("round {round}: {key}: {outcome:?}")
            };
            assert_eq!(references.entry(key).or_insert(reference.clone()), &reference, "two references for one key");
        }
        assert_eq!(references.len(), 200);
    }
    assert_eq!(app.ledger_count().await, 1000);
}
