//! Latency histograms with fixed Prometheus buckets, written without a lock.
//!
//! A [`Histogram`] is a row of bucket counters and a sum. Each one has a single writer
//! (a shard writes only its own slot; the store thread only its own), so an observation is
//! a plain load and store of Relaxed atomics, never a locked read-modify-write: on x86 that
//! is two ordinary moves per counter. Where several threads share one (the outbound pool,
//! a handful of blocking threads making rare calls) [`Histogram::observe_shared`] uses
//! `fetch_add`. A scrape adds the slots together and renders the cumulative `le` buckets.
//!
//! Values are kept in microseconds (integers: no float arithmetic on the hot path) and
//! rendered in seconds, the Prometheus base unit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Most finite bucket bounds a histogram may have (one more counter holds `+Inf`).
pub const MAX_BOUNDS: usize = 15;

/// A histogram family: its name, help and bucket upper bounds (µs, ascending).
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub bounds_us: &'static [u64],
}

/// HTTP request duration, head's first byte to the answer queued. Answers from memory take
/// tens of µs, store-backed ones a few ms, and the slowest are bounded by the timeouts.
pub const HTTP: Family = Family {
    name: "liveshard_http_request_duration_seconds",
    help: "HTTP request duration (first byte of the head to the answer queued), by route pattern.",
    bounds_us: &[
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000,
    ],
};

/// Danmaku ingress to write. The merge window (50 ms by default) dominates, so the buckets
/// are dense between 10 and 150 ms; window 0 lands in the sub-ms ones.
pub const DANMAKU: Family = Family {
    name: "liveshard_danmaku_delivery_seconds",
    help: "Oldest post of a batch decoded on its sender's shard to the batch queued to a viewer shard's sockets (one observation per batch per shard).",
    bounds_us: &[
        250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 60_000, 75_000, 100_000, 150_000,
        250_000, 500_000, 1_000_000,
    ],
};

/// Calls to other services: a LAN hook answers in ms, WeChat over the internet in tens to
/// hundreds of ms; the timeouts (seconds) bound the top.
pub const OUTBOUND: Family = Family {
    name: "liveshard_outbound_request_duration_seconds",
    help: "Outbound HTTP call duration (publish hooks, WeChat), by kind.",
    bounds_us: &[
        1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
        2_500_000, 5_000_000, 10_000_000,
    ],
};

/// Store operations on the store thread: index reads take µs, a commit with fsync ms.
pub const STORE: Family = Family {
    name: "liveshard_store_request_duration_seconds",
    help:
        "Store operation duration on the store thread (a danmaku group commit counts once), by op.",
    bounds_us: &[
        25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000,
    ],
};

/// Time to first frame: from the GOP cache it is ms; without one the player waits for the
/// publisher's next keyframe (seconds, at the encoder's GOP length).
pub const TTFF: Family = Family {
    name: "liveshard_media_ttff_seconds",
    help: "Play request to its first keyframe queued to the player's socket, by protocol.",
    bounds_us: &[
        1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
        2_000_000, 4_000_000, 8_000_000, 16_000_000,
    ],
};

/// One histogram's counters. Bucket `i` counts values in `(bounds[i-1], bounds[i]]`; the
/// one after the last bound counts the rest (`+Inf`).
pub struct Histogram {
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket(bounds: &[u64], us: u64) -> usize {
    debug_assert!(bounds.len() <= MAX_BOUNDS);
    bounds.partition_point(|&b| b < us)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; MAX_BOUNDS + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records `d`. Only for a histogram with one writing thread (no lost updates then).
    pub fn observe(&self, f: &Family, d: Duration) {
        let us = micros(d);
        let b = &self.buckets[bucket(f.bounds_us, us)];
        b.store(b.load(Relaxed) + 1, Relaxed);
        self.sum_us
            .store(self.sum_us.load(Relaxed).saturating_add(us), Relaxed);
    }

    /// Records `d` from any thread.
    pub fn observe_shared(&self, f: &Family, d: Duration) {
        let us = micros(d);
        self.buckets[bucket(f.bounds_us, us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// The sum of several slots of one histogram, ready to render.
#[derive(Default)]
pub struct Merged {
    buckets: [u64; MAX_BOUNDS + 1],
    sum_us: u64,
}

impl Merged {
    pub fn add(&mut self, h: &Histogram) {
        for (m, b) in self.buckets.iter_mut().zip(&h.buckets) {
            *m += b.load(Relaxed);
        }
        self.sum_us = self.sum_us.wrapping_add(h.sum_us.load(Relaxed));
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples (`labels` is `k="v"` or empty).
    pub fn render(&self, out: &mut String, f: &Family, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, &bound) in f.bounds_us.iter().enumerate() {
            cum += self.buckets[i];
            let le = bound as f64 / 1e6;
            let _ = writeln!(out, "{}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}", f.name);
        }
        let count = self.count();
        let _ = writeln!(out, "{}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}", f.name);
        let brace = |s: &str| {
            if labels.is_empty() {
                s.to_string()
            } else {
                format!("{s}{{{labels}}}")
            }
        };
        let sum = self.sum_us as f64 / 1e6;
        let _ = writeln!(out, "{} {sum}", brace(&format!("{}_sum", f.name)));
        let _ = writeln!(out, "{} {count}", brace(&format!("{}_count", f.name)));
    }
}

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, f: &Family) {
    let _ = writeln!(
        out,
        "# HELP {} {}\n# TYPE {} histogram",
        f.name, f.help, f.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_whose_bound_is_at_or_above_them() {
        let f = Family {
            name: "t",
            help: "h",
            bounds_us: &[10, 100],
        };
        let h = Histogram::default();
        for us in [5, 10, 11, 100, 101, 5_000] {
            h.observe(&f, Duration::from_micros(us));
        }
        let mut m = Merged::default();
        m.add(&h);
        m.add(&h);
        let mut out = String::new();
        m.render(&mut out, &f, "k=\"v\"");
        assert_eq!(
            out,
            "t_bucket{k=\"v\",le=\"0.00001\"} 4\n\
             t_bucket{k=\"v\",le=\"0.0001\"} 8\n\
             t_bucket{k=\"v\",le=\"+Inf\"} 12\n\
             t_sum{k=\"v\"} 0.010454\n\
             t_count{k=\"v\"} 12\n"
        );
    }

    #[test]
    fn every_family_fits_and_ascends() {
        for f in [HTTP, DANMAKU, OUTBOUND, STORE, TTFF] {
            assert!(f.bounds_us.len() <= MAX_BOUNDS, "{}", f.name);
            assert!(f.bounds_us.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
        }
    }
}
