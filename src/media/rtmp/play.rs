//! One-encode RTMP packaging for playback.
//!
//! Every play session on every shard is set up the same way: the server announces
//! [`CHUNK_SIZE`] right after `connect`, the stream is always message stream [`STREAM_ID`],
//! and audio, video and data travel on fixed chunk streams. With that fixed, a media message
//! has exactly one RTMP encoding, which [`package`] produces once per stream; the same
//! `Bytes` is then written to every RTMP viewer. Each message starts with a full (fmt 0)
//! header with its absolute timestamp, so the bytes do not depend on what a viewer received
//! before: a viewer that joins from the GOP cache, or that skipped frames while slow, still
//! decodes them. The cost is 11 header bytes per message over the compressed forms.
//!
//! The session ([`super::session`]) writes its own control and command messages with the
//! same chunk size on other chunk streams (2 and 3), so they never disturb these.

use bytes::{Bytes, BytesMut};

use super::chunk::encode_message;
use crate::media::kind::{MediaKind, PackageError, MAX_PAYLOAD};

/// Outbound chunk size of every connection (announced by the session after `connect`).
/// 4096 is what ffmpeg and OBS use; large enough that most audio frames are one chunk.
pub const CHUNK_SIZE: u32 = 4096;
/// The message stream id `createStream` hands out; media for a player is sent on it.
pub const STREAM_ID: u32 = 1;
/// Chunk streams for packaged media (the same numbers ffmpeg uses).
pub const CSID_AUDIO: u32 = 4;
pub const CSID_DATA: u32 = 5;
pub const CSID_VIDEO: u32 = 6;

/// The finished RTMP chunks of one media message for the fixed play configuration.
pub fn package(kind: MediaKind, timestamp: u32, payload: &[u8]) -> Result<Bytes, PackageError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PackageError::TooLarge(payload.len()));
    }
    let csid = match kind {
        MediaKind::Audio => CSID_AUDIO,
        MediaKind::Video => CSID_VIDEO,
        MediaKind::Data => CSID_DATA,
    };
    let mut out = BytesMut::new();
    encode_message(
        &mut out,
        csid,
        kind.type_id(),
        STREAM_ID,
        timestamp,
        payload,
        CHUNK_SIZE,
    );
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtmp::chunk::{ChunkDecoder, ChunkLimits};

    #[test]
    fn packaged_bytes_decode_for_any_viewer_at_any_point() {
        let payloads: Vec<Vec<u8>> = vec![vec![0xAF, 1, 5], vec![0x17; 10_000], vec![0x27; 5000]];
        let packaged: Vec<Bytes> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let kind = if i == 0 {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                package(kind, 1000 + i as u32 * 40, p).unwrap()
            })
            .collect();
        // A viewer that joins at the second message (its decoder has seen nothing before).
        for start in 0..packaged.len() {
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            let mut set = BytesMut::new();
            encode_message(&mut set, 2, 1, 0, 0, &CHUNK_SIZE.to_be_bytes(), 128);
            let (_, m) = dec.decode(&set).unwrap();
            assert_eq!(m.unwrap().type_id, 1);
            for (i, bytes) in packaged.iter().enumerate().skip(start) {
                let (used, msg) = dec.decode(bytes).unwrap();
                assert_eq!(used, bytes.len());
                let msg = msg.unwrap();
                assert_eq!(&msg.payload[..], &payloads[i][..]);
                assert_eq!(msg.timestamp, 1000 + i as u32 * 40);
                assert_eq!(msg.stream_id, STREAM_ID);
            }
        }
    }

    #[test]
    fn large_timestamps_use_the_extended_field() {
        let b = package(MediaKind::Video, 0x0100_0000, &[0x17; 5000]).unwrap();
        // fmt 0 header (12) + extended (4) + 4096, then fmt 3 (1) + extended (4) + rest.
        assert_eq!(b.len(), 12 + 4 + 5000 + 1 + 4);
    }
}
