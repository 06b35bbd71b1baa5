//! Bad input on every webhook route (docs/webhooks.md#endpoints): a 4xx problem naming
//! each bad field, never a 5xx, and nothing stored.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app};

/// Refused with `status`, each of `fields` named, the state unchanged.
async fn refused(app: &TestApp, method: Method, path: &str, body: Option<Value>, status: u16, fields: &[&str]) {
    let what = format!("{method} {path} {body:?}");
    let rb = app.request(method, path);
    let rb = match body {
        Some(b) => rb.json(&b),
        None => rb,
    };
    crate::validation::rejected(app, rb, status, fields, &what).await;
}

async fn an_endpoint(app: &TestApp) -> String {
    let (s, b) = app.post("/v1/webhook-endpoints", json!({"url": "https://example.com/hook"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_endpoint_creations_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let post = Method::POST;
    let path = "/v1/webhook-endpoints";
    // The body's shape (a field missing, of the wrong type, unknown): 400.
    refused(&app, post.clone(), path, Some(json!({})), 400, &["url"]).await;
    for url in ["not a url", "ftp://example.com/hook", "https://user:pw@example.com/hook", "/relative"] {
        refused(&app, post.clone(), path, Some(json!({"url": url})), 422, &["url"]).await;
    }
    let long = format!("https://example.com/{}", "a".repeat(2100));
    refused(&app, post.clone(), path, Some(json!({"url": long})), 422, &["url"]).await;
    refused(
        &app,
        post.clone(),
        path,
        Some(json!({"url": "https://example.com", "eventTypes": []})),
        422,
        &["eventTypes"],
    )
    .await;
    refused(
        &app,
        post.clone(),
        path,
        Some(json!({"url": "https://example.com", "eventTypes": ["billing_cycle.succeeded", "charge.*", "nope"]})),
        422,
        &["eventTypes[1]", "eventTypes[2]"],
    )
    .await;
    refused(&app, post.clone(), path, Some(json!({"url": 5})), 400, &["url"]).await;
    refused(&app, post.clone(), path, Some(json!({"url": "https://example.com", "colour": "red"})), 400, &["colour"])
        .await;
    // Both bad fields named in one answer.
    refused(
        &app,
        post.clone(),
        path,
        Some(json!({"url": "ftp://x", "eventTypes": ["nope"]})),
        422,
        &["url", "eventTypes[0]"],
    )
    .await;
    let raw = app.request(post, path).header("content-type", "application/json").body("{\"url\": ");
    let r = app.send_full(raw).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_problem(&r, 400);
}

#[tokio::test]
async fn the_seventeenth_endpoint_is_a_conflict() {
    let app = spawn_app().await;
    for _ in 0..16 {
        an_endpoint(&app).await;
    }
    refused(&app, Method::POST, "/v1/webhook-endpoints", Some(json!({"url": "https://example.com/17"})), 409, &[])
        .await;
}

#[tokio::test]
async fn bad_endpoint_updates_and_rotations_are_refused() {
    let app = spawn_app().await;
    let id = an_endpoint(&app).await;
    let path = format!("/v1/webhook-endpoints/{id}");
    refused(&app, Method::PATCH, &path, Some(json!({"url": "gopher://x"})), 422, &["url"]).await;
    refused(&app, Method::PATCH, &path, Some(json!({"status": "paused"})), 400, &["status"]).await;
    refused(&app, Method::PATCH, &path, Some(json!({"eventTypes": ["*", "x.y.z"]})), 422, &["eventTypes[1]"]).await;
    let rotate = format!("{path}/rotate-secret");
    for bad in [-1, 604_801] {
        refused(&app, Method::POST, &rotate, Some(json!({"expiresInSeconds": bad})), 422, &["expiresInSeconds"]).await;
    }
    for bad_id in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let status = if bad_id.len() == 36 { 404 } else { 400 };
        refused(&app, Method::GET, &format!("/v1/webhook-endpoints/{bad_id}"), None, status, &[]).await;
        refused(&app, Method::DELETE, &format!("/v1/webhook-endpoints/{bad_id}"), None, status, &[]).await;
        refused(&app, Method::POST, &format!("/v1/webhook-deliveries/{bad_id}/retry"), None, status, &[]).await;
    }
}

#[tokio::test]
async fn bad_delivery_queries_and_replays_are_refused() {
    let app = spawn_app().await;
    let id = an_endpoint(&app).await;
    let deliveries = format!("/v1/webhook-endpoints/{id}/deliveries");
    refused(&app, Method::GET, &format!("{deliveries}?status=lost"), None, 400, &[]).await;
    refused(&app, Method::GET, &format!("{deliveries}?limit=0"), None, 400, &[]).await;
    refused(&app, Method::GET, &format!("{deliveries}?startingAfter=garbage"), None, 400, &[]).await;
    let replay = format!("/v1/webhook-endpoints/{id}/replay");
    refused(&app, Method::POST, &replay, Some(json!({})), 400, &["since"]).await;
    refused(&app, Method::POST, &replay, Some(json!({"since": "yesterday"})), 400, &["since"]).await;
    refused(
        &app,
        Method::POST,
        &replay,
        Some(json!({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"})),
        422,
        &["since"],
    )
    .await;
}
