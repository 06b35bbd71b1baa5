//! (docs/guarantees.md#tenant-isolation): a merchant can never read or change another merchant's objects; a
//! foreign id answers 404 exactly like a missing one, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Merchant, TestApp, assert_problem, spawn_app};

/// Merchant A's objects.
struct World {
    plan: String,
    draft_plan: String,
    subscription: String,
    paused_subscription: String,
    series: String,
    series_transaction: String,
    cycle: Uuid,
    cycle_transaction: Uuid,
    customer: &'static str,
}

async fn build_world(app: &TestApp) -> World {
    let plan = app.active_plan("9.99").await;
    let (s, draft) = app
        .post(
            "/v1/plans",
            json!({"name": "d", "amount": "1", "currency": "EUR", "interval": {"unit": "month", "count": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let customer = "acct-a";
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": customer, "email": "a@example.com"}, "planId": plan,
            "paymentMethod": "pm_sandbox_ok", "partnerReference": "ref-a"}))
        .await;
    let paused = app
        .subscription(
            json!({"customer": {"customerAccountId": customer}, "planId": plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    let (s, _) = app.post(&format!("/v1/subscriptions/{}/pause", paused["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": customer}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR",
                "partnerReference": "series-a"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{series}");
    let (s, txn) = app
        .post(&format!("/v1/payment-series/{}/transactions", series["id"].as_str().unwrap()), json!({"amount": "3.00"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{txn}");

    // A failed billing cycle with one declined attempt, as a worker would have left it.
    let sub_id = Uuid::parse_str(sub["id"].as_str().unwrap()).unwrap();
    let cycle = Uuid::now_v7();
    let cycle_transaction = Uuid::now_v7();
    let now = app.clock_now().await;
    sqlx::query(
        "INSERT INTO billing_cycles (id, merchant_id, subscription_id, sequence, period_start, period_end, due_at,
            amount, currency, status, attempts, failure_code, failed_at)
         VALUES ($1, $2, $3, 1, $4, $4 + interval '1 month', $4, 9.99, 'EUR', 'failed', 1, 'expired_card', $4)",
    )
    .bind(cycle)
    .bind(app.merchant.id)
    .bind(sub_id)
    .bind(now)
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO transactions (id, merchant_id, billing_cycle_id, kind, amount, currency, payment_method, status,
            decline_code, idempotency_key, attempt)
         VALUES ($1, $2, $3, 'scheduled', 9.99, 'EUR', 'pm_sandbox_ok', 'declined', 'expired_card', $4, 1)",
    )
    .bind(cycle_transaction)
    .bind(app.merchant.id)
    .bind(cycle)
    .bind(format!("recur_txn_{}", cycle_transaction.simple()))
    .execute(app.pool())
    .await
    .unwrap();

    World {
        plan,
        draft_plan: draft["id"].as_str().unwrap().to_owned(),
        subscription: sub["id"].as_str().unwrap().to_owned(),
        paused_subscription: paused["id"].as_str().unwrap().to_owned(),
        series: series["id"].as_str().unwrap().to_owned(),
        series_transaction: txn["id"].as_str().unwrap().to_owned(),
        cycle,
        cycle_transaction,
        customer,
    }
}

/// Every route that names one object, with A's ids and a harmless valid body.
fn object_routes(w: &World) -> Vec<(Method, String, Option<Value>)> {
    let (p, d, s, ps, se) = (&w.plan, &w.draft_plan, &w.subscription, &w.paused_subscription, &w.series);
    vec![
        (Method::GET, format!("/v1/plans/{p}"), None),
        (Method::PATCH, format!("/v1/plans/{p}"), Some(json!({"name": "stolen"}))),
        (Method::PATCH, format!("/v1/plans/{d}"), Some(json!({"amount": "0.01"}))),
        (Method::DELETE, format!("/v1/plans/{d}"), None),
        (Method::POST, format!("/v1/plans/{d}/activate"), Some(json!({}))),
        (Method::POST, format!("/v1/plans/{p}/archive"), Some(json!({}))),
        (Method::GET, format!("/v1/subscriptions/{s}"), None),
        (Method::PATCH, format!("/v1/subscriptions/{s}"), Some(json!({"description": "stolen", "metadata": {"x": 1}}))),
        (Method::PATCH, format!("/v1/subscriptions/{s}"), Some(json!({"paymentMethod": "pm_sandbox_stolen_card"}))),
        (Method::DELETE, format!("/v1/subscriptions/{s}"), None),
        (Method::POST, format!("/v1/subscriptions/{s}/pause"), Some(json!({}))),
        (Method::POST, format!("/v1/subscriptions/{ps}/resume"), Some(json!({}))),
        (Method::POST, format!("/v1/subscriptions/{s}/cancel"), Some(json!({"atPeriodEnd": false}))),
        (Method::POST, format!("/v1/subscriptions/{s}/change"), Some(json!({"amount": "99.00"}))),
        (Method::POST, format!("/v1/subscriptions/{s}/change/preview"), Some(json!({"amount": "99.00"}))),
        (Method::POST, format!("/v1/subscriptions/{s}/change"), Some(json!({"planId": p}))),
        (Method::PATCH, format!("/v1/subscriptions/{s}"), Some(json!({"chargeHour": 3}))),
        (Method::GET, format!("/v1/subscriptions/{s}/billing-cycles"), None),
        (Method::GET, format!("/v1/billing-cycles/{}", w.cycle), None),
        (Method::POST, format!("/v1/billing-cycles/{}/retry", w.cycle), Some(json!({}))),
        (Method::GET, format!("/v1/transactions/{}", w.series_transaction), None),
        (Method::GET, format!("/v1/transactions/{}", w.cycle_transaction), None),
        (Method::GET, format!("/v1/payment-series/{se}"), None),
        (Method::POST, format!("/v1/payment-series/{se}/cancel"), Some(json!({}))),
        (Method::POST, format!("/v1/payment-series/{se}/transactions"), Some(json!({"amount": "1.00"}))),
        (Method::GET, format!("/v1/customers/{}", w.customer), None),
    ]
}

fn call(app: &TestApp, m: &Merchant, method: &Method, path: &str, body: &Option<Value>) -> reqwest::RequestBuilder {
    let rb = app.request_as(m, method.clone(), path);
    match body {
        Some(b) => rb.json(b),
        None => rb,
    }
}

/// The path with every id of A's replaced by a fresh random one.
fn with_random_ids(path: &str, w: &World) -> String {
    let mut p = path.to_owned();
    for id in [
        w.plan.clone(),
        w.draft_plan.clone(),
        w.subscription.clone(),
        w.paused_subscription.clone(),
        w.series.clone(),
        w.series_transaction.clone(),
        w.cycle.to_string(),
        w.cycle_transaction.to_string(),
    ] {
        p = p.replace(&id, &Uuid::now_v7().to_string());
    }
    p.replace(w.customer, "acct-missing")
}

#[tokio::test]
async fn another_merchants_ids_answer_404_and_change_nothing() {
    let app = spawn_app().await;
    let w = build_world(&app).await;
    let b = app.new_merchant("b").await;
    // B has objects of its own, and a customer with the same account id as A's.
    let (s, _) = TestApp::send(app.request_as(&b, Method::POST, "/v1/payment-series").json(&json!({
        "customer": {"customerAccountId": "acct-b"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"})))
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let before = app.state_snapshot().await;
    for (method, path, body) in object_routes(&w) {
        let r = app.send_full(call(&app, &b, &method, &path, &body)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "B: {method} {path}: {}", r.body);
        assert_problem(&r, 404);
        // Exactly like a missing id.
        let missing = with_random_ids(&path, &w);
        let m = app.send_full(call(&app, &b, &method, &missing, &body)).await;
        assert_eq!(m.status, StatusCode::NOT_FOUND, "B: {method} {missing}: {}", m.body);
        assert_eq!(r.body, m.body, "{method} {path}: a foreign id must look like a missing one");
        // With an Idempotency-Key as well.
        if method == Method::POST {
            let r = app
                .send_full(call(&app, &b, &method, &path, &body).header("Idempotency-Key", format!("steal-{path}")))
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "B: {method} {path} with a key: {}", r.body);
        }
    }
    app.assert_state_unchanged(&before, "B touching A's objects").await;

    // A's objects really are there: the same routes answer A.
    for (method, path, _) in object_routes(&w) {
        if method == Method::GET {
            let r = app.send_full(call(&app, &app.merchant, &method, &path, &None)).await;
            assert_eq!(r.status, StatusCode::OK, "A: {method} {path}: {}", r.body);
        }
    }
    let (s, c) = app.get(&format!("/v1/billing-cycles/{}", w.cycle)).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["transactions"][0]["id"], json!(w.cycle_transaction));
    let (s, r) = app.post(&format!("/v1/billing-cycles/{}/retry", w.cycle), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "A can retry its own failed cycle: {r}");
}

#[tokio::test]
async fn another_merchants_ids_are_unknown_inside_requests_too() {
    let app = spawn_app().await;
    let w = build_world(&app).await;
    let b = app.new_merchant("b").await;
    let before = app.state_snapshot().await;
    // A subscription on A's plan: the plan does not exist for B.
    let r = app
        .send_full(app.request_as(&b, Method::POST, "/v1/subscriptions").json(&json!({
            "customer": {"customerAccountId": "acct-b"}, "planId": w.plan, "paymentMethod": "pm_sandbox_ok"})))
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), ["planId"]);
    let missing = app
        .send_full(app.request_as(&b, Method::POST, "/v1/subscriptions").json(&json!({
            "customer": {"customerAccountId": "acct-b"}, "planId": Uuid::now_v7(), "paymentMethod": "pm_sandbox_ok"})))
        .await;
    assert_eq!(r.body, missing.body, "a foreign plan looks like a missing one");
    app.assert_state_unchanged(&before, "B subscribing to A's plan").await;

    // A's partner reference does not collide with B's, and is not revealed.
    let (s, p) = TestApp::send(app.request_as(&b, Method::POST, "/v1/plans").json(&json!({"name": "b",
        "amount": "1", "currency": "EUR", "interval": {"unit": "day", "count": 1}, "status": "active"})))
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, sb) = TestApp::send(app.request_as(&b, Method::POST, "/v1/subscriptions").json(&json!({
        "customer": {"customerAccountId": "acct-a"}, "planId": p["id"], "partnerReference": "ref-a"})))
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sb}");
    // B's customer "acct-a" is B's own: A's email is not in it.
    let (s, c) = TestApp::send(app.request_as(&b, Method::GET, "/v1/customers/acct-a")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["email"], Value::Null, "B sees A's customer data: {c}");
    let (_, c) = app.get("/v1/customers/acct-a").await;
    assert_eq!(c["email"], "a@example.com");
}

#[tokio::test]
async fn lists_show_only_the_callers_objects() {
    let app = spawn_app().await;
    let w = build_world(&app).await;
    let b = app.new_merchant("b").await;
    let (s, bp) = TestApp::send(app.request_as(&b, Method::POST, "/v1/plans").json(&json!({"name": "b",
        "amount": "1", "currency": "EUR", "interval": {"unit": "day", "count": 1}, "status": "active"})))
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let bp = bp["id"].as_str().unwrap().to_owned();
    let (s, bs) = TestApp::send(app.request_as(&b, Method::POST, "/v1/subscriptions").json(&json!({
        "customer": {"customerAccountId": "acct-a"}, "planId": bp, "paymentMethod": "pm_sandbox_ok"})))
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let bs = bs["id"].as_str().unwrap().to_owned();

    let get_b = |path: String| TestApp::send(app.request_as(&b, Method::GET, &path));
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|x| x[key].as_str().unwrap().to_owned()).collect()
    };
    let (_, v) = get_b("/v1/plans".into()).await;
    assert_eq!(ids(&v, "id"), [bp.as_str()]);
    let (_, v) = get_b("/v1/plans?status=draft".into()).await;
    assert_eq!(ids(&v, "id"), Vec::<String>::new());
    let (_, v) = get_b("/v1/subscriptions".into()).await;
    assert_eq!(ids(&v, "id"), [bs.as_str()]);
    let (_, v) = get_b("/v1/subscriptions?customerAccountId=acct-a".into()).await;
    assert_eq!(ids(&v, "id"), [bs.as_str()]);
    let (_, v) = get_b(format!("/v1/subscriptions?planId={}", w.plan)).await;
    assert_eq!(ids(&v, "id"), Vec::<String>::new());
    let (_, v) = get_b("/v1/payment-series".into()).await;
    assert_eq!(ids(&v, "id"), Vec::<String>::new());
    let (_, v) = get_b(format!("/v1/events?objectId={}", w.subscription)).await;
    assert_eq!(v["data"], json!([]));
    let (_, v) = get_b("/v1/events?limit=100".into()).await;
    // B's one customer (upserted by its subscription) has its own `created` event.
    let customers: Vec<&serde_json::Value> =
        v["data"].as_array().unwrap().iter().filter(|e| e["objectType"] == "customer").collect();
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(customers[0]["type"], "created");
    let v = json!({"data": v["data"].as_array().unwrap().iter().filter(|e| e["objectType"] != "customer").cloned().collect::<Vec<_>>()});
    let mut objects = ids(&v, "objectId");
    objects.sort();
    objects.dedup();
    let mut mine = vec![bp, bs];
    mine.sort();
    assert_eq!(objects, mine, "B's audit trail holds only B's objects");

    // And A still sees all of its own.
    let (_, v) = app.get("/v1/subscriptions").await;
    assert_eq!(ids(&v, "id"), [w.subscription.clone(), w.paused_subscription.clone()]);
    let (_, v) = app.get("/v1/payment-series").await;
    assert_eq!(ids(&v, "id"), [w.series.as_str()]);
}

/// A's objects in the states the first world lacks: an archived plan, a cancelled
/// subscription, and an `error` cycle whose errored attempt did reach the gateway (its
/// key is in the sandbox ledger, so a manual retry would ask the gateway first).
struct MoreOfA {
    archived_plan: String,
    cancelled_subscription: String,
    error_cycle: Uuid,
    error_transaction: Uuid,
    endpoint: String,
    delivery: String,
    checkout_session: String,
}

async fn build_more(app: &TestApp, w: &World) -> MoreOfA {
    // A webhook endpoint; the plan below gives it a delivery.
    let (s, e) =
        app.post("/v1/webhook-endpoints", json!({"url": "https://example.com/hooks", "eventTypes": ["plan.*"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let endpoint = e["id"].as_str().unwrap().to_owned();
    let archived = app.active_plan("4.00").await;
    let delivery: String =
        sqlx::query_scalar("SELECT id::text FROM webhook_deliveries WHERE endpoint_id = $1::uuid LIMIT 1")
            .bind(&endpoint)
            .fetch_one(app.pool())
            .await
            .unwrap();
    let (s, _) = app.post(&format!("/v1/plans/{archived}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let cancelled = app
        .subscription(
            json!({"customer": {"customerAccountId": w.customer}, "planId": w.plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    let cancelled = cancelled["id"].as_str().unwrap().to_owned();
    let (s, _) = app.delete(&format!("/v1/subscriptions/{cancelled}")).await;
    assert_eq!(s, StatusCode::OK);
    let error_cycle = Uuid::now_v7();
    let error_transaction = Uuid::now_v7();
    let key = format!("recur_txn_{}", error_transaction.simple());
    let now = app.clock_now().await;
    sqlx::query(
        "INSERT INTO billing_cycles (id, merchant_id, subscription_id, sequence, period_start, period_end, due_at,
            amount, currency, status, attempts)
         VALUES ($1, $2, $3, 1, $4, $4 + interval '1 month', $4, 9.99, 'EUR', 'error', 1)",
    )
    .bind(error_cycle)
    .bind(app.merchant.id)
    .bind(Uuid::parse_str(&w.paused_subscription).unwrap())
    .bind(now)
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO transactions (id, merchant_id, billing_cycle_id, kind, amount, currency, payment_method, status,
            error_message, idempotency_key, attempt)
         VALUES ($1, $2, $3, 'scheduled', 9.99, 'EUR', 'pm_sandbox_ok', 'error', 'gateway timeout', $4, 1)",
    )
    .bind(error_transaction)
    .bind(app.merchant.id)
    .bind(error_cycle)
    .bind(&key)
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sandbox_charges (id, idempotency_key, merchant_key, amount, currency, customer_account_id,
            payment_method, reference)
         VALUES ($1, $2, $3, 9.99, 'EUR', $4, 'pm_sandbox_ok', 'sbx_went_through')",
    )
    .bind(Uuid::now_v7())
    .bind(&key)
    .bind(app.merchant.key)
    .bind(w.customer)
    .execute(app.pool())
    .await
    .unwrap();
    let (s, session) = app.post("/v1/checkout-sessions", json!({"subscriptionId": w.subscription})).await;
    assert_eq!(s, StatusCode::CREATED, "{session}");
    MoreOfA {
        checkout_session: session["id"].as_str().unwrap().to_owned(),
        archived_plan: archived,
        cancelled_subscription: cancelled,
        error_cycle,
        error_transaction,
        endpoint,
        delivery,
    }
}

/// Every route that takes an id, with a harmless valid body.
const ID_ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/v1/plans/{id}", None),
    ("PATCH", "/v1/plans/{id}", Some(r#"{"name": "stolen"}"#)),
    ("DELETE", "/v1/plans/{id}", None),
    ("POST", "/v1/plans/{id}/activate", Some("{}")),
    ("POST", "/v1/plans/{id}/archive", Some("{}")),
    ("GET", "/v1/subscriptions/{id}", None),
    ("PATCH", "/v1/subscriptions/{id}", Some(r#"{"description": "stolen"}"#)),
    ("DELETE", "/v1/subscriptions/{id}", None),
    ("POST", "/v1/subscriptions/{id}/pause", Some("{}")),
    ("POST", "/v1/subscriptions/{id}/resume", Some("{}")),
    ("POST", "/v1/subscriptions/{id}/cancel", Some(r#"{"atPeriodEnd": true}"#)),
    ("POST", "/v1/subscriptions/{id}/change", Some(r#"{"amount": "99.00"}"#)),
    ("POST", "/v1/subscriptions/{id}/change/preview", Some(r#"{"amount": "99.00"}"#)),
    ("GET", "/v1/subscriptions/{id}/billing-cycles", None),
    ("GET", "/v1/billing-cycles/{id}", None),
    ("POST", "/v1/billing-cycles/{id}/retry", Some("{}")),
    ("POST", "/v1/billing-cycles/{id}/payment-link", Some("{}")),
    ("GET", "/v1/transactions/{id}", None),
    ("GET", "/v1/payment-series/{id}", None),
    ("POST", "/v1/payment-series/{id}/cancel", Some("{}")),
    ("POST", "/v1/payment-series/{id}/transactions", Some(r#"{"amount": "1.00"}"#)),
    ("GET", "/v1/webhook-endpoints/{id}", None),
    ("PATCH", "/v1/webhook-endpoints/{id}", Some(r#"{"status": "disabled"}"#)),
    ("DELETE", "/v1/webhook-endpoints/{id}", None),
    ("POST", "/v1/webhook-endpoints/{id}/rotate-secret", Some("{}")),
    ("GET", "/v1/webhook-endpoints/{id}/deliveries", None),
    ("POST", "/v1/webhook-endpoints/{id}/replay", Some(r#"{"since": "2020-01-01T00:00:00Z"}"#)),
    ("POST", "/v1/webhook-deliveries/{id}/retry", Some("{}")),
    ("GET", "/v1/checkout-sessions/{id}", None),
    ("GET", "/v1/test-clocks/{id}", None),
    ("POST", "/v1/test-clocks/{id}/advance", Some(r#"{"to": "2099-01-01T00:00:00Z"}"#)),
];

/// The tenant matrix: every id route × every object A owns (of every type and in
/// every state, so a route is also tried with ids of the wrong type) answers B exactly
/// as a random id does, with and without an Idempotency-Key, and changes nothing.
#[tokio::test]
async fn every_id_route_with_every_object_of_another_merchant_is_404() {
    let app = spawn_app().await;
    let w = build_world(&app).await;
    let more = build_more(&app, &w).await;
    let b = app.new_merchant("b").await;
    let ids: Vec<(&str, String)> = vec![
        ("active plan", w.plan.clone()),
        ("draft plan", w.draft_plan.clone()),
        ("archived plan", more.archived_plan.clone()),
        ("subscription", w.subscription.clone()),
        ("paused subscription", w.paused_subscription.clone()),
        ("cancelled subscription", more.cancelled_subscription.clone()),
        ("failed cycle", w.cycle.to_string()),
        ("error cycle", more.error_cycle.to_string()),
        ("cycle transaction", w.cycle_transaction.to_string()),
        ("error transaction", more.error_transaction.to_string()),
        ("webhook endpoint", more.endpoint.clone()),
        ("webhook delivery", more.delivery.clone()),
        ("checkout session", more.checkout_session.clone()),
        ("payment series", w.series.clone()),
        ("series transaction", w.series_transaction.clone()),
        ("test clock", {
            let (s, c) = app.post("/v1/test-clocks", json!({"frozenTime": "2030-01-01T00:00:00Z"})).await;
            assert_eq!(s, StatusCode::CREATED, "{c}");
            c["id"].as_str().unwrap().to_owned()
        }),
    ];
    // Every id route the API documents is in the matrix (a new route cannot skip it).
    let doc: Value = app.client.get(format!("{}/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/v1/") && path.contains("{id}") {
            documented.extend(item.as_object().unwrap().keys().map(|m| format!("{} {path}", m.to_uppercase())));
        }
    }
    documented.sort();
    let mut matrix: Vec<String> = ID_ROUTES.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    matrix.sort();
    assert_eq!(matrix, documented, "the tenant matrix must cover every documented id route");
    let before = app.state_snapshot().await;
    let mut tried = 0;
    for (method, template, body) in ID_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body: Option<Value> = body.map(|b| serde_json::from_str(b).unwrap());
        let missing_path = template.replace("{id}", &Uuid::now_v7().to_string());
        let missing = app.send_full(call(&app, &b, &method, &missing_path, &body)).await;
        assert_problem(&missing, 404);
        for (what, id) in &ids {
            let path = template.replace("{id}", id);
            let r = app.send_full(call(&app, &b, &method, &path, &body)).await;
            assert_problem(&r, 404);
            assert_eq!(r.body, missing.body, "B: {method} {template} with A's {what} must look like a missing id");
            if method == Method::POST {
                let key = format!("tenant-{tried}");
                let r = app.send_full(call(&app, &b, &method, &path, &body).header("Idempotency-Key", key)).await;
                assert_eq!(r.body, missing.body, "B: {method} {template} with A's {what} and a key");
            }
            tried += 1;
        }
    }
    // The customer route, with A's account id and account ids that look like A's ids.
    for account in [w.customer.to_owned(), w.subscription.clone(), w.plan.clone()] {
        let r = app.send_full(call(&app, &b, &Method::GET, &format!("/v1/customers/{account}"), &None)).await;
        assert_problem(&r, 404);
    }
    app.assert_state_unchanged(&before, "B calling every id route with A's objects").await;
    eprintln!("tenant matrix: {tried} foreign (route, object) pairs answered 404");

    // The audit trail: B sees none of A's objects, by id or by type.
    for (what, id) in &ids {
        let (s, v) = TestApp::send(app.request_as(&b, Method::GET, &format!("/v1/events?objectId={id}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["data"], json!([]), "B sees the events of A's {what}");
    }
    for object_type in ["plan", "subscription", "billing_cycle", "transaction", "payment_series", "customer"] {
        let (s, v) =
            TestApp::send(app.request_as(&b, Method::GET, &format!("/v1/events?objectType={object_type}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["data"], json!([]), "B sees A's {object_type} events");
    }

    // A's error cycle is still A's to retry: the gateway had taken the charge, so the
    // retry records it instead of charging again.
    let (s, c) = app.post(&format!("/v1/billing-cycles/{}/retry", more.error_cycle), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "succeeded", "{c}");
    assert_eq!(app.ledger_count().await, 1, "nothing was charged again");
}

/// Partner references and Idempotency-Keys are per merchant: B may reuse A's, gets
/// its own objects, and learns nothing about A's.
#[tokio::test]
async fn another_merchants_references_and_keys_collide_with_nothing() {
    let app = spawn_app().await;
    let w = build_world(&app).await;
    let b = app.new_merchant("b").await;
    // A's series was created with partnerReference "series-a": B may use it too.
    let series_body = json!({"customer": {"customerAccountId": "acct-b"}, "paymentMethod": "pm_sandbox_ok",
        "currency": "EUR", "partnerReference": "series-a"});
    let (s, bs) = TestApp::send(app.request_as(&b, Method::POST, "/v1/payment-series").json(&series_body)).await;
    assert_eq!(s, StatusCode::CREATED, "{bs}");
    assert_ne!(bs["id"].as_str().unwrap(), w.series);
    // A charges its series with a reference and a key; B uses both on its own series.
    let a_path = format!("/v1/payment-series/{}/transactions", w.series);
    let r = app
        .send_full(
            app.request(Method::POST, &a_path)
                .header("Idempotency-Key", "charge-key")
                .json(&json!({"amount": "2.00", "partnerReference": "charge-ref"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let a_txn = r.body["id"].as_str().unwrap().to_owned();
    let b_path = format!("/v1/payment-series/{}/transactions", bs["id"].as_str().unwrap());
    let r = app
        .send_full(
            app.request_as(&b, Method::POST, &b_path)
                .header("Idempotency-Key", "charge-key")
                .json(&json!({"amount": "2.00", "partnerReference": "charge-ref"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "B's own charge: {}", r.body);
    assert_eq!(r.header("idempotent-replayed"), None, "B must not get A's stored response");
    assert_ne!(r.body["id"].as_str().unwrap(), a_txn);
    assert!(r.body.get("existingId").is_none(), "{}", r.body);
    // B's duplicate reference names B's transaction, never A's.
    let r = app
        .send_full(
            app.request_as(&b, Method::POST, &b_path)
                .json(&json!({"amount": "3.00", "partnerReference": "charge-ref"})),
        )
        .await;
    assert_problem(&r, 409);
    assert_ne!(r.body["existingId"].as_str(), Some(a_txn.as_str()), "{}", r.body);
    // And A's series path is an unknown series for B, with a key or without.
    let r = app
        .send_full(
            app.request_as(&b, Method::POST, &a_path)
                .header("Idempotency-Key", "another-key")
                .json(&json!({"amount": "2.00", "partnerReference": "charge-ref"})),
        )
        .await;
    assert_problem(&r, 404);
    assert_eq!(app.count(&format!("SELECT count(*) FROM transactions WHERE merchant_id = '{}'", b.id)).await, 1);
}
