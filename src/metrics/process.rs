//! The standard Prometheus process metrics (`process_*`), read at scrape time from the
//! kernel: nothing is kept or updated between scrapes.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch at which the process started (taken when the registry is made,
/// before the shards start).
pub fn now_epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// User plus system CPU time of the whole process (every thread), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF covers all threads.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    // Added in whole microseconds, so the value prints as a short decimal.
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    (us(ru.ru_utime) + us(ru.ru_stime)) as f64 / 1e6
}

/// Open file descriptors: the entries of /proc/self/fd, less the one reading it.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1) as u64)
        .unwrap_or(0)
}

/// The soft limit on open file descriptors.
fn max_fds() -> u64 {
    // SAFETY: getrlimit writes into the struct we own.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur
}

/// Appends the `process_*` families.
pub fn render(out: &mut String, start_time: f64) {
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu_seconds().to_string(),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open_fds().to_string(),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds().to_string(),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        format!("{start_time:.3}"),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        super::rss_bytes().to_string(),
    );
}
