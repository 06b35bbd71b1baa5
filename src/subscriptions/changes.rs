//! Amendments: moving a subscription to other terms (docs/amendments.md).
//!
//! The one home of the change protocol:
//!
//! - [`decide`] (pure) says what a change does: apply now, charge a proration first,
//!   or wait for the period's end. Preview and change both call it, so a preview shows
//!   exactly what the change then charges.
//! - [`change`] runs a change inside the request's transaction, under the
//!   subscription's lock (level 1 of docs/lock-order.md); a proration opens a billing
//!   cycle of kind `proration` with one `proration` transaction, charged by the usual
//!   `charge-transaction` job with its own idempotency key.
//! - [`settle_prorations`] is called by `record_batch` (under the same locks) when a
//!   proration charge is answered: approved → the new terms apply; declined → the
//!   change fails and the old terms stay in force.
//! - [`apply_scheduled`] is called by `open_cycles` when a period ends: a change
//!   waiting for it applies before the next cycle is priced.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Subscription, SubscriptionStatus as S, SubscriptionView, repo};
use crate::billing::calendar::{Interval, IntervalUnit};
use crate::billing::proration::{self, Proration};
use crate::billing::transaction_state::{self, NewAttempt};
use crate::billing::transactions::TransactionKind;
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::money::{AmountInput, Currency, format_amount, parse_amount};
use crate::plans::{Plan, PlanStatus};
use crate::validate::Errors;

/// When the merchant wants the change to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "change_effective", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    Now,
    PeriodEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "change_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// The proration charge is in flight; the old terms are in force until it is approved.
    AwaitingPayment,
    /// Waits for the end of the current period.
    Scheduled,
    /// The new terms are in force.
    Applied,
    /// The proration charge was declined (or its cycle cancelled): the old terms stay.
    Failed,
    /// A later change replaced this scheduled one.
    Superseded,
}

/// `POST /v1/subscriptions/{id}/change` and `/change/preview`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeRequest {
    /// Move to this active plan (same currency); or give `amount` (and `interval`) inline.
    pub plan_id: Option<Uuid>,
    pub amount: Option<AmountInput>,
    /// Only with `amount`; a new interval takes effect at the period's end and re-anchors there.
    pub interval: Option<Interval>,
    /// Charge the prorated difference of an upgrade now (default true).
    pub prorate: Option<bool>,
    /// `now` (default for a change of amount) or `period_end` (default, and the only
    /// choice, for a change of interval). A downgrade always waits for the period's end.
    pub effective: Option<Effective>,
}

/// The request, checked on its own (before the subscription is read).
#[derive(Debug, Clone)]
pub struct ChangeInput {
    plan_id: Option<Uuid>,
    amount: Option<AmountInput>,
    interval: Option<Interval>,
    prorate: bool,
    effective: Option<Effective>,
}

impl ChangeRequest {
    pub fn validate(self) -> Result<ChangeInput> {
        let mut e = Errors::new();
        match (&self.plan_id, &self.amount) {
            (None, None) => e.push(FieldError::new("planId", "give planId, or amount")),
            (Some(_), Some(_)) => e.push(FieldError::new("amount", "comes from the plan; do not send it with planId")),
            _ => {}
        }
        if self.plan_id.is_some() && self.interval.is_some() {
            e.push(FieldError::new("interval", "comes from the plan; do not send it with planId"));
        }
        if let Some(a) = &self.amount
            && let Err(m) = parse_amount(&a.0, None)
        {
            e.push(FieldError::new("amount", m));
        }
        if let Some(i) = &self.interval
            && let Err(m) = i.validate()
        {
            e.push(FieldError::new("interval.count", m));
        }
        crate::validate::finish(e)?;
        Ok(ChangeInput {
            plan_id: self.plan_id,
            amount: self.amount,
            interval: self.interval,
            prorate: self.prorate.unwrap_or(true),
            effective: self.effective,
        })
    }
}

/// Terms a subscription can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Terms {
    pub plan_id: Option<Uuid>,
    #[serde(serialize_with = "crate::money::serialize_amount")]
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub interval: Interval,
}

impl Terms {
    fn of(s: &Subscription) -> Terms {
        Terms { plan_id: s.plan_id, amount: s.amount, interval: s.interval() }
    }
}

