//! The operator's view of a merchant and its choice of gateway (docs/api.md#admin-api,
//! docs/gateway-protocol.md#per-merchant-gateways). No answer, log line or error here
//! carries a gateway secret: it is sealed before it is stored and never read back.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Admin;
use super::extract::{self, Body};
use super::problem::{ApiError, Problem, Result};
use crate::app::App;
use crate::error::{Error, FieldError};
use crate::merchants::{self, MerchantView, gateway};

/// The `{merchantKey}` path segment.
pub struct MerchantKey(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for MerchantKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad = || Error::BadRequest {
            detail: "invalid merchant key".into(),
            errors: vec![FieldError::new("merchantKey", "must be a UUID")],
        };
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(|_| bad())?;
        Uuid::parse_str(&raw).map(MerchantKey).map_err(|_| bad().into())
    }
}

/// The body of `PATCH /admin/merchants/{merchantKey}`, for the OpenAPI document; the
/// handler reads it with `merchants::update::parse`, which quotes no value back. At
/// least one of the fields; an absent one is left as it is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMerchant {
    /// The merchant's gateway; `null` returns it to the process default (`RECUR_GATEWAY`).
    pub gateway: Option<GatewayInput>,
    /// The merchant's own `/v1` rates (docs/operations.md#rate-limits); `null` returns
    /// both to the process defaults.
    pub rate_limits: Option<RateLimitsInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitsInput {
    /// GET requests; `null`: the default (`RECUR_RATE_LIMIT_READS`).
    pub reads: Option<RateInput>,
    /// Other requests; `null`: the default (`RECUR_RATE_LIMIT_WRITES`).
    pub writes: Option<RateInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateInput {
    /// Requests per second, sustained: 1 to 100000.
    pub per_second: u32,
    /// Requests allowed at once: 1 to 1000000; defaults to perSecond.
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayInput {
    /// `sandbox` or `http`.
    pub kind: String,
    /// `http` only: the acquirer's absolute http(s) URL, without credentials, query or fragment.
    pub base_url: Option<String>,
    /// `http` only: the signing secret, `whsec_<base64>`; stored encrypted, never returned.
    pub secret: Option<String>,
}

#[utoipa::path(get, path = "/admin/merchants/{merchantKey}", tag = "admin", params(("merchantKey" = Uuid, Path)),
    responses((status = 200, body = MerchantView), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)),
    security(("admin" = [])))]
pub async fn get(State(app): State<App>, _: Admin, MerchantKey(key): MerchantKey) -> Result<Json<MerchantView>> {
    Ok(Json(merchants::view(&app.pool, key).await?))
}

#[utoipa::path(patch, path = "/admin/merchants/{merchantKey}", tag = "admin", params(("merchantKey" = Uuid, Path)),
    request_body = UpdateMerchant,
    responses((status = 200, body = MerchantView), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "A secret was given but the server has no RECUR_SECRET_KEY"),
        (status = 422, body = Problem)),
    security(("admin" = [])))]
pub async fn update(
    State(app): State<App>,
    _: Admin,
    MerchantKey(key): MerchantKey,
    Body(body): Body,
) -> Result<Json<MerchantView>> {
    let update = merchants::update::parse(&extract::parse::<serde_json::Value>(&body, false)?)?;
    // Both changes or neither.
    let mut tx = app.pool.begin().await?;
    if let Some(choice) = &update.gateway {
        gateway::set(&mut tx, app.secret_key.as_deref(), key, choice).await?;
    }
    if let Some(patch) = &update.rate_limits {
        merchants::limits::set(&mut tx, key, patch).await?;
    }
    tx.commit().await?;
    // This process's next call reads the new settings; other processes' within their
    // caches' TTLs (docs/operations.md#rate-limits).
    if let Some(choice) = &update.gateway {
        app.gateway.forget(key);
        tracing::info!(merchant_key = %key, gateway = choice.kind().unwrap_or("default"), "merchant gateway changed");
    }
    if let Some(patch) = &update.rate_limits {
        app.limits.auth.forget(key);
        tracing::info!(merchant_key = %key, ?patch, "merchant rate limits changed");
    }
    Ok(Json(merchants::view(&app.pool, key).await?))
}
