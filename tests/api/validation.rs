//! (docs/guarantees.md#bad-input): bad input gets a 4xx RFC 9457 problem naming each bad field, never a
//! 5xx, and never changes state.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, assert_problem, spawn_app};

fn plan_body() -> Value {
    json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1}})
}

/// `base` with `key` set to `value` (a dotted key reaches into objects).
fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    let mut target = &mut v;
    let parts: Vec<&str> = key.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        target = &mut target[*p];
    }
    target[parts[parts.len() - 1]] = value;
    v
}

fn without(base: &Value, key: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove(key);
    v
}

/// Send a request that must be refused with `status` and change nothing; `fields` must
/// each be named in `errors`. Returns the problem body.
pub async fn rejected(app: &TestApp, rb: reqwest::RequestBuilder, status: u16, fields: &[&str], what: &str) -> Value {
    let before = app.state_snapshot().await;
    let r = app.send_full(rb).await;
    assert!(!r.status.is_server_error(), "{what}: 5xx {}: {}", r.status, r.body);
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
    assert_problem(&r, status);
    let named = r.error_fields();
    for f in fields {
        assert!(named.iter().any(|n| n == f), "{what}: field {f:?} not named in {}", r.body);
    }
    app.assert_state_unchanged(&before, what).await;
    r.body
}

async fn rejected_json(app: &TestApp, method: Method, path: &str, body: &Value, status: u16, fields: &[&str]) -> Value {
    let what = format!("{method} {path} {body}");
    rejected(app, app.request(method, path).json(body), status, fields, &what).await
}