/// The new terms a checked request asks for, given the subscription and the plan it names.
fn target(s: &Subscription, input: &ChangeInput, plan: Option<&Plan>) -> Result<Terms> {
    let mut e = Errors::new();
    let terms = match (input.plan_id, plan) {
        (Some(_), Some(p)) => {
            if p.status != PlanStatus::Active {
                e.push(FieldError::new("planId", "the plan is not active"));
            }
            if p.currency.trim() != s.currency.trim() {
                e.push(FieldError::new(
                    "planId",
                    format!("the plan is in {}; the subscription is in {}", p.currency, s.currency),
                ));
            }
            Some(Terms { plan_id: Some(p.id), amount: p.amount, interval: p.interval() })
        }
        (Some(_), None) => {
            e.push(FieldError::new("planId", "no such plan"));
            None
        }
        (None, _) => {
            let raw = input.amount.as_ref().map(|a| a.0.clone()).unwrap_or_default();
            match parse_amount(&raw, Currency::parse(&s.currency)) {
                Ok(amount) => Some(Terms { plan_id: None, amount, interval: input.interval.unwrap_or(s.interval()) }),
                Err(m) => {
                    e.push(FieldError::new("amount", m));
                    None
                }
            }
        }
    };
    if let Some(t) = &terms {
        let from = Terms::of(s);
        if t.amount == from.amount && t.interval == from.interval && t.plan_id == from.plan_id {
            let field = if input.plan_id.is_some() { "planId" } else { "amount" };
            e.push(FieldError::new(field, "the subscription already has these terms"));
        }
        if t.interval != from.interval && input.effective == Some(Effective::Now) && s.status == S::Active {
            e.push(FieldError::new("effective", "a change of interval takes effect at the period's end"));
        }
    }
    crate::validate::finish(e)?;
    terms.ok_or_else(|| Error::validation("amount", "is required"))
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The new terms apply at once, nothing is charged now.
    Apply,
    /// Charge `proration` now on a cycle of its own covering `[start, end)`; the new
    /// terms apply once it is approved.
    Charge { proration: Proration, start: DateTime<Utc>, end: DateTime<Utc> },
    /// The new terms apply when the period ending at `at` ends (the next cycle).
    AtPeriodEnd { at: DateTime<Utc> },
}

/// What moving `s` to `to` at `now` does (docs/amendments.md#what-a-change-does).
pub fn decide(
    s: &Subscription,
    to: &Terms,
    prorate: bool,
    effective: Option<Effective>,
    now: DateTime<Utc>,
) -> Decision {
    // A paid period runs only for an active subscription past its first cycle; a
    // pending or trialing one (or one whose first cycle is still to come) has none,
    // so its terms change at once and the first cycle is charged at the new amount.
    let paid = match (s.status, s.current_period_start, s.current_period_end) {
        (S::Active, Some(start), Some(end)) if s.next_sequence > 1 => Some((start, end)),
        _ => None,
    };
    let Some((start, end)) = paid else { return Decision::Apply };
    if end <= now {
        // The period is over and the next cycle not yet open: it opens on the new terms.
        return Decision::Apply;
    }
    let interval_changes = to.interval != s.interval();
    if interval_changes || effective == Some(Effective::PeriodEnd) || to.amount < s.amount {
        return Decision::AtPeriodEnd { at: end };
    }
    if !prorate {
        return Decision::Apply;
    }
    let currency = Currency::parse(&s.currency).unwrap_or_else(|| Currency::parse("EUR").expect("EUR is known"));
    let p = proration::prorate(s.amount, to.amount, currency, start, end, now);
    if p.amount > Decimal::ZERO { Decision::Charge { proration: p, start: now, end } } else { Decision::Apply }
}

/// The prorated charge of a change, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProrationView {
    pub amount: String,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub seconds_left: i64,
    pub period_seconds: i64,
}

/// A change (or, from a preview, what it would be).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeView {
    /// Absent in a preview.
    pub id: Option<Uuid>,
    pub subscription_id: Uuid,
    pub status: ChangeStatus,
    pub effective: Effective,
    /// When the new terms take (or took) effect; for a proration, once it is approved.
    pub effective_at: DateTime<Utc>,
    pub from: Terms,
    pub to: Terms,
    pub currency: String,
    /// The charge made now, if any.
    pub proration: Option<ProrationView>,
    pub billing_cycle_id: Option<Uuid>,
    pub transaction_id: Option<Uuid>,
    /// The subscription after the request.
    pub subscription: SubscriptionView,
}

