//! (docs/api.md#idempotency-keys): `Idempotency-Key` replays the first response for the same body and refuses
//! a different one; concurrent duplicates create one object; `partnerReference`
//! duplicates are a 409 naming the existing object.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app};

fn sub_body(plan: &str, acct: &str) -> Value {
    json!({"customer": {"customerAccountId": acct}, "planId": plan, "paymentMethod": "pm_sandbox_ok"})
}

#[tokio::test]
async fn same_key_same_body_replays_the_first_response() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let body = sub_body(&plan, "c-1");
    let send =
        || app.send_full(app.request(Method::POST, "/v1/subscriptions").header("Idempotency-Key", "k-1").json(&body));
    let first = send().await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None, "the first response is not a replay");
    app.advance(120).await;
    let second = send().await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body, "the stored response is replayed as it was");
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM events WHERE object_type = 'subscription'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 1);

    // A changed object still replays the response as it was first given.
    let sid = first.body["id"].as_str().unwrap();
    let (s, _) = app.patch(&format!("/v1/subscriptions/{sid}"), json!({"description": "changed"})).await;
    assert_eq!(s, StatusCode::OK);
    let third = send().await;
    assert_eq!(third.body, first.body);

    // Without a key, the same body creates another subscription.
    let (s, other) = app.post("/v1/subscriptions", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_ne!(other["id"], first.body["id"]);
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 2);
}

#[tokio::test]
async fn same_key_different_body_is_422() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let post = |path: &str, body: Value| {
        app.send_full(app.request(Method::POST, path).header("Idempotency-Key", "k-1").json(&body))
    };
    let first = post("/v1/subscriptions", sub_body(&plan, "c-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let before = app.state_snapshot().await;
    for (path, body) in [
        ("/v1/subscriptions", sub_body(&plan, "c-2")),
        ("/v1/subscriptions", json!({"customer": {"customerAccountId": "c-1"}, "planId": plan})),
        // Same bytes on another route is another request.
        ("/v1/plans", json!({"name": "x", "amount": "1", "currency": "EUR", "interval": {"unit": "day", "count": 1}})),
    ] {
        let r = post(path, body).await;
        assert_problem(&r, 422);
        assert_eq!(r.header("idempotent-replayed"), None);
    }
    app.assert_state_unchanged(&before, "idempotency key reused").await;
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 1);
}

#[tokio::test]
async fn keys_belong_to_one_merchant() {
    let app = spawn_app().await;
    let b = app.new_merchant("b").await;
    let body = json!({"name": "x", "amount": "1", "currency": "EUR", "interval": {"unit": "day", "count": 1}});
    let a1 =
        app.send_full(app.request(Method::POST, "/v1/plans").header("Idempotency-Key", "shared").json(&body)).await;
    let b1 = app
        .send_full(app.request_as(&b, Method::POST, "/v1/plans").header("Idempotency-Key", "shared").json(&body))
        .await;
    assert_eq!(a1.status, StatusCode::CREATED);
    assert_eq!(b1.status, StatusCode::CREATED);
    assert_eq!(b1.header("idempotent-replayed"), None, "B must not get A's response");
    assert_ne!(a1.body["id"], b1.body["id"]);
    assert_eq!(app.count(&format!("SELECT count(*) FROM plans WHERE merchant_id = '{}'", b.id)).await, 1);
    assert_eq!(app.count(&format!("SELECT count(*) FROM plans WHERE merchant_id = '{}'", app.merchant.id)).await, 1);
}

