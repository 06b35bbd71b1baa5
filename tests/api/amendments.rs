//! (docs/amendments.md, docs/api.md#amendments): bad input on the change routes and on
//! PATCH's chargeHour is a 4xx problem naming every bad field, and stores nothing.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, spawn_app};
use crate::validation::rejected;

async fn refused(app: &TestApp, method: Method, path: &str, body: &Value, status: u16, fields: &[&str]) {
    let what = format!("{method} {path} {body}");
    rejected(app, app.request(method, path).header("Idempotency-Key", "k-1").json(body), status, fields, &what).await;
}

#[tokio::test]
async fn bad_changes_are_problems_naming_each_field_and_store_nothing() {
    let app = spawn_app().await;
    let eur = app.active_plan("30.00").await;
    let (_, usd) = app
        .post(
            "/v1/plans",
            json!({"name": "usd", "amount": "5", "currency": "USD",
            "interval": {"unit": "month", "count": 1}, "status": "active"}),
        )
        .await;
    let (_, draft) = app
        .post(
            "/v1/plans",
            json!({"name": "draft", "amount": "5", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}}),
        )
        .await;
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "c"}, "amount": "10.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = s["id"].as_str().unwrap();
    let unknown_plan = Uuid::now_v7().to_string();
    let month0 = json!({"unit": "month", "count": 0});
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (json!({}), 422, vec!["planId"]),
        (json!({"planId": eur, "amount": "5.00"}), 422, vec!["amount"]),
        (json!({"planId": eur, "interval": {"unit": "year", "count": 1}}), 422, vec!["interval"]),
        (json!({"amount": "abc"}), 422, vec!["amount"]),
        (json!({"amount": "-1"}), 422, vec!["amount"]),
        (json!({"amount": "0"}), 422, vec!["amount"]),
        (json!({"amount": "1.001"}), 422, vec!["amount"]),
        (json!({"amount": "abc", "interval": month0}), 422, vec!["amount", "interval.count"]),
        (json!({"amount": "10.00"}), 422, vec!["amount"]),
        (json!({"planId": unknown_plan}), 422, vec!["planId"]),
        (json!({"planId": usd["id"]}), 422, vec!["planId"]),
        (json!({"planId": draft["id"]}), 422, vec!["planId"]),
        (
            json!({"amount": "100.00", "interval": {"unit": "year", "count": 1}, "effective": "now"}),
            422,
            vec!["effective"],
        ),
        (json!({"amount": "5.00", "effective": "tomorrow"}), 400, vec!["effective"]),
        (json!({"amount": "5.00", "prorate": "yes"}), 400, vec!["prorate"]),
        (json!({"amount": "5.00", "currency": "USD"}), 400, vec!["currency"]),
        (json!({"amount": "5.00", "interval": {"unit": "fortnight", "count": 1}}), 400, vec!["interval.unit"]),
        (json!(["amount"]), 400, vec![]),
    ];
    for route in ["change", "change/preview"] {
        let path = format!("/v1/subscriptions/{sid}/{route}");
        for (body, status, fields) in &cases {
            refused(&app, Method::POST, &path, body, *status, fields).await;
        }
        let what = format!("{route}: not JSON");
        let rb = app.request(Method::POST, &path).header("content-type", "application/json").body("{\"amount\": ");
        rejected(&app, rb, 400, &[], &what).await;
        let missing = format!("/v1/subscriptions/{}/{route}", Uuid::now_v7());
        refused(&app, Method::POST, &missing, &json!({"amount": "5.00"}), 404, &[]).await;
    }
    for (body, status, fields) in [
        (json!({"chargeHour": 24}), 422, vec!["chargeHour"]),
        (json!({"chargeHour": -1}), 422, vec!["chargeHour"]),
        (json!({"chargeHour": "six"}), 400, vec!["chargeHour"]),
        (json!({"chargeHour": 25, "authorizedLimit": "x"}), 422, vec!["chargeHour", "authorizedLimit"]),
    ] {
        refused(&app, Method::PATCH, &format!("/v1/subscriptions/{sid}"), &body, status, &fields).await;
    }
    // A final subscription cannot change.
    let (st, b) = app.delete(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(st, reqwest::StatusCode::OK, "{b}");
    for route in ["change", "change/preview"] {
        let path = format!("/v1/subscriptions/{sid}/{route}");
        refused(&app, Method::POST, &path, &json!({"amount": "50.00"}), 409, &[]).await;
    }
}

#[tokio::test]
async fn changes_before_the_first_paid_period_apply_at_once_without_a_charge() {
    let app = spawn_app().await;
    let plan = app.active_plan("30.00").await;
    let trial = app
        .subscription(json!({"customer": {"customerAccountId": "t"}, "amount": "10.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "trialDays": 14, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = trial["id"].as_str().unwrap();
    let (st, preview) = app.post(&format!("/v1/subscriptions/{sid}/change/preview"), json!({"planId": plan})).await;
    assert_eq!(st, reqwest::StatusCode::OK, "{preview}");
    let (st, change) = app.post(&format!("/v1/subscriptions/{sid}/change"), json!({"planId": plan})).await;
    assert_eq!(st, reqwest::StatusCode::OK, "{change}");
    for v in [&preview, &change] {
        assert_eq!((&v["status"], &v["proration"]), (&json!("applied"), &Value::Null), "{v:#}");
    }
    assert_eq!((&change["subscription"]["amount"], &change["subscription"]["planId"]), (&json!("30.00"), &json!(plan)));
    assert_eq!(app.count("SELECT count(*) FROM billing_cycles").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM subscription_changes WHERE status = 'applied'").await, 1);
    let types = app.event_types(sid).await;
    assert_eq!(types.last().map(String::as_str), Some("change_applied"), "{types:?}");
}
