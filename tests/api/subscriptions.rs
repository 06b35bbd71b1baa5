//! Subscriptions over the API (docs/states.md#subscriptions): creation from a plan or inline terms, the
//! first schedule (pending, trial, future start, chargeHour, month-end anchors), lists,
//! PATCH, pause/resume/cancel, and the events each change writes.

use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().with_timezone(&Utc)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Move the manual clock to the next New Year (always ahead of the wall clock the
/// test database starts at) and return that year: dates later in it are in the future.
async fn next_new_year(app: &TestApp) -> i32 {
    use chrono::Datelike;
    let year = app.clock_now().await.year() + 1;
    app.set_clock(&format!("{year}-01-01T00:00:00Z")).await;
    year
}

async fn row(app: &TestApp, id: &str) -> (String, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT status::text, next_charge_at FROM subscriptions WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn create_from_a_plan_copies_its_terms() {
    let app = spawn_app().await;
    let now = app.clock_now().await;
    let (s, plan) = app
        .post(
            "/v1/plans",
            json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 3},
                "gracePeriodDays": 2, "retryScheduleHours": [1, 2], "status": "active"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plan}");
    let sub = app
        .subscription(json!({
            "customer": {"customerAccountId": "acct-1", "email": "ada@example.com", "firstName": "Ada", "lastName": "L", "phone": "+44 20 1234"},
            "planId": plan["id"], "paymentMethod": "pm_sandbox_ok", "description": "box", "metadata": {"k": 1},
        }))
        .await;
    let sid = id(&sub);
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["planId"], plan["id"]);
    assert_eq!(sub["customer"], json!({"customerAccountId": "acct-1"}));
    assert_eq!(sub["amount"], "9.99");
    assert_eq!(sub["currency"], "EUR");
    assert_eq!(sub["interval"], json!({"unit": "month", "count": 3}));
    assert_eq!(sub["gracePeriodDays"], 2);
    assert_eq!(sub["retryScheduleHours"], json!([1, 2]));
    assert_eq!(sub["paymentMethod"], "pm_sandbox_ok");
    assert_eq!(sub["description"], "box");
    assert_eq!(sub["metadata"], json!({"k": 1}));
    assert_eq!(time(&sub["startAt"]), now, "startAt defaults to now");
    assert_eq!(time(&sub["nextChargeAt"]), now, "the first cycle is due at once");
    assert_eq!(sub["trialEndAt"], Value::Null);
    assert_eq!(row(&app, &sid).await, ("active".into(), Some(now)));
    let (amount, currency, unit, count): (String, String, String, i32) = sqlx::query_as(
        "SELECT amount::text, currency, interval_unit::text, interval_count FROM subscriptions WHERE id = $1::uuid",
    )
    .bind(&sid)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((amount.as_str(), currency.as_str(), unit.as_str(), count), ("9.99", "EUR", "month", 3));
    assert_eq!(app.event_types(&sid).await, ["created"]);

    let (s, got) = app.get(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, sub);

    // The customer was upserted.
    let (s, c) = app.get("/v1/customers/acct-1").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["customerAccountId"], "acct-1");
    assert_eq!(c["email"], "ada@example.com");
    assert_eq!(c["firstName"], "Ada");
    assert_eq!(c["lastName"], "L");
    assert_eq!(c["phone"], "+44 20 1234");
    assert!(c.get("id").is_none(), "the internal id is not shown: {c}");
    // A later mention updates what it gives and keeps the rest.
    app.subscription(json!({"customer": {"customerAccountId": "acct-1", "email": "new@example.com"},
        "planId": plan["id"]}))
        .await;
    let (_, c) = app.get("/v1/customers/acct-1").await;
    assert_eq!(c["email"], "new@example.com");
    assert_eq!(c["firstName"], "Ada");
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 1);
    let r = app.send_full(app.request(Method::GET, "/v1/customers/nobody")).await;
    assert_problem(&r, 404);
    // Account ids are opaque strings: anything URL-encodable works.
    app.subscription(json!({"customer": {"customerAccountId": "a/b c?d"}, "planId": plan["id"]})).await;
    let (s, c) = app.get("/v1/customers/a%2Fb%20c%3Fd").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["customerAccountId"], "a/b c?d");
}

