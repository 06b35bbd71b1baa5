//! `/metrics`, `/healthz` and `/readyz` for processes without the API (workers,
//! schedulers), on `RECUR_METRICS_LISTEN`.

use axum::response::IntoResponse;

pub async fn serve(
    listen: std::net::SocketAddr,
    pool: sqlx::PgPool,
    redis: redis::aio::ConnectionManager,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use axum::routing::get;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics listening");
    let ready = move || {
        let (pool, redis) = (pool.clone(), redis.clone());
        async move {
            match crate::api::health::ready(&pool, &redis).await {
                Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
                Err(e) => e.into_response(),
            }
        }
    };
    let router = axum::Router::new()
        .route("/metrics", get(super::render))
        .route("/healthz", get(crate::api::health::healthz))
        .route("/readyz", get(ready));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}
