//! `GET /openapi.json`: the simulator's OpenAPI 3.1 document, generated from its
//! handlers (docs/gateway-protocol.md#endpoints). Answers are described by the types
//! the simulator serializes; requests by the types below, which only describe: the
//! parsers read a JSON map so that a refusal names every bad field, and a test checks
//! that the fields these types require are the ones the parsers require.

// Described, never built: see above.
#![allow(dead_code)]

use axum::Json;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::server;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "recur acquirer simulator",
        description = "The gateway protocol recur's http gateway speaks (docs/gateway-protocol.md). \
            Every /v1 request is signed with Standard Webhooks headers over \
            \"{webhook-id}.{webhook-timestamp}.{body}\" (HMAC-SHA256, the shared secret); \
            refusals are RFC 9457 problems."
    ),
    paths(
        server::create_charge,
        server::get_charge,
        server::create_payment_method,
        server::healthz,
        server::render_metrics,
        serve
    ),
    tags(
        (name = "charges", description = "One charge per idempotency key"),
        (name = "payment-methods", description = "Tokenizing test cards"),
        (name = "operations", description = "Health, metrics and this document (not signed)"),
    )
)]
pub struct Doc;

/// The signature headers of every `/v1` request (docs/gateway-protocol.md#signing).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct Signed {
    /// The request's id; for a charge or a lookup, its idempotency key.
    #[param(rename = "webhook-id")]
    webhook_id: String,
    /// Unix time in seconds; refused more than 5 minutes from the acquirer's clock.
    #[param(rename = "webhook-timestamp", example = "1764547200")]
    webhook_timestamp: String,
    /// Space-separated `v1,<base64 HMAC-SHA256>` signatures; one must match.
    #[param(rename = "webhook-signature", example = "v1,g4y0BkTKKcesOkuhGj3ij7o96BjfedR3pvh3r45PCp8=")]
    webhook_signature: String,
}

/// `POST /v1/charges` (docs/gateway-protocol.md#post-v1charges). Unknown fields are ignored.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// Printable ASCII, no space or `/`; the request's `webhook-id` must be the same.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[!-.0-~]+$",
        example = "recur_txn_0193a5b2c4d87e6f9a0b1c2d3e4f5a6b"
    )]
    idempotency_key: String,
    /// A positive decimal with at most the currency's minor units.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "10.00")]
    amount: String,
    /// ISO 4217, in capitals.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
    /// A token (docs/gateway-protocol.md#tokens): it decides the outcome.
    #[schema(min_length = 1, max_length = 255, example = "pm_ok")]
    payment_method: String,
    /// The merchant's id of the customer.
    #[schema(min_length = 1, max_length = 255, example = "cust_42")]
    customer_account_id: String,
    initiator: Initiator,
    /// Present for a charge of a recurring series.
    recurring: Option<Recurring>,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Initiator {
    /// Merchant-initiated: recurring, unscheduled.
    Merchant,
    /// The cardholder is present.
    Customer,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recurring {
    /// The billing cycle's number, from 1.
    #[schema(minimum = 1, maximum = 2147483647)]
    sequence: i32,
    /// The network's id of the series' first (customer-initiated) transaction.
    #[schema(min_length = 1, max_length = 255)]
    network_transaction_id: Option<String>,
}

/// `POST /v1/payment-methods` (docs/gateway-protocol.md#test-card-numbers). The number
/// and cvc are never stored, logged or echoed.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardRequest {
    /// A Visa or Mastercard number passing the Luhn check; spaces between groups allowed.
    #[schema(pattern = "^[0-9 ]+$", example = "4242424242424242")]
    card_number: String,
    #[schema(minimum = 1, maximum = 12)]
    exp_month: i64,
    /// With `expMonth`, not in the past.
    #[schema(minimum = 2000, maximum = 2099)]
    exp_year: i64,
    #[schema(pattern = "^[0-9]{3,4}$", example = "123")]
    cvc: String,
    #[schema(min_length = 1, max_length = 255)]
    customer_account_id: Option<String>,
}

/// `GET /healthz`'s answer.
#[derive(ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(Doc::openapi())
}
