//! Webhooks (docs/webhooks.md): merchants are told what happened by signed HTTP
//! calls. The events table is the outbox (`crate::events::record` writes each event's
//! deliveries with it); the scheduler leases due deliveries (`crate::lease`); the
//! `deliver-webhook` job sends one (`send`).

pub mod client;
pub mod deliveries;
pub mod endpoints;
pub mod schedule;
pub mod send;
pub mod signing;
pub mod snapshot;
pub mod types;

pub use deliveries::{Delivery, DeliveryStatus, DeliveryView};
pub use endpoints::{Endpoint, EndpointStatus, EndpointView};
pub use send::{Deliverer, Sender, Sent};
