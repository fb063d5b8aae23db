//! Request bodies, sans-IO: [`BodyDecoder`] collects a `Content-Length` or chunked body
//! from the connection's buffer within the route's limit.
//!
//! The buffer grows with the bytes that arrive, never with a size the client declares, and
//! the chunked framing is read strictly (RFC 9112 §7.1): a front proxy that reads a line
//! differently from us is half of a request-smuggling attack.

use bytes::{Buf, Bytes, BytesMut};

use super::codec::{BodyFraming, HttpError};

/// Collects a request body from the connection's buffer within a byte limit.
#[derive(Debug)]
pub struct BodyDecoder {
    state: BodyState,
    limit: u64,
    body: BytesMut,
}

#[derive(Debug, PartialEq, Eq)]
enum BodyState {
    Length {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    ChunkDataEnd,
    /// Trailer fields, read and discarded; `seen` bytes of them so far.
    Trailers {
        seen: usize,
    },
    Done,
}

/// Longest chunk-size line we accept (hex digits, extensions, CRLF).
const MAX_CHUNK_LINE: usize = 1024;
/// What a body buffer starts with. It grows with the bytes that arrive, never with the
/// size a client declares: a `Content-Length: 2000000` followed by one byte costs this, not
/// 2 MB (the buffer at most doubles past what was received, up to the route's limit).
pub const INITIAL_BODY_CAPACITY: usize = 16 * 1024;
/// Longest trailer section we accept (we read and discard trailers).
const MAX_TRAILERS: usize = 8 * 1024;

impl BodyDecoder {
    /// A decoder for `framing`, or an error if a declared length is already over `limit`
    /// (a limit of 0 is a route that takes no body: any declared length is refused).
    /// Nothing is allocated for the declared size; see [`INITIAL_BODY_CAPACITY`].
    pub fn new(framing: BodyFraming, limit: u64) -> Result<Self, HttpError> {
        let state = match framing {
            BodyFraming::None => BodyState::Done,
            BodyFraming::Length(_) if limit == 0 => return Err(HttpError::BodyNotAllowed),
            BodyFraming::Length(n) if n > limit => return Err(HttpError::BodyTooLarge),
            BodyFraming::Length(n) => BodyState::Length { remaining: n },
            BodyFraming::Chunked => BodyState::ChunkSize,
        };
        let cap = match framing {
            BodyFraming::Length(n) => (n as usize).min(INITIAL_BODY_CAPACITY),
            _ => 0,
        };
        Ok(Self {
            state,
            limit,
            body: BytesMut::with_capacity(cap),
        })
    }

    /// Bytes the body buffer holds (its capacity), for the shard's budget of bodies.
    pub fn buffered(&self) -> usize {
        self.body.capacity()
    }

    /// Consumes what it can from `buf`. `Ok(Some(body))` once the body is complete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        loop {
            match self.state {
                BodyState::Done => return Ok(Some(std::mem::take(&mut self.body).freeze())),
                BodyState::Length { remaining } => {
                    let take = (remaining as usize).min(buf.len());
                    self.body.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = BodyState::Length { remaining };
                        return Ok(None);
                    }
                    self.state = BodyState::Done;
                }
                BodyState::ChunkSize => {
                    let Some(line_end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&buf[..line_end])?;
                    buf.advance(line_end + 2);
                    if size == 0 {
                        self.state = BodyState::Trailers { seen: 0 };
                    } else {
                        if self.limit == 0 {
                            return Err(HttpError::BodyNotAllowed);
                        }
                        if self.body.len() as u64 + size > self.limit {
                            return Err(HttpError::BodyTooLarge);
                        }
                        self.state = BodyState::ChunkData { remaining: size };
                    }
                }
                BodyState::ChunkData { remaining } => {
                    let take = (remaining as usize).min(buf.len());
                    self.body.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = BodyState::ChunkData { remaining };
                        return Ok(None);
                    }
                    self.state = BodyState::ChunkDataEnd;
                }
                BodyState::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(HttpError::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers { seen } => {
                    // Trailer fields until an empty line; read and ignored, within
                    // MAX_TRAILERS for the whole section.
                    let Some(line_end) = find_crlf(buf, MAX_TRAILERS - seen)? else {
                        return Ok(None);
                    };
                    if buf[..line_end].iter().any(|&b| b == b'\r' || b == b'\n') {
                        // A bare CR or LF ends the line for a lenient reader, not for us.
                        return Err(HttpError::Malformed("bare CR or LF in trailer"));
                    }
                    buf.advance(line_end + 2);
                    self.state = if line_end == 0 {
                        BodyState::Done
                    } else {
                        let seen = seen + line_end + 2;
                        if seen > MAX_TRAILERS {
                            return Err(HttpError::Malformed("trailer section too long"));
                        }
                        BodyState::Trailers { seen }
                    };
                }
            }
        }
    }
}

