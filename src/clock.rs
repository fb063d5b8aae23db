//! Where the engines' time comes from: a [`Clock`] given in their context, so that the
//! same engine code runs on the real clocks in the server and on a virtual clock in the
//! in-memory tests (`tests/engines/`), where a test moves time forward by hand.
//!
//! Timers that wake a task (`monoio::time::sleep` in the tickers) stay on the runtime's
//! clock; what the clock decides is what the engine compares: rate limits, slow mode,
//! mutes, idle rooms, join and write timeouts, slow consumers.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub trait Clock {
    /// Monotonic time, for durations.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch, for timestamps clients see.
    fn unix_ms(&self) -> u64;
}

/// The real clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        unix_ms()
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
