//! One shard's live-stream state: the registry half (streams homed here), the owner half
//! (streams published here) and the viewer half (streams watched here).
//!
//! Publish: the publisher's shard asks the stream's home (`port().call`) to [`Live::claim`] it;
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

use super::{Frame, Msg, RoomEvents, Settings, StreamId};
use crate::media::gop::GopCache;
use crate::media::timeline::{Resume, Timeline};
use crate::media::{MediaKind, MediaMessage, Packaged};
use crate::metrics::{Slot, StreamStats};
use crate::outbound::OutboundHandle;
use crate::outq::OutQueue;
use crate::port::Port;

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
    /// Its stream's start (the FLV header) has been queued.
    pub started: Cell<bool>,
    /// HTTP-FLV: the `onStreamTime` tag (its first frame's stream time) has been queued.
    pub time_told: Cell<bool>,
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
            started: Cell::new(false),
            time_told: Cell::new(false),
            requested: Cell::new(Some(Instant::now())),
        })
    }

    /// Observes the time to first frame if this is the viewer's first keyframe.
    pub(super) fn first_keyframe(&self, metrics: &Slot) {
        if let Some(t) = self.requested.take() {
            let proto = match self.proto {
                Proto::Rtmp => 0,
                Proto::Flv => 1,
            };
            metrics.observe_ttff(proto, t.elapsed());
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
    /// When its publisher went (`connected` false): the grace runs from here.
    pub(super) released: Option<Instant>,
    /// Where the stream's clock stopped when its publisher went, for the next one.
    pub(super) resume: Option<Resume>,
    /// Pulled from the node it is published on (`super::pull`): that node tells the
    /// room it went live or offline, not this one.
    pub(super) pulled: bool,
}

/// A stream published on this shard.
pub(super) struct Owned {
    pub(super) gop: GopCache,
    subscribers: Vec<bool>,
    /// Wakes the publisher's connection to close it (the room was closed).
    stop: Rc<Notify>,
    bytes_in: u64,
    started: Instant,
    clock_sent: Option<Instant>,
    /// The stream clock every message is stamped with.
    timeline: Timeline,
}

/// A stream watched on this shard.
pub struct LocalStream {
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
    pub(super) skipped: Cell<u64>,
    pub(super) slow_closed: Cell<u64>,
    frames_lost: Cell<u64>,
}

pub(super) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// What the live engine is given when its shard wires it, and nothing else of the shard:
/// its mesh port, its settings, the outbound pool (hooks), its metrics slot, where room
/// events go (the danmaku room's live/offline and clock), and the shutdown signal.
pub struct Ctx {
    pub port: Port<Msg>,
    pub settings: Arc<Settings>,
    pub outbound: OutboundHandle,
    /// For the publish check that the stream's room is not closed.
    pub store: crate::store::StoreHandle,
    pub metrics: Slot,
    pub events: Rc<dyn RoomEvents>,
    pub shutdown: Rc<shards::local::Signal>,
    /// What "now" is for the engine's decisions (the publisher's grace, HLS keep times,
    /// the stream clock's pace, bitrates).
    pub clock: Rc<dyn crate::clock::Clock>,
}

pub struct Live {
    pub(super) ctx: Ctx,
    pub(super) registry: RefCell<HashMap<StreamId, Claim>>,
    pub(super) owned: RefCell<HashMap<StreamId, Owned>>,
    pub(super) owners: RefCell<HashMap<StreamId, usize>>,
    /// Shards that subscribed to a stream announced as this shard's before its publisher
    /// started it here (at most one entry per shard per such stream; dropped when the
    /// stream is announced elsewhere or offline).
    pub(super) early: RefCell<HashMap<StreamId, Vec<usize>>>,
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
    /// Recordings of streams published here (`super::record`).
    pub(super) recordings: super::record::Recordings,
    /// Streams pulled from other nodes by this (their home) shard (`super::pull`).
    pub(super) pulls: RefCell<HashMap<StreamId, Rc<super::pull::PullState>>>,
}

/// Interval of the media clock sent to the danmaku room (C4): a tick carries the stream
/// time of the first video frame at least this long after the previous tick. The room
/// runs its clock on from a tick for at most twice this (`danmaku::room`), so the clock
/// stops within that once frames stop coming.
pub const CLOCK_EVERY: Duration = Duration::from_millis(500);

impl Live {
    pub fn new(ctx: Ctx) -> Rc<Self> {
        Rc::new(Self {
            ctx,
            registry: Default::default(),
            owned: Default::default(),
            owners: Default::default(),
            early: Default::default(),
            local: Default::default(),
            counters: Default::default(),
            hls: Default::default(),
            corked: Default::default(),
            cork_kick: Notify::new(),
            partial: Default::default(),
            recordings: Default::default(),
            pulls: Default::default(),
        })
    }

    /// The engine's mesh port (the API and HLS call other shards' engines through it).
    pub fn port(&self) -> &Port<Msg> {
        &self.ctx.port
    }

    /// The engine's clock.
    pub(super) fn now(&self) -> Instant {
        self.ctx.clock.now()
    }

    /// Which of `streams`, published here, HLS refuses for a codec it does not carry
    /// (the API leaves their `play.hls` out).
    pub fn hls_refused_among(&self, streams: &[String]) -> Vec<String> {
        self.hls.refused_among(streams)
    }

    pub fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    /// Sends a live message to shard `to` (this one included); false if its lane is full.
    pub(super) fn submit(&self, to: usize, msg: Msg) -> bool {
        self.ctx.port.submit_to(to, msg).is_ok()
    }

    /// The shard's budget for publishers' partial RTMP messages.
    pub fn partial_budget(&self) -> crate::media::rtmp::PartialBudget {
        self.partial
            .get_or_init(|| {
                crate::media::rtmp::PartialBudget::new(self.settings().max_partial_bytes_per_shard)
            })
            .clone()
    }

    // --- owner side --------------------------------------------------------------------

    /// The publisher of `stream` connected on this shard (after its claim was granted).
    /// Returns the notify that asks it to stop.
    pub fn start_owned(self: &Rc<Self>, stream: &StreamId) -> Rc<Notify> {
        self.start_owned_at(stream, None)
    }

    /// [`Live::start_owned`], carrying the stream clock on from where a previous
    /// publisher left it (`resume`, from the claim: [`Live::resume_point`]).
    pub fn start_owned_at(
        self: &Rc<Self>,
        stream: &StreamId,
        resume: Option<Resume>,
    ) -> Rc<Notify> {
        let mut owned = self.owned.borrow_mut();
        let o = owned.entry(stream.clone()).or_insert_with(|| Owned {
            gop: GopCache::new(self.settings().gop),
            subscribers: vec![false; self.ctx.port.shards()],
            stop: Rc::new(Notify::new()),
            bytes_in: 0,
            started: self.now(),
            clock_sent: None,
            timeline: Timeline::new(),
        });
        match resume {
            Some(r) => o.timeline = Timeline::resumed(r),
            None => o.timeline.restart(),
        }
        o.clock_sent = None;
        // A resumed stream keeps its subscribers; the new publisher's headers replace the
        // old ones as they arrive.
        o.gop.clear();
        o.stop = Rc::new(Notify::new());
        // Shards that subscribed between the announcement and now start from the (empty)
        // cache; the live frames follow.
        let early = self.early.borrow_mut().remove(stream).unwrap_or_default();
        for &s in &early {
            o.subscribers[s] = true;
        }
        self.ctx.metrics.media_publishers.fetch_add(1, Relaxed);
        let stop = o.stop.clone();
        drop(owned);
        for s in early {
            let start = Msg::Start {
                stream: stream.clone(),
                has_metadata: false,
                gop: Box::default(),
            };
            let _ = self.submit(s, start);
        }
        self.hls.start(&self.ctx, stream);
        self.record_on_publish(stream);
        stop
    }

    /// The publisher of `stream` on this shard is gone (`for_good`: it unpublished).
    pub fn publisher_gone(self: &Rc<Self>, stream: &StreamId, for_good: bool) {
        self.ctx.metrics.media_publishers.fetch_sub(1, Relaxed);
        self.hls.publisher_gone(&self.ctx, stream);
        self.record_stop(stream);
        // The clock stops here (no more ticks to the room); the next publisher carries
        // it on from this point.
        let resume = self
            .owned
            .borrow()
            .get(stream)
            .and_then(|o| o.timeline.resume_point());
        let home = self.ctx.port.home_of(stream);
        let from = self.ctx.port.me();
        let stream = stream.clone();
        let port = self.ctx.port.clone();
        monoio::spawn(async move {
            let _ = port
                .call(home, move |h: &Rc<Live>| {
                    h.release(stream, from, for_good, resume)
                })
                .await;
        });
    }

    /// Whether a shard subscribed to `stream`, published here (it has viewers there).
    pub(super) fn has_subscribers(&self, stream: &str) -> bool {
        self.owned
            .borrow()
            .get(stream)
            .is_some_and(|o| o.subscribers.iter().any(|s| *s))
    }

    /// One message from the publisher of `stream`: stamp it with stream time, package it
    /// once, cache it, send it on.
    pub fn ingest(&self, stream: &StreamId, msg: MediaMessage, metadata: bool) {
        let len = msg.payload.len() as u64;
        bump(&self.counters.bytes_in, len);
        let now = self.now();
        let unix_ms = self.ctx.clock.unix_ms();
        let (frame, subscribers, clock, epoch) = {
            let mut owned = self.owned.borrow_mut();
            let Some(o) = owned.get_mut(stream) else {
                return;
            };
            // Classified once; frames move the stream clock, the rest (metadata, sequence
            // headers) take its current offset.
            let timeline = &mut o.timeline;
            let packaged = Packaged::stamped(&msg, metadata, |class, raw| {
                if class.is_frame() {
                    timeline.stamp_frame(raw, unix_ms)
                } else {
                    timeline.stamp_other(raw)
                }
            });
            let Ok(packaged) = packaged else {
                return;
            };
            let frame = Arc::new(Frame {
                stream: stream.clone(),
                flv_chunk_head: Bytes::from(format!("{:x}\r\n", packaged.flv.len())),
                packaged,
            });
            o.bytes_in += len;
            if metadata {
                o.gop.set_metadata(frame.packaged.clone());
            } else {
                o.gop.push(frame.packaged.clone());
            }
            let p = &frame.packaged;
            let clock = (p.kind == MediaKind::Video
                && p.class.is_frame()
                && o.clock_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= CLOCK_EVERY))
            .then(|| {
                o.clock_sent = Some(now);
                u64::from(p.timestamp)
            });
            let epoch = o.timeline.epoch_ms();
            (frame, o.subscribers.clone(), clock, epoch)
        };
        self.hls.ingest(&self.ctx, stream, &frame.packaged, epoch);
        self.record_frame(stream, &frame.packaged);
        for (s, subscribed) in subscribers.into_iter().enumerate() {
            if !subscribed {
                continue;
            }
            if !self.submit(s, Msg::Frame(frame.clone())) {
                bump(&self.counters.frames_lost, 1);
            }
        }
        if let Some(media_ms) = clock {
            // The stream clock for danmaku timestamps (C4): stream time, ticked at most
            // every `CLOCK_EVERY` while video frames arrive and never otherwise, so the
            // room's clock stops with the publisher.
            self.ctx.events.clock(stream, Some(media_ms));
        }
    }

    fn on_subscribe(&self, from: usize, stream: StreamId) {
        let start = {
            let mut owned = self.owned.borrow_mut();
            let Some(o) = owned.get_mut(&stream) else {
                // Announced as ours, but the publisher's connection has not started the
                // stream yet (the announcement and the claim's answer race): remember.
                if self.owners.borrow().get(&stream) == Some(&self.ctx.port.me()) {
                    let mut early = self.early.borrow_mut();
                    let subs = early.entry(stream).or_default();
                    if !subs.contains(&from) {
                        subs.push(from);
                    }
                }
                return;
            };
            o.subscribers[from] = true;
            let mut gop = Vec::with_capacity(o.gop.gop_len() + crate::media::gop::SLOTS);
            gop.extend(o.gop.metadata().cloned());
            gop.extend(o.gop.frames().cloned());
            Msg::Start {
                stream,
                has_metadata: o.gop.metadata().is_some(),
                gop: Box::new(gop),
            }
        };
        let _ = self.submit(from, start);
    }

    // --- messages ----------------------------------------------------------------------

    /// A live message from shard `from` (this one included).
    pub fn handle(self: &Rc<Self>, from: usize, msg: Msg) {
        match msg {
            Msg::Announce { stream, owner } => self.on_announce(stream, owner),
            Msg::Subscribe { stream } => self.on_subscribe(from, stream),
            Msg::Unsubscribe { stream } => {
                if let Some(o) = self.owned.borrow_mut().get_mut(&stream) {
                    o.subscribers[from] = false;
                }
            }
            Msg::Start {
                stream,
                gop,
                has_metadata,
            } => self.on_start(stream, *gop, has_metadata),
            Msg::Frame(frame) => self.on_frame(&frame),
            Msg::HlsHistory { stream, history } => self.hls.adopt(&self.ctx, stream, *history),
            Msg::Stop { stream } => {
                if let Some(o) = self.owned.borrow().get(&stream) {
                    o.stop.notify();
                }
            }
            Msg::Call(call) => call.run(self),
        }
    }

    /// Bytes written to a media viewer (metrics).
    pub fn wrote(&self, n: usize) {
        bump(&self.counters.bytes_out, n as u64);
    }

    /// Streams published on this shard, for `/metrics`.
    pub fn stream_stats(&self) -> Vec<StreamStats> {
        let now = self.now();
        self.owned
            .borrow()
            .iter()
            .map(|(name, o)| StreamStats {
                stream: name.to_string(),
                bitrate_bps: o.bytes_in as f64 * 8.0
                    / now
                        .saturating_duration_since(o.started)
                        .as_secs_f64()
                        .max(1.0),
                subscribers: o.subscribers.iter().filter(|s| **s).count(),
            })
            .collect()
    }

    /// The once-a-second sweep: expired HLS playlists are let go, and this shard's
    /// counters are published.
    pub fn sweep(&self) {
        let m = &self.ctx.metrics;
        let c = &self.counters;
        let take = |cell: &Cell<u64>| cell.replace(0);
        m.media_bytes_in.fetch_add(take(&c.bytes_in), Relaxed);
        m.media_bytes_out.fetch_add(take(&c.bytes_out), Relaxed);
        m.media_frames_skipped.fetch_add(take(&c.skipped), Relaxed);
        m.media_slow_closed.fetch_add(take(&c.slow_closed), Relaxed);
        m.media_frames_lost.fetch_add(take(&c.frames_lost), Relaxed);
        m.media_streams
            .store(self.owned.borrow().len() as u64, Relaxed);
        // Playlists of ended streams are let go once their time is up.
        self.hls.sweep(self.now());
        let (streams, bytes) = self.hls.held();
        m.media_hls_streams.store(streams as u64, Relaxed);
        m.media_hls_held_bytes.store(bytes as u64, Relaxed);
        m.media_hls_parked.store(self.hls.parked() as u64, Relaxed);
        let partial = self.partial.get().map_or(0, |b| b.used());
        m.media_partial_bytes.store(partial as u64, Relaxed);
    }
}
