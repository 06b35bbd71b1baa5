//! The simulator's Prometheus metrics, on a recorder of its own: it neither needs nor
//! disturbs the process-wide one (tests run several simulators in one process).

use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use super::faults::Fault;

const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("acquirer_request_duration_seconds".into()), &LATENCY_BUCKETS)?
            .build_recorder();
        let m = Metrics { recorder: Arc::new(recorder) };
        // Known series start at 0, so rates and alerts see them from the first scrape.
        m.with(|| {
            for outcome in ["approved", "declined"] {
                metrics::counter!("acquirer_charges_total", "outcome" => outcome).increment(0);
            }
            for fault in Fault::KINDS {
                metrics::counter!("acquirer_faults_total", "kind" => fault.kind()).increment(0);
            }
            metrics::counter!("acquirer_connections_accepted_total").increment(0);
        });
        Ok(m)
    }

    fn with(&self, f: impl FnOnce()) {
        metrics::with_local_recorder(&*self.recorder, f);
    }

    /// A charge recorded in the ledger (replays are not counted again).
    pub fn charge(&self, outcome: &'static str) {
        self.with(|| metrics::counter!("acquirer_charges_total", "outcome" => outcome).increment(1));
    }

    pub fn fault(&self, fault: Fault) {
        self.with(|| metrics::counter!("acquirer_faults_total", "kind" => fault.kind()).increment(1));
    }

    /// A TCP connection accepted: with a pooling client, far fewer than requests.
    pub fn connection(&self) {
        self.with(|| metrics::counter!("acquirer_connections_accepted_total").increment(1));
    }

    pub fn request(&self, route: String, status: u16, elapsed: Duration) {
        self.with(|| {
            metrics::histogram!("acquirer_request_duration_seconds", "route" => route, "status" => status.to_string())
                .record(elapsed.as_secs_f64())
        });
    }

    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// A listener whose accepted connections are counted
/// (`acquirer_connections_accepted_total`).
pub struct Counted<L> {
    pub inner: L,
    pub metrics: Metrics,
}

impl<L: Listener> Listener for Counted<L> {
    type Io = L::Io;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = self.inner.accept().await;
        self.metrics.connection();
        accepted
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
