//! The subscription state machine (docs/states.md#subscriptions). Each function runs inside the caller's
//! transaction, records its events there, and returns the jobs to enqueue after commit.

use chrono::{DateTime, Duration, Utc};
use jobs::Job;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::repo;
use super::{
    CollectionMethod, NewSubscription, Subscription, SubscriptionChanges, SubscriptionStatus as S, SubscriptionView,
};
use crate::billing::calendar::{Calendar, anchor_at};
use crate::customers;
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::money::{Currency, parse_amount};

/// A state change and the work it makes due now.
pub struct Changed {
    pub subscription: Subscription,
    pub jobs: Vec<Job>,
}

fn event(s: &Subscription, kind: &'static str, data: Value, actor: Actor) -> NewEvent {
    NewEvent::new(s.merchant_id, "subscription", s.id, kind, data, actor)
}

fn status_event(s: &Subscription, from: S, actor: Actor, extra: Value) -> NewEvent {
    let mut data = json!({"from": from, "to": s.status});
    if let (Value::Object(d), Value::Object(x)) = (&mut data, extra) {
        d.extend(x);
    }
    event(s, "status_changed", data, actor)
}

/// The first schedule of a subscription that has a payment method: trialing until
/// the trial ends, else active with cycle 1 due at the anchor (or now, if past).
fn start_schedule(s: &mut Subscription, now: DateTime<Utc>) {
    let interval = s.interval();
    match s.trial_days {
        Some(days) if days > 0 => {
            let trial_end = s.trial_end_at.unwrap_or(s.start_at + Duration::days(days as i64));
            s.status = S::Trialing;
            s.trial_end_at = Some(trial_end);
            s.anchor_at = anchor_at(trial_end, s.charge_hour);
            s.anchor_sequence = 1;
            s.current_period_start = Some(s.start_at);
            s.current_period_end = Some(trial_end);
            s.next_charge_at = None;
        }
        _ => {
            let cal = Calendar::starting(anchor_at(s.start_at, s.charge_hour), interval, now);
            s.status = S::Active;
            s.anchor_at = cal.anchor;
            s.anchor_sequence = cal.anchor_sequence;
            s.next_charge_at = Some(cal.period_start(s.next_sequence).max(now));
        }
    }
    clamp_to_end(s);
}

/// No cycle is due at or after endAt (docs/states.md#the-billing-calendar).
pub fn clamp_to_end(s: &mut Subscription) {
    if let (Some(next), Some(end)) = (s.next_charge_at, s.end_at)
        && next >= end
    {
        s.next_charge_at = None;
    }
}

/// The job that the subscription's state makes due at `now`, if any.
pub fn due_job(s: &Subscription, now: DateTime<Utc>) -> Option<Job> {
    match s.status {
        S::Active | S::PastDue if s.next_charge_at.is_some_and(|t| t <= now) => {
            Some(Job::GenerateCycle(jobs::GenerateCycle {
                subscription_id: s.id,
                sequence: s.next_sequence,
                attempt: 0,
            }))
        }
        S::Trialing if s.trial_end_at.is_some_and(|t| t <= now) => {
            Some(Job::TrialEnd(jobs::TrialEnd { subscription_id: s.id, attempt: 0 }))
        }
        _ => None,
    }
}

pub async fn create(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    n: NewSubscription,
    now: DateTime<Utc>,
) -> Result<Changed> {
    create_by(conn, merchant_id, n, None, now, Actor::Merchant).await
}

