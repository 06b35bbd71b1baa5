//! Per-job retry policy: exponential backoff with full jitter, then dead-letter.

use std::time::Duration;

/// Exponential backoff: the n-th retry waits a uniformly random time in
/// `[0, min(max, initial × factor^(n-1))]` ("full jitter", which spreads a thundering
/// herd of failed charges over the whole window instead of re-synchronising it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Backoff {
    /// The upper bound of the wait before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let mult = (self.factor.max(1) as u128).saturating_pow(exp);
        let nanos = self.initial.as_nanos().saturating_mul(mult);
        let capped = nanos.min(self.max.as_nanos());
        Duration::from_nanos(capped.min(u64::MAX as u128) as u64)
    }

    /// The wait before retry number `retry`, given a uniform sample in `[0, 1)`.
    pub fn delay(&self, retry: u32, unit_sample: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit_sample.clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPolicy {
    /// Deliveries in all, the first included; after the last failure the job is dead.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// A run longer than this is a technical failure.
    pub timeout: Duration,
    /// Jobs of this queue run at once in one worker process (default).
    pub concurrency: usize,
}

/// Operator overrides (`RECUR_JOB_MAX_ATTEMPTS`, `RECUR_JOB_BACKOFF_INITIAL_MS`,
/// `RECUR_JOB_BACKOFF_MAX_MS`) that apply to every queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyOverrides {
    pub max_attempts: Option<u32>,
    pub backoff_initial: Option<Duration>,
    pub backoff_max: Option<Duration>,
}

impl JobPolicy {
    pub fn with(mut self, o: &PolicyOverrides) -> JobPolicy {
        if let Some(n) = o.max_attempts {
            self.max_attempts = n.max(1);
        }
        if let Some(d) = o.backoff_initial {
            self.backoff.initial = d;
        }
        if let Some(d) = o.backoff_max {
            self.backoff.max = d;
        }
        self
    }

    /// After `failures` failed deliveries, is the job dead?
    pub fn exhausted(&self, failures: u32) -> bool {
        failures >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff { initial: Duration::from_millis(100), factor: 2, max: Duration::from_secs(1) }
    }

    #[test]
    fn ceiling_grows_exponentially_then_caps() {
        let b = b();
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(500), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_the_window() {
        let b = b();
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        assert!(b.delay(3, 0.999) < Duration::from_millis(400));
        assert_eq!(b.delay(3, 7.0), Duration::from_millis(400));
    }

    #[test]
    fn overrides_apply_to_every_queue() {
        let o = PolicyOverrides {
            max_attempts: Some(2),
            backoff_initial: Some(Duration::from_millis(5)),
            backoff_max: Some(Duration::from_millis(10)),
        };
        for q in crate::Queue::ALL {
            let p = q.policy().with(&o);
            assert_eq!(p.max_attempts, 2);
            assert_eq!(p.backoff.ceiling(9), Duration::from_millis(10));
            assert!(!p.exhausted(1));
            assert!(p.exhausted(2));
        }
    }
}
