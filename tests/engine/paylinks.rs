//! Payment links (docs/payment-links.md) with a real worker: the calendar on the test
//! clock, paying a link, expiry, reminders and the grace period, and the races that
//! must end with one approved charge per cycle in the sandbox's ledger whatever the
//! timing (docs/guarantees.md#one-attempt-in-flight-per-cycle).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::pages::{Page, path_of};
use crate::support::receiver::Receiver;
use crate::support::{EngineOpts, TestApp, spawn_app};

const OK_CARD: &str = "4242 4242 4242 4242";
const DECLINED_CARD: &str = "4000000000009995";

/// How many times each race runs (each repetition on its own cycle).
const RACE_REPETITIONS: usize = 40;

async fn get(app: &TestApp, path: &str) -> Value {
    let (s, b) = app.get(path).await;
    assert_eq!(s, StatusCode::OK, "{path}: {b}");
    b
}

async fn cycles(app: &TestApp, sub: &str) -> Vec<Value> {
    get(app, &format!("/v1/subscriptions/{sub}/billing-cycles")).await["data"].as_array().unwrap().clone()
}

/// An active plan collected by payment links.
async fn link_plan(app: &TestApp, days_until_due: i64, grace: i64) -> String {
    let (s, b) = app
        .post(
            "/v1/plans",
            json!({"name": "Monthly link", "amount": "25.00", "currency": "EUR", "interval": {"unit": "month", "count": 1},
                "status": "active", "collectionMethod": "send_payment_link", "daysUntilDue": days_until_due,
                "gracePeriodDays": grace}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["collectionMethod"], "send_payment_link");
    b["id"].as_str().unwrap().to_owned()
}

async fn link_sub(app: &TestApp, plan: &str, customer: &str, extra: Value) -> String {
    let mut body = json!({"customer": {"customerAccountId": customer}, "planId": plan});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let s = app.subscription(body).await;
    assert_eq!(s["status"], "active", "{s}");
    assert_eq!(s["collectionMethod"], "send_payment_link");
    s["id"].as_str().unwrap().to_owned()
}

/// Approved charges of one cycle in the sandbox's ledger.
async fn ledger_of_cycle(app: &TestApp, cycle: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM sandbox_charges l JOIN transactions t ON t.idempotency_key = l.idempotency_key
         WHERE t.billing_cycle_id = '{cycle}'"
    ))
    .await
}

fn link_path(cycle: &Value) -> String {
    path_of(cycle["paymentLink"]["url"].as_str().unwrap_or_else(|| panic!("no link: {cycle}")))
}

