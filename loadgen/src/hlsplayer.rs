//! What an HLS player decides, sans-IO: the next playlist request (a reload, or in
//! low-latency mode a blocking reload for the next part), which init segments, segments and
//! parts a playlist makes it fetch and in what order, when the last frame of each was
//! ingested (for latency), and when the viewer has stalled. The driver (`hls.rs`) makes the
//! requests and reports back; time comes in as arguments.
//!
//! Plain mode plays like a normal player: the first playlist gives the newest complete
//! segment, each later one every segment not fetched yet; a reload follows at once after a
//! playlist that brought something new, else after half the target duration.
//!
//! Low-latency mode plays like an LL-HLS player (draft-pantos-hls-rfc8216bis §6.2.5): the
//! first playlist (a plain reload) gives the live edge, the latest independent part; then
//! each blocking reload asks for the next part wanted (`_HLS_msn`/`_HLS_part`), and the
//! parts it lists from there on are fetched in order. Once segment M is complete (its
//! `#EXTINF` listed) and every part of it fetched, the next part wanted is (M+1, 0). With
//! hints, the `#EXT-X-PRELOAD-HINT` part is fetched too when it is the next one wanted: the
//! server answers it as soon as it is complete, or 404 when the segment was cut first.
//!
//! Only what became available after the viewer's first playlist is timed: what that playlist
//! listed was made before the viewer came, and its age says nothing about delivery.

use std::collections::VecDeque;

use crate::hlsproto::{resolve, with_query, Playlist, ProtoError};

/// Init segments remembered as fetched (a stream changes its init segment rarely: on a
/// codec change or a new publisher).
const INITS_KEPT: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    LowLatency { hints: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Init,
    Segment,
    Part,
    /// The preload-hinted part: held by the server until it is complete.
    Hint,
}

/// One request for media the driver is to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub kind: Kind,
    pub target: String,
    pub msn: u64,
    pub part: u32,
    /// When its last frame was ingested (Unix ms), when the playlist dates it.
    pub ingested_ms: Option<u64>,
    /// Became available after the viewer's first playlist: its latency is measured.
    pub timed: bool,
}

/// What one playlist made the player do.
#[derive(Debug, Default)]
pub struct Step {
    pub fetches: Vec<Fetch>,
    /// A hinted part received earlier is listed now, with its duration: (received at, Unix
    /// µs; its last frame ingested at, Unix ms).
    pub hint_timing: Option<(u64, u64)>,
    /// The media wanted next had left the playlist (the viewer fell behind): it jumped.
    pub resynced: bool,
}

pub struct Player {
    mode: Mode,
    host: String,
    base: String,
    started: bool,
    /// The next segment (plain: part 0) or part wanted.
    next: (u64, u32),
    /// Init segments fetched (request targets), the latest [`INITS_KEPT`].
    inits: VecDeque<String>,
    target_ms: u64,
    changed: bool,
    last_new_ms: u64,
    stalled: bool,
    /// A hinted part received (msn, part, at Unix µs), until a playlist lists its duration.
    hinted: Option<(u64, u32, u64)>,
}

impl Player {
    /// A player of the playlist at `base` (request target, query included) on `host`.
    pub fn new(mode: Mode, host: &str, base: &str) -> Self {
        Player {
            mode,
            host: host.to_string(),
            base: base.to_string(),
            started: false,
            next: (0, 0),
            inits: VecDeque::new(),
            target_ms: 0,
            changed: false,
            last_new_ms: 0,
            stalled: false,
            hinted: None,
        }
    }

    /// The next playlist request's target, and whether it is a blocking reload.
    pub fn playlist_request(&self) -> (String, bool) {
        match self.mode {
            Mode::LowLatency { .. } if self.started => {
                let (m, p) = self.next;
                (
                    with_query(&self.base, &format!("_HLS_msn={m}&_HLS_part={p}")),
                    true,
                )
            }
            _ => (self.base.clone(), false),
        }
    }

    /// The playlist's target duration (0 before the first playlist).
    pub fn target_ms(&self) -> u64 {
        self.target_ms
    }

    /// How long to wait before the next playlist request.
    pub fn poll_delay_ms(&self) -> u64 {
        match self.mode {
            Mode::LowLatency { .. } => 0,
            Mode::Plain if self.changed => 0,
            Mode::Plain => self.target_ms / 2,
        }
    }

