//! One Prometheus recorder per process, with explicit buckets for every histogram so
//! the dashboards' quantiles mean something.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder (idempotent: tests start many apps in one process).
pub fn init_metrics() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let lag = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
        let batch = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("recur_gateway_duration_seconds".into()), &latency)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("recur_job_duration_seconds".into()), &latency))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("recur_http_request_duration_seconds".into()), &latency)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("recur_scheduler_sweep_duration_seconds".into()), &latency)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("recur_due_lag_seconds".into()), &lag))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("recur_webhook_delivery_duration_seconds".into()), &latency)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("recur_webhook_lag_seconds".into()), &lag))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("recur_batch_size".into()), &batch));
        match builder.and_then(|b| b.install_recorder()) {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

pub async fn render() -> impl IntoResponse {
    let body = init_metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
