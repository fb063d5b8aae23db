//! The viewer half of [`Live`] (streams watched on this shard): the GOP mirror, the
//! viewers, corked writes and the owner announcements that start and end them.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::engine::{bump, Live, LocalStream, Proto, Viewer};
use super::{Frame, Msg, StreamId};
use crate::media::gop::GopCache;
use crate::media::{flv, MediaKind, Packaged};
use crate::outq::{Kind, Offer};

static CRLF: Bytes = Bytes::from_static(b"\r\n");

impl Live {
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
    pub fn watch(&self, stream: &StreamId, viewer: Rc<Viewer>) -> bool {
        let Some(owner) = self.owners.borrow().get(stream).copied() else {
            return false;
        };
        let mut local = self.local.borrow_mut();
        let ls = local.entry(stream.clone()).or_insert_with(|| LocalStream {
            gop: GopCache::new(self.settings().gop),
            ready: false,
            viewers: Vec::new(),
            cork: !self.settings().cork.is_zero(),
            corked: false,
        });
        let subscribe = !ls.ready && ls.viewers.is_empty();
        if ls.ready {
            self.start_viewer(ls, &viewer);
        }
        ls.viewers.push(viewer.clone());
        drop(local);
        self.count_viewer(viewer.proto, 1);
        if subscribe {
            let _ = self.submit(
                owner,
                Msg::Subscribe {
                    stream: stream.clone(),
                },
            );
        }
        true
    }

    /// Removes a viewer; unsubscribes when it was the last one here.
    pub fn unwatch(&self, stream: &StreamId, viewer: &Rc<Viewer>) {
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
        if empty {
            local.remove(stream);
        }
        drop(local);
        self.count_viewer(viewer.proto, -1);
        // A stream that went offline has no owner left to tell.
        let owner = self.owner(stream);
        if let Some(owner) = owner.filter(|_| empty) {
            let _ = self.submit(
                owner,
                Msg::Unsubscribe {
                    stream: stream.clone(),
                },
            );
        }
    }

    fn count_viewer(&self, proto: Proto, delta: i64) {
        let m = &self.ctx.metrics;
        let gauge = match proto {
            Proto::Rtmp => &m.media_viewers_rtmp,
            Proto::Flv => &m.media_viewers_flv,
        };
        gauge.fetch_add(delta, Relaxed);
    }

    /// Writes the start of the stream (from this shard's GOP mirror) to a new viewer.
    fn start_viewer(&self, ls: &LocalStream, viewer: &Viewer) {
        if ls.gop.has_gop() {
            // Once per viewer start, so counted at once (a scrape right after sees it).
            self.ctx.metrics.media_gop_hits.fetch_add(1, Relaxed);
            // A cached GOP starts on a keyframe: the player's first picture goes out now.
            viewer.first_keyframe(&self.ctx.metrics);
        }
        match viewer.proto {
            Proto::Rtmp => {
                for b in ls.gop.rtmp_start() {
                    viewer.outbox.send(b);
                }
            }
            Proto::Flv => {
                // Header and cached tags as one HTTP chunk. A viewer already playing (its
                // stream moved to a new owner shard) gets the new owner's tags without a
                // second FLV header, which a player would read as a broken tag.
                let parts = if viewer.started.replace(true) {
                    ls.gop.iter().map(|p| p.flv.clone()).collect()
                } else {
                    let mut parts = ls.gop.flv_start();
                    // The player's media time starts at its first frame: say which
                    // stream time that is (after the FLV header, before any tag).
                    if let Some(start) = first_frame_time(&ls.gop) {
                        parts.insert(1.min(parts.len()), flv::stream_time_tag(start));
                        viewer.time_told.set(true);
                    }
                    parts
                };
                if parts.is_empty() {
                    return;
                }
                let len: usize = parts.iter().map(Bytes::len).sum();
                viewer.outbox.send(Bytes::from(format!("{len:x}\r\n")));
                for b in parts {
                    viewer.outbox.send(b);
                }
                viewer.outbox.send(CRLF.clone());
            }
        }
    }

