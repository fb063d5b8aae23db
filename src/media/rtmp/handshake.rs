//! The RTMP server handshake (C0 C1 C2 → S0 S1 S2), sans-IO.
//!
//! Two forms exist and a server must answer both:
//! - simple: S1 is a timestamp, four zero bytes and random filler; S2 echoes C1.
//!   OBS, librtmp and ffmpeg publishing accept it.
//! - digest ("complex", Flash Player 9+): C1 carries an HMAC-SHA256 digest at one of two
//!   positions, keyed with the Flash Player key; the server answers with its own digest in
//!   S1 (Flash Media Server key) and signs S2 with a key derived from C1's digest. Flash-era
//!   players refuse a server without it, and ffmpeg *playing* checks it when S1 announces
//!   a version. It costs three HMACs per connection, so we do it whenever C1 has a valid
//!   digest, and fall back to simple otherwise.
//!
//! S0, S1 and S2 are sent together as soon as C1 is in; C2 is read and ignored (clients
//! disagree on what it holds, and nothing in it protects anything). The Diffie-Hellman part
//! of RTMPE (C0 = 6) is refused: encrypted RTMP is not supported.
//!
//! The random filler only has to look random to the client (no secret depends on it), so
//! it comes from a small generator seeded by the caller, not from the OS.

use std::fmt;

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Size of C1, C2, S1 and S2.
pub const PACKET_LEN: usize = 1536;
const DIGEST_LEN: usize = 32;
const RTMP_VERSION: u8 = 3;

/// "Genuine Adobe Flash Player 001" followed by the well-known 32 bytes; the first 30 bytes
/// key the client's digest.
const FP_KEY: [u8; 62] = *b"Genuine Adobe Flash Player 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
const FP_KEY_LEN: usize = 30;
/// "Genuine Adobe Flash Media Server 001" and the same 32 bytes; the first 36 bytes key the
/// server's S1 digest, all 68 derive the S2 key.
const FMS_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
const FMS_KEY_LEN: usize = 36;
/// The version S1 announces in digest mode (what nginx-rtmp sends). ffmpeg validates S1's
/// digest only when this is 3 or more.
const SERVER_VERSION: [u8; 4] = [0x0D, 0x0E, 0x0A, 0x0D];

/// Which handshake the client spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    Simple,
    Digest,
}

