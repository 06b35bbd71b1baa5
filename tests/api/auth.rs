//! (docs/api.md#authentication) auth: HTTP Basic merchantKey:secret plus `X-API-KEY: merchantKey` on every
//! `/v1` request; the admin API wants `Authorization: Bearer $RECUR_ADMIN_TOKEN`.
//! Every refusal is a 403 problem and changes nothing.

use base64::Engine;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{ADMIN_TOKEN, TestApp, assert_problem, send_full, spawn_app};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Requests to `method path` that must all be refused, each with a label.
async fn bad_credentials(app: &TestApp, method: Method, path: &str) -> Vec<(&'static str, RequestBuilder)> {
    let url = format!("{}{path}", app.base);
    let c = &app.client;
    let m = &app.merchant;
    let key = m.key.to_string();
    let other = app.new_merchant(&format!("other {}", Uuid::now_v7())).await;
    let unknown = Uuid::now_v7();
    let r = || c.request(method.clone(), &url);
    vec![
        ("no credentials", r()),
        ("Basic without X-API-KEY", r().basic_auth(m.key, Some(&m.secret))),
        ("X-API-KEY without Basic", r().header("X-API-KEY", &key)),
        ("wrong secret", r().basic_auth(m.key, Some("sk_wrong")).header("X-API-KEY", &key)),
        ("empty secret", r().basic_auth(m.key, Some("")).header("X-API-KEY", &key)),
        ("no secret at all", r().basic_auth(m.key, None::<&str>).header("X-API-KEY", &key)),
        ("another merchant's secret", r().basic_auth(m.key, Some(&other.secret)).header("X-API-KEY", &key)),
        ("unknown key", r().basic_auth(unknown, Some(&m.secret)).header("X-API-KEY", unknown.to_string())),
        (
            "X-API-KEY differs from the Basic username",
            r().basic_auth(m.key, Some(&m.secret)).header("X-API-KEY", other.key.to_string()),
        ),
        ("X-API-KEY not a UUID", r().basic_auth(m.key, Some(&m.secret)).header("X-API-KEY", "not-a-uuid")),
        ("X-API-KEY empty", r().basic_auth(m.key, Some(&m.secret)).header("X-API-KEY", "")),
        ("Basic payload not base64", r().header("Authorization", "Basic !!!not-base64!!!").header("X-API-KEY", &key)),
        (
            "Basic payload without a colon",
            r().header("Authorization", format!("Basic {}", b64(&key))).header("X-API-KEY", &key),
        ),
        (
            "Basic username not a UUID",
            r().header("Authorization", format!("Basic {}", b64(&format!("merchant:{}", m.secret))))
                .header("X-API-KEY", &key),
        ),
        ("Basic scheme without payload", r().header("Authorization", "Basic").header("X-API-KEY", &key)),
        (
            "Bearer instead of Basic",
            r().header("Authorization", format!("Bearer {}", m.secret)).header("X-API-KEY", &key),
        ),
        ("admin token instead of Basic", r().bearer_auth(ADMIN_TOKEN).header("X-API-KEY", &key)),
    ]
}

