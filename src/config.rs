//! Settings shared by every role, each a flag or an environment variable.

use std::time::Duration;

use clap::Args;

use crate::ratelimit::Rate;

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Postgres connection URL; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/recur", global = true)]
    pub database_url: String,

    /// Redis connection URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    pub redis_url: String,

    /// Prefix of every Redis key recur writes (lets several deployments or tests share one Redis).
    #[arg(long, env = "RECUR_REDIS_NAMESPACE", default_value = "recur", global = true)]
    pub redis_namespace: String,

    /// Postgres pool size per process.
    #[arg(long, env = "RECUR_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool: u32,

    /// `system` (wall clock) or `manual` (test clock stored in Postgres, moved by /admin/clock).
    #[arg(long, env = "RECUR_CLOCK", default_value = "system", global = true)]
    pub clock: ClockMode,

    /// Payment gateway: `sandbox` (in-process, its own ledger) or `http` (an acquirer
    /// speaking docs/gateway-protocol.md; set RECUR_GATEWAY_URL and RECUR_GATEWAY_SECRET).
    /// The default of merchants that have not chosen their own.
    #[arg(long, env = "RECUR_GATEWAY", default_value = "sandbox", global = true)]
    pub gateway: String,

    /// Latency added to every sandbox gateway call, in milliseconds.
    #[arg(long, env = "RECUR_SANDBOX_LATENCY_MS", default_value_t = 0, global = true)]
    pub sandbox_latency_ms: u64,

    /// Bearer token of the admin API; the admin API is off when unset.
    #[arg(long, env = "RECUR_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Seconds an enqueued job owns its Postgres row; after that the scheduler assumes
    /// Redis lost the job and enqueues it again (wall clock, not the test clock).
    #[arg(long, env = "RECUR_LEASE_SECONDS", default_value_t = crate::lease::DEFAULT_SECONDS, global = true)]
    pub lease_seconds: i64,

    /// The key that encrypts merchants' gateway secrets at rest: 64 hex characters
    /// (32 bytes, `openssl rand -hex 32`). Without it no merchant can be given an http
    /// gateway (docs/gateway-protocol.md#per-merchant-gateways).
    #[arg(long, env = "RECUR_SECRET_KEY", hide_env_values = true, global = true)]
    pub secret_key: Option<Secret>,

    /// The base of every URL recur hands out to customers (checkout and portal pages,
    /// docs/pages.md): scheme, host and port as browsers reach the API.
    #[arg(long, env = "RECUR_PUBLIC_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub public_url: String,

    /// Skip applying migrations on start.
    #[arg(long, env = "RECUR_NO_MIGRATE", global = true)]
    pub no_migrate: bool,

    /// The `http` gateway's settings (used when `--gateway http`).
    #[command(flatten)]
    pub http_gateway: HttpGatewaySettings,

    /// Request rate limits (docs/operations.md#rate-limits).
    #[command(flatten)]
    pub rate_limits: RateLimitSettings,
}

/// Request rate limits, shared by every API process through Redis
/// (docs/operations.md#rate-limits). A rate is `COUNT/UNIT[:BURST]`, UNIT `s`, `m` or
/// `h`: `100/s:200` is 100 requests per second sustained and 200 at once.
#[derive(Debug, Clone, Args)]
pub struct RateLimitSettings {
    /// `on` or `off`: off, no request is limited nor Redis asked.
    #[arg(long = "rate-limits", env = "RECUR_RATE_LIMITS", default_value = "on", global = true)]
    pub switch: Switch,

    /// Each merchant's `/v1` writes (POST, PATCH, DELETE), unless the merchant has its own.
    #[arg(long, env = "RECUR_RATE_LIMIT_WRITES", default_value = "100/s:200", value_parser = Rate::parse, global = true)]
    pub rate_limit_writes: Rate,

    /// Each merchant's `/v1` reads (GET), unless the merchant has its own.
    #[arg(long, env = "RECUR_RATE_LIMIT_READS", default_value = "200/s:400", value_parser = Rate::parse, global = true)]
    pub rate_limit_reads: Rate,

    /// The admin API, all callers together.
    #[arg(long, env = "RECUR_RATE_LIMIT_ADMIN", default_value = "50/s:100", value_parser = Rate::parse, global = true)]
    pub rate_limit_admin: Rate,

    /// Failed authentications per merchantKey and per client address; past it, 429
    /// with a delay that grows while the failures go on.
    #[arg(long, env = "RECUR_RATE_LIMIT_AUTH_FAILURES", default_value = "10/m:10", value_parser = Rate::parse, global = true)]
    pub rate_limit_auth_failures: Rate,

    /// Each merchant's checkout-session creations (the API's and the portal's card replacements).
    #[arg(long, env = "RECUR_RATE_LIMIT_CHECKOUT_SESSIONS", default_value = "120/m:120", value_parser = Rate::parse, global = true)]
    pub rate_limit_checkout_sessions: Rate,

