//! HLS segmenting, sans-IO: a stream's messages in, MPEG-TS or fMP4 segments and the m3u8
//! text out.
//!
//! A [`Segmenter`] is fed one stream's messages in order ([`Segmenter::push`], or
//! [`Segmenter::push_packaged`] with what the ingest packaged anyway) and muxes them with a
//! [`TsMuxer`] into the open segment, which starts with a PAT and a PMT:
//! - a stream with video starts on a keyframe (audio and pictures before the first one are
//!   dropped, since nothing could decode them), and a segment is cut at the first keyframe
//!   at or after the target duration, so every segment starts with one;
//! - an audio-only stream is cut at the first frame at or after the target duration;
//! - a segment that reaches `max_segment_bytes` is cut at once (a stream whose keyframes
//!   stay away cannot grow one without bound); the next starts on the following frame;
//! - a publisher whose video is HEVC or AV1, or every publisher with [`HlsConfig::fmp4`]
//!   (`media.hls_fmp4`), is segmented in fMP4 ([`Format::Fmp4`], [`super::fmp4`]) rather
//!   than TS (MPEG-TS HEVC, stream type 0x24, plays in few players): samples gather in
//!   the [`Fmp4Muxer`] and the segment (`moof` + `mdat`) is written when it is cut. Each
//!   segment keeps the init segment it needs; the playlist (version 7) names it with
//!   `#EXT-X-MAP` (`{name}-{init_seq}.mp4`, after the first segment that used it) and
//!   again after a discontinuity when it changed: a new decoder configuration ends the
//!   open segment, and the next starts on a keyframe;
//! - a stream with a track neither container carries here (VP9 video; audio other
//!   than AAC: [`ts::uncarried`], [`fmp4::uncarried`]) is refused whole
//!   ([`Segmenter::refused`]): its open segment is dropped and its input ignored until a
//!   publisher restarts it, so HLS never serves the AAC of a VP9 stream as if it were
//!   the stream.
//! - a timestamp jump (backwards, or forwards by more than [`MAX_JUMP_MS`]) closes the
//!   open segment, and the next one is marked `#EXT-X-DISCONTINUITY` and starts on a
//!   keyframe again; so does a publisher coming back ([`Segmenter::resume`]).
//!
//! **Program date-time.** The segmenter is fed stream time (the ingest's
//! [`super::timeline::Timeline`]) and told the stream's epoch ([`Segmenter::set_epoch`]):
//! each segment is listed with `#EXT-X-PROGRAM-DATE-TIME` = epoch + the stream time of its
//! first frame, and that stream time as its `#EXTINF` title (`t=<ms>`). A player's
//! `playingDate − epoch` is then the stream time on screen, the clock of danmaku
//! `media_ts` (C4); `docs/media.md` gives the mapping.
//!
//! Durations come from the stream's own timestamps, never a clock: a segment lasts from
//! its first frame to the first frame of the next, or, when it is closed without a
//! successor ([`Segmenter::finish`]), to its last frame plus one frame interval.
//!
//! Finished segments are `Bytes` (frozen from the buffer they were written into, so never
//! copied again) with their sequence number and duration. The playlist lists the last
//! `window` of them; up to `window` more stay fetchable, since RFC 8216 §6.2.2 asks that a
//! segment outlive its removal from the playlist by the playlist's duration. The m3u8
//! text is rendered once per change and shared as `Bytes` ([`Segmenter::playlist`]); it
//! gets `#EXT-X-ENDLIST` once the stream ended ([`Segmenter::end`]).
//!
//! Everything is bounded: at most `2 × window` finished segments, each at most
//! `max_segment_bytes` plus one frame. Input the muxer cannot use is skipped and counted
//! ([`SegmenterStats`]), never a panic.
//!
//! When a stream moves to another owner (a publisher that reconnects elsewhere), the old
//! owner's [`History`] ([`Segmenter::take_history`]) is adopted by the new one
//! ([`Segmenter::adopt`]) so the numbering carries on and players see a discontinuity,
//! not a different stream.
//!
//! Why no m3u8 crate: `m3u8-rs` is a nom parser with a writer beside it, and `hls_m3u8`
//! needs a newer compiler than ours; the media playlist we write is a dozen lines of
//! fixed tags, rendered once per segment.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::class::Class;
use super::fmp4::{self, Fmp4Muxer};
use super::kind::MediaKind;
use super::packet::Packaged;
use super::ts::{self, Carried, Muxed, Skip, TsMuxer, Uncarried};

/// Segmenting settings (from `[media]`: `hls_segment_secs`, `hls_window`,
/// `hls_max_segment_bytes`, `hls_fmp4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HlsConfig {
    /// Target segment duration in milliseconds; segments are cut at the first keyframe
    /// after it.
    pub target_ms: u32,
    /// Segments listed in the playlist.
    pub window: usize,
    /// A segment this large is cut without waiting for a keyframe.
    pub max_segment_bytes: usize,
    /// Every stream in fMP4 segments (`media.hls_fmp4`); without it, only streams whose
    /// video TS does not carry (HEVC).
    pub fmp4: bool,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_ms: 2000,
            window: 6,
            max_segment_bytes: 16 * 1024 * 1024,
            fmp4: false,
        }
    }
}

/// A forward timestamp jump larger than this is a discontinuity, not a long frame.
pub const MAX_JUMP_MS: u32 = 10_000;
/// Backwards by more than this is a discontinuity; less is interleaving (audio a little
/// behind video).
const MAX_BACKWARDS_MS: u32 = 1_000;
/// The longest gap between two frames taken as one frame's duration.
const MAX_FRAME_MS: u32 = 1_000;
/// The first buffer of a stream's first segment; later ones start at the last one's size.
const FIRST_CAPACITY: usize = 64 * 1024;

/// One finished segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub sequence: u64,
    pub duration_ms: u32,
    /// Follows a break (timestamps reset, a new publisher): `#EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// Stream time of its first frame.
    pub start_ms: u32,
    /// Its program date-time (Unix ms): the stream's epoch + `start_ms`, once the epoch
    /// is known.
    pub pdt_ms: Option<u64>,
    /// Whole TS packets, starting with a PAT and a PMT; or an fMP4 `moof` + `mdat`.
    pub data: Bytes,
    /// For an fMP4 segment, the init segment it needs.
    pub init: Option<Bytes>,
    /// For an fMP4 segment, the sequence number its init segment is named by (the first
    /// segment that used it: `{name}-{init_seq}.mp4`).
    pub init_seq: u64,
}

/// The container of a publisher's segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ts,
    Fmp4,
}

