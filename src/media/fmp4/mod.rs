//! Fragmented MP4 (CMAF) muxing for HLS: H.264, HEVC or AV1 and AAC from FLV/RTMP payloads to
//! an init segment and media segments. Sans-IO: payloads in, `Bytes` out.
//!
//! What [`Fmp4Muxer::mux_classified`] does with one message:
//! - a video sequence header (an AVCDecoderConfigurationRecord for H.264, legacy or
//!   Enhanced RTMP `avc1`; the HEVCDecoderConfigurationRecord of an Enhanced RTMP `hvc1`
//!   SequenceStart or a legacy codec-12 header; the AV1CodecConfigurationRecord of an
//!   `av01` SequenceStart) or an AAC AudioSpecificConfig is kept as it came: it goes into
//!   the init segment's `avcC`/`hvcC`/`av1C` or `esds` verbatim;
//! - an H.264/HEVC frame is already what an MP4 sample is (length-prefixed NALUs, the
//!   prefix size the record states), and so is an AV1 one (OBUs with their sizes, as
//!   Enhanced RTMP carries them): NALU lengths are checked and it is appended to the
//!   open fragment's video data with its decode time (the FLV timestamp), composition
//!   offset and sync flag (the FLV frame type);
//! - an AAC raw frame is appended to the fragment's audio data;
//! - anything else is ignored or skipped as the TS muxer does ([`Muxed`]), never a panic.
//!
//! [`Fmp4Muxer::init_segment`] writes `ftyp` + `moov` (`mvhd`, a `trak` per configured
//! track with an `avc1`/`hvc1`/`av01`/`mp4a` sample entry, `mvex` with a `trex` per track);
//! [`Fmp4Muxer::fragment`] writes the samples gathered since the last one as `moof`
//! (`mfhd`, per track a `traf` with `tfhd`, `tfdt` and `trun`: size, duration, flags,
//! composition offset) and one `mdat` (the video samples, then the audio ones).
//!
//! **Timescale.** 1000 for both tracks: FLV/RTMP timestamps and composition times are
//! whole milliseconds, so a finer clock would add no information, and decode times,
//! durations and offsets are the stream's own numbers. A sample's duration is the gap
//! to the next sample of its track; the last one of a fragment gets the gap to the next
//! fragment's first frame when the caller knows it, else its track's latest gap. `tfdt`
//! is 64-bit: the 32-bit millisecond clock is unwrapped, so decode times do not go back
//! when it wraps (after 49.7 days).
//!
//! **Picture size.** The visual sample entry's width and height come from the stream's
//! `onMetaData` (`width`, `height`) when it has them, else 0: decoders take the size
//! from the SPS inside `avcC`/`hvcC`, and no SPS is parsed here.
//!
//! **Why boxes by hand.** The boxes written are a fixed handful with a dozen fields
//! each; `mp4-atom` (the maintained box crate) would model them all for us but declares
//! a newer minimum Rust than this workspace and brings its own error and buffer types,
//! for about as many lines at the call sites as writing them takes here. Every box is
//! written with its size patched in after its contents ([`Boxes`]).
//!
//! **Bounds.** The samples of one fragment are held until it is written; the segmenter
//! cuts a fragment when [`Fmp4Muxer::pending_bytes`] reaches its segment cap, so a
//! fragment is at most the cap plus one frame. Decoder configurations over
//! [`MAX_CONFIG`] are refused as malformed.

use bytes::{Bytes, BytesMut};

use super::amf0::{self, Amf0Value};
use super::class::Class;
use super::flv::{self, AudioCodec, AudioPacket, AudioTag, FrameType, VideoCodec, VideoPacket};
use super::ts::{Carried, Muxed, Skip, Uncarried};

/// The largest decoder configuration record kept (real ones are a few hundred bytes).
pub const MAX_CONFIG: usize = 64 * 1024;
/// Both tracks' timescale: milliseconds (see the module documentation).
pub const TIMESCALE: u32 = 1000;
pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
/// Bytes each sample adds to a fragment's `trun` (video: size, duration, flags, offset).
const ENTRY_BYTES: usize = 16;
/// Sample data buffers are dropped after a fragment larger than this, so one huge
/// fragment does not pin its memory for the stream's life.
const KEEP: usize = 4 * 1024 * 1024;
/// The longest gap between two samples taken as a duration.
const MAX_GAP_MS: u32 = 1_000;

const SYNC: u32 = 0x0200_0000; // sample_depends_on = 2
const NON_SYNC: u32 = 0x0101_0000; // sample_depends_on = 1, is_non_sync_sample

