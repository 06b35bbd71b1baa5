//! Series whose label sets are known in advance, registered at 0 when a role starts:
//! Prometheus computes no rate and fires no alert on a series it has never seen, so a
//! counter that appeared only at its first increment would hide the first failures.
//!
//! Left out on purpose: labels that cannot be enumerated (`currency` of
//! `recur_charges_total` and `recur_charge_amount_total`, the gateway's decline `code`
//! of `recur_declines_total`, the `route` of the HTTP metrics), histograms (an empty
//! histogram tells nothing), and gauges whose 0 would be an alert condition rather
//! than "nothing yet" (`recur_workers_alive`, `recur_scheduler_last_sweep_timestamp_seconds`).
//! Registering is idempotent: an existing series keeps its value.

use jobs::Queue;

use crate::billing::transactions::TransactionKind;
use crate::subscriptions::SubscriptionStatus;

const JOB_OUTCOMES: [&str; 3] = ["ok", "retry", "dead"];
const TRANSACTION_KINDS: [TransactionKind; 6] = [
    TransactionKind::Scheduled,
    TransactionKind::Retry,
    TransactionKind::ManualRetry,
    TransactionKind::PaymentSeries,
    TransactionKind::Proration,
    TransactionKind::PaymentLink,
];
/// The `kind` labels of `recur_scheduler_enqueued_total` (one per sweep claim).
const SWEEP_KINDS: [&str; 6] = ["generate", "trial_end", "resume", "retry", "recovered", "webhook"];
/// The `outcome` labels of `recur_webhook_deliveries_total`.
const WEBHOOK_OUTCOMES: [&str; 3] = ["ok", "retry", "failed"];
const QUEUE_STATES: [&str; 4] = ["pending", "scheduled", "running", "dead"];

fn zero(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
    metrics::counter!(name, labels).increment(0);
}

fn zero_gauge(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
    metrics::gauge!(name, labels).increment(0.0);
}

/// Every role that pushes jobs (API, scheduler, worker follow-ups and retries).
fn enqueue_metrics() {
    for q in Queue::ALL {
        zero("recur_jobs_enqueued_total", &[("queue", q.name())]);
    }
}

/// A worker running `queues` (called by `worker::run`).
pub fn register_worker_metrics(queues: &[Queue]) {
    for q in queues {
        for outcome in JOB_OUTCOMES {
            zero("recur_jobs_total", &[("queue", q.name()), ("outcome", outcome)]);
        }
        zero("recur_worker_restarts_total", &[("queue", q.name())]);
    }
    for kind in TRANSACTION_KINDS {
        zero("recur_gateway_errors_total", &[("kind", kind.as_str())]);
    }
    for rule in crate::billing::governor::refusal_rules() {
        zero(crate::billing::governor::METRIC, &[("rule", rule)]);
    }
    if queues.contains(&Queue::DeliverWebhook) {
        for outcome in WEBHOOK_OUTCOMES {
            zero("recur_webhook_deliveries_total", &[("outcome", outcome)]);
        }
    }
    enqueue_metrics();
}

/// A scheduler: its sweep counters and the gauges it samples (overwritten by the first
/// sample, taken at the first sweep).
pub fn register_scheduler_metrics() {
    zero("recur_scheduler_sweeps_total", &[]);
    zero("recur_scheduler_recovered_total", &[]);
    zero("recur_dlq_restored_total", &[]);
    for kind in SWEEP_KINDS {
        zero("recur_scheduler_enqueued_total", &[("kind", kind)]);
    }
    for q in Queue::ALL {
        for state in QUEUE_STATES {
            zero_gauge("recur_queue_depth", &[("queue", q.name()), ("state", state)]);
        }
        zero_gauge("recur_dlq_depth", &[("queue", q.name())]);
    }
    for status in SubscriptionStatus::ALL {
        zero_gauge("recur_subscriptions", &[("status", status.as_str())]);
    }
    for status in ["enabled", "disabled"] {
        zero_gauge("recur_webhook_endpoints", &[("status", status)]);
    }
    enqueue_metrics();
}

/// The API (called by `api::router`): DLQ operations of the admin API and enqueueing.
pub fn register_api_metrics() {
    zero("recur_dlq_drained_total", &[]);
    crate::ratelimit::register_metrics();
    zero(crate::api::auth::FAILURES_METRIC, &[]);
    for q in Queue::ALL {
        zero("recur_dlq_replayed_total", &[("queue", q.name())]);
        zero("recur_dlq_superseded_total", &[("queue", q.name())]);
    }
    enqueue_metrics();
}
