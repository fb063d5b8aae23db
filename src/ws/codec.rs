//! WebSocket frames in and out, sans-IO.
//!
//! [`Decoder::decode`] takes bytes from the connection's buffer and returns whole messages:
//! fragmented data messages are reassembled (up to `max_message`), control frames may
//! arrive between fragments, text must be valid UTF-8. Limits are checked on the header,
//! before the payload is waited for, so an announced 2 GiB frame is refused at once; and
//! nothing is allocated for an announced length: buffers grow with what arrives.
//! Each error carries the close code the connection must send.
//!
//! Server frames are unmasked; [`encode_frame`] writes one into a buffer the caller owns, so
//! a batch is encoded once and its `Bytes` shared by every viewer.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Largest single frame payload accepted.
    pub max_frame: usize,
    /// Largest reassembled message accepted.
    pub max_message: usize,
}

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close frame: code and reason, if it sent them.
    Close(Option<(u16, String)>),
}

/// Why the connection must close, and with which code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsError {
    /// 1002: framing rules broken.
    Protocol(&'static str),
    /// 1007: text that is not UTF-8.
    InvalidUtf8,
    /// 1009: a frame or message over the limit.
    TooBig,
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::InvalidUtf8 => 1007,
            WsError::TooBig => 1009,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            WsError::Protocol(why) => why,
            WsError::InvalidUtf8 => "invalid UTF-8 in text message",
            WsError::TooBig => "message too big",
        }
    }
}

/// Decoder state of one connection: only a message being reassembled, if any.
#[derive(Debug)]
pub struct Decoder {
    limits: WsLimits,
    partial: Option<(bool, BytesMut)>,
}

impl Decoder {
    pub fn new(limits: WsLimits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }

    /// Whether a fragmented message is in progress (its bytes are held here).
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Takes the next complete message from the front of `buf`; `Ok(None)` needs more bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(WsError::Protocol("invalid frame header")),
            };
            let header_len = cursor.position() as usize;
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(WsError::Protocol("reserved bits set without an extension"));
            }
            let Some(mask) = header.mask else {
                return Err(WsError::Protocol("client frames must be masked"));
            };
            let is_control = matches!(header.opcode, OpCode::Control(_));
            if is_control && (len > 125 || !header.is_final) {
                return Err(WsError::Protocol("invalid control frame"));
            }
            if len > self.limits.max_frame as u64 {
                return Err(WsError::TooBig);
            }
            let len = len as usize;
            if buf.len() < header_len + len {
                // Not reserved here: the buffer grows with the bytes that arrive, not with
                // what a header announces (a client could announce `max_frame` on many
                // connections and send nothing more).
                return Ok(None);
            }
            let _ = buf.split_to(header_len);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, mask);

            match header.opcode {
                OpCode::Control(Control::Ping) => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Control(Control::Pong) => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Control(Control::Close) => return parse_close(&payload).map(Some),
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                    return Err(WsError::Protocol("reserved opcode"))
                }
                OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol(
                            "new message before the previous one ended",
                        ));
                    }
                    let is_text = header.opcode == OpCode::Data(Data::Text);
                    if header.is_final {
                        return finish(is_text, payload).map(Some);
                    }
                    self.partial = Some((is_text, payload));
                }
                OpCode::Data(Data::Continue) => {
                    let Some((is_text, mut acc)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    if acc.len() + payload.len() > self.limits.max_message {
                        return Err(WsError::TooBig);
                    }
                    acc.unsplit(payload);
                    if header.is_final {
                        return finish(is_text, acc).map(Some);
                    }
                    self.partial = Some((is_text, acc));
                }
            }
        }
    }
}

fn finish(is_text: bool, payload: BytesMut) -> Result<Message, WsError> {
    let payload = payload.freeze();
    if is_text {
        if std::str::from_utf8(&payload).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        Ok(Message::Text(payload))
    } else {
        Ok(Message::Binary(payload))
    }
}

fn parse_close(payload: &[u8]) -> Result<Message, WsError> {
    match payload.len() {
        0 => Ok(Message::Close(None)),
        1 => Err(WsError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Message::Close(Some((code, reason.to_string()))))
        }
    }
}

