//! Fair use at the HTTP edge (docs/operations.md#rate-limits): every `/v1` request is
//! authenticated (`auth`), then drawn from its merchant's reads or writes bucket, and
//! from a bucket of its route's own where [`OWN_BUCKETS`] names one, in one Redis round
//! trip; the admin API draws from the operator's bucket. A refusal is a 429
//! `rate-limited` problem with `Retry-After`; every limited response carries
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{self, AuthCache};
use super::problem::{ApiError, Problem};
use crate::app::App;
use crate::config::{RateLimitSettings, Switch};
use crate::merchants::Merchant;
use crate::ratelimit::{Bucket, Draw, Limiter, Outcome, Rate, Verdict};

/// Routes that draw from a bucket of their own as well as from the merchant's reads or
/// writes: one line per route, `(method, route template, bucket)`.
pub const OWN_BUCKETS: &[(Method, &str, Bucket)] = &[
    (Method::POST, "/v1/checkout-sessions", Bucket::CheckoutSessions),
    (Method::POST, "/v1/customer-sessions", Bucket::CustomerSessions),
];

/// Longest delay failed authentications can add up to (the growing delay's cap).
pub const PENALTY_MAX: Duration = Duration::from_secs(15 * 60);

/// The limiter, the rates, and what the edge remembers between requests.
pub struct Limits {
    pub limiter: Limiter,
    rates: RateLimitSettings,
    address_header: Option<HeaderName>,
    /// Successful authentications (docs/api.md#authentication).
    pub auth: AuthCache,
    /// Client addresses refused for failed authentications, until when: their
    /// requests that the cache cannot vouch for are refused without a Postgres query.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl Limits {
    pub fn new(settings: &RateLimitSettings, redis_url: &str, namespace: &str) -> anyhow::Result<Limits> {
        let timeout = Duration::from_millis(settings.rate_limit_timeout_ms.max(1));
        let limiter = match settings.switch {
            Switch::On => {
                Limiter::new(settings.rate_limit_redis_url.as_deref().unwrap_or(redis_url), namespace, timeout)?
            }
            Switch::Off => Limiter::off(namespace, timeout),
        };
        let address_header = match &settings.client_address_header {
            Some(h) => Some(
                HeaderName::try_from(h.trim())
                    .map_err(|_| anyhow::anyhow!("RECUR_CLIENT_ADDRESS_HEADER={h:?} is not a header name"))?,
            ),
            None => None,
        };
        Ok(Limits {
            limiter,
            rates: settings.clone(),
            address_header,
            auth: AuthCache::default(),
            blocked: Mutex::new(HashMap::new()),
        })
    }

    /// The process-wide rate of a bucket (a merchant's own reads and writes aside).
    pub fn rate(&self, bucket: Bucket) -> Rate {
        let r = &self.rates;
        match bucket {
            Bucket::Reads => r.rate_limit_reads,
            Bucket::Writes => r.rate_limit_writes,
            Bucket::Admin => r.rate_limit_admin,
            Bucket::AuthKey | Bucket::AuthAddress => r.rate_limit_auth_failures,
            Bucket::CheckoutSessions => r.rate_limit_checkout_sessions,
            Bucket::CustomerSessions => r.rate_limit_customer_sessions,
            Bucket::CardSubmissions => r.rate_limit_card_submissions,
        }
    }

    /// The client's address: the configured header's last entry (set by a trusted
    /// proxy), else the TCP peer's. IPv6 addresses count by their /64, which one
    /// client usually holds whole.
    pub fn client_address(&self, req: &Request) -> String {
        let from_header = self.address_header.as_ref().and_then(|h| {
            let last = req.headers().get_all(h).iter().next_back()?;
            last.to_str().ok()?.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        });
        let ip = from_header.or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        match ip {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        }
    }

    /// Until when `address` is refused for failed authentications, if it is now.
    pub fn blocked_until(&self, address: &str) -> Option<Instant> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.get(address).copied().filter(|until| *until > Instant::now())
    }

    pub fn block(&self, address: &str, until: Instant) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= 100_000 {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(address.to_owned(), until);
    }
}

/// `/v1`: authenticate, draw from the merchant's buckets, serve, add the headers.
pub async fn merchant(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let address = app.limits.client_address(&req);
    let merchant = match auth::authenticate(&app, req.headers(), &address).await {
        Ok(m) => m,
        Err(refusal) => return refusal,
    };
    let draws = merchant_draws(&app.limits, &merchant, req.method(), super::request_id::route(&req));
    let outcome = app.limits.limiter.check(&draws).await;
    if !outcome.allowed() {
        return refused(&outcome);
    }
    req.extensions_mut().insert(merchant);
    let mut res = next.run(req).await;
    headers(res.headers_mut(), &outcome);
    res
}

