//! The one way tests wait: poll a condition until it holds, with a deadline. Fixed
//! sleeps either waste time or flake; a condition says what the test waits for, and
//! its timeout message says what it saw last.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is polled: short, so a test waits little past the moment.
pub const POLL: Duration = Duration::from_millis(20);

/// What a condition reports each time it is polled: done (with a value) or not yet
/// (with what it observed, for the timeout message).
pub trait Probe {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

/// `Err` carries the last observation; make it say what the test needs to debug a timeout.
impl<T, E: Display> Probe for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Poll `check` until it is done and return its value, or the last observation once
/// `timeout` has passed. `check` may also act between polls (a driver's faults).
pub async fn try_eventually<P: Probe>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> P,
) -> Result<P::Value, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await.into_result() {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Poll `check` until it is done and return its value; panic after `timeout` with
/// `what` and the last observation.
#[track_caller]
pub fn eventually<P: Probe>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> P,
) -> impl Future<Output = P::Value> {
    let caller = std::panic::Location::caller();
    async move {
        match try_eventually(timeout, check).await {
            Ok(v) => v,
            Err(last) => panic!("timed out after {timeout:?} waiting for {what} ({caller}); last observed: {last}"),
        }
    }
}

/// [`eventually`] for a yes/no condition and a timeout in seconds.
#[track_caller]
pub fn wait_for<F, Fut>(what: &str, secs: u64, mut check: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, Duration::from_secs(secs), async move || check().await)
}