    /// Start over from the live edge with a plain reload (after the server refused a
    /// blocking reload as too far ahead).
    pub fn restart(&mut self) {
        self.started = false;
        self.hinted = None;
    }

    /// A playlist arrived at `now_ms` (any monotonic clock, the one `check_stall` gets).
    pub fn handle_playlist(&mut self, pl: &Playlist, now_ms: u64) -> Result<Step, ProtoError> {
        self.target_ms = pl.target_duration_ms;
        let first = !self.started;
        if first {
            if let Mode::LowLatency { .. } = self.mode {
                if !pl.can_block_reload {
                    return Err(ProtoError(
                        "the playlist offers no blocking reload (no CAN-BLOCK-RELOAD=YES): \
                         not a Low-Latency HLS stream",
                    ));
                }
            }
            self.started = true;
            self.last_new_ms = now_ms;
            self.stalled = false;
        }
        let mut step = Step::default();
        match self.mode {
            Mode::Plain => self.plain(pl, first, &mut step)?,
            Mode::LowLatency { hints } => self.low_latency(pl, first, hints, &mut step)?,
        }
        Ok(step)
    }

    fn plain(&mut self, pl: &Playlist, first: bool, step: &mut Step) -> Result<(), ProtoError> {
        let whole: Vec<_> = pl.segments.iter().filter(|s| s.whole.is_some()).collect();
        if first {
            self.next = (whole.last().map_or(pl.media_sequence, |s| s.msn), 0);
        } else if let Some(oldest) = whole.first() {
            if self.next.0 < oldest.msn {
                step.resynced = true;
                self.next = (oldest.msn, 0);
            }
        }
        self.changed = false;
        let from = self.next.0;
        for s in whole.into_iter().filter(|s| s.msn >= from) {
            let Some(w) = &s.whole else { continue };
            self.init_for(s.map.as_deref(), step)?;
            step.fetches.push(Fetch {
                kind: Kind::Segment,
                target: resolve(&self.host, &self.base, &w.uri)?,
                msn: s.msn,
                part: 0,
                ingested_ms: s.end_ms(),
                timed: !first,
            });
            self.next = (s.msn + 1, 0);
            self.changed = true;
        }
        Ok(())
    }

    fn low_latency(
        &mut self,
        pl: &Playlist,
        mut first: bool,
        hints: bool,
        step: &mut Step,
    ) -> Result<(), ProtoError> {
        if let Some((m, p, at_us)) = self.hinted {
            match pl.segment(m).filter(|s| (p as usize) < s.parts.len()) {
                Some(s) => {
                    step.hint_timing = s.part_end_ms(p as usize).map(|end| (at_us, end));
                    self.hinted = None;
                }
                // Not listed yet (the answer raced the playlist) unless its segment left.
                None if pl.segment(m).is_none() => self.hinted = None,
                None => {}
            }
        }
        if !first {
            // Fell behind: the part wanted is older than every part listed.
            let oldest = pl
                .segments
                .iter()
                .find(|s| !s.parts.is_empty())
                .map(|s| (s.msn, 0));
            if oldest.is_some_and(|o| self.next < o) {
                step.resynced = true;
                first = true;
            }
        }
        if first {
            self.next = pl.live_edge().unwrap_or_else(|| pl.next_part());
        }
        for s in &pl.segments {
            if s.msn < self.next.0 {
                continue;
            }
            for (i, part) in s.parts.iter().enumerate() {
                if (s.msn, i as u32) < self.next {
                    continue;
                }
                self.init_for(s.map.as_deref(), step)?;
                step.fetches.push(Fetch {
                    kind: Kind::Part,
                    target: resolve(&self.host, &self.base, &part.uri)?,
                    msn: s.msn,
                    part: i as u32,
                    ingested_ms: s.part_end_ms(i),
                    timed: !first,
                });
                self.next = (s.msn, i as u32 + 1);
            }
        }
        // A complete segment has no more parts to come.
        while let Some(s) = pl.segment(self.next.0) {
            if s.whole.is_none() || (self.next.1 as usize) < s.parts.len() {
                break;
            }
            self.next = (s.msn + 1, 0);
        }
        if let (true, Some(uri)) = (hints, &pl.preload_hint) {
            if pl.next_part() == self.next && !pl.ended {
                let (msn, part) = self.next;
                self.init_for(pl.segment(msn).and_then(|s| s.map.as_deref()), step)?;
                step.fetches.push(Fetch {
                    kind: Kind::Hint,
                    target: resolve(&self.host, &self.base, uri)?,
                    msn,
                    part,
                    ingested_ms: None,
                    timed: true,
                });
            }
        }
        Ok(())
    }

