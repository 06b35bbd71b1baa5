//! Request rate limits shared by every `recur api` process through Redis
//! (docs/operations.md#rate-limits): GCRA buckets in one Lua script, so one request
//! costs one Redis round trip whatever number of buckets it draws from, and a
//! request refused by one bucket takes nothing from the others.
//!
//! Redis unreachable or slow does not stop the API: the limiter answers
//! [`Outcome::Unavailable`] (the request is served unlimited), counts it in
//! `recur_rate_limit_errors_total`, and logs at most one warning per [`LOG_EVERY`].
//! After an error, or [`TIMEOUTS_BEFORE_COOLDOWN`] timeouts in a row, it leaves Redis
//! alone for [`COOLDOWN`], so that an outage does not cost every request the timeout;
//! a lone slow answer (a stalled machine) only lets its own request through.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// Metric: requests refused, by bucket.
pub const REFUSED_METRIC: &str = "recur_rate_limited_total";
/// Metric: limiter calls that failed (Redis unreachable or slow); those requests were served.
pub const ERRORS_METRIC: &str = "recur_rate_limit_errors_total";
/// After a failed call, Redis is not asked again for this long (requests are served unlimited).
pub const COOLDOWN: Duration = Duration::from_secs(1);
/// Timeouts in a row (no answer between them) that count as an outage.
pub const TIMEOUTS_BEFORE_COOLDOWN: u32 = 3;
/// At most one warning per this long about Redis being unreachable.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

const SCRIPT: &str = include_str!("ratelimit/gcra.lua");

/// What a bucket limits; its name is the `bucket` label of the metrics and part of its Redis key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// A merchant's `/v1` GET requests.
    Reads,
    /// A merchant's other `/v1` requests.
    Writes,
    /// The admin API (one bucket for the operator).
    Admin,
    /// Failed authentications of one merchantKey.
    AuthKey,
    /// Failed authentications from one client address.
    AuthAddress,
    /// A merchant's checkout-session creations.
    CheckoutSessions,
    /// A merchant's customer-session creations.
    CustomerSessions,
    /// Card submissions on the checkout pages, per client address.
    CardSubmissions,
}

impl Bucket {
    pub const ALL: [Bucket; 8] = [
        Bucket::Reads,
        Bucket::Writes,
        Bucket::Admin,
        Bucket::AuthKey,
        Bucket::AuthAddress,
        Bucket::CheckoutSessions,
        Bucket::CustomerSessions,
        Bucket::CardSubmissions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Reads => "reads",
            Bucket::Writes => "writes",
            Bucket::Admin => "admin",
            Bucket::AuthKey => "auth_key",
            Bucket::AuthAddress => "auth_address",
            Bucket::CheckoutSessions => "checkout_sessions",
            Bucket::CustomerSessions => "customer_sessions",
            Bucket::CardSubmissions => "card_submissions",
        }
    }
}

/// A sustained rate (`count` per `period`) with a burst (requests allowed at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

impl Rate {
    pub const fn per_second(count: u32, burst: u32) -> Rate {
        Rate { count, period: Duration::from_secs(1), burst }
    }

    /// Microseconds one request costs.
    pub fn emission_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.count.max(1))).max(1)
    }

    /// `COUNT/UNIT[:BURST]`, UNIT `s`, `m` or `h`; the burst defaults to COUNT.
    /// `100/s:200`: 100 per second sustained, 200 at once.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("{text:?} is not a rate: write COUNT/UNIT[:BURST], UNIT s, m or h (e.g. 100/s:200)");
        let (rate, burst) = match text.trim().split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (text.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst: u32 = match burst {
            Some(b) => b.trim().parse().map_err(|_| bad())?,
            None => count,
        };
        if count == 0 || burst == 0 || count > 1_000_000 || burst > 1_000_000 {
            return Err(format!("{text:?}: the count and the burst must be between 1 and 1000000"));
        }
        Ok(Rate { count, period, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}:{}", self.count, self.burst)
    }
}

/// One bucket a request draws from.
#[derive(Debug, Clone)]
pub struct Draw {
    pub bucket: Bucket,
    /// Whose bucket: a merchant key, a client address, `operator`.
    pub subject: String,
    pub rate: Rate,
    /// Record the request even when refused, adding up to this much delay (auth failures).
    pub penalty: Option<Duration>,
}