fn view(
    id: Option<Uuid>,
    s: &Subscription,
    from: Terms,
    to: Terms,
    d: &Decision,
    now: DateTime<Utc>,
    ids: (Option<Uuid>, Option<Uuid>),
) -> ChangeView {
    let (status, effective, effective_at, proration) = match d {
        Decision::Apply => (ChangeStatus::Applied, Effective::Now, now, None),
        Decision::Charge { proration: p, start, end } => (
            ChangeStatus::AwaitingPayment,
            Effective::Now,
            now,
            Some(ProrationView {
                amount: format_amount(p.amount, &s.currency),
                currency: s.currency.clone(),
                period_start: *start,
                period_end: *end,
                seconds_left: p.seconds_left,
                period_seconds: p.period_seconds,
            }),
        ),
        Decision::AtPeriodEnd { at } => (ChangeStatus::Scheduled, Effective::PeriodEnd, *at, None),
    };
    ChangeView {
        id,
        subscription_id: s.id,
        status,
        effective,
        effective_at,
        from,
        to,
        currency: s.currency.clone(),
        proration,
        billing_cycle_id: ids.0,
        transaction_id: ids.1,
        subscription: SubscriptionView::from(s),
    }
}

/// Load the plan a request names (merchant-scoped), or none.
async fn plan_of(conn: &mut PgConnection, merchant_id: Uuid, input: &ChangeInput) -> Result<Option<Plan>> {
    match input.plan_id {
        Some(id) => match crate::plans::repo::get(conn, merchant_id, id).await {
            Ok(p) => Ok(Some(p)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        },
        None => Ok(None),
    }
}

fn changeable(s: &Subscription) -> Result<()> {
    match s.status {
        S::Pending | S::Trialing | S::Active => Ok(()),
        other => Err(Error::conflict(format!(
            "a {} subscription cannot change terms{}",
            other.as_str(),
            if other == S::PastDue { ": settle its open cycle first" } else { "" }
        ))),
    }
}

/// What the change would do now, without doing it.
pub async fn preview(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    input: ChangeInput,
    now: DateTime<Utc>,
) -> Result<ChangeView> {
    let s = repo::get(conn, merchant_id, id).await?;
    changeable(&s)?;
    let plan = plan_of(conn, merchant_id, &input).await?;
    let to = target(&s, &input, plan.as_ref())?;
    let d = decide(&s, &to, input.prorate, input.effective, now);
    Ok(view(None, &s, Terms::of(&s), to, &d, now, (None, None)))
}

/// A change applied, scheduled or awaiting its proration charge, and the job to
/// enqueue after commit.
pub struct Changed {
    pub view: ChangeView,
    pub jobs: Vec<jobs::Job>,
}

/// Change the subscription's terms (docs/amendments.md), in the caller's transaction.
pub async fn change(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    input: ChangeInput,
    now: DateTime<Utc>,
    lease_secs: i64,
) -> Result<Changed> {
    let mut s = repo::lock(conn, merchant_id, id).await?;
    changeable(&s)?;
    let plan = plan_of(conn, merchant_id, &input).await?;
    let to = target(&s, &input, plan.as_ref())?;
    let from = Terms::of(&s);
    let mut evs = Vec::new();
    // The change row, like the cycles, is written only under the subscription's lock.
    if let Some(open) = sqlx::query!(
        r#"SELECT id, status AS "status: ChangeStatus" FROM subscription_changes
           WHERE subscription_id = $1 AND status IN ('awaiting_payment', 'scheduled')"#,
        s.id
    )
    .fetch_optional(&mut *conn)
    .await?
    {
        if open.status == ChangeStatus::AwaitingPayment {
            return Err(Error::Conflict {
                detail: format!("change {} is waiting for its proration charge", open.id),
                existing: Some(open.id),
            });
        }
        sqlx::query!("UPDATE subscription_changes SET status = 'superseded' WHERE id = $1", open.id)
            .execute(&mut *conn)
            .await?;
        evs.push(NewEvent::new(
            merchant_id,
            "subscription",
            s.id,
            "change_superseded",
            json!({"changeId": open.id}),
            Actor::Merchant,
        ));
    }
    let d = decide(&s, &to, input.prorate, input.effective, now);
    let change_id = Uuid::now_v7();
    let (status, effective, effective_at, proration) = match &d {
        Decision::Apply => (ChangeStatus::Applied, Effective::Now, now, Decimal::ZERO),
        Decision::Charge { proration, .. } => (ChangeStatus::AwaitingPayment, Effective::Now, now, proration.amount),
        Decision::AtPeriodEnd { at } => (ChangeStatus::Scheduled, Effective::PeriodEnd, *at, Decimal::ZERO),
    };
    let mut ids = (None, None);
    let mut jobs = Vec::new();
    if let Decision::Charge { proration, start, end } = &d {
        let (cycle_id, txn_id) = (Uuid::now_v7(), Uuid::now_v7());
        // The proration cycle takes the next sequence; the anchor's sequence moves with
        // it, so every later period keeps its dates (docs/amendments.md#the-proration-cycle).
        let seq = s.next_sequence;
        sqlx::query!(
            "INSERT INTO billing_cycles (id, merchant_id, subscription_id, sequence, period_start, period_end, due_at,
                amount, currency, attempts, kind)
             VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8, 1, 'proration')",
            cycle_id,
            merchant_id,
            s.id,
            seq,
            start,
            end,
            proration.amount,
            s.currency,
        )
        .execute(&mut *conn)
        .await?;
        let attempt = NewAttempt {
            id: txn_id,
            merchant_id,
            billing_cycle_id: cycle_id,
            kind: TransactionKind::Proration,
            amount: proration.amount,
            currency: s.currency.clone(),
            payment_method: s.payment_method.clone().unwrap_or_default(),
            attempt: 1,
        };
        transaction_state::open(conn, std::slice::from_ref(&attempt), lease_secs).await?;
        evs.push(NewEvent::new(
            merchant_id,
            "billing_cycle",
            cycle_id,
            "created",
            json!({"subscriptionId": s.id, "sequence": seq, "dueAt": start, "periodStart": start, "periodEnd": end,
                "kind": "proration", "changeId": change_id}),
            Actor::Merchant,
        ));
        evs.push(transaction_state::created_event(
            &attempt,
            json!({"billingCycleId": cycle_id, "kind": "proration", "attempt": 1}),
            Actor::Merchant,
        ));
        s.next_sequence += 1;
        s.anchor_sequence += 1;
        s = repo::save(conn, &s).await?;
        ids = (Some(cycle_id), Some(txn_id));
        jobs.push(jobs::Job::ChargeTransaction(jobs::ChargeTransaction { transaction_id: txn_id, attempt: 0 }));
    }
    sqlx::query!(
        "INSERT INTO subscription_changes (id, merchant_id, subscription_id, status, effective, from_plan_id,
            from_amount, from_interval_unit, from_interval_count, plan_id, amount, currency, interval_unit,
            interval_count, requested_at, effective_at, proration_amount, billing_cycle_id, applied_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        change_id,
        merchant_id,
        s.id,
        status as _,
        effective as _,
        from.plan_id,
        from.amount,
        from.interval.unit as _,
        from.interval.count,
        to.plan_id,
        to.amount,
        s.currency,
        to.interval.unit as _,
        to.interval.count,
        now,
        effective_at,
        proration,
        ids.0,
        (status == ChangeStatus::Applied).then_some(now),
    )
    .execute(&mut *conn)
    .await?;
    let data = json!({"changeId": change_id, "from": from, "to": to, "effectiveAt": effective_at,
        "proration": (!proration.is_zero()).then(|| proration.normalize().to_string())});
    let kind = match status {
        ChangeStatus::Applied => "change_applied",
        ChangeStatus::AwaitingPayment => "change_requested",
        _ => "change_scheduled",
    };
    if status == ChangeStatus::Applied {
        set_terms(conn, &mut s, &to).await?;
    }
    evs.push(NewEvent::new(merchant_id, "subscription", s.id, kind, data, Actor::Merchant));
    events::record(conn, &evs).await?;
    let s = repo::get(conn, merchant_id, s.id).await?;
    Ok(Changed { view: view(Some(change_id), &s, from, to, &d, now, ids), jobs })
}