/// `create` on behalf of `actor`, with the card details of its payment method when
/// they are known (a plan switch in the portal: docs/pages.md#the-portal).
pub async fn create_by(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    n: NewSubscription,
    card: Option<&crate::cards::Kept>,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    if let Some(r) = &n.partner_reference
        && let Some(existing) = repo::by_partner_reference(conn, merchant_id, r).await?
    {
        return Err(Error::Conflict {
            detail: format!("a subscription with partnerReference {r:?} already exists: {existing}"),
            existing: Some(existing),
        });
    }
    let start = n.start_at.unwrap_or(now);
    if n.end_at.is_some_and(|end| end <= start) {
        // Checked here too: without startAt the start is `now`, unknown to the request check.
        return Err(Error::validation("endAt", "must be after startAt"));
    }
    let customer_id = customers::upsert(conn, merchant_id, &n.customer).await?;
    let mut s = Subscription {
        id: Uuid::now_v7(),
        merchant_id,
        customer_id,
        // The stored row decides (a customer given by email or phone is looked up).
        customer_account_id: n.customer.customer_account_id.clone().unwrap_or_default(),
        plan_id: n.plan_id,
        description: n.description,
        amount: n.amount,
        currency: n.currency.code().to_owned(),
        interval_unit: n.interval.unit,
        interval_count: n.interval.count,
        grace_period_days: n.grace_period_days,
        retry_schedule_hours: n.retry_schedule_hours,
        start_at: start,
        end_at: n.end_at,
        charge_hour: n.charge_hour,
        payment_method: n.payment_method,
        trial_days: n.trial_days,
        authorized_limit: n.authorized_limit,
        partner_reference: n.partner_reference,
        metadata: n.metadata,
        status: S::Pending,
        anchor_at: anchor_at(start, n.charge_hour),
        anchor_sequence: 1,
        next_sequence: 1,
        next_charge_at: None,
        current_period_start: None,
        current_period_end: None,
        trial_end_at: n.trial_days.map(|d| start + Duration::days(d as i64)),
        paused_at: None,
        resume_at: None,
        cancel_at: None,
        cancelled_at: None,
        cancellation_reason: None,
        test_clock_id: n.test_clock_id,
        created_at: now,
        updated_at: now,
        payment_method_brand: card.map(|c| c.brand.clone()),
        payment_method_last4: card.map(|c| c.last4.clone()),
        payment_method_exp_month: card.map(|c| c.exp_month),
        payment_method_exp_year: card.map(|c| c.exp_year),
        collection_method: n.collection_method,
        days_until_due: n.days_until_due,
    };
    // A subscription collected by payment links needs no card to start.
    if s.payment_method.is_some() || s.collection_method == CollectionMethod::SendPaymentLink {
        start_schedule(&mut s, now);
    }
    let inserted = sqlx::query!(
        "INSERT INTO subscriptions (id, merchant_id, customer_id, plan_id, description, amount, currency,
            interval_unit, interval_count, grace_period_days, retry_schedule_hours, start_at, end_at,
            charge_hour, payment_method, trial_days, authorized_limit, partner_reference, metadata, status,
            anchor_at, anchor_sequence, next_sequence, next_charge_at, current_period_start,
            current_period_end, trial_end_at, payment_method_brand, payment_method_last4, payment_method_exp_month,
            payment_method_exp_year, test_clock_id, collection_method, days_until_due)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
            $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)
         ON CONFLICT ON CONSTRAINT subscriptions_partner_reference_key DO NOTHING",
        s.id,
        s.merchant_id,
        s.customer_id,
        s.plan_id,
        s.description,
        s.amount,
        s.currency,
        s.interval_unit as _,
        s.interval_count,
        s.grace_period_days,
        &s.retry_schedule_hours,
        s.start_at,
        s.end_at,
        s.charge_hour,
        s.payment_method,
        s.trial_days,
        s.authorized_limit,
        s.partner_reference,
        s.metadata,
        s.status as _,
        s.anchor_at,
        s.anchor_sequence,
        s.next_sequence,
        s.next_charge_at,
        s.current_period_start,
        s.current_period_end,
        s.trial_end_at,
        s.payment_method_brand,
        s.payment_method_last4,
        s.payment_method_exp_month,
        s.payment_method_exp_year,
        s.test_clock_id,
        s.collection_method as _,
        s.days_until_due,
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        // A concurrent request took the partner reference between our check and insert.
        let r = s.partner_reference.clone().unwrap_or_default();
        let existing = repo::by_partner_reference(conn, merchant_id, &r).await?;
        return Err(Error::Conflict {
            detail: format!("a subscription with partnerReference {r:?} already exists"),
            existing,
        });
    }
    let s = repo::get(conn, merchant_id, s.id).await?;
    let data = serde_json::to_value(SubscriptionView::from(&s)).unwrap_or_default();
    events::record_one(conn, event(&s, "created", data, actor)).await?;
    let jobs = due_job(&s, now).into_iter().collect();
    Ok(Changed { subscription: s, jobs })
}

pub async fn update(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    c: SubscriptionChanges,
    now: DateTime<Utc>,
) -> Result<Changed> {
    update_by(conn, merchant_id, id, c, None, now, Actor::Merchant).await
}

