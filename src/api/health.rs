//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::problem::{Problem, Result};
use crate::app::App;
use crate::error::Error;

#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "Postgres and Redis reachable"), (status = 503, body = Problem)))]
pub async fn readyz(State(app): State<App>) -> Result<Json<Value>> {
    ready(&app.pool, &app.queue.connection()).await?;
    Ok(Json(json!({"status": "ready", "postgres": "ok", "redis": "ok"})))
}

pub async fn ready(pool: &sqlx::PgPool, redis: &redis::aio::ConnectionManager) -> Result<()> {
    sqlx::query_scalar!(r#"SELECT 1 AS "alive!""#)
        .fetch_one(pool)
        .await
        .map_err(|_| Error::Unavailable("postgres is not reachable".into()))?;
    let mut conn = redis.clone();
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|_| Error::Unavailable("redis is not reachable".into()))?;
    Ok(())
}
