//! Plans (docs/states.md#plans): `draft → active ⇄ archived`, terms frozen once out of draft,
//! every change an event, lists filtered and paginated.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app};

fn plan_body() -> Value {
    json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1}})
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (s, b) = app.post("/v1/plans", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

async fn plan_row(app: &TestApp, id: &str) -> (String, String, String) {
    sqlx::query_as("SELECT status::text, amount::text, name FROM plans WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn create_returns_the_plan_with_defaults() {
    let app = spawn_app().await;
    let p = create(
        &app,
        json!({"name": "Gold", "description": "the good one", "tags": ["a"], "amount": "9.90", "currency": "EUR",
            "interval": {"unit": "week", "count": 2}, "trialDays": 14, "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(p["status"], "draft");
    assert_eq!(p["name"], "Gold");
    assert_eq!(p["description"], "the good one");
    assert_eq!(p["tags"], json!(["a"]));
    assert_eq!(p["amount"], "9.90");
    assert_eq!(p["currency"], "EUR");
    assert_eq!(p["interval"], json!({"unit": "week", "count": 2}));
    assert_eq!(p["trialDays"], 14);
    assert_eq!(p["gracePeriodDays"], 0);
    assert_eq!(p["retryScheduleHours"], json!([24, 72, 120]));
    assert_eq!(p["metadata"], json!({"k": "v"}));
    let pid = id(&p);
    assert_eq!(uuid::Uuid::parse_str(&pid).unwrap().get_version_num(), 7, "ids are UUIDv7");
    for t in ["createdAt", "updatedAt"] {
        chrono::DateTime::parse_from_rfc3339(p[t].as_str().unwrap()).expect("RFC 3339");
    }
    let (s, got) = app.get(&format!("/v1/plans/{pid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, p, "GET shows what POST returned");
    assert_eq!(plan_row(&app, &pid).await, ("draft".into(), "9.90".into(), "Gold".into()));
    assert_eq!(app.event_types(&pid).await, ["created"]);
    let (_, data) = &app.events_of(&pid).await[0];
    assert_eq!(data["amount"], "9.90");

    let active = create(
        &app,
        json!({"name": "Now", "amount": "1", "currency": "EUR",
        "interval": {"unit": "day", "count": 1}, "status": "active"}),
    )
    .await;
    assert_eq!(active["status"], "active");
    assert_eq!(active["amount"], "1.00");
}

#[tokio::test]
async fn status_lifecycle_draft_active_archived_active() {
    let app = spawn_app().await;
    let p = create(&app, plan_body()).await;
    let pid = id(&p);
    assert_eq!(p["status"], "draft");

    let mut expected_events = vec!["created"];
    for (action, status) in [("activate", "active"), ("archive", "archived"), ("activate", "active")] {
        let (s, b) = app.post(&format!("/v1/plans/{pid}/{action}"), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{action}: {b}");
        assert_eq!(b["status"], status);
        assert_eq!(plan_row(&app, &pid).await.0, status);
        expected_events.push("status_changed");
        assert_eq!(app.event_types(&pid).await, expected_events);
    }
    let events = app.events_of(&pid).await;
    let transitions: Vec<(Value, Value)> =
        events.iter().skip(1).map(|(_, d)| (d["from"].clone(), d["to"].clone())).collect();
    assert_eq!(
        transitions,
        [(json!("draft"), json!("active")), (json!("active"), json!("archived")), (json!("archived"), json!("active"))]
    );
    // Events filter by type and object type too.
    let (_, b) = app.get(&format!("/v1/events?objectId={pid}&type=status_changed")).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 3);
    let (_, b) = app.get("/v1/events?objectType=plan&type=created").await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"][0]["objectId"], json!(pid));
    assert_eq!(b["data"][0]["objectType"], "plan");
    assert_eq!(b["data"][0]["actor"], "merchant");

    // Asking for the status it already has changes nothing.
    let (s, b) = app.post(&format!("/v1/plans/{pid}/activate"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.event_types(&pid).await.len(), 4);

    // An empty body is fine for actions.
    let r = app.send_full(app.request(Method::POST, &format!("/v1/plans/{pid}/archive"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "archived");
}

#[tokio::test]
async fn a_draft_cannot_be_archived() {
    let app = spawn_app().await;
    let pid = id(&create(&app, plan_body()).await);
    let before = app.state_snapshot().await;
    let r = app.send_full(app.request(Method::POST, &format!("/v1/plans/{pid}/archive")).json(&json!({}))).await;
    assert_problem(&r, 409);
    app.assert_state_unchanged(&before, "archive a draft").await;
    assert_eq!(plan_row(&app, &pid).await.0, "draft");
}

#[tokio::test]
async fn terms_change_only_while_draft() {
    let app = spawn_app().await;
    let pid = id(&create(&app, plan_body()).await);
    // Draft: everything may change, and each change is an `updated` event.
    let (s, b) = app
        .patch(
            &format!("/v1/plans/{pid}"),
            json!({"amount": 19.5, "currency": "USD", "interval": {"unit": "year", "count": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["amount"], "19.50");
    assert_eq!(b["currency"], "USD");
    assert_eq!(b["interval"], json!({"unit": "year", "count": 1}));
    assert_eq!(app.event_types(&pid).await, ["created", "updated"]);
    // A currency whose minor units do not fit the amount is refused.
    let r =
        app.send_full(app.request(Method::PATCH, &format!("/v1/plans/{pid}")).json(&json!({"currency": "JPY"}))).await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), ["amount"]);

    let (s, _) = app.post(&format!("/v1/plans/{pid}/activate"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let before = app.state_snapshot().await;
    for change in [
        json!({"amount": "29.99"}),
        json!({"currency": "EUR"}),
        json!({"interval": {"unit": "month", "count": 1}}),
        json!({"name": "ok", "amount": "1.00"}),
    ] {
        let r = app.send_full(app.request(Method::PATCH, &format!("/v1/plans/{pid}")).json(&change)).await;
        assert_problem(&r, 409);
    }
    app.assert_state_unchanged(&before, "PATCH terms of an active plan").await;

    // Archived: still frozen.
    let (s, _) = app.post(&format!("/v1/plans/{pid}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let r = app.send_full(app.request(Method::PATCH, &format!("/v1/plans/{pid}")).json(&json!({"amount": "1"}))).await;
    assert_problem(&r, 409);
    assert_eq!(plan_row(&app, &pid).await.1, "19.5");
}

#[tokio::test]
async fn descriptive_fields_change_any_time() {
    let app = spawn_app().await;
    let p = create(
        &app,
        json!({"name": "Gold", "amount": "9.99", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "status": "active", "trialDays": 7}),
    )
    .await;
    let pid = id(&p);
    let (s, b) = app
        .patch(
            &format!("/v1/plans/{pid}"),
            json!({"name": "Platinum", "description": "shiny", "tags": ["x", "y"], "metadata": {"tier": 3},
                "gracePeriodDays": 3, "retryScheduleHours": [1, 2]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["name"], "Platinum");
    assert_eq!(b["description"], "shiny");
    assert_eq!(b["tags"], json!(["x", "y"]));
    assert_eq!(b["metadata"], json!({"tier": 3}));
    assert_eq!(b["gracePeriodDays"], 3);
    assert_eq!(b["retryScheduleHours"], json!([1, 2]));
    assert_eq!(b["trialDays"], 7, "absent fields are kept");
    assert_eq!(b["amount"], "9.99");
    let row: (String, Vec<String>, Value, i32) =
        sqlx::query_as("SELECT name, tags, metadata, grace_period_days FROM plans WHERE id = $1::uuid")
            .bind(&pid)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(row, ("Platinum".into(), vec!["x".into(), "y".into()], json!({"tier": 3}), 3));
    let events = app.events_of(&pid).await;
    assert_eq!(events.last().unwrap().0, "updated");
    assert_eq!(events.last().unwrap().1["name"], "Platinum");

    // trialDays: null removes the trial; description: null clears it.
    let (s, b) = app.patch(&format!("/v1/plans/{pid}"), json!({"trialDays": null, "description": null})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["trialDays"], Value::Null);
    assert_eq!(b["description"], Value::Null);
    let trial: Option<i32> = sqlx::query_scalar("SELECT trial_days FROM plans WHERE id = $1::uuid")
        .bind(&pid)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(trial, None);
    // ...and a number sets it again.
    let (_, b) = app.patch(&format!("/v1/plans/{pid}"), json!({"trialDays": 30})).await;
    assert_eq!(b["trialDays"], 30);
    assert_eq!(app.event_types(&pid).await, ["created", "updated", "updated", "updated"]);

    // An empty PATCH changes nothing and writes no event.
    let (s, _) = app.patch(&format!("/v1/plans/{pid}"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.event_types(&pid).await.len(), 4);
}

#[tokio::test]
async fn plan_changes_affect_only_later_subscriptions() {
    let app = spawn_app().await;
    let pid = id(&create(
        &app,
        json!({"name": "Gold", "amount": "9.99", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "status": "active", "trialDays": 10, "gracePeriodDays": 1}),
    )
    .await);
    let first = app.subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": pid})).await;
    assert_eq!(first["trialDays"], 10);
    let (s, _) = app.patch(&format!("/v1/plans/{pid}"), json!({"trialDays": null, "gracePeriodDays": 5})).await;
    assert_eq!(s, StatusCode::OK);
    let second = app.subscription(json!({"customer": {"customerAccountId": "c-2"}, "planId": pid})).await;
    assert_eq!(second["trialDays"], Value::Null);
    assert_eq!(second["gracePeriodDays"], 5);
    let (_, first_now) = app.get(&format!("/v1/subscriptions/{}", id(&first))).await;
    assert_eq!(first_now["trialDays"], 10);
    assert_eq!(first_now["gracePeriodDays"], 1);
}

#[tokio::test]
async fn delete_only_unused_plans() {
    let app = spawn_app().await;
    let used = app.active_plan("9.99").await;
    app.subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": used})).await;
    let before = app.state_snapshot().await;
    let r = app.send_full(app.request(Method::DELETE, &format!("/v1/plans/{used}"))).await;
    assert_problem(&r, 409);
    app.assert_state_unchanged(&before, "DELETE a used plan").await;
    let (s, _) = app.get(&format!("/v1/plans/{used}")).await;
    assert_eq!(s, StatusCode::OK);

    let unused = id(&create(&app, plan_body()).await);
    let r = app.send_full(app.request(Method::DELETE, &format!("/v1/plans/{unused}"))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(r.body, Value::Null, "204 has no body");
    let r = app.send_full(app.request(Method::GET, &format!("/v1/plans/{unused}"))).await;
    assert_problem(&r, 404);
    assert_eq!(app.count(&format!("SELECT count(*) FROM plans WHERE id = '{unused}'")).await, 0);
    assert_eq!(app.event_types(&unused).await, ["created", "deleted"]);
    // Gone means gone for every route.
    let r = app.send_full(app.request(Method::DELETE, &format!("/v1/plans/{unused}"))).await;
    assert_problem(&r, 404);
    let r = app.send_full(app.request(Method::POST, &format!("/v1/plans/{unused}/activate"))).await;
    assert_problem(&r, 404);
    let r = app.send_full(app.request(Method::PATCH, &format!("/v1/plans/{unused}")).json(&json!({"name": "x"}))).await;
    assert_problem(&r, 404);
    let (_, list) = app.get("/v1/plans").await;
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [used.as_str()]);
}

#[tokio::test]
async fn list_filters_by_status_and_tag() {
    let app = spawn_app().await;
    let draft = id(&create(
        &app,
        json!({"name": "a", "amount": "1", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "tags": ["eu", "basic"]}),
    )
    .await);
    let active = id(&create(
        &app,
        json!({"name": "b", "amount": "1", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "tags": ["eu"], "status": "active"}),
    )
    .await);
    let archived = id(&create(
        &app,
        json!({"name": "c", "amount": "1", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}, "status": "active"}),
    )
    .await);
    let (s, _) = app.post(&format!("/v1/plans/{archived}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK);

    let ids = |b: &Value| -> Vec<String> {
        b["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
    };
    for (q, expected) in [
        ("", vec![&draft, &active, &archived]),
        ("?status=draft", vec![&draft]),
        ("?status=active", vec![&active]),
        ("?status=archived", vec![&archived]),
        ("?tag=eu", vec![&draft, &active]),
        ("?tag=basic", vec![&draft]),
        ("?tag=none", vec![]),
        ("?tag=eu&status=active", vec![&active]),
        ("?tag=eu&status=archived", vec![]),
    ] {
        let (s, b) = app.get(&format!("/v1/plans{q}")).await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(ids(&b), expected, "{q}");
        assert_eq!(b["nextCursor"], Value::Null, "{q}");
    }
}

#[tokio::test]
async fn pagination_walks_every_plan_once() {
    let app = spawn_app().await;
    let mut all = Vec::new();
    for i in 0..7 {
        let status = if i % 2 == 0 { "active" } else { "draft" };
        let p = create(
            &app,
            json!({"name": format!("p{i}"), "amount": "1", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "status": status}),
        )
        .await;
        all.push(id(&p));
    }
    // Default limit is 20: everything on one page.
    let (_, b) = app.get("/v1/plans").await;
    assert_eq!(b["data"].as_array().unwrap().len(), 7);
    assert_eq!(b["nextCursor"], Value::Null);

    async fn walk(app: &TestApp, query: &str, limit: usize) -> (Vec<String>, Vec<usize>) {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/plans?limit={limit}{query}&cursor={c}"),
                None => format!("/v1/plans?limit={limit}{query}"),
            };
            let (s, b) = app.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
            let page = b["data"].as_array().unwrap();
            assert!(page.len() <= limit);
            sizes.push(page.len());
            seen.extend(page.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
            match b["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(sizes.len() < 20, "pagination does not end");
        }
        (seen, sizes)
    }

    let (seen, sizes) = walk(&app, "", 3).await;
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "duplicates: {seen:?}");
    let mut expected = all.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected);

    // An exact multiple: the last full page has no cursor, or the next page is empty.
    let (seen, _) = walk(&app, "", 7).await;
    assert_eq!(seen.len(), 7);
    let (seen, sizes) = walk(&app, "", 1).await;
    assert_eq!(seen.len(), 7);
    assert_eq!(sizes.len(), 7);

    // With a filter.
    let (seen, sizes) = walk(&app, "&status=active", 2).await;
    assert_eq!(sizes, [2, 2]);
    let active: HashSet<String> = all.iter().step_by(2).cloned().collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), active);
}
