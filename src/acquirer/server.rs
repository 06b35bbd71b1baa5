//! The simulator's HTTP routes (docs/gateway-protocol.md#endpoints). Every `/v1` request
//! is signed; every refusal is a problem body naming the fields at fault.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use tokio::sync::watch;

use super::cards::{self, Behaviour};
use super::charges::Answer;
use super::faults::{Cutter, Fault, Faults};
use super::metrics::Metrics;
use super::openapi::{self, CardRequest, ChargeRequest, Health, Signed};
use super::payment_methods::Minted;
use super::signature::{self, Refused};
use super::{charges, ledger, payment_methods};
use crate::api::problem::Problem;
use crate::batch::Batcher;
use crate::error::FieldError;

pub struct Shared {
    pub pool: PgPool,
    /// Charges are recorded in group-committed batches.
    pub ledger: Batcher<ledger::Pending, (ledger::Stored, bool)>,
    pub secret: String,
    pub faults: Faults,
    pub metrics: Metrics,
    /// Flips to true when the simulator stops: held requests are let go.
    pub stopping: watch::Receiver<bool>,
}

type AppState = Arc<Shared>;

/// Refusals' media type (RFC 9457), as `Problem::into_response_with` sends them.
const PROBLEM: &str = "application/problem+json";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/charges", post(create_charge))
        .route("/v1/charges/{key}", get(get_charge))
        .route("/v1/payment-methods", post(create_payment_method))
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(middleware::from_fn_with_state(state.clone(), timed))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "Not found", "no such route", vec![]) })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "not on this route",
                vec![],
            )
        })
        .with_state(state)
}

/// A refusal, as a problem body.
fn problem(status: StatusCode, slug: &str, title: &str, detail: &str, errors: Vec<FieldError>) -> Response {
    Problem {
        kind: format!("https://recur.dev/problems/acquirer/{slug}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        errors,
        existing_id: None,
        rule: None,
    }
    .into_response_with(status)
}

fn unauthorized(why: Refused) -> Response {
    problem(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", &why.to_string(), vec![])
}

fn invalid(errors: Vec<FieldError>) -> Response {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        "Validation failed",
        "one or more fields are invalid",
        errors,
    )
}

fn internal(e: sqlx::Error) -> Response {
    tracing::error!(error = crate::error::chain(&e), "acquirer: database error");
    ledger_failed()
}

fn ledger_failed() -> Response {
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "the acquirer's ledger failed", vec![])
}

/// The body as a JSON object, if it is one.
fn object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The refusal of a body that is not a JSON object; it never quotes the body (it may
/// hold a card number).
fn not_an_object() -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "bad-request",
        "Bad request",
        "the body must be a JSON object",
        vec![FieldError::new("body", "must be a JSON object")],
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The request latency histogram, by route and status.
async fn timed(State(s): State<AppState>, path: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = path.map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let res = next.run(req).await;
    s.metrics.request(route, res.status().as_u16(), start.elapsed());
    res
}

#[utoipa::path(post, path = "/v1/charges", tag = "charges", params(Signed),
    request_body = ChargeRequest,
    description = "Charges a payment method once per idempotency key; a repeated key gets the first answer. \
        With the lost-response fault the charge is recorded, then the connection is closed without an answer.",
    responses(
        (status = 200, description = "Approved or declined: a decline is an answer, not an error", body = Answer),
        (status = 400, description = "Not a JSON object, or webhook-id is not the idempotency key", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Signature missing, wrong or stale", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The key was used with another amount, currency or payment method", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields, each named in errors", body = Problem, content_type = PROBLEM),
        (status = 500, description = "The acquirer's ledger failed", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Injected fault: nothing was charged", body = Problem, content_type = PROBLEM),
        (status = 504, description = "Injected fault, after a hold: nothing was charged", body = Problem, content_type = PROBLEM),
    ))]
pub(super) async fn create_charge(
    State(s): State<AppState>,
    ConnectInfo(cutter): ConnectInfo<Cutter>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match signature::verify(&s.secret, &headers, &body, now()) {
        Ok(id) => id,
        Err(why) => return unauthorized(why),
    };
    let Some(body) = object(&body) else {
        return not_an_object();
    };
    let req = match charges::parse(&body) {
        Ok(req) => req,
        Err(errors) => return invalid(errors),
    };
    if id != req.idempotency_key {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            "webhook-id must be the charge's idempotency key",
            vec![FieldError::new("webhook-id", "must equal idempotencyKey")],
        );
    }
    tokio::time::sleep(s.faults.delay()).await;
    let fault = s.faults.draw();
    match fault {
        Fault::Error => {
            s.metrics.fault(fault);
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "injected fault: nothing was charged",
                vec![],
            );
        }
        Fault::Timeout => {
            s.metrics.fault(fault);
            let mut stopping = s.stopping.clone();
            tokio::select! {
                _ = tokio::time::sleep(s.faults.timeout_hold) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            return problem(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "Gateway timeout",
                "injected fault: nothing was charged",
                vec![],
            );
        }
        Fault::None | Fault::LostResponse => {}
    }
    let (stored, new) = match charge(&s, &req).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "acquirer: ledger error");
            return ledger_failed();
        }
    };
    if new {
        s.metrics.charge(stored.answer.status);
    }
    if fault == Fault::LostResponse {
        // Committed above; now the answer is lost on the way back.
        s.metrics.fault(fault);
        cutter.cut();
        return StatusCode::OK.into_response();
    }
    if !stored.same_request(&req) {
        return problem(
            StatusCode::CONFLICT,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this idempotency key was used for a charge with another amount, currency or payment method",
            vec![],
        );
    }
    axum::Json(stored.answer).into_response()
}