/// What one [`Segmenter::push`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Segments finished (0, 1, or 2 when a discontinuity and a cut coincide).
    pub finished: u32,
    /// The message was unusable and skipped.
    pub skipped: Option<Skip>,
}

/// Counters since the segmenter was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmenterStats {
    pub segments: u64,
    /// Messages skipped as unusable ([`Skip`]).
    pub skipped: u64,
    /// Segments cut at the byte cap rather than at a keyframe.
    pub forced_cuts: u64,
    /// Timestamp jumps treated as discontinuities.
    pub jumps: u64,
}

/// Finished segments and numbering, handed from a stream's old owner to its new one.
#[derive(Debug, Default)]
pub struct History {
    segments: VecDeque<Segment>,
    next_sequence: u64,
    dropped_discontinuities: u64,
}

impl History {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

#[derive(Debug)]
struct Open {
    buf: BytesMut,
    start: u32,
    /// The latest timestamp written.
    end: u32,
    discontinuity: bool,
    has_keyframe: bool,
    frames: u32,
    /// fMP4: the init segment for the configuration the segment was opened with.
    init: Option<Bytes>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Segmenter {
    cfg: HlsConfig,
    /// Segment URIs are `{name}-{sequence}.ts`, relative to the playlist.
    name: String,
    mux: TsMuxer,
    fmp4: Fmp4Muxer,
    /// The current publisher's container.
    format: Format,
    open: Option<Open>,
    done: VecDeque<Segment>,
    next_sequence: u64,
    /// Discontinuities in segments no longer held (for `#EXT-X-DISCONTINUITY-SEQUENCE`).
    dropped_discontinuities: u64,
    pending_discontinuity: bool,
    /// A keyframe has opened the video since the start or the last break.
    video_started: bool,
    last_ts: Option<u32>,
    last_video_ts: Option<u32>,
    last_audio_ts: Option<u32>,
    /// The latest interval between two frames of the timing track.
    frame_gap: u32,
    /// Unix ms at stream time 0 ([`Segmenter::set_epoch`]).
    epoch_ms: Option<u64>,
    ended: bool,
    /// The track that made this publisher's stream one HLS does not carry.
    refused: Option<Uncarried>,
    playlist: Bytes,
    size_hint: usize,
    stats: SegmenterStats,
}

fn later(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// Milliseconds from `from` to `to` on the wrapping clock; 0 if `to` is earlier.
fn elapsed(from: u32, to: u32) -> u32 {
    let d = to.wrapping_sub(from);
    if (d as i32) < 0 {
        0
    } else {
        d
    }
}

impl Segmenter {
    /// A segmenter for stream `name`, numbering segments from `first_sequence`.
    pub fn new(name: &str, cfg: HlsConfig, first_sequence: u64) -> Segmenter {
        let cfg = HlsConfig {
            target_ms: cfg.target_ms.max(1),
            window: cfg.window.max(1),
            max_segment_bytes: cfg.max_segment_bytes.max(ts::PACKET_LEN * 4),
            fmp4: cfg.fmp4,
        };
        let mut s = Segmenter {
            cfg,
            name: name.to_string(),
            mux: TsMuxer::new(),
            fmp4: Fmp4Muxer::new(),
            format: if cfg.fmp4 { Format::Fmp4 } else { Format::Ts },
            open: None,
            done: VecDeque::new(),
            next_sequence: first_sequence,
            dropped_discontinuities: 0,
            pending_discontinuity: false,
            video_started: false,
            last_ts: None,
            last_video_ts: None,
            last_audio_ts: None,
            frame_gap: 0,
            epoch_ms: None,
            ended: false,
            refused: None,
            playlist: Bytes::new(),
            size_hint: FIRST_CAPACITY,
            stats: SegmenterStats::default(),
        };
        s.render();
        s
    }

    pub fn config(&self) -> HlsConfig {
        self.cfg
    }

    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    /// The stream's epoch: Unix ms at stream time 0. Segments finished from now on carry
    /// `#EXT-X-PROGRAM-DATE-TIME` (the epoch plus their first frame's stream time).
    pub fn set_epoch(&mut self, epoch_ms: Option<u64>) {
        if epoch_ms.is_some() {
            self.epoch_ms = epoch_ms;
        }
    }

    /// The stream ended: no more input is taken, the playlist has `#EXT-X-ENDLIST`.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The track that TS does not carry, when the current publisher sent one: the stream
    /// is not served over HLS (see the module documentation).
    pub fn refused(&self) -> Option<Uncarried> {
        self.refused
    }

    /// The current m3u8 text (shared; rendered once per change).
    pub fn playlist(&self) -> Bytes {
        self.playlist.clone()
    }

    /// Finished segments, oldest first (the playlist lists the last `window`).
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.done.iter()
    }

    /// Segments the playlist lists.
    pub fn listed(&self) -> usize {
        self.done.len().min(self.cfg.window)
    }

    /// The bytes of segment `sequence`, if it is still held.
    pub fn segment(&self, sequence: u64) -> Option<Bytes> {
        let first = self.done.front()?.sequence;
        let i = usize::try_from(sequence.checked_sub(first)?).ok()?;
        let s = self.done.get(i)?;
        (s.sequence == sequence).then(|| s.data.clone())
    }

    /// Segment `sequence`, if it is still held: its bytes, and whether it is fMP4.
    pub fn segment_of(&self, sequence: u64) -> Option<(Bytes, bool)> {
        let first = self.done.front()?.sequence;
        let i = usize::try_from(sequence.checked_sub(first)?).ok()?;
        let s = self.done.get(i)?;
        (s.sequence == sequence).then(|| (s.data.clone(), s.init.is_some()))
    }

    /// The init segment named after segment `init_seq` (`{name}-{init_seq}.mp4`), while a
    /// segment that needs it is held.
    pub fn init_segment(&self, init_seq: u64) -> Option<Bytes> {
        self.done
            .iter()
            .find(|s| s.init_seq == init_seq && s.init.is_some())
            .and_then(|s| s.init.clone())
    }

    /// Bytes held in finished segments and the open one.
    pub fn held_bytes(&self) -> usize {
        self.done.iter().map(|s| s.data.len()).sum::<usize>()
            + self.open.as_ref().map_or(0, |o| o.buf.len())
            + self.fmp4.pending_bytes()
    }

    /// One message, as the ingest packaged (and classified) it.
    pub fn push_packaged(&mut self, p: &Packaged) -> Pushed {
        self.push_classified(&p.class, p.timestamp, &p.payload())
    }

    /// One message of the stream: `kind`, its timestamp in milliseconds, the FLV body.
    pub fn push(&mut self, kind: MediaKind, timestamp: u32, payload: &[u8]) -> Pushed {
        self.push_classified(&Class::of(kind, payload), timestamp, payload)
    }

    /// One message whose `class` was read before (once, for the segmenter and the muxer
    /// alike).
    fn push_classified(&mut self, class: &Class, timestamp: u32, payload: &[u8]) -> Pushed {
        let mut pushed = Pushed::default();
        if self.ended || self.refused.is_some() {
            return pushed;
        }
        if self.format == Format::Ts
            && ts::uncarried(class).is_some()
            && fmp4::uncarried(class).is_none()
        {
            // HEVC: TS does not carry it, fMP4 does.
            self.switch_to_fmp4();
        }
        let uncarried = match self.format {
            Format::Ts => ts::uncarried(class),
            Format::Fmp4 => fmp4::uncarried(class),
        };
        if let Some(track) = uncarried {
            // Refused whole, never served half: see the module documentation.
            self.refused = Some(track);
            self.open = None;
            self.fmp4.discard();
            self.video_started = false;
            return self.skip(Skip::Unsupported);
        }
        let carried = match self.format {
            Format::Ts => ts::carried(class),
            Format::Fmp4 => fmp4::carried(class),
        };
        match carried {
            Carried::Other => {
                // Sequence headers, metadata, and what the muxer skips: nothing is written.
                let muxed = match self.format {
                    Format::Ts => {
                        if class.is_config() || class.is_metadata() {
                            // Kept for a switch to fMP4 (an HEVC header after AAC's).
                            self.fmp4.mux_classified(class, timestamp, payload);
                        }
                        let mut none = BytesMut::new();
                        let out = self.open.as_mut().map_or(&mut none, |o| &mut o.buf);
                        self.mux.mux_classified(class, timestamp, payload, out)
                    }
                    Format::Fmp4 => {
                        let before = self.fmp4.config_version();
                        let muxed = self.fmp4.mux_classified(class, timestamp, payload);
                        if self.fmp4.config_version() != before && self.open.is_some() {
                            // A new configuration needs a new init segment: the open
                            // segment ends here, the next starts on a keyframe.
                            pushed.finished += u32::from(self.finish_open(None));
                            self.video_started = false;
                        }
                        muxed
                    }
                };
                if let Muxed::Skipped(why) = muxed {
                    self.stats.skipped += 1;
                    pushed.skipped = Some(why);
                }
                return pushed;
            }
            Carried::VideoFrame { key } => {
                if !self.video_configured() {
                    return self.skip(Skip::NoSequenceHeader);
                }
                pushed.finished += self.check_clock(timestamp);
                if key {
                    let cut = self.open.as_ref().is_some_and(|o| {
                        !o.has_keyframe || elapsed(o.start, timestamp) >= self.cfg.target_ms
                    });
                    if cut {
                        pushed.finished += u32::from(self.finish_open(Some(timestamp)));
                    }
                    self.video_started = true;
                } else if !self.video_started {
                    return pushed; // waiting for a keyframe
                }
                if let Some(prev) = self.last_video_ts.replace(timestamp) {
                    self.note_gap(prev, timestamp);
                }
            }
            Carried::AudioFrame => {
                if !self.audio_configured() {
                    return self.skip(Skip::NoSequenceHeader);
                }
                pushed.finished += self.check_clock(timestamp);
                let has_video = self.video_configured();
                if has_video && !self.video_started {
                    return pushed; // video streams start on a keyframe
                }
                if !has_video {
                    let cut = self
                        .open
                        .as_ref()
                        .is_some_and(|o| elapsed(o.start, timestamp) >= self.cfg.target_ms);
                    if cut {
                        pushed.finished += u32::from(self.finish_open(Some(timestamp)));
                    }
                }
                if let Some(prev) = self.last_audio_ts.replace(timestamp) {
                    if !has_video {
                        self.note_gap(prev, timestamp);
                    }
                }
            }
        }

        if self.open.is_none() {
            self.open_at(timestamp);
        }
        let Some(open) = self.open.as_mut() else {
            return pushed;
        };
        let muxed = match self.format {
            Format::Ts => self
                .mux
                .mux_classified(class, timestamp, payload, &mut open.buf),
            Format::Fmp4 => self.fmp4.mux_classified(class, timestamp, payload),
        };
        match muxed {
            Muxed::Video { keyframe } => {
                open.has_keyframe |= keyframe;
                open.frames += 1;
            }
            Muxed::Audio => open.frames += 1,
            Muxed::Skipped(why) => {
                self.stats.skipped += 1;
                pushed.skipped = Some(why);
            }
            Muxed::Config | Muxed::Ignored => {}
        }
        if later(open.end, timestamp) {
            open.end = timestamp;
        }
        if self.open_len() >= self.cfg.max_segment_bytes {
            self.stats.forced_cuts += 1;
            pushed.finished += u32::from(self.finish_open(None));
        }
        pushed
    }

    /// The current publisher's container.
    pub fn format(&self) -> Format {
        self.format
    }

    fn video_configured(&self) -> bool {
        match self.format {
            Format::Ts => self.mux.video_configured(),
            Format::Fmp4 => self.fmp4.video_configured(),
        }
    }

    fn audio_configured(&self) -> bool {
        match self.format {
            Format::Ts => self.mux.audio_configured(),
            Format::Fmp4 => self.fmp4.audio_configured(),
        }
    }

    /// Bytes the open segment holds (TS) or will hold (fMP4's pending samples).
    fn open_len(&self) -> usize {
        match self.format {
            Format::Ts => self.open.as_ref().map_or(0, |o| o.buf.len()),
            Format::Fmp4 => self.fmp4.pending_bytes(),
        }
    }

    /// This publisher's video needs fMP4: what was segmented in TS is finished, and the
    /// next segment follows a discontinuity.
    fn switch_to_fmp4(&mut self) {
        self.finish_open(None);
        self.format = Format::Fmp4;
        self.video_started = false;
        self.pending_discontinuity |= !self.done.is_empty();
    }
    fn skip(&mut self, why: Skip) -> Pushed {
        self.stats.skipped += 1;
        Pushed {
            finished: 0,
            skipped: Some(why),
        }
    }

    fn note_gap(&mut self, prev: u32, now: u32) {
        let gap = now.wrapping_sub(prev);
        if gap > 0 && gap <= MAX_FRAME_MS {
            self.frame_gap = gap;
        }
    }

    /// Treats a timestamp jump as a break; returns the segments it finished.
    fn check_clock(&mut self, ts: u32) -> u32 {
        let Some(last) = self.last_ts else {
            self.last_ts = Some(ts);
            return 0;
        };
        let jumped = if later(last, ts) {
            ts.wrapping_sub(last) > MAX_JUMP_MS
        } else {
            last.wrapping_sub(ts) > MAX_BACKWARDS_MS
        };
        if !jumped {
            if later(last, ts) {
                self.last_ts = Some(ts);
            }
            return 0;
        }
        self.stats.jumps += 1;
        let finished = self.finish_open(None);
        self.pending_discontinuity = true;
        self.video_started = false;
        self.last_ts = Some(ts);
        self.last_video_ts = None;
        self.last_audio_ts = None;
        u32::from(finished)
    }

    fn open_at(&mut self, ts: u32) {
        let capacity = (self.size_hint + self.size_hint / 8)
            .clamp(4096, self.cfg.max_segment_bytes + ts::PACKET_LEN);
        let (buf, init) = match self.format {
            Format::Ts => {
                let mut buf = BytesMut::with_capacity(capacity);
                self.mux.write_tables(&mut buf);
                (buf, None)
            }
            Format::Fmp4 => {
                // Samples gather in the muxer; the segment is written when it is finished.
                self.fmp4.discard();
                (BytesMut::new(), self.fmp4.init_segment())
            }
        };
        self.open = Some(Open {
            buf,
            start: ts,
            end: ts,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            has_keyframe: false,
            frames: 0,
            init,
        });
    }

    /// Closes the open segment; `next` is the first timestamp of its successor, if known.
    /// A segment with no frames is dropped (its discontinuity passes to the next one).
    fn finish_open(&mut self, next: Option<u32>) -> bool {
        let Some(open) = self.open.take() else {
            return false;
        };
        let data = match &open.init {
            None => open.buf.freeze(),
            Some(_) => self
                .fmp4
                .fragment(self.next_sequence, next)
                .unwrap_or_default(),
        };
        if open.frames == 0 || data.is_empty() {
            self.fmp4.discard();
            self.pending_discontinuity |= open.discontinuity;
            return false;
        }
        let duration_ms = match next {
            Some(t) => elapsed(open.start, t),
            None => elapsed(open.start, open.end).saturating_add(self.frame_gap),
        };
        if open.init.is_none() {
            self.size_hint = data.len();
        }
        let sequence = self.next_sequence;
        let mut discontinuity = open.discontinuity;
        let mut init_seq = sequence;
        if let Some(prev) = self.done.back() {
            if prev.init == open.init {
                init_seq = prev.init_seq;
            } else {
                // Another init segment (or none after one): players reinitialise.
                discontinuity = true;
            }
        }
        self.done.push_back(Segment {
            sequence,
            duration_ms,
            discontinuity,
            start_ms: open.start,
            pdt_ms: self.epoch_ms.map(|e| e + u64::from(open.start)),
            data,
            init: open.init,
            init_seq,
        });
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.stats.segments += 1;
        self.trim();
        self.render();
        true
    }

    fn trim(&mut self) {
        while self.done.len() > 2 * self.cfg.window {
            if let Some(old) = self.done.pop_front() {
                self.dropped_discontinuities += u64::from(old.discontinuity);
            }
        }
    }

    /// Closes the open segment (the publisher is gone; players get its last seconds).
    /// Returns whether a segment was finished. New input starts on a keyframe again.
    pub fn finish(&mut self) -> bool {
        let finished = self.finish_open(None);
        self.video_started = false;
        finished
    }

    /// The stream ended: the open segment is finished, the playlist gets
    /// `#EXT-X-ENDLIST`, and input is ignored until [`Segmenter::resume`].
    pub fn end(&mut self) -> bool {
        let finished = self.finish();
        self.ended = true;
        self.render();
        finished
    }

    /// A publisher (re)starts the stream: codec configuration is forgotten (it sends its
    /// own), and the next segment follows a discontinuity if any came before it.
    pub fn resume(&mut self) {
        self.finish();
        self.mux.reset();
        self.fmp4.reset();
        self.format = if self.cfg.fmp4 {
            Format::Fmp4
        } else {
            Format::Ts
        };
        self.refused = None;
        self.pending_discontinuity |= !self.done.is_empty();
        self.last_ts = None;
        self.last_video_ts = None;
        self.last_audio_ts = None;
        if self.ended {
            self.ended = false;
            self.render();
        }
    }

    /// Takes the finished segments (the open one finished first) for the stream's next
    /// owner; this segmenter is left empty.
    pub fn take_history(&mut self) -> History {
        self.finish();
        let history = History {
            segments: std::mem::take(&mut self.done),
            next_sequence: self.next_sequence,
            dropped_discontinuities: self.dropped_discontinuities,
        };
        self.render();
        history
    }

    /// Adopts a previous owner's segments: they come first, this segmenter's own follow,
    /// renumbered after them with a discontinuity between.
    pub fn adopt(&mut self, history: History) {
        if history.segments.is_empty() {
            return;
        }
        let own = std::mem::take(&mut self.done);
        let mut next = history.next_sequence;
        let mut segments = history.segments;
        let had_own = !own.is_empty();
        let mut prev: Option<(Option<Bytes>, u64)> = None;
        for (i, mut s) in own.into_iter().enumerate() {
            s.sequence = next;
            s.discontinuity |= i == 0;
            // Init segments are named after the first (renumbered) segment using them.
            s.init_seq = match &prev {
                Some((init, seq)) if *init == s.init => *seq,
                _ => next,
            };
            prev = Some((s.init.clone(), s.init_seq));
            next = next.wrapping_add(1);
            segments.push_back(s);
        }
        if !had_own {
            match self.open.as_mut() {
                Some(open) => open.discontinuity = true,
                None => self.pending_discontinuity = true,
            }
        }
        self.next_sequence = next;
        self.dropped_discontinuities += history.dropped_discontinuities;
        self.done = segments;
        self.trim();
        self.render();
    }

    fn render(&mut self) {
        let from = self.done.len().saturating_sub(self.cfg.window);
        let listed = self.done.range(from..);
        let discontinuity_sequence = self.dropped_discontinuities
            + self.done.range(..from).filter(|s| s.discontinuity).count() as u64;
        // RFC 8216 §4.3.3.1: each EXTINF rounded to the nearest second is at most the
        // target duration; the configured target, rounded up, is the floor.
        let target = listed
            .clone()
            .map(|s| s.duration_ms.saturating_add(500) / 1000)
            .fold(self.cfg.target_ms.div_ceil(1000).max(1), u32::max);
        let media_sequence = listed
            .clone()
            .next()
            .map_or(self.next_sequence, |s| s.sequence);
        let mut text = String::with_capacity(128 + 48 * self.cfg.window);
        // EXT-X-MAP for media segments (fMP4) needs version 6; 7 is what fMP4 HLS
        // players expect. TS-only playlists stay at 3.
        let fmp4 = listed.clone().any(|s| s.init.is_some());
        text.push_str(if fmp4 {
            "#EXTM3U\n#EXT-X-VERSION:7\n"
        } else {
            "#EXTM3U\n#EXT-X-VERSION:3\n"
        });
        let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
        if discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
            );
        }
        let mut map: Option<u64> = None;
        for s in listed {
            if s.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if s.init.is_some() && map != Some(s.init_seq) {
                let _ = writeln!(text, "#EXT-X-MAP:URI=\"{}-{}.mp4\"", self.name, s.init_seq);
                map = Some(s.init_seq);
            } else if s.init.is_none() {
                map = None;
            }
            if let Some(pdt) = s.pdt_ms {
                text.push_str("#EXT-X-PROGRAM-DATE-TIME:");
                write_date_time(&mut text, pdt);
                text.push('\n');
            }
            let _ = write!(
                text,
                "#EXTINF:{}.{:03},",
                s.duration_ms / 1000,
                s.duration_ms % 1000
            );
            if s.pdt_ms.is_some() {
                // The segment's stream time, as its title: `t=<ms>`.
                let _ = write!(text, "t={}", s.start_ms);
            }
            let ext = if s.init.is_some() { "m4s" } else { "ts" };
            let _ = writeln!(text, "\n{}-{}.{ext}", self.name, s.sequence);
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        self.playlist = Bytes::from(text);
    }
}

/// Writes Unix ms `ms` as an RFC 3339 date-time in UTC with milliseconds
/// (`2024-11-23T04:41:18.901Z`), the form RFC 8216 §4.3.2.6 asks for.
pub fn write_date_time(out: &mut String, ms: u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ts::tests::{aac_header, avc_frame, avc_header, demux};
    use crate::media::ts::{AUDIO_PID, VIDEO_PID};

    fn cfg(target_ms: u32, window: usize) -> HlsConfig {
        HlsConfig {
            target_ms,
            window,
            max_segment_bytes: 1024 * 1024,
            fmp4: false,
        }
    }

    /// A synthetic publisher: 25 fps video with a keyframe every `gop` frames and AAC
    /// every ~23 ms, interleaved by timestamp as RTMP sends them.
    struct Source {
        frame: u32,
        gop: u32,
        audio_ms: u32,
        base: u32,
    }

    impl Source {
        fn new(gop: u32) -> Self {
            Source {
                frame: 0,
                gop,
                audio_ms: 0,
                base: 0,
            }
        }

        fn headers(&self, s: &mut Segmenter) {
            assert_eq!(s.push(MediaKind::Video, 0, &avc_header()).skipped, None);
            assert_eq!(s.push(MediaKind::Audio, 0, &aac_header()).skipped, None);
        }

        /// Feeds `ms` of media; returns the segments finished.
        fn run(&mut self, s: &mut Segmenter, ms: u32) -> u32 {
            let end = self.frame * 40 + ms;
            let mut finished = 0;
            while self.frame * 40 < end {
                let vts = self.frame * 40;
                while self.audio_ms <= vts {
                    let p = s.push(
                        MediaKind::Audio,
                        self.base + self.audio_ms,
                        &[0xAF, 1, 0x21, 0x10, 0x05],
                    );
                    assert_eq!(p.skipped, None);
                    finished += p.finished;
                    self.audio_ms += 23;
                }
                let key = self.frame % self.gop == 0;
                let nalu: &[u8] = if key {
                    &[0x65, 0x88, 1, 2]
                } else {
                    &[0x41, 0x9A, 3]
                };
                let p = s.push(
                    MediaKind::Video,
                    self.base + vts,
                    &avc_frame(key, 40, &[nalu]),
                );
                assert_eq!(p.skipped, None);
                finished += p.finished;
                self.frame += 1;
            }
            finished
        }
    }

    fn lines(s: &Segmenter) -> Vec<String> {
        String::from_utf8(s.playlist().to_vec())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn tag_value(s: &Segmenter, tag: &str) -> Option<String> {
        lines(s)
            .into_iter()
            .find_map(|l| l.strip_prefix(&format!("{tag}:")).map(str::to_string))
    }

    #[test]
    fn each_segment_has_its_program_date_time_on_the_stream_clock() {
        let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
        let mut src = Source::new(25);
        src.headers(&mut s);
        // 2024-11-23T04:41:18.901Z is 1_732_336_878_901 ms since the epoch.
        s.set_epoch(Some(1_732_336_878_901));
        src.run(&mut s, 6000);
        let l = lines(&s);
        let pdts: Vec<&String> = l
            .iter()
            .filter(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME:"))
            .collect();
        assert_eq!(pdts.len(), 2, "{l:?}");
        assert_eq!(pdts[0], "#EXT-X-PROGRAM-DATE-TIME:2024-11-23T04:41:18.901Z");
        assert_eq!(pdts[1], "#EXT-X-PROGRAM-DATE-TIME:2024-11-23T04:41:20.901Z");
        // Each PDT line is followed by the segment's EXTINF with its stream time.
        let i = l.iter().position(|x| x == pdts[1]).unwrap();
        assert_eq!(l[i + 1], "#EXTINF:2.000,t=2000");
        let segs: Vec<_> = s.segments().map(|x| (x.start_ms, x.pdt_ms)).collect();
        assert_eq!(
            segs,
            [
                (0, Some(1_732_336_878_901)),
                (2000, Some(1_732_336_880_901))
            ]
        );
        let mut out = String::new();
        write_date_time(&mut out, 951_782_400_000 + 86_400_000 - 1);
        assert_eq!(out, "2000-02-29T23:59:59.999Z", "a leap day");
    }

    #[test]
    fn segments_are_cut_at_the_first_keyframe_after_the_target() {
        let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
        let mut src = Source::new(25);
        src.headers(&mut s);
        assert_eq!(src.run(&mut s, 6500), 3);
        let segs: Vec<_> = s.segments().cloned().collect();
        assert_eq!(
            segs.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(segs.iter().all(|s| s.duration_ms == 2000), "{segs:?}");
        for seg in &segs {
            let d = demux(&seg.data);
            assert_eq!(d.pmt_streams.len(), 2, "PAT and PMT first");
            assert_eq!(d.random_access.first(), Some(&VIDEO_PID));
            let video = &d.pes[&VIDEO_PID];
            assert_eq!(video.len(), 50);
            assert!(video[0].data.windows(5).any(|w| w == [0, 0, 1, 0x65, 0x88]));
            assert!(d.pes[&AUDIO_PID].len() >= 85);
        }
        let text = String::from_utf8(s.playlist().to_vec()).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXTINF:2.000,\ncam-0.ts\n#EXTINF:2.000,\ncam-1.ts\n#EXTINF:2.000,\ncam-2.ts\n"
        );
    }

    #[test]
    fn the_window_slides_and_old_segments_stay_fetchable_for_a_while() {
        let mut s = Segmenter::new("cam", cfg(1000, 3), 100);
        let mut src = Source::new(25);
        src.headers(&mut s);
        src.run(&mut s, 12_500);
        assert_eq!(s.stats().segments, 12);
        assert_eq!(s.listed(), 3);
        assert_eq!(
            tag_value(&s, "#EXT-X-MEDIA-SEQUENCE").as_deref(),
            Some("109")
        );
        let uris: Vec<_> = lines(&s)
            .into_iter()
            .filter(|l| l.ends_with(".ts"))
            .collect();
        assert_eq!(uris, vec!["cam-109.ts", "cam-110.ts", "cam-111.ts"]);
        // Held: the listed three and three before them.
        assert!(s.segment(106).is_some());
        assert!(s.segment(105).is_none());
        assert!(s.segment(112).is_none(), "the open segment is not served");
        assert_eq!(s.segments().count(), 6);
    }

    #[test]
    fn a_stream_starts_on_its_first_keyframe() {
        let mut s = Segmenter::new("cam", cfg(1000, 3), 0);
        s.push(MediaKind::Video, 0, &avc_header());
        s.push(MediaKind::Audio, 0, &aac_header());
        // Joined mid-GOP: two inter frames and audio before the keyframe.
        s.push(MediaKind::Video, 0, &avc_frame(false, 0, &[&[0x41, 1]]));
        s.push(MediaKind::Audio, 10, &[0xAF, 1, 1, 2]);
        s.push(MediaKind::Video, 40, &avc_frame(false, 0, &[&[0x41, 1]]));
        assert_eq!(s.held_bytes(), 0, "nothing before the keyframe");
        s.push(MediaKind::Video, 80, &avc_frame(true, 0, &[&[0x65, 1]]));
        s.push(MediaKind::Audio, 90, &[0xAF, 1, 1, 2]);
        assert!(s.finish());
        let seg = s.segment(0).unwrap();
        let d = demux(&seg);
        assert_eq!(d.pes[&VIDEO_PID].len(), 1);
        assert_eq!(d.pes[&AUDIO_PID].len(), 1);
        assert_eq!(s.stats().skipped, 0, "waiting is not an error");
    }

    #[test]
    fn long_gops_make_long_segments_and_the_target_duration_says_so() {
        let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
        let mut src = Source::new(125); // a keyframe every 5 s
        src.headers(&mut s);
        src.run(&mut s, 11_000);
        assert!(s.segments().all(|seg| seg.duration_ms == 5000));
        assert_eq!(tag_value(&s, "#EXT-X-TARGETDURATION").as_deref(), Some("5"));
    }

    #[test]
    fn end_finishes_the_open_segment_and_adds_endlist() {
        let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
        let mut src = Source::new(25);
        src.headers(&mut s);
        src.run(&mut s, 3000);
        assert_eq!(s.segments().count(), 1);
        assert!(s.end());
        let segs: Vec<_> = s.segments().cloned().collect();
        assert_eq!(segs.len(), 2);
        // The last frame was at 2960 ms; one frame interval after it.
        assert_eq!(segs[1].duration_ms, 1000);
        assert_eq!(lines(&s).last().map(String::as_str), Some("#EXT-X-ENDLIST"));
        // Ended: input is ignored.
        assert_eq!(src.run(&mut s, 3000), 0);
        assert_eq!(s.segments().count(), 2);
    }

    #[test]
    fn a_resumed_publisher_follows_a_discontinuity() {
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        let mut src = Source::new(25);
        src.headers(&mut s);
        src.run(&mut s, 2500);
        s.finish();
        s.resume();
        // The new publisher starts its clock at 0 and sends its headers again.
        let mut src = Source::new(25);
        src.headers(&mut s);
        src.run(&mut s, 2500);
        let text = String::from_utf8(s.playlist().to_vec()).unwrap();
        let disc = text
            .find("#EXT-X-DISCONTINUITY\n")
            .expect("a discontinuity");
        assert!(text[..disc].contains("cam-2.ts"));
        assert!(text[disc..].starts_with("#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\ncam-3.ts"));
    }

    #[test]
    fn a_timestamp_jump_is_a_discontinuity_and_counted_when_it_slides_out() {
        let mut s = Segmenter::new("cam", cfg(1000, 2), 0);
        let mut src = Source::new(25);
        src.headers(&mut s);
        src.run(&mut s, 2500);
        src.base = 1_000_000;
        src.run(&mut s, 2500);
        assert_eq!(s.stats().jumps, 1);
        assert!(s.segments().any(|seg| seg.discontinuity));
        assert!(s.segments().all(|seg| seg.duration_ms <= 1000));
        src.run(&mut s, 6000);
        assert_eq!(
            tag_value(&s, "#EXT-X-DISCONTINUITY-SEQUENCE").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_segment_at_the_byte_cap_is_cut_without_a_keyframe() {
        let mut s = Segmenter::new(
            "cam",
            HlsConfig {
                target_ms: 2000,
                window: 6,
                max_segment_bytes: 20_000,
                fmp4: false,
            },
            0,
        );
        s.push(MediaKind::Video, 0, &avc_header());
        let big = vec![0x41u8; 3000];
        s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
        let mut finished = 0;
        for i in 1..100u32 {
            finished += s
                .push(MediaKind::Video, i * 40, &avc_frame(false, 0, &[&big]))
                .finished;
        }
        assert!(finished >= 10);
        assert_eq!(s.stats().forced_cuts, u64::from(finished));
        assert!(s
            .segments()
            .all(|seg| seg.data.len() <= 20_000 + 4000 && seg.data.len() % 188 == 0));
    }

    #[test]
    fn audio_only_streams_are_cut_on_time() {
        let mut s = Segmenter::new("radio", cfg(1000, 6), 0);
        s.push(MediaKind::Audio, 0, &aac_header());
        let mut finished = 0;
        for i in 0..200u32 {
            finished += s
                .push(MediaKind::Audio, i * 23, &[0xAF, 1, 1, 2, 3])
                .finished;
        }
        assert_eq!(finished, 4);
        let seg = s.segment(0).unwrap();
        let d = demux(&seg);
        assert_eq!(d.pcr_pid, Some(AUDIO_PID));
        assert!(!d.pes.contains_key(&VIDEO_PID));
        assert!(s
            .segments()
            .all(|seg| (1000..1030).contains(&seg.duration_ms)));
    }

    #[test]
    fn unusable_input_is_skipped_and_counted() {
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        let p = s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
        assert_eq!(p.skipped, Some(Skip::NoSequenceHeader));
        s.push(MediaKind::Video, 0, &avc_header());
        let mut bad = avc_frame(true, 0, &[&[0x65, 1]]);
        bad[5] = 0x7F; // a NALU length far past the end
        assert_eq!(
            s.push(MediaKind::Video, 0, &bad).skipped,
            Some(Skip::Malformed)
        );
        assert_eq!(
            s.push(MediaKind::Video, 0, &[]).skipped,
            Some(Skip::Malformed)
        );
        assert_eq!(s.stats().skipped, 3);
        assert!(!s.finish(), "a segment with no frames is not a segment");
        assert_eq!(s.segments().count(), 0);
    }

    #[test]
    fn an_av1_or_vp9_stream_is_refused_whole_not_served_as_its_audio() {
        for cc in [*b"vp09", *b"vp08"] {
            let video = |b0: u8| {
                let mut v = vec![b0];
                v.extend(cc);
                v.extend([0, 0, 0, 1]);
                v
            };
            let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
            // ffmpeg's order: SequenceStart, the AAC config, then frames of both tracks.
            let p = s.push(MediaKind::Video, 0, &video(0x90));
            assert_eq!(p.skipped, Some(Skip::Unsupported));
            let refused = s.refused().expect("refused at the sequence header");
            assert!(matches!(refused, Uncarried::Video(_)));
            s.push(MediaKind::Audio, 0, &aac_header());
            for i in 0..200u32 {
                s.push(MediaKind::Audio, i * 23, &[0xAF, 1, 1, 2, 3]);
                if i % 10 == 0 {
                    s.push(MediaKind::Video, i * 23, &video(0x91));
                }
            }
            assert!(!s.finish());
            assert_eq!(s.segments().count(), 0, "no audio-only segments");
            assert_eq!(s.stats().skipped, 1, "counted once");
            // A new publisher with H.264 is served again.
            s.resume();
            assert_eq!(s.refused(), None);
            s.push(MediaKind::Video, 0, &avc_header());
            s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
            s.push(MediaKind::Video, 1000, &avc_frame(true, 0, &[&[0x65, 1]]));
            assert_eq!(s.segments().count(), 1);
        }
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, &[0x12, 0, 0, 0, 0]);
        assert_eq!(s.refused().unwrap().to_string(), "FLV video codec 2 video");
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, &avc_header());
        s.push(MediaKind::Audio, 0, b"\x90Opus\x00");
        assert_eq!(s.refused().unwrap().to_string(), "Enhanced RTMP Opus audio");
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, b"\x90vp09\x01");
        assert_eq!(s.refused().unwrap().to_string(), "VP9 video");
        // AV1 is fMP4.
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, b"\x90av01\x81\x08\x0c\x00");
        assert_eq!(s.refused(), None);
        assert_eq!(s.format(), Format::Fmp4);
        // An Enhanced RTMP command frame names no codec: no refusal.
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, &[0xD1, 0]);
        assert_eq!(s.refused(), None);
    }

