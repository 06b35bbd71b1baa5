//! `/v1/test-clocks`: test clocks of sandbox merchants (docs/api.md#test-clocks).

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
use crate::scheduler::{self, SchedulerOptions};
use crate::test_clocks::{self, AdvanceTestClock, CreateTestClock, TestClock};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestClockQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/test-clocks", tag = "test clocks", request_body = CreateTestClock,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    responses((status = 201, body = TestClock), (status = 400, body = Problem),
        (status = 403, body = Problem, description = "Bad credentials, or a live merchant"), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateTestClock>(&body, false)?;
    test_clocks::sandbox_only(m.sandbox)?;
    idempotency::run(&app, m.id, key, "POST /v1/test-clocks", &body, async |tx| {
        Ok(Outcome::new(StatusCode::CREATED, test_clocks::create(tx, m.id, req).await?))
    })
    .await
}

#[utoipa::path(get, path = "/v1/test-clocks", tag = "test clocks", params(TestClockQuery),
    responses((status = 200, body = Page<TestClock>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    Authed(m): Authed,
    Query(q): Query<TestClockQuery>,
) -> Result<Json<Page<TestClock>>> {
    let limit = extract::limit(q.limit)?;
    let after = extract::cursor(q.cursor.as_deref())?;
    let mut conn = app.pool.acquire().await?;
    let rows = test_clocks::list(&mut conn, m.id, after, limit + 1).await?;
    Ok(Json(Page::new(rows, limit, |c| c.id.to_string(), Clone::clone)))
}

#[utoipa::path(get, path = "/v1/test-clocks/{id}", tag = "test clocks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = TestClock), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<TestClock>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(test_clocks::get(&mut conn, m.id, id).await?))
}

#[utoipa::path(post, path = "/v1/test-clocks/{id}/advance", tag = "test clocks", params(("id" = uuid::Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    request_body = AdvanceTestClock,
    responses((status = 200, body = TestClock, description = "Moved; the work it made due is enqueued"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Backwards"), (status = 422, body = Problem)))]
pub async fn advance(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<AdvanceTestClock>(&body, false)?;
    let res = idempotency::run(&app, m.id, key, &format!("POST /v1/test-clocks/{id}/advance"), &body, async |tx| {
        Ok(Outcome::new(StatusCode::OK, test_clocks::advance(tx, m.id, id, req.to).await?))
    })
    .await?;
    // Committed: enqueue what the move made due before answering. The clock's own
    // time is read back (a replayed request answers for the clock as it is now).
    let clock = test_clocks::get(&mut *app.pool.acquire().await?, m.id, id).await?;
    let opts = SchedulerOptions { lease_secs: app.lease_secs, ..SchedulerOptions::default() };
    scheduler::enqueue_clock(&app.pool, &app.queue, &opts, id, clock.frozen_time)
        .await
        .map_err(|e| crate::Error::Internal(e.context("enqueue the work the advance made due")))?;
    Ok(res)
}
