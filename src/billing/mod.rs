//! Billing: the calendar, billing cycles and their transactions (gateway attempts).

pub mod calendar;
pub mod cycles;
pub mod transactions;

pub use cycles::{BillingCycle, CycleStatus, CycleView};
pub use transactions::{Transaction, TransactionKind, TransactionStatus, TransactionView};
pub mod charge;
pub mod dunning;
pub mod generate;
pub mod retry;

/// How long (wall-clock seconds) an enqueued job owns its row before the scheduler
/// assumes Redis lost it and enqueues it again (RECUR_LEASE_SECONDS).
pub const DEFAULT_LEASE_SECONDS: i64 = 30;
