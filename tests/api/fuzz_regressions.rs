//! Regressions for the defects that API fuzzing (`scripts/fuzz`: schemathesis against
//! `/openapi.json`) and the edge tests (`edges.rs`) found: each test is the smallest
//! request that failed, and asserts the fixed behaviour.

use reqwest::{Method, StatusCode};

use crate::support::{assert_problem, spawn_app};

/// `GET /v1/customers/{customerAccountId}` with a percent-encoded byte sequence that is
/// not UTF-8 answered axum's own plain-text 400 ("Invalid URL: …"), not a problem body;
/// an id route with the same answered 422 while any other non-UUID answers 400.
#[tokio::test]
async fn path_parameters_that_are_not_utf8_answer_a_400_problem() {
    let app = spawn_app().await;
    for path in ["/v1/customers/%FF", "/v1/customers/a%C0%AFb", "/v1/customers/%ED%A0%80"] {
        let r = app.send_full(app.request(Method::GET, path)).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_fields(), ["customerAccountId"], "{path}: {}", r.body);
    }
    for path in ["/v1/plans/%FF", "/v1/subscriptions/%FF/billing-cycles", "/v1/transactions/%C0%AF"] {
        let r = app.send_full(app.request(Method::GET, path)).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_fields(), ["id"], "{path}: {}", r.body);
    }
    // A customer that does not exist is still a 404.
    let r = app.send_full(app.request(Method::GET, "/v1/customers/%C3%A9t%C3%A9")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

/// A request with several `Idempotency-Key` headers was keyed on the first one
/// silently (found by the header flood of `edges.rs`): which key would a retry that
/// sends them in another order match? Two keys are now a 400 naming the header, and
/// nothing is created.
#[tokio::test]
async fn two_idempotency_keys_are_a_400_problem() {
    let app = spawn_app().await;
    let body = serde_json::json!({"name": "Gold", "amount": "9.99", "currency": "EUR",
        "interval": {"unit": "month", "count": 1}});
    let before = app.state_snapshot().await;
    for keys in [["k-1", "k-2"], ["k-1", "k-1"]] {
        let rb = app
            .request(Method::POST, "/v1/plans")
            .header("Idempotency-Key", keys[0])
            .header("Idempotency-Key", keys[1])
            .json(&body);
        // reqwest's `header` appends: both are sent.
        let r = app.send_full(rb).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_fields(), ["Idempotency-Key"], "{keys:?}: {}", r.body);
    }
    app.assert_state_unchanged(&before, "two Idempotency-Keys").await;
    // One key still works.
    let r = app.send_full(app.request(Method::POST, "/v1/plans").header("Idempotency-Key", "k-1").json(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// An unknown field with an empty name (`{"": null}` in a body, `?=x` in a query) was
/// reported with `"field": ""`: a problem that names no field (docs/guarantees.md#bad-input), on every
/// route with a body or a query. The empty key is now named `""`.
#[tokio::test]
async fn an_unknown_field_with_an_empty_name_is_named() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let cases: Vec<(Method, String, Option<serde_json::Value>, &str)> = vec![
        (Method::POST, "/v1/plans".into(), Some(serde_json::json!({"amount": 0.0, "": null})), "\"\""),
        (Method::PATCH, format!("/v1/plans/{plan}"), Some(serde_json::json!({"": 1})), "\"\""),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            Some(serde_json::json!({"customer": {"customerAccountId": "c-1", "": 1}, "planId": plan})),
            "customer.\"\"",
        ),
        (Method::GET, "/v1/plans?=null".into(), None, "\"\""),
        (Method::GET, "/v1/events?=0.0".into(), None, "\"\""),
        (Method::GET, "/v1/payment-series?limit=5&=x".into(), None, "\"\""),
        // Found next: the U+0000 check of query parameters named the same empty key.
        (Method::GET, "/v1/plans?=a%00b".into(), None, "\"\""),
        (Method::GET, "/v1/subscriptions?%00=x".into(), None, "\"\""),
    ];
    for (method, path, body, field) in cases {
        let mut rb = app.request(method.clone(), &path);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let r = app.send_full(rb).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_fields(), [field], "{method} {path}: {}", r.body);
    }
    // The admin API shares the extractors.
    let r = app.send_full(app.admin(Method::POST, "/admin/clock").json(&serde_json::json!({"": null}))).await;
    assert_problem(&r, 400);
    assert_eq!(r.error_fields(), ["\"\""], "{}", r.body);
    for path in ["/admin/dlq?=false", "/admin/sandbox/charges?=%01%00"] {
        let r = app.send_full(app.admin(Method::GET, path)).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_fields(), ["\"\""], "{path}: {}", r.body);
    }
}