/// The charge of a key: the recorded one, else a new one.
async fn charge(s: &Shared, req: &charges::ChargeRequest) -> anyhow::Result<(ledger::Stored, bool)> {
    let mut behaviour = cards::behaviour(&req.payment_method);
    // A minted token must have been minted here.
    if req.payment_method.contains(cards::MINTED_SEPARATOR)
        && behaviour != Behaviour::Unknown
        && !ledger::token_exists(&s.pool, &req.payment_method).await?
    {
        behaviour = Behaviour::Unknown;
    }
    if let Behaviour::RecoverAfter(_) = behaviour {
        // Its answer depends on its cycle's count: a transaction of its own.
        if let Some(first) = ledger::find(&s.pool, &req.idempotency_key).await? {
            return Ok((first, false));
        }
        return Ok(ledger::charge(&s.pool, req, &behaviour).await?);
    }
    s.ledger.submit(ledger::Pending { req: req.clone(), behaviour }).await
}

#[utoipa::path(get, path = "/v1/charges/{idempotencyKey}", tag = "charges",
    params(("idempotencyKey" = String, Path, description = "Also the request's webhook-id"), Signed),
    responses(
        (status = 200, description = "The answer recorded for the key", body = Answer),
        (status = 400, description = "webhook-id is not the key looked up", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Signature missing, wrong or stale", body = Problem, content_type = PROBLEM),
        (status = 404, description = "The key was never charged", body = Problem, content_type = PROBLEM),
        (status = 500, description = "The acquirer's ledger failed", body = Problem, content_type = PROBLEM),
    ))]
pub(super) async fn get_charge(State(s): State<AppState>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let id = match signature::verify(&s.secret, &headers, b"", now()) {
        Ok(id) => id,
        Err(why) => return unauthorized(why),
    };
    if id != key {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            "webhook-id must be the idempotency key looked up",
            vec![FieldError::new("webhook-id", "must equal the idempotency key in the path")],
        );
    }
    match ledger::find(&s.pool, &key).await {
        Ok(Some(stored)) => axum::Json(stored.answer).into_response(),
        Ok(None) => {
            problem(StatusCode::NOT_FOUND, "not-found", "Not found", "no charge has this idempotency key", vec![])
        }
        Err(e) => internal(e),
    }
}

#[utoipa::path(post, path = "/v1/payment-methods", tag = "payment-methods", params(Signed),
    request_body = CardRequest,
    responses(
        (status = 201, description = "A token behaving as the card's test behaviour", body = Minted),
        (status = 400, description = "Not a JSON object", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Signature missing, wrong or stale", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields, each named in errors (never their values)", body = Problem, content_type = PROBLEM),
        (status = 500, description = "The acquirer's ledger failed", body = Problem, content_type = PROBLEM),
    ))]
pub(super) async fn create_payment_method(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = signature::verify(&s.secret, &headers, &body, now()) {
        return unauthorized(why);
    }
    let Some(body) = object(&body) else {
        return not_an_object();
    };
    let card = match payment_methods::parse(&body, chrono::Utc::now().date_naive()) {
        Ok(card) => card,
        Err(errors) => return invalid(errors),
    };
    match ledger::mint_token(&s.pool, &card).await {
        Ok(token) => (StatusCode::CREATED, axum::Json(payment_methods::Minted::new(token, &card))).into_response(),
        Err(e) => internal(e),
    }
}

#[utoipa::path(get, path = "/healthz", tag = "operations", description = "Liveness, after a database ping",
    responses(
        (status = 200, description = "The ledger answers", body = Health),
        (status = 503, description = "Postgres is not reachable", body = Problem, content_type = PROBLEM),
    ))]
pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(5), ledger::ping(&s.pool)).await {
        Ok(Ok(())) => axum::Json(json!({"status": "ok"})).into_response(),
        _ => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "postgres is not reachable",
            vec![],
        ),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub(super) async fn render_metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}
