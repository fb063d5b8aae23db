//! The RTMP chunk encoder: stateless, so one encoding of a message can be written to every
//! player.

use bytes::{BufMut, BytesMut};

use super::limits::MAX_MESSAGE_LEN;

/// Appends one message as chunks: a fmt 0 header, then fmt 3 headers every `chunk_size`
/// bytes. Every message starts with a full header, so the output depends on nothing sent
/// before it — which is what lets one encoding be written to many connections.
///
/// `csid` must be 2..=65599 and `payload` at most 16 MiB - 1 ([`MAX_MESSAGE_LEN`]); the
/// callers are our own code (fixed csids, payloads that came through the same 24-bit field),
/// and [`crate::media::rtmp::play::package`] checks the length for other producers.
pub fn encode_message(
    out: &mut BytesMut,
    csid: u32,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: u32,
) {
    let chunk_size = chunk_size.max(1) as usize;
    let extended = timestamp >= 0xFF_FFFF;
    let chunks = payload.len().div_ceil(chunk_size).max(1);
    let ext_len = if extended { 4 } else { 0 };
    out.reserve(payload.len() + 12 + ext_len + (chunks - 1) * (3 + ext_len));

    put_basic_header(out, 0, csid);
    let field = if extended { 0xFF_FFFF } else { timestamp };
    out.put_slice(&field.to_be_bytes()[1..]);
    let len = payload.len().min(MAX_MESSAGE_LEN as usize) as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    let mut first = true;
    for piece in payload.chunks(chunk_size) {
        if !first {
            put_basic_header(out, 3, csid);
            if extended {
                out.put_u32(timestamp);
            }
        }
        first = false;
        out.put_slice(piece);
    }
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.put_u8((fmt << 6) | csid as u8),
        64..=319 => {
            out.put_u8(fmt << 6);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid.saturating_sub(64).min(0xFFFF);
            out.put_u8((fmt << 6) | 1);
            out.put_u8((v & 0xFF) as u8);
            out.put_u8((v >> 8) as u8);
        }
    }
}
