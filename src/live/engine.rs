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

use super::outbox::{Offer, Outbox};
use super::{home_shard, Frame, Msg, StreamId};
use crate::danmaku::PostBody;
use crate::media::flv::{AudioTag, VideoTag};
use crate::media::gop::GopCache;
use crate::media::{MediaKind, MediaMessage, Packaged};
use crate::shard::{Shard, ShardMsg};

/// How a viewer is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Rtmp,
    Flv,
}

/// One viewer of a stream on this shard.
pub struct Viewer {
    pub outbox: Rc<Outbox>,
    pub proto: Proto,
    /// Set when its stream ends (the connection then closes or, for RTMP, tells the player).
    pub ended: Notify,
    pub is_ended: Cell<bool>,
    /// When the player asked to play, until its first keyframe is queued: then the time to
    /// first frame is observed (`liveshard_media_ttff_seconds`) and this cleared.
    pub requested: Cell<Option<Instant>>,
}

impl Viewer {
    pub fn new(outbox: Rc<Outbox>, proto: Proto) -> Rc<Self> {
        Rc::new(Self {
            outbox,
            proto,
            ended: Notify::new(),
            is_ended: Cell::new(false),
            requested: Cell::new(Some(Instant::now())),
        })
    }

    /// Observes the time to first frame if this is the viewer's first keyframe.
    fn first_keyframe(&self, shard: &Shard) {
        if let Some(t) = self.requested.take() {
            let proto = match self.proto {
                Proto::Rtmp => 0,
                Proto::Flv => 1,
            };
            shard.metrics().observe_ttff(proto, t.elapsed());
        }
    }

    fn end(&self) {
        self.is_ended.set(true);
        self.ended.notify();
    }
}

/// The registry entry on a stream's home shard.
struct Claim {
    owner: usize,
    connected: bool,
    /// Bumped on every (re)claim, so a grace timer can tell it is stale.
    epoch: u64,
}

/// A stream published on this shard.
struct Owned {
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
    owner: usize,
    gop: GopCache,
    /// The owner's `Start` has arrived; viewers can be started from `gop`.
    ready: bool,
    viewers: Vec<Rc<Viewer>>,
    /// Frames are gathered per viewer and sent every `media.cork_ms`.
    cork: bool,
    /// This stream is on the shard's list of streams to flush.
    corked: bool,
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
struct Counters {
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    gop_hits: Cell<u64>,
    skipped: Cell<u64>,
    slow_closed: Cell<u64>,
    frames_lost: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
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
    registry: RefCell<HashMap<StreamId, Claim>>,
    next_epoch: Cell<u64>,
    owned: RefCell<HashMap<StreamId, Owned>>,
    owners: RefCell<HashMap<StreamId, usize>>,
    local: RefCell<HashMap<StreamId, LocalStream>>,
    counters: Counters,
    /// HLS segmenters of streams published here, and where ended playlists are.
    pub(super) hls: super::hls::HlsState,
    /// Streams whose viewers have corked frames waiting for the next flush.
    corked: RefCell<Vec<StreamId>>,
    cork_kick: Notify,
    /// Bytes of partially reassembled RTMP messages of this shard's publishers, under one
    /// bound (`media.max_partial_bytes_per_shard`); created on first use.
    partial: std::cell::OnceCell<crate::media::rtmp::PartialBudget>,
}

/// Interval of the media clock sent to the danmaku room (C4).
const CLOCK_EVERY: Duration = Duration::from_millis(500);
static CRLF: Bytes = Bytes::from_static(b"\r\n");

fn submit(shard: &Shard, to: usize, msg: Msg) -> bool {
    shard.ctx.mesh.submit_to(to, ShardMsg::Live(msg)).is_ok()
}

impl Live {
    pub fn new() -> Self {
        Self::default()
    }

