//! Graceful drain (docs/guarantees.md#graceful-drain): SIGTERM to a busy worker process stops it taking jobs,
//! lets in-flight charges finish within the drain timeout, and it exits 0; a new
//! worker finishes the rest, and every due cycle is charged exactly once.

use std::time::{Duration, Instant};

use crate::support::{EngineOpts, eventually, seed_due, spawn_app};

const N: i64 = 2_000;

#[tokio::test]
async fn sigterm_drains_a_busy_worker_and_a_new_one_finishes_the_rest() {
    let app = spawn_app().await;
    let now = app.clock_now().await;
    seed_due(&app, N, now, "pm_sandbox_ok").await;
    let _scheduler = app.start_engine(EngineOpts { worker: false, ..EngineOpts::default() });
    // 200 ms per gateway call, 100 jobs at a time per queue: ~4 s of charging, so the
    // signal lands while charges are in flight.
    let worker_env =
        [("RECUR_SANDBOX_LATENCY_MS", "200"), ("RECUR_DRAIN_TIMEOUT", "10s"), ("RECUR_CONCURRENCY", "100")];
    let mut worker = app.spawn_process(&["worker"], &worker_env);

    let succeeded = || app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'");
    // Signal once a good part is charged and charges are in flight (fetched by the worker).
    let in_flight =
        || async { recur::queue::stats::stats(&app.rt.queue, jobs::Queue::ChargeTransaction).await.unwrap().running };
    let (at_signal, running) = eventually("100 charged and charges in flight", Duration::from_secs(40), async || {
        assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited on its own");
        let n = succeeded().await;
        let running = if n >= 100 { in_flight().await } else { 0 };
        if running > 0 { Ok((n, running)) } else { Err(format!("{n} charged, {running} in flight")) }
    })
    .await;
    assert!(at_signal < N, "every cycle was charged before the signal ({at_signal}): nothing to drain");
    let signalled = Instant::now();
    worker.sigterm();
    let status =
        worker.exit_within(Duration::from_secs(15)).await.expect("the worker exits within the drain timeout + 5 s");
    let took = signalled.elapsed();
    assert!(status.success(), "a drained worker exits 0, got {status}");
    assert_eq!(status.code(), Some(0));
    let after_exit = succeeded().await;
    eprintln!(
        "drain: {at_signal} charged at SIGTERM ({running} in flight), exit 0 after {took:?}, {after_exit} charged at exit"
    );
    assert!(after_exit > at_signal, "the charges in flight at SIGTERM were finished, not dropped");
    assert!(after_exit < N, "the drained worker stopped taking jobs, yet charged everything ({after_exit})");
    // In-flight charges finished: every approved gateway call was recorded before exit.
    let unrecorded = app
        .count(
            "SELECT count(*) FROM sandbox_charges l JOIN transactions t ON t.idempotency_key = l.idempotency_key
             WHERE t.status <> 'succeeded'",
        )
        .await;
    assert_eq!(unrecorded, 0, "charges approved by the gateway but left unrecorded by the drained worker");
    app.assert_exactly_once().await;

    // Nothing moves with no worker: the only one has exited (its status is in hand)
    // and this process runs a scheduler alone, so no charge can happen before the next
    // worker starts; none did since the exit.
    assert_eq!(succeeded().await, after_exit, "nothing is charged while no worker runs");

    let _worker2 = app.spawn_process(&["worker"], &[("RECUR_SANDBOX_LATENCY_MS", "200")]);
    eventually("every seeded cycle charged", Duration::from_secs(45), async || {
        let n = succeeded().await;
        if n == N { Ok(()) } else { Err(n) }
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM billing_cycles").await, N);
    assert_eq!(app.ledger_count().await, N);
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn the_drain_timeout_bounds_the_wait_and_unfinished_charges_return() {
    let app = spawn_app().await;
    let now = app.clock_now().await;
    seed_due(&app, 200, now, "pm_sandbox_ok").await;
    let _scheduler = app.start_engine(EngineOpts { worker: false, ..EngineOpts::default() });
    // Every gateway call outlasts the 1 s drain timeout.
    let env = [("RECUR_SANDBOX_LATENCY_MS", "5000"), ("RECUR_DRAIN_TIMEOUT", "1s"), ("RECUR_CONCURRENCY", "50")];
    let mut worker = app.spawn_process(&["worker"], &env);
    eventually("charges in flight", Duration::from_secs(30), async || {
        recur::queue::stats::stats(&app.rt.queue, jobs::Queue::ChargeTransaction).await.unwrap().running > 0
    })
    .await;
    let signalled = Instant::now();
    worker.sigterm();
    let status =
        worker.exit_within(Duration::from_secs(6)).await.expect("the worker exits within the drain timeout + 5 s");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit 0 after the drain timeout too");
    assert!(took >= Duration::from_millis(900), "the worker waited for its in-flight charges ({took:?})");
    eprintln!("drain timeout: exit 0 after {took:?}");
    let done = app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await;
    assert_eq!(done, 0, "no 5 s gateway call finished within the 1 s drain");
    // The sandbox books a charge before its latency has elapsed, so calls cut off by the
    // drain may already be in its ledger without a recorded outcome (a gateway timeout
    // after the charge). The same-key re-run below must record each of them once.
    assert!(app.ledger_count().await <= 50, "at most the 50 in-flight calls reached the gateway");

    // The unfinished charges come back (orphaned jobs, expired leases) to a new worker.
    let _worker2 = app.spawn_process(&["worker"], &[]);
    eventually("every seeded cycle charged", Duration::from_secs(45), async || {
        let n = app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await;
        if n == 200 { Ok(()) } else { Err(n) }
    })
    .await;
    assert_eq!(app.ledger_count().await, 200);
    app.assert_exactly_once().await;
}
