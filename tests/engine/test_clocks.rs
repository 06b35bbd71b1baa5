//! Test clocks per sandbox merchant (docs/api.md#test-clocks): each merchant's
//! subscriptions follow its own clock, with a real scheduler and worker, asserted on
//! the sandbox ledger and Postgres rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{EngineOpts, Merchant, TestApp, eventually, spawn_app};

async fn send(app: &TestApp, m: &Merchant, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let rb = app.request_as(m, method, path);
    TestApp::send(match body {
        Some(b) => rb.json(&b),
        None => rb,
    })
    .await
}

async fn clock(app: &TestApp, m: &Merchant, at: &str) -> String {
    let (s, b) = send(app, m, Method::POST, "/v1/test-clocks", Some(json!({"frozenTime": at}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["frozenTime"], at);
    b["id"].as_str().unwrap().to_owned()
}

async fn advance(app: &TestApp, m: &Merchant, clock: &str, to: &str) -> Value {
    let (s, b) = send(app, m, Method::POST, &format!("/v1/test-clocks/{clock}/advance"), Some(json!({"to": to}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn cycles_of(app: &TestApp, m: &Merchant, sub: &str) -> Vec<Value> {
    let (s, b) = send(app, m, Method::GET, &format!("/v1/subscriptions/{sub}/billing-cycles?limit=100"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"].as_array().cloned().unwrap_or_default()
}

async fn monthly(app: &TestApp, m: &Merchant, customer: &str, clock: Option<&str>, pm: &str) -> Value {
    let mut body = json!({"customer": {"customerAccountId": customer}, "amount": "10.00", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "paymentMethod": pm});
    if let Some(c) = clock {
        body["testClockId"] = json!(c);
    }
    let (s, b) = send(app, m, Method::POST, "/v1/subscriptions", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

async fn ledger_count_of(app: &TestApp, customer: &str) -> i64 {
    app.count(&format!("SELECT count(*) FROM sandbox_charges WHERE customer_account_id = '{customer}'")).await
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn months_from(start: &str, n: i64) -> String {
    let d = recur::billing::calendar::add_months(at(start), n);
    d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Wait until the subscription has `n` cycles, all succeeded.
async fn settled(app: &TestApp, m: &Merchant, sub: &str, n: usize) {
    eventually(&format!("{n} succeeded cycles of {sub}"), Duration::from_secs(60), async || {
        let cs = cycles_of(app, m, sub).await;
        let ok = cs.iter().filter(|c| c["status"] == "succeeded").count();
        if cs.len() == n && ok == n { Ok(()) } else { Err(format!("{} cycles, {ok} succeeded", cs.len())) }
    })
    .await;
}

#[tokio::test]
async fn test_clocks_two_sandbox_merchants_advance_a_year_each_in_parallel_and_a_live_merchant_is_untouched() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let global = app.clock_now().await;
    let a = Merchant { id: app.merchant.id, key: app.merchant.key, secret: app.merchant.secret.clone() };
    let b = app.new_merchant("sandbox b").await;
    let c = recur::merchants::create(app.pool(), "live", false).await.unwrap();
    let live = Merchant { id: c.merchant_id, key: c.merchant_key, secret: c.secret };
    let _engine = app.start_engine(EngineOpts::default());

    let (a_start, b_start) = ("2030-01-15T09:00:00Z", "2031-06-30T00:00:00Z");
    let a_clock = clock(&app, &a, a_start).await;
    let b_clock = clock(&app, &b, b_start).await;
    let a_sub = monthly(&app, &a, "a-cust", Some(&a_clock), "pm_sandbox_ok").await;
    let b_sub = monthly(&app, &b, "b-cust", Some(&b_clock), "pm_sandbox_ok").await;
    assert_eq!((&a_sub["startAt"], &a_sub["testClockId"]), (&json!(a_start), &json!(a_clock)));
    let live_sub = monthly(&app, &live, "live-cust", None, "pm_sandbox_ok").await;
    let (a_id, b_id, live_id) =
        (a_sub["id"].as_str().unwrap(), b_sub["id"].as_str().unwrap(), live_sub["id"].as_str().unwrap());
    settled(&app, &a, a_id, 1).await;
    settled(&app, &b, b_id, 1).await;
    settled(&app, &live, live_id, 1).await;

    // In parallel: A jumps a year less a second in one advance (no limit on how far);
    // B walks its year month by month, each advance followed by its cycle.
    let jump = async {
        let to = (at(a_start) + chrono::Duration::days(365) - chrono::Duration::seconds(1)).to_rfc3339();
        let moved = advance(&app, &a, &a_clock, &to).await;
        assert_eq!(at(moved["frozenTime"].as_str().unwrap()), at(&to));
        settled(&app, &a, a_id, 12).await;
    };
    let walk = async {
        for k in 1..12 {
            advance(&app, &b, &b_clock, &months_from(b_start, k)).await;
            settled(&app, &b, b_id, k as usize + 1).await;
        }
    };
    tokio::join!(jump, walk);

    // Each sees exactly its own 12 monthly cycles, on its own calendar.
    for (m, sub, start, customer) in [(&a, a_id, a_start, "a-cust"), (&b, b_id, b_start, "b-cust")] {
        let cs = cycles_of(&app, m, sub).await;
        let due: Vec<String> = cs.iter().map(|c| c["dueAt"].as_str().unwrap().to_owned()).collect();
        let want: Vec<String> = (0..12).map(|k| months_from(start, k)).collect();
        assert_eq!(due, want, "{customer}");
        assert_eq!(ledger_count_of(&app, customer).await, 12, "{customer}");
        let (_, s) = send(&app, m, Method::GET, &format!("/v1/subscriptions/{sub}"), None).await;
        assert_eq!(s["nextChargeAt"], json!(months_from(start, 12)), "{customer}");
    }
    // B's month ends clamp from its anchor: Feb 29 2032, then back to the 30th.
    let b_cycles = cycles_of(&app, &b, b_id).await;
    assert_eq!(b_cycles[8]["dueAt"], "2032-02-29T00:00:00Z");
    assert_eq!(b_cycles[9]["dueAt"], "2032-03-30T00:00:00Z");

    // The live merchant and the deployment's clock did not move.
    assert_eq!(app.clock_now().await, global);
    assert_eq!(cycles_of(&app, &live, live_id).await.len(), 1);
    assert_eq!(ledger_count_of(&app, "live-cust").await, 1);
    let (_, s) = send(&app, &live, Method::GET, &format!("/v1/subscriptions/{live_id}"), None).await;
    assert_eq!(s["nextChargeAt"], "2027-02-01T00:00:00Z");
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn test_clocks_trials_retries_and_amendments_follow_the_subscriptions_clock() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let m = Merchant { id: app.merchant.id, key: app.merchant.key, secret: app.merchant.secret.clone() };
    let _engine = app.start_engine(EngineOpts::stepped());
    let tc = clock(&app, &m, "2035-03-01T00:00:00Z").await;

    // A trial ends on the clock's time, not the deployment's.
    let (s, trial) = send(
        &app,
        &m,
        Method::POST,
        "/v1/subscriptions",
        Some(json!({
        "customer": {"customerAccountId": "trial"}, "amount": "5.00", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "trialDays": 7, "paymentMethod": "pm_sandbox_ok",
        "testClockId": tc})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{trial}");
    assert_eq!(trial["trialEndAt"], "2035-03-08T00:00:00Z");
    // A soft decline's retry waits 24 h of the clock.
    let flaky = monthly(&app, &m, "retry", Some(&tc), "pm_sandbox_recover_after_1").await;
    let flaky_id = flaky["id"].as_str().unwrap();
    app.run_due().await;
    let cs = cycles_of(&app, &m, flaky_id).await;
    assert_eq!((&cs[0]["status"], &cs[0]["nextRetryAt"]), (&json!("retrying"), &json!("2035-03-02T00:00:00Z")));
    // The deployment's clock moving does nothing to them.
    app.set_clock("2040-01-01T00:00:00Z").await;
    app.run_due().await;
    assert!(cycles_of(&app, &m, trial["id"].as_str().unwrap()).await.is_empty());
    assert_eq!(cycles_of(&app, &m, flaky_id).await[0]["attempts"], 1);

    advance(&app, &m, &tc, "2035-03-02T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles_of(&app, &m, flaky_id).await;
    assert_eq!((&cs[0]["status"], &cs[0]["attempts"]), (&json!("succeeded"), &json!(2)));

    advance(&app, &m, &tc, "2035-03-08T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles_of(&app, &m, trial["id"].as_str().unwrap()).await;
    assert_eq!((cs.len(), &cs[0]["dueAt"], &cs[0]["status"]), (1, &json!("2035-03-08T00:00:00Z"), &json!("succeeded")));

    // A change prorates on the clock's time: 11 of the period's 31 days left.
    advance(&app, &m, &tc, "2035-03-28T00:00:00Z").await;
    let trial_id = trial["id"].as_str().unwrap();
    let (s, change) =
        send(&app, &m, Method::POST, &format!("/v1/subscriptions/{trial_id}/change"), Some(json!({"amount": "40.00"})))
            .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{change}");
    assert_eq!(change["proration"]["amount"], "12.42", "(40 − 5) × 11 / 31 days = 12.419…");
    app.run_due().await;
    let cs = cycles_of(&app, &m, trial_id).await;
    assert_eq!((&cs[1]["status"], &cs[1]["amount"]), (&json!("succeeded"), &json!("12.42")));
    // Backwards is refused.
    let (s, b) = send(
        &app,
        &m,
        Method::POST,
        &format!("/v1/test-clocks/{tc}/advance"),
        Some(json!({"to": "2035-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    app.assert_exactly_once().await;
}
