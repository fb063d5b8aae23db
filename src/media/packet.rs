//! Media messages as they come off the ingest, and their one-encode packaging.
//!
//! A [`MediaMessage`] is one audio, video or data message from a publisher: a kind, an
//! absolute timestamp in milliseconds and the payload (`Bytes`, a slice of what the chunk
//! decoder reassembled). [`Packaged`] turns it, once, into the finished bytes each playback
//! protocol writes: an FLV tag (HTTP-FLV) and RTMP chunks for the fixed play configuration
//! ([`crate::media::rtmp::play`]). Those `Bytes` are then shared by every viewer of the
//! stream, on every shard, and by the GOP cache; nothing is encoded per viewer.
//!
//! The raw payload is not kept beside the packaged forms: the FLV tag carries it contiguous,
//! so [`Packaged::payload`] is a zero-copy slice of it (memory for a cached tag is the two
//! packaged forms, about twice the payload).
//!
//! Packaging also classifies the message once ([`Class`]: keyframe, sequence header,
//! metadata, codec); the GOP cache, the viewers' skip policy and the HLS segmenter read
//! `Packaged::class` rather than the payload.

use bytes::Bytes;

use super::class::Class;
use super::flv;
use super::kind::{MediaKind, PackageError};
use super::rtmp::play;

/// One audio, video or data message of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaMessage {
    pub kind: MediaKind,
    /// Absolute timestamp in milliseconds (RTMP's 32-bit clock, wrapping after ~49 days).
    pub timestamp: u32,
    pub payload: Bytes,
}

/// One media message, packaged once per playback protocol and classified once. Cloning is
/// two reference-count increments; the bytes are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packaged {
    pub kind: MediaKind,
    pub timestamp: u32,
    /// What the message is (keyframe, sequence header, metadata, codec), read once here
    /// so that no one downstream parses the payload again.
    pub class: Class,
    /// FLV tag: 11-byte tag header, payload, 4-byte PreviousTagSize.
    pub flv: Bytes,
    /// RTMP chunks for [`play`]'s fixed configuration (chunk size, stream and chunk stream ids).
    pub rtmp: Bytes,
}

impl Packaged {
    /// Packages `msg` for every playback protocol. This is the only place a media payload is
    /// copied after reassembly, once per protocol.
    pub fn new(msg: &MediaMessage) -> Result<Packaged, PackageError> {
        Self::with_class(msg, Class::of(msg.kind, &msg.payload))
    }

    /// Packages the stream's `onMetaData` (a data message the session recognised as such;
    /// anything else is classified as [`Packaged::new`] would).
    pub fn new_metadata(msg: &MediaMessage) -> Result<Packaged, PackageError> {
        let class = match msg.kind {
            MediaKind::Data => Class::Metadata,
            kind => Class::of(kind, &msg.payload),
        };
        Self::with_class(msg, class)
    }

    /// Classifies `msg` once (as [`Packaged::new_metadata`] when `metadata`, else as
    /// [`Packaged::new`]), then packages it at the timestamp `stamp` gives for that class
    /// and the message's own timestamp (the stream clock, [`super::timeline`]).
    pub fn stamped(
        msg: &MediaMessage,
        metadata: bool,
        stamp: impl FnOnce(&Class, u32) -> u32,
    ) -> Result<Packaged, PackageError> {
        let class = match msg.kind {
            MediaKind::Data if metadata => Class::Metadata,
            kind => Class::of(kind, &msg.payload),
        };
        let timestamp = stamp(&class, msg.timestamp);
        Self::at(msg, class, timestamp)
    }

    fn with_class(msg: &MediaMessage, class: Class) -> Result<Packaged, PackageError> {
        Self::at(msg, class, msg.timestamp)
    }

    fn at(msg: &MediaMessage, class: Class, timestamp: u32) -> Result<Packaged, PackageError> {
        Ok(Packaged {
            kind: msg.kind,
            timestamp,
            class,
            flv: flv::encode_tag(msg.kind, timestamp, &msg.payload)?,
            rtmp: play::package(msg.kind, timestamp, &msg.payload)?,
        })
    }

    /// The original payload, sliced out of the FLV tag (no copy).
    pub fn payload(&self) -> Bytes {
        self.flv
            .slice(flv::TAG_HEADER_LEN..self.flv.len() - flv::PREVIOUS_TAG_SIZE_LEN)
    }

    /// Bytes held by this packaged message (both forms), for cache accounting.
    pub fn held_bytes(&self) -> usize {
        self.flv.len() + self.rtmp.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaging_keeps_the_payload_recoverable() {
        let msg = MediaMessage {
            kind: MediaKind::Video,
            timestamp: 40,
            payload: Bytes::from(vec![0x17, 1, 0, 0, 0, 9, 9, 9]),
        };
        let p = Packaged::new(&msg).unwrap();
        assert_eq!(p.payload(), msg.payload);
        assert_eq!(p.kind, MediaKind::Video);
        assert!(p.held_bytes() > 2 * msg.payload.len());
    }

    fn package(kind: MediaKind, payload: &[u8]) -> Packaged {
        Packaged::new(&MediaMessage {
            kind,
            timestamp: 0,
            payload: Bytes::copy_from_slice(payload),
        })
        .unwrap()
    }

    #[test]
    fn packaging_classifies_keyframes_inter_frames_and_sequence_headers() {
        let key = package(MediaKind::Video, &[0x17, 1, 0, 0, 0, 0x65]);
        assert!(key.class.is_keyframe());
        assert!(!key.class.is_essential());
        let inter = package(MediaKind::Video, &[0x27, 1, 0, 0, 0, 0x41]);
        assert!(!inter.class.is_keyframe());
        assert!(!inter.class.is_essential());
        let avc = package(MediaKind::Video, &[0x17, 0, 0, 0, 0, 1, 0x64]);
        assert!(avc.class.is_sequence_header());
        assert!(!avc.class.is_keyframe());
        let aac = package(MediaKind::Audio, &[0xAF, 0, 0x12, 0x10]);
        assert!(aac.class.is_sequence_header());
        assert!(matches!(aac.class, Class::Audio(t) if t.is_aac_sequence_header()));
        assert_eq!(package(MediaKind::Video, &[]).class, Class::Unreadable);
    }

    #[test]
    fn metadata_is_marked_only_when_packaged_as_metadata() {
        let msg = MediaMessage {
            kind: MediaKind::Data,
            timestamp: 0,
            payload: Bytes::from_static(b"\x02\x00\x0aonMetaData"),
        };
        let meta = Packaged::new_metadata(&msg).unwrap();
        assert!(meta.class.is_metadata());
        assert!(meta.class.is_essential());
        assert_eq!(
            meta.flv,
            Packaged::new(&msg).unwrap().flv,
            "same bytes either way"
        );
        assert_eq!(Packaged::new(&msg).unwrap().class, Class::Data);
        // Metadata packaging of a video message still reads its tag.
        let video = MediaMessage {
            kind: MediaKind::Video,
            timestamp: 0,
            payload: Bytes::from_static(&[0x17, 1, 0, 0, 0]),
        };
        assert!(Packaged::new_metadata(&video).unwrap().class.is_keyframe());
    }
}