/// XORs the payload with the client's mask, a word at a time where it can.
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Size of the header of an unmasked server frame with `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends one final, unmasked frame header for `len` payload bytes to `out`.
pub fn put_header(out: &mut impl BufMut, opcode: OpCode, len: usize) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut raw = [0u8; 10];
    let mut w = &mut raw[..];
    // Writing at most 10 bytes into a 10-byte array cannot fail.
    let _ = header.format(len as u64, &mut w);
    out.put_slice(&raw[..header_len(len)]);
}

/// A complete server frame as one buffer.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A text frame.
pub fn text_frame(payload: &[u8]) -> Bytes {
    encode_frame(OpCode::Data(Data::Text), payload)
}

/// A close frame with a code and a reason (truncated to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut reason = reason;
    while reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode_frame(OpCode::Control(Control::Close), &payload)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const LIMITS: WsLimits = WsLimits {
        max_frame: 1024,
        max_message: 2048,
    };

    /// A masked client frame, as a browser would send it.
    pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, WsError> {
        let mut d = Decoder::new(LIMITS);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn text_is_unmasked_and_split_reads_resume() {
        let frame = client_frame(1, true, "héllo wörld".as_bytes());
        let mut d = Decoder::new(LIMITS);
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in &frame {
            buf.extend_from_slice(&[*b]);
            if let Some(m) = d.decode(&mut buf).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(Message::Text(Bytes::from("héllo wörld"))));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragments_reassemble_with_a_ping_in_between() {
        let mut raw = client_frame(1, false, b"hel");
        raw.extend(client_frame(9, true, b"p"));
        raw.extend(client_frame(0, false, b"lo "));
        raw.extend(client_frame(0, true, b"there"));
        let msgs = decode_all(&raw).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Ping(Bytes::from("p")),
                Message::Text(Bytes::from("hello there"))
            ]
        );
    }

    #[test]
    fn each_bad_frame_gets_its_close_code() {
        let too_big = client_frame(1, true, &[b'a'; 1025]);
        assert_eq!(decode_all(&too_big).unwrap_err().close_code(), 1009);
        // Announced size over the limit: refused from the header alone.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(decode_all(&huge).unwrap_err(), WsError::TooBig);
        let mut long_msg = client_frame(1, false, &[b'a'; 1000]);
        long_msg.extend(client_frame(0, false, &[b'a'; 1000]));
        long_msg.extend(client_frame(0, true, &[b'a'; 1000]));
        assert_eq!(decode_all(&long_msg).unwrap_err(), WsError::TooBig);
        assert_eq!(
            decode_all(&client_frame(1, true, &[0xff, 0xfe]))
                .unwrap_err()
                .close_code(),
            1007
        );
        let unmasked = [0x81u8, 0x02, b'h', b'i'];
        assert_eq!(decode_all(&unmasked).unwrap_err().close_code(), 1002);
        assert_eq!(
            decode_all(&client_frame(0, true, b"x"))
                .unwrap_err()
                .close_code(),
            1002
        );
        assert_eq!(
            decode_all(&client_frame(3, true, b"x"))
                .unwrap_err()
                .close_code(),
            1002
        );
        assert_eq!(
            decode_all(&client_frame(9, false, b"x"))
                .unwrap_err()
                .close_code(),
            1002
        );
        assert_eq!(
            decode_all(&client_frame(0x41, true, b"x"))
                .unwrap_err()
                .close_code(),
            1002
        );
        let mut interleaved = client_frame(1, false, b"a");
        interleaved.extend(client_frame(1, true, b"b"));
        assert_eq!(decode_all(&interleaved).unwrap_err().close_code(), 1002);
        assert_eq!(
            decode_all(&client_frame(8, true, &[0x03, 0xe8, 0xff]))
                .unwrap_err()
                .close_code(),
            1007
        );
        assert_eq!(
            decode_all(&client_frame(8, true, &[0x00, 0x05]))
                .unwrap_err()
                .close_code(),
            1002
        );
    }

    #[test]
    fn an_announced_frame_reserves_nothing_before_its_bytes_arrive() {
        let mut d = Decoder::new(LIMITS);
        // A header announcing the largest frame allowed, and nothing more.
        let mut raw = vec![0x81, 0x80 | 126];
        raw.extend_from_slice(&1024u16.to_be_bytes());
        raw.extend_from_slice(&[1, 2, 3, 4]);
        let mut buf = BytesMut::from(&raw[..]);
        let before = buf.capacity();
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), before);
    }

    #[test]
    fn close_frames_parse() {
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(&client_frame(8, true, &p)).unwrap(),
            vec![Message::Close(Some((1000, "bye".into())))]
        );
        assert_eq!(
            decode_all(&client_frame(8, true, b"")).unwrap(),
            vec![Message::Close(None)]
        );
    }

    #[test]
    fn server_frames_have_the_right_headers() {
        assert_eq!(&text_frame(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let f = text_frame(&[b'x'; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let f = text_frame(&vec![b'x'; 70000]);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 70010);
        let c = close_frame(1008, "slow consumer");
        assert_eq!(&c[..4], &[0x88, 15, 0x03, 0xf0]);
        assert!(close_frame(1000, &"é".repeat(100)).len() <= 2 + 125);
    }
}