/// `update` on behalf of `actor`; `card` is what is kept of the card behind a new
/// payment method collected by a checkout (docs/pages.md#card-handling).
pub async fn update_by(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    c: SubscriptionChanges,
    card: Option<&crate::cards::Kept>,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    let mut s = repo::lock(conn, merchant_id, id).await?;
    if s.status.is_final() {
        return Err(Error::conflict(format!("the subscription is {}", s.status.as_str())));
    }
    let before = s.status;
    let mut changed = serde_json::Map::new();
    if let Some(d) = c.description {
        changed.insert("description".into(), json!(d));
        s.description = d;
    }
    if let Some(m) = c.metadata {
        changed.insert("metadata".into(), m.clone());
        s.metadata = m;
    }
    if let Some(limit) = c.authorized_limit {
        s.authorized_limit = match limit {
            Some(raw) => Some(
                parse_amount(&raw.0, Currency::parse(&s.currency))
                    .map_err(|m| Error::Validation(vec![FieldError::new("authorizedLimit", m)]))?,
            ),
            None => None,
        };
        changed.insert("authorizedLimit".into(), json!(s.authorized_limit.map(|a| a.normalize().to_string())));
    }
    if let Some(t) = c.trial_end_at {
        if s.status != S::Trialing && s.status != S::Pending {
            return Err(Error::conflict("trialEndAt can change only while the subscription is trialing"));
        }
        if t <= now {
            return Err(Error::validation("trialEndAt", "must be in the future"));
        }
        s.trial_end_at = Some(t);
        s.anchor_at = anchor_at(t, s.charge_hour);
        s.anchor_sequence = s.next_sequence;
        s.current_period_end = Some(t);
        changed.insert("trialEndAt".into(), json!(t));
    }
    if let Some(end) = c.end_at {
        if let Some(e) = end
            && e <= s.start_at
        {
            return Err(Error::validation("endAt", "must be after startAt"));
        }
        s.end_at = end;
        changed.insert("endAt".into(), json!(end));
        if end.is_none() && s.next_charge_at.is_none() && matches!(s.status, S::Active | S::PastDue) {
            s.next_charge_at = Some(s.calendar().period_start(s.next_sequence).max(now));
        }
        clamp_to_end(&mut s);
    }
    if let Some(hour) = c.charge_hour {
        // The anchor moves to the new hour of its own day; every due date follows it
        // (docs/amendments.md#charge-hour). A due time the move puts in the past is due now.
        changed.insert("chargeHour".into(), json!(hour));
        s.charge_hour = hour;
        s.anchor_at = anchor_at(s.anchor_at, hour);
        if matches!(s.status, S::Active | S::PastDue) && s.next_charge_at.is_some() {
            let next = s.calendar().period_start(s.next_sequence);
            if s.current_period_end.is_some() && s.next_sequence > 1 {
                s.current_period_end = Some(next);
            }
            s.next_charge_at = Some(next.max(now));
            clamp_to_end(&mut s);
        }
    }
    if let Some(pm) = c.payment_method {
        changed.insert("paymentMethod".into(), json!(pm));
        if let Some(card) = card {
            changed.insert("paymentMethodDetails".into(), json!(card));
        }
        s.set_payment_method(pm, card);
        if s.status == S::Pending {
            start_schedule(&mut s, now);
        }
    }
    if changed.is_empty() {
        return Ok(Changed { subscription: s, jobs: vec![] });
    }
    let s = repo::save(conn, &s).await?;
    let mut evs = vec![event(&s, "updated", Value::Object(changed), actor)];
    if s.status != before {
        evs.push(status_event(&s, before, actor, json!({})));
    }
    events::record(conn, &evs).await?;
    let jobs = due_job(&s, now).into_iter().collect();
    Ok(Changed { subscription: s, jobs })
}

