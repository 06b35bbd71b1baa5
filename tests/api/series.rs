//! Payment series (docs/api.md#payment-series): a customer's stored payment method for unscheduled,
//! merchant-initiated charges. Creating a charge answers 202 with a pending transaction.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app};

fn series_body(acct: &str, currency: &str) -> Value {
    json!({"customer": {"customerAccountId": acct, "email": "s@example.com"}, "paymentMethod": "pm_sandbox_ok",
        "currency": currency, "description": "top-ups", "metadata": {"k": "v"}})
}

async fn create_series(app: &TestApp, body: Value) -> Value {
    let (s, b) = app.post("/v1/payment-series", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_list_get() {
    let app = spawn_app().await;
    let s = create_series(&app, series_body("c-1", "EUR")).await;
    let sid = id(&s);
    assert_eq!(s["status"], "active");
    assert_eq!(s["customer"], json!({"customerAccountId": "c-1"}));
    assert_eq!(s["paymentMethod"], "pm_sandbox_ok");
    assert_eq!(s["currency"], "EUR");
    assert_eq!(s["description"], "top-ups");
    assert_eq!(s["metadata"], json!({"k": "v"}));
    let status: String = sqlx::query_scalar("SELECT status::text FROM payment_series WHERE id = $1::uuid")
        .bind(&sid)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(status, "active");
    assert_eq!(app.event_types(&sid).await, ["created"]);
    let (_, c) = app.get("/v1/customers/c-1").await;
    assert_eq!(c["email"], "s@example.com", "the series upserted its customer");

    let (st, got) = app.get(&format!("/v1/payment-series/{sid}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got, s);

    let s2 = create_series(&app, series_body("c-2", "JPY")).await;
    let s3 = create_series(&app, series_body("c-3", "KWD")).await;
    let (_, page) = app.get("/v1/payment-series?limit=2").await;
    let ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [sid.as_str(), s2["id"].as_str().unwrap()]);
    let cursor = page["nextCursor"].as_str().expect("a next page");
    let (_, page) = app.get(&format!("/v1/payment-series?limit=2&cursor={cursor}")).await;
    let ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [s3["id"].as_str().unwrap()]);
    assert_eq!(page["nextCursor"], Value::Null);

    let r = app.send_full(app.request(Method::GET, &format!("/v1/payment-series/{}", uuid::Uuid::now_v7()))).await;
    assert_problem(&r, 404);
}

#[tokio::test]
async fn a_charge_is_accepted_as_a_pending_transaction() {
    let app = spawn_app().await;
    let s = create_series(&app, series_body("c-1", "EUR")).await;
    let sid = id(&s);
    let (st, t) = app
        .post(
            &format!("/v1/payment-series/{sid}/transactions"),
            json!({"amount": 12.5, "description": "extra", "partnerReference": "inv-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{t}");
    assert_eq!(t["status"], "pending");
    assert_eq!(t["amount"], "12.50");
    assert_eq!(t["currency"], "EUR");
    assert_eq!(t["kind"], "payment_series");
    assert_eq!(t["paymentSeriesId"], json!(sid));
    assert_eq!(t["billingCycleId"], Value::Null);
    assert_eq!(t["description"], "extra");
    assert_eq!(t["partnerReference"], "inv-1");
    assert_eq!(t["attempt"], 1);
    let tid = id(&t);
    assert!(t["idempotencyKey"].as_str().unwrap().contains(&tid.replace('-', "")), "key derived from the id: {t}");
    let row: (String, String, String, String) = sqlx::query_as(
        "SELECT status::text, kind::text, amount::text, payment_method FROM transactions WHERE id = $1::uuid",
    )
    .bind(&tid)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(row, ("pending".into(), "payment_series".into(), "12.5".into(), "pm_sandbox_ok".into()));
    assert_eq!(app.event_types(&tid).await, ["created"]);
    // Poll it.
    let (st, got) = app.get(&format!("/v1/transactions/{tid}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["id"], t["id"]);
    assert_eq!(got["amount"], "12.50");

    // Amounts as strings, in the series currency's minor units.
    let j = create_series(&app, series_body("c-2", "JPY")).await;
    let (st, t) = app.post(&format!("/v1/payment-series/{}/transactions", id(&j)), json!({"amount": "500"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{t}");
    assert_eq!(t["amount"], "500");
    assert_eq!(t["currency"], "JPY");
}

#[tokio::test]
async fn charge_amounts_are_checked_against_the_series_currency() {
    let app = spawn_app().await;
    let eur = id(&create_series(&app, series_body("c-1", "EUR")).await);
    let jpy = id(&create_series(&app, series_body("c-2", "JPY")).await);
    let kwd = id(&create_series(&app, series_body("c-3", "KWD")).await);
    let before = app.state_snapshot().await;
    for (series, amount) in [
        (&eur, json!("9.999")),
        (&eur, json!(0.001)),
        (&jpy, json!("100.5")),
        (&jpy, json!("0.1")),
        (&kwd, json!("1.2345")),
        (&eur, json!("0")),
        (&eur, json!("-5")),
        (&eur, json!("")),
    ] {
        let r = app
            .send_full(
                app.request(Method::POST, &format!("/v1/payment-series/{series}/transactions"))
                    .json(&json!({"amount": amount})),
            )
            .await;
        assert_problem(&r, 422);
        assert_eq!(r.error_fields(), ["amount"], "{amount}");
    }
    for body in [json!({}), json!({"amount": true}), json!({"amount": "1", "currency": "EUR"})] {
        let r = app
            .send_full(app.request(Method::POST, &format!("/v1/payment-series/{eur}/transactions")).json(&body))
            .await;
        assert_problem(&r, 400);
    }
    app.assert_state_unchanged(&before, "bad series charges").await;
    for (series, amount, shown) in [(&kwd, "1.234", "1.234"), (&jpy, "100", "100"), (&eur, "0.01", "0.01")] {
        let (st, t) = app.post(&format!("/v1/payment-series/{series}/transactions"), json!({"amount": amount})).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{t}");
        assert_eq!(t["amount"], shown);
    }
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, 3);
}

#[tokio::test]
async fn a_cancelled_series_takes_no_charges() {
    let app = spawn_app().await;
    let sid = id(&create_series(&app, series_body("c-1", "EUR")).await);
    let (st, b) = app.post(&format!("/v1/payment-series/{sid}/cancel"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "cancelled");
    let status: String = sqlx::query_scalar("SELECT status::text FROM payment_series WHERE id = $1::uuid")
        .bind(&sid)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    let events = app.events_of(&sid).await;
    assert_eq!(events.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["created", "status_changed"]);
    assert_eq!(events[1].1["to"], "cancelled");

    let before = app.state_snapshot().await;
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/payment-series/{sid}/transactions"))
                .json(&json!({"amount": "1.00"})),
        )
        .await;
    assert_problem(&r, 409);
    let r = app.send_full(app.request(Method::POST, &format!("/v1/payment-series/{sid}/cancel"))).await;
    assert_problem(&r, 409);
    app.assert_state_unchanged(&before, "charging a cancelled series").await;
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, 0);
}

#[tokio::test]
async fn partner_references_are_unique() {
    let app = spawn_app().await;
    let mut body = series_body("c-1", "EUR");
    body["partnerReference"] = json!("series-1");
    let first = create_series(&app, body.clone()).await;
    let before = app.state_snapshot().await;
    body["customer"]["customerAccountId"] = json!("c-other");
    let r = app.send_full(app.request(Method::POST, "/v1/payment-series").json(&body)).await;
    assert_problem(&r, 409);
    assert_eq!(r.body["existingId"], first["id"]);
    app.assert_state_unchanged(&before, "duplicate series partnerReference").await;

    let sid = id(&first);
    let path = format!("/v1/payment-series/{sid}/transactions");
    let (st, t1) = app.post(&path, json!({"amount": "5.00", "partnerReference": "charge-1"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{t1}");
    let before = app.state_snapshot().await;
    for (key, amount) in [(Some("other-key"), "5.00"), (None, "5.00"), (None, "6.00")] {
        let mut rb = app.request(Method::POST, &path).json(&json!({"amount": amount, "partnerReference": "charge-1"}));
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        let r = app.send_full(rb).await;
        assert_problem(&r, 409);
        assert_eq!(r.body["existingId"], t1["id"], "{}", r.body);
    }
    // Unique across the merchant's series, not just this one.
    let other = id(&create_series(&app, series_body("c-2", "EUR")).await);
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/payment-series/{other}/transactions"))
                .json(&json!({"amount": "1.00", "partnerReference": "charge-1"})),
        )
        .await;
    assert_problem(&r, 409);
    assert_eq!(r.body["existingId"], t1["id"]);
    assert_eq!(app.table_snapshot("transactions").await, before.iter().find(|(t, _)| *t == "transactions").unwrap().1);
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, 1);
}

#[tokio::test]
async fn idempotent_charges_replay() {
    let app = spawn_app().await;
    let sid = id(&create_series(&app, series_body("c-1", "EUR")).await);
    let path = format!("/v1/payment-series/{sid}/transactions");
    let send = |amount: &str| {
        app.send_full(
            app.request(Method::POST, &path).header("Idempotency-Key", "once").json(&json!({"amount": amount})),
        )
    };
    let first = send("7.00").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let second = send("7.00").await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body["id"], first.body["id"]);
    let third = send("8.00").await;
    assert_problem(&third, 422);
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, 1);
}
