//! Waiting for the sensor: it works on its own threads, so a test polls
//! what it exposes (events, metrics) until the step it waits for is done.

use std::time::{Duration, Instant};

/// Polls `f` every 100 ms until it holds; panics naming `what` once
/// `timeout` has passed.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
