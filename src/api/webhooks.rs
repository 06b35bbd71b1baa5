//! `/v1/webhook-endpoints` and `/v1/webhook-deliveries` (docs/webhooks.md).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use jobs::{DeliverWebhook, Job};
use serde::{Deserialize, Serialize};

use super::auth::Authed;
use super::extract::{self, Body, Id, Page, Query};
use super::idempotency::{self, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::error::{Error, FieldError};
use crate::events::Actor;
use crate::webhooks::deliveries::{self, DeliveryFilter};
use crate::webhooks::endpoints::{self, CreateEndpoint, RotateSecret, UpdateEndpoint};
use crate::webhooks::{DeliveryStatus, DeliveryView, EndpointView};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    pub since: DateTime<Utc>,
    /// Defaults to now.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    /// Events queued to be sent again.
    pub replayed: i64,
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = CreateEndpoint,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = EndpointView, description = "Created; `secret` is shown in this answer only"),
        (status = 400, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateEndpoint>(&body, false)?;
    idempotency::run(&app, m.id, key, "POST /v1/webhook-endpoints", &body, async |tx| {
        let e = endpoints::create(tx, m.id, m.sandbox, req).await?;
        Ok(Outcome::new(StatusCode::CREATED, e.view_with_secret()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, body = Page<EndpointView>)))]
pub async fn list(State(app): State<App>, Authed(m): Authed) -> Result<Json<Page<EndpointView>>> {
    let mut conn = app.pool.acquire().await?;
    let rows = endpoints::list(&mut conn, m.id).await?;
    Ok(Json(Page { data: rows.iter().map(|e| e.view()).collect(), next_cursor: None }))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<EndpointView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(endpoints::get(&mut conn, m.id, id).await?.view()))
}

#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = uuid::Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header)), request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<UpdateEndpoint>(&body, false)?;
    idempotency::run(&app, m.id, key, &format!("PATCH /v1/webhook-endpoints/{id}"), &body, async |tx| {
        let e = endpoints::update(tx, m.id, m.sandbox, id, req).await?;
        Ok(Outcome::new(StatusCode::OK, e.view()))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = EndpointView, description = "Deleted, with its deliveries"), (status = 404, body = Problem)))]
pub async fn delete(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<EndpointView>> {
    let mut tx = app.pool.begin().await?;
    let e = endpoints::delete(&mut tx, m.id, id).await?;
    tx.commit().await?;
    Ok(Json(e.view()))
}

#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = uuid::Uuid, Path), ("Idempotency-Key" = Option<String>, Header)), request_body = RotateSecret,
    responses((status = 200, body = EndpointView, description = "The new `secret`, shown in this answer only"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn rotate_secret(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<RotateSecret>(&body, true)?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/webhook-endpoints/{id}/rotate-secret"), &body, async |tx| {
        let e = endpoints::rotate(tx, m.id, id, req).await?;
        Ok(Outcome::new(StatusCode::OK, e.view_with_secret()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks",
    params(("id" = uuid::Uuid, Path), DeliveryQuery),
    responses((status = 200, body = Page<DeliveryView>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn deliveries(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Page<DeliveryView>>> {
    let limit = extract::limit(q.limit)?;
    let after = extract::cursor(q.cursor.as_deref())?;
    if let Some(t) = &q.kind
        && !crate::webhooks::types::ALL.contains(&t.as_str())
    {
        return Err(Error::Validation(vec![FieldError::new("type", "must be a known event type")]).into());
    }
    let f = DeliveryFilter { status: q.status, kind: q.kind, after, limit: limit + 1 };
    let mut conn = app.pool.acquire().await?;
    let rows = deliveries::list(&mut conn, m.id, id, &f).await?;
    Ok(Json(Page::new(rows, limit, |d| d.id.to_string(), |d| DeliveryView::from(d))))
}

#[utoipa::path(post, path = "/v1/webhook-deliveries/{id}/retry", tag = "webhooks",
    params(("id" = uuid::Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = DeliveryView, description = "Queued to be sent now"), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn retry(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    extract::parse::<extract::NoFields>(&body, true)?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/webhook-deliveries/{id}/retry"), &body, async |tx| {
        let d = deliveries::retry_now(tx, m.id, id, app.lease_secs).await?;
        let job = Job::DeliverWebhook(DeliverWebhook { delivery_id: d.id, attempt: 0 });
        Ok(Outcome::new(StatusCode::ACCEPTED, DeliveryView::from(&d)).with_jobs(vec![job]))
    })
    .await
}

#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/replay", tag = "webhooks",
    params(("id" = uuid::Uuid, Path), ("Idempotency-Key" = Option<String>, Header)), request_body = ReplayRequest,
    responses((status = 202, body = Replayed), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn replay(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<ReplayRequest>(&body, false)?;
    let until = req.until.unwrap_or_else(Utc::now);
    if req.since >= until {
        return Err(Error::Validation(vec![FieldError::new("since", "must be before until")]).into());
    }
    idempotency::run(&app, m.id, key, &format!("POST /v1/webhook-endpoints/{id}/replay"), &body, async |tx| {
        let n = deliveries::replay(tx, m.id, id, req.since, until, Actor::Merchant).await?;
        Ok(Outcome::new(StatusCode::ACCEPTED, Replayed { replayed: n }))
    })
    .await
}
