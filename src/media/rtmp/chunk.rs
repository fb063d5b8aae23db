//! The RTMP chunk stream: a streaming decoder that reassembles messages, and a stateless
//! encoder. Sans-IO.
//!
//! RTMP cuts each message into chunks of at most the peer's chunk size and lets chunks of
//! different chunk streams (csids) interleave; headers are compressed against the previous
//! header on the same chunk stream (fmt 0 full, 1 no stream id, 2 timestamp delta only,
//! 3 nothing). The decoder keeps that per-csid state.
//!
//! The decoder parses straight from the caller's slice: it buffers at most one chunk header
//! (18 bytes) between calls and copies payload bytes into the message's buffer, which
//! becomes the message's `Bytes` (the GOP cache then holds the payload, not a pinned read
//! buffer). That buffer grows with what arrives, never with what the header declares: a
//! peer that declares a 16 MiB message and sends one chunk of it holds one chunk's worth
//! (at least [`MIN_GROW`]), not 16 MiB. Growth doubles, capped at the declared length, so
//! reassembly stays O(n) (each byte is copied at most twice) and a finished message holds
//! exactly its length.
//!
//! Hostile input is bounded by [`ChunkLimits`]: the declared length of one message, the
//! number of chunk streams, and the bytes allocated for partial messages across all of
//! them. The session starts every connection on [`ChunkLimits::before_publish`] (16 KiB:
//! only commands are expected until a publish is accepted) and raises them with
//! [`ChunkDecoder::set_limits`] once it is. A [`PartialBudget`] shared by the decoders of
//! one shard bounds the partial bytes of all its publishers together.
//!
//! A chunk size up to 2^31-1 is legal and harmless here, because a chunk never carries
//! more than what is left of its message. Set Chunk Size and Abort are applied by the
//! decoder itself, since they change how the very next byte is read.
//!
//! Timestamps follow what ffmpeg and librtmp write: fmt 0 is absolute, fmt 1/2 add their
//! delta, and a fmt 3 chunk that starts a new message adds the last delta on its chunk
//! stream; an extended timestamp is present on every chunk (fmt 3 included) while the
//! last 24-bit field on that chunk stream was 0xFFFFFF. All timestamp arithmetic wraps
//! (32-bit milliseconds, ~49 days).
//!
//! Errors are bad input (the connection is closed); "need more bytes" is simply the
//! decoder returning with nothing, having kept what it needs.

use std::fmt;

use bytes::Bytes;

pub use super::encode::encode_message;
pub use super::limits::{
    ChunkLimits, PartialBudget, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_MESSAGE_LEN,
};

/// The smallest allocation for a partial message (less when the message is shorter): a
/// whole audio frame or command in one step, small enough that a header declaring a
/// large message commits little before its bytes come.
pub const MIN_GROW: usize = 4096;

/// Message type ids of protocol control messages the decoder acts on.
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_ABORT: u8 = 2;

