//! Customers and the audit trail.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Authed;
use super::extract::{self, Page, Query};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::customers::{self, Customer};
use crate::error::{Error, FieldError};
use crate::events::{self, Event, EventFilter};

#[utoipa::path(get, path = "/v1/customers/{customerAccountId}", tag = "customers",
    params(("customerAccountId" = String, Path)),
    responses((status = 200, body = Customer), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    Authed(m): Authed,
    account: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Customer>> {
    // axum's own rejection (percent-encoded invalid UTF-8) is plain text: answer a problem.
    let Path(account) = account.map_err(|_| Error::BadRequest {
        detail: "invalid customerAccountId".into(),
        errors: vec![FieldError::new("customerAccountId", "must be percent-encoded UTF-8 text")],
    })?;
    let mut conn = app.pool.acquire().await?;
    Ok(Json(customers::get(&mut conn, m.id, &account).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventQuery {
    pub object_type: Option<String>,
    pub object_id: Option<Uuid>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = Page<Event>), (status = 400, body = Problem)))]
pub async fn events(
    State(app): State<App>,
    Authed(m): Authed,
    Query(q): Query<EventQuery>,
) -> Result<Json<Page<Event>>> {
    let limit = extract::limit(q.limit)?;
    let after_seq = q.cursor.map(|c| c.parse::<i64>()).transpose().map_err(|_| Error::BadRequest {
        detail: "invalid query parameters".into(),
        errors: vec![FieldError::new("cursor", "is not a cursor this API returned")],
    })?;
    let f =
        EventFilter { object_type: q.object_type, object_id: q.object_id, kind: q.kind, after_seq, limit: limit + 1 };
    let mut conn = app.pool.acquire().await?;
    let rows = events::list(&mut conn, m.id, &f).await?;
    Ok(Json(Page::new(rows, limit, |e| e.seq.to_string(), Clone::clone)))
}
