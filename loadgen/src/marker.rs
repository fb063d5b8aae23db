//! Latency markers: what a publisher writes into each message's text and how a viewer finds
//! them again in whatever frames the server sends.
//!
//! A marker is `lg:RUN:PUB:SEQ:UNIXNS;` — the run id (8 hex digits, so items left in a
//! room's history by an earlier run are not counted), the publisher, its sequence number and
//! the wall-clock send time in nanoseconds. Only `[0-9a-z:;]` is used, so JSON escaping on
//! the server cannot change it. Viewers do not assume a frame structure: liveshard sends
//! `batch` frames with many items, other servers one message per frame; a viewer scans the
//! payload for every marker of its run.

use memchr::memmem::Finder;

/// Builds the danmaku text for one message: the marker, padded with `x` to `len` bytes.
pub fn message_text(
    out: &mut String,
    run: u32,
    publisher: u32,
    seq: u64,
    unix_ns: u64,
    len: usize,
) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(out, "lg:{run:08x}:{publisher}:{seq}:{unix_ns};");
    while out.len() < len {
        out.push('x');
    }
}

/// The longest marker text (so `--payload` can be checked up front).
pub const MAX_MARKER_LEN: usize =
    "lg:ffffffff:4294967295:18446744073709551615:18446744073709551615;".len();

/// One marker found in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub publisher: u32,
    pub seq: u64,
    pub unix_ns: u64,
}

/// Finds the markers of one run.
pub struct Scanner {
    prefix: Finder<'static>,
    prefix_len: usize,
}

impl Scanner {
    pub fn new(run: u32) -> Self {
        let prefix = format!("lg:{run:08x}:").into_bytes();
        let prefix_len = prefix.len();
        Scanner {
            prefix: Finder::new(&prefix).into_owned(),
            prefix_len,
        }
    }

    /// Calls `each` for every well-formed marker of this run in `payload`.
    pub fn scan(&self, payload: &[u8], mut each: impl FnMut(Marker)) {
        let mut at = 0;
        while let Some(i) = self.prefix.find(&payload[at..]) {
            let start = at + i + self.prefix_len;
            at = start;
            let rest = &payload[start..];
            let Some((publisher, n1)) = digits(rest, b':') else {
                continue;
            };
            let Some((seq, n2)) = digits(&rest[n1..], b':') else {
                continue;
            };
            let Some((unix_ns, n3)) = digits(&rest[n1 + n2..], b';') else {
                continue;
            };
            at = start + n1 + n2 + n3;
            if let Ok(publisher) = u32::try_from(publisher) {
                each(Marker {
                    publisher,
                    seq,
                    unix_ns,
                });
            }
        }
    }
}

/// Decimal digits up to `end`; returns the value and the bytes used, `end` included.
fn digits(buf: &[u8], end: u8) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(21) {
        if b == end {
            return (i > 0).then_some((v, i + 1));
        }
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &Scanner, payload: &[u8]) -> Vec<Marker> {
        let mut v = Vec::new();
        s.scan(payload, |m| v.push(m));
        v
    }

    #[test]
    fn text_is_padded_to_length() {
        let mut t = String::new();
        message_text(&mut t, 0xab, 3, 17, 1_700_000_000_123_456_789, 64);
        assert_eq!(t.len(), 64);
        assert!(t.starts_with("lg:000000ab:3:17:1700000000123456789;xx"));
        message_text(&mut t, 1, 1, 1, 1, 4);
        assert_eq!(t, "lg:00000001:1:1:1;", "never cut shorter than the marker");
    }

    #[test]
    fn finds_every_marker_in_a_batch_frame() {
        let s = Scanner::new(0xab);
        let frame = br#"{"type":"batch","room":"r","msgs":[{"text":"lg:000000ab:1:5:100;xxx"},{"text":"lg:000000ab:2:9:200;"}]}"#;
        assert_eq!(
            found(&s, frame),
            vec![
                Marker {
                    publisher: 1,
                    seq: 5,
                    unix_ns: 100
                },
                Marker {
                    publisher: 2,
                    seq: 9,
                    unix_ns: 200
                }
            ]
        );
    }

    #[test]
    fn ignores_other_runs_and_broken_markers() {
        let s = Scanner::new(0xab);
        let frame = b"lg:000000ac:1:5:100; lg:000000ab:1:x:1; lg:000000ab:1:2:3 lg:000000ab:7:8:9;";
        assert_eq!(
            found(&s, frame),
            vec![Marker {
                publisher: 7,
                seq: 8,
                unix_ns: 9
            }]
        );
    }

    #[test]
    fn overflowing_numbers_are_not_markers() {
        let s = Scanner::new(1);
        assert!(found(&s, b"lg:00000001:1:1:99999999999999999999999;").is_empty());
    }
}
