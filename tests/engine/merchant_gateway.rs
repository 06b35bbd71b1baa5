//! Each merchant charged at its own gateway (docs/gateway-protocol.md#per-merchant-gateways):
//! a `recur all` process (the process default: the sandbox) charges one merchant at a
//! real `recur acquirer` on loopback and another at the sandbox, picks up a change made
//! by another process within the TTL, and never writes the secret to its logs or
//! metrics.

use std::time::Duration;

use recur::config::Settings;
use recur::gateway::registry::CONFIG_TTL;
use recur::webhooks::signing;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::http_gateway::acquirer;
use crate::support::{
    ADMIN_TOKEN, Child, Merchant, TestApp, eventually, free_port, fresh_settings, spawn_app_with, wait_for,
};

const KEY: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";

/// A `recur all` process over the test's database and namespace, its logs (debug,
/// JSON lines) in a file.
struct Recur {
    _child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Recur {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn start_recur(app: &TestApp) -> Recur {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("recur-merchant-gateway-{}.jsonl", Uuid::now_v7().simple()));
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .arg("all")
            .envs(app.child_env())
            .env("RECUR_LISTEN", format!("127.0.0.1:{port}"))
            .env("RECUR_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RECUR_SECRET_KEY", KEY)
            .env("RECUR_LOG", "debug")
            .env("RECUR_LOG_FORMAT", "json")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("recur all starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = app.client.clone();
    let healthz = format!("{base}/healthz");
    wait_for("recur all answers", 30, || {
        let (client, url) = (client.clone(), healthz.clone());
        async move { client.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    Recur { _child: child, base, log }
}

impl Recur {
    fn as_merchant(&self, app: &TestApp, m: &Merchant, method: Method, path: &str) -> reqwest::RequestBuilder {
        app.client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(m.key, Some(&m.secret))
            .header("X-API-KEY", m.key.to_string())
    }

    fn as_admin(&self, app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
        app.client.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN)
    }
}

/// A subscription of `m` due now, created through `recur`'s API: the merchant's own
/// gateway judges its payment method.
async fn due_subscription(app: &TestApp, recur: &Recur, m: &Merchant, payment_method: &str) -> Uuid {
    let now = app.clock_now().await;
    let body = json!({"customer": {"customerAccountId": format!("c-{}", Uuid::now_v7())}, "amount": "10.00",
        "currency": "EUR", "interval": {"unit": "month", "count": 1}, "startAt": now.to_rfc3339(),
        "paymentMethod": payment_method});
    let (s, b) = TestApp::send(recur.as_merchant(app, m, Method::POST, "/v1/subscriptions").json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().parse().unwrap()
}

/// The idempotency key of a subscription's first charge, once it succeeded.
async fn charged(app: &TestApp, sub: Uuid) -> String {
    eventually("the first charge to succeed", Duration::from_secs(30), async || {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT t.status::text, t.idempotency_key FROM billing_cycles c JOIN transactions t ON t.billing_cycle_id = c.id
             WHERE c.subscription_id = $1 AND c.sequence = 1 AND t.attempt = 1",
        )
        .bind(sub)
        .fetch_optional(app.pool())
        .await
        .unwrap();
        match row {
            Some((status, key)) if status == "succeeded" => Ok(key),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn in_sandbox_ledger(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sandbox_charges WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_merchant_is_charged_at_its_own_gateway_and_the_secret_is_never_logged() {
    let app = spawn_app_with(Settings { secret_key: Some(KEY.to_owned().into()), ..fresh_settings() }).await;
    let acq = acquirer(|_| {}).await;
    let secret = acq.secret.clone();
    let a = app.new_merchant("charged at the acquirer").await;
    let b = &app.merchant;
    let recur = start_recur(&app).await;

    // Merchant A chooses the acquirer, through the process that will charge it.
    let choice = json!({"gateway": {"kind": "http", "baseUrl": acq.url(), "secret": secret}});
    let path = format!("/admin/merchants/{}", a.key);
    let (s, body) = TestApp::send(recur.as_admin(&app, Method::PATCH, &path).json(&choice)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // pm_ok is the acquirer's token (the sandbox refuses it), pm_sandbox_ok the sandbox's.
    let sub_a = due_subscription(&app, &recur, &a, "pm_ok").await;
    let sub_b = due_subscription(&app, &recur, b, "pm_sandbox_ok").await;
    let key_a = charged(&app, sub_a).await;
    let key_b = charged(&app, sub_b).await;
    assert_eq!((acq.charged(&key_a).await, in_sandbox_ledger(&app, &key_a).await), (1, 0), "A at the acquirer");
    assert_eq!((acq.charged(&key_b).await, in_sandbox_ledger(&app, &key_b).await), (0, 1), "B at the sandbox");
    let merchant: Uuid = sqlx::query_scalar("SELECT merchant_key FROM sandbox_charges WHERE idempotency_key = $1")
        .bind(&key_b)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(merchant, b.key);

    // Another process (this test's app) returns A to the default: `recur all` charges A's
    // next subscription at the sandbox once its cached choice has expired.
    let (s, body) = TestApp::send(app.admin(Method::PATCH, &path).json(&json!({"gateway": null}))).await;
    assert_eq!((s, &body["gateway"]), (StatusCode::OK, &Value::Null), "{body}");
    tokio::time::sleep(CONFIG_TTL + Duration::from_millis(500)).await;
    let sub_a2 = due_subscription(&app, &recur, &a, "pm_sandbox_ok").await;
    let key_a2 = charged(&app, sub_a2).await;
    assert_eq!((acq.charged(&key_a2).await, in_sandbox_ledger(&app, &key_a2).await), (0, 1), "A back on the sandbox");
    assert_eq!(acq.ledger_size().await, 1);

    // The secret is in no metric and no log line; the logs did record the run.
    let metrics = app.client.get(format!("{}/metrics", recur.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("recur_gateway_requests_total"), "the http gateway's metrics are there");
    let logs = std::fs::read_to_string(&recur.log).unwrap();
    assert!(logs.contains("merchant gateway changed") && logs.contains("\"DEBUG\""), "debug logs captured:\n{logs}");
    let key_part = secret.strip_prefix(signing::PREFIX).unwrap();
    for (what, text) in [("metrics", &metrics), ("logs", &logs)] {
        assert!(!text.contains(&secret) && !text.contains(key_part), "the secret is in the {what}");
    }
}