#[tokio::test]
async fn only_active_plans_take_subscriptions() {
    let app = spawn_app().await;
    let (_, draft) = app
        .post(
            "/v1/plans",
            json!({"name": "d", "amount": "1", "currency": "EUR", "interval": {"unit": "month", "count": 1}}),
        )
        .await;
    let archived = app.active_plan("2.00").await;
    let (s, _) = app.post(&format!("/v1/plans/{archived}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    for plan in [draft["id"].clone(), json!(archived)] {
        let before = app.state_snapshot().await;
        let r = app
            .send_full(app.request(Method::POST, "/v1/subscriptions").json(&json!({
                "customer": {"customerAccountId": "c-1"}, "planId": plan, "paymentMethod": "pm_sandbox_ok"})))
            .await;
        assert_problem(&r, 422);
        assert_eq!(r.error_fields(), ["planId"]);
        app.assert_state_unchanged(&before, "subscription on an inactive plan").await;
    }
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
}

#[tokio::test]
async fn create_with_inline_terms() {
    let app = spawn_app().await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "amount": 1500, "currency": "JPY",
            "interval": {"unit": "week", "count": 2}, "paymentMethod": "pm_sandbox_ok", "authorizedLimit": "2000"}))
        .await;
    assert_eq!(sub["planId"], Value::Null);
    assert_eq!(sub["amount"], "1500");
    assert_eq!(sub["currency"], "JPY");
    assert_eq!(sub["interval"], json!({"unit": "week", "count": 2}));
    assert_eq!(sub["authorizedLimit"], "2000");
    assert_eq!(sub["retryScheduleHours"], json!([24, 72, 120]), "default retry schedule");
    assert_eq!(sub["gracePeriodDays"], 0);
    assert_eq!(sub["status"], "active");
    let plan_id: Option<uuid::Uuid> = sqlx::query_scalar("SELECT plan_id FROM subscriptions WHERE id = $1::uuid")
        .bind(id(&sub))
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(plan_id, None);
}

#[tokio::test]
async fn without_a_payment_method_it_is_pending_until_one_is_set() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app.subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan})).await;
    let sid = id(&sub);
    assert_eq!(sub["status"], "pending");
    assert_eq!(sub["nextChargeAt"], Value::Null);
    assert_eq!(sub["paymentMethod"], Value::Null);
    assert_eq!(row(&app, &sid).await, ("pending".into(), None));

    // Pending cannot be paused or resumed.
    for action in ["pause", "resume"] {
        let r = app.send_full(app.request(Method::POST, &format!("/v1/subscriptions/{sid}/{action}"))).await;
        assert_problem(&r, 409);
    }

    app.advance(3600).await;
    let now = app.clock_now().await;
    let (s, b) = app.patch(&format!("/v1/subscriptions/{sid}"), json!({"paymentMethod": "pm_sandbox_ok"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["paymentMethod"], "pm_sandbox_ok");
    assert_eq!(time(&b["nextChargeAt"]), now, "a past start is charged at once");
    assert_eq!(row(&app, &sid).await, ("active".into(), Some(now)));
    let events = app.events_of(&sid).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["created", "updated", "status_changed"]);
    assert_eq!(events[1].1["paymentMethod"], "pm_sandbox_ok");
    assert_eq!((events[2].1["from"].as_str(), events[2].1["to"].as_str()), (Some("pending"), Some("active")));
}

