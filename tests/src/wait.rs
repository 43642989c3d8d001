//! Polling for a condition with an upper bound on the wait.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// Interval between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `poll` until it returns `Ok(Some(value))` and returns that value.
///
/// `Ok(None)` and errors both mean "not yet", because errors here are
/// often transient (a server still starting). After `timeout`, the error
/// names `description` and carries the last error of `poll`.
pub fn wait_until<T>(
    description: &str,
    timeout: Duration,
    mut poll: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match poll() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
        if started.elapsed() >= timeout {
            let message = format!("timed out after {timeout:?} waiting for {description}");
            return Err(match last_error {
                Some(err) => err.context(message),
                None => anyhow!(message),
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}
