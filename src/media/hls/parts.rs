//! Low-Latency HLS partial segments (draft-pantos-hls-rfc8216bis §4.4.4.9): with
//! [`HlsConfig::part_ms`], the open fMP4 segment is written as a run of fragments
//! (`moof` + `mdat`), each a part a player may fetch before the segment is finished.
//!
//! - A part ends before the frame of the timing track (video, or audio when there is no
//!   video) that would make it last longer than its share of what is left of the segment:
//!   up to where the segment will likely be cut (the first keyframe past the target, by
//!   the stream's keyframe interval), the parts are made as even as the frames allow, none
//!   longer than `part_ms`; past that point each is up to `part_ms`. A segment cut (at a
//!   keyframe) ends its last part. Even parts matter to players: a greedy split of a 2 s
//!   segment into 320 ms parts leaves an 80 ms last one, and hls.js (1.7) takes a segment
//!   missing less than 0.2 s as whole, so it may never fetch that part and stall until the
//!   playlist moves on (seen in Chromium under load).
//! - A part that starts with a keyframe is `INDEPENDENT=YES`: a player may start there.
//! - A finished segment is its parts end to end (one copy, when it is finished); the
//!   parts then become slices of the segment's bytes, so nothing is held twice.
//! - Fragments are numbered (`mfhd`) by a counter of their own, increasing across parts
//!   and segments.
//!
//! Where a player stands is a pair (media sequence number, part index): [`Position`].
//! [`Segmenter::has_part`] and [`Segmenter::has_segment`] answer the blocking requests of
//! `_HLS_msn`/`_HLS_part` and of a preload hint; [`Segmenter::version`] tells a waiter's
//! owner when to ask again.

use super::*;

/// A part's place in the stream: its segment's media sequence number and its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub msn: u64,
    pub part: u32,
}

/// What the segmenter can say of a part a player asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartState {
    /// Here are its bytes.
    Ready(Bytes),
    /// Not yet made, and it may still be: a request for it may wait.
    Coming,
    /// It will never exist (its segment ended before it, or it was dropped).
    Gone,
}

impl Segmenter {
    /// Whether this segmenter makes partial segments.
    pub fn has_parts(&self) -> bool {
        self.cfg.part_ms > 0
    }

    /// Bumped on every change of the playlist: a waiter's condition can only have come
    /// true when this changed.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The part that comes next: the open segment's next index, or the first part of the
    /// segment to be opened.
    pub fn next_part(&self) -> Position {
        Position {
            msn: self.next_sequence,
            part: self.open.as_ref().map_or(0, |o| o.parts.len() as u32),
        }
    }

    /// The media sequence number of the last finished segment, if any.
    pub fn last_msn(&self) -> Option<u64> {
        self.done.back().map(|s| s.sequence)
    }

    /// Segment `msn` is finished (held or not).
    pub fn has_segment(&self, msn: u64) -> bool {
        msn < self.next_sequence
    }

    /// Part `at` is made: of a finished segment, or of the open one.
    pub fn has_part(&self, at: Position) -> bool {
        at < self.next_part() || self.has_segment(at.msn)
    }

    /// Part `at`'s bytes, or whether it may still come.
    pub fn part(&self, at: Position) -> PartState {
        if at.msn == self.next_sequence {
            let Some(open) = self.open.as_ref() else {
                return if self.ended || self.refused.is_some() {
                    PartState::Gone
                } else {
                    PartState::Coming
                };
            };
            return match open.parts.get(at.part as usize) {
                Some(p) => PartState::Ready(p.data.clone()),
                None => PartState::Coming,
            };
        }
        if at.msn > self.next_sequence {
            return if self.ended || self.refused.is_some() {
                PartState::Gone
            } else {
                PartState::Coming
            };
        }
        let Some(first) = self.done.front().map(|s| s.sequence) else {
            return PartState::Gone;
        };
        let held = at
            .msn
            .checked_sub(first)
            .and_then(|i| self.done.get(usize::try_from(i).ok()?))
            .filter(|s| s.sequence == at.msn);
        match held.and_then(|s| s.parts.get(at.part as usize)) {
            Some(p) => PartState::Ready(p.data.clone()),
            None => PartState::Gone,
        }
    }

