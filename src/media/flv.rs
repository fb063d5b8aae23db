//! FLV: the file header, tag encoding and reading, and what the first bytes of an audio or
//! video payload say (codec, keyframe, sequence header). Sans-IO.
//!
//! HTTP-FLV is an FLV file that never ends: [`header`] once, then one tag per media message.
//! [`encode_tag`] builds a whole tag (header, payload, PreviousTagSize) as one `Bytes`, so a
//! tag is encoded once per stream and written to every viewer.
//!
//! RTMP audio/video payloads are FLV tag bodies, so [`VideoTag::parse`] and
//! [`AudioTag::parse`] serve both the ingest (GOP cache decisions) and playback. They read
//! legacy FLV (codec id in the low nibble: H.264 = 7, and 12 = H.265 as Chinese CDNs carry
//! it) and Enhanced RTMP (the `IsExHeader` bit and a FourCC such as `hvc1`), so HEVC can be
//! recognised and passed through.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::kind::{MediaKind, PackageError, MAX_PAYLOAD};

/// Length of an FLV tag header.
pub const TAG_HEADER_LEN: usize = 11;
/// Length of the PreviousTagSize field after each tag.
pub const PREVIOUS_TAG_SIZE_LEN: usize = 4;

/// The 9-byte FLV file header plus PreviousTagSize0, announcing which tracks follow.
pub fn header(has_audio: bool, has_video: bool) -> Bytes {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    Bytes::from(vec![b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// One whole FLV tag (tag header, payload, PreviousTagSize) in a single buffer.
pub fn encode_tag(kind: MediaKind, timestamp: u32, payload: &[u8]) -> Result<Bytes, PackageError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PackageError::TooLarge(payload.len()));
    }
    let total = TAG_HEADER_LEN + payload.len();
    let mut out = BytesMut::with_capacity(total + PREVIOUS_TAG_SIZE_LEN);
    out.put_u8(kind.type_id());
    put_u24(&mut out, payload.len() as u32);
    // FLV splits the 32-bit timestamp: low 24 bits, then the high 8 bits.
    put_u24(&mut out, timestamp & 0xFF_FFFF);
    out.put_u8((timestamp >> 24) as u8);
    put_u24(&mut out, 0); // stream id, always 0
    out.put_slice(payload);
    out.put_u32(total as u32);
    Ok(out.freeze())
}

/// The name of the script tag that tells an HTTP-FLV player the stream time of its first
/// frame: `onStreamTime {start: ms}` (`docs/media.md`, "Media time").
pub const STREAM_TIME: &str = "onStreamTime";

/// The `onStreamTime` script tag, at timestamp `start_ms`: the stream time of the first
/// audio or video tag that follows it. A player that counts its time from its first frame
/// (mpegts.js, flv.js) shows stream time `start + currentTime`.
pub fn stream_time_tag(start_ms: u32) -> Bytes {
    let body = super::amf0::encode_all(&[
        super::amf0::Amf0Value::string(STREAM_TIME),
        super::amf0::Amf0Value::object([(
            "start",
            super::amf0::Amf0Value::Number(f64::from(start_ms)),
        )]),
    ]);
    // A few dozen bytes: far under the payload bound.
    encode_tag(MediaKind::Data, start_ms, &body).unwrap_or_default()
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.put_slice(&v.to_be_bytes()[1..]);
}

/// A tag read back from FLV bytes (tests, aggregate messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlvTag {
    /// The tag type byte (8 audio, 9 video, 18 data; others passed through as read).
    pub tag_type: u8,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Why FLV bytes or a payload could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlvError {
    /// The payload or tag ends before the fields being read.
    Truncated,
    /// A PreviousTagSize that does not match the tag before it, or the filter/encryption bit.
    Malformed(&'static str),
}

impl fmt::Display for FlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlvError::Truncated => f.write_str("FLV data truncated"),
            FlvError::Malformed(why) => write!(f, "malformed FLV: {why}"),
        }
    }
}

impl std::error::Error for FlvError {}

