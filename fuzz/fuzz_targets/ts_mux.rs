//! The HLS path on arbitrary FLV-like input: messages cut from the input (kind, timestamp
//! step forwards or backwards, payload) feed a `Segmenter`, and through it the `TsMuxer`,
//! interleaved with the lifecycle calls the server makes (finish, end, resume, and a
//! hand-over of the history to a new segmenter that adopts it). With bit 7 of the first
//! byte set, valid H.264 and AAC sequence headers lead, so frames get past the "no
//! sequence header" check and reach NALU parsing, Annex B, ADTS and packetizing.
//!
//! Must never panic, and what comes out must stay well-formed and bounded: every segment
//! whole 188-byte packets with their sync byte, at most `2 × window` segments held, at
//! most `window` listed, each no larger than the byte cap plus one message's packets.
//!
//! Input: byte 0 = flags (target duration, window, first sequence, headers), then records
//! of `op (1) | step (2, BE) | len (2, BE) | payload (len)`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "segmenter_ops.rs"]
mod segmenter_ops;
use liveshard::media::hls::{HlsConfig, Segmenter};
use liveshard::media::MediaKind;

const MAX_SEGMENT: usize = 8 * 1024;

/// An AVC sequence header (one SPS, one PPS, 4-byte NALU lengths) and an AAC LC one.
const AVC_HEADER: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE,
];
const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

fn check(seg: &Segmenter, window: usize) {
    let mut held = 0;
    for s in seg.segments() {
        held += 1;
        assert!(!s.data.is_empty());
        if s.init.is_some() {
            // HEVC or AV1 input switches the publisher to fMP4 (the `fmp4_mux` target).
            assert!(s.data.len() <= MAX_SEGMENT + 128 * 1024);
            continue;
        }
        assert_eq!(s.data.len() % 188, 0);
        assert!(s.data.chunks(188).all(|p| p[0] == 0x47));
        // The cap, plus one message of at most 64 KiB: Annex B start codes can grow tiny
        // NALUs 2.5 times, parameter sets come from a header of up to 64 KiB.
        assert!(s.data.len() <= MAX_SEGMENT + 512 * 1024);
    }
    assert!(held <= 2 * window);
    assert!(seg.listed() <= window);
    let text = seg.playlist();
    let text = std::str::from_utf8(&text).expect("the playlist is text");
    assert!(text.starts_with("#EXTM3U\n"));
    assert!(text.matches("#EXTINF:").count() <= window);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let window = 1 + usize::from((flags >> 4) & 0x03);
    let cfg = HlsConfig {
        target_ms: 1 + u32::from(flags & 0x0F) * 250,
        window,
        max_segment_bytes: MAX_SEGMENT,
        fmp4: false,
        part_ms: 0,
    };
    let first = if flags & 0x40 != 0 { u64::MAX - 2 } else { 0 };
    let mut seg = Segmenter::new("fuzz", cfg, first);
    if flags & 0x80 != 0 {
        seg.push(MediaKind::Video, 0, AVC_HEADER);
        seg.push(MediaKind::Audio, 0, AAC_HEADER);
    }
    segmenter_ops::drive(&mut seg, cfg, first, rest, |seg| check(seg, window));
    seg.end();
    check(&seg, window);
});
