//! The checkout page with a real worker (docs/pages.md#the-checkout): the card is
//! tokenized by the merchant's gateway, attached as the customer, and the first cycle
//! is charged by the engine as usual; the page follows it to the end. Each test sweeps
//! the scheduler itself (`run_due`), so every assertion is about work already done.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::pages::path_of;
use crate::support::{EngineOpts, STATE_TABLES, TestApp, spawn_app};

const OK_CARD: &str = "4242 4242 4242 4242";
const DECLINED_CARD: &str = "4000000000009995";
const EXPIRED_CARD: &str = "4000000000000069";

async fn pending(app: &TestApp, customer: &str, extra: Value) -> String {
    let mut body = json!({"customer": {"customerAccountId": customer}, "amount": "9.99", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let s = app.subscription(body).await;
    s["id"].as_str().unwrap().to_owned()
}

/// A checkout session; returns (id, page path).
async fn checkout(app: &TestApp, body: Value) -> (String, String) {
    let (s, b) = app.post("/v1/checkout-sessions", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (b["id"].as_str().unwrap().to_owned(), path_of(b["url"].as_str().unwrap()))
}

async fn get(app: &TestApp, path: &str) -> Value {
    let (s, b) = app.get(path).await;
    assert_eq!(s, StatusCode::OK, "{path}: {b}");
    b
}

async fn cycles(app: &TestApp, sub: &str) -> Vec<Value> {
    get(app, &format!("/v1/subscriptions/{sub}/billing-cycles")).await["data"].as_array().unwrap().clone()
}

async fn ledger(app: &TestApp) -> Vec<Value> {
    let (s, b) = app.admin_get(&format!("/admin/sandbox/charges?merchantKey={}", app.merchant.key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"].as_array().unwrap().clone()
}

/// (type, actor) of an object's events, oldest first.
async fn events(app: &TestApp, id: &str) -> Vec<(String, String)> {
    get(app, &format!("/v1/events?objectId={id}&limit=100")).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["actor"].as_str().unwrap().to_owned()))
        .collect()
}

/// No table holds a card number or CVC typed on the pages.
async fn no_card_stored(app: &TestApp) {
    for t in STATE_TABLES {
        let rows = app.table_snapshot(t).await;
        for number in ["4242424242424242", "4242 4242 4242 4242", DECLINED_CARD, EXPIRED_CARD] {
            assert!(!rows.contains(number), "table {t} holds a card number");
        }
    }
}

#[tokio::test]
async fn paying_a_pending_subscription_activates_it_and_charges_cycle_one_once() {
    let app = spawn_app().await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sub = pending(&app, "pay-1", json!({})).await;
    let (id, path) = checkout(&app, json!({"subscriptionId": sub, "returnUrl": "https://shop.example/done"})).await;

    let sent = app.pay(&path, OK_CARD, "12/30", "123").await;
    assert_eq!((sent.status, sent.header("location")), (StatusCode::SEE_OTHER, path.as_str()), "{}", sent.html);
    app.run_due().await;
    let done = app.page(&path, None).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    assert_eq!(done.header("location"), format!("https://shop.example/done?checkout_session={id}&status=complete"));

    let s = get(&app, &format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["paymentMethod"], "pm_sandbox_ok");
    assert_eq!(s["paymentMethodDetails"], json!({"brand": "visa", "last4": "4242", "expMonth": 12, "expYear": 2030}));
    let cs = cycles(&app, &sub).await;
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!((cs[0]["sequence"].as_i64(), cs[0]["status"].as_str()), (Some(1), Some("succeeded")));
    assert_eq!(ledger(&app).await.len(), 1);

    let session = get(&app, &format!("/v1/checkout-sessions/{id}")).await;
    assert_eq!(session["status"], "complete");
    assert_eq!(session["paymentMethod"]["last4"], "4242");
    let sub_events = events(&app, &sub).await;
    assert!(sub_events.contains(&("updated".into(), "customer".into())), "{sub_events:?}");
    assert!(sub_events.contains(&("status_changed".into(), "customer".into())), "{sub_events:?}");
    let session_events = events(&app, &id).await;
    assert_eq!(session_events.last().unwrap(), &("completed".to_owned(), "customer".to_owned()));
    no_card_stored(&app).await;

    // The link is single-use: soon after, it answers 410.
    app.advance(16 * 60).await;
    let used = app.page(&path, None).await;
    assert_eq!(used.status, StatusCode::GONE, "{}", used.html);
    assert!(used.html.contains("already been used"), "{}", used.html);
}

#[tokio::test]
async fn a_declined_card_is_shown_and_a_second_card_pays_the_same_cycle_once() {
    let app = spawn_app().await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let (s, b) = app.post("/v1/webhook-endpoints", json!({"url": "http://127.0.0.1:9/hook"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let sub = pending(&app, "pay-2", json!({})).await;
    let (id, path) = checkout(&app, json!({"subscriptionId": sub})).await;

    assert_eq!(app.pay(&path, DECLINED_CARD, "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let declined = app.page(&path, None).await;
    assert_eq!(declined.status, StatusCode::OK, "{}", declined.html);
    assert!(declined.html.contains("insufficient funds"), "{}", declined.html);
    assert_eq!(get(&app, &format!("/v1/checkout-sessions/{id}")).await["refusedCards"], 1);
    // Polling the page again counts the decline once.
    app.page(&path, None).await;
    assert_eq!(get(&app, &format!("/v1/checkout-sessions/{id}")).await["refusedCards"], 1);
    assert_eq!(get(&app, &format!("/v1/subscriptions/{sub}")).await["status"], "past_due");

    assert_eq!(app.pay(&path, OK_CARD, "11/29", "321").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let done = app.page(&path, None).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.html);
    assert!(done.html.contains("Payment complete") && done.html.contains("ending in 4242"), "{}", done.html);

    let s = get(&app, &format!("/v1/subscriptions/{sub}")).await;
    assert_eq!((s["status"].as_str(), s["paymentMethod"].as_str()), (Some("active"), Some("pm_sandbox_ok")));
    let cs = cycles(&app, &sub).await;
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0]["status"], "succeeded");
    let attempts: Vec<&str> =
        cs[0]["transactions"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(attempts, ["declined", "succeeded"]);
    assert_eq!(ledger(&app).await.len(), 1);
    let cycle_events = events(&app, cs[0]["id"].as_str().unwrap()).await;
    assert!(cycle_events.contains(&("retry_scheduled".into(), "customer".into())), "{cycle_events:?}");

    // Customer events go out as webhooks like any other.
    let delivered: Vec<String> = sqlx::query_scalar("SELECT type FROM webhook_deliveries ORDER BY event_at")
        .fetch_all(app.pool())
        .await
        .unwrap();
    for t in ["checkout_session.card_refused", "checkout_session.payment_method_attached", "checkout_session.completed"]
    {
        assert!(delivered.iter().any(|d| d == t), "{t} not delivered: {delivered:?}");
    }
    no_card_stored(&app).await;
}

#[tokio::test]
async fn a_hard_decline_fails_the_cycle_and_a_new_card_retries_it_within_the_grace_period() {
    let app = spawn_app().await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let (s, plan) = app
        .post(
            "/v1/plans",
            json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1},
                "gracePeriodDays": 3, "status": "active"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plan}");
    let sub = app.subscription(json!({"customer": {"customerAccountId": "pay-3"}, "planId": plan["id"]})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, path) = checkout(&app, json!({"subscriptionId": sub})).await;
    assert_eq!(app.pay(&path, EXPIRED_CARD, "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let declined = app.page(&path, None).await;
    assert!(declined.html.contains("it has expired"), "{}", declined.html);
    assert_eq!(cycles(&app, &sub).await[0]["status"], "failed");

    assert_eq!(app.pay(&path, OK_CARD, "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let cs = cycles(&app, &sub).await;
    assert_eq!(cs[0]["status"], "succeeded", "{cs:?}");
    let kinds: Vec<&str> =
        cs[0]["transactions"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["scheduled", "manual_retry"]);
    assert_eq!(ledger(&app).await.len(), 1);
    assert_eq!(get(&app, &format!("/v1/subscriptions/{sub}")).await["status"], "active");
}

#[tokio::test]
async fn a_hard_decline_without_a_grace_period_ends_the_checkout() {
    let app = spawn_app().await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sub = pending(&app, "pay-3b", json!({})).await;
    let (_, path) = checkout(&app, json!({"subscriptionId": sub})).await;
    assert_eq!(app.pay(&path, "4000000000009979", "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains("could not be started") && !page.html.contains("<form"), "{}", page.html);
    assert_eq!(get(&app, &format!("/v1/subscriptions/{sub}")).await["status"], "cancelled");
    assert!(ledger(&app).await.is_empty());
}

#[tokio::test]
async fn a_trial_or_a_card_replacement_completes_without_a_charge() {
    let app = spawn_app().await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let trial = pending(&app, "pay-4", json!({"trialDays": 14})).await;
    let (id, path) = checkout(&app, json!({"subscriptionId": trial})).await;
    let form = app.page(&path, None).await;
    assert!(form.html.contains("14-day free trial") && form.html.contains("Start trial"), "{}", form.html);
    assert_eq!(app.pay(&path, OK_CARD, "12/30", "123").await.status, StatusCode::SEE_OTHER);
    let done = app.page(&path, None).await;
    assert!(done.html.contains("Card saved"), "{}", done.html);
    assert_eq!(get(&app, &format!("/v1/checkout-sessions/{id}")).await["status"], "complete");
    assert_eq!(get(&app, &format!("/v1/subscriptions/{trial}")).await["status"], "trialing");

    // An active subscription's card is replaced; nothing is charged.
    let active = pending(&app, "pay-5", json!({"paymentMethod": "pm_sandbox_ok"})).await;
    app.run_due().await;
    let charged = ledger(&app).await.len();
    let (_, path) = checkout(&app, json!({"subscriptionId": active})).await;
    assert_eq!(app.pay(&path, "4000 0000 0000 0002", "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let s = get(&app, &format!("/v1/subscriptions/{active}")).await;
    assert_eq!(s["paymentMethod"], "pm_sandbox_do_not_honor");
    assert_eq!(s["paymentMethodDetails"]["last4"], "0002");
    assert_eq!(ledger(&app).await.len(), charged);

    // A payment series gets its new card the same way.
    let (st, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": "pay-6"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{series}");
    let sid = series["id"].as_str().unwrap();
    let (id, path) = checkout(&app, json!({"paymentSeriesId": sid})).await;
    assert_eq!(app.pay(&path, "4000000000009979", "12/30", "123").await.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&app, &format!("/v1/payment-series/{sid}")).await["paymentMethod"], "pm_sandbox_stolen_card");
    assert_eq!(get(&app, &format!("/v1/checkout-sessions/{id}")).await["status"], "complete");
    assert_eq!(events(&app, sid).await.last().unwrap(), &("updated".to_owned(), "customer".to_owned()));
    let other = app.new_merchant("other").await;
    let (st, _) = TestApp::send(app.request_as(&other, Method::GET, &format!("/v1/checkout-sessions/{id}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// `RECUR_SECRET_KEY` of the test, which seals merchants' gateway secrets.
const SECRET_KEY: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";

#[tokio::test]
async fn a_merchant_on_the_http_gateway_gets_its_cards_tokenized_at_its_acquirer() {
    let settings =
        recur::config::Settings { secret_key: Some(SECRET_KEY.to_owned().into()), ..crate::support::fresh_settings() };
    let app = crate::support::spawn_app_with(settings).await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let acq = super::http_gateway::acquirer(|_| {}).await;
    let choice = json!({"gateway": {"kind": "http", "baseUrl": acq.url(), "secret": acq.secret}});
    let (s, b) =
        TestApp::send(app.admin(Method::PATCH, &format!("/admin/merchants/{}", app.merchant.key)).json(&choice)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let _engine = app.start_engine(EngineOpts::stepped());

    // A Visa the acquirer approves: its token, charged there, once.
    let sub = pending(&app, "acq-1", json!({})).await;
    let (id, path) = checkout(&app, json!({"subscriptionId": sub})).await;
    assert_eq!(app.pay(&path, OK_CARD, "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let done = app.page(&path, None).await;
    assert!(done.html.contains("Payment complete"), "{}", done.html);
    let s = get(&app, &format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(s["status"], "active");
    let token = s["paymentMethod"].as_str().unwrap();
    assert!(token.starts_with("pm_ok__"), "the acquirer's token: {token}");
    assert_eq!(s["paymentMethodDetails"]["last4"], "4242");
    let cs = cycles(&app, &sub).await;
    let key = cs[0]["transactions"][0]["idempotencyKey"].as_str().unwrap();
    assert_eq!(acq.charged(key).await, 1);
    assert!(ledger(&app).await.is_empty(), "nothing at the sandbox");
    assert_eq!(get(&app, &format!("/v1/checkout-sessions/{id}")).await["status"], "complete");

    // A card the acquirer will not take (it knows Visa and Mastercard only) is refused
    // on the form and counted; nothing is attached.
    let sub = pending(&app, "acq-2", json!({})).await;
    let (id, path) = checkout(&app, json!({"subscriptionId": sub})).await;
    let refused = app.pay(&path, "378282246310005", "12/30", "1234").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert!(refused.html.contains("The card was refused"), "{}", refused.html);
    assert_eq!(get(&app, &format!("/v1/checkout-sessions/{id}")).await["refusedCards"], 1);
    assert_eq!(get(&app, &format!("/v1/subscriptions/{sub}")).await["paymentMethod"], Value::Null);
    // Its decline card: the decline is shown.
    assert_eq!(app.pay(&path, DECLINED_CARD, "12/30", "123").await.status, StatusCode::SEE_OTHER);
    app.run_due().await;
    let declined = app.page(&path, None).await;
    assert!(declined.html.contains("insufficient funds"), "{}", declined.html);
    no_card_stored(&app).await;
    for table in ["acquirer_charges", "acquirer_tokens"] {
        let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t))::text, '') FROM {table} t"
        )))
        .fetch_one(&acq.pool)
        .await
        .unwrap();
        assert!(!rows.is_empty() || table == "acquirer_tokens", "{table} is empty");
        assert!(!rows.contains("4242424242424242"), "the acquirer stored a card number in {table}");
    }
}

/// A portal's page and form token, as a customer's browser has them.
async fn portal(app: &TestApp, customer: &str) -> (String, String, String) {
    let (s, b) = app.post("/v1/customer-sessions", json!({"customerAccountId": customer})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let path = path_of(b["url"].as_str().unwrap());
    let page = app.page(&path, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    (path, page.cookie().unwrap(), page.csrf())
}

#[tokio::test]
async fn a_plan_switch_charges_the_new_plan_from_the_period_end_and_the_old_one_never_again() {
    let app = spawn_app().await;
    app.set_clock("2027-01-10T10:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let gold = app.active_plan("9.99").await;
    let silver = app.active_plan("4.99").await;
    let (s, b) =
        app.patch("/v1/settings", json!({"portal": {"switchPlan": true, "switchablePlanIds": [silver]}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let old = app
        .subscription(
            json!({"customer": {"customerAccountId": "sw-1"}, "planId": gold, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_due().await;
    assert_eq!(ledger(&app).await.len(), 1);

    let (path, cookie, csrf) = portal(&app, "sw-1").await;
    let fields =
        [("csrf", csrf.as_str()), ("subscription", old.as_str()), ("action", "switch_plan"), ("plan", &silver)];
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.html);
    let before = get(&app, &format!("/v1/subscriptions/{old}")).await;
    let end = before["currentPeriodEnd"].as_str().unwrap().to_owned();
    assert_eq!(before["cancelAt"], end.as_str());
    let new = get(&app, &format!("/v1/subscriptions?customerAccountId=sw-1&planId={silver}")).await["data"][0].clone();
    assert_eq!((new["startAt"].as_str(), new["status"].as_str()), (Some(end.as_str()), Some("active")));
    // Switching again is refused: the subscription already ends.
    let r = app.submit(&path, Some(&cookie), &fields).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.html);

    // At the period's end: the old subscription ends uncharged, the new one is charged once.
    let at: chrono::DateTime<chrono::Utc> = end.parse().unwrap();
    app.set_clock(&(at + chrono::Duration::seconds(1)).to_rfc3339()).await;
    app.run_due().await;
    let old_now = get(&app, &format!("/v1/subscriptions/{old}")).await;
    assert_eq!(old_now["status"], "cancelled");
    assert_eq!(cycles(&app, &old).await.len(), 1, "the old plan was charged again");
    let new_id = new["id"].as_str().unwrap();
    let new_cycles = cycles(&app, new_id).await;
    assert_eq!(new_cycles.len(), 1);
    assert_eq!((new_cycles[0]["status"].as_str(), new_cycles[0]["amount"].as_str()), (Some("succeeded"), Some("4.99")));
    let charges = ledger(&app).await;
    assert_eq!(charges.len(), 2, "{charges:?}");
    let (_, events) = app.get(&format!("/v1/events?objectId={new_id}")).await;
    assert_eq!(events["data"][0]["actor"], "customer");
}
