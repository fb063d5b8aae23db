//! PES packets and their split into TS packets: the PES header with PTS/DTS, the PCR
//! and random access indicator in the first packet, adaptation-field stuffing.

use bytes::{BufMut, BytesMut};

use super::{PACKET_LEN, PAYLOAD_LEN};

/// Writes a PES header into `out` and returns its length. `es_len` gives a bounded
/// PES_packet_length (audio); `None` writes 0, allowed for video in TS.
pub(super) fn pes_header(
    out: &mut [u8],
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    es_len: Option<usize>,
) -> usize {
    let dts = dts.filter(|&d| d != pts);
    let header_data = if dts.is_some() { 10 } else { 5 };
    let packet_len = es_len
        .map(|n| 3 + header_data + n)
        .filter(|&n| n <= usize::from(u16::MAX))
        .unwrap_or(0) as u16;
    out[..4].copy_from_slice(&[0, 0, 1, stream_id]);
    out[4..6].copy_from_slice(&packet_len.to_be_bytes());
    out[6] = 0x80; // '10' marker, nothing else set
    out[7] = if dts.is_some() { 0xC0 } else { 0x80 };
    out[8] = header_data as u8;
    put_timestamp(&mut out[9..14], if dts.is_some() { 0x3 } else { 0x2 }, pts);
    if let Some(dts) = dts {
        put_timestamp(&mut out[14..19], 0x1, dts);
    }
    9 + header_data
}

/// The 5-byte PTS/DTS encoding: a 4-bit prefix and 33 bits split by marker bits.
fn put_timestamp(out: &mut [u8], prefix: u8, ts: u64) {
    out[0] = (prefix << 4) | (((ts >> 29) & 0x0E) as u8) | 1;
    out[1] = (ts >> 22) as u8;
    out[2] = (((ts >> 14) & 0xFE) as u8) | 1;
    out[3] = (ts >> 7) as u8;
    out[4] = (((ts << 1) & 0xFE) as u8) | 1;
}

/// Splits `head` + `body` (one PES) into TS packets on `pid`. The first packet carries the
/// payload unit start flag, and an adaptation field with the PCR and the random access
/// indicator when asked; the last is padded with adaptation-field stuffing.
pub(super) fn packetize(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    pcr: Option<u64>,
    random_access: bool,
    head: &[u8],
    body: &[u8],
) {
    let total = head.len() + body.len();
    out.reserve(total.div_ceil(PAYLOAD_LEN - 8) * PACKET_LEN + PACKET_LEN);
    let mut pos = 0;
    let mut first = true;
    while first || pos < total {
        let remaining = total - pos;
        let flags = first && (pcr.is_some() || random_access);
        let fields = if flags {
            1 + if pcr.is_some() { 6 } else { 0 }
        } else {
            0
        };
        // Payload bytes in this packet; the adaptation field takes the rest.
        let payload_len = if flags {
            remaining.min(PAYLOAD_LEN - 1 - fields)
        } else {
            remaining.min(PAYLOAD_LEN)
        };
        let adaptation = payload_len < PAYLOAD_LEN;
        out.put_u8(0x47);
        out.put_u8((u8::from(first) << 6) | ((pid >> 8) as u8 & 0x1F));
        out.put_u8(pid as u8);
        out.put_u8(if adaptation { 0x30 } else { 0x10 } | (*cc & 0x0F));
        *cc = (*cc + 1) & 0x0F;
        if adaptation {
            let af_len = PAYLOAD_LEN - payload_len - 1;
            out.put_u8(af_len as u8);
            if af_len > 0 {
                let mut flag_byte = 0u8;
                if flags && random_access {
                    flag_byte |= 0x40;
                }
                let pcr = pcr.filter(|_| flags);
                if pcr.is_some() {
                    flag_byte |= 0x10;
                }
                out.put_u8(flag_byte);
                let mut used = 1;
                if let Some(base) = pcr {
                    out.put_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        (((base & 1) as u8) << 7) | 0x7E,
                        0,
                    ]);
                    used += 6;
                }
                out.put_bytes(0xFF, af_len - used);
            }
        }
        // The payload: from the header, then the body.
        let mut left = payload_len;
        if pos < head.len() {
            let n = left.min(head.len() - pos);
            out.put_slice(&head[pos..pos + n]);
            pos += n;
            left -= n;
        }
        if left > 0 {
            let from = pos - head.len();
            out.put_slice(&body[from..from + left]);
            pos += left;
        }
        first = false;
    }
}