/// Write new terms on a subscription the caller holds locked. A new interval
/// re-anchors the calendar where the next cycle starts (its start does not move;
/// every later one counts from it). Returns whether it re-anchored.
async fn set_terms(conn: &mut PgConnection, s: &mut Subscription, to: &Terms) -> Result<bool> {
    let reanchor = to.interval != s.interval();
    if reanchor {
        s.anchor_at = s.calendar().period_start(s.next_sequence);
        s.anchor_sequence = s.next_sequence;
    }
    s.plan_id = to.plan_id;
    s.amount = to.amount;
    s.interval_unit = to.interval.unit;
    s.interval_count = to.interval.count;
    sqlx::query!(
        "UPDATE subscriptions SET plan_id = $2, amount = $3, interval_unit = $4, interval_count = $5,
            anchor_at = $6, anchor_sequence = $7
         WHERE id = $1",
        s.id,
        s.plan_id,
        s.amount,
        s.interval_unit as _,
        s.interval_count,
        s.anchor_at,
        s.anchor_sequence,
    )
    .execute(conn)
    .await?;
    Ok(reanchor)
}

/// A proration charge's answer, for [`settle_prorations`].
pub struct ProrationOutcome {
    pub subscription_id: Uuid,
    pub billing_cycle_id: Uuid,
    /// `None` when approved; else the decline code.
    pub declined: Option<String>,
}

