//! The GOP cache: what a new viewer is sent first, so it starts on a keyframe at once.
//!
//! It holds the latest metadata, the latest Enhanced RTMP video metadata (`colorInfo`), the
//! video and audio sequence headers (AVC/HEVC/AV1/VP9 decoder configuration, AAC
//! AudioSpecificConfig, any Enhanced RTMP SequenceStart) and the messages since the last
//! keyframe, all as [`Packaged`] (shared bytes per protocol). Keyframes are what
//! [`Class`] says, per codec (legacy FLV frame type, or the Enhanced RTMP frame type on a
//! CodedFrames/CodedFramesX packet). [`GopCache::rtmp_start`] and [`GopCache::flv_start`]
//! give a joining viewer, in order: metadata, video metadata, sequence headers, the
//! configuration of extra tracks, then the GOP from its keyframe. Nothing is copied or
//! re-encoded per viewer.
//!
//! Extra tracks: an Enhanced RTMP multitrack message (ffmpeg sends every track but the
//! first so) carries its own sequence header and configuration, kept beside the default
//! track's rather than in place of it (one slot per kind, track and sort, at most
//! [`TRACK_SLOTS`]); a GOP starts at a keyframe of the default track.
//!
//! Caps ([`GopLimits`]) bound the GOP in messages and in bytes held (both packaged forms).
//! When a video stream's GOP reaches a cap, the cached GOP is dropped and nothing is cached
//! until the next keyframe: a viewer joining in between gets metadata and sequence headers
//! and waits for the live keyframe, which is correct, merely slower. (Keeping a truncated
//! GOP would be worse: frames without their keyframe do not decode.) For a stream with no
//! video at all, the cache is a rolling window of the latest audio, trimmed from the front.
//! Metadata, video metadata and the two sequence headers are [`SLOTS`] single slots
//! outside the caps, each at most
//! [`MAX_SLOT_BYTES`]: real ones are a few hundred bytes, and without a bound a publisher
//! could park four whole messages (up to `media.max_message_bytes` each, twice over for
//! the two packaged forms) per stream beside the GOP. An oversized one empties its slot
//! (the old one no longer describes the stream) and the viewers that join later wait for
//! the publisher to send it again.

use std::collections::VecDeque;

use bytes::Bytes;

use super::class::Class;
use super::flv::{self, AudioPacket, VideoPacket};
use super::kind::MediaKind;
use super::packet::Packaged;

/// Largest metadata or sequence header kept (both packaged forms together).
pub const MAX_SLOT_BYTES: usize = 256 * 1024;
/// Configuration slots for extra tracks (Enhanced RTMP multitrack) and audio
/// multichannel configs: a publisher with more is not kept past this many.
pub const TRACK_SLOTS: usize = 8;
/// Single-message slots beside the GOP: metadata, video metadata, the video and the
/// audio sequence header, and the [`TRACK_SLOTS`].
pub const SLOTS: usize = 4 + TRACK_SLOTS;

/// Caps on the cached GOP.
#[derive(Clone, Copy, Debug)]
pub struct GopLimits {
    /// Messages (audio, video and data) in the GOP.
    pub max_frames: usize,
    /// Bytes held by the GOP's packaged messages.
    pub max_bytes: usize,
}