#[tokio::test]
async fn unreadable_plan_bodies_are_400() {
    let app = spawn_app().await;
    let raw = |body: &'static str| {
        app.request(Method::POST, "/v1/plans").header("content-type", "application/json").body(body)
    };
    for (label, body) in [
        ("truncated JSON", r#"{"name": "Gold", "amount": "9.99""#),
        ("trailing comma", r#"{"name": "Gold",}"#),
        ("not JSON", "name=Gold&amount=9.99"),
        ("empty body", ""),
        ("whitespace body", "   \n "),
        ("a JSON array", "[]"),
        ("a JSON string", "\"plan\""),
        ("JSON null", "null"),
        ("two documents", r#"{"name": "a"} {"name": "b"}"#),
        ("invalid UTF-8 escape", r#"{"name": "\ud800"}"#),
    ] {
        rejected(&app, raw(body), 400, &[], label).await;
    }
    let b = rejected(&app, raw(r#"{"name": "Gold", "amount": "9.99""#), 400, &[], "truncated").await;
    assert!(b["detail"].as_str().unwrap().contains("JSON"), "{b}");
}

#[tokio::test]
async fn unknown_fields_are_400_and_named() {
    let app = spawn_app().await;
    rejected_json(&app, Method::POST, "/v1/plans", &with(&plan_body(), "colour", json!("red")), 400, &["colour"]).await;
    let body = with(&plan_body(), "interval.every", json!(2));
    rejected_json(&app, Method::POST, "/v1/plans", &body, 400, &["interval.every"]).await;
    // Case matters: fields are camelCase.
    let body = json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1}, "trial_days": 3});
    rejected_json(&app, Method::POST, "/v1/plans", &body, 400, &[]).await;
    let plan = app.active_plan("5.00").await;
    rejected_json(&app, Method::PATCH, &format!("/v1/plans/{plan}"), &json!({"nmae": "x"}), 400, &["nmae"]).await;
    let sub = json!({"customer": {"customerAccountId": "c-1", "nickname": "x"}, "planId": plan});
    rejected_json(&app, Method::POST, "/v1/subscriptions", &sub, 400, &["customer.nickname"]).await;
    let series = json!({"customer": {"customerAccountId": "c-1"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR", "amount": "1"});
    rejected_json(&app, Method::POST, "/v1/payment-series", &series, 400, &[]).await;
    rejected_json(&app, Method::POST, &format!("/v1/plans/{plan}/archive"), &json!({"force": true}), 400, &[]).await;
}

#[tokio::test]
async fn wrong_types_are_400_naming_the_field() {
    let app = spawn_app().await;
    let base = plan_body();
    for (key, value, field) in [
        ("interval.count", json!("1"), "interval.count"),
        ("interval.count", json!(1.5), "interval.count"),
        ("interval.count", json!(4_294_967_296i64), "interval.count"),
        ("interval.unit", json!("fortnight"), "interval.unit"),
        ("interval", json!("monthly"), "interval"),
        ("name", json!({"en": "Gold"}), "name"),
        ("name", json!(42), "name"),
        ("name", Value::Null, "name"),
        ("tags", json!("a,b"), "tags"),
        ("tags", json!([1, 2]), "tags[0]"),
        ("amount", json!(true), "amount"),
        ("amount", json!({"value": "9.99"}), "amount"),
        ("amount", json!(["9.99"]), "amount"),
        ("currency", json!(978), "currency"),
        ("trialDays", json!("7"), "trialDays"),
        ("gracePeriodDays", json!(-1.5), "gracePeriodDays"),
        ("retryScheduleHours", json!(24), "retryScheduleHours"),
        ("status", json!("paused"), "status"),
    ] {
        rejected_json(&app, Method::POST, "/v1/plans", &with(&base, key, value), 400, &[field]).await;
    }
    for missing in ["name", "amount", "currency", "interval"] {
        rejected_json(&app, Method::POST, "/v1/plans", &without(&base, missing), 400, &[missing]).await;
    }
    let body = with(&base, "interval", json!({"unit": "month"}));
    rejected_json(&app, Method::POST, "/v1/plans", &body, 400, &["interval.count"]).await;
}

#[tokio::test]
async fn bad_currencies_are_rejected() {
    let app = spawn_app().await;
    for cur in ["EURO", "XXX", "eur", "Eur", "EU", "", "E1R", "€"] {
        rejected_json(&app, Method::POST, "/v1/plans", &with(&plan_body(), "currency", json!(cur)), 422, &["currency"])
            .await;
    }
}

#[tokio::test]
async fn amount_scale_may_not_exceed_the_currency_minor_units() {
    let app = spawn_app().await;
    for (amount, cur) in [
        (json!("9.999"), "EUR"),
        (json!(9.999), "EUR"),
        (json!("0.001"), "EUR"),
        (json!("100.5"), "JPY"),
        (json!(100.5), "JPY"),
        (json!("1.2345"), "KWD"),
    ] {
        let body = with(&with(&plan_body(), "amount", amount), "currency", json!(cur));
        rejected_json(&app, Method::POST, "/v1/plans", &body, 422, &["amount"]).await;
    }
    // The largest scale each currency allows is accepted and shown with its minor units.
    for (amount, cur, shown) in [
        (json!("9.99"), "EUR", "9.99"),
        (json!("100"), "JPY", "100"),
        (json!("100.00"), "JPY", "100"),
        (json!("1.234"), "KWD", "1.234"),
        (json!("1.5"), "KWD", "1.500"),
    ] {
        let body = with(&with(&plan_body(), "amount", amount), "currency", json!(cur));
        let (s, b) = app.post("/v1/plans", body).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["amount"], shown);
        assert_eq!(b["currency"], cur);
    }
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 5);
}

#[tokio::test]
async fn amounts_must_be_positive_decimals() {
    let app = spawn_app().await;
    for amount in [
        json!("-1"),
        json!(-1),
        json!("0"),
        json!(0),
        json!("0.00"),
        json!(0.0),
        json!("-0.01"),
        json!(""),
        json!("abc"),
        json!("1e3"),
        json!("1,50"),
        json!(" "),
        json!("NaN"),
        json!("1000000000001"),
    ] {
        rejected_json(&app, Method::POST, "/v1/plans", &with(&plan_body(), "amount", amount), 422, &["amount"]).await;
    }
}

#[tokio::test]
async fn amounts_are_accepted_as_string_or_number_and_shown_as_strings() {
    let app = spawn_app().await;
    for (amount, shown) in
        [(json!("9.99"), "9.99"), (json!(9.99), "9.99"), (json!(10), "10.00"), (json!("12.5"), "12.50")]
    {
        let (s, b) = app.post("/v1/plans", with(&plan_body(), "amount", amount.clone())).await;
        assert_eq!(s, StatusCode::CREATED, "{amount}: {b}");
        assert_eq!(b["amount"], json!(shown), "{amount}");
        let (_, got) = app.get(&format!("/v1/plans/{}", b["id"].as_str().unwrap())).await;
        assert_eq!(got["amount"], json!(shown));
    }
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT amount::text FROM plans ORDER BY id").fetch_all(app.pool()).await.unwrap();
    let stored: Vec<rust_decimal::Decimal> = stored.iter().map(|s| s.parse().unwrap()).collect();
    let expected: Vec<rust_decimal::Decimal> =
        ["9.99", "9.99", "10", "12.5"].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(stored, expected);

    // Inline subscription terms too.
    let sub = app
        .subscription(json!({"customer": {"customerAccountId": "c-1"}, "amount": 12.5, "currency": "EUR",
            "interval": {"unit": "week", "count": 2}, "paymentMethod": "pm_sandbox_ok"}))
        .await;
    assert_eq!(sub["amount"], "12.50");
}

#[tokio::test]
async fn intervals_out_of_range_are_rejected() {
    let app = spawn_app().await;
    for (unit, count) in
        [("day", 366), ("day", 0), ("week", 53), ("month", 25), ("month", 0), ("month", -1), ("year", 6), ("year", 0)]
    {
        let body = with(&plan_body(), "interval", json!({"unit": unit, "count": count}));
        rejected_json(&app, Method::POST, "/v1/plans", &body, 422, &["interval.count"]).await;
    }
    // The bounds themselves are fine.
    for (unit, count) in [("day", 365), ("day", 1), ("week", 52), ("month", 24), ("year", 5)] {
        let (s, b) = app.post("/v1/plans", with(&plan_body(), "interval", json!({"unit": unit, "count": count}))).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["interval"], json!({"unit": unit, "count": count}));
    }
}

#[tokio::test]
async fn a_request_with_several_bad_fields_names_each_of_them() {
    let app = spawn_app().await;
    let body = json!({
        "name": "",
        "currency": "XXX",
        "amount": "-5",
        "interval": {"unit": "month", "count": 25},
        "trialDays": 0,
        "gracePeriodDays": -1,
        "retryScheduleHours": [0],
        "tags": ["ok", ""],
        "metadata": "not an object",
        "status": "archived",
    });
    let b = rejected_json(
        &app,
        Method::POST,
        "/v1/plans",
        &body,
        422,
        &[
            "name",
            "currency",
            "amount",
            "interval.count",
            "trialDays",
            "gracePeriodDays",
            "retryScheduleHours",
            "tags[1]",
            "metadata",
            "status",
        ],
    )
    .await;
    assert_eq!(b["errors"].as_array().unwrap().len(), 10, "{b}");

    // Subscriptions: every rule, all at once.
    let plan = app.active_plan("9.99").await;
    let body = json!({
        "customer": {"customerAccountId": "", "email": "not-an-email", "phone": "x"},
        "planId": plan,
        "amount": "1.00",
        "chargeHour": 24,
        "trialDays": -1,
        "startAt": "2030-01-02T00:00:00Z",
        "endAt": "2030-01-01T00:00:00Z",
        "partnerReference": "",
        "metadata": [1],
    });
    let b = rejected_json(
        &app,
        Method::POST,
        "/v1/subscriptions",
        &body,
        422,
        &[
            "customer.customerAccountId",
            "customer.email",
            "customer.phone",
            "amount",
            "chargeHour",
            "trialDays",
            "endAt",
            "partnerReference",
            "metadata",
        ],
    )
    .await;
    assert_eq!(b["errors"].as_array().unwrap().len(), 9, "{b}");

    // Inline terms missing altogether.
    rejected_json(
        &app,
        Method::POST,
        "/v1/subscriptions",
        &json!({"customer": {"customerAccountId": "c-1"}}),
        422,
        &["amount", "currency", "interval"],
    )
    .await;
}

#[tokio::test]
async fn subscription_rules_are_checked_before_anything_is_stored() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let draft = {
        let (s, b) = app.post("/v1/plans", plan_body()).await;
        assert_eq!(s, StatusCode::CREATED);
        b["id"].as_str().unwrap().to_owned()
    };
    let cust = json!({"customerAccountId": "c-1", "email": "a@example.com"});
    for (body, status, fields) in [
        (json!({"customer": cust, "planId": plan, "paymentMethod": "pm_bogus"}), 400, vec!["paymentMethod"]),
        (
            json!({"customer": cust, "planId": plan, "paymentMethod": "pm_sandbox_recover_after_0"}),
            400,
            vec!["paymentMethod"],
        ),
        (
            json!({"customer": cust, "planId": plan, "paymentMethod": "pm_sandbox_flaky_100"}),
            400,
            vec!["paymentMethod"],
        ),
        (json!({"customer": cust, "planId": plan, "paymentMethod": ""}), 400, vec!["paymentMethod"]),
        (json!({"customer": cust, "planId": draft}), 422, vec!["planId"]),
        (json!({"customer": cust, "planId": Uuid::now_v7()}), 422, vec!["planId"]),
        (json!({"customer": cust, "planId": "not-a-uuid"}), 400, vec!["planId"]),
        (json!({"customer": cust, "planId": plan, "currency": "EUR"}), 422, vec!["currency"]),
        (
            json!({"customer": cust, "amount": "9.999", "currency": "EUR", "interval": {"unit": "month", "count": 1}}),
            422,
            vec!["amount"],
        ),
        (
            json!({"customer": cust, "amount": "9", "currency": "eur", "interval": {"unit": "month", "count": 1}}),
            422,
            vec!["currency"],
        ),
        (
            json!({"customer": cust, "amount": "9", "currency": "EUR", "interval": {"unit": "week", "count": 53}}),
            422,
            vec!["interval.count"],
        ),
        (json!({"customer": cust, "planId": plan, "authorizedLimit": "0.001"}), 422, vec!["authorizedLimit"]),
        (json!({"customer": cust, "planId": plan, "startAt": "yesterday"}), 400, vec!["startAt"]),
        (json!({"customer": cust, "planId": plan, "chargeHour": "9"}), 400, vec!["chargeHour"]),
        (json!({"planId": plan}), 400, vec![]),
        (json!({"customer": "c-1", "planId": plan}), 400, vec!["customer"]),
    ] {
        rejected_json(&app, Method::POST, "/v1/subscriptions", &body, status, &fields).await;
    }
    // Several fields, one of them the payment method: still 400, still every field.
    let body =
        json!({"customer": {"customerAccountId": ""}, "planId": plan, "paymentMethod": "pm_nope", "chargeHour": 99});
    rejected_json(
        &app,
        Method::POST,
        "/v1/subscriptions",
        &body,
        400,
        &["paymentMethod", "customer.customerAccountId", "chargeHour"],
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 0);

    // PATCH checks too, on an existing subscription that must stay as it is.
    let sub = app.subscription(json!({"customer": cust, "planId": plan})).await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    rejected_json(&app, Method::PATCH, &path, &json!({"paymentMethod": "pm_unknown"}), 400, &["paymentMethod"]).await;
    rejected_json(&app, Method::PATCH, &path, &json!({"metadata": "x"}), 422, &["metadata"]).await;
    rejected_json(&app, Method::PATCH, &path, &json!({"authorizedLimit": "1.999"}), 422, &["authorizedLimit"]).await;
    rejected_json(&app, Method::PATCH, &path, &json!({"status": "active"}), 400, &[]).await;
    let (_, got) = app.get(&path).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(got["updatedAt"], sub["updatedAt"]);
}

#[tokio::test]
async fn series_rules_are_checked_before_anything_is_stored() {
    let app = spawn_app().await;
    let ok = json!({"customer": {"customerAccountId": "c-1"}, "paymentMethod": "pm_sandbox_ok", "currency": "EUR"});
    rejected_json(
        &app,
        Method::POST,
        "/v1/payment-series",
        &with(&ok, "paymentMethod", json!("pm_x")),
        400,
        &["paymentMethod"],
    )
    .await;
    rejected_json(&app, Method::POST, "/v1/payment-series", &with(&ok, "currency", json!("EURO")), 422, &["currency"])
        .await;
    rejected_json(&app, Method::POST, "/v1/payment-series", &without(&ok, "paymentMethod"), 400, &["paymentMethod"])
        .await;
    assert_eq!(app.count("SELECT count(*) FROM payment_series").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 0);
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let sub = app.subscription(json!({"customer": {"customerAccountId": "c-1"}, "planId": plan})).await;
    let sub = sub["id"].as_str().unwrap();
    let lists = [
        "/v1/plans".to_owned(),
        "/v1/subscriptions".to_owned(),
        "/v1/payment-series".to_owned(),
        "/v1/events".to_owned(),
        format!("/v1/subscriptions/{sub}/billing-cycles"),
    ];
    for list in &lists {
        for (q, field) in [
            ("limit=0", Some("limit")),
            ("limit=101", Some("limit")),
            ("limit=-1", Some("limit")),
            ("limit=abc", Some("limit")),
            ("limit=1.5", Some("limit")),
            ("limit=99999999999999999999", Some("limit")),
            ("cursor=not-a-cursor", Some("cursor")),
            ("colour=red", Some("colour")),
            ("limit=1&limit=2", None),
        ] {
            let path = format!("{list}?{q}");
            rejected(&app, app.request(Method::GET, &path), 400, field.as_slice(), &path).await;
        }
        // The bounds are accepted.
        for q in ["limit=1", "limit=100", ""] {
            let (s, b) = app.get(&format!("{list}?{q}")).await;
            assert_eq!(s, StatusCode::OK, "{list}?{q}: {b}");
            assert!(b["data"].is_array());
        }
    }
    for (path, field) in [
        ("/v1/plans?status=paused", "status"),
        ("/v1/subscriptions?status=alive", "status"),
        ("/v1/subscriptions?planId=nope", "planId"),
        ("/v1/events?objectId=nope", "objectId"),
    ] {
        rejected(&app, app.request(Method::GET, path), 400, &[field], path).await;
    }
}

#[tokio::test]
async fn non_uuid_path_ids_are_400() {
    let app = spawn_app().await;
    for bad in ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%20"] {
        for (method, path) in [
            (Method::GET, format!("/v1/plans/{bad}")),
            (Method::PATCH, format!("/v1/plans/{bad}")),
            (Method::DELETE, format!("/v1/plans/{bad}")),
            (Method::POST, format!("/v1/plans/{bad}/activate")),
            (Method::POST, format!("/v1/plans/{bad}/archive")),
            (Method::GET, format!("/v1/subscriptions/{bad}")),
            (Method::PATCH, format!("/v1/subscriptions/{bad}")),
            (Method::DELETE, format!("/v1/subscriptions/{bad}")),
            (Method::POST, format!("/v1/subscriptions/{bad}/pause")),
            (Method::POST, format!("/v1/subscriptions/{bad}/resume")),
            (Method::POST, format!("/v1/subscriptions/{bad}/cancel")),
            (Method::GET, format!("/v1/subscriptions/{bad}/billing-cycles")),
            (Method::GET, format!("/v1/billing-cycles/{bad}")),
            (Method::POST, format!("/v1/billing-cycles/{bad}/retry")),
            (Method::GET, format!("/v1/transactions/{bad}")),
            (Method::GET, format!("/v1/payment-series/{bad}")),
            (Method::POST, format!("/v1/payment-series/{bad}/cancel")),
            (Method::POST, format!("/v1/payment-series/{bad}/transactions")),
        ] {
            let what = format!("{method} {path}");
            rejected(&app, app.request(method, &path).json(&json!({})), 400, &["id"], &what).await;
        }
    }
}

