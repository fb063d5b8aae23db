//! The vocabulary every media module shares: what a message carries ([`MediaKind`]) and
//! the one limit on its size ([`MAX_PAYLOAD`], [`PackageError`]).
//!
//! It sits below the codecs (FLV tags, RTMP play packaging) and the packaging built on
//! them, so each of those imports it and none of them imports another for it.

use std::fmt;

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

/// The largest payload a 24-bit length field can carry.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_match_rtmp_and_flv() {
        for k in [MediaKind::Audio, MediaKind::Video, MediaKind::Data] {
            assert_eq!(MediaKind::from_type_id(k.type_id()), Some(k));
        }
        assert_eq!(MediaKind::from_type_id(20), None);
    }
}
