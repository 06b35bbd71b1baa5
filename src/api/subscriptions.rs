//! `/v1/subscriptions`

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Authed;
use super::extract::{self, Body, Id, Page, Query};
use super::idempotency::{self, Answered, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::merchants::Merchant;
use crate::plans;
use crate::subscriptions::changes::{self, ChangeRequest, ChangeStatus, ChangeView};
use crate::subscriptions::{
    CreateSubscription, SubscriptionStatus, SubscriptionView, UpdateSubscription, lifecycle, repo,
};
use crate::test_clocks;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionQuery {
    pub status: Option<SubscriptionStatus>,
    pub customer_account_id: Option<String>,
    pub plan_id: Option<Uuid>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseRequest {
    /// When to resume automatically; absent = until resumed.
    pub resume_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelRequest {
    /// Cancel when the current period ends instead of now.
    #[serde(default)]
    pub at_period_end: bool,
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    responses((status = 201, body = SubscriptionView), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateSubscription>(&body, false)?;
    let a = create_subscription(&app, &m, key, "POST /v1/subscriptions", &body, req).await?;
    Ok(idempotency::respond(a.status, a.body, a.replayed))
}

/// Everything `POST /v1/subscriptions` does with a parsed request, shared with the
/// dashboard's "New subscription" form: the gateway asked about the payment method,
/// the start time read from the test clock (sandbox merchants only), then, in one
/// transaction guarded by `key` (with `body` as the request it names),
/// `lifecycle::create` (one `created` event, actor `merchant`) and the lease stamp,
/// and after commit the jobs it made due (the first charge) enqueued.
pub(crate) async fn create_subscription(
    app: &App,
    m: &Merchant,
    key: IdempotencyKey,
    route: &str,
    body: &[u8],
    req: CreateSubscription,
) -> crate::error::Result<Answered> {
    let pm_accepted = app.accepts(m.merchant_key, req.payment_method.as_deref()).await?;
    // A subscription on a test clock starts at the clock's frozen time
    // (docs/api.md#test-clocks); only a sandbox merchant has one.
    let now = match req.test_clock_id {
        Some(clock) => {
            test_clocks::sandbox_only(m.sandbox)?;
            let mut conn = app.pool.acquire().await?;
            match test_clocks::get(&mut conn, m.id, clock).await {
                Ok(c) => c.frozen_time,
                Err(crate::Error::NotFound(_)) => {
                    return Err(crate::Error::validation("testClockId", "no such test clock"));
                }
                Err(e) => return Err(e),
            }
        }
        None => app.clock.now().await?,
    };
    idempotency::answer(app, m.id, key, route, body, async |tx| {
        // The plan is checked after the key is claimed: a replay returns the stored
        // response even if the plan has been archived since.
        let plan = match req.plan_id {
            Some(id) => match plans::repo::get(tx, m.id, id).await {
                Ok(p) => Some(p),
                Err(crate::Error::NotFound(_)) => return Err(crate::Error::validation("planId", "no such plan")),
                Err(e) => return Err(e),
            },
            None => None,
        };
        let valid = req.validate(plan.as_ref(), pm_accepted)?;
        let c = lifecycle::create(tx, m.id, valid, now).await?;
        if !c.jobs.is_empty() {
            crate::lease::stamp_subscription(tx, c.subscription.id, app.lease_secs).await?;
        }
        Ok(Outcome::new(StatusCode::CREATED, SubscriptionView::from(&c.subscription)).with_jobs(c.jobs))
    })
    .await
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", params(SubscriptionQuery),
    responses((status = 200, body = Page<SubscriptionView>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    Authed(m): Authed,
    Query(q): Query<SubscriptionQuery>,
) -> Result<Json<Page<SubscriptionView>>> {
    let limit = extract::limit(q.limit)?;
    let f = repo::SubscriptionFilter {
        status: q.status,
        customer_account_id: q.customer_account_id,
        plan_id: q.plan_id,
        after: extract::cursor(q.cursor.as_deref())?,
        limit: limit + 1,
    };
    let mut conn = app.pool.acquire().await?;
    let rows = repo::list(&mut conn, m.id, &f).await?;
    Ok(Json(Page::new(rows, limit, |s| s.id.to_string(), |s| SubscriptionView::from(s))))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = Uuid, Path)),
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<SubscriptionView>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(SubscriptionView::from(&repo::get(&mut conn, m.id, id).await?)))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = Uuid, Path)),
    request_body = UpdateSubscription,
    responses((status = 200, body = SubscriptionView), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    Body(body): Body,
) -> Result<Json<SubscriptionView>> {
    let req = extract::parse::<UpdateSubscription>(&body, false)?;
    let pm_accepted = app.accepts(m.merchant_key, req.payment_method.as_deref()).await?;
    let changes = req.validate(pm_accepted)?;
    let now = now_for(&app, m.id, id).await?;
    let mut tx = app.pool.begin().await?;
    let c = lifecycle::update(&mut tx, m.id, id, changes, now).await?;
    if !c.jobs.is_empty() {
        crate::lease::stamp_subscription(&mut tx, id, app.lease_secs).await?;
    }
    tx.commit().await?;
    app.enqueue(&c.jobs).await;
    Ok(Json(SubscriptionView::from(&c.subscription)))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = Uuid, Path)),
    responses((status = 200, body = SubscriptionView, description = "Cancelled now"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<SubscriptionView>> {
    let now = now_for(&app, m.id, id).await?;
    let mut tx = app.pool.begin().await?;
    let c = lifecycle::cancel(&mut tx, m.id, id, false, now).await?;
    tx.commit().await?;
    Ok(Json(SubscriptionView::from(&c.subscription)))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions", params(("id" = Uuid, Path)),
    request_body(content = Option<PauseRequest>),
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn pause(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<PauseRequest>(&body, true)?;
    let mut e = Vec::new();
    crate::validate::instant(&mut e, "resumeAt", req.resume_at);
    crate::validate::finish(e)?;
    let now = now_for(&app, m.id, id).await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/subscriptions/{id}/pause"), &body, async |tx| {
        let c = lifecycle::pause(tx, m.id, id, req.resume_at, now).await?;
        Ok(Outcome::new(StatusCode::OK, SubscriptionView::from(&c.subscription)).with_jobs(c.jobs))
    })
    .await
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions", params(("id" = Uuid, Path)),
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resume(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    extract::parse::<extract::NoFields>(&body, true)?;
    let now = now_for(&app, m.id, id).await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/subscriptions/{id}/resume"), &body, async |tx| {
        let c = lifecycle::resume(tx, m.id, id, now).await?;
        if !c.jobs.is_empty() {
            crate::lease::stamp_subscription(tx, id, app.lease_secs).await?;
        }
        Ok(Outcome::new(StatusCode::OK, SubscriptionView::from(&c.subscription)).with_jobs(c.jobs))
    })
    .await
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "subscriptions", params(("id" = Uuid, Path)),
    request_body(content = Option<CancelRequest>),
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CancelRequest>(&body, true)?;
    let now = now_for(&app, m.id, id).await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/subscriptions/{id}/cancel"), &body, async |tx| {
        let c = lifecycle::cancel(tx, m.id, id, req.at_period_end, now).await?;
        Ok(Outcome::new(StatusCode::OK, SubscriptionView::from(&c.subscription)).with_jobs(c.jobs))
    })
    .await
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/change", tag = "subscriptions", params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    request_body = ChangeRequest,
    responses((status = 200, body = ChangeView, description = "Applied now, or scheduled for the period's end"),
        (status = 202, body = ChangeView, description = "The proration charge is in flight; the new terms apply once it is approved"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn change(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let input = extract::parse::<ChangeRequest>(&body, false)?.validate()?;
    let now = now_for(&app, m.id, id).await?;
    idempotency::run(&app, m.id, key, &format!("POST /v1/subscriptions/{id}/change"), &body, async |tx| {
        let c = changes::change(tx, m.id, id, input, now, app.lease_secs).await?;
        let status = if c.view.status == ChangeStatus::AwaitingPayment { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok(Outcome::new(status, c.view).with_jobs(c.jobs))
    })
    .await
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/change/preview", tag = "subscriptions", params(("id" = Uuid, Path)),
    request_body = ChangeRequest,
    responses((status = 200, body = ChangeView, description = "What the change would do now; nothing is stored"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn change_preview(
    State(app): State<App>,
    Authed(m): Authed,
    Id(id): Id,
    Body(body): Body,
) -> Result<Json<ChangeView>> {
    let input = extract::parse::<ChangeRequest>(&body, false)?.validate()?;
    let now = now_for(&app, m.id, id).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(Json(changes::preview(&mut conn, m.id, id, input, now).await?))
}

/// The billing time of the merchant's subscription `id`: its test clock's, or the
/// deployment's (docs/api.md#test-clocks).
async fn now_for(app: &App, merchant_id: Uuid, id: Uuid) -> Result<DateTime<Utc>> {
    let mut conn = app.pool.acquire().await?;
    Ok(test_clocks::now_for_subscription(&mut conn, &app.clock, Some(merchant_id), id).await?)
}