#[tokio::test]
async fn bad_idempotency_keys_are_400() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space", "tab\tkey"] {
        let rb = app.request(Method::POST, "/v1/plans").header("Idempotency-Key", key).json(&plan_body());
        rejected(&app, rb, 400, &["Idempotency-Key"], key).await;
    }
}

#[tokio::test]
async fn text_that_postgres_cannot_store_is_a_4xx() {
    // NUL is valid JSON ("\u0000") but Postgres text and jsonb cannot hold it: it must
    // be refused as input, not fail the INSERT with a 500.
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    for (body, field) in [
        (with(&plan_body(), "metadata", json!({"k": "a\u{0}b"})), "metadata"),
        (with(&plan_body(), "metadata", json!({"a\u{0}": 1})), "metadata"),
        (with(&plan_body(), "name", json!("a\u{0}b")), "name"),
        (with(&plan_body(), "tags", json!(["a\u{0}"])), "tags[0]"),
    ] {
        rejected_json(&app, Method::POST, "/v1/plans", &body, 422, &[field]).await;
    }
    let sub = |customer: Value| json!({"customer": customer, "planId": plan, "paymentMethod": "pm_sandbox_ok"});
    for (body, field) in [
        (sub(json!({"customerAccountId": "c\u{0}1"})), "customer.customerAccountId"),
        (sub(json!({"customerAccountId": "c-1", "email": "a\u{0}@example.com"})), "customer.email"),
        (sub(json!({"customerAccountId": "c-1", "firstName": "A\u{0}"})), "customer.firstName"),
        (sub(json!({"customerAccountId": "c-1", "lastName": "A\u{0}"})), "customer.lastName"),
        (with(&sub(json!({"customerAccountId": "c-1"})), "metadata", json!({"k": "\u{0}"})), "metadata"),
        (with(&sub(json!({"customerAccountId": "c-1"})), "description", json!("\u{0}")), "description"),
    ] {
        rejected_json(&app, Method::POST, "/v1/subscriptions", &body, 422, &[field]).await;
    }
    for path in [
        "/v1/customers/c%001",
        "/v1/plans?tag=a%00",
        "/v1/subscriptions?customerAccountId=c%00",
        "/v1/events?objectType=plan%00",
        "/v1/events?type=created%00",
    ] {
        let r = app.send_full(app.request(Method::GET, path)).await;
        assert!(r.status.is_client_error(), "{path}: {} {}", r.status, r.body);
        assert_problem(&r, r.status.as_u16());
    }
    // The admin API too.
    let rb = app.admin(Method::POST, "/admin/merchants").json(&json!({"name": "evil\u{0}corp"}));
    rejected(&app, rb, 422, &["name"], "admin merchant with NUL").await;
    let r = app.send_full(app.admin(Method::GET, "/admin/sandbox/charges?customerAccountId=%00")).await;
    assert_problem(&r, 400);
}

#[tokio::test]
async fn oversized_and_deeply_nested_input_is_a_4xx() {
    let app = spawn_app().await;
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!({ "d": deep });
    }
    let r = app.send_full(app.request(Method::POST, "/v1/plans").json(&with(&plan_body(), "metadata", deep))).await;
    assert_problem(&r, 400);
    let big: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    rejected_json(
        &app,
        Method::POST,
        "/v1/plans",
        &with(&plan_body(), "metadata", Value::Object(big)),
        422,
        &["metadata"],
    )
    .await;
    rejected_json(&app, Method::POST, "/v1/plans", &with(&plan_body(), "name", json!("n".repeat(256))), 422, &["name"])
        .await;
    let tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    rejected_json(&app, Method::POST, "/v1/plans", &with(&plan_body(), "tags", json!(tags)), 422, &["tags"]).await;
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 0);
}
