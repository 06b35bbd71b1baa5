//! Logs and metrics: the log subscriber (text or JSON, with request and job spans),
//! the process-wide Prometheus recorder, the series every role exports from its first
//! scrape, and the metrics endpoint of processes without the API.

mod endpoint;
mod known;
mod logs;
mod recorder;

pub use endpoint::serve;
pub use known::{register_api_metrics, register_scheduler_metrics, register_worker_metrics};
pub use logs::{LogFormat, init_tracing};
pub use recorder::{init_metrics, render};
