//! Checkout sessions (docs/pages.md#the-checkout): a single-use, expiring page on which
//! a customer gives the card of one subscription or payment series. The page handlers
//! (`pages::checkout`) and the API (`api::checkout`) both go through these functions.
//!
//! A session is `open` until its card is attached and, when attaching made a first
//! charge due, that charge succeeds; then `complete`. Five refused cards (invalid,
//! refused by the gateway, or declined) make it `locked`. An open session past its
//! `expiresAt` is shown as `expired`; that status is never stored.

pub mod token;

use chrono::{DateTime, Duration, Utc};
use jobs::Job;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::billing::CycleStatus;
use crate::cards::Kept;
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::series::SeriesStatus;
use crate::subscriptions::{SubscriptionChanges, SubscriptionStatus, lifecycle, repo as subscriptions};

/// Refused cards after which a session is locked (card-testing defence).
pub const MAX_REFUSED_CARDS: i32 = 5;
/// `expiresInSeconds` bounds and default.
pub const MIN_EXPIRY_SECS: i64 = 1800;
pub const MAX_EXPIRY_SECS: i64 = 86_400;
/// How long after completion the page still shows the success (and redirects);
/// afterwards the used link answers 410.
pub const SHOW_COMPLETE_FOR: Duration = Duration::minutes(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "checkout_session_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StoredStatus {
    Open,
    Complete,
    Locked,
}

/// The status the API shows: the stored one, or `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Open,
    Complete,
    Expired,
    Locked,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub csrf_key: Vec<u8>,
    pub subscription_id: Option<Uuid>,
    pub payment_series_id: Option<Uuid>,
    pub return_url: Option<String>,
    pub status: StoredStatus,
    pub expires_at: DateTime<Utc>,
    pub refused_cards: i32,
    pub payment_method: Option<String>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub card_exp_month: Option<i16>,
    pub card_exp_year: Option<i16>,
    pub attached_at: Option<DateTime<Utc>>,
    pub awaiting_sequence: Option<i32>,
    pub awaiting_after: i32,
    pub counted_decline: Option<Uuid>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Session {
    pub fn status_at(&self, now: DateTime<Utc>) -> SessionStatus {
        match self.status {
            StoredStatus::Complete => SessionStatus::Complete,
            StoredStatus::Locked => SessionStatus::Locked,
            // A session waiting for its first charge's outcome runs to the end of it;
            // after a decline the form closes at expiresAt as before.
            StoredStatus::Open if !self.charging() && self.expires_at <= now => SessionStatus::Expired,
            StoredStatus::Open => SessionStatus::Open,
        }
    }

    /// Whether the page waits for a charge of the card it attached (not yet declined).
    fn charging(&self) -> bool {
        self.awaiting_sequence.is_some() && self.counted_decline.is_none()
    }

    pub fn card(&self) -> Option<Kept> {
        match (&self.card_brand, &self.card_last4, self.card_exp_month, self.card_exp_year) {
            (Some(brand), Some(last4), Some(exp_month), Some(exp_year)) => {
                Some(Kept { brand: brand.clone(), last4: last4.clone(), exp_month, exp_year })
            }
            _ => None,
        }
    }

    /// Where the customer goes once done: `returnUrl?checkout_session=<id>&status=complete`.
    pub fn return_to(&self) -> Option<String> {
        let mut url = url::Url::parse(self.return_url.as_deref()?).ok()?;
        url.query_pairs_mut().append_pair("checkout_session", &self.id.to_string()).append_pair("status", "complete");
        Some(url.into())
    }
}

/// A session as the API shows it. `token` and `url` only in the creation's answer:
/// the token is not stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub status: SessionStatus,
    pub subscription_id: Option<Uuid>,
    pub payment_series_id: Option<Uuid>,
    pub return_url: Option<String>,
    /// Brand, last 4 and expiry of the card given on the page.
    pub payment_method: Option<Kept>,
    pub refused_cards: i32,
    pub expires_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl SessionView {
    pub fn of(s: &Session, now: DateTime<Utc>) -> SessionView {
        SessionView {
            id: s.id,
            token: None,
            url: None,
            status: s.status_at(now),
            subscription_id: s.subscription_id,
            payment_series_id: s.payment_series_id,
            return_url: s.return_url.clone(),
            payment_method: s.card(),
            refused_cards: s.refused_cards,
            expires_at: s.expires_at,
            completed_at: s.completed_at,
            created_at: s.created_at,
        }
    }
}