    /// Adds the init segment `map` names unless it was fetched already.
    fn init_for(&mut self, map: Option<&str>, step: &mut Step) -> Result<(), ProtoError> {
        let Some(uri) = map else { return Ok(()) };
        let target = resolve(&self.host, &self.base, uri)?;
        if self.inits.contains(&target) {
            return Ok(());
        }
        if self.inits.len() == INITS_KEPT {
            self.inits.pop_front();
        }
        self.inits.push_back(target.clone());
        step.fetches.push(Fetch {
            kind: Kind::Init,
            target,
            msn: 0,
            part: 0,
            ingested_ms: None,
            timed: false,
        });
        Ok(())
    }

    /// A fetch was answered: `ok` with 200 (received at `at_us`, Unix µs), else not.
    pub fn handle_fetched(&mut self, f: &Fetch, ok: bool, now_ms: u64, at_us: u64) {
        match (f.kind, ok) {
            (Kind::Init, false) => self.inits.retain(|t| *t != f.target),
            (Kind::Init, true) => {}
            (Kind::Segment | Kind::Part, true) => self.new_media(now_ms),
            (Kind::Hint, true) => {
                self.new_media(now_ms);
                if self.next == (f.msn, f.part) {
                    self.next.1 += 1;
                }
                self.hinted = Some((f.msn, f.part, at_us));
            }
            // A hint answered 404: its segment was cut before the part came to be; the
            // next blocking reload (for the same part) gets part 0 of the next segment.
            (Kind::Segment | Kind::Part | Kind::Hint, false) => {}
        }
    }

    fn new_media(&mut self, now_ms: u64) {
        self.last_new_ms = now_ms;
        self.stalled = false;
    }

