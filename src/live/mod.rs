//! Live streams on the server: RTMP ingest and play, HTTP-FLV and HLS play (C5, C6, C7),
//! on top of the sans-IO [`crate::media`] layer.
//!
//! Who owns what:
//! - The **home shard** of a stream (`home_shard(name)`, the same hash as danmaku rooms, so
//!   a room and its stream share a home) is the registry: it grants the right to publish
//!   (one publisher per stream; a publisher that reconnects within the grace period resumes
//!   the stream, even from another shard), announces which shard owns a live stream to
//!   every shard, and flips the danmaku room live/offline.
//! - The **owner shard** (where the publisher's socket landed) runs the ingest: each
//!   message is packaged once per protocol ([`crate::media::Packaged`]) into an
//!   `Arc<Frame>`, kept in the stream's GOP cache, and handed to every shard that
//!   subscribed — the same `Arc`, so no shard copies a byte of media.
//! - A **viewer shard** keeps a [`engine::LocalStream`] per stream it has viewers of: a
//!   mirror of the GOP cache (refcounts, not copies) so a new viewer starts on a keyframe
//!   at once without asking anyone, and its viewers' outboxes.
//! - HLS segments are made on the owner shard too, once per stream, and every shard
//!   answers HLS requests from the owner's segments ([`hls`] says how and why).
//!
//! Files: [`admission`] (who may publish or play: the checks RTMP, HTTP play and the
//! hook receiver share), [`engine`] (per-shard state and mesh messages, the owner side), `registry` (the
//! home shard's claims and announcements), `mirror` (the viewer side; each viewer's queue
//! is a [`crate::outq::OutQueue`] with the skip-to-keyframe policy), [`rtmp_conn`]
//! (the RTMP connection driver, publish or play), [`flv`] (`GET /{app}/{stream}.flv`),
//! [`hls`] (`GET /{app}/{stream}.m3u8` and its segments), [`hooks`] (on_publish /
//! on_unpublish / on_play / on_stop callbacks), `record` (the owner's side of a
//! recording: frames to the recorder thread, [`crate::store::recordings`]), `pull` (a
//! stream published on another node of a cluster, pulled over HTTP-FLV by its home shard
//! here and ingested as a local publisher's).

pub mod admission;
pub mod engine;
pub mod flv;
pub mod hls;
mod hls_serve;
mod hls_wait;
pub mod hooks;
mod mirror;
pub mod pull;
mod record;
mod registry;
pub mod rtmp_conn;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use engine::Live;
pub use record::RecordError;

use crate::media::gop::GopLimits;
use crate::media::hls::{History, HlsConfig};
use crate::media::Packaged;

/// Stream names travel between shards; `Arc<str>` clones are a refcount bump.
pub type StreamId = Arc<str>;

/// Stream names: the same rule as room ids (they are the same names).
pub fn valid_stream(name: &str) -> bool {
    crate::ids::valid_room_id(name)
}

/// What the live engine tells a stream's room: the one way it reaches the danmaku side,
/// given to it by the wiring (so live never names the danmaku engine).
pub trait RoomEvents {
    /// The stream went live (`true`, on a new claim) or offline (`false`, when it ended).
    fn live(&self, room: &StreamId, live: bool);
    /// The stream's clock (media timestamp in ms), or `None` when the stream stops.
    fn clock(&self, room: &StreamId, media_ms: Option<u64>);
}

/// One media message of a stream, packaged (and classified) once, shared by every shard
/// and viewer.
#[derive(Debug)]
pub struct Frame {
    pub stream: StreamId,
    pub packaged: Packaged,
    /// `"{len:x}\r\n"` for the FLV tag as one HTTP chunk, computed once.
    pub flv_chunk_head: Bytes,
}

impl Frame {
    /// A video keyframe (where a skipping viewer may resume).
    pub fn keyframe(&self) -> bool {
        self.packaged.class.is_keyframe()
    }

    /// Metadata or a sequence header: never dropped for a slow viewer.
    pub fn essential(&self) -> bool {
        self.packaged.class.is_essential()
    }
}