/// A bucket's state after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub bucket: Bucket,
    pub allowed: bool,
    /// The bucket's size (its burst).
    pub limit: u32,
    /// Requests still allowed at once.
    pub remaining: u64,
    /// When refused: how long until one request is allowed.
    pub retry_after: Duration,
    /// How long until the bucket is full again.
    pub reset: Duration,
}

impl Verdict {
    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_micros().div_ceil(1_000_000).max(1) as u64
    }

    /// `RateLimit-Reset` in whole seconds.
    pub fn reset_secs(&self) -> u64 {
        self.reset.as_micros().div_ceil(1_000_000) as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every draw's verdict, in order; the request is allowed when all are.
    Checked(Vec<Verdict>),
    /// Redis could not be asked: the request is served (fail open).
    Unavailable,
    /// Rate limits are switched off (`RECUR_RATE_LIMITS=off`).
    Off,
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        match self {
            Outcome::Checked(v) => v.iter().all(|v| v.allowed),
            Outcome::Unavailable | Outcome::Off => true,
        }
    }

    /// The verdict a client is shown: a refusing bucket's (the longest wait), else the
    /// one with the fewest requests left.
    pub fn shown(&self) -> Option<&Verdict> {
        let Outcome::Checked(v) = self else { return None };
        match v.iter().filter(|v| !v.allowed).max_by_key(|v| v.retry_after) {
            Some(refusing) => Some(refusing),
            None => v.iter().min_by_key(|v| v.remaining),
        }
    }
}

pub struct Limiter {
    /// `None`: limits are off.
    conn: Option<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    epoch: Instant,
    /// Milliseconds after `epoch` before which Redis is not asked (after a failure).
    quiet_until_ms: AtomicU64,
    /// Timeouts since the last answer.
    timeouts: AtomicU32,
    /// When the last warning was logged, and failures since.
    log: Mutex<(Option<Instant>, u64)>,
}

