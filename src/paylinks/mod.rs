//! Payment links (docs/payment-links.md): cycles of a `send_payment_link` subscription
//! are opened without a charge and get a link the customer pays on `/pay/<token>`.
//!
//! A link never charges on its own: paying it opens a `payment_link` attempt of the
//! cycle under the same locks and the same rule as every other attempt (one attempt in
//! flight per cycle, enforced by Postgres: docs/guarantees.md#one-attempt-in-flight-per-cycle),
//! and the engine charges it like any other.

pub mod sweep;

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use jobs::{ChargeTransaction, Job};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::billing::cycles::CycleStatus;
use crate::billing::transaction_state::{self, NewAttempt};
use crate::billing::transactions::TransactionKind;
use crate::billing::{cycle_state, locks};
use crate::checkout::token;
use crate::error::{Error, Result};
use crate::events::{Actor, NewEvent};

/// `daysUntilDue` when neither the subscription nor its plan gives one.
pub const DEFAULT_DAYS_UNTIL_DUE: i32 = 7;

/// The failure code of a cycle whose link expired unpaid.
pub const LINK_EXPIRED: &str = "link_expired";

/// How a subscription's cycles are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "collection_method", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    /// recur charges the subscription's payment method at each due time.
    ChargeAutomatically,
    /// recur sends a payment link at each due time; the customer pays it.
    SendPaymentLink,
}

static PUBLIC_URL: OnceLock<String> = OnceLock::new();

/// Set once per process from `RECUR_PUBLIC_URL` (docs/pages.md#urls): the base of
/// every link's URL, wherever the link is shown (API answers, webhook objects).
pub fn set_public_url(url: &str) {
    let _ = PUBLIC_URL.set(url.trim_end_matches('/').to_owned());
}

/// The URL of a link's page.
pub fn url_of(token: &str) -> String {
    let base = PUBLIC_URL.get().map(String::as_str).unwrap_or("http://127.0.0.1:8080");
    format!("{base}/pay/{token}")
}

/// One payment link row.
#[derive(Debug, Clone)]
pub struct Link {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub billing_cycle_id: Uuid,
    pub token: String,
    pub csrf_key: Vec<u8>,
    pub expires_at: DateTime<Utc>,
    pub remind_at: Option<DateTime<Utc>>,
    pub reminded_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A link as the merchant sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    /// Payable.
    Active,
    /// The cycle is settled: the link says "already paid".
    Paid,
    /// Past its `expiresAt`, or replaced by a fresh link.
    Expired,
    /// The cycle was cancelled with its subscription.
    Void,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    pub url: String,
    pub expires_at: DateTime<Utc>,
    pub status: LinkStatus,
}

impl Link {
    /// The link's status next to its cycle's.
    pub fn status(&self, cycle: CycleStatus) -> LinkStatus {
        match cycle {
            CycleStatus::Succeeded => LinkStatus::Paid,
            CycleStatus::Cancelled => LinkStatus::Void,
            _ if self.expired_at.is_some() => LinkStatus::Expired,
            _ => LinkStatus::Active,
        }
    }

    pub fn view(&self, cycle: CycleStatus) -> LinkView {
        LinkView { url: url_of(&self.token), expires_at: self.expires_at, status: self.status(cycle) }
    }
}

macro_rules! query_links {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Link,
            "SELECT id, merchant_id, billing_cycle_id, token, csrf_key, expires_at, remind_at, reminded_at, \
             expired_at, created_at FROM payment_links " + $tail
            $(, $arg)*
        )
    };
}

/// The latest link of each cycle that has one.
pub async fn latest_of(conn: &mut PgConnection, cycle_ids: &[Uuid]) -> Result<HashMap<Uuid, Link>> {
    if cycle_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows =
        query_links!("WHERE billing_cycle_id = ANY($1) ORDER BY billing_cycle_id, created_at DESC, id DESC", cycle_ids)
            .fetch_all(conn)
            .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for l in rows {
        out.entry(l.billing_cycle_id).or_insert(l);
    }
    Ok(out)
}

/// The collection method of each cycle's subscription.
pub async fn methods_of(conn: &mut PgConnection, cycle_ids: &[Uuid]) -> Result<HashMap<Uuid, CollectionMethod>> {
    if cycle_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT c.id, s.collection_method AS "method: CollectionMethod"
           FROM billing_cycles c JOIN subscriptions s ON s.id = c.subscription_id WHERE c.id = ANY($1)"#,
        cycle_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.method)).collect())
}

