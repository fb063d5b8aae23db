//! The media playlist, rendered once per change, and the program date-time format.

use std::fmt::Write as _;

use super::*;

impl Segmenter {
    pub(super) fn render(&mut self) {
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
        let fmp4 = listed.clone().any(|s| s.init.is_some());
        text.push_str(if fmp4 {
            "#EXTM3U\n#EXT-X-VERSION:7\n"
        } else {
            "#EXTM3U\n#EXT-X-VERSION:3\n"
        });
        let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
        if discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
            );
        }
        let mut map: Option<u64> = None;
        for s in listed {
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
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        self.playlist = Bytes::from(text);
    }
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