    /// Before a frame of the timing track at `ts` is muxed: ends the pending part if this
    /// frame would make it last longer than the part target; `key` tells whether the
    /// frame (and so the next part) starts with a keyframe.
    pub(super) fn at_part_boundary(&mut self, ts: u32, key: bool) {
        if self.cfg.part_ms == 0 || self.format != Format::Fmp4 {
            return;
        }
        // Where the segment will likely end: the first keyframe at or past the target.
        let expected = match (self.video_configured(), self.key_gap) {
            (true, gap) if gap > 0 => self.cfg.target_ms.div_ceil(gap).saturating_mul(gap),
            _ => self.cfg.target_ms,
        };
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if self.fmp4.pending_samples() == 0 {
            open.part_start = ts;
            open.part_independent = key;
            return;
        }
        let would_last = elapsed(open.part_start, ts).saturating_add(self.frame_gap);
        let left = expected.saturating_sub(elapsed(open.start, open.part_start));
        let share = if left > self.frame_gap {
            left / left.div_ceil(self.cfg.part_ms)
        } else {
            self.cfg.part_ms
        };
        if would_last <= share {
            return;
        }
        if let Some(data) = self.fmp4.fragment(self.next_fragment, Some(ts)) {
            self.next_fragment = self.next_fragment.wrapping_add(1);
            open.parts_bytes += data.len();
            open.parts.push(Part {
                duration_ms: elapsed(open.part_start, ts),
                independent: open.part_independent,
                data,
            });
        }
        open.part_start = ts;
        open.part_independent = key;
        self.render();
    }

    /// Ends `open`'s last part (`next`: the first timestamp after it, if known) and joins
    /// its parts into the segment's bytes; the parts become slices of them.
    pub(super) fn join_parts(&mut self, open: &mut Open, next: Option<u32>) -> Bytes {
        if let Some(data) = self.fmp4.fragment(self.next_fragment, next) {
            self.next_fragment = self.next_fragment.wrapping_add(1);
            let duration_ms = match next {
                Some(t) => elapsed(open.part_start, t),
                None => elapsed(open.part_start, open.end).saturating_add(self.frame_gap),
            };
            open.parts_bytes += data.len();
            open.parts.push(Part {
                duration_ms,
                independent: open.part_independent,
                data,
            });
        }
        let mut joined = BytesMut::with_capacity(open.parts_bytes);
        for p in &open.parts {
            joined.extend_from_slice(&p.data);
        }
        let joined = joined.freeze();
        let mut at = 0;
        for p in &mut open.parts {
            let len = p.data.len();
            p.data = joined.slice(at..at + len);
            at += len;
        }
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, lines, Source};
    use super::*;
    use crate::media::fmp4::tests::{boxes, child};

    fn ll(target_ms: u32, part_ms: u32) -> Segmenter {
        let mut s = Segmenter::new(
            "cam",
            HlsConfig {
                part_ms,
                ..cfg(target_ms, 6)
            },
            100,
        );
        Source::new(25).headers(&mut s);
        s
    }

    /// The video `tfdt` and the `mfhd` number of a fragment.
    fn times(fragment: &[u8]) -> (u64, u32) {
        let moof = child(fragment, &[b"moof"]).unwrap();
        let mfhd = child(moof, &[b"mfhd"]).unwrap();
        let traf = boxes(moof)
            .into_iter()
            .find(|b| &b.name == b"traf")
            .unwrap();
        let tfdt = child(traf.body, &[b"tfdt"]).unwrap();
        (
            u64::from_be_bytes(tfdt[4..12].try_into().unwrap()),
            u32::from_be_bytes(mfhd[4..8].try_into().unwrap()),
        )
    }