/// The frozen time of the test clock a cycle's subscription follows, if any: "now"
/// for its link is that, else the deployment's clock (docs/amendments.md, test clocks).
///
/// Callers read the deployment's clock before they hold a connection: the manual clock
/// reads Postgres itself, and a request holding one connection while it waits for a
/// second starves the pool under load.
pub async fn frozen_time(conn: &mut PgConnection, merchant_id: Uuid, cycle_id: Uuid) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "SELECT t.frozen_time FROM billing_cycles c JOIN subscriptions s ON s.id = c.subscription_id
            JOIN test_clocks t ON t.id = s.test_clock_id WHERE c.id = $1 AND c.merchant_id = $2",
        cycle_id,
        merchant_id
    )
    .fetch_optional(conn)
    .await?)
}

/// The link a page token opens. A string not shaped like a token is not looked up.
pub async fn by_token(conn: &mut PgConnection, raw: &str) -> Result<Option<Link>> {
    if !token::well_formed(raw) {
        return Ok(None);
    }
    Ok(query_links!("WHERE token_hash = $1", token::hash(raw)).fetch_optional(conn).await?)
}

/// A new link for a cycle the caller has just opened or holds locked.
pub struct NewLink {
    pub merchant_id: Uuid,
    pub billing_cycle_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The instant the link is issued at on the billing clock: no reminder for a link
    /// that lives a day or less.
    pub issued_at: DateTime<Utc>,
}

