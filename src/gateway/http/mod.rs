//! The `http` gateway: recur as a client of an acquirer speaking
//! docs/gateway-protocol.md (`recur acquirer` is one). Pooled clients, a cap on the
//! calls in flight, a circuit breaker, signed requests; technical failures are
//! errors (outcome unknown), never declines
//! (docs/gateway-protocol.md#recurs-http-gateway).

mod answer;
mod breaker;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tokio::sync::Semaphore;
use url::Url;
use uuid::Uuid;

pub use answer::decline_code;
pub use breaker::Breaker;

use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayError, TokenizeError};
use crate::webhooks::signing;

const NAME: &str = "http";
/// Calls in flight per HTTP/2 connection (docs/gateway-protocol.md#connections).
const STREAMS_PER_CONNECTION: usize = 100;

/// One pooled client: kept-alive connections, no redirect, no proxy.
fn client(opts: &HttpGatewayOptions, max_idle: usize) -> Result<reqwest::Client, ConfigError> {
    let mut client = reqwest::Client::builder();
    if opts.h2c {
        client = client.http2_prior_knowledge();
    }
    client
        .user_agent(concat!("recur/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_keepalive(Duration::from_secs(30))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .map_err(|_| ConfigError::Client)
}

#[derive(Debug, Clone)]
pub struct HttpGatewayOptions {
    /// Per call: waiting for a permit, then the request and its answer.
    pub timeout: Duration,
    pub max_in_flight: usize,
    /// Consecutive technical failures that open the circuit.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// HTTP/2 from the first byte (h2c over `http://`, no TLS upgrade or ALPN): every
    /// call in flight shares one connection. Over `https://` HTTP/2 is negotiated by
    /// ALPN without it (docs/gateway-protocol.md#connections).
    pub h2c: bool,
}

impl Default for HttpGatewayOptions {
    fn default() -> Self {
        HttpGatewayOptions {
            timeout: Duration::from_secs(10),
            max_in_flight: 256,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            h2c: false,
        }
    }
}

/// Why the gateway cannot be built. The texts never quote the URL or the secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the gateway URL must be an absolute http or https URL")]
    Url,
    #[error("the gateway secret must be whsec_ followed by non-empty base64")]
    Secret,
    #[error("the gateway's HTTP client cannot be built")]
    Client,
}

pub struct HttpGateway {
    base: Url,
    secret: String,
    /// Called in turn (one HTTP/2 connection each, see `new`).
    clients: Vec<reqwest::Client>,
    next_client: AtomicUsize,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
    timeout: Duration,
    cooldown: Duration,
}

/// Why a call got no usable HTTP answer.
enum Failure {
    CircuitOpen(Duration),
    Timeout,
    Unavailable(&'static str),
}

impl From<Failure> for GatewayError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::CircuitOpen(wait) => GatewayError::CircuitOpen(wait),
            Failure::Timeout => GatewayError::Timeout,
            Failure::Unavailable(why) => GatewayError::Unavailable(why.into()),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChargeBody<'a> {
    idempotency_key: &'a str,
    amount: String,
    currency: &'a str,
    payment_method: &'a str,
    customer_account_id: &'a str,
    initiator: &'static str,
    /// A subscription's charge: which cycle it pays (the acquirer counts attempts per cycle).
    #[serde(skip_serializing_if = "Option::is_none")]
    recurring: Option<Recurring>,
}

/// `POST /v1/payment-methods` (docs/gateway-protocol.md#post-v1payment-methods).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CardBody<'a> {
    card_number: &'a str,
    exp_month: i16,
    exp_year: i16,
    cvc: &'a str,
    customer_account_id: &'a str,
}

#[derive(serde::Deserialize)]
struct MintedBody {
    token: String,
}

#[derive(Serialize)]
struct Recurring {
    sequence: i32,
}

