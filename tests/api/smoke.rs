use reqwest::StatusCode;
use serde_json::json;

use crate::support::spawn_app;

#[tokio::test]
async fn a_plan_and_a_subscription_round_trip() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(
            json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["amount"], "9.99");
    let (s, got) = app.get(&format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["id"], sub["id"]);
    assert_eq!(app.count("SELECT count(*) FROM events WHERE object_type = 'subscription'").await, 1);
}
