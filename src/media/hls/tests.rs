//! The segmenter's unit tests.

use super::*;
use crate::media::ts::tests::{aac_header, avc_frame, avc_header, demux};
use crate::media::ts::{AUDIO_PID, VIDEO_PID};

pub(super) fn cfg(target_ms: u32, window: usize) -> HlsConfig {
    HlsConfig {
        target_ms,
        window,
        max_segment_bytes: 1024 * 1024,
        fmp4: false,
        part_ms: 0,
    }
}

/// A synthetic publisher: 25 fps video with a keyframe every `gop` frames and AAC
/// every ~23 ms, interleaved by timestamp as RTMP sends them.
pub(super) struct Source {
    frame: u32,
    gop: u32,
    audio_ms: u32,
    base: u32,
}

impl Source {
    pub(super) fn new(gop: u32) -> Self {
        Source {
            frame: 0,
            gop,
            audio_ms: 0,
            base: 0,
        }
    }

    pub(super) fn headers(&self, s: &mut Segmenter) {
        assert_eq!(s.push(MediaKind::Video, 0, &avc_header()).skipped, None);
        assert_eq!(s.push(MediaKind::Audio, 0, &aac_header()).skipped, None);
    }

    /// Feeds `ms` of media; returns the segments finished.
    pub(super) fn run(&mut self, s: &mut Segmenter, ms: u32) -> u32 {
        let end = self.frame * 40 + ms;
        let mut finished = 0;
        while self.frame * 40 < end {
            let vts = self.frame * 40;
            while self.audio_ms <= vts {
                let p = s.push(
                    MediaKind::Audio,
                    self.base + self.audio_ms,
                    &[0xAF, 1, 0x21, 0x10, 0x05],
                );
                assert_eq!(p.skipped, None);
                finished += p.finished;
                self.audio_ms += 23;
            }
            let key = self.frame % self.gop == 0;
            let nalu: &[u8] = if key {
                &[0x65, 0x88, 1, 2]
            } else {
                &[0x41, 0x9A, 3]
            };
            let p = s.push(
                MediaKind::Video,
                self.base + vts,
                &avc_frame(key, 40, &[nalu]),
            );
            assert_eq!(p.skipped, None);
            finished += p.finished;
            self.frame += 1;
        }
        finished
    }
}

