//! Configuration: TOML file, then environment, then flags (flags win), checked into one
//! typed [`Config`].
//!
//! Two phases, as in the config of any tool that must explain itself:
//! 1. *merge* — the defaults, the file, `LIVESHARD_*` variables and `--set key=value` /
//!    named flags are layered as a TOML tree. Every key is checked against the defaults'
//!    tree: an unknown key or a value of the wrong type is reported with its dotted key and
//!    where it came from. All such errors are collected, not just the first.
//! 2. *validate* — the tree is deserialized into [`Config`] (a parse failure names its key)
//!    and cross-field rules are checked ([`Config::validate`]).
//!
//! Environment names are derived from keys: `http.max_body_bytes` is
//! `LIVESHARD_HTTP_MAX_BODY_BYTES`; a few short aliases exist (see [`ENV_ALIASES`]).
//! Other `LIVESHARD_*` variables set nothing; [`unknown_env`] names them (with the
//! closest known name) for a warning, since a typo would otherwise go unnoticed.
//! Unset optional strings are empty strings, so every key has a default and a type.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod layers;
mod validate;

pub use layers::{
    env_name, unknown_env, Sources, UnknownEnv, ENV_ALIASES, NON_CONFIG_ENV,
    NON_CONFIG_ENV_PREFIXES, SECRET_KEYS,
};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub mesh: MeshConfig,
    pub auth: AuthConfig,
    pub danmaku: DanmakuConfig,
    pub store: StoreConfig,
    pub media: MediaConfig,
    pub api: ApiConfig,
    pub wechat: WechatConfig,
    pub cors: CorsConfig,
    pub outbound: OutboundConfig,
    pub cluster: ClusterConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL clients reach the HTTP front at (e.g. "https://live.example.com"); empty:
    /// `http://` + the request's Host header.
    pub public_http: String,
    /// Base URL for the danmaku WebSocket; empty: derived from `public_http` (ws/wss).
    pub public_ws: String,
    /// Base URL for RTMP (e.g. "rtmp://push.example.com:1935"); empty: the request's host
    /// name on the RTMP port.
    pub public_rtmp: String,
    /// Largest cover image accepted.
    pub cover_max_bytes: u64,
    /// Largest JSON request body.
    pub json_max_bytes: u64,
    /// Largest page of `GET /rooms`.
    pub page_size_max: usize,
    /// How often an event stream asks for its room's state.
    pub sse_poll_ms: u64,
    /// A comment is sent after this long without an event.
    pub sse_keepalive_secs: u64,
    /// Event streams per shard at most.
    pub sse_max_per_shard: usize,
    /// File saves/reads waiting for the files thread at most.
    pub files_queue: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            public_http: String::new(),
            public_ws: String::new(),
            public_rtmp: String::new(),
            cover_max_bytes: 2 * 1024 * 1024,
            json_max_bytes: 16 * 1024,
            page_size_max: 50,
            sse_poll_ms: 1000,
            sse_keepalive_secs: 15,
            sse_max_per_shard: 10_000,
            files_queue: 1024,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatConfig {
    /// Mini-program AppID; empty: WeChat login is off (503 50303).
    pub appid: String,
    /// Mini-program AppSecret.
    pub secret: String,
    /// Where the WeChat server API is (a local test server in tests).
    pub api_base: String,
    /// Bound on each WeChat call.
    pub timeout_ms: u64,
    /// Keep the client_credential access token fresh from a thread of its own.
    pub token_refresh: bool,
    /// Refresh the access token this long before it expires (half-way if its lifetime is
    /// shorter).
    pub token_refresh_margin_secs: u64,
}