/// Apply (approved) or fail (declined) the changes whose proration charges were
/// answered. Called by `record_batch` in its transaction, which already holds the
/// subscriptions and cycles locked (docs/lock-order.md#recording-outcomes).
pub async fn settle_prorations(
    conn: &mut PgConnection,
    outcomes: &[ProrationOutcome],
    at: DateTime<Utc>,
    evs: &mut Vec<NewEvent>,
) -> Result<()> {
    for o in outcomes {
        let Some(c) = sqlx::query!(
            r#"SELECT id, merchant_id, plan_id, amount, interval_unit AS "interval_unit: IntervalUnit", interval_count
               FROM subscription_changes WHERE billing_cycle_id = $1 AND status = 'awaiting_payment'"#,
            o.billing_cycle_id
        )
        .fetch_optional(&mut *conn)
        .await?
        else {
            continue;
        };
        match &o.declined {
            None => {
                let Some(mut s) = repo::by_ids(conn, &[o.subscription_id]).await?.pop() else { continue };
                let to = Terms {
                    plan_id: c.plan_id,
                    amount: c.amount,
                    interval: Interval { unit: c.interval_unit, count: c.interval_count },
                };
                set_terms(conn, &mut s, &to).await?;
                sqlx::query!(
                    "UPDATE subscription_changes SET status = 'applied', applied_at = $2 WHERE id = $1",
                    c.id,
                    at
                )
                .execute(&mut *conn)
                .await?;
                evs.push(NewEvent::new(
                    c.merchant_id,
                    "subscription",
                    o.subscription_id,
                    "change_applied",
                    json!({"changeId": c.id, "to": to, "billingCycleId": o.billing_cycle_id}),
                    Actor::System,
                ));
            }
            Some(code) => {
                sqlx::query!(
                    "UPDATE subscription_changes SET status = 'failed', failure_code = $2 WHERE id = $1",
                    c.id,
                    code
                )
                .execute(&mut *conn)
                .await?;
                evs.push(NewEvent::new(
                    c.merchant_id,
                    "subscription",
                    o.subscription_id,
                    "change_failed",
                    json!({"changeId": c.id, "failureCode": code, "billingCycleId": o.billing_cycle_id}),
                    Actor::System,
                ));
            }
        }
    }
    Ok(())
}

/// Apply the scheduled changes of subscriptions whose next cycle is about to open
/// (locked by the caller), in place, before the cycle is priced. One read for the
/// whole batch; nothing else when no change waits.
pub async fn apply_scheduled(conn: &mut PgConnection, due: &mut [Subscription], evs: &mut Vec<NewEvent>) -> Result<()> {
    if due.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = due.iter().map(|s| s.id).collect();
    let waiting = sqlx::query!(
        r#"SELECT id, subscription_id, plan_id, amount, interval_unit AS "interval_unit: IntervalUnit",
                  interval_count, effective_at
           FROM subscription_changes WHERE subscription_id = ANY($1) AND status = 'scheduled'"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    for c in waiting {
        let Some(s) = due.iter_mut().find(|s| s.id == c.subscription_id) else { continue };
        let starts = s.calendar().period_start(s.next_sequence);
        if starts < c.effective_at {
            continue;
        }
        let to = Terms {
            plan_id: c.plan_id,
            amount: c.amount,
            interval: Interval { unit: c.interval_unit, count: c.interval_count },
        };
        // A new interval re-anchors the calendar where the new terms start.
        let reanchored = set_terms(conn, s, &to).await?;
        sqlx::query!("UPDATE subscription_changes SET status = 'applied', applied_at = $2 WHERE id = $1", c.id, starts)
            .execute(&mut *conn)
            .await?;
        evs.push(NewEvent::new(
            s.merchant_id,
            "subscription",
            s.id,
            "change_applied",
            json!({"changeId": c.id, "to": to, "effectiveAt": starts, "reanchored": reanchored}),
            Actor::System,
        ));
    }
    Ok(())
}

