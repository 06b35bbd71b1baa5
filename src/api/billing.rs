//! Billing cycles and transactions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::auth::Authed;
use super::extract::{self, Body, Id, Page, Query};
use super::idempotency::{self, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::billing::{CycleView, TransactionView, cycles, retry, transactions};
use crate::db;
use crate::error::{Error, FieldError};
use crate::subscriptions::repo as subscriptions;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CycleQuery {
    pub limit: Option<i64>,
    /// The last sequence of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/billing-cycles", tag = "billing", params(("id" = uuid::Uuid, Path), CycleQuery),
    responses((status = 200, body = Page<CycleView>), (status = 404, body = Problem)))]
pub async fn list_cycles(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    Query(q): Query<CycleQuery>,
) -> Result<Json<Page<CycleView>>> {
    let limit = extract::limit(q.limit)?;
    let after = q.cursor.map(|c| c.parse::<i32>()).transpose().map_err(|_| Error::BadRequest {
        detail: "invalid query parameters".into(),
        errors: vec![FieldError::new("cursor", "is not a cursor this API returned")],
    })?;
    let mut conn = db::snapshot(&app.pool).await?;
    subscriptions::get(&mut conn, m.id, id).await?;
    let rows = cycles::list(&mut conn, id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let views = cycles::with_transactions(&mut conn, rows).await?;
    let next_cursor = if more { rows.last().map(|c| c.sequence.to_string()) } else { None };
    Ok(Json(Page { data: views, next_cursor }))
}

#[utoipa::path(get, path = "/v1/billing-cycles/{id}", tag = "billing", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = CycleView), (status = 404, body = Problem)))]
pub async fn get_cycle(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<CycleView>> {
    let mut conn = db::snapshot(&app.pool).await?;
    let c = cycles::get(&mut conn, m.id, id).await?;
    let mut views = cycles::with_transactions(&mut conn, std::slice::from_ref(&c)).await?;
    views.pop().map(Json).ok_or(Error::NotFound("billing cycle").into())
}

#[utoipa::path(post, path = "/v1/billing-cycles/{id}/retry", tag = "billing", params(("id" = uuid::Uuid, Path)),
    responses((status = 202, body = CycleView, description = "A manual_retry attempt was opened"),
        (status = 200, body = CycleView, description = "The errored attempt had gone through: recorded, nothing charged"),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn retry_cycle(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    extract::parse::<extract::NoFields>(&body, true)?;
    let now = cycle_now(&app, m.id, id).await?;
    // An errored attempt's outcome is unknown (e.g. a timeout after the charge went
    // through): ask the gateway before charging again, so a retry cannot charge twice.
    let reconciled =
        retry::reconcile_first(&mut *app.pool.acquire().await?, &app.gateway, m.merchant_key, m.id, id).await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/billing-cycles/{id}/retry"), &body, async |tx| {
        let (cycle, job) = retry::manual_or_settle(tx, m.id, id, reconciled.as_ref(), app.lease_secs, now).await?;
        let mut views = cycles::with_transactions(tx, std::slice::from_ref(&cycle)).await?;
        let view = views.pop().ok_or(Error::NotFound("billing cycle"))?;
        Ok(match job {
            Some(job) => Outcome::new(StatusCode::ACCEPTED, view).with_jobs(vec![job]),
            None => Outcome::new(StatusCode::OK, view),
        })
    })
    .await
}

#[utoipa::path(post, path = "/v1/billing-cycles/{id}/payment-link", tag = "billing", params(("id" = uuid::Uuid, Path)),
    responses((status = 201, body = CycleView, description = "A fresh payment link (`paymentLink`); earlier links of the cycle are closed"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "The cycle is not failed or error, or its subscription has ended")))]
pub async fn payment_link(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    extract::parse::<extract::NoFields>(&body, true)?;
    // The cycle's subscription's clock (its test clock, if it follows one).
    let now = cycle_now(&app, m.id, id).await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/billing-cycles/{id}/payment-link"), &body, async |tx| {
        crate::paylinks::fresh(tx, m.id, id, now).await?;
        let c = cycles::get(tx, m.id, id).await?;
        let mut views = cycles::with_transactions(tx, std::slice::from_ref(&c)).await?;
        let view = views.pop().ok_or(Error::NotFound("billing cycle"))?;
        Ok(Outcome::new(StatusCode::CREATED, view))
    })
    .await
}

#[utoipa::path(get, path = "/v1/transactions/{id}", tag = "billing", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = TransactionView), (status = 404, body = Problem)))]
pub async fn get_transaction(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<TransactionView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(TransactionView::from(&transactions::get(&mut conn, m.id, id).await?)))
}

/// "Now" for the merchant's cycle `id`: its test clock's time, or the deployment's
/// clock, read before a connection is held (`crate::paylinks::frozen_time`).
async fn cycle_now(
    app: &App,
    merchant_id: uuid::Uuid,
    id: uuid::Uuid,
) -> crate::error::Result<chrono::DateTime<chrono::Utc>> {
    let deployment_now = app.clock.now().await?;
    let frozen = crate::paylinks::frozen_time(&mut *app.pool.acquire().await?, merchant_id, id).await?;
    Ok(frozen.unwrap_or(deployment_now))
}
