//! `POST /v1/customer-sessions` (docs/pages.md#customer-sessions).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

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
    super::checkout::with_token(&app, res, minted, "portal", async |tx, id| {
        portal::reissue_token(tx, m.id, id, now).await
    })
    .await
}
