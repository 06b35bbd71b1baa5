//! Each merchant's gateway through the admin API
//! (docs/gateway-protocol.md#per-merchant-gateways): `PATCH` and `GET
//! /admin/merchants/{merchantKey}`, the secret sealed at rest for its merchant, never
//! answered, and bad input refused field by field.

use recur::config::Settings;
use recur::secrets::SecretKey;
use recur::webhooks::signing;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Reply, TestApp, assert_problem, fresh_settings, send_full, spawn_app, spawn_app_with};

const KEY: &str = "5d2c8f0e4b7a19c3e6f80a2d4c6e8f1a3b5d7f9e0c2a4e6b8d0f1a3c5e7a9b0d";
const OTHER_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

async fn app_with_key() -> TestApp {
    spawn_app_with(Settings { secret_key: Some(KEY.to_owned().into()), ..fresh_settings() }).await
}

async fn patch(app: &TestApp, merchant_key: Uuid, body: Value) -> Reply {
    send_full(app.admin(Method::PATCH, &format!("/admin/merchants/{merchant_key}")).json(&body)).await
}

async fn view(app: &TestApp, merchant_key: Uuid) -> Reply {
    send_full(app.admin(Method::GET, &format!("/admin/merchants/{merchant_key}"))).await
}

/// Neither the secret nor its key part (the base64 after `whsec_`) is in `text`.
#[track_caller]
fn assert_hidden(text: &str, secret: &str) {
    let key_part = secret.strip_prefix(signing::PREFIX).unwrap();
    assert!(!text.contains(secret) && !text.contains(key_part), "the secret shows: {text}");
}

async fn sealed(app: &TestApp, merchant_id: Uuid) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT gateway_secret_enc FROM merchants WHERE id = $1")
        .bind(merchant_id)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_http_gateway_is_stored_sealed_for_its_merchant_and_never_answered() {
    let app = app_with_key().await;
    let m = &app.merchant;
    let secret = signing::new_secret();
    let r =
        patch(&app, m.key, json!({"gateway": {"kind": "http", "baseUrl": "http://127.0.0.1:9/acq", "secret": secret}}))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let g = &r.body["gateway"];
    assert_eq!(
        (g["kind"].as_str(), g["baseUrl"].as_str(), &g["secretSet"]),
        (Some("http"), Some("http://127.0.0.1:9/acq"), &json!(true))
    );
    assert!(g["updatedAt"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok()), "{g}");
    assert_eq!(r.body["merchantKey"], json!(m.key));
    assert_eq!(r.body["merchantId"], json!(m.id));
    assert!(r.body.get("secret").is_none(), "the merchant's API secret is not shown either: {}", r.body);
    assert_hidden(&r.body.to_string(), &secret);
    assert_hidden(&format!("{:?}", r.headers), &secret);

    let got = view(&app, m.key).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body, r.body, "GET shows what PATCH answered");
    assert_hidden(&got.body.to_string(), &secret);

    // At rest: not the secret; it opens with the key, for this merchant only.
    let bytes = sealed(&app, m.id).await.expect("a sealed secret");
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "stored in clear");
    assert_hidden(&String::from_utf8_lossy(&bytes), &secret);
    let key = SecretKey::parse(KEY).unwrap();
    assert_eq!(key.open(m.id, &bytes).unwrap().expose(), secret);
    let other = app.new_merchant("other").await;
    assert!(key.open(other.id, &bytes).is_err(), "another merchant's id does not open it");
    assert!(SecretKey::parse(OTHER_KEY).unwrap().open(m.id, &bytes).is_err(), "another key does not open it");
    // Copied to another merchant's row, it does not become that merchant's secret.
    sqlx::query(
        "UPDATE merchants SET gateway_kind = 'http', gateway_base_url = 'http://127.0.0.1:9/',
             gateway_secret_enc = $2, gateway_updated_at = now() WHERE id = $1",
    )
    .bind(other.id)
    .bind(&bytes)
    .execute(app.pool())
    .await
    .unwrap();
    let r = send_full(
        app.request_as(&other, Method::POST, "/v1/payment-series")
            .json(&json!({"customer": {"customerAccountId": "c-1"}, "currency": "EUR", "paymentMethod": "pm_ok"})),
    )
    .await;
    assert_problem(&r, 503);
    assert_hidden(&r.body.to_string(), &secret);

    // Nor in the metrics.
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert_hidden(&metrics, &secret);
}