/// Insert links with their `payment_link_created` events (added to `evs`).
pub async fn insert(conn: &mut PgConnection, links: &[NewLink], actor: Actor, evs: &mut Vec<NewEvent>) -> Result<()> {
    if links.is_empty() {
        return Ok(());
    }
    let n = links.len();
    let (mut ids, mut merchants, mut cycles, mut tokens, mut hashes, mut keys, mut expires, mut reminds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<Option<DateTime<Utc>>>::with_capacity(n),
    );
    for l in links {
        let (t, h) = token::new_token();
        let id = Uuid::now_v7();
        let remind = l.expires_at - Duration::days(1);
        ids.push(id);
        merchants.push(l.merchant_id);
        cycles.push(l.billing_cycle_id);
        tokens.push(t);
        hashes.push(h);
        keys.push(token::random_key());
        expires.push(l.expires_at);
        reminds.push((remind > l.issued_at).then_some(remind));
        evs.push(NewEvent::new(
            l.merchant_id,
            "billing_cycle",
            l.billing_cycle_id,
            "payment_link_created",
            json!({"paymentLinkId": id, "expiresAt": l.expires_at}),
            actor,
        ));
    }
    sqlx::query!(
        "INSERT INTO payment_links (id, merchant_id, billing_cycle_id, token, token_hash, csrf_key, expires_at, remind_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bytea[], $6::bytea[],
            $7::timestamptz[], $8::timestamptz[])",
        &ids,
        &merchants,
        &cycles,
        &tokens,
        &hashes,
        &keys,
        &expires,
        &reminds as &[Option<DateTime<Utc>>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `POST /v1/billing-cycles/{id}/payment-link`: a fresh link for a `failed` or `error`
/// cycle of the merchant; earlier links of the cycle close. Returns the new link.
pub async fn fresh(conn: &mut PgConnection, merchant_id: Uuid, cycle_id: Uuid, now: DateTime<Utc>) -> Result<Link> {
    // Links come first in the lock order (docs/lock-order.md#payment-links): a page
    // paying one holds it while it waits for the subscription.
    sqlx::query!(
        "SELECT id FROM payment_links WHERE billing_cycle_id = $1 AND merchant_id = $2 ORDER BY id FOR UPDATE",
        cycle_id,
        merchant_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let (sub, cycle) =
        locks::cycle(conn, cycle_id, Some(merchant_id)).await?.ok_or(Error::NotFound("billing cycle"))?;
    if !matches!(cycle.status, CycleStatus::Failed | CycleStatus::Error) {
        return Err(Error::conflict(format!(
            "only failed or error cycles get a fresh payment link; this one is {}",
            status_name(cycle.status)
        )));
    }
    if sub.status.is_final() {
        return Err(Error::conflict(format!("the subscription is {}", sub.status.as_str())));
    }
    let days = sqlx::query_scalar!("SELECT days_until_due FROM subscriptions WHERE id = $1", sub.id)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query!(
        "UPDATE payment_links SET expired_at = $2 WHERE billing_cycle_id = $1 AND expired_at IS NULL",
        cycle_id,
        now
    )
    .execute(&mut *conn)
    .await?;
    let mut evs = Vec::new();
    let new = NewLink {
        merchant_id,
        billing_cycle_id: cycle_id,
        expires_at: now + Duration::days(i64::from(days)),
        issued_at: now,
    };
    insert(conn, std::slice::from_ref(&new), Actor::Merchant, &mut evs).await?;
    crate::events::record(conn, &evs).await?;
    latest_of(conn, &[cycle_id]).await?.remove(&cycle_id).ok_or(Error::NotFound("payment link"))
}

fn status_name(s: CycleStatus) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Where a link's cycle stands, as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayState {
    /// The form: the cycle can be paid. `declined`: the last link payment's decline.
    Payable { declined: Option<String> },
    /// A payment of the cycle is in flight (this page's, or any other channel's).
    Processing,
    /// The cycle is settled: "already paid".
    Paid,
    /// Past `expiresAt`, or replaced by a fresh link (410).
    Expired,
    /// The subscription was cancelled and the cycle with it (410).
    Closed,
}

/// What a page shows of the link's cycle.
#[derive(Debug, Clone)]
pub struct Due {
    pub cycle_id: Uuid,
    pub merchant_key: Uuid,
    pub merchant_name: String,
    pub customer_account_id: String,
    pub description: Option<String>,
    pub amount: rust_decimal::Decimal,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cycle_status: CycleStatus,
}

/// The link's cycle and its state at `now`, read on the caller's connection.
pub async fn state(conn: &mut PgConnection, link: &Link, now: DateTime<Utc>) -> Result<(Due, PayState)> {
    let r = sqlx::query!(
        r#"SELECT c.id, c.status AS "status: CycleStatus", c.amount, c.currency, c.period_start, c.period_end,
                  m.merchant_key, m.name AS merchant_name, cu.customer_account_id,
                  s.status AS "subscription_status: crate::subscriptions::SubscriptionStatus",
                  COALESCE(s.description, p.name) AS description,
                  EXISTS (SELECT 1 FROM transactions t WHERE t.billing_cycle_id = c.id AND t.status = 'pending')
                    AS "in_flight!",
                  (SELECT t.decline_code FROM transactions t WHERE t.billing_cycle_id = c.id
                     AND t.kind = 'payment_link' ORDER BY t.attempt DESC LIMIT 1) AS last_link_decline,
                  EXISTS (SELECT 1 FROM payment_links l WHERE l.billing_cycle_id = c.id AND l.created_at > $2
                    AND l.id <> $3) AS "replaced!"
           FROM billing_cycles c JOIN subscriptions s ON s.id = c.subscription_id
           JOIN merchants m ON m.id = c.merchant_id JOIN customers cu ON cu.id = s.customer_id
           LEFT JOIN plans p ON p.id = s.plan_id
           WHERE c.id = $1"#,
        link.billing_cycle_id,
        link.created_at,
        link.id,
    )
    .fetch_one(&mut *conn)
    .await?;
    let due = Due {
        cycle_id: r.id,
        merchant_key: r.merchant_key,
        merchant_name: r.merchant_name,
        customer_account_id: r.customer_account_id,
        description: r.description,
        amount: r.amount,
        currency: r.currency.trim().to_owned(),
        period_start: r.period_start,
        period_end: r.period_end,
        cycle_status: r.status,
    };
    let state = match r.status {
        CycleStatus::Succeeded => PayState::Paid,
        _ if r.in_flight => PayState::Processing,
        CycleStatus::Cancelled => PayState::Closed,
        _ if r.subscription_status.is_final() => PayState::Closed,
        _ if r.replaced || link.expired_at.is_some() || now >= link.expires_at => PayState::Expired,
        _ => PayState::Payable { declined: r.last_link_decline },
    };
    Ok((due, state))
}

/// The attempt a link payment opened, and the job that charges it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub transaction_id: Uuid,
    pub job: Job,
}

/// Pay a link with the gateway's token of the customer's card: lock the link, then
/// the subscription and the cycle (docs/lock-order.md), check under those locks that
/// the cycle is still payable, and open a `payment_link` attempt. Anything that is
/// not payable any more (paid, another payment in flight, expired) is a conflict that
/// names the state; Postgres refuses a second attempt in flight even if a writer
/// skipped the check (`transactions_one_pending_per_cycle`).
///
/// An `error` cycle's last attempt has an unknown outcome: the caller asks the
/// gateway about it first (`crate::billing::retry::errored_attempt`) and passes the
/// attempt it asked about as `errored_checked`; a different (newer) errored attempt
/// is a conflict, so no attempt opens beside one that may have gone through.
pub async fn open_payment(
    conn: &mut PgConnection,
    link_id: Uuid,
    payment_method: &str,
    errored_checked: Option<Uuid>,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> Result<Opened> {
    let link = query_links!("WHERE id = $1 FOR UPDATE", link_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound("payment link"))?;
    let (_, cycle) = locks::cycle(conn, link.billing_cycle_id, None).await?.ok_or(Error::NotFound("billing cycle"))?;
    let (_, st) = state(conn, &link, now).await?;
    match st {
        PayState::Payable { .. } => {}
        PayState::Paid => return Err(Error::conflict("the billing cycle is already paid")),
        PayState::Processing => return Err(Error::conflict("a payment of this billing cycle is in progress")),
        PayState::Expired => return Err(Error::conflict("the payment link has expired")),
        PayState::Closed => return Err(Error::conflict("the subscription was cancelled")),
    }
    if cycle.status == CycleStatus::Error {
        let errored = crate::billing::retry::errored_attempt(conn, cycle.merchant_id, cycle.id).await?.map(|(t, _)| t);
        if errored.is_some() && errored != errored_checked {
            return Err(Error::conflict("the outcome of an earlier attempt is being checked; try again"));
        }
    }
    let attempt = NewAttempt {
        id: Uuid::now_v7(),
        merchant_id: cycle.merchant_id,
        billing_cycle_id: cycle.id,
        kind: TransactionKind::PaymentLink,
        amount: cycle.amount,
        currency: cycle.currency.clone(),
        payment_method: payment_method.to_owned(),
        attempt: cycle.attempts + 1,
    };
    transaction_state::open(conn, std::slice::from_ref(&attempt), lease_secs).await?;
    let mut evs = vec![transaction_state::created_event(
        &attempt,
        json!({"billingCycleId": cycle.id, "kind": "payment_link", "attempt": attempt.attempt, "paymentLinkId": link.id}),
        Actor::Customer,
    )];
    match cycle.status {
        CycleStatus::Failed | CycleStatus::Error => {
            let mut m =
                cycle_state::Move::new(&cycle, cycle_state::Cause::LinkPayment, CycleStatus::Retrying, Actor::Customer)
                    .extra(json!({"paymentLink": true}));
            m.attempts = Some(attempt.attempt);
            cycle_state::apply(conn, &[m], &mut evs).await?;
        }
        // A pending or retrying cycle keeps its status; the attempt count grows and a
        // scheduled retry waits for this payment's answer.
        _ => cycle_state::open_attempt(conn, cycle.id, attempt.attempt).await?,
    }
    crate::events::record(conn, &evs).await?;
    Ok(Opened {
        transaction_id: attempt.id,
        job: Job::ChargeTransaction(ChargeTransaction { transaction_id: attempt.id, attempt: 0 }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(expired: bool) -> Link {
        Link {
            id: Uuid::now_v7(),
            merchant_id: Uuid::now_v7(),
            billing_cycle_id: Uuid::now_v7(),
            token: "t".into(),
            csrf_key: vec![],
            expires_at: Utc::now(),
            remind_at: None,
            reminded_at: None,
            expired_at: expired.then(Utc::now),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_settled_cycle_makes_its_link_paid_whatever_the_link_says() {
        assert_eq!(link(true).status(CycleStatus::Succeeded), LinkStatus::Paid);
        assert_eq!(link(false).status(CycleStatus::Succeeded), LinkStatus::Paid);
        assert_eq!(link(false).status(CycleStatus::Cancelled), LinkStatus::Void);
        assert_eq!(link(true).status(CycleStatus::Failed), LinkStatus::Expired);
        assert_eq!(link(false).status(CycleStatus::Pending), LinkStatus::Active);
    }
}
