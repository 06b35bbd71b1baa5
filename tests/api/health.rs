//! Health endpoints and the router's own answers: unknown routes, wrong methods and
//! oversized bodies are problems too.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{assert_problem, send_full, spawn_app};

#[tokio::test]
async fn healthz_and_readyz() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        // No credentials needed.
        let r = send_full(app.client.get(format!("{}{path}", app.base))).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert!(r.body["status"].is_string(), "{path}: {}", r.body);
    }
    let r = send_full(app.client.get(format!("{}/readyz", app.base))).await;
    assert_eq!(r.body["postgres"], "ok");
    assert_eq!(r.body["redis"], "ok");
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::GET, "/v1"),
        (Method::GET, "/v1/widgets"),
        (Method::POST, "/v2/plans"),
        (Method::GET, "/v1/plans/a/b/c"),
        (Method::DELETE, "/"),
    ] {
        // With and without credentials.
        for rb in [app.request(method.clone(), path), app.client.request(method.clone(), format!("{}{path}", app.base))]
        {
            let r = send_full(rb).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}: {}", r.body);
            assert_problem(&r, 404);
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let app = spawn_app().await;
    let before = app.state_snapshot().await;
    for (method, path) in [
        (Method::PUT, "/v1/plans"),
        (Method::DELETE, "/v1/plans"),
        (Method::PUT, "/v1/plans/0190d7e4-0000-7000-8000-000000000000"),
        (Method::GET, "/v1/plans/0190d7e4-0000-7000-8000-000000000000/activate"),
        (Method::PATCH, "/v1/events"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/openapi.json"),
        (Method::GET, "/admin/merchants"),
    ] {
        let r = send_full(app.request(method.clone(), path).json(&json!({}))).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", r.body);
        assert_problem(&r, 405);
        let allow = r.header("allow").unwrap_or_default();
        assert!(!allow.is_empty(), "{method} {path}: no Allow header");
    }
    app.assert_state_unchanged(&before, "wrong methods").await;
}

#[tokio::test]
async fn bodies_over_256_kib_are_413_problems() {
    let app = spawn_app().await;
    // A syntactically valid plan whose description alone is over the limit.
    let big = json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1},
        "description": "x".repeat(256 * 1024)});
    let before = app.state_snapshot().await;
    let r = send_full(app.request(Method::POST, "/v1/plans").json(&big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_problem(&r, 413);
    app.assert_state_unchanged(&before, "oversized plan").await;
    let plan = app.active_plan("9.99").await;
    let before_plan = app.state_snapshot().await;
    for path in [format!("/v1/plans/{plan}"), "/v1/subscriptions".to_owned(), "/v1/payment-series".to_owned()] {
        let method = if path.contains(&plan) { Method::PATCH } else { Method::POST };
        let r = send_full(app.request(method, &path).json(&big)).await;
        assert_problem(&r, 413);
    }
    app.assert_state_unchanged(&before_plan, "oversized bodies").await;
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 1);
    // Just under the limit is read (and then judged on its merits).
    let under = json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1},
        "description": "x".repeat(200 * 1024)});
    let r = send_full(app.request(Method::POST, "/v1/plans").json(&under)).await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), ["description"]);
}
