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

use std::fmt;

use bytes::Bytes;

use super::flv;
use super::rtmp::play;

/// What a media message carries. The values are the RTMP message type ids, which are also
/// the FLV tag types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    /// An AMF0 data message (`onMetaData`, cue points).
    Data,
}

impl MediaKind {
    /// RTMP message type id and FLV tag type (8, 9, 18).
    pub fn type_id(self) -> u8 {
        match self {
            MediaKind::Audio => 8,
            MediaKind::Video => 9,
            MediaKind::Data => 18,
        }
    }

    pub fn from_type_id(id: u8) -> Option<MediaKind> {
        Some(match id {
            8 => MediaKind::Audio,
            9 => MediaKind::Video,
            18 => MediaKind::Data,
            _ => return None,
        })
    }
}

/// One audio, video or data message of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaMessage {
    pub kind: MediaKind,
    /// Absolute timestamp in milliseconds (RTMP's 32-bit clock, wrapping after ~49 days).
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Why a message cannot be packaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// The payload is longer than the 24-bit length field of FLV tags and RTMP message
    /// headers (16 MiB - 1). Ingest never produces one (its messages come through the same
    /// 24-bit field); this guards other producers.
    TooLarge(usize),
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageError::TooLarge(n) => write!(f, "media payload of {n} bytes exceeds 16 MiB"),
        }
    }
}

impl std::error::Error for PackageError {}

/// The largest payload a 24-bit length field can carry.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// One media message, packaged once per playback protocol. Cloning is three reference-count
/// increments; the bytes are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packaged {
    pub kind: MediaKind,
    pub timestamp: u32,
    /// FLV tag: 11-byte tag header, payload, 4-byte PreviousTagSize.
    pub flv: Bytes,
    /// RTMP chunks for [`play`]'s fixed configuration (chunk size, stream and chunk stream ids).
    pub rtmp: Bytes,
}

impl Packaged {
    /// Packages `msg` for every playback protocol. This is the only place a media payload is
    /// copied after reassembly, once per protocol.
    pub fn new(msg: &MediaMessage) -> Result<Packaged, PackageError> {
        Ok(Packaged {
            kind: msg.kind,
            timestamp: msg.timestamp,
            flv: flv::encode_tag(msg.kind, msg.timestamp, &msg.payload)?,
            rtmp: play::package(msg.kind, msg.timestamp, &msg.payload)?,
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

    #[test]
    fn type_ids_match_rtmp_and_flv() {
        for k in [MediaKind::Audio, MediaKind::Video, MediaKind::Data] {
            assert_eq!(MediaKind::from_type_id(k.type_id()), Some(k));
        }
        assert_eq!(MediaKind::from_type_id(20), None);
    }
}