/// Whether a billing cycle is the proration of a change (not retried, not a period).
pub async fn is_proration_cycle(conn: &mut PgConnection, cycle_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM billing_cycles WHERE id = $1 AND kind = 'proration') AS "exists!""#,
        cycle_id
    )
    .fetch_one(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::calendar::IntervalUnit;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sub(status: S, amount: i64) -> Subscription {
        Subscription {
            id: Uuid::now_v7(),
            merchant_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            customer_account_id: "c".into(),
            plan_id: None,
            description: None,
            amount: Decimal::new(amount, 2),
            currency: "EUR".into(),
            interval_unit: IntervalUnit::Month,
            interval_count: 1,
            grace_period_days: 0,
            retry_schedule_hours: vec![24],
            start_at: at("2027-04-01T00:00:00Z"),
            end_at: None,
            charge_hour: None,
            payment_method: Some("pm_sandbox_ok".into()),
            trial_days: None,
            authorized_limit: None,
            partner_reference: None,
            metadata: json!({}),
            status,
            anchor_at: at("2027-04-01T00:00:00Z"),
            anchor_sequence: 1,
            next_sequence: 2,
            next_charge_at: Some(at("2027-05-01T00:00:00Z")),
            current_period_start: Some(at("2027-04-01T00:00:00Z")),
            current_period_end: Some(at("2027-05-01T00:00:00Z")),
            trial_end_at: None,
            paused_at: None,
            resume_at: None,
            cancel_at: None,
            cancelled_at: None,
            cancellation_reason: None,
            test_clock_id: None,
            collection_method: crate::paylinks::CollectionMethod::ChargeAutomatically,
            days_until_due: crate::paylinks::DEFAULT_DAYS_UNTIL_DUE,
            created_at: at("2027-04-01T00:00:00Z"),
            updated_at: at("2027-04-01T00:00:00Z"),
            payment_method_brand: None,
            payment_method_last4: None,
            payment_method_exp_month: None,
            payment_method_exp_year: None,
        }
    }

    fn terms(amount: i64, unit: IntervalUnit) -> Terms {
        Terms { plan_id: None, amount: Decimal::new(amount, 2), interval: Interval { unit, count: 1 } }
    }

    #[test]
    fn an_upgrade_mid_period_is_charged_prorated() {
        let s = sub(S::Active, 1000);
        let d = decide(&s, &terms(3000, IntervalUnit::Month), true, None, at("2027-04-20T18:00:00Z"));
        let Decision::Charge { proration, start, end } = d else { panic!("{d:?}") };
        assert_eq!(proration.amount, Decimal::new(683, 2));
        assert_eq!((start, end), (at("2027-04-20T18:00:00Z"), at("2027-05-01T00:00:00Z")));
    }

    #[test]
    fn downgrades_period_end_and_interval_changes_wait_for_the_end() {
        let s = sub(S::Active, 1000);
        let now = at("2027-04-20T18:00:00Z");
        let end = Decision::AtPeriodEnd { at: at("2027-05-01T00:00:00Z") };
        assert_eq!(decide(&s, &terms(500, IntervalUnit::Month), true, None, now), end);
        assert_eq!(decide(&s, &terms(3000, IntervalUnit::Month), true, Some(Effective::PeriodEnd), now), end);
        assert_eq!(decide(&s, &terms(3000, IntervalUnit::Year), true, None, now), end);
    }

    #[test]
    fn without_a_paid_period_or_proration_the_terms_change_at_once() {
        let now = at("2027-04-20T18:00:00Z");
        let up = terms(3000, IntervalUnit::Month);
        assert_eq!(decide(&sub(S::Trialing, 1000), &up, true, None, now), Decision::Apply);
        assert_eq!(decide(&sub(S::Pending, 1000), &up, true, None, now), Decision::Apply);
        assert_eq!(decide(&sub(S::Active, 1000), &up, false, None, now), Decision::Apply);
        // The period is over and the next cycle not yet open.
        assert_eq!(decide(&sub(S::Active, 1000), &up, true, None, at("2027-05-01T00:00:00Z")), Decision::Apply);
        let mut first = sub(S::Active, 1000);
        first.next_sequence = 1;
        assert_eq!(decide(&first, &up, true, None, now), Decision::Apply);
    }
}
