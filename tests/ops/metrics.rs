//! Metrics (SPEC 8): every required name on the process that produces it, with sane
//! values after a known workload, explicit histogram buckets, bounded route labels,
//! and /healthz and /readyz on the worker's and the scheduler's metrics ports.

use reqwest::StatusCode;

use crate::stack::{Sample, Stack, families, has, sum};
use crate::support::wait_for;

const LATENCY: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const LAG: [f64; 13] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
const QUEUES: [&str; 5] = ["generate-cycle", "charge-transaction", "retry-charge", "trial-end", "resume"];

/// The `le` bounds of one histogram series (selected by `matching`), +Inf last.
#[track_caller]
fn buckets(samples: &[Sample], family: &str, matching: &[(&str, &str)]) -> Vec<f64> {
    let mut les: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == format!("{family}_bucket") && matching.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| if s.label("le") == "+Inf" { f64::INFINITY } else { s.label("le").parse().unwrap() })
        .collect();
    les.sort_by(f64::total_cmp);
    les.dedup();
    les
}

#[track_caller]
fn assert_buckets(samples: &[Sample], family: &str, matching: &[(&str, &str)], want: &[f64]) {
    let mut want = want.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(buckets(samples, family, matching), want, "{family}{matching:?} buckets");
    let count = sum(samples, &format!("{family}_count"), matching);
    assert!(count > 0.0, "{family}{matching:?} observed nothing");
    let inf: f64 = samples
        .iter()
        .filter(|s| {
            s.name == format!("{family}_bucket")
                && s.label("le") == "+Inf"
                && matching.iter().all(|(k, v)| s.label(k) == *v)
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(inf, count, "{family}: the +Inf bucket holds every observation");
}

fn is_uuid_like(s: &str) -> bool {
    s.split('/').any(|seg| uuid::Uuid::parse_str(seg).is_ok())
}

#[tokio::test]
async fn every_process_exports_its_metrics() {
    let mut stack = Stack::start().await;
    let app = &stack.app;
    for i in 0..3 {
        stack.step(i).await;
    }
    // 3 approved, 1 soft decline (retrying), 1 timeout (dead-lettered after 2 attempts).
    wait_for("3 approved charges", 30, || async { stack.ledger().await == 3 }).await;
    wait_for("the declined cycle retries and the timed-out one errors", 30, || async {
        app.count("SELECT count(*) FROM billing_cycles WHERE status = 'retrying'").await == 1
            && app.count("SELECT count(*) FROM billing_cycles WHERE status = 'error'").await == 1
    })
    .await;

    // Worker: its counters follow the recorded outcomes (just after each commit).
    let ledger = stack.ledger().await as f64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let worker = loop {
        let w = stack.scrape(&stack.worker_url()).await;
        if sum(&w, "recur_charges_total", &[]) == ledger + 1.0 && has(&w, "recur_jobs_total") {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "worker counters never caught up: {w:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let names = families(&worker);
    for n in [
        "recur_charges_total",
        "recur_charge_amount_total",
        "recur_gateway_duration_seconds",
        "recur_due_lag_seconds",
        "recur_jobs_total",
        "recur_job_duration_seconds",
    ] {
        assert!(names.contains(n), "worker lacks {n}: {names:?}");
    }
    for n in ["recur_queue_depth", "recur_dlq_depth", "recur_subscriptions", "recur_http_requests_total"] {
        assert!(!names.contains(n), "{n} belongs to another process, not the worker: {names:?}");
    }
    assert_eq!(sum(&worker, "recur_charges_total", &[("outcome", "succeeded")]), ledger);
    assert_eq!(
        sum(&worker, "recur_charges_total", &[("outcome", "succeeded"), ("kind", "scheduled"), ("currency", "EUR")]),
        ledger
    );
    assert_eq!(sum(&worker, "recur_charges_total", &[("outcome", "declined")]), 1.0);
    assert!(
        (sum(&worker, "recur_charge_amount_total", &[("outcome", "succeeded"), ("currency", "EUR")]) - 3.0 * 9.99)
            .abs()
            < 1e-9
    );
    assert_eq!(sum(&worker, "recur_declines_total", &[("code", "insufficient_funds")]), 1.0);
    // Job deliveries (a job can be delivered more than once: handlers are idempotent).
    let jobs = |queue: &str, outcome: &str| sum(&worker, "recur_jobs_total", &[("queue", queue), ("outcome", outcome)]);
    assert!(jobs("charge-transaction", "dead") >= 1.0);
    assert!(jobs("charge-transaction", "retry") >= 1.0);
    assert!(jobs("charge-transaction", "ok") >= 4.0);
    assert!(jobs("generate-cycle", "ok") >= 5.0);
    assert_eq!(jobs("generate-cycle", "dead") + jobs("generate-cycle", "retry"), 0.0);
    for s in worker.iter().filter(|s| s.name == "recur_jobs_total") {
        assert!(["ok", "retry", "dead"].contains(&s.label("outcome")), "{s:?}");
        assert!(QUEUES.contains(&s.label("queue")), "{s:?}");
    }
    assert_buckets(&worker, "recur_gateway_duration_seconds", &[("outcome", "approved")], &LATENCY);
    assert_buckets(&worker, "recur_gateway_duration_seconds", &[("outcome", "declined")], &LATENCY);
    assert_buckets(&worker, "recur_gateway_duration_seconds", &[("outcome", "error")], &LATENCY);
    assert_buckets(&worker, "recur_job_duration_seconds", &[("queue", "charge-transaction")], &LATENCY);
    assert_buckets(&worker, "recur_job_duration_seconds", &[("queue", "generate-cycle")], &LATENCY);
    assert_buckets(&worker, "recur_due_lag_seconds", &[], &LAG);
    // Every first attempt of a scheduled charge: 3 approved and 1 declined.
    assert_eq!(sum(&worker, "recur_due_lag_seconds_count", &[]), 4.0);

    // Scheduler: sampled gauges (every 5 s), the DLQ depth catching up with Redis.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let scheduler = loop {
        let s = stack.scrape(&stack.scheduler_url()).await;
        if sum(&s, "recur_dlq_depth", &[("queue", "charge-transaction")]) == 1.0
            && sum(&s, "recur_subscriptions", &[]) == 5.0
        {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the scheduler never sampled the dead letter: {s:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let names = families(&scheduler);
    for n in ["recur_queue_depth", "recur_dlq_depth", "recur_subscriptions", "recur_workers_alive"] {
        assert!(names.contains(n), "scheduler lacks {n}: {names:?}");
    }
    for n in ["recur_charges_total", "recur_jobs_total", "recur_http_requests_total"] {
        assert!(!names.contains(n), "{n} belongs to another process, not the scheduler: {names:?}");
    }
    for q in QUEUES {
        for state in ["pending", "scheduled", "running", "dead"] {
            assert!(
                scheduler
                    .iter()
                    .any(|s| s.name == "recur_queue_depth" && s.label("queue") == q && s.label("state") == state),
                "recur_queue_depth{{queue={q},state={state}}} missing"
            );
        }
        let dead = if q == "charge-transaction" { 1.0 } else { 0.0 };
        assert_eq!(sum(&scheduler, "recur_dlq_depth", &[("queue", q)]), dead, "{q}");
        assert_eq!(sum(&scheduler, "recur_queue_depth", &[("queue", q), ("state", "dead")]), dead, "{q}");
        assert!(sum(&scheduler, "recur_workers_alive", &[("queue", q)]) >= 1.0, "a live worker runs {q}");
    }
    assert_eq!(sum(&scheduler, "recur_subscriptions", &[("status", "past_due")]), 1.0);
    assert_eq!(sum(&scheduler, "recur_subscriptions", &[("status", "cancelled")]), 0.0, "every status is exported");
    assert!(has(&scheduler, "recur_scheduler_sweeps_total"));

    // API (this process): route templates, never raw ids.
    let api = stack.scrape(&app.base).await;
    let names = families(&api);
    for n in ["recur_http_requests_total", "recur_http_request_duration_seconds"] {
        assert!(names.contains(n), "API lacks {n}");
    }
    let http: Vec<&Sample> = api.iter().filter(|s| s.name.starts_with("recur_http_request")).collect();
    for s in &http {
        let route = s.label("route");
        assert!(route.starts_with('/') || route == "unmatched", "route label {route:?}");
        assert!(!is_uuid_like(route), "a raw id in a route label: {s:?}");
    }
    let count = |route: &str, method: &str, status: &str| {
        sum(&api, "recur_http_requests_total", &[("route", route), ("method", method), ("status", status)])
    };
    assert!(count("/v1/subscriptions/{id}", "GET", "200") >= 3.0);
    assert!(count("/v1/subscriptions/{id}", "GET", "404") >= 3.0);
    assert!(count("/v1/subscriptions/{id}/billing-cycles", "GET", "200") >= 3.0);
    assert!(count("/v1/subscriptions", "POST", "201") >= 5.0);
    assert!(count("/v1/subscriptions", "POST", "400") + count("/v1/subscriptions", "POST", "422") >= 3.0);
    assert_buckets(&api, "recur_http_request_duration_seconds", &[("route", "/v1/subscriptions/{id}")], &LATENCY);

    // Health on the metrics ports.
    for base in [stack.worker_url(), stack.scheduler_url()] {
        for path in ["/healthz", "/readyz"] {
            let res = app.client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{base}{path}");
            let body: serde_json::Value = res.json().await.unwrap();
            assert!(body["status"].is_string(), "{base}{path}: {body}");
        }
    }
    stack.assert_running();
}