/// One reassembled RTMP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    pub csid: u32,
    pub type_id: u8,
    /// Message stream id (0 for the connection, the id from createStream for a stream).
    pub stream_id: u32,
    /// Absolute timestamp, milliseconds.
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Why the chunk stream cannot be read. Every one closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Set Chunk Size of 0, or with the top bit set.
    BadChunkSize(u32),
    /// A message declared longer than [`ChunkLimits::max_message_size`].
    MessageTooLarge { len: u32, max: u32 },
    /// More chunk streams than [`ChunkLimits::max_chunk_streams`].
    TooManyChunkStreams,
    /// Partial messages would hold more than [`ChunkLimits::max_buffered`].
    BufferLimit,
    /// Partial messages of every connection sharing the [`PartialBudget`] (the shard's
    /// publishers) would hold more than its limit.
    SharedBufferLimit { limit: usize },
    /// A compressed header (fmt 1–3) on a chunk stream that has had no full header.
    NoPreviousHeader { csid: u32 },
    /// A new message header (fmt 0–2) on a chunk stream whose message is not finished.
    HeaderMidMessage { csid: u32 },
    /// A protocol control message with the wrong payload length.
    Malformed(&'static str),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BadChunkSize(n) => write!(f, "invalid chunk size {n}"),
            ChunkError::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            ChunkError::TooManyChunkStreams => f.write_str("too many chunk streams"),
            ChunkError::BufferLimit => f.write_str("too many bytes in partial messages"),
            ChunkError::SharedBufferLimit { limit } => write!(
                f,
                "partial messages on this shard would exceed {limit} bytes"
            ),
            ChunkError::NoPreviousHeader { csid } => {
                write!(f, "compressed chunk header on new chunk stream {csid}")
            }
            ChunkError::HeaderMidMessage { csid } => {
                write!(
                    f,
                    "new message header inside a message on chunk stream {csid}"
                )
            }
            ChunkError::Malformed(why) => write!(f, "malformed control message: {why}"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Per chunk stream state: the last header, and the message being reassembled.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    timestamp: u32,
    /// The last timestamp field (fmt 0: absolute, fmt 1/2: delta), extended value resolved.
    delta: u32,
    /// The last 24-bit timestamp field was 0xFFFFFF: every chunk carries 4 more bytes.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The message in progress; `None` between messages. A `Vec` rather than `BytesMut`
    /// for `reserve_exact`: growth is ours to cap at the declared length.
    partial: Option<Vec<u8>>,
    /// Bytes counted against the limits for `partial` (its growth steps).
    held: usize,
}

/// The longest chunk header: 3-byte basic header, 11-byte message header, 4-byte extended
/// timestamp.
const MAX_HEADER_LEN: usize = 18;

/// Reassembles messages from the chunk stream of one connection.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: ChunkLimits,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// Set while the payload of a chunk is being read: (index into `streams`, bytes left in
    /// this chunk).
    payload: Option<(usize, u32)>,
    /// Capacity allocated for partial messages (against `limits.max_buffered`).
    buffered: usize,
    /// The shared bound, once the session has one (accepted publishers), and how much of
    /// `buffered` is charged to it (released on completion, abort and drop).
    budget: Option<PartialBudget>,
    charged: usize,
}

impl ChunkDecoder {
    pub fn new(limits: ChunkLimits) -> ChunkDecoder {
        ChunkDecoder {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            payload: None,
            buffered: 0,
            budget: None,
            charged: 0,
        }
    }

    /// Replaces the limits (the session raises them when a publish is accepted) and the
    /// shared budget that growth is charged to. What is held now moves to the new budget,
    /// so that releasing it later balances: at most a command's few KiB, since the switch
    /// comes before any media.
    pub fn set_limits(&mut self, limits: ChunkLimits, budget: Option<PartialBudget>) {
        self.limits = limits;
        if let Some(old) = self.budget.take() {
            old.release(self.charged);
        }
        self.charged = 0;
        if let Some(b) = &budget {
            b.force_charge(self.buffered);
            self.charged = self.buffered;
        }
        self.budget = budget;
    }