/// Reads one tag and its PreviousTagSize from the front of `input`. `Ok(None)` means more
/// bytes are needed; the payload is a zero-copy slice of `input`.
pub fn read_tag(input: &Bytes) -> Result<Option<(FlvTag, usize)>, FlvError> {
    if input.len() < TAG_HEADER_LEN {
        return Ok(None);
    }
    let h = &input[..TAG_HEADER_LEN];
    if h[0] & 0x20 != 0 {
        return Err(FlvError::Malformed("filtered (encrypted) tag"));
    }
    let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
    let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
    let end = TAG_HEADER_LEN + size;
    let used = end + PREVIOUS_TAG_SIZE_LEN;
    if input.len() < used {
        return Ok(None);
    }
    let prev = &input[end..used];
    if u32::from_be_bytes([prev[0], prev[1], prev[2], prev[3]]) as usize != end {
        return Err(FlvError::Malformed(
            "PreviousTagSize does not match the tag",
        ));
    }
    let tag = FlvTag {
        tag_type: h[0] & 0x1F,
        timestamp,
        payload: input.slice(TAG_HEADER_LEN..end),
    };
    Ok(Some((tag, used)))
}

/// The frame type of a video payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Key,
    Inter,
    DisposableInter,
    GeneratedKey,
    /// Video info / command frame: no picture.
    Command,
    Reserved(u8),
}

impl FrameType {
    fn from_bits(v: u8) -> FrameType {
        match v {
            1 => FrameType::Key,
            2 => FrameType::Inter,
            3 => FrameType::DisposableInter,
            4 => FrameType::GeneratedKey,
            5 => FrameType::Command,
            other => FrameType::Reserved(other),
        }
    }
}

/// The video codec a payload declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (legacy codec id 7, or Enhanced RTMP `avc1`).
    Avc,
    /// H.265 (Enhanced RTMP `hvc1`, or the legacy id 12 some CDNs use).
    Hevc,
    /// Another legacy codec id (Sorenson, VP6, …).
    Legacy(u8),
    /// Another Enhanced RTMP FourCC (`av01`, `vp09`, …).
    FourCc([u8; 4]),
}

/// What a video payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoPacket {
    /// Decoder configuration (AVCDecoderConfigurationRecord, HEVC's, …).
    SequenceHeader,
    /// Coded pictures.
    Frame,
    EndOfSequence,
    /// An Enhanced RTMP packet type we pass through without interpreting (metadata,
    /// multitrack, …).
    Other(u8),
}

/// The first bytes of a video payload, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoTag {
    pub frame_type: FrameType,
    pub codec: VideoCodec,
    pub packet: VideoPacket,
    /// Enhanced RTMP (`IsExHeader`) form.
    pub enhanced: bool,
}

impl VideoTag {
    pub fn parse(payload: &[u8]) -> Result<VideoTag, FlvError> {
        let &b0 = payload.first().ok_or(FlvError::Truncated)?;
        if b0 & 0x80 != 0 {
            // Enhanced RTMP: 1 bit IsExHeader, 3 bits frame type, 4 bits packet type, FourCC.
            let frame_type = FrameType::from_bits((b0 >> 4) & 0x07);
            let packet = match b0 & 0x0F {
                0 | 5 => VideoPacket::SequenceHeader, // SequenceStart, MPEG2TSSequenceStart
                1 | 3 => VideoPacket::Frame,          // CodedFrames, CodedFramesX
                2 => VideoPacket::EndOfSequence,
                other => VideoPacket::Other(other),
            };
            let cc = payload.get(1..5).ok_or(FlvError::Truncated)?;
            let fourcc = [cc[0], cc[1], cc[2], cc[3]];
            let codec = match &fourcc {
                b"hvc1" => VideoCodec::Hevc,
                b"avc1" => VideoCodec::Avc,
                _ => VideoCodec::FourCc(fourcc),
            };
            return Ok(VideoTag {
                frame_type,
                codec,
                packet,
                enhanced: true,
            });
        }
        let frame_type = FrameType::from_bits(b0 >> 4);
        let codec = match b0 & 0x0F {
            7 => VideoCodec::Avc,
            12 => VideoCodec::Hevc,
            other => VideoCodec::Legacy(other),
        };
        let packet = match codec {
            // AVC and legacy HEVC carry an AVCPacketType byte and a composition time.
            VideoCodec::Avc | VideoCodec::Hevc => {
                match payload.get(1).ok_or(FlvError::Truncated)? {
                    0 => VideoPacket::SequenceHeader,
                    1 => VideoPacket::Frame,
                    2 => VideoPacket::EndOfSequence,
                    &other => VideoPacket::Other(other),
                }
            }
            _ => VideoPacket::Frame,
        };
        Ok(VideoTag {
            frame_type,
            codec,
            packet,
            enhanced: false,
        })
    }

