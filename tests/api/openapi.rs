//! (docs/api.md#health-metrics-and-the-openapi-document): `GET /openapi.json` is an OpenAPI 3.1 document generated from the code,
//! describing every route the router serves.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::spawn_app;

/// Every route of `src/api/mod.rs`, with its methods.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/plans", &["post", "get"]),
    ("/v1/plans/{id}", &["get", "patch", "delete"]),
    ("/v1/plans/{id}/activate", &["post"]),
    ("/v1/plans/{id}/archive", &["post"]),
    ("/v1/subscriptions", &["post", "get"]),
    ("/v1/subscriptions/{id}", &["get", "patch", "delete"]),
    ("/v1/subscriptions/{id}/pause", &["post"]),
    ("/v1/subscriptions/{id}/resume", &["post"]),
    ("/v1/subscriptions/{id}/cancel", &["post"]),
    ("/v1/subscriptions/{id}/change", &["post"]),
    ("/v1/subscriptions/{id}/change/preview", &["post"]),
    ("/v1/test-clocks", &["post", "get"]),
    ("/v1/test-clocks/{id}", &["get"]),
    ("/v1/test-clocks/{id}/advance", &["post"]),
    ("/v1/subscriptions/{id}/billing-cycles", &["get"]),
    ("/v1/billing-cycles/{id}", &["get"]),
    ("/v1/billing-cycles/{id}/retry", &["post"]),
    ("/v1/billing-cycles/{id}/payment-link", &["post"]),
    ("/v1/transactions/{id}", &["get"]),
    ("/v1/payment-series", &["post", "get"]),
    ("/v1/payment-series/{id}", &["get"]),
    ("/v1/payment-series/{id}/cancel", &["post"]),
    ("/v1/payment-series/{id}/transactions", &["post"]),
    ("/v1/customers/{customerAccountId}", &["get"]),
    ("/v1/events", &["get"]),
    ("/v1/settings", &["get", "patch"]),
    ("/v1/checkout-sessions", &["post", "get"]),
    ("/v1/checkout-sessions/{id}", &["get"]),
    ("/v1/customer-sessions", &["post"]),
    ("/v1/webhook-endpoints", &["post", "get"]),
    ("/v1/webhook-endpoints/{id}", &["get", "patch", "delete"]),
    ("/v1/webhook-endpoints/{id}/rotate-secret", &["post"]),
    ("/v1/webhook-endpoints/{id}/deliveries", &["get"]),
    ("/v1/webhook-endpoints/{id}/replay", &["post"]),
    ("/v1/webhook-deliveries/{id}/retry", &["post"]),
    ("/admin/merchants", &["post"]),
    ("/admin/merchants/{merchantKey}", &["get", "patch"]),
    ("/admin/clock", &["get", "post"]),
    ("/admin/sandbox/charges", &["get"]),
    ("/admin/queues", &["get"]),
    ("/admin/dlq", &["get"]),
    ("/admin/dlq/replay", &["post"]),
    ("/admin/dlq/drain", &["post"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/openapi.json", &["get"]),
    ("/metrics", &["get"]),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The `.route("path", method(..).method(..))` calls of the router's source.
fn routes_in_source(src: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // The call's text, up to its closing parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a balanced .route( call");
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a path literal").to_owned();
        let mut methods = BTreeSet::new();
        for m in METHODS {
            let needle = format!("{m}(");
            let found = call.match_indices(&needle).any(|(at, _)| {
                let before = call[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if found {
                methods.insert((*m).to_owned());
            }
        }
        out.insert(path, methods);
    }
    out
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_describes_every_route() {
    let app = spawn_app().await;
    // No credentials needed.
    let res = app.client.get(format!("{}/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: Value = res.json().await.unwrap();
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}, not 3.1.x");
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");

    for (path, methods) in ROUTES {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} is not documented"));
        for m in *methods {
            let op = item.get(*m).unwrap_or_else(|| panic!("{} {path} is not documented", m.to_uppercase()));
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{m} {path}: no responses"));
            assert!(!responses.is_empty(), "{m} {path}: no responses");
            // Path parameters are declared.
            for param in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(item["parameters"].as_array().into_iter().flatten())
                    .any(|p| p["name"] == param && p["in"] == "path");
                assert!(declared, "{m} {path}: path parameter {param} not declared");
            }
        }
        // And no method the router does not serve.
        for m in METHODS {
            if item.get(*m).is_some() {
                assert!(methods.contains(m), "{} {path} is documented but not routed", m.to_uppercase());
            }
        }
    }
    let listed: BTreeSet<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
    for documented in paths.keys() {
        assert!(listed.contains(documented.as_str()), "{documented} is documented but not in the router");
    }

    // The list above is the router's: a route added to src/api/mod.rs must be listed
    // (and documented) too.
    let source = routes_in_source(include_str!("../../src/api/mod.rs"));
    assert!(source.len() >= 20, "parsed too few routes: {source:?}");
    let expected: BTreeMap<String, BTreeSet<String>> =
        ROUTES.iter().map(|(p, ms)| ((*p).to_owned(), ms.iter().map(|m| (*m).to_owned()).collect())).collect();
    assert_eq!(source, expected, "the router's routes and this test's list differ");

    // Merchant routes declare the Basic + X-API-KEY security schemes.
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["apiKey"]["name"], "X-API-KEY");
    // Every schema referenced is defined.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
}
