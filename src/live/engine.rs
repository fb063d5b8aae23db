//! One shard's live-stream state: the registry half (streams homed here), the owner half
//! (streams published here) and the viewer half (streams watched here).
//!
//! Publish: the publisher's shard asks the stream's home (`run_on`) to [`Live::claim`] it;
//! the home announces the owner to every shard and flips the danmaku room live. A lost
//! publisher keeps its claim for the grace period; a reconnect within it (from any shard)
//! takes the claim over and the stream resumes for its viewers. An explicit unpublish, or
//! the grace period running out, announces the stream offline everywhere.
//!
//! Watch: the first viewer of a stream on a shard subscribes to the owner, which answers
//! with its GOP cache and then sends every frame; the shard mirrors the GOP cache (shared
//! `Packaged`, no copies) so later viewers there start at once, from memory.
//!
//! HLS: the owner also feeds each message to the stream's segmenter (`Live::hls`, see
//! [`super::hls`]); the announcements above tell it when to hand its segments to a new
//! owner and when to end the playlist.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shards::local::Notify;

use super::{home_shard, Frame, Msg, StreamId};
use crate::media::flv::{AudioTag, VideoTag};
use crate::media::gop::GopCache;
use crate::media::{MediaKind, MediaMessage, Packaged};
use crate::outq::OutQueue;
use crate::shard::{Shard, ShardMsg};

/// How a viewer is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Rtmp,
    Flv,
}

/// One viewer of a stream on this shard.
pub struct Viewer {
    pub outbox: Rc<OutQueue>,
    pub proto: Proto,
    /// Set when its stream ends (the connection then closes or, for RTMP, tells the player).
    pub ended: Notify,
    pub is_ended: Cell<bool>,
    /// When the player asked to play, until its first keyframe is queued: then the time to
    /// first frame is observed (`liveshard_media_ttff_seconds`) and this cleared.
    pub requested: Cell<Option<Instant>>,
}

impl Viewer {
    pub fn new(outbox: Rc<OutQueue>, proto: Proto) -> Rc<Self> {
        Rc::new(Self {
            outbox,
            proto,
            ended: Notify::new(),
            is_ended: Cell::new(false),
            requested: Cell::new(Some(Instant::now())),
        })
    }

    /// Observes the time to first frame if this is the viewer's first keyframe.
    pub(super) fn first_keyframe(&self, shard: &Shard) {
        if let Some(t) = self.requested.take() {
            let proto = match self.proto {
                Proto::Rtmp => 0,
                Proto::Flv => 1,
            };
            shard.metrics().observe_ttff(proto, t.elapsed());
        }
    }

    pub(super) fn end(&self) {
        self.is_ended.set(true);
        self.ended.notify();
    }
}

/// The registry entry on a stream's home shard.
pub(super) struct Claim {
    pub(super) owner: usize,
    pub(super) connected: bool,
    /// Bumped on every (re)claim, so a grace timer can tell it is stale.
    pub(super) epoch: u64,
}

/// A stream published on this shard.
pub(super) struct Owned {
    gop: GopCache,
    subscribers: Vec<bool>,
    /// Wakes the publisher's connection to close it (the room was closed).
    stop: Rc<Notify>,
    bytes_in: u64,
    started: Instant,
    clock_sent: Option<Instant>,
}

/// A stream watched on this shard.
pub struct LocalStream {
    pub(super) owner: usize,
    pub(super) gop: GopCache,
    /// The owner's `Start` has arrived; viewers can be started from `gop`.
    pub(super) ready: bool,
    pub(super) viewers: Vec<Rc<Viewer>>,
    /// Frames are gathered per viewer and sent every `media.cork_ms`.
    pub(super) cork: bool,
    /// This stream is on the shard's list of streams to flush.
    pub(super) corked: bool,
}

/// The answer to a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// Publish; `resumed` if a lost publisher's claim was taken over.
    Granted { resumed: bool },
    /// Someone is publishing this stream right now.
    Busy,
}

#[derive(Default)]
pub(super) struct Counters {
    bytes_in: Cell<u64>,
    pub(super) bytes_out: Cell<u64>,
    pub(super) gop_hits: Cell<u64>,
    pub(super) skipped: Cell<u64>,
    pub(super) slow_closed: Cell<u64>,
    frames_lost: Cell<u64>,
}

pub(super) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// Per-stream numbers for `/metrics` (from the owner shard).
pub struct StreamStats {
    pub stream: String,
    pub bitrate_bps: f64,
    pub subscribers: usize,
}

