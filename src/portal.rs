//! The customer portal (docs/pages.md#the-portal): customer sessions, and the actions a
//! customer may take on their own subscriptions. Each action is the same lifecycle
//! function the API uses, with the actor `customer`; the page handlers
//! (`pages::portal`) only read forms and render.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use jobs::Job;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkout::token;
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::settings::PortalSettings;
use crate::subscriptions::{Subscription, SubscriptionChanges, lifecycle, repo as subscriptions};

pub const MIN_EXPIRY_SECS: i64 = 300;
pub const MAX_EXPIRY_SECS: i64 = 86_400;
pub const DEFAULT_EXPIRY_SECS: i64 = 3600;

/// Why a customer cancels: the list the portal offers.
pub const CANCEL_REASONS: &[(&str, &str)] = &[
    ("too_expensive", "It costs too much"),
    ("not_using", "I don't use it enough"),
    ("missing_features", "It lacks something I need"),
    ("switching_service", "I'm switching to another service"),
    ("other", "Another reason"),
];

#[derive(Debug, Clone)]
pub struct CustomerSession {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub customer_id: Uuid,
    pub customer_account_id: String,
    pub csrf_key: Vec<u8>,
    pub return_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/customer-sessions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCustomerSession {
    pub customer_account_id: String,
    /// Where the portal's "back" link leads (`http` or `https`).
    pub return_url: Option<String>,
    /// 300–86400, default 3600.
    pub expires_in_seconds: Option<i64>,
}

/// The answer of `POST /v1/customer-sessions`: the token is shown here only.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSessionView {
    pub id: Uuid,
    pub customer_account_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub return_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl CustomerSessionView {
    pub fn of(s: &CustomerSession) -> CustomerSessionView {
        CustomerSessionView {
            id: s.id,
            customer_account_id: s.customer_account_id.clone(),
            token: None,
            url: None,
            return_url: s.return_url.clone(),
            expires_at: s.expires_at,
            created_at: s.created_at,
        }
    }
}

impl CreateCustomerSession {
    pub fn validate(&self) -> Result<Duration> {
        let mut e = Vec::new();
        crate::validate::text(&mut e, "customerAccountId", &self.customer_account_id, 1, 255);
        crate::checkout::check_return_url(&mut e, self.return_url.as_deref());
        let secs = self.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECS);
        if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&secs) {
            e.push(FieldError::new(
                "expiresInSeconds",
                format!("must be between {MIN_EXPIRY_SECS} and {MAX_EXPIRY_SECS}"),
            ));
        }
        crate::validate::finish(e)?;
        Ok(Duration::seconds(secs))
    }
}

macro_rules! query_sessions {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            CustomerSession,
            r#"SELECT s.id, s.merchant_id, s.customer_id, c.customer_account_id, s.csrf_key, s.return_url,
                s.expires_at, s.created_at
             FROM customer_sessions s JOIN customers c ON c.id = s.customer_id "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<CustomerSession> {
    query_sessions!("WHERE s.id = $1 AND s.merchant_id = $2", id, merchant_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("customer session"))
}

/// The session a portal token opens (expired or not); `None` for any other string.
pub async fn by_token(conn: &mut PgConnection, raw: &str) -> Result<Option<CustomerSession>> {
    if !token::well_formed(raw) {
        return Ok(None);
    }
    Ok(query_sessions!("WHERE s.token_hash = $1", token::hash(raw)).fetch_optional(conn).await?)
}

/// Create a session for one of the merchant's customers; returns it with its token.
pub async fn create(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    req: &CreateCustomerSession,
    expires_in: Duration,
    now: DateTime<Utc>,
) -> Result<(CustomerSession, String)> {
    // How many a merchant may create is limited by the API (docs/operations.md#rate-limits).
    let customer = sqlx::query_scalar!(
        "SELECT id FROM customers WHERE merchant_id = $1 AND customer_account_id = $2",
        merchant_id,
        req.customer_account_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::validation("customerAccountId", "no such customer"))?;
    let (raw, hash) = token::new_token();
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO customer_sessions (id, merchant_id, customer_id, token_hash, csrf_key, return_url, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        merchant_id,
        customer,
        hash,
        token::random_key(),
        req.return_url,
        now + expires_in,
    )
    .execute(&mut *conn)
    .await?;
    let data = json!({"customerAccountId": req.customer_account_id, "expiresAt": now + expires_in});
    events::record_one(conn, NewEvent::new(merchant_id, "customer_session", id, "created", data, Actor::Merchant))
        .await?;
    Ok((get(conn, merchant_id, id).await?, raw))
}

