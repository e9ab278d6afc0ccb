//! Waiting for a condition, bounded by a deadline: the one poll loop of the harness.

use std::fmt::Display;
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something the server owes it (a reply, an event, a response).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replay, a page of the log or a restart may take before a test gives up.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `check` until it answers `Ok`, and returns that value; panics when `timeout` passes
/// first, naming `what` was awaited and the last state `check` reported as its `Err`.
pub fn eventually<T, E: Display>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Result<T, E>,
) -> T {
    poll_until(timeout, check)
        .unwrap_or_else(|last| panic!("{what}: not within {timeout:?}; last seen: {last}"))
}

/// Checks `check` until it answers `Ok` or `timeout` passes; `Err` is its last answer. Always
/// checks at least once. For waits that must not panic (cleanup); tests use [`eventually`].
pub fn poll_until<T, E>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(last);
        }
        thread::sleep(POLL_INTERVAL.min(remaining));
    }
}