impl Default for GopLimits {
    /// Room for a 10 s GOP at 60 fps with audio, and for ~8 Mbit/s of it.
    fn default() -> Self {
        GopLimits {
            max_frames: 1500,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct GopCache {
    limits: GopLimits,
    metadata: Option<Packaged>,
    /// Enhanced RTMP video metadata (HDR `colorInfo`): the latest one applies.
    video_metadata: Option<Packaged>,
    video_header: Option<Packaged>,
    audio_header: Option<Packaged>,
    /// Configuration of extra tracks (their sequence headers, video metadata and
    /// multichannel configs) and any audio MultichannelConfig: one per (kind, track,
    /// what), at most [`TRACK_SLOTS`].
    track_configs: Vec<Packaged>,
    gop: VecDeque<Packaged>,
    gop_bytes: usize,
    has_video: bool,
    has_audio: bool,
    /// A keyframe opened the cached GOP (video streams).
    in_gop: bool,
    dropped_gops: u64,
}

impl GopCache {
    pub fn new(limits: GopLimits) -> GopCache {
        GopCache {
            limits,
            ..GopCache::default()
        }
    }

    /// Replaces the metadata (an `onMetaData` data message).
    pub fn set_metadata(&mut self, metadata: Packaged) {
        self.metadata = slot(metadata);
    }

    /// Adds one live message. Sequence headers replace the held ones; frames join the GOP
    /// as described in the module documentation.
    pub fn push(&mut self, p: Packaged) {
        // The class was read when the message was packaged; nothing is parsed here, on
        // the owner or on any mirror.
        if p.class.is_config() {
            self.set_config(p);
            return;
        }
        match p.class {
            Class::Video(tag) => {
                if !self.has_video {
                    // The first video: any audio-only window is not a GOP.
                    self.has_video = true;
                    self.reset_gop();
                }
                if tag.is_keyframe() {
                    self.reset_gop();
                    self.in_gop = true;
                }
                if self.in_gop {
                    self.append(p);
                }
            }
            Class::Audio(_) => {
                self.has_audio = true;
                if !self.has_video || self.in_gop {
                    self.append(p);
                }
            }
            Class::Metadata | Class::Data => {
                if !self.has_video || self.in_gop {
                    self.append(p);
                }
            }
            // An empty (or cut) audio or video message carries nothing a viewer could use.
            Class::Unreadable => {}
        }
    }

    /// Configuration replaces the held one of its kind, track and sort.
    fn set_config(&mut self, p: Packaged) {
        match p.class {
            Class::Video(t) if t.track.is_none() && t.is_sequence_header() => {
                self.video_header = slot(p);
            }
            Class::Video(t) if t.track.is_none() && t.packet == VideoPacket::Metadata => {
                self.video_metadata = slot(p);
            }
            Class::Audio(t) if t.track.is_none() && t.is_sequence_header() => {
                self.has_audio = true;
                self.audio_header = slot(p);
            }
            _ => {
                self.has_audio |= p.kind == MediaKind::Audio;
                let key = config_key(&p.class);
                let held = self
                    .track_configs
                    .iter()
                    .position(|q| config_key(&q.class) == key);
                match (held, slot(p)) {
                    (Some(i), Some(p)) => self.track_configs[i] = p,
                    (Some(i), None) => {
                        self.track_configs.remove(i);
                    }
                    (None, Some(p)) if self.track_configs.len() < TRACK_SLOTS => {
                        self.track_configs.push(p);
                    }
                    (None, _) => {}
                }
            }
        }
    }

    fn append(&mut self, p: Packaged) {
        self.gop_bytes += p.held_bytes();
        self.gop.push_back(p);
        if !self.over_cap() {
            return;
        }
        if self.has_video {
            // Drop the GOP and wait for the next keyframe (see the module documentation).
            self.reset_gop();
            self.dropped_gops += 1;
        } else {
            while self.over_cap() {
                match self.gop.pop_front() {
                    Some(old) => self.gop_bytes -= old.held_bytes(),
                    None => break,
                }
            }
        }
    }

    fn over_cap(&self) -> bool {
        self.gop.len() > self.limits.max_frames || self.gop_bytes > self.limits.max_bytes
    }

    fn reset_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.in_gop = false;
    }

    /// Forgets everything (the publisher left; the next one may use other codecs).
    pub fn clear(&mut self) {
        *self = GopCache::new(self.limits);
    }

    /// The held metadata message, if any.
    pub fn metadata(&self) -> Option<&Packaged> {
        self.metadata.as_ref()
    }

    /// Everything but the metadata, in start order: video metadata, sequence headers,
    /// then the GOP. With
    /// [`Self::metadata`] this rebuilds an identical cache elsewhere (`set_metadata`, then
    /// `push` each).
    pub fn frames(&self) -> impl Iterator<Item = &Packaged> {
        self.video_metadata
            .iter()
            .chain(self.video_header.iter())
            .chain(self.audio_header.iter())
            .chain(self.track_configs.iter())
            .chain(self.gop.iter())
    }

    /// What a joining viewer is sent, in order: metadata, video metadata, video and
    /// audio sequence headers, the GOP.
    pub fn iter(&self) -> impl Iterator<Item = &Packaged> {
        self.metadata.iter().chain(self.frames())
    }

    /// The start of an RTMP viewer's stream (after the session's play replies).
    pub fn rtmp_start(&self) -> Vec<Bytes> {
        self.iter().map(|p| p.rtmp.clone()).collect()
    }

    /// The start of an HTTP-FLV response body: the FLV file header, then the tags.
    pub fn flv_start(&self) -> Vec<Bytes> {
        let has_video = self.has_video || self.video_header.is_some();
        let has_audio = self.has_audio;
        std::iter::once(flv::header(has_audio, has_video))
            .chain(self.iter().map(|p| p.flv.clone()))
            .collect()
    }

    /// Messages in the cached GOP.
    pub fn gop_len(&self) -> usize {
        self.gop.len()
    }

    /// Bytes held by the cached GOP.
    pub fn gop_bytes(&self) -> usize {
        self.gop_bytes
    }

    /// A keyframe-led GOP (or an audio-only window) is ready for a joining viewer.
    pub fn has_gop(&self) -> bool {
        !self.gop.is_empty()
    }

    /// GOPs dropped for hitting a cap (a metric).
    pub fn dropped_gops(&self) -> u64 {
        self.dropped_gops
    }
}

/// What a configuration message configures: (video?, track, which sort).
fn config_key(class: &Class) -> Option<(bool, Option<u8>, u8)> {
    match class {
        Class::Video(t) => Some((true, t.track, u8::from(t.packet == VideoPacket::Metadata))),
        Class::Audio(t) => Some((
            false,
            t.track,
            u8::from(t.packet == AudioPacket::MultichannelConfig),
        )),
        _ => None,
    }
}

/// A single-slot message, if it is small enough to keep.
fn slot(p: Packaged) -> Option<Packaged> {
    (p.held_bytes() <= MAX_SLOT_BYTES).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::packet::MediaMessage;

    fn pkt(kind: MediaKind, ts: u32, payload: &[u8]) -> Packaged {
        Packaged::new(&MediaMessage {
            kind,
            timestamp: ts,
            payload: Bytes::copy_from_slice(payload),
        })
        .unwrap()
    }

    const AVC_SEQ: &[u8] = &[0x17, 0, 0, 0, 0, 1, 0x64];
    const KEY: &[u8] = &[0x17, 1, 0, 0, 0, 0xAA];
    const INTER: &[u8] = &[0x27, 1, 0, 0, 0, 0xBB];
    const AAC_SEQ: &[u8] = &[0xAF, 0, 0x12, 0x10];
    const AAC: &[u8] = &[0xAF, 1, 0x21];

    fn first_bytes(c: &GopCache) -> Vec<(MediaKind, u8, u8)> {
        c.iter()
            .map(|p| {
                let pl = p.payload();
                (p.kind, pl[0], pl.get(1).copied().unwrap_or(0))
            })
            .collect()
    }

    #[test]
    fn oversized_metadata_and_sequence_headers_are_not_kept() {
        let mut c = GopCache::new(GopLimits::default());
        c.push(pkt(MediaKind::Video, 0, AVC_SEQ));
        let mut huge = AVC_SEQ.to_vec();
        huge.resize(MAX_SLOT_BYTES, 0);
        c.push(pkt(MediaKind::Video, 0, &huge));
        let mut meta = b"\x02\x00\x0aonMetaData".to_vec();
        meta.resize(MAX_SLOT_BYTES, 0);
        c.set_metadata(pkt(MediaKind::Data, 0, &meta));
        assert!(c.metadata().is_none());
        assert_eq!(c.frames().count(), 0, "the old header no longer applies");
        c.push(pkt(MediaKind::Video, 0, AVC_SEQ));
        assert_eq!(c.frames().count(), 1);
    }

    #[test]
    fn a_joining_viewer_gets_headers_then_the_gop_from_its_keyframe() {
        let mut c = GopCache::new(GopLimits::default());
        c.set_metadata(pkt(MediaKind::Data, 0, b"\x02\x00\x0aonMetaData"));
        c.push(pkt(MediaKind::Video, 0, AVC_SEQ));
        c.push(pkt(MediaKind::Audio, 0, AAC_SEQ));
        // Frames before the first keyframe are not cached.
        c.push(pkt(MediaKind::Video, 0, INTER));
        c.push(pkt(MediaKind::Audio, 10, AAC));
        assert!(!c.has_gop());
        c.push(pkt(MediaKind::Video, 40, KEY));
        c.push(pkt(MediaKind::Audio, 50, AAC));
        c.push(pkt(MediaKind::Video, 80, INTER));
        assert_eq!(
            first_bytes(&c),
            vec![
                (MediaKind::Data, 0x02, 0),
                (MediaKind::Video, 0x17, 0),
                (MediaKind::Audio, 0xAF, 0),
                (MediaKind::Video, 0x17, 1),
                (MediaKind::Audio, 0xAF, 1),
                (MediaKind::Video, 0x27, 1),
            ]
        );
        // A new keyframe starts a new GOP.
        c.push(pkt(MediaKind::Video, 1040, KEY));
        assert_eq!(c.gop_len(), 1);
        let rtmp = c.rtmp_start();
        assert_eq!(rtmp.len(), 4);
        let flv = c.flv_start();
        assert_eq!(&flv[0][..], &flv::header(true, true)[..]);
        assert_eq!(flv.len(), 5);
    }

    #[test]
    fn shared_bytes_are_not_copied_per_viewer() {
        let mut c = GopCache::new(GopLimits::default());
        c.push(pkt(MediaKind::Video, 0, KEY));
        let a = c.rtmp_start();
        let b = c.rtmp_start();
        assert_eq!(a[0].as_ptr(), b[0].as_ptr());
    }

    #[test]
    fn hitting_the_frame_cap_drops_the_gop_until_the_next_keyframe() {
        let mut c = GopCache::new(GopLimits {
            max_frames: 3,
            max_bytes: usize::MAX,
        });
        c.push(pkt(MediaKind::Video, 0, AVC_SEQ));
        c.push(pkt(MediaKind::Video, 0, KEY));
        c.push(pkt(MediaKind::Video, 40, INTER));
        c.push(pkt(MediaKind::Video, 80, INTER));
        assert_eq!(c.gop_len(), 3);
        c.push(pkt(MediaKind::Video, 120, INTER));
        assert_eq!(c.gop_len(), 0);
        assert_eq!(c.dropped_gops(), 1);
        c.push(pkt(MediaKind::Video, 160, INTER));
        c.push(pkt(MediaKind::Audio, 170, AAC));
        assert_eq!(c.gop_len(), 0);
        // Headers survive.
        assert_eq!(c.iter().count(), 1);
        c.push(pkt(MediaKind::Video, 200, KEY));
        assert_eq!(c.gop_len(), 1);
    }

    #[test]
    fn hitting_the_byte_cap_drops_the_gop_too() {
        let key = pkt(MediaKind::Video, 0, KEY);
        let mut c = GopCache::new(GopLimits {
            max_frames: 100,
            max_bytes: key.held_bytes() * 2,
        });
        c.push(key);
        c.push(pkt(MediaKind::Video, 40, INTER));
        assert_eq!(c.gop_len(), 2);
        c.push(pkt(
            MediaKind::Video,
            80,
            &[0x27, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        ));
        assert_eq!(c.gop_len(), 0);
        assert_eq!(c.gop_bytes(), 0);
    }

    #[test]
    fn audio_only_streams_keep_a_rolling_window() {
        let mut c = GopCache::new(GopLimits {
            max_frames: 2,
            max_bytes: usize::MAX,
        });
        c.push(pkt(MediaKind::Audio, 0, AAC_SEQ));
        for ts in 0..5 {
            c.push(pkt(MediaKind::Audio, ts * 23, AAC));
        }
        assert_eq!(c.gop_len(), 2);
        let ts: Vec<u32> = c.iter().map(|p| p.timestamp).collect();
        assert_eq!(ts, vec![0, 69, 92]);
        assert_eq!(&c.flv_start()[0][..], &flv::header(true, false)[..]);
        // Video arriving turns it into a keyframe-led cache.
        c.push(pkt(MediaKind::Video, 100, INTER));
        assert_eq!(c.gop_len(), 0);
    }

    #[test]
    fn hevc_enhanced_rtmp_is_cached_like_avc() {
        let mut c = GopCache::new(GopLimits::default());
        c.push(pkt(MediaKind::Video, 0, &[0x90, b'h', b'v', b'c', b'1', 1]));
        c.push(pkt(
            MediaKind::Video,
            0,
            &[0x91, b'h', b'v', b'c', b'1', 0, 0, 0, 9],
        ));
        c.push(pkt(
            MediaKind::Video,
            40,
            &[0xA1, b'h', b'v', b'c', b'1', 0, 0, 0, 9],
        ));
        assert_eq!(c.iter().count(), 3);
        assert_eq!(c.gop_len(), 2);
    }

    #[test]
    fn clear_forgets_headers_and_gop() {
        let mut c = GopCache::new(GopLimits::default());
        c.push(pkt(MediaKind::Video, 0, AVC_SEQ));
        c.push(pkt(MediaKind::Video, 0, KEY));
        c.push(pkt(MediaKind::Video, 0, &[]));
        c.clear();
        assert_eq!(c.iter().count(), 0);
    }

    #[test]
    fn a_viewer_joining_an_enhanced_rtmp_stream_gets_metadata_color_info_headers_then_a_keyframe() {
        for cc in [*b"hvc1", *b"av01", *b"vp09"] {
            let video = |ts: u32, b0: u8, rest: &[u8]| {
                let mut v = vec![b0];
                v.extend(cc);
                v.extend(rest);
                pkt(MediaKind::Video, ts, &v)
            };
            let mut c = GopCache::new(GopLimits::default());
            // In ffmpeg's order: onMetaData, SequenceStart, AAC config, colorInfo, frames.
            c.set_metadata(pkt(MediaKind::Data, 0, b"\x02\x00\x0aonMetaData"));
            c.push(video(0, 0x90, &[1]));
            c.push(pkt(MediaKind::Audio, 0, AAC_SEQ));
            c.push(video(0, 0xD4, b"\x02\x00\x09colorInfo\x03"));
            c.push(video(0, 0xA1, &[0, 0, 0, 7])); // before any keyframe: not cached
            c.push(video(40, 0x91, &[0, 0, 0, 8]));
            c.push(pkt(MediaKind::Audio, 46, AAC));
            c.push(video(80, 0xA1, &[0, 0, 0, 9]));
            let order: Vec<(MediaKind, u8)> = c.iter().map(|p| (p.kind, p.payload()[0])).collect();
            assert_eq!(
                order,
                vec![
                    (MediaKind::Data, 0x02),
                    (MediaKind::Video, 0xD4),
                    (MediaKind::Video, 0x90),
                    (MediaKind::Audio, 0xAF),
                    (MediaKind::Video, 0x91),
                    (MediaKind::Audio, 0xAF),
                    (MediaKind::Video, 0xA1),
                ],
                "{cc:?}"
            );
            // A later colorInfo replaces the held one and leaves the GOP alone.
            c.push(video(120, 0xD4, b"\x02\x00\x09colorInfo\x06"));
            assert_eq!(c.gop_len(), 3);
            assert_eq!(c.frames().next().unwrap().timestamp, 120);
            // A shard's mirror, rebuilt from the owner's cache, starts viewers the same.
            let mut mirror = GopCache::new(GopLimits::default());
            mirror.set_metadata(c.metadata().unwrap().clone());
            for p in c.frames() {
                mirror.push(p.clone());
            }
            assert_eq!(mirror.rtmp_start(), c.rtmp_start());
            assert_eq!(mirror.flv_start(), c.flv_start());
        }
    }

    #[test]
    fn an_extra_audio_track_keeps_its_own_header_beside_the_default_ones() {
        // What ffmpeg 9 sends for H.264 with two AAC tracks: track 1 as multitrack `mp4a`.
        let mut c = GopCache::new(GopLimits::default());
        c.push(pkt(MediaKind::Video, 0, AVC_SEQ));
        c.push(pkt(MediaKind::Audio, 0, AAC_SEQ));
        c.push(pkt(MediaKind::Audio, 0, b"\x95\x00mp4a\x01\x12\x08"));
        c.push(pkt(MediaKind::Audio, 0, b"\x95\x04mp4a\x01\x01\x01\x00"));
        c.push(pkt(MediaKind::Video, 0, KEY));
        c.push(pkt(MediaKind::Audio, 0, AAC));
        c.push(pkt(MediaKind::Audio, 0, b"\x95\x01mp4a\x01\x21"));
        let firsts: Vec<(u8, u8)> = c.iter().map(|p| (p.payload()[0], p.payload()[1])).collect();
        assert_eq!(
            firsts,
            vec![
                (0x17, 0),    // the default video's header
                (0xAF, 0),    // the default audio's, not replaced by track 1's
                (0x95, 0x00), // track 1's SequenceStart
                (0x95, 0x04), // track 1's MultichannelConfig
                (0x17, 1),
                (0xAF, 1),
                (0x95, 0x01),
            ]
        );
        // A new header for track 1 replaces its own.
        c.push(pkt(MediaKind::Audio, 9, b"\x95\x00mp4a\x01\x12\x10"));
        assert_eq!(c.frames().filter(|p| p.class.is_config()).count(), 4);
        // A keyframe of an extra video track does not restart the GOP.
        c.push(pkt(MediaKind::Video, 40, b"\x96\x11avc1\x01\x00\x00\x00"));
        assert_eq!(c.gop_len(), 4);
        // At most TRACK_SLOTS extra configurations are kept.
        for track in 2..40u8 {
            c.push(pkt(
                MediaKind::Audio,
                50,
                &[0x95, 0x00, b'm', b'p', b'4', b'a', track],
            ));
        }
        assert_eq!(
            c.frames().filter(|p| p.class.is_config()).count(),
            2 + TRACK_SLOTS
        );
    }
}