#[tokio::test]
async fn sandbox_and_null_replace_the_choice_and_the_secret_goes_with_it() {
    let app = app_with_key().await;
    let m = &app.merchant;
    let secret = signing::new_secret();
    let http = json!({"gateway": {"kind": "http", "baseUrl": "https://acquirer.example/", "secret": secret}});
    assert_eq!(patch(&app, m.key, http.clone()).await.status, StatusCode::OK);

    let r = patch(&app, m.key, json!({"gateway": {"kind": "sandbox"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let g = &r.body["gateway"];
    assert_eq!((g["kind"].as_str(), &g["baseUrl"], &g["secretSet"]), (Some("sandbox"), &Value::Null, &json!(false)));
    assert_eq!(sealed(&app, m.id).await, None, "the sealed secret is gone");

    assert_eq!(patch(&app, m.key, http).await.status, StatusCode::OK);
    let r = patch(&app, m.key, json!({"gateway": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["gateway"], Value::Null, "the process default");
    assert_eq!(view(&app, m.key).await.body["gateway"], Value::Null);
    assert_eq!(sealed(&app, m.id).await, None);
    let changed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT gateway_updated_at FROM merchants WHERE id = $1")
            .bind(m.id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(changed.is_some(), "a return to the default is a change too (other processes rebuild)");
}

/// The payment methods a merchant may use follow its gateway at once in the process
/// that changed it: the sandbox knows only its tokens, an acquirer judges any token.
#[tokio::test]
async fn payment_methods_are_checked_by_the_merchants_own_gateway() {
    let app = app_with_key().await;
    let series = |pm: &str| json!({"customer": {"customerAccountId": "c-1"}, "currency": "EUR", "paymentMethod": pm});
    let (s, b) = app.post("/v1/payment-series", series("pm_visa_ok")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the default sandbox refuses it: {b}");

    let secret = signing::new_secret();
    let r = patch(
        &app,
        app.merchant.key,
        json!({"gateway": {"kind": "http", "baseUrl": "http://127.0.0.1:9", "secret": secret}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (s, b) = app.post("/v1/payment-series", series("pm_visa_ok")).await;
    assert_eq!(s, StatusCode::CREATED, "the merchant's acquirer judges it when charging: {b}");
    // Another merchant of the same process keeps the default.
    let other = app.new_merchant("other").await;
    let r = send_full(app.request_as(&other, Method::POST, "/v1/payment-series").json(&series("pm_visa_ok"))).await;
    assert_problem(&r, 400);

    assert_eq!(patch(&app, app.merchant.key, json!({"gateway": null})).await.status, StatusCode::OK);
    let (s, b) = app.post("/v1/payment-series", series("pm_visa_ok")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "back on the sandbox: {b}");
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_every_bad_field_and_changes_nothing() {
    let app = app_with_key().await;
    let key = app.merchant.key;
    let secret = signing::new_secret();
    let http = |url: &str, secret: &str| json!({"gateway": {"kind": "http", "baseUrl": url, "secret": secret}});
    let cases: Vec<(&str, Value, u16, Vec<&str>)> = vec![
        ("unknown kind", json!({"gateway": {"kind": "paypal"}}), 422, vec!["gateway.kind"]),
        ("no kind", json!({"gateway": {}}), 422, vec!["gateway.kind"]),
        ("nothing to change", json!({}), 422, vec!["body"]),
        ("missing baseUrl", json!({"gateway": {"kind": "http", "secret": secret}}), 422, vec!["gateway.baseUrl"]),
        ("missing both", json!({"gateway": {"kind": "http"}}), 422, vec!["gateway.baseUrl", "gateway.secret"]),
        ("bad URL", http("not a url", &secret), 422, vec!["gateway.baseUrl"]),
        ("ftp URL", http("ftp://acquirer.example/", &secret), 422, vec!["gateway.baseUrl"]),
        ("URL with credentials", http("http://op:pw@acquirer.example/", &secret), 422, vec!["gateway.baseUrl"]),
        ("URL with a query", http("http://acquirer.example/?a=1", &secret), 422, vec!["gateway.baseUrl"]),
        ("empty secret", http("http://acquirer.example/", ""), 422, vec!["gateway.secret"]),
        ("secret not whsec_", http("http://acquirer.example/", "sk_live_123"), 422, vec!["gateway.secret"]),
        ("bad URL and secret", http("mailto:x@y", ""), 422, vec!["gateway.baseUrl", "gateway.secret"]),
        (
            "sandbox with a secret",
            json!({"gateway": {"kind": "sandbox", "secret": secret}}),
            422,
            vec!["gateway.secret"],
        ),
        (
            "sandbox with a URL",
            json!({"gateway": {"kind": "sandbox", "baseUrl": "http://x/"}}),
            422,
            vec!["gateway.baseUrl"],
        ),
        ("unknown field", json!({"gateway": {"kind": "sandbox", "region": "eu"}}), 400, vec!["gateway.region"]),
        ("unknown top-level field", json!({"gateway": null, "name": "x"}), 400, vec!["name"]),
        (
            "secret of the wrong type",
            json!({"gateway": {"kind": "http", "baseUrl": "http://x/", "secret": 5}}),
            400,
            vec!["gateway.secret"],
        ),
        ("gateway as a string", json!({"gateway": secret}), 400, vec!["gateway"]),
        ("not an object", json!([secret]), 400, vec!["body"]),
    ];
    let before = app.state_snapshot().await;
    for (what, body, status, fields) in cases {
        let r = patch(&app, key, body).await;
        assert_problem(&r, status);
        assert_eq!(r.error_fields(), fields, "{what}: {}", r.body);
        assert_hidden(&r.body.to_string(), &secret);
    }
    // Not JSON, or no body.
    let path = format!("/admin/merchants/{key}");
    let r = send_full(app.admin(Method::PATCH, &path).header("content-type", "application/json").body("{\"gateway\":"))
        .await;
    assert_problem(&r, 400);
    let r = send_full(app.admin(Method::PATCH, &path)).await;
    assert_problem(&r, 400);
    // Unknown or malformed merchant keys.
    let body = json!({"gateway": {"kind": "sandbox"}});
    assert_problem(&patch(&app, Uuid::now_v7(), body.clone()).await, 404);
    assert_problem(&view(&app, Uuid::now_v7()).await, 404);
    let r = send_full(app.admin(Method::PATCH, "/admin/merchants/not-a-uuid").json(&body)).await;
    assert_problem(&r, 400);
    assert_eq!(r.error_fields(), ["merchantKey"]);
    // Without the admin token, or with a merchant's credentials.
    let r = send_full(app.client.patch(format!("{}{path}", app.base)).json(&body)).await;
    assert_problem(&r, 403);
    let r = send_full(app.client.get(format!("{}{path}", app.base)).bearer_auth("wrong")).await;
    assert_problem(&r, 403);
    let r = send_full(app.request(Method::PATCH, &path).json(&body)).await;
    assert_problem(&r, 403);
    app.assert_state_unchanged(&before, "refused changes").await;
}

#[tokio::test]
async fn without_a_secret_key_a_secret_is_refused_never_stored_in_clear() {
    let app = spawn_app().await;
    let key = app.merchant.key;
    let secret = signing::new_secret();
    let before = app.state_snapshot().await;
    let r = patch(&app, key, json!({"gateway": {"kind": "http", "baseUrl": "http://127.0.0.1:9/", "secret": secret}}))
        .await;
    assert_problem(&r, 409);
    assert!(r.body["detail"].as_str().unwrap().contains("RECUR_SECRET_KEY"), "{}", r.body);
    assert_hidden(&r.body.to_string(), &secret);
    app.assert_state_unchanged(&before, "a secret without a key").await;
    // Choices without a secret need no key.
    let r = patch(&app, key, json!({"gateway": {"kind": "sandbox"}})).await;
    assert_eq!((r.status, r.body["gateway"]["kind"].as_str()), (StatusCode::OK, Some("sandbox")), "{}", r.body);
}
