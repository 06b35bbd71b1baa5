//! Operator routes over the queues and dead-letter queues (same code as `recur dlq`).

use axum::Json;
use axum::extract::State;
use jobs::Queue;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Admin;
use super::extract::{self, Body, Query};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::dlq::{self, DeadLetter, Filter};
use crate::error::{Error, FieldError};
use crate::queue::stats::{self, QueueStats};

fn queue(name: Option<&str>) -> crate::Result<Option<Queue>> {
    name.map(|n| {
        Queue::parse(n).ok_or_else(|| Error::BadRequest {
            detail: "unknown queue".into(),
            errors: vec![FieldError::new(
                "queue",
                "must be one of generate-cycle, charge-transaction, retry-charge, trial-end, resume",
            )],
        })
    })
    .transpose()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuesView {
    pub data: Vec<QueueStats>,
}

#[utoipa::path(get, path = "/admin/queues", tag = "admin", responses((status = 200, body = QueuesView)), security(("admin" = [])))]
pub async fn queues(State(app): State<App>, _: Admin) -> Result<Json<QueuesView>> {
    Ok(Json(QueuesView { data: stats::all(&app.queue).await? }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DlqQuery {
    pub queue: Option<String>,
    pub limit: Option<i64>,
    pub error_contains: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    pub data: Vec<DeadLetter>,
}

#[utoipa::path(get, path = "/admin/dlq", tag = "admin", params(DlqQuery), responses((status = 200, body = DeadLetters), (status = 400, body = Problem)),
    security(("admin" = [])))]
pub async fn list(State(app): State<App>, _: Admin, Query(q): Query<DlqQuery>) -> Result<Json<DeadLetters>> {
    let limit = extract::limit(q.limit)?;
    let f = Filter { queue: queue(q.queue.as_deref())?, error_contains: q.error_contains, failed_before: None };
    Ok(Json(DeadLetters { data: dlq::find(&app.queue, &f, limit as usize).await? }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    /// Dead letters to replay; or `all` with optional `queue` / `errorContains`.
    #[serde(default)]
    pub ids: Vec<Uuid>,
    #[serde(default)]
    pub all: bool,
    pub queue: Option<String>,
    pub error_contains: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    /// Back on their live queues.
    pub replayed: Vec<Uuid>,
    /// Removed without a new job: a later attempt of the same cycle replaced them.
    pub superseded: Vec<Uuid>,
}

#[utoipa::path(post, path = "/admin/dlq/replay", tag = "admin", request_body = ReplayRequest,
    responses((status = 200, body = Replayed), (status = 404, body = Problem), (status = 422, body = Problem)), security(("admin" = [])))]
pub async fn replay(State(app): State<App>, _: Admin, Body(body): Body) -> Result<Json<Replayed>> {
    let req = extract::parse::<ReplayRequest>(&body, false)?;
    let targets = if !req.ids.is_empty() {
        if req.all {
            return Err(Error::validation("all", "give ids or all, not both").into());
        }
        let mut found = Vec::new();
        for id in &req.ids {
            found.push(dlq::get(&app.queue, *id).await?);
        }
        found
    } else if req.all {
        let f = Filter { queue: queue(req.queue.as_deref())?, error_contains: req.error_contains, failed_before: None };
        dlq::find(&app.queue, &f, usize::MAX).await?
    } else {
        return Err(Error::validation("ids", "give ids, or all: true").into());
    };
    let now = app.clock.now().await?;
    let (mut replayed, mut superseded) = (Vec::new(), Vec::new());
    for d in targets {
        match dlq::replay(&app.pool, &app.queue, &d, now, app.lease_secs).await? {
            dlq::Replayed::Requeued => replayed.push(d.id),
            dlq::Replayed::Superseded => superseded.push(d.id),
        }
    }
    Ok(Json(Replayed { replayed, superseded }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainRequest {
    pub queue: Option<String>,
    /// Only entries that failed at least this long ago.
    pub older_than_seconds: Option<u64>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    pub drained: Vec<Uuid>,
    pub dry_run: bool,
}

#[utoipa::path(post, path = "/admin/dlq/drain", tag = "admin", request_body = DrainRequest,
    responses((status = 200, body = Drained)), security(("admin" = [])))]
pub async fn drain(State(app): State<App>, _: Admin, Body(body): Body) -> Result<Json<Drained>> {
    let req = extract::parse::<DrainRequest>(&body, true)?;
    let failed_before = req
        .older_than_seconds
        .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s.min(100 * 365 * 86_400) as i64));
    let f = Filter { queue: queue(req.queue.as_deref())?, error_contains: None, failed_before };
    let drained = dlq::drain(&app.pool, &app.queue, &f, req.dry_run).await?;
    Ok(Json(Drained { drained: drained.iter().map(|d| d.id).collect(), dry_run: req.dry_run }))
}
