//! Metrics (docs/operations.md#metrics): every required name on the process that produces it, with sane
//! values after a known workload, explicit histogram buckets, bounded route labels,
//! and /healthz and /readyz on the worker's and the scheduler's metrics ports; the
//! series of known label sets at 0 from a fresh process's first scrape; and request
//! ids: echoed or generated on every response, and carried by the JSON log lines of
//! the request.

use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stack::{Sample, Stack, families, has, sum};
use crate::support::{Child, TestApp, free_port, spawn_app, wait_for};

const LATENCY: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const LAG: [f64; 13] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
const QUEUES: [&str; 6] =
    ["generate-cycle", "charge-transaction", "retry-charge", "trial-end", "resume", "deliver-webhook"];

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

/// The value of the one sample of `name` with exactly these labels.
#[track_caller]
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == *v))
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

#[tokio::test]
async fn a_fresh_worker_exports_its_known_series_at_zero() {
    // No workload: the first scrape after start.
    let stack = Stack::start().await;
    let worker = stack.scrape(&stack.worker_url()).await;
    for q in QUEUES {
        for outcome in ["ok", "retry", "dead"] {
            assert_eq!(value(&worker, "recur_jobs_total", &[("queue", q), ("outcome", outcome)]), 0.0, "{q} {outcome}");
        }
        assert_eq!(value(&worker, "recur_worker_restarts_total", &[("queue", q)]), 0.0, "{q}");
    }
    for kind in ["scheduled", "retry", "manual_retry", "payment_series", "payment_link"] {
        assert_eq!(value(&worker, "recur_gateway_errors_total", &[("kind", kind)]), 0.0, "{kind}");
    }
    let names = families(&worker);
    for n in ["recur_queue_depth", "recur_dlq_depth", "recur_subscriptions", "recur_scheduler_enqueued_total"] {
        assert!(!names.contains(n), "{n} belongs to the scheduler, not the worker: {names:?}");
    }
}

#[tokio::test]
async fn a_fresh_scheduler_exports_its_known_series_at_zero() {
    // No workload: nothing is due, so nothing is enqueued or recovered.
    let stack = Stack::start().await;
    let scheduler = stack.scrape(&stack.scheduler_url()).await;
    assert_eq!(value(&scheduler, "recur_scheduler_recovered_total", &[]), 0.0);
    for kind in ["generate", "trial_end", "resume", "retry", "recovered"] {
        assert_eq!(value(&scheduler, "recur_scheduler_enqueued_total", &[("kind", kind)]), 0.0, "{kind}");
    }
    for q in QUEUES {
        assert_eq!(value(&scheduler, "recur_dlq_depth", &[("queue", q)]), 0.0, "{q}");
        for state in ["pending", "scheduled", "running", "dead"] {
            assert_eq!(value(&scheduler, "recur_queue_depth", &[("queue", q), ("state", state)]), 0.0, "{q} {state}");
        }
    }
    let names = families(&scheduler);
    for n in ["recur_jobs_total", "recur_worker_restarts_total", "recur_gateway_errors_total"] {
        assert!(!names.contains(n), "{n} belongs to the worker, not the scheduler: {names:?}");
    }
}

fn request_id(r: &crate::support::Reply) -> &str {
    r.header("x-request-id").unwrap_or_else(|| panic!("no X-Request-Id on a {}: {r:?}", r.status))
}

