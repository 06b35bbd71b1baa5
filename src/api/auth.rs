//! Merchant authentication (docs/api.md#authentication): HTTP Basic merchantKey:secret plus
//! `X-API-KEY: merchantKey`. Anything missing or wrong is a 403 problem.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use uuid::Uuid;

use super::problem::ApiError;
use crate::app::App;
use crate::merchants::{self, Merchant};

pub struct Authed(pub Merchant);

fn credentials(parts: &Parts) -> Option<(Uuid, String)> {
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    let key = Uuid::parse_str(key).ok()?;
    let api_key = parts.headers.get("x-api-key")?.to_str().ok()?;
    if Uuid::parse_str(api_key.trim()).ok()? != key {
        return None;
    }
    Some((key, secret.to_owned()))
}

impl FromRequestParts<App> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let (key, secret) = credentials(parts).ok_or(ApiError::Forbidden)?;
        merchants::authenticate(&app.pool, key, &secret).await?.map(Authed).ok_or(ApiError::Forbidden)
    }
}

/// Admin API guard: `Authorization: Bearer $RECUR_ADMIN_TOKEN`. With no token
/// configured the admin API does not exist (404).
pub struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let Some(expected) = &app.admin_token else {
            return Err(crate::Error::NotFound("route").into());
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        use subtle::ConstantTimeEq;
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) { Ok(Admin) } else { Err(ApiError::Forbidden) }
    }
}