#[derive(Default)]
pub struct Live {
    pub(super) registry: RefCell<HashMap<StreamId, Claim>>,
    pub(super) next_epoch: Cell<u64>,
    pub(super) owned: RefCell<HashMap<StreamId, Owned>>,
    pub(super) owners: RefCell<HashMap<StreamId, usize>>,
    pub(super) local: RefCell<HashMap<StreamId, LocalStream>>,
    pub(super) counters: Counters,
    /// HLS segmenters of streams published here, and where ended playlists are.
    pub(super) hls: super::hls::HlsState,
    /// Streams whose viewers have corked frames waiting for the next flush.
    pub(super) corked: RefCell<Vec<StreamId>>,
    pub(super) cork_kick: Notify,
    /// Bytes of partially reassembled RTMP messages of this shard's publishers, under one
    /// bound (`media.max_partial_bytes_per_shard`); created on first use.
    partial: std::cell::OnceCell<crate::media::rtmp::PartialBudget>,
}

/// Interval of the media clock sent to the danmaku room (C4).
const CLOCK_EVERY: Duration = Duration::from_millis(500);

pub(super) fn submit(shard: &Shard, to: usize, msg: Msg) -> bool {
    shard.ctx.mesh.submit_to(to, ShardMsg::Live(msg)).is_ok()
}

impl Live {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn settings(shard: &Shard) -> &super::Settings {
        &shard.common.live
    }

    /// The shard's budget for publishers' partial RTMP messages.
    pub fn partial_budget(&self, shard: &Shard) -> crate::media::rtmp::PartialBudget {
        self.partial
            .get_or_init(|| {
                crate::media::rtmp::PartialBudget::new(
                    Self::settings(shard).max_partial_bytes_per_shard,
                )
            })
            .clone()
    }

    // --- owner side --------------------------------------------------------------------

    /// The publisher of `stream` connected on this shard (after its claim was granted).
    /// Returns the notify that asks it to stop.
    pub fn start_owned(&self, shard: &Rc<Shard>, stream: &StreamId) -> Rc<Notify> {
        let mut owned = self.owned.borrow_mut();
        let o = owned.entry(stream.clone()).or_insert_with(|| Owned {
            gop: GopCache::new(Self::settings(shard).gop),
            subscribers: vec![false; shard.ctx.count],
            stop: Rc::new(Notify::new()),
            bytes_in: 0,
            started: Instant::now(),
            clock_sent: None,
        });
        // A resumed stream keeps its subscribers; the new publisher's headers replace the
        // old ones as they arrive.
        o.gop.clear();
        o.stop = Rc::new(Notify::new());
        shard.metrics().media_publishers.fetch_add(1, Relaxed);
        let stop = o.stop.clone();
        drop(owned);
        self.hls.start(shard, stream);
        stop
    }

    /// The publisher of `stream` on this shard is gone (`for_good`: it unpublished).
    pub fn publisher_gone(&self, shard: &Rc<Shard>, stream: &StreamId, for_good: bool) {
        shard.metrics().media_publishers.fetch_sub(1, Relaxed);
        self.hls.publisher_gone(shard, stream);
        let home = home_shard(stream, shard.ctx.count);
        let from = shard.id();
        let stream = stream.clone();
        let shard = shard.clone();
        monoio::spawn(async move {
            let s = stream.clone();
            let _ = shard
                .run_on(home, move |h| h.live.release(h, s, from, for_good))
                .await;
        });
    }

    /// One message from the publisher of `stream`: package it once, cache it, send it on.
    pub fn ingest(&self, shard: &Shard, stream: &StreamId, msg: MediaMessage, metadata: bool) {
        let len = msg.payload.len() as u64;
        bump(&self.counters.bytes_in, len);
        let Ok(packaged) = Packaged::new(&msg) else {
            return;
        };
        let (keyframe, essential) = classify(&msg, metadata);
        let frame = Arc::new(Frame {
            stream: stream.clone(),
            flv_chunk_head: Bytes::from(format!("{:x}\r\n", packaged.flv.len())),
            packaged,
            keyframe,
            essential,
        });
        let (subscribers, clock) = {
            let mut owned = self.owned.borrow_mut();
            let Some(o) = owned.get_mut(stream) else {
                return;
            };
            o.bytes_in += len;
            if metadata {
                o.gop.set_metadata(frame.packaged.clone());
            } else {
                o.gop.push(frame.packaged.clone());
            }
            let clock = (msg.kind == MediaKind::Video
                && o.clock_sent.is_none_or(|t| t.elapsed() >= CLOCK_EVERY))
            .then(|| {
                o.clock_sent = Some(Instant::now());
                msg.timestamp as u64
            });
            (o.subscribers.clone(), clock)
        };
        self.hls.ingest(shard, stream, &msg);
        for (s, subscribed) in subscribers.into_iter().enumerate() {
            if !subscribed {
                continue;
            }
            if s == shard.id() {
                self.on_frame(shard, &frame);
            } else if !submit(shard, s, Msg::Frame(frame.clone())) {
                bump(&self.counters.frames_lost, 1);
            }
        }
        if let Some(media_ms) = clock {
            // The stream clock for danmaku timestamps (C4), on the room's home shard.
            let msg = crate::danmaku::Msg::MediaClock {
                room: stream.clone(),
                media_ms: Some(media_ms),
            };
            let _ = shard
                .ctx
                .mesh
                .submit_to(home_shard(stream, shard.ctx.count), ShardMsg::Danmaku(msg));
        }
    }

