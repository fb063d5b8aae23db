//! What one executor's connection tasks share: its [`Local`] state (counters, histograms,
//! open sockets, the run's phase), the [`ExecShared`] counters its process's main thread
//! reads, and the wall clock ([`unix_ns`]) every process of a run agrees on.
//!
//! The worker builds these and the connection drivers ([`crate::conn`], [`crate::media`],
//! [`crate::hls`]) update them, so both import this file and neither imports the other for
//! it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::hist;
use crate::hlsreport::{HlsCounts, HlsReport};
use crate::marker::Scanner;
use crate::plan::WorkerPlan;
use crate::report::{MediaReport, TargetReport};

/// Counters one executor shares with its process's main thread. Aligned so two executors'
/// counters never share a cache line.
#[repr(align(128))]
pub struct ExecShared {
    pub attempted: AtomicU64,
    pub up: AtomicU64,
    pub failed: AtomicU64,
    pub deliveries: AtomicU64,
    pub frames: AtomicU64,
    pub bytes_in: AtomicU64,
    pub connect_done: AtomicBool,
    pub finished: AtomicBool,
    pub interval: Mutex<Histogram<u64>>,
}

impl ExecShared {
    pub fn new() -> Self {
        ExecShared {
            attempted: AtomicU64::new(0),
            up: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            connect_done: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            interval: Mutex::new(hist::new_histogram()),
        }
    }
}

pub struct Shared {
    pub plan: WorkerPlan,
    /// 0 until the parent says go; then the wall-clock start in Unix nanoseconds.
    pub go_at_ns: AtomicU64,
    /// The parent went away: stop at once.
    pub abort: AtomicBool,
    pub execs: Vec<ExecShared>,
}

/// Per-executor state, owned by its thread: connection tasks update it through `Rc`.
pub struct Local {
    pub shared: Arc<Shared>,
    pub t: usize,
    pub scanner: Scanner,
    pub connect_permits: glommio::sync::Semaphore,
    pub measuring: Cell<bool>,
    pub stopping: Cell<bool>,
    /// Open sockets, so `stop` can wake every reader (shutdown(SHUT_RD) makes reads end).
    pub fds: RefCell<HashSet<RawFd>>,
    pub hist: RefCell<Histogram<u64>>,
    pub lag: RefCell<Histogram<u64>>,
    pub deliveries: Cell<u64>,
    pub frames: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub failures: RefCell<BTreeMap<String, u64>>,
    pub failure_samples: RefCell<BTreeMap<String, String>>,
    pub disconnects: RefCell<BTreeMap<String, u64>>,
    pub sent_per_room: RefCell<Vec<u64>>,
    pub viewers_per_room: RefCell<Vec<u64>>,
    pub viewers_up: Cell<u64>,
    pub publishers_up: Cell<u64>,
    pub acks: Cell<u64>,
    pub server_errors: Cell<u64>,
    pub server_error_sample: RefCell<Option<String>>,
    /// Posts refused with the rate-limit error.
    pub refused_rate_limited: Cell<u64>,
    /// Media scenarios: what this executor's viewers saw.
    pub media: RefCell<MediaAgg>,
    /// ws-fanout over several URLs: what this executor's viewers of each URL saw (empty
    /// with one URL).
    pub per_target: RefCell<Vec<TargetAgg>>,
}

/// One URL's viewers on one executor: latencies, deliveries, viewers per room.
pub struct TargetAgg {
    pub hist: Histogram<u64>,
    pub deliveries: u64,
    pub viewers_up: u64,
    pub viewers_per_room: Vec<u64>,
}

impl TargetAgg {
    pub fn new(rooms: usize) -> Self {
        TargetAgg {
            hist: hist::new_histogram(),
            deliveries: 0,
            viewers_up: 0,
            viewers_per_room: vec![0; rooms],
        }
    }

    pub fn into_report(self) -> TargetReport {
        TargetReport {
            viewers_up: self.viewers_up,
            viewers_per_room: self.viewers_per_room,
            deliveries: self.deliveries,
            latency_hist: hist::hist_to_b64(&self.hist),
        }
    }
}

impl Local {
    pub fn plan(&self) -> &WorkerPlan {
        &self.shared.plan
    }

    pub fn exec(&self) -> &ExecShared {
        &self.shared.execs[self.t]
    }

    pub fn record_failure(&self, kind: String, detail: String) {
        *self.failures.borrow_mut().entry(kind.clone()).or_default() += 1;
        self.failure_samples
            .borrow_mut()
            .entry(kind)
            .or_insert(detail);
        self.exec().failed.fetch_add(1, Relaxed);
    }

    pub fn record_disconnect(&self, what: String) {
        *self.disconnects.borrow_mut().entry(what).or_default() += 1;
    }

    /// Moves counters and the latency histogram to the shared side (every 250 ms).
    pub fn flush(&self) {
        let e = self.exec();
        e.deliveries.fetch_add(self.deliveries.take(), Relaxed);
        e.frames.fetch_add(self.frames.take(), Relaxed);
        e.bytes_in.fetch_add(self.bytes_in.take(), Relaxed);
        let mut h = self.hist.borrow_mut();
        if !h.is_empty() {
            if let Ok(mut shared) = e.interval.lock() {
                hist::merge(&mut shared, &h);
            }
            h.reset();
        }
    }

    /// Ends the run for every connection of this executor.
    pub fn stop(&self) {
        self.measuring.set(false);
        self.stopping.set(true);
        for &fd in self.fds.borrow().iter() {
            // SAFETY: `fd` is registered only while its connection task holds the socket
            // open (it deregisters before dropping it), so this is a live socket of ours.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }
}

/// Wall-clock now in Unix nanoseconds: what workers and the parent agree on (the go
/// barrier, message send times), unlike each process's monotonic clock.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One executor's media counters and histograms (per-viewer values are added when the
/// viewer ends).
pub struct MediaAgg {
    /// Time to the first keyframe (hls-viewers: to the first segment or part).
    pub ttff_key: Histogram<u64>,
    pub rate_kbps: Histogram<u64>,
    pub r: MediaReport,
    /// hls-viewers: blocking reload hold times (µs), how early media came before the time
    /// its playlist gives (µs), and the pollers' counts.
    pub hold: Histogram<u64>,
    pub early: Histogram<u64>,
    pub hls: Option<HlsCounts>,
}

impl Default for MediaAgg {
    fn default() -> Self {
        MediaAgg {
            ttff_key: hist::new_histogram(),
            rate_kbps: hist::new_histogram(),
            r: MediaReport::default(),
            hold: hist::new_histogram(),
            early: hist::new_histogram(),
            hls: None,
        }
    }
}

impl MediaAgg {
    pub fn into_report(self) -> MediaReport {
        let mut r = self.r;
        r.ttff_key_hist = hist::hist_to_b64(&self.ttff_key);
        r.rate_kbps_hist = hist::hist_to_b64(&self.rate_kbps);
        r.hls = self.hls.map(|counts| HlsReport {
            counts,
            hold_hist: hist::hist_to_b64(&self.hold),
            early_hist: hist::hist_to_b64(&self.early),
        });
        r
    }

    /// The HLS counts, made on first use.
    pub fn hls(&mut self) -> &mut HlsCounts {
        self.hls.get_or_insert_with(Default::default)
    }
}
