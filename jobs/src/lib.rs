//! recur's queue contract: job payloads, queue names and per-job policy.
//!
//! Everything a producer (API, scheduler) and a consumer (worker) must agree on lives
//! here, so the two sides cannot drift. Queue names are fixed by docs/architecture.md#the-job-graph.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod policy;

pub use policy::{Backoff, JobPolicy, PolicyOverrides};

/// The six job queues. The string forms are the queue names of docs/architecture.md#queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Queue {
    GenerateCycle,
    ChargeTransaction,
    RetryCharge,
    TrialEnd,
    Resume,
    DeliverWebhook,
}

impl Queue {
    pub const ALL: [Queue; 6] = [
        Queue::GenerateCycle,
        Queue::ChargeTransaction,
        Queue::RetryCharge,
        Queue::TrialEnd,
        Queue::Resume,
        Queue::DeliverWebhook,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Queue::GenerateCycle => "generate-cycle",
            Queue::ChargeTransaction => "charge-transaction",
            Queue::RetryCharge => "retry-charge",
            Queue::TrialEnd => "trial-end",
            Queue::Resume => "resume",
            Queue::DeliverWebhook => "deliver-webhook",
        }
    }

    pub fn parse(name: &str) -> Option<Queue> {
        Queue::ALL.into_iter().find(|q| q.name() == name)
    }

    /// The policy this queue's jobs run under (before env overrides).
    pub const fn policy(self) -> JobPolicy {
        match self {
            // Pure Postgres work: retry fast, give up after a few minutes of outage.
            Queue::GenerateCycle | Queue::TrialEnd | Queue::Resume => JobPolicy {
                max_attempts: 10,
                backoff: Backoff { initial: Duration::from_millis(500), factor: 2, max: Duration::from_secs(60) },
                timeout: Duration::from_secs(30),
                concurrency: 200,
            },
            // A gateway call: technical failures (timeouts, 5xx) are retried with the
            // same idempotency key, so a retry can never charge twice.
            Queue::ChargeTransaction | Queue::RetryCharge => JobPolicy {
                max_attempts: 8,
                backoff: Backoff { initial: Duration::from_secs(1), factor: 2, max: Duration::from_secs(300) },
                timeout: Duration::from_secs(45),
                concurrency: 1000,
            },
            // One HTTP call to a merchant's endpoint. A receiver's failure is not a job
            // failure (the delivery's own schedule retries it, for days); these
            // attempts cover recur's side: Postgres unreachable, a crash mid-call.
            Queue::DeliverWebhook => JobPolicy {
                max_attempts: 10,
                backoff: Backoff { initial: Duration::from_secs(1), factor: 2, max: Duration::from_secs(60) },
                timeout: Duration::from_secs(30),
                concurrency: 200,
            },
        }
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `generate-cycle`: create cycle `sequence` of a subscription and its first transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateCycle {
    pub subscription_id: Uuid,
    pub sequence: i32,
    #[serde(default)]
    pub attempt: u32,
}

/// `charge-transaction`: call the gateway for one transaction and record the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChargeTransaction {
    pub transaction_id: Uuid,
    #[serde(default)]
    pub attempt: u32,
}

/// `retry-charge`: open attempt `attempt` of a retrying cycle and charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryCharge {
    pub billing_cycle_id: Uuid,
    /// The cycle attempt (transaction number) this job opens.
    pub cycle_attempt: i32,
    #[serde(default)]
    pub attempt: u32,
}

/// `trial-end`: a trialing subscription becomes active and cycle 1 is generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialEnd {
    pub subscription_id: Uuid,
    #[serde(default)]
    pub attempt: u32,
}

/// `resume`: a paused subscription becomes active (docs/states.md#pause-and-resume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resume {
    pub subscription_id: Uuid,
    #[serde(default)]
    pub attempt: u32,
}

/// `deliver-webhook`: send one webhook message to one endpoint (docs/webhooks.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverWebhook {
    pub delivery_id: Uuid,
    #[serde(default)]
    pub attempt: u32,
}

/// A job of any queue, as the DLQ and the enqueuer handle them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "queue", content = "payload", rename_all = "kebab-case")]
pub enum Job {
    GenerateCycle(GenerateCycle),
    ChargeTransaction(ChargeTransaction),
    RetryCharge(RetryCharge),
    TrialEnd(TrialEnd),
    Resume(Resume),
    DeliverWebhook(DeliverWebhook),
}

impl Job {
    pub fn queue(&self) -> Queue {
        match self {
            Job::GenerateCycle(_) => Queue::GenerateCycle,
            Job::ChargeTransaction(_) => Queue::ChargeTransaction,
            Job::RetryCharge(_) => Queue::RetryCharge,
            Job::TrialEnd(_) => Queue::TrialEnd,
            Job::Resume(_) => Queue::Resume,
            Job::DeliverWebhook(_) => Queue::DeliverWebhook,
        }
    }

    /// How many times this job has failed technically so far (0 on first delivery).
    pub fn attempt(&self) -> u32 {
        match self {
            Job::GenerateCycle(j) => j.attempt,
            Job::ChargeTransaction(j) => j.attempt,
            Job::RetryCharge(j) => j.attempt,
            Job::TrialEnd(j) => j.attempt,
            Job::Resume(j) => j.attempt,
            Job::DeliverWebhook(j) => j.attempt,
        }
    }

    /// The same job with its attempt counter set (for retry and DLQ replay).
    pub fn with_attempt(mut self, attempt: u32) -> Job {
        match &mut self {
            Job::GenerateCycle(j) => j.attempt = attempt,
            Job::ChargeTransaction(j) => j.attempt = attempt,
            Job::RetryCharge(j) => j.attempt = attempt,
            Job::TrialEnd(j) => j.attempt = attempt,
            Job::Resume(j) => j.attempt = attempt,
            Job::DeliverWebhook(j) => j.attempt = attempt,
        }
        self
    }

    /// The billing object the job concerns: (object type, id).
    pub fn object(&self) -> (&'static str, Uuid) {
        match self {
            Job::GenerateCycle(j) => ("subscription", j.subscription_id),
            Job::ChargeTransaction(j) => ("transaction", j.transaction_id),
            Job::RetryCharge(j) => ("billing_cycle", j.billing_cycle_id),
            Job::TrialEnd(j) => ("subscription", j.subscription_id),
            Job::Resume(j) => ("subscription", j.subscription_id),
            Job::DeliverWebhook(j) => ("webhook_delivery", j.delivery_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_the_contract() {
        let names: Vec<_> = Queue::ALL.iter().map(|q| q.name()).collect();
        assert_eq!(
            names,
            ["generate-cycle", "charge-transaction", "retry-charge", "trial-end", "resume", "deliver-webhook"]
        );
        for q in Queue::ALL {
            assert_eq!(Queue::parse(q.name()), Some(q));
        }
        assert_eq!(Queue::parse("charge"), None);
    }

    #[test]
    fn job_round_trips_with_its_queue_tag() {
        let job = Job::ChargeTransaction(ChargeTransaction { transaction_id: Uuid::nil(), attempt: 2 });
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["queue"], "charge-transaction");
        assert_eq!(json["payload"]["transactionId"], Uuid::nil().to_string());
        let back: Job = serde_json::from_value(json).unwrap();
        assert_eq!(back, job);
        assert_eq!(back.with_attempt(0).attempt(), 0);
    }
}
