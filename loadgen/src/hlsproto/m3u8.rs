//! The media playlist parser: RFC 8216 plus the Low-Latency HLS tags of
//! draft-pantos-hls-rfc8216bis that liveshard writes (`#EXT-X-SERVER-CONTROL`,
//! `#EXT-X-PART-INF`, `#EXT-X-PART`, `#EXT-X-PRELOAD-HINT`), and the times a player derives
//! from it. Tags a player of one live stream does not act on are skipped.

use super::{ProtoError, MAX_PARTS, MAX_SEGMENTS, MAX_URI};

/// Longest duration accepted anywhere in a playlist (a day), so sums cannot overflow.
const MAX_DURATION_MS: u64 = 86_400_000;

/// A media playlist, as far as a player needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Playlist {
    pub target_duration_ms: u64,
    pub media_sequence: u64,
    /// `#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`.
    pub can_block_reload: bool,
    pub part_hold_back_ms: Option<u64>,
    /// `#EXT-X-PART-INF:PART-TARGET`.
    pub part_target_ms: Option<u64>,
    /// In order; the last one may still be being written (its `whole` is `None`).
    pub segments: Vec<Segment>,
    /// `#EXT-X-PRELOAD-HINT:TYPE=PART`'s URI: the part after the last one listed.
    pub preload_hint: Option<String>,
    /// `#EXT-X-ENDLIST`: the stream ended.
    pub ended: bool,
}

/// One segment, complete or still being written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// `#EXT-X-PROGRAM-DATE-TIME` in Unix ms: when its first frame was ingested.
    pub pdt_ms: Option<u64>,
    /// The `#EXT-X-MAP` URI in force for it.
    pub map: Option<String>,
    pub discontinuity: bool,
    pub parts: Vec<Part>,
    /// Its URI and `#EXTINF` duration, once complete.
    pub whole: Option<Whole>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whole {
    pub uri: String,
    pub duration_ms: u64,
}

/// An `#EXT-X-PART`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub uri: String,
    pub duration_ms: u64,
    pub independent: bool,
}

impl Segment {
    /// When the last frame of part `i` was ingested (Unix ms): the segment's date-time plus
    /// the parts before it plus its own duration. `None` without a date-time.
    pub fn part_end_ms(&self, i: usize) -> Option<u64> {
        let parts = self.parts.get(..=i)?;
        Some(self.pdt_ms? + parts.iter().map(|p| p.duration_ms).sum::<u64>())
    }

    /// When its last frame was ingested (Unix ms): date-time plus `#EXTINF` duration.
    pub fn end_ms(&self) -> Option<u64> {
        Some(self.pdt_ms? + self.whole.as_ref()?.duration_ms)
    }
}

impl Playlist {
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.first()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// Where the next part will appear: after the last one listed (its segment's next part,
    /// or part 0 of the segment after the last complete one).
    pub fn next_part(&self) -> (u64, u32) {
        match self.segments.last() {
            Some(s) if s.whole.is_none() => (s.msn, s.parts.len() as u32),
            Some(s) => (s.msn + 1, 0),
            None => (self.media_sequence, 0),
        }
    }

    /// The latest independent part listed: where a low-latency player starts.
    pub fn live_edge(&self) -> Option<(u64, u32)> {
        self.segments.iter().rev().find_map(|s| {
            let i = s.parts.iter().rposition(|p| p.independent)?;
            Some((s.msn, i as u32))
        })
    }
}

/// What the parser holds for the segment the next URI line completes.
#[derive(Default)]
struct Pending {
    pdt_ms: Option<u64>,
    discontinuity: bool,
    parts: Vec<Part>,
    extinf_ms: Option<u64>,
}

