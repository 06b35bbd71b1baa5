//! The operator's API (`Authorization: Bearer $RECUR_ADMIN_TOKEN`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Admin;
use super::extract::{self, Body, Page, Query};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::error::Error;
use crate::gateway::sandbox::{self, LedgerView};
use crate::merchants::{self, Credentials};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMerchant {
    pub name: String,
    #[serde(default)]
    pub sandbox: bool,
}

#[utoipa::path(post, path = "/admin/merchants", tag = "admin", request_body = CreateMerchant,
    responses((status = 201, body = Credentials), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("admin" = [])))]
pub async fn create_merchant(
    State(app): State<App>,
    _: Admin,
    Body(body): Body,
) -> Result<(StatusCode, Json<Credentials>)> {
    let req = extract::parse::<CreateMerchant>(&body, false)?;
    let c = merchants::create(&app.pool, &req.name, req.sandbox).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClockView {
    pub now: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveClock {
    pub advance_seconds: Option<i64>,
    pub now: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/admin/clock", tag = "admin", responses((status = 200, body = ClockView)), security(("admin" = [])))]
pub async fn get_clock(State(app): State<App>, _: Admin) -> Result<Json<ClockView>> {
    Ok(Json(ClockView { now: app.clock.now().await? }))
}

#[utoipa::path(post, path = "/admin/clock", tag = "admin", request_body = MoveClock,
    responses((status = 200, body = ClockView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("admin" = [])))]
pub async fn move_clock(State(app): State<App>, _: Admin, Body(body): Body) -> Result<Json<ClockView>> {
    let req = extract::parse::<MoveClock>(&body, false)?;
    let now = app.clock.now().await?;
    let to = match (req.advance_seconds, req.now) {
        (Some(s), None) => {
            if !(0..=10 * 366 * 86_400).contains(&s) {
                return Err(Error::validation("advanceSeconds", "must be between 0 and ten years of seconds").into());
            }
            now + chrono::Duration::seconds(s)
        }
        (None, Some(t)) => t,
        _ => return Err(Error::validation("body", "give exactly one of advanceSeconds and now").into()),
    };
    if to >= crate::validate::latest_instant() {
        let field = if req.now.is_some() { "now" } else { "advanceSeconds" };
        return Err(Error::validation(field, "the clock must stay before 9000-01-01T00:00:00Z").into());
    }
    Ok(Json(ClockView { now: app.clock.set(to).await? }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerQuery {
    pub merchant_key: Option<Uuid>,
    pub customer_account_id: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/admin/sandbox/charges", tag = "admin", params(LedgerQuery),
    responses((status = 200, body = Page<LedgerView>)), security(("admin" = [])))]
pub async fn sandbox_charges(
    State(app): State<App>,
    _: Admin,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<Page<LedgerView>>> {
    let limit = extract::limit(q.limit)?;
    let after = extract::cursor(q.cursor.as_deref())?;
    let rows =
        sandbox::list_ledger(&app.pool, q.merchant_key, q.customer_account_id.as_deref(), after, limit + 1).await?;
    Ok(Json(Page::new(rows, limit, |r| r.id.to_string(), Clone::clone)))
}