    #[test]
    fn an_extra_track_in_multitrack_form_is_left_out_not_a_refusal() {
        // ffmpeg sends a second AAC track as multitrack `mp4a` (track 1).
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, &avc_header());
        s.push(MediaKind::Audio, 0, &aac_header());
        s.push(MediaKind::Audio, 0, b"\x95\x00mp4a\x01\x12\x08");
        for i in 0..30u32 {
            let ts = i * 100;
            s.push(
                MediaKind::Video,
                ts,
                &avc_frame(i % 10 == 0, 0, &[&[0x65, 1]]),
            );
            s.push(MediaKind::Audio, ts, &[0xAF, 1, 1, 2, 3]);
            let p = s.push(MediaKind::Audio, ts, b"\x95\x01mp4a\x01\x21\x22");
            assert_eq!(p.skipped, None);
        }
        assert_eq!(s.refused(), None);
        assert_eq!(s.segments().count(), 2);
        assert_eq!(s.stats().skipped, 0);
    }

    #[test]
    fn a_new_owner_adopts_the_history_and_numbering() {
        let mut old = Segmenter::new("cam", cfg(1000, 6), 500);
        let mut src = Source::new(25);
        src.headers(&mut old);
        src.run(&mut old, 3500);
        let history = old.take_history();
        assert!(!history.is_empty());
        assert_eq!(old.segments().count(), 0);

        let mut new = Segmenter::new("cam", cfg(1000, 6), 9_000);
        let mut src = Source::new(25);
        src.headers(&mut new);
        src.run(&mut new, 1500);
        new.adopt(history);
        src.run(&mut new, 1000);
        let seqs: Vec<_> = new.segments().map(|s| s.sequence).collect();
        assert_eq!(seqs, vec![500, 501, 502, 503, 504, 505]);
        let disc: Vec<_> = new.segments().map(|s| s.discontinuity).collect();
        assert_eq!(disc, vec![false, false, false, false, true, false]);
        assert_eq!(new.segment(504).map(|b| b.len() % 188), Some(0));
    }

    #[test]
    fn sequence_lookups_never_panic() {
        let s = Segmenter::new("cam", cfg(1000, 6), u64::MAX - 1);
        assert!(s.segment(0).is_none());
        assert!(s.segment(u64::MAX).is_none());
        assert_eq!(
            tag_value(&s, "#EXT-X-MEDIA-SEQUENCE").as_deref(),
            Some(&*(u64::MAX - 1).to_string())
        );
    }

    // --- fMP4 ---------------------------------------------------------------------------

    use crate::media::fmp4::tests::{boxes, child};

    fn hevc_record() -> Vec<u8> {
        let mut r = vec![1u8; 22];
        r[21] = 0x0F; // 4-byte NALU lengths
        r.push(0);
        r
    }

    fn hvc(b0: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        v.extend(b"hvc1");
        v.extend(rest);
        v
    }

    /// 25 fps HEVC with a keyframe every `gop` frames and AAC, from `from` ms for `ms`.
    fn hevc_run(s: &mut Segmenter, from: u32, ms: u32, gop: u32) -> u32 {
        let mut finished = 0;
        let mut audio = from;
        for f in 0..ms / 40 {
            let ts = from + f * 40;
            while audio <= ts {
                finished += s
                    .push(MediaKind::Audio, audio, &[0xAF, 1, 0x21, 0x10])
                    .finished;
                audio += 23;
            }
            let b0 = if f % gop == 0 { 0x91 } else { 0xA1 };
            let p = s.push(
                MediaKind::Video,
                ts,
                &hvc(b0, &[0, 0, 0, 0, 0, 0, 2, 0x26, 1]),
            );
            assert_eq!(p.skipped, None);
            finished += p.finished;
        }
        finished
    }

    #[test]
    fn an_hevc_stream_is_segmented_in_fmp4_with_its_init_segment() {
        let mut s = Segmenter::new("cam", cfg(1000, 6), 40);
        s.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
        s.push(MediaKind::Audio, 0, &aac_header());
        assert_eq!(s.format(), Format::Fmp4);
        assert_eq!(hevc_run(&mut s, 0, 3000, 25), 2);
        assert_eq!(s.refused(), None);
        let text = String::from_utf8(s.playlist().to_vec()).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:40\n\
             #EXT-X-MAP:URI=\"cam-40.mp4\"\n\
             #EXTINF:1.000,\ncam-40.m4s\n#EXTINF:1.000,\ncam-41.m4s\n"
        );
        let init = s.init_segment(40).unwrap();
        assert!(s.init_segment(41).is_none());
        assert!(child(&init, &[b"moov"]).is_some());
        assert!(init.windows(4).any(|w| w == b"hvcC"));
        let (seg, fmp4) = s.segment_of(41).unwrap();
        assert!(fmp4);
        let top = boxes(&seg);
        assert_eq!(&top[0].name, b"moof");
        assert_eq!(&top[1].name, b"mdat");
        // 25 pictures of 6 bytes and the audio frames of one second.
        assert!(
            top[1].body.len() >= 25 * 6 + 43 * 2,
            "{}",
            top[1].body.len()
        );
        assert_eq!(&seg[..], &s.segment(41).unwrap()[..]);
    }

    #[test]
    fn with_hls_fmp4_h264_is_fmp4_too() {
        let mut s = Segmenter::new(
            "cam",
            HlsConfig {
                fmp4: true,
                ..cfg(2000, 6)
            },
            0,
        );
        let mut src = Source::new(25);
        src.headers(&mut s);
        assert_eq!(src.run(&mut s, 4500), 2);
        let l = lines(&s);
        assert!(
            l.contains(&"#EXT-X-MAP:URI=\"cam-0.mp4\"".to_string()),
            "{l:?}"
        );
        assert!(l.contains(&"cam-1.m4s".to_string()));
        assert!(s.init_segment(0).unwrap().windows(4).any(|w| w == b"avcC"));
        // Resumed, it stays fMP4.
        s.resume();
        assert_eq!(s.format(), Format::Fmp4);
    }

    #[test]
    fn a_new_configuration_gets_a_new_map_after_a_discontinuity() {
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        s.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
        s.push(MediaKind::Audio, 0, &aac_header());
        hevc_run(&mut s, 0, 2000, 25);
        let mut other = hevc_record();
        other[1] = 2;
        // A new sequence header mid-segment: the segment ends there.
        assert_eq!(
            s.push(MediaKind::Video, 2000, &hvc(0x90, &other)).finished,
            1
        );
        hevc_run(&mut s, 2000, 2000, 25);
        let text = String::from_utf8(s.playlist().to_vec()).unwrap();
        assert!(
            text.contains(
                "#EXT-X-MAP:URI=\"cam-0.mp4\"\n#EXTINF:1.000,\ncam-0.m4s\n#EXTINF:1.000,\ncam-1.m4s\n\
                 #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"cam-2.mp4\"\n#EXTINF:1.000,\ncam-2.m4s\n"
            ),
            "{text}"
        );
        assert_ne!(s.init_segment(0), s.init_segment(2));
        // The same header again changes nothing.
        let before = s.stats().segments;
        s.push(MediaKind::Video, 4000, &hvc(0x90, &other));
        assert_eq!(s.stats().segments, before);
    }

    #[test]
    fn an_h264_publisher_followed_by_an_hevc_one_switches_to_fmp4() {
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        let mut src = Source::new(25);
        src.headers(&mut s);
        src.run(&mut s, 2500);
        s.finish();
        s.resume();
        s.push(MediaKind::Audio, 0, &aac_header());
        s.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
        hevc_run(&mut s, 0, 2000, 25);
        let l = lines(&s);
        let i = l.iter().position(|x| x.starts_with("#EXT-X-MAP")).unwrap();
        assert_eq!(l[i - 1], "#EXT-X-DISCONTINUITY");
        assert_eq!(l[i - 2], "cam-2.ts");
        assert_eq!(l[i + 2], "cam-3.m4s");
        assert!(s.segment_of(2).is_some_and(|(_, fmp4)| !fmp4));
    }

    #[test]
    fn fmp4_segments_at_the_byte_cap_are_cut() {
        let mut s = Segmenter::new(
            "cam",
            HlsConfig {
                target_ms: 2000,
                window: 6,
                max_segment_bytes: 20_000,
                fmp4: true,
            },
            0,
        );
        s.push(MediaKind::Video, 0, &avc_header());
        s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
        let big = vec![0x41u8; 3000];
        let mut finished = 0;
        for i in 1..100u32 {
            finished += s
                .push(MediaKind::Video, i * 40, &avc_frame(false, 0, &[&big]))
                .finished;
        }
        assert!(finished >= 10);
        assert!(s.segments().all(|seg| seg.data.len() <= 20_000 + 4000));
        assert!(s.held_bytes() <= 12 * 24_000);
    }

    #[test]
    fn adopted_fmp4_segments_keep_init_names_that_resolve() {
        let mut old = Segmenter::new("cam", cfg(1000, 6), 500);
        old.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
        hevc_run(&mut old, 0, 2500, 25);
        let history = old.take_history();
        let mut new = Segmenter::new("cam", cfg(1000, 6), 9_000);
        new.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
        hevc_run(&mut new, 0, 2500, 25);
        new.adopt(history);
        let l = lines(&new);
        let maps: Vec<_> = l.iter().filter(|x| x.starts_with("#EXT-X-MAP")).collect();
        assert_eq!(maps.len(), 2, "{l:?}");
        for m in maps {
            let n: u64 = m
                .trim_start_matches("#EXT-X-MAP:URI=\"cam-")
                .trim_end_matches(".mp4\"")
                .parse()
                .unwrap();
            assert!(new.init_segment(n).is_some(), "{m}");
        }
    }
}
