//! The passage of time on payment links (docs/payment-links.md#expiry-and-reminders):
//! the reminder a day before `expiresAt`, and expiry, which fails an unpaid cycle
//! (`link_expired`). Both are derived from Postgres on every scheduler sweep: nothing
//! about them lives in Redis, so a Redis loss delays nothing, and each acts once
//! because it is conditional on the row it sets (`reminded_at`, `expired_at`).

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::LINK_EXPIRED;
use crate::billing::cycles::CycleStatus;
use crate::billing::{cycle_state, locks};
use crate::events::{self, Actor, NewEvent};
use crate::subscriptions::SubscriptionStatus;

/// Send the reminders that are due: one `payment_link_reminder` event per open link
/// whose cycle is still unpaid, in one transaction with the `reminded_at` stamp.
/// `clock`: the links of subscriptions on this test clock (`None`: on the deployment's
/// clock), whose time is `now` (docs/amendments.md, test clocks).
pub async fn remind(pool: &PgPool, clock: Option<Uuid>, now: DateTime<Utc>, limit: i64) -> crate::Result<usize> {
    let mut tx = pool.begin().await?;
    let due = sqlx::query!(
        r#"WITH due AS (
             SELECT l.id FROM payment_links l JOIN billing_cycles c ON c.id = l.billing_cycle_id
               JOIN subscriptions s ON s.id = c.subscription_id AND s.test_clock_id IS NOT DISTINCT FROM $3
             WHERE l.reminded_at IS NULL AND l.expired_at IS NULL AND l.remind_at <= $1 AND l.expires_at > $1
               AND c.status IN ('pending', 'retrying', 'failed', 'error')
             ORDER BY l.id LIMIT $2 FOR UPDATE OF l SKIP LOCKED)
           UPDATE payment_links l SET reminded_at = $1 FROM due WHERE l.id = due.id
           RETURNING l.id, l.merchant_id, l.billing_cycle_id, l.expires_at"#,
        now,
        limit,
        clock
    )
    .fetch_all(&mut *tx)
    .await?;
    let evs: Vec<NewEvent> = due
        .iter()
        .map(|r| {
            NewEvent::new(
                r.merchant_id,
                "billing_cycle",
                r.billing_cycle_id,
                "payment_link_reminder",
                json!({"paymentLinkId": r.id, "expiresAt": r.expires_at}),
                Actor::System,
            )
        })
        .collect();
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(due.len())
}

/// Close the links whose `expiresAt` has passed. An unpaid `pending` cycle becomes
/// `failed` with `link_expired` (its subscription `past_due`); then the grace period
/// and cancellation of docs/states.md#dunning apply. A link whose cycle has a payment
/// in flight waits for that payment's answer. One transaction per link: the link row
/// first, then its subscription and cycle (docs/lock-order.md).
pub async fn expire(pool: &PgPool, clock: Option<Uuid>, now: DateTime<Utc>, limit: i64) -> crate::Result<usize> {
    let candidates = sqlx::query_scalar!(
        "SELECT l.id FROM payment_links l JOIN billing_cycles c ON c.id = l.billing_cycle_id
           JOIN subscriptions s ON s.id = c.subscription_id AND s.test_clock_id IS NOT DISTINCT FROM $3
         WHERE l.expired_at IS NULL AND l.expires_at <= $1 ORDER BY l.expires_at, l.id LIMIT $2",
        now,
        limit,
        clock
    )
    .fetch_all(pool)
    .await?;
    let mut expired = 0;
    for id in candidates {
        let mut tx = pool.begin().await?;
        let link = sqlx::query!(
            "SELECT billing_cycle_id FROM payment_links WHERE id = $1 AND expired_at IS NULL AND expires_at <= $2
             FOR UPDATE SKIP LOCKED",
            id,
            now
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(link) = link else { continue };
        let Some((sub, cycle)) = locks::cycle(&mut tx, link.billing_cycle_id, None).await? else { continue };
        let in_flight = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM transactions WHERE billing_cycle_id = $1 AND status = 'pending') AS "e!""#,
            cycle.id
        )
        .fetch_one(&mut *tx)
        .await?;
        if in_flight {
            continue;
        }
        sqlx::query!("UPDATE payment_links SET expired_at = $2 WHERE id = $1", id, now).execute(&mut *tx).await?;
        let mut evs = Vec::new();
        let cause = cycle_state::Cause::LinkExpired;
        if cycle_state::permits(cause, cycle.status, CycleStatus::Failed) {
            let mut m = cycle_state::Move::new(&cycle, cause, CycleStatus::Failed, Actor::System)
                .extra(json!({"reason": LINK_EXPIRED, "paymentLinkId": id}));
            m.failure_code = Some(Some(LINK_EXPIRED.to_owned()));
            m.settled_at = Some(now);
            cycle_state::apply(&mut tx, &[m], &mut evs).await?;
            if sub.status == SubscriptionStatus::Active {
                crate::subscriptions::repo::set_status(&mut tx, sub.id, SubscriptionStatus::PastDue).await?;
                evs.push(NewEvent::new(
                    sub.merchant_id,
                    "subscription",
                    sub.id,
                    "status_changed",
                    json!({"from": "active", "to": "past_due", "reason": LINK_EXPIRED}),
                    Actor::System,
                ));
            }
        }
        events::record(&mut tx, &evs).await?;
        tx.commit().await?;
        expired += 1;
    }
    Ok(expired)
}
