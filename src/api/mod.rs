//! The HTTP API: thin handlers over the domain modules, behind the request-id, trace,
//! timeout and panic layers (see `request_id`).

pub mod admin;
pub mod auth;
pub mod billing;
pub mod checkout;
pub mod customers;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod merchants;
pub mod openapi;
pub mod ops;
pub mod plans;
pub mod portal;
pub mod problem;
pub mod request_id;
pub mod series;
pub mod settings;
pub mod subscriptions;
pub mod test_clocks;
pub mod webhooks;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;
use problem::{ApiError, Problem};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Serve the API on `listener`, with each connection's peer address known to the rate
/// limits (`limits::Limits::client_address`).
pub fn serve(
    listener: tokio::net::TcpListener,
    app: App,
) -> axum::serve::Serve<
    tokio::net::TcpListener,
    axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    axum::middleware::AddExtension<Router, axum::extract::ConnectInfo<SocketAddr>>,
> {
    axum::serve(listener, router(app).into_make_service_with_connect_info::<SocketAddr>())
}

pub fn router(app: App) -> Router {
    crate::telemetry::register_api_metrics();
    // Every /v1 route is authenticated and limited by `limits::merchant`, every /admin
    // route by `limits::admin` (docs/operations.md#rate-limits).
    let v1 = Router::new()
        .route("/v1/plans", post(plans::create).get(plans::list))
        .route("/v1/plans/{id}", get(plans::get).patch(plans::update).delete(plans::delete))
        .route("/v1/plans/{id}/activate", post(plans::activate))
        .route("/v1/plans/{id}/archive", post(plans::archive))
        .route("/v1/subscriptions", post(subscriptions::create).get(subscriptions::list))
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get).patch(subscriptions::update).delete(subscriptions::delete),
        )
        .route("/v1/subscriptions/{id}/pause", post(subscriptions::pause))
        .route("/v1/subscriptions/{id}/resume", post(subscriptions::resume))
        .route("/v1/subscriptions/{id}/cancel", post(subscriptions::cancel))
        .route("/v1/subscriptions/{id}/change", post(subscriptions::change))
        .route("/v1/subscriptions/{id}/change/preview", post(subscriptions::change_preview))
        .route("/v1/test-clocks", post(test_clocks::create).get(test_clocks::list))
        .route("/v1/test-clocks/{id}", get(test_clocks::get))
        .route("/v1/test-clocks/{id}/advance", post(test_clocks::advance))
        .route("/v1/subscriptions/{id}/billing-cycles", get(billing::list_cycles))
        .route("/v1/billing-cycles/{id}", get(billing::get_cycle))
        .route("/v1/billing-cycles/{id}/retry", post(billing::retry_cycle))
        .route("/v1/billing-cycles/{id}/payment-link", post(billing::payment_link))
        .route("/v1/transactions/{id}", get(billing::get_transaction))
        .route("/v1/payment-series", post(series::create).get(series::list))
        .route("/v1/payment-series/{id}", get(series::get))
        .route("/v1/payment-series/{id}/cancel", post(series::cancel))
        .route("/v1/payment-series/{id}/transactions", post(series::create_transaction))
        .route("/v1/customers/{customerAccountId}", get(customers::get))
        .route("/v1/events", get(customers::events))
        .route("/v1/settings", get(settings::get).patch(settings::update))
        .route("/v1/checkout-sessions", post(checkout::create).get(checkout::list))
        .route("/v1/checkout-sessions/{id}", get(checkout::get))
        .route("/v1/customer-sessions", post(portal::create))
        .route("/v1/webhook-endpoints", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhook-endpoints/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/v1/webhook-endpoints/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/v1/webhook-endpoints/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhook-endpoints/{id}/replay", post(webhooks::replay))
        .route("/v1/webhook-deliveries/{id}/retry", post(webhooks::retry))
        .route_layer(middleware::from_fn_with_state(app.clone(), limits::merchant));
    let admin = Router::new()
        .route("/admin/merchants", post(admin::create_merchant))
        .route("/admin/merchants/{merchantKey}", get(merchants::get).patch(merchants::update))
        .route("/admin/clock", get(admin::get_clock).post(admin::move_clock))
        .route("/admin/sandbox/charges", get(admin::sandbox_charges))
        .route("/admin/queues", get(ops::queues))
        .route("/admin/dlq", get(ops::list))
        .route("/admin/dlq/replay", post(ops::replay))
        .route("/admin/dlq/drain", post(ops::drain))
        .route_layer(middleware::from_fn_with_state(app.clone(), limits::admin));
    let routes = Router::new()
        .merge(v1)
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(crate::telemetry::render))
        .merge(crate::pages::router(&app))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::from(crate::Error::Internal(anyhow::anyhow!("handler panicked"))).into_response()
        }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ));
    // Outside the timeout and panic layers, so their 503 and 500 carry the id too.
    request_id::layer(routes).with_state(app)
}

async fn not_found() -> ApiError {
    crate::Error::NotFound("route").into()
}

async fn method_not_allowed() -> Response {
    Problem {
        kind: "https://recur.dev/problems/method-not-allowed".into(),
        title: "Method not allowed".into(),
        status: 405,
        detail: "this route does not support that method".into(),
        errors: vec![],
        existing_id: None,
        rule: None,
    }
    .into_response_with(StatusCode::METHOD_NOT_ALLOWED)
}

/// Request metrics labelled by route template (bounded).
async fn observe(req: Request, next: Next) -> Response {
    let route = request_id::route(&req).to_owned();
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("recur_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("recur_http_request_duration_seconds", "route" => route).record(start.elapsed().as_secs_f64());
    res
}
