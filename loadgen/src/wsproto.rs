//! The WebSocket client codec (RFC 6455), sans-IO: the upgrade request and the check of its
//! answer, masked client frames, and a parser for server frames.
//!
//! Why not tungstenite: its client wants to own the stream and a `Message` per frame, and the
//! viewer loop here wants the opposite: scan payloads in place, straight out of the read
//! buffer, with no copy and no allocation per frame. A client codec is small; what matters
//! (masking every client frame, the accept-key check, bounds on lengths) is all here and
//! unit-tested.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest server frame we accept; liveshard's batches are far below this.
pub const MAX_FRAME: usize = 16 << 20;
/// Largest upgrade response head we read.
pub const MAX_HEAD: usize = 16 << 10;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A small xorshift generator for handshake keys and masks. Masking exists so browsers
/// cannot be used to poison proxies; a load generator needs unpredictability, not secrecy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero: xorshift would stay at zero forever.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The `Sec-WebSocket-Key` for a request: 16 random bytes, base64.
pub fn new_key(rng: &mut Rng) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    raw[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    STANDARD.encode(raw)
}

/// What the server must answer in `Sec-WebSocket-Accept` for `key`.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

/// The HTTP/1.1 upgrade request for `path_and_query` on `host`.
pub fn upgrade_request(host: &str, path_and_query: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: liveshard-loadgen\r\n\r\n"
    )
    .into_bytes()
}

#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head is not complete yet.
    NeedMore,
    /// The head grew past [`MAX_HEAD`].
    TooLong,
    /// Not an HTTP response we understand.
    Malformed,
    /// The server answered with a status other than 101 (status, first body bytes).
    Status(u16, String),
    /// 101 without a matching `Sec-WebSocket-Accept`.
    BadAccept,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::NeedMore => write!(f, "upgrade response incomplete"),
            HandshakeError::TooLong => write!(f, "upgrade response head too long"),
            HandshakeError::Malformed => write!(f, "upgrade response malformed"),
            HandshakeError::Status(s, body) => write!(f, "HTTP {s}: {body}"),
            HandshakeError::BadAccept => write!(f, "Sec-WebSocket-Accept does not match"),
        }
    }
}

/// Checks the upgrade response at the start of `buf`. On success returns the length of the
/// head; bytes after it are already WebSocket frames.
pub fn check_upgrade_response(buf: &[u8], key: &str) -> Result<usize, HandshakeError> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Err(if buf.len() > MAX_HEAD {
            HandshakeError::TooLong
        } else {
            HandshakeError::NeedMore
        });
    };
    let head_len = end + 4;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HandshakeError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HandshakeError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(HandshakeError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HandshakeError::Malformed);
    }
    let code: u16 = code.parse().map_err(|_| HandshakeError::Malformed)?;
    if code != 101 {
        let body = &buf[head_len..];
        let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(HandshakeError::Status(code, body));
    }
    let want = accept_for(key);
    let accepted = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == want
        })
    });
    if !accepted {
        return Err(HandshakeError::BadAccept);
    }
    Ok(head_len)
}

/// Appends one masked client frame (FIN set) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: u32) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let key = mask.to_be_bytes();
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

/// A close frame with `code` and no reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, mask: u32) {
    encode_frame(out, OP_CLOSE, &code.to_be_bytes(), mask);
}

fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// One parsed server frame: where its payload lies in the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload_start: usize,
    pub payload_end: usize,
    /// Header plus payload: how far to advance past this frame.
    pub total: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// `buf` holds less than the whole frame; at least this many bytes are needed in all.
    NeedMore(usize),
    /// Reserved bits, an unknown opcode, a masked server frame or an oversized length.
    Bad(&'static str),
}

/// Parses the server frame at the start of `buf`. A whole frame must be buffered before its
/// payload is looked at, so the caller reads until `NeedMore` goes away.
pub fn parse_frame(buf: &[u8]) -> Result<Frame, FrameError> {
    if buf.len() < 2 {
        return Err(FrameError::NeedMore(2));
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(FrameError::Bad("reserved bits set"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::Bad("unknown opcode"));
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Bad("server frame is masked"));
    }
    let (len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Err(FrameError::NeedMore(4));
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Err(FrameError::NeedMore(10));
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME as u64 {
        return Err(FrameError::Bad("frame too large"));
    }
    let len = len as usize;
    let payload_start = pos;
    pos += len;
    if buf.len() < pos {
        return Err(FrameError::NeedMore(pos));
    }
    Ok(Frame {
        fin: b0 & 0x80 != 0,
        opcode,
        payload_start,
        payload_end: pos,
        total: pos,
    })
}

/// The status code of a close frame's payload (1005 "no status" when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_response_ok_leaves_following_frames() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec();
        let head = resp.len();
        resp.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        assert_eq!(check_upgrade_response(&resp, key), Ok(head));
        assert_eq!(
            check_upgrade_response(&resp[..head - 1], key),
            Err(HandshakeError::NeedMore)
        );
    }

    #[test]
    fn refusal_status_and_body_are_reported() {
        let resp = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 9\r\n\r\n{\"code\":1";
        match check_upgrade_response(resp, "k") {
            Err(HandshakeError::Status(401, body)) => assert_eq!(body, "{\"code\":1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_accept_is_refused() {
        let resp = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(
            check_upgrade_response(resp, "k"),
            Err(HandshakeError::BadAccept)
        );
    }

    #[test]
    fn client_frames_are_masked_and_round_trip() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, OP_TEXT, &payload, 0xA1B2_C3D4);
            assert_eq!(out[0], 0x81);
            assert_ne!(out[1] & 0x80, 0, "mask bit set");
            // Unmask by hand and compare.
            let (hdr, key_at) = match out[1] & 0x7F {
                126 => (8, 4),
                127 => (14, 10),
                _ => (6, 2),
            };
            let key: [u8; 4] = out[key_at..key_at + 4].try_into().unwrap();
            let mut body = out[hdr..].to_vec();
            apply_mask(&mut body, key);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn server_frames_parse_with_all_length_forms() {
        let mut f = vec![0x81, 126, 0x01, 0x00];
        f.extend(std::iter::repeat_n(b'a', 256));
        let fr = parse_frame(&f).unwrap();
        assert_eq!((fr.opcode, fr.payload_start, fr.total), (OP_TEXT, 4, 260));
        assert_eq!(parse_frame(&f[..100]), Err(FrameError::NeedMore(260)));
        assert_eq!(parse_frame(&[0x81]), Err(FrameError::NeedMore(2)));
        let mut big = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        big.extend(std::iter::repeat_n(0u8, 65536));
        assert_eq!(parse_frame(&big).unwrap().payload_end, 10 + 65536);
    }

    #[test]
    fn bad_server_frames_are_refused() {
        assert!(matches!(parse_frame(&[0xC1, 0]), Err(FrameError::Bad(_))));
        assert!(matches!(parse_frame(&[0x83, 0]), Err(FrameError::Bad(_))));
        assert!(matches!(
            parse_frame(&[0x81, 0x80]),
            Err(FrameError::Bad(_))
        ));
        let huge = [0x82, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(parse_frame(&huge), Err(FrameError::Bad(_))));
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(&[0x03, 0xF0, b'x']), 1008);
        assert_eq!(close_code(&[]), 1005);
    }
}
