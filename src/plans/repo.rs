//! Plan storage. Every write records its event in the same transaction.

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Plan, PlanChanges, PlanStatus, PlanView, ValidPlan};
use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::money::{Currency, parse_amount};

const COLUMNS: &str = "id, merchant_id, name, description, tags, amount, currency, interval_unit, \
    interval_count, trial_days, grace_period_days, retry_schedule_hours, metadata, status, created_at, updated_at";

fn event(p: &Plan, kind: &'static str, data: Value) -> NewEvent {
    NewEvent::new(p.merchant_id, "plan", p.id, kind, data, Actor::Merchant)
}

pub async fn insert(conn: &mut PgConnection, merchant_id: Uuid, v: ValidPlan) -> Result<Plan> {
    let plan: Plan = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO plans (id, merchant_id, name, description, tags, amount, currency, interval_unit,
            interval_count, trial_days, grace_period_days, retry_schedule_hours, metadata, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(merchant_id)
    .bind(&v.name)
    .bind(&v.description)
    .bind(&v.tags)
    .bind(v.amount)
    .bind(v.currency.code())
    .bind(v.interval.unit)
    .bind(v.interval.count)
    .bind(v.trial_days)
    .bind(v.grace_period_days)
    .bind(&v.retry_schedule_hours)
    .bind(&v.metadata)
    .bind(v.status)
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
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM plans WHERE id = $1 AND merchant_id = $2{lock}")))
        .bind(id)
        .bind(merchant_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("plan"))
}

pub struct PlanFilter {
    pub status: Option<PlanStatus>,
    pub tag: Option<String>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(conn: &mut PgConnection, merchant_id: Uuid, f: &PlanFilter) -> Result<Vec<Plan>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM plans WHERE merchant_id = $1
           AND ($2::plan_status IS NULL OR status = $2)
           AND ($3::text IS NULL OR $3 = ANY(tags))
           AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5"
    )))
    .bind(merchant_id)
    .bind(f.status)
    .bind(&f.tag)
    .bind(f.after)
    .bind(f.limit)
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
    if changed.is_empty() {
        return Ok(plan);
    }
    let plan: Plan = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE plans SET name = $3, description = $4, tags = $5, amount = $6, currency = $7,
            interval_unit = $8, interval_count = $9, trial_days = $10, grace_period_days = $11,
            retry_schedule_hours = $12, metadata = $13
         WHERE id = $1 AND merchant_id = $2 RETURNING {COLUMNS}"
    )))
    .bind(plan.id)
    .bind(merchant_id)
    .bind(&plan.name)
    .bind(&plan.description)
    .bind(&plan.tags)
    .bind(plan.amount)
    .bind(&plan.currency)
    .bind(plan.interval_unit)
    .bind(plan.interval_count)
    .bind(plan.trial_days)
    .bind(plan.grace_period_days)
    .bind(&plan.retry_schedule_hours)
    .bind(&plan.metadata)
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
    let updated: Plan = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE plans SET status = $3 WHERE id = $1 AND merchant_id = $2 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(merchant_id)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    let data = json!({"from": plan.status, "to": to});
    events::record_one(conn, event(&updated, "status_changed", data)).await?;
    Ok(updated)
}

pub async fn delete(conn: &mut PgConnection, merchant_id: Uuid, id: Uuid) -> Result<()> {
    let plan = fetch(conn, merchant_id, id, true).await?;
    let used: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM subscriptions WHERE plan_id = $1)")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    if used {
        return Err(Error::conflict("the plan is used by subscriptions; archive it instead"));
    }
    sqlx::query("DELETE FROM plans WHERE id = $1").bind(id).execute(&mut *conn).await?;
    events::record_one(conn, event(&plan, "deleted", json!({}))).await?;
    Ok(())
}
