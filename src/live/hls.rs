//! HLS play (C7): `GET /{app}/{stream}.m3u8` and the segments it names,
//! `GET /{app}/{stream}-{sequence}.ts` (MPEG-TS) or `GET /{app}/{stream}-{sequence}.m4s`,
//! the init segments `GET /{app}/{stream}-{n}.mp4` and the LL-HLS parts
//! `GET /{app}/{stream}-{sequence}.{part}.m4s` (fMP4), served from memory. A
//! segment is served under its own container's extension only.
//!
//! This file holds the owner side ([`HlsState`]: a stream's segmenter and what waits on
//! it); `hls_serve.rs` the requests on the serving shard; `hls_wait.rs` the LL-HLS
//! requests that wait.
//!
//! **Made once, on the owner.** The stream's owner shard feeds every ingested message to
//! the stream's [`Segmenter`] as the ingest runs ([`HlsState::ingest`], called from
//! `Live::ingest`): one TS encoding per stream, however many viewers fetch it. Finished
//! segments are `Bytes`; the playlist is rendered once per segment.
//!
//! **Served from the owner, by a call.** A request may land on any shard. After the
//! same checks as HTTP-FLV (app, Referer allow-list, play signature, the stream known;
//! `super::flv::check_http_play`), the serving shard asks the owner with
//! `live.port().call(owner, …)`, which hands back the playlist or the segment as `Bytes`: a
//! refcount crosses the ring, never a copy, and the response writes those bytes as they
//! are. We chose this over mirroring finished segments to the shards that serve HLS
//! (as the GOP cache is mirrored for FLV) because an HLS viewer holds no connection: a
//! shard could never tell when to stop receiving a stream's segments, so a mirror would
//! have to go to every shard for every stream, or expire on guesses. One ring round trip
//! per request is cheap next to the segment it fetches, and players poll at the pace of
//! the target duration.
//!
//! **Signed play.** With `media.play_sign`, the playlist's segment URIs carry the
//! request's own `txSecret`/`txTime` (checked, hex only), so a player that fetched a
//! signed playlist can fetch its segments and nobody else can. The `on_play` hook is
//! asked for playlists, not segments; a positive answer is remembered for
//! [`HOOK_ALLOW_TTL`] per (client address, stream, query), since a player polls the
//! playlist every few seconds. `on_stop` is not called: HLS has no connection that ends.
//!
//! **Lifecycle.** A publisher that drops finishes the open segment at once
//! ([`HlsState::publisher_gone`]); one that comes back resumes the playlist after an
//! `#EXT-X-DISCONTINUITY` — on another shard too: the old owner hands its segments over
//! (`Msg::HlsHistory`) so the numbering carries on. When the stream ends the playlist
//! gets `#EXT-X-ENDLIST` and is kept for [`ended_keep`], then it is a 404. Every shard
//! remembers for that long which shard held an ended stream, to route its requests. On
//! shutdown (SIGTERM) each owner finishes its open segments and ends its playlists, so
//! the last seconds are in a segment rather than lost in a buffer (SPEC C1).
//!
//! **Codecs.** Segments are MPEG-TS with H.264 and AAC, or fMP4 with H.264, HEVC or AV1
//! and AAC (HEVC and AV1 streams, and every stream with `media.hls_fmp4`). A stream with
//! another codec (VP9 over Enhanced RTMP; audio other than AAC) is refused whole from the
//! moment its owner's segmenter sees that track ([`Segmenter::refused`]): its playlist and
//! segments answer 415 (`codes::PLAY_CODEC_UNSUPPORTED`) naming the track and pointing
//! to HTTP-FLV and RTMP, which carry it, and the API leaves its `play.hls` out
//! ([`HlsState::refused_among`]). Serving the AAC of a VP9 stream as the stream, as
//! TS alone would, is what this prevents.
//!
//! **Low-Latency HLS.** With `media.hls_low_latency`, the playlist also lists the parts
//! of the segment being written, and a playlist asked for with `_HLS_msn`/`_HLS_part`,
//! or a part asked for before it exists (the preload hint), waits for it on the owner
//! shard: `hls_wait.rs` says how, and how it is bounded. Parts are served like segments.
//!
//! **Waiting for the first segment.** A playlist asked for before the stream's first
//! segment is finished waits for it (polling the owner every [`FIRST_POLL`], at most
//! [`first_segment_wait`]), so a player that opens a stream the moment it goes live gets
//! a playlist rather than a 404.
//!
//! Responses: `application/vnd.apple.mpegurl` with `Cache-Control: no-cache` for the
//! playlist, `video/mp2t` (TS), `video/iso.segment` (`.m4s`) or `video/mp4` (init
//! segments) with a day's `max-age` for segments (a segment never changes,
//! and numbering starts from the wall clock so names are not reused after a restart),
//! and `Access-Control-Allow-Origin: *` on every answer, as for HTTP-FLV.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::engine::Ctx;
use super::{Msg, StreamId};
use crate::media::hls::{History, Pushed, Segmenter};
use crate::media::Packaged;