pub(super) fn lines(s: &Segmenter) -> Vec<String> {
    String::from_utf8(s.playlist().to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn tag_value(s: &Segmenter, tag: &str) -> Option<String> {
    lines(s)
        .into_iter()
        .find_map(|l| l.strip_prefix(&format!("{tag}:")).map(str::to_string))
}

#[test]
fn each_segment_has_its_program_date_time_on_the_stream_clock() {
    let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
    let mut src = Source::new(25);
    src.headers(&mut s);
    // 2024-11-23T04:41:18.901Z is 1_732_336_878_901 ms since the epoch.
    s.set_epoch(Some(1_732_336_878_901));
    src.run(&mut s, 6000);
    let l = lines(&s);
    let pdts: Vec<&String> = l
        .iter()
        .filter(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME:"))
        .collect();
    assert_eq!(pdts.len(), 2, "{l:?}");
    assert_eq!(pdts[0], "#EXT-X-PROGRAM-DATE-TIME:2024-11-23T04:41:18.901Z");
    assert_eq!(pdts[1], "#EXT-X-PROGRAM-DATE-TIME:2024-11-23T04:41:20.901Z");
    // Each PDT line is followed by the segment's EXTINF with its stream time.
    let i = l.iter().position(|x| x == pdts[1]).unwrap();
    assert_eq!(l[i + 1], "#EXTINF:2.000,t=2000");
    let segs: Vec<_> = s.segments().map(|x| (x.start_ms, x.pdt_ms)).collect();
    assert_eq!(
        segs,
        [
            (0, Some(1_732_336_878_901)),
            (2000, Some(1_732_336_880_901))
        ]
    );
    let mut out = String::new();
    write_date_time(&mut out, 951_782_400_000 + 86_400_000 - 1);
    assert_eq!(out, "2000-02-29T23:59:59.999Z", "a leap day");
}

#[test]
fn segments_are_cut_at_the_first_keyframe_after_the_target() {
    let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
    let mut src = Source::new(25);
    src.headers(&mut s);
    assert_eq!(src.run(&mut s, 6500), 3);
    let segs: Vec<_> = s.segments().cloned().collect();
    assert_eq!(
        segs.iter().map(|s| s.sequence).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(segs.iter().all(|s| s.duration_ms == 2000), "{segs:?}");
    for seg in &segs {
        let d = demux(&seg.data);
        assert_eq!(d.pmt_streams.len(), 2, "PAT and PMT first");
        assert_eq!(d.random_access.first(), Some(&VIDEO_PID));
        let video = &d.pes[&VIDEO_PID];
        assert_eq!(video.len(), 50);
        assert!(video[0].data.windows(5).any(|w| w == [0, 0, 1, 0x65, 0x88]));
        assert!(d.pes[&AUDIO_PID].len() >= 85);
    }
    let text = String::from_utf8(s.playlist().to_vec()).unwrap();
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:2.000,\ncam-0.ts\n#EXTINF:2.000,\ncam-1.ts\n#EXTINF:2.000,\ncam-2.ts\n"
    );
}

#[test]
fn the_window_slides_and_old_segments_stay_fetchable_for_a_while() {
    let mut s = Segmenter::new("cam", cfg(1000, 3), 100);
    let mut src = Source::new(25);
    src.headers(&mut s);
    src.run(&mut s, 12_500);
    assert_eq!(s.stats().segments, 12);
    assert_eq!(s.listed(), 3);
    assert_eq!(
        tag_value(&s, "#EXT-X-MEDIA-SEQUENCE").as_deref(),
        Some("109")
    );
    let uris: Vec<_> = lines(&s)
        .into_iter()
        .filter(|l| l.ends_with(".ts"))
        .collect();
    assert_eq!(uris, vec!["cam-109.ts", "cam-110.ts", "cam-111.ts"]);
    // Held: the listed three and three before them.
    assert!(s.segment(106).is_some());
    assert!(s.segment(105).is_none());
    assert!(s.segment(112).is_none(), "the open segment is not served");
    assert_eq!(s.segments().count(), 6);
}

#[test]
fn a_stream_starts_on_its_first_keyframe() {
    let mut s = Segmenter::new("cam", cfg(1000, 3), 0);
    s.push(MediaKind::Video, 0, &avc_header());
    s.push(MediaKind::Audio, 0, &aac_header());
    // Joined mid-GOP: two inter frames and audio before the keyframe.
    s.push(MediaKind::Video, 0, &avc_frame(false, 0, &[&[0x41, 1]]));
    s.push(MediaKind::Audio, 10, &[0xAF, 1, 1, 2]);
    s.push(MediaKind::Video, 40, &avc_frame(false, 0, &[&[0x41, 1]]));
    assert_eq!(s.held_bytes(), 0, "nothing before the keyframe");
    s.push(MediaKind::Video, 80, &avc_frame(true, 0, &[&[0x65, 1]]));
    s.push(MediaKind::Audio, 90, &[0xAF, 1, 1, 2]);
    assert!(s.finish());
    let seg = s.segment(0).unwrap();
    let d = demux(&seg);
    assert_eq!(d.pes[&VIDEO_PID].len(), 1);
    assert_eq!(d.pes[&AUDIO_PID].len(), 1);
    assert_eq!(s.stats().skipped, 0, "waiting is not an error");
}

#[test]
fn long_gops_make_long_segments_and_the_target_duration_says_so() {
    let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
    let mut src = Source::new(125); // a keyframe every 5 s
    src.headers(&mut s);
    src.run(&mut s, 11_000);
    assert!(s.segments().all(|seg| seg.duration_ms == 5000));
    assert_eq!(tag_value(&s, "#EXT-X-TARGETDURATION").as_deref(), Some("5"));
}

#[test]
fn end_finishes_the_open_segment_and_adds_endlist() {
    let mut s = Segmenter::new("cam", cfg(2000, 6), 0);
    let mut src = Source::new(25);
    src.headers(&mut s);
    src.run(&mut s, 3000);
    assert_eq!(s.segments().count(), 1);
    assert!(s.end());
    let segs: Vec<_> = s.segments().cloned().collect();
    assert_eq!(segs.len(), 2);
    // The last frame was at 2960 ms; one frame interval after it.
    assert_eq!(segs[1].duration_ms, 1000);
    assert_eq!(lines(&s).last().map(String::as_str), Some("#EXT-X-ENDLIST"));
    // Ended: input is ignored.
    assert_eq!(src.run(&mut s, 3000), 0);
    assert_eq!(s.segments().count(), 2);
}

#[test]
fn a_resumed_publisher_follows_a_discontinuity() {
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    let mut src = Source::new(25);
    src.headers(&mut s);
    src.run(&mut s, 2500);
    s.finish();
    s.resume();
    // The new publisher starts its clock at 0 and sends its headers again.
    let mut src = Source::new(25);
    src.headers(&mut s);
    src.run(&mut s, 2500);
    let text = String::from_utf8(s.playlist().to_vec()).unwrap();
    let disc = text
        .find("#EXT-X-DISCONTINUITY\n")
        .expect("a discontinuity");
    assert!(text[..disc].contains("cam-2.ts"));
    assert!(text[disc..].starts_with("#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\ncam-3.ts"));
}

#[test]
fn a_timestamp_jump_is_a_discontinuity_and_counted_when_it_slides_out() {
    let mut s = Segmenter::new("cam", cfg(1000, 2), 0);
    let mut src = Source::new(25);
    src.headers(&mut s);
    src.run(&mut s, 2500);
    src.base = 1_000_000;
    src.run(&mut s, 2500);
    assert_eq!(s.stats().jumps, 1);
    assert!(s.segments().any(|seg| seg.discontinuity));
    assert!(s.segments().all(|seg| seg.duration_ms <= 1000));
    src.run(&mut s, 6000);
    assert_eq!(
        tag_value(&s, "#EXT-X-DISCONTINUITY-SEQUENCE").as_deref(),
        Some("1")
    );
}

#[test]
fn a_segment_at_the_byte_cap_is_cut_without_a_keyframe() {
    let mut s = Segmenter::new(
        "cam",
        HlsConfig {
            target_ms: 2000,
            window: 6,
            max_segment_bytes: 20_000,
            fmp4: false,
            part_ms: 0,
        },
        0,
    );
    s.push(MediaKind::Video, 0, &avc_header());
    let big = vec![0x41u8; 3000];
    s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
    let mut finished = 0;
    for i in 1..100u32 {
        finished += s
            .push(MediaKind::Video, i * 40, &avc_frame(false, 0, &[&big]))
            .finished;
    }
    assert!(finished >= 10);
    assert_eq!(s.stats().forced_cuts, u64::from(finished));
    assert!(s
        .segments()
        .all(|seg| seg.data.len() <= 20_000 + 4000 && seg.data.len() % 188 == 0));
}

#[test]
fn audio_only_streams_are_cut_on_time() {
    let mut s = Segmenter::new("radio", cfg(1000, 6), 0);
    s.push(MediaKind::Audio, 0, &aac_header());
    let mut finished = 0;
    for i in 0..200u32 {
        finished += s
            .push(MediaKind::Audio, i * 23, &[0xAF, 1, 1, 2, 3])
            .finished;
    }
    assert_eq!(finished, 4);
    let seg = s.segment(0).unwrap();
    let d = demux(&seg);
    assert_eq!(d.pcr_pid, Some(AUDIO_PID));
    assert!(!d.pes.contains_key(&VIDEO_PID));
    assert!(s
        .segments()
        .all(|seg| (1000..1030).contains(&seg.duration_ms)));
}

#[test]
fn unusable_input_is_skipped_and_counted() {
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    let p = s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
    assert_eq!(p.skipped, Some(Skip::NoSequenceHeader));
    s.push(MediaKind::Video, 0, &avc_header());
    let mut bad = avc_frame(true, 0, &[&[0x65, 1]]);
    bad[5] = 0x7F; // a NALU length far past the end
    assert_eq!(
        s.push(MediaKind::Video, 0, &bad).skipped,
        Some(Skip::Malformed)
    );
    assert_eq!(
        s.push(MediaKind::Video, 0, &[]).skipped,
        Some(Skip::Malformed)
    );
    assert_eq!(s.stats().skipped, 3);
    assert!(!s.finish(), "a segment with no frames is not a segment");
    assert_eq!(s.segments().count(), 0);
}

#[test]
fn an_av1_or_vp9_stream_is_refused_whole_not_served_as_its_audio() {
    for cc in [*b"vp09", *b"vp08"] {
        let video = |b0: u8| {
            let mut v = vec![b0];
            v.extend(cc);
            v.extend([0, 0, 0, 1]);
            v
        };
        let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
        // ffmpeg's order: SequenceStart, the AAC config, then frames of both tracks.
        let p = s.push(MediaKind::Video, 0, &video(0x90));
        assert_eq!(p.skipped, Some(Skip::Unsupported));
        let refused = s.refused().expect("refused at the sequence header");
        assert!(matches!(refused, Uncarried::Video(_)));
        s.push(MediaKind::Audio, 0, &aac_header());
        for i in 0..200u32 {
            s.push(MediaKind::Audio, i * 23, &[0xAF, 1, 1, 2, 3]);
            if i % 10 == 0 {
                s.push(MediaKind::Video, i * 23, &video(0x91));
            }
        }
        assert!(!s.finish());
        assert_eq!(s.segments().count(), 0, "no audio-only segments");
        assert_eq!(s.stats().skipped, 1, "counted once");
        // A new publisher with H.264 is served again.
        s.resume();
        assert_eq!(s.refused(), None);
        s.push(MediaKind::Video, 0, &avc_header());
        s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
        s.push(MediaKind::Video, 1000, &avc_frame(true, 0, &[&[0x65, 1]]));
        assert_eq!(s.segments().count(), 1);
    }
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, &[0x12, 0, 0, 0, 0]);
    assert_eq!(s.refused().unwrap().to_string(), "FLV video codec 2 video");
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, &avc_header());
    s.push(MediaKind::Audio, 0, b"\x90Opus\x00");
    assert_eq!(s.refused().unwrap().to_string(), "Enhanced RTMP Opus audio");
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, b"\x90vp09\x01");
    assert_eq!(s.refused().unwrap().to_string(), "VP9 video");
    // AV1 is fMP4.
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, b"\x90av01\x81\x08\x0c\x00");
    assert_eq!(s.refused(), None);
    assert_eq!(s.format(), Format::Fmp4);
    // An Enhanced RTMP command frame names no codec: no refusal.
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, &[0xD1, 0]);
    assert_eq!(s.refused(), None);
}

