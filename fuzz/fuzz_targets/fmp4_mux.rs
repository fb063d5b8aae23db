//! The fMP4 HLS path on arbitrary FLV-like input: messages cut from the input (kind,
//! timestamp step forwards or backwards, payload) feed a `Segmenter` making fMP4 segments
//! (`media.hls_fmp4`, or an HEVC header), and through it the `Fmp4Muxer`,
//! interleaved with the lifecycle calls the server makes (finish, end, resume, and a
//! hand-over of the history to a new segmenter that adopts it). With bit 7 of the first
//! byte set, valid H.264 (or, with bit 6, HEVC) and AAC sequence headers lead, so frames
//! get past the "no sequence header" check and reach NALU checks and the box writer.
//!
//! Must never panic, and what comes out must stay well-formed and bounded: every fMP4
//! segment a `moof` then an `mdat` whose sizes tile it, its init segment `ftyp` + `moov`,
//! at most `2 × window` segments held, at most `window` listed, each no larger than the
//! byte cap plus one message.
//!
//! With LL-HLS parts (byte 1), a segment must be its parts end to end, and every part and
//! init segment the playlist names must be served.
//!
//! Input: byte 0 = flags (target duration, window, first sequence, headers), byte 1 = the
//! part target in tenths of a second (low nibble; 0: no parts), then records
//! of `op (1) | step (2, BE) | len (2, BE) | payload (len)`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "segmenter_ops.rs"]
mod segmenter_ops;
use liveshard::media::hls::{HlsConfig, PartState, Position, Segmenter};
use liveshard::media::MediaKind;

const MAX_SEGMENT: usize = 8 * 1024;

/// An AVC sequence header (one SPS, one PPS, 4-byte NALU lengths), an Enhanced RTMP HEVC
/// SequenceStart (a record with no arrays) and an AAC LC one.
const AVC_HEADER: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE,
];
const HEVC_HEADER: &[u8] = &[
    0x90, b'h', b'v', b'c', b'1', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0x0F, 0,
];
const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

/// Box sizes tile `data`; returns the boxes' types.
fn boxes(mut data: &[u8]) -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 8);
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert!(size >= 8 && size <= data.len());
        out.push([data[4], data[5], data[6], data[7]]);
        data = &data[size..];
    }
    out
}

fn check(seg: &Segmenter, window: usize) {
    let mut held = 0;
    for s in seg.segments() {
        held += 1;
        assert!(!s.data.is_empty());
        match &s.init {
            Some(init) if !s.parts.is_empty() => {
                // LL-HLS: the segment is its parts end to end, each a `moof` + `mdat`.
                let mut joined = Vec::new();
                for p in &s.parts {
                    assert_eq!(boxes(&p.data), [*b"moof", *b"mdat"]);
                    joined.extend_from_slice(&p.data);
                }
                assert_eq!(joined, &s.data[..]);
                assert_eq!(boxes(init), [*b"ftyp", *b"moov"]);
                assert!(seg.init_segment(s.init_seq).is_some());
            }
            Some(init) => {
                assert_eq!(boxes(&s.data), [*b"moof", *b"mdat"]);
                assert_eq!(boxes(init), [*b"ftyp", *b"moov"]);
                assert!(seg.init_segment(s.init_seq).is_some());
                // The cap, plus one message of at most 64 KiB and its `trun` entry.
                assert!(s.data.len() <= MAX_SEGMENT + 128 * 1024);
            }
            None => assert_eq!(s.data.len() % 188, 0),
        }
    }
    assert!(held <= 2 * window);
    assert!(seg.listed() <= window);
    let text = seg.playlist();
    let text = std::str::from_utf8(&text).expect("the playlist is text");
    assert!(text.starts_with("#EXTM3U\n"));
    assert!(text.matches("#EXTINF:").count() <= window);
    // Every part and init segment named is served.
    for line in text.lines() {
        let Some(uri) = line.split("URI=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let Some(stem) = uri.strip_prefix("fuzz-") else {
            panic!("{uri}");
        };
        if let Some(init) = stem.strip_suffix(".mp4") {
            assert!(seg.init_segment(init.parse().unwrap()).is_some(), "{uri}\n{text}");
        } else if line.starts_with("#EXT-X-PART:") {
            let (msn, part) = stem.strip_suffix(".m4s").unwrap().split_once('.').unwrap();
            let at = Position {
                msn: msn.parse().unwrap(),
                part: part.parse().unwrap(),
            };
            assert!(matches!(seg.part(at), PartState::Ready(_)), "{uri}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&parts, rest)) = rest.split_first() else {
        return;
    };
    let window = 1 + usize::from((flags >> 4) & 0x03);
    let cfg = HlsConfig {
        target_ms: 1 + u32::from(flags & 0x0F) * 250,
        window,
        max_segment_bytes: MAX_SEGMENT,
        fmp4: true,
        // LL-HLS parts of 0 (none) to 1.5 s.
        part_ms: u32::from(parts & 0x0F) * 100,
    };
    let first = 0;
    let mut seg = Segmenter::new("fuzz", cfg, first);
    if flags & 0x80 != 0 {
        let video = if flags & 0x40 != 0 {
            HEVC_HEADER
        } else {
            AVC_HEADER
        };
        seg.push(MediaKind::Video, 0, video);
        seg.push(MediaKind::Audio, 0, AAC_HEADER);
    }
    segmenter_ops::drive(&mut seg, cfg, first, rest, |seg| check(seg, window));
    seg.end();
    check(&seg, window);
});
