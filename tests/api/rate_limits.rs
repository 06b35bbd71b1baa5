//! (docs/operations.md#rate-limits) Fair use: per-merchant read and write buckets shared
//! through Redis, the admin API's bucket, failed authentications throttled per
//! merchantKey and per client address, 429 problems with `Retry-After`, the
//! `RateLimit-*` headers, per-merchant rates set by the operator, and the API serving
//! on when the limiter's Redis is gone. Real Redis and Postgres throughout; the
//! multi-process and Redis-down cases run `recur api` as separate processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use recur::config::{RateLimitSettings, Settings};
use recur::ratelimit::Rate;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Child, Merchant, Reply, TestApp, assert_problem, free_port, fresh_settings, roomy_rate_limits, send_full,
    spawn_app_with, wait_for,
};

fn rate(s: &str) -> Rate {
    Rate::parse(s).unwrap()
}

async fn app_with(limits: RateLimitSettings) -> TestApp {
    spawn_app_with(Settings { rate_limits: limits, ..fresh_settings() }).await
}

fn plan(name: &str) -> Value {
    json!({"name": name, "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1}})
}

fn number(r: &Reply, name: &str) -> u64 {
    r.header(name).unwrap_or_else(|| panic!("no {name} on a {} answer: {:?}", r.status, r.headers)).parse().unwrap()
}

/// A 429 as the contract has it: a `rate-limited` problem, `Retry-After` of at least
/// one second, and the `RateLimit-*` headers with nothing remaining.
#[track_caller]
fn assert_limited(r: &Reply) -> u64 {
    assert_problem(r, 429);
    assert_eq!(r.body["type"], "https://recur.dev/problems/rate-limited", "{}", r.body);
    let retry = number(r, "retry-after");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(number(r, "ratelimit-remaining"), 0);
    number(r, "ratelimit-limit");
    number(r, "ratelimit-reset");
    retry
}

/// POST plans as `m` with `workers` requests in flight until `for_`; the statuses.
async fn flood(app: &Arc<TestApp>, m: &Arc<Merchant>, workers: usize, for_: Duration) -> Vec<Reply> {
    let until = Instant::now() + for_;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (app, m) = (app.clone(), m.clone());
            tokio::spawn(async move {
                let mut out = vec![];
                let mut i = 0;
                while Instant::now() < until {
                    i += 1;
                    let body = plan(&format!("flood {w}-{i}"));
                    out.push(send_full(app.request_as(&m, Method::POST, "/v1/plans").json(&body)).await);
                }
                out
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// POST plans as `m` at `per_second`, one at a time, until `for_`.
async fn steady(app: &Arc<TestApp>, m: &Arc<Merchant>, per_second: u32, for_: Duration) -> Vec<Reply> {
    let start = Instant::now();
    let mut out = vec![];
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    while start.elapsed() < for_ {
        tick.tick().await;
        let body = plan(&format!("steady {}", out.len()));
        out.push(send_full(app.request_as(m, Method::POST, "/v1/plans").json(&body)).await);
    }
    out
}

async fn plans_of(app: &TestApp, m: &Merchant) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM plans WHERE merchant_id = $1")
        .bind(m.id)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_over_its_write_limit_gets_429s_while_another_is_served() {
    let app = Arc::new(app_with(RateLimitSettings { rate_limit_writes: rate("20/s:20"), ..roomy_rate_limits() }).await);
    let a = Arc::new(app.new_merchant("flooding").await);
    let b = Arc::new(app.new_merchant("steady").await);
    let start = Instant::now();
    let for_ = Duration::from_secs(3);
    let (flooded, calm) = tokio::join!(flood(&app, &a, 8, for_), steady(&app, &b, 10, for_));
    let elapsed = start.elapsed().as_secs_f64();

    let created: Vec<&Reply> = flooded.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    let limited: Vec<&Reply> = flooded.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(created.len() + limited.len(), flooded.len(), "only 201 and 429 expected");
    eprintln!("flood: {} sent, {} created, {} limited in {elapsed:.2}s", flooded.len(), created.len(), limited.len());
    // The burst plus the rate over the time taken (plus one for the clock's edges).
    let most = 20.0 + 20.0 * elapsed + 1.0;
    assert!(created.len() as f64 <= most, "{} writes went through; the limit allows {most:.0}", created.len());
    assert!(created.len() >= 20, "the burst was not served: {}", created.len());
    assert!(limited.len() > flooded.len() / 2, "a flood at many times the limit was mostly served");
    for r in &limited {
        assert_limited(r);
        assert_eq!(number(r, "ratelimit-limit"), 20);
    }
    for r in &created {
        assert_eq!(number(r, "ratelimit-limit"), 20);
        assert!(number(r, "ratelimit-remaining") < 20);
    }
    // The other merchant, at half its limit at the same moment: every request served.
    assert!(calm.len() >= 20, "{} steady requests", calm.len());
    for r in &calm {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // Refused requests stored nothing; served ones stored one plan each.
    assert_eq!(plans_of(&app, &a).await, created.len() as i64);
    assert_eq!(plans_of(&app, &b).await, calm.len() as i64);
}

#[tokio::test]
async fn refused_requests_change_no_state() {
    // One write a minute after a burst of two: the bucket stays empty for the test.
    let app = app_with(RateLimitSettings { rate_limit_writes: rate("1/m:2"), ..roomy_rate_limits() }).await;
    let plan_id = app.active_plan("9.99").await;
    let (s, b) = app.post("/v1/plans", plan("second")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let before = app.state_snapshot().await;
    let id = plan_id.as_str();
    let sub = json!({"customer": {"customerAccountId": "c-1"}, "planId": id, "paymentMethod": "pm_sandbox_ok"});
    for (method, path, body) in [
        (Method::POST, "/v1/plans".to_owned(), plan("third")),
        (Method::POST, "/v1/subscriptions".to_owned(), sub.clone()),
        (Method::PATCH, format!("/v1/plans/{id}"), json!({"name": "renamed"})),
        (Method::POST, format!("/v1/plans/{id}/archive"), json!({})),
        (Method::DELETE, format!("/v1/plans/{id}"), json!({})),
        (
            Method::POST,
            "/v1/payment-series".to_owned(),
            json!({"customer": {"customerAccountId": "c-2"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        ),
        (Method::POST, "/v1/webhook-endpoints".to_owned(), json!({"url": "https://example.com/hook"})),
    ] {
        let r = send_full(app.request(method.clone(), &path).header("Idempotency-Key", "limited").json(&body)).await;
        assert_limited(&r);
        assert_eq!(number(&r, "ratelimit-limit"), 2, "{method} {path}");
    }
    app.assert_state_unchanged(&before, "requests refused by the write limit").await;
    // Reads have their own bucket: still served.
    let (s, b) = app.get(&format!("/v1/plans/{id}")).await;
    assert_eq!((s, b["name"].as_str()), (StatusCode::OK, Some("Gold")), "{b}");
}

#[tokio::test]
async fn every_v1_route_answers_with_the_ratelimit_headers() {
    let app = app_with(RateLimitSettings {
        // Slow to refill, so that the remaining count only goes down during the test.
        rate_limit_reads: rate("1/m:700"),
        rate_limit_writes: rate("1/m:500"),
        ..roomy_rate_limits()
    })
    .await;
    let (_, doc) = app.get("/openapi.json").await;
    let id = uuid::Uuid::now_v7();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path.replace("{id}", &id.to_string()).replace("{customerAccountId}", "c-1");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = send_full(app.request(method.clone(), &concrete).json(&json!({}))).await;
            let limit = if method == Method::GET { 700 } else { 500 };
            assert_eq!(number(&r, "ratelimit-limit"), limit, "{method} {path} ({})", r.status);
            assert!(number(&r, "ratelimit-remaining") < limit, "{method} {path}");
            number(&r, "ratelimit-reset");
            let documented = &doc["paths"][path][method.as_str().to_lowercase()]["responses"]["429"];
            assert!(documented.is_object(), "{method} {path}: 429 not in the OpenAPI document");
            seen += 1;
        }
    }
    assert!(seen > 30, "only {seen} operations checked");
    // Remaining counts down within the bucket.
    let first = number(&app.send_full(app.request(Method::GET, "/v1/plans")).await, "ratelimit-remaining");
    let second = number(&app.send_full(app.request(Method::GET, "/v1/plans")).await, "ratelimit-remaining");
    assert!(second < first, "{first} then {second}");
}

#[tokio::test]
async fn the_operator_sets_a_merchants_own_rates() {
    let app = app_with(RateLimitSettings { rate_limit_writes: rate("1000/s:1000"), ..roomy_rate_limits() }).await;
    let other = app.new_merchant("other").await;
    let path = format!("/admin/merchants/{}", app.merchant.key);
    let r = send_full(
        app.admin(Method::PATCH, &path).json(&json!({"rateLimits": {"writes": {"perSecond": 1, "burst": 3}}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["rateLimits"], json!({"reads": null, "writes": {"perSecond": 1, "burst": 3}}));
    let (s, view) = app.admin_get(&path).await;
    assert_eq!((s, &view["rateLimits"]["writes"]["burst"]), (StatusCode::OK, &json!(3)));

    let statuses: Vec<(StatusCode, u64)> = {
        let mut v = vec![];
        for i in 0..5 {
            let r = send_full(app.request(Method::POST, "/v1/plans").json(&plan(&format!("p{i}")))).await;
            v.push((r.status, number(&r, "ratelimit-limit")));
        }
        v
    };
    let created = statuses.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert!((3..=4).contains(&created), "{statuses:?}");
    assert_eq!(statuses[4], (StatusCode::TOO_MANY_REQUESTS, 3), "{statuses:?}");
    // Another merchant keeps the default.
    let r = send_full(app.request_as(&other, Method::POST, "/v1/plans").json(&plan("other"))).await;
    assert_eq!((r.status, number(&r, "ratelimit-limit")), (StatusCode::CREATED, 1000));
    // Reads were not touched.
    let r = send_full(app.request(Method::GET, "/v1/plans")).await;
    assert_eq!(r.status, StatusCode::OK);

    // null returns the merchant to the defaults.
    let r = send_full(app.admin(Method::PATCH, &path).json(&json!({"rateLimits": null}))).await;
    assert_eq!((r.status, &r.body["rateLimits"]), (StatusCode::OK, &json!({"reads": null, "writes": null})));
    let r = send_full(app.request(Method::POST, "/v1/plans").json(&plan("after"))).await;
    assert_eq!((r.status, number(&r, "ratelimit-limit")), (StatusCode::CREATED, 1000), "{}", r.body);
}

#[tokio::test]
async fn bad_rate_limits_are_a_problem_naming_the_field() {
    let app = app_with(roomy_rate_limits()).await;
    let path = format!("/admin/merchants/{}", app.merchant.key);
    let before = app.state_snapshot().await;
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (json!({}), 422, vec!["body"]),
        (json!({"rateLimits": 5}), 400, vec!["rateLimits"]),
        (json!({"rateLimits": {}}), 422, vec!["rateLimits"]),
        (json!({"rateLimits": {"bogus": {"perSecond": 1}}}), 400, vec!["rateLimits.bogus"]),
        (json!({"rateLimits": {"writes": {}}}), 422, vec!["rateLimits.writes.perSecond"]),
        (json!({"rateLimits": {"writes": {"perSecond": 0}}}), 422, vec!["rateLimits.writes.perSecond"]),
        (json!({"rateLimits": {"writes": {"perSecond": 1.5}}}), 422, vec!["rateLimits.writes.perSecond"]),
        (json!({"rateLimits": {"reads": {"perSecond": "10"}}}), 400, vec!["rateLimits.reads.perSecond"]),
        (json!({"rateLimits": {"reads": 10}}), 400, vec!["rateLimits.reads"]),
        (
            json!({"rateLimits": {"writes": {"perSecond": 100001, "burst": 2000000}}}),
            422,
            vec!["rateLimits.writes.perSecond", "rateLimits.writes.burst"],
        ),
        (
            json!({"rateLimits": {"writes": {"perSecond": 10, "every": 1}, "reads": {"perSecond": -1}}}),
            400,
            vec!["rateLimits.writes.every", "rateLimits.reads.perSecond"],
        ),
        // A valid gateway with invalid rates: neither is stored.
        (
            json!({"gateway": {"kind": "sandbox"}, "rateLimits": {"writes": {"perSecond": 0}}}),
            422,
            vec!["rateLimits.writes.perSecond"],
        ),
    ];
    for (body, status, fields) in cases {
        let r = send_full(app.admin(Method::PATCH, &path).json(&body)).await;
        assert_problem(&r, status);
        assert_eq!(r.error_fields(), fields, "{body}: {}", r.body);
    }
    app.assert_state_unchanged(&before, "refused rateLimits").await;
    // An unknown merchant.
    let r = send_full(
        app.admin(Method::PATCH, &format!("/admin/merchants/{}", uuid::Uuid::now_v7()))
            .json(&json!({"rateLimits": {"reads": {"perSecond": 5}}})),
    )
    .await;
    assert_problem(&r, 404);
    // Valid: the burst defaults to perSecond.
    let r = send_full(app.admin(Method::PATCH, &path).json(&json!({"rateLimits": {"reads": {"perSecond": 5}}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["rateLimits"]["reads"], json!({"perSecond": 5, "burst": 5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_are_throttled_while_the_right_secret_keeps_working() {
    let app =
        Arc::new(app_with(RateLimitSettings { rate_limit_auth_failures: rate("5/m:5"), ..roomy_rate_limits() }).await);
    // The merchant's own client keeps calling with the right secret throughout.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(app.send_full(app.request(Method::GET, "/v1/plans")).await.status);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let key = app.merchant.key;
    let wrong = || {
        app.client
            .get(format!("{}/v1/plans", app.base))
            .basic_auth(key, Some("sk_wrong"))
            .header("X-API-KEY", key.to_string())
    };
    let mut retries = vec![];
    for i in 0..25 {
        let r = send_full(wrong()).await;
        if i < 5 {
            assert_problem(&r, 403);
        } else {
            retries.push(assert_limited(&r));
        }
    }
    // The delay grows while the guessing goes on.
    assert!(retries.last() > retries.first(), "Retry-After did not grow: {retries:?}");
    // The right secret still works, from the same address, in the middle of it.
    let r = app.send_full(app.request(Method::POST, "/v1/plans").json(&plan("still here"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = good.await.unwrap();
    assert!(statuses.len() >= 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "the merchant was refused: {statuses:?}");
    // Failures with no credentials at all count against the address.
    let r = send_full(app.client.get(format!("{}/v1/plans", app.base))).await;
    assert_limited(&r);
}

#[tokio::test]
async fn the_admin_api_has_its_own_limit_and_bad_tokens_are_throttled() {
    let app = app_with(RateLimitSettings {
        rate_limit_admin: rate("1/m:3"),
        rate_limit_auth_failures: rate("2/m:2"),
        ..roomy_rate_limits()
    })
    .await;
    let mut statuses = vec![];
    for _ in 0..4 {
        let r = app.send_full(app.admin(Method::GET, "/admin/queues")).await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::OK {
            assert_eq!(number(&r, "ratelimit-limit"), 3);
        } else {
            assert_limited(&r);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // The merchants' API is not the admin's bucket.
    let (s, _) = app.get("/v1/plans").await;
    assert_eq!(s, StatusCode::OK);
    let bad = || app.client.get(format!("{}/admin/queues", app.base)).bearer_auth("guess");
    assert_problem(&send_full(bad()).await, 403);
    assert_problem(&send_full(bad()).await, 403);
    assert_limited(&send_full(bad()).await);
}

/// `recur api` as a process of its own on this test's database and namespace.
async fn api_process(app: &TestApp, env: &[(&str, &str)]) -> (Child, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all: Vec<(&str, &str)> = vec![("RECUR_LISTEN", &listen), ("RECUR_NO_MIGRATE", "true")];
    all.extend_from_slice(env);
    let child = app.spawn_process(&["api"], &all);
    let base = format!("http://{listen}");
    let client = app.client.clone();
    wait_for("the api process answers", 60, || {
        let (client, base) = (client.clone(), base.clone());
        async move { client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    (child, base)
}

fn post_plan(app: &TestApp, base: &str, name: &str) -> reqwest::RequestBuilder {
    let m = &app.merchant;
    app.client
        .post(format!("{base}/v1/plans"))
        .basic_auth(m.key, Some(&m.secret))
        .header("X-API-KEY", m.key.to_string())
        .json(&plan(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_two_api_processes_sharing_redis() {
    let app = Arc::new(app_with(roomy_rate_limits()).await);
    let env = [("RECUR_RATE_LIMIT_WRITES", "10/s:10")];
    let (_one, base1) = api_process(&app, &env).await;
    let (_two, base2) = api_process(&app, &env).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(3);
    let tasks: Vec<_> = [base1, base2]
        .into_iter()
        .flat_map(|b| std::iter::repeat_n(b, 4))
        .enumerate()
        .map(|(w, base)| {
            let app = app.clone();
            tokio::spawn(async move {
                let (mut ok, mut limited, mut i) = (0u32, 0u32, 0);
                while Instant::now() < until {
                    i += 1;
                    let r = send_full(post_plan(&app, &base, &format!("p{w}-{i}"))).await;
                    match r.status {
                        StatusCode::CREATED => ok += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert_limited(&r);
                            limited += 1
                        }
                        s => panic!("{s}: {}", r.body),
                    }
                }
                (base, ok, limited)
            })
        })
        .collect();
    let mut per_process = std::collections::BTreeMap::<String, (u32, u32)>::new();
    for t in tasks {
        let (base, ok, limited) = t.await.unwrap();
        let e = per_process.entry(base).or_default();
        e.0 += ok;
        e.1 += limited;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let created: u32 = per_process.values().map(|p| p.0).sum();
    eprintln!("two processes over {elapsed:.2}s: {per_process:?}");
    let most = 10.0 + 10.0 * elapsed + 1.0;
    assert!(f64::from(created) <= most, "{created} writes through two processes; one shared limit allows {most:.0}");
    assert!(created >= 10, "{per_process:?}");
    for (base, (ok, limited)) in &per_process {
        assert!(*ok > 0 && *limited > 0, "{base}: {ok} served, {limited} limited");
    }
    assert_eq!(plans_of(&app, &app.merchant).await, i64::from(created));
}

/// A Redis of the test's own, killed when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        wait_for("the test's redis answers", 10, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        OwnRedis { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

#[tokio::test]
async fn with_the_limiters_redis_gone_requests_are_still_served() {
    let app = app_with(roomy_rate_limits()).await;
    let mut redis = OwnRedis::start().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (_api, base) = api_process(
        &app,
        &[
            ("RECUR_RATE_LIMIT_REDIS_URL", &url),
            ("RECUR_RATE_LIMIT_WRITES", "1/m:2"),
            ("RECUR_RATE_LIMIT_TIMEOUT_MS", "200"),
        ],
    )
    .await;
    // The limiter is on: two writes, then a refusal.
    let statuses = [
        send_full(post_plan(&app, &base, "a")).await.status,
        send_full(post_plan(&app, &base, "b")).await.status,
        send_full(post_plan(&app, &base, "c")).await.status,
    ];
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CREATED, StatusCode::TOO_MANY_REQUESTS]);
    redis.kill();
    // Fail open: every request served, none waits long, no RateLimit headers claimed.
    for i in 0..10 {
        let start = Instant::now();
        let r = send_full(post_plan(&app, &base, &format!("open {i}"))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(r.header("ratelimit-limit").is_none(), "{:?}", r.headers);
        assert!(start.elapsed() < Duration::from_secs(2), "request {i} took {:?}", start.elapsed());
    }
    assert_eq!(plans_of(&app, &app.merchant).await, 12);
    let text = app.client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&text, "recur_rate_limit_errors_total") >= 1.0, "{text}");
    assert_eq!(metric(&text, "recur_rate_limited_total{bucket=\"writes\"}"), 1.0);
    assert_eq!(metric(&text, "recur_rate_limited_total{bucket=\"reads\"}"), 0.0);
    assert_eq!(metric(&text, "recur_auth_failures_total"), 0.0);
}

#[tokio::test]
async fn session_creations_and_card_submissions_have_their_own_limits() {
    let app = app_with(RateLimitSettings {
        rate_limit_customer_sessions: rate("1/m:2"),
        rate_limit_card_submissions: rate("1/m:3"),
        ..roomy_rate_limits()
    })
    .await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "cust-1"}, "amount": "9.99", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}}))
        .await;
    // Customer sessions: two, then 429 from their own bucket (writes are roomy).
    let mut limits = vec![];
    for _ in 0..3 {
        let r =
            send_full(app.request(Method::POST, "/v1/customer-sessions").json(&json!({"customerAccountId": "cust-1"})))
                .await;
        limits.push((r.status.as_u16(), number(&r, "ratelimit-limit")));
    }
    assert_eq!(limits, [(201, 2), (201, 2), (429, 2)], "the headers show the bucket with the least left");

    // Card submissions on a checkout page, per client address.
    let (s, session) = app.post("/v1/checkout-sessions", json!({"subscriptionId": sub["id"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{session}");
    let path = crate::support::pages::path_of(session["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    let (cookie, csrf) = (page.cookie().unwrap(), page.csrf());
    // A number that fails its check digit: refused on the form, no gateway call.
    let fields =
        [("csrf", csrf.as_str()), ("name", "A"), ("number", "4242424242424241"), ("expiry", "12/30"), ("cvc", "123")];
    for i in 0..3 {
        let r = app.submit(&path, Some(&cookie), &fields).await;
        assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS, "submission {i}: {}", r.html);
    }
    let before = app.state_snapshot().await;
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.html);
    assert!(r.html.contains("Too many attempts"), "{}", r.html);
    assert!(r.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1), "{:?}", r.headers);
    assert!(r.header("content-security-policy").contains("default-src 'none'"), "{:?}", r.headers);
    app.assert_state_unchanged(&before, "a refused card submission").await;
    // The page itself is still shown: only submissions are limited.
    assert_eq!(app.page(&path, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn card_replacements_from_the_portal_draw_from_the_merchants_checkout_sessions() {
    let app = app_with(RateLimitSettings { rate_limit_checkout_sessions: rate("1/m:2"), ..roomy_rate_limits() }).await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "alice"}, "amount": "9.99", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let (s, session) = app.post("/v1/customer-sessions", json!({"customerAccountId": "alice"})).await;
    assert_eq!(s, StatusCode::CREATED, "{session}");
    let path = crate::support::pages::path_of(session["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (cookie, csrf) = (page.cookie().unwrap(), page.csrf());
    let sub_id = sub["id"].as_str().unwrap();
    let replace = [("csrf", csrf.as_str()), ("action", "replace_card"), ("subscription", sub_id)];
    for i in 0..2 {
        let r = app.submit(&path, Some(&cookie), &replace).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "replacement {i}: {}", r.html);
        assert!(r.header("location").starts_with("/checkout/"), "{:?}", r.headers);
    }
    let before = app.state_snapshot().await;
    let r = app.submit(&path, Some(&cookie), &replace).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.html);
    assert!(r.html.contains("Too many attempts"), "{}", r.html);
    // The same bucket as the merchant's own checkout sessions.
    let r =
        send_full(app.request(Method::POST, "/v1/checkout-sessions").json(&json!({"subscriptionId": sub_id}))).await;
    assert_limited(&r);
    app.assert_state_unchanged(&before, "refused checkout sessions").await;
    assert_eq!(app.count("SELECT count(*) FROM checkout_sessions").await, 2);
}

#[tokio::test]
async fn a_stalled_limiter_redis_costs_requests_its_timeout_only_and_limits_resume() {
    let mut redis = OwnRedis::start().await;
    let app = app_with(RateLimitSettings {
        rate_limit_writes: rate("1/m:2"),
        rate_limit_redis_url: Some(format!("redis://127.0.0.1:{}", redis.port)),
        rate_limit_timeout_ms: 200,
        ..roomy_rate_limits()
    })
    .await;
    let mut created = 0;
    let mut post = async |name: String| {
        let start = Instant::now();
        let r = send_full(app.request(Method::POST, "/v1/plans").json(&plan(&name))).await;
        if r.status == StatusCode::CREATED {
            created += 1;
        }
        (r, start.elapsed())
    };
    assert_eq!(post("a".into()).await.0.status, StatusCode::CREATED);
    assert_eq!(post("b".into()).await.0.status, StatusCode::CREATED);
    assert_limited(&post("c".into()).await.0);
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &redis.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    signal("-STOP");
    // Redis holds the connection but answers nothing: each request is served after
    // the timeout at most, without headers.
    for i in 0..5 {
        let (r, took) = post(format!("stalled {i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(r.header("ratelimit-limit").is_none(), "{:?}", r.headers);
        assert!(took < Duration::from_millis(1500), "request {i} took {took:?}");
    }
    signal("-CONT");
    // Redis is back: the bucket it kept is still spent, and the limit holds again.
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (r, _) = post("after".into()).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_limited(&last.expect("the limit never came back after Redis resumed"));
    redis.kill();
    assert_eq!(plans_of(&app, &app.merchant).await, created);
}

/// The script itself, against the real Redis: a request takes from all its buckets or
/// from none, `remaining` counts down from the burst, and recorded failures push the
/// wait out, up to the penalty's cap.
#[tokio::test]
async fn the_limiter_takes_from_every_bucket_or_from_none() {
    use recur::ratelimit::{Bucket, Draw, Limiter, Outcome};
    let ns = format!("recur-test-{}", uuid::Uuid::now_v7().simple());
    let limiter = Limiter::new(&crate::support::redis_url(), &ns, Duration::from_secs(2)).unwrap();
    let draw = |bucket, r: &str, penalty| Draw { bucket, subject: "s".into(), rate: rate(r), penalty };
    let verdicts = |o: Outcome| match o {
        Outcome::Checked(v) => v.into_iter().map(|v| (v.allowed, v.remaining)).collect::<Vec<_>>(),
        other => panic!("the limiter did not answer: {other:?}"),
    };
    let both = [draw(Bucket::Writes, "1/m:5", None), draw(Bucket::CheckoutSessions, "1/m:1", None)];
    assert_eq!(verdicts(limiter.check(&both).await), [(true, 4), (true, 0)]);
    // The second bucket is empty: refused, and the first is not drawn from.
    let refused = limiter.check(&both).await;
    assert!(!refused.allowed());
    let writes = [draw(Bucket::Writes, "1/m:5", None)];
    assert_eq!(verdicts(limiter.check(&writes).await), [(true, 3)]);

    // Failures recorded with a penalty: the wait grows by a minute ÷ 2 per try past the
    // burst of 2, and stops growing at the cap (here 2 minutes past the burst).
    let failures = [draw(Bucket::AuthAddress, "2/m:2", Some(Duration::from_secs(120)))];
    let mut waits = vec![];
    for _ in 0..10 {
        match limiter.check(&failures).await {
            Outcome::Checked(v) => waits.push((v[0].allowed, v[0].retry_after_secs())),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(&waits[..2], [(true, 1), (true, 1)], "{waits:?}");
    let refused: Vec<u64> = waits[2..].iter().map(|(allowed, w)| if *allowed { 0 } else { *w }).collect();
    assert!(refused.iter().all(|w| *w >= 1), "{waits:?}");
    assert!(refused.windows(2).all(|p| p[1] >= p[0]), "the wait shrank: {waits:?}");
    assert!(refused[0] <= 31 && refused[2] >= 59, "{waits:?}");
    assert!(*refused.last().unwrap() <= 121 + 30, "the cap did not hold: {waits:?}");

    if let Ok(client) = redis::Client::open(crate::support::redis_url())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        crate::support::delete_namespace(&mut conn, &ns).await;
    }
}
