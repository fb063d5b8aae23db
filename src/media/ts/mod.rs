//! MPEG-TS muxing for HLS: H.264 and AAC from FLV/RTMP payloads to 188-byte transport
//! stream packets. Sans-IO: payloads in, bytes appended to the caller's `BytesMut` out.
//!
//! H.264 and AAC come in legacy FLV form or in the plain Enhanced RTMP form (`avc1`,
//! `mp4a`: the codec data after the FourCC and, for `avc1` CodedFrames, the composition
//! time; [`flv::ex_video_data`]); both mux to the same bytes. What [`TsMuxer::mux`] does
//! with one message:
//! - an AVC sequence header (AVCDecoderConfigurationRecord) or an AAC AudioSpecificConfig
//!   is read and kept; nothing is written;
//! - an H.264 frame (AVCC: length-prefixed NALUs) becomes one PES on [`VIDEO_PID`]: an
//!   access unit delimiter, the SPS/PPS from the sequence header before an IDR (unless the
//!   frame carries its own), then the NALUs with Annex B start codes. DTS is the FLV
//!   timestamp, PTS adds the composition time. The first packet carries the PCR and, on a
//!   keyframe, the random access indicator;
//! - an AAC raw frame becomes one PES on [`AUDIO_PID`] with an ADTS header built from the
//!   AudioSpecificConfig;
//! - anything else (metadata, command frames, end of sequence; HEVC, AV1, VP9, MP3,
//!   Opus, which [`uncarried`] names so that the segmenter puts HEVC and AV1 in fMP4
//!   instead and refuses a stream with the others whole; the extra
//!   tracks of Enhanced RTMP multitrack messages) is ignored, and
//!   input that cannot be used (a frame before its sequence header, a NALU length past
//!   the end, an AudioSpecificConfig ADTS cannot express) is skipped and reported in the
//!   returned [`Muxed`], never a panic.
//!
//! [`TsMuxer::write_tables`] writes the PAT and PMT (a segment starts with them); the PMT
//! lists the tracks whose configuration has been seen, and is written again with a new
//! version before the next frame when that set changes. Continuity counters run per PID
//! for the muxer's life. Packets are padded to 188 bytes with adaptation-field stuffing.
//!
//! Timestamps: 90 kHz, 33 bits. PTS/DTS run [`PTS_DELAY`] ahead of the PCR (as nginx-rtmp
//! does), so a decoder has time to buffer and a small negative composition time still
//! yields a PTS at or after the PCR. RTMP's 32-bit millisecond clock times 90 wraps at a
//! multiple of 2^33, so the TS clock wraps cleanly with it.
//!
//! Why our own muxer: `mpeg2ts` (the maintained Rust crate) models packets and writes them
//! through `std::io::Write`, but leaves PES splitting, stuffing, PCR placement, AVCC to
//! Annex B and ADTS to the caller — the bulk of this file — and copies each packet's
//! payload into its own buffer first. Here a frame is copied once, into the segment.

use bytes::BytesMut;

use super::class::Class;
use super::flv::{
    self, AudioCodec, AudioPacket, AudioTag, FrameType, VideoCodec, VideoPacket, VideoTag,
};
use super::kind::MediaKind;

mod adts;
mod annexb;
mod pes;
mod psi;

pub use psi::crc32_mpeg2;

use adts::{adts_header, parse_audio_specific_config, AacConfig, ADTS_HEADER_LEN, ADTS_MAX_FRAME};
use annexb::{parse_avc_config, AvcConfig, Nalus, AUD, START_CODE};
use pes::{packetize, pes_header};

/// Length of a transport stream packet.
pub const PACKET_LEN: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// How far PTS/DTS run ahead of the PCR: 700 ms in 90 kHz ticks.
pub const PTS_DELAY: u64 = 63_000;

const STREAM_ID_VIDEO: u8 = 0xE0;
const STREAM_ID_AUDIO: u8 = 0xC0;
const TS_MASK: u64 = (1 << 33) - 1;
const PAYLOAD_LEN: usize = PACKET_LEN - 4;
/// The scratch buffer for one access unit is dropped after a frame larger than this, so
/// one huge frame does not pin its memory for the stream's life.
const SCRATCH_KEEP: usize = 1024 * 1024;

/// Why a message was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A frame before its codec's sequence header.
    NoSequenceHeader,
    /// A truncated payload, a NALU length past the end of the frame, a broken sequence
    /// header, or an AAC frame longer than ADTS can carry.
    Malformed,
    /// A codec this muxer does not put in TS (HEVC, Enhanced RTMP, MP3, an AAC
    /// configuration ADTS cannot express, …).
    Unsupported,
}