    /// Bytes allocated for partial messages right now.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Reads from `input` until one message completes or the input runs out. Returns the
    /// bytes consumed and the message, if one completed; call again with the rest.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<RawMessage>), ChunkError> {
        let mut pos = 0;
        loop {
            if let Some((idx, left)) = self.payload {
                let take = (left as usize).min(input.len() - pos);
                self.grow(idx, take)?;
                let stream = &mut self.streams[idx];
                if let Some(partial) = stream.partial.as_mut() {
                    partial.extend_from_slice(&input[pos..pos + take]);
                }
                pos += take;
                let left = left - take as u32;
                if left > 0 {
                    self.payload = Some((idx, left));
                    return Ok((pos, None));
                }
                self.payload = None;
                if let Some(msg) = self.finish_chunk(idx)? {
                    return Ok((pos, Some(msg)));
                }
                continue;
            }

            // Header: gather bytes until the length implied by what we have is complete.
            loop {
                let needed = self.header_needed();
                if self.header_len >= needed {
                    break;
                }
                if pos == input.len() {
                    return Ok((pos, None));
                }
                let take = (needed - self.header_len).min(input.len() - pos);
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&input[pos..pos + take]);
                self.header_len += take;
                pos += take;
            }
            let idx = self.apply_header()?;
            self.header_len = 0;
            let stream = &self.streams[idx];
            let got = stream.partial.as_ref().map_or(0, Vec::len) as u32;
            let left = (stream.length - got).min(self.chunk_size);
            if left == 0 {
                // A zero-length message: complete with this header.
                if let Some(msg) = self.finish_chunk(idx)? {
                    return Ok((pos, Some(msg)));
                }
                continue;
            }
            self.payload = Some((idx, left));
        }
    }

    /// Total header length implied by the bytes gathered so far (grows as fields appear).
    fn header_needed(&self) -> usize {
        let h = &self.header[..self.header_len];
        let Some(&b0) = h.first() else { return 1 };
        let basic = match b0 & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        if h.len() < basic {
            return basic;
        }
        let fmt = b0 >> 6;
        let message_header = [11, 7, 3, 0][usize::from(fmt)];
        let base = basic + message_header;
        let extended = if fmt == 3 {
            let csid = basic_csid(h);
            self.streams
                .iter()
                .find(|s| s.csid == csid)
                .is_some_and(|s| s.extended)
        } else {
            if h.len() < basic + 3 {
                return base;
            }
            u24(&h[basic..]) == 0xFF_FFFF
        };
        base + if extended { 4 } else { 0 }
    }

    /// Applies a complete header to its chunk stream; returns the stream's index.
    fn apply_header(&mut self) -> Result<usize, ChunkError> {
        let h = self.header;
        let b0 = h[0];
        let fmt = b0 >> 6;
        let basic = match b0 & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let csid = basic_csid(&h);
        let idx = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None => {
                if fmt != 0 {
                    return Err(ChunkError::NoPreviousHeader { csid });
                }
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(ChunkError::TooManyChunkStreams);
                }
                self.streams.push(ChunkStream {
                    csid,
                    timestamp: 0,
                    delta: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    partial: None,
                    held: 0,
                });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[idx];
        let m = &h[basic..];
        let in_progress = stream.partial.is_some();
        if fmt < 3 {
            if in_progress {
                return Err(ChunkError::HeaderMidMessage { csid });
            }
            let field = u24(m);
            stream.extended = field == 0xFF_FFFF;
            let value = if stream.extended {
                let e = &m[[11, 7, 3][usize::from(fmt)]..];
                u32::from_be_bytes([e[0], e[1], e[2], e[3]])
            } else {
                field
            };
            stream.delta = value;
            if fmt == 0 {
                stream.timestamp = value;
            } else {
                stream.timestamp = stream.timestamp.wrapping_add(value);
            }
            if fmt <= 1 {
                stream.length = u24(&m[3..]);
                stream.type_id = m[6];
            }
            if fmt == 0 {
                stream.stream_id = u32::from_le_bytes([m[7], m[8], m[9], m[10]]);
            }
        } else if !in_progress {
            // fmt 3 starting a new message: same header, timestamp advanced by the last
            // delta (the extended field, when present, restates it).
            let delta = if stream.extended {
                u32::from_be_bytes([m[0], m[1], m[2], m[3]])
            } else {
                stream.delta
            };
            stream.timestamp = stream.timestamp.wrapping_add(delta);
        }
        if !in_progress {
            if stream.length > self.limits.max_message_size {
                return Err(ChunkError::MessageTooLarge {
                    len: stream.length,
                    max: self.limits.max_message_size,
                });
            }
            // Nothing is allocated for a declared length: the buffer grows as chunks come
            // (`grow`), so the bytes held are bounded by the bytes sent.
            stream.partial = Some(Vec::new());
        }
        Ok(idx)
    }

    /// Makes room for `take` more payload bytes on stream `idx`, charging the growth to
    /// `max_buffered` and the shared budget. Doubling, at least [`MIN_GROW`], never past
    /// the declared length.
    fn grow(&mut self, idx: usize, take: usize) -> Result<(), ChunkError> {
        let stream = &mut self.streams[idx];
        let Some(partial) = stream.partial.as_mut() else {
            return Ok(());
        };
        let need = partial.len() + take;
        if need <= stream.held {
            return Ok(());
        }
        let declared = stream.length as usize;
        let target = need
            .max(stream.held * 2)
            .max(MIN_GROW)
            .min(declared)
            .max(need);
        let extra = target - stream.held;
        if self.buffered + extra > self.limits.max_buffered {
            return Err(ChunkError::BufferLimit);
        }
        if let Some(budget) = &self.budget {
            if !budget.try_charge(extra) {
                return Err(ChunkError::SharedBufferLimit {
                    limit: budget.limit(),
                });
            }
            self.charged += extra;
        }
        self.buffered += extra;
        stream.held = target;
        partial.reserve_exact(target - partial.len());
        Ok(())
    }

    /// Gives back the allocation of a partial message that completed or was aborted.
    fn release(&mut self, allocated: usize) {
        self.buffered -= allocated;
        if let Some(budget) = &self.budget {
            let n = allocated.min(self.charged);
            budget.release(n);
            self.charged -= n;
        }
    }

    /// After a chunk's payload: completes the message if it is whole, and applies the
    /// control messages that change how the chunk stream is read.
    fn finish_chunk(&mut self, idx: usize) -> Result<Option<RawMessage>, ChunkError> {
        let stream = &mut self.streams[idx];
        let done = stream
            .partial
            .as_ref()
            .is_some_and(|p| p.len() == stream.length as usize);
        if !done {
            return Ok(None);
        }
        let partial = stream.partial.take().unwrap_or_default();
        let allocated = std::mem::take(&mut stream.held);
        // `From<Vec<u8>>` takes the allocation over (no copy); its capacity is the
        // declared length, which `grow` never exceeds.
        let payload = Bytes::from(partial);
        let msg = RawMessage {
            csid: stream.csid,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            timestamp: stream.timestamp,
            payload,
        };
        self.release(allocated);
        match msg.type_id {
            TYPE_SET_CHUNK_SIZE => {
                let size = read_u32(&msg.payload, "Set Chunk Size")?;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = size;
            }
            TYPE_ABORT => {
                let csid = read_u32(&msg.payload, "Abort")?;
                let aborted = self
                    .streams
                    .iter_mut()
                    .find(|s| s.csid == csid)
                    .and_then(|s| s.partial.take().map(|_| std::mem::take(&mut s.held)));
                if let Some(held) = aborted {
                    self.release(held);
                }
            }
            _ => {}
        }
        Ok(Some(msg))
    }
}

