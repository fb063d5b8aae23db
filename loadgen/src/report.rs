//! Report types: the JSON lines a worker writes on stdout, the merged report the parent
//! writes with `--json`, and the human summary. Histograms and their wire form are in
//! [`crate::hist`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hist::{hist_from_b64, hist_to_b64, merge, new_histogram, Percentiles};
use crate::hlsreport::{HlsReport, HlsResults};
use crate::probe::Machine;

/// What a worker writes on stdout, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Twice a second: counters so far and the latencies recorded since the last one.
    Progress {
        up: u64,
        failed: u64,
        deliveries: u64,
        frames: u64,
        /// Bytes received by viewers during the measurement so far.
        #[serde(default)]
        bytes_in: u64,
        interval_hist: String,
        /// When the worker took these figures (Unix ns), so the parent can place them on
        /// the report's timeline.
        #[serde(default)]
        at_unix_ns: u64,
    },
    /// Every connection of this worker was attempted; waiting for `go`.
    Ready { up: u64, failed: u64 },
    /// The run is over.
    Report(Box<WorkerReport>),
    /// The worker cannot run (e.g. glommio could not start).
    Fatal { message: String },
}

/// What the parent writes on a worker's stdin after the plan.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum WorkerCommand {
    /// Start publishing (or holding) at this wall-clock time.
    Go { at_unix_ns: u64 },
}

/// One worker's results.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub viewers_up: u64,
    pub publishers_up: u64,
    pub connect_failures: BTreeMap<String, u64>,
    /// First error text per failure kind, to show what went wrong.
    pub connect_failure_samples: BTreeMap<String, String>,
    /// Messages written, per room index.
    pub sent_per_room: Vec<u64>,
    /// Viewers that were up at the start of the measurement, per room index.
    pub viewers_per_room: Vec<u64>,
    pub deliveries: u64,
    pub frames: u64,
    pub bytes_in: u64,
    pub acks: u64,
    pub server_errors: u64,
    pub server_error_sample: Option<String>,
    /// Error frames with the rate-limit code (a post the server refused).
    #[serde(default)]
    pub refused_rate_limited: u64,
    /// Disconnects before loadgen closed, by close code ("1008") or "eof"/"error".
    pub disconnects: BTreeMap<String, u64>,
    pub latency_hist: String,
    pub send_lag_hist: String,
    /// Media scenarios: what the viewers saw (`latency_hist` holds the time to first frame).
    #[serde(default)]
    pub media: Option<MediaReport>,
    /// ws-fanout over several URLs: what each URL's viewers saw (empty with one URL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetReport>,
}

/// One URL's viewers (ws-fanout over several URLs), summed over executors and workers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub viewers_up: u64,
    /// Viewers of this URL up at the start of the measurement, per room index.
    pub viewers_per_room: Vec<u64>,
    pub deliveries: u64,
    /// Publish→deliver latency (µs) of this URL's viewers, HdrHistogram V2 base64.
    pub latency_hist: String,
}

impl TargetReport {
    /// Adds `r` into `self`; the histogram is decoded, merged and encoded again.
    pub fn merge(&mut self, r: &TargetReport) {
        self.viewers_up += r.viewers_up;
        if self.viewers_per_room.len() < r.viewers_per_room.len() {
            self.viewers_per_room.resize(r.viewers_per_room.len(), 0);
        }
        for (a, b) in self.viewers_per_room.iter_mut().zip(&r.viewers_per_room) {
            *a += b;
        }
        self.deliveries += r.deliveries;
        let mut h = hist_from_b64(&self.latency_hist).unwrap_or_else(|_| new_histogram());
        if let Ok(t) = hist_from_b64(&r.latency_hist) {
            merge(&mut h, &t);
        }
        self.latency_hist = hist_to_b64(&h);
    }
}

