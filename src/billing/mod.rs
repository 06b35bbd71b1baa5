//! Billing: the calendar, billing cycles and their transactions (gateway attempts).
//!
//! Where a charge happens: `charge::load_batch` reads it, the gateway answers,
//! `charge::record_batch` writes the outcome through the state machines
//! (`cycle_state`, `transaction_state`) under the lock order (`locks`).

pub mod calendar;
pub mod card_history;
pub mod charge;
pub mod cycle_state;
pub mod cycles;
pub mod dunning;
pub mod generate;
pub mod governor;
pub mod locks;
pub mod proration;
pub mod retry;
pub mod transaction_state;
pub mod transactions;

pub use cycles::{BillingCycle, CycleKind, CycleStatus, CycleView};
pub use transactions::{Transaction, TransactionKind, TransactionStatus, TransactionView};
