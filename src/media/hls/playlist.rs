//! The media playlist, rendered once per change, and the program date-time format.

use std::fmt::Write as _;

use super::*;

impl Segmenter {
    pub(super) fn render(&mut self) {
        self.version = self.version.wrapping_add(1);
        let from = self.done.len().saturating_sub(self.cfg.window);
        let listed = self.done.range(from..);
        let discontinuity_sequence = self.dropped_discontinuities
            + self.done.range(..from).filter(|s| s.discontinuity).count() as u64;
        // RFC 8216 §4.3.3.1: each EXTINF rounded to the nearest second is at most the
        // target duration; the configured target, rounded up, is the floor.
        let target = listed
            .clone()
            .map(|s| s.duration_ms.saturating_add(500) / 1000)
            .fold(self.cfg.target_ms.div_ceil(1000).max(1), u32::max);
        let media_sequence = listed
            .clone()
            .next()
            .map_or(self.next_sequence, |s| s.sequence);
        let mut text = String::with_capacity(128 + 48 * self.cfg.window);
        // EXT-X-MAP for media segments (fMP4) needs version 6; 7 is what fMP4 HLS
        // players expect. TS-only playlists stay at 3.
        // With parts every segment is fMP4 (see `Segmenter::new`).
        let parts = self.cfg.part_ms > 0;
        let fmp4 = listed.clone().any(|s| s.init.is_some());
        text.push_str(if parts {
            // EXT-X-PART and its companions: the version LL-HLS players expect.
            "#EXTM3U\n#EXT-X-VERSION:9\n"
        } else if fmp4 {
            "#EXTM3U\n#EXT-X-VERSION:7\n"
        } else {
            "#EXTM3U\n#EXT-X-VERSION:3\n"
        });
        let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
        if parts {
            // A player holds back three part targets from the live edge (the draft's
            // recommendation; at least two are required).
            text.push_str("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=");
            write_secs(&mut text, self.cfg.part_ms.saturating_mul(3));
            text.push_str("\n#EXT-X-PART-INF:PART-TARGET=");
            write_secs(&mut text, self.cfg.part_ms);
            text.push('\n');
        }
        let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
        if discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
            );
        }
        // Parts are listed for the segments within three target durations of the live
        // edge (the draft's rule); older segments are listed whole.
        let mut parts_from = self.done.len();
        if parts {
            let mut recent = 0u32;
            while parts_from > from && recent < 3 * target * 1000 {
                parts_from -= 1;
                recent = recent.saturating_add(self.done[parts_from].duration_ms);
            }
        }
        let mut map: Option<u64> = None;
        for (i, s) in listed.enumerate() {
            if s.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if s.init.is_some() && map != Some(s.init_seq) {
                let _ = writeln!(text, "#EXT-X-MAP:URI=\"{}-{}.mp4\"", self.name, s.init_seq);
                map = Some(s.init_seq);
            } else if s.init.is_none() {
                map = None;
            }
            if let Some(pdt) = s.pdt_ms {
                text.push_str("#EXT-X-PROGRAM-DATE-TIME:");
                write_date_time(&mut text, pdt);
                text.push('\n');
            }
            if from + i >= parts_from {
                self.write_parts(&mut text, s.sequence, &s.parts);
            }
            let _ = write!(
                text,
                "#EXTINF:{}.{:03},",
                s.duration_ms / 1000,
                s.duration_ms % 1000
            );
            if s.pdt_ms.is_some() {
                // The segment's stream time, as its title: `t=<ms>`.
                let _ = write!(text, "t={}", s.start_ms);
            }
            let ext = if s.init.is_some() { "m4s" } else { "ts" };
            let _ = writeln!(text, "\n{}-{}.{ext}", self.name, s.sequence);
        }
        if parts && !self.ended {
            self.write_open(&mut text, map);
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        self.playlist = Bytes::from(text);
    }

    /// The `#EXT-X-PART` lines of segment `msn`'s `parts`.
    fn write_parts(&self, text: &mut String, msn: u64, parts: &[Part]) {
        for (i, p) in parts.iter().enumerate() {
            text.push_str("#EXT-X-PART:DURATION=");
            write_secs(text, p.duration_ms);
            let _ = write!(text, ",URI=\"{}-{msn}.{i}.m4s\"", self.name);
            if p.independent {
                text.push_str(",INDEPENDENT=YES");
            }
            text.push('\n');
        }
    }

    /// The open segment's tags and parts, then the hint of the part that comes next.
    /// `map` is the init segment in force after the last finished segment.
    fn write_open(&self, text: &mut String, map: Option<u64>) {
        let Some(open) = self.open.as_ref() else {
            return;
        };
        let next = self.next_part();
        if !open.parts.is_empty() {
            let prev = self.done.back();
            let init_changed = prev.is_some_and(|p| p.init != open.init);
            if open.discontinuity || init_changed {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if open.init.is_some() && (init_changed || map.is_none()) {
                // Named, as every init segment is, after the first segment using it.
                let _ = writeln!(text, "#EXT-X-MAP:URI=\"{}-{}.mp4\"", self.name, next.msn);
            }
            if let Some(epoch) = self.epoch_ms {
                text.push_str("#EXT-X-PROGRAM-DATE-TIME:");
                write_date_time(text, epoch + u64::from(open.start));
                text.push('\n');
            }
            self.write_parts(text, next.msn, &open.parts);
        }
        let _ = writeln!(
            text,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}-{}.{}.m4s\"",
            self.name, next.msn, next.part
        );
    }
}

/// Writes milliseconds as decimal seconds with three places (`0.333`).
fn write_secs(out: &mut String, ms: u32) {
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

/// Writes Unix ms `ms` as an RFC 3339 date-time in UTC with milliseconds
/// (`2024-11-23T04:41:18.901Z`), the form RFC 8216 §4.3.2.6 asks for.
pub fn write_date_time(out: &mut String, ms: u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    );
}
