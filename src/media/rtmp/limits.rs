//! What the RTMP chunk stream allows, and what we allow a peer: the protocol's constants,
//! the per-connection [`ChunkLimits`] and the per-shard [`PartialBudget`] of partial
//! messages (see `chunk.rs` for how the decoder applies them, `docs/media.md` for every
//! bound).

use std::cell::Cell;
use std::rc::Rc;

/// Chunk size every RTMP connection starts with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size the protocol allows (the top bit must be 0).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Largest message the 24-bit length field can declare.
pub const MAX_MESSAGE_LEN: u32 = 0xFF_FFFF;

/// Bounds on what a peer can make the decoder hold.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLimits {
    /// Largest message accepted (declared length). Default 8 MiB: a keyframe of a
    /// high-bitrate 4K stream fits.
    pub max_message_size: u32,
    /// Chunk streams (csids) with state. Clients use a handful (ffmpeg 2–8, OBS 2–9).
    pub max_chunk_streams: usize,
    /// Bytes allocated for all partially received messages together.
    pub max_buffered: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_message_size: 8 * 1024 * 1024,
            max_chunk_streams: 32,
            max_buffered: 16 * 1024 * 1024,
        }
    }
}

impl ChunkLimits {
    /// Until a publish is accepted (and for players, always): only commands and control
    /// messages are expected, and the largest any client sends is `connect` with its
    /// tcUrl, a few hundred bytes (ffmpeg ~300, OBS ~500). 16 KiB leaves room for long
    /// signed queries and bounds what an unauthenticated peer can make us hold.
    pub const fn before_publish() -> ChunkLimits {
        ChunkLimits {
            max_message_size: 16 * 1024,
            max_chunk_streams: 32,
            max_buffered: 16 * 1024,
        }
    }
}

/// Bytes allocated for partial messages by every decoder that shares it: one per shard,
/// so the publishers of a shard together stay under one bound. Shard-local (`Rc`,
/// `Cell`): decoders of one thread only.
#[derive(Clone, Debug)]
pub struct PartialBudget(Rc<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    limit: usize,
    used: Cell<usize>,
}

impl PartialBudget {
    pub fn new(limit: usize) -> PartialBudget {
        PartialBudget(Rc::new(BudgetState {
            limit,
            used: Cell::new(0),
        }))
    }

    /// Bytes charged right now, by all decoders sharing this budget.
    pub fn used(&self) -> usize {
        self.0.used.get()
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    pub(super) fn try_charge(&self, n: usize) -> bool {
        let used = self.0.used.get();
        match used.checked_add(n) {
            Some(total) if total <= self.0.limit => {
                self.0.used.set(total);
                true
            }
            _ => false,
        }
    }

    /// Charges `n` whatever the limit (bytes a decoder already holds when it joins).
    pub(super) fn force_charge(&self, n: usize) {
        self.0.used.set(self.0.used.get() + n);
    }

    pub(super) fn release(&self, n: usize) {
        self.0.used.set(self.0.used.get().saturating_sub(n));
    }
}