    /// A picture a decoder can start from (not a sequence header, not a command frame).
    pub fn is_keyframe(&self) -> bool {
        self.frame_type == FrameType::Key && self.packet == VideoPacket::Frame
    }

    pub fn is_sequence_header(&self) -> bool {
        self.packet == VideoPacket::SequenceHeader
    }

    /// Legacy AVC with an AVC sequence header (what H.264 players need first).
    pub fn is_avc_sequence_header(&self) -> bool {
        self.codec == VideoCodec::Avc && self.is_sequence_header()
    }
}

/// The audio codec a payload declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    /// SoundFormat 10.
    Aac,
    /// Another legacy SoundFormat (MP3 = 2, …).
    Legacy(u8),
    /// Enhanced RTMP audio (SoundFormat 9, `IsExHeader`) with its FourCC.
    FourCc([u8; 4]),
}

/// What an audio payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioPacket {
    /// AudioSpecificConfig (AAC) or an Enhanced RTMP SequenceStart.
    SequenceHeader,
    Raw,
    Other(u8),
}

/// The first bytes of an audio payload, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioTag {
    pub codec: AudioCodec,
    pub packet: AudioPacket,
}

impl AudioTag {
    pub fn parse(payload: &[u8]) -> Result<AudioTag, FlvError> {
        let &b0 = payload.first().ok_or(FlvError::Truncated)?;
        let format = b0 >> 4;
        match format {
            10 => {
                let packet = match payload.get(1).ok_or(FlvError::Truncated)? {
                    0 => AudioPacket::SequenceHeader,
                    1 => AudioPacket::Raw,
                    &other => AudioPacket::Other(other),
                };
                Ok(AudioTag {
                    codec: AudioCodec::Aac,
                    packet,
                })
            }
            9 => {
                // Enhanced RTMP audio: low nibble is the packet type, then a FourCC.
                let cc = payload.get(1..5).ok_or(FlvError::Truncated)?;
                let packet = match b0 & 0x0F {
                    0 => AudioPacket::SequenceHeader,
                    1 => AudioPacket::Raw,
                    other => AudioPacket::Other(other),
                };
                Ok(AudioTag {
                    codec: AudioCodec::FourCc([cc[0], cc[1], cc[2], cc[3]]),
                    packet,
                })
            }
            other => Ok(AudioTag {
                codec: AudioCodec::Legacy(other),
                packet: AudioPacket::Raw,
            }),
        }
    }

    pub fn is_sequence_header(&self) -> bool {
        self.packet == AudioPacket::SequenceHeader
    }

