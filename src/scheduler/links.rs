//! Payment links in the sweep's time-driven pass (docs/payment-links.md#expiry-and-reminders):
//! reminders first, so a link that expires in the same pass never gets one after it closed.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub async fn sweep(pool: &PgPool, clock: Option<Uuid>, now: DateTime<Utc>, limit: i64) -> crate::Result<()> {
    let reminded = crate::paylinks::sweep::remind(pool, clock, now, limit).await?;
    let expired = crate::paylinks::sweep::expire(pool, clock, now, limit).await?;
    if reminded + expired > 0 {
        tracing::info!(reminded, expired, "payment links");
    }
    Ok(())
}