impl Limiter {
    /// A limiter on the Redis at `url`, its keys under `<namespace>:rl:`. It connects
    /// lazily: an unreachable Redis at start is one more failure to fail open on.
    pub fn new(url: &str, namespace: &str, timeout: Duration) -> anyhow::Result<Limiter> {
        use anyhow::Context;
        let client = redis::Client::open(url).context("the rate limiter's Redis URL is not valid")?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, cfg).context("the rate limiter's Redis client")?;
        Ok(Limiter { conn: Some(conn), ..Limiter::off(namespace, timeout) })
    }

    /// A limiter that allows everything (`RECUR_RATE_LIMITS=off`).
    pub fn off(namespace: &str, timeout: Duration) -> Limiter {
        Limiter {
            conn: None,
            script: redis::Script::new(SCRIPT),
            prefix: format!("{namespace}:rl"),
            timeout,
            epoch: Instant::now(),
            quiet_until_ms: AtomicU64::new(0),
            timeouts: AtomicU32::new(0),
            log: Mutex::new((None, 0)),
        }
    }

    pub fn is_on(&self) -> bool {
        self.conn.is_some()
    }

    /// Draw one request from every bucket of `draws`, in one Redis round trip.
    pub async fn check(&self, draws: &[Draw]) -> Outcome {
        let Some(conn) = &self.conn else { return Outcome::Off };
        if draws.is_empty() {
            return Outcome::Checked(vec![]);
        }
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if now_ms < self.quiet_until_ms.load(Ordering::Relaxed) {
            self.failed("skipped while Redis recovers");
            return Outcome::Unavailable;
        }
        let mut call = self.script.prepare_invoke();
        for d in draws {
            // The rate is part of the key: a changed rate (a merchant's own, a new
            // default) starts from a full bucket rather than from the old one's debt.
            call.key(format!(
                "{}:{}:{}:{}x{}",
                self.prefix,
                d.bucket.name(),
                d.subject,
                d.rate.emission_us(),
                d.rate.burst
            ))
            .arg(d.rate.emission_us())
            .arg(d.rate.burst)
            .arg(d.penalty.map_or(0, |p| p.as_micros().max(1) as u64))
            .arg(0);
        }
        let mut conn = conn.clone();
        let answer = tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn)).await;
        let values = match answer {
            Ok(Ok(v)) if v.len() == 1 + 4 * draws.len() => {
                self.timeouts.store(0, Ordering::Relaxed);
                v
            }
            Ok(Ok(v)) => {
                self.fail(now_ms, &format!("unexpected answer of {} values", v.len()));
                return Outcome::Unavailable;
            }
            // The connection's own response timeout, or ours: slow, not necessarily gone.
            Ok(Err(e)) if e.is_timeout() => {
                self.slow(now_ms);
                return Outcome::Unavailable;
            }
            Err(_) => {
                self.slow(now_ms);
                return Outcome::Unavailable;
            }
            Ok(Err(e)) => {
                self.fail(now_ms, &e.to_string());
                return Outcome::Unavailable;
            }
        };
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        let verdicts: Vec<Verdict> = draws
            .iter()
            .zip(values[1..].chunks_exact(4))
            .map(|(d, v)| Verdict {
                bucket: d.bucket,
                allowed: v[0] == 1,
                limit: d.rate.burst,
                remaining: v[1].max(0) as u64,
                retry_after: us(v[2]),
                reset: us(v[3]),
            })
            .collect();
        Outcome::Checked(verdicts)
    }

    /// A timeout: counted; an outage (a cooldown) only after several in a row.
    fn slow(&self, now_ms: u64) {
        let why = format!("no answer within {:?}", self.timeout);
        if self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_BEFORE_COOLDOWN {
            self.timeouts.store(0, Ordering::Relaxed);
            self.fail(now_ms, &why);
        } else {
            self.failed(&why);
        }
    }

    fn fail(&self, now_ms: u64, why: &str) {
        self.quiet_until_ms.store(now_ms + COOLDOWN.as_millis() as u64, Ordering::Relaxed);
        self.failed(why);
    }

    /// Count a failure; log it unless one was logged less than [`LOG_EVERY`] ago.
    fn failed(&self, why: &str) {
        metrics::counter!(ERRORS_METRIC).increment(1);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        if log.0.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                error = why,
                failures = log.1,
                "rate limiter: Redis unreachable, requests are served without limits"
            );
            *log = (Some(Instant::now()), 0);
        }
    }
}

/// Register the limiter's series at 0 (docs/operations.md#metrics).
pub fn register_metrics() {
    for b in Bucket::ALL {
        metrics::counter!(REFUSED_METRIC, "bucket" => b.name()).increment(0);
    }
    metrics::counter!(ERRORS_METRIC).increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(Rate::parse("100/s:200"), Ok(Rate::per_second(100, 200)));
        assert_eq!(Rate::parse("200/s"), Ok(Rate::per_second(200, 200)));
        let r = Rate::parse("10/m").unwrap();
        assert_eq!((r.count, r.period, r.burst, r.emission_us()), (10, Duration::from_secs(60), 10, 6_000_000));
        assert_eq!(Rate::parse(" 5/h:1 ").unwrap().to_string(), "5/h:1");
        for bad in ["", "100", "100/d", "0/s", "1/s:0", "x/s", "1/s:y", "2000000/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refusing_bucket_is_the_one_shown() {
        let v = |bucket, allowed, remaining, retry_ms| Verdict {
            bucket,
            allowed,
            limit: 10,
            remaining,
            retry_after: Duration::from_millis(retry_ms),
            reset: Duration::ZERO,
        };
        let o = Outcome::Checked(vec![v(Bucket::Writes, true, 3, 0), v(Bucket::CheckoutSessions, true, 1, 0)]);
        assert_eq!(o.shown().map(|v| v.bucket), Some(Bucket::CheckoutSessions));
        assert!(o.allowed());
        let o = Outcome::Checked(vec![v(Bucket::Writes, false, 0, 10), v(Bucket::CheckoutSessions, true, 0, 0)]);
        assert_eq!(o.shown().map(|v| v.bucket), Some(Bucket::Writes));
        assert!(!o.allowed());
        assert_eq!(v(Bucket::Reads, false, 0, 1).retry_after_secs(), 1);
        assert_eq!(v(Bucket::Reads, false, 0, 1001).retry_after_secs(), 2);
    }
}