/// The video codec of an fMP4 stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoFormat {
    Avc,
    Hevc,
    Av1,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct VideoConfig {
    format: VideoFormat,
    record: Bytes,
    length_size: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct AudioConfig {
    asc: Bytes,
    sample_rate: u32,
    channels: u16,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    dts: u32,
    /// `dts` on the 64-bit clock of `tfdt` ([`Fmp4Muxer::extend`]).
    dts64: u64,
    size: u32,
    cts: i32,
    sync: bool,
}

#[derive(Debug, Default)]
struct Track {
    samples: Vec<Sample>,
    data: BytesMut,
    /// The latest gap between two samples, the duration of a fragment's last sample when
    /// nothing follows it.
    gap: u32,
    last_dts: Option<u32>,
}

impl Track {
    fn push(&mut self, s: Sample, body: &[u8]) {
        if let Some(prev) = self.last_dts.replace(s.dts) {
            let gap = s.dts.wrapping_sub(prev);
            if gap > 0 && gap <= MAX_GAP_MS {
                self.gap = gap;
            }
        }
        self.samples.push(s);
        self.data.extend_from_slice(body);
    }

    fn pending(&self) -> usize {
        self.data.len() + self.samples.len() * ENTRY_BYTES
    }

    fn clear(&mut self) {
        self.samples.clear();
        if self.data.capacity() > KEEP {
            self.data = BytesMut::new();
        } else {
            self.data.clear();
        }
    }

    /// Per-sample durations: the gap to the next sample, the last one's to `next` (or the
    /// track's latest gap).
    fn durations(&self, next: Option<u32>, fallback: u32) -> impl Iterator<Item = u32> + '_ {
        let n = self.samples.len();
        (0..n).map(move |i| {
            let to = match self.samples.get(i + 1) {
                Some(s) => Some(s.dts),
                None => next,
            };
            match to.map(|t| t.wrapping_sub(self.samples[i].dts)) {
                Some(d) if d > 0 && d <= MAX_GAP_MS * 10 => d,
                _ => {
                    if self.gap > 0 {
                        self.gap
                    } else {
                        fallback
                    }
                }
            }
        })
    }
}

/// What fMP4 carries of a message of class `class`: H.264 or HEVC video frames of the
/// default track, AAC frames of the default track.
pub fn carried(class: &Class) -> Carried {
    match class {
        Class::Video(t)
            if video_format(t.codec).is_some()
                && t.track.is_none()
                && t.packet == VideoPacket::Frame
                && t.frame_type != FrameType::Command =>
        {
            Carried::VideoFrame {
                key: t.is_keyframe(),
            }
        }
        Class::Audio(t) if is_aac(t) && t.packet == AudioPacket::Raw => Carried::AudioFrame,
        _ => Carried::Other,
    }
}

/// The track of a message of class `class` fMP4 does not carry here: video other than
/// H.264, HEVC and AV1 (VP9, …), audio other than AAC. As [`super::ts::uncarried`],
/// command frames and the extra tracks of multitrack messages name no refusal.
pub fn uncarried(class: &Class) -> Option<Uncarried> {
    match class {
        Class::Video(t)
            if t.track.is_none()
                && t.codec != VideoCodec::Unstated
                && video_format(t.codec).is_none() =>
        {
            Some(Uncarried::Video(*t))
        }
        Class::Audio(t) if t.track.is_none() && !is_aac(t) => Some(Uncarried::Audio(*t)),
        _ => None,
    }
}

fn video_format(codec: VideoCodec) -> Option<VideoFormat> {
    match codec {
        VideoCodec::Avc => Some(VideoFormat::Avc),
        VideoCodec::Hevc => Some(VideoFormat::Hevc),
        VideoCodec::Av1 => Some(VideoFormat::Av1),
        _ => None,
    }
}