/// Open a link's page as a browser tab would: (cookie, csrf field).
async fn open_tab(app: &TestApp, path: &str) -> (String, String) {
    let page = app.page(path, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    (page.cookie().expect("the page sets its cookie"), page.csrf())
}

async fn submit_card(app: &TestApp, path: &str, tab: &(String, String), number: &str) -> Page {
    app.submit(
        path,
        Some(&tab.0),
        &[("csrf", &tab.1), ("name", "Ada Lovelace"), ("number", number), ("expiry", "12/30"), ("cvc", "123")],
    )
    .await
}

/// The loser of a race on a link was told: a 409 page, or the page of a paid bill.
fn told_clearly(p: &Page) -> bool {
    p.status == StatusCode::CONFLICT || p.html.contains("Already paid")
}

#[tokio::test]
async fn links_follow_the_calendar_on_the_test_clock() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    // A long grace period: the unpaid links expire, and the subscriptions go on.
    let plan = link_plan(&app, 7, 90).await;
    let start = json!({"startAt": "2027-01-10T00:00:00Z", "chargeHour": 10});
    let sub = link_sub(&app, &plan, "cal-1", start.clone()).await;
    let mut ending = start.clone();
    ending["endAt"] = json!("2027-03-01T00:00:00Z");
    let ends = link_sub(&app, &plan, "cal-2", ending).await;
    let paused = link_sub(&app, &plan, "cal-3", start).await;

    // A start in the past: the first link goes out at once, nothing is charged.
    app.run_due().await;
    for s in [&sub, &ends, &paused] {
        let cs = cycles(&app, s).await;
        assert_eq!(cs.len(), 1, "{cs:?}");
        assert_eq!(cs[0]["status"], "pending");
        assert_eq!(cs[0]["collectionMethod"], "send_payment_link");
        assert_eq!(cs[0]["dueAt"], "2027-01-15T12:00:00Z");
        assert_eq!(cs[0]["periodStart"], "2027-01-10T10:00:00Z");
        assert_eq!(cs[0]["attempts"], 0);
        assert_eq!(cs[0]["transactions"], json!([]));
        assert_eq!(cs[0]["paymentLink"]["expiresAt"], "2027-01-22T12:00:00Z");
        assert_eq!(cs[0]["paymentLink"]["status"], "active");
        let types = app.event_types(cs[0]["id"].as_str().unwrap()).await;
        assert_eq!(types, vec!["created", "payment_link_created"], "{types:?}");
    }
    assert_eq!(app.ledger_count().await, 0);
    assert_eq!(get(&app, &format!("/v1/subscriptions/{sub}")).await["nextChargeAt"], "2027-02-10T10:00:00Z");
    let (s, b) = app.post(&format!("/v1/subscriptions/{paused}/pause"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // The next links at 10:00 UTC on the anchor's days, not a minute earlier.
    app.set_clock("2027-02-10T09:59:00Z").await;
    app.run_due().await;
    assert_eq!(cycles(&app, &sub).await.len(), 1);
    app.set_clock("2027-02-10T10:00:00Z").await;
    app.run_due().await;
    let cs = cycles(&app, &sub).await;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[1]["dueAt"], "2027-02-10T10:00:00Z");
    assert_eq!(cs[1]["paymentLink"]["expiresAt"], "2027-02-17T10:00:00Z");
    assert_ne!(cs[0]["paymentLink"]["url"], cs[1]["paymentLink"]["url"], "one link per cycle");
    assert_eq!(cycles(&app, &ends).await.len(), 2);
    assert_eq!(cycles(&app, &paused).await.len(), 1, "no link while paused");

    app.set_clock("2027-03-10T10:00:00Z").await;
    app.run_due().await;
    assert_eq!(cycles(&app, &sub).await.len(), 3);
    assert_eq!(cycles(&app, &ends).await.len(), 2, "the end date stops the links");
    assert_eq!(cycles(&app, &paused).await.len(), 1);
    assert_eq!(app.ledger_count().await, 0, "a link charges nothing by itself");
}

#[tokio::test]
async fn paying_a_link_settles_the_cycle_once_and_the_link_then_says_already_paid() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let hooks = Receiver::ok().await;
    let (s, b) = app.post("/v1/webhook-endpoints", json!({"url": hooks.url})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let plan = link_plan(&app, 7, 0).await;
    let sub = link_sub(&app, &plan, "pay-1", json!({})).await;
    app.run_due().await;
    let cycle = cycles(&app, &sub).await.remove(0);
    let cycle_id = cycle["id"].as_str().unwrap().to_owned();
    let path = link_path(&cycle);

    let form = app.page(&path, None).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.html);
    assert!(form.html.contains("€25.00"), "{}", form.html);
    assert!(form.html.contains("test merchant"), "{}", form.html);
    assert!(form.header("content-security-policy").contains("default-src 'none'"));
    // A declined card leaves the link payable and the cycle pending.
    let tab = (form.cookie().unwrap(), form.csrf());
    let declined = submit_card(&app, &path, &tab, DECLINED_CARD).await;
    assert_eq!(declined.status, StatusCode::SEE_OTHER, "{}", declined.html);
    app.run_due().await;
    let again = app.page(&path, None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.html);
    assert!(again.html.contains("insufficient funds"), "{}", again.html);
    let c = get(&app, &format!("/v1/billing-cycles/{cycle_id}")).await;
    assert_eq!((c["status"].as_str(), c["attempts"].as_i64()), (Some("pending"), Some(1)), "{c}");

    let paid = app.pay(&path, OK_CARD, "12/30", "123").await;
    assert_eq!((paid.status, paid.header("location")), (StatusCode::SEE_OTHER, path.as_str()), "{}", paid.html);
    app.run_due().await;
    let done = app.page(&path, None).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.html.contains("Already paid"), "{}", done.html);

    let c = get(&app, &format!("/v1/billing-cycles/{cycle_id}")).await;
    assert_eq!(c["status"], "succeeded", "{c}");
    assert_eq!(c["paymentLink"]["status"], "paid");
    let kinds: Vec<&str> = c["transactions"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["payment_link", "payment_link"]);
    assert_eq!(c["transactions"][1]["status"], "succeeded");
    assert_eq!(ledger_of_cycle(&app, &cycle_id).await, 1);
    app.assert_exactly_once().await;
    // A later visitor with the form still open is told, and nothing is charged.
    let late = submit_card(&app, &path, &tab, OK_CARD).await;
    assert!(late.html.contains("Already paid"), "{}", late.html);
    assert_eq!(ledger_of_cycle(&app, &cycle_id).await, 1);
    let (s, b) = app.post(&format!("/v1/billing-cycles/{cycle_id}/payment-link"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "a paid cycle gets no fresh link: {b}");

    // The merchant heard about the link and the payment.
    crate::support::eventually("the webhooks", Duration::from_secs(20), async || {
        let types: Vec<String> =
            hooks.received().iter().map(|r| r.json()["type"].as_str().unwrap_or("").to_owned()).collect();
        for want in ["billing_cycle.payment_link_created", "billing_cycle.succeeded", "transaction.succeeded"] {
            if !types.iter().any(|t| t == want) {
                app.run_due().await;
                return Err(format!("{want} not received: {types:?}"));
            }
        }
        Ok(())
    })
    .await;
    let created = hooks
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|j| j["type"] == "billing_cycle.payment_link_created")
        .unwrap();
    assert_eq!(created["data"]["object"]["paymentLink"]["url"], cycle["paymentLink"]["url"]);
}

