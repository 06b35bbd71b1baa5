//! (docs/api.md#test-clocks): test clocks are for sandbox merchants only; bad input on
//! their routes is a 4xx problem naming each bad field and stores nothing; a clock is
//! visible and usable only by its merchant.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Merchant, TestApp, spawn_app};
use crate::validation::rejected;

async fn refused(app: &TestApp, m: &Merchant, method: Method, path: &str, body: Value, status: u16, fields: &[&str]) {
    let what = format!("{method} {path} {body}");
    rejected(app, app.request_as(m, method, path).json(&body), status, fields, &what).await;
}

fn sub_body(clock: &str) -> Value {
    json!({"customer": {"customerAccountId": "c"}, "amount": "10.00", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok", "testClockId": clock})
}

#[tokio::test]
async fn a_live_merchant_cannot_create_or_use_a_test_clock() {
    let app = spawn_app().await;
    let (s, clock) = app.post("/v1/test-clocks", json!({"frozenTime": "2030-01-01T00:00:00Z"})).await;
    assert_eq!(s, StatusCode::CREATED, "{clock}");
    let c = recur::merchants::create(app.pool(), "live", false).await.unwrap();
    let live = Merchant { id: c.merchant_id, key: c.merchant_key, secret: c.secret };
    let body = json!({"frozenTime": "2030-01-01T00:00:00Z"});
    refused(&app, &live, Method::POST, "/v1/test-clocks", body, 403, &[]).await;
    let id = clock["id"].as_str().unwrap();
    refused(&app, &live, Method::POST, "/v1/subscriptions", sub_body(id), 403, &[]).await;
    let (s, b) = TestApp::send(app.request_as(&live, Method::GET, "/v1/test-clocks")).await;
    assert_eq!((s, &b["data"]), (StatusCode::OK, &json!([])));
    let path = format!("/v1/test-clocks/{id}/advance");
    refused(&app, &live, Method::POST, &path, json!({"to": "2031-01-01T00:00:00Z"}), 404, &[]).await;
}

#[tokio::test]
async fn bad_test_clock_input_is_a_problem_and_stores_nothing() {
    let app = spawn_app().await;
    let me = Merchant { id: app.merchant.id, key: app.merchant.key, secret: app.merchant.secret.clone() };
    let (_, clock) = app.post("/v1/test-clocks", json!({"frozenTime": "2030-01-01T00:00:00Z", "name": "q1"})).await;
    let id = clock["id"].as_str().unwrap().to_owned();
    for (body, status, fields) in [
        (json!({}), 400, vec!["frozenTime"]),
        (json!({"frozenTime": "yesterday"}), 400, vec!["frozenTime"]),
        (json!({"frozenTime": 5}), 400, vec!["frozenTime"]),
        (json!({"frozenTime": "2030-01-01T00:00:00Z", "speed": 2}), 400, vec!["speed"]),
        (json!({"frozenTime": "2030-01-01T00:00:00Z", "name": "x".repeat(300)}), 422, vec!["name"]),
    ] {
        refused(&app, &me, Method::POST, "/v1/test-clocks", body, status, &fields).await;
    }
    let path = format!("/v1/test-clocks/{id}/advance");
    for (body, status, fields) in [
        (json!({}), 400, vec!["to"]),
        (json!({"to": "soon"}), 400, vec!["to"]),
        (json!({"to": "2031-01-01T00:00:00Z", "by": 1}), 400, vec!["by"]),
        (json!({"to": "2029-12-31T23:59:59Z"}), 409, vec![]),
    ] {
        refused(&app, &me, Method::POST, &path, body, status, &fields).await;
    }
    let unknown = format!("/v1/test-clocks/{}/advance", Uuid::now_v7());
    refused(&app, &me, Method::POST, &unknown, json!({"to": "2031-01-01T00:00:00Z"}), 404, &[]).await;
    // A subscription names only a clock of its own merchant.
    refused(&app, &me, Method::POST, "/v1/subscriptions", sub_body(&Uuid::now_v7().to_string()), 422, &["testClockId"])
        .await;
    let other = app.new_merchant("other sandbox").await;
    refused(&app, &other, Method::POST, "/v1/subscriptions", sub_body(&id), 422, &["testClockId"]).await;
    let (s, _) = TestApp::send(app.request_as(&other, Method::GET, &format!("/v1/test-clocks/{id}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Forward moves, to the same instant too; the list pages.
    let (s, moved) = app.post(&path, json!({"to": "2030-01-01T00:00:00Z"})).await;
    assert_eq!((s, &moved["frozenTime"]), (StatusCode::OK, &json!("2030-01-01T00:00:00Z")));
    let (s, moved) = app.post(&path, json!({"to": "2045-06-01T12:00:00Z"})).await;
    assert_eq!((s, &moved["frozenTime"]), (StatusCode::OK, &json!("2045-06-01T12:00:00Z")));
    app.post("/v1/test-clocks", json!({"frozenTime": "2030-01-01T00:00:00Z"})).await;
    let (s, page) = app.get("/v1/test-clocks?limit=1").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!((page["data"].as_array().unwrap().len(), &page["data"][0]["id"]), (1, &json!(id)));
    let (_, rest) = app.get(&format!("/v1/test-clocks?limit=1&cursor={}", page["nextCursor"].as_str().unwrap())).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert!(rest["nextCursor"].is_null());
}
