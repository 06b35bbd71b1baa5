//! Billing lifecycles driven by the test clock through HTTP, with a real worker,
//! asserting on the sandbox ledger and Postgres rows. Each test sweeps the scheduler
//! itself (`run_due`): once the clock moved, the work due by then has run to its end,
//! so "nothing was charged" is checked after the fact rather than after a delay.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{EngineOpts, TestApp, eventually, spawn_app};

async fn cycles(app: &TestApp, sub: &str) -> Vec<Value> {
    let (s, b) = app.get(&format!("/v1/subscriptions/{sub}/billing-cycles?limit=100")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"].as_array().cloned().unwrap_or_default()
}

async fn sub(app: &TestApp, id: &str) -> Value {
    let (s, b) = app.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Cycle `n` of the subscription, which has `status` (the work due ran: `run_due`).
async fn assert_cycle(app: &TestApp, sub: &str, n: usize, status: &str) -> Value {
    let cs = cycles(app, sub).await;
    assert!(cs.len() >= n && cs[n - 1]["status"] == status, "cycle {n} of {sub} is not {status}: {:#}", json!(cs));
    cs[n - 1].clone()
}

/// The subscription, which has `status`.
async fn assert_status(app: &TestApp, id: &str, status: &str) -> Value {
    let s = sub(app, id).await;
    assert_eq!(s["status"], status, "subscription {id} is not {status}: {s:#}");
    s
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn monthly_from_jan_31_clamps_month_ends_for_a_year() {
    let app = spawn_app().await;
    app.set_clock("2028-01-30T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "jan31"}, "amount": "12.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "startAt": "2028-01-31T10:00:00Z", "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    assert_eq!(s["nextChargeAt"], "2028-01-31T10:00:00Z");
    let expected = [
        "2028-01-31",
        "2028-02-29",
        "2028-03-31",
        "2028-04-30",
        "2028-05-31",
        "2028-06-30",
        "2028-07-31",
        "2028-08-31",
        "2028-09-30",
        "2028-10-31",
        "2028-11-30",
        "2028-12-31",
    ];
    for (i, day) in expected.iter().enumerate() {
        // Just before the due instant nothing new is charged...
        app.set_clock(&format!("{day}T09:59:00Z")).await;
        app.run_due().await;
        assert_eq!(cycles(&app, &sid).await.len(), i, "cycle {} opened early", i + 1);
        // ...and at it, the cycle is charged.
        app.set_clock(&format!("{day}T10:00:00Z")).await;
        app.run_due().await;
        let c = assert_cycle(&app, &sid, i + 1, "succeeded").await;
        assert_eq!(c["dueAt"], format!("{day}T10:00:00Z"));
        assert_eq!(c["periodStart"], format!("{day}T10:00:00Z"));
        assert_eq!(c["sequence"], i as i64 + 1);
    }
    let all = cycles(&app, &sid).await;
    assert_eq!(all.len(), 12);
    assert_eq!(all[1]["periodEnd"], "2028-03-31T10:00:00Z");
    assert_eq!(app.ledger_count().await, 12);
    app.assert_exactly_once().await;
    let s = sub(&app, &sid).await;
    assert_eq!(s["nextChargeAt"], "2029-01-31T10:00:00Z");
    assert_eq!(s["currentPeriodStart"], "2028-12-31T10:00:00Z");
}

#[tokio::test]
async fn trial_charges_first_at_trial_end() {
    let app = spawn_app().await;
    app.set_clock("2027-03-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "trial"}, "amount": "5.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "trialDays": 14, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    assert_eq!(s["status"], "trialing");
    assert_eq!(s["trialEndAt"], "2027-03-15T00:00:00Z");
    app.set_clock("2027-03-14T23:59:00Z").await;
    app.run_due().await;
    assert!(cycles(&app, &sid).await.is_empty());
    assert_eq!(app.ledger_count().await, 0);
    app.set_clock("2027-03-15T00:00:00Z").await;
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "succeeded").await;
    assert_eq!(c["dueAt"], "2027-03-15T00:00:00Z");
    let s = assert_status(&app, &sid, "active").await;
    assert_eq!(s["nextChargeAt"], "2027-04-15T00:00:00Z");
    assert_eq!(app.ledger_count().await, 1);
    let (_, ev) = app.get(&format!("/v1/events?objectId={sid}&type=status_changed")).await;
    assert_eq!(ev["data"][0]["data"]["to"], "active");
}

#[tokio::test]
async fn recover_after_two_goes_past_due_then_succeeds_on_attempt_three() {
    let app = spawn_app().await;
    app.set_clock("2027-05-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "rec"}, "amount": "7.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_recover_after_2"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "retrying").await;
    assert_eq!(c["attempts"], 1);
    assert_eq!(c["nextRetryAt"], "2027-05-02T00:00:00Z");
    assert_eq!(c["failureCode"], "insufficient_funds");
    assert_status(&app, &sid, "past_due").await;
    app.advance(24 * 3600).await;
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "retrying").await;
    assert!(c["attempts"] == 2 && c["transactions"][1]["status"] == "declined", "attempt 2 never declined: {c:#}");
    assert_eq!(c["nextRetryAt"], "2027-05-05T00:00:00Z", "72 h after attempt 2");
    app.advance(72 * 3600).await;
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "succeeded").await;
    let kinds: Vec<_> =
        c["transactions"].as_array().unwrap().iter().map(|t| (t["kind"].clone(), t["status"].clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (json!("scheduled"), json!("declined")),
            (json!("retry"), json!("declined")),
            (json!("retry"), json!("succeeded"))
        ]
    );
    assert_status(&app, &sid, "active").await;
    assert_eq!(app.ledger_count().await, 1);
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn insufficient_funds_fails_after_the_schedule_cancels_and_can_be_retried() {
    let app = spawn_app().await;
    app.set_clock("2027-06-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let (st, plan) = app
        .post(
            "/v1/plans",
            json!({"name": "p", "amount": "3.00", "currency": "EUR", "interval": {"unit": "month", "count": 1},
            "retryScheduleHours": [1, 2], "status": "active"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "poor"}, "planId": plan["id"], "paymentMethod": "pm_sandbox_insufficient_funds"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    assert_cycle(&app, &sid, 1, "retrying").await;
    app.advance(3600).await;
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "retrying").await;
    assert_eq!(c["transactions"][1]["status"], "declined", "attempt 2 never declined: {c:#}");
    assert_eq!(c["nextRetryAt"], "2027-06-01T03:00:00Z", "2 h after attempt 2");
    app.advance(2 * 3600).await;
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "failed").await;
    assert_eq!(c["attempts"], 3);
    // Grace period 0: the subscription is cancelled for non-payment.
    let s = assert_status(&app, &sid, "cancelled").await;
    assert_eq!(s["cancellationReason"], "payment_failed");
    assert_eq!(app.ledger_count().await, 0);
    // A manual retry charges again (and declines again: the card is still empty).
    let cid = id(&c);
    let (st, body) = app.post(&format!("/v1/billing-cycles/{cid}/retry"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "retrying");
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "failed").await;
    assert_eq!(c["attempts"], 4);
    assert_eq!(c["transactions"][3]["kind"], "manual_retry");
    assert_eq!(c["transactions"][3]["status"], "declined");
    // Retrying a cycle that is not failed or error is a conflict.
    let (st, _) = app.post(&format!("/v1/billing-cycles/{cid}/retry"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "failed cycles can be retried again");
    app.run_due().await;
    assert_cycle(&app, &sid, 1, "failed").await;
    assert_eq!(app.ledger_count().await, 0);
}

#[tokio::test]
async fn manual_retry_after_a_new_card_succeeds_within_grace() {
    let app = spawn_app().await;
    app.set_clock("2027-06-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let (_, plan) = app
        .post(
            "/v1/plans",
            json!({"name": "p", "amount": "3.00", "currency": "EUR", "interval": {"unit": "month", "count": 1},
            "gracePeriodDays": 10, "status": "active"}),
        )
        .await;
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "exp"}, "planId": plan["id"], "paymentMethod": "pm_sandbox_expired_card"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "failed").await;
    assert_eq!(c["attempts"], 1, "hard declines fail at attempt 1");
    assert_eq!(c["failureCode"], "expired_card");
    assert_status(&app, &sid, "past_due").await;
    let (st, b) = app.patch(&format!("/v1/subscriptions/{sid}"), json!({"paymentMethod": "pm_sandbox_ok"})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, _) = app.post(&format!("/v1/billing-cycles/{}/retry", id(&c)), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "succeeded").await;
    assert_eq!(c["transactions"][1]["kind"], "manual_retry");
    assert_status(&app, &sid, "active").await;
    // Past the grace period nothing is cancelled: the cycle was paid.
    app.advance(11 * 86_400).await;
    app.run_due().await;
    assert_eq!(sub(&app, &sid).await["status"], "active");
    let (st, _) = app.post(&format!("/v1/billing-cycles/{}/retry", id(&c)), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(app.ledger_count().await, 1);
}

#[tokio::test]
async fn expired_card_fails_at_attempt_one_and_cancels() {
    let app = spawn_app().await;
    app.set_clock("2027-06-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "x"}, "amount": "3.00", "currency": "EUR",
            "interval": {"unit": "week", "count": 1}, "paymentMethod": "pm_sandbox_expired_card"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "failed").await;
    assert_eq!(c["attempts"], 1);
    assert_eq!(c["transactions"].as_array().unwrap().len(), 1);
    let s = assert_status(&app, &sid, "cancelled").await;
    assert_eq!(s["cancellationReason"], "payment_failed");
    assert_eq!(app.ledger_count().await, 0);
}

#[tokio::test]
async fn authorized_limit_fails_without_a_gateway_call() {
    let app = spawn_app().await;
    app.set_clock("2027-06-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "lim"}, "amount": "9.99", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "authorizedLimit": "5.00", "paymentMethod": "pm_sandbox_ok"}))
        .await;
    app.run_due().await;
    let c = assert_cycle(&app, &id(&s), 1, "failed").await;
    assert_eq!(c["failureCode"], "over_authorized_limit");
    assert_eq!(c["transactions"][0]["declineCode"], "over_authorized_limit");
    assert_eq!(c["transactions"][0]["gatewayReference"], Value::Null);
    assert_eq!(app.ledger_count().await, 0);
}

#[tokio::test]
async fn pause_skips_charges_and_resume_reanchors() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "p"}, "amount": "4.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    assert_cycle(&app, &sid, 1, "succeeded").await;
    app.set_clock("2027-01-10T00:00:00Z").await;
    let (st, b) =
        app.post(&format!("/v1/subscriptions/{sid}/pause"), json!({"resumeAt": "2027-03-15T12:00:00Z"})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "paused");
    app.set_clock("2027-02-01T00:00:00Z").await;
    app.run_due().await;
    app.set_clock("2027-03-01T00:00:00Z").await;
    app.run_due().await;
    assert_eq!(cycles(&app, &sid).await.len(), 1, "no charge while paused");
    app.set_clock("2027-03-15T12:00:00Z").await;
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 2, "succeeded").await;
    assert_eq!(c["dueAt"], "2027-03-15T12:00:00Z");
    assert_eq!(c["periodStart"], "2027-03-15T12:00:00Z");
    let s = assert_status(&app, &sid, "active").await;
    assert_eq!(s["nextChargeAt"], "2027-04-15T12:00:00Z", "the resume instant is the new anchor");
    assert_eq!(app.ledger_count().await, 2);
}

#[tokio::test]
async fn resume_within_the_paid_period_changes_nothing_else() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "p2"}, "amount": "4.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    assert_cycle(&app, &sid, 1, "succeeded").await;
    app.set_clock("2027-01-10T00:00:00Z").await;
    app.post(&format!("/v1/subscriptions/{sid}/pause"), json!({})).await;
    app.set_clock("2027-01-20T00:00:00Z").await;
    let (st, b) = app.post(&format!("/v1/subscriptions/{sid}/resume"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["nextChargeAt"], "2027-02-01T00:00:00Z");
    app.set_clock("2027-02-01T00:00:00Z").await;
    app.run_due().await;
    assert_cycle(&app, &sid, 2, "succeeded").await;
    assert_eq!(app.ledger_count().await, 2);
}

#[tokio::test]
async fn cancel_at_period_end_stops_before_the_next_cycle() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "c"}, "amount": "4.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    assert_cycle(&app, &sid, 1, "succeeded").await;
    let (st, b) = app.post(&format!("/v1/subscriptions/{sid}/cancel"), json!({"atPeriodEnd": true})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["cancelAt"], "2027-02-01T00:00:00Z");
    app.set_clock("2027-02-01T00:00:00Z").await;
    app.run_due().await;
    let s = assert_status(&app, &sid, "cancelled").await;
    assert_eq!(s["cancellationReason"], "requested");
    assert_eq!(cycles(&app, &sid).await.len(), 1);
    assert_eq!(app.ledger_count().await, 1);
}

#[tokio::test]
async fn end_at_completes_after_the_last_cycle() {
    let app = spawn_app().await;
    app.set_clock("2027-01-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "e"}, "amount": "2.00", "currency": "EUR",
            "interval": {"unit": "week", "count": 1}, "endAt": "2027-01-20T00:00:00Z", "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    assert_cycle(&app, &sid, 1, "succeeded").await;
    app.set_clock("2027-01-08T00:00:00Z").await;
    app.run_due().await;
    assert_cycle(&app, &sid, 2, "succeeded").await;
    app.set_clock("2027-01-15T00:00:00Z").await;
    app.run_due().await;
    assert_cycle(&app, &sid, 3, "succeeded").await;
    let s = assert_status(&app, &sid, "completed").await;
    assert_eq!(s["nextChargeAt"], Value::Null);
    app.set_clock("2027-02-15T00:00:00Z").await;
    app.run_due().await;
    assert_eq!(cycles(&app, &sid).await.len(), 3, "no cycle at or after endAt");
    assert_eq!(app.ledger_count().await, 3);
}

#[tokio::test]
async fn past_start_charges_once_now_without_back_charging() {
    let app = spawn_app().await;
    app.set_clock("2027-03-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "old"}, "amount": "8.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "startAt": "2027-01-31T10:00:00Z", "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "succeeded").await;
    assert_eq!(c["dueAt"], "2027-03-15T12:00:00Z");
    assert_eq!(c["periodStart"], "2027-02-28T10:00:00Z");
    assert_eq!(c["periodEnd"], "2027-03-31T10:00:00Z");
    assert_eq!(cycles(&app, &sid).await.len(), 1);
    assert_eq!(sub(&app, &sid).await["nextChargeAt"], "2027-03-31T10:00:00Z");
    assert_eq!(app.ledger_count().await, 1);
}

#[tokio::test]
async fn payment_series_charges_once_per_key_and_reference() {
    let app = spawn_app().await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let (st, series) = app
        .post(
            "/v1/payment-series",
            json!({"customer": {"customerAccountId": "mit"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{series}");
    let path = format!("/v1/payment-series/{}/transactions", id(&series));
    let body = json!({"amount": "19.90", "partnerReference": "order-1"});
    let req = || app.request(reqwest::Method::POST, &path).header("Idempotency-Key", "k-1").json(&body);
    let (s1, t1) = TestApp::send(req()).await;
    let (s2, t2) = TestApp::send(req()).await;
    assert_eq!(s1, StatusCode::ACCEPTED, "{t1}");
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert_eq!(t1["id"], t2["id"]);
    let (s3, dup) = app.post(&path, body.clone()).await;
    assert_eq!(s3, StatusCode::CONFLICT);
    assert_eq!(dup["existingId"], t1["id"]);
    let tid = id(&t1);
    app.run_due().await;
    let (_, t) = app.get(&format!("/v1/transactions/{tid}")).await;
    assert_eq!(t["status"], "succeeded", "the series charge settled: {t:#}");
    assert_eq!(app.ledger_count().await, 1);
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn timeout_token_dead_letters_and_errors_the_cycle() {
    let app = spawn_app().await;
    let _engine = app.start_engine(EngineOpts { max_attempts: Some(3), ..EngineOpts::stepped() });
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "to"}, "amount": "4.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_timeout"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "error").await;
    assert_eq!(c["transactions"][0]["status"], "error");
    let dead = recur::dlq::list(&app.rt.queue, jobs::Queue::ChargeTransaction).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].object_id.to_string(), c["transactions"][0]["id"].as_str().unwrap());
    assert!(dead[0].last_error.contains("timeout"), "{}", dead[0].last_error);
    let n = app.count("SELECT count(*) FROM events WHERE type = 'dead_lettered'").await;
    assert_eq!(n, 1);
    assert_eq!(app.ledger_count().await, 0);
}

#[tokio::test]
async fn manual_retry_of_an_errored_charge_that_went_through_charges_nothing_more() {
    let app = spawn_app().await;
    let engine = app.start_engine(EngineOpts { max_attempts: Some(2), ..EngineOpts::stepped() });
    let s = app
        .subscription(json!({"customer": {"customerAccountId": "late"}, "amount": "4.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_timeout"}))
        .await;
    let sid = id(&s);
    app.run_due().await;
    let c = assert_cycle(&app, &sid, 1, "error").await;
    engine.stop().await;
    // The gateway charged after all and only the answer was lost: its ledger has the key.
    let key = c["transactions"][0]["idempotencyKey"].as_str().unwrap().to_owned();
    sqlx::query(
        "INSERT INTO sandbox_charges (id, idempotency_key, merchant_key, amount, currency, customer_account_id, payment_method, reference)
         VALUES (gen_random_uuid(), $1, $2, 4.00, 'EUR', 'late', 'pm_sandbox_timeout', 'sbx_late')",
    )
    .bind(&key)
    .bind(app.merchant.key)
    .execute(app.pool())
    .await
    .unwrap();
    let (st, body) = app.post(&format!("/v1/billing-cycles/{}/retry", id(&c)), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["transactions"].as_array().unwrap().len(), 1, "no new attempt was opened");
    assert_eq!(body["transactions"][0]["status"], "succeeded");
    assert_eq!(body["transactions"][0]["gatewayReference"], "sbx_late");
    assert_eq!(app.ledger_count().await, 1);
    app.assert_exactly_once().await;
    // A second retry finds nothing to retry.
    let (st, _) = app.post(&format!("/v1/billing-cycles/{}/retry", id(&c)), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT);
}

/// A cycle and its transactions are read on one snapshot. The interleaving is forced:
/// a writer holds the transactions table locked while it changes a cycle and its
/// charge, so the GET reads the cycle, then waits for the lock. Under READ COMMITTED
/// its second query ran on a new snapshot after the commit and answered the old cycle
/// with the new charge (a `succeeded` cycle with a `declined` charge); now both come
/// from the moment of the first query.
#[tokio::test]
async fn a_cycle_and_its_transactions_are_read_on_one_snapshot() {
    let app = spawn_app().await;
    app.set_clock("2027-06-01T00:00:00Z").await;
    let engine = app.start_engine(EngineOpts::stepped());
    let plan = app.active_plan("3.00").await;
    let s = app
        .subscription(
            json!({"customer": {"customerAccountId": "snap"}, "planId": plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    let sid = id(&s);
    app.run_due().await;
    let cid = id(&assert_cycle(&app, &sid, 1, "succeeded").await);
    engine.stop().await;

    for (path, cycle_at) in
        [(format!("/v1/billing-cycles/{cid}"), ""), (format!("/v1/subscriptions/{sid}/billing-cycles"), "/data/0")]
    {
        let set = |status: &str, txn: &str| {
            format!(
                "UPDATE billing_cycles SET status = '{status}' WHERE id = '{cid}';
                 UPDATE transactions SET status = '{txn}' WHERE billing_cycle_id = '{cid}'"
            )
        };
        let mut writer = app.pool().begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE; {}",
            set("failed", "declined")
        )))
        .execute(&mut *writer)
        .await
        .unwrap();
        let reader = tokio::spawn(app.request(reqwest::Method::GET, &path).send());
        // The reader has read the cycle and waits for the table lock.
        eventually("the reader to wait for the lock on transactions", Duration::from_secs(10), async || {
            app.count(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'transactions'::regclass
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await
                > 0
        })
        .await;
        assert!(!reader.is_finished(), "{path}: the reader did not wait for the lock");
        writer.commit().await.unwrap();
        let v: Value = reader.await.unwrap().unwrap().json().await.unwrap();
        let c = v.pointer(cycle_at).unwrap();
        let seen = (c["status"].as_str().unwrap(), c["transactions"][0]["status"].as_str().unwrap());
        assert_eq!(seen, ("succeeded", "succeeded"), "{path}: one moment, before the write: {c:#}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(set("succeeded", "succeeded"))).execute(app.pool()).await.unwrap();
    }
}
