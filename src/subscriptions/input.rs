//! Subscription requests and their validation.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::billing::calendar::Interval;
use crate::customers::CustomerInput;
use crate::error::{Error, FieldError, Result};
use crate::money::{AmountInput, Currency, parse_amount};
use crate::paylinks::{CollectionMethod, DEFAULT_DAYS_UNTIL_DUE};
use crate::plans::{Plan, PlanStatus};
use crate::validate::{self, Errors, double_option};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSubscription {
    pub customer: CustomerInput,
    /// An active plan; or give amount, currency and interval inline.
    pub plan_id: Option<Uuid>,
    pub amount: Option<AmountInput>,
    pub currency: Option<String>,
    pub interval: Option<Interval>,
    pub description: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    /// UTC hour (0–23) at which cycles are charged.
    pub charge_hour: Option<i16>,
    /// A gateway payment-method token; without one the subscription stays `pending`.
    pub payment_method: Option<String>,
    /// Overrides the plan's trial (0 = no trial).
    pub trial_days: Option<i32>,
    pub authorized_limit: Option<AmountInput>,
    pub partner_reference: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A test clock of the (sandbox) merchant: the subscription follows its time.
    pub test_clock_id: Option<Uuid>,
    /// `charge_automatically` (default: the plan's) or `send_payment_link`
    /// (docs/payment-links.md): then no payment method is needed.
    pub collection_method: Option<CollectionMethod>,
    /// Days a payment link stays payable after the due time, 1–60 (default: the plan's, or 7).
    pub days_until_due: Option<i32>,
}

/// A checked subscription request, terms resolved from the plan or inline.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub customer: CustomerInput,
    pub plan_id: Option<Uuid>,
    pub amount: Decimal,
    pub currency: Currency,
    pub interval: Interval,
    pub grace_period_days: i32,
    pub retry_schedule_hours: Vec<i32>,
    pub description: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub charge_hour: Option<i16>,
    pub payment_method: Option<String>,
    pub trial_days: Option<i32>,
    pub authorized_limit: Option<Decimal>,
    pub partner_reference: Option<String>,
    pub metadata: Value,
    pub test_clock_id: Option<Uuid>,
    pub collection_method: CollectionMethod,
    pub days_until_due: i32,
}

/// Payment-method errors answer 400 (docs/api.md#sandbox-payment-methods);
/// every other rule 422. Either way every bad field is listed.
pub(crate) fn finish_with_payment_method(errors: Errors) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else if errors.iter().any(|e| e.field == "paymentMethod") {
        Err(Error::BadRequest { detail: "the request has invalid fields".into(), errors })
    } else {
        Err(Error::Validation(errors))
    }
}

/// `accepted`: the merchant's gateway's verdict on `pm` (`App::accepts`).
pub(crate) fn check_payment_method(e: &mut Errors, pm: Option<&str>, accepted: bool) {
    if pm.is_some() && !accepted {
        e.push(FieldError::new("paymentMethod", "is not a payment method this gateway accepts"));
    }
}