/// Why the handshake failed; the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0 is not 3 (6 and 8 are encrypted RTMP).
    UnsupportedVersion(u8),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::UnsupportedVersion(6 | 8 | 9) => {
                f.write_str("encrypted RTMP (RTMPE) is not supported")
            }
            HandshakeError::UnsupportedVersion(v) => write!(f, "unsupported RTMP version {v}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

#[derive(Debug)]
enum Stage {
    /// Gathering C0 + C1 into `c0c1`.
    C0C1,
    /// S0 S1 S2 sent; skipping this many bytes of C2.
    C2 {
        left: usize,
    },
    Done,
}

/// The server side of one handshake.
#[derive(Debug)]
pub struct Handshake {
    stage: Stage,
    c0c1: Vec<u8>,
    rng: u64,
    kind: Option<HandshakeKind>,
}

impl Handshake {
    /// `seed` varies the filler between connections.
    pub fn new(seed: u64) -> Handshake {
        Handshake {
            stage: Stage::C0C1,
            c0c1: Vec::with_capacity(1 + PACKET_LEN),
            // A zero state would make xorshift emit zeros forever.
            rng: seed | 1,
            kind: None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Which form was spoken, once C1 has been read.
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// Consumes handshake bytes from `input`; returns how many it used. Bytes after C2
    /// belong to the chunk stream. S0 S1 S2 are appended to `out` once C1 is complete.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
    ) -> Result<usize, HandshakeError> {
        let mut pos = 0;
        loop {
            match &mut self.stage {
                Stage::C0C1 => {
                    if let (Some(&v), true) = (input.get(pos), self.c0c1.is_empty()) {
                        if v != RTMP_VERSION {
                            return Err(HandshakeError::UnsupportedVersion(v));
                        }
                    }
                    let take = (1 + PACKET_LEN - self.c0c1.len()).min(input.len() - pos);
                    self.c0c1.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    if self.c0c1.len() < 1 + PACKET_LEN {
                        return Ok(pos);
                    }
                    self.respond(out);
                    self.c0c1 = Vec::new();
                    self.stage = Stage::C2 { left: PACKET_LEN };
                }
                Stage::C2 { left } => {
                    let take = (*left).min(input.len() - pos);
                    pos += take;
                    *left -= take;
                    if *left > 0 {
                        return Ok(pos);
                    }
                    self.stage = Stage::Done;
                }
                Stage::Done => return Ok(pos),
            }
        }
    }

    fn respond(&mut self, out: &mut BytesMut) {
        let mut c1 = [0u8; PACKET_LEN];
        c1.copy_from_slice(&self.c0c1[1..]);
        let client_digest = find_client_digest(&c1);

        let mut s1 = [0u8; PACKET_LEN];
        let mut s2 = [0u8; PACKET_LEN];
        self.fill(&mut s1[8..]);
        // S1 time 0: our epoch starts at this handshake.
        match client_digest {
            Some((schema, digest)) => {
                self.kind = Some(HandshakeKind::Digest);
                s1[4..8].copy_from_slice(&SERVER_VERSION);
                let pos = digest_pos(&s1, schema);
                let d = packet_digest(&s1, pos, &FMS_KEY[..FMS_KEY_LEN]);
                s1[pos..pos + DIGEST_LEN].copy_from_slice(&d);

                self.fill(&mut s2);
                let key = hmac(&FMS_KEY, &[&digest]);
                let sig = hmac(&key, &[&s2[..PACKET_LEN - DIGEST_LEN]]);
                s2[PACKET_LEN - DIGEST_LEN..].copy_from_slice(&sig);
            }
            None => {
                self.kind = Some(HandshakeKind::Simple);
                s2.copy_from_slice(&c1);
            }
        }
        out.reserve(1 + 2 * PACKET_LEN);
        out.put_u8(RTMP_VERSION);
        out.put_slice(&s1);
        out.put_slice(&s2);
    }

    /// xorshift64*: filler only, see the module comment.
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let v = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Where the digest sits. The two schemas differ in which 4 bytes pick the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schema {
    /// Offset bytes at 8..12, digest in 12..776 (ffmpeg, Flash Player 10+).
    Offset8,
    /// Offset bytes at 772..776, digest in 776..1536.
    Offset772,
}

fn digest_pos(packet: &[u8; PACKET_LEN], schema: Schema) -> usize {
    let base = match schema {
        Schema::Offset8 => 8,
        Schema::Offset772 => 772,
    };
    let sum: usize = packet[base..base + 4].iter().map(|&b| usize::from(b)).sum();
    // Always within the packet: base + 4 + 727 + 32 <= 1536 for both bases.
    sum % 728 + base + 4
}

/// HMAC-SHA256 of the packet without its digest bytes.
fn packet_digest(packet: &[u8; PACKET_LEN], pos: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    hmac(key, &[&packet[..pos], &packet[pos + DIGEST_LEN..]])
}

/// The client's digest and its schema, if C1 carries a valid one.
fn find_client_digest(c1: &[u8; PACKET_LEN]) -> Option<(Schema, [u8; DIGEST_LEN])> {
    // A zero version means a client that only speaks the simple handshake.
    if c1[4..8] == [0, 0, 0, 0] {
        return None;
    }
    for schema in [Schema::Offset8, Schema::Offset772] {
        let pos = digest_pos(c1, schema);
        let expected = packet_digest(c1, pos, &FP_KEY[..FP_KEY_LEN]);
        let given = &c1[pos..pos + DIGEST_LEN];
        if given == expected {
            let mut d = [0u8; DIGEST_LEN];
            d.copy_from_slice(given);
            return Some((schema, d));
        }
    }
    None
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC takes keys of any length, so this cannot fail; a zero digest would only make
    // the handshake fall back to the client rejecting us.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; DIGEST_LEN];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C0 + C1 as a digest client (ffmpeg) builds it, with the given schema.
    fn digest_c0c1(schema: Schema) -> Vec<u8> {
        let mut c1 = [0u8; PACKET_LEN];
        c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
        for (i, b) in c1.iter_mut().enumerate().skip(8) {
            *b = (i * 7 + 3) as u8;
        }
        let pos = digest_pos(&c1, schema);
        let d = packet_digest(&c1, pos, &FP_KEY[..FP_KEY_LEN]);
        c1[pos..pos + DIGEST_LEN].copy_from_slice(&d);
        let mut v = vec![3];
        v.extend_from_slice(&c1);
        v
    }

    fn run(c0c1: &[u8]) -> (Handshake, Vec<u8>) {
        let mut hs = Handshake::new(42);
        let mut out = BytesMut::new();
        let used = hs.handle_input(c0c1, &mut out).unwrap();
        assert_eq!(used, c0c1.len());
        assert_eq!(out.len(), 1 + 2 * PACKET_LEN);
        assert_eq!(out[0], 3);
        (hs, out.to_vec())
    }

    #[test]
    fn simple_handshake_echoes_c1_in_s2() {
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..PACKET_LEN).map(|i| if (4..8).contains(&i) { 0 } else { i as u8 }));
        let (mut hs, out) = run(&c0c1);
        assert_eq!(hs.kind(), Some(HandshakeKind::Simple));
        assert_eq!(&out[1 + PACKET_LEN..], &c0c1[1..]);
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        // C2 then the first chunk bytes: only C2 is consumed.
        let mut rest = vec![0u8; PACKET_LEN];
        rest.extend_from_slice(&[0x03, 0xAA]);
        let mut o = BytesMut::new();
        assert_eq!(hs.handle_input(&rest, &mut o).unwrap(), PACKET_LEN);
        assert!(hs.is_done());
        assert!(o.is_empty());
    }

    /// Checks S1 and S2 the way ffmpeg's client does (rtmpproto.c, rtmp_handshake).
    fn client_accepts(c1: &[u8], out: &[u8]) -> bool {
        let mut s1 = [0u8; PACKET_LEN];
        s1.copy_from_slice(&out[1..1 + PACKET_LEN]);
        let s2 = &out[1 + PACKET_LEN..];
        let server_digest_ok = [Schema::Offset772, Schema::Offset8].iter().any(|&s| {
            let pos = digest_pos(&s1, s);
            packet_digest(&s1, pos, &FMS_KEY[..FMS_KEY_LEN]) == s1[pos..pos + DIGEST_LEN]
        });
        let mut c1a = [0u8; PACKET_LEN];
        c1a.copy_from_slice(c1);
        let Some((_, cd)) = find_client_digest(&c1a) else {
            return false;
        };
        let key = hmac(&FMS_KEY, &[&cd]);
        let sig = hmac(&key, &[&s2[..PACKET_LEN - DIGEST_LEN]]);
        server_digest_ok && sig == s2[PACKET_LEN - DIGEST_LEN..]
    }

    #[test]
    fn digest_handshake_in_both_schemas() {
        for schema in [Schema::Offset8, Schema::Offset772] {
            let c0c1 = digest_c0c1(schema);
            let (hs, out) = run(&c0c1);
            assert_eq!(hs.kind(), Some(HandshakeKind::Digest));
            assert_eq!(&out[5..9], &SERVER_VERSION);
            assert!(client_accepts(&c0c1[1..], &out), "{schema:?}");
        }
    }

    #[test]
    fn a_wrong_digest_falls_back_to_simple() {
        let mut c0c1 = digest_c0c1(Schema::Offset8);
        c0c1[100] ^= 0xFF;
        let (hs, _) = run(&c0c1);
        assert_eq!(hs.kind(), Some(HandshakeKind::Simple));
    }

    #[test]
    fn byte_at_a_time() {
        let c0c1 = digest_c0c1(Schema::Offset8);
        let mut hs = Handshake::new(1);
        let mut out = BytesMut::new();
        for b in &c0c1 {
            assert_eq!(
                hs.handle_input(std::slice::from_ref(b), &mut out).unwrap(),
                1
            );
        }
        assert_eq!(out.len(), 1 + 2 * PACKET_LEN);
        for _ in 0..PACKET_LEN {
            assert!(!hs.is_done());
            assert_eq!(hs.handle_input(&[0], &mut out).unwrap(), 1);
        }
        assert!(hs.is_done());
    }

    #[test]
    fn encrypted_rtmp_is_refused() {
        let mut hs = Handshake::new(1);
        let mut out = BytesMut::new();
        assert_eq!(
            hs.handle_input(&[6, 0, 0], &mut out),
            Err(HandshakeError::UnsupportedVersion(6))
        );
        assert!(out.is_empty());
    }
}