impl Default for WechatConfig {
    fn default() -> Self {
        Self {
            appid: String::new(),
            secret: String::new(),
            api_base: "https://api.weixin.qq.com".into(),
            timeout_ms: 5000,
            token_refresh: true,
            token_refresh_margin_secs: 300,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser ("https://a.example.com"); "*" for
    /// any; empty: no CORS headers at all.
    pub allow_origins: Vec<String>,
    /// Request headers a preflight allows.
    pub allow_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_headers: vec!["Authorization".into(), "Content-Type".into()],
            max_age_secs: 600,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Threads making outbound HTTP calls (WeChat, hooks).
    pub threads: usize,
    /// Calls waiting for a thread at most; past it, callers are told "busy".
    pub queue: usize,
    /// Largest response body read from a call.
    pub max_response_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            queue: 1024,
            max_response_bytes: 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Key for signed push URLs (Tencent Cloud CSS scheme: txSecret = md5(key + stream +
    /// txTime)). Empty: a random one is generated on first start and kept in
    /// `<data_dir>/push.key`, so `liveshard sign --data-dir DIR` signs with it.
    pub push_key: String,
    /// Require signed play URLs too (RTMP play, HTTP-FLV and HLS), with `play_key`.
    pub play_sign: bool,
    /// Key for signed play URLs; it must differ from the push key, since a URL signed
    /// with the push key publishes. Empty: a random one is generated on first start and
    /// kept in `<data_dir>/play.key` (`liveshard sign --play` signs with it).
    pub play_key: String,
    /// Key an nginx-rtmp edge's relay push carries in its URL
    /// (`push rtmp://HOST/APP?relay_key=KEY;`): a publish with it needs no signature,
    /// since nginx-rtmp drops its publisher's query when it pushes. Empty: relay pushes
    /// are refused. At least 16 bytes, and neither the push nor the play key.
    pub relay_key: String,
    /// Key an nginx-rtmp or SRS fleet puts in its hook URLs
    /// (`/api/v1/hooks/nginx-rtmp?key=KEY`, `/api/v1/hooks/srs?key=KEY`) to have
    /// liveshard decide its publishes and plays. Empty: those routes do not exist. At
    /// least 16 bytes.
    pub hook_receiver_key: String,
    /// Lifetime of push URLs handed out by the API and `liveshard sign`.
    pub push_url_ttl_secs: u64,
    /// The RTMP application name (`rtmp://host/APP/stream`).
    pub app: String,
    /// GOP cache caps: frames and bytes since the last keyframe.
    pub gop_max_frames: usize,
    pub gop_max_bytes: usize,
    /// Largest RTMP message accepted from a publisher (after its publish is accepted;
    /// before that, and from players, 16 KiB: only commands are expected).
    pub max_message_bytes: usize,
    /// Bytes of partially received RTMP messages held for all publishers of one shard
    /// together; a publisher whose next chunk would pass it is closed. Reassembly buffers
    /// grow with the bytes that arrive, so this is memory actually sent to the server.
    pub max_partial_bytes_per_shard: usize,
    /// Outbound queue bound per viewer; over it the viewer skips to the next keyframe,
    /// and one still over it after that is closed.
    pub viewer_queue_bytes: usize,
    /// SO_SNDBUF for players (HTTP-FLV and RTMP; 0 = kernel autotuning). With autotuning
    /// a stalled player's socket can absorb megabytes before the queue above notices;
    /// a cap bounds kernel memory per viewer and makes slow viewers skip sooner.
    pub send_buffer_bytes: usize,
    /// A publisher that reconnects within this time resumes its stream; viewers stay.
    pub publisher_grace_ms: u64,
    /// Live frames for a viewer are gathered for this long and sent in one system call
    /// (audio and video frames arrive every 20-40 ms; a player buffers seconds). 0 sends
    /// each frame at once.
    pub cork_ms: u64,
    /// HTTP callbacks (SRS-style JSON POST); empty = not called.
    pub on_publish: String,
    pub on_unpublish: String,
    pub on_play: String,
    pub on_stop: String,
    pub hook_timeout_ms: u64,
    /// Referer allow-list for HTTP play (hosts, e.g. "servicewechat.com"); empty = any.
    pub referer_allow: Vec<String>,
    /// HLS target segment duration in seconds; segments are cut at the first keyframe
    /// after it.
    pub hls_segment_secs: u64,
    /// Segments listed in an HLS playlist (as many more stay fetchable after they leave
    /// it).
    pub hls_window: usize,
    /// An HLS segment this large is cut without waiting for a keyframe.
    pub hls_max_segment_bytes: usize,
    /// HLS in fMP4 (CMAF) segments for every stream; without it, only streams whose video
    /// MPEG-TS does not carry (HEVC) are fMP4, the rest TS.
    pub hls_fmp4: bool,
    /// Low-Latency HLS (draft-pantos-hls-rfc8216bis): partial segments of
    /// `hls_part_ms`, preload hints and blocking playlist reload. Implies fMP4 segments.
    pub hls_low_latency: bool,
    /// Target duration of an LL-HLS partial segment, in milliseconds.
    pub hls_part_ms: u64,
    /// Recording (DVR): "off" (only rooms started through the API) or "all" (every
    /// stream from its publish). Files are FLV, written off the shards (`docs/media.md`).
    pub record: String,
    /// Where recordings go; empty: `<data_dir>/recordings`.
    pub record_dir: PathBuf,
    /// A recording file is closed at the first keyframe after this many seconds.
    pub record_segment_secs: u64,
    /// ... or at the first keyframe once it holds this many bytes.
    pub record_segment_bytes: u64,
    /// Files kept per stream; the oldest is deleted when a new one would pass it.
    pub record_max_files: usize,
    /// Bytes kept per stream (0 = no byte limit); the oldest files go first.
    pub record_max_bytes: u64,
    /// Messages waiting for the recorder thread at most (all recordings together); past it
    /// a recording drops frames until its next keyframe.
    pub record_queue: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            push_key: String::new(),
            play_sign: false,
            play_key: String::new(),
            relay_key: String::new(),
            hook_receiver_key: String::new(),
            push_url_ttl_secs: 24 * 3600,
            app: "live".into(),
            gop_max_frames: 600,
            gop_max_bytes: 8 * 1024 * 1024,
            max_message_bytes: 8 * 1024 * 1024,
            max_partial_bytes_per_shard: 64 * 1024 * 1024,
            viewer_queue_bytes: 4 * 1024 * 1024,
            send_buffer_bytes: 0,
            publisher_grace_ms: 10_000,
            cork_ms: 40,
            on_publish: String::new(),
            on_unpublish: String::new(),
            on_play: String::new(),
            on_stop: String::new(),
            hook_timeout_ms: 3000,
            referer_allow: Vec::new(),
            hls_segment_secs: 2,
            hls_window: 6,
            hls_max_segment_bytes: 16 * 1024 * 1024,
            hls_fmp4: false,
            hls_low_latency: false,
            hls_part_ms: 333,
            record: "off".into(),
            record_dir: PathBuf::new(),
            record_segment_secs: 600,
            record_segment_bytes: 1024 * 1024 * 1024,
            record_max_files: 48,
            record_max_bytes: 0,
            record_queue: 4096,
        }
    }
}

/// Several nodes as one service over Redis (C10). Without `redis`, the node is alone and
/// nothing here is used.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS), or a Redis Cluster seed
    /// list `redis+cluster://h1:p1,h2:p2,…`; empty: no cluster.
    pub redis: String,
    /// This node's name in the cluster; empty: hostname and HTTP port.
    pub node_id: String,
    /// The address other nodes reach this node's HTTP front at (internal); empty: the HTTP
    /// listen address.
    pub advertise: String,
    /// A node's heartbeat (online counts) is forgotten this long after its last one.
    pub node_ttl_ms: u64,
    /// How often a node publishes its online counts.
    pub heartbeat_ms: u64,
    /// Requests waiting for the cluster threads at most; past it, callers are told "busy".
    pub queue: usize,
    /// Each Redis command's time limit.
    pub command_timeout_ms: u64,
    /// A room with no viewer on this node is let go (and its channel unsubscribed) this
    /// long after the last one left; everything it holds is in Redis.
    pub room_linger_ms: u64,
    /// The secret nodes present to each other when one pulls a stream published on
    /// another (`X-Liveshard-Cluster-Key`); empty: no node accepts a pull without the
    /// ordinary play checks.
    pub key: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: String::new(),
            node_id: String::new(),
            advertise: String::new(),
            node_ttl_ms: 15_000,
            heartbeat_ms: 2_000,
            queue: 8192,
            command_timeout_ms: 2_000,
            room_linger_ms: 10_000,
            key: String::new(),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// When a danmaku ack is sent: "durable" — after the item is committed and fsynced
    /// (survives kill -9 and power loss; the fsync is shared by every item that arrived
    /// during the previous commit), or "immediate" — at once, stored right after (faster
    /// acks; a crash can lose the last acknowledged items).
    pub ack: String,
    /// Danmaku items kept per room in the store (the history the API pages through).
    pub history_per_room: u64,
    /// Requests waiting for the store thread at most; past it, callers are told "busy".
    /// (The channel's slots are allocated up front: about 200 bytes each.)
    pub queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            ack: "durable".into(),
            history_per_room: 1000,
            queue: 8192,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP front (REST, WebSocket, HTTP-FLV, HLS, metrics).
    pub http: SocketAddr,
    /// Address of the RTMP listener.
    pub rtmp: SocketAddr,
    /// Address of the HTTPS front (the same routes as `http`, WebSocket as `wss://`), or
    /// empty for none. Needs `tls_cert` and `tls_key`; both are read again on SIGHUP.
    pub https: String,
    /// The HTTPS certificate chain (PEM, leaf first).
    pub tls_cert: PathBuf,
    /// The HTTPS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: PathBuf,
    /// Number of shards; 0 means one per CPU this process may use.
    pub shards: usize,
    /// I/O driver: "auto" (io_uring, else epoll), "uring" or "epoll".
    pub driver: DriverChoice,
    /// Pin each shard to one CPU.
    pub pin: bool,
    /// Where the embedded store and uploads live.
    pub data_dir: PathBuf,
    /// Upper bound on a graceful shutdown before the process exits anyway.
    pub shutdown_timeout_ms: u64,
    /// Serve `/debug/*` routes (for drills and tests; never on a public port).
    pub debug_endpoints: bool,
    /// The JavaScript clients' directory, whose `web/` page (with the SDK and the player
    /// libraries npm installs into its `node_modules/`) is served at `/demo/`. Empty: the
    /// first of `./clients` and the `clients/` of the repository the binary was built in
    /// that has the page.
    pub clients_dir: PathBuf,
    /// Open connections one client address may hold (HTTP and RTMP together; 0 = no cap).
    /// Enforced per shard as ceil(cap / shards): SO_REUSEPORT spreads one address's
    /// connections evenly, so no shard has to ask another. Sized for carrier-grade and
    /// campus NAT, where hundreds of mini-program users share one address (see
    /// `tuning/README.md`). An IPv6 client is counted by its /64.
    pub max_conns_per_ip: u32,
    /// New connections accepted per second from one client address (0 = no limit), with
    /// a burst of `accept_burst_per_ip`; split over the shards like the cap.
    pub accept_rate_per_ip: u32,
    pub accept_burst_per_ip: u32,
    /// Addresses (`a.b.c.d/n`, `x::/n` or a bare address) that the per-address cap and
    /// rate do not apply to: loopback by default, for a local reverse proxy and local
    /// tools. Behind a proxy on another host, add its address; empty it to cap everyone.
    pub per_ip_exempt: Vec<String>,
    /// New connections accepted per second per shard, all addresses together (0 = no
    /// limit): a storm guard, so a connection storm cannot starve the connections already
    /// open. Applies to exempt addresses too.
    pub accept_rate_per_sec: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    Auto,
    Uring,
    Epoll,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Body limit of routes that take a body and set no limit of their own (GET, HEAD
    /// and OPTIONS routes take none; the API's routes have their own limits).
    pub max_body_bytes: u64,
    /// Bytes of request bodies one shard holds at once, all connections together (bodies
    /// are buffered as they arrive; past this, a 503 with `Retry-After`).
    pub body_budget_bytes: u64,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub write_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace.
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Slots per cross-shard ring (one ring per ordered shard pair).
    pub ring_capacity: usize,
    /// Messages held back per destination when its ring is full; past it, refused.
    pub backlog_capacity: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for login tokens. Empty: a random one is generated on first start and
    /// kept in `<data_dir>/jwt.secret`.
    pub jwt_secret: String,
    pub jwt_issuer: String,
    /// Lifetime of tokens issued by `liveshard token` and the login API.
    pub token_ttl_secs: u64,
    /// Serve `POST /api/v1/auth/dev` (a token for any uid): local use only.
    pub dev_login: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_issuer: "liveshard".into(),
            token_ttl_secs: 7 * 24 * 3600,
            dev_login: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DanmakuConfig {
    /// Items are batched per room for this long; 0 sends each item in its own frame at once.
    pub merge_window_ms: u64,
    /// Items sent to a viewer on join.
    pub history_on_join: usize,
    /// Items kept in memory per room.
    pub history_capacity: usize,
    /// Longest danmaku or private message, in characters, after cleaning.
    pub max_text_chars: usize,
    /// Rate limit, messages per second and burst: each user's posts to a room (all their
    /// connections together, kept by the room's home shard), and each connection on its
    /// own (so a flood is dropped before it leaves the connection's shard).
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    /// Keyword filter: words (case-insensitive for ASCII) and what to do on a match.
    pub filter_words: Vec<String>,
    /// "reject" or "mask".
    pub filter_mode: String,
    /// Largest WebSocket frame and reassembled message accepted from a client.
    pub max_frame_bytes: usize,
    /// App-level heartbeat interval; a connection silent for twice this is closed.
    pub heartbeat_secs: u64,
    /// Online counts are pushed at most this often, when they changed.
    pub online_interval_ms: u64,
    /// Outbound queue bound per connection, for every frame sent to it (batches, online
    /// counts, acks, errors, history, private messages, pongs). Past it fan-out frames are
    /// dropped for that viewer and the connection is not read; must-send frames stop at
    /// twice the bound (closed with 1008 then).
    pub queue_bytes: usize,
    /// How long a connection may stay slow before it is closed with 1008: slow from when
    /// its queue passes the bound until it drains under half the bound or has taken a
    /// whole bound's worth of bytes since.
    pub slow_grace_ms: u64,
    /// Delivery cap per room, items per second (0 = no cap). Plain danmaku is sampled over
    /// the cap; gifts, VIP and system items always go through.
    pub room_cap_per_sec: u32,
    /// Origin allow-list for browsers (empty = any origin).
    pub origins: Vec<String>,
    /// SO_SNDBUF for WebSocket connections (0 = kernel autotuning). The kernel doubles the
    /// value for its bookkeeping, so the default 64 KiB lets a stalled viewer park at most
    /// 128 KiB of kernel memory (autotuning lets it grow to `tcp_wmem` max, 4 MiB) before
    /// `queue_bytes` sees back-pressure and the slow-consumer close can come. It still
    /// carries ~64 KiB per round trip: 320 KB/s at 200 ms, far above a busy room's batches
    /// (one every `merge_window_ms`). Values above `net.core.wmem_max` are capped there.
    pub send_buffer_bytes: usize,
    /// A home room with no viewers and nothing pending is dropped after this long (one that
    /// holds nothing beyond its stored state — never posted to, no moderation — after at
    /// most 3 s, so joins to made-up room ids do not pile rooms up).
    pub room_idle_secs: u64,
}

impl Default for DanmakuConfig {
    fn default() -> Self {
        Self {
            merge_window_ms: 50,
            history_on_join: 50,
            history_capacity: 200,
            max_text_chars: 100,
            rate_per_sec: 2.0,
            rate_burst: 5.0,
            filter_words: Vec::new(),
            filter_mode: "reject".into(),
            max_frame_bytes: 64 * 1024,
            heartbeat_secs: 30,
            online_interval_ms: 2000,
            queue_bytes: 256 * 1024,
            slow_grace_ms: 5000,
            room_cap_per_sec: 0,
            origins: Vec::new(),
            send_buffer_bytes: 64 * 1024,
            room_idle_secs: 600,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:8080".parse().expect("literal address"),
            rtmp: "127.0.0.1:1935".parse().expect("literal address"),
            https: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            shards: 0,
            driver: DriverChoice::Auto,
            pin: true,
            data_dir: PathBuf::from("./data"),
            shutdown_timeout_ms: 10_000,
            debug_endpoints: false,
            clients_dir: PathBuf::new(),
            max_conns_per_ip: 1000,
            accept_rate_per_ip: 200,
            accept_burst_per_ip: 1000,
            per_ip_exempt: vec!["127.0.0.0/8".into(), "::1".into()],
            accept_rate_per_sec: 0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 1024 * 1024,
            body_budget_bytes: 128 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 4096,
            backlog_capacity: 65536,
        }
    }
}

/// One problem with the configuration, tied to its key and where the value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub source: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{} ({}): {}", self.key, self.source, self.message)
        }
    }
}

