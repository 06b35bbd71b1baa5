//! Engine tests (issue: charge engine): the test clock drives billing through HTTP,
//! real workers and schedulers run the jobs, and every test asserts on the sandbox
//! ledger and Postgres rows.

#[path = "../support/mod.rs"]
mod support;

mod amendments;
mod calendar_walk;
mod checkout;
mod exactly_once;
mod fault_proxy;
mod gateway_fault_run;
mod http_gateway;
mod lifecycle;
mod merchant_gateway;
mod paylinks;
mod races;
mod surge;
mod test_clocks;
mod webhooks;