/// Parses a media playlist body.
pub fn parse_playlist(body: &[u8]) -> Result<Playlist, ProtoError> {
    let text = std::str::from_utf8(body).map_err(|_| ProtoError("playlist is not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err(ProtoError("playlist does not start with #EXTM3U"));
    }
    let mut pl = Playlist::default();
    let mut target = None;
    let mut map: Option<String> = None;
    let mut p = Pending::default();
    for line in lines {
        if !line.starts_with('#') {
            let duration_ms = p
                .extinf_ms
                .take()
                .ok_or(ProtoError("a segment URI without #EXTINF"))?;
            let seg = Segment {
                msn: next_msn(&pl)?,
                pdt_ms: p.pdt_ms.take(),
                map: map.clone(),
                discontinuity: std::mem::take(&mut p.discontinuity),
                parts: std::mem::take(&mut p.parts),
                whole: Some(Whole {
                    uri: check_uri(line)?.to_string(),
                    duration_ms,
                }),
            };
            push_segment(&mut pl, seg)?;
            continue;
        }
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        match tag {
            "#EXTINF" => {
                let d = value.split(',').next().unwrap_or("");
                p.extinf_ms = Some(decimal_ms(d).ok_or(ProtoError("bad #EXTINF duration"))?);
            }
            "#EXT-X-TARGETDURATION" => {
                let secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or(ProtoError("bad #EXT-X-TARGETDURATION"))?;
                target = Some(secs * 1000);
            }
            "#EXT-X-MEDIA-SEQUENCE" => {
                if !pl.segments.is_empty() || !p.parts.is_empty() {
                    return Err(ProtoError("#EXT-X-MEDIA-SEQUENCE after the first segment"));
                }
                pl.media_sequence = value
                    .parse()
                    .map_err(|_| ProtoError("bad #EXT-X-MEDIA-SEQUENCE"))?;
            }
            "#EXT-X-VERSION" => {
                value
                    .parse::<u32>()
                    .map_err(|_| ProtoError("bad #EXT-X-VERSION"))?;
            }
            "#EXT-X-SERVER-CONTROL" => {
                for (k, v) in attributes(value)? {
                    match k {
                        "CAN-BLOCK-RELOAD" => pl.can_block_reload = v == "YES",
                        "PART-HOLD-BACK" => {
                            pl.part_hold_back_ms =
                                Some(decimal_ms(v).ok_or(ProtoError("bad PART-HOLD-BACK"))?)
                        }
                        _ => {}
                    }
                }
            }
            "#EXT-X-PART-INF" => {
                let v = attr(value, "PART-TARGET")?.ok_or(ProtoError("no PART-TARGET"))?;
                pl.part_target_ms = Some(decimal_ms(v).ok_or(ProtoError("bad PART-TARGET"))?);
            }
            "#EXT-X-MAP" => {
                let uri = attr(value, "URI")?.ok_or(ProtoError("#EXT-X-MAP without URI"))?;
                map = Some(check_uri(uri)?.to_string());
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                p.pdt_ms =
                    Some(date_time_ms(value).ok_or(ProtoError("bad #EXT-X-PROGRAM-DATE-TIME"))?);
            }
            "#EXT-X-DISCONTINUITY" => p.discontinuity = true,
            "#EXT-X-PART" => {
                if p.parts.len() == MAX_PARTS {
                    return Err(ProtoError("more than 1,000 parts in a segment"));
                }
                let (mut uri, mut duration, mut independent) = (None, None, false);
                for (k, v) in attributes(value)? {
                    match k {
                        "URI" => uri = Some(check_uri(v)?.to_string()),
                        "DURATION" => duration = decimal_ms(v),
                        "INDEPENDENT" => independent = v == "YES",
                        _ => {}
                    }
                }
                p.parts.push(Part {
                    uri: uri.ok_or(ProtoError("#EXT-X-PART without URI"))?,
                    duration_ms: duration.ok_or(ProtoError("#EXT-X-PART without DURATION"))?,
                    independent,
                });
            }
            "#EXT-X-PRELOAD-HINT" if attr(value, "TYPE")? == Some("PART") => {
                let uri = attr(value, "URI")?.ok_or(ProtoError("hint without URI"))?;
                pl.preload_hint = Some(check_uri(uri)?.to_string());
            }
            "#EXT-X-ENDLIST" => pl.ended = true,
            "#EXT-X-STREAM-INF" | "#EXT-X-I-FRAME-STREAM-INF" => {
                return Err(ProtoError("a multivariant playlist, not a media playlist"))
            }
            // Other tags (and comments) change nothing a player of this stream does.
            _ => {}
        }
    }
    if p.extinf_ms.is_some() {
        return Err(ProtoError("#EXTINF without a segment URI"));
    }
    if !p.parts.is_empty() || p.pdt_ms.is_some() {
        let open = Segment {
            msn: next_msn(&pl)?,
            pdt_ms: p.pdt_ms,
            map,
            discontinuity: p.discontinuity,
            parts: p.parts,
            whole: None,
        };
        push_segment(&mut pl, open)?;
    }
    pl.target_duration_ms = target.ok_or(ProtoError("no #EXT-X-TARGETDURATION"))?;
    Ok(pl)
}

fn next_msn(pl: &Playlist) -> Result<u64, ProtoError> {
    pl.media_sequence
        .checked_add(pl.segments.len() as u64)
        .ok_or(ProtoError("media sequence number overflows"))
}

fn push_segment(pl: &mut Playlist, s: Segment) -> Result<(), ProtoError> {
    if pl.segments.len() == MAX_SEGMENTS {
        return Err(ProtoError("more than 10,000 segments in a playlist"));
    }
    pl.segments.push(s);
    Ok(())
}

/// A URI as it may go into a request line: visible ASCII, bounded.
fn check_uri(uri: &str) -> Result<&str, ProtoError> {
    if uri.is_empty() || uri.len() > MAX_URI || !uri.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ProtoError(
            "a playlist URI that is empty, too long or not visible ASCII",
        ));
    }
    Ok(uri)
}

