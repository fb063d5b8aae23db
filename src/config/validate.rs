//! The typed validation: cross-field and range rules on a deserialized [`Config`] that
//! the types cannot express ([`Config::validate`]).

use super::{Config, ConfigError};

impl Config {
    /// Cross-field and range rules that the types cannot express.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(ConfigError {
                    key: key.into(),
                    source: "config".into(),
                    message: message.into(),
                });
            }
        };
        check(
            self.server.shards <= 1024,
            "server.shards",
            "at most 1024 shards",
        );
        if !self.server.https.is_empty() {
            check(
                self.server.https_addr().is_some(),
                "server.https",
                "expected an address such as 0.0.0.0:8443, or empty for no HTTPS",
            );
            check(
                !self.server.tls_cert.as_os_str().is_empty(),
                "server.tls_cert",
                "required when server.https is set",
            );
            check(
                !self.server.tls_key.as_os_str().is_empty(),
                "server.tls_key",
                "required when server.https is set",
            );
        }
        if self.cluster.enabled() {
            check(
                [
                    "redis://",
                    "rediss://",
                    "redis+cluster://",
                    "rediss+cluster://",
                ]
                .iter()
                .any(|p| self.cluster.redis.starts_with(p)),
                "cluster.redis",
                "expected redis://host:port, rediss://host:port or redis+cluster://h1:p1,h2:p2",
            );
            check(
                self.cluster.node_ttl_ms > self.cluster.heartbeat_ms
                    && self.cluster.heartbeat_ms > 0,
                "cluster.node_ttl_ms",
                "must be longer than cluster.heartbeat_ms (which must be positive)",
            );
            check(self.cluster.queue > 0, "cluster.queue", "must be positive");
            check(
                self.cluster.command_timeout_ms > 0,
                "cluster.command_timeout_ms",
                "must be positive",
            );
        }
        for entry in &self.server.per_ip_exempt {
            if let Err(why) = crate::admit::Cidr::parse(entry) {
                check(false, "server.per_ip_exempt", &why);
            }
        }
        check(
            self.http.body_budget_bytes > 0,
            "http.body_budget_bytes",
            "must be positive",
        );
        check(
            self.server.accept_rate_per_ip == 0 || self.server.accept_burst_per_ip > 0,
            "server.accept_burst_per_ip",
            "must be positive when server.accept_rate_per_ip is set",
        );
        check(
            self.server.shutdown_timeout_ms > 0,
            "server.shutdown_timeout_ms",
            "must be positive",
        );
        check(
            (1024..=1024 * 1024).contains(&self.http.max_header_bytes),
            "http.max_header_bytes",
            "must be between 1024 and 1048576",
        );
        check(
            (1..=crate::http::codec::HEADER_SLOTS).contains(&self.http.max_headers),
            "http.max_headers",
            &format!("must be between 1 and {}", crate::http::codec::HEADER_SLOTS),
        );
        for (key, v) in [
            ("http.header_timeout_ms", self.http.header_timeout_ms),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
            ("http.write_timeout_ms", self.http.write_timeout_ms),
        ] {
            check(v > 0, key, "must be positive");
        }
        check(
            matches!(
                self.log.level.as_str(),
                "error" | "warn" | "info" | "debug" | "trace"
            ),
            "log.level",
            "must be one of error, warn, info, debug, trace",
        );
        check(
            matches!(self.log.format.as_str(), "text" | "json"),
            "log.format",
            "must be text or json",
        );
        check(
            self.mesh.ring_capacity >= 16,
            "mesh.ring_capacity",
            "must be at least 16",
        );
        let d = &self.danmaku;
        check(
            d.history_on_join <= d.history_capacity,
            "danmaku.history_on_join",
            "must not exceed danmaku.history_capacity",
        );
        check(
            d.history_capacity <= 100_000,
            "danmaku.history_capacity",
            "at most 100000",
        );
        check(
            (1..=10_000).contains(&d.max_text_chars),
            "danmaku.max_text_chars",
            "must be between 1 and 10000",
        );
        check(
            d.rate_per_sec > 0.0,
            "danmaku.rate_per_sec",
            "must be positive",
        );
        check(
            d.rate_burst >= 1.0,
            "danmaku.rate_burst",
            "must be at least 1",
        );
        check(
            matches!(d.filter_mode.as_str(), "reject" | "mask"),
            "danmaku.filter_mode",
            "must be reject or mask",
        );
        check(
            (125..=16 * 1024 * 1024).contains(&d.max_frame_bytes),
            "danmaku.max_frame_bytes",
            "must be between 125 and 16777216",
        );
        check(
            d.heartbeat_secs > 0,
            "danmaku.heartbeat_secs",
            "must be positive",
        );
        check(
            d.online_interval_ms > 0,
            "danmaku.online_interval_ms",
            "must be positive",
        );
        check(
            d.queue_bytes >= 1024,
            "danmaku.queue_bytes",
            "must be at least 1024",
        );
        check(
            d.merge_window_ms <= 10_000,
            "danmaku.merge_window_ms",
            "at most 10000",
        );
        check(
            d.filter_words.len() <= 100_000,
            "danmaku.filter_words",
            "at most 100000 words",
        );
        let m = &self.media;
        check(
            (64 * 1024..=0xFF_FFFF).contains(&m.max_message_bytes),
            "media.max_message_bytes",
            "must be between 65536 and 16777215 (the RTMP length field)",
        );
        check(
            m.max_partial_bytes_per_shard >= m.max_message_bytes,
            "media.max_partial_bytes_per_shard",
            "must be at least media.max_message_bytes",
        );
        check(
            (1..=60).contains(&m.hls_segment_secs),
            "media.hls_segment_secs",
            "must be between 1 and 60",
        );
        check(
            (1..=100).contains(&m.hls_window),
            "media.hls_window",
            "must be between 1 and 100",
        );
        check(
            (100..=5_000).contains(&m.hls_part_ms)
                && (m.hls_segment_secs == 0
                    || m.hls_part_ms.saturating_mul(2) <= m.hls_segment_secs.saturating_mul(1000)),
            "media.hls_part_ms",
            "must be between 100 and 5000, and at most half of media.hls_segment_secs",
        );
        check(
            matches!(m.record.as_str(), "off" | "all"),
            "media.record",
            "expected \"off\" or \"all\"",
        );
        check(
            (1..=86_400).contains(&m.record_segment_secs),
            "media.record_segment_secs",
            "must be between 1 and 86400",
        );
        check(
            m.record_segment_bytes >= 64 * 1024,
            "media.record_segment_bytes",
            "must be at least 65536",
        );
        check(
            (1..=100_000).contains(&m.record_max_files),
            "media.record_max_files",
            "must be between 1 and 100000",
        );
        check(
            (16..=1_000_000).contains(&m.record_queue),
            "media.record_queue",
            "must be between 16 and 1000000",
        );
        check(
            (64 * 1024..=256 * 1024 * 1024).contains(&m.hls_max_segment_bytes),
            "media.hls_max_segment_bytes",
            "must be between 65536 and 268435456",
        );
        check(
            m.push_url_ttl_secs > 0,
            "media.push_url_ttl_secs",
            "must be positive (a URL valid for 0 seconds is already expired)",
        );
        check(
            m.play_key.is_empty() || m.play_key != m.push_key,
            "media.play_key",
            "must differ from media.push_key (with the same key a play URL would also publish)",
        );
        check(
            m.relay_key.is_empty() || m.relay_key.len() >= 16,
            "media.relay_key",
            "must be at least 16 bytes (or empty: relay pushes refused)",
        );
        check(
            m.relay_key.is_empty() || (m.relay_key != m.push_key && m.relay_key != m.play_key),
            "media.relay_key",
            "must differ from media.push_key and media.play_key",
        );
        check(
            m.relay_key
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"&?/#%".contains(&b)),
            "media.relay_key",
            "must be printable ASCII without & ? / # % (it travels in a URL as is)",
        );
        check(
            m.hook_receiver_key.is_empty() || m.hook_receiver_key.len() >= 16,
            "media.hook_receiver_key",
            "must be at least 16 bytes (or empty: the hook receiver is off)",
        );
        check(
            self.auth.token_ttl_secs > 0,
            "auth.token_ttl_secs",
            "must be positive",
        );
        check(
            self.auth.jwt_secret.is_empty() || self.auth.jwt_secret.len() >= 16,
            "auth.jwt_secret",
            "must be at least 16 bytes (or empty to generate one)",
        );
        check(
            self.mesh.backlog_capacity >= 1,
            "mesh.backlog_capacity",
            "must be at least 1",
        );
        let a = &self.api;
        for (key, url, schemes) in [
            (
                "api.public_http",
                &a.public_http,
                &["http://", "https://"][..],
            ),
            ("api.public_ws", &a.public_ws, &["ws://", "wss://"][..]),
            (
                "api.public_rtmp",
                &a.public_rtmp,
                &["rtmp://", "rtmps://"][..],
            ),
        ] {
            check(
                url.is_empty()
                    || (schemes.iter().any(|s| url.starts_with(s))
                        && url.len() <= 256
                        && !url.contains(['?', '#', ' '])),
                key,
                &format!(
                    "must be empty or a {} URL without query",
                    schemes.join(" or ")
                ),
            );
        }
        check(
            (1024..=64 * 1024 * 1024).contains(&a.cover_max_bytes),
            "api.cover_max_bytes",
            "must be between 1024 and 67108864",
        );
        check(
            (1024..=1024 * 1024).contains(&a.json_max_bytes),
            "api.json_max_bytes",
            "must be between 1024 and 1048576",
        );
        check(
            (1..=100).contains(&a.page_size_max),
            "api.page_size_max",
            "must be between 1 and 100",
        );
        check(
            (50..=60_000).contains(&a.sse_poll_ms),
            "api.sse_poll_ms",
            "must be between 50 and 60000",
        );
        check(
            (1..=3600).contains(&a.sse_keepalive_secs),
            "api.sse_keepalive_secs",
            "must be between 1 and 3600",
        );
        check(a.files_queue >= 1, "api.files_queue", "must be at least 1");
        let w = &self.wechat;
        check(
            w.appid.is_empty() || !w.secret.is_empty(),
            "wechat.secret",
            "is required when wechat.appid is set",
        );
        check(
            w.api_base.starts_with("http://") || w.api_base.starts_with("https://"),
            "wechat.api_base",
            "must be an http(s) URL",
        );
        check(
            (100..=60_000).contains(&w.timeout_ms),
            "wechat.timeout_ms",
            "must be between 100 and 60000",
        );
        check(
            self.cors
                .allow_origins
                .iter()
                .all(|o| o == "*" || o.starts_with("http://") || o.starts_with("https://")),
            "cors.allow_origins",
            "each must be \"*\" or an http(s) origin",
        );
        let o = &self.outbound;
        check(
            (1..=64).contains(&o.threads),
            "outbound.threads",
            "must be between 1 and 64",
        );
        check(o.queue >= 1, "outbound.queue", "must be at least 1");
        check(
            (1024..=64 * 1024 * 1024).contains(&o.max_response_bytes),
            "outbound.max_response_bytes",
            "must be between 1024 and 67108864",
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
