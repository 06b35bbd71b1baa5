//! Gauges sampled by the scheduler (not per scrape): queue depth per state, DLQ
//! depth, live workers per queue, subscriptions per status and webhook endpoints per status.

use std::time::Duration;

use jobs::Queue;
use sqlx::PgPool;

use crate::queue::{Enqueuer, stats};
use crate::subscriptions::SubscriptionStatus;

pub const EVERY: Duration = Duration::from_secs(5);

pub async fn gauges(pool: &PgPool, q: &Enqueuer) -> anyhow::Result<()> {
    for queue in Queue::ALL {
        let s = stats::stats(q, queue).await?;
        let name = queue.name();
        for (state, v) in [("pending", s.pending), ("scheduled", s.scheduled), ("running", s.running), ("dead", s.dead)]
        {
            metrics::gauge!("recur_queue_depth", "queue" => name, "state" => state).set(v as f64);
        }
        metrics::gauge!("recur_dlq_depth", "queue" => name).set(s.dead as f64);
        metrics::gauge!("recur_workers_alive", "queue" => name).set(s.workers as f64);
    }
    let counts = sqlx::query!(
        r#"SELECT status AS "status: SubscriptionStatus", count(*) AS "n!" FROM subscriptions GROUP BY status"#
    )
    .fetch_all(pool)
    .await?;
    for status in SubscriptionStatus::ALL {
        let n = counts.iter().find(|c| c.status == status).map(|c| c.n).unwrap_or(0);
        metrics::gauge!("recur_subscriptions", "status" => status.as_str()).set(n as f64);
    }
    let endpoints = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'enabled') AS "enabled!", count(*) FILTER (WHERE status = 'disabled') AS "disabled!"
         FROM webhook_endpoints"#
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("recur_webhook_endpoints", "status" => "enabled").set(endpoints.enabled as f64);
    metrics::gauge!("recur_webhook_endpoints", "status" => "disabled").set(endpoints.disabled as f64);
    Ok(())
}
