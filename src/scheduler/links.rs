//! Payment links in the sweep's time-driven pass (docs/payment-links.md#expiry-and-reminders):
//! reminders first, so a link that expires in the same pass never gets one after it closed.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub async fn sweep(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> crate::Result<()> {
    let reminded = crate::paylinks::sweep::remind(pool, now, limit).await?;
    let expired = crate::paylinks::sweep::expire(pool, now, limit).await?;
    if reminded + expired > 0 {
        tracing::info!(reminded, expired, "payment links");
    }
    Ok(())
}
