//! Plan requests and their validation.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use super::{DEFAULT_RETRY_SCHEDULE, PlanStatus};
use crate::billing::calendar::Interval;
use crate::error::{FieldError, Result};
use crate::money::{AmountInput, Currency, parse_amount};
use crate::paylinks::{CollectionMethod, DEFAULT_DAYS_UNTIL_DUE};
use crate::validate::{self, Errors, double_option};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePlan {
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub amount: AmountInput,
    pub currency: String,
    pub interval: Interval,
    pub trial_days: Option<i32>,
    pub grace_period_days: Option<i32>,
    pub retry_schedule_hours: Option<Vec<i32>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// `draft` (default) or `active`.
    pub status: Option<PlanStatus>,
    /// The default of its subscriptions: `charge_automatically` (default) or `send_payment_link`.
    pub collection_method: Option<CollectionMethod>,
    /// The default of its subscriptions, 1–60 (default 7).
    pub days_until_due: Option<i32>,
}

/// A plan request that passed every check.
#[derive(Debug, Clone)]
pub struct ValidPlan {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub amount: Decimal,
    pub currency: Currency,
    pub interval: Interval,
    pub trial_days: Option<i32>,
    pub grace_period_days: i32,
    pub retry_schedule_hours: Vec<i32>,
    pub metadata: Value,
    pub status: PlanStatus,
    pub collection_method: CollectionMethod,
    pub days_until_due: i32,
}

pub(crate) fn check_currency(errors: &mut Errors, field: &str, code: &str) -> Option<Currency> {
    let c = Currency::parse(code);
    if c.is_none() {
        errors.push(FieldError::new(field, "must be an ISO 4217 currency code such as EUR"));
    }
    c
}

pub(crate) fn check_amount(errors: &mut Errors, field: &str, raw: &AmountInput, cur: Option<Currency>) -> Decimal {
    match parse_amount(&raw.0, cur) {
        Ok(v) => v,
        Err(msg) => {
            errors.push(FieldError::new(field, msg));
            Decimal::ZERO
        }
    }
}

pub(crate) fn check_interval(errors: &mut Errors, field: &str, interval: &Interval) {
    if let Err(msg) = interval.validate() {
        errors.push(FieldError::new(format!("{field}.count"), msg));
    }
}

pub(crate) fn check_trial(errors: &mut Errors, field: &str, days: Option<i32>) {
    if let Some(d) = days {
        validate::range(errors, field, d as i64, 1, 730);
    }
}

impl CreatePlan {
    pub fn validate(self) -> Result<ValidPlan> {
        let mut e = Errors::new();
        validate::text(&mut e, "name", &self.name, 1, 255);
        validate::opt_text(&mut e, "description", self.description.as_deref(), 2000);
        validate::tags(&mut e, "tags", &self.tags);
        let currency = check_currency(&mut e, "currency", &self.currency);
        let amount = check_amount(&mut e, "amount", &self.amount, currency);
        check_interval(&mut e, "interval", &self.interval);
        check_trial(&mut e, "trialDays", self.trial_days);
        let grace = self.grace_period_days.unwrap_or(0);
        validate::range(&mut e, "gracePeriodDays", grace as i64, 0, 365);
        let retries = self.retry_schedule_hours.unwrap_or(DEFAULT_RETRY_SCHEDULE.to_vec());
        validate::retry_schedule(&mut e, "retryScheduleHours", &retries);
        let metadata = self.metadata.unwrap_or_else(|| Value::Object(Default::default()));
        validate::metadata(&mut e, "metadata", &metadata);
        let status = self.status.unwrap_or(PlanStatus::Draft);
        if status == PlanStatus::Archived {
            e.push(FieldError::new("status", "a new plan is draft or active"));
        }
        let days_until_due = self.days_until_due.unwrap_or(DEFAULT_DAYS_UNTIL_DUE);
        validate::range(&mut e, "daysUntilDue", days_until_due as i64, 1, 60);
        validate::finish(e)?;
        Ok(ValidPlan {
            name: self.name,
            description: self.description,
            tags: self.tags,
            amount,
            // finish() returned early if the currency was unknown.
            currency: currency.unwrap_or(Currency::parse("EUR").expect("EUR is known")),
            interval: self.interval,
            trial_days: self.trial_days,
            grace_period_days: grace,
            retry_schedule_hours: retries,
            metadata,
            status,
            collection_method: self.collection_method.unwrap_or(CollectionMethod::ChargeAutomatically),
            days_until_due,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePlan {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub amount: Option<AmountInput>,
    pub currency: Option<String>,
    pub interval: Option<Interval>,
    /// A number of days, or null to remove the trial.
    #[serde(default, deserialize_with = "double_option")]
    pub trial_days: Option<Option<i32>>,
    pub grace_period_days: Option<i32>,
    pub retry_schedule_hours: Option<Vec<i32>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Defaults of subscriptions created afterwards.
    pub collection_method: Option<CollectionMethod>,
    pub days_until_due: Option<i32>,
}

/// The checked changes of a PATCH. Money fields are checked against the plan's
/// currency (or the new one) by `repo::update`.
#[derive(Debug, Clone, Default)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub amount: Option<AmountInput>,
    pub currency: Option<Currency>,
    pub interval: Option<Interval>,
    pub trial_days: Option<Option<i32>>,
    pub grace_period_days: Option<i32>,
    pub retry_schedule_hours: Option<Vec<i32>>,
    pub metadata: Option<Value>,
    pub collection_method: Option<CollectionMethod>,
    pub days_until_due: Option<i32>,
}

impl PlanChanges {
    pub fn touches_terms(&self) -> bool {
        self.amount.is_some() || self.currency.is_some() || self.interval.is_some()
    }
}

impl UpdatePlan {
    pub fn validate(self) -> Result<PlanChanges> {
        let mut e = Errors::new();
        if let Some(n) = &self.name {
            validate::text(&mut e, "name", n, 1, 255);
        }
        if let Some(d) = &self.description {
            validate::opt_text(&mut e, "description", d.as_deref(), 2000);
        }
        if let Some(t) = &self.tags {
            validate::tags(&mut e, "tags", t);
        }
        let currency = self.currency.as_deref().and_then(|c| check_currency(&mut e, "currency", c));
        if let Some(a) = &self.amount {
            // Shape and sign now; scale against the final currency in the repo.
            if let Err(msg) = parse_amount(&a.0, None) {
                e.push(FieldError::new("amount", msg));
            }
        }
        if let Some(i) = &self.interval {
            check_interval(&mut e, "interval", i);
        }
        if let Some(t) = self.trial_days {
            check_trial(&mut e, "trialDays", t);
        }
        if let Some(g) = self.grace_period_days {
            validate::range(&mut e, "gracePeriodDays", g as i64, 0, 365);
        }
        if let Some(r) = &self.retry_schedule_hours {
            validate::retry_schedule(&mut e, "retryScheduleHours", r);
        }
        if let Some(m) = &self.metadata {
            validate::metadata(&mut e, "metadata", m);
        }
        if let Some(d) = self.days_until_due {
            validate::range(&mut e, "daysUntilDue", d as i64, 1, 60);
        }
        validate::finish(e)?;
        Ok(PlanChanges {
            name: self.name,
            description: self.description,
            tags: self.tags,
            amount: self.amount,
            currency,
            interval: self.interval,
            trial_days: self.trial_days,
            grace_period_days: self.grace_period_days,
            retry_schedule_hours: self.retry_schedule_hours,
            metadata: self.metadata,
            collection_method: self.collection_method,
            days_until_due: self.days_until_due,
        })
    }
}