    /// Each merchant's customer-session creations.
    #[arg(long, env = "RECUR_RATE_LIMIT_CUSTOMER_SESSIONS", default_value = "120/m:120", value_parser = Rate::parse, global = true)]
    pub rate_limit_customer_sessions: Rate,

    /// Card submissions on the checkout pages, per client address.
    #[arg(long, env = "RECUR_RATE_LIMIT_CARD_SUBMISSIONS", default_value = "10/m:10", value_parser = Rate::parse, global = true)]
    pub rate_limit_card_submissions: Rate,

    /// Redis of the rate limiter (default: REDIS_URL). Every request writes to it: a
    /// Redis without persistence suits it best.
    #[arg(long, env = "RECUR_RATE_LIMIT_REDIS_URL", global = true)]
    pub rate_limit_redis_url: Option<String>,

    /// How long a request waits for the limiter's Redis before it is served unlimited (ms).
    #[arg(long, env = "RECUR_RATE_LIMIT_TIMEOUT_MS", default_value_t = 250, global = true)]
    pub rate_limit_timeout_ms: u64,

    /// The header that holds the client's address, set by a proxy you trust in front
    /// of recur (e.g. `X-Forwarded-For`: its last entry is used); unset, the TCP peer's.
    #[arg(long, env = "RECUR_CLIENT_ADDRESS_HEADER", global = true)]
    pub client_address_header: Option<String>,
}

impl Default for RateLimitSettings {
    /// The flags' defaults.
    fn default() -> RateLimitSettings {
        let rate = |s: &str| Rate::parse(s).expect("a default rate parses");
        RateLimitSettings {
            switch: Switch::On,
            rate_limit_writes: rate("100/s:200"),
            rate_limit_reads: rate("200/s:400"),
            rate_limit_admin: rate("50/s:100"),
            rate_limit_auth_failures: rate("10/m:10"),
            rate_limit_checkout_sessions: rate("120/m:120"),
            rate_limit_customer_sessions: rate("120/m:120"),
            rate_limit_card_submissions: rate("10/m:10"),
            rate_limit_redis_url: None,
            rate_limit_timeout_ms: 250,
            client_address_header: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The `http` gateway's settings (docs/gateway-protocol.md#recurs-http-gateway).
#[derive(Debug, Clone, Args)]
pub struct HttpGatewaySettings {
    /// Base URL of the acquirer (`http://host:port`); `/v1/charges` is appended.
    #[arg(long, env = "RECUR_GATEWAY_URL", hide_env_values = true, global = true)]
    pub gateway_url: Option<String>,

    /// Shared signing secret, `whsec_<base64>`.
    #[arg(long, env = "RECUR_GATEWAY_SECRET", hide_env_values = true, global = true)]
    pub gateway_secret: Option<Secret>,

    /// Per-call timeout in milliseconds: the wait for a free slot and the wait for the answer each get this long.
    #[arg(long, env = "RECUR_GATEWAY_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub gateway_timeout_ms: u64,

    /// Calls in flight to the acquirer at most, per process.
    #[arg(long, env = "RECUR_GATEWAY_MAX_IN_FLIGHT", default_value_t = 256, global = true)]
    pub gateway_max_in_flight: usize,

    /// Consecutive technical failures (timeouts, connection errors, 5xx) that open the circuit.
    #[arg(long, env = "RECUR_GATEWAY_BREAKER_FAILURES", default_value_t = 5, global = true)]
    pub gateway_breaker_failures: u32,

    /// How long an open circuit fails calls fast before one trial call, in milliseconds.
    #[arg(long, env = "RECUR_GATEWAY_BREAKER_COOLDOWN_MS", default_value_t = 5_000, global = true)]
    pub gateway_breaker_cooldown_ms: u64,

    /// Speak HTTP/2 without TLS (h2c, prior knowledge) to the acquirer, so that all calls
    /// in flight share one connection; the acquirer must accept it (`recur acquirer`
    /// does). Over https, HTTP/2 is negotiated without this.
    #[arg(long, env = "RECUR_GATEWAY_H2C", global = true)]
    pub gateway_h2c: bool,
}

impl Default for HttpGatewaySettings {
    /// No acquirer, the flags' defaults.
    fn default() -> HttpGatewaySettings {
        HttpGatewaySettings {
            gateway_url: None,
            gateway_secret: None,
            gateway_timeout_ms: 10_000,
            gateway_max_in_flight: 256,
            gateway_breaker_failures: 5,
            gateway_breaker_cooldown_ms: 5_000,
            gateway_h2c: false,
        }
    }
}

impl HttpGatewaySettings {
    pub fn options(&self) -> crate::gateway::http::HttpGatewayOptions {
        crate::gateway::http::HttpGatewayOptions {
            timeout: millis(self.gateway_timeout_ms.max(1)),
            max_in_flight: self.gateway_max_in_flight.max(1),
            breaker_failures: self.gateway_breaker_failures.max(1),
            breaker_cooldown: millis(self.gateway_breaker_cooldown_ms),
            h2c: self.gateway_h2c,
        }
    }
}

/// A secret that `Debug` never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    System,
    Manual,
}

pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