/// A new token for a session still valid (the replay of its creation).
pub async fn reissue_token(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let s = get(conn, merchant_id, id).await?;
    if s.expires_at <= now {
        return Ok(None);
    }
    let (raw, hash) = token::new_token();
    sqlx::query!("UPDATE customer_sessions SET token_hash = $2 WHERE id = $1", id, hash).execute(&mut *conn).await?;
    let ev = NewEvent::new(merchant_id, "customer_session", id, "token_reissued", json!({}), Actor::Merchant);
    events::record_one(conn, ev).await?;
    Ok(Some(raw))
}

/// The customer's subscriptions with this merchant, oldest first.
pub async fn subscriptions_of(conn: &mut PgConnection, s: &CustomerSession) -> Result<Vec<Subscription>> {
    let f = subscriptions::SubscriptionFilter {
        status: None,
        customer_account_id: Some(s.customer_account_id.clone()),
        plan_id: None,
        after: None,
        limit: 100,
    };
    subscriptions::list(conn, s.merchant_id, &f).await
}

/// One action of the portal, as the form sent it.
#[derive(Debug, Clone)]
pub enum Action {
    Pause { resume_on: Option<NaiveDate> },
    Resume,
    Cancel { at_period_end: bool, reason: String },
    AuthorizedLimit { amount: Option<String> },
    SwitchPlan { plan_id: Uuid },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Pause { .. } => "pause",
            Action::Resume => "resume",
            Action::Cancel { at_period_end: false, .. } => "cancel",
            Action::Cancel { at_period_end: true, .. } => "cancel_at_period_end",
            Action::AuthorizedLimit { .. } => "authorized_limit",
            Action::SwitchPlan { .. } => "switch_plan",
        }
    }

    /// Whether the merchant offers this action (resume goes with pause).
    pub fn enabled(&self, p: &PortalSettings) -> bool {
        match self {
            Action::Pause { .. } | Action::Resume => p.pause,
            Action::Cancel { at_period_end: false, .. } => p.cancel,
            Action::Cancel { at_period_end: true, .. } => p.cancel_at_period_end,
            Action::AuthorizedLimit { .. } => p.update_authorized_limit,
            Action::SwitchPlan { plan_id } => p.switch_plan && p.switchable_plan_ids.contains(plan_id),
        }
    }
}

/// Whether the merchant lets customers replace their card here.
pub fn replaces_cards(p: &PortalSettings) -> bool {
    p.update_payment_method
}