    /// True once per stall: nothing new for more than 3 × the target duration.
    pub fn check_stall(&mut self, now_ms: u64) -> bool {
        let stall = self.started && !self.stalled && now_ms > self.last_new_ms + 3 * self.target_ms;
        self.stalled |= stall;
        stall
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlsproto::parse_playlist;

    const HOST: &str = "127.0.0.1:8080";
    const BASE: &str = "/live/cam.m3u8?txSecret=ab&txTime=1F";
    /// 2026-12-06T10:00:00Z, segment 100's date-time in these playlists.
    const T0: u64 = 1_796_551_200_000;

    /// A playlist of stream `cam` with 1 s segments of three parts (0.3, 0.3, 0.4 s; part 0
    /// independent): segments `first..first+whole` complete, then `open` parts of the next
    /// (`None`: no open segment), and a preload hint for the part after the last listed.
    fn ll(first: u64, whole: u64, open: Option<usize>) -> Playlist {
        let mut t = String::from(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000\n\
             #EXT-X-PART-INF:PART-TARGET=0.400\n",
        );
        t += &format!("#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-MAP:URI=\"cam-100.mp4\"\n");
        let parts = |t: &mut String, msn: u64, n: usize| {
            let k = msn - 100;
            *t += &format!(
                "#EXT-X-PROGRAM-DATE-TIME:2026-12-06T10:{:02}:{:02}.000Z\n",
                k / 60,
                k % 60
            );
            for (i, d) in ["0.300", "0.300", "0.400"].iter().take(n).enumerate() {
                let ind = if i == 0 { ",INDEPENDENT=YES" } else { "" };
                *t += &format!("#EXT-X-PART:DURATION={d},URI=\"cam-{msn}.{i}.m4s\"{ind}\n");
            }
        };
        for msn in first..first + whole {
            parts(&mut t, msn, 3);
            t += &format!("#EXTINF:1.000,\ncam-{msn}.m4s\n");
        }
        let next = first + whole;
        if let Some(n) = open {
            parts(&mut t, next, n);
            t += &format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-{next}.{n}.m4s\"\n");
        } else {
            t += &format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-{next}.0.m4s\"\n");
        }
        parse_playlist(t.as_bytes()).unwrap()
    }

    fn plain(first: u64, whole: u64) -> Playlist {
        let mut t = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        for msn in first..first + whole {
            let k = (msn - 100) * 2;
            t += &format!(
                "#EXT-X-PROGRAM-DATE-TIME:2026-12-06T10:{:02}:{:02}.000Z\n#EXTINF:2.000,\ncam-{msn}.ts\n",
                k / 60,
                k % 60
            );
        }
        parse_playlist(t.as_bytes()).unwrap()
    }

    fn got(step: &Step) -> Vec<(Kind, u64, u32, bool)> {
        step.fetches
            .iter()
            .map(|f| (f.kind, f.msn, f.part, f.timed))
            .collect()
    }

    fn fetch_all(p: &mut Player, step: &Step, now_ms: u64) {
        for f in &step.fetches {
            p.handle_fetched(f, true, now_ms, now_ms * 1000);
        }
    }

    #[test]
    fn a_plain_player_starts_at_the_newest_segment_and_then_takes_each_new_one() {
        let mut p = Player::new(Mode::Plain, HOST, BASE);
        assert_eq!(p.playlist_request(), (BASE.to_string(), false));
        let step = p.handle_playlist(&plain(100, 4), 0).unwrap();
        assert_eq!(got(&step), vec![(Kind::Segment, 103, 0, false)]);
        assert_eq!(
            step.fetches[0].target,
            "/live/cam-103.ts?txSecret=ab&txTime=1F"
        );
        assert_eq!(p.poll_delay_ms(), 0, "something new: reload at once");
        let step = p.handle_playlist(&plain(100, 4), 10).unwrap();
        assert!(step.fetches.is_empty());
        assert_eq!(
            p.poll_delay_ms(),
            1000,
            "nothing new: half the target duration"
        );
        let step = p.handle_playlist(&plain(101, 4), 20).unwrap();
        assert_eq!(got(&step), vec![(Kind::Segment, 104, 0, true)]);
        // Segment 104 starts 8 s after segment 100 and lasts 2 s.
        assert_eq!(step.fetches[0].ingested_ms, Some(T0 + 10_000));
        assert_eq!(p.playlist_request().0, BASE, "plain mode never blocks");
    }

    #[test]
    fn a_plain_player_that_fell_behind_takes_what_is_still_listed() {
        let mut p = Player::new(Mode::Plain, HOST, BASE);
        p.handle_playlist(&plain(100, 4), 0).unwrap();
        let step = p.handle_playlist(&plain(110, 2), 1).unwrap();
        assert!(step.resynced);
        assert_eq!(
            got(&step),
            vec![(Kind::Segment, 110, 0, true), (Kind::Segment, 111, 0, true)]
        );
    }

    #[test]
    fn a_low_latency_player_starts_at_the_latest_independent_part() {
        let mut p = Player::new(Mode::LowLatency { hints: false }, HOST, BASE);
        let step = p.handle_playlist(&ll(100, 3, Some(2)), 0).unwrap();
        assert_eq!(
            got(&step),
            vec![
                (Kind::Init, 0, 0, false),
                (Kind::Part, 103, 0, false),
                (Kind::Part, 103, 1, false)
            ]
        );
        assert_eq!(
            step.fetches[0].target,
            "/live/cam-100.mp4?txSecret=ab&txTime=1F"
        );
        assert_eq!(
            step.fetches[2].target,
            "/live/cam-103.1.m4s?txSecret=ab&txTime=1F"
        );
        assert_eq!(
            p.playlist_request(),
            (format!("{BASE}&_HLS_msn=103&_HLS_part=2"), true)
        );
        fetch_all(&mut p, &step, 0);

        // Part 2 completes segment 103; the next reload asks for 104.0.
        let step = p.handle_playlist(&ll(100, 4, None), 400).unwrap();
        assert_eq!(got(&step), vec![(Kind::Part, 103, 2, true)]);
        assert_eq!(step.fetches[0].ingested_ms, Some(T0 + 3_000 + 1_000));
        assert_eq!(
            p.playlist_request().0,
            format!("{BASE}&_HLS_msn=104&_HLS_part=0")
        );

        // A reload may bring several parts, across a segment boundary: all in order.
        let step = p.handle_playlist(&ll(101, 3, Some(1)), 900).unwrap();
        assert_eq!(got(&step), vec![(Kind::Part, 104, 0, true)]);
        let step = p.handle_playlist(&ll(101, 4, Some(1)), 2000).unwrap();
        assert_eq!(
            got(&step),
            vec![
                (Kind::Part, 104, 1, true),
                (Kind::Part, 104, 2, true),
                (Kind::Part, 105, 0, true)
            ]
        );
        assert_eq!(step.fetches[2].ingested_ms, Some(T0 + 5_300));
        assert_eq!(
            p.playlist_request().0,
            format!("{BASE}&_HLS_msn=105&_HLS_part=1")
        );
        assert!(
            step.fetches.iter().all(|f| f.kind != Kind::Init),
            "init fetched once"
        );
    }

    #[test]
    fn a_hinted_part_is_fetched_once_and_timed_when_it_is_listed() {
        let mut p = Player::new(Mode::LowLatency { hints: true }, HOST, BASE);
        let step = p.handle_playlist(&ll(100, 3, Some(1)), 0).unwrap();
        assert_eq!(
            got(&step),
            vec![
                (Kind::Init, 0, 0, false),
                (Kind::Part, 103, 0, false),
                (Kind::Hint, 103, 1, true)
            ]
        );
        assert_eq!(
            step.fetches[2].target,
            "/live/cam-103.1.m4s?txSecret=ab&txTime=1F"
        );
        let received_us = (T0 + 3_650) * 1000;
        p.handle_fetched(&step.fetches[2], true, 300, received_us);
        assert_eq!(
            p.playlist_request().0,
            format!("{BASE}&_HLS_msn=103&_HLS_part=2")
        );
        let step = p.handle_playlist(&ll(100, 3, Some(3)), 700).unwrap();
        assert_eq!(step.hint_timing, Some((received_us, T0 + 3_600)));
        assert_eq!(
            got(&step),
            vec![(Kind::Part, 103, 2, true), (Kind::Hint, 103, 3, true)]
        );
    }

    #[test]
    fn a_hint_cut_off_by_the_segment_end_moves_on_to_the_next_segment() {
        let mut p = Player::new(Mode::LowLatency { hints: true }, HOST, BASE);
        let step = p.handle_playlist(&ll(100, 3, Some(3)), 0).unwrap();
        let hint = step.fetches.last().unwrap().clone();
        assert_eq!((hint.kind, hint.msn, hint.part), (Kind::Hint, 103, 3));
        p.handle_fetched(&hint, false, 10, 0);
        assert_eq!(
            p.playlist_request().0,
            format!("{BASE}&_HLS_msn=103&_HLS_part=3")
        );
        // The server answers that reload once 104.0 exists: segment 103 ended at 3 parts.
        let step = p.handle_playlist(&ll(100, 4, Some(1)), 400).unwrap();
        assert_eq!(
            got(&step),
            vec![(Kind::Part, 104, 0, true), (Kind::Hint, 104, 1, true)]
        );
    }

    #[test]
    fn a_low_latency_player_that_fell_behind_jumps_to_the_live_edge() {
        let mut p = Player::new(Mode::LowLatency { hints: false }, HOST, BASE);
        p.handle_playlist(&ll(100, 3, Some(1)), 0).unwrap();
        let step = p.handle_playlist(&ll(120, 3, Some(2)), 100).unwrap();
        assert!(step.resynced);
        assert_eq!(
            got(&step),
            vec![(Kind::Part, 123, 0, false), (Kind::Part, 123, 1, false)]
        );
    }

    #[test]
    fn low_latency_needs_a_server_that_blocks() {
        let mut p = Player::new(Mode::LowLatency { hints: true }, HOST, BASE);
        let err = p.handle_playlist(&plain(100, 3), 0).unwrap_err();
        assert!(err.0.contains("CAN-BLOCK-RELOAD"));
        p.restart();
        assert!(!p.playlist_request().1);
    }

    #[test]
    fn a_stall_is_counted_once_per_gap() {
        let mut p = Player::new(Mode::LowLatency { hints: false }, HOST, BASE);
        assert!(!p.check_stall(100_000), "not started");
        let step = p.handle_playlist(&ll(100, 3, Some(1)), 1_000).unwrap();
        fetch_all(&mut p, &step, 1_000);
        assert!(
            !p.check_stall(4_000),
            "3 × the 1 s target duration, not more"
        );
        assert!(p.check_stall(4_001));
        assert!(!p.check_stall(9_000));
        let step = p.handle_playlist(&ll(100, 3, Some(2)), 9_500).unwrap();
        fetch_all(&mut p, &step, 9_500);
        assert!(!p.check_stall(12_000));
        assert!(p.check_stall(12_600));
    }
}
