//! Time. `system` is the wall clock; `manual` is one row in Postgres that only moves
//! when /admin/clock says so, so every process agrees on "now" (docs/architecture.md#the-clock).

use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;

use crate::config::ClockMode;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Manual(PgPool),
}

impl Clock {
    pub async fn new(mode: ClockMode, pool: &PgPool) -> anyhow::Result<Clock> {
        Ok(match mode {
            ClockMode::System => Clock::System,
            ClockMode::Manual => {
                // Starts at the wall clock the first time, then only moves forward.
                sqlx::query!(
                    "INSERT INTO clock (id, now) VALUES (true, date_trunc('milliseconds', now())) ON CONFLICT (id) DO NOTHING"
                )
                .execute(pool)
                .await?;
                Clock::Manual(pool.clone())
            }
        })
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    pub async fn now(&self) -> Result<DateTime<Utc>> {
        match self {
            Clock::System => Ok(truncate(Utc::now())),
            Clock::Manual(pool) => Ok(sqlx::query_scalar!("SELECT now FROM clock WHERE id").fetch_one(pool).await?),
        }
    }

    /// `now`, read on a connection the caller already holds: a caller holding one
    /// connection must not wait for a second from the pool (docs/lock-order.md), or
    /// enough such callers at once take the whole pool and wait for each other.
    pub async fn now_on(&self, conn: &mut sqlx::PgConnection) -> Result<DateTime<Utc>> {
        match self {
            Clock::System => Ok(truncate(Utc::now())),
            Clock::Manual(_) => Ok(sqlx::query_scalar!("SELECT now FROM clock WHERE id").fetch_one(conn).await?),
        }
    }

    /// Move a manual clock to `to`; moving backwards is a conflict.
    pub async fn set(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let Clock::Manual(pool) = self else {
            return Err(Error::conflict("the clock is the system clock; start recur with RECUR_CLOCK=manual"));
        };
        let to = truncate(to);
        let moved = sqlx::query_scalar!("UPDATE clock SET now = $1 WHERE id AND now <= $1 RETURNING now", to)
            .fetch_optional(pool)
            .await?;
        moved.ok_or_else(|| Error::conflict("the clock only moves forward"))
    }
}

/// Postgres keeps microseconds; JSON shows milliseconds. Keep one precision everywhere.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::milliseconds(1)).unwrap_or(t)
}
