//! FLV tags and what their payloads declare: the input is read as back-to-back FLV tags
//! (as an RTMP aggregate message carries them), each payload's audio/video header is
//! parsed (legacy and Enhanced RTMP v1/v2: FourCCs, ModEx blocks, multitrack, command
//! frames, video metadata; H.264/HEVC/AAC sequence headers), packaged for both playback
//! protocols, fed to a GOP cache with small caps, muxed to MPEG-TS, which reads
//! AVCDecoderConfigurationRecords (SPS/PPS counts and lengths) and AAC
//! AudioSpecificConfigs, and fed to an HLS segmenter, which refuses a stream with a codec
//! TS does not carry.
//!
//! Must never panic, and what is held must stay within its bounds: the GOP cache at its
//! frame and byte caps (plus the message that crossed them), a sequence header or
//! metadata slot at `MAX_SLOT_BYTES`, the TS output proportional to the input, and a
//! refused segmenter holding no open segment.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use liveshard::media::flv::{read_tag, AudioTag, VideoTag};
use liveshard::media::gop::{GopCache, GopLimits, MAX_SLOT_BYTES, SLOTS};
use liveshard::media::hls::{HlsConfig, Segmenter};
use liveshard::media::ts::TsMuxer;
use liveshard::media::{MediaKind, MediaMessage, Packaged};

const LIMITS: GopLimits = GopLimits {
    max_frames: 32,
    max_bytes: 64 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    let mut gop = GopCache::new(LIMITS);
    let mut mux = TsMuxer::new();
    let mut out = BytesMut::new();
    let mut hls = Segmenter::new(
        "f",
        HlsConfig {
            target_ms: 1000,
            window: 3,
            max_segment_bytes: 64 * 1024,
            fmp4: false,
            part_ms: 0,
        },
        0,
    );
    loop {
        let (tag, used) = match read_tag(&rest) {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => break,
        };
        assert!(used <= rest.len());
        rest = rest.slice(used..);
        let Some(kind) = MediaKind::from_type_id(tag.tag_type) else {
            continue;
        };
        match kind {
            MediaKind::Video => {
                if let Ok(t) = VideoTag::parse(&tag.payload) {
                    // A keyframe is a picture: never configuration or metadata.
                    assert!(!(t.is_keyframe() && t.is_sequence_header()));
                }
            }
            MediaKind::Audio => {
                let _ = AudioTag::parse(&tag.payload).map(|t| t.is_aac_sequence_header());
            }
            MediaKind::Data => {}
        }
        let msg = MediaMessage {
            kind,
            timestamp: tag.timestamp,
            payload: tag.payload.clone(),
        };
        let Ok(p) = Packaged::new(&msg) else { continue };
        assert_eq!(p.payload(), tag.payload);
        // Data tags: metadata (the single slot) or other data (joins the GOP), by the
        // timestamp's low bit.
        if kind == MediaKind::Data && tag.timestamp & 1 == 0 {
            gop.set_metadata(p.clone());
        } else {
            gop.push(p.clone());
        }
        assert!(gop.gop_len() <= LIMITS.max_frames);
        assert!(gop.gop_bytes() <= LIMITS.max_bytes);
        if let Some(m) = gop.metadata() {
            assert!(m.held_bytes() <= MAX_SLOT_BYTES);
        }
        let before = out.len();
        let _ = mux.mux(kind, tag.timestamp, &tag.payload, &mut out);
        // A frame's PES: its payload grown by start codes and ADTS/AUD headers, plus the
        // parameter sets (at most 64 KiB) and the tables, in 188-byte packets.
        assert!(out.len() - before <= 3 * tag.payload.len() + 70 * 1024 + 4 * 188);
        if out.len() > 1 << 20 {
            out.clear();
        }
        let was_refused = hls.refused().is_some();
        let pushed = hls.push_packaged(&p);
        if hls.refused().is_some() {
            assert_eq!(pushed.finished, 0, "a refused stream makes no segment");
            if was_refused {
                assert_eq!(pushed.skipped, None, "counted once");
            }
        }
        // At most 2 × window finished segments and the open one, each cut at its byte cap
        // plus one frame.
        let segment_max = 64 * 1024 + 3 * data.len() + 70 * 1024 + 4 * 188;
        assert!(hls.held_bytes() <= 7 * segment_max);
    }
    let start: usize = gop.flv_start().iter().map(Bytes::len).sum();
    assert!(start <= 13 + SLOTS * MAX_SLOT_BYTES + LIMITS.max_bytes);
});
