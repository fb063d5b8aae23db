//! The results of a run as the report gives them: fan-out (deliveries, latency, per
//! URL, the server's drops and CPU) and media (first frames, rates, the server's CPU and
//! memory), from the workers' merged report and what was read of the server.

use super::*;
use crate::hlsreport::HlsResults;

pub(super) struct FanoutServer {
    /// The drop and shed counters before and after.
    pub(super) dropped_before: Option<Result<(u64, Option<u64>), String>>,
    pub(super) dropped_after: Option<Result<(u64, Option<u64>), String>>,
    pub(super) cpu_go: Option<f64>,
    pub(super) cpu_publish_end: Option<f64>,
    pub(super) cpu_end: Option<f64>,
}

pub(super) fn fanout_results(
    plan: &Plan,
    m: &WorkerReport,
    connections: Connections,
    latency: &Histogram<u64>,
    lag: &Histogram<u64>,
    server: FanoutServer,
) -> Results {
    let wp = &plan.worker;
    let secs = wp.duration_ms as f64 / 1000.0;
    let sent: u64 = m.sent_per_room.iter().sum();
    let expected: u64 = m
        .sent_per_room
        .iter()
        .zip(&m.viewers_per_room)
        .map(|(s, v)| s * v)
        .sum();
    let (server_dropped, server_shed, server_dropped_error) =
        match (server.dropped_before, server.dropped_after) {
            (Some(Ok(b)), Some(Ok(a))) => (
                Some(a.0.saturating_sub(b.0)),
                a.1.zip(b.1).map(|(a, b)| a.saturating_sub(b)),
                None,
            ),
            (Some(Err(e)), _) | (_, Some(Err(e))) => (None, None, Some(e)),
            _ => (None, None, None),
        };
    let server_cpu_s = match (server.cpu_go, server.cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let server_cpu_cores = match (server.cpu_go, server.cpu_publish_end) {
        (Some(a), Some(b)) if secs > 0.0 => Some((b - a) / secs),
        _ => None,
    };
    let urls: Vec<&str> = plan.url.split(',').collect();
    let per_url = m
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let expected: u64 = m
                .sent_per_room
                .iter()
                .zip(&t.viewers_per_room)
                .map(|(s, v)| s * v)
                .sum();
            let h = hist::hist_from_b64(&t.latency_hist).unwrap_or_else(|_| hist::new_histogram());
            UrlResults {
                url: urls.get(i).unwrap_or(&"?").to_string(),
                role: if i == 0 { "local" } else { "cross-node" },
                viewers_up: t.viewers_up,
                expected_deliveries: expected,
                deliveries: t.deliveries,
                delivery_ratio: if expected > 0 {
                    t.deliveries as f64 / expected as f64
                } else {
                    0.0
                },
                deliveries_per_sec: t.deliveries as f64 / secs,
                latency_us: Percentiles::of(&h),
            }
        })
        .collect();
    Results::Fanout(Box::new(FanoutResults {
        connections,
        viewers_up: m.viewers_up,
        publishers_up: m.publishers_up,
        measured_s: secs,
        sent,
        sent_per_sec: sent as f64 / secs,
        acks: m.acks,
        server_errors: m.server_errors,
        server_error_sample: m.server_error_sample.clone(),
        refused_rate_limited: m.refused_rate_limited,
        expected_deliveries: expected,
        deliveries: m.deliveries,
        delivery_ratio: if expected > 0 {
            m.deliveries as f64 / expected as f64
        } else {
            0.0
        },
        deliveries_per_sec: m.deliveries as f64 / secs,
        frames: m.frames,
        frames_per_sec: m.frames as f64 / secs,
        bytes_in: m.bytes_in,
        latency_us: Percentiles::of(latency),
        send_lag_us: Percentiles::of(lag),
        disconnects: m.disconnects.clone(),
        server_dropped,
        server_shed,
        server_dropped_error,
        server_cpu_s,
        server_cpu_cores,
        deliveries_per_server_cpu_s: server_cpu_s
            .filter(|&c| c > 0.0)
            .map(|c| m.deliveries as f64 / c),
        per_url,
    }))
}

