//! Plan storage. Every write records its event in the same transaction.

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Plan, PlanChanges, PlanStatus, PlanView, ValidPlan};
use crate::billing::calendar::IntervalUnit;
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::money::{Currency, parse_amount};
use crate::paylinks::CollectionMethod;

/// A statement that yields whole plans: `$head`, every column of a plan (the enum
/// columns typed), then `$tail`, checked as one query.
macro_rules! query_plans {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Plan,
            $head
                + r#"id, merchant_id, name, description, tags, amount, currency,
                    interval_unit AS "interval_unit: IntervalUnit", interval_count, trial_days, grace_period_days,
                    retry_schedule_hours, metadata, status AS "status: PlanStatus", created_at, updated_at,
                    collection_method AS "collection_method: CollectionMethod", days_until_due"#
                + $tail
            $(, $arg)*
        )
    };
}

fn event(p: &Plan, kind: &'static str, data: Value) -> NewEvent {
    NewEvent::new(p.merchant_id, "plan", p.id, kind, data, Actor::Merchant)
}

pub async fn insert(conn: &mut PgConnection, merchant_id: Uuid, v: ValidPlan) -> Result<Plan> {
    let plan = query_plans!(
        "INSERT INTO plans (id, merchant_id, name, description, tags, amount, currency, interval_unit,
            interval_count, trial_days, grace_period_days, retry_schedule_hours, metadata, status,
            collection_method, days_until_due)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING ",
        "",
        Uuid::now_v7(),
        merchant_id,
        v.name,
        v.description,
        v.tags.as_slice(),
        v.amount,
        v.currency.code(),
        v.interval.unit as _,
        v.interval.count,
        v.trial_days,
        v.grace_period_days,
        v.retry_schedule_hours.as_slice(),
        v.metadata,
        v.status as _,
        v.collection_method as _,
        v.days_until_due,
    )
    .fetch_one(&mut *conn)
    .await?;
    let data = serde_json::to_value(PlanView::from(&plan)).unwrap_or_default();
    events::record_one(conn, event(&plan, "created", data)).await?;
    Ok(plan)
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<Plan> {
    fetch(conn, merchant_id, id, false).await
}

async fn fetch(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, lock: bool) -> Result<Plan> {
    let plan = if lock {
        query_plans!("SELECT ", " FROM plans WHERE id = $1 AND merchant_id = $2 FOR UPDATE", id, merchant_id)
            .fetch_optional(conn)
            .await?
    } else {
        query_plans!("SELECT ", " FROM plans WHERE id = $1 AND merchant_id = $2", id, merchant_id)
            .fetch_optional(conn)
            .await?
    };
    plan.ok_or(Error::NotFound("plan"))
}