pub use super::hls_serve::{fmp4_segment_handler, init_handler, playlist_handler, segment_handler};
pub use super::hls_wait::MAX_PARKED;
use super::hls_wait::{wake, Waiter};

/// How long a positive `on_play` answer covers the same client's playlist polls.
pub const HOOK_ALLOW_TTL: Duration = Duration::from_secs(30);
/// Remembered `on_play` answers per shard; past it, answers are not remembered.
const HOOK_ALLOW_MAX: usize = 8192;
/// How often a playlist request that waits for the first segment asks again.
pub const FIRST_POLL: Duration = Duration::from_millis(100);

pub(super) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const SEGMENT_TYPE: &str = "video/mp2t";
const FMP4_SEGMENT_TYPE: &str = "video/iso.segment";
const INIT_TYPE: &str = "video/mp4";
pub(super) const SEGMENT_CACHE: &str = "public, max-age=86400";

/// How long an ended stream's playlist (with `#EXT-X-ENDLIST`) stays: long enough for
/// every player to poll it a few times.
pub fn ended_keep(settings: &super::Settings) -> Duration {
    Duration::from_secs(30).max(Duration::from_millis(u64::from(settings.hls.target_ms) * 3))
}

/// How long a playlist request waits for a live stream's first segment.
pub fn first_segment_wait(settings: &super::Settings) -> Duration {
    let target = Duration::from_millis(u64::from(settings.hls.target_ms));
    (target * 2 + Duration::from_secs(2)).min(Duration::from_secs(10))
}

/// What a segment request names by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wanted {
    /// `.ts`: an MPEG-TS segment.
    Ts,
    /// `.m4s`: an fMP4 media segment.
    Fmp4,
    /// `.mp4`: the init segment named after the first segment that uses it.
    Init,
}

impl Wanted {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Wanted::Ts => SEGMENT_TYPE,
            Wanted::Fmp4 => FMP4_SEGMENT_TYPE,
            Wanted::Init => INIT_TYPE,
        }
    }
}

/// A stream segmented on this shard.
pub(super) struct Entry {
    pub(super) seg: Segmenter,
    /// When to forget it: set once it ended (or when it was handed segments before its
    /// publisher started here); `None` while it is live here.
    expires: Option<Instant>,
    /// LL-HLS requests parked until the playlist has what they ask for (`hls_wait`).
    pub(super) waiters: Vec<Waiter>,
    /// The playlist version the waiters were last checked against.
    pub(super) seen: u64,
}

impl Entry {
    fn new(seg: Segmenter, expires: Option<Instant>) -> Entry {
        Entry {
            seg,
            expires,
            waiters: Vec::new(),
            seen: 0,
        }
    }
}

/// What the owner answers for a playlist request.
pub struct PlaylistAnswer {
    pub(super) text: Bytes,
    pub(super) listed: usize,
    pub(super) ended: bool,
    /// The stream has a track HLS does not carry (its description).
    pub(super) refused: Option<String>,
}

impl PlaylistAnswer {
    pub(super) fn of(seg: &Segmenter) -> PlaylistAnswer {
        PlaylistAnswer {
            text: seg.playlist(),
            listed: seg.listed(),
            ended: seg.is_ended(),
            refused: seg.refused().map(|t| t.to_string()),
        }
    }
}

/// What the owner answers for a segment (or part) request.
pub enum SegmentAnswer {
    Found(Bytes),
    Missing,
    Refused(String),
    /// Too many requests wait on the owner already.
    Busy,
}

/// One shard's HLS state: the streams it segments (owner side), where ended streams'
/// playlists are (every shard), and remembered `on_play` answers.
#[derive(Default)]
pub struct HlsState {
    pub(super) streams: RefCell<HashMap<StreamId, Entry>>,
    /// Streams that ended lately: the shard holding their last playlist, until when.
    ended_on: RefCell<HashMap<StreamId, (usize, Instant)>>,
    allowed: RefCell<HashMap<(IpAddr, StreamId, String), Instant>>,
    /// Requests parked on this shard's streams, all together (at most [`MAX_PARKED`]).
    pub(super) parked: Cell<usize>,
}

/// The first sequence number of a new stream: tenths of a second since the epoch, so a
/// stream's numbers keep growing across restarts (no reused segment name meets a
/// cached one) as long as it makes fewer than ten segments a second.
fn first_sequence() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 / 100)
}

