//! What can go wrong on the Redis side of the queues. Each variant keeps its cause as
//! `source()`, so a caller that logs or wraps the error keeps the whole chain.

use jobs::Queue;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis command failed")]
    Redis(#[from] redis::RedisError),
    /// apalis-redis refused or failed a push.
    #[error("enqueue on {queue} failed")]
    Enqueue {
        queue: Queue,
        #[source]
        source: apalis_redis::Error,
    },
    /// A job or dead letter that does not (de)serialise.
    #[error("job payload is not valid JSON for its type")]
    Payload(#[from] serde_json::Error),
    /// A dead letter naming a queue this build does not have.
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_push_names_its_queue_and_keeps_the_redis_error() {
        let redis = redis::RedisError::from((redis::ErrorKind::Io, "connection refused"));
        let e = Error::Enqueue { queue: Queue::RetryCharge, source: apalis_redis::Error::from(redis) };
        let chain = format!("{:#}", anyhow::Error::from(crate::Error::from(e)));
        assert!(chain.starts_with("queue error: enqueue on retry-charge failed: "), "{chain}");
        assert!(chain.contains("connection refused"), "{chain}");
    }
}
