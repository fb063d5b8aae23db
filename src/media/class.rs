//! What a media message is, read once from its first bytes.
//!
//! Every consumer of a message wants to know the same few things: is it a keyframe (where a
//! joining or skipping viewer may start), a sequence header (decoder configuration a
//! viewer needs first, and a TS muxer keeps), the stream's metadata, and which codec it is
//! in (the TS muxer carries only H.264 and AAC). [`Class::of`] reads the FLV audio/video
//! tag header once, where the publisher's shard packages the message
//! ([`super::Packaged::new`]); the GOP cache, its mirrors on other shards, the viewers'
//! skip policy and the HLS segmenter then read the result instead of parsing the payload
//! again. It is a few bytes, `Copy`, and travels inside the shared `Packaged`.

use super::flv::{AudioTag, VideoTag};
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

    /// An audio or video message that is not decoder configuration: a frame on the
    /// stream's timeline.
    pub fn is_frame(&self) -> bool {
        matches!(self, Class::Video(_) | Class::Audio(_)) && !self.is_sequence_header()
    }

    pub fn is_metadata(&self) -> bool {
        *self == Class::Metadata
    }

    /// Metadata or a sequence header: what a viewer cannot decode the stream without, so
    /// it is never skipped for a slow viewer.
    pub fn is_essential(&self) -> bool {
        self.is_metadata() || self.is_sequence_header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{AudioCodec, AudioPacket, FrameType, VideoCodec, VideoPacket};

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
    fn short_payloads_are_unreadable() {
        assert_eq!(Class::of(MediaKind::Video, &[]), Class::Unreadable);
        assert_eq!(Class::of(MediaKind::Video, &[0x17]), Class::Unreadable);
        assert_eq!(Class::of(MediaKind::Audio, &[0xAF]), Class::Unreadable);
        assert!(!Class::Unreadable.is_essential());
        assert!(!Class::Unreadable.is_keyframe());
    }
}
