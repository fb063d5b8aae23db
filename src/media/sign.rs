//! Signed stream URLs, Tencent Cloud CSS scheme: `?txSecret=…&txTime=…`.
//!
//! `txTime` is the expiry as upper-case hex Unix seconds; `txSecret` is the lower-case hex
//! MD5 of `KEY + StreamName + txTime` (the txTime text exactly as it appears in the URL).
//! [`sign`] makes a pair; [`verify`] checks one found in a query string, comparing the
//! secret in constant time and refusing expired ones (which also refuses a replay after
//! expiry). MD5 is what the scheme specifies, so that URLs signed by Tencent's tools and
//! by ours are interchangeable; the secret is a capability, not a password hash.
//!
//! RTMP clients put the query in different places: on the stream name given to `publish`
//! or `play` (`test?txSecret=…`), or on the app / tcUrl
//! (`rtmp://host/live?txSecret=…/test`). [`StreamName::parse`] splits a name from its query;
//! the session picks the query to check ([`crate::media::rtmp::session`]).
//!
//! A relay from another server (an nginx-rtmp edge's `push`) cannot carry its publisher's
//! signature: it authenticates with the server-wide relay key instead ([`verify_relay`],
//! `?relay_key=…`, compared in constant time).

use std::fmt;

use md5::{Digest, Md5};

/// Why a signature was refused. Each is a refused publish/play, never a closed shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignError {
    /// No `txSecret` or no `txTime` in the query.
    Missing,
    /// Present but not well-formed (not hex, wrong length, given twice).
    Malformed,
    /// `txTime` is in the past.
    Expired,
    /// The secret does not match the key, stream and time.
    Mismatch,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignError::Missing => "missing txSecret/txTime signature",
            SignError::Malformed => "malformed txSecret/txTime signature",
            SignError::Expired => "signature expired (txTime is in the past)",
            SignError::Mismatch => "signature mismatch (txSecret is wrong for this stream)",
        })
    }
}

impl std::error::Error for SignError {}

/// Signs `stream` until `expiry_unix` (seconds): returns `(txSecret, txTime)`.
pub fn sign(key: &str, stream: &str, expiry_unix: u64) -> (String, String) {
    let tx_time = format!("{expiry_unix:X}");
    let secret = secret(key, stream, &tx_time);
    (secret, tx_time)
}

fn secret(key: &str, stream: &str, tx_time: &str) -> String {
    let mut h = Md5::new();
    h.update(key.as_bytes());
    h.update(stream.as_bytes());
    h.update(tx_time.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0F));
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0x0F)])
}

/// Checks the `txSecret`/`txTime` pair in `query` (the part after `?`, without it) for
/// `stream` at `now_unix` seconds.
pub fn verify(key: &str, stream: &str, query: &str, now_unix: u64) -> Result<(), SignError> {
    let secret_given = unique_param(query, "txSecret")?.ok_or(SignError::Missing)?;
    let tx_time = unique_param(query, "txTime")?.ok_or(SignError::Missing)?;
    if secret_given.len() != 32 || !secret_given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignError::Malformed);
    }
    if tx_time.is_empty() || tx_time.len() > 16 {
        return Err(SignError::Malformed);
    }
    let expiry = u64::from_str_radix(tx_time, 16).map_err(|_| SignError::Malformed)?;
    if now_unix > expiry {
        return Err(SignError::Expired);
    }
    let expected = secret(key, stream, tx_time);
    if constant_time_eq_ignore_ascii_case(expected.as_bytes(), secret_given.as_bytes()) {
        Ok(())
    } else {
        Err(SignError::Mismatch)
    }
}

/// Compares without an early exit, so the time taken does not tell an attacker how many
/// leading characters of a guessed secret were right. Lengths are public (always 32 here).
fn constant_time_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    constant_time_eq_by(a, b, |x| x.to_ascii_lowercase())
}

/// [`constant_time_eq_ignore_ascii_case`] with each byte passed through `f` first.
fn constant_time_eq_by(a: &[u8], b: &[u8], f: fn(u8) -> u8) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= f(*x) ^ f(*y);
    }
    std::hint::black_box(diff) == 0
}

/// The query parameter that carries a relay key (`media.relay_key`): an nginx-rtmp edge's
/// `push rtmp://host/live?relay_key=KEY` sends it on the app name, since nginx-rtmp drops
/// the publisher's own query when it pushes. Named `…_key` so that log redaction
/// ([`crate::logging::redact`]) hides its value.
pub const RELAY_PARAM: &str = "relay_key";

/// Why a relay key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// The query names a relay key but none is configured.
    Off,
    /// Given twice (see [`verify`]'s rule), or not the configured key.
    Mismatch,
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayError::Off => "relay pushes are not enabled on this server (media.relay_key)",
            RelayError::Mismatch => "wrong relay key",
        })
    }
}

/// Checks the relay key in `query`: `None` when the query carries none (the publish is
/// then checked by its signature), else whether it is `configured` (empty: relays off).
pub fn verify_relay(configured: &str, query: &str) -> Option<Result<(), RelayError>> {
    let given = match unique_param(query, RELAY_PARAM) {
        Ok(Some(given)) => given,
        Ok(None) => return None,
        Err(_) => return Some(Err(RelayError::Mismatch)),
    };
    Some(if configured.is_empty() {
        Err(RelayError::Off)
    } else if same_secret(configured, given) {
        Ok(())
    } else {
        Err(RelayError::Mismatch)
    })
}