#[tokio::test]
async fn a_trial_makes_it_trialing_until_start_plus_days() {
    let app = spawn_app().await;
    let y = next_new_year(&app).await;
    let plan = app.active_plan("9.99").await;
    let now = app.clock_now().await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "trialDays": 14,
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["status"], "trialing");
    assert_eq!(sub["trialDays"], 14);
    assert_eq!(time(&sub["trialEndAt"]), now + Duration::days(14));
    assert_eq!(time(&sub["trialEndAt"]), time(&sub["startAt"]) + Duration::days(14));
    assert_eq!(sub["nextChargeAt"], Value::Null, "nothing is charged during the trial");
    assert_eq!(time(&sub["currentPeriodEnd"]), now + Duration::days(14));
    assert_eq!(row(&app, &id(&sub)).await, ("trialing".into(), None));

    // A future start: the trial counts from it.
    let start = at(&format!("{y}-03-05T17:42:11Z"));
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-2"}, "planId": plan, "trialDays": 3,
            "startAt": start, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(time(&sub["trialEndAt"]), at(&format!("{y}-03-08T17:42:11Z")));

    // The plan's trial applies unless overridden; 0 removes it.
    let (s, p) = app
        .post(
            "/v1/plans",
            json!({"name": "t", "amount": "1", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "trialDays": 7, "status": "active"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sub = app
        .subscription(
            json!({"customer": {"customerAccountId": "c-3"}, "planId": p["id"], "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    assert_eq!(sub["status"], "trialing");
    assert_eq!(time(&sub["trialEndAt"]), time(&sub["startAt"]) + Duration::days(7));
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-4"}, "planId": p["id"], "trialDays": 0,
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["trialEndAt"], Value::Null);

    // A trialing subscription cancelled at period end keeps running until the trial ends.
    let t = app
        .subscription(json!({"customer": {"customerAccountId": "c-5"}, "planId": plan, "trialDays": 10,
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let (s, b) = app.post(&format!("/v1/subscriptions/{}/cancel", id(&t)), json!({"atPeriodEnd": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "trialing");
    assert_eq!(b["cancelAt"], t["trialEndAt"]);
    assert_eq!(b["cancelledAt"], Value::Null);
    assert_eq!(app.event_types(&id(&t)).await, ["created", "updated"]);
}

#[tokio::test]
async fn a_future_start_is_the_first_due_date() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let start = app.clock_now().await + Duration::days(10);
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "startAt": start,
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["status"], "active");
    assert_eq!(time(&sub["startAt"]), start);
    assert_eq!(time(&sub["nextChargeAt"]), start);
    assert_eq!(row(&app, &id(&sub)).await, ("active".into(), Some(start)));
}

#[tokio::test]
async fn charge_hour_moves_the_anchor_to_that_hour_of_the_start_day() {
    let app = spawn_app().await;
    let y = next_new_year(&app).await;
    let plan = app.active_plan("9.99").await;
    let start = format!("{y}-03-05T17:42:11Z");
    let start = start.as_str();
    for (hour, due) in [(9, "09:00:00"), (23, "23:00:00"), (0, "00:00:00")] {
        let due = format!("{y}-03-05T{due}Z");
        let due = due.as_str();
        let sub = app
            .subscription(json!({"customer": {"customerAccountId": format!("c-{hour}")}, "planId": plan,
                "startAt": start, "chargeHour": hour, "paymentMethod": "pm_sandbox_ok"}))
            .await;
        assert_eq!(sub["chargeHour"], hour);
        assert_eq!(time(&sub["startAt"]), at(start));
        assert_eq!(time(&sub["nextChargeAt"]), at(due), "chargeHour {hour}");
        assert_eq!(row(&app, &id(&sub)).await.1, Some(at(due)));
    }
    // With a trial, the anchor is the trial end moved to the charge hour.
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-t"}, "planId": plan, "startAt": start,
            "chargeHour": 6, "trialDays": 2, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["status"], "trialing");
    let anchor: DateTime<Utc> = sqlx::query_scalar("SELECT anchor_at FROM subscriptions WHERE id = $1::uuid")
        .bind(id(&sub))
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(anchor, at(&format!("{y}-03-07T06:00:00Z")));
}

#[tokio::test]
async fn a_month_end_anchor_is_kept() {
    let app = spawn_app().await;
    // The clock on January 1st (2027-01-01 when this was written), the start on the 31st.
    let y = next_new_year(&app).await;
    let jan31 = at(&format!("{y}-01-31T10:00:00Z"));
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan,
            "startAt": jan31, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["status"], "active");
    assert_eq!(time(&sub["nextChargeAt"]), jan31);
    let (anchor, seq): (DateTime<Utc>, i32) =
        sqlx::query_as("SELECT anchor_at, anchor_sequence FROM subscriptions WHERE id = $1::uuid")
            .bind(id(&sub))
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((anchor, seq), (jan31, 1));
}

#[tokio::test]
async fn end_at_before_the_first_due_date_leaves_nothing_due() {
    let app = spawn_app().await;
    let y = next_new_year(&app).await;
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan,
            "startAt": format!("{y}-06-01T00:00:00Z"), "endAt": format!("{y}-06-01T00:00:01Z"),
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(time(&sub["nextChargeAt"]), at(&format!("{y}-06-01T00:00:00Z")), "a cycle due before endAt is due");
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-2"}, "planId": plan,
            "startAt": format!("{y}-06-01T00:00:00Z"), "chargeHour": 12, "endAt": format!("{y}-06-01T06:00:00Z"),
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["nextChargeAt"], Value::Null, "no cycle is due at or after endAt");
}

#[tokio::test]
async fn list_filters_and_pagination() {
    let app = spawn_app().await;
    let plan_a = app.active_plan("9.99").await;
    let plan_b = app.active_plan("19.99").await;
    let mk = |acct: &str, plan: &str, pm: bool| {
        let mut b = json!({"customer": {"customerAccountId": acct}, "planId": plan});
        if pm {
            b["paymentMethod"] = json!("pm_sandbox_ok");
        }
        b
    };
    let s1 = id(&app.subscription(mk("alice", &plan_a, true)).await);
    let s2 = id(&app.subscription(mk("alice", &plan_b, false)).await);
    let s3 = id(&app.subscription(mk("bob", &plan_a, false)).await);
    let s4 = id(&app.subscription(mk("bob", &plan_b, true)).await);
    let (s, _) = app.delete(&format!("/v1/subscriptions/{s4}")).await;
    assert_eq!(s, StatusCode::OK);

    let ids = |b: &Value| -> Vec<String> {
        b["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
    };
    for (q, expected) in [
        (String::new(), vec![&s1, &s2, &s3, &s4]),
        ("?status=active".into(), vec![&s1]),
        ("?status=pending".into(), vec![&s2, &s3]),
        ("?status=cancelled".into(), vec![&s4]),
        ("?status=paused".into(), vec![]),
        ("?customerAccountId=alice".into(), vec![&s1, &s2]),
        ("?customerAccountId=carol".into(), vec![]),
        (format!("?planId={plan_a}"), vec![&s1, &s3]),
        (format!("?planId={plan_b}&customerAccountId=bob"), vec![&s4]),
        (format!("?planId={plan_b}&status=pending&customerAccountId=alice"), vec![&s2]),
    ] {
        let (s, b) = app.get(&format!("/v1/subscriptions{q}")).await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(ids(&b), expected, "{q}");
    }

    let mut seen = Vec::new();
    let mut path = "/v1/subscriptions?limit=3".to_owned();
    loop {
        let (s, b) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        seen.extend(ids(&b));
        match b["nextCursor"].as_str() {
            Some(c) => path = format!("/v1/subscriptions?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, [s1, s2, s3, s4]);
}

#[tokio::test]
async fn patch_description_and_metadata() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(
            json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "paymentMethod": "pm_sandbox_ok",
            "description": "old", "metadata": {"a": 1}}),
        )
        .await;
    let sid = id(&sub);
    let (s, b) =
        app.patch(&format!("/v1/subscriptions/{sid}"), json!({"description": "new", "metadata": {"b": 2}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["description"], "new");
    assert_eq!(b["metadata"], json!({"b": 2}));
    assert_eq!(b["status"], "active");
    assert_eq!(b["nextChargeAt"], sub["nextChargeAt"], "descriptive changes do not move the schedule");
    let (d, m): (Option<String>, Value) =
        sqlx::query_as("SELECT description, metadata FROM subscriptions WHERE id = $1::uuid")
            .bind(&sid)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((d.as_deref(), m), (Some("new"), json!({"b": 2})));
    let (s, b) = app.patch(&format!("/v1/subscriptions/{sid}"), json!({"description": null})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["description"], Value::Null);
    assert_eq!(b["metadata"], json!({"b": 2}));
    let events = app.events_of(&sid).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["created", "updated", "updated"]);
    assert_eq!(events[1].1, json!({"description": "new", "metadata": {"b": 2}}));
    assert_eq!(events[2].1, json!({"description": null}));

    let r = app.send_full(app.request(Method::GET, &format!("/v1/subscriptions/{}", uuid::Uuid::now_v7()))).await;
    assert_problem(&r, 404);
}

#[tokio::test]
async fn pause_resume_cancel() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(
            json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    let sid = id(&sub);
    let base = format!("/v1/subscriptions/{sid}");

    app.advance(60).await;
    let paused_at = app.clock_now().await;
    let resume_at = paused_at + Duration::days(30);
    let (s, b) = app.post(&format!("{base}/pause"), json!({"resumeAt": resume_at})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "paused");
    assert_eq!(time(&b["pausedAt"]), paused_at);
    assert_eq!(time(&b["resumeAt"]), resume_at);
    let (st, p, r): (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT status::text, paused_at, resume_at FROM subscriptions WHERE id = $1::uuid")
            .bind(&sid)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((st.as_str(), p, r), ("paused", Some(paused_at), Some(resume_at)));

    let before = app.state_snapshot().await;
    let r = app.send_full(app.request(Method::POST, &format!("{base}/pause")).json(&json!({}))).await;
    assert_problem(&r, 409);
    app.assert_state_unchanged(&before, "pause a paused subscription").await;

    let (s, b) = app.post(&format!("{base}/resume"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["pausedAt"], Value::Null);
    assert_eq!(b["resumeAt"], Value::Null);
    assert_eq!(row(&app, &sid).await.0, "active");
    let r = app.send_full(app.request(Method::POST, &format!("{base}/resume"))).await;
    assert_problem(&r, 409);

    // No current period: cancelling at period end cancels now.
    app.advance(60).await;
    let now = app.clock_now().await;
    let (s, b) = app.post(&format!("{base}/cancel"), json!({"atPeriodEnd": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "cancelled");
    assert_eq!(time(&b["cancelledAt"]), now);
    assert_eq!(b["nextChargeAt"], Value::Null);
    assert!(b["cancellationReason"].is_string(), "{b}");
    assert_eq!(row(&app, &sid).await, ("cancelled".into(), None));

    // Final: nothing more.
    let before = app.state_snapshot().await;
    for (method, path, body) in [
        (Method::POST, format!("{base}/cancel"), json!({})),
        (Method::DELETE, base.clone(), json!(null)),
        (Method::POST, format!("{base}/pause"), json!({})),
        (Method::POST, format!("{base}/resume"), json!({})),
        (Method::PATCH, base.clone(), json!({"description": "x"})),
        (Method::PATCH, base.clone(), json!({"paymentMethod": "pm_sandbox_ok"})),
    ] {
        let rb = app.request(method.clone(), &path);
        let rb = if body.is_null() { rb } else { rb.json(&body) };
        let r = app.send_full(rb).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{method} {path}: {}", r.body);
        assert_problem(&r, 409);
    }
    app.assert_state_unchanged(&before, "changes to a cancelled subscription").await;

    let events = app.events_of(&sid).await;
    let seen: Vec<(String, Value, Value)> =
        events.iter().map(|(t, d)| (t.clone(), d["from"].clone(), d["to"].clone())).collect();
    assert_eq!(
        seen,
        [
            ("created".into(), Value::Null, Value::Null),
            ("status_changed".into(), json!("active"), json!("paused")),
            ("status_changed".into(), json!("paused"), json!("active")),
            ("status_changed".into(), json!("active"), json!("cancelled")),
        ]
    );
}

#[tokio::test]
async fn delete_cancels_now_with_a_reason() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    for (acct, pm, trial) in [("c-1", true, 0), ("c-2", false, 0), ("c-3", true, 5)] {
        let mut body = json!({"customer": {"customerAccountId": acct}, "planId": plan, "trialDays": trial});
        if pm {
            body["paymentMethod"] = json!("pm_sandbox_ok");
        }
        let sub = app.subscription(body).await;
        let sid = id(&sub);
        let from = sub["status"].clone();
        let now = app.clock_now().await;
        let (s, b) = app.delete(&format!("/v1/subscriptions/{sid}")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["status"], "cancelled");
        assert_eq!(time(&b["cancelledAt"]), now);
        assert_eq!(b["cancellationReason"], "requested");
        let (st, reason): (String, Option<String>) =
            sqlx::query_as("SELECT status::text, cancellation_reason FROM subscriptions WHERE id = $1::uuid")
                .bind(&sid)
                .fetch_one(app.pool())
                .await
                .unwrap();
        assert_eq!((st.as_str(), reason.as_deref()), ("cancelled", Some("requested")));
        let events = app.events_of(&sid).await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].0, "status_changed");
        assert_eq!((events[1].1["from"].clone(), events[1].1["to"].clone()), (from, json!("cancelled")));
        // The cancelled subscription can still be read.
        let (s, got) = app.get(&format!("/v1/subscriptions/{sid}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(got["status"], "cancelled");
    }
}

#[tokio::test]
async fn trialing_and_past_due_can_be_paused_and_resumed() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "trialDays": 10,
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&sub);
    let (s, b) = app.post(&format!("/v1/subscriptions/{sid}/pause"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "paused");
    assert_eq!(b["resumeAt"], Value::Null);
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/subscriptions/{sid}/pause"))
                .json(&json!({"resumeAt": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_problem(&r, 409);
    let (s, b) = app.post(&format!("/v1/subscriptions/{sid}/resume"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "trialing", "resumed within the trial: still trialing");
    assert_eq!(b["trialEndAt"], sub["trialEndAt"]);

    // A resumeAt in the past is a validation error on an active subscription.
    let active = app
        .subscription(
            json!({"customer": {"customerAccountId": "c-2"}, "planId": plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    let before = app.state_snapshot().await;
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/subscriptions/{}/pause", id(&active)))
                .json(&json!({"resumeAt": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), ["resumeAt"]);
    app.assert_state_unchanged(&before, "pause with a past resumeAt").await;
}

#[tokio::test]
async fn trial_end_can_move_while_trialing() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan, "trialDays": 10,
            "paymentMethod": "pm_sandbox_ok"}))
        .await;
    let sid = id(&sub);
    let later = time(&sub["trialEndAt"]) + Duration::days(5);
    let (s, b) = app.patch(&format!("/v1/subscriptions/{sid}"), json!({"trialEndAt": later})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(time(&b["trialEndAt"]), later);
    let r = app
        .send_full(
            app.request(Method::PATCH, &format!("/v1/subscriptions/{sid}"))
                .json(&json!({"trialEndAt": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_problem(&r, 422);
    let active = app
        .subscription(
            json!({"customer": {"customerAccountId": "c-2"}, "planId": plan, "paymentMethod": "pm_sandbox_ok"}),
        )
        .await;
    let r = app
        .send_full(
            app.request(Method::PATCH, &format!("/v1/subscriptions/{}", id(&active)))
                .json(&json!({"trialEndAt": later})),
        )
        .await;
    assert_problem(&r, 409);
}

#[tokio::test]
async fn end_at_must_be_after_the_start_even_when_start_is_now() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let now = app.clock_now().await;
    let before = app.state_snapshot().await;
    for end in [now - Duration::days(1), now] {
        let r = app
            .send_full(app.request(Method::POST, "/v1/subscriptions").json(&json!({
                "customer": {"customerAccountId": "c-1"}, "planId": plan, "endAt": end, "paymentMethod": "pm_sandbox_ok"})))
            .await;
        assert_problem(&r, 422);
        assert_eq!(r.error_fields(), ["endAt"], "{}", r.body);
    }
    app.assert_state_unchanged(&before, "endAt before the default start").await;
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan,
            "endAt": now + Duration::days(400), "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(time(&sub["endAt"]), now + Duration::days(400));
}

#[tokio::test]
async fn customers_get_created_and_updated_events_only_when_they_change() {
    let app = crate::support::spawn_app().await;
    let body = |email: &str| {
        serde_json::json!({"customer": {"customerAccountId": "evt", "email": email}, "amount": "1.00", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}})
    };
    app.subscription(body("a@example.com")).await;
    app.subscription(body("a@example.com")).await;
    app.subscription(body("b@example.com")).await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT type FROM events WHERE object_type = 'customer' ORDER BY seq")
        .fetch_all(app.pool())
        .await
        .unwrap();
    assert_eq!(kinds, ["created", "updated"]);
}