pub struct PlanFilter {
    pub status: Option<PlanStatus>,
    pub tag: Option<String>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(conn: &mut PgConnection, merchant_id: Uuid, f: &PlanFilter) -> Result<Vec<Plan>> {
    Ok(query_plans!(
        "SELECT ",
        " FROM plans WHERE merchant_id = $1
           AND ($2::plan_status IS NULL OR status = $2)
           AND ($3::text IS NULL OR $3 = ANY(tags))
           AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5",
        merchant_id,
        f.status as _,
        f.tag,
        f.after,
        f.limit,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn update(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, c: PlanChanges) -> Result<Plan> {
    let mut plan = fetch(conn, merchant_id, id, true).await?;
    if c.touches_terms() && plan.status != PlanStatus::Draft {
        return Err(Error::conflict("amount, currency and interval can change only while the plan is draft"));
    }
    let mut changed = serde_json::Map::new();
    if let Some(cur) = c.currency {
        plan.currency = cur.code().to_owned();
        changed.insert("currency".into(), json!(plan.currency));
    }
    if let Some(raw) = &c.amount {
        plan.amount = parse_amount(&raw.0, Currency::parse(&plan.currency))
            .map_err(|m| Error::Validation(vec![FieldError::new("amount", m)]))?;
    }
    if c.amount.is_some() || c.currency.is_some() {
        // A currency change must still fit the amount's scale.
        let scale_ok = parse_amount(&plan.amount.normalize().to_string(), Currency::parse(&plan.currency));
        scale_ok.map_err(|m| Error::Validation(vec![FieldError::new("amount", m)]))?;
        changed.insert("amount".into(), json!(plan.amount.normalize().to_string()));
    }
    if let Some(i) = c.interval {
        plan.interval_unit = i.unit;
        plan.interval_count = i.count;
        changed.insert("interval".into(), json!(i));
    }
    if let Some(n) = c.name {
        changed.insert("name".into(), json!(n));
        plan.name = n;
    }
    if let Some(d) = c.description {
        changed.insert("description".into(), json!(d));
        plan.description = d;
    }
    if let Some(t) = c.tags {
        changed.insert("tags".into(), json!(t));
        plan.tags = t;
    }
    if let Some(t) = c.trial_days {
        changed.insert("trialDays".into(), json!(t));
        plan.trial_days = t;
    }
    if let Some(g) = c.grace_period_days {
        changed.insert("gracePeriodDays".into(), json!(g));
        plan.grace_period_days = g;
    }
    if let Some(r) = c.retry_schedule_hours {
        changed.insert("retryScheduleHours".into(), json!(r));
        plan.retry_schedule_hours = r;
    }
    if let Some(m) = c.metadata {
        changed.insert("metadata".into(), m.clone());
        plan.metadata = m;
    }
    if let Some(cm) = c.collection_method {
        changed.insert("collectionMethod".into(), json!(cm));
        plan.collection_method = cm;
    }
    if let Some(d) = c.days_until_due {
        changed.insert("daysUntilDue".into(), json!(d));
        plan.days_until_due = d;
    }
    if changed.is_empty() {
        return Ok(plan);
    }
    let plan = query_plans!(
        "UPDATE plans SET name = $3, description = $4, tags = $5, amount = $6, currency = $7,
            interval_unit = $8, interval_count = $9, trial_days = $10, grace_period_days = $11,
            retry_schedule_hours = $12, metadata = $13, collection_method = $14, days_until_due = $15
         WHERE id = $1 AND merchant_id = $2 RETURNING ",
        "",
        plan.id,
        merchant_id,
        plan.name,
        plan.description,
        plan.tags.as_slice(),
        plan.amount,
        plan.currency,
        plan.interval_unit as _,
        plan.interval_count,
        plan.trial_days,
        plan.grace_period_days,
        plan.retry_schedule_hours.as_slice(),
        plan.metadata,
        plan.collection_method as _,
        plan.days_until_due,
    )
    .fetch_one(&mut *conn)
    .await?;
    events::record_one(conn, event(&plan, "updated", Value::Object(changed))).await?;
    Ok(plan)
}

/// `activate` (draft|archived → active) or `archive` (active → archived).
/// Asking for the status a plan already has changes nothing and succeeds.
pub async fn set_status(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid, to: PlanStatus) -> Result<Plan> {
    let plan = fetch(conn, merchant_id, id, true).await?;
    if plan.status == to {
        return Ok(plan);
    }
    let allowed = matches!(
        (plan.status, to),
        (PlanStatus::Draft | PlanStatus::Archived, PlanStatus::Active) | (PlanStatus::Active, PlanStatus::Archived)
    );
    if !allowed {
        return Err(Error::conflict(format!(
            "a {} plan cannot become {}",
            json!(plan.status).as_str().unwrap_or_default(),
            json!(to).as_str().unwrap_or_default()
        )));
    }
    let updated = query_plans!(
        "UPDATE plans SET status = $3 WHERE id = $1 AND merchant_id = $2 RETURNING ",
        "",
        id,
        merchant_id,
        to as _
    )
    .fetch_one(&mut *conn)
    .await?;
    let data = json!({"from": plan.status, "to": to});
    events::record_one(conn, event(&updated, "status_changed", data)).await?;
    Ok(updated)
}

pub async fn delete(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<()> {
    let plan = fetch(conn, merchant_id, id, true).await?;
    let used = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM subscriptions WHERE plan_id = $1) AS "used!""#, id)
        .fetch_one(&mut *conn)
        .await?;
    if used {
        return Err(Error::conflict("the plan is used by subscriptions; archive it instead"));
    }
    sqlx::query!("DELETE FROM plans WHERE id = $1", id).execute(&mut *conn).await?;
    events::record_one(conn, event(&plan, "deleted", json!({}))).await?;
    Ok(())
}
