//! Collection methods and Paymennt's customer lookup through the API
//! (docs/payment-links.md#subscriptions-and-plans, docs/payment-links.md#customer-lookup).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{assert_problem, spawn_app};

fn sub(customer: serde_json::Value) -> serde_json::Value {
    json!({"customer": customer, "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1},
        "collectionMethod": "send_payment_link"})
}

#[tokio::test]
async fn collection_method_defaults_from_the_plan_and_a_link_subscription_starts_active() {
    let app = spawn_app().await;
    let plain = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "amount": "9.99", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}}))
        .await;
    assert_eq!(
        (plain["status"].as_str(), plain["collectionMethod"].as_str()),
        (Some("pending"), Some("charge_automatically"))
    );
    assert_eq!(plain["daysUntilDue"], 7);
    let (s, plan) = app
        .post(
            "/v1/plans",
            json!({"name": "Link", "amount": "5.00", "currency": "EUR", "interval": {"unit": "week", "count": 1},
            "status": "active", "collectionMethod": "send_payment_link", "daysUntilDue": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plan}");
    assert_eq!(
        (plan["collectionMethod"].as_str(), plan["daysUntilDue"].as_i64()),
        (Some("send_payment_link"), Some(5))
    );
    let (s, patched) =
        app.patch(&format!("/v1/plans/{}", plan["id"].as_str().unwrap()), json!({"daysUntilDue": 3})).await;
    assert_eq!((s, patched["daysUntilDue"].as_i64()), (StatusCode::OK, Some(3)), "{patched}");
    let r = app
        .send_full(
            app.request(Method::PATCH, &format!("/v1/plans/{}", plan["id"].as_str().unwrap()))
                .json(&json!({"daysUntilDue": 0})),
        )
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), vec!["daysUntilDue"]);
    let linked = app.subscription(json!({"customer": {"customerAccountId": "c-2"}, "planId": plan["id"]})).await;
    assert_eq!(linked["status"], "active", "no payment method needed: {linked}");
    assert_eq!(
        (linked["collectionMethod"].as_str(), linked["daysUntilDue"].as_i64()),
        (Some("send_payment_link"), Some(3))
    );
    let overridden = app
        .subscription(json!({"customer": {"customerAccountId": "c-3"}, "planId": plan["id"],
            "collectionMethod": "charge_automatically", "daysUntilDue": 30}))
        .await;
    assert_eq!((overridden["status"].as_str(), overridden["daysUntilDue"].as_i64()), (Some("pending"), Some(30)));
}

#[tokio::test]
async fn a_customer_given_by_email_or_phone_is_found_or_created_once() {
    let app = spawn_app().await;
    let first = app.subscription(sub(json!({"email": "Ada@Example.com", "phone": "+44 20 7946 0000"}))).await;
    let account = first["customer"]["customerAccountId"].as_str().unwrap().to_owned();
    assert!(account.starts_with("cus_"), "a generated account id: {account}");
    let by_email = app.subscription(sub(json!({"email": "ada@example.com"}))).await;
    let by_phone = app.subscription(sub(json!({"phone": "+44 (20) 7946-0000"}))).await;
    assert_eq!(by_email["customer"]["customerAccountId"], account.as_str());
    assert_eq!(by_phone["customer"]["customerAccountId"], account.as_str());
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 1);
    let (s, c) = app.get(&format!("/v1/customers/{account}")).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    // Given fields overwrite, as for any customer named again.
    assert_eq!((c["email"].as_str(), c["phone"].as_str()), (Some("ada@example.com"), Some("+44 (20) 7946-0000")));

    // Another merchant's customers are never found.
    let other = app.new_merchant("other").await;
    let r = app
        .send_full(
            app.request_as(&other, Method::POST, "/v1/subscriptions").json(&sub(json!({"email": "ada@example.com"}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_ne!(r.body["customer"]["customerAccountId"], account.as_str());

    // An email of one customer and a phone of another: ambiguous, nothing written.
    app.subscription(sub(json!({"customerAccountId": "bob", "email": "bob@example.com"}))).await;
    let before = app.state_snapshot().await;
    let r = app
        .send_full(app.request(Method::POST, "/v1/subscriptions").json(&sub(json!({"email": "bob@example.com",
            "phone": "+44 20 7946 0000"}))))
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), vec!["customer"]);
    app.assert_state_unchanged(&before, "an ambiguous customer").await;

    // Neither an id nor an email or phone: the field is named.
    let r = app.send_full(app.request(Method::POST, "/v1/subscriptions").json(&sub(json!({"firstName": "Ada"})))).await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), vec!["customer.customerAccountId"]);
}
