//! `/v1/checkout-sessions` (docs/pages.md#checkout-sessions).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Authed;
use super::extract::{self, Body, Id, Page, Query};
use super::idempotency::{self, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::checkout::{self, CreateSession, SessionFilter, SessionView};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionQuery {
    pub subscription_id: Option<Uuid>,
    pub payment_series_id: Option<Uuid>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/checkout-sessions", tag = "checkout", params(SessionQuery),
    responses((status = 200, body = Page<SessionView>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    Authed(m): Authed,
    Query(q): Query<SessionQuery>,
) -> Result<Json<Page<SessionView>>> {
    let limit = extract::limit(q.limit)?;
    let f = SessionFilter {
        subscription_id: q.subscription_id,
        payment_series_id: q.payment_series_id,
        after: extract::cursor(q.cursor.as_deref())?,
        limit: limit + 1,
    };
    let now = app.clock.now().await?;
    let mut conn = app.pool.acquire().await?;
    let rows = checkout::list(&mut conn, m.id, &f).await?;
    Ok(Json(Page::new(rows, limit, |s| s.id.to_string(), |s| SessionView::of(s, now))))
}

#[utoipa::path(post, path = "/v1/checkout-sessions", tag = "checkout", request_body = CreateSession,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Replays the first answer for 24 h, with a new token (the token is not stored)")),
    responses((status = 201, body = SessionView, description = "Created; `token` and `url` are in this answer only"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateSession>(&body, false)?.validate()?;
    let now = app.clock.now().await?;
    let mut minted: Option<String> = None;
    let res = idempotency::run(&app, m.id, key, "POST /v1/checkout-sessions", &body, async |tx| {
        let (s, token) = checkout::create(tx, m.id, req, now).await?;
        minted = Some(token);
        // The stored answer (replayed for a retry) never holds the token.
        Ok(Outcome::new(StatusCode::CREATED, SessionView::of(&s, now)))
    })
    .await?;
    // A retry of a lost answer gets a new token for the same session (the old one,
    // never delivered, stops working); a session no longer open gets none.
    with_token(&app, res, minted, "checkout", async |tx, id| checkout::reissue_token(tx, m.id, id, now).await).await
}

/// The answer of a page session's creation (a checkout session, a customer session):
/// the stored answer with the token minted by this request, or for a replayed one a
/// token `reissue` makes, added as `token` and `url` (`/{page}/<token>`). The stored
/// answer itself never holds a token.
pub(super) async fn with_token(
    app: &App,
    res: Response,
    minted: Option<String>,
    page: &str,
    reissue: impl AsyncFnOnce(&mut sqlx::PgConnection, Uuid) -> crate::Result<Option<String>>,
) -> Result<Response> {
    let replayed = res.headers().contains_key("idempotent-replayed");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), super::BODY_LIMIT)
        .await
        .map_err(|e| crate::Error::Internal(anyhow::anyhow!("reading a stored answer: {e}")))?;
    let mut view: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| crate::Error::Internal(anyhow::anyhow!("a stored answer is not JSON: {e}")))?;
    let token = match minted {
        Some(t) => Some(t),
        None if replayed && status == StatusCode::CREATED => {
            match view["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                Some(id) => {
                    let mut tx = app.pool.begin().await?;
                    let t = reissue(&mut tx, id).await?;
                    tx.commit().await?;
                    t
                }
                None => None,
            }
        }
        None => None,
    };
    if let Some(t) = token {
        view["url"] = format!("{}/{page}/{t}", app.public_url).into();
        view["token"] = t.into();
    }
    let mut out = (status, Json(view)).into_response();
    if replayed {
        out.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(out)
}

#[utoipa::path(get, path = "/v1/checkout-sessions/{id}", tag = "checkout", params(("id" = Uuid, Path)),
    responses((status = 200, body = SessionView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed, Id(id): Id) -> Result<Json<SessionView>> {
    let now = app.clock.now().await?;
    let mut conn = app.pool.acquire().await?;
    Ok(Json(SessionView::of(&checkout::get(&mut conn, m.id, id).await?, now)))
}
