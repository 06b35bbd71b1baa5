//! A surge: 20,000 subscriptions due at the same instant on one worker. Everything is
//! charged exactly once, Redis never holds the backlog (a large backlog kills
//! apalis-redis workers: docs/architecture.md#apalis-redis-tuning), and once the janitor ran the namespace's Redis
//! memory is back near where it started (apalis-redis keeps every
//! finished task unless cleaned up: docs/architecture.md#apalis-redis-tuning).

use std::time::{Duration, Instant};

use jobs::Queue;

use crate::support::{EngineOpts, TestApp, eventually, seed_due, spawn_app};

const SURGE: i64 = 20_000;

async fn redis_conn(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.settings.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Bytes used by every key of the test's namespace (SCAN + exact MEMORY USAGE), and
/// how many keys there are.
async fn namespace_memory(app: &TestApp) -> (u64, usize) {
    let mut conn = redis_conn(app).await;
    let mut cursor: u64 = 0;
    let (mut bytes, mut keys) = (0u64, 0usize);
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", app.settings.redis_namespace))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in batch {
            let used: Option<u64> =
                redis::cmd("MEMORY").arg("USAGE").arg(&key).arg("SAMPLES").arg(0).query_async(&mut conn).await.unwrap();
            bytes += used.unwrap_or(0);
            keys += 1;
        }
        if next == 0 {
            return (bytes, keys);
        }
        cursor = next;
    }
}

/// Entries left in a queue's task data hash (`<ns>:<queue>:data`; 0 when absent).
async fn data_entries(app: &TestApp, queue: Queue) -> u64 {
    let mut conn = redis_conn(app).await;
    redis::cmd("HLEN")
        .arg(format!("{}:data", app.rt.queue.keys().queue_name(queue)))
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn registered_workers(app: &TestApp, queue: Queue) -> u64 {
    let mut conn = redis_conn(app).await;
    redis::cmd("ZCARD")
        .arg(format!("{}:workers", app.rt.queue.keys().queue_name(queue)))
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn succeeded(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_of_20000_due_at_one_instant_on_one_worker() {
    let app = spawn_app().await;
    // The worker first, so its registrations are part of the baseline.
    let worker = app.start_engine(EngineOpts { scheduler: false, ..Default::default() });
    eventually("the worker registered on every queue", Duration::from_secs(30), async || {
        let mut all = true;
        for q in Queue::ALL {
            all &= registered_workers(&app, q).await >= 1;
        }
        all
    })
    .await;
    let (before, keys_before) = namespace_memory(&app).await;

    let due = app.clock_now().await - chrono::Duration::minutes(1);
    seed_due(&app, SURGE, due, "pm_sandbox_ok").await;
    let start = Instant::now();
    let scheduler = app.start_engine(EngineOpts { worker: false, ..Default::default() });

    // Wait for all of them, watching that Redis never holds the whole surge.
    let mut peak_waiting = 0u64;
    eventually("every cycle of the surge to succeed", Duration::from_secs(120), async || {
        let done = succeeded(&app).await;
        let waiting = app.rt.queue.waiting(Queue::GenerateCycle).await.unwrap()
            + app.rt.queue.waiting(Queue::ChargeTransaction).await.unwrap();
        peak_waiting = peak_waiting.max(waiting);
        if done >= SURGE { Ok(()) } else { Err(format!("{done} of {SURGE} cycles succeeded; {waiting} jobs waiting")) }
    })
    .await;
    let elapsed = start.elapsed();
    eprintln!(
        "surge: {SURGE} charges in {elapsed:.2?} = {:.0} charges/s (peak {peak_waiting} jobs waiting in Redis)",
        SURGE as f64 / elapsed.as_secs_f64()
    );
    assert!(peak_waiting <= 8000, "Redis held a backlog of {peak_waiting} jobs (high-water mark 4000 per queue)");

    // Checked at once, and again when Redis holds no job (late duplicates have run).
    for round in 0..2 {
        if round == 1 {
            app.wait_drained().await;
        }
        assert_eq!(succeeded(&app).await, SURGE, "round {round}: succeeded cycles");
        assert_eq!(app.ledger_count().await, SURGE, "round {round}: ledger entries");
        assert_eq!(app.count("SELECT count(*) FROM billing_cycles").await, SURGE, "round {round}: cycles");
        assert_eq!(app.count("SELECT count(*) FROM transactions").await, SURGE, "round {round}: transactions");
        assert_eq!(
            app.count(
                "SELECT count(*) FROM (SELECT customer_account_id FROM sandbox_charges GROUP BY 1 HAVING count(*) > 1) d"
            )
            .await,
            0,
            "round {round}: a customer was charged twice"
        );
        assert_eq!(
            app.count("SELECT count(*) FROM subscriptions WHERE next_sequence <> 2").await,
            0,
            "round {round}: a subscription did not advance exactly one period"
        );
        app.assert_exactly_once().await;
    }

    // Nothing is left to enqueue; the janitor (every 500 ms) deletes finished tasks.
    scheduler.stop().await;
    eventually("the janitor to empty the task data hashes", Duration::from_secs(30), async || {
        let mut left = 0;
        for q in Queue::ALL {
            left += data_entries(&app, q).await;
        }
        if left == 0 { Ok(()) } else { Err(format!("{left} finished tasks left")) }
    })
    .await;
    let (after, keys_after) =
        eventually("the namespace's Redis memory back near the start", Duration::from_secs(30), async || {
            let (after, keys_after) = namespace_memory(&app).await;
            if after < before + 64 * 1024 {
                Ok((after, keys_after))
            } else {
                Err(format!("grew from {before} B to {after} B ({keys_before} → {keys_after} keys)"))
            }
        })
        .await;
    eprintln!("surge: namespace memory {before} B in {keys_before} keys before, {after} B in {keys_after} keys after");
    for q in Queue::ALL {
        assert_eq!(data_entries(&app, q).await, 0, "{q}: finished tasks left in the data hash");
    }
    worker.stop().await;
}

/// 12,000 generate jobs pushed while no worker ran (an outage with the API still
/// taking due subscriptions): past about 8,000 due tasks apalis-redis's own fetch
/// cannot promote them, so the janitor does it in chunks and the backlog drains,
/// every cycle charged once (docs/architecture.md#apalis-redis-tuning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_built_while_no_worker_ran_drains() {
    const BACKLOG: i64 = 12_000;
    let app = spawn_app().await;
    let now = app.clock_now().await;
    seed_due(&app, BACKLOG, now, "pm_sandbox_ok").await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM subscriptions").fetch_all(app.pool()).await.unwrap();
    let jobs: Vec<jobs::Job> = ids
        .into_iter()
        .map(|id| jobs::Job::GenerateCycle(jobs::GenerateCycle { subscription_id: id, sequence: 1, attempt: 0 }))
        .collect();
    app.rt.queue.push(&jobs).await.unwrap();
    // A worker only: the scheduler would find the same work in Postgres.
    let worker = app.start_engine(EngineOpts { scheduler: false, ..Default::default() });
    eventually("the backlog to drain", Duration::from_secs(120), async || {
        let n = succeeded(&app).await;
        if n == BACKLOG { Ok(()) } else { Err(format!("{n} of {BACKLOG} charged")) }
    })
    .await;
    worker.stop().await;
    assert_eq!(app.count("SELECT count(*) FROM sandbox_charges").await, BACKLOG, "each charged once");
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, BACKLOG);
}
