//! `/v1/payment-series`: merchant-initiated, unscheduled charges.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use jobs::{ChargeTransaction, Job};
use serde::Deserialize;

use super::auth::Authed;
use super::extract::{self, Body, Id, Page, Query};
use super::idempotency::{self, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::billing::TransactionView;
use crate::series::{self, CreateSeries, CreateSeriesTransaction, SeriesView};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeriesQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/payment-series", tag = "payment-series", request_body = CreateSeries,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = SeriesView), (status = 400, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateSeries>(&body, false)?;
    let pm_accepted = app.accepts(m.merchant_key, Some(&req.payment_method)).await?;
    idempotency::run(&app, m.id, key, "POST /v1/payment-series", &body, async |tx| {
        let s = series::create(tx, m.id, req, pm_accepted).await?;
        Ok(Outcome::new(StatusCode::CREATED, SeriesView::from(&s)))
    })
    .await
}

#[utoipa::path(get, path = "/v1/payment-series", tag = "payment-series", params(SeriesQuery),
    responses((status = 200, body = Page<SeriesView>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    Authed(m): Authed,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Page<SeriesView>>> {
    let limit = extract::limit(q.limit)?;
    let after = extract::cursor(q.cursor.as_deref())?;
    let mut conn = app.pool.acquire().await?;
    let rows = series::list(&mut conn, m.id, after, limit + 1).await?;
    Ok(Json(Page::new(rows, limit, |s| s.id.to_string(), |s| SeriesView::from(s))))
}

#[utoipa::path(get, path = "/v1/payment-series/{id}", tag = "payment-series", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = SeriesView), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<SeriesView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(SeriesView::from(&series::get(&mut conn, m.id, id).await?)))
}

#[utoipa::path(post, path = "/v1/payment-series/{id}/cancel", tag = "payment-series", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = SeriesView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    extract::parse::<extract::NoFields>(&body, true)?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/payment-series/{id}/cancel"), &body, async |tx| {
        let s = series::cancel(tx, m.id, id).await?;
        Ok(Outcome::new(StatusCode::OK, SeriesView::from(&s)))
    })
    .await
}

#[utoipa::path(post, path = "/v1/payment-series/{id}/transactions", tag = "payment-series", params(("id" = uuid::Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateSeriesTransaction,
    responses((status = 202, body = TransactionView, description = "Accepted: poll the transaction"), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_transaction(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateSeriesTransaction>(&body, false)?;
    let now = app.clock.now().await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/payment-series/{id}/transactions"), &body, async |tx| {
        let t = series::create_transaction(tx, m.id, id, req, app.lease_secs, now).await?;
        let job = Job::ChargeTransaction(ChargeTransaction { transaction_id: t.id, attempt: 0 });
        Ok(Outcome::new(StatusCode::ACCEPTED, TransactionView::from(&t)).with_jobs(vec![job]))
    })
    .await
}