/// The buckets a merchant's request draws from: its reads (GET, HEAD) or writes, at
/// its own rate or the default, and its route's own bucket if it has one. A
/// merchant's buckets are keyed by its id.
pub fn merchant_draws(limits: &Limits, merchant: &Merchant, method: &Method, route: &str) -> Vec<Draw> {
    let subject = merchant.id.to_string();
    let (bucket, own) = if method == Method::GET || method == Method::HEAD {
        (Bucket::Reads, merchant.rate_limits.reads)
    } else {
        (Bucket::Writes, merchant.rate_limits.writes)
    };
    let mut draws =
        vec![Draw { bucket, subject: subject.clone(), rate: own.unwrap_or(limits.rate(bucket)), penalty: None }];
    for (m, r, b) in OWN_BUCKETS {
        if m == method && *r == route {
            draws.push(merchant_draw(limits, *b, merchant.id));
        }
    }
    draws
}

/// One of a merchant's buckets at the process-wide rate (the portal's card
/// replacements draw from its checkout sessions).
pub fn merchant_draw(limits: &Limits, bucket: Bucket, merchant_id: uuid::Uuid) -> Draw {
    Draw { bucket, subject: merchant_id.to_string(), rate: limits.rate(bucket), penalty: None }
}

/// The pages' forms (no merchant credentials): a POST draws from `bucket` for the
/// client's address; other methods pass. Refused, the customer gets a page saying
/// when to try again (429, `Retry-After`). One line per route: `.route_layer(
/// middleware::from_fn_with_state((app.clone(), Bucket::CardSubmissions), limits::page_posts))`.
pub async fn page_posts(State((app, bucket)): State<(App, Bucket)>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let draw = Draw { bucket, subject: app.limits.client_address(&req), rate: app.limits.rate(bucket), penalty: None };
    let outcome = app.limits.limiter.check(std::slice::from_ref(&draw)).await;
    if outcome.allowed() { next.run(req).await } else { page_refused(&outcome) }
}

/// A page for a refused form: 429 with `Retry-After`, counted by bucket.
pub fn page_refused(outcome: &Outcome) -> Response {
    let secs = outcome.shown().map_or(1, Verdict::retry_after_secs);
    if let Outcome::Checked(verdicts) = outcome {
        for v in verdicts.iter().filter(|v| !v.allowed) {
            metrics::counter!(crate::ratelimit::REFUSED_METRIC, "bucket" => v.bucket.name()).increment(1);
        }
    }
    let mut res = crate::pages::message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!("Please wait {secs} seconds, then try again."),
    );
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// `/admin`: failed tokens count as failed authentications; the operator's requests
/// draw from one bucket shared by every caller.
pub async fn admin(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(expected) = app.admin_token.clone() else {
        // No admin API: the route answers 404 (auth::Admin).
        return next.run(req).await;
    };
    let address = app.limits.client_address(&req);
    if !auth::admin_token_matches(req.headers(), &expected) {
        return auth::failed(&app, &address, None).await;
    }
    let draw = Draw {
        bucket: Bucket::Admin,
        subject: "operator".to_owned(),
        rate: app.limits.rate(Bucket::Admin),
        penalty: None,
    };
    let outcome = app.limits.limiter.check(std::slice::from_ref(&draw)).await;
    if !outcome.allowed() {
        return refused(&outcome);
    }
    let mut res = next.run(req).await;
    headers(res.headers_mut(), &outcome);
    res
}

/// The 429 of a refused request, counted by the buckets that refused it.
pub fn refused(outcome: &Outcome) -> Response {
    if let Outcome::Checked(verdicts) = outcome {
        for v in verdicts.iter().filter(|v| !v.allowed) {
            metrics::counter!(crate::ratelimit::REFUSED_METRIC, "bucket" => v.bucket.name()).increment(1);
        }
    }
    let Some(shown) = outcome.shown() else {
        return ApiError::from(crate::Error::Internal(anyhow::anyhow!("a refusal without a verdict"))).into_response();
    };
    let mut res = too_many(shown.retry_after_secs(), &format!("{} limit", what(shown.bucket)));
    headers(res.headers_mut(), outcome);
    res
}

/// What a bucket limits, for the problem's detail.
fn what(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Reads => "this merchant's read",
        Bucket::Writes => "this merchant's write",
        Bucket::Admin => "the admin API's",
        Bucket::AuthKey => "this merchantKey's failed authentication",
        Bucket::AuthAddress => "this client address's failed authentication",
        Bucket::CheckoutSessions => "this merchant's checkout-session",
        Bucket::CustomerSessions => "this merchant's customer-session",
        Bucket::CardSubmissions => "this client address's card submission",
    }
}

/// A 429 `rate-limited` problem with `Retry-After` (docs/api.md#rate-limits).
pub fn too_many(retry_after_secs: u64, limit: &str) -> Response {
    let problem = Problem {
        kind: "https://recur.dev/problems/rate-limited".into(),
        title: "Too many requests".into(),
        status: 429,
        detail: format!("over {limit}; retry in {retry_after_secs} s"),
        errors: vec![],
        existing_id: None,
        rule: None,
    };
    let mut res = problem.into_response_with(StatusCode::TOO_MANY_REQUESTS);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    res
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` of the bucket shown (none when the
/// limiter could not be asked or is off).
pub fn headers(h: &mut HeaderMap, outcome: &Outcome) {
    let Some(v) = outcome.shown() else { return };
    insert(h, v);
}

fn insert(h: &mut HeaderMap, v: &Verdict) {
    h.insert("ratelimit-limit", HeaderValue::from(v.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(v.reset_secs()));
}