pub(super) struct MediaServer {
    pub(super) cpu_go: Option<f64>,
    pub(super) cpu_end: Option<f64>,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_after: Option<u64>,
    pub(super) metrics_before: Option<Result<String, String>>,
    pub(super) metrics_after: Option<Result<String, String>>,
    pub(super) loadgen_cores: Option<f64>,
}

/// `latency`: the workers' merged latency histogram, the time to first frame (flv-viewers,
/// rtmp-viewers) or the ingest → received latency (hls-viewers, whose time to the first
/// segment or part comes in the media report's keyframe histogram).
pub(super) fn media_results(
    plan: &Plan,
    m: &WorkerReport,
    connections: Connections,
    latency: &Histogram<u64>,
    server: MediaServer,
) -> Results {
    let wp = &plan.worker;
    let secs = wp.duration_ms as f64 / 1000.0;
    let r = m.media.clone().unwrap_or_default();
    let hist = |b64: &str| hist::hist_from_b64(b64).unwrap_or_else(|_| hist::new_histogram());
    let key = hist(&r.ttff_key_hist);
    let rate = hist(&r.rate_kbps_hist);
    let mbit = m.bytes_in as f64 * 8.0 / secs / 1e6;
    let server_cpu_s = match (server.cpu_go, server.cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let server_cpu_cores = server_cpu_s.map(|c| c / secs);
    let (server_metrics, server_metrics_error) = match (server.metrics_before, server.metrics_after)
    {
        (Some(Ok(before)), Some(Ok(after))) => (
            if wp.hls.is_some() {
                &HLS_METRICS[..]
            } else {
                &MEDIA_METRICS[..]
            }
            .iter()
            .filter_map(|name| {
                let a = probe::sum_samples(&after, name)?;
                let b = probe::sum_samples(&before, name).unwrap_or(0);
                let short = name.trim_start_matches("liveshard_media_");
                Some((short.to_string(), a.saturating_sub(b)))
            })
            .collect(),
            None,
        ),
        (Some(Err(e)), _) | (_, Some(Err(e))) => (Default::default(), Some(e)),
        _ => (Default::default(), None),
    };
    let up = connections.up;
    let hls = wp.hls.map(|h| {
        let r = r.hls.clone().unwrap_or_default();
        HlsResults::new(&r, h.ll, h.hints, latency)
    });
    let ttff = if hls.is_some() { &key } else { latency };
    Results::Media(Box::new(MediaResults {
        connections,
        viewers_at_start: r.viewers_at_go,
        viewers_held: r.held,
        viewers_slow: r.slow,
        min_kbps: wp.min_kbps,
        viewers_full_window: r.full_window,
        viewers_without_frame: r.no_frame,
        viewers_without_keyframe: r.no_keyframe,
        measured_s: secs,
        ttff_us: Percentiles::of(ttff),
        ttff_keyframe_us: Percentiles::of(&key),
        bytes_in_window: m.bytes_in,
        mbit_per_sec: mbit,
        per_viewer_kbit_s: Percentiles::of(&rate),
        per_viewer_kbit_s_p1: if rate.is_empty() {
            0
        } else {
            rate.value_at_quantile(0.01)
        },
        tags: r.tags,
        video_frames: r.video_frames,
        keyframes: r.keyframes,
        bytes_total: r.bytes_total,
        stall_ms: wp.stall_ms,
        stalls: r.stalls,
        stalls_in_window: r.stalls_in_window,
        viewers_stalled_in_window: r.viewers_stalled_in_window,
        longest_gap_ms: r.longest_gap_us as f64 / 1000.0,
        unpublished: r.unpublished,
        disconnects: m.disconnects.clone(),
        server_cpu_s,
        server_cpu_cores,
        server_cores_per_gbit_s: server_cpu_cores
            .filter(|_| mbit > 0.0)
            .map(|c| c / (mbit / 1000.0)),
        viewers_per_server_core: server_cpu_cores
            .filter(|&c| c > 0.0)
            .map(|c| r.held as f64 / c),
        server_rss_before_kib: server.rss_before,
        server_rss_after_kib: server.rss_after,
        server_rss_per_viewer_bytes: match (server.rss_before, server.rss_after) {
            (Some(b), Some(a)) if up > 0 => Some((a as f64 - b as f64) * 1024.0 / up as f64),
            _ => None,
        },
        loadgen_cpu_cores: server.loadgen_cores,
        server_metrics,
        server_metrics_error,
        hls,
    }))
}