impl HttpGateway {
    pub fn new(base_url: &str, secret: &str, opts: HttpGatewayOptions) -> Result<HttpGateway, ConfigError> {
        let mut base = Url::parse(base_url).map_err(|_| ConfigError::Url)?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() || base.host().is_none() {
            return Err(ConfigError::Url);
        }
        // Credentials are no part of the protocol (requests are signed): dropped, so
        // that no request, log or error can carry them.
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        if !valid_secret(secret) {
            return Err(ConfigError::Secret);
        }
        let max_in_flight = opts.max_in_flight.max(1);
        // An HTTP/2 connection carries the streams its server allows at once (100 is the
        // least RFC 9113 recommends servers to allow): one client, so one connection,
        // per 100 calls in flight. HTTP/1.1 over http:// needs one pool only.
        let pools =
            if opts.h2c || base.scheme() == "https" { max_in_flight.div_ceil(STREAMS_PER_CONNECTION) } else { 1 };
        let clients = (0..pools).map(|_| client(&opts, max_in_flight)).collect::<Result<Vec<_>, _>>()?;
        metrics::gauge!("recur_gateway_circuit_open", "gateway" => NAME).set(0.0);
        Ok(HttpGateway {
            base,
            secret: secret.to_owned(),
            clients,
            next_client: AtomicUsize::new(0),
            permits: Semaphore::new(max_in_flight),
            breaker: Mutex::new(Breaker::new(opts.breaker_failures, opts.breaker_cooldown)),
            timeout: opts.timeout,
            cooldown: opts.breaker_cooldown,
        })
    }

    fn payment_methods_url(&self) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["v1", "payment-methods"]);
        }
        url
    }

    fn charges_url(&self, key: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `push` percent-encodes what the key may hold beyond `-._~` and alphanumerics.
            path.pop_if_empty().extend(["v1", "charges"]);
            if let Some(key) = key {
                path.push(key);
            }
        }
        url
    }

    fn breaker<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut b);
        metrics::gauge!("recur_gateway_circuit_open", "gateway" => NAME).set(if b.is_open() { 1.0 } else { 0.0 });
        out
    }

    /// One signed request through the breaker and the concurrency cap: the status
    /// and body of an answer, or why there was none.
    async fn call(&self, method: Method, url: Url, id: &str, body: Vec<u8>) -> Result<(StatusCode, Vec<u8>), Failure> {
        if !self.breaker(|b| b.admit(Instant::now())) {
            return Err(Failure::CircuitOpen(self.cooldown));
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(self.timeout, self.permits.acquire()).await else {
            self.breaker(|b| b.abandon(Instant::now()));
            return Err(Failure::Timeout);
        };
        let started = Instant::now();
        let result = self.send(method, url, id, body).await;
        metrics::histogram!("recur_gateway_request_duration_seconds", "gateway" => NAME)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok((status, _)) if !status.is_server_error() => self.breaker(Breaker::success),
            _ => {
                // The failure that opens the circuit (or fails its trial) reports the
                // outage, not itself: its charge waits with the others instead of using
                // up an attempt (the same key goes again, so an answer lost here is
                // found then).
                if self.breaker(|b| {
                    b.failure(Instant::now());
                    b.is_open()
                }) {
                    return Err(Failure::CircuitOpen(self.cooldown));
                }
            }
        }
        result
    }

    async fn send(&self, method: Method, url: Url, id: &str, body: Vec<u8>) -> Result<(StatusCode, Vec<u8>), Failure> {
        // The acquirer checks the timestamp against its wall clock (never the test clock).
        let ts = chrono::Utc::now().timestamp();
        let signature = signing::header([self.secret.as_str()], id, ts, &body);
        let client = &self.clients[self.next_client.fetch_add(1, Ordering::Relaxed) % self.clients.len()];
        let mut rb = client
            .request(method, url)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature);
        if !body.is_empty() {
            rb = rb.header("content-type", "application/json").body(body);
        }
        // reqwest's errors are never formatted: they quote the URL.
        let resp = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else if e.is_connect() {
                Failure::Unavailable("cannot connect to the acquirer")
            } else {
                Failure::Unavailable("the connection ended before an answer")
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() { Failure::Timeout } else { Failure::Unavailable("the answer was cut short") }
        })?;
        Ok((status, bytes.to_vec()))
    }

    /// A 200's answer; anything else as an error whose text holds at most the status.
    fn read(status: StatusCode, body: &[u8]) -> Result<ChargeOutcome, GatewayError> {
        match status.as_u16() {
            200 => serde_json::from_slice::<answer::Answer>(body)
                .ok()
                .and_then(answer::Answer::outcome)
                .ok_or_else(|| GatewayError::Unavailable("the acquirer's answer cannot be read".into())),
            409 => Err(GatewayError::Unavailable(
                "the acquirer refused the idempotency key: it was used for another request (409)".into(),
            )),
            code @ 400..=499 => Err(GatewayError::Unavailable(format!("the acquirer refused the request ({code})"))),
            code @ 500..=599 => Err(GatewayError::Unavailable(format!("the acquirer failed ({code})"))),
            code => Err(GatewayError::Unavailable(format!("unexpected status from the acquirer ({code})"))),
        }
    }
}

