//! Shared state of the API: the pool, the clock, the gateways and the queue producer.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::gateway::registry::Gateways;
use crate::queue::Enqueuer;
use crate::secrets::SecretKey;

#[derive(Clone)]
pub struct App {
    pub pool: PgPool,
    pub clock: Clock,
    /// Each merchant's gateway (docs/gateway-protocol.md#per-merchant-gateways).
    pub gateway: Arc<Gateways>,
    /// Seals merchants' gateway secrets; `None` without `RECUR_SECRET_KEY`.
    pub secret_key: Option<Arc<SecretKey>>,
    pub queue: Enqueuer,
    pub admin_token: Option<Arc<str>>,
    /// Seconds an enqueued job owns its row before the scheduler re-enqueues it.
    pub lease_secs: i64,
    /// `RECUR_PUBLIC_URL`, without a trailing slash (docs/pages.md#urls).
    pub public_url: Arc<str>,
    /// Rate limits and the authentication cache (docs/operations.md#rate-limits).
    pub limits: Arc<crate::api::limits::Limits>,
}

impl App {
    /// Whether the merchant's gateway can charge `token` (`None`: nothing to check),
    /// asked before input validation, which is synchronous.
    pub async fn accepts(&self, merchant_key: Uuid, token: Option<&str>) -> Result<bool, Error> {
        let Some(token) = token else { return Ok(true) };
        self.gateway.accepts_payment_method(merchant_key, token).await.map_err(|e| {
            Error::Unavailable(format!("the merchant's gateway cannot check the payment method ({e}); retry later"))
        })
    }

    /// Enqueue jobs after a commit. A failure is logged, not returned: the change is
    /// committed and the scheduler's sweep re-derives the work from Postgres.
    pub async fn enqueue(&self, jobs: &[jobs::Job]) {
        if jobs.is_empty() {
            return;
        }
        if let Err(e) = self.queue.push(jobs).await {
            tracing::warn!(
                error = crate::error::chain(&e),
                "enqueue after commit failed; the scheduler will pick the work up"
            );
        }
    }
}
