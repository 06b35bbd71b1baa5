//! Redis key layout: `<namespace>:<queue>:…` as apalis-redis writes it, plus recur's
//! own dead-letter keys. One namespace per deployment (or per test).

use std::time::Duration;

use apalis_redis::Config as QueueConfig;
use jobs::Queue;

#[derive(Debug, Clone)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        Keys { namespace: namespace.to_owned() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// apalis-redis's name for a queue: its keys are `<this>:active`, `<this>:scheduled`, …
    pub fn queue_name(&self, queue: Queue) -> String {
        format!("{}:{}", self.namespace, queue.name())
    }

    /// apalis-redis configuration for one queue, tuned as docs/architecture.md#apalis-redis-tuning explains: no
    /// per-task locking (O(backlog) per job), a short heartbeat so a killed worker's
    /// jobs come back in seconds, no pub/sub events nobody reads.
    /// Results stay on (`persist_results`): without them apalis never acknowledges a
    /// task and it would be re-run as orphaned; the janitor deletes finished tasks.
    pub fn config(&self, queue: Queue) -> QueueConfig {
        QueueConfig::default()
            .queue(self.queue_name(queue))
            .lock_tasks(false)
            .emit_events(false)
            .heartbeat_interval(Duration::from_secs(2))
            .missed_heartbeats(3)
            .batch_size(100)
    }

    /// recur's dead-letter hash for a queue: DLQ id → JSON entry.
    pub fn dead_letters(&self, queue: Queue) -> String {
        format!("{}:dlq:{}", self.namespace, queue.name())
    }

    /// Index of a queue's dead letters by job (payload with attempts zeroed) → DLQ id,
    /// so a job delivered twice is dead-lettered once.
    pub fn dead_letter_index(&self, queue: Queue) -> String {
        format!("{}:dlq-index:{}", self.namespace, queue.name())
    }
}
