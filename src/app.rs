//! Shared state of the API: the pool, the clock, the gateway and the queue producer.

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::gateway::Gateway;
use crate::queue::Enqueuer;

#[derive(Clone)]
pub struct App {
    pub pool: PgPool,
    pub clock: Clock,
    pub gateway: Arc<dyn Gateway>,
    pub queue: Enqueuer,
    pub admin_token: Option<Arc<str>>,
    /// Seconds an enqueued job owns its row before the scheduler re-enqueues it.
    pub lease_secs: i64,
}

impl App {
    pub fn accepts(&self) -> impl Fn(&str) -> bool + '_ {
        |token| self.gateway.accepts_payment_method(token)
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
