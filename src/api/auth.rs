//! Merchant authentication (docs/api.md#authentication): HTTP Basic merchantKey:secret plus
//! `X-API-KEY: merchantKey`. Anything missing or wrong is a 403 problem, or a 429 once
//! the failures of a merchantKey or of a client address go past their limit
//! (docs/operations.md#rate-limits).
//!
//! A successful authentication is cached in the process for [`AUTH_CACHE_TTL`]: within
//! it, the same key and secret are accepted by comparing the secret's hash with the
//! cached one (in constant time), without Postgres. A failure is never cached. A
//! merchant changed elsewhere (its secret, its rates) is seen at the latest when the
//! entry expires; a change made through this process drops the entry at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::limits;
use super::problem::ApiError;
use crate::app::App;
use crate::merchants::{self, Merchant};
use crate::ratelimit::{Bucket, Draw, Outcome};

/// How long a successful authentication is reused without asking Postgres.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
/// Metric: failed authentications (merchant and admin).
pub const FAILURES_METRIC: &str = "recur_auth_failures_total";

/// The merchant of a `/v1` request, authenticated (and limited) by `limits::merchant`.
pub struct Authed(pub Merchant);

fn credentials(headers: &HeaderMap) -> Option<(Uuid, String)> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    let key = Uuid::parse_str(key).ok()?;
    let api_key = headers.get("x-api-key")?.to_str().ok()?;
    if Uuid::parse_str(api_key.trim()).ok()? != key {
        return None;
    }
    Some((key, secret.to_owned()))
}

impl FromRequestParts<App> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if let Some(m) = parts.extensions.get::<Merchant>() {
            return Ok(Authed(m.clone()));
        }
        // A route outside the /v1 layer: authenticated all the same, without limits.
        authenticate(app, &parts.headers, "unknown").await.map(Authed)
    }
}

/// The merchant these headers authenticate, or the refusal to answer: 403, or 429 when
/// failures from this address or on this key are over their limit.
pub async fn authenticate(app: &App, headers: &HeaderMap, address: &str) -> Result<Merchant, Response> {
    let Some((key, secret)) = credentials(headers) else {
        return Err(failed(app, address, None).await);
    };
    let presented = merchants::secret_hash(&secret);
    let cache = &app.limits.auth;
    if let Some(m) = cache.fresh(key, &presented) {
        return Ok(m);
    }
    // An address refused for its failures gets no Postgres query for credentials this
    // process has not seen succeed: a flood of guesses costs Redis only.
    if app.limits.blocked_until(address).is_some() && !cache.known(key, &presented) {
        return Err(failed(app, address, Some(key)).await);
    }
    match merchants::authenticate_hash(&app.pool, key, &presented).await {
        Ok(Some(m)) => {
            cache.store(key, presented, m.clone());
            Ok(m)
        }
        Ok(None) => Err(failed(app, address, Some(key)).await),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// A failed authentication: counted, recorded against the address and the key (if
/// any) with a growing penalty, and answered 403, or 429 once either is over its limit.
pub async fn failed(app: &App, address: &str, key: Option<Uuid>) -> Response {
    metrics::counter!(FAILURES_METRIC).increment(1);
    let limits = &app.limits;
    let rate = limits.rate(Bucket::AuthAddress);
    let penalty = Some(limits::PENALTY_MAX);
    let mut draws = vec![Draw { bucket: Bucket::AuthAddress, subject: address.to_owned(), rate, penalty }];
    if let Some(k) = key {
        draws.push(Draw { bucket: Bucket::AuthKey, subject: k.to_string(), rate, penalty });
    }
    let outcome = limits.limiter.check(&draws).await;
    if let Outcome::Checked(verdicts) = &outcome {
        if let Some(v) = verdicts.iter().find(|v| v.bucket == Bucket::AuthAddress && !v.allowed) {
            limits.block(address, Instant::now() + v.retry_after);
        }
        if !outcome.allowed() {
            return limits::refused(&outcome);
        }
    } else if let Some(until) = limits.blocked_until(address) {
        // Redis is away: the block this process knows of still holds.
        let secs = until.saturating_duration_since(Instant::now()).as_secs().max(1);
        return limits::too_many(secs, "this client address's failed authentication limit");
    }
    ApiError::Forbidden.into_response()
}

/// Whether the headers carry `Authorization: Bearer <expected>` (compared in constant time).
pub fn admin_token_matches(headers: &HeaderMap, expected: &str) -> bool {
    let given =
        headers.get(AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
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
        if admin_token_matches(&parts.headers, expected) { Ok(Admin) } else { Err(ApiError::Forbidden) }
    }
}

/// Successful authentications by merchantKey: the presented secret's hash, the
/// merchant, and when Postgres confirmed them. Entries are only ever made by a success,
/// so the map holds at most one per merchant.
#[derive(Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    hash: [u8; 32],
    merchant: Merchant,
    verified_at: Instant,
}

impl AuthCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The merchant, if this key and secret succeeded less than [`AUTH_CACHE_TTL`] ago.
    pub fn fresh(&self, key: Uuid, presented: &[u8; 32]) -> Option<Merchant> {
        let entries = self.entries();
        let e = entries.get(&key)?;
        let same = bool::from(e.hash.ct_eq(presented));
        (same && e.verified_at.elapsed() < AUTH_CACHE_TTL).then(|| e.merchant.clone())
    }

    /// Whether this key and secret succeeded in this process, however long ago: worth a
    /// Postgres query even from a refused address (never a success by itself).
    pub fn known(&self, key: Uuid, presented: &[u8; 32]) -> bool {
        self.entries().get(&key).is_some_and(|e| bool::from(e.hash.ct_eq(presented)))
    }

    pub fn store(&self, key: Uuid, hash: [u8; 32], merchant: Merchant) {
        self.entries().insert(key, Entry { hash, merchant, verified_at: Instant::now() });
    }

    /// Drop a merchant's entry (after this process changed the merchant).
    pub fn forget(&self, key: Uuid) {
        self.entries().remove(&key);
    }
}
