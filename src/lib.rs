//! recur: recurring and merchant-initiated card charges.
//!
//! The HTTP API (`api`) validates and stores merchant requests in Postgres and
//! enqueues jobs (`queue`); the scheduler (`scheduler`) sweeps Postgres for due work;
//! workers (`worker`) run the jobs of the `jobs` crate against Postgres and the
//! gateway (`gateway`), applying the billing rules of `billing`.

pub mod acquirer;
pub mod api;
pub mod app;
pub mod batch;
pub mod billing;
pub mod cards;
pub mod checkout;
pub mod cli;
pub mod clock;
pub mod config;
pub mod customers;
pub mod db;
pub mod demo;
pub mod dlq;
pub mod error;
pub mod events;
pub mod gateway;
pub mod lease;
pub mod merchants;
pub mod money;
pub mod ops;
pub mod page_sessions;
pub mod pages;
pub mod paylinks;
pub mod plans;
pub mod portal;
pub mod queue;
pub mod ratelimit;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod series;
pub mod settings;
pub mod subscriptions;
pub mod telemetry;
pub mod test_clocks;
pub mod validate;
pub mod webhooks;
pub mod worker;

pub use error::{Error, Result};