/// What [`TsMuxer::mux`] did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Muxed {
    /// A sequence header was read and kept; nothing written.
    Config,
    /// An H.264 access unit was written; `keyframe` if it is a random access point.
    Video {
        keyframe: bool,
    },
    /// An AAC frame was written.
    Audio,
    /// Nothing TS carries (metadata, command frames, end of sequence).
    Ignored,
    Skipped(Skip),
}

/// What TS makes of a message, for a segmenter deciding where to cut before anything is
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// An H.264 coded frame; `key` per the FLV frame type.
    VideoFrame { key: bool },
    /// An AAC raw frame.
    AudioFrame,
    /// A sequence header, metadata, or something the muxer skips or ignores.
    Other,
}

/// What TS makes of a message of class `class` (read when it was packaged).
pub fn carried(class: &Class) -> Carried {
    match class {
        Class::Video(t) if is_ts_avc(t) && t.packet == VideoPacket::Frame => {
            if t.frame_type == FrameType::Command {
                Carried::Other
            } else {
                Carried::VideoFrame {
                    key: t.is_keyframe(),
                }
            }
        }
        Class::Audio(t) if is_ts_aac(t) && t.packet == AudioPacket::Raw => Carried::AudioFrame,
        _ => Carried::Other,
    }
}

/// A track whose codec this muxer does not put in TS. HLS refuses a stream that has one
/// as a whole ([`super::hls::Segmenter::refused`]) rather than serve the other track
/// alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uncarried {
    Video(VideoTag),
    Audio(AudioTag),
}

impl std::fmt::Display for Uncarried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uncarried::Video(t) => write!(f, "{} video", t.codec.name()),
            Uncarried::Audio(t) => write!(f, "{} audio", t.codec.name()),
        }
    }
}

/// The track of a message of class `class` that TS cannot carry, if it is one: video
/// other than H.264, audio other than AAC (either in legacy FLV or in the plain Enhanced
/// RTMP form, `avc1` / `mp4a`). Enhanced RTMP command frames name no
/// codec and say nothing about the track; multitrack messages carry extra tracks, which
/// TS leaves out (it carries the default tracks, sent in the plain form).
pub fn uncarried(class: &Class) -> Option<Uncarried> {
    match class {
        Class::Video(t)
            if t.track.is_none() && t.codec != VideoCodec::Unstated && !is_ts_avc(t) =>
        {
            Some(Uncarried::Video(*t))
        }
        Class::Audio(t) if t.track.is_none() && !is_ts_aac(t) => Some(Uncarried::Audio(*t)),
        _ => None,
    }
}

/// H.264 of the default track: legacy FLV, or Enhanced RTMP `avc1` in the plain form.
fn is_ts_avc(t: &VideoTag) -> bool {
    t.codec == VideoCodec::Avc && t.track.is_none()
}

/// AAC of the default track: legacy FLV, or Enhanced RTMP `mp4a` in the plain form.
fn is_ts_aac(t: &AudioTag) -> bool {
    (t.codec == AudioCodec::Aac || t.codec == AudioCodec::FourCc(*b"mp4a")) && t.track.is_none()
}

/// The tracks a PMT announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tracks {
    video: bool,
    audio: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct TsMuxer {
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    /// The tracks in the last PMT written (`None`: none written yet).
    announced: Option<Tracks>,
    pmt_version: u8,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    /// One access unit's elementary stream bytes, reused between frames.
    scratch: Vec<u8>,
}

impl TsMuxer {
    pub fn new() -> TsMuxer {
        TsMuxer::default()
    }

    /// An H.264 sequence header has been seen.
    pub fn video_configured(&self) -> bool {
        self.avc.is_some()
    }

    /// An AAC AudioSpecificConfig has been seen.
    pub fn audio_configured(&self) -> bool {
        self.aac.is_some()
    }

    /// Forgets the codec configurations (a new publisher sends its own). Continuity
    /// counters continue.
    pub fn reset(&mut self) {
        self.avc = None;
        self.aac = None;
    }

    fn tracks(&self) -> Tracks {
        Tracks {
            video: self.avc.is_some(),
            audio: self.aac.is_some(),
        }
    }