/// Do `action` on the customer's subscription `subscription_id`, as the customer.
/// A subscription of another customer or merchant is not found. Returns the jobs to
/// enqueue after commit.
pub async fn act(
    conn: &mut PgConnection,
    s: &CustomerSession,
    settings: &PortalSettings,
    subscription_id: Uuid,
    action: Action,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Job>> {
    let sub = subscriptions::get(conn, s.merchant_id, subscription_id).await?;
    if sub.customer_id != s.customer_id {
        return Err(Error::NotFound("subscription"));
    }
    if !action.enabled(settings) {
        return Err(Error::conflict(format!("the merchant does not offer {} in the portal", action.name())));
    }
    // A sandbox subscription on a test clock acts at the clock's time
    // (docs/api.md#test-clocks); the session's own expiry stays on the deployment's clock.
    let now = match sub.test_clock_id {
        Some(_) => crate::test_clocks::frozen_of_subscription(conn, sub.id).await?.unwrap_or(now),
        None => now,
    };
    let c = Actor::Customer;
    let changed = match action {
        Action::Pause { resume_on } => {
            let resume_at = resume_on.and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
            lifecycle::pause_by(conn, s.merchant_id, sub.id, resume_at, now, c).await?
        }
        Action::Resume => lifecycle::resume_by(conn, s.merchant_id, sub.id, now, c).await?,
        Action::Cancel { at_period_end, reason } => {
            if !CANCEL_REASONS.iter().any(|(r, _)| *r == reason) {
                return Err(Error::validation("reason", "choose a reason from the list"));
            }
            lifecycle::cancel_by(conn, s.merchant_id, sub.id, at_period_end, &reason, now, c).await?
        }
        Action::AuthorizedLimit { amount } => {
            let amount = amount.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
            let changes = SubscriptionChanges {
                authorized_limit: Some(amount.map(crate::money::AmountInput)),
                ..Default::default()
            };
            lifecycle::update_by(conn, s.merchant_id, sub.id, changes, None, now, c).await?
        }
        Action::SwitchPlan { plan_id } => {
            let plan = crate::plans::repo::get(conn, s.merchant_id, plan_id).await?;
            if plan.status != crate::plans::PlanStatus::Active {
                return Err(Error::validation("planId", "the plan is not available"));
            }
            lifecycle::switch_plan(conn, s.merchant_id, sub.id, &plan, now, c).await?
        }
    };
    if !changed.jobs.is_empty() {
        crate::lease::stamp_subscription(conn, changed.subscription.id, lease_secs).await?;
    }
    Ok(changed.jobs)
}

/// A checkout session replacing the card of the customer's subscription, which
/// returns to the portal (`portal_url`) when done.
pub async fn replace_card(
    conn: &mut PgConnection,
    s: &CustomerSession,
    settings: &PortalSettings,
    subscription_id: Uuid,
    portal_url: String,
    now: DateTime<Utc>,
) -> Result<String> {
    let sub = subscriptions::get(conn, s.merchant_id, subscription_id).await?;
    if sub.customer_id != s.customer_id {
        return Err(Error::NotFound("subscription"));
    }
    if !replaces_cards(settings) {
        return Err(Error::conflict("the merchant does not offer card replacement in the portal"));
    }
    let n = crate::checkout::NewSession {
        owner: crate::checkout::Owner::Subscription(sub.id),
        return_url: Some(portal_url),
        expires_in: Duration::seconds(crate::checkout::MIN_EXPIRY_SECS),
    };
    let (_, raw) = crate::checkout::create_as(conn, s.merchant_id, n, now, Actor::Customer).await?;
    Ok(raw)
}

/// Everything the portal page shows, read in one place.
pub struct Overview {
    pub merchant_name: String,
    pub settings: PortalSettings,
    pub subscriptions: Vec<SubscriptionOverview>,
    /// Plans a customer may switch to (active, offered by the merchant).
    pub switchable: Vec<crate::plans::Plan>,
}

pub struct SubscriptionOverview {
    pub subscription: Subscription,
    pub plan_name: Option<String>,
    /// Charge history, newest cycle first, each with its attempts.
    pub cycles: Vec<crate::billing::CycleView>,
}

pub async fn overview(conn: &mut PgConnection, s: &CustomerSession) -> Result<Overview> {
    let merchant_name =
        sqlx::query_scalar!("SELECT name FROM merchants WHERE id = $1", s.merchant_id).fetch_one(&mut *conn).await?;
    let settings = crate::settings::get(conn, s.merchant_id).await?.portal;
    let mut subscriptions = Vec::new();
    for sub in subscriptions_of(conn, s).await? {
        let plan_name = match sub.plan_id {
            Some(p) => crate::plans::repo::get(conn, s.merchant_id, p).await.ok().map(|p| p.name),
            None => None,
        };
        let rows = crate::billing::cycles::list(conn, sub.id, None, 100).await?;
        let mut cycles = crate::billing::cycles::with_transactions(conn, &rows).await?;
        cycles.reverse();
        subscriptions.push(SubscriptionOverview { subscription: sub, plan_name, cycles });
    }
    let mut switchable = Vec::new();
    if settings.switch_plan {
        for id in &settings.switchable_plan_ids {
            if let Ok(p) = crate::plans::repo::get(conn, s.merchant_id, *id).await
                && p.status == crate::plans::PlanStatus::Active
            {
                switchable.push(p);
            }
        }
    }
    Ok(Overview { merchant_name, settings, subscriptions, switchable })
}