    fn settings(shard: &Shard) -> &super::Settings {
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

    // --- registry (home shard) ---------------------------------------------------------

    /// On the stream's home shard: may `from` publish `stream`?
    pub fn claim(&self, shard: &Rc<Shard>, stream: StreamId, from: usize) -> ClaimAnswer {
        let epoch = self.next_epoch.get() + 1;
        self.next_epoch.set(epoch);
        let resumed = {
            let mut reg = self.registry.borrow_mut();
            match reg.get_mut(&stream) {
                Some(c) if c.connected => return ClaimAnswer::Busy,
                Some(c) => {
                    c.owner = from;
                    c.connected = true;
                    c.epoch = epoch;
                    true
                }
                None => {
                    reg.insert(
                        stream.clone(),
                        Claim {
                            owner: from,
                            connected: true,
                            epoch,
                        },
                    );
                    false
                }
            }
        };
        self.announce(shard, &stream, Some(from));
        if !resumed {
            shard
                .danmaku
                .system_post(shard, stream, PostBody::Live { live: true });
        }
        ClaimAnswer::Granted { resumed }
    }

    /// On the home shard: the publisher of `stream` on `from` stopped. `for_good` (an
    /// explicit unpublish) ends the stream now; otherwise it waits for the grace period.
    pub fn release(&self, shard: &Rc<Shard>, stream: StreamId, from: usize, for_good: bool) {
        let epoch = {
            let mut reg = self.registry.borrow_mut();
            let Some(c) = reg.get_mut(&stream) else {
                return;
            };
            if c.owner != from || !c.connected {
                return;
            }
            c.connected = false;
            c.epoch
        };
        if for_good {
            return self.end(shard, &stream);
        }
        let grace = Self::settings(shard).publisher_grace;
        let shard = shard.clone();
        monoio::spawn(async move {
            monoio::time::sleep(grace).await;
            let expired = shard
                .live
                .registry
                .borrow()
                .get(&stream)
                .is_some_and(|c| !c.connected && c.epoch == epoch);
            if expired {
                shard.live.end(&shard, &stream);
            }
        });
    }

    fn end(&self, shard: &Rc<Shard>, stream: &StreamId) {
        if self.registry.borrow_mut().remove(stream).is_none() {
            return;
        }
        self.announce(shard, stream, None);
        shard
            .danmaku
            .system_post(shard, stream.clone(), PostBody::Live { live: false });
        let clock = crate::danmaku::Msg::MediaClock {
            room: stream.clone(),
            media_ms: None,
        };
        let _ = shard
            .ctx
            .mesh
            .submit_to(shard.id(), ShardMsg::Danmaku(clock));
    }

    /// On the home shard: stop the stream's publisher (its room was closed).
    pub fn stop(&self, shard: &Shard, stream: &StreamId) {
        if let Some(c) = self.registry.borrow().get(stream) {
            let _ = submit(
                shard,
                c.owner,
                Msg::Stop {
                    stream: stream.clone(),
                },
            );
        }
    }

    /// Whether `stream` is live (on its home shard).
    pub fn is_claimed(&self, stream: &str) -> bool {
        self.registry
            .borrow()
            .get(stream)
            .is_some_and(|c| c.connected)
    }

    fn announce(&self, shard: &Shard, stream: &StreamId, owner: Option<usize>) {
        for s in 0..shard.ctx.count {
            let msg = Msg::Announce {
                stream: stream.clone(),
                owner,
            };
            if s == shard.id() {
                let _ = shard.ctx.mesh.submit_to(s, ShardMsg::Live(msg));
            } else {
                // A full ring here would leave that shard with a stale owner until the next
                // announcement; it is counted by the mesh as overflow.
                let _ = submit(shard, s, msg);
            }
        }
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

    // --- viewer side -------------------------------------------------------------------

    /// Whether `stream` is live as far as this shard knows (its owner was announced).
    pub fn is_watchable(&self, stream: &str) -> bool {
        self.owners.borrow().contains_key(stream)
    }

    /// The shard that owns live `stream`, as far as this shard knows.
    pub fn owner(&self, stream: &str) -> Option<usize> {
        self.owners.borrow().get(stream).copied()
    }

    /// Adds a viewer of `stream` on this shard. Returns false if the stream is not live
    /// (as far as this shard knows).
    pub fn watch(&self, shard: &Shard, stream: &StreamId, viewer: Rc<Viewer>) -> bool {
        let Some(owner) = self.owners.borrow().get(stream).copied() else {
            return false;
        };
        let mut local = self.local.borrow_mut();
        let ls = local.entry(stream.clone()).or_insert_with(|| LocalStream {
            owner,
            gop: GopCache::new(Self::settings(shard).gop),
            ready: false,
            viewers: Vec::new(),
            cork: !Self::settings(shard).cork.is_zero(),
            corked: false,
        });
        let subscribe = !ls.ready && ls.viewers.is_empty();
        if ls.ready {
            self.start_viewer(shard, ls, &viewer);
        }
        ls.viewers.push(viewer.clone());
        let owner = ls.owner;
        drop(local);
        self.count_viewer(shard, viewer.proto, 1);
        if subscribe {
            self.send_or_local(
                shard,
                owner,
                Msg::Subscribe {
                    stream: stream.clone(),
                },
            );
        }
        true
    }

    /// Removes a viewer; unsubscribes when it was the last one here.
    pub fn unwatch(&self, shard: &Shard, stream: &StreamId, viewer: &Rc<Viewer>) {
        let mut local = self.local.borrow_mut();
        let Some(ls) = local.get_mut(stream) else {
            return;
        };
        let before = ls.viewers.len();
        ls.viewers.retain(|v| !Rc::ptr_eq(v, viewer));
        if ls.viewers.len() == before {
            return;
        }
        let empty = ls.viewers.is_empty();
        let owner = ls.owner;
        if empty {
            local.remove(stream);
        }
        drop(local);
        self.count_viewer(shard, viewer.proto, -1);
        if empty {
            self.send_or_local(
                shard,
                owner,
                Msg::Unsubscribe {
                    stream: stream.clone(),
                },
            );
        }
    }

    fn count_viewer(&self, shard: &Shard, proto: Proto, delta: i64) {
        let m = shard.metrics();
        let gauge = match proto {
            Proto::Rtmp => &m.media_viewers_rtmp,
            Proto::Flv => &m.media_viewers_flv,
        };
        gauge.fetch_add(delta, Relaxed);
    }

    fn send_or_local(&self, shard: &Shard, to: usize, msg: Msg) {
        if to == shard.id() {
            self.handle_local(shard, to, msg);
        } else {
            let _ = submit(shard, to, msg);
        }
    }

    /// Writes the start of the stream (from this shard's GOP mirror) to a new viewer.
    fn start_viewer(&self, shard: &Shard, ls: &LocalStream, viewer: &Viewer) {
        if ls.gop.has_gop() {
            bump(&self.counters.gop_hits, 1);
            // A cached GOP starts on a keyframe: the player's first picture goes out now.
            viewer.first_keyframe(shard);
        }
        match viewer.proto {
            Proto::Rtmp => {
                for b in ls.gop.rtmp_start() {
                    viewer.outbox.push(b);
                }
            }
            Proto::Flv => {
                // Header and cached tags as one HTTP chunk.
                let parts = ls.gop.flv_start();
                let len: usize = parts.iter().map(Bytes::len).sum();
                viewer.outbox.push(Bytes::from(format!("{len:x}\r\n")));
                for b in parts {
                    viewer.outbox.push(b);
                }
                viewer.outbox.push(CRLF.clone());
            }
        }
    }

    fn on_frame(&self, shard: &Shard, frame: &Arc<Frame>) {
        let mut local = self.local.borrow_mut();
        let Some(ls) = local.get_mut(&frame.stream) else {
            return;
        };
        if !ls.ready {
            return;
        }
        if frame.packaged.kind == MediaKind::Data && frame.essential {
            ls.gop.set_metadata(frame.packaged.clone());
        } else {
            ls.gop.push(frame.packaged.clone());
        }
        let corked = !ls.corked && ls.cork;
        let (mut skipped, mut closed, mut direct) = (0u64, 0u64, 0u64);
        for v in &ls.viewers {
            let parts: &[&Bytes] = match v.proto {
                Proto::Rtmp => &[&frame.packaged.rtmp],
                Proto::Flv => &[&frame.flv_chunk_head, &frame.packaged.flv, &CRLF],
            };
            let offer = if ls.cork {
                v.outbox.offer_corked(frame, parts)
            } else {
                v.outbox.offer(frame, parts)
            };
            match offer {
                Offer::Queued => {
                    direct += v.outbox.take_direct_bytes();
                    if frame.keyframe {
                        v.first_keyframe(shard);
                    }
                }
                Offer::Skipped => skipped += 1,
                Offer::Closed => closed += 1,
            }
        }
        bump(&self.counters.bytes_out, direct);
        bump(&self.counters.skipped, skipped);
        bump(&self.counters.slow_closed, closed);
        if corked {
            ls.corked = true;
            self.corked.borrow_mut().push(frame.stream.clone());
            self.cork_kick.notify();
        }
    }

    /// Sends what each corked stream's viewers have queued, one system call per viewer.
    fn flush_corked(&self) {
        let streams = std::mem::take(&mut *self.corked.borrow_mut());
        let mut sent = 0;
        let mut local = self.local.borrow_mut();
        for stream in streams {
            let Some(ls) = local.get_mut(&stream) else {
                continue;
            };
            ls.corked = false;
            for v in &ls.viewers {
                sent += v.outbox.flush();
            }
        }
        bump(&self.counters.bytes_out, sent);
    }

    /// Starts the shard's media tasks (the cork flusher).
    pub fn spawn_tasks(shard: &Rc<Shard>) {
        let cork = Self::settings(shard).cork;
        if cork.is_zero() {
            return;
        }
        let shard = shard.clone();
        monoio::spawn(async move {
            loop {
                shard.live.cork_kick.notified().await;
                monoio::time::sleep(cork).await;
                shard.live.flush_corked();
            }
        });
    }

    fn on_start(&self, shard: &Shard, stream: StreamId, gop: Vec<Packaged>, has_metadata: bool) {
        let mut local = self.local.borrow_mut();
        let Some(ls) = local.get_mut(&stream) else {
            return;
        };
        ls.gop.clear();
        let mut items = gop.into_iter();
        if has_metadata {
            if let Some(m) = items.next() {
                ls.gop.set_metadata(m);
            }
        }
        for p in items {
            ls.gop.push(p);
        }
        if !ls.ready {
            ls.ready = true;
            for v in &ls.viewers {
                self.start_viewer(shard, ls, v);
            }
        }
    }

    fn on_announce(&self, shard: &Shard, stream: StreamId, owner: Option<usize>) {
        match owner {
            Some(owner) => {
                self.owners.borrow_mut().insert(stream.clone(), owner);
                self.hls.on_owner(shard, &stream, owner);
                // Streams this shard published before lose their ownership to the new owner.
                if owner != shard.id() {
                    self.owned.borrow_mut().remove(&stream);
                }
                let resubscribe = {
                    let mut local = self.local.borrow_mut();
                    match local.get_mut(&stream) {
                        Some(ls) if ls.owner != owner => {
                            ls.owner = owner;
                            ls.ready = false;
                            true
                        }
                        _ => false,
                    }
                };
                if resubscribe {
                    self.send_or_local(shard, owner, Msg::Subscribe { stream });
                }
            }
            None => {
                let owner = self.owners.borrow_mut().remove(&stream);
                self.owned.borrow_mut().remove(&stream);
                self.hls.on_offline(shard, &stream, owner);
                if let Some(ls) = self.local.borrow_mut().remove(&stream) {
                    for v in &ls.viewers {
                        self.count_viewer(shard, v.proto, -1);
                        v.end();
                    }
                }
            }
        }
    }

    // --- messages ----------------------------------------------------------------------

    pub fn handle(&self, shard: &Rc<Shard>, from: usize, msg: Msg) {
        self.handle_local(shard, from, msg)
    }

    fn handle_local(&self, shard: &Shard, from: usize, msg: Msg) {
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