    fn pcr_pid(&self) -> u16 {
        if self.avc.is_some() || self.aac.is_none() {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// Muxes one message at `timestamp` (milliseconds) into `out`, reading its tag header
    /// first. See the module documentation for what is written and what is skipped.
    pub fn mux(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Muxed {
        self.mux_classified(&Class::of(kind, payload), timestamp, payload, out)
    }

    /// [`Self::mux`] for a message whose `class` is known (it was packaged).
    pub fn mux_classified(
        &mut self,
        class: &Class,
        timestamp: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Muxed {
        match class {
            Class::Video(tag) => self.mux_video(tag, timestamp, payload, out),
            Class::Audio(tag) => self.mux_audio(tag, timestamp, payload, out),
            Class::Metadata | Class::Data => Muxed::Ignored,
            Class::Unreadable => Muxed::Skipped(Skip::Malformed),
        }
    }

    /// Writes the tables again first when the configured tracks differ from the last PMT.
    fn tables_if_changed(&mut self, out: &mut BytesMut) {
        if self.announced != Some(self.tracks()) {
            self.write_tables(out);
        }
    }

    fn mux_video(
        &mut self,
        tag: &VideoTag,
        timestamp: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Muxed {
        if tag.track.is_some() {
            return Muxed::Ignored; // an extra track (see `uncarried`)
        }
        if !is_ts_avc(tag) {
            return Muxed::Skipped(Skip::Unsupported);
        }
        // Legacy: frame/codec byte, AVCPacketType, SI24 composition time, then the data.
        let data = if tag.enhanced {
            flv::ex_video_data(payload).ok()
        } else {
            payload
                .get(2..5)
                .map(|c| (5, i32::from_be_bytes([0, c[0], c[1], c[2]]) << 8 >> 8))
        };
        let Some((body, cts)) = data.and_then(|(at, cts)| Some((payload.get(at..)?, cts))) else {
            return Muxed::Skipped(Skip::Malformed);
        };
        match tag.packet {
            VideoPacket::SequenceHeader => match parse_avc_config(body) {
                Some(cfg) => {
                    self.avc = Some(cfg);
                    Muxed::Config
                }
                None => Muxed::Skipped(Skip::Malformed),
            },
            VideoPacket::Frame if tag.frame_type != FrameType::Command => {
                self.video_frame(timestamp, tag, cts, body, out)
            }
            _ => Muxed::Ignored,
        }
    }

    fn video_frame(
        &mut self,
        timestamp: u32,
        tag: &VideoTag,
        cts: i32,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Muxed {
        let Some(avc) = &self.avc else {
            return Muxed::Skipped(Skip::NoSequenceHeader);
        };
        // First pass: every length must fit, and what the frame holds decides the rest.
        let (mut has_idr, mut has_sps, mut any) = (false, false, false);
        let mut nalus = Nalus::new(body, avc.length_size);
        for nalu in nalus.by_ref() {
            if let Some(&h) = nalu.first() {
                any = true;
                match h & 0x1F {
                    5 => has_idr = true,
                    7 => has_sps = true,
                    _ => {}
                }
            }
        }
        if nalus.malformed {
            return Muxed::Skipped(Skip::Malformed);
        }
        if !any {
            return Muxed::Ignored;
        }
        let keyframe = has_idr || tag.frame_type == FrameType::Key;

        let mut es = std::mem::take(&mut self.scratch);
        es.clear();
        es.extend_from_slice(&AUD);
        let mut params_due = keyframe && !has_sps;
        for nalu in Nalus::new(body, avc.length_size) {
            let Some(&h) = nalu.first() else { continue };
            let nal_type = h & 0x1F;
            if nal_type == 9 {
                continue; // our own AUD leads the access unit
            }
            if params_due && (nal_type == 5 || (1..=5).contains(&nal_type)) {
                es.extend_from_slice(&avc.parameter_sets);
                params_due = false;
            }
            es.extend_from_slice(&START_CODE);
            es.extend_from_slice(nalu);
        }

        // Composition time (a signed 24-bit field): a negative one is clamped so PTS >= DTS.
        let dts90 = u64::from(timestamp) * 90;
        let dts = (dts90 + PTS_DELAY) & TS_MASK;
        let pts = (dts + u64::from(cts.max(0) as u32) * 90) & TS_MASK;
        self.tables_if_changed(out);
        let pcr = (self.pcr_pid() == VIDEO_PID).then_some(dts90 & TS_MASK);
        let mut head = [0u8; 19];
        let head_len = pes_header(&mut head, STREAM_ID_VIDEO, pts, Some(dts), None);
        packetize(
            out,
            VIDEO_PID,
            &mut self.cc_video,
            pcr,
            keyframe,
            &head[..head_len],
            &es,
        );
        if es.capacity() <= SCRATCH_KEEP {
            self.scratch = es;
        }
        Muxed::Video { keyframe }
    }

    fn mux_audio(
        &mut self,
        tag: &AudioTag,
        timestamp: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Muxed {
        if tag.track.is_some() {
            return Muxed::Ignored; // an extra track (see `uncarried`)
        }
        if !is_ts_aac(tag) {
            return Muxed::Skipped(Skip::Unsupported);
        }
        // Legacy: format byte and AACPacketType; Enhanced: header, ModEx, FourCC.
        let at = match tag.codec {
            AudioCodec::Aac => Some(2),
            _ => flv::ex_audio_data(payload).ok(),
        };
        let Some(body) = at.and_then(|at| payload.get(at..)) else {
            return Muxed::Skipped(Skip::Malformed);
        };
        match tag.packet {
            AudioPacket::SequenceHeader => match parse_audio_specific_config(body) {
                Ok(cfg) => {
                    self.aac = Some(cfg);
                    Muxed::Config
                }
                Err(skip) => Muxed::Skipped(skip),
            },
            AudioPacket::Raw => self.audio_frame(timestamp, body, out),
            AudioPacket::MultichannelConfig | AudioPacket::Other(_) => Muxed::Ignored,
        }
    }

    fn audio_frame(&mut self, timestamp: u32, raw: &[u8], out: &mut BytesMut) -> Muxed {
        let Some(aac) = self.aac else {
            return Muxed::Skipped(Skip::NoSequenceHeader);
        };
        if raw.is_empty() {
            return Muxed::Ignored;
        }
        let frame_len = raw.len() + ADTS_HEADER_LEN;
        if frame_len > ADTS_MAX_FRAME {
            return Muxed::Skipped(Skip::Malformed);
        }
        let adts = adts_header(aac, frame_len);
        let pts90 = u64::from(timestamp) * 90;
        let pts = (pts90 + PTS_DELAY) & TS_MASK;
        self.tables_if_changed(out);
        let pcr = (self.pcr_pid() == AUDIO_PID).then_some(pts90 & TS_MASK);
        let mut head = [0u8; 19 + ADTS_HEADER_LEN];
        let head_len = pes_header(
            &mut head,
            STREAM_ID_AUDIO,
            pts,
            None,
            Some(ADTS_HEADER_LEN + raw.len()),
        );
        head[head_len..head_len + ADTS_HEADER_LEN].copy_from_slice(&adts);
        packetize(
            out,
            AUDIO_PID,
            &mut self.cc_audio,
            pcr,
            false,
            &head[..head_len + ADTS_HEADER_LEN],
            raw,
        );
        Muxed::Audio
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::psi::{STREAM_TYPE_AAC, STREAM_TYPE_H264};
    use super::*;
    use std::collections::HashMap;

    /// A minimal demuxer for checking our own output: packet sync and sizes, continuity
    /// per PID, section CRCs, and the PES payloads per PID with their timestamps.
    #[derive(Debug, Default)]
    pub(crate) struct Demuxed {
        pub pmt_streams: Vec<(u8, u16)>,
        pub pcr_pid: Option<u16>,
        pub pes: HashMap<u16, Vec<Pes>>,
        pub pcrs: Vec<u64>,
        pub random_access: Vec<u16>,
    }

    #[derive(Debug, Default, Clone)]
    pub(crate) struct Pes {
        pub stream_id: u8,
        pub pts: Option<u64>,
        pub dts: Option<u64>,
        pub data: Vec<u8>,
    }

    fn read_ts(b: &[u8]) -> u64 {
        (u64::from(b[0] >> 1 & 0x07) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    }

    pub(crate) fn demux(ts: &[u8]) -> Demuxed {
        assert_eq!(ts.len() % PACKET_LEN, 0, "whole packets");
        let mut d = Demuxed::default();
        let mut cc: HashMap<u16, u8> = HashMap::new();
        let mut open: HashMap<u16, Vec<u8>> = HashMap::new();
        let finish = |d: &mut Demuxed, pid: u16, raw: Vec<u8>| {
            assert_eq!(&raw[..3], &[0, 0, 1], "PES start code");
            let flags = raw[7];
            let hlen = usize::from(raw[8]);
            let pes = Pes {
                stream_id: raw[3],
                pts: (flags & 0x80 != 0).then(|| read_ts(&raw[9..14])),
                dts: (flags & 0x40 != 0).then(|| read_ts(&raw[14..19])),
                data: raw[9 + hlen..].to_vec(),
            };
            let declared = usize::from(u16::from_be_bytes([raw[4], raw[5]]));
            if declared != 0 {
                assert_eq!(declared, raw.len() - 6, "PES_packet_length");
            }
            d.pes.entry(pid).or_default().push(pes);
        };
        for p in ts.chunks(PACKET_LEN) {
            assert_eq!(p[0], 0x47, "sync byte");
            let pusi = p[1] & 0x40 != 0;
            let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
            let afc = (p[3] >> 4) & 0x03;
            let c = p[3] & 0x0F;
            if afc & 1 != 0 {
                if let Some(prev) = cc.insert(pid, c) {
                    assert_eq!(c, (prev + 1) & 0x0F, "continuity on PID {pid:#x}");
                }
            }
            let mut at = 4;
            if afc & 2 != 0 {
                let len = usize::from(p[4]);
                if len > 0 {
                    let f = p[5];
                    if f & 0x40 != 0 {
                        d.random_access.push(pid);
                    }
                    if f & 0x10 != 0 {
                        let b = &p[6..12];
                        let base = (u64::from(b[0]) << 25)
                            | (u64::from(b[1]) << 17)
                            | (u64::from(b[2]) << 9)
                            | (u64::from(b[3]) << 1)
                            | u64::from(b[4] >> 7);
                        d.pcrs.push(base);
                        d.pcr_pid.get_or_insert(pid);
                    }
                    assert!(p[6 + if f & 0x10 != 0 { 6 } else { 0 }..5 + len]
                        .iter()
                        .all(|&x| x == 0xFF));
                }
                at = 5 + len;
            }
            let payload = &p[at..];
            if pid == 0 || pid == PMT_PID {
                assert!(pusi);
                let sec_len = usize::from(u16::from_be_bytes([payload[2], payload[3]]) & 0xFFF);
                let section = &payload[1..1 + 3 + sec_len];
                assert_eq!(crc32_mpeg2(section), 0, "section CRC");
                if pid == PMT_PID {
                    d.pcr_pid = Some(u16::from_be_bytes([section[8], section[9]]) & 0x1FFF);
                    d.pmt_streams.clear();
                    let mut i = 12;
                    while i + 5 <= section.len() - 4 {
                        let pid = u16::from_be_bytes([section[i + 1], section[i + 2]]) & 0x1FFF;
                        d.pmt_streams.push((section[i], pid));
                        i += 5;
                    }
                }
                continue;
            }
            if pusi {
                if let Some(raw) = open.remove(&pid) {
                    finish(&mut d, pid, raw);
                }
                open.insert(pid, payload.to_vec());
            } else if let Some(buf) = open.get_mut(&pid) {
                buf.extend_from_slice(payload);
            }
        }
        for (pid, raw) in open {
            finish(&mut d, pid, raw);
        }
        d
    }

    /// An AVC sequence header payload with one SPS and one PPS, 4-byte lengths.
    pub(crate) fn avc_header() -> Vec<u8> {
        let mut p = vec![0x17, 0, 0, 0, 0];
        p.extend_from_slice(&[1, 0x64, 0, 0x1F, 0xFF, 0xE1]);
        p.extend_from_slice(&[0, 4, 0x67, 0x64, 0x00, 0x1F]);
        p.extend_from_slice(&[1, 0, 2, 0x68, 0xEE]);
        p
    }

    /// AAC LC, 44.1 kHz, stereo.
    pub(crate) fn aac_header() -> Vec<u8> {
        vec![0xAF, 0, 0x12, 0x10]
    }

    /// An AVCC frame from NALUs (4-byte lengths) with a composition time.
    pub(crate) fn avc_frame(key: bool, cts: i32, nalus: &[&[u8]]) -> Vec<u8> {
        let c = cts.to_be_bytes();
        let mut p = vec![if key { 0x17 } else { 0x27 }, 1, c[1], c[2], c[3]];
        for n in nalus {
            p.extend_from_slice(&(n.len() as u32).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    fn configured() -> TsMuxer {
        let mut m = TsMuxer::new();
        let mut out = BytesMut::new();
        assert_eq!(
            m.mux(MediaKind::Video, 0, &avc_header(), &mut out),
            Muxed::Config
        );
        assert_eq!(
            m.mux(MediaKind::Audio, 0, &aac_header(), &mut out),
            Muxed::Config
        );
        assert!(out.is_empty(), "sequence headers write nothing");
        m
    }

    #[test]
    fn tables_announce_the_configured_tracks() {
        let mut m = configured();
        let mut out = BytesMut::new();
        m.write_tables(&mut out);
        assert_eq!(out.len(), 2 * PACKET_LEN);
        let d = demux(&out);
        assert_eq!(
            d.pmt_streams,
            vec![(STREAM_TYPE_H264, VIDEO_PID), (STREAM_TYPE_AAC, AUDIO_PID)]
        );
        assert_eq!(d.pcr_pid, Some(VIDEO_PID));

        let mut audio_only = TsMuxer::new();
        audio_only.mux(MediaKind::Audio, 0, &aac_header(), &mut out);
        let mut out = BytesMut::new();
        audio_only.write_tables(&mut out);
        let d = demux(&out);
        assert_eq!(d.pmt_streams, vec![(STREAM_TYPE_AAC, AUDIO_PID)]);
        assert_eq!(d.pcr_pid, Some(AUDIO_PID));
    }

    #[test]
    fn a_keyframe_becomes_annex_b_with_aud_sps_pps_and_timestamps() {
        let mut m = configured();
        let mut out = BytesMut::new();
        m.write_tables(&mut out);
        let idr = [0x65u8, 0x88, 0x84, 0x00, 0x33];
        let sei = [0x06u8, 0x05, 0x01];
        let frame = avc_frame(true, 80, &[&sei, &idr]);
        assert_eq!(
            m.mux(MediaKind::Video, 1000, &frame, &mut out),
            Muxed::Video { keyframe: true }
        );
        let d = demux(&out);
        let pes = &d.pes[&VIDEO_PID][0];
        assert_eq!(pes.stream_id, 0xE0);
        assert_eq!(pes.dts, Some(1000 * 90 + PTS_DELAY));
        assert_eq!(pes.pts, Some(1080 * 90 + PTS_DELAY));
        assert_eq!(d.pcrs, vec![1000 * 90]);
        assert_eq!(d.random_access, vec![VIDEO_PID]);
        let mut want = AUD.to_vec();
        want.extend_from_slice(&[0, 0, 0, 1, 0x06, 0x05, 0x01]);
        want.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1F]);
        want.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xEE]);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&idr);
        assert_eq!(
            pes.data, want,
            "AUD, SEI, then SPS/PPS right before the IDR"
        );
    }

    #[test]
    fn inter_frames_have_no_parameter_sets_and_equal_pts_writes_no_dts() {
        let mut m = configured();
        let mut out = BytesMut::new();
        let slice = [0x41u8, 0x9A, 0x02];
        assert_eq!(
            m.mux(
                MediaKind::Video,
                40,
                &avc_frame(false, 0, &[&slice]),
                &mut out
            ),
            Muxed::Video { keyframe: false }
        );
        let d = demux(&out);
        let pes = &d.pes[&VIDEO_PID][0];
        assert_eq!(pes.dts, None);
        assert_eq!(pes.pts, Some(40 * 90 + PTS_DELAY));
        assert_eq!(pes.data, [&AUD[..], &[0, 0, 0, 1], &slice].concat());
        assert!(d.random_access.is_empty());
        // The tables came first, on their own, since none had been written.
        assert_eq!(d.pmt_streams.len(), 2);
    }

    #[test]
    fn in_band_parameter_sets_and_auds_are_not_doubled() {
        let mut m = configured();
        let mut out = BytesMut::new();
        let frame = avc_frame(
            true,
            0,
            &[&[0x09, 0x10], &[0x67, 1], &[0x68, 2], &[0x65, 3]],
        );
        m.mux(MediaKind::Video, 0, &frame, &mut out);
        let pes = &demux(&out).pes[&VIDEO_PID][0];
        let want = [
            &AUD[..],
            &[0, 0, 0, 1, 0x67, 1],
            &[0, 0, 0, 1, 0x68, 2],
            &[0, 0, 0, 1, 0x65, 3],
        ]
        .concat();
        assert_eq!(pes.data, want);
    }

    #[test]
    fn large_frames_span_packets_with_stuffing_only_at_the_end() {
        let mut m = configured();
        for size in [
            1usize, 160, 161, 170, 176, 177, 183, 184, 185, 1000, 65_536, 200_000,
        ] {
            let mut out = BytesMut::new();
            let mut slice = vec![0x41u8];
            slice.extend((0..size).map(|i| (i % 251) as u8));
            m.mux(
                MediaKind::Video,
                0,
                &avc_frame(false, 0, &[&slice]),
                &mut out,
            );
            let d = demux(&out);
            let pes = &d.pes[&VIDEO_PID][0];
            assert_eq!(&pes.data[10..], &slice[..], "size {size}");
        }
    }

    #[test]
    fn aac_frames_get_adts_headers() {
        let mut m = configured();
        let mut out = BytesMut::new();
        let raw = [0x21u8, 0x10, 0x05, 0x00];
        let mut payload = vec![0xAF, 1];
        payload.extend_from_slice(&raw);
        assert_eq!(
            m.mux(MediaKind::Audio, 23, &payload, &mut out),
            Muxed::Audio
        );
        let d = demux(&out);
        let pes = &d.pes[&AUDIO_PID][0];
        assert_eq!(pes.stream_id, 0xC0);
        assert_eq!(pes.pts, Some(23 * 90 + PTS_DELAY));
        let adts = &pes.data[..7];
        assert_eq!(adts[0], 0xFF);
        assert_eq!(adts[1], 0xF1);
        assert_eq!(adts[2] >> 6, 1, "AAC LC");
        assert_eq!((adts[2] >> 2) & 0x0F, 4, "44.1 kHz");
        let ch = ((adts[2] & 1) << 2) | (adts[3] >> 6);
        assert_eq!(ch, 2);
        let len = (usize::from(adts[3] & 3) << 11)
            | (usize::from(adts[4]) << 3)
            | usize::from(adts[5] >> 5);
        assert_eq!(len, 7 + raw.len());
        assert_eq!(&pes.data[7..], &raw);
        assert!(d.pcrs.is_empty(), "the PCR rides on video");
    }

    #[test]
    fn oversized_parameter_sets_are_refused() {
        // One SPS and PPS of 40,000 bytes each: 80 KB to repeat before every keyframe.
        let big = vec![0x67u8; 40_000];
        let mut rec = vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1];
        rec.extend_from_slice(&(big.len() as u16).to_be_bytes());
        rec.extend_from_slice(&big);
        rec.push(1);
        rec.extend_from_slice(&(big.len() as u16).to_be_bytes());
        rec.extend_from_slice(&big);
        let mut m = TsMuxer::new();
        let mut out = BytesMut::new();
        assert_eq!(
            m.mux(MediaKind::Video, 0, &rec, &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
        assert!(!m.video_configured());
    }

    #[test]
    fn bad_and_early_input_is_skipped() {
        let mut m = TsMuxer::new();
        let mut out = BytesMut::new();
        let slice = [0x41u8, 1];
        assert_eq!(
            m.mux(
                MediaKind::Video,
                0,
                &avc_frame(true, 0, &[&slice]),
                &mut out
            ),
            Muxed::Skipped(Skip::NoSequenceHeader)
        );
        assert_eq!(
            m.mux(MediaKind::Audio, 0, &[0xAF, 1, 1, 2], &mut out),
            Muxed::Skipped(Skip::NoSequenceHeader)
        );
        let mut m = configured();
        // A NALU length past the end of the frame.
        let mut bad = avc_frame(false, 0, &[&slice]);
        bad[8] = 200;
        assert_eq!(
            m.mux(MediaKind::Video, 0, &bad, &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
        // A length prefix cut short.
        assert_eq!(
            m.mux(MediaKind::Video, 0, &[0x27, 1, 0, 0, 0, 0, 0], &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
        assert_eq!(
            m.mux(MediaKind::Video, 0, &[0x27, 1, 0], &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
        assert_eq!(
            m.mux(MediaKind::Video, 0, &[], &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
        // HEVC, MP3 and a broken sequence header.
        assert_eq!(
            m.mux(MediaKind::Video, 0, &[0x1C, 1, 0, 0, 0], &mut out),
            Muxed::Skipped(Skip::Unsupported)
        );
        assert_eq!(
            m.mux(MediaKind::Audio, 0, &[0x2F, 0xFF], &mut out),
            Muxed::Skipped(Skip::Unsupported)
        );
        assert_eq!(
            m.mux(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 0x64], &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
        // An explicit-frequency AudioSpecificConfig.
        assert_eq!(
            m.mux(MediaKind::Audio, 0, &[0xAF, 0, 0x17, 0x80], &mut out),
            Muxed::Skipped(Skip::Unsupported)
        );
        assert_eq!(
            m.mux(MediaKind::Data, 0, b"\x02\x00\x0aonMetaData", &mut out),
            Muxed::Ignored
        );
        assert!(out.is_empty(), "nothing written for any of it");
        // The good configuration survived the broken one.
        assert!(m.video_configured());
    }

    #[test]
    fn enhanced_rtmp_avc1_and_mp4a_mux_exactly_like_their_legacy_forms() {
        let with = |head: &[u8], rest: &[u8]| [head, rest].concat();
        let key = avc_frame(true, 40, &[&[0x65, 1, 2, 3]]);
        let inter = avc_frame(false, 0, &[&[0x41, 4, 5]]);
        let legacy: Vec<(MediaKind, u32, Vec<u8>)> = vec![
            (MediaKind::Video, 0, avc_header()),
            (MediaKind::Audio, 0, aac_header()),
            (MediaKind::Video, 0, key.clone()),
            (MediaKind::Audio, 10, vec![0xAF, 1, 0x21, 0x22]),
            (MediaKind::Video, 40, inter.clone()),
        ];
        let enhanced: Vec<(MediaKind, u32, Vec<u8>)> = vec![
            // SequenceStart, then the same AVCDecoderConfigurationRecord.
            (MediaKind::Video, 0, with(b"\x90avc1", &avc_header()[5..])),
            (MediaKind::Audio, 0, with(b"\x90mp4a", &aac_header()[2..])),
            // CodedFrames: SI24 composition time (40 ms), then the NALUs.
            (
                MediaKind::Video,
                0,
                with(b"\x91avc1\x00\x00\x28", &key[5..]),
            ),
            (MediaKind::Audio, 10, b"\x91mp4a\x21\x22".to_vec()),
            // CodedFramesX (composition time 0), behind a ModEx block.
            (
                MediaKind::Video,
                40,
                with(b"\xA7\x02\x00\x01\x00\x03avc1", &inter[5..]),
            ),
        ];
        let run = |msgs: &[(MediaKind, u32, Vec<u8>)]| {
            let mut m = TsMuxer::new();
            let mut out = BytesMut::new();
            let muxed: Vec<Muxed> = msgs
                .iter()
                .map(|(k, ts, p)| m.mux(*k, *ts, p, &mut out))
                .collect();
            (muxed, out)
        };
        let (a, a_out) = run(&legacy);
        let (b, b_out) = run(&enhanced);
        assert_eq!(a, b);
        assert_eq!(
            b[..3],
            [
                Muxed::Config,
                Muxed::Config,
                Muxed::Video { keyframe: true }
            ]
        );
        assert_eq!(a_out, b_out, "the same TS bytes");
        for (_, _, p) in &enhanced {
            let class = Class::of(
                if p[1..5] == *b"mp4a" {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                },
                p,
            );
            assert_eq!(uncarried(&class), None, "{p:02x?}");
        }
        // Cut inside the Enhanced header: skipped as malformed, never a panic.
        let mut m = configured();
        let mut out = BytesMut::new();
        assert_eq!(
            m.mux(MediaKind::Video, 0, b"\x91avc1\x00", &mut out),
            Muxed::Skipped(Skip::Malformed)
        );
    }

    #[test]
    fn a_track_appearing_later_rewrites_the_tables_with_a_new_version() {
        let mut m = TsMuxer::new();
        let mut out = BytesMut::new();
        m.mux(MediaKind::Audio, 0, &aac_header(), &mut out);
        m.write_tables(&mut out);
        m.mux(MediaKind::Audio, 0, &[0xAF, 1, 9, 9], &mut out);
        m.mux(MediaKind::Video, 0, &avc_header(), &mut out);
        let before = out.len();
        m.mux(
            MediaKind::Video,
            0,
            &avc_frame(true, 0, &[&[0x65, 1]]),
            &mut out,
        );
        let d = demux(&out[before..]);
        assert_eq!(d.pmt_streams.len(), 2, "the new PMT lists both tracks");
        let version = (out[before + PACKET_LEN + 10] >> 1) & 0x1F;
        assert_eq!(version, 1);
    }

    #[test]
    fn negative_composition_time_is_clamped_and_clock_wraps_at_33_bits() {
        let mut m = configured();
        let mut out = BytesMut::new();
        m.mux(
            MediaKind::Video,
            u32::MAX,
            &avc_frame(false, -40, &[&[0x41, 1]]),
            &mut out,
        );
        let pes = &demux(&out).pes[&VIDEO_PID][0];
        let want = (u64::from(u32::MAX) * 90 + PTS_DELAY) & TS_MASK;
        assert_eq!(pes.pts, Some(want));
    }
}