#[tokio::test]
async fn concurrent_duplicates_create_one_subscription() {
    let app = Arc::new(spawn_app().await);
    let plan = app.active_plan("9.99").await;
    let body = sub_body(&plan, "c-1");
    let requests = (0..10).map(|_| {
        let app = app.clone();
        let body = body.clone();
        tokio::spawn(async move {
            app.send_full(app.request(Method::POST, "/v1/subscriptions").header("Idempotency-Key", "race").json(&body))
                .await
        })
    });
    let replies: Vec<_> = join_all(requests).await.into_iter().map(|r| r.unwrap()).collect();
    for r in &replies {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let ids: std::collections::HashSet<&str> = replies.iter().map(|r| r.body["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "different ids: {ids:?}");
    let fresh = replies.iter().filter(|r| r.header("idempotent-replayed").is_none()).count();
    assert_eq!(fresh, 1, "exactly one request did the work");
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM events WHERE object_type = 'subscription'").await, 1);
}

#[tokio::test]
async fn concurrent_duplicates_create_one_series_transaction() {
    let app = Arc::new(spawn_app().await);
    let (s, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": "c-1"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{series}");
    let path = format!("/v1/payment-series/{}/transactions", series["id"].as_str().unwrap());
    let requests = (0..10).map(|_| {
        let app = app.clone();
        let path = path.clone();
        tokio::spawn(async move {
            app.send_full(
                app.request(Method::POST, &path).header("Idempotency-Key", "charge-1").json(&json!({"amount": "5.00"})),
            )
            .await
        })
    });
    let replies: Vec<_> = join_all(requests).await.into_iter().map(|r| r.unwrap()).collect();
    for r in &replies {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["id"], replies[0].body["id"]);
    }
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, 1);
}

#[tokio::test]
async fn actions_replay_too() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app.subscription(sub_body(&plan, "c-1")).await;
    let path = format!("/v1/subscriptions/{}/pause", sub["id"].as_str().unwrap());
    let send = || app.send_full(app.request(Method::POST, &path).header("Idempotency-Key", "pause-1").json(&json!({})));
    let first = send().await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = send().await;
    assert_eq!(second.status, StatusCode::OK, "a replay, not a 409: {}", second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(app.event_types(sub["id"].as_str().unwrap()).await, ["created", "status_changed"]);
    // Without the key the second pause is a conflict.
    let r = app.send_full(app.request(Method::POST, &path).json(&json!({}))).await;
    assert_problem(&r, 409);
}

#[tokio::test]
async fn a_failed_request_does_not_burn_its_key() {
    let app = spawn_app().await;
    let (_, draft) = app
        .post(
            "/v1/plans",
            json!({"name": "d", "amount": "1", "currency": "EUR", "interval": {"unit": "month", "count": 1}}),
        )
        .await;
    let pid = draft["id"].as_str().unwrap();
    let path = format!("/v1/plans/{pid}/archive");
    // A draft cannot be archived: 409, and the key is not stored with it.
    let r = app.send_full(app.request(Method::POST, &path).header("Idempotency-Key", "arch").json(&json!({}))).await;
    assert_problem(&r, 409);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
    let (s, _) = app.post(&format!("/v1/plans/{pid}/activate"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let r = app.send_full(app.request(Method::POST, &path).header("Idempotency-Key", "arch").json(&json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "archived");
    assert_eq!(r.header("idempotent-replayed"), None);
}

async fn partner_reference_conflict(app: &TestApp, path: &str, body: &Value, first_id: &str, key: Option<&str>) {
    let before = app.state_snapshot().await;
    let mut rb = app.request(Method::POST, path).json(body);
    if let Some(k) = key {
        rb = rb.header("Idempotency-Key", k);
    }
    let r = app.send_full(rb).await;
    assert_problem(&r, 409);
    assert_eq!(r.body["existingId"], json!(first_id), "the 409 names the existing object: {}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("partnerReference"), "{}", r.body);
    app.assert_state_unchanged(&before, "duplicate partnerReference").await;
}

#[tokio::test]
async fn partner_reference_is_unique_per_merchant() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let mut body = sub_body(&plan, "c-1");
    body["partnerReference"] = json!("order-42");
    let first = app
        .send_full(app.request(Method::POST, "/v1/subscriptions").header("Idempotency-Key", "p-1").json(&body))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body["partnerReference"], "order-42");
    let first_id = first.body["id"].as_str().unwrap();

    // Another key, no key, and another body with the same reference: all 409.
    partner_reference_conflict(&app, "/v1/subscriptions", &body, first_id, Some("p-2")).await;
    partner_reference_conflict(&app, "/v1/subscriptions", &body, first_id, None).await;
    let mut other = sub_body(&plan, "c-2");
    other["partnerReference"] = json!("order-42");
    partner_reference_conflict(&app, "/v1/subscriptions", &other, first_id, None).await;
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
    // The first key still replays.
    let again = app
        .send_full(app.request(Method::POST, "/v1/subscriptions").header("Idempotency-Key", "p-1").json(&body))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body["id"], first.body["id"]);

    // Another merchant may use the same reference.
    let b = app.new_merchant("b").await;
    let plan_b = {
        let (s, p) = TestApp::send(app.request_as(&b, Method::POST, "/v1/plans").json(&json!({"name": "x",
            "amount": "1", "currency": "EUR", "interval": {"unit": "day", "count": 1}, "status": "active"})))
        .await;
        assert_eq!(s, StatusCode::CREATED);
        p["id"].as_str().unwrap().to_owned()
    };
    let mut body_b = sub_body(&plan_b, "c-1");
    body_b["partnerReference"] = json!("order-42");
    let (s, sb) = TestApp::send(app.request_as(&b, Method::POST, "/v1/subscriptions").json(&body_b)).await;
    assert_eq!(s, StatusCode::CREATED, "{sb}");
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 2);
}

#[tokio::test]
async fn concurrent_partner_references_create_one_subscription() {
    let app = Arc::new(spawn_app().await);
    let plan = app.active_plan("9.99").await;
    let mut body = sub_body(&plan, "c-1");
    body["partnerReference"] = json!("order-race");
    let requests = (0..8).map(|_| {
        let app = app.clone();
        let body = body.clone();
        tokio::spawn(async move { app.send_full(app.request(Method::POST, "/v1/subscriptions").json(&body)).await })
    });
    let replies: Vec<_> = join_all(requests).await.into_iter().map(|r| r.unwrap()).collect();
    let created: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert_eq!(created.len(), 1, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    let id = &created[0].body["id"];
    for r in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_problem(r, 409);
        assert_eq!(&r.body["existingId"], id, "{}", r.body);
    }
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
}

#[tokio::test]
async fn a_replay_wins_over_state_that_changed_since() {
    // The stored response is replayed even when the same request would now be refused:
    // a client retrying after a lost response must get its subscription back.
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let body = sub_body(&plan, "c-1");
    let send =
        || app.send_full(app.request(Method::POST, "/v1/subscriptions").header("Idempotency-Key", "k").json(&body));
    let first = send().await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let (s, _) = app.post(&format!("/v1/plans/{plan}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let again = send().await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    // Without the key, the archived plan is refused.
    let r = app.send_full(app.request(Method::POST, "/v1/subscriptions").json(&body)).await;
    assert_problem(&r, 422);
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);

    // Series charges likewise, after the series was cancelled.
    let (_, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": "c-1"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        )
        .await;
    let path = format!("/v1/payment-series/{}/transactions", series["id"].as_str().unwrap());
    let charge = || {
        app.send_full(app.request(Method::POST, &path).header("Idempotency-Key", "c").json(&json!({"amount": "1.00"})))
    };
    let first = charge().await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let (s, _) = app.post(&format!("/v1/payment-series/{}/cancel", series["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let again = charge().await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body, first.body);
}