fn count_pushed(ctx: &Ctx, pushed: Pushed) {
    let m = &ctx.metrics;
    if pushed.finished > 0 {
        m.media_hls_segments
            .fetch_add(u64::from(pushed.finished), Relaxed);
    }
    if pushed.skipped.is_some() {
        m.media_hls_skipped.fetch_add(1, Relaxed);
    }
}

fn finished_one(finished: bool) -> Pushed {
    Pushed {
        finished: u32::from(finished),
        skipped: None,
    }
}

impl HlsState {
    // --- owner side --------------------------------------------------------------------

    /// A publisher of `stream` started on this shard: a new segmenter, or the held one
    /// resumed (after a discontinuity).
    pub fn start(&self, ctx: &Ctx, stream: &StreamId) {
        let settings = &ctx.settings;
        let mut streams = self.streams.borrow_mut();
        match streams.get_mut(stream) {
            Some(e) => {
                e.seg.resume();
                e.expires = None;
                wake(&self.parked, e);
            }
            None => {
                let seg = Segmenter::new(stream, settings.hls, first_sequence());
                streams.insert(stream.clone(), Entry::new(seg, None));
            }
        }
    }

    /// On shutdown, every open segment on this shard is finished (SPEC C1).
    pub(super) fn end_all(&self, ctx: &Ctx) {
        let keep = ended_keep(&ctx.settings);
        for e in self.streams.borrow_mut().values_mut() {
            if !e.seg.is_ended() {
                let finished = e.seg.end();
                count_pushed(ctx, finished_one(finished));
                e.expires = Some(ctx.clock.now() + keep);
                wake(&self.parked, e);
            }
        }
    }

    /// One ingested message of a stream published here (in stream time), and the
    /// stream's epoch (for `#EXT-X-PROGRAM-DATE-TIME`).
    pub fn ingest(&self, ctx: &Ctx, stream: &StreamId, msg: &Packaged, epoch_ms: Option<u64>) {
        let pushed = match self.streams.borrow_mut().get_mut(stream) {
            Some(e) => {
                e.seg.set_epoch(epoch_ms);
                let pushed = e.seg.push_packaged(msg);
                wake(&self.parked, e);
                pushed
            }
            None => return,
        };
        count_pushed(ctx, pushed);
    }

    /// The publisher is gone (for now or for good): finish the open segment so players
    /// get its seconds at once.
    pub fn publisher_gone(&self, ctx: &Ctx, stream: &StreamId) {
        let finished = match self.streams.borrow_mut().get_mut(stream) {
            Some(e) => {
                let finished = e.seg.finish();
                wake(&self.parked, e);
                finished
            }
            None => return,
        };
        count_pushed(ctx, finished_one(finished));
    }

    /// On every shard, when `stream`'s owner is announced: a shard that segmented it
    /// before hands its segments to the new owner.
    pub fn on_owner(&self, ctx: &Ctx, stream: &StreamId, owner: usize) {
        self.ended_on.borrow_mut().remove(stream);
        if owner == ctx.port.me() {
            return;
        }
        let Some(mut e) = self.streams.borrow_mut().remove(stream) else {
            return;
        };
        let history = e.seg.take_history();
        if history.is_empty() {
            return;
        }
        let msg = Msg::HlsHistory {
            stream: stream.clone(),
            history: Box::new(history),
        };
        // A full ring loses the old segments; the new owner's playlist starts afresh.
        let _ = ctx.port.submit_to(owner, msg);
    }

    /// On the new owner: the previous owner's segments.
    pub fn adopt(&self, ctx: &Ctx, stream: StreamId, history: History) {
        let settings = &ctx.settings;
        let mut streams = self.streams.borrow_mut();
        let e = streams.entry(stream.clone()).or_insert_with(|| {
            let seg = Segmenter::new(&stream, settings.hls, first_sequence());
            // Not started here yet: forgotten unless its publisher starts.
            Entry::new(seg, Some(ctx.clock.now() + ended_keep(settings)))
        });
        e.seg.adopt(history);
        wake(&self.parked, e);
    }

    /// On every shard, when `stream` went offline; `owner` is the shard that owned it.
    pub fn on_offline(&self, ctx: &Ctx, stream: &StreamId, owner: Option<usize>) {
        let until = ctx.clock.now() + ended_keep(&ctx.settings);
        if let Some(e) = self.streams.borrow_mut().get_mut(stream) {
            let finished = e.seg.end();
            count_pushed(ctx, finished_one(finished));
            e.expires = Some(until);
            wake(&self.parked, e);
        }
        if let Some(owner) = owner {
            self.ended_on
                .borrow_mut()
                .insert(stream.clone(), (owner, until));
        }
    }

