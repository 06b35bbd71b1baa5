//! Dead letters live in Redis, but what they concern is marked `error` in Postgres.
//! When Redis loses its keys (a flush, a failover to an empty replica) the entries go,
//! and the `error` rows would wait for an operator who can no longer see them. The
//! scheduler therefore keeps a sentinel key beside the DLQs: when it is missing, it is
//! set again and every dead letter that Postgres implies is put back (PUT is keyed by
//! job, so entries that survived are kept as they are).
//!
//! The sentinel is set *before* the pass: if Redis loses keys during the pass, the
//! sentinel goes with them and the next sample runs the pass again.

use chrono::{DateTime, Utc};
use jobs::{ChargeTransaction, DeliverWebhook, Job, RetryCharge};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{DeadLetter, put};
use crate::error::Result;
use crate::queue::{self, Enqueuer};

/// Rows per Postgres transaction; the rows stay locked while their entries are put, so
/// a replay (which moves them out of `error` first) cannot interleave with the put.
const BATCH: i64 = 500;

/// Put back the dead letters Redis lost; returns how many were put back.
pub async fn restore_if_lost(pool: &PgPool, q: &Enqueuer) -> Result<usize> {
    let sentinel = format!("{}:dlq-sentinel", q.keys().namespace());
    let mut conn = q.connection();
    let set: Option<String> =
        redis::cmd("SET").arg(&sentinel).arg(1).arg("NX").query_async(&mut conn).await.map_err(queue::Error::from)?;
    if set.is_none() {
        return Ok(0);
    }
    let restored = charges(pool, q).await? + retries(pool, q).await? + webhooks(pool, q).await?;
    if restored > 0 {
        tracing::warn!(restored, "put back dead letters that Redis had lost");
        metrics::counter!("recur_dlq_restored_total").increment(restored as u64);
    }
    Ok(restored)
}

/// A row whose dead letter Redis lost.
struct Lost {
    id: Uuid,
    attempt: i32,
    error: Option<String>,
    failed_at: DateTime<Utc>,
}

/// Charges in `error` that are their cycle's latest attempt and were not drained.
async fn charges(pool: &PgPool, q: &Enqueuer) -> Result<usize> {
    put_back(
        pool,
        q,
        async |conn, after| {
            sqlx::query_as!(
                Lost,
                r#"SELECT t.id, 0 AS "attempt!", t.error_message AS error, t.updated_at AS failed_at FROM transactions t
                 WHERE t.status = 'error' AND t.id > $1
                   AND NOT EXISTS (SELECT 1 FROM transactions l WHERE l.billing_cycle_id = t.billing_cycle_id AND l.attempt > t.attempt)
                   AND NOT EXISTS (SELECT 1 FROM dead_letter_archive a WHERE a.object_id = t.id)
                 ORDER BY t.id LIMIT $2 FOR UPDATE OF t SKIP LOCKED"#,
                after,
                BATCH,
            )
            .fetch_all(conn)
            .await
        },
        |id, _| Job::ChargeTransaction(ChargeTransaction { transaction_id: id, attempt: 0 }),
    )
    .await
}

/// Cycles in `error` with no charge in `error`: their `retry-charge` job dead-lettered.
async fn retries(pool: &PgPool, q: &Enqueuer) -> Result<usize> {
    put_back(
        pool,
        q,
        async |conn, after| {
            sqlx::query_as!(
                Lost,
                r#"SELECT c.id, c.attempts + 1 AS "attempt!", NULL::text AS error, c.updated_at AS failed_at FROM billing_cycles c
                 WHERE c.status = 'error' AND c.id > $1
                   AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.billing_cycle_id = c.id AND t.status = 'error')
                   AND NOT EXISTS (SELECT 1 FROM dead_letter_archive a WHERE a.object_id = c.id)
                 ORDER BY c.id LIMIT $2 FOR UPDATE OF c SKIP LOCKED"#,
                after,
                BATCH,
            )
            .fetch_all(conn)
            .await
        },
        |id, cycle_attempt| Job::RetryCharge(RetryCharge { billing_cycle_id: id, cycle_attempt, attempt: 0 }),
    )
    .await
}

/// Webhook deliveries that failed and were not drained.
async fn webhooks(pool: &PgPool, q: &Enqueuer) -> Result<usize> {
    put_back(
        pool,
        q,
        async |conn, after| {
            sqlx::query_as!(
                Lost,
                r#"SELECT d.id, d.attempts AS attempt, d.last_error AS error, d.updated_at AS failed_at FROM webhook_deliveries d
                 WHERE d.status = 'failed' AND d.id > $1
                   AND NOT EXISTS (SELECT 1 FROM dead_letter_archive a WHERE a.object_id = d.id)
                 ORDER BY d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED"#,
                after,
                BATCH,
            )
            .fetch_all(conn)
            .await
        },
        |id, _| Job::DeliverWebhook(DeliverWebhook { delivery_id: id, attempt: 0 }),
    )
    .await
}

/// Page through `page` (the rows after the last id seen, at most `BATCH`, locked) and
/// put back each row's dead letter, built by `job`.
async fn put_back(
    pool: &PgPool,
    q: &Enqueuer,
    page: impl AsyncFn(&mut PgConnection, Uuid) -> sqlx::Result<Vec<Lost>>,
    job: impl Fn(Uuid, i32) -> Job,
) -> Result<usize> {
    let mut restored = 0;
    let mut after = Uuid::nil();
    loop {
        let mut tx = pool.begin().await?;
        let rows = page(&mut tx, after).await?;
        for r in &rows {
            restored += usize::from(put(q, &entry(job(r.id, r.attempt), r.error.as_deref(), r.failed_at)).await?);
        }
        tx.commit().await?;
        match rows.last() {
            Some(r) if rows.len() as i64 == BATCH => after = r.id,
            _ => return Ok(restored),
        }
    }
}

fn entry(job: Job, error: Option<&str>, failed_at: DateTime<Utc>) -> DeadLetter {
    let attempts = job.queue().policy().max_attempts;
    let error = format!("{} (restored from Postgres after Redis lost the dead letter)", error.unwrap_or("error"));
    DeadLetter { failed_at, ..DeadLetter::new(job, attempts, &error) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::Queue;

    #[test]
    fn a_restored_entry_names_its_job_and_says_where_it_came_from() {
        let t = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let d = entry(
            Job::ChargeTransaction(ChargeTransaction { transaction_id: t, attempt: 0 }),
            Some("gateway: timeout"),
            at,
        );
        assert_eq!((d.object_type.as_str(), d.object_id, d.failed_at), ("transaction", t, at));
        assert_eq!(d.queue, Queue::ChargeTransaction.name());
        assert!(d.last_error.starts_with("gateway: timeout (restored"), "{}", d.last_error);
    }
}