#[test]
fn an_extra_track_in_multitrack_form_is_left_out_not_a_refusal() {
    // ffmpeg sends a second AAC track as multitrack `mp4a` (track 1).
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, &avc_header());
    s.push(MediaKind::Audio, 0, &aac_header());
    s.push(MediaKind::Audio, 0, b"\x95\x00mp4a\x01\x12\x08");
    for i in 0..30u32 {
        let ts = i * 100;
        s.push(
            MediaKind::Video,
            ts,
            &avc_frame(i % 10 == 0, 0, &[&[0x65, 1]]),
        );
        s.push(MediaKind::Audio, ts, &[0xAF, 1, 1, 2, 3]);
        let p = s.push(MediaKind::Audio, ts, b"\x95\x01mp4a\x01\x21\x22");
        assert_eq!(p.skipped, None);
    }
    assert_eq!(s.refused(), None);
    assert_eq!(s.segments().count(), 2);
    assert_eq!(s.stats().skipped, 0);
}

#[test]
fn a_new_owner_adopts_the_history_and_numbering() {
    let mut old = Segmenter::new("cam", cfg(1000, 6), 500);
    let mut src = Source::new(25);
    src.headers(&mut old);
    src.run(&mut old, 3500);
    let history = old.take_history();
    assert!(!history.is_empty());
    assert_eq!(old.segments().count(), 0);

    let mut new = Segmenter::new("cam", cfg(1000, 6), 9_000);
    let mut src = Source::new(25);
    src.headers(&mut new);
    src.run(&mut new, 1500);
    new.adopt(history);
    src.run(&mut new, 1000);
    let seqs: Vec<_> = new.segments().map(|s| s.sequence).collect();
    assert_eq!(seqs, vec![500, 501, 502, 503, 504, 505]);
    let disc: Vec<_> = new.segments().map(|s| s.discontinuity).collect();
    assert_eq!(disc, vec![false, false, false, false, true, false]);
    assert_eq!(new.segment(504).map(|b| b.len() % 188), Some(0));
}

