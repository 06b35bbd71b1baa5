//! API tests (issue: foundation): one binary, one module per area.

#[path = "../support/mod.rs"]
mod support;

mod amendments;
mod auth;
mod checkout;
mod dashboard;
mod edges;
mod fuzz_regressions;
mod health;
mod idempotency;
mod merchant_gateway;
mod openapi;
mod paylinks;
mod plans;
mod portal;
mod rate_limits;
mod series;
mod smoke;
mod structure;
mod subscriptions;
mod tenants;
mod test_clocks;
mod validation;
mod webhooks;
