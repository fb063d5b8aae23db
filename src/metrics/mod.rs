//! Counters and the Prometheus text rendering of `/metrics`.
//!
//! Each shard writes only its own [`ShardMetrics`] (Relaxed atomics on its own cache lines:
//! no contention, no lock); whichever shard serves `/metrics` reads them all. Counters are
//! statistics, so Relaxed is enough: a scrape may see one counter a few increments ahead of
//! another, never a torn value.
//!
//! Latency histograms ([`histogram`]) follow the same rule: per-shard slots written by their
//! shard alone, added together at scrape. Calls made off the shards (store thread, outbound
//! pool) write process-wide slots of their own ([`STORE_TIMES`], [`OUTBOUND_TIMES`]). The
//! standard `process_*` families are read from the kernel at scrape ([`process`]).

pub mod histogram;
mod latency;
pub mod process;
mod render;
mod scrape;

pub use latency::{
    observe_store, OUTBOUND_KINDS, OUTBOUND_TIMES, STORE_OPS, STORE_TIMES, TOP_ROOMS,
    TTFF_PROTOCOLS, UNMATCHED_ROUTE,
};
pub use scrape::{render_rooms, render_streams, StreamStats};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use shards::DriverInUse;

use histogram::Histogram;

/// One shard's counters. Padded so neighbours never share a cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct ShardMetrics {
    pub conns_open: AtomicI64,
    pub conns_accepted: AtomicU64,
    /// Connections refused at accept, by [`crate::admit::Refusal`] (its discriminant).
    pub conns_refused: [AtomicU64; 3],
    /// TLS handshakes by outcome, indexed as [`crate::tls::HANDSHAKE_RESULTS`].
    pub tls_handshakes: [AtomicU64; 4],
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    pub http_responses: [AtomicU64; 5],
    /// Event-loop lag: how late the shard's 100 ms tick woke, last value and maximum (µs).
    pub loop_lag_us: AtomicU64,
    pub loop_lag_max_us: AtomicU64,

    // Danmaku (published by the shard's sweeper once a second).
    pub ws_connections: AtomicI64,
    /// Idle connections parked without a task.
    pub ws_parked: AtomicU64,
    pub ws_rooms_home: AtomicU64,
    pub ws_rooms_local: AtomicU64,
    pub ws_posts: AtomicU64,
    pub ws_rejected: AtomicU64,
    pub ws_items: AtomicU64,
    pub ws_batches: AtomicU64,
    pub ws_deliveries: AtomicU64,
    pub ws_dropped: AtomicU64,
    pub ws_sampled_out: AtomicU64,
    pub ws_shed: AtomicU64,
    /// Rooms that shed plain danmaku now (0 unless saturated).
    pub ws_rooms_shedding: AtomicU64,
    pub ws_bytes_out: AtomicU64,
    pub ws_flushes: AtomicU64,
    pub ws_flush_writes: AtomicU64,
    pub ws_slow_closed: AtomicU64,
    pub ws_heartbeat_closed: AtomicU64,
    pub ws_queue_bytes: AtomicU64,

    // Live streams (counters published once a second; viewer gauges kept live).
    pub media_streams: AtomicU64,
    pub media_publishers: AtomicI64,
    pub media_viewers_rtmp: AtomicI64,
    pub media_viewers_flv: AtomicI64,
    pub media_bytes_in: AtomicU64,
    pub media_bytes_out: AtomicU64,
    pub media_gop_hits: AtomicU64,
    pub media_frames_skipped: AtomicU64,
    pub media_slow_closed: AtomicU64,
    pub media_frames_lost: AtomicU64,
    /// Bytes of publishers' partial RTMP messages (gauge) and publishers closed for
    /// passing the shard's bound on them.
    pub media_partial_bytes: AtomicU64,
    pub media_partial_closed: AtomicU64,

    // HLS (counters written as they happen; gauges published once a second).
    pub media_hls_segments: AtomicU64,
    pub media_hls_skipped: AtomicU64,
    pub media_hls_requests: AtomicU64,
    pub media_hls_bytes_out: AtomicU64,
    pub media_hls_streams: AtomicU64,
    pub media_hls_held_bytes: AtomicU64,
    pub media_hls_blocking: AtomicU64,
    pub media_hls_parked: AtomicU64,

    // Streams across nodes (written as they happen).
    pub cluster_pulls: AtomicU64,
    pub cluster_pulls_active: AtomicI64,
    pub cluster_claims_unreachable: AtomicU64,

    // Latency histograms, written by the shard alone.
    /// HTTP request durations by route index ([`Metrics::route_index`]).
    pub http_durations: Box<[Histogram]>,
    pub danmaku_delivery: Histogram,
    /// Time to first frame by [`TTFF_PROTOCOLS`] index.
    pub ttff: [Histogram; 2],
}