/// Whether two secrets are equal, in time that depends on neither: both are hashed first
/// (SHA-256), so neither the position of the first difference nor the configured
/// secret's length shows in the time taken.
pub fn same_secret(a: &str, b: &str) -> bool {
    use sha2::Sha256;
    let a = Sha256::digest(a.as_bytes());
    let b = Sha256::digest(b.as_bytes());
    constant_time_eq_by(&a, &b, |x| x)
}

/// The value of `name` in a query string; given twice is malformed, since two values would
/// leave it to chance which one a proxy and we each check.
fn unique_param<'a>(query: &'a str, name: &str) -> Result<Option<&'a str>, SignError> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            if found.is_some() {
                return Err(SignError::Malformed);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// The value of `name` in a query string (first occurrence), for callers that read other
/// parameters than the signature.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A stream (or app) name as an RTMP client sends it, split at the first `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamName {
    pub name: String,
    /// The query without the `?`; `None` when there was no `?`.
    pub query: Option<String>,
}

impl StreamName {
    pub fn parse(raw: &str) -> StreamName {
        match raw.split_once('?') {
            Some((name, query)) => StreamName {
                name: name.to_owned(),
                query: Some(query.to_owned()),
            },
            None => StreamName {
                name: raw.to_owned(),
                query: None,
            },
        }
    }

    /// Whether the query carries a signature to check.
    pub fn is_signed(&self) -> bool {
        self.query
            .as_deref()
            .is_some_and(|q| query_param(q, "txSecret").is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "e12c46f2612d5106e2034781ab261ca3";

    #[test]
    fn tencent_test_vector() {
        let (secret, time) = sign(KEY, "test", 0x5C27_1099);
        assert_eq!(time, "5C271099");
        assert_eq!(secret, "f85a2ab363fe4deaffef9754d79da6fe");
    }

    #[test]
    fn a_relay_key_is_checked_only_when_the_query_names_one() {
        let key = "relay-0123456789abcdef";
        assert_eq!(verify_relay(key, "txSecret=a&txTime=b"), None);
        assert_eq!(
            verify_relay(key, "relay_key=relay-0123456789abcdef"),
            Some(Ok(()))
        );
        assert_eq!(
            verify_relay(key, "x=1&relay_key=relay-0123456789ABCDEF"),
            Some(Err(RelayError::Mismatch))
        );
        assert_eq!(
            verify_relay(key, "relay_key="),
            Some(Err(RelayError::Mismatch))
        );
        assert_eq!(
            verify_relay(key, "relay_key=relay-0123456789abcdef&relay_key=x"),
            Some(Err(RelayError::Mismatch))
        );
        assert_eq!(
            verify_relay("", "relay_key=anything"),
            Some(Err(RelayError::Off))
        );
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("abc", "ABC"));
    }

    #[test]
    fn a_fresh_signature_verifies() {
        let q = "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099";
        assert_eq!(verify(KEY, "test", q, 0x5C27_1099 - 10), Ok(()));
        // The expiry second itself is still valid.
        assert_eq!(verify(KEY, "test", q, 0x5C27_1099), Ok(()));
        // Upper-case secret accepted.
        let upper = "txTime=5C271099&txSecret=F85A2AB363FE4DEAFFEF9754D79DA6FE";
        assert_eq!(verify(KEY, "test", upper, 0), Ok(()));
    }

    #[test]
    fn expired_signature_is_refused() {
        let q = "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099";
        assert_eq!(
            verify(KEY, "test", q, 0x5C27_1099 + 1),
            Err(SignError::Expired)
        );
    }

    #[test]
    fn tampered_signatures_are_refused() {
        let good = "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099";
        assert_eq!(verify(KEY, "other", good, 0), Err(SignError::Mismatch));
        assert_eq!(
            verify("wrongkey", "test", good, 0),
            Err(SignError::Mismatch)
        );
        // A later expiry with the old secret.
        let later = "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271100";
        assert_eq!(verify(KEY, "test", later, 0), Err(SignError::Mismatch));
        let flipped = "txSecret=f85a2ab363fe4deaffef9754d79da6ff&txTime=5C271099";
        assert_eq!(verify(KEY, "test", flipped, 0), Err(SignError::Mismatch));
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(verify(KEY, "test", "", 0), Err(SignError::Missing));
        assert_eq!(
            verify(KEY, "test", "txTime=5C271099", 0),
            Err(SignError::Missing)
        );
        assert_eq!(
            verify(KEY, "test", "txSecret=f85a2ab363fe4deaffef9754d79da6fe", 0),
            Err(SignError::Missing)
        );
        assert_eq!(
            verify(KEY, "test", "txSecret=zz&txTime=5C271099", 0),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify(
                KEY,
                "test",
                "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=nothex",
                0
            ),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify(
                KEY,
                "test",
                "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099&txTime=FFFFFFFF",
                0
            ),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify(
                KEY,
                "test",
                "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=11111111111111111",
                0
            ),
            Err(SignError::Malformed)
        );
    }

    #[test]
    fn stream_names_split_at_the_first_question_mark() {
        let s = StreamName::parse("test?txSecret=abc&txTime=5C271099");
        assert_eq!(s.name, "test");
        assert_eq!(s.query.as_deref(), Some("txSecret=abc&txTime=5C271099"));
        assert!(s.is_signed());
        let plain = StreamName::parse("test");
        assert_eq!(plain.query, None);
        assert!(!plain.is_signed());
        assert_eq!(query_param("a=1&b=2", "b"), Some("2"));
        assert_eq!(query_param("a=1&b", "b"), Some(""));
        assert_eq!(query_param("a=1", "c"), None);
    }
}
