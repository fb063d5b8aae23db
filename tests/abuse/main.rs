//! Hostile input against the real binary, judged by what the server holds: each test sends
//! a pattern that once made the server keep far more memory than the attacker sent, and
//! asserts that its resident memory stays bounded (with a generous margin, so a test fails
//! on amplification, not on allocator noise) and that the attacker is refused or closed.
//!
//! One module per front: `ws` (danmaku WebSocket), `http` (request bodies, framing, per-IP
//! caps), `rtmp` (chunk streams before publish).

#[path = "../support/mod.rs"]
mod support;

mod http;
mod rtmp;
mod ws;

use std::time::Duration;

use support::Server;

/// The server process's resident set, in bytes (from `/proc/PID/status`).
pub fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("server process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS line")
}

/// The largest RSS seen while `f` runs and for `settle` after it, sampled every 20 ms.
pub fn peak_rss_during(server: &Server, settle: Duration, f: impl FnOnce()) -> u64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let pid = server.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kb) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        peak.fetch_max(kb * 1024, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    f();
    std::thread::sleep(settle);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    peak.load(Ordering::Relaxed).max(rss_bytes(server))
}

pub const MIB: u64 = 1024 * 1024;
