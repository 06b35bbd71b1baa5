//! Amendments (docs/amendments.md): changes of terms mid-period with a real worker,
//! the manual clock, and assertions on the sandbox ledger and Postgres rows.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{EngineOpts, TestApp, eventually, spawn_app};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

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

/// Ledger entries of one customer, oldest first: (amount, idempotency key).
async fn ledger_of(app: &TestApp, customer: &str) -> Vec<(Decimal, String)> {
    sqlx::query_as(
        "SELECT amount, idempotency_key FROM sandbox_charges WHERE customer_account_id = $1 ORDER BY created_at, id",
    )
    .bind(customer)
    .fetch_all(app.pool())
    .await
    .unwrap()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A monthly 10.00 EUR subscription started at the clock's now, cycle 1 charged.
async fn paying(app: &TestApp, customer: &str, pm: &str) -> String {
    let s = app
        .subscription(json!({"customer": {"customerAccountId": customer}, "amount": "10.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": pm}))
        .await;
    app.run_due().await;
    let cs = cycles(app, &id(&s)).await;
    assert_eq!(cs.len(), 1, "{cs:#?}");
    assert_eq!(cs[0]["status"], "succeeded", "{cs:#?}");
    id(&s)
}

#[tokio::test]
async fn amend_upgrade_mid_period_charges_one_proration_then_the_new_amount_on_the_old_anchor() {
    let app = spawn_app().await;
    let hooks = Receiver::ok().await;
    let (s, b) = app.post("/v1/webhook-endpoints", json!({"url": hooks.url, "eventTypes": ["*"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.set_clock("2027-04-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sid = paying(&app, "up", "pm_sandbox_ok").await;

    // 10 days and 6 hours of April's 30 left: (30 − 10) × 885600 / 2592000 = 6.833… → 6.83.
    app.set_clock("2027-04-20T18:00:00Z").await;
    let body = json!({"amount": "30.00"});
    let (s, preview) = app.post(&format!("/v1/subscriptions/{sid}/change/preview"), body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert_eq!(preview["proration"]["amount"], "6.83", "{preview:#}");
    assert_eq!(preview["status"], "awaiting_payment");
    assert!(preview["id"].is_null());
    assert_eq!(app.count("SELECT count(*) FROM subscription_changes").await, 0, "a preview stores nothing");

    let path = format!("/v1/subscriptions/{sid}/change");
    let req = || app.request(Method::POST, &path).header("Idempotency-Key", "up-1").json(&body);
    let first = app.send_full(req()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let change = first.body.clone();
    assert_eq!(change["status"], "awaiting_payment");
    assert_eq!(change["proration"], preview["proration"], "the change charges what the preview showed");
    // Until the proration is approved the old terms are in force.
    assert_eq!(change["subscription"]["amount"], "10.00");
    app.run_due().await;

    let ledger = ledger_of(&app, "up").await;
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert_eq!(ledger[1].0, dec(preview["proration"]["amount"].as_str().unwrap()));
    let txn = change["transactionId"].as_str().unwrap();
    assert_eq!(ledger[1].1, format!("recur_txn_{}", txn.replace('-', "")), "the proration has its own idempotency key");
    let cs = cycles(&app, &sid).await;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[1]["id"], change["billingCycleId"]);
    assert_eq!((&cs[1]["status"], &cs[1]["amount"]), (&json!("succeeded"), &json!("6.83")));
    assert_eq!((&cs[1]["kind"], &cs[1]["transactions"][0]["kind"]), (&json!("proration"), &json!("proration")));
    assert_eq!((&cs[0]["kind"], &cs[0]["transactions"][0]["kind"]), (&json!("period"), &json!("scheduled")));
    assert_eq!(cs[1]["periodStart"], "2027-04-20T18:00:00Z");
    assert_eq!(cs[1]["periodEnd"], "2027-05-01T00:00:00Z");
    let s = sub(&app, &sid).await;
    assert_eq!((&s["amount"], &s["status"]), (&json!("30.00"), &json!("active")));
    assert_eq!(s["nextChargeAt"], "2027-05-01T00:00:00Z", "the anchor did not move");
    let types = app.event_types(&sid).await;
    assert!(types.ends_with(&["change_requested".into(), "change_applied".into()]), "{types:?}");

    // The same key replays the first answer and charges nothing more.
    let again = app.send_full(req()).await;
    assert_eq!((again.status, &again.body), (StatusCode::ACCEPTED, &change));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.run_due().await;
    assert_eq!(ledger_of(&app, "up").await.len(), 2);

    // The next cycle: the new amount, on the old anchor.
    app.set_clock("2027-05-01T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!(cs.len(), 3);
    assert_eq!((&cs[2]["status"], &cs[2]["amount"]), (&json!("succeeded"), &json!("30.00")));
    assert_eq!(
        (&cs[2]["dueAt"], &cs[2]["periodEnd"]),
        (&json!("2027-05-01T00:00:00Z"), &json!("2027-06-01T00:00:00Z"))
    );
    assert_eq!(
        ledger_of(&app, "up").await.iter().map(|l| l.0).collect::<Vec<_>>(),
        [dec("10"), dec("6.83"), dec("30")]
    );
    app.assert_exactly_once().await;

    // The change reached the merchant as webhooks, with the proration's own charge.
    eventually("the change's webhooks", Duration::from_secs(30), async || {
        let got: Vec<String> = hooks.received().iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
        let want = ["subscription.change_requested", "subscription.change_applied", "transaction.succeeded"];
        if want.iter().all(|w| got.iter().any(|g| g == w)) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
}

#[tokio::test]
async fn amend_declined_proration_keeps_the_old_plan() {
    let app = spawn_app().await;
    app.set_clock("2027-04-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sid = paying(&app, "declined", "pm_sandbox_ok").await;
    let (s, b) =
        app.patch(&format!("/v1/subscriptions/{sid}"), json!({"paymentMethod": "pm_sandbox_insufficient_funds"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    app.set_clock("2027-04-16T00:00:00Z").await;
    let (s, change) = app.post(&format!("/v1/subscriptions/{sid}/change"), json!({"amount": "40.00"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{change}");
    assert_eq!(change["proration"]["amount"], "15.00", "(40 − 10) × 15 / 30 days");
    app.run_due().await;

    // A clear failure: the cycle failed with the decline code, the change failed, no ledger entry.
    let cs = cycles(&app, &sid).await;
    assert_eq!(cs.len(), 2);
    assert_eq!((&cs[1]["status"], &cs[1]["failureCode"]), (&json!("failed"), &json!("insufficient_funds")));
    assert!(cs[1]["nextRetryAt"].is_null(), "a proration is never retried: {:#}", cs[1]);
    assert_eq!(ledger_of(&app, "declined").await.len(), 1);
    let s = sub(&app, &sid).await;
    assert_eq!((&s["amount"], &s["status"]), (&json!("10.00"), &json!("active")), "the old plan stays in force");
    let (_, ev) = app.get(&format!("/v1/events?objectId={sid}&type=change_failed")).await;
    assert_eq!(ev["data"][0]["data"]["failureCode"], "insufficient_funds", "{ev:#}");
    assert_eq!(ev["data"][0]["data"]["changeId"], change["id"]);
    let status: String = sqlx::query_scalar("SELECT status::text FROM subscription_changes WHERE id = $1::uuid")
        .bind(change["id"].as_str().unwrap())
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(status, "failed");
    // Not a period: no manual retry, no grace-period cancellation.
    let (s, b) = app.post(&format!("/v1/billing-cycles/{}/retry", cs[1]["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    app.set_clock("2027-04-25T00:00:00Z").await;
    app.run_due().await;
    assert_eq!(sub(&app, &sid).await["status"], "active");

    // The next period is charged at the old amount.
    let (s, b) = app.patch(&format!("/v1/subscriptions/{sid}"), json!({"paymentMethod": "pm_sandbox_ok"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.set_clock("2027-05-01T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!((&cs[2]["status"], &cs[2]["amount"]), (&json!("succeeded"), &json!("10.00")));
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn amend_downgrade_charges_nothing_now_and_the_next_cycle_at_the_new_amount() {
    let app = spawn_app().await;
    app.set_clock("2027-04-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sid = paying(&app, "down", "pm_sandbox_ok").await;
    let plan = app.active_plan("4.00").await;

    app.set_clock("2027-04-10T00:00:00Z").await;
    let (s, change) = app.post(&format!("/v1/subscriptions/{sid}/change"), json!({"planId": plan})).await;
    assert_eq!(s, StatusCode::OK, "{change}");
    assert_eq!((&change["status"], &change["effective"]), (&json!("scheduled"), &json!("period_end")));
    assert_eq!(change["effectiveAt"], "2027-05-01T00:00:00Z");
    assert!(change["proration"].is_null());
    app.run_due().await;
    assert_eq!(ledger_of(&app, "down").await.len(), 1, "nothing is charged now");
    assert_eq!(cycles(&app, &sid).await.len(), 1);
    assert_eq!(sub(&app, &sid).await["amount"], "10.00", "the paid period keeps its terms");

    app.set_clock("2027-05-01T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!(cs.len(), 2);
    assert_eq!(
        (&cs[1]["status"], &cs[1]["amount"], &cs[1]["sequence"]),
        (&json!("succeeded"), &json!("4.00"), &json!(2))
    );
    let s = sub(&app, &sid).await;
    assert_eq!((&s["amount"], &s["planId"]), (&json!("4.00"), &json!(plan)));
    assert_eq!(ledger_of(&app, "down").await.iter().map(|l| l.0).collect::<Vec<_>>(), [dec("10"), dec("4")]);
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn amend_interval_change_reanchors_at_the_period_end_and_a_later_change_supersedes() {
    let app = spawn_app().await;
    app.set_clock("2027-04-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sid = paying(&app, "yearly", "pm_sandbox_ok").await;
    app.set_clock("2027-04-10T00:00:00Z").await;
    let path = format!("/v1/subscriptions/{sid}/change");
    // Asking for a new interval now is refused, naming the field.
    let r = app
        .send_full(app.request(Method::POST, &path).json(&json!({"amount": "100.00",
        "interval": {"unit": "year", "count": 1}, "effective": "now"})))
        .await;
    crate::support::assert_problem(&r, 422);
    assert_eq!(r.error_fields(), ["effective"]);
    let (s, first) = app.post(&path, json!({"amount": "5.00"})).await;
    assert_eq!((s, &first["status"]), (StatusCode::OK, &json!("scheduled")), "{first}");
    let (s, second) = app.post(&path, json!({"amount": "100.00", "interval": {"unit": "year", "count": 1}})).await;
    assert_eq!((s, &second["status"]), (StatusCode::OK, &json!("scheduled")), "{second}");
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, status::text FROM subscription_changes ORDER BY id")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(statuses, [(id(&first), "superseded".into()), (id(&second), "scheduled".into())]);

    app.set_clock("2027-05-01T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!((&cs[1]["amount"], &cs[1]["periodEnd"]), (&json!("100.00"), &json!("2028-05-01T00:00:00Z")));
    let s = sub(&app, &sid).await;
    assert_eq!(s["interval"], json!({"unit": "year", "count": 1}));
    assert_eq!(s["nextChargeAt"], "2028-05-01T00:00:00Z");
    // A year later the next cycle falls on the new anchor.
    app.set_clock("2028-05-01T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!((cs.len(), &cs[2]["dueAt"], &cs[2]["amount"]), (3, &json!("2028-05-01T00:00:00Z"), &json!("100.00")));
    app.assert_exactly_once().await;
}

/// A change requested at the very instant the next cycle falls due, while a scheduler
/// and a worker run: whichever wins, each customer pays 30.00 in all for cycles 1–2
/// (either cycle 2 at the new 20.00, or cycle 2 at 10.00 plus a 10.00 proration for
/// the whole of its period), and nothing is charged twice.
#[tokio::test]
async fn amend_change_racing_the_cycles_own_charge_never_charges_twice() {
    let app = spawn_app().await;
    app.set_clock("2027-04-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let mut subs = Vec::new();
    for i in 0..16 {
        subs.push((format!("race-{i}"), paying(&app, &format!("race-{i}"), "pm_sandbox_ok").await));
    }
    app.set_clock("2027-05-01T00:00:00Z").await;
    // Two tasks: one sweeps the due cycles into the worker, the other requests the
    // changes, staggered over the time the cycles take to open and charge.
    let sweep = async { app.run_due().await };
    let changes = async {
        let mut tasks = Vec::new();
        for (i, (_, sid)) in subs.iter().enumerate() {
            let rb =
                app.request(Method::POST, &format!("/v1/subscriptions/{sid}/change")).json(&json!({"amount": "20.00"}));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
                crate::support::send_full(rb).await
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert!(r.status == StatusCode::OK || r.status == StatusCode::ACCEPTED, "{} {}", r.status, r.body);
            outcomes.push(r.body["status"].as_str().unwrap().to_owned());
        }
        outcomes
    };
    let ((), outcomes) = tokio::join!(sweep, changes);
    app.run_due().await;
    eventually("every cycle 2 and proration to settle", Duration::from_secs(60), async || {
        let open = app.count("SELECT count(*) FROM billing_cycles WHERE status NOT IN ('succeeded')").await;
        let seconds = app.count("SELECT count(*) FROM billing_cycles WHERE kind = 'period' AND sequence >= 2").await;
        if open == 0 && seconds == 16 { Ok(()) } else { Err(format!("{open} unsettled, {seconds} second periods")) }
    })
    .await;
    app.wait_drained().await;
    for (customer, sid) in &subs {
        let ledger = ledger_of(&app, customer).await;
        let total: Decimal = ledger.iter().map(|l| l.0).sum();
        assert_eq!(total, dec("30"), "{customer}: {ledger:?}");
        assert!(ledger.len() == 2 || ledger.len() == 3, "{customer}: {ledger:?}");
        assert_eq!(sub(&app, sid).await["amount"], "20.00");
    }
    app.assert_exactly_once().await;
    eprintln!("race outcomes: {outcomes:?}");
}

#[tokio::test]
async fn amend_charge_hour_moves_the_anchor_within_its_day() {
    let app = spawn_app().await;
    app.set_clock("2027-04-01T10:30:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sid = paying(&app, "hour", "pm_sandbox_ok").await;
    let (s, b) =
        app.patch(&format!("/v1/subscriptions/{sid}"), json!({"chargeHour": 6, "authorizedLimit": "50"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!((&b["chargeHour"], &b["authorizedLimit"]), (&json!(6), &json!("50.00")));
    assert_eq!(b["nextChargeAt"], "2027-05-01T06:00:00Z");
    app.set_clock("2027-05-01T05:59:00Z").await;
    app.run_due().await;
    assert_eq!(cycles(&app, &sid).await.len(), 1);
    app.set_clock("2027-05-01T06:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!((&cs[1]["status"], &cs[1]["dueAt"]), (&json!("succeeded"), &json!("2027-05-01T06:00:00Z")));
    // An upgrade over the authorized limit is declined without a gateway call.
    let (s, b) = app.post(&format!("/v1/subscriptions/{sid}/change"), json!({"amount": "200.00"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!(cs[2]["failureCode"], "over_authorized_limit");
    assert_eq!(sub(&app, &sid).await["amount"], "10.00");
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn amend_interval_change_after_the_period_ended_applies_at_once_from_the_due_date() {
    let app = spawn_app().await;
    app.set_clock("2027-01-31T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let sid = paying(&app, "ended", "pm_sandbox_ok").await;
    // Feb 28: the period is over and cycle 2 not opened yet; the change applies now and
    // the new calendar starts where cycle 2 was due.
    app.set_clock("2027-03-01T12:00:00Z").await;
    let (s, change) = app
        .post(
            &format!("/v1/subscriptions/{sid}/change"),
            json!({"amount": "50.00", "interval": {"unit": "week", "count": 2}}),
        )
        .await;
    assert_eq!((s, &change["status"]), (StatusCode::OK, &json!("applied")), "{change}");
    assert_eq!(change["subscription"]["nextChargeAt"], "2027-02-28T00:00:00Z");
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!((&cs[1]["amount"], &cs[1]["dueAt"]), (&json!("50.00"), &json!("2027-02-28T00:00:00Z")));
    assert_eq!(cs[1]["periodEnd"], "2027-03-14T00:00:00Z", "two weeks from the new anchor");
    app.set_clock("2027-03-14T00:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sid).await;
    assert_eq!(
        (cs.len(), &cs[2]["dueAt"], &cs[2]["periodEnd"]),
        (3, &json!("2027-03-14T00:00:00Z"), &json!("2027-03-28T00:00:00Z"))
    );
    app.assert_exactly_once().await;
}