impl CreateSubscription {
    /// Check the request; `plan` is the plan it names (already loaded, merchant-scoped).
    /// `pm_accepted`: whether the merchant's gateway accepts the payment method given.
    pub fn validate(self, plan: Option<&Plan>, pm_accepted: bool) -> Result<NewSubscription> {
        let mut e = Errors::new();
        self.customer.check("customer", &mut e);
        let (amount, currency, interval, grace, retries, plan_trial) = match plan {
            Some(p) => {
                if p.status != PlanStatus::Active {
                    e.push(FieldError::new("planId", "the plan is not active"));
                }
                for (f, given) in [
                    ("amount", self.amount.is_some()),
                    ("currency", self.currency.is_some()),
                    ("interval", self.interval.is_some()),
                ] {
                    if given {
                        e.push(FieldError::new(f, "comes from the plan; do not send it with planId"));
                    }
                }
                let cur = Currency::parse(&p.currency);
                (
                    Some(p.amount),
                    cur,
                    Some(p.interval()),
                    p.grace_period_days,
                    p.retry_schedule_hours.clone(),
                    p.trial_days,
                )
            }
            None => {
                let cur = match &self.currency {
                    Some(c) => crate::plans::repo_check_currency(&mut e, "currency", c),
                    None => {
                        e.push(FieldError::new("currency", "is required without planId"));
                        None
                    }
                };
                let amount = match &self.amount {
                    Some(a) => match parse_amount(&a.0, cur) {
                        Ok(v) => Some(v),
                        Err(m) => {
                            e.push(FieldError::new("amount", m));
                            None
                        }
                    },
                    None => {
                        e.push(FieldError::new("amount", "is required without planId"));
                        None
                    }
                };
                match &self.interval {
                    Some(i) => {
                        if let Err(m) = i.validate() {
                            e.push(FieldError::new("interval.count", m));
                        }
                    }
                    None => e.push(FieldError::new("interval", "is required without planId")),
                }
                (amount, cur, self.interval, 0, crate::plans::DEFAULT_RETRY_SCHEDULE.to_vec(), None)
            }
        };
        validate::opt_text(&mut e, "description", self.description.as_deref(), 2000);
        if let Some(h) = self.charge_hour {
            validate::range(&mut e, "chargeHour", h as i64, 0, 23);
        }
        validate::instant(&mut e, "startAt", self.start_at);
        validate::instant(&mut e, "endAt", self.end_at);
        if let (Some(s), Some(end)) = (self.start_at, self.end_at)
            && end <= s
        {
            e.push(FieldError::new("endAt", "must be after startAt"));
        }
        if let Some(t) = self.trial_days {
            validate::range(&mut e, "trialDays", t as i64, 0, 730);
        }
        check_payment_method(&mut e, self.payment_method.as_deref(), pm_accepted);
        let authorized_limit = self.authorized_limit.as_ref().and_then(|a| match parse_amount(&a.0, currency) {
            Ok(v) => Some(v),
            Err(m) => {
                e.push(FieldError::new("authorizedLimit", m));
                None
            }
        });
        if let Some(r) = &self.partner_reference {
            validate::text(&mut e, "partnerReference", r, 1, 255);
        }
        let metadata = self.metadata.unwrap_or_else(|| Value::Object(Default::default()));
        validate::metadata(&mut e, "metadata", &metadata);
        let collection_method = self
            .collection_method
            .or(plan.map(|p| p.collection_method))
            .unwrap_or(CollectionMethod::ChargeAutomatically);
        let days_until_due = self.days_until_due.or(plan.map(|p| p.days_until_due)).unwrap_or(DEFAULT_DAYS_UNTIL_DUE);
        validate::range(&mut e, "daysUntilDue", days_until_due as i64, 1, 60);
        finish_with_payment_method(e)?;
        let (Some(amount), Some(currency), Some(interval)) = (amount, currency, interval) else {
            return Err(Error::validation("amount", "is required"));
        };
        let trial_days = match self.trial_days {
            Some(0) => None,
            Some(d) => Some(d),
            None => plan_trial,
        };
        Ok(NewSubscription {
            customer: self.customer,
            plan_id: plan.map(|p| p.id),
            amount,
            currency,
            interval,
            grace_period_days: grace,
            retry_schedule_hours: retries,
            description: self.description,
            start_at: self.start_at,
            end_at: self.end_at,
            charge_hour: self.charge_hour,
            payment_method: self.payment_method,
            trial_days,
            authorized_limit,
            partner_reference: self.partner_reference,
            metadata,
            test_clock_id: self.test_clock_id,
            collection_method,
            days_until_due,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateSubscription {
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Setting a payment method on a `pending` subscription starts it.
    pub payment_method: Option<String>,
    /// Only while trialing; must be in the future.
    pub trial_end_at: Option<DateTime<Utc>>,
    /// A date, or null to remove the end.
    #[serde(default, deserialize_with = "double_option")]
    pub end_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<AmountInput>)]
    pub authorized_limit: Option<Option<AmountInput>>,
    /// UTC hour (0–23) at which cycles are charged, or null to keep the anchor's time
    /// as it is. Moves the anchor to that hour of its day (docs/amendments.md#charge-hour).
    #[serde(default, deserialize_with = "double_option")]
    pub charge_hour: Option<Option<i16>>,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriptionChanges {
    pub description: Option<Option<String>>,
    pub metadata: Option<Value>,
    pub payment_method: Option<String>,
    pub trial_end_at: Option<DateTime<Utc>>,
    pub end_at: Option<Option<DateTime<Utc>>>,
    pub authorized_limit: Option<Option<AmountInput>>,
    pub charge_hour: Option<Option<i16>>,
}

impl UpdateSubscription {
    /// `pm_accepted`: whether the merchant's gateway accepts the payment method given.
    pub fn validate(self, pm_accepted: bool) -> Result<SubscriptionChanges> {
        let mut e = Errors::new();
        if let Some(d) = &self.description {
            validate::opt_text(&mut e, "description", d.as_deref(), 2000);
        }
        if let Some(m) = &self.metadata {
            validate::metadata(&mut e, "metadata", m);
        }
        check_payment_method(&mut e, self.payment_method.as_deref(), pm_accepted);
        validate::instant(&mut e, "trialEndAt", self.trial_end_at);
        validate::instant(&mut e, "endAt", self.end_at.flatten());
        if let Some(Some(a)) = &self.authorized_limit
            && let Err(m) = parse_amount(&a.0, None)
        {
            e.push(FieldError::new("authorizedLimit", m));
        }
        if let Some(Some(h)) = self.charge_hour {
            validate::range(&mut e, "chargeHour", h as i64, 0, 23);
        }
        finish_with_payment_method(e)?;
        Ok(SubscriptionChanges {
            description: self.description,
            metadata: self.metadata,
            payment_method: self.payment_method,
            trial_end_at: self.trial_end_at,
            end_at: self.end_at,
            authorized_limit: self.authorized_limit,
            charge_hour: self.charge_hour,
        })
    }
}