#[test]
fn sequence_lookups_never_panic() {
    let s = Segmenter::new("cam", cfg(1000, 6), u64::MAX - 1);
    assert!(s.segment(0).is_none());
    assert!(s.segment(u64::MAX).is_none());
    assert_eq!(
        tag_value(&s, "#EXT-X-MEDIA-SEQUENCE").as_deref(),
        Some(&*(u64::MAX - 1).to_string())
    );
}

// --- fMP4 ---------------------------------------------------------------------------

use crate::media::fmp4::tests::{boxes, child};

fn hevc_record() -> Vec<u8> {
    let mut r = vec![1u8; 22];
    r[21] = 0x0F; // 4-byte NALU lengths
    r.push(0);
    r
}

fn hvc(b0: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    v.extend(b"hvc1");
    v.extend(rest);
    v
}

/// 25 fps HEVC with a keyframe every `gop` frames and AAC, from `from` ms for `ms`.
fn hevc_run(s: &mut Segmenter, from: u32, ms: u32, gop: u32) -> u32 {
    let mut finished = 0;
    let mut audio = from;
    for f in 0..ms / 40 {
        let ts = from + f * 40;
        while audio <= ts {
            finished += s
                .push(MediaKind::Audio, audio, &[0xAF, 1, 0x21, 0x10])
                .finished;
            audio += 23;
        }
        let b0 = if f % gop == 0 { 0x91 } else { 0xA1 };
        let p = s.push(
            MediaKind::Video,
            ts,
            &hvc(b0, &[0, 0, 0, 0, 0, 0, 2, 0x26, 1]),
        );
        assert_eq!(p.skipped, None);
        finished += p.finished;
    }
    finished
}

