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
//! it) and Enhanced RTMP (veovera E-RTMP v1 and v2: the `IsExHeader` bit, the packet type,
//! ModEx blocks, the multitrack byte, then a FourCC such as `hvc1`, `av01`, `vp09`), so
//! every codec's keyframes, sequence headers and video metadata are recognised and the
//! messages passed through as they came. Only these first bytes are read: a track's
//! payload is never interpreted here.

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
    /// AV1 (Enhanced RTMP `av01`).
    Av1,
    /// VP9 (Enhanced RTMP `vp09`).
    Vp9,
    /// Another legacy codec id (Sorenson, VP6, …).
    Legacy(u8),
    /// Another Enhanced RTMP FourCC (`vp08`, …).
    FourCc([u8; 4]),
    /// An Enhanced RTMP command frame, which names no codec.
    Unstated,
}

impl VideoCodec {
    fn from_fourcc(cc: [u8; 4]) -> VideoCodec {
        match &cc {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            _ => VideoCodec::FourCc(cc),
        }
    }

    /// The codec's name, for messages to players and operators.
    pub fn name(&self) -> String {
        match self {
            VideoCodec::Avc => "H.264".into(),
            VideoCodec::Hevc => "HEVC".into(),
            VideoCodec::Av1 => "AV1".into(),
            VideoCodec::Vp9 => "VP9".into(),
            VideoCodec::Legacy(id) => format!("FLV video codec {id}"),
            VideoCodec::FourCc(cc) => fourcc_name(cc),
            VideoCodec::Unstated => "unstated".into(),
        }
    }
}

/// A FourCC as text when it is printable ASCII, else in hex.
fn fourcc_name(cc: &[u8; 4]) -> String {
    if cc.iter().all(|b| b.is_ascii_graphic()) {
        cc.iter().map(|&b| char::from(b)).collect()
    } else {
        format!("0x{:08x}", u32::from_be_bytes(*cc))
    }
}

/// What a video payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoPacket {
    /// Decoder configuration (AVCDecoderConfigurationRecord, HEVC's, AV1's, …).
    SequenceHeader,
    /// Coded pictures (legacy, or Enhanced RTMP CodedFrames / CodedFramesX).
    Frame,
    EndOfSequence,
    /// Enhanced RTMP video metadata (AMF `colorInfo`: HDR description), which applies to
    /// the pictures that follow it until the next one.
    Metadata,
    /// An Enhanced RTMP packet type we pass through without interpreting.
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
    /// Enhanced RTMP multitrack: the id of the (first) track the message carries; the
    /// frame type and packet type apply to all of its tracks. `None`: the plain form,
    /// which publishers use for the default track (ffmpeg: track 0).
    pub track: Option<u8>,
}

/// Enhanced RTMP packet types: video's, then audio's where they differ (SequenceStart,
/// CodedFrames, SequenceEnd and ModEx are the same numbers for both).
mod ex {
    pub const SEQUENCE_START: u8 = 0;
    pub const CODED_FRAMES: u8 = 1;
    pub const SEQUENCE_END: u8 = 2;
    pub const CODED_FRAMES_X: u8 = 3;
    pub const METADATA: u8 = 4;
    pub const MPEG2TS_SEQUENCE_START: u8 = 5;
    pub const VIDEO_MULTITRACK: u8 = 6;
    pub const MOD_EX: u8 = 7;
    pub const AUDIO_MULTICHANNEL_CONFIG: u8 = 4;
    pub const AUDIO_MULTITRACK: u8 = 5;
}

/// Skips Enhanced RTMP ModEx blocks (v2): while the packet type is ModEx, a size (one
/// byte + 1, or when that is 256 two more bytes + 1), that many bytes of data, then a
/// byte whose low nibble is the next packet type. Returns the real packet type and the
/// offset after the blocks. Each block consumes at least two bytes, so the loop ends
/// within the payload.
fn skip_mod_ex(payload: &[u8], mut packet: u8, mut at: usize) -> Result<(u8, usize), FlvError> {
    while packet == ex::MOD_EX {
        let mut size = usize::from(*payload.get(at).ok_or(FlvError::Truncated)?) + 1;
        at += 1;
        if size == 256 {
            let b = payload.get(at..at + 2).ok_or(FlvError::Truncated)?;
            size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
            at += 2;
        }
        at += size;
        packet = payload.get(at).ok_or(FlvError::Truncated)? & 0x0F;
        at += 1;
    }
    Ok((packet, at))
}