#[tokio::test]
async fn an_unpaid_link_reminds_once_expires_fails_the_cycle_and_the_grace_period_cancels() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let plan = link_plan(&app, 3, 10).await;
    let sub = link_sub(&app, &plan, "late-1", json!({})).await;
    app.run_due().await;
    let cycle = cycles(&app, &sub).await.remove(0);
    let cycle_id = cycle["id"].as_str().unwrap().to_owned();
    let old = link_path(&cycle);
    let reminders = async || app.event_types(&cycle_id).await.iter().filter(|t| *t == "payment_link_reminder").count();

    app.set_clock("2027-01-17T11:59:00Z").await;
    app.run_due().await;
    assert_eq!(reminders().await, 0, "not before one day ahead of expiry");
    app.set_clock("2027-01-17T12:00:00Z").await;
    app.run_due().await;
    app.run_due().await;
    assert_eq!(reminders().await, 1, "one reminder, however many sweeps");

    app.set_clock("2027-01-18T12:00:00Z").await;
    app.run_due().await;
    let c = get(&app, &format!("/v1/billing-cycles/{cycle_id}")).await;
    assert_eq!((c["status"].as_str(), c["failureCode"].as_str()), (Some("failed"), Some("link_expired")), "{c}");
    assert_eq!(c["paymentLink"]["status"], "expired");
    assert_eq!(get(&app, &format!("/v1/subscriptions/{sub}")).await["status"], "past_due");
    let expired = app.page(&old, None).await;
    assert_eq!(expired.status, StatusCode::GONE, "{}", expired.html);
    assert!(expired.html.contains("expired"), "{}", expired.html);

    // A fresh link for the failed cycle; the old one stays dead.
    let (s, fresh) = app.post(&format!("/v1/billing-cycles/{cycle_id}/payment-link"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{fresh}");
    assert_eq!(fresh["paymentLink"]["status"], "active");
    assert_eq!(fresh["paymentLink"]["expiresAt"], "2027-01-21T12:00:00Z");
    let new = link_path(&fresh);
    assert_ne!(new, old);
    assert_eq!(app.page(&old, None).await.status, StatusCode::GONE);
    assert_eq!(app.page(&new, None).await.status, StatusCode::OK);

    // Unpaid past the grace period (10 days from dueAt): cancelled, and the link with it.
    app.set_clock("2027-01-25T12:00:00Z").await;
    app.run_due().await;
    let s = get(&app, &format!("/v1/subscriptions/{sub}")).await;
    assert_eq!((s["status"].as_str(), s["cancellationReason"].as_str()), (Some("cancelled"), Some("payment_failed")));
    let closed = app.page(&new, None).await;
    assert_eq!(closed.status, StatusCode::GONE, "{}", closed.html);
    assert_eq!(app.ledger_count().await, 0);
}

#[tokio::test]
async fn a_redis_loss_neither_loses_nor_doubles_a_link_payment_or_an_expiry() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let plan = link_plan(&app, 2, 30).await;
    let paid = link_sub(&app, &plan, "flush-1", json!({})).await;
    let unpaid = link_sub(&app, &plan, "flush-2", json!({})).await;
    {
        let _engine = app.start_engine(EngineOpts::stepped());
        app.run_due().await;
    }
    // No worker: the payment's charge job waits in Redis, and Redis loses it.
    let cycle = cycles(&app, &paid).await.remove(0);
    let sent = app.pay(&link_path(&cycle), OK_CARD, "12/30", "123").await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.html);
    let client = redis::Client::open(crate::support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    crate::support::delete_namespace(&mut conn, &app.settings.redis_namespace).await;
    assert!(app.jobs_left().await.is_ok(), "Redis holds nothing");

    let _engine = app.start_engine(EngineOpts::stepped());
    app.set_clock("2027-01-16T12:00:00Z").await;
    let cycle_id = cycle["id"].as_str().unwrap().to_owned();
    crate::support::eventually("the lost charge to be found again", Duration::from_secs(30), async || {
        app.run_due().await;
        match get(&app, &format!("/v1/billing-cycles/{cycle_id}")).await["status"].as_str() {
            Some("succeeded") => Ok(()),
            other => Err(format!("cycle is {other:?}")),
        }
    })
    .await;
    assert_eq!(ledger_of_cycle(&app, &cycle_id).await, 1);
    let c = cycles(&app, &unpaid).await.remove(0);
    assert_eq!(
        app.event_types(c["id"].as_str().unwrap()).await.iter().filter(|t| *t == "payment_link_reminder").count(),
        1
    );
    assert_eq!(c["status"], "pending");
    app.set_clock("2027-01-17T12:00:00Z").await;
    app.run_due().await;
    let c = cycles(&app, &unpaid).await.remove(0);
    assert_eq!((c["status"].as_str(), c["failureCode"].as_str()), (Some("failed"), Some("link_expired")), "{c}");
    assert_eq!(
        app.event_types(c["id"].as_str().unwrap()).await.iter().filter(|t| *t == "payment_link_reminder").count(),
        1
    );
    app.assert_exactly_once().await;
}