    pub fn is_aac_sequence_header(&self) -> bool {
        self.codec == AudioCodec::Aac && self.is_sequence_header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_header_flags() {
        let h = header(true, true);
        assert_eq!(&h[..], b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
        assert_eq!(header(false, true)[4], 1);
        assert_eq!(header(true, false)[4], 4);
    }

    #[test]
    fn tag_layout_and_extended_timestamp() {
        let tag = encode_tag(MediaKind::Audio, 0x0123_4567, &[0xAF, 1, 2]).unwrap();
        assert_eq!(
            &tag[..],
            &[
                8, 0, 0, 3, // type, size
                0x23, 0x45, 0x67, 0x01, // timestamp low 24, then high 8
                0, 0, 0, // stream id
                0xAF, 1, 2, // payload
                0, 0, 0, 14, // PreviousTagSize = 11 + 3
            ]
        );
        let (back, used) = read_tag(&tag).unwrap().unwrap();
        assert_eq!(used, tag.len());
        assert_eq!(back.timestamp, 0x0123_4567);
        assert_eq!(back.tag_type, 8);
        assert_eq!(&back.payload[..], &[0xAF, 1, 2]);
    }

    #[test]
    fn reading_a_partial_tag_asks_for_more() {
        let tag = encode_tag(MediaKind::Video, 0, &[0x17, 1, 0, 0, 0]).unwrap();
        for cut in 0..tag.len() {
            assert_eq!(read_tag(&tag.slice(..cut)), Ok(None));
        }
        let mut bad = tag.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(read_tag(&Bytes::from(bad)).is_err());
    }

    #[test]
    fn oversized_payload_is_refused() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            encode_tag(MediaKind::Video, 0, &big),
            Err(PackageError::TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn h264_keyframe_and_sequence_header() {
        let seq = VideoTag::parse(&[0x17, 0, 0, 0, 0, 1, 0x64]).unwrap();
        assert!(seq.is_avc_sequence_header());
        assert!(!seq.is_keyframe());
        let key = VideoTag::parse(&[0x17, 1, 0, 0, 0x28]).unwrap();
        assert!(key.is_keyframe());
        assert_eq!(key.codec, VideoCodec::Avc);
        let inter = VideoTag::parse(&[0x27, 1, 0, 0, 0]).unwrap();
        assert!(!inter.is_keyframe());
        assert_eq!(inter.frame_type, FrameType::Inter);
        assert_eq!(VideoTag::parse(&[0x17]), Err(FlvError::Truncated));
        assert_eq!(VideoTag::parse(&[]), Err(FlvError::Truncated));
    }

    #[test]
    fn enhanced_rtmp_hevc_is_recognised() {
        // IsExHeader | keyframe (1 << 4) | SequenceStart, then 'hvc1'.
        let seq = VideoTag::parse(&[0x90, b'h', b'v', b'c', b'1', 1]).unwrap();
        assert!(seq.enhanced);
        assert_eq!(seq.codec, VideoCodec::Hevc);
        assert!(seq.is_sequence_header());
        assert!(!seq.is_avc_sequence_header());
        let key = VideoTag::parse(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 0]).unwrap();
        assert!(key.is_keyframe());
        let keyx = VideoTag::parse(&[0x93, b'h', b'v', b'c', b'1']).unwrap();
        assert!(keyx.is_keyframe());
        let av1 = VideoTag::parse(&[0xA1, b'a', b'v', b'0', b'1']).unwrap();
        assert_eq!(av1.codec, VideoCodec::FourCc(*b"av01"));
        assert_eq!(av1.frame_type, FrameType::Inter);
        assert_eq!(VideoTag::parse(&[0x90, b'h']), Err(FlvError::Truncated));
    }

    #[test]
    fn legacy_hevc_codec_id_12() {
        let key = VideoTag::parse(&[0x1C, 1, 0, 0, 0]).unwrap();
        assert_eq!(key.codec, VideoCodec::Hevc);
        assert!(key.is_keyframe());
    }

    #[test]
    fn aac_sequence_header_and_raw() {
        let seq = AudioTag::parse(&[0xAF, 0, 0x12, 0x10]).unwrap();
        assert!(seq.is_aac_sequence_header());
        let raw = AudioTag::parse(&[0xAF, 1, 0x21]).unwrap();
        assert_eq!(raw.packet, AudioPacket::Raw);
        assert_eq!(raw.codec, AudioCodec::Aac);
        let mp3 = AudioTag::parse(&[0x2F, 0xFF]).unwrap();
        assert_eq!(mp3.codec, AudioCodec::Legacy(2));
        assert_eq!(AudioTag::parse(&[0xAF]), Err(FlvError::Truncated));
        let opus = AudioTag::parse(&[0x90, b'O', b'p', b'u', b's']).unwrap();
        assert_eq!(opus.codec, AudioCodec::FourCc(*b"Opus"));
        assert!(opus.is_sequence_header());
    }
}