/// Times after year 9999 cannot be written in RFC 3339, yet a subscription starting
/// 9999-12-31 with a two-year trial answered `"trialEndAt": "+10001-12-30T23:59:59Z"`
/// (and `currentPeriodEnd` the same): a response that breaks the contract's time
/// format and the document's `date-time`. Every instant a request names must now be
/// before 9000-01-01, which keeps everything derived from it within year 9999.
#[tokio::test]
async fn times_a_response_could_not_write_in_rfc_3339_are_refused() {
    let app = spawn_app().await;
    let (s, plan) = app
        .post(
            "/v1/plans",
            serde_json::json!({"name": "Long", "amount": "1", "currency": "EUR", "interval": {"unit": "year", "count": 5},
                "trialDays": 730, "status": "active"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plan}");
    let sub = |extra: serde_json::Value| {
        let mut b = serde_json::json!({"customer": {"customerAccountId": "c-1"}, "planId": plan["id"],
            "paymentMethod": "pm_sandbox_ok"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let before = app.state_snapshot().await;
    for (body, field) in [
        (sub(serde_json::json!({"startAt": "9999-12-31T23:59:59Z"})), "startAt"),
        (sub(serde_json::json!({"startAt": "9000-01-01T00:00:00Z"})), "startAt"),
        (sub(serde_json::json!({"endAt": "9999-12-31T23:59:59Z"})), "endAt"),
    ] {
        let r = app.send_full(app.request(Method::POST, "/v1/subscriptions").json(&body)).await;
        assert_problem(&r, 422);
        assert_eq!(r.error_fields(), [field], "{body}: {}", r.body);
    }
    let r = app
        .send_full(app.admin(Method::POST, "/admin/clock").json(&serde_json::json!({"now": "9999-01-01T00:00:00Z"})))
        .await;
    assert_problem(&r, 422);
    app.assert_state_unchanged(&before, "instants past 9000").await;

    // Just before the bound is accepted, and every time in the answer is RFC 3339.
    let created = app.subscription(sub(serde_json::json!({"startAt": "8999-12-31T23:59:59Z"}))).await;
    for key in ["startAt", "trialEndAt", "currentPeriodEnd", "createdAt"] {
        let t = created[key].as_str().unwrap_or_else(|| panic!("{key}: {created}"));
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{key} is not RFC 3339: {t}");
    }
    let id = created["id"].as_str().unwrap();
    for (body, field) in [
        (serde_json::json!({"trialEndAt": "9500-01-01T00:00:00Z"}), "trialEndAt"),
        (serde_json::json!({"endAt": "9500-01-01T00:00:00Z"}), "endAt"),
    ] {
        let r = app.send_full(app.request(Method::PATCH, &format!("/v1/subscriptions/{id}")).json(&body)).await;
        assert_problem(&r, 422);
        assert_eq!(r.error_fields(), [field], "{body}: {}", r.body);
    }
    let r = app
        .send_full(
            app.request(Method::POST, &format!("/v1/subscriptions/{id}/pause"))
                .json(&serde_json::json!({"resumeAt": "9999-01-01T00:00:00Z"})),
        )
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.error_fields(), ["resumeAt"], "{}", r.body);
}

/// The first fuzz run's finding on every operation (schemathesis ST105, "Undocumented
/// Content-Type"): error responses are sent as `application/problem+json`, but the
/// document declared each `body = Problem` response as `application/json`. Every
/// problem response is now documented with the media type it is sent with.
#[tokio::test]
async fn problem_responses_are_documented_as_application_problem_json() {
    let app = spawn_app().await;
    let doc: serde_json::Value =
        app.client.get(format!("{}/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    let mut problems = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else { continue };
            for (status, response) in responses {
                let Some(content) = response["content"].as_object() else { continue };
                for (media, c) in content {
                    let is_problem = c["schema"]["$ref"].as_str().is_some_and(|r| r.ends_with("/Problem"));
                    if is_problem {
                        problems += 1;
                        assert_eq!(media, "application/problem+json", "{method} {path} {status}");
                    }
                }
            }
        }
    }
    assert!(problems > 50, "only {problems} problem responses documented");
    // And the wire agrees: a documented 404 of an id route.
    let r = app.send_full(app.request(Method::GET, &format!("/v1/plans/{}", uuid::Uuid::now_v7()))).await;
    assert_problem(&r, 404);
    let documented = &doc["paths"]["/v1/plans/{id}"]["get"]["responses"]["404"]["content"];
    assert!(documented.get(r.header("content-type").unwrap()).is_some(), "{documented}");
}

/// The long fuzz run's one 5xx: metadata with a number near the ends of the f64 range
/// was stored, but jsonb prints numbers in full (1.7976931348623157e308 as 309
/// digits) and serde_json's default float parser refused that as "number out of
/// range", so reading the object back answered 500. Such numbers now read back as
/// they were sent, on every object with metadata.
#[tokio::test]
async fn metadata_numbers_at_the_ends_of_the_f64_range_read_back() {
    let app = spawn_app().await;
    let metadata = serde_json::json!({"max": f64::MAX, "min": f64::MIN, "tiny": 5e-324, "small": -2.2250738585072014e-308,
        "big": 1e300, "int": 18446744073709551615u64, "neg": -9223372036854775808i64});
    let (s, plan) = app
        .post(
            "/v1/plans",
            serde_json::json!({"name": "Edge", "amount": "1", "currency": "EUR", "interval": {"unit": "month", "count": 1},
                "status": "active", "metadata": metadata}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["metadata"], metadata);
    let id = plan["id"].as_str().unwrap();
    let (s, got) = app.get(&format!("/v1/plans/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["metadata"], metadata);
    let (s, list) = app.get("/v1/plans").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let sub = app
        .subscription(serde_json::json!({"customer": {"customerAccountId": "c-1"}, "planId": id,
            "paymentMethod": "pm_sandbox_ok", "metadata": metadata}))
        .await;
    let (s, got) = app.get(&format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["metadata"], metadata);
}