/// Failed cycles of `n` subscriptions collected by link that also have a stored card
/// (so a merchant's manual retry can charge it), each with a fresh link: (cycle, link path).
async fn failed_cycles_with_fresh_links(app: &TestApp, n: usize) -> Vec<(String, String)> {
    let plan = link_plan(app, 1, 30).await;
    let mut subs = Vec::new();
    for i in 0..n {
        subs.push(link_sub(app, &plan, &format!("race-{i}"), json!({"paymentMethod": "pm_sandbox_ok"})).await);
    }
    app.run_due().await;
    app.advance(86_400).await;
    app.run_due().await;
    let mut out = Vec::new();
    for s in &subs {
        let c = cycles(app, s).await.remove(0);
        assert_eq!(c["failureCode"], "link_expired", "{c}");
        let id = c["id"].as_str().unwrap().to_owned();
        let (st, fresh) = app.post(&format!("/v1/billing-cycles/{id}/payment-link"), json!({})).await;
        assert_eq!(st, StatusCode::CREATED, "{fresh}");
        out.push((id, link_path(&fresh)));
    }
    out
}

/// Start `a` and `b` together, `b` `lag_ms` later (negative: `a` later).
async fn race<A, B>(lag_ms: i64, a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    let a = async move {
        if lag_ms < 0 {
            tokio::time::sleep(Duration::from_millis(lag_ms.unsigned_abs())).await;
        }
        a.await
    };
    let b = async move {
        if lag_ms > 0 {
            tokio::time::sleep(Duration::from_millis(lag_ms as u64)).await;
        }
        b.await
    };
    tokio::join!(a, b)
}

