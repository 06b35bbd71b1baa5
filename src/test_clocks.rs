//! Test clocks of sandbox merchants (docs/api.md#test-clocks).
//!
//! A test clock is a frozen instant a sandbox merchant owns and moves forward. A
//! subscription created with `testClockId` follows it instead of the deployment's
//! clock (`crate::clock`): its due dates, trial end, resume, retries and grace period
//! are compared with the clock's `frozen_time`, by the scheduler's sweeps (one pass per
//! clock, `crate::scheduler`) and by every handler that reads "now" for it
//! ([`now_of`], [`frozen_times`]). Subscriptions without one never read this table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::clock::{Clock, truncate};
use crate::error::{Error, Result};
use crate::validate::{self, Errors};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestClock {
    pub id: Uuid,
    pub name: Option<String>,
    pub frozen_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTestClock {
    /// Where the clock starts.
    pub frozen_time: DateTime<Utc>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdvanceTestClock {
    /// The new frozen time: not before the current one (no limit on how far).
    pub to: DateTime<Utc>,
}

/// Only sandbox merchants have test clocks: a live merchant's time is real time.
pub fn sandbox_only(sandbox: bool) -> Result<()> {
    if sandbox { Ok(()) } else { Err(Error::NotAllowed("test clocks are for sandbox merchants only".into())) }
}

pub async fn create(conn: &mut PgConnection, merchant_id: Uuid, req: CreateTestClock) -> Result<TestClock> {
    let mut e = Errors::new();
    validate::instant(&mut e, "frozenTime", Some(req.frozen_time));
    validate::opt_text(&mut e, "name", req.name.as_deref(), 255);
    validate::finish(e)?;
    Ok(sqlx::query_as!(
        TestClock,
        "INSERT INTO test_clocks (id, merchant_id, name, frozen_time) VALUES ($1, $2, $3, $4)
         RETURNING id, name, frozen_time, created_at, updated_at",
        Uuid::now_v7(),
        merchant_id,
        req.name,
        truncate(req.frozen_time),
    )
    .fetch_one(conn)
    .await?)
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<TestClock> {
    sqlx::query_as!(
        TestClock,
        "SELECT id, name, frozen_time, created_at, updated_at FROM test_clocks WHERE merchant_id = $1 AND id = $2",
        merchant_id,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("test clock"))
}

pub async fn list(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TestClock>> {
    Ok(sqlx::query_as!(
        TestClock,
        "SELECT id, name, frozen_time, created_at, updated_at FROM test_clocks
         WHERE merchant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        merchant_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await?)
}

/// The ids of the merchant's subscriptions that follow clock `id`, in id order, after
/// `after`, at most `limit` (the dashboard's clock page).
pub async fn subscription_ids(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM subscriptions WHERE merchant_id = $1 AND test_clock_id = $2
           AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
        merchant_id,
        id,
        after,
        limit
    )
    .fetch_all(conn)
    .await?)
}

/// How many of the merchant's subscriptions follow each of these clocks: (still
/// running, in all). A clock with running subscriptions is one the scheduler sweeps
/// ([`live`]). Clocks without any are not in the map.
pub async fn subscription_counts(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (i64, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT test_clock_id AS "id!",
                  count(*) FILTER (WHERE status NOT IN ('cancelled', 'completed')) AS "running!",
                  count(*) AS "all!"
           FROM subscriptions WHERE merchant_id = $1 AND test_clock_id = ANY($2) GROUP BY test_clock_id"#,
        merchant_id,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, (r.running, r.all))).collect())
}

/// Move the clock forward to `to` (409 backwards), locking its row: two advances of
/// one clock take turns.
pub async fn advance(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, to: DateTime<Utc>) -> Result<TestClock> {
    let mut e = Errors::new();
    validate::instant(&mut e, "to", Some(to));
    validate::finish(e)?;
    let to = truncate(to);
    let current = sqlx::query_scalar!(
        "SELECT frozen_time FROM test_clocks WHERE merchant_id = $1 AND id = $2 FOR UPDATE",
        merchant_id,
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("test clock"))?;
    if to < current {
        return Err(Error::conflict(format!("a test clock only moves forward; it is at {}", current.to_rfc3339())));
    }
    Ok(sqlx::query_as!(
        TestClock,
        "UPDATE test_clocks SET frozen_time = $2 WHERE id = $1 RETURNING id, name, frozen_time, created_at, updated_at",
        id,
        to
    )
    .fetch_one(conn)
    .await?)
}

/// The frozen time of each clock named, for a batch of subscriptions.
pub async fn frozen_times(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, DateTime<Utc>>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!("SELECT id, frozen_time FROM test_clocks WHERE id = ANY($1)", ids).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|r| (r.id, r.frozen_time)).collect())
}

/// "Now" for one subscription: its test clock's frozen time, or the deployment's clock.
pub async fn now_of(conn: &mut PgConnection, clock: &Clock, test_clock: Option<Uuid>) -> Result<DateTime<Utc>> {
    match test_clock {
        Some(id) => frozen_times(conn, &[id]).await?.remove(&id).ok_or(Error::NotFound("test clock")),
        None => clock.now_on(conn).await,
    }
}

/// "Now" for subscription `id` (of the merchant, for a request about it; `None` for
/// a job); the deployment's clock when it has no test clock or does not exist (a
/// request then answers 404).
pub async fn now_for_subscription(
    conn: &mut PgConnection,
    clock: &Clock,
    merchant_id: Option<Uuid>,
    id: Uuid,
) -> Result<DateTime<Utc>> {
    let frozen = sqlx::query_scalar!(
        "SELECT t.frozen_time FROM subscriptions s JOIN test_clocks t ON t.id = s.test_clock_id
         WHERE ($1::uuid IS NULL OR s.merchant_id = $1) AND s.id = $2",
        merchant_id,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    match frozen {
        Some(t) => Ok(t),
        None => clock.now_on(conn).await,
    }
}

/// The frozen time of subscription `id`'s test clock, if it follows one.
pub async fn frozen_of_subscription(conn: &mut PgConnection, id: Uuid) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "SELECT t.frozen_time FROM subscriptions s JOIN test_clocks t ON t.id = s.test_clock_id WHERE s.id = $1",
        id
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// "Now" for the merchant's billing cycle `id`: its subscription's clock.
pub async fn now_for_cycle(
    conn: &mut PgConnection,
    clock: &Clock,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<DateTime<Utc>> {
    let frozen = sqlx::query_scalar!(
        "SELECT t.frozen_time FROM billing_cycles c JOIN subscriptions s ON s.id = c.subscription_id
            JOIN test_clocks t ON t.id = s.test_clock_id
         WHERE c.merchant_id = $1 AND c.id = $2",
        merchant_id,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    match frozen {
        Some(t) => Ok(t),
        None => clock.now_on(conn).await,
    }
}

/// The clocks that have subscriptions still running, with their frozen time: what the
/// scheduler sweeps beside the deployment's clock.
pub async fn live(conn: &mut PgConnection) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
    let rows = sqlx::query!(
        "SELECT t.id, t.frozen_time FROM test_clocks t
         WHERE EXISTS (SELECT 1 FROM subscriptions s WHERE s.test_clock_id = t.id
                       AND s.status NOT IN ('cancelled', 'completed'))
         ORDER BY t.id"
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.frozen_time)).collect())
}