    #[test]
    fn segments_are_made_of_parts_no_longer_than_the_target() {
        let mut s = ll(2000, 333);
        let mut src = Source::new(25);
        assert_eq!(src.run(&mut s, 4100), 2);
        assert_eq!(s.format(), Format::Fmp4, "parts are fMP4 fragments");
        let mut last_mfhd = 0;
        for seg in s.segments() {
            assert_eq!(seg.duration_ms, 2000);
            // 25 fps, a keyframe a second: 2 s in 7 parts of at most 333 ms, as even as
            // whole frames allow (7 or 8 frames), not six of 8 frames and a 2-frame tail.
            let durations: Vec<u32> = seg.parts.iter().map(|p| p.duration_ms).collect();
            assert_eq!(durations, [280, 280, 280, 280, 280, 280, 320]);
            assert!(seg.parts[0].independent, "a segment starts on a keyframe");
            // The keyframe at 1 s falls inside the fourth part.
            assert!(seg.parts[1..].iter().all(|p| !p.independent));
            let mut joined = Vec::new();
            let mut at = u64::from(seg.start_ms);
            for p in &seg.parts {
                let top: Vec<_> = boxes(&p.data).iter().map(|b| b.name).collect();
                assert_eq!(top, [*b"moof", *b"mdat"]);
                let (tfdt, mfhd) = times(&p.data);
                assert_eq!(tfdt, at, "each part starts where the last one ended");
                assert!(mfhd > last_mfhd, "fragment numbers increase");
                last_mfhd = mfhd;
                at += u64::from(p.duration_ms);
                joined.extend_from_slice(&p.data);
            }
            assert_eq!(joined, &seg.data[..], "a segment is its parts end to end");
        }
        // The open segment has the parts of its first 100 ms: none finished yet, and the
        // playlist hints the first.
        assert_eq!(s.next_part(), Position { msn: 102, part: 0 });
        assert_eq!(
            lines(&s).last().unwrap(),
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-102.0.m4s\""
        );
        src.run(&mut s, 400);
        assert_eq!(s.next_part(), Position { msn: 102, part: 1 });
    }

    #[test]
    fn parts_are_even_up_to_where_the_gop_ends_the_segment() {
        // A keyframe every 2.4 s against a 2 s target: segments of 2.4 s.
        let mut s = ll(2000, 333);
        let mut src = Source::new(60);
        src.run(&mut s, 12_100);
        for seg in s.segments().skip(1) {
            assert_eq!(seg.duration_ms, 2400);
            let durations: Vec<u32> = seg.parts.iter().map(|p| p.duration_ms).collect();
            assert_eq!(durations.iter().sum::<u32>(), 2400);
            assert!(
                durations.iter().all(|&d| (240..=333).contains(&d)),
                "{durations:?}"
            );
        }
    }

    #[test]
    fn the_playlist_lists_recent_parts_and_hints_the_next() {
        let mut s = ll(2000, 333);
        s.set_epoch(Some(1_732_336_878_901));
        let mut src = Source::new(25);
        src.run(&mut s, 16_700);
        let l = lines(&s);
        let head: Vec<&str> = l.iter().take(6).map(String::as_str).collect();
        assert_eq!(
            head,
            [
                "#EXTM3U",
                "#EXT-X-VERSION:9",
                "#EXT-X-TARGETDURATION:2",
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999",
                "#EXT-X-PART-INF:PART-TARGET=0.333",
                "#EXT-X-MEDIA-SEQUENCE:102",
            ]
        );
        // Segments 102-107 listed; parts for the three within 6 s of the live edge.
        let with_parts: Vec<&str> = l
            .iter()
            .filter_map(|x| x.strip_prefix("#EXT-X-PART:DURATION=0.280,URI=\"cam-"))
            .filter_map(|x| x.strip_suffix(".0.m4s\",INDEPENDENT=YES"))
            .collect();
        assert_eq!(with_parts, ["105", "106", "107", "108"]);
        // A segment's parts follow its date-time and come before its EXTINF.
        let i = l.iter().position(|x| x.contains("cam-107.0.m4s")).unwrap();
        assert!(l[i - 1].starts_with("#EXT-X-PROGRAM-DATE-TIME:"));
        assert_eq!(l[i + 6], "#EXT-X-PART:DURATION=0.320,URI=\"cam-107.6.m4s\"");
        assert_eq!(l[i + 7], "#EXTINF:2.000,t=14000");
        assert_eq!(l[i + 8], "cam-107.m4s");
        // The open segment 108: its date-time, its two parts, the hint of its third.
        assert_eq!(
            l[i + 9],
            "#EXT-X-PROGRAM-DATE-TIME:2024-11-23T04:41:34.901Z"
        );
        assert_eq!(
            l[i + 11],
            "#EXT-X-PART:DURATION=0.280,URI=\"cam-108.1.m4s\""
        );
        assert_eq!(
            l.last().unwrap(),
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-108.2.m4s\""
        );
        assert_eq!(s.next_part(), Position { msn: 108, part: 2 });
    }

