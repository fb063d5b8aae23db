//! What a media message is, read once from its first bytes.
//!
//! Every consumer of a message wants to know the same few things: is it a keyframe (where a
//! joining or skipping viewer may start), a sequence header (decoder configuration a
//! viewer needs first, and a TS muxer keeps), the stream's metadata or an Enhanced RTMP
//! video metadata packet (HDR `colorInfo`), and which codec it is in (the TS muxer
//! carries only H.264 and AAC; FLV and RTMP carry every codec as it came). [`Class::of`] reads the FLV audio/video
//! tag header once, where the publisher's shard packages the message
//! ([`super::Packaged::new`]); the GOP cache, its mirrors on other shards, the viewers'
//! skip policy and the HLS segmenter then read the result instead of parsing the payload
//! again. It is a few bytes, `Copy`, and travels inside the shared `Packaged`.

use super::flv::{AudioPacket, AudioTag, VideoPacket, VideoTag};
use super::kind::MediaKind;

/// A message's kind and what its first bytes say. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A video message, its tag header read (codec, frame type, packet type).
    Video(VideoTag),
    /// An audio message, its tag header read (codec, packet type).
    Audio(AudioTag),
    /// `onMetaData`: the stream's description, which a joining viewer is sent first. Only
    /// the ingest session can tell it from other data (it strips `@setDataFrame`), so it
    /// is set by whoever packages it ([`super::Packaged::new_metadata`]).
    Metadata,
    /// Another data message (a cue point, …).
    Data,
    /// An audio or video message too short for its tag header (empty, or cut inside it):
    /// nothing a viewer or muxer could use.
    Unreadable,
}

impl Class {
    /// Reads `payload`'s tag header. Data messages are [`Class::Data`]; see
    /// [`Class::Metadata`] for metadata.
    pub fn of(kind: MediaKind, payload: &[u8]) -> Class {
        match kind {
            MediaKind::Video => VideoTag::parse(payload).map_or(Class::Unreadable, Class::Video),
            MediaKind::Audio => AudioTag::parse(payload).map_or(Class::Unreadable, Class::Audio),
            MediaKind::Data => Class::Data,
        }
    }

    /// A video picture a decoder can start from (not a sequence header or command frame).
    pub fn is_keyframe(&self) -> bool {
        matches!(self, Class::Video(t) if t.is_keyframe())
    }

    /// Decoder configuration of either track (AVC/HEVC record, AAC AudioSpecificConfig,
    /// an Enhanced RTMP SequenceStart).
    pub fn is_sequence_header(&self) -> bool {
        match self {
            Class::Video(t) => t.is_sequence_header(),
            Class::Audio(t) => t.is_sequence_header(),
            _ => false,
        }
    }

    /// Enhanced RTMP video metadata (`colorInfo`): it describes the pictures after it,
    /// so a joining viewer gets the latest one before the sequence header.
    pub fn is_video_metadata(&self) -> bool {
        matches!(self, Class::Video(t) if t.packet == VideoPacket::Metadata)
    }

    /// Configuration beside the pictures and samples: a sequence header, Enhanced RTMP
    /// video metadata, an Enhanced RTMP audio MultichannelConfig.
    pub fn is_config(&self) -> bool {
        self.is_sequence_header()
            || self.is_video_metadata()
            || matches!(self, Class::Audio(t) if t.packet == AudioPacket::MultichannelConfig)
    }

    /// An audio or video message that is not configuration ([`Self::is_config`]): a
    /// frame on the stream's timeline.
    pub fn is_frame(&self) -> bool {
        matches!(self, Class::Video(_) | Class::Audio(_)) && !self.is_config()
    }

    pub fn is_metadata(&self) -> bool {
        *self == Class::Metadata
    }

