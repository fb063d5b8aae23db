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
//! - with [`HlsConfig::part_ms`] (Low-Latency HLS) every stream is fMP4 and the open
//!   segment is published as it grows, in partial segments (`parts.rs`), listed with the
//!   LL-HLS tags (`playlist.rs`);
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

use bytes::{Bytes, BytesMut};

use super::class::Class;
use super::fmp4::{self, Fmp4Muxer};
use super::kind::MediaKind;
use super::packet::Packaged;
use super::ts::{self, Carried, Muxed, Skip, TsMuxer, Uncarried};

/// Segmenting settings (from `[media]`: `hls_segment_secs`, `hls_window`,
/// `hls_max_segment_bytes`, `hls_fmp4`, `hls_low_latency` and `hls_part_ms`).
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
    /// Low-Latency HLS: the partial segments' target duration in milliseconds; 0 for
    /// none. Parts are fMP4 fragments, so a segmenter with parts makes fMP4 for every
    /// stream (`parts.rs`).
    pub part_ms: u32,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_ms: 2000,
            window: 6,
            max_segment_bytes: 16 * 1024 * 1024,
            fmp4: false,
            part_ms: 0,
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
    /// Low-Latency HLS: its partial segments, in order; their bytes are slices of `data`
    /// (a segment is its parts end to end). Empty without parts.
    pub parts: Vec<Part>,
}

/// One partial segment (LL-HLS): an fMP4 fragment (`moof` + `mdat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub duration_ms: u32,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    pub data: Bytes,
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
    /// LL-HLS: the parts finished so far, their bytes, where the pending part started
    /// and whether it starts with a keyframe.
    parts: Vec<Part>,
    parts_bytes: usize,
    part_start: u32,
    part_independent: bool,
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
    /// The latest keyframe, and the interval between the last two (the GOP), which tells
    /// where the open segment will likely be cut (for even LL-HLS parts).
    last_key_ts: Option<u32>,
    key_gap: u32,
    last_audio_ts: Option<u32>,
    /// The latest interval between two frames of the timing track.
    frame_gap: u32,
    /// Unix ms at stream time 0 ([`Segmenter::set_epoch`]).
    epoch_ms: Option<u64>,
    ended: bool,
    /// The track that made this publisher's stream one HLS does not carry.
    refused: Option<Uncarried>,
    playlist: Bytes,
    /// Bumped on every change of the playlist (a part, a segment, the end).
    version: u64,
    /// The next fMP4 fragment's number (`mfhd`) when segments are made of parts.
    next_fragment: u64,
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
            fmp4: cfg.fmp4 || cfg.part_ms > 0,
            part_ms: cfg.part_ms,
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
            last_key_ts: None,
            key_gap: 0,
            last_audio_ts: None,
            frame_gap: 0,
            epoch_ms: None,
            ended: false,
            refused: None,
            playlist: Bytes::new(),
            version: 0,
            next_fragment: 0,
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
        let found = self
            .done
            .iter()
            .find(|s| s.init_seq == init_seq && s.init.is_some())
            .and_then(|s| s.init.clone());
        // LL-HLS lists the open segment's parts, and with them its init segment.
        found.or_else(|| {
            let open = self
                .open
                .as_ref()
                .filter(|_| init_seq == self.next_sequence)?;
            let own = self.done.back().is_none_or(|p| p.init != open.init);
            own.then(|| open.init.clone()).flatten()
        })
    }

    /// Bytes held in finished segments and the open one.
    pub fn held_bytes(&self) -> usize {
        self.done.iter().map(|s| s.data.len()).sum::<usize>()
            + self
                .open
                .as_ref()
                .map_or(0, |o| o.buf.len() + o.parts_bytes)
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
            // No open segment, parts or hint are listed any more.
            self.render();
            return self.skip(Skip::Unsupported);
        }
        let carried = match self.format {
            Format::Ts => ts::carried(class),
            Format::Fmp4 => fmp4::carried(class),
        };
        // A frame of the track that times the stream (video, or audio alone), and whether
        // it is a keyframe: where a part may end.
        let mut timing = None;
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
                timing = Some(key);
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
                    if let Some(prev) = self.last_key_ts.replace(timestamp) {
                        let gap = elapsed(prev, timestamp);
                        if gap > 0 && gap <= MAX_JUMP_MS {
                            self.key_gap = gap;
                        }
                    }
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
                    timing = Some(true);
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
        if let Some(key) = timing {
            self.at_part_boundary(timestamp, key);
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
}

mod cut;
mod lifecycle;
mod parts;
mod playlist;
#[cfg(test)]
mod tests;

pub use parts::{PartState, Position};
pub use playlist::write_date_time;