/// An attribute list (`KEY=VALUE,KEY="quoted, value"`), quotes removed.
fn attributes(list: &str) -> Result<Vec<(&str, &str)>, ProtoError> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or(ProtoError("an attribute without ="))?;
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q
                .find('"')
                .ok_or(ProtoError("an unterminated quoted attribute"))?;
            let next = q[end + 1..].trim_start();
            match next.strip_prefix(',') {
                Some(n) => (&q[..end], n),
                None if next.is_empty() => (&q[..end], next),
                None => return Err(ProtoError("text after a quoted attribute")),
            }
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.push((key.trim(), value.trim()));
        rest = next.trim_start();
    }
    Ok(out)
}

fn attr<'a>(list: &'a str, name: &str) -> Result<Option<&'a str>, ProtoError> {
    Ok(attributes(list)?
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v)))
}

/// A decimal number of seconds (`2`, `0.320`, `0.3333`) as milliseconds, rounded.
pub(super) fn decimal_ms(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || int.len() > 6 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digit = |i: usize| u64::from(frac.as_bytes().get(i).map_or(0, |b| b - b'0'));
    let ms = int.parse::<u64>().ok()? * 1000 + digit(0) * 100 + digit(1) * 10 + digit(2);
    let ms = ms + u64::from(digit(3) >= 5);
    (ms <= MAX_DURATION_MS).then_some(ms)
}

/// An RFC 3339 date-time (`2026-12-06T10:49:57.123Z`, or with `+08:00`) as Unix ms.
pub(super) fn date_time_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let d = b.get(from..from + len)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                ms += i64::from(b[i] - b'0') * [100, 10, 1][i - start];
            }
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
    }
    let offset_min = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let (oh, om) = match b.len() - i {
                6 if b[i + 3] == b':' => (num(i + 1, 2)?, num(i + 4, 2)?),
                5 => (num(i + 1, 2)?, num(i + 3, 2)?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            (oh * 60 + om) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}