    fn on_subscribe(&self, shard: &Shard, from: usize, stream: StreamId) {
        let start = {
            let mut owned = self.owned.borrow_mut();
            let Some(o) = owned.get_mut(&stream) else {
                return;
            };
            o.subscribers[from] = true;
            let mut gop = Vec::with_capacity(o.gop.gop_len() + 3);
            gop.extend(o.gop.metadata().cloned());
            gop.extend(o.gop.frames().cloned());
            Msg::Start {
                stream,
                has_metadata: o.gop.metadata().is_some(),
                gop: Box::new(gop),
            }
        };
        if from == shard.id() {
            self.handle_local(shard, from, start);
        } else {
            let _ = submit(shard, from, start);
        }
    }

    // --- messages ----------------------------------------------------------------------

    pub fn handle(&self, shard: &Rc<Shard>, from: usize, msg: Msg) {
        self.handle_local(shard, from, msg)
    }

    pub(super) fn handle_local(&self, shard: &Shard, from: usize, msg: Msg) {
        match msg {
            Msg::Announce { stream, owner } => self.on_announce(shard, stream, owner),
            Msg::Subscribe { stream } => self.on_subscribe(shard, from, stream),
            Msg::Unsubscribe { stream } => {
                if let Some(o) = self.owned.borrow_mut().get_mut(&stream) {
                    o.subscribers[from] = false;
                }
            }
            Msg::Start {
                stream,
                gop,
                has_metadata,
            } => self.on_start(shard, stream, *gop, has_metadata),
            Msg::Frame(frame) => self.on_frame(shard, &frame),
            Msg::HlsHistory { stream, history } => self.hls.adopt(shard, stream, *history),
            Msg::Stop { stream } => {
                if let Some(o) = self.owned.borrow().get(&stream) {
                    o.stop.notify();
                }
            }
        }
    }

    /// Bytes written to a media viewer (metrics).
    pub fn wrote(&self, n: usize) {
        bump(&self.counters.bytes_out, n as u64);
    }

    /// Streams published on this shard, for `/metrics`.
    pub fn stream_stats(&self) -> Vec<StreamStats> {
        self.owned
            .borrow()
            .iter()
            .map(|(name, o)| StreamStats {
                stream: name.to_string(),
                bitrate_bps: o.bytes_in as f64 * 8.0 / o.started.elapsed().as_secs_f64().max(1.0),
                subscribers: o.subscribers.iter().filter(|s| **s).count(),
            })
            .collect()
    }

    /// Publishes this shard's counters (called by the shard's sweeper every second).
    pub fn publish_metrics(&self, shard: &Shard) {
        let m = shard.metrics();
        let c = &self.counters;
        let take = |cell: &Cell<u64>| cell.replace(0);
        m.media_bytes_in.fetch_add(take(&c.bytes_in), Relaxed);
        m.media_bytes_out.fetch_add(take(&c.bytes_out), Relaxed);
        m.media_gop_hits.fetch_add(take(&c.gop_hits), Relaxed);
        m.media_frames_skipped.fetch_add(take(&c.skipped), Relaxed);
        m.media_slow_closed.fetch_add(take(&c.slow_closed), Relaxed);
        m.media_frames_lost.fetch_add(take(&c.frames_lost), Relaxed);
        m.media_streams
            .store(self.owned.borrow().len() as u64, Relaxed);
        self.hls.sweep(Instant::now());
        let (streams, bytes) = self.hls.held();
        m.media_hls_streams.store(streams as u64, Relaxed);
        m.media_hls_held_bytes.store(bytes as u64, Relaxed);
        let partial = self.partial.get().map_or(0, |b| b.used());
        m.media_partial_bytes.store(partial as u64, Relaxed);
    }
}

/// Whether a message is a keyframe (where a skipping viewer may resume) and whether it is
/// essential (metadata, sequence headers: never skipped).
fn classify(msg: &MediaMessage, metadata: bool) -> (bool, bool) {
    match msg.kind {
        MediaKind::Video => match VideoTag::parse(&msg.payload) {
            Ok(t) => (
                t.is_keyframe() && !t.is_sequence_header(),
                t.is_sequence_header(),
            ),
            Err(_) => (false, false),
        },
        MediaKind::Audio => match AudioTag::parse(&msg.payload) {
            Ok(t) => (false, t.is_sequence_header()),
            Err(_) => (false, false),
        },
        MediaKind::Data => (false, metadata),
    }
}