/// Live-stream messages between shards, through the engine's [`crate::port::Port`].
#[derive(Debug)]
pub enum Msg {
    /// Home → every shard: `stream` is now owned by `owner` (`None`: it went offline).
    Announce {
        stream: StreamId,
        owner: Option<usize>,
    },
    /// Viewer shard → owner: send me this stream (answered with `Start`).
    Subscribe { stream: StreamId },
    /// Viewer shard → owner: I have no viewers of it any more.
    Unsubscribe { stream: StreamId },
    /// Owner → subscriber: the GOP cache to start from (metadata first if
    /// `has_metadata`); live frames follow.
    Start {
        stream: StreamId,
        gop: Box<Vec<Packaged>>,
        has_metadata: bool,
    },
    /// Owner → subscribers: one live frame.
    Frame(Arc<Frame>),
    /// Home → owner: stop the publisher (the room was closed).
    Stop { stream: StreamId },
    /// Old owner → new owner: the stream's HLS segments so far, so the playlist carries
    /// on across a publisher that reconnected on another shard.
    HlsHistory {
        stream: StreamId,
        history: Box<History>,
    },
    /// Any shard → any shard: run a function on this shard's engine (control paths).
    Call(crate::port::Call<Live>),
}

impl From<crate::port::Call<Live>> for Msg {
    fn from(c: crate::port::Call<Live>) -> Self {
        Msg::Call(c)
    }
}

/// Settings from `[media]`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub app: String,
    /// Checks publishes only (see [`crate::auth::MediaKeys`]).
    pub push_key: String,
    pub play_sign: bool,
    /// Checks plays only; never the push key.
    pub play_key: String,
    /// Authorizes relay pushes (`?relay_key=`); empty: none accepted.
    pub relay_key: String,
    pub gop: GopLimits,
    pub max_message_bytes: usize,
    /// Partial RTMP messages of all publishers of one shard together.
    pub max_partial_bytes_per_shard: usize,
    pub viewer_queue_bytes: usize,
    /// SO_SNDBUF for players (0 = kernel autotuning).
    pub send_buffer: usize,
    pub publisher_grace: Duration,
    /// Live frames wait this long per viewer and leave together (0 = each at once).
    pub cork: Duration,
    pub hooks: hooks::Hooks,
    pub referer_allow: Vec<String>,
    pub hls: HlsConfig,
    /// A write to a player that makes no progress for this long closes it
    /// (`http.write_timeout_ms`).
    pub write_timeout: Duration,
    /// `media.record = "all"`: every stream is recorded from its publish.
    pub record_all: bool,
    /// The recorder thread (set by the server once started; `None`: no recording).
    pub recorder: Option<crate::store::recordings::RecorderHandle>,
    /// The `cluster-media` thread (set by the server when `cluster.redis` is set).
    pub cluster: Option<crate::cluster::media::MediaCluster>,
    /// `cluster.key`: what another node's pull presents (empty: none accepted).
    pub cluster_key: String,
}

impl Settings {
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self, String> {
        let m = &cfg.media;
        let keys = crate::auth::MediaKeys::load(m, &cfg.server.data_dir)?;
        Ok(Self {
            app: m.app.clone(),
            push_key: keys.push,
            play_sign: m.play_sign,
            play_key: keys.play,
            relay_key: m.relay_key.clone(),
            gop: GopLimits {
                max_frames: m.gop_max_frames,
                max_bytes: m.gop_max_bytes,
            },
            max_message_bytes: m.max_message_bytes,
            max_partial_bytes_per_shard: m.max_partial_bytes_per_shard,
            viewer_queue_bytes: m.viewer_queue_bytes,
            send_buffer: m.send_buffer_bytes,
            publisher_grace: Duration::from_millis(m.publisher_grace_ms),
            cork: Duration::from_millis(m.cork_ms),
            hooks: hooks::Hooks::from_config(m),
            referer_allow: m.referer_allow.clone(),
            hls: HlsConfig {
                target_ms: u32::try_from(m.hls_segment_secs.saturating_mul(1000))
                    .unwrap_or(u32::MAX),
                window: m.hls_window,
                max_segment_bytes: m.hls_max_segment_bytes,
                fmp4: m.hls_fmp4 || m.hls_low_latency,
                part_ms: if m.hls_low_latency {
                    u32::try_from(m.hls_part_ms).unwrap_or(u32::MAX)
                } else {
                    0
                },
            },
            write_timeout: Duration::from_millis(cfg.http.write_timeout_ms),
            record_all: m.record == "all",
            recorder: None,
            cluster: None,
            cluster_key: cfg.cluster.key.clone(),
        })
    }
}