    /// Where an ended stream's playlist is, while it is kept.
    pub fn ended_owner(&self, stream: &str, now: Instant) -> Option<usize> {
        self.ended_on
            .borrow()
            .get(stream)
            .filter(|(_, until)| *until > now)
            .map(|(owner, _)| *owner)
    }

    /// Forgets what has expired (called every second).
    pub fn sweep(&self, now: Instant) {
        self.streams
            .borrow_mut()
            .retain(|_, e| e.expires.is_none_or(|t| t > now));
        self.ended_on.borrow_mut().retain(|_, (_, t)| *t > now);
        self.allowed.borrow_mut().retain(|_, t| *t > now);
        self.sweep_waiters(now);
    }

    /// Requests parked on this shard's streams.
    pub fn parked(&self) -> usize {
        self.parked.get()
    }

    /// Streams segmented here and bytes held in their segments.
    pub fn held(&self) -> (usize, usize) {
        let streams = self.streams.borrow();
        (
            streams.len(),
            streams.values().map(|e| e.seg.held_bytes()).sum(),
        )
    }

    pub(super) fn playlist(&self, stream: &str) -> Option<PlaylistAnswer> {
        let streams = self.streams.borrow();
        Some(PlaylistAnswer::of(&streams.get(stream)?.seg))
    }

    pub(super) fn segment(&self, stream: &str, sequence: u64, wanted: Wanted) -> SegmentAnswer {
        let streams = self.streams.borrow();
        let Some(e) = streams.get(stream) else {
            return SegmentAnswer::Missing;
        };
        if let Some(track) = e.seg.refused() {
            return SegmentAnswer::Refused(track.to_string());
        }
        let found = match wanted {
            Wanted::Init => e.seg.init_segment(sequence),
            // A segment is served under the extension of its container only.
            _ => e
                .seg
                .segment_of(sequence)
                .and_then(|(data, fmp4)| (fmp4 == (wanted == Wanted::Fmp4)).then_some(data)),
        };
        found.map_or(SegmentAnswer::Missing, SegmentAnswer::Found)
    }

    /// Which of `streams`, segmented here, HLS refuses for a codec it does not carry
    /// (the API leaves their `play.hls` out).
    pub fn refused_among(&self, streams: &[String]) -> Vec<String> {
        let held = self.streams.borrow();
        streams
            .iter()
            .filter(|s| {
                held.get(s.as_str())
                    .is_some_and(|e| e.seg.refused().is_some())
            })
            .cloned()
            .collect()
    }

    // --- serving side ------------------------------------------------------------------

    pub(super) fn hook_allowed(&self, key: &(IpAddr, StreamId, String), now: Instant) -> bool {
        self.allowed.borrow().get(key).is_some_and(|t| *t > now)
    }

    pub(super) fn remember_allowed(&self, key: (IpAddr, StreamId, String), now: Instant) {
        let mut allowed = self.allowed.borrow_mut();
        if allowed.len() >= HOOK_ALLOW_MAX {
            allowed.retain(|_, t| *t > now);
        }
        if allowed.len() < HOOK_ALLOW_MAX {
            allowed.insert(key, now + HOOK_ALLOW_TTL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_streams_are_forgotten_after_their_time() {
        let hls = HlsState::default();
        let now = Instant::now();
        hls.ended_on
            .borrow_mut()
            .insert("a".into(), (1, now + Duration::from_secs(5)));
        hls.streams.borrow_mut().insert(
            "a".into(),
            Entry::new(
                Segmenter::new("a", Default::default(), 0),
                Some(now + Duration::from_secs(5)),
            ),
        );
        hls.streams.borrow_mut().insert(
            "live".into(),
            Entry::new(Segmenter::new("live", Default::default(), 0), None),
        );
        assert_eq!(hls.ended_owner("a", now), Some(1));
        hls.sweep(now + Duration::from_secs(1));
        assert_eq!(hls.held().0, 2);
        hls.sweep(now + Duration::from_secs(6));
        assert_eq!(hls.held().0, 1, "the live stream stays");
        assert!(hls.ended_on.borrow().is_empty());
    }

    #[test]
    fn remembered_hook_answers_are_bounded() {
        let hls = HlsState::default();
        let now = Instant::now();
        let ip: IpAddr = [127, 0, 0, 1].into();
        for i in 0..HOOK_ALLOW_MAX + 10 {
            hls.remember_allowed((ip, "s".into(), i.to_string()), now);
        }
        assert_eq!(hls.allowed.borrow().len(), HOOK_ALLOW_MAX);
        assert!(hls.hook_allowed(&(ip, "s".into(), "1".into()), now));
        assert!(!hls.hook_allowed(&(ip, "s".into(), "x".into()), now));
    }
}