    pub(super) fn on_frame(&self, frame: &Arc<Frame>) {
        let mut local = self.local.borrow_mut();
        let Some(ls) = local.get_mut(&frame.stream) else {
            return;
        };
        if !ls.ready {
            return;
        }
        if frame.packaged.class.is_metadata() {
            ls.gop.set_metadata(frame.packaged.clone());
        } else {
            ls.gop.push(frame.packaged.clone());
        }
        let corked = !ls.corked && ls.cork;
        let (mut skipped, mut closed, mut direct) = (0u64, 0u64, 0u64);
        // Metadata and sequence headers are never skipped: they are rare and a decoder
        // needs them.
        let kind = if frame.essential() {
            Kind::MustSend
        } else {
            Kind::Droppable {
                keyframe: frame.keyframe(),
            }
        };
        let now = Instant::now();
        let is_frame = frame.packaged.class.is_frame();
        for v in &ls.viewers {
            if v.proto == Proto::Flv && is_frame && !v.time_told.replace(true) {
                // A viewer started before any frame was cached: this one is its first.
                let tag = flv::stream_time_tag(frame.packaged.timestamp);
                let head = Bytes::from(format!("{:x}\r\n", tag.len()));
                let _ = v.outbox.offer(&[&head, &tag, &CRLF], Kind::MustSend, now);
            }
            let parts: &[&Bytes] = match v.proto {
                Proto::Rtmp => &[&frame.packaged.rtmp],
                Proto::Flv => &[&frame.flv_chunk_head, &frame.packaged.flv, &CRLF],
            };
            let offer = if ls.cork {
                v.outbox.offer_corked(parts, kind, now)
            } else {
                v.outbox.offer(parts, kind, now)
            };
            match offer {
                Offer::Queued => {
                    direct += v.outbox.take_direct_bytes();
                    if frame.keyframe() {
                        v.first_keyframe(&self.ctx.metrics);
                    }
                }
                Offer::Dropped => skipped += 1,
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

    /// Starts the shard's media tasks: the cork flusher, the once-a-second sweep, and the
    /// end of every open HLS segment on shutdown (SPEC C1).
    pub fn spawn_tasks(self: &Rc<Self>) {
        let cork = self.settings().cork;
        if !cork.is_zero() {
            let me = self.clone();
            monoio::spawn(async move {
                loop {
                    me.cork_kick.notified().await;
                    monoio::time::sleep(cork).await;
                    me.flush_corked();
                }
            });
        }
        let me = self.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(std::time::Duration::from_secs(1)).await;
                me.sweep();
            }
        });
        let me = self.clone();
        monoio::spawn(async move {
            me.ctx.shutdown.wait().await;
            me.hls.end_all(&me.ctx);
        });
    }

    pub(super) fn on_start(&self, stream: StreamId, gop: Vec<Packaged>, has_metadata: bool) {
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
                self.start_viewer(ls, v);
            }
        }
    }

    pub(super) fn on_announce(&self, stream: StreamId, owner: Option<usize>) {
        match owner {
            Some(owner) => {
                let before = self.owners.borrow_mut().insert(stream.clone(), owner);
                if owner != self.ctx.port.me() {
                    self.early.borrow_mut().remove(&stream);
                }
                self.hls.on_owner(&self.ctx, &stream, owner);
                // Streams this shard published before lose their ownership to the new owner.
                if owner != self.ctx.port.me() {
                    self.owned.borrow_mut().remove(&stream);
                }
                // Viewers here of a stream that moved: start again from the new owner.
                let resubscribe = before != Some(owner)
                    && self.local.borrow_mut().get_mut(&stream).is_some_and(|ls| {
                        ls.ready = false;
                        true
                    });
                if resubscribe {
                    let _ = self.submit(owner, Msg::Subscribe { stream });
                }
            }
            None => {
                let owner = self.owners.borrow_mut().remove(&stream);
                self.early.borrow_mut().remove(&stream);
                self.owned.borrow_mut().remove(&stream);
                self.hls.on_offline(&self.ctx, &stream, owner);
                if let Some(ls) = self.local.borrow_mut().remove(&stream) {
                    for v in &ls.viewers {
                        self.count_viewer(v.proto, -1);
                        v.end();
                    }
                }
            }
        }
    }
}

/// The stream time a player counts its media time from when it starts on `gop`: the
/// earliest of the first video and the first audio frame (mpegts.js and flv.js take the
/// smaller of the two tracks' first timestamps as their zero).
fn first_frame_time(gop: &GopCache) -> Option<u32> {
    let frames = || gop.frames().filter(|p| p.class.is_frame());
    let video = frames().find(|p| p.kind == MediaKind::Video);
    let audio = frames().find(|p| p.kind == MediaKind::Audio);
    video.into_iter().chain(audio).map(|p| p.timestamp).min()
}
