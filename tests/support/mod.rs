//! Test harness: every test gets its own Postgres database and its own Redis key
//! namespace, both removed when the `TestApp` is dropped, so tests run in parallel
//! against the real servers without seeing each other.
#![allow(dead_code)]

mod engine;
pub mod fault_proxy;
pub mod pages;
mod process;
pub mod receiver;
mod wait;

use std::net::SocketAddr;
use std::sync::Arc;

use recur::cli::Runtime;
use recur::config::{ClockMode, RateLimitSettings, Settings};
use recur::ratelimit::Rate;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use engine::{EngineHandle, EngineOpts};
#[allow(unused_imports)]
pub use process::{Child, CliOutput, free_port, free_port_below_ephemeral, spawn_recur};
#[allow(unused_imports)]
pub use wait::{eventually, try_eventually, wait_for};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn pg_base() -> String {
    std::env::var("RECUR_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("RECUR_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Settings for a fresh database and namespace.
pub fn fresh_settings() -> Settings {
    let id = Uuid::now_v7().simple().to_string();
    Settings {
        database_url: format!("{}/recur_test_{id}", pg_base()),
        redis_url: redis_url(),
        redis_namespace: format!("recur-test-{id}"),
        db_pool: 10,
        clock: ClockMode::Manual,
        gateway: "sandbox".into(),
        sandbox_latency_ms: 0,
        admin_token: Some(ADMIN_TOKEN.into()),
        secret_key: None,
        no_migrate: false,
        lease_seconds: 5,
        // Replaced by the address the test app listens on (spawn_app_with).
        public_url: "http://127.0.0.1:8080".into(),
        http_gateway: Default::default(),
        rate_limits: roomy_rate_limits(),
    }
}

/// Rate limits no test meets unless it means to: the limiter still runs (one Redis
/// call per request), at rates far above what a test sends. Tests of the limits set
/// their own (tests/api/rate_limits.rs).
pub fn roomy_rate_limits() -> RateLimitSettings {
    let roomy = Rate::per_second(1_000_000, 1_000_000);
    RateLimitSettings {
        rate_limit_writes: roomy,
        rate_limit_reads: roomy,
        rate_limit_admin: roomy,
        rate_limit_auth_failures: roomy,
        rate_limit_checkout_sessions: roomy,
        rate_limit_customer_sessions: roomy,
        rate_limit_card_submissions: roomy,
        ..RateLimitSettings::default()
    }
}

pub struct Merchant {
    pub id: Uuid,
    pub key: Uuid,
    pub secret: String,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub rt: Arc<Runtime>,
    pub merchant: Merchant,
    pub settings: Settings,
    cleanup: Cleanup,
}

/// Start the API on a random port over a fresh database, with one sandbox merchant.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(fresh_settings()).await
}

pub async fn spawn_app_with(mut settings: Settings) -> TestApp {
    let _ = tracing_subscriber_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The URLs recur hands out (checkout, portal) lead to this app.
    settings.public_url = format!("http://{addr}");
    let rt = Arc::new(Runtime::start(&settings).await.expect("runtime starts"));
    let serve = recur::api::serve(listener, rt.app());
    tokio::spawn(async move { serve.await });
    let creds = recur::merchants::create(&rt.pool, "test merchant", true).await.unwrap();
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        merchant: Merchant { id: creds.merchant_id, key: creds.merchant_key, secret: creds.secret },
        cleanup: Cleanup { database_url: settings.database_url.clone(), namespace: settings.redis_namespace.clone() },
        settings,
        rt,
    }
}

fn tracing_subscriber_init() -> Option<()> {
    if std::env::var("TEST_LOG").is_ok() {
        recur::telemetry::init_tracing();
    }
    Some(())
}