/// Lags (ms) that start either side first, at once, and long after the other, when
/// its charge may already have been answered (the worker runs throughout). A page
/// submission does more before it locks the cycle (the card's checks, tokenizing, the
/// gateway lookup of an errored attempt) than an API call, so its side gets the longer
/// head starts: both sides win some runs, and each test checks that they did.
fn lag(i: usize) -> i64 {
    [0, 2, -2, 10, 30, -30, 80, 150, 300, 600][i % 10]
}

#[tokio::test]
async fn a_link_payment_racing_a_manual_retry_charges_the_cycle_once() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let cycles = failed_cycles_with_fresh_links(&app, RACE_REPETITIONS).await;
    let mut tabs = Vec::new();
    for (_, path) in &cycles {
        tabs.push(open_tab(&app, path).await);
    }
    let runs = cycles.iter().zip(&tabs).enumerate().map(|(i, ((cycle, path), tab))| {
        let app = &app;
        async move {
            let (page, (st, body)) = race(
                lag(i),
                submit_card(app, path, tab, OK_CARD),
                app.post(&format!("/v1/billing-cycles/{cycle}/retry"), json!({})),
            )
            .await;
            let link_won = page.status == StatusCode::SEE_OTHER;
            let retry_won = st == StatusCode::ACCEPTED;
            assert!(
                link_won ^ retry_won,
                "run {i}: exactly one channel opens an attempt: page {} / retry {st} {body}",
                page.status
            );
            if link_won {
                assert_eq!(st, StatusCode::CONFLICT, "run {i}: the retry is told: {body}");
            } else {
                assert!(told_clearly(&page), "run {i}: the customer is told: {} {}", page.status, page.html);
            }
            link_won
        }
    });
    let winners = futures::future::join_all(runs).await;
    app.run_due().await;
    for (cycle, _) in &cycles {
        assert_eq!(ledger_of_cycle(&app, cycle).await, 1, "cycle {cycle}: one approved charge");
        assert_eq!(get(&app, &format!("/v1/billing-cycles/{cycle}")).await["status"], "succeeded");
    }
    app.assert_exactly_once().await;
    let links = winners.iter().filter(|w| **w).count();
    eprintln!(
        "link payment vs manual retry: {RACE_REPETITIONS} runs, link won {links}, retry won {}",
        RACE_REPETITIONS - links
    );
    assert!(links > 0 && links < RACE_REPETITIONS, "both orders ran: the link won {links} of {RACE_REPETITIONS}");
}