    #[test]
    fn parts_are_served_while_held_and_known_to_be_coming_or_gone() {
        let mut s = ll(2000, 333);
        let mut src = Source::new(25);
        src.run(&mut s, 2700);
        let seg = s.segments().next().unwrap().clone();
        let at = |msn, part| Position { msn, part };
        assert_eq!(
            s.part(at(100, 3)),
            PartState::Ready(seg.parts[3].data.clone())
        );
        assert_eq!(
            s.part(at(100, 7)),
            PartState::Gone,
            "segment 100 had 7 parts"
        );
        let PartState::Ready(open0) = s.part(at(101, 0)) else {
            panic!("the open segment's first part is served");
        };
        assert_eq!(times(&open0).0, 2000);
        assert_eq!(s.part(at(101, 2)), PartState::Coming);
        assert_eq!(s.part(at(102, 0)), PartState::Coming);
        assert_eq!(s.part(at(99, 0)), PartState::Gone);
        assert!(
            s.has_part(at(100, 9)),
            "a finished segment has all it will have"
        );
        assert!(s.has_part(at(101, 1)));
        assert!(!s.has_part(at(101, 2)));
        assert!(s.has_segment(100) && !s.has_segment(101));
        assert_eq!(s.init_segment(101), None, "101 uses 100's init segment");
        let v = s.version();
        src.run(&mut s, 300);
        assert!(s.version() > v, "a new part changes the playlist");
        assert!(s.has_part(at(101, 2)));
        // The segment the hint pointed into ends: the part never comes.
        s.end();
        assert_eq!(s.part(at(101, 9)), PartState::Gone);
        assert_eq!(s.part(at(102, 0)), PartState::Gone);
        assert!(!lines(&s)
            .iter()
            .any(|l| l.starts_with("#EXT-X-PRELOAD-HINT")));
        assert_eq!(lines(&s).last().unwrap(), "#EXT-X-ENDLIST");
    }

    #[test]
    fn the_open_segment_names_its_own_init_segment_when_it_is_the_first() {
        let mut s = ll(2000, 333);
        Source::new(25).run(&mut s, 700);
        let l = lines(&s);
        assert!(
            l.contains(&"#EXT-X-MAP:URI=\"cam-100.mp4\"".to_string()),
            "{l:?}"
        );
        assert!(s.init_segment(100).is_some());
        assert_eq!(s.listed(), 0);
    }

    #[test]
    fn a_refused_track_takes_the_open_parts_and_the_hint_off_the_playlist() {
        let mut s = ll(2000, 333);
        Source::new(25).run(&mut s, 2700);
        assert!(lines(&s)
            .iter()
            .any(|l| l.starts_with("#EXT-X-PRELOAD-HINT")));
        // The publisher switches its video to VP9, which HLS does not carry here.
        s.push(
            MediaKind::Video,
            2700,
            &[0x90, b'v', b'p', b'0', b'9', 0, 0, 0, 1],
        );
        assert!(s.refused().is_some());
        let l = lines(&s);
        assert!(
            !l.iter().any(|l| l.starts_with("#EXT-X-PRELOAD-HINT")),
            "{l:?}"
        );
        assert!(!l.iter().any(|l| l.contains("cam-101.")), "{l:?}");
    }

    #[test]
    fn without_parts_nothing_changes() {
        let mut s = ll(2000, 0);
        Source::new(25).run(&mut s, 4100);
        assert!(s.segments().all(|x| x.parts.is_empty()));
        assert!(!lines(&s).iter().any(|l| l.contains("PART")));
    }
}