fn is_aac(t: &AudioTag) -> bool {
    (t.codec == AudioCodec::Aac || t.codec == AudioCodec::FourCc(*b"mp4a")) && t.track.is_none()
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Fmp4Muxer {
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    width: u16,
    height: u16,
    /// The init segment for the current configuration, made once.
    init: Option<Bytes>,
    /// Counts configuration changes (a new init segment).
    version: u64,
    vtrack: Track,
    atrack: Track,
    /// The latest timestamp and its value on the 64-bit decode clock.
    clock: Option<(u32, u64)>,
}

impl Fmp4Muxer {
    pub fn new() -> Fmp4Muxer {
        Fmp4Muxer::default()
    }

    pub fn video_configured(&self) -> bool {
        self.video.is_some()
    }

    pub fn audio_configured(&self) -> bool {
        self.audio.is_some()
    }

    pub fn video_format(&self) -> Option<VideoFormat> {
        self.video.as_ref().map(|v| v.format)
    }

    /// Forgets the configurations and any pending samples (a new publisher).
    pub fn reset(&mut self) {
        self.video = None;
        self.audio = None;
        self.width = 0;
        self.height = 0;
        self.changed();
        self.discard();
        self.clock = None;
    }

    fn changed(&mut self) {
        self.init = None;
        self.version = self.version.wrapping_add(1);
    }

    /// Changes with every new configuration (codec record, AudioSpecificConfig, picture
    /// size): an init segment made before it is stale.
    pub fn config_version(&self) -> u64 {
        self.version
    }

    /// Drops the samples gathered for the open fragment.
    pub fn discard(&mut self) {
        self.vtrack.clear();
        self.atrack.clear();
    }

    /// Bytes the open fragment will take (sample data and `trun` entries).
    pub fn pending_bytes(&self) -> usize {
        self.vtrack.pending() + self.atrack.pending()
    }

    /// Samples in the open fragment.
    pub fn pending_samples(&self) -> usize {
        self.vtrack.samples.len() + self.atrack.samples.len()
    }

    /// Reads `width`/`height` from an `onMetaData` payload for the next init segment.
    pub fn metadata(&mut self, payload: &[u8]) {
        let limits = amf0::Limits {
            max_depth: 4,
            max_values: 1024,
            max_string_len: 4096,
        };
        let Ok(values) = amf0::decode_all(payload, limits) else {
            return;
        };
        let Some(obj) = values.iter().find(|v| v.properties().is_some()) else {
            return;
        };
        let dim = |key: &str| {
            obj.get(key)
                .and_then(Amf0Value::as_f64)
                .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 65535.0)
                .map(|v| v as u16)
        };
        let (w, h) = (dim("width").unwrap_or(0), dim("height").unwrap_or(0));
        if (w, h) != (self.width, self.height) {
            self.width = w;
            self.height = h;
            self.changed();
        }
    }

    /// One message whose class is known; see the module documentation.
    pub fn mux_classified(&mut self, class: &Class, timestamp: u32, payload: &[u8]) -> Muxed {
        match class {
            Class::Video(tag) => {
                if tag.track.is_some() {
                    return Muxed::Ignored;
                }
                let Some(format) = video_format(tag.codec) else {
                    return Muxed::Skipped(Skip::Unsupported);
                };
                let data = if tag.enhanced {
                    flv::ex_video_data(payload).ok()
                } else {
                    payload
                        .get(2..5)
                        .map(|c| (5, i32::from_be_bytes([0, c[0], c[1], c[2]]) << 8 >> 8))
                };
                let Some((body, cts)) = data.and_then(|(at, cts)| Some((payload.get(at..)?, cts)))
                else {
                    return Muxed::Skipped(Skip::Malformed);
                };
                match tag.packet {
                    VideoPacket::SequenceHeader => self.video_config(format, body),
                    VideoPacket::Frame if tag.frame_type != FrameType::Command => {
                        self.video_frame(format, timestamp, tag.is_keyframe(), cts, body)
                    }
                    _ => Muxed::Ignored,
                }
            }
            Class::Audio(tag) => {
                if tag.track.is_some() {
                    return Muxed::Ignored;
                }
                if !is_aac(tag) {
                    return Muxed::Skipped(Skip::Unsupported);
                }
                let at = match tag.codec {
                    AudioCodec::Aac => Some(2),
                    _ => flv::ex_audio_data(payload).ok(),
                };
                let Some(body) = at.and_then(|at| payload.get(at..)) else {
                    return Muxed::Skipped(Skip::Malformed);
                };
                match tag.packet {
                    AudioPacket::SequenceHeader => self.audio_config(body),
                    AudioPacket::Raw => self.audio_frame(timestamp, body),
                    _ => Muxed::Ignored,
                }
            }
            Class::Metadata => {
                self.metadata(payload);
                Muxed::Ignored
            }
            Class::Data => Muxed::Ignored,
            Class::Unreadable => Muxed::Skipped(Skip::Malformed),
        }
    }

    /// Whether `payload` (a video sequence header of `format`) differs from the current
    /// configuration: the segmenter starts a new init segment then.
    fn video_config(&mut self, format: VideoFormat, record: &[u8]) -> Muxed {
        let Some(length_size) = parse_record(format, record) else {
            return Muxed::Skipped(Skip::Malformed);
        };
        let cfg = VideoConfig {
            format,
            record: Bytes::copy_from_slice(record),
            length_size,
        };
        if self.video.as_ref() != Some(&cfg) {
            self.video = Some(cfg);
            self.changed();
        }
        Muxed::Config
    }

    fn audio_config(&mut self, asc: &[u8]) -> Muxed {
        let Some((sample_rate, channels)) = parse_asc(asc) else {
            return Muxed::Skipped(Skip::Malformed);
        };
        let cfg = AudioConfig {
            asc: Bytes::copy_from_slice(asc),
            sample_rate,
            channels,
        };
        if self.audio.as_ref() != Some(&cfg) {
            self.audio = Some(cfg);
            self.changed();
        }
        Muxed::Config
    }

    fn video_frame(
        &mut self,
        format: VideoFormat,
        timestamp: u32,
        key: bool,
        cts: i32,
        body: &[u8],
    ) -> Muxed {
        let Some(cfg) = &self.video else {
            return Muxed::Skipped(Skip::NoSequenceHeader);
        };
        if cfg.format != format {
            return Muxed::Skipped(Skip::NoSequenceHeader);
        }
        if format != VideoFormat::Av1 && !nalus_fit(body, cfg.length_size) {
            return Muxed::Skipped(Skip::Malformed);
        }
        if body.is_empty() {
            return Muxed::Ignored;
        }
        let Ok(size) = u32::try_from(body.len()) else {
            return Muxed::Skipped(Skip::Malformed);
        };
        let dts64 = self.extend(timestamp);
        self.vtrack.push(
            Sample {
                dts: timestamp,
                dts64,
                size,
                cts,
                sync: key,
            },
            body,
        );
        Muxed::Video { keyframe: key }
    }

    fn audio_frame(&mut self, timestamp: u32, raw: &[u8]) -> Muxed {
        if self.audio.is_none() {
            return Muxed::Skipped(Skip::NoSequenceHeader);
        }
        if raw.is_empty() {
            return Muxed::Ignored;
        }
        let Ok(size) = u32::try_from(raw.len()) else {
            return Muxed::Skipped(Skip::Malformed);
        };
        let dts64 = self.extend(timestamp);
        self.atrack.push(
            Sample {
                dts: timestamp,
                dts64,
                size,
                cts: 0,
                sync: true,
            },
            raw,
        );
        Muxed::Audio
    }

    /// `ts` on the 64-bit decode clock: the 32-bit millisecond clock unwrapped (RTMP's
    /// wraps after 49.7 days; `tfdt` must not go back with it), steps read as signed.
    fn extend(&mut self, ts: u32) -> u64 {
        let ext = match self.clock {
            None => u64::from(ts),
            Some((last, ext)) => ext.saturating_add_signed(i64::from(ts.wrapping_sub(last) as i32)),
        };
        self.clock = Some((ts, ext));
        ext
    }

    /// The init segment for the configured tracks (`None` before any is configured);
    /// made once per configuration and shared.
    pub fn init_segment(&mut self) -> Option<Bytes> {
        if self.video.is_none() && self.audio.is_none() {
            return None;
        }
        if self.init.is_none() {
            self.init = Some(self.write_init());
        }
        self.init.clone()
    }

    fn write_init(&self) -> Bytes {
        let mut b = Boxes::new(1024);
        b.open(b"ftyp");
        b.put(b"iso6");
        b.u32(0);
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            b.put(brand);
        }
        b.close();
        b.open(b"moov");
        b.full(b"mvhd", 0, 0);
        b.u32(0); // creation
        b.u32(0); // modification
        b.u32(TIMESCALE);
        b.u32(0); // duration: unknown (fragmented)
        b.u32(0x0001_0000); // rate 1.0
        b.u16(0x0100); // volume 1.0
        b.zeros(10);
        b.matrix();
        b.zeros(24);
        b.u32(AUDIO_TRACK + 1); // next track id
        b.close();
        if let Some(v) = &self.video {
            self.video_trak(&mut b, v);
        }
        if let Some(a) = &self.audio {
            audio_trak(&mut b, a);
        }
        b.open(b"mvex");
        for (id, present) in [
            (VIDEO_TRACK, self.video.is_some()),
            (AUDIO_TRACK, self.audio.is_some()),
        ] {
            if present {
                b.full(b"trex", 0, 0);
                b.u32(id);
                b.u32(1); // sample description index
                b.u32(0); // default duration
                b.u32(0); // default size
                b.u32(0); // default flags
                b.close();
            }
        }
        b.close();
        b.close();
        b.finish()
    }

    fn video_trak(&self, b: &mut Boxes, v: &VideoConfig) {
        b.open(b"trak");
        tkhd(b, VIDEO_TRACK, false, self.width, self.height);
        b.open(b"mdia");
        mdhd_hdlr(b, b"vide", b"VideoHandler\0");
        b.open(b"minf");
        b.full(b"vmhd", 0, 1);
        b.zeros(8);
        b.close();
        dinf(b);
        b.open(b"stbl");
        b.full(b"stsd", 0, 0);
        b.u32(1);
        b.open(match v.format {
            VideoFormat::Avc => b"avc1",
            VideoFormat::Hevc => b"hvc1",
            VideoFormat::Av1 => b"av01",
        });
        b.zeros(6);
        b.u16(1); // data reference index
        b.zeros(16); // pre-defined, reserved
        b.u16(self.width);
        b.u16(self.height);
        b.u32(0x0048_0000); // 72 dpi
        b.u32(0x0048_0000);
        b.u32(0);
        b.u16(1); // frame count
        b.zeros(32); // compressor name
        b.u16(0x0018); // depth
        b.u16(0xFFFF); // pre-defined -1
        b.open(match v.format {
            VideoFormat::Avc => b"avcC",
            VideoFormat::Hevc => b"hvcC",
            VideoFormat::Av1 => b"av1C",
        });
        b.put(&v.record);
        b.close();
        b.close();
        b.close(); // stsd
        empty_tables(b);
        b.close(); // stbl
        b.close(); // minf
        b.close(); // mdia
        b.close(); // trak
    }

    /// Writes the samples gathered since the last fragment as `moof` + `mdat`, numbered
    /// `sequence`; `next` is the first timestamp after them, if known. `None` when no
    /// sample is pending.
    pub fn fragment(&mut self, sequence: u64, next: Option<u32>) -> Option<Bytes> {
        if self.pending_samples() == 0 {
            return None;
        }
        let data_len = self.vtrack.data.len() + self.atrack.data.len();
        let mut b = Boxes::new(data_len + 256 + self.pending_samples() * ENTRY_BYTES);
        b.open(b"moof");
        b.full(b"mfhd", 0, 0);
        b.u32((sequence as u32).wrapping_add(1));
        b.close();
        let mut offsets = Vec::with_capacity(2);
        for (id, track, fallback) in [
            (VIDEO_TRACK, &self.vtrack, 40),
            (AUDIO_TRACK, &self.atrack, 23),
        ] {
            if track.samples.is_empty() {
                continue;
            }
            let video = id == VIDEO_TRACK;
            b.open(b"traf");
            b.full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
            b.u32(id);
            b.close();
            b.full(b"tfdt", 1, 0);
            b.u64(track.samples[0].dts64);
            b.close();
            // data offset, duration, size; video adds flags and composition offsets.
            let flags = if video { 0x0F01 } else { 0x0301 };
            b.full(b"trun", u8::from(video), flags);
            b.u32(track.samples.len() as u32);
            offsets.push((b.buf.len(), track.data.len()));
            b.u32(0); // data offset, patched below
                      // Video's `next` is the following fragment's first frame (it is cut at a
                      // keyframe); audio's last sample keeps its track's gap.
            let next = if video { next } else { None };
            for (s, d) in track.samples.iter().zip(track.durations(next, fallback)) {
                b.u32(d);
                b.u32(s.size);
                if video {
                    b.u32(if s.sync { SYNC } else { NON_SYNC });
                    b.u32(s.cts as u32);
                }
            }
            b.close(); // trun
            b.close(); // traf
        }
        b.close(); // moof
        let moof_len = b.buf.len();
        let mut at = moof_len + 8;
        for (pos, len) in offsets {
            let off = u32::try_from(at).unwrap_or(u32::MAX);
            b.buf[pos..pos + 4].copy_from_slice(&off.to_be_bytes());
            at += len;
        }
        b.open(b"mdat");
        b.put(&self.vtrack.data);
        b.put(&self.atrack.data);
        b.close();
        self.discard();
        Some(b.finish())
    }
}

mod boxes;
mod records;
#[cfg(test)]
pub(crate) mod tests;

use boxes::*;
use records::*;
