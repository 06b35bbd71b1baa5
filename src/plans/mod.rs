//! Plans: the priced, repeating offers subscriptions are made from (docs/states.md#plans).
//! `draft → active ⇄ archived`; money and interval are frozen once a plan leaves draft.

mod input;
pub mod repo;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::billing::calendar::{Interval, IntervalUnit};
use crate::money::format_amount;
use crate::paylinks::CollectionMethod;

pub(crate) use input::check_currency as repo_check_currency;
pub use input::{CreatePlan, PlanChanges, UpdatePlan, ValidPlan};

pub const DEFAULT_RETRY_SCHEDULE: [i32; 3] = [24, 72, 120];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "plan_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum PlanStatus {
    Draft,
    Active,
    Archived,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub amount: Decimal,
    pub currency: String,
    pub interval_unit: IntervalUnit,
    pub interval_count: i32,
    pub trial_days: Option<i32>,
    pub grace_period_days: i32,
    pub retry_schedule_hours: Vec<i32>,
    pub metadata: Value,
    pub status: PlanStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Defaults for the subscriptions made from it (docs/payment-links.md).
    pub collection_method: CollectionMethod,
    pub days_until_due: i32,
}

impl Plan {
    pub fn interval(&self) -> Interval {
        Interval { unit: self.interval_unit, count: self.interval_count }
    }
}

/// A plan as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Decimal string with the currency's minor units.
    pub amount: String,
    pub currency: String,
    pub interval: Interval,
    pub trial_days: Option<i32>,
    pub grace_period_days: i32,
    pub retry_schedule_hours: Vec<i32>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: PlanStatus,
    pub collection_method: CollectionMethod,
    pub days_until_due: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> PlanView {
        PlanView {
            id: p.id,
            name: p.name.clone(),
            description: p.description.clone(),
            tags: p.tags.clone(),
            amount: format_amount(p.amount, &p.currency),
            currency: p.currency.clone(),
            interval: p.interval(),
            trial_days: p.trial_days,
            grace_period_days: p.grace_period_days,
            retry_schedule_hours: p.retry_schedule_hours.clone(),
            metadata: p.metadata.clone(),
            status: p.status,
            collection_method: p.collection_method,
            days_until_due: p.days_until_due,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
