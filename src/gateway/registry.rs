//! Each merchant's gateway (docs/gateway-protocol.md#per-merchant-gateways). `Gateways`
//! is itself a `Gateway`: every call goes to the gateway the merchant chose, or to the
//! process default (`RECUR_GATEWAY`), so the engine and the API need not know.
//!
//! A merchant's choice is cached and read again from Postgres at most every
//! [`CONFIG_TTL`]: another process's `PATCH /admin/merchants/{merchantKey}` is
//! picked up within it, without a restart. A built http gateway is kept while the
//! merchant's `gateway_updated_at` stays the same, so its connection pool and circuit
//! breaker live on; a change builds a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

use super::http::{HttpGateway, HttpGatewayOptions};
use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayError, TokenizeError};
use crate::merchants::gateway::{self as choice, Stored};
use crate::secrets::SecretKey;

/// How long a merchant's cached choice is used before Postgres is asked again.
pub const CONFIG_TTL: Duration = Duration::from_secs(5);

pub struct Gateways {
    pool: PgPool,
    default: Arc<dyn Gateway>,
    sandbox: Arc<dyn Gateway>,
    /// Timeout, concurrency cap and breaker of merchants' http gateways (the process's
    /// settings); only the URL and the secret are the merchant's.
    http: HttpGatewayOptions,
    key: Option<Arc<SecretKey>>,
    cache: Mutex<HashMap<Uuid, Cached>>,
}

struct Cached {
    gateway: Arc<dyn Gateway>,
    /// The `gateway_updated_at` it was built from.
    version: Option<DateTime<Utc>>,
    read_at: Instant,
}

impl Gateways {
    /// `sandbox` serves the merchants that chose it (it may also be `default`).
    pub fn new(
        pool: PgPool,
        default: Arc<dyn Gateway>,
        sandbox: Arc<dyn Gateway>,
        http: HttpGatewayOptions,
        key: Option<Arc<SecretKey>>,
    ) -> Gateways {
        Gateways { pool, default, sandbox, http, key, cache: Mutex::new(HashMap::new()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop a merchant's cached gateway, so this process's next call reads its choice
    /// (after this process changed it).
    pub fn forget(&self, merchant_key: Uuid) {
        self.cache().remove(&merchant_key);
    }

    /// The merchant's gateway: cached, or read and built.
    pub async fn of(&self, merchant_key: Uuid) -> Result<Arc<dyn Gateway>, GatewayError> {
        if let Some(c) = self.cache().get(&merchant_key)
            && c.read_at.elapsed() < CONFIG_TTL
        {
            return Ok(c.gateway.clone());
        }
        let read_at = Instant::now();
        let stored = choice::stored(&self.pool, merchant_key).await.map_err(|e| {
            tracing::warn!(%merchant_key, error = crate::error::chain(&e), "reading a merchant's gateway failed");
            GatewayError::Unavailable("the merchant's gateway settings cannot be read".into())
        })?;
        let version = stored.as_ref().and_then(|s| s.updated_at);
        if let Some(c) = self.cache().get_mut(&merchant_key)
            && c.version == version
        {
            c.read_at = read_at;
            return Ok(c.gateway.clone());
        }
        let gateway = self.build(merchant_key, stored)?;
        let mut cache = self.cache();
        // Another call may have built the same version meanwhile: one pool and breaker.
        if let Some(c) = cache.get_mut(&merchant_key)
            && c.version == version
        {
            c.read_at = read_at;
            return Ok(c.gateway.clone());
        }
        cache.insert(merchant_key, Cached { gateway: gateway.clone(), version, read_at });
        Ok(gateway)
    }

    /// A gateway from a stored choice; an unknown merchant gets the default. Errors
    /// name what is wrong, never the URL or the secret.
    fn build(&self, merchant_key: Uuid, stored: Option<Stored>) -> Result<Arc<dyn Gateway>, GatewayError> {
        let Some(s) = stored else { return Ok(self.default.clone()) };
        let built = match s.kind.as_deref() {
            None => return Ok(self.default.clone()),
            Some("sandbox") => return Ok(self.sandbox.clone()),
            Some("http") => self.http_gateway(&s),
            Some(_) => Err("its kind is unknown to this version of recur"),
        };
        built.map_err(|why| {
            tracing::error!(%merchant_key, why, "a merchant's gateway cannot be built");
            GatewayError::Unavailable(format!("the merchant's gateway cannot be built: {why}"))
        })
    }

    fn http_gateway(&self, s: &Stored) -> Result<Arc<dyn Gateway>, &'static str> {
        let key = self.key.as_ref().ok_or("RECUR_SECRET_KEY is not set, so its secret cannot be decrypted")?;
        let (Some(url), Some(sealed)) = (&s.base_url, &s.secret_enc) else {
            return Err("its URL or secret is missing");
        };
        let secret =
            key.open(s.merchant_id, sealed).map_err(|_| "its secret does not decrypt with this RECUR_SECRET_KEY")?;
        let gateway = HttpGateway::new(url, secret.expose(), self.http.clone())
            .map_err(|_| "its URL or secret is not valid for the http gateway")?;
        Ok(Arc::new(gateway))
    }
}

impl Gateway for Gateways {
    /// Each merchant's gateway is chosen per call.
    fn name(&self) -> &'static str {
        "per-merchant"
    }

    fn accepts_payment_method(&self, merchant_key: Uuid, token: &str) -> BoxFuture<'_, Result<bool, GatewayError>> {
        let token = token.to_owned();
        Box::pin(async move { self.of(merchant_key).await?.accepts_payment_method(merchant_key, &token).await })
    }

    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move { self.of(req.merchant_key).await?.charge(req).await })
    }

    fn tokenize<'a>(
        &'a self,
        merchant_key: Uuid,
        customer_account_id: &'a str,
        card: &'a crate::cards::Card,
    ) -> BoxFuture<'a, Result<String, TokenizeError>> {
        Box::pin(async move { self.of(merchant_key).await?.tokenize(merchant_key, customer_account_id, card).await })
    }

    fn lookup(
        &self,
        merchant_key: Uuid,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<ChargeOutcome>, GatewayError>> {
        let key = idempotency_key.to_owned();
        Box::pin(async move { self.of(merchant_key).await?.lookup(merchant_key, &key).await })
    }
}
