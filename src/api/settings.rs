//! `/v1/settings`: the merchant's page settings (docs/pages.md#settings).

use axum::Json;
use axum::extract::State;

use super::auth::Authed;
use super::extract::{self, Body};
use super::problem::{Problem, Result};
use crate::app::App;
use crate::settings::{self, MerchantSettings, UpdateSettings};

#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, body = MerchantSettings), (status = 403, body = Problem)))]
pub async fn get(State(app): State<App>, Authed(m): Authed) -> Result<Json<MerchantSettings>> {
    let mut conn = app.pool.acquire().await?;
    Ok(Json(settings::get(&mut conn, m.id).await?))
}

#[utoipa::path(patch, path = "/v1/settings", tag = "settings", request_body = UpdateSettings,
    responses((status = 200, body = MerchantSettings), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn update(State(app): State<App>, Authed(m): Authed, Body(body): Body) -> Result<Json<MerchantSettings>> {
    let req = extract::parse::<UpdateSettings>(&body, false)?.validate(m.sandbox)?;
    let mut tx = app.pool.begin().await?;
    let s = settings::update(&mut tx, m.id, req).await?;
    tx.commit().await?;
    Ok(Json(s))
}