#[tokio::test]
async fn two_tabs_paying_one_link_at_once_charge_it_once() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let plan = link_plan(&app, 7, 0).await;
    let mut links = Vec::new();
    for i in 0..RACE_REPETITIONS {
        let sub = link_sub(&app, &plan, &format!("tabs-{i}"), json!({})).await;
        links.push(sub);
    }
    app.run_due().await;
    let mut targets = Vec::new();
    for sub in &links {
        let c = cycles(&app, sub).await.remove(0);
        let path = link_path(&c);
        let tabs = (open_tab(&app, &path).await, open_tab(&app, &path).await);
        targets.push((c["id"].as_str().unwrap().to_owned(), path, tabs));
    }
    let runs = targets.iter().enumerate().map(|(i, (_, path, (t1, t2)))| {
        let app = &app;
        async move {
            let (a, b) = race(lag(i), submit_card(app, path, t1, OK_CARD), submit_card(app, path, t2, OK_CARD)).await;
            let opened = [&a, &b].iter().filter(|p| p.status == StatusCode::SEE_OTHER).count();
            assert_eq!(opened, 1, "run {i}: one tab opens the payment: {} / {}", a.status, b.status);
            let loser = if a.status == StatusCode::SEE_OTHER { &b } else { &a };
            assert!(told_clearly(loser), "run {i}: the other tab is told: {} {}", loser.status, loser.html);
        }
    });
    futures::future::join_all(runs).await;
    app.run_due().await;
    for (cycle, path, _) in &targets {
        assert_eq!(ledger_of_cycle(&app, cycle).await, 1, "cycle {cycle}: one approved charge");
        assert!(app.page(path, None).await.html.contains("Already paid"));
    }
    app.assert_exactly_once().await;
    eprintln!("two tabs on one link: {RACE_REPETITIONS} runs, one charge each");
}