impl TestApp {
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.rt.pool
    }

    /// A second merchant of the same app.
    pub async fn new_merchant(&self, name: &str) -> Merchant {
        let c = recur::merchants::create(&self.rt.pool, name, true).await.unwrap();
        Merchant { id: c.merchant_id, key: c.merchant_key, secret: c.secret }
    }

    pub fn request_as(&self, m: &Merchant, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(m.key, Some(&m.secret))
            .header("X-API-KEY", m.key.to_string())
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(&self.merchant, method, path)
    }

    pub fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn send(rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = rb.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(self.request(Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(self.request(Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.request(Method::DELETE, path)).await
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.admin(Method::GET, path)).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(self.admin(Method::POST, path).json(&body)).await
    }

    /// Create an active monthly EUR plan; returns its id.
    pub async fn active_plan(&self, amount: &str) -> String {
        let (s, b) = self
            .post(
                "/v1/plans",
                json!({"name": "Gold", "amount": amount, "currency": "EUR", "interval": {"unit": "month", "count": 1}, "status": "active"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().unwrap().to_owned()
    }

    /// Create a subscription from a JSON body; asserts 201.
    pub async fn subscription(&self, body: Value) -> Value {
        let (s, b) = self.post("/v1/subscriptions", body).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(self.pool()).await.unwrap()
    }

    pub async fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.rt.clock.now().await.unwrap()
    }

    pub async fn set_clock(&self, rfc3339: &str) {
        let (s, b) = self.admin_post("/admin/clock", json!({"now": rfc3339})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    pub async fn advance(&self, seconds: i64) {
        let (s, b) = self.admin_post("/admin/clock", json!({"advanceSeconds": seconds})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

/// A response with its headers, for assertions on content type and replay headers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `field` of every entry of a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

/// Send and keep status, headers and the JSON body (or the text as a JSON string).
pub async fn send_full(rb: reqwest::RequestBuilder) -> Reply {
    let res = rb.send().await.expect("request sent");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Reply { status, headers, body }
}

/// Assert an RFC 9457 problem response with this status: the content type and the
/// `type`, `title`, `status` and `detail` members, and every `errors` entry well formed.
#[track_caller]
pub fn assert_problem(r: &Reply, status: u16) {
    assert_eq!(r.status.as_u16(), status, "unexpected status; body: {}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/problem+json"), "content-type {ct:?}; body: {}", r.body);
    let b = &r.body;
    assert!(b["type"].as_str().is_some_and(|t| !t.is_empty()), "problem without type: {b}");
    assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()), "problem without title: {b}");
    assert_eq!(b["status"], json!(status), "problem status member: {b}");
    assert!(b["detail"].as_str().is_some_and(|t| !t.is_empty()), "problem without detail: {b}");
    if let Some(errors) = b.get("errors") {
        let errors = errors.as_array().expect("errors is an array");
        for e in errors {
            assert!(e["field"].as_str().is_some_and(|f| !f.is_empty()), "error without field: {b}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without message: {b}");
        }
    }
}

/// Tables a request can write; snapshots of them prove that nothing changed.
pub const STATE_TABLES: &[&str] = &[
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_births",
    "merchants",
    "customers",
    "plans",
    "subscriptions",
    "subscription_changes",
    "test_clocks",
    "billing_cycles",
    "payment_links",
    "payment_series",
    "transactions",
    "events",
    "idempotency_keys",
    "sandbox_charges",
    "page_sessions",
    "merchant_settings",
    "checkout_sessions",
    "customer_sessions",
];

impl TestApp {
    pub async fn send_full(&self, rb: reqwest::RequestBuilder) -> Reply {
        send_full(rb).await
    }

    /// Every row of `table` as canonical JSON text (row order independent).
    pub async fn table_snapshot(&self, table: &str) -> String {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb)::text FROM {table} t"
        )))
        .fetch_one(self.pool())
        .await
        .unwrap()
    }

    /// Snapshots of every table in [`STATE_TABLES`].
    pub async fn state_snapshot(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(STATE_TABLES.len());
        for t in STATE_TABLES {
            out.push((*t, self.table_snapshot(t).await));
        }
        out
    }

    /// Assert that no table changed since `before` was taken.
    pub async fn assert_state_unchanged(&self, before: &[(&'static str, String)], context: &str) {
        let after = self.state_snapshot().await;
        for ((table, b), (_, a)) in before.iter().zip(after.iter()) {
            assert_eq!(b, a, "{context}: table {table} changed");
        }
    }

    /// The events of one object through the API, oldest first: `(type, data)`.
    pub async fn events_of(&self, object_id: &str) -> Vec<(String, Value)> {
        let (s, b) = self.get(&format!("/v1/events?objectId={object_id}&limit=100")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"].clone()))
            .collect()
    }

    /// Just the event types of one object, oldest first.
    pub async fn event_types(&self, object_id: &str) -> Vec<String> {
        self.events_of(object_id).await.into_iter().map(|(t, _)| t).collect()
    }
}

/// Drops the test database and deletes the namespace's Redis keys.
struct Cleanup {
    database_url: String,
    namespace: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var("RECUR_TEST_KEEP").is_ok() {
            eprintln!("kept test database {} and namespace {}", self.database_url, self.namespace);
            return;
        }
        let db = self.database_url.rsplit('/').next().unwrap_or_default().to_owned();
        let ns = self.namespace.clone();
        // Drop runs inside the test's runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                drop_database(&db).await;
                if let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    delete_namespace(&mut conn, &ns).await;
                }
            });
        })
        .join();
    }
}

