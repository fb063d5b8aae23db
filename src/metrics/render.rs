//! The Prometheus text exposition (version 0.0.4) of the registry: every family, in one
//! pass over the shards' slots. The names and meanings are listed in `docs/metrics.md`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use shards::MeshStats;

use super::{latency, process, rss_bytes, Metrics, ShardMetrics};

impl Metrics {
    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, mesh: &[MeshStats]) -> String {
        let mut out = String::with_capacity(4096);
        let mut w = Writer { out: &mut out };
        w.family(
            "liveshard_info",
            "gauge",
            "Build and runtime facts (value is always 1).",
        );
        w.sample(
            "liveshard_info",
            &format!(
                "version=\"{}\",driver=\"{}\",shards=\"{}\"",
                env!("CARGO_PKG_VERSION"),
                self.driver,
                self.shards.len()
            ),
            1,
        );
        w.family(
            "liveshard_driver",
            "gauge",
            "I/O driver in use (1 for the active one).",
        );
        for d in ["io_uring", "epoll"] {
            w.sample(
                "liveshard_driver",
                &format!("driver=\"{d}\""),
                u64::from(self.driver.as_str() == d),
            );
        }
        w.family(
            "liveshard_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
        );
        w.sample(
            "liveshard_uptime_seconds",
            "",
            self.started.elapsed().as_secs(),
        );
        w.family(
            "liveshard_process_resident_memory_bytes",
            "gauge",
            "Resident set size of the process.",
        );
        w.sample("liveshard_process_resident_memory_bytes", "", rss_bytes());
        process::render(w.out, self.start_time);

        self.per_shard(
            &mut w,
            "liveshard_connections_open",
            "gauge",
            "Open client connections.",
            |s| s.conns_open.load(Relaxed).max(0) as u64,
        );
        self.per_shard(
            &mut w,
            "liveshard_connections_accepted_total",
            "counter",
            "Connections accepted.",
            |s| s.conns_accepted.load(Relaxed),
        );
        w.family(
            "liveshard_connections_refused_total",
            "counter",
            "Connections refused at accept, by reason (accept_rate, per_ip_cap, per_ip_rate).",
        );
        for (i, s) in self.shards.iter().enumerate() {
            for r in crate::admit::Refusal::ALL {
                w.sample(
                    "liveshard_connections_refused_total",
                    &format!("shard=\"{i}\",reason=\"{}\"", r.label()),
                    s.conns_refused[r as usize].load(Relaxed),
                );
            }
        }
        w.family(
            "liveshard_tls_handshakes_total",
            "counter",
            "TLS handshakes on the HTTPS listener, by result (ok, timeout, io, tls).",
        );
        for (i, s) in self.shards.iter().enumerate() {
            for (r, label) in crate::tls::HANDSHAKE_RESULTS.iter().enumerate() {
                w.sample(
                    "liveshard_tls_handshakes_total",
                    &format!("shard=\"{i}\",result=\"{label}\""),
                    s.tls_handshakes[r].load(Relaxed),
                );
            }
        }
        w.family(
            "liveshard_http_responses_total",
            "counter",
            "HTTP responses by status class.",
        );
        for (i, s) in self.shards.iter().enumerate() {
            for (c, n) in s.http_responses.iter().enumerate() {
                w.sample(
                    "liveshard_http_responses_total",
                    &format!("shard=\"{i}\",class=\"{}xx\"", c + 1),
                    n.load(Relaxed),
                );
            }
        }
        w.family(
            "liveshard_loop_lag_seconds",
            "gauge",
            "How late the shard's event loop ran its last 100 ms tick.",
        );
        for (i, s) in self.shards.iter().enumerate() {
            w.sample_f(
                "liveshard_loop_lag_seconds",
                &format!("shard=\"{i}\""),
                s.loop_lag_us.load(Relaxed) as f64 / 1e6,
            );
        }
        w.family(
            "liveshard_loop_lag_max_seconds",
            "gauge",
            "Largest event-loop lag seen since start.",
        );
        for (i, s) in self.shards.iter().enumerate() {
            w.sample_f(
                "liveshard_loop_lag_max_seconds",
                &format!("shard=\"{i}\""),
                s.loop_lag_max_us.load(Relaxed) as f64 / 1e6,
            );
        }

        type Get = fn(&ShardMetrics) -> u64;
        let ws: [(&str, &str, &str, Get); 19] = [
            (
                "liveshard_ws_connections",
                "gauge",
                "Open danmaku WebSocket connections.",
                |s| s.ws_connections.load(Relaxed).max(0) as u64,
            ),
            (
                "liveshard_ws_parked",
                "gauge",
                "Idle danmaku connections parked without a task (their sockets in the shard's \
                 epoll set).",
                |s| s.ws_parked.load(Relaxed),
            ),
            (
                "liveshard_ws_rooms_home",
                "gauge",
                "Rooms homed on the shard (ids, history, batches).",
                |s| s.ws_rooms_home.load(Relaxed),
            ),
            (
                "liveshard_ws_rooms_local",
                "gauge",
                "Rooms with viewers on the shard.",
                |s| s.ws_rooms_local.load(Relaxed),
            ),
            (
                "liveshard_ws_rooms_shedding",
                "gauge",
                "Rooms homed on the shard that shed plain danmaku now because more is offered \
                 than gets written (0 unless saturated).",
                |s| s.ws_rooms_shedding.load(Relaxed),
            ),
            (
                "liveshard_ws_messages_in_total",
                "counter",
                "Client posts accepted at the edge and forwarded to their room.",
                |s| s.ws_posts.load(Relaxed),
            ),
            (
                "liveshard_ws_messages_rejected_total",
                "counter",
                "Client posts refused at the edge (rate, length, filter, busy).",
                |s| s.ws_rejected.load(Relaxed),
            ),
            (
                "liveshard_ws_items_total",
                "counter",
                "Room items given an id on their home shard.",
                |s| s.ws_items.load(Relaxed),
            ),
            (
                "liveshard_ws_batches_total",
                "counter",
                "Frames encoded once and sent to the room's shards.",
                |s| s.ws_batches.load(Relaxed),
            ),
            (
                "liveshard_ws_messages_out_total",
                "counter",
                "Frames queued to viewers (one per viewer per frame).",
                |s| s.ws_deliveries.load(Relaxed),
            ),
            (
                "liveshard_ws_flushes_total",
                "counter",
                "End-of-turn flushes of corked fan-out frames.",
                |s| s.ws_flushes.load(Relaxed),
            ),
            (
                "liveshard_ws_flush_writes_total",
                "counter",
                "Viewer writes made by those flushes (one per viewer however many frames; one \
                 io_uring submit carries a flush's writes where the shard uses io_uring).",
                |s| s.ws_flush_writes.load(Relaxed),
            ),
            (
                "liveshard_ws_messages_dropped_total",
                "counter",
                "Frames dropped for slow viewers or full rings.",
                |s| s.ws_dropped.load(Relaxed),
            ),
            (
                "liveshard_ws_sampled_out_total",
                "counter",
                "Plain items not delivered because the room was over its cap.",
                |s| s.ws_sampled_out.load(Relaxed),
            ),
            (
                "liveshard_ws_shed_total",
                "counter",
                "Plain items shed from live batches (still acked, stored, in history) because \
                 the room was offered more than could be written to its viewers.",
                |s| s.ws_shed.load(Relaxed),
            ),
            (
                "liveshard_ws_bytes_out_total",
                "counter",
                "Bytes written to WebSocket viewers.",
                |s| s.ws_bytes_out.load(Relaxed),
            ),
            (
                "liveshard_ws_slow_consumer_closed_total",
                "counter",
                "Connections closed as slow consumers.",
                |s| s.ws_slow_closed.load(Relaxed),
            ),
            (
                "liveshard_ws_heartbeat_closed_total",
                "counter",
                "Connections closed for missing heartbeats.",
                |s| s.ws_heartbeat_closed.load(Relaxed),
            ),
            (
                "liveshard_ws_queue_bytes",
                "gauge",
                "Bytes queued to viewers and not yet written.",
                |s| s.ws_queue_bytes.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in ws {
            self.per_shard(&mut w, name, kind, help, get);
        }
        let media: [(&str, &str, &str, Get); 9] = [
            (
                "liveshard_media_streams_live",
                "gauge",
                "Live streams whose publisher is on the shard.",
                |s| s.media_streams.load(Relaxed),
            ),
            (
                "liveshard_media_publishers",
                "gauge",
                "Publishing RTMP connections.",
                |s| s.media_publishers.load(Relaxed).max(0) as u64,
            ),
            (
                "liveshard_media_bytes_in_total",
                "counter",
                "Media payload bytes received from publishers.",
                |s| s.media_bytes_in.load(Relaxed),
            ),
            (
                "liveshard_media_bytes_out_total",
                "counter",
                "Bytes written to media viewers (RTMP and HTTP-FLV).",
                |s| s.media_bytes_out.load(Relaxed),
            ),
            (
                "liveshard_media_gop_cache_hits_total",
                "counter",
                "Viewers started from a cached GOP (a keyframe at once).",
                |s| s.media_gop_hits.load(Relaxed),
            ),
            (
                "liveshard_media_frames_skipped_total",
                "counter",
                "Frames skipped for slow viewers (until the next keyframe).",
                |s| s.media_frames_skipped.load(Relaxed),
            ),
            (
                "liveshard_media_slow_viewers_closed_total",
                "counter",
                "Viewers closed for staying behind.",
                |s| s.media_slow_closed.load(Relaxed),
            ),
            (
                "liveshard_media_frames_lost_total",
                "counter",
                "Frames not delivered to a shard because its ring was full.",
                |s| s.media_frames_lost.load(Relaxed),
            ),
            (
                "liveshard_media_viewers_rtmp",
                "gauge",
                "RTMP play connections.",
                |s| s.media_viewers_rtmp.load(Relaxed).max(0) as u64,
            ),
        ];
        for (name, kind, help, get) in media {
            self.per_shard(&mut w, name, kind, help, get);
        }
        self.per_shard(
            &mut w,
            "liveshard_media_partial_bytes",
            "gauge",
            "Bytes of partially received RTMP messages of the shard's publishers.",
            |s| s.media_partial_bytes.load(Relaxed),
        );
        self.per_shard(
            &mut w,
            "liveshard_media_partial_limit_closed_total",
            "counter",
            "Publishers closed for passing media.max_partial_bytes_per_shard.",
            |s| s.media_partial_closed.load(Relaxed),
        );
        self.per_shard(
            &mut w,
            "liveshard_media_viewers_flv",
            "gauge",
            "HTTP-FLV play connections.",
            |s| s.media_viewers_flv.load(Relaxed).max(0) as u64,
        );
        let hls: [(&str, &str, &str, Get); 8] = [
            (
                "liveshard_media_hls_segments_total",
                "counter",
                "HLS segments finished (muxed once, on the stream's owner shard).",
                |s| s.media_hls_segments.load(Relaxed),
            ),
            (
                "liveshard_media_hls_input_skipped_total",
                "counter",
                "Ingest messages the HLS muxer could not use (no sequence header, malformed).",
                |s| s.media_hls_skipped.load(Relaxed),
            ),
            (
                "liveshard_media_hls_requests_total",
                "counter",
                "HLS requests (playlists and segments) answered by the shard.",
                |s| s.media_hls_requests.load(Relaxed),
            ),
            (
                "liveshard_media_hls_bytes_out_total",
                "counter",
                "Playlist and segment bytes served over HLS.",
                |s| s.media_hls_bytes_out.load(Relaxed),
            ),
            (
                "liveshard_media_hls_streams",
                "gauge",
                "Streams with HLS segments held on the shard (live or lately ended).",
                |s| s.media_hls_streams.load(Relaxed),
            ),
            (
                "liveshard_media_hls_held_bytes",
                "gauge",
                "Bytes of HLS segments held in memory on the shard.",
                |s| s.media_hls_held_bytes.load(Relaxed),
            ),
            (
                "liveshard_media_hls_blocking_requests_total",
                "counter",
                "LL-HLS blocking playlist reloads (_HLS_msn) asked of the shard.",
                |s| s.media_hls_blocking.load(Relaxed),
            ),
            (
                "liveshard_media_hls_parked",
                "gauge",
                "LL-HLS requests (blocking reloads, hinted parts) waiting on the shard's streams.",
                |s| s.media_hls_parked.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in hls {
            self.per_shard(&mut w, name, kind, help, get);
        }
        let cluster: [(&str, &str, &str, Get); 3] = [
            (
                "liveshard_cluster_pulls_total",
                "counter",
                "Pulls of a stream published on another node, started on the stream's home shard.",
                |s| s.cluster_pulls.load(Relaxed),
            ),
            (
                "liveshard_cluster_pulls_active",
                "gauge",
                "Pulls from other nodes running on the shard.",
                |s| s.cluster_pulls_active.load(Relaxed).max(0) as u64,
            ),
            (
                "liveshard_cluster_claims_unreachable_total",
                "counter",
                "Publishes let through on this node alone because Redis did not answer the stream claim.",
                |s| s.cluster_claims_unreachable.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in cluster {
            self.per_shard(&mut w, name, kind, help, get);
        }

        let mesh_counter =
            |w: &mut Writer, name: &str, kind: &str, help: &str, f: &dyn Fn(&MeshStats) -> u64| {
                w.family(name, kind, help);
                for (i, m) in mesh.iter().enumerate() {
                    w.sample(name, &format!("shard=\"{i}\""), f(m));
                }
            };
        mesh_counter(
            &mut w,
            "liveshard_mesh_sent_total",
            "counter",
            "Messages a shard submitted to the mesh.",
            &|m| m.sent.load(Relaxed),
        );
        mesh_counter(
            &mut w,
            "liveshard_mesh_received_total",
            "counter",
            "Messages a shard received from the mesh.",
            &|m| m.received.load(Relaxed),
        );
        mesh_counter(
            &mut w,
            "liveshard_mesh_overflow_total",
            "counter",
            "Messages refused because a ring and its backlog were full.",
            &|m| m.overflow.load(Relaxed),
        );
        mesh_counter(
            &mut w,
            "liveshard_mesh_wakeups_total",
            "counter",
            "Doorbells a shard rang (one per batch).",
            &|m| m.wakeups.load(Relaxed),
        );
        mesh_counter(
            &mut w,
            "liveshard_mesh_backlog",
            "gauge",
            "Messages held back because a ring was full.",
            &|m| m.backlog.load(Relaxed),
        );
        w.family(
            "liveshard_mesh_ring_depth",
            "gauge",
            "Slots in use in the ring from one shard to another (at its last flush).",
        );
        for (from, m) in mesh.iter().enumerate() {
            for (to, d) in m.ring_depth.iter().enumerate() {
                if from != to {
                    w.sample(
                        "liveshard_mesh_ring_depth",
                        &format!("from=\"{from}\",to=\"{to}\""),
                        d.load(Relaxed),
                    );
                }
            }
        }
        latency::render(self, &mut out);
        out
    }

    fn per_shard(
        &self,
        w: &mut Writer,
        name: &str,
        kind: &str,
        help: &str,
        f: impl Fn(&ShardMetrics) -> u64,
    ) {
        w.family(name, kind, help);
        for (i, s) in self.shards.iter().enumerate() {
            w.sample(name, &format!("shard=\"{i}\""), f(s));
        }
    }
}

pub(super) struct Writer<'a> {
    pub(super) out: &'a mut String,
}

impl Writer<'_> {
    pub(super) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &str, v: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {v}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {v}");
        }
    }

    pub(super) fn sample_f(&mut self, name: &str, labels: &str, v: f64) {
        let _ = writeln!(self.out, "{name}{{{labels}}} {v}");
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub(super) fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}