pub async fn pause(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    resume_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Changed> {
    pause_by(conn, merchant_id, id, resume_at, now, Actor::Merchant).await
}

pub async fn pause_by(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    resume_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    let mut s = repo::lock(conn, merchant_id, id).await?;
    if !matches!(s.status, S::Active | S::PastDue | S::Trialing) {
        return Err(Error::conflict(format!("a {} subscription cannot be paused", s.status.as_str())));
    }
    if resume_at.is_some_and(|r| r <= now) {
        return Err(Error::validation("resumeAt", "must be in the future"));
    }
    let before = s.status;
    s.status = S::Paused;
    s.paused_at = Some(now);
    s.resume_at = resume_at;
    let s = repo::save(conn, &s).await?;
    events::record_one(conn, status_event(&s, before, actor, json!({"resumeAt": resume_at}))).await?;
    Ok(Changed { subscription: s, jobs: vec![] })
}

/// paused → active (docs/states.md#pause-and-resume): if the paid period is still running nothing else changes;
/// otherwise a new period starts now, is charged at once and becomes the anchor.
pub async fn resume_locked(
    conn: &mut PgConnection,
    mut s: Subscription,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    let before = s.status;
    let still_trialing = s.trial_end_at.is_some_and(|t| t > now) && s.next_sequence == 1;
    let period_running = s.current_period_end.is_some_and(|end| end > now);
    let mut reanchored = false;
    if still_trialing {
        s.status = S::Trialing;
    } else {
        s.status = if repo::has_retrying_cycle(conn, s.id).await? { S::PastDue } else { S::Active };
        if !period_running || s.next_charge_at.is_some_and(|t| t < now) {
            s.anchor_at = now;
            s.anchor_sequence = s.next_sequence;
            s.next_charge_at = Some(now);
            clamp_to_end(&mut s);
            reanchored = true;
        }
    }
    s.paused_at = None;
    s.resume_at = None;
    let s = repo::save(conn, &s).await?;
    events::record_one(conn, status_event(&s, before, actor, json!({"reanchored": reanchored}))).await?;
    let jobs = due_job(&s, now).into_iter().collect();
    Ok(Changed { subscription: s, jobs })
}

pub async fn resume(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<Changed> {
    resume_by(conn, merchant_id, id, now, Actor::Merchant).await
}

pub async fn resume_by(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    let s = repo::lock(conn, merchant_id, id).await?;
    if s.status != S::Paused {
        return Err(Error::conflict(format!("a {} subscription cannot be resumed", s.status.as_str())));
    }
    resume_locked(conn, s, now, actor).await
}

/// Cancel now, or at the end of the current period.
pub async fn cancel(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<Changed> {
    cancel_by(conn, merchant_id, id, at_period_end, "requested", now, Actor::Merchant).await
}

/// `cancel` on behalf of `actor`, with a reason: the cancellation reason of a
/// cancellation now, recorded in the event of one at period end.
pub async fn cancel_by(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    at_period_end: bool,
    reason: &str,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    let mut s = repo::lock(conn, merchant_id, id).await?;
    if s.status.is_final() {
        return Err(Error::conflict(format!("the subscription is already {}", s.status.as_str())));
    }
    if at_period_end && let Some(end) = s.current_period_end.filter(|e| *e > now) {
        s.cancel_at = Some(end);
        let s = repo::save(conn, &s).await?;
        let data = if actor == Actor::Merchant {
            json!({"cancelAt": end})
        } else {
            json!({"cancelAt": end, "reason": reason})
        };
        events::record_one(conn, event(&s, "updated", data, actor)).await?;
        return Ok(Changed { subscription: s, jobs: vec![] });
    }
    let s = cancel_locked(conn, s, reason, now, actor).await?;
    Ok(Changed { subscription: s, jobs: vec![] })
}

/// Make a locked subscription `cancelled` and cancel its open cycles.
pub async fn cancel_locked(
    conn: &mut PgConnection,
    mut s: Subscription,
    reason: &str,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Subscription> {
    let before = s.status;
    s.status = S::Cancelled;
    s.cancelled_at = Some(now);
    s.cancellation_reason = Some(reason.to_owned());
    s.next_charge_at = None;
    let s = repo::save(conn, &s).await?;
    let mut evs = vec![status_event(&s, before, actor, json!({"reason": reason}))];
    // The subscription is locked: its cycles come next in the lock order.
    crate::billing::cycle_state::cancel_open(conn, s.id, actor, &mut evs).await?;
    events::record(conn, &evs).await?;
    Ok(s)
}

/// Switch plan, SmartyPay's way (docs/pages.md#the-portal): a new subscription on
/// `plan` for the same customer and card starts when the current period ends, and the
/// current subscription is cancelled then. Returns the new subscription.
pub async fn switch_plan(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    plan: &crate::plans::Plan,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Changed> {
    let s = repo::lock(conn, merchant_id, id).await?;
    if !matches!(s.status, S::Active | S::PastDue | S::Trialing) || s.cancel_at.is_some() {
        return Err(Error::conflict(format!("a {} subscription cannot switch plan", s.status.as_str())));
    }
    if s.plan_id == Some(plan.id) {
        return Err(Error::validation("planId", "is the subscription's plan already"));
    }
    let Some(payment_method) = s.payment_method.clone() else {
        return Err(Error::conflict("the subscription has no payment method"));
    };
    let starts = s.current_period_end.filter(|e| *e > now).unwrap_or(now);
    let req = super::CreateSubscription {
        customer: crate::customers::CustomerInput {
            customer_account_id: Some(s.customer_account_id.clone()),
            email: None,
            phone: None,
            first_name: None,
            last_name: None,
        },
        plan_id: Some(plan.id),
        amount: None,
        currency: None,
        interval: None,
        description: None,
        start_at: Some(starts),
        end_at: None,
        charge_hour: s.charge_hour,
        payment_method: Some(payment_method),
        // The customer has paid up to the switch: no trial on the new plan.
        trial_days: Some(0),
        authorized_limit: None,
        partner_reference: None,
        metadata: Some(json!({"switchedFrom": s.id})),
        // The new subscription keeps the old one's test clock (docs/api.md#test-clocks).
        test_clock_id: s.test_clock_id,
        collection_method: Some(s.collection_method),
        days_until_due: Some(s.days_until_due),
    };
    // The token came from this merchant's gateway for this customer.
    let n = req.validate(Some(plan), true)?;
    let card = s.card();
    let created = create_by(conn, merchant_id, n, card.as_ref(), now, actor).await?;
    let reason = format!("switched_to:{}", created.subscription.id);
    cancel_by(conn, merchant_id, id, true, &reason, now, actor).await?;
    Ok(created)
}