impl ServerConfig {
    /// The HTTPS address, when `https` is set and parses.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.parse().ok()
    }
}

impl Config {
    /// Shards to start: the configured number, or one per usable CPU.
    pub fn shard_count(&self) -> usize {
        if self.server.shards == 0 {
            shards::engine::available_cpus().len()
        } else {
            self.server.shards
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: &str,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Config, Vec<ConfigError>> {
        Config::load(&Sources {
            file: Some((PathBuf::from("test.toml"), file.into())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[], &[]).unwrap();
        assert_eq!(c.server.http.to_string(), "127.0.0.1:8080");
        assert_eq!(c.http.max_headers, 64);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file = "[server]\nshards = 2\nhttp = \"127.0.0.1:1\"\n[http]\nmax_headers = 10\n";
        let c = load(
            file,
            &[
                ("LIVESHARD_SHARDS", "3"),
                ("LIVESHARD_HTTP_MAX_HEADERS", "20"),
            ],
            &[("server.shards", "4")],
        )
        .unwrap();
        assert_eq!(c.server.shards, 4);
        assert_eq!(c.http.max_headers, 20);
        assert_eq!(c.server.http.port(), 1);
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let file = "[server]\nshardz = 2\n[http]\nmax_headers = \"ten\"\n[nope]\nx = 1\n";
        let errors = load(
            file,
            &[("LIVESHARD_SERVER_PIN", "maybe")],
            &[("http.bogus", "1")],
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"server.shardz"), "{errors:?}");
        assert!(keys.contains(&"http.max_headers"), "{errors:?}");
        assert!(keys.contains(&"nope"), "{errors:?}");
        assert!(keys.contains(&"server.pin"), "{errors:?}");
        assert!(keys.contains(&"http.bogus"), "{errors:?}");
        let shown = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            shown.contains("server.shardz (test.toml): unknown key"),
            "{shown}"
        );
        assert!(shown.contains("expected integer, found string"), "{shown}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load("[server]\nhttp = \"not an address\"\n", &[], &[]).unwrap_err();
        assert_eq!(e[0].key, "server.http");
        let e = load("[server]\ndriver = \"kqueue\"\n", &[], &[]).unwrap_err();
        assert_eq!(e[0].key, "server.driver");
        let e = load(
            "[http]\nmax_headers = 0\n[log]\nlevel = \"loud\"\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].key, "http.max_headers");
        assert_eq!(e[1].key, "log.level");
    }

    #[test]
    fn relay_and_hook_receiver_keys_are_checked() {
        let c = load(
            "[media]\nrelay_key = \"relay-0123456789abcdef\"\nhook_receiver_key = \"hook-0123456789abcdef\"\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.media.relay_key, "relay-0123456789abcdef");
        let e = load(
            "[media]\nrelay_key = \"short\"\nhook_receiver_key = \"short\"\n",
            &[],
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["media.relay_key", "media.hook_receiver_key"]);
        // The relay key travels in a URL as is, and is no signing key.
        let e = load(
            "[media]\nrelay_key = \"relay&key=0123456789abcdef\"\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e[0].key, "media.relay_key");
        let e = load(
            "[media]\npush_key = \"same-0123456789abcdef\"\nrelay_key = \"same-0123456789abcdef\"\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e[0].key, "media.relay_key");
        assert!(e[0].message.contains("differ"), "{}", e[0].message);
    }

    #[test]
    fn hls_settings_are_checked() {
        let c = load("", &[], &[("media.hls_segment_secs", "1")]).unwrap();
        assert_eq!(c.media.hls_segment_secs, 1);
        assert_eq!(c.media.hls_window, 6);
        assert!(!c.media.hls_fmp4);
        let c = load("", &[], &[("media.hls_fmp4", "true")]).unwrap();
        assert!(c.media.hls_fmp4);
        assert!(!c.media.hls_low_latency);
        assert_eq!(c.media.hls_part_ms, 333);
        let e = load(
            "",
            &[],
            &[
                ("media.hls_segment_secs", "1"),
                ("media.hls_part_ms", "600"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e[0].key, "media.hls_part_ms",
            "more than half of 1 s segments"
        );
        let c = load(
            "",
            &[],
            &[
                ("media.hls_segment_secs", "2"),
                ("media.hls_part_ms", "600"),
            ],
        );
        assert!(c.is_ok());
        let e = load(
            "[media]\nhls_segment_secs = 0\nhls_window = 0\nhls_max_segment_bytes = 10\n",
            &[],
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "media.hls_segment_secs",
                "media.hls_window",
                "media.hls_max_segment_bytes"
            ]
        );
    }

    #[test]
    fn rtmp_message_limits_are_checked() {
        let c = load("", &[], &[]).unwrap();
        assert_eq!(c.media.max_partial_bytes_per_shard, 64 * 1024 * 1024);
        let e = load(
            "[media]\nmax_message_bytes = 16777216\nmax_partial_bytes_per_shard = 1048576\n",
            &[],
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "media.max_message_bytes",
                "media.max_partial_bytes_per_shard"
            ]
        );
    }

    #[test]
    fn recording_keys_are_checked() {
        let c = load("", &[], &[("media.record", "all")]).unwrap();
        assert_eq!(c.media.record, "all");
        assert_eq!(c.media.record_segment_secs, 600);
        let e = load(
            "[media]\nrecord = \"some\"\nrecord_segment_secs = 0\nrecord_segment_bytes = 10\nrecord_max_files = 0\nrecord_queue = 1\n",
            &[],
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "media.record",
                "media.record_segment_secs",
                "media.record_segment_bytes",
                "media.record_max_files",
                "media.record_queue"
            ]
        );
    }
}