#[track_caller]
fn assert_generated(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("generated id {id:?} is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "{id}");
}

/// Send `head` and `body` on a raw connection; the response's head, lower-cased.
async fn raw_head(app: &TestApp, head: String, body: Vec<u8>) -> String {
    let stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    // The server answers before taking the whole body: write on the side, ignore errors.
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    // Echoed when the client sends a sane one.
    let r = app.send_full(app.request(Method::GET, "/v1/plans").header("X-Request-Id", "client-id 42")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(request_id(&r), "client-id 42");
    // Generated when absent, and different per request.
    let a = app.send_full(app.request(Method::GET, "/v1/plans")).await;
    let b = app.send_full(app.request(Method::GET, "/v1/plans")).await;
    assert_generated(request_id(&a));
    assert_ne!(request_id(&a), request_id(&b));
    // Replaced when not sane: too long, or not printable ASCII.
    for bad in ["x".repeat(129), "tab\tinside".to_owned()] {
        let r = app.send_full(app.request(Method::GET, "/v1/plans").header("X-Request-Id", bad.as_str())).await;
        assert_generated(request_id(&r));
    }
    let long = "y".repeat(128);
    let r = app.send_full(app.request(Method::GET, "/v1/plans").header("X-Request-Id", long.as_str())).await;
    assert_eq!(request_id(&r), long);
    // Problems: an unknown route, a wrong method, missing credentials, a bad body.
    let r = app.send_full(app.request(Method::GET, "/v1/nothing-here").header("X-Request-Id", "on-404")).await;
    assert_eq!((r.status, request_id(&r)), (StatusCode::NOT_FOUND, "on-404"));
    let r = app.send_full(app.request(Method::PUT, "/v1/plans")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_generated(request_id(&r));
    let r = app.send_full(app.client.get(format!("{}/v1/plans", app.base))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_generated(request_id(&r));
    let r = app.send_full(app.request(Method::POST, "/v1/plans").json(&serde_json::json!({"name": 1}))).await;
    assert!(r.status.is_client_error(), "{r:?}");
    assert_generated(request_id(&r));
    // A body over the limit (256 KiB), refused while it is read.
    let m = &app.merchant;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", m.key, m.secret));
    let head = format!(
        "POST /v1/plans HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {basic}\r\n\
         X-API-KEY: {key}\r\nContent-Type: application/json\r\nX-Request-Id: on-413\r\n\
         Content-Length: 10000000000\r\n\r\n",
        key = m.key
    );
    let head = raw_head(&app, head, vec![b'{'; 300 * 1024]).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("\r\nx-request-id: on-413"), "{head}");
    // The unauthenticated endpoints too.
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let r = app.send_full(app.client.get(format!("{}{path}", app.base))).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_generated(request_id(&r));
    }
}

/// The JSON lines of a log file (other lines, if any, skipped).
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test]
async fn json_logs_carry_the_request_span() {
    let app = spawn_app().await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("recur-api-log-{}.jsonl", uuid::Uuid::now_v7().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let _api = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .arg("api")
            .envs(app.child_env())
            .env("RECUR_LISTEN", format!("127.0.0.1:{port}"))
            .env("RECUR_LOG_FORMAT", "json")
            .env("RECUR_LOG", "warn,recur=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("recur api starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = app.client.clone();
    wait_for("the api process answers", 30, || {
        let (client, base) = (client.clone(), base.clone());
        async move { client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    let get = |id: &str| {
        client
            .get(format!("{base}/v1/plans"))
            .basic_auth(app.merchant.key, Some(&app.merchant.secret))
            .header("X-API-KEY", app.merchant.key.to_string())
            .header("X-Request-Id", id)
            .send()
    };
    // A 200: its span closes with a debug line holding the status and latency.
    let ok_id = format!("ok-{}", uuid::Uuid::now_v7());
    assert_eq!(get(&ok_id).await.unwrap().status(), StatusCode::OK);
    // A 500: the plans table is gone, and the error line carries the request id.
    sqlx::query("ALTER TABLE plans RENAME TO plans_gone").execute(app.pool()).await.unwrap();
    let fail_id = format!("fail-{}", uuid::Uuid::now_v7());
    let res = get(&fail_id).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-request-id"], fail_id.as_str());

    let line_of = |id: &str, message: &str| {
        json_lines(&log_path).into_iter().find(|l| l["span"]["request_id"] == id && l["fields"]["message"] == message)
    };
    let mut found = (None, None);
    for _ in 0..50 {
        found = (line_of(&ok_id, "request finished"), line_of(&fail_id, "request failed"));
        if found.0.is_some() && found.1.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    let (ok, failed) = (found.0.unwrap_or_else(|| panic!("no line for {ok_id}:\n{all}")), found.1);
    let failed = failed.unwrap_or_else(|| panic!("no error line for {fail_id}:\n{all}"));
    assert_eq!(ok["level"], "DEBUG", "{ok}");
    assert_eq!(ok["span"]["name"], "request", "{ok}");
    assert_eq!(ok["span"]["method"], "GET", "{ok}");
    assert_eq!(ok["span"]["route"], "/v1/plans", "{ok}");
    assert_eq!(ok["span"]["status"], 200, "{ok}");
    assert!(ok["span"]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{ok}");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert_eq!(failed["span"]["route"], "/v1/plans", "{failed}");
    assert!(failed["fields"]["error"].as_str().is_some_and(|e| e.contains("plans")), "{failed}");
}