#[tokio::test]
async fn every_wrong_credential_is_a_403_problem_on_reads() {
    let app = spawn_app().await;
    app.active_plan("9.99").await;
    for (label, rb) in bad_credentials(&app, Method::GET, "/v1/plans").await {
        let r = send_full(rb).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{label}: {}", r.body);
        assert_problem(&r, 403);
        assert!(r.body.get("data").is_none(), "{label}: a refused request leaked data: {}", r.body);
    }
    // The right credentials work.
    let r = send_full(app.request(Method::GET, "/v1/plans")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_wrong_credential_is_a_403_problem_on_writes_and_stores_nothing() {
    let app = spawn_app().await;
    let body = json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1}});
    let before = app.state_snapshot().await;
    // Even with an Idempotency-Key, nothing is claimed for a refused request.
    for (label, rb) in bad_credentials(&app, Method::POST, "/v1/plans").await {
        let r = send_full(rb.header("Idempotency-Key", "auth-key").json(&body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{label}: {}", r.body);
        assert_problem(&r, 403);
    }
    // bad_credentials created merchants; nothing else may have changed.
    let after = app.state_snapshot().await;
    for ((table, b), (_, a)) in before.iter().zip(after.iter()) {
        if *table != "merchants" {
            assert_eq!(b, a, "table {table} changed after refused writes");
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);

    let r = send_full(app.request(Method::POST, "/v1/plans").header("Idempotency-Key", "auth-key").json(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 1);
}

#[tokio::test]
async fn auth_is_checked_before_the_input() {
    let app = spawn_app().await;
    let url = |p: &str| format!("{}{p}", app.base);
    // A malformed body or a bad id must not tell an unauthenticated caller anything.
    for rb in [
        app.client.post(url("/v1/plans")).body("{not json"),
        app.client.get(url("/v1/plans/not-a-uuid")),
        app.client.get(url("/v1/plans?limit=0")),
        app.client.get(url(&format!("/v1/subscriptions/{}", Uuid::now_v7()))),
        app.client.get(url("/v1/customers/c-1")),
        app.client.get(url("/v1/events")),
        app.client
            .post(url(&format!("/v1/payment-series/{}/transactions", Uuid::now_v7())))
            .json(&json!({"amount": "1"})),
    ] {
        let r = send_full(rb).await;
        assert_problem(&r, 403);
    }
}

#[tokio::test]
async fn every_v1_route_requires_credentials() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    let routes = [
        (Method::POST, "/v1/plans".to_owned()),
        (Method::GET, "/v1/plans".to_owned()),
        (Method::GET, format!("/v1/plans/{id}")),
        (Method::PATCH, format!("/v1/plans/{id}")),
        (Method::DELETE, format!("/v1/plans/{id}")),
        (Method::POST, format!("/v1/plans/{id}/activate")),
        (Method::POST, format!("/v1/plans/{id}/archive")),
        (Method::POST, "/v1/subscriptions".to_owned()),
        (Method::GET, "/v1/subscriptions".to_owned()),
        (Method::GET, format!("/v1/subscriptions/{id}")),
        (Method::PATCH, format!("/v1/subscriptions/{id}")),
        (Method::DELETE, format!("/v1/subscriptions/{id}")),
        (Method::POST, format!("/v1/subscriptions/{id}/pause")),
        (Method::POST, format!("/v1/subscriptions/{id}/resume")),
        (Method::POST, format!("/v1/subscriptions/{id}/cancel")),
        (Method::GET, format!("/v1/subscriptions/{id}/billing-cycles")),
        (Method::GET, format!("/v1/billing-cycles/{id}")),
        (Method::POST, format!("/v1/billing-cycles/{id}/retry")),
        (Method::GET, format!("/v1/transactions/{id}")),
        (Method::POST, "/v1/payment-series".to_owned()),
        (Method::GET, "/v1/payment-series".to_owned()),
        (Method::GET, format!("/v1/payment-series/{id}")),
        (Method::POST, format!("/v1/payment-series/{id}/cancel")),
        (Method::POST, format!("/v1/payment-series/{id}/transactions")),
        (Method::GET, "/v1/customers/c-1".to_owned()),
        (Method::GET, "/v1/events".to_owned()),
    ];
    for (method, path) in routes {
        let r = send_full(app.client.request(method.clone(), format!("{}{path}", app.base)).json(&json!({}))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {}", r.body);
        assert_problem(&r, 403);
        let r = send_full(
            app.client
                .request(method.clone(), format!("{}{path}", app.base))
                .basic_auth(app.merchant.key, Some("sk_wrong"))
                .header("X-API-KEY", app.merchant.key.to_string())
                .json(&json!({})),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path} with a wrong secret: {}", r.body);
    }
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let app = spawn_app().await;
    let merchants_before = app.count("SELECT count(*) FROM merchants").await;
    let clock_before = app.clock_now().await;
    let routes: [(Method, &str, Option<serde_json::Value>); 8] = [
        (Method::GET, "/admin/clock", None),
        (Method::POST, "/admin/clock", Some(json!({"advanceSeconds": 3600}))),
        (Method::POST, "/admin/merchants", Some(json!({"name": "intruder", "sandbox": true}))),
        (Method::GET, "/admin/sandbox/charges", None),
        (Method::GET, "/admin/queues", None),
        (Method::GET, "/admin/dlq", None),
        (Method::POST, "/admin/dlq/replay", Some(json!({"all": true}))),
        (Method::POST, "/admin/dlq/drain", Some(json!({}))),
    ];
    for (method, path, body) in &routes {
        let url = format!("{}{path}", app.base);
        let c = &app.client;
        let r = || {
            let rb = c.request(method.clone(), &url);
            match body {
                Some(b) => rb.json(b),
                None => rb,
            }
        };
        for (label, rb) in [
            ("no Authorization", r()),
            ("wrong token", r().bearer_auth("not-the-token")),
            ("token with a suffix", r().bearer_auth(format!("{ADMIN_TOKEN}x"))),
            ("token prefix", r().bearer_auth(&ADMIN_TOKEN[..4])),
            ("empty bearer", r().header("Authorization", "Bearer ")),
            ("token without scheme", r().header("Authorization", ADMIN_TOKEN)),
            ("token as Basic", r().basic_auth(ADMIN_TOKEN, Some(ADMIN_TOKEN))),
            (
                "merchant credentials",
                r().basic_auth(app.merchant.key, Some(&app.merchant.secret))
                    .header("X-API-KEY", app.merchant.key.to_string()),
            ),
        ] {
            let res = send_full(rb).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{method} {path} with {label}: {}", res.body);
            assert_problem(&res, 403);
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM merchants").await, merchants_before);
    assert_eq!(app.clock_now().await, clock_before, "a refused request moved the clock");

    // The right token works on each of them.
    let (s, b) = app.admin_get("/admin/clock").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["now"].is_string());
    for path in ["/admin/sandbox/charges", "/admin/queues", "/admin/dlq"] {
        let (s, b) = app.admin_get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert!(b["data"].is_array(), "{path}: {b}");
    }
    let (s, b) = app.admin_post("/admin/merchants", json!({"name": "second", "sandbox": true})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(app.count("SELECT count(*) FROM merchants").await, merchants_before + 1);
    // ...and the credentials it returns authenticate.
    let key = b["merchantKey"].as_str().unwrap();
    let r = send_full(
        app.client.get(format!("{}/v1/plans", app.base)).basic_auth(key, b["secret"].as_str()).header("X-API-KEY", key),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