/// The FourCC at `at`.
fn fourcc_at(payload: &[u8], at: usize) -> Result<[u8; 4], FlvError> {
    let cc = payload.get(at..at + 4).ok_or(FlvError::Truncated)?;
    Ok([cc[0], cc[1], cc[2], cc[3]])
}

/// After the packet type (and any ModEx blocks): a multitrack packet's type byte (its
/// multitrack type and the tracks' packet type) comes before the FourCC, and the first
/// track's id after it. Returns the packet type, the FourCC and the track id (`None` for
/// the plain form). In the "many codecs" form each track names its codec; the first
/// track's FourCC is where the others have theirs.
fn ex_fourcc(
    payload: &[u8],
    packet: u8,
    at: usize,
    multitrack_type: u8,
) -> Result<(u8, [u8; 4], Option<u8>), FlvError> {
    if packet != multitrack_type {
        return Ok((packet, fourcc_at(payload, at)?, None));
    }
    let b = *payload.get(at).ok_or(FlvError::Truncated)?;
    let inner = b & 0x0F;
    if inner == multitrack_type {
        return Err(FlvError::Malformed("multitrack inside multitrack"));
    }
    let track = *payload.get(at + 5).ok_or(FlvError::Truncated)?;
    Ok((inner, fourcc_at(payload, at + 1)?, Some(track)))
}

/// Where the codec data of a plain-form (not multitrack) Enhanced RTMP video payload
/// starts, and its composition time: after the header byte, any ModEx blocks and the
/// FourCC, and for CodedFrames of `avc1`/`hvc1` after their SI24 composition time
/// (CodedFramesX and the other packet types: 0). For the TS muxer, which reads the
/// codec data itself.
pub fn ex_video_data(payload: &[u8]) -> Result<(usize, i32), FlvError> {
    let &b0 = payload.first().ok_or(FlvError::Truncated)?;
    let (packet, at) = skip_mod_ex(payload, b0 & 0x0F, 1)?;
    if packet == ex::VIDEO_MULTITRACK {
        return Err(FlvError::Malformed("multitrack, not the plain form"));
    }
    let fourcc = fourcc_at(payload, at)?;
    let at = at + 4;
    if packet == ex::CODED_FRAMES && matches!(&fourcc, b"avc1" | b"hvc1") {
        let c = payload.get(at..at + 3).ok_or(FlvError::Truncated)?;
        let cts = i32::from_be_bytes([0, c[0], c[1], c[2]]) << 8 >> 8;
        return Ok((at + 3, cts));
    }
    Ok((at, 0))
}

/// Where the codec data of a plain-form Enhanced RTMP audio payload starts: after the
/// header byte, any ModEx blocks and the FourCC.
pub fn ex_audio_data(payload: &[u8]) -> Result<usize, FlvError> {
    let &b0 = payload.first().ok_or(FlvError::Truncated)?;
    let (packet, at) = skip_mod_ex(payload, b0 & 0x0F, 1)?;
    if packet == ex::AUDIO_MULTITRACK {
        return Err(FlvError::Malformed("multitrack, not the plain form"));
    }
    fourcc_at(payload, at)?;
    Ok(at + 4)
}

impl VideoTag {
    pub fn parse(payload: &[u8]) -> Result<VideoTag, FlvError> {
        let &b0 = payload.first().ok_or(FlvError::Truncated)?;
        if b0 & 0x80 != 0 {
            return Self::parse_ex(payload, b0);
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
            track: None,
        })
    }

    /// Enhanced RTMP (veovera E-RTMP v1/v2): 1 bit IsExHeader, 3 bits frame type, 4 bits
    /// packet type; ModEx blocks; then a command byte (a command frame, no FourCC), or an
    /// optional multitrack byte and the FourCC.
    fn parse_ex(payload: &[u8], b0: u8) -> Result<VideoTag, FlvError> {
        let frame_type = FrameType::from_bits((b0 >> 4) & 0x07);
        let (packet, at) = skip_mod_ex(payload, b0 & 0x0F, 1)?;
        if frame_type == FrameType::Command && packet != ex::METADATA {
            // A video command (seek start/end): one byte, no codec, no picture.
            payload.get(at).ok_or(FlvError::Truncated)?;
            return Ok(VideoTag {
                frame_type,
                codec: VideoCodec::Unstated,
                packet: VideoPacket::Other(packet),
                enhanced: true,
                track: None,
            });
        }
        let (packet, fourcc, track) = ex_fourcc(payload, packet, at, ex::VIDEO_MULTITRACK)?;
        let packet = match packet {
            ex::SEQUENCE_START | ex::MPEG2TS_SEQUENCE_START => VideoPacket::SequenceHeader,
            ex::CODED_FRAMES | ex::CODED_FRAMES_X => VideoPacket::Frame,
            ex::SEQUENCE_END => VideoPacket::EndOfSequence,
            ex::METADATA => VideoPacket::Metadata,
            other => VideoPacket::Other(other),
        };
        Ok(VideoTag {
            frame_type,
            codec: VideoCodec::from_fourcc(fourcc),
            packet,
            enhanced: true,
            track,
        })
    }

    /// A picture a decoder can start from (not a sequence header, not a command frame), on
    /// the default track: the plain form, or track 0 of a multitrack message. A keyframe
    /// of an extra track is not a place where a viewer of the default one can start.
    pub fn is_keyframe(&self) -> bool {
        self.frame_type == FrameType::Key
            && self.packet == VideoPacket::Frame
            && self.track.unwrap_or(0) == 0
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
    /// Enhanced RTMP audio (SoundFormat 9, `IsExHeader`) with its FourCC (`mp4a`, `Opus`,
    /// `fLaC`, `ac-3`, …).
    FourCc([u8; 4]),
}

