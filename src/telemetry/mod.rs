//! Logs and metrics: the log subscriber (text or JSON), the process-wide Prometheus
//! recorder, and the metrics endpoint of processes without the API.

mod endpoint;
mod logs;
mod recorder;

pub use endpoint::serve;
pub use logs::{LogFormat, init_tracing};
pub use recorder::{init_metrics, render};