/// What one worker's (or executor's) media viewers saw, summed when they ended.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct MediaReport {
    /// Viewers up when the measurement window started.
    pub viewers_at_go: u64,
    /// Of those, still connected when it ended.
    pub full_window: u64,
    /// Of those, without a stall inside the window and not slow.
    pub held: u64,
    /// Full-window viewers under `--min-kbps`.
    #[serde(default)]
    pub slow: u64,
    pub no_frame: u64,
    pub no_keyframe: u64,
    pub stalls: u64,
    pub stalls_in_window: u64,
    pub viewers_stalled_in_window: u64,
    pub longest_gap_us: u64,
    /// Audio and video tags (RTMP messages) received, all run long.
    pub tags: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    /// Bytes received, all run long.
    pub bytes_total: u64,
    /// `NetStream.Play.UnpublishNotify` seen.
    pub unpublished: u64,
    /// Time to the first keyframe (µs), HdrHistogram V2 base64.
    pub ttff_key_hist: String,
    /// Full-window viewers' throughput (kbit/s), HdrHistogram V2 base64.
    pub rate_kbps_hist: String,
    /// hls-viewers: what the pollers counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<HlsReport>,
}

impl MediaReport {
    /// Adds `r` into `self`; histograms are decoded, merged and encoded again.
    pub fn merge(&mut self, r: &MediaReport) {
        self.viewers_at_go += r.viewers_at_go;
        self.full_window += r.full_window;
        self.held += r.held;
        self.slow += r.slow;
        self.no_frame += r.no_frame;
        self.no_keyframe += r.no_keyframe;
        self.stalls += r.stalls;
        self.stalls_in_window += r.stalls_in_window;
        self.viewers_stalled_in_window += r.viewers_stalled_in_window;
        self.longest_gap_us = self.longest_gap_us.max(r.longest_gap_us);
        self.tags += r.tags;
        self.video_frames += r.video_frames;
        self.keyframes += r.keyframes;
        self.bytes_total += r.bytes_total;
        self.unpublished += r.unpublished;
        if let Some(h) = &r.hls {
            self.hls.get_or_insert_with(Default::default).merge(h);
        }
        for (mine, theirs) in [
            (&mut self.ttff_key_hist, &r.ttff_key_hist),
            (&mut self.rate_kbps_hist, &r.rate_kbps_hist),
        ] {
            let mut h = hist_from_b64(mine).unwrap_or_else(|_| new_histogram());
            if let Ok(t) = hist_from_b64(theirs) {
                merge(&mut h, &t);
            }
            *mine = hist_to_b64(&h);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    pub attempted: u64,
    pub up: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub failure_samples: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResults {
    pub connections: Connections,
    pub viewers_up: u64,
    pub publishers_up: u64,
    pub measured_s: f64,
    pub sent: u64,
    pub sent_per_sec: f64,
    pub acks: u64,
    pub server_errors: u64,
    pub server_error_sample: Option<String>,
    /// Posts the server refused with its rate-limit error (4290), counted in server_errors.
    pub refused_rate_limited: u64,
    /// Σ over rooms of messages sent to the room × its viewers.
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub delivery_ratio: f64,
    pub deliveries_per_sec: f64,
    pub frames: u64,
    pub frames_per_sec: f64,
    pub bytes_in: u64,
    pub latency_us: Percentiles,
    /// How late publishers sent against their schedule (loadgen's own lag).
    pub send_lag_us: Percentiles,
    pub disconnects: BTreeMap<String, u64>,
    /// Delta of liveshard_ws_messages_dropped_total over the run (None: not scraped).
    pub server_dropped: Option<u64>,
    /// Delta of liveshard_ws_shed_total: plain items the server shed past saturation
    /// (None: not scraped, or a server without it).
    #[serde(default)]
    pub server_shed: Option<u64>,
    pub server_dropped_error: Option<String>,
    /// Server CPU seconds (utime+stime) from go to the end of the drain.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub deliveries_per_server_cpu_s: Option<f64>,
    /// Several URLs: the same figures for each URL's viewers (absent with one URL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_url: Vec<UrlResults>,
}

/// One URL's viewers in a ws-fanout run over several URLs (nodes of one cluster).
#[derive(Debug, Clone, Serialize)]
pub struct UrlResults {
    pub url: String,
    /// "local" for the first URL, where the publishers post; "cross-node" for the others
    /// (their viewers get what was posted on another node).
    pub role: &'static str,
    pub viewers_up: u64,
    /// Σ over rooms of messages sent to the room × this URL's viewers of it.
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub delivery_ratio: f64,
    pub deliveries_per_sec: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResults {
    pub connections: Connections,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub bytes_per_conn: Option<f64>,
    pub disconnects: BTreeMap<String, u64>,
    pub hold_s: f64,
}

/// flv-viewers, rtmp-viewers and hls-viewers (for HLS, a "frame" is a segment or part:
/// TTFF is the time to the first one, tags count none, a stall is no new one for 3 × the
/// target duration).
#[derive(Debug, Clone, Serialize)]
pub struct MediaResults {
    pub connections: Connections,
    /// Viewers up when the measurement window started.
    pub viewers_at_start: u64,
    /// Up at the start, connected at the end, no stall in between, at least `min_kbps`.
    pub viewers_held: u64,
    /// Full-window viewers that received less than `min_kbps`.
    pub viewers_slow: u64,
    pub min_kbps: u64,
    /// Up at the start and connected at the end (stalls or not).
    pub viewers_full_window: u64,
    pub viewers_without_frame: u64,
    pub viewers_without_keyframe: u64,
    pub measured_s: f64,
    /// Connect start → first complete video frame, µs.
    pub ttff_us: Percentiles,
    /// Connect start → first complete keyframe, µs.
    pub ttff_keyframe_us: Percentiles,
    /// Bytes all viewers received inside the window (socket bytes: framing included).
    pub bytes_in_window: u64,
    pub mbit_per_sec: f64,
    /// Full-window viewers' own throughput, kbit/s.
    pub per_viewer_kbit_s: Percentiles,
    pub per_viewer_kbit_s_p1: u64,
    pub tags: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    pub bytes_total: u64,
    pub stall_ms: u64,
    pub stalls: u64,
    pub stalls_in_window: u64,
    pub viewers_stalled_in_window: u64,
    pub longest_gap_ms: f64,
    pub unpublished: u64,
    /// Disconnects before loadgen closed: "eof", "ended" (the server ended the stream),
    /// "protocol", or an errno name.
    pub disconnects: BTreeMap<String, u64>,
    /// Server CPU seconds (utime+stime of the process and its descendants) in the window.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    /// Server cores busy per Gbit/s delivered (= CPU-seconds per Gbit).
    pub server_cores_per_gbit_s: Option<f64>,
    /// Viewers held per server core busy (the SPEC's "viewers per core", extrapolated).
    pub viewers_per_server_core: Option<f64>,
    /// Server RSS (process and descendants) before connecting and once all were connected.
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub server_rss_per_viewer_bytes: Option<f64>,
    /// loadgen's own workers' CPU in the window (they share the machine with the server).
    pub loadgen_cpu_cores: Option<f64>,
    /// Deltas of liveshard_media_* counters over the run (from before connecting).
    pub server_metrics: BTreeMap<String, u64>,
    pub server_metrics_error: Option<String>,
    /// hls-viewers: latency, blocking reloads and what was fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls: Option<HlsResults>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Results {
    Fanout(Box<FanoutResults>),
    Idle(IdleResults),
    Media(Box<MediaResults>),
}

/// The whole report, as written by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_unix_ms: u64,
    pub config: serde_json::Value,
    pub machine: Machine,
    pub results: Results,
    /// The merged latency histogram (HdrHistogram V2, base64), for comparing runs: the
    /// publish→deliver latency (ws-fanout), the ingest→received latency (hls-viewers) or
    /// the time to first frame (the other media scenarios).
    pub latency_hist_v2: Option<String>,
    /// Figures per interval of the measurement window (deliveries, bytes, latencies).
    pub timeline: Option<crate::timeline::Timeline>,
    /// What loadgen warned about on stderr (e.g. most posts refused by the rate limit).
    pub warnings: Vec<String>,
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn codes(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {}", thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn failures(c: &Connections) -> String {
    let mut s = format!("{} up, {} failed", thousands(c.up), thousands(c.failed));
    if !c.failures.is_empty() {
        s.push_str(&format!(" ({})", codes(&c.failures)));
        for (k, v) in &c.failure_samples {
            s.push_str(&format!("\n             {k}: {v}"));
        }
    }
    s
}

impl Report {
    /// The human summary printed on stdout.
    pub fn summary(&self, url: &str) -> String {
        let mut s = String::new();
        match &self.results {
            Results::Fanout(r) => {
                let c = &self.config;
                s.push_str(&format!(
                    "ws-fanout {url}  rooms={} viewers={} publishers={} rate={}/s duration={}s payload={}B\n",
                    c["rooms"], c["viewers"], c["publishers"], c["rate"], c["duration_s"], c["payload"]
                ));
                s.push_str(&format!("connections  {}\n", failures(&r.connections)));
                s.push_str(&format!(
                    "sent         {} msgs ({:.1}/s), acks {}, server errors {}{}{}\n",
                    thousands(r.sent),
                    r.sent_per_sec,
                    thousands(r.acks),
                    thousands(r.server_errors),
                    if r.refused_rate_limited > 0 {
                        format!(" ({} rate-limited)", thousands(r.refused_rate_limited))
                    } else {
                        String::new()
                    },
                    r.server_error_sample
                        .as_deref()
                        .map(|e| format!(" (e.g. {e})"))
                        .unwrap_or_default()
                ));
                s.push_str(&format!(
                    "delivered    {} of {} expected ({:.2}%)  {} msgs/s  {} frames/s\n",
                    thousands(r.deliveries),
                    thousands(r.expected_deliveries),
                    r.delivery_ratio * 100.0,
                    thousands(r.deliveries_per_sec.round() as u64),
                    thousands(r.frames_per_sec.round() as u64),
                ));
                let l = &r.latency_us;
                s.push_str(&format!(
                    "latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})\n",
                    thousands(l.p50),
                    thousands(l.p90),
                    thousands(l.p99),
                    thousands(l.p999),
                    thousands(l.max),
                    thousands(l.count)
                ));
                for u in &r.per_url {
                    let l = &u.latency_us;
                    s.push_str(&format!(
                        "  {:10} {}  viewers {}  delivered {} of {} ({:.2}%)  {} msgs/s  \
                         latency µs p50 {}  p99 {}  max {}\n",
                        u.role,
                        u.url,
                        thousands(u.viewers_up),
                        thousands(u.deliveries),
                        thousands(u.expected_deliveries),
                        u.delivery_ratio * 100.0,
                        thousands(u.deliveries_per_sec.round() as u64),
                        thousands(l.p50),
                        thousands(l.p99),
                        thousands(l.max),
                    ));
                }
                s.push_str(&format!(
                    "send lag µs  p99 {}  max {}  (loadgen's own lateness against its schedule)\n",
                    thousands(r.send_lag_us.p99),
                    thousands(r.send_lag_us.max)
                ));
                s.push_str(&format!("disconnects  {}\n", codes(&r.disconnects)));
                let dropped = match (&r.server_dropped, &r.server_dropped_error) {
                    (Some(d), _) => thousands(*d),
                    (None, Some(e)) => format!("unknown ({e})"),
                    (None, None) => "not scraped".into(),
                };
                let cpu = match (r.server_cpu_s, r.server_cpu_cores) {
                    (Some(s), Some(c)) => format!("  cpu {s:.2} s ({c:.2} cores)"),
                    _ => String::new(),
                };
                let shed = r
                    .server_shed
                    .map_or(String::new(), |n| format!("  shed {} items", thousands(n)));
                s.push_str(&format!("server       dropped {dropped}{shed}{cpu}\n"));
            }
            Results::Idle(r) => {
                s.push_str(&format!(
                    "ws-idle {url}  conns={} rooms={}\n",
                    self.config["conns"], self.config["rooms"]
                ));
                s.push_str(&format!("connections  {}\n", failures(&r.connections)));
                match (r.rss_before_kib, r.rss_after_kib, r.bytes_per_conn) {
                    (Some(b), Some(a), Some(per)) => s.push_str(&format!(
                        "server RSS   {} KiB → {} KiB: {:.0} bytes ({:.2} KiB) per connection\n",
                        thousands(b),
                        thousands(a),
                        per,
                        per / 1024.0
                    )),
                    _ => s.push_str("server RSS   not measured (give --server-pid)\n"),
                }
                s.push_str(&format!("disconnects  {}\n", codes(&r.disconnects)));
            }
            Results::Media(r) => media_summary(&mut s, &self.config, url, r),
        }
        s
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn media_summary(s: &mut String, c: &serde_json::Value, url: &str, r: &MediaResults) {
    let name = c["scenario"].as_str().unwrap_or("media");
    s.push_str(&format!(
        "{name} {url}  viewers={} duration={}s\n",
        c["viewers"], c["duration_s"]
    ));
    s.push_str(&format!("connections  {}\n", failures(&r.connections)));
    s.push_str(&format!(
        "viewers      {} up at the start, {} held to the end (no stall{}), {} connected \
         to the end; {} without a frame, {} without a keyframe\n",
        thousands(r.viewers_at_start),
        thousands(r.viewers_held),
        if r.min_kbps > 0 {
            format!(
                ", ≥ {} kbit/s: {} under it",
                r.min_kbps,
                thousands(r.viewers_slow)
            )
        } else {
            String::new()
        },
        thousands(r.viewers_full_window),
        thousands(r.viewers_without_frame),
        thousands(r.viewers_without_keyframe),
    ));
    let (f, k) = (&r.ttff_us, &r.ttff_keyframe_us);
    if r.hls.is_some() {
        s.push_str(&format!(
            "TTFF ms      first segment or part p50 {} p90 {} p99 {} max {} (n={})\n",
            ms(f.p50),
            ms(f.p90),
            ms(f.p99),
            ms(f.max),
            thousands(f.count),
        ));
    } else {
        s.push_str(&format!(
            "TTFF ms      frame p50 {} p90 {} p99 {} max {} (n={}) | keyframe p50 {} p99 {} max {}\n",
            ms(f.p50),
            ms(f.p90),
            ms(f.p99),
            ms(f.max),
            thousands(f.count),
            ms(k.p50),
            ms(k.p99),
            ms(k.max),
        ));
    }
    let v = &r.per_viewer_kbit_s;
    s.push_str(&format!(
        "throughput   {:.1} Mbit/s in all over {:.1} s; per viewer kbit/s min {} p1 {} p50 {} max {}\n",
        r.mbit_per_sec, r.measured_s, v.min, r.per_viewer_kbit_s_p1, v.p50, v.max
    ));
    match &r.hls {
        Some(h) => {
            h.summary(s);
            s.push_str(&format!(
                "stalls       {} times no new media for 3 × the target duration ({} in the \
                 window, on {} viewers); longest gap {:.0} ms; {} bytes in all\n",
                thousands(r.stalls),
                thousands(r.stalls_in_window),
                thousands(r.viewers_stalled_in_window),
                r.longest_gap_ms,
                thousands(r.bytes_total)
            ));
        }
        None => {
            s.push_str(&format!(
                "tags         {} ({} video frames, {} keyframes), {} bytes in all\n",
                thousands(r.tags),
                thousands(r.video_frames),
                thousands(r.keyframes),
                thousands(r.bytes_total)
            ));
            s.push_str(&format!(
                "stalls       {} gaps over {} ms ({} in the window, on {} viewers); longest gap {:.0} ms\n",
                thousands(r.stalls),
                r.stall_ms,
                thousands(r.stalls_in_window),
                thousands(r.viewers_stalled_in_window),
                r.longest_gap_ms
            ));
        }
    }
    s.push_str(&format!("disconnects  {}\n", codes(&r.disconnects)));
    if r.unpublished > 0 {
        s.push_str(&format!(
            "unpublished  {} notices (the publisher went away)\n",
            thousands(r.unpublished)
        ));
    }
    match (r.server_cpu_s, r.server_cpu_cores) {
        (Some(cpu), Some(cores)) => {
            s.push_str(&format!("server       cpu {cpu:.2} s ({cores:.2} cores)"));
            if let Some(per) = r.server_cores_per_gbit_s {
                s.push_str(&format!(", {per:.3} cores per delivered Gbit/s"));
            }
            if let Some(v) = r.viewers_per_server_core {
                s.push_str(&format!(", {} viewers held per core", thousands(v as u64)));
            }
            s.push('\n');
        }
        _ => s.push_str("server       cpu not measured (give --server-pid)\n"),
    }
    if let (Some(b), Some(a)) = (r.server_rss_before_kib, r.server_rss_after_kib) {
        s.push_str(&format!(
            "server RSS   {} KiB → {} KiB{}\n",
            thousands(b),
            thousands(a),
            r.server_rss_per_viewer_bytes
                .map(|p| format!(": {p:.0} bytes per viewer"))
                .unwrap_or_default()
        ));
    }
    if let Some(l) = r.loadgen_cpu_cores {
        s.push_str(&format!("loadgen      cpu {l:.2} cores\n"));
    }
    if !r.server_metrics.is_empty() {
        s.push_str(&format!("server says  {}\n", codes(&r.server_metrics)));
    } else if let Some(e) = &r.server_metrics_error {
        s.push_str(&format!("server says  unknown ({e})\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
