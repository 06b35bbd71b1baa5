//! Operations tests (docs/operations.md#operations): dead-letter operations through the CLI and
//! the admin API, graceful drain of a worker process, the metrics every process
//! exports, the dashboards and alert rules evaluated by a real Prometheus, and the
//! compose stack's wiring. Real Postgres, Redis, Prometheus and `recur` processes.

#[path = "../support/mod.rs"]
mod support;

mod compose;
mod dashboards;
mod demo;
mod dlq;
mod drain;
mod metrics;
mod sigterm;
mod stack;