/// `POST /v1/checkout-sessions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    /// A `pending` subscription (collects its first card) or any non-final one
    /// (replaces its card); or give `paymentSeriesId`.
    pub subscription_id: Option<Uuid>,
    /// A `pending` or `active` payment series.
    pub payment_series_id: Option<Uuid>,
    /// Where the customer is sent once done (`http` or `https`).
    pub return_url: Option<String>,
    /// 1800–86400, default 86400.
    pub expires_in_seconds: Option<i64>,
}

/// A checked `CreateSession`.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub owner: Owner,
    pub return_url: Option<String>,
    pub expires_in: Duration,
}

#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Subscription(Uuid),
    Series(Uuid),
}

impl CreateSession {
    pub fn validate(self) -> Result<NewSession> {
        let mut e = Vec::new();
        let owner = match (self.subscription_id, self.payment_series_id) {
            (Some(s), None) => Some(Owner::Subscription(s)),
            (None, Some(p)) => Some(Owner::Series(p)),
            (Some(_), Some(_)) => {
                e.push(FieldError::new("subscriptionId", "give subscriptionId or paymentSeriesId, not both"));
                e.push(FieldError::new("paymentSeriesId", "give subscriptionId or paymentSeriesId, not both"));
                None
            }
            (None, None) => {
                e.push(FieldError::new("subscriptionId", "is required (or paymentSeriesId)"));
                None
            }
        };
        check_return_url(&mut e, self.return_url.as_deref());
        let secs = self.expires_in_seconds.unwrap_or(MAX_EXPIRY_SECS);
        if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&secs) {
            e.push(FieldError::new(
                "expiresInSeconds",
                format!("must be between {MIN_EXPIRY_SECS} and {MAX_EXPIRY_SECS}"),
            ));
        }
        crate::validate::finish(e)?;
        let owner = owner.ok_or_else(|| Error::validation("subscriptionId", "is required"))?;
        Ok(NewSession { owner, return_url: self.return_url, expires_in: Duration::seconds(secs) })
    }
}

/// `returnUrl`: an absolute `http` or `https` URL of at most 2048 characters, without
/// control characters (stored and sent back as given).
pub fn check_return_url(e: &mut Vec<FieldError>, url: Option<&str>) {
    let Some(u) = url else { return };
    let ok = u.len() <= 2048
        && !u.chars().any(char::is_control)
        && url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
    if !ok {
        e.push(FieldError::new("returnUrl", "must be an absolute http or https URL of at most 2048 characters"));
    }
}

macro_rules! query_sessions {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Session,
            r#"SELECT id, merchant_id, csrf_key, subscription_id, payment_series_id, return_url,
                status AS "status: StoredStatus", expires_at, refused_cards, payment_method, card_brand, card_last4,
                card_exp_month, card_exp_year, attached_at, awaiting_sequence, awaiting_after, counted_decline, completed_at, created_at
             FROM checkout_sessions "# + $tail
            $(, $arg)*
        )
    };
}

/// The merchant's session `id` (404 for another merchant's, as for a missing one).
pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Session> {
    query_sessions!("WHERE id = $1 AND merchant_id = $2", id, merchant_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("checkout session"))
}

/// The session a page token opens; `None` for any other string.
pub async fn by_token(conn: &mut PgConnection, raw: &str) -> Result<Option<Session>> {
    if !token::well_formed(raw) {
        return Ok(None);
    }
    Ok(query_sessions!("WHERE token_hash = $1", token::hash(raw)).fetch_optional(conn).await?)
}