#[tokio::test]
async fn a_dlq_replay_racing_a_link_payment_charges_the_cycle_once() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts { max_attempts: Some(2), ..EngineOpts::stepped() });
    // Card charges that time out until they are dead-lettered: the cycles are `error`.
    let mut subs = Vec::new();
    for i in 0..RACE_REPETITIONS {
        let s = app
            .subscription(
                json!({"customer": {"customerAccountId": format!("dlq-{i}")}, "amount": "7.00", "currency": "EUR",
                "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_timeout"}),
            )
            .await;
        subs.push(s["id"].as_str().unwrap().to_owned());
    }
    app.run_due().await;
    let dead = recur::dlq::list(&app.rt.queue, jobs::Queue::ChargeTransaction).await.unwrap();
    assert_eq!(dead.len(), RACE_REPETITIONS);
    let mut targets = Vec::new();
    for sub in &subs {
        // The card is fixed, so a replay would now be approved; the merchant also
        // sends the customer a link for the errored cycle.
        let (s, b) = app.patch(&format!("/v1/subscriptions/{sub}"), json!({"paymentMethod": "pm_sandbox_ok"})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let c = cycles(&app, sub).await.remove(0);
        assert_eq!(c["status"], "error", "{c}");
        let cycle = c["id"].as_str().unwrap().to_owned();
        let (s, fresh) = app.post(&format!("/v1/billing-cycles/{cycle}/payment-link"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{fresh}");
        let txn = c["transactions"][0]["id"].as_str().unwrap().to_owned();
        let letter = dead.iter().find(|d| d.object_id.to_string() == txn).expect("its dead letter").id;
        let path = link_path(&fresh);
        let tab = open_tab(&app, &path).await;
        targets.push((cycle, path, tab, letter));
    }
    let runs = targets.iter().enumerate().map(|(i, (_, path, tab, letter))| {
        let app = &app;
        async move {
            let (page, (st, body)) = race(
                lag(i),
                submit_card(app, path, tab, OK_CARD),
                app.admin_post("/admin/dlq/replay", json!({"ids": [letter]})),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "run {i}: the replay is answered: {body}");
            assert!(
                page.status == StatusCode::SEE_OTHER || told_clearly(&page),
                "run {i}: the customer is told: {} {}",
                page.status,
                page.html
            );
            page.status == StatusCode::SEE_OTHER
        }
    });
    let winners = futures::future::join_all(runs).await;
    app.run_due().await;
    for (cycle, _, _, _) in &targets {
        assert_eq!(ledger_of_cycle(&app, cycle).await, 1, "cycle {cycle}: one approved charge");
        assert_eq!(get(&app, &format!("/v1/billing-cycles/{cycle}")).await["status"], "succeeded");
    }
    app.assert_exactly_once().await;
    let links = winners.iter().filter(|w| **w).count();
    eprintln!(
        "DLQ replay vs link payment: {RACE_REPETITIONS} runs, link won {links}, replay won {}",
        RACE_REPETITIONS - links
    );
    assert!(links > 0 && links < RACE_REPETITIONS, "both orders ran: the link won {links} of {RACE_REPETITIONS}");
}

#[tokio::test]
async fn bad_input_is_a_problem_and_changes_nothing() {
    let app = spawn_app().await;
    let base = json!({"customer": {"customerAccountId": "bad"}, "amount": "9.99", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}});
    for (patch, status, field) in [
        (json!({"collectionMethod": "send_invoice"}), 400, "collectionMethod"),
        (json!({"collectionMethod": "send_payment_link", "daysUntilDue": 0}), 422, "daysUntilDue"),
        (json!({"collectionMethod": "send_payment_link", "daysUntilDue": 61}), 422, "daysUntilDue"),
        (json!({"daysUntilDue": "seven"}), 400, "daysUntilDue"),
    ] {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let before = app.state_snapshot().await;
        let r = app.send_full(app.request(Method::POST, "/v1/subscriptions").json(&body)).await;
        crate::support::assert_problem(&r, status);
        assert!(
            r.error_fields().iter().any(|f| f == field) || r.body.to_string().contains(field),
            "{patch}: {}",
            r.body
        );
        app.assert_state_unchanged(&before, &patch.to_string()).await;
    }
    let r = app
        .send_full(
            app.request(Method::POST, "/v1/plans").json(&json!({"name": "P", "amount": "1.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "daysUntilDue": 99})),
        )
        .await;
    crate::support::assert_problem(&r, 422);
    assert_eq!(r.error_fields(), vec!["daysUntilDue"]);

    // A cycle that is not failed or error gets no fresh link; an unknown one is 404.
    let _engine = app.start_engine(EngineOpts::stepped());
    let plan = link_plan(&app, 7, 0).await;
    let sub = link_sub(&app, &plan, "bad-2", json!({})).await;
    app.run_due().await;
    let cycle = cycles(&app, &sub).await.remove(0);
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/billing-cycles/{}/payment-link", cycle["id"].as_str().unwrap())),
        )
        .await;
    crate::support::assert_problem(&r, 409);
    let r = app
        .send_full(app.request(Method::POST, &format!("/v1/billing-cycles/{}/payment-link", uuid::Uuid::now_v7())))
        .await;
    crate::support::assert_problem(&r, 404);
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/billing-cycles/{}/payment-link", cycle["id"].as_str().unwrap()))
                .json(&json!({"expiresInDays": 3})),
        )
        .await;
    crate::support::assert_problem(&r, 400);
    // A link path that is not a token, or an unknown token, is the same 404 page.
    for p in ["/pay/short", "/pay/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(app.page(p, None).await.status, StatusCode::NOT_FOUND);
    }
    // A forged form (no CSRF field) changes nothing.
    let path = link_path(&cycle);
    let forged = app.submit(&path, None, &[("number", OK_CARD), ("expiry", "12/30"), ("cvc", "123")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // A bad card is named on the form and opens nothing.
    let tab = open_tab(&app, &path).await;
    let wrong = submit_card(&app, &path, &tab, "4242 4242 4242 4241").await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", wrong.html);
    assert_eq!(get(&app, &format!("/v1/billing-cycles/{}", cycle["id"].as_str().unwrap())).await["attempts"], 0);
}

#[tokio::test]
async fn another_merchants_cycle_gets_no_link_and_is_404() {
    let app = spawn_app().await;
    let _engine = app.start_engine(EngineOpts::stepped());
    let plan = link_plan(&app, 1, 30).await;
    let sub = link_sub(&app, &plan, "tenant-1", json!({})).await;
    app.run_due().await;
    app.advance(86_400).await;
    app.run_due().await;
    let cycle = cycles(&app, &sub).await.remove(0);
    assert_eq!(cycle["status"], "failed");
    let id = cycle["id"].as_str().unwrap();
    let other = app.new_merchant("other").await;
    let before = app.state_snapshot().await;
    let r = app
        .send_full(
            app.request_as(&other, Method::POST, &format!("/v1/billing-cycles/{id}/payment-link")).json(&json!({})),
        )
        .await;
    crate::support::assert_problem(&r, 404);
    let r = app.send_full(app.request_as(&other, Method::GET, &format!("/v1/billing-cycles/{id}"))).await;
    crate::support::assert_problem(&r, 404);
    app.assert_state_unchanged(&before, "another merchant's request").await;
    let (s, b) = app.post(&format!("/v1/billing-cycles/{id}/payment-link"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "the owner may: {b}");
}

#[tokio::test]
async fn a_fresh_link_queued_behind_a_payment_of_the_old_one_does_not_deadlock() {
    let app = spawn_app().await;
    app.set_clock("2027-01-15T12:00:00Z").await;
    let _engine = app.start_engine(EngineOpts { max_attempts: Some(2), ..EngineOpts::stepped() });
    const RUNS: usize = 6;
    let mut subs = Vec::new();
    for i in 0..RUNS {
        let s = app
            .subscription(
                json!({"customer": {"customerAccountId": format!("fresh-{i}")}, "amount": "7.00", "currency": "EUR",
                "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_timeout"}),
            )
            .await;
        subs.push(s["id"].as_str().unwrap().to_owned());
    }
    app.run_due().await;
    for (i, sub) in subs.iter().enumerate() {
        let c = cycles(&app, sub).await.remove(0);
        assert_eq!(c["status"], "error", "{c}");
        let cycle = c["id"].as_str().unwrap().to_owned();
        let (s, link) = app.post(&format!("/v1/billing-cycles/{cycle}/payment-link"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{link}");
        let path = link_path(&link);
        let tab = open_tab(&app, &path).await;
        // A third connection holds the link while the page and a fresh link queue on
        // it, the page first in even runs: a writer that took the subscription before
        // the link would hold what the page waits for while waiting for the page.
        let mut holder = app.pool().begin().await.unwrap();
        sqlx::query("SELECT 1 FROM payment_links WHERE billing_cycle_id = $1::uuid FOR UPDATE")
            .bind(&cycle)
            .execute(&mut *holder)
            .await
            .unwrap();
        let page_first = i % 2 == 0;
        let pay = async {
            if !page_first {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            submit_card(&app, &path, &tab, OK_CARD).await
        };
        let fresh = async {
            if page_first {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            app.post(&format!("/v1/billing-cycles/{cycle}/payment-link"), json!({})).await
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            holder.commit().await.unwrap();
        };
        let (page, (st, body), ()) = tokio::join!(pay, fresh, release);
        assert!(!page.status.is_server_error(), "run {i}: page {} {}", page.status, page.html);
        assert!(st == StatusCode::CREATED || st == StatusCode::CONFLICT, "run {i}: fresh link {st} {body}");
        // The second saw the first's work: a payment in flight refuses a fresh link, a
        // fresh link closes the page's link.
        let paid = page.status == StatusCode::SEE_OTHER;
        assert!(paid ^ (st == StatusCode::CREATED), "run {i}: page {} / fresh link {st}", page.status);
        app.run_due().await;
        assert!(ledger_of_cycle(&app, &cycle).await <= 1, "cycle {cycle}: at most one approved charge");
    }
    app.assert_exactly_once().await;
}
