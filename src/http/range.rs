//! Sans-IO `Range` / `If-Range` for byte ranges of a stored file (RFC 9110 §14): what part
//! of a representation of `len` bytes a request asks for.
//!
//! One range is served (206). Several ranges are answered with the whole body (200): RFC
//! 9110 §14.2 lets a server ignore `Range`, a client that asked for several still gets a
//! correct answer, and a `multipart/byteranges` body is never built (nor its memory held).
//! A header that does not parse, or names another unit, is ignored the same way (§14.2:
//! "a server MAY ignore the Range header field"). A range that starts past the end, or
//! a suffix of zero bytes, is unsatisfiable: 416 with `Content-Range: bytes */len`.
//!
//! The header is bounded before it is read ([`MAX_HEADER`]), numbers are checked for
//! overflow, and nothing is allocated.

/// A `Range` value longer than this is ignored (a real one is a few dozen bytes).
pub const MAX_HEADER: usize = 1024;

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    /// 200, the whole body (no usable `Range`, several ranges, or `If-Range` failed).
    Full,
    /// 206, bytes `start..=end` (inclusive, as `Content-Range` writes them).
    Part { start: u64, end: u64 },
    /// 416, `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// The answer to a request with `range` (the `Range` header) and `if_range` (the
/// `If-Range` header) for a representation of `len` bytes whose entity tag is `etag`
/// (quoted, strong). `If-Range` that is not exactly `etag` means the client's copy is
/// another version: the whole body (§13.1.5).
pub fn resolve(range: Option<&str>, if_range: Option<&str>, etag: &str, len: u64) -> Ranged {
    let Some(range) = range else {
        return Ranged::Full;
    };
    if let Some(v) = if_range {
        if v.trim() != etag {
            return Ranged::Full;
        }
    }
    match parse(range) {
        Some(Spec::FromTo(a, b)) => {
            if a >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part {
                    start: a,
                    end: b.unwrap_or(u64::MAX).min(len - 1),
                }
            }
        }
        Some(Spec::Suffix(n)) => {
            if n == 0 || len == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part {
                    start: len - n.min(len),
                    end: len - 1,
                }
            }
        }
        Some(Spec::Several) | None => Ranged::Full,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-` (`None`: to the end).
    FromTo(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
    /// More than one range (each well formed).
    Several,
}

/// `bytes=<one or more ranges>`; `None` when it does not parse (then it is ignored).
fn parse(v: &str) -> Option<Spec> {
    if v.len() > MAX_HEADER {
        return None;
    }
    let (unit, set) = v.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut first = None;
    let mut count = 0usize;
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            // Empty list elements are allowed (RFC 9110 §5.6.1).
            continue;
        }
        let spec = one(part)?;
        count += 1;
        first.get_or_insert(spec);
    }
    match count {
        0 => None,
        1 => first,
        _ => Some(Spec::Several),
    }
}

fn one(part: &str) -> Option<Spec> {
    let (a, b) = part.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Some(Spec::Suffix(number(b)?));
    }
    let a = number(a)?;
    if b.is_empty() {
        return Some(Spec::FromTo(a, None));
    }
    let b = number(b)?;
    // `last < first` makes the range invalid (§14.1.1): the header is ignored.
    (b >= a).then_some(Spec::FromTo(a, Some(b)))
}

/// Digits only (no sign, no space inside), at most 19 of them so it fits a u64.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "\"abc\"";

    fn r(h: &str, len: u64) -> Ranged {
        resolve(Some(h), None, E, len)
    }

    fn part(start: u64, end: u64) -> Ranged {
        Ranged::Part { start, end }
    }

    #[test]
    fn single_ranges() {
        assert_eq!(r("bytes=0-99", 1000), part(0, 99));
        assert_eq!(r("bytes=100-", 1000), part(100, 999));
        assert_eq!(r("bytes=-50", 1000), part(950, 999));
        assert_eq!(r("bytes=990-2000", 1000), part(990, 999));
        assert_eq!(r("bytes=-5000", 1000), part(0, 999));
        assert_eq!(r("Bytes = 5-5", 1000), part(5, 5));
        assert_eq!(r("bytes=0-99,", 1000), part(0, 99));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(r("bytes=1000-", 1000), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=5000-6000", 1000), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0", 1000), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-1", 0), Ranged::Unsatisfiable);
    }

    #[test]
    fn several_or_malformed_ranges_get_the_whole_body() {
        assert_eq!(r("bytes=0-1,5-9", 1000), Ranged::Full);
        assert_eq!(r("bytes=9-5", 1000), Ranged::Full);
        assert_eq!(r("items=0-5", 1000), Ranged::Full);
        assert_eq!(r("bytes=", 1000), Ranged::Full);
        assert_eq!(r("bytes=a-b", 1000), Ranged::Full);
        assert_eq!(r("bytes=+1-2", 1000), Ranged::Full);
        assert_eq!(r("bytes=99999999999999999999-", 1000), Ranged::Full);
        assert_eq!(r("bytes=0-1,x", 1000), Ranged::Full);
        assert_eq!(
            r(&format!("bytes={}", "0-1,".repeat(400)), 1000),
            Ranged::Full
        );
        assert_eq!(resolve(None, None, E, 1000), Ranged::Full);
    }

    #[test]
    fn if_range_must_match_the_etag() {
        assert_eq!(resolve(Some("bytes=0-9"), Some(E), E, 100), part(0, 9));
        assert_eq!(
            resolve(Some("bytes=0-9"), Some("\"other\""), E, 100),
            Ranged::Full
        );
        assert_eq!(
            resolve(Some("bytes=0-9"), Some("W/\"abc\""), E, 100),
            Ranged::Full
        );
    }
}
