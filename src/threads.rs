//! Joining the helper threads (files, recordings, outbound calls) at exit, within a bound.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Waits up to `timeout` for every thread to finish (they were told to stop), joining
/// those that did; one still running is left behind with a warning naming `what` (the
/// process is exiting anyway). Blocks: call it from the main thread, never a shard.
pub fn join_within(threads: Vec<JoinHandle<()>>, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("{what} still busy at exit");
        }
    }
}
