//! Settings, checkout sessions and the checkout page without a worker
//! (docs/pages.md): creation, validation, idempotency, tenant isolation, the page's
//! security headers, CSRF, card refusals and locking, expiry. The paid path, which
//! needs the engine, is in tests/engine/checkout.rs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::pages::path_of;
use crate::support::{TestApp, spawn_app};

async fn pending_subscription(app: &TestApp, customer: &str) -> String {
    let s = app
        .subscription(json!({"customer": {"customerAccountId": customer}, "amount": "9.99", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "description": "Gold monthly"}))
        .await;
    assert_eq!(s["status"], "pending");
    s["id"].as_str().unwrap().to_owned()
}

async fn session(app: &TestApp, body: Value) -> Value {
    let (s, b) = app.post("/v1/checkout-sessions", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

async fn rejected(app: &TestApp, body: Value, status: u16, fields: &[&str]) {
    let what = format!("POST /v1/checkout-sessions {body}");
    crate::validation::rejected(
        app,
        app.request(Method::POST, "/v1/checkout-sessions").json(&body),
        status,
        fields,
        &what,
    )
    .await;
}

#[tokio::test]
async fn settings_have_defaults_change_by_patch_and_name_every_bad_field() {
    let app = spawn_app().await;
    let (s, b) = app.get("/v1/settings").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["allowedOrigins"], json!([]));
    assert_eq!(b["portal"]["cancel"], true);
    assert_eq!(b["portal"]["pause"], false);
    assert_eq!(b["updatedAt"], Value::Null);

    let plan = app.active_plan("5.00").await;
    let (s, b) = app
        .patch(
            "/v1/settings",
            json!({"allowedOrigins": ["https://shop.example", "http://localhost:3000/"],
                "portal": {"pause": true, "switchPlan": true, "switchablePlanIds": [plan]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["allowedOrigins"], json!(["https://shop.example", "http://localhost:3000"]));
    assert_eq!((b["portal"]["pause"].as_bool(), b["portal"]["cancel"].as_bool()), (Some(true), Some(true)));
    assert_eq!(b["portal"]["switchablePlanIds"], json!([plan]));
    let (_, again) = app.get("/v1/settings").await;
    assert_eq!(again, b);

    // Every bad field is named; nothing changes.
    let bad = |body: Value, status: u16, fields: &'static [&'static str]| {
        let app = &app;
        async move {
            let what = format!("PATCH /v1/settings {body}");
            crate::validation::rejected(
                app,
                app.request(Method::PATCH, "/v1/settings").json(&body),
                status,
                fields,
                &what,
            )
            .await;
        }
    };
    bad(
        json!({"allowedOrigins": ["https://ok.example", "https://x.example/path", "*"]}),
        422,
        &["allowedOrigins[1]", "allowedOrigins[2]"],
    )
    .await;
    bad(json!({"allowedOrigins": ["https://a.example", "https://a.example/"]}), 422, &["allowedOrigins[1]"]).await;
    bad(json!({"portal": {"switchablePlanIds": [uuid::Uuid::now_v7()]}}), 422, &["portal.switchablePlanIds[0]"]).await;
    bad(json!({"portal": {"refund": true}}), 400, &["portal.refund"]).await;
    bad(json!({"allowedOrigins": "https://a.example"}), 400, &["allowedOrigins"]).await;

    // Another merchant's plan is no plan of this one; its settings are its own.
    let other = app.new_merchant("other").await;
    let (s, b) = TestApp::send(app.request_as(&other, Method::GET, "/v1/settings")).await;
    assert_eq!((s, &b["allowedOrigins"]), (StatusCode::OK, &json!([])));
    let body = json!({"portal": {"switchablePlanIds": [plan]}});
    let (s, b) = TestApp::send(app.request_as(&other, Method::PATCH, "/v1/settings").json(&body)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    let events = app.events_of(&app.merchant.id.to_string()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "updated");
}

#[tokio::test]
async fn a_session_hands_out_its_token_once_and_stores_only_its_hash() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-1").await;
    let b = session(&app, json!({"subscriptionId": sub, "returnUrl": "https://shop.example/done?x=1"})).await;
    let token = b["token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "{b}");
    assert_eq!(b["url"], format!("{}/checkout/{token}", app.base));
    assert_eq!(b["status"], "open");
    assert_eq!(b["subscriptionId"], sub.as_str());
    assert_eq!(b["paymentSeriesId"], Value::Null);
    let now = app.clock_now().await;
    let expires: chrono::DateTime<chrono::Utc> = b["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - now, chrono::Duration::seconds(86_400));

    // Stored: the hash, never the token.
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let id = b["id"].as_str().unwrap();
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM checkout_sessions WHERE id = '{id}' AND token_hash = '\\x{hash}'"))
            .await,
        1
    );
    let dump = app.table_snapshot("checkout_sessions").await + &app.table_snapshot("events").await;
    assert!(!dump.contains(token), "the token is stored");

    let (s, got) = app.get(&format!("/v1/checkout-sessions/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert!(got.get("token").is_none() && got.get("url").is_none(), "{got}");
    assert_eq!(got["status"], "open");
    assert_eq!(got["returnUrl"], "https://shop.example/done?x=1");

    let events = app.events_of(id).await;
    assert_eq!(events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["created"]);
}

#[tokio::test]
async fn bad_session_requests_name_every_field_and_store_nothing() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-2").await;
    rejected(&app, json!({}), 422, &["subscriptionId"]).await;
    rejected(&app, json!({"subscriptionId": sub, "paymentSeriesId": sub}), 422, &["subscriptionId", "paymentSeriesId"])
        .await;
    rejected(
        &app,
        json!({"subscriptionId": sub, "returnUrl": "javascript:alert(1)", "expiresInSeconds": 60}),
        422,
        &["returnUrl", "expiresInSeconds"],
    )
    .await;
    rejected(&app, json!({"subscriptionId": sub, "expiresInSeconds": 86_401}), 422, &["expiresInSeconds"]).await;
    rejected(&app, json!({"subscriptionId": sub, "returnUrl": "https://shop.example/\u{0}"}), 422, &["returnUrl"])
        .await;
    rejected(&app, json!({"subscriptionId": sub, "expiresInSeconds": i64::MAX}), 422, &["expiresInSeconds"]).await;
    rejected(&app, json!({"subscriptionId": "nope"}), 400, &["subscriptionId"]).await;
    rejected(&app, json!({"subscriptionId": sub, "colour": "red"}), 400, &["colour"]).await;
    rejected(&app, json!({"subscriptionId": uuid::Uuid::now_v7()}), 422, &["subscriptionId"]).await;

    // Another merchant's subscription is no subscription of this one.
    let other = app.new_merchant("other").await;
    let body = json!({"subscriptionId": sub});
    let r = app.send_full(app.request_as(&other, Method::POST, "/v1/checkout-sessions").json(&body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // A cancelled subscription cannot get a card.
    let (s, b) = app.delete(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.post("/v1/checkout-sessions", json!({"subscriptionId": sub})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
}

#[tokio::test]
async fn sessions_are_the_merchants_own() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-3").await;
    let b = session(&app, json!({"subscriptionId": sub})).await;
    let second = pending_subscription(&app, "cust-3b").await;
    session(&app, json!({"subscriptionId": second})).await;
    let (s, all) = app.get("/v1/checkout-sessions?limit=1").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all["data"][0]["id"], b["id"]);
    assert!(all["data"][0].get("token").is_none(), "{all}");
    let next = all["nextCursor"].as_str().unwrap();
    let (_, rest) = app.get(&format!("/v1/checkout-sessions?cursor={next}")).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    let (_, one) = app.get(&format!("/v1/checkout-sessions?subscriptionId={second}")).await;
    assert_eq!(one["data"][0]["subscriptionId"], second.as_str());
    let other = app.new_merchant("other").await;
    let (_, theirs) = TestApp::send(app.request_as(&other, Method::GET, "/v1/checkout-sessions")).await;
    assert_eq!(theirs["data"], json!([]));
    let path = format!("/v1/checkout-sessions/{}", b["id"].as_str().unwrap());
    let (s, body) = TestApp::send(app.request_as(&other, Method::GET, &path)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = app.get(&format!("/v1/checkout-sessions/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_replayed_creation_is_the_same_session_with_a_new_token() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-4").await;
    let body = json!({"subscriptionId": sub});
    let first = app
        .send_full(app.request(Method::POST, "/v1/checkout-sessions").header("Idempotency-Key", "k1").json(&body))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = app
        .send_full(app.request(Method::POST, "/v1/checkout-sessions").header("Idempotency-Key", "k1").json(&body))
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.body["id"], second.body["id"]);
    let (t1, t2) = (first.body["token"].as_str().unwrap(), second.body["token"].as_str().unwrap());
    assert_ne!(t1, t2);
    assert_eq!(app.count("SELECT count(*) FROM checkout_sessions").await, 1);
    // The stored answer holds no token.
    let stored = app.table_snapshot("idempotency_keys").await;
    assert!(!stored.contains(t1) && !stored.contains(t2), "{stored}");
    // The first token, never delivered, stopped working; the new one opens the page.
    assert_eq!(app.page(&format!("/checkout/{t1}"), None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.page(&format!("/checkout/{t2}"), None).await.status, StatusCode::OK);

    let other = json!({"subscriptionId": sub, "expiresInSeconds": 3600});
    let r = app
        .send_full(app.request(Method::POST, "/v1/checkout-sessions").header("Idempotency-Key", "k1").json(&other))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}

#[tokio::test]
async fn the_page_is_framed_only_by_allowed_origins_and_carries_its_headers() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-5").await;
    let b = session(&app, json!({"subscriptionId": sub, "returnUrl": "https://shop.example/back"})).await;
    let path = path_of(b["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self' https://shop.example"), "{csp}");
    assert!(!csp.contains("http:") || csp.contains("https://shop.example"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("x-frame-options"), "DENY");
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    for part in ["recur_csrf=", "HttpOnly", "Secure", "SameSite=None", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    // What is bought, in the currency's format; every asset is recur's own.
    for text in ["test merchant", "Gold monthly", "€9.99", "every month", "Pay €9.99", r#"name="csrf""#] {
        assert!(page.html.contains(text), "{text} missing from {}", page.html);
    }
    assert!(!page.html.contains("src=\"http") && !page.html.contains("href=\"http"), "{}", page.html);
    for asset in ["/assets/recur.css", "/assets/checkout.js"] {
        let a = app.page(asset, None).await;
        assert_eq!(a.status, StatusCode::OK, "{asset}");
        assert!(!a.html.is_empty());
    }

    let (s, body) = app.patch("/v1/settings", json!({"allowedOrigins": ["https://shop.example"]})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let page = app.page(&path, None).await;
    let csp = page.header("content-security-policy");
    assert!(csp.contains("frame-ancestors https://shop.example"), "{csp}");
    assert_eq!(page.header("x-frame-options"), "");

    // Not a token, or a token of nothing: 404, the same page.
    for p in ["/checkout/nope", "/checkout/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(app.page(p, None).await.status, StatusCode::NOT_FOUND, "{p}");
    }
}

#[tokio::test]
async fn a_form_without_its_csrf_token_or_cookie_is_refused() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-6").await;
    let b = session(&app, json!({"subscriptionId": sub})).await;
    let path = path_of(b["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    let (cookie, csrf) = (page.cookie().unwrap(), page.csrf());
    let card = [("name", "A"), ("number", "4242424242424242"), ("expiry", "12/30"), ("cvc", "123")];
    let before = app.state_snapshot().await;
    let with = |token: &str| {
        let mut f = card.to_vec();
        f.push(("csrf", token));
        f.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Vec<_>>()
    };
    let post = async |cookie: Option<&str>, fields: Vec<(String, String)>| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        app.submit(&path, cookie, &fields).await.status
    };
    assert_eq!(post(Some(&cookie), with("")).await, StatusCode::FORBIDDEN);
    assert_eq!(post(Some(&cookie), with("forged.00")).await, StatusCode::FORBIDDEN);
    // Without the cookie and without a browser's same-origin word.
    assert_eq!(post(None, with(&csrf)).await, StatusCode::FORBIDDEN);
    // Another browser's cookie.
    let other = app.page(&path, None).await.cookie().unwrap();
    assert_eq!(post(Some(&other), with(&csrf)).await, StatusCode::FORBIDDEN);
    app.assert_state_unchanged(&before, "refused forms").await;
}

#[tokio::test]
async fn refused_cards_store_nothing_and_the_fifth_locks_the_session() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-7").await;
    let b = session(&app, json!({"subscriptionId": sub})).await;
    let id = b["id"].as_str().unwrap().to_owned();
    let path = path_of(b["url"].as_str().unwrap());
    let attempts = [
        ("4242424242424241", "12/30", "123", "number", "not valid"),
        ("4242424242424242", "01/20", "123", "expiry", "expired"),
        ("4242424242424242", "12/30", "1", "cvc", "security code"),
        // Valid, but not a sandbox test card: refused by the gateway.
        ("5555555555554444", "12/30", "123", "number", "test card"),
    ];
    for (n, (number, expiry, cvc, field, text)) in attempts.iter().enumerate() {
        let page = app.pay(&path, number, expiry, cvc).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", page.html);
        assert!(page.html.contains(&format!(r##"href="#{field}""##)), "{field} not named: {}", page.html);
        assert!(page.html.contains(text), "{text}: {}", page.html);
        assert!(!page.html.contains(number), "the number is echoed");
        let (_, s) = app.get(&format!("/v1/checkout-sessions/{id}")).await;
        assert_eq!(s["refusedCards"], n as i64 + 1);
        assert_eq!(s["status"], "open");
    }
    let (_, s) = app.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!((s["status"].as_str(), &s["paymentMethod"]), (Some("pending"), &Value::Null));

    let page = app.pay(&path, "4000000000000000", "12/30", "123").await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert!(page.html.contains("locked"), "{}", page.html);
    let (_, s) = app.get(&format!("/v1/checkout-sessions/{id}")).await;
    assert_eq!((s["status"].as_str(), s["refusedCards"].as_i64()), (Some("locked"), Some(5)));
    // Locked for good, even for a good card.
    assert_eq!(app.page(&path, None).await.status, StatusCode::GONE);

    // Each refusal is the customer's event; the lock is recur's. No card is in them.
    let (_, events) = app.get(&format!("/v1/events?objectId={id}&limit=100")).await;
    let events = events["data"].as_array().unwrap().clone();
    let kinds: Vec<(&str, &str)> =
        events.iter().map(|e| (e["type"].as_str().unwrap(), e["actor"].as_str().unwrap())).collect();
    assert_eq!(kinds[1..6], [("card_refused", "customer"); 5]);
    assert_eq!(kinds[6], ("locked", "system"));
    let text = serde_json::to_string(&events).unwrap();
    for (number, ..) in attempts {
        assert!(!text.contains(number), "a card number is in the events");
    }
}

#[tokio::test]
async fn an_expired_session_shows_its_page_with_410() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-8").await;
    let b = session(&app, json!({"subscriptionId": sub, "expiresInSeconds": 1800})).await;
    let path = path_of(b["url"].as_str().unwrap());
    let open = app.page(&path, None).await;
    assert_eq!(open.status, StatusCode::OK);
    let (cookie, csrf) = (open.cookie().unwrap(), open.csrf());
    app.advance(1800).await;
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert!(page.html.contains("expired"), "{}", page.html);
    let (_, s) = app.get(&format!("/v1/checkout-sessions/{}", b["id"].as_str().unwrap())).await;
    assert_eq!(s["status"], "expired");
    // Its form is closed too: a card sent from the page opened before is not taken.
    let before = app.state_snapshot().await;
    let fields = [("csrf", csrf.as_str()), ("number", "4242424242424242"), ("expiry", "12/30"), ("cvc", "123")];
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!((r.status, r.header("location")), (StatusCode::SEE_OTHER, path.as_str()));
    app.assert_state_unchanged(&before, "a card on an expired session").await;
}

#[tokio::test]
async fn session_creation_is_rate_limited_per_merchant() {
    // The merchant's checkout_sessions bucket (docs/operations.md#rate-limits), small here:
    // five at once, then one a minute.
    let limits = recur::config::RateLimitSettings {
        rate_limit_checkout_sessions: recur::ratelimit::Rate::parse("1/m:5").unwrap(),
        ..crate::support::roomy_rate_limits()
    };
    let app = crate::support::spawn_app_with(recur::config::Settings {
        rate_limits: limits,
        ..crate::support::fresh_settings()
    })
    .await;
    let sub = pending_subscription(&app, "cust-9").await;
    for n in 0..5 {
        let (s, b) = app.post("/v1/checkout-sessions", json!({"subscriptionId": sub})).await;
        assert_eq!(s, StatusCode::CREATED, "session {n}: {b}");
    }
    let before = app.state_snapshot().await;
    let r =
        app.send_full(app.request(Method::POST, "/v1/checkout-sessions").json(&json!({"subscriptionId": sub}))).await;
    crate::support::assert_problem(&r, 429);
    assert_eq!(r.body["type"], "https://recur.dev/problems/rate-limited");
    assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s >= 1), "{:?}", r.headers);
    assert_eq!(r.header("ratelimit-limit"), Some("5"));
    app.assert_state_unchanged(&before, "a refused session creation").await;
    assert_eq!(app.count("SELECT count(*) FROM checkout_sessions").await, 5);
    // Refused before the input is read; the merchant's other writes are still served.
    let (s, b) = app.post("/v1/checkout-sessions", json!({"subscriptionId": "not-a-uuid"})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    app.active_plan("1.00").await;
    // Another merchant is not limited by this one.
    let other = app.new_merchant("other").await;
    let body = json!({"customer": {"customerAccountId": "o"}, "amount": "1.00", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}});
    let (s, theirs) = TestApp::send(app.request_as(&other, Method::POST, "/v1/subscriptions").json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    let body = json!({"subscriptionId": theirs["id"]});
    let (s, b) = TestApp::send(app.request_as(&other, Method::POST, "/v1/checkout-sessions").json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn a_session_whose_subscription_ended_takes_no_card() {
    let app = spawn_app().await;
    let sub = pending_subscription(&app, "cust-10").await;
    let b = session(&app, json!({"subscriptionId": sub})).await;
    let path = path_of(b["url"].as_str().unwrap());
    let open = app.page(&path, None).await;
    let (cookie, csrf) = (open.cookie().unwrap(), open.csrf());
    let (s, body) = app.delete(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert!(page.html.contains("no longer valid"), "{}", page.html);
    let before = app.state_snapshot().await;
    let fields = [("csrf", csrf.as_str()), ("number", "4242424242424242"), ("expiry", "12/30"), ("cvc", "123")];
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    app.assert_state_unchanged(&before, "a card for an ended subscription").await;
}