impl ShardMetrics {
    pub fn observe_status(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http_responses[class].fetch_add(1, Relaxed);
    }

    pub fn observe_lag(&self, lag_us: u64) {
        self.loop_lag_us.store(lag_us, Relaxed);
        self.loop_lag_max_us.fetch_max(lag_us, Relaxed);
    }

    pub fn observe_http(&self, route: usize, d: std::time::Duration) {
        if let Some(h) = self.http_durations.get(route) {
            h.observe(&histogram::HTTP, d);
        }
    }

    pub fn observe_danmaku_delivery(&self, d: std::time::Duration) {
        self.danmaku_delivery.observe(&histogram::DANMAKU, d);
    }

    /// `protocol` is an index into [`TTFF_PROTOCOLS`].
    pub fn observe_ttff(&self, protocol: usize, d: std::time::Duration) {
        self.ttff[protocol].observe(&histogram::TTFF, d);
    }
}

/// One shard's handle on its own [`ShardMetrics`] (and the registry, for rendering): what
/// an engine is given instead of the whole shard.
#[derive(Clone)]
pub struct Slot {
    all: std::sync::Arc<Metrics>,
    shard: usize,
}

impl Slot {
    pub fn new(all: std::sync::Arc<Metrics>, shard: usize) -> Self {
        Self { all, shard }
    }

    /// The whole registry (for `/metrics`).
    pub fn registry(&self) -> &Metrics {
        &self.all
    }
}

impl std::ops::Deref for Slot {
    type Target = ShardMetrics;

    fn deref(&self) -> &ShardMetrics {
        &self.all.shards[self.shard]
    }
}

/// The process-wide registry: one slot per shard, created before the shards start.
pub struct Metrics {
    pub shards: Box<[ShardMetrics]>,
    pub driver: DriverInUse,
    pub started: Instant,
    /// Seconds since the epoch when the registry was made (the process start).
    pub start_time: f64,
    /// The route patterns, sorted: a route's histogram is its index here; one more slot
    /// holds [`UNMATCHED_ROUTE`]. Patterns, never paths, so the label set is bounded.
    routes: Box<[&'static str]>,
}

impl Metrics {
    pub fn new(
        shards: usize,
        driver: DriverInUse,
        routes: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let mut routes: Vec<&'static str> = routes.into_iter().collect();
        routes.sort_unstable();
        routes.dedup();
        Self {
            shards: (0..shards)
                .map(|_| ShardMetrics {
                    http_durations: (0..=routes.len()).map(|_| Histogram::new()).collect(),
                    ..ShardMetrics::default()
                })
                .collect(),
            driver,
            started: Instant::now(),
            start_time: process::now_epoch_seconds(),
            routes: routes.into(),
        }
    }

    /// The histogram slot of a route pattern (`None`: unmatched).
    pub fn route_index(&self, route: Option<&str>) -> usize {
        route
            .and_then(|r| self.routes.binary_search(&r).ok())
            .unwrap_or(self.routes.len())
    }
}

/// Resident set size from /proc/self/statm (0 where unavailable).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}