/// A signing secret the gateway can sign with: `whsec_` and non-empty base64
/// (docs/gateway-protocol.md#signing).
pub fn valid_secret(secret: &str) -> bool {
    secret
        .strip_prefix(signing::PREFIX)
        .and_then(|key| base64::engine::general_purpose::STANDARD.decode(key).ok())
        .is_some_and(|k| !k.is_empty())
}

/// Any short token: the acquirer judges it when charging.
fn accepts(token: &str) -> bool {
    !token.is_empty() && token.chars().count() <= 255
}

fn count(op: &'static str, outcome: &'static str) {
    metrics::counter!("recur_gateway_requests_total", "gateway" => NAME, "op" => op, "outcome" => outcome).increment(1);
}

fn outcome_label(r: &Result<Option<ChargeOutcome>, GatewayError>) -> &'static str {
    match r {
        Ok(Some(ChargeOutcome::Approved { .. })) => "approved",
        Ok(Some(ChargeOutcome::Declined { .. })) => "declined",
        Ok(None) => "not_found",
        Err(GatewayError::Timeout) => "timeout",
        Err(GatewayError::CircuitOpen(_)) => "circuit_open",
        Err(GatewayError::Unavailable(_)) => "error",
    }
}

impl Gateway for HttpGateway {
    fn name(&self) -> &'static str {
        NAME
    }

    fn accepts_payment_method(&self, _merchant_key: Uuid, token: &str) -> BoxFuture<'_, Result<bool, GatewayError>> {
        Box::pin(futures::future::ready(Ok(accepts(token))))
    }

    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let body = ChargeBody {
                idempotency_key: &req.idempotency_key,
                amount: crate::money::format_amount(req.amount, &req.currency),
                currency: &req.currency,
                payment_method: &req.payment_method,
                customer_account_id: &req.customer_account_id,
                initiator: "merchant",
                recurring: req.sequence.map(|sequence| Recurring { sequence }),
            };
            let bytes = serde_json::to_vec(&body)
                .map_err(|_| GatewayError::Unavailable("the charge cannot be encoded".into()))?;
            let url = self.charges_url(None);
            let result = match self.call(Method::POST, url, &req.idempotency_key, bytes).await {
                Ok((status, body)) => Self::read(status, &body).map(Some),
                Err(f) => Err(f.into()),
            };
            count("charge", outcome_label(&result));
            result.map(|o| o.expect("a charge always has an outcome"))
        })
    }

    fn lookup(
        &self,
        _merchant_key: Uuid,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<ChargeOutcome>, GatewayError>> {
        let key = idempotency_key.to_owned();
        Box::pin(async move {
            let url = self.charges_url(Some(&key));
            let result = match self.call(Method::GET, url, &key, Vec::new()).await {
                Ok((StatusCode::NOT_FOUND, _)) => Ok(None),
                Ok((status, body)) => Self::read(status, &body).map(Some),
                Err(f) => Err(f.into()),
            };
            count("lookup", outcome_label(&result));
            result
        })
    }

    fn tokenize<'a>(
        &'a self,
        _merchant_key: Uuid,
        customer_account_id: &'a str,
        card: &'a crate::cards::Card,
    ) -> BoxFuture<'a, Result<String, TokenizeError>> {
        Box::pin(async move {
            let body = CardBody {
                card_number: card.number(),
                exp_month: card.exp_month,
                exp_year: card.exp_year,
                cvc: card.cvc(),
                customer_account_id,
            };
            // The bytes hold the card: they go to the acquirer and are dropped.
            let bytes = serde_json::to_vec(&body)
                .map_err(|_| GatewayError::Unavailable("the card cannot be encoded".into()))?;
            let id = format!("recur_pm_{}", Uuid::now_v7().simple());
            let result = match self.call(Method::POST, self.payment_methods_url(), &id, bytes).await {
                Ok((StatusCode::CREATED, body)) => serde_json::from_slice::<MintedBody>(&body)
                    .ok()
                    .filter(|m| accepts(&m.token))
                    .map(|m| m.token)
                    .ok_or_else(|| GatewayError::Unavailable("the acquirer's answer cannot be read".into()).into()),
                // The acquirer names the fields it refuses; the page already checked
                // them, so what is left is a card the acquirer will not take.
                Ok((StatusCode::UNPROCESSABLE_ENTITY, _)) => {
                    Err(TokenizeError::Refused("The card was refused. Try another card.".into()))
                }
                Ok((status, _)) => Err(GatewayError::Unavailable(format!(
                    "the acquirer did not tokenize the card ({})",
                    status.as_u16()
                ))
                .into()),
                Err(f) => Err(GatewayError::from(f).into()),
            };
            count(
                "tokenize",
                match &result {
                    Ok(_) => "ok",
                    Err(TokenizeError::Refused(_)) => "refused",
                    Err(TokenizeError::Gateway(_)) => "error",
                },
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_drop_credentials_and_encode_keys() {
        let secret = signing::new_secret();
        let g =
            HttpGateway::new("http://user:pw@127.0.0.1:7070/base/", &secret, HttpGatewayOptions::default()).unwrap();
        assert_eq!(g.charges_url(None).as_str(), "http://127.0.0.1:7070/base/v1/charges");
        assert_eq!(g.charges_url(Some("a b/c")).as_str(), "http://127.0.0.1:7070/base/v1/charges/a%20b%2Fc");
        for bad in ["ftp://x", "not a url", "mailto:a@b"] {
            assert!(matches!(HttpGateway::new(bad, &secret, HttpGatewayOptions::default()), Err(ConfigError::Url)));
        }
        for bad in ["", "whsec_", "nope", "whsec_%%%"] {
            assert!(matches!(
                HttpGateway::new("http://x", bad, HttpGatewayOptions::default()),
                Err(ConfigError::Secret)
            ));
        }
    }

    #[test]
    fn statuses_never_become_declines_or_quote_the_body() {
        let secret_body = br#"{"detail":"whsec_leak"}"#;
        for status in [400u16, 401, 409, 422, 500, 503, 504, 302] {
            let e = HttpGateway::read(StatusCode::from_u16(status).unwrap(), secret_body).unwrap_err();
            assert!(!format!("{e} {e:?}").contains("leak"), "{e}");
        }
        assert!(HttpGateway::read(StatusCode::OK, b"not json").is_err());
    }

    #[test]
    fn payment_methods_are_any_short_token() {
        assert!(accepts("pm_ok"));
        assert!(!accepts(""));
        assert!(accepts(&"a".repeat(255)));
        assert!(!accepts(&"a".repeat(256)));
    }
}