impl Drop for ChunkDecoder {
    fn drop(&mut self) {
        // A connection that goes away mid-message gives its share of the budget back.
        if let Some(budget) = &self.budget {
            budget.release(self.charged);
        }
    }
}

fn read_u32(payload: &[u8], what: &'static str) -> Result<u32, ChunkError> {
    match payload {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(ChunkError::Malformed(what)),
    }
}

/// The csid from a complete basic header.
fn basic_csid(h: &[u8]) -> u32 {
    match h[0] & 0x3F {
        0 => 64 + u32::from(h[1]),
        1 => 64 + u32::from(h[1]) + 256 * u32::from(h[2]),
        n => u32::from(n),
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn decode_all(dec: &mut ChunkDecoder, mut input: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        let mut out = Vec::new();
        loop {
            let (used, msg) = dec.decode(input)?;
            input = &input[used..];
            match msg {
                Some(m) => out.push(m),
                None => {
                    assert!(input.is_empty(), "decoder stopped with input left");
                    return Ok(out);
                }
            }
        }
    }

    fn encoded(csid: u32, type_id: u8, ts: u32, payload: &[u8], chunk: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_message(&mut out, csid, type_id, 1, ts, payload, chunk);
        out.to_vec()
    }

    #[test]
    fn round_trip_across_chunk_sizes_and_byte_by_byte() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for &csid in &[3, 64, 319, 320, 65599] {
            let wire = encoded(csid, 9, 1234, &payload, 128);
            // Whole.
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            let msgs = decode_all(&mut dec, &wire).unwrap();
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].csid, csid);
            assert_eq!(msgs[0].timestamp, 1234);
            assert_eq!(msgs[0].stream_id, 1);
            assert_eq!(&msgs[0].payload[..], &payload[..]);
            // One byte at a time.
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            let mut got = Vec::new();
            for b in &wire {
                got.extend(decode_all(&mut dec, std::slice::from_ref(b)).unwrap());
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn extended_timestamps_on_every_chunk() {
        let payload = vec![7u8; 300];
        let wire = encoded(4, 8, 0x0100_0000, &payload, 128);
        // 12-byte header + 4 ext + 128, then twice (1 + 4 + chunk).
        assert_eq!(wire.len(), 12 + 4 + 300 + 2 * 5);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let msgs = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(msgs[0].timestamp, 0x0100_0000);
        assert_eq!(msgs[0].payload.len(), 300);
    }

    /// Hand-written chunks with compressed headers, as ffmpeg writes them.
    #[test]
    fn compressed_headers_add_deltas() {
        let mut wire = Vec::new();
        // fmt 0, csid 6, ts 100, len 2, type 9, stream 1.
        wire.extend_from_slice(&[0x06, 0, 0, 100, 0, 0, 2, 9, 1, 0, 0, 0, 0xAA, 0xBB]);
        // fmt 1, csid 6, delta 40, len 1, type 9.
        wire.extend_from_slice(&[0x46, 0, 0, 40, 0, 0, 1, 9, 0xCC]);
        // fmt 2, csid 6, delta 40.
        wire.extend_from_slice(&[0x86, 0, 0, 40, 0xDD]);
        // fmt 3, csid 6: a new message, same delta.
        wire.extend_from_slice(&[0xC6, 0xEE]);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let msgs = decode_all(&mut dec, &wire).unwrap();
        let ts: Vec<u32> = msgs.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![100, 140, 180, 220]);
        assert_eq!(&msgs[3].payload[..], &[0xEE]);
        assert!(msgs.iter().all(|m| m.stream_id == 1 && m.type_id == 9));
    }

    #[test]
    fn interleaved_chunk_streams_reassemble_separately() {
        let a = encoded(4, 8, 10, &[1u8; 200], 128);
        let v = encoded(6, 9, 20, &[2u8; 200], 128);
        // a's first chunk (12 + 128), v's first chunk, then both rests.
        let mut wire = Vec::new();
        wire.extend_from_slice(&a[..140]);
        wire.extend_from_slice(&v[..140]);
        wire.extend_from_slice(&a[140..]);
        wire.extend_from_slice(&v[140..]);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let msgs = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].csid, 4);
        assert!(msgs[0].payload.iter().all(|&b| b == 1));
        assert!(msgs[1].payload.iter().all(|&b| b == 2));
    }

    #[test]
    fn set_chunk_size_applies_to_the_next_chunk() {
        let mut wire = encoded(2, 1, 0, &4096u32.to_be_bytes(), 128);
        wire.extend(encoded(6, 9, 0, &[3u8; 4000], 4096));
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let msgs = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(dec.chunk_size(), 4096);
        assert_eq!(msgs[1].payload.len(), 4000);
    }

    #[test]
    fn chunk_size_bounds() {
        for bad in [0u32, 0x8000_0000] {
            let wire = encoded(2, 1, 0, &bad.to_be_bytes(), 128);
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            assert_eq!(
                decode_all(&mut dec, &wire),
                Err(ChunkError::BadChunkSize(bad))
            );
        }
        // 2^31-1 is legal; a message still only takes its own length.
        let mut wire = encoded(2, 1, 0, &MAX_CHUNK_SIZE.to_be_bytes(), 128);
        wire.extend(encoded(6, 9, 0, &[1u8; 10], 1 << 20));
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        assert_eq!(decode_all(&mut dec, &wire).unwrap()[1].payload.len(), 10);
        let short = encoded(2, 1, 0, &[0, 1], 128);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        assert!(matches!(
            decode_all(&mut dec, &short),
            Err(ChunkError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_message_is_refused_from_its_header() {
        let limits = ChunkLimits {
            max_message_size: 1000,
            ..ChunkLimits::default()
        };
        let mut dec = ChunkDecoder::new(limits);
        // Only the header: the error comes before any payload is held.
        let header = [0x06, 0, 0, 0, 0, 0x03, 0xE9, 9, 1, 0, 0, 0];
        assert_eq!(
            dec.decode(&header),
            Err(ChunkError::MessageTooLarge {
                len: 1001,
                max: 1000
            })
        );
    }

    #[test]
    fn many_chunk_streams_are_refused() {
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let mut wire = Vec::new();
        for csid in 2..40 {
            wire.extend(encoded(csid, 9, 0, &[0u8; 10], 128));
        }
        assert_eq!(
            decode_all(&mut dec, &wire),
            Err(ChunkError::TooManyChunkStreams)
        );
    }

    #[test]
    fn partial_messages_share_one_budget() {
        let limits = ChunkLimits {
            max_message_size: 1000,
            max_chunk_streams: 32,
            max_buffered: 2500,
        };
        let mut dec = ChunkDecoder::new(limits);
        let mut wire = Vec::new();
        for csid in 3..6 {
            // Headers of 1000-byte messages with only their first chunk.
            wire.extend_from_slice(&encoded(csid, 9, 0, &[0u8; 1000], 128)[..12 + 128]);
        }
        assert_eq!(decode_all(&mut dec, &wire), Err(ChunkError::BufferLimit));
    }

    #[test]
    fn abort_releases_the_partial_message() {
        let limits = ChunkLimits {
            max_message_size: 1000,
            max_chunk_streams: 32,
            // The message, plus the 4-byte Abort itself.
            max_buffered: 1004,
        };
        let mut dec = ChunkDecoder::new(limits);
        let mut wire = encoded(6, 9, 0, &[0u8; 1000], 128)[..140].to_vec();
        wire.extend(encoded(2, 2, 0, &6u32.to_be_bytes(), 128));
        // With the first message aborted, a new one fits the budget again.
        wire.extend(encoded(6, 9, 0, &[5u8; 1000], 128));
        let msgs = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].payload.len(), 1000);
    }

    /// Defect: the decoder allocated a message's declared length at its first chunk, so
    /// 16 headers declaring 1 MiB each, one 128-byte chunk apiece, held 16 MiB.
    #[test]
    fn partial_messages_grow_with_what_arrives_not_with_what_is_declared() {
        let declared = 1_048_512usize;
        let payload: Vec<u8> = (0..declared).map(|i| i as u8).collect();
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let mut wire = Vec::new();
        for csid in 3..19 {
            wire.extend_from_slice(&encoded(csid, 9, 0, &payload, 128)[..12 + 128]);
        }
        assert!(decode_all(&mut dec, &wire).unwrap().is_empty());
        assert_eq!(dec.buffered(), 16 * MIN_GROW, "one small step per stream");

        // A whole message still arrives intact, its buffer exactly its length.
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let mut wire = encoded(2, 1, 0, &4000u32.to_be_bytes(), 128);
        wire.extend(encoded(6, 9, 7, &payload, 4000));
        let mut msgs = Vec::new();
        let mut peak = 0;
        for piece in wire.chunks(4005) {
            msgs.extend(decode_all(&mut dec, piece).unwrap());
            peak = peak.max(dec.buffered());
        }
        assert_eq!(msgs.len(), 2);
        assert_eq!(&msgs[1].payload[..], &payload[..]);
        assert!(peak <= declared, "grown past the declared length: {peak}");
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn growth_is_bounded_by_what_arrived() {
        let declared = 1_000_000usize;
        let mut wire = encoded(2, 1, 0, &1000u32.to_be_bytes(), 128);
        wire.extend(encoded(6, 9, 0, &vec![1u8; declared], 1000));
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let mut sent = 0;
        for piece in wire.chunks(1003) {
            let done = decode_all(&mut dec, piece).unwrap();
            sent += piece.len();
            if done.is_empty() {
                assert!(
                    dec.buffered() <= (2 * sent).max(MIN_GROW),
                    "{} allocated after {sent} bytes",
                    dec.buffered()
                );
            }
        }
    }

    #[test]
    fn before_publish_only_command_sized_messages_are_taken() {
        let mut dec = ChunkDecoder::new(ChunkLimits::before_publish());
        // A media-sized declaration fails at its header, before any payload is held.
        let header = &encoded(6, 9, 0, &vec![0u8; 1_048_512], 128)[..12];
        assert_eq!(
            dec.decode(header),
            Err(ChunkError::MessageTooLarge {
                len: 1_048_512,
                max: 16 * 1024
            })
        );
        // Many command-sized ones, one chunk each: the connection's total is bounded.
        let mut dec = ChunkDecoder::new(ChunkLimits::before_publish());
        let mut wire = Vec::new();
        for csid in 3..19 {
            wire.extend_from_slice(&encoded(csid, 20, 0, &[0u8; 16 * 1024], 128)[..140]);
        }
        assert_eq!(decode_all(&mut dec, &wire), Err(ChunkError::BufferLimit));
        assert!(dec.buffered() <= 16 * 1024);
        // Commands themselves pass, and raising the limits lets media through.
        let mut dec = ChunkDecoder::new(ChunkLimits::before_publish());
        let connect = encoded(3, 20, 0, &[5u8; 600], 128);
        assert_eq!(decode_all(&mut dec, &connect).unwrap().len(), 1);
        dec.set_limits(ChunkLimits::default(), None);
        let mut frame = encoded(2, 1, 0, &4096u32.to_be_bytes(), 128);
        frame.extend(encoded(6, 9, 0, &[1u8; 200_000], 4096));
        assert_eq!(
            decode_all(&mut dec, &frame).unwrap()[1].payload.len(),
            200_000
        );
    }

    #[test]
    fn publishers_of_a_shard_share_one_partial_budget() {
        let budget = PartialBudget::new(3 * MIN_GROW);
        let mut a = ChunkDecoder::new(ChunkLimits::default());
        let mut b = ChunkDecoder::new(ChunkLimits::default());
        a.set_limits(ChunkLimits::default(), Some(budget.clone()));
        b.set_limits(ChunkLimits::default(), Some(budget.clone()));
        let msg = encoded(6, 9, 0, &[0u8; 100_000], 128);
        // Two partial messages fit; a third stream's would not.
        decode_all(&mut a, &msg[..140]).unwrap();
        decode_all(&mut b, &msg[..140]).unwrap();
        assert_eq!(budget.used(), 2 * MIN_GROW);
        let more = encoded(7, 9, 0, &[0u8; 100_000], 128);
        decode_all(&mut a, &more[..140]).unwrap();
        assert_eq!(budget.used(), 3 * MIN_GROW);
        assert_eq!(
            decode_all(&mut b, &more[..140]),
            Err(ChunkError::SharedBufferLimit {
                limit: 3 * MIN_GROW
            })
        );
        // A closed connection gives its share back; a finished message does too.
        drop(a);
        assert_eq!(budget.used(), MIN_GROW);
        let mut c = ChunkDecoder::new(ChunkLimits::default());
        c.set_limits(ChunkLimits::default(), Some(budget.clone()));
        let small = encoded(6, 9, 0, &[0u8; 5000], 128);
        assert_eq!(decode_all(&mut c, &small).unwrap().len(), 1);
        assert_eq!(budget.used(), MIN_GROW);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn compressed_header_on_unknown_stream_is_an_error() {
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        assert_eq!(
            decode_all(&mut dec, &[0xC5]),
            Err(ChunkError::NoPreviousHeader { csid: 5 })
        );
    }

    /// A length-changing header in the middle of a message: libraries that subtract the
    /// received length from the new declared length underflow here.
    #[test]
    fn header_mid_message_is_an_error_not_an_underflow() {
        let mut wire = encoded(6, 9, 0, &[0u8; 300], 128)[..140].to_vec();
        wire.extend_from_slice(&[0x46, 0, 0, 0, 0, 0, 10, 9]);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        assert_eq!(
            decode_all(&mut dec, &wire),
            Err(ChunkError::HeaderMidMessage { csid: 6 })
        );
    }

    #[test]
    fn zero_length_messages_complete_at_their_header() {
        let wire = encoded(3, 20, 0, &[], 128);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let msgs = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].payload.is_empty());
    }
}