/// Drop a database of a test's, if it exists.
pub async fn drop_database(db: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await {
        let drop = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut c).await;
    }
}

/// A database a test made for something other than recur (e.g. the acquirer
/// simulator's), dropped with the guard unless `RECUR_TEST_KEEP` is set.
pub struct DatabaseGuard {
    pub name: String,
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        if std::env::var("RECUR_TEST_KEEP").is_ok() {
            eprintln!("kept test database {}", self.name);
            return;
        }
        let db = self.name.clone();
        // Drop runs inside the test's runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(drop_database(&db));
        })
        .join();
    }
}

pub async fn delete_namespace(conn: &mut redis::aio::MultiplexedConnection, ns: &str) {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap_or((0, vec![]));
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("UNLINK").arg(&keys).query_async(conn).await;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

impl TestApp {
    /// Ledger entries (sandbox charges) of this test's database.
    pub async fn ledger_count(&self) -> i64 {
        self.count("SELECT count(*) FROM sandbox_charges").await
    }

    /// The exactly-once invariants: one ledger entry per succeeded cycle (and per
    /// succeeded series transaction), no cycle with two approved transactions, and
    /// every approved transaction's key in the ledger.
    pub async fn assert_exactly_once(&self) {
        let ledger = self.ledger_count().await;
        let succeeded_txns = self.count("SELECT count(*) FROM transactions WHERE status = 'succeeded'").await;
        let succeeded_cycles = self.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await;
        let series_ok = self
            .count("SELECT count(*) FROM transactions WHERE status = 'succeeded' AND payment_series_id IS NOT NULL")
            .await;
        let doubles = self
            .count(
                "SELECT count(*) FROM (SELECT billing_cycle_id FROM transactions WHERE status = 'succeeded'
                 AND billing_cycle_id IS NOT NULL GROUP BY billing_cycle_id HAVING count(*) > 1) d",
            )
            .await;
        let unmatched = self
            .count(
                "SELECT count(*) FROM transactions t WHERE t.status = 'succeeded'
                 AND NOT EXISTS (SELECT 1 FROM sandbox_charges l WHERE l.idempotency_key = t.idempotency_key)",
            )
            .await;
        assert_eq!(doubles, 0, "a cycle has two approved transactions");
        assert_eq!(unmatched, 0, "an approved transaction has no ledger entry");
        assert_eq!(ledger, succeeded_txns, "ledger entries != succeeded transactions");
        assert_eq!(ledger, succeeded_cycles + series_ok, "ledger entries != succeeded cycles + series charges");
    }
}

/// Insert `n` active monthly subscriptions of the test merchant, all due at `due`,
/// in three set-based statements (seeding is not what the tests measure).
pub async fn seed_due(app: &TestApp, n: i64, due: chrono::DateTime<chrono::Utc>, payment_method: &str) {
    let pool = app.pool();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE seed ON COMMIT DROP AS
         SELECT g, (md5(random()::text || g)::uuid) AS cust, (md5(random()::text || g || 's')::uuid) AS sub
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO customers (id, merchant_id, customer_account_id)
         SELECT cust, $1, 'seed-' || sub FROM seed",
    )
    .bind(app.merchant.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (id, merchant_id, customer_id, amount, currency, interval_unit, interval_count,
            retry_schedule_hours, start_at, payment_method, status, anchor_at, anchor_sequence, next_sequence, next_charge_at)
         SELECT sub, $1, cust, 9.99, 'EUR', 'month', 1, '{24,72,120}', $2, $3, 'active', $2, 1, 1, $2 FROM seed",
    )
    .bind(app.merchant.id)
    .bind(due)
    .bind(payment_method)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}