#[test]
fn an_hevc_stream_is_segmented_in_fmp4_with_its_init_segment() {
    let mut s = Segmenter::new("cam", cfg(1000, 6), 40);
    s.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
    s.push(MediaKind::Audio, 0, &aac_header());
    assert_eq!(s.format(), Format::Fmp4);
    assert_eq!(hevc_run(&mut s, 0, 3000, 25), 2);
    assert_eq!(s.refused(), None);
    let text = String::from_utf8(s.playlist().to_vec()).unwrap();
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:40\n\
         #EXT-X-MAP:URI=\"cam-40.mp4\"\n\
         #EXTINF:1.000,\ncam-40.m4s\n#EXTINF:1.000,\ncam-41.m4s\n"
    );
    let init = s.init_segment(40).unwrap();
    assert!(s.init_segment(41).is_none());
    assert!(child(&init, &[b"moov"]).is_some());
    assert!(init.windows(4).any(|w| w == b"hvcC"));
    let (seg, fmp4) = s.segment_of(41).unwrap();
    assert!(fmp4);
    let top = boxes(&seg);
    assert_eq!(&top[0].name, b"moof");
    assert_eq!(&top[1].name, b"mdat");
    // 25 pictures of 6 bytes and the audio frames of one second.
    assert!(
        top[1].body.len() >= 25 * 6 + 43 * 2,
        "{}",
        top[1].body.len()
    );
    assert_eq!(&seg[..], &s.segment(41).unwrap()[..]);
}

#[test]
fn with_hls_fmp4_h264_is_fmp4_too() {
    let mut s = Segmenter::new(
        "cam",
        HlsConfig {
            fmp4: true,
            ..cfg(2000, 6)
        },
        0,
    );
    let mut src = Source::new(25);
    src.headers(&mut s);
    assert_eq!(src.run(&mut s, 4500), 2);
    let l = lines(&s);
    assert!(
        l.contains(&"#EXT-X-MAP:URI=\"cam-0.mp4\"".to_string()),
        "{l:?}"
    );
    assert!(l.contains(&"cam-1.m4s".to_string()));
    assert!(s.init_segment(0).unwrap().windows(4).any(|w| w == b"avcC"));
    // Resumed, it stays fMP4.
    s.resume();
    assert_eq!(s.format(), Format::Fmp4);
}

