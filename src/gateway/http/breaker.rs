//! The http gateway's circuit breaker (docs/gateway-protocol.md#recurs-http-gateway): a
//! pure state machine over an injected `Instant`, so its transitions are tested
//! without a clock or a network.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; `failures` technical failures in a row so far.
    Closed { failures: u32 },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One trial call is out; the others fail fast. Past `until` the trial is
    /// taken as lost and another caller may try.
    HalfOpen { until: Instant },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold: threshold.max(1), cooldown, state: State::Closed { failures: 0 } }
    }

    /// May a call go to the network now? After the cooldown the first caller is the
    /// half-open trial. A trial that never reported (its caller was dropped) is given
    /// up after another cooldown, so the breaker cannot stay half-open for ever.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { until } if now >= until => {
                self.state = State::HalfOpen { until: now + self.cooldown };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        }
    }

    /// The acquirer answered (any status but a 5xx): the circuit closes.
    pub fn success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A technical failure: counted while closed, re-opens a half-open circuit.
    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            State::Closed { .. } | State::HalfOpen { .. } => State::Open { until: now + self.cooldown },
            // A call admitted before the circuit opened: the cooldown stands.
            open @ State::Open { .. } => open,
        };
    }

    /// An admitted call that never reached the network (no permit in time): a trial
    /// gives its turn back to the next caller.
    pub fn abandon(&mut self, now: Instant) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::Open { until: now };
        }
    }

    /// Open or half-open: what the `recur_gateway_circuit_open` gauge shows.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = Breaker::new(3, COOLDOWN);
        b.failure(t);
        b.failure(t);
        b.success(); // resets the run
        b.failure(t);
        b.failure(t);
        assert!(b.admit(t) && !b.is_open());
        b.failure(t);
        assert!(b.is_open());
        assert!(!b.admit(t));
        assert!(!b.admit(t + COOLDOWN - Duration::from_millis(1)));
    }

    #[test]
    fn one_trial_after_the_cooldown_closes_or_reopens() {
        let t = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        b.failure(t);
        let after = t + COOLDOWN;
        assert!(b.admit(after), "the trial");
        assert!(!b.admit(after), "only one trial at a time");
        b.failure(after);
        assert!(b.is_open());
        assert!(!b.admit(after + COOLDOWN - Duration::from_millis(1)));
        assert!(b.admit(after + COOLDOWN));
        b.success();
        assert!(!b.is_open());
        assert!(b.admit(after + COOLDOWN) && b.admit(after + COOLDOWN));
    }

    #[test]
    fn a_lost_or_abandoned_trial_does_not_wedge_it() {
        let t = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        b.failure(t);
        assert!(b.admit(t + COOLDOWN));
        // The trial's caller vanished: after another cooldown someone else may try.
        assert!(!b.admit(t + COOLDOWN * 2 - Duration::from_millis(1)));
        assert!(b.admit(t + COOLDOWN * 2));
        b.abandon(t + COOLDOWN * 2);
        assert!(b.admit(t + COOLDOWN * 2), "an abandoned trial passes the turn at once");
    }

    #[test]
    fn late_failures_do_not_extend_an_open_circuit() {
        let t = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        b.failure(t);
        b.failure(t + Duration::from_secs(4));
        assert!(b.admit(t + COOLDOWN));
    }
}
