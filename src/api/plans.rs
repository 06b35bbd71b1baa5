//! `/v1/plans`

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Authed;
use super::extract::{self, Body, Id, Page, Query};
use super::idempotency::{self, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::plans::{CreatePlan, PlanStatus, PlanView, UpdatePlan, repo};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanQuery {
    pub status: Option<PlanStatus>,
    pub tag: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = CreatePlan,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    responses((status = 201, body = PlanView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let valid = extract::parse::<CreatePlan>(&body, false)?.validate()?;
    idempotency::run(&app, m.id, key, "POST /v1/plans", &body, async |tx| {
        let plan = repo::insert(tx, m.id, valid).await?;
        Ok(Outcome::new(StatusCode::CREATED, PlanView::from(&plan)))
    })
    .await
}

#[utoipa::path(get, path = "/v1/plans", tag = "plans", params(PlanQuery),
    responses((status = 200, body = Page<PlanView>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    Authed(m): Authed,
    Query(q): Query<PlanQuery>,
) -> Result<Json<Page<PlanView>>> {
    let limit = extract::limit(q.limit)?;
    let filter = repo::PlanFilter {
        status: q.status,
        tag: q.tag,
        after: extract::cursor(q.cursor.as_deref())?,
        limit: limit + 1,
    };
    let mut conn = app.pool.acquire().await?;
    let rows = repo::list(&mut conn, m.id, &filter).await?;
    Ok(Json(Page::new(rows, limit, |p| p.id.to_string(), |p| PlanView::from(p))))
}

#[utoipa::path(get, path = "/v1/plans/{id}", tag = "plans", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = PlanView), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<PlanView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(PlanView::from(&repo::get(&mut conn, m.id, id).await?)))
}

#[utoipa::path(patch, path = "/v1/plans/{id}", tag = "plans", params(("id" = uuid::Uuid, Path)), request_body = UpdatePlan,
    responses((status = 200, body = PlanView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update(State(app): State<App>, Authed(m): Authed, Id(id): Id, Body(body): Body) -> Result<Json<PlanView>> {
    let changes = extract::parse::<UpdatePlan>(&body, false)?.validate()?;
    let mut tx = app.pool.begin().await?;
    let plan = repo::update(&mut tx, m.id, id, changes).await?;
    tx.commit().await?;
    Ok(Json(PlanView::from(&plan)))
}

#[utoipa::path(delete, path = "/v1/plans/{id}", tag = "plans", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Response> {
    let mut tx = app.pool.begin().await?;
    repo::delete(&mut tx, m.id, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_status(
    app: App,
    m: crate::merchants::Merchant,
    id: uuid::Uuid,
    key: IdempotencyKey,
    body: &[u8],
    route: &str,
    to: PlanStatus,
) -> Result<Response> {
    extract::parse::<extract::NoFields>(body, true)?;
    idempotency::run(&app, m.id, key, route, body, async |tx| {
        let plan = repo::set_status(tx, m.id, id, to).await?;
        Ok(Outcome::new(StatusCode::OK, PlanView::from(&plan)))
    })
    .await
}

#[utoipa::path(post, path = "/v1/plans/{id}/activate", tag = "plans", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = PlanView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn activate(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let route = format!("POST /v1/plans/{id}/activate");
    set_status(app, m, id, key, &body, &route, PlanStatus::Active).await
}

#[utoipa::path(post, path = "/v1/plans/{id}/archive", tag = "plans", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = PlanView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn archive(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let route = format!("POST /v1/plans/{id}/archive");
    set_status(app, m, id, key, &body, &route, PlanStatus::Archived).await
}