#[test]
fn a_new_configuration_gets_a_new_map_after_a_discontinuity() {
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    s.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
    s.push(MediaKind::Audio, 0, &aac_header());
    hevc_run(&mut s, 0, 2000, 25);
    let mut other = hevc_record();
    other[1] = 2;
    // A new sequence header mid-segment: the segment ends there.
    assert_eq!(
        s.push(MediaKind::Video, 2000, &hvc(0x90, &other)).finished,
        1
    );
    hevc_run(&mut s, 2000, 2000, 25);
    let text = String::from_utf8(s.playlist().to_vec()).unwrap();
    assert!(
        text.contains(
            "#EXT-X-MAP:URI=\"cam-0.mp4\"\n#EXTINF:1.000,\ncam-0.m4s\n#EXTINF:1.000,\ncam-1.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"cam-2.mp4\"\n#EXTINF:1.000,\ncam-2.m4s\n"
        ),
        "{text}"
    );
    assert_ne!(s.init_segment(0), s.init_segment(2));
    // The same header again changes nothing.
    let before = s.stats().segments;
    s.push(MediaKind::Video, 4000, &hvc(0x90, &other));
    assert_eq!(s.stats().segments, before);
}

#[test]
fn an_h264_publisher_followed_by_an_hevc_one_switches_to_fmp4() {
    let mut s = Segmenter::new("cam", cfg(1000, 6), 0);
    let mut src = Source::new(25);
    src.headers(&mut s);
    src.run(&mut s, 2500);
    s.finish();
    s.resume();
    s.push(MediaKind::Audio, 0, &aac_header());
    s.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
    hevc_run(&mut s, 0, 2000, 25);
    let l = lines(&s);
    let i = l.iter().position(|x| x.starts_with("#EXT-X-MAP")).unwrap();
    assert_eq!(l[i - 1], "#EXT-X-DISCONTINUITY");
    assert_eq!(l[i - 2], "cam-2.ts");
    assert_eq!(l[i + 2], "cam-3.m4s");
    assert!(s.segment_of(2).is_some_and(|(_, fmp4)| !fmp4));
}

#[test]
fn fmp4_segments_at_the_byte_cap_are_cut() {
    let mut s = Segmenter::new(
        "cam",
        HlsConfig {
            target_ms: 2000,
            window: 6,
            max_segment_bytes: 20_000,
            fmp4: true,
            part_ms: 0,
        },
        0,
    );
    s.push(MediaKind::Video, 0, &avc_header());
    s.push(MediaKind::Video, 0, &avc_frame(true, 0, &[&[0x65, 1]]));
    let big = vec![0x41u8; 3000];
    let mut finished = 0;
    for i in 1..100u32 {
        finished += s
            .push(MediaKind::Video, i * 40, &avc_frame(false, 0, &[&big]))
            .finished;
    }
    assert!(finished >= 10);
    assert!(s.segments().all(|seg| seg.data.len() <= 20_000 + 4000));
    assert!(s.held_bytes() <= 12 * 24_000);
}

#[test]
fn adopted_fmp4_segments_keep_init_names_that_resolve() {
    let mut old = Segmenter::new("cam", cfg(1000, 6), 500);
    old.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
    hevc_run(&mut old, 0, 2500, 25);
    let history = old.take_history();
    let mut new = Segmenter::new("cam", cfg(1000, 6), 9_000);
    new.push(MediaKind::Video, 0, &hvc(0x90, &hevc_record()));
    hevc_run(&mut new, 0, 2500, 25);
    new.adopt(history);
    let l = lines(&new);
    let maps: Vec<_> = l.iter().filter(|x| x.starts_with("#EXT-X-MAP")).collect();
    assert_eq!(maps.len(), 2, "{l:?}");
    for m in maps {
        let n: u64 = m
            .trim_start_matches("#EXT-X-MAP:URI=\"cam-")
            .trim_end_matches(".mp4\"")
            .parse()
            .unwrap();
        assert!(new.init_segment(n).is_some(), "{m}");
    }
}