async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Session> {
    query_sessions!("WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("checkout session"))
}

fn event(s: &Session, kind: &'static str, data: serde_json::Value, actor: Actor) -> NewEvent {
    NewEvent::new(s.merchant_id, "checkout_session", s.id, kind, data, actor)
}

/// Create a session; returns it with its token (shown once).
pub async fn create(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    n: NewSession,
    now: DateTime<Utc>,
) -> Result<(Session, String)> {
    create_as(conn, merchant_id, n, now, Actor::Merchant).await
}

/// `create`, asked by `actor` (a customer replacing a card in the portal).
pub async fn create_as(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    n: NewSession,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<(Session, String)> {
    // How many a merchant may create is the API's business (docs/operations.md#rate-limits):
    // the checkout_sessions bucket, drawn before this runs, for the merchant and the portal alike.
    let (subscription_id, payment_series_id) = match n.owner {
        Owner::Subscription(id) => {
            let s = match subscriptions::get(conn, merchant_id, id).await {
                Err(Error::NotFound(_)) => return Err(Error::validation("subscriptionId", "no such subscription")),
                other => other?,
            };
            if s.status.is_final() {
                return Err(Error::conflict(format!("a {} subscription cannot get a card", s.status.as_str())));
            }
            (Some(id), None)
        }
        Owner::Series(id) => {
            let s = match crate::series::get(conn, merchant_id, id).await {
                Err(Error::NotFound(_)) => return Err(Error::validation("paymentSeriesId", "no such payment series")),
                other => other?,
            };
            if !matches!(s.status, SeriesStatus::Pending | SeriesStatus::Active) {
                return Err(Error::conflict(format!("a {} payment series cannot get a card", s.status.as_str())));
            }
            (None, Some(id))
        }
    };
    let (raw, hash) = token::new_token();
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO checkout_sessions (id, merchant_id, token_hash, csrf_key, subscription_id, payment_series_id,
             return_url, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id,
        merchant_id,
        hash,
        token::random_key(),
        subscription_id,
        payment_series_id,
        n.return_url,
        now + n.expires_in,
    )
    .execute(&mut *conn)
    .await?;
    let s = get(conn, merchant_id, id).await?;
    let data = json!({"subscriptionId": subscription_id, "paymentSeriesId": payment_series_id,
        "returnUrl": s.return_url, "expiresAt": s.expires_at});
    events::record_one(conn, event(&s, "created", data, actor)).await?;
    Ok((s, raw))
}

/// Count one refused card (never the card itself: only why). The fifth locks the session.
pub async fn refuse(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<Session> {
    let s = lock(conn, id).await?;
    if s.status != StoredStatus::Open {
        return Ok(s);
    }
    let refused = s.refused_cards + 1;
    let locked = refused >= MAX_REFUSED_CARDS;
    sqlx::query!(
        "UPDATE checkout_sessions SET refused_cards = $2, status = $3 WHERE id = $1",
        id,
        refused,
        if locked { StoredStatus::Locked } else { StoredStatus::Open } as _,
    )
    .execute(&mut *conn)
    .await?;
    metrics::counter!("recur_checkout_cards_refused_total", "reason" => metric_reason(reason)).increment(1);
    let mut evs = vec![event(&s, "card_refused", json!({"reason": reason, "refusedCards": refused}), Actor::Customer)];
    if locked {
        evs.push(event(&s, "locked", json!({"refusedCards": refused}), Actor::System));
    }
    events::record(conn, &evs).await?;
    lock(conn, id).await
}

/// A bounded label for a refusal reason (declines carry their code).
fn metric_reason(reason: &str) -> &'static str {
    match reason {
        "invalid_number" => "invalid_number",
        "invalid_expiry" => "invalid_expiry",
        "invalid_cvc" => "invalid_cvc",
        "refused_by_gateway" => "refused_by_gateway",
        r if r.starts_with("declined") => "declined",
        _ => "invalid_card",
    }
}

/// What attaching a card did.
pub struct Attached {
    pub session: Session,
    pub jobs: Vec<Job>,
}

/// Attach a tokenized card to the session's subscription or series, as the customer.
/// When that makes a first charge due (a `pending` subscription without a trial) the
/// session waits for its outcome; when it gives a declined cycle a new card, the
/// cycle is charged again now; otherwise the session is complete.
pub async fn attach(
    conn: &mut PgConnection,
    id: Uuid,
    payment_method: &str,
    card: &Kept,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> Result<Attached> {
    let s = lock(conn, id).await?;
    match s.status_at(now) {
        SessionStatus::Open => {}
        other => return Err(Error::conflict(format!("the checkout session is {}", json!(other)))),
    }
    if s.charging() {
        return Err(Error::conflict("the first charge of this checkout is still being processed"));
    }
    let mut jobs = Vec::new();
    let (mut awaiting, mut after) = (None, 0);
    if let Some(sub_id) = s.subscription_id {
        let before = subscriptions::get(conn, s.merchant_id, sub_id).await?;
        let changes = SubscriptionChanges { payment_method: Some(payment_method.to_owned()), ..Default::default() };
        let c = lifecycle::update_by(conn, s.merchant_id, sub_id, changes, Some(card), now, Actor::Customer).await?;
        if !c.jobs.is_empty() {
            crate::lease::stamp_subscription(conn, sub_id, lease_secs).await?;
        }
        if before.status == SubscriptionStatus::Pending && c.jobs.iter().any(|j| matches!(j, Job::GenerateCycle(_))) {
            awaiting = Some(before.next_sequence);
        }
        jobs.extend(c.jobs);
        // A card given after a declined first charge is charged again now.
        if let Some(seq) = s.awaiting_sequence
            && let Some(cycle) = cycle_of(conn, sub_id, seq, 0).await?
        {
            let retry = match cycle.status {
                CycleStatus::Retrying => {
                    crate::billing::retry::bring_forward(conn, s.merchant_id, cycle.id, now, Actor::Customer).await?
                }
                CycleStatus::Failed => {
                    let (_, job) = crate::billing::retry::manual_by(
                        conn,
                        s.merchant_id,
                        cycle.id,
                        lease_secs,
                        now,
                        Actor::Customer,
                    )
                    .await?;
                    Some(job)
                }
                _ => None,
            };
            if let Some(job) = retry {
                jobs.push(job);
                (awaiting, after) = (Some(seq), cycle.attempts);
            }
        }
    } else if let Some(series_id) = s.payment_series_id {
        crate::series::replace_payment_method(conn, s.merchant_id, series_id, payment_method, card, Actor::Customer)
            .await?;
    }
    sqlx::query!(
        "UPDATE checkout_sessions SET payment_method = $2, card_brand = $3, card_last4 = $4, card_exp_month = $5,
             card_exp_year = $6, attached_at = $7, awaiting_sequence = $8, awaiting_after = $9, counted_decline = NULL
         WHERE id = $1",
        id,
        payment_method,
        card.brand,
        card.last4,
        card.exp_month,
        card.exp_year,
        now,
        awaiting,
        after,
    )
    .execute(&mut *conn)
    .await?;
    let mut evs = vec![event(&s, "payment_method_attached", json!({"paymentMethod": card}), Actor::Customer)];
    if awaiting.is_none() {
        complete(conn, &s, now, &mut evs).await?;
    }
    events::record(conn, &evs).await?;
    Ok(Attached { session: lock(conn, id).await?, jobs })
}

async fn complete(conn: &mut PgConnection, s: &Session, now: DateTime<Utc>, evs: &mut Vec<NewEvent>) -> Result<()> {
    sqlx::query!(
        "UPDATE checkout_sessions SET status = 'complete', completed_at = $2 WHERE id = $1 AND status = 'open'",
        s.id,
        now
    )
    .execute(&mut *conn)
    .await?;
    metrics::counter!("recur_checkout_sessions_completed_total").increment(1);
    let data = json!({"subscriptionId": s.subscription_id, "paymentSeriesId": s.payment_series_id});
    evs.push(event(s, "completed", data, Actor::Customer));
    Ok(())
}

/// A cycle and its latest attempt after `after` (the attempts of the card attached last).
struct CycleOutcome {
    id: Uuid,
    status: CycleStatus,
    attempts: i32,
    last_transaction: Option<Uuid>,
    last_status: Option<String>,
    decline_code: Option<String>,
}

async fn cycle_of(
    conn: &mut PgConnection,
    subscription_id: Uuid,
    sequence: i32,
    after: i32,
) -> Result<Option<CycleOutcome>> {
    Ok(sqlx::query_as!(
        CycleOutcome,
        r#"SELECT c.id, c.status AS "status: CycleStatus", c.attempts, t.id AS "last_transaction?",
               t.status::text AS last_status, t.decline_code
           FROM billing_cycles c
           LEFT JOIN LATERAL (SELECT id, status, decline_code FROM transactions
                              WHERE billing_cycle_id = c.id AND attempt > $3
                              ORDER BY attempt DESC LIMIT 1) t ON true
           WHERE c.subscription_id = $1 AND c.sequence = $2"#,
        subscription_id,
        sequence,
        after,
    )
    .fetch_optional(conn)
    .await?)
}

/// Where a session's page stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The card form; `declined`: the last card's first charge was declined (its code).
    Form {
        declined: Option<String>,
    },
    /// The first charge is being made.
    Processing,
    /// The subscription or series can no longer get a card (the merchant cancelled
    /// it meanwhile): the page says so with 410.
    Closed,
    /// The first charge was declined and the subscription cancelled (a hard decline
    /// without a grace period: docs/pages.md#the-checkout): no card can help now.
    Failed {
        declined: String,
    },
    Complete,
    Expired,
    Locked,
}

/// The page's state, moving the session on when its first charge has settled: an
/// approved charge completes it, a decline counts as a refused card (once) and
/// brings the form back.
pub async fn progress(conn: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<(Session, Progress)> {
    let s = lock(conn, id).await?;
    let status = s.status_at(now);
    let (Some(seq), Some(sub_id), SessionStatus::Open) = (s.awaiting_sequence, s.subscription_id, status) else {
        let p = match status {
            SessionStatus::Open if !owner_takes_cards(conn, &s).await? => Progress::Closed,
            SessionStatus::Open => Progress::Form { declined: None },
            SessionStatus::Complete => Progress::Complete,
            SessionStatus::Expired => Progress::Expired,
            SessionStatus::Locked => Progress::Locked,
        };
        return Ok((s, p));
    };
    let Some(cycle) = cycle_of(conn, sub_id, seq, s.awaiting_after).await? else {
        return Ok((s, Progress::Processing));
    };
    if cycle.status == CycleStatus::Succeeded {
        let mut evs = Vec::new();
        complete(conn, &s, now, &mut evs).await?;
        events::record(conn, &evs).await?;
        return Ok((lock(conn, id).await?, Progress::Complete));
    }
    let declined = matches!(cycle.status, CycleStatus::Retrying | CycleStatus::Failed)
        && cycle.last_status.as_deref() == Some("declined");
    let Some(txn) = cycle.last_transaction.filter(|_| declined) else {
        // Not charged yet, an attempt in flight, or a technical failure the engine retries.
        return Ok((s, Progress::Processing));
    };
    let code = cycle.decline_code.unwrap_or_else(|| "declined".into());
    let after_decline = |s: Session, code: String, cancelled: bool| {
        if cancelled { (s, Progress::Failed { declined: code }) } else { (s, Progress::Form { declined: Some(code) }) }
    };
    let cancelled = subscriptions::get(conn, s.merchant_id, sub_id).await?.status.is_final();
    if s.counted_decline == Some(txn) {
        return Ok(after_decline(s, code, cancelled));
    }
    sqlx::query!("UPDATE checkout_sessions SET counted_decline = $2 WHERE id = $1", id, txn)
        .execute(&mut *conn)
        .await?;
    let s = refuse(conn, id, &format!("declined:{code}")).await?;
    if s.status == StoredStatus::Locked {
        return Ok((s, Progress::Locked));
    }
    Ok(after_decline(s, code, cancelled))
}

/// Whether the session's subscription or series can still get a card.
async fn owner_takes_cards(conn: &mut PgConnection, s: &Session) -> Result<bool> {
    if let Some(id) = s.subscription_id {
        return Ok(!subscriptions::get(conn, s.merchant_id, id).await?.status.is_final());
    }
    match s.payment_series_id {
        Some(id) => Ok(matches!(
            crate::series::get(conn, s.merchant_id, id).await?.status,
            SeriesStatus::Pending | SeriesStatus::Active
        )),
        None => Ok(false),
    }
}

/// A new token for an open session (the replay of its creation: docs/pages.md#tokens).
pub async fn reissue_token(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let s = get(conn, merchant_id, id).await?;
    if s.status_at(now) != SessionStatus::Open || s.attached_at.is_some() {
        return Ok(None);
    }
    let (raw, hash) = token::new_token();
    sqlx::query!("UPDATE checkout_sessions SET token_hash = $2 WHERE id = $1", id, hash).execute(&mut *conn).await?;
    events::record_one(conn, event(&s, "token_reissued", json!({}), Actor::Merchant)).await?;
    Ok(Some(raw))
}

/// What the checkout page shows about what is bought (docs/pages.md#the-checkout).
#[derive(Debug, Clone)]
pub struct Summary {
    pub merchant_name: String,
    pub description: Option<String>,
    /// `None` for a payment series (no fixed amount).
    pub amount: Option<(rust_decimal::Decimal, String)>,
    pub interval: Option<crate::billing::calendar::Interval>,
    pub trial_days: Option<i32>,
    /// When the first charge is made, for a subscription that has none yet.
    pub first_charge_at: Option<DateTime<Utc>>,
    /// The card on file now (replacing a card).
    pub current_card: Option<Kept>,
    pub customer_account_id: String,
}

pub async fn summary(conn: &mut PgConnection, s: &Session, now: DateTime<Utc>) -> Result<Summary> {
    let merchant_name =
        sqlx::query_scalar!("SELECT name FROM merchants WHERE id = $1", s.merchant_id).fetch_one(&mut *conn).await?;
    if let Some(id) = s.subscription_id {
        let sub = subscriptions::get(conn, s.merchant_id, id).await?;
        let plan_name = match sub.plan_id {
            Some(p) => crate::plans::repo::get(conn, s.merchant_id, p).await.ok().map(|p| p.name),
            None => None,
        };
        let first_charge_at = (sub.status == SubscriptionStatus::Pending).then(|| match sub.trial_days {
            Some(d) if d > 0 => sub.trial_end_at.unwrap_or(sub.start_at + Duration::days(d as i64)),
            _ => sub.start_at.max(now),
        });
        return Ok(Summary {
            merchant_name,
            description: sub.description.clone().or(plan_name),
            amount: Some((sub.amount, sub.currency.clone())),
            interval: Some(sub.interval()),
            trial_days: sub.trial_days.filter(|d| *d > 0 && sub.status == SubscriptionStatus::Pending),
            first_charge_at,
            current_card: sub.card(),
            customer_account_id: sub.customer_account_id,
        });
    }
    let id = s.payment_series_id.ok_or(Error::NotFound("checkout session"))?;
    let series = crate::series::get(conn, s.merchant_id, id).await?;
    Ok(Summary {
        merchant_name,
        description: series.description.clone(),
        amount: None,
        interval: None,
        trial_days: None,
        first_charge_at: None,
        current_card: None,
        customer_account_id: series.customer_account_id,
    })
}

/// `GET /v1/checkout-sessions` filters.
#[derive(Debug, Default)]
pub struct SessionFilter {
    pub subscription_id: Option<Uuid>,
    pub payment_series_id: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// The merchant's sessions, in id (creation) order.
pub async fn list(conn: &mut PgConnection, merchant_id: Uuid, f: &SessionFilter) -> Result<Vec<Session>> {
    Ok(query_sessions!(
        "WHERE merchant_id = $1 AND ($2::uuid IS NULL OR subscription_id = $2)
           AND ($3::uuid IS NULL OR payment_series_id = $3) AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5",
        merchant_id,
        f.subscription_id,
        f.payment_series_id,
        f.after,
        f.limit,
    )
    .fetch_all(conn)
    .await?)
}