/// Position of the first CRLF in `buf`, refusing lines longer than `max`.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(p) if p <= max => Ok(Some(p)),
        Some(_) => Err(HttpError::Malformed("chunk line too long")),
        None if buf.len() > max => Err(HttpError::Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// Parses a chunk-size line (without its CRLF), RFC 9112 §7.1:
/// `chunk-size = 1*HEXDIG`, then optional whitespace (BWS) and `;ext` only.
///
/// Strict on purpose: a front proxy that reads a line differently from us is half of a
/// request-smuggling attack. Refused: anything before the first digit (`" 5"`, `"\t5"`,
/// `"+5"`, `"0x5"`), an empty size, more than 15 digits, and a bare CR, LF or other control
/// byte anywhere in the line (a lenient reader ends the line there). Accepted as nginx and
/// hyper do: spaces or tabs after the digits, before `;` or the end of the line.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let bad = || HttpError::Malformed("invalid chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(bad());
    }
    let rest = &line[digits..];
    let after_bws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[after_bws..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(bad());
    }
    // chunk-ext: visible characters, spaces and tabs (and obs-text), never controls.
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::Malformed("control character in chunk extension"));
    }
    // ≤ 15 hex digits always fits in u64.
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| bad())?;
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_body_in_pieces() {
        let mut d = BodyDecoder::new(BodyFraming::Length(5), 10).unwrap();
        let mut buf = BytesMut::from(&b"he"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"lloGET");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), "hello");
        assert_eq!(
            &buf[..],
            b"GET",
            "the next pipelined request stays buffered"
        );
        assert_eq!(
            BodyDecoder::new(BodyFraming::Length(11), 10).unwrap_err(),
            HttpError::BodyTooLarge
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let raw = b"4;name=x\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        // Byte by byte: every split point must work.
        let mut buf = BytesMut::new();
        let mut out = None;
        for &b in raw.iter() {
            buf.extend_from_slice(&[b]);
            if out.is_none() {
                out = d.decode(&mut buf).unwrap();
            }
        }
        assert_eq!(out.unwrap(), "Wikipedia");
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn chunked_body_over_limit_and_bad_framing() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 4).unwrap();
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err(), HttpError::BodyTooLarge);
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().status(), 400);
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let mut buf = BytesMut::from(&b"2\r\nabXX"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().status(), 400);
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let mut buf = BytesMut::from(vec![b'1'; 2000].as_slice());
        assert_eq!(d.decode(&mut buf).unwrap_err().status(), 400);
    }

    fn chunk_line(line: &[u8]) -> Result<u64, HttpError> {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let mut buf = BytesMut::from(line);
        buf.extend_from_slice(b"\r\n");
        match d.decode(&mut buf) {
            Ok(_) => Ok(match d.state {
                BodyState::ChunkData { remaining } => remaining,
                BodyState::Trailers { .. } => 0,
                ref s => panic!("unexpected state {s:?}"),
            }),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn chunk_size_with_leading_whitespace_is_refused() {
        for line in [
            &b" 5"[..],
            b"\t5",
            b"  5;x=y",
            b"+5",
            b"0x5",
            b"",
            b";ext",
            b"5 x",
            b"5\n",
            b"5;a\nb",
            b"5;a\rb",
            b"5;\x00",
            b"0000000000000005",
        ] {
            let e = chunk_line(line).unwrap_err();
            assert_eq!(
                e.status(),
                400,
                "{:?} → {e:?}",
                String::from_utf8_lossy(line)
            );
        }
        for (line, size) in [
            (&b"5"[..], 5),
            (b"5 ", 5),
            (b"5\t", 5),
            (b"5 ;name=v", 5),
            (b"a;name=\"q v\"", 10),
            (b"00F", 15),
            (b"0", 0),
        ] {
            assert_eq!(
                chunk_line(line).unwrap(),
                size,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn endless_trailers_are_refused() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let mut buf = BytesMut::from(&b"0\r\n"[..]);
        let mut refused = false;
        for _ in 0..2000 {
            buf.extend_from_slice(b"X-T: 1\r\n");
            if d.decode(&mut buf).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a trailer section has a bound, not only each line");
    }

    #[test]
    fn trailer_with_a_bare_lf_is_refused() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 100).unwrap();
        let mut buf = BytesMut::from(&b"0\r\nX: 1\n\r\n\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().status(), 400);
    }

    #[test]
    fn declared_length_is_not_allocated_up_front() {
        let d = BodyDecoder::new(BodyFraming::Length(2_113_536), 4 * 1024 * 1024).unwrap();
        assert!(
            d.body.capacity() <= INITIAL_BODY_CAPACITY,
            "{}",
            d.body.capacity()
        );
        // The buffer grows with what arrives.
        let mut d = BodyDecoder::new(BodyFraming::Length(100_000), 100_000).unwrap();
        let mut buf = BytesMut::from(vec![b'x'; 40_000].as_slice());
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(d.body.capacity() < 100_000, "{}", d.body.capacity());
        buf.extend_from_slice(&[b'y'; 60_000]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().len(), 100_000);
    }

    #[test]
    fn a_route_without_a_body_refuses_a_declared_one() {
        assert_eq!(
            BodyDecoder::new(BodyFraming::Length(1_048_576), 0).unwrap_err(),
            HttpError::BodyNotAllowed
        );
        assert_eq!(HttpError::BodyNotAllowed.status(), 413);
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 0).unwrap();
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err(), HttpError::BodyNotAllowed);
        // An empty chunked body is no body.
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 0).unwrap();
        let mut buf = BytesMut::from(&b"0\r\n\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), "");
        assert!(BodyDecoder::new(BodyFraming::None, 0).is_ok());
    }
}