    /// Metadata or configuration: what a viewer cannot decode (or show right) without,
    /// so it is never skipped for a slow viewer.
    pub fn is_essential(&self) -> bool {
        self.is_metadata() || self.is_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{AudioCodec, FrameType, VideoCodec};

    #[test]
    fn a_keyframe_is_a_keyframe_and_nothing_else() {
        let c = Class::of(MediaKind::Video, &[0x17, 1, 0, 0, 0, 0x65]);
        assert!(c.is_keyframe());
        assert!(!c.is_sequence_header());
        assert!(!c.is_essential());
        let Class::Video(t) = c else { panic!("{c:?}") };
        assert_eq!(t.codec, VideoCodec::Avc);
        assert_eq!(t.packet, VideoPacket::Frame);
    }

    #[test]
    fn an_inter_frame_is_neither_key_nor_essential() {
        let c = Class::of(MediaKind::Video, &[0x27, 1, 0, 0, 0, 0x41]);
        assert!(!c.is_keyframe());
        assert!(!c.is_essential());
        assert!(matches!(c, Class::Video(t) if t.frame_type == FrameType::Inter));
    }

    #[test]
    fn sequence_headers_are_essential_not_keyframes() {
        // AVC: keyframe nibble, AVCPacketType 0.
        let avc = Class::of(MediaKind::Video, &[0x17, 0, 0, 0, 0, 1, 0x64]);
        assert!(avc.is_sequence_header());
        assert!(avc.is_essential());
        assert!(!avc.is_keyframe(), "decoder configuration is not a picture");
        assert!(matches!(avc, Class::Video(t) if t.is_avc_sequence_header()));
        // AAC: SoundFormat 10, AACPacketType 0.
        let aac = Class::of(MediaKind::Audio, &[0xAF, 0, 0x12, 0x10]);
        assert!(aac.is_sequence_header());
        assert!(aac.is_essential());
        assert!(!aac.is_keyframe());
        assert!(matches!(aac, Class::Audio(t) if t.is_aac_sequence_header()));
        // A raw AAC frame is neither.
        let raw = Class::of(MediaKind::Audio, &[0xAF, 1, 0x21]);
        assert!(!raw.is_essential());
        assert!(matches!(raw, Class::Audio(t)
            if t.codec == AudioCodec::Aac && t.packet == AudioPacket::Raw));
    }

    #[test]
    fn metadata_is_essential_other_data_is_not() {
        assert!(Class::Metadata.is_metadata());
        assert!(Class::Metadata.is_essential());
        assert!(!Class::Metadata.is_keyframe());
        let cue = Class::of(MediaKind::Data, b"\x02\x00\x0aonMetaData");
        assert_eq!(cue, Class::Data, "only the session knows what is metadata");
        assert!(!cue.is_essential());
    }

    #[test]
    fn enhanced_rtmp_keyframes_headers_and_video_metadata_per_codec() {
        // What ffmpeg 9 sends for each codec (first bytes): SequenceStart, the `colorInfo`
        // metadata packet (frame type "command"), a CodedFrames keyframe, an inter frame.
        for (cc, codec) in [
            (*b"hvc1", VideoCodec::Hevc),
            (*b"av01", VideoCodec::Av1),
            (*b"vp09", VideoCodec::Vp9),
        ] {
            let with = |b0: u8, rest: &[u8]| {
                let mut v = vec![b0];
                v.extend(cc);
                v.extend(rest);
                Class::of(MediaKind::Video, &v)
            };
            let seq = with(0x90, &[0x01, 0x01]);
            assert!(seq.is_sequence_header() && seq.is_essential() && !seq.is_frame());
            assert!(!seq.is_keyframe());
            let meta = with(0xD4, b"\x02\x00\x09colorInfo");
            assert!(meta.is_video_metadata() && meta.is_essential(), "{cc:?}");
            assert!(
                !meta.is_frame(),
                "video metadata does not move the stream clock"
            );
            assert!(!meta.is_keyframe() && !meta.is_sequence_header());
            let key = with(0x91, &[0, 0, 0, 0x12]);
            assert!(key.is_keyframe() && key.is_frame() && !key.is_essential());
            assert!(matches!(key, Class::Video(t) if t.codec == codec));
            // CodedFramesX (no composition time) is a picture too.
            assert!(with(0x93, &[0x12]).is_keyframe());
            let inter = with(0xA1, &[0, 0, 0, 0x12]);
            assert!(inter.is_frame() && !inter.is_keyframe() && !inter.is_essential());
        }
    }

    #[test]
    fn a_multichannel_config_is_configuration_not_a_frame() {
        let c = Class::of(MediaKind::Audio, b"\x95\x04mp4a\x01\x01\x01\x00");
        assert!(c.is_config() && c.is_essential() && !c.is_frame());
        let c = Class::of(MediaKind::Audio, b"\x94Opus\x00\x02");
        assert!(c.is_config() && !c.is_frame());
    }

    #[test]
    fn short_payloads_are_unreadable() {
        assert_eq!(Class::of(MediaKind::Video, &[]), Class::Unreadable);
        assert_eq!(Class::of(MediaKind::Video, &[0x17]), Class::Unreadable);
        assert_eq!(Class::of(MediaKind::Audio, &[0xAF]), Class::Unreadable);
        assert!(!Class::Unreadable.is_essential());
        assert!(!Class::Unreadable.is_keyframe());
    }
}
