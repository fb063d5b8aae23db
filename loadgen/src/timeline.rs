//! The report's timeline: the measurement window cut into equal intervals, each with what
//! the workers saw in it (deliveries, bytes, connections up, latency percentiles).
//!
//! Built in the parent from the progress lines workers already send twice a second (each
//! carries the counters so far, the latencies recorded since the previous line and when it
//! was taken), so the workers' protocol grows by one timestamp. A latency lands in the
//! interval its worker reported it in: up to one progress period (plus the executors'
//! 250 ms flush) after it was measured.
//!
//! Bounded: at most [`MAX_POINTS`] intervals (longer runs get wider ones; what arrives after
//! the window counts in its last one), and histograms are kept only for the intervals some
//! worker has not reported past yet.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::hist::{self, Percentiles};

/// Intervals one report holds at most.
pub const MAX_POINTS: u64 = 600;

/// One interval of the window.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Start of the interval, seconds after the measurement began.
    pub t_s: f64,
    /// Its length: `interval_s`, or less for the last one when the window ends inside it.
    pub secs: f64,
    /// Marked messages viewers received in it (ws-fanout).
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    /// Bytes viewers received in it.
    pub bytes_in: u64,
    pub mbit_per_sec: f64,
    /// Connections up at its end, over all workers.
    pub up: u64,
    /// Latencies recorded in it, µs (ws-fanout: publish → deliver; hls-viewers: ingest →
    /// received; the other media scenarios: time to first frame).
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub interval_s: f64,
    /// The measurement window (ws-fanout: --duration plus --drain).
    pub window_s: f64,
    pub points: Vec<Point>,
}

struct Slot {
    deliveries: u64,
    bytes_in: u64,
    up: u64,
    hist: Histogram<u64>,
}

/// Collects workers' progress into intervals from the go time on.
pub struct Collector {
    go_ns: u64,
    width_ns: u64,
    /// The window's length; later figures (the last progress lines, the drain of a
    /// stopping run) count in its last interval.
    run_ns: u64,
    /// Per worker: (deliveries, bytes_in) of its previous progress line.
    prev: Vec<(u64, u64)>,
    up: Vec<u64>,
    /// Per worker: the time of its latest progress line.
    seen_ns: Vec<u64>,
    open: BTreeMap<u64, Slot>,
    points: Vec<Point>,
}

/// One progress line of one worker.
pub struct Progress<'a> {
    pub worker: usize,
    pub at_ns: u64,
    pub up: u64,
    pub deliveries: u64,
    pub bytes_in: u64,
    pub hist: Option<&'a Histogram<u64>>,
}

impl Collector {
    /// `run_ms`: the window's planned length, which sets the interval width (1 s, or wider
    /// so the window fits [`MAX_POINTS`]).
    pub fn new(go_ns: u64, run_ms: u64, workers: usize) -> Collector {
        let secs = run_ms.div_ceil(1000).div_ceil(MAX_POINTS).max(1);
        Collector {
            go_ns,
            width_ns: secs * 1_000_000_000,
            run_ns: run_ms.max(1) * 1_000_000,
            prev: vec![(0, 0); workers],
            up: vec![0; workers],
            seen_ns: vec![0; workers],
            open: BTreeMap::new(),
            points: Vec::new(),
        }
    }

    /// Seeds a worker's counters as they were before go, so the first interval only gets
    /// what came after.
    pub fn baseline(&mut self, worker: usize, deliveries: u64, bytes_in: u64) {
        self.prev[worker] = (deliveries, bytes_in);
    }

    pub fn add(&mut self, p: Progress<'_>) {
        let w = p.worker;
        let (d0, b0) = std::mem::replace(&mut self.prev[w], (p.deliveries, p.bytes_in));
        self.up[w] = p.up;
        self.seen_ns[w] = self.seen_ns[w].max(p.at_ns);
        if p.at_ns >= self.go_ns {
            let last = (self.run_ns - 1) / self.width_ns;
            let idx = ((p.at_ns - self.go_ns) / self.width_ns).min(last);
            {
                let up: u64 = self.up.iter().sum();
                let slot = self.open.entry(idx).or_insert_with(|| Slot {
                    deliveries: 0,
                    bytes_in: 0,
                    up,
                    hist: hist::new_histogram(),
                });
                slot.deliveries += p.deliveries.saturating_sub(d0);
                slot.bytes_in += p.bytes_in.saturating_sub(b0);
                slot.up = up;
                if let Some(h) = p.hist {
                    hist::merge(&mut slot.hist, h);
                }
            }
        }
        // Every worker has reported past these intervals: nothing more can land in them.
        let frontier = self.seen_ns.iter().copied().min().unwrap_or(0);
        let closed = frontier.saturating_sub(self.go_ns) / self.width_ns;
        if frontier > self.go_ns {
            let keep = self.open.split_off(&closed);
            let done = std::mem::replace(&mut self.open, keep);
            self.close(done);
        }
    }

    fn close(&mut self, slots: BTreeMap<u64, Slot>) {
        for (idx, s) in slots {
            let start = idx * self.width_ns;
            let secs = self.width_ns.min(self.run_ns - start) as f64 / 1e9;
            self.points.push(Point {
                t_s: start as f64 / 1e9,
                secs,
                deliveries: s.deliveries,
                deliveries_per_sec: s.deliveries as f64 / secs,
                bytes_in: s.bytes_in,
                mbit_per_sec: s.bytes_in as f64 * 8.0 / secs / 1e6,
                up: s.up,
                latency_us: Percentiles::of(&s.hist),
            });
        }
    }

    pub fn finish(mut self) -> Timeline {
        let rest = std::mem::take(&mut self.open);
        self.close(rest);
        Timeline {
            interval_s: self.width_ns as f64 / 1e9,
            window_s: self.run_ns as f64 / 1e9,
            points: self.points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lands_in_its_interval_and_counts_only_after_go() {
        let go = 10_000_000_000;
        let mut c = Collector::new(go, 1500, 2);
        c.baseline(0, 5, 0);
        c.baseline(1, 7, 0);
        let mut h = hist::new_histogram();
        h.record(1500).unwrap();
        for (w, at, d) in [(0, 0.5, 15), (1, 0.6, 17), (0, 1.5, 25), (1, 1.7, 37)] {
            c.add(Progress {
                worker: w,
                at_ns: go + (at * 1e9) as u64,
                up: 3,
                deliveries: d,
                bytes_in: 0,
                hist: Some(&h),
            });
        }
        // After the window: counted in its last interval, a short one.
        c.add(Progress {
            worker: 0,
            at_ns: go + 3_400_000_000,
            up: 3,
            deliveries: 26,
            bytes_in: 0,
            hist: None,
        });
        let t = c.finish();
        assert_eq!(t.interval_s, 1.0);
        assert_eq!(t.points.len(), 2);
        assert_eq!(t.points[0].deliveries, 20);
        assert_eq!(t.points[1].deliveries, 31);
        assert_eq!(t.points[1].secs, 0.5);
        assert_eq!(t.points[1].deliveries_per_sec, 62.0);
        assert_eq!(t.points[1].up, 6);
        assert_eq!(t.points[0].latency_us.count, 2);
    }

    #[test]
    fn long_runs_get_wider_intervals() {
        let c = Collector::new(0, 3_600_000, 1);
        assert_eq!(c.width_ns, 6_000_000_000);
        let short = Collector::new(0, 1500, 1);
        assert_eq!(short.width_ns, 1_000_000_000);
    }
}
