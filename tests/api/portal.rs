//! Customer sessions and the portal over HTTP (docs/pages.md#the-portal): creation and
//! validation, isolation between customers and merchants, actions the merchant did
//! not enable, expiry. The actions done by clicking are in tests/browser/portal.mjs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::pages::path_of;
use crate::support::{TestApp, spawn_app};

async fn active(app: &TestApp, customer: &str, description: &str) -> String {
    let s = app
        .subscription(json!({"customer": {"customerAccountId": customer}, "amount": "9.99", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "description": description, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    s["id"].as_str().unwrap().to_owned()
}

async fn portal(app: &TestApp, customer: &str) -> Value {
    let (s, b) = app.post("/v1/customer-sessions", json!({"customerAccountId": customer})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

#[tokio::test]
async fn customer_sessions_are_created_for_known_customers_only() {
    let app = spawn_app().await;
    active(&app, "alice", "Alice's plan").await;
    let b = portal(&app, "alice").await;
    let token = b["token"].as_str().unwrap();
    assert_eq!(b["url"], format!("{}/portal/{token}", app.base));
    assert_eq!(b["customerAccountId"], "alice");
    let expires: chrono::DateTime<chrono::Utc> = b["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - app.clock_now().await, chrono::Duration::seconds(3600));
    let stored = app.table_snapshot("customer_sessions").await + &app.table_snapshot("idempotency_keys").await;
    assert!(!stored.contains(token), "the token is stored");

    let bad = |body: Value, status: u16, fields: &'static [&'static str]| {
        let app = &app;
        async move {
            let what = format!("POST /v1/customer-sessions {body}");
            let rb = app.request(Method::POST, "/v1/customer-sessions").json(&body);
            crate::validation::rejected(app, rb, status, fields, &what).await;
        }
    };
    bad(json!({"customerAccountId": "nobody"}), 422, &["customerAccountId"]).await;
    bad(
        json!({"customerAccountId": "alice", "expiresInSeconds": 299, "returnUrl": "ftp://x"}),
        422,
        &["expiresInSeconds", "returnUrl"],
    )
    .await;
    bad(json!({"customerAccountId": ""}), 422, &["customerAccountId"]).await;
    bad(json!({}), 400, &["customerAccountId"]).await;
    bad(json!({"customerAccountId": "alice", "extra": 1}), 400, &["extra"]).await;
    // Another merchant's customer is no customer of this one.
    let other = app.new_merchant("other").await;
    let r = app
        .send_full(
            app.request_as(&other, Method::POST, "/v1/customer-sessions").json(&json!({"customerAccountId": "alice"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // A replay is the same session with a new token.
    let body = json!({"customerAccountId": "alice"});
    let send = || {
        app.send_full(app.request(Method::POST, "/v1/customer-sessions").header("Idempotency-Key", "p1").json(&body))
    };
    let (first, second) = (send().await, send().await);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_ne!(first.body["token"], second.body["token"]);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    let old = path_of(first.body["url"].as_str().unwrap());
    assert_eq!(app.page(&old, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.page(&path_of(second.body["url"].as_str().unwrap()), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_portal_shows_its_customer_only_and_refuses_anothers_subscription() {
    let app = spawn_app().await;
    let mine = active(&app, "alice", "Alice gold").await;
    active(&app, "bob", "Bob silver").await;
    let other = app.new_merchant("other").await;
    let body = json!({"customer": {"customerAccountId": "alice"}, "amount": "5.00", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "description": "Other shop", "paymentMethod": "pm_sandbox_ok"});
    let (s, theirs) = TestApp::send(app.request_as(&other, Method::POST, "/v1/subscriptions").json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    let bobs: String = sqlx::query_scalar(
        "SELECT s.id::text FROM subscriptions s JOIN customers c ON c.id = s.customer_id WHERE c.customer_account_id = 'bob'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();

    let path = path_of(portal(&app, "alice").await["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains("Alice gold") && page.html.contains("€9.99"), "{}", page.html);
    assert!(!page.html.contains("Bob silver") && !page.html.contains("Other shop"), "{}", page.html);
    let csp = page.header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert!(page.header("set-cookie").contains("SameSite=Strict"), "{}", page.header("set-cookie"));

    // Cancelling is on by default; Bob's and the other merchant's subscriptions are
    // not found from Alice's portal, and nothing changes.
    let (cookie, csrf) = (page.cookie().unwrap(), page.csrf());
    let before = app.state_snapshot().await;
    for id in [bobs.as_str(), theirs["id"].as_str().unwrap()] {
        let fields = [("csrf", csrf.as_str()), ("subscription", id), ("action", "cancel"), ("reason", "other")];
        let r = app.submit(&path, Some(&cookie), &fields).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.html);
    }
    app.assert_state_unchanged(&before, "another customer's subscription").await;

    // Pause is off by default: not offered, and its POST is refused.
    assert!(!page.html.contains("Pause subscription"), "{}", page.html);
    let fields = [("csrf", csrf.as_str()), ("subscription", mine.as_str()), ("action", "pause")];
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.html);
    app.assert_state_unchanged(&before, "a disabled action").await;
    // Without the form's token: refused.
    let fields = [("csrf", "x.00"), ("subscription", mine.as_str()), ("action", "cancel"), ("reason", "other")];
    assert_eq!(app.submit(&path, Some(&cookie), &fields).await.status, StatusCode::FORBIDDEN);
    app.assert_state_unchanged(&before, "a forged form").await;

    // Enabled, it is offered and done as the customer.
    let (s, b) = app.patch("/v1/settings", json!({"portal": {"pause": true}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let page = app.page(&path, Some(&cookie)).await;
    assert!(page.html.contains("Pause subscription"), "{}", page.html);
    let fields = [("csrf", csrf.as_str()), ("subscription", mine.as_str()), ("action", "pause")];
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!((r.status, r.header("location")), (StatusCode::SEE_OTHER, format!("{path}?done=pause").as_str()));
    let (_, sub) = app.get(&format!("/v1/subscriptions/{mine}")).await;
    assert_eq!(sub["status"], "paused");
    let (_, events) = app.get(&format!("/v1/events?objectId={mine}")).await;
    let last = events["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["type"].as_str(), last["actor"].as_str()), (Some("status_changed"), Some("customer")));
}

#[tokio::test]
async fn an_expired_portal_link_answers_410() {
    let app = spawn_app().await;
    active(&app, "alice", "Alice gold").await;
    let (s, b) =
        app.post("/v1/customer-sessions", json!({"customerAccountId": "alice", "expiresInSeconds": 300})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let path = path_of(b["url"].as_str().unwrap());
    assert_eq!(app.page(&path, None).await.status, StatusCode::OK);
    app.advance(300).await;
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert_eq!(
        app.page("/portal/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_portal_action_on_a_test_clock_subscription_happens_at_the_clocks_time() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let (s, clock) = app.post("/v1/test-clocks", json!({"frozenTime": "2033-05-05T05:00:00Z"})).await;
    assert_eq!(s, StatusCode::CREATED, "{clock}");
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "clocked"}, "amount": "9.99", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok", "testClockId": clock["id"]}))
        .await;
    let id = sub["id"].as_str().unwrap();
    let session = portal(&app, "clocked").await;
    let path = path_of(session["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    let (cookie, csrf) = (page.cookie().unwrap(), page.csrf());
    let fields = [("csrf", csrf.as_str()), ("subscription", id), ("action", "cancel"), ("reason", "other")];
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.html);
    let (_, after) = app.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!((&after["status"], &after["cancelledAt"]), (&json!("cancelled"), &json!("2033-05-05T05:00:00Z")));
}
