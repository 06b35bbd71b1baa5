//! `POST /v1/customer-sessions` (docs/pages.md#customer-sessions).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::auth::Authed;
use super::extract::{self, Body};
use super::idempotency::{self, IdempotencyKey, Outcome};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::portal::{self, CreateCustomerSession, CustomerSessionView};

#[utoipa::path(post, path = "/v1/customer-sessions", tag = "checkout", request_body = CreateCustomerSession,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Replays the first answer for 24 h, with a new token (the token is not stored)")),
    responses((status = 201, body = CustomerSessionView, description = "Created; `token` and `url` are in this answer only"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    Authed(m): Authed,
    key: IdempotencyKey,
    Body(body): Body,
) -> Result<Response> {
    let req = extract::parse::<CreateCustomerSession>(&body, false)?;
    let expires_in = req.validate()?;
    let now = app.clock.now().await?;
    let mut minted: Option<String> = None;
    let res = idempotency::run(&app, m.id, key, "POST /v1/customer-sessions", &body, async |tx| {
        let (s, token) = portal::create(tx, m.id, &req, expires_in, now).await?;
        minted = Some(token);
        // The stored answer (replayed for a retry) never holds the token.
        Ok(Outcome::new(StatusCode::CREATED, CustomerSessionView::of(&s)))
    })
    .await?;
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
                    let t = portal::reissue_token(&mut tx, m.id, id, now).await?;
                    tx.commit().await?;
                    t
                }
                None => None,
            }
        }
        None => None,
    };
    if let Some(t) = token {
        view["url"] = format!("{}/portal/{t}", app.public_url).into();
        view["token"] = t.into();
    }
    let mut out = (status, Json(view)).into_response();
    if replayed {
        out.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(out)
}