impl AudioCodec {
    /// The codec's name, for messages to players and operators.
    pub fn name(&self) -> String {
        match self {
            AudioCodec::Aac => "AAC".into(),
            AudioCodec::Legacy(2) => "MP3".into(),
            AudioCodec::Legacy(id) => format!("FLV sound format {id}"),
            AudioCodec::FourCc(cc) => format!("Enhanced RTMP {}", fourcc_name(cc)),
        }
    }
}

/// What an audio payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioPacket {
    /// AudioSpecificConfig (AAC) or an Enhanced RTMP SequenceStart.
    SequenceHeader,
    Raw,
    /// Enhanced RTMP channel order and count (decoder configuration beside the
    /// SequenceStart).
    MultichannelConfig,
    Other(u8),
}

/// The first bytes of an audio payload, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioTag {
    pub codec: AudioCodec,
    pub packet: AudioPacket,
    /// Enhanced RTMP multitrack: the (first) track's id, as for [`VideoTag::track`].
    pub track: Option<u8>,
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
                    track: None,
                })
            }
            9 => {
                // Enhanced RTMP audio: the low nibble is the packet type; ModEx blocks,
                // an optional multitrack byte, then the FourCC.
                let (packet, at) = skip_mod_ex(payload, b0 & 0x0F, 1)?;
                let (packet, fourcc, track) = ex_fourcc(payload, packet, at, ex::AUDIO_MULTITRACK)?;
                let packet = match packet {
                    ex::SEQUENCE_START => AudioPacket::SequenceHeader,
                    ex::CODED_FRAMES => AudioPacket::Raw,
                    ex::AUDIO_MULTICHANNEL_CONFIG => AudioPacket::MultichannelConfig,
                    // SequenceEnd: passed through.
                    other => AudioPacket::Other(other),
                };
                Ok(AudioTag {
                    codec: AudioCodec::FourCc(fourcc),
                    packet,
                    track,
                })
            }
            other => Ok(AudioTag {
                codec: AudioCodec::Legacy(other),
                packet: AudioPacket::Raw,
                track: None,
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
        assert_eq!(av1.codec, VideoCodec::Av1);
        assert_eq!(av1.frame_type, FrameType::Inter);
        assert_eq!(VideoTag::parse(&[0x90, b'h']), Err(FlvError::Truncated));
    }

    /// The first bytes of what ffmpeg 9 (`-f flv`, libx265 / libsvtav1 / libvpx-vp9)
    /// writes: SequenceStart, the `colorInfo` metadata packet, a keyframe (CodedFrames)
    /// and an inter frame, per codec.
    const FFMPEG_HEVC: [&[u8]; 4] = [
        &[
            0x90, b'h', b'v', b'c', b'1', 0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90,
        ],
        &[
            0xD4, b'h', b'v', b'c', b'1', 0x02, 0x00, 0x09, b'c', b'o', b'l', b'o',
        ],
        &[
            0x91, b'h', b'v', b'c', b'1', 0x00, 0x00, 0xC8, 0x00, 0x00, 0x0A, 0xC6,
        ],
        &[
            0xA1, b'h', b'v', b'c', b'1', 0x00, 0x01, 0xF4, 0x00, 0x00, 0x07, 0x33,
        ],
    ];
    const FFMPEG_AV1: [&[u8]; 3] = [
        &[
            0x90, b'a', b'v', b'0', b'1', 0x81, 0x00, 0x0C, 0x00, 0x0A, 0x0B, 0x02,
        ],
        &[
            0xD4, b'a', b'v', b'0', b'1', 0x02, 0x00, 0x09, b'c', b'o', b'l', b'o',
        ],
        &[
            0x91, b'a', b'v', b'0', b'1', 0x12, 0x00, 0x0A, 0x0B, 0x02, 0x00, 0x00,
        ],
    ];
    const FFMPEG_VP9: [&[u8]; 3] = [
        &[
            0x90, b'v', b'p', b'0', b'9', 0x01, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x82,
        ],
        &[
            0xD4, b'v', b'p', b'0', b'9', 0x02, 0x00, 0x09, b'c', b'o', b'l', b'o',
        ],
        &[
            0x91, b'v', b'p', b'0', b'9', 0x82, 0x49, 0x83, 0x42, 0x00, 0x09, 0xF0,
        ],
    ];

    #[test]
    fn what_ffmpeg_publishes_for_hevc_av1_and_vp9_is_classified_per_codec() {
        let cases: [(&[&[u8]], VideoCodec); 3] = [
            (&FFMPEG_HEVC, VideoCodec::Hevc),
            (&FFMPEG_AV1, VideoCodec::Av1),
            (&FFMPEG_VP9, VideoCodec::Vp9),
        ];
        for (tags, codec) in cases {
            let [seq, meta, key] = [0, 1, 2].map(|i| VideoTag::parse(tags[i]).unwrap());
            for t in [seq, meta, key] {
                assert_eq!(t.codec, codec);
                assert!(t.enhanced && t.track.is_none());
            }
            assert!(seq.is_sequence_header() && !seq.is_keyframe(), "{codec:?}");
            assert!(!seq.is_avc_sequence_header());
            assert_eq!(meta.packet, VideoPacket::Metadata, "{codec:?}");
            assert!(!meta.is_keyframe() && !meta.is_sequence_header());
            assert!(key.is_keyframe(), "{codec:?}");
            assert_eq!(key.packet, VideoPacket::Frame);
        }
        let inter = VideoTag::parse(FFMPEG_HEVC[3]).unwrap();
        assert_eq!(inter.frame_type, FrameType::Inter);
        assert!(!inter.is_keyframe());
    }

    #[test]
    fn enhanced_end_of_sequence_mpeg2ts_start_and_codecs_we_do_not_name() {
        let end = VideoTag::parse(b"\x92hvc1").unwrap();
        assert_eq!(end.packet, VideoPacket::EndOfSequence);
        assert!(!end.is_keyframe());
        let ts_start = VideoTag::parse(b"\x95av01\x00").unwrap();
        assert!(ts_start.is_sequence_header());
        let vp8 = VideoTag::parse(b"\x91vp08\x00").unwrap();
        assert_eq!(vp8.codec, VideoCodec::FourCc(*b"vp08"));
        assert!(vp8.is_keyframe());
        assert_eq!(vp8.codec.name(), "vp08");
        assert_eq!(VideoCodec::FourCc([0, 1, 2, 3]).name(), "0x00010203");
        assert_eq!(VideoCodec::Hevc.name(), "HEVC");
    }

    #[test]
    fn an_enhanced_command_frame_names_no_codec_and_is_no_picture() {
        // Frame type 5 (command), packet type CodedFrames, then the command byte only.
        let cmd = VideoTag::parse(&[0xD1, 0x00]).unwrap();
        assert_eq!(cmd.frame_type, FrameType::Command);
        assert_eq!(cmd.codec, VideoCodec::Unstated);
        assert!(!cmd.is_keyframe() && !cmd.is_sequence_header());
        assert_eq!(VideoTag::parse(&[0xD1]), Err(FlvError::Truncated));
    }

    #[test]
    fn mod_ex_blocks_are_skipped_to_the_real_packet_type() {
        // ModEx (7), 3 bytes of data (TimestampOffsetNano), then type 0 | CodedFrames.
        let key = VideoTag::parse(b"\x97\x02\x00\x01\x00\x01hvc1\x00\x00\x00").unwrap();
        assert!(key.is_keyframe());
        assert_eq!(key.codec, VideoCodec::Hevc);
        // Two blocks, the second one 256 + 1 bytes long (the 16-bit size form).
        let mut two = vec![0x97, 0x00, 0xAA, 0x07, 0xFF, 0x01, 0x00];
        two.extend([0u8; 257]);
        two.extend(b"\x00av01");
        let seq = VideoTag::parse(&two).unwrap();
        assert!(seq.is_sequence_header());
        assert_eq!(seq.codec, VideoCodec::Av1);
        // Cut anywhere inside: truncated, never a panic.
        for cut in 0..two.len() - 1 {
            assert_eq!(
                VideoTag::parse(&two[..cut]),
                Err(FlvError::Truncated),
                "{cut}"
            );
        }
        let aac = AudioTag::parse(b"\x97\x02\x00\x00\x01\x01mp4a").unwrap();
        assert_eq!(aac.codec, AudioCodec::FourCc(*b"mp4a"));
        assert_eq!(aac.packet, AudioPacket::Raw);
    }

    #[test]
    fn where_enhanced_codec_data_starts() {
        // CodedFrames of avc1: FourCC, then the SI24 composition time (here -40).
        assert_eq!(
            ex_video_data(b"\x91avc1\xff\xff\xd8\x00\x00\x00\x02"),
            Ok((8, -40))
        );
        // CodedFramesX: no composition time; SequenceStart: the record follows.
        assert_eq!(ex_video_data(b"\x93avc1\x00\x00"), Ok((5, 0)));
        assert_eq!(ex_video_data(b"\x90avc1\x01"), Ok((5, 0)));
        // AV1 CodedFrames carry no composition time.
        assert_eq!(ex_video_data(b"\x91av01\x12\x00"), Ok((5, 0)));
        // After a ModEx block.
        assert_eq!(
            ex_video_data(b"\x97\x02\x00\x01\x00\x01avc1\x00\x00\x28\x00"),
            Ok((13, 40))
        );
        assert_eq!(ex_video_data(b"\x91avc1\x00"), Err(FlvError::Truncated));
        assert!(ex_video_data(b"\x96\x01avc1\x00").is_err());
        assert_eq!(ex_audio_data(b"\x91mp4a\x21"), Ok(5));
        assert_eq!(ex_audio_data(b"\x97\x00\xAA\x01mp4a\x21"), Ok(8));
        assert!(ex_audio_data(b"\x95\x01mp4a\x01").is_err());
        assert_eq!(ex_audio_data(b"\x91mp4"), Err(FlvError::Truncated));
    }

    #[test]
    fn multitrack_reads_the_tracks_packet_type_and_codec() {
        // Multitrack (6); OneTrack (0) | CodedFrames (1); FourCC; track id 0.
        let key = VideoTag::parse(b"\x96\x01hvc1\x00").unwrap();
        assert!(key.track == Some(0) && key.is_keyframe());
        assert_eq!(key.codec, VideoCodec::Hevc);
        // ManyTracksManyCodecs (2) | SequenceStart: the first track's FourCC and id.
        let seq = VideoTag::parse(b"\x96\x20av01\x03").unwrap();
        assert!(seq.track == Some(3) && seq.is_sequence_header());
        assert_eq!(seq.codec, VideoCodec::Av1);
        // A keyframe of an extra track is no start for the default track's viewers.
        let extra = VideoTag::parse(b"\x96\x11avc1\x01").unwrap();
        assert_eq!((extra.frame_type, extra.track), (FrameType::Key, Some(1)));
        assert!(!extra.is_keyframe());
        assert_eq!(VideoTag::parse(b"\x96\x01hvc1"), Err(FlvError::Truncated));
        assert!(matches!(
            VideoTag::parse(b"\x96\x06hvc1"),
            Err(FlvError::Malformed(_))
        ));
        assert_eq!(VideoTag::parse(b"\x96"), Err(FlvError::Truncated));
        let opus = AudioTag::parse(b"\x95\x10Opus\x00").unwrap();
        assert_eq!(opus.codec, AudioCodec::FourCc(*b"Opus"));
        assert!(opus.is_sequence_header());
        // What ffmpeg 9 sends for a second AAC track: multitrack `mp4a`, track 1 —
        // SequenceStart, MultichannelConfig, then CodedFrames.
        let seq = AudioTag::parse(b"\x95\x00mp4a\x01\x12\x08").unwrap();
        assert!(seq.is_sequence_header() && seq.track == Some(1));
        let channels = AudioTag::parse(b"\x95\x04mp4a\x01\x01\x01\x00").unwrap();
        assert_eq!(channels.packet, AudioPacket::MultichannelConfig);
        let frame = AudioTag::parse(b"\x95\x01mp4a\x01\x01\x34").unwrap();
        assert_eq!((frame.packet, frame.track), (AudioPacket::Raw, Some(1)));
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
