//! Subscriptions: a customer on a plan (or inline terms), moving through
//! `pending → trialing | active ⇄ past_due → paused → … → cancelled | completed` (docs/states.md#subscriptions).

pub mod changes;
mod input;
pub(crate) use input::{check_payment_method, finish_with_payment_method};
pub mod lifecycle;
pub mod repo;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::billing::calendar::{Calendar, Interval, IntervalUnit};
use crate::money::format_amount;

pub use crate::paylinks::CollectionMethod;
pub use input::{CreateSubscription, NewSubscription, SubscriptionChanges, UpdateSubscription};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "subscription_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Pending,
    Trialing,
    Active,
    PastDue,
    Paused,
    Cancelled,
    Completed,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 7] = [
        SubscriptionStatus::Pending,
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Paused,
        SubscriptionStatus::Cancelled,
        SubscriptionStatus::Completed,
    ];

    pub fn is_final(self) -> bool {
        matches!(self, SubscriptionStatus::Cancelled | SubscriptionStatus::Completed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Pending => "pending",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Cancelled => "cancelled",
            SubscriptionStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub customer_id: Uuid,
    pub customer_account_id: String,
    pub plan_id: Option<Uuid>,
    pub description: Option<String>,
    pub amount: Decimal,
    pub currency: String,
    pub interval_unit: IntervalUnit,
    pub interval_count: i32,
    pub grace_period_days: i32,
    pub retry_schedule_hours: Vec<i32>,
    pub start_at: DateTime<Utc>,
    pub end_at: Option<DateTime<Utc>>,
    pub charge_hour: Option<i16>,
    pub payment_method: Option<String>,
    pub trial_days: Option<i32>,
    pub authorized_limit: Option<Decimal>,
    pub partner_reference: Option<String>,
    pub metadata: Value,
    pub status: SubscriptionStatus,
    pub anchor_at: DateTime<Utc>,
    pub anchor_sequence: i32,
    pub next_sequence: i32,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end_at: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub resume_at: Option<DateTime<Utc>>,
    pub cancel_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<String>,
    /// The sandbox test clock it follows instead of the deployment's (crate::test_clocks).
    pub test_clock_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What is shown of a card collected by a checkout (docs/pages.md#card-handling);
    /// `None` when the merchant set the token itself.
    pub payment_method_brand: Option<String>,
    pub payment_method_last4: Option<String>,
    pub payment_method_exp_month: Option<i16>,
    pub payment_method_exp_year: Option<i16>,
    /// How its cycles are collected (docs/payment-links.md).
    pub collection_method: CollectionMethod,
    /// Days a payment link stays payable after its cycle's due time.
    pub days_until_due: i32,
}

impl Subscription {
    /// The card behind `payment_method`, when a checkout collected it.
    pub fn card(&self) -> Option<crate::cards::Kept> {
        match (
            &self.payment_method_brand,
            &self.payment_method_last4,
            self.payment_method_exp_month,
            self.payment_method_exp_year,
        ) {
            (Some(brand), Some(last4), Some(exp_month), Some(exp_year)) => {
                Some(crate::cards::Kept { brand: brand.clone(), last4: last4.clone(), exp_month, exp_year })
            }
            _ => None,
        }
    }

    /// Attach a card's token and what is kept of it; a token without a card (set
    /// by the merchant) forgets the previous card's details.
    pub fn set_payment_method(&mut self, token: String, card: Option<&crate::cards::Kept>) {
        self.payment_method = Some(token);
        self.payment_method_brand = card.map(|c| c.brand.clone());
        self.payment_method_last4 = card.map(|c| c.last4.clone());
        self.payment_method_exp_month = card.map(|c| c.exp_month);
        self.payment_method_exp_year = card.map(|c| c.exp_year);
    }
    pub fn interval(&self) -> Interval {
        Interval { unit: self.interval_unit, count: self.interval_count }
    }

    pub fn calendar(&self) -> Calendar {
        Calendar { anchor: self.anchor_at, anchor_sequence: self.anchor_sequence, interval: self.interval() }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRef {
    pub customer_account_id: String,
}

/// A subscription as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub id: Uuid,
    pub customer: CustomerRef,
    pub plan_id: Option<Uuid>,
    pub description: Option<String>,
    pub amount: String,
    pub currency: String,
    pub interval: Interval,
    pub start_at: DateTime<Utc>,
    pub end_at: Option<DateTime<Utc>>,
    pub charge_hour: Option<i16>,
    pub payment_method: Option<String>,
    /// Brand, last 4 digits and expiry of the card, when a checkout collected it.
    pub payment_method_details: Option<crate::cards::Kept>,
    pub trial_days: Option<i32>,
    pub authorized_limit: Option<String>,
    pub partner_reference: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: SubscriptionStatus,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub trial_end_at: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub resume_at: Option<DateTime<Utc>>,
    pub cancel_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<String>,
    pub grace_period_days: i32,
    pub retry_schedule_hours: Vec<i32>,
    /// The test clock it follows (sandbox merchants only), if any.
    pub test_clock_id: Option<Uuid>,
    pub collection_method: CollectionMethod,
    pub days_until_due: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> SubscriptionView {
        SubscriptionView {
            id: s.id,
            customer: CustomerRef { customer_account_id: s.customer_account_id.clone() },
            plan_id: s.plan_id,
            description: s.description.clone(),
            amount: format_amount(s.amount, &s.currency),
            currency: s.currency.clone(),
            interval: s.interval(),
            start_at: s.start_at,
            end_at: s.end_at,
            charge_hour: s.charge_hour,
            payment_method: s.payment_method.clone(),
            payment_method_details: s.card(),
            trial_days: s.trial_days,
            authorized_limit: s.authorized_limit.map(|a| format_amount(a, &s.currency)),
            partner_reference: s.partner_reference.clone(),
            metadata: s.metadata.clone(),
            status: s.status,
            current_period_start: s.current_period_start,
            current_period_end: s.current_period_end,
            next_charge_at: s.next_charge_at,
            trial_end_at: s.trial_end_at,
            paused_at: s.paused_at,
            resume_at: s.resume_at,
            cancel_at: s.cancel_at,
            cancelled_at: s.cancelled_at,
            cancellation_reason: s.cancellation_reason.clone(),
            grace_period_days: s.grace_period_days,
            retry_schedule_hours: s.retry_schedule_hours.clone(),
            test_clock_id: s.test_clock_id,
            collection_method: s.collection_method,
            days_until_due: s.days_until_due,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}
