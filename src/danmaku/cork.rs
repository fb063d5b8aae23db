//! The shard's corked fan-out: the frames a room's viewers get within one turn of the
//! shard's loop leave in one write per viewer, at the end of the turn.
//!
//! A fan-out ([`super::room::LocalRoom::fanout`]) only appends the frame to the room's
//! pending list here and puts the room on this shard's dirty list (once per turn). The
//! flusher task, woken by the first dirty room of a turn, runs after the tasks already
//! woken in that turn (the mesh receive loop with everything it drained, the readers of the
//! posts), and then writes each dirty room's pending frames to each of its viewers with one
//! `sendmsg` of the same iovec array ([`super::room::LocalRoom::flush`]): no per-viewer
//! queue push, no per-viewer refcount, one system call per viewer however many frames.
//! So an idle room adds no latency (one item: one write at once), and under load the items
//! that arrived while the shard was busy reach each viewer in one write: the cost per
//! delivery falls as load rises instead of the shard falling behind.
//!
//! Pacing: a flush that took `d` lets the next one start no sooner than `d × PACE` after
//! it ended (at most [`MAX_WAIT`]; waits under [`MIN_WAIT`] are skipped), so writing
//! sockets takes at most `1 / (1 + PACE)` of the shard's time and the rest goes to reading
//! posts, whose items then leave together. Idle, there is no wait (the last flush ended
//! long ago); under load, latency grows by at most `d × PACE` (a few ms per thousand
//! viewers) while each write carries more items.
//!
//! Past what corking absorbs, a room sheds plain danmaku ([`super::shed`]).
//!
//! A viewer with anything queued or in flight (an ack, a history frame, a partial write)
//! gets the room's frames through its queue instead, judged frame by frame by its bound, so
//! its order is kept; what does not fit the socket stays queued for the connection's writer
//! task (io_uring). A viewer that joins a room with pending frames is added only after they
//! were written to the others (its history frame already holds them).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use shards::local::Notify;

use super::shed::{Demand, Shard};
use super::RoomId;

/// The next flush starts no sooner than this many times the last flush's duration after
/// it ended (see the module docs). Measured with this constant changed, on 2 cores, one
/// shard, window 0 (`bench/fanout.sh --pin --shards 1 --rooms 1 --peers liveshard
/// --windows 0 --loads 1000x200`; 2026-12-06): 0 gives ~220k deliveries per CPU-second
/// at 1,000 viewers × 200 msgs/s (a write per item, as without corking), 1 gives ~400k
/// with p99 33 ms, 2 gives ~620k with p99 88 ms, 4 runs away (p99 over 300 ms): each write
/// then carries more and takes longer, and the gap grows with it.
pub const PACE: u32 = 1;
/// A shorter wait is not worth a timer (whose resolution is a millisecond): small rooms
/// flush at every turn.
const MIN_WAIT: Duration = Duration::from_micros(250);
/// The pacing never holds frames longer than the default merge window would.
pub const MAX_WAIT: Duration = Duration::from_millis(50);

/// One shard's dirty rooms and the flusher's wake-up.
#[derive(Default)]
pub struct Cork {
    dirty: RefCell<Vec<RoomId>>,
    /// The list last flushed, kept for its allocation.
    spare: RefCell<Vec<RoomId>>,
    kick: Notify,
    /// When the last flush ended and how long it took.
    last: Cell<Option<(Instant, Duration)>>,
    /// The shard thread's demand for its core.
    demand: RefCell<Demand>,
}

/// What writing pending frames did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Frames that reached a viewer's socket or queue (one per viewer per frame).
    pub delivered: u64,
    /// Frames dropped for viewers over their bound.
    pub dropped: u64,
    /// Viewers written to directly (one `sendmsg` each).
    pub writes: u64,
    /// Bytes that went to the kernel directly.
    pub bytes: u64,
    /// Viewers whose sockets did not take all of it ([`crate::outq::Batch::behind`]).
    pub behind: u64,
}

impl Flushed {
    pub fn add(&mut self, o: Flushed) {
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.writes += o.writes;
        self.bytes += o.bytes;
        self.behind += o.behind;
    }
}

impl Cork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a room that got its first pending frame of the turn on the list, and wakes
    /// the flusher.
    pub fn add(&self, room: RoomId) {
        let mut dirty = self.dirty.borrow_mut();
        dirty.push(room);
        if dirty.len() == 1 {
            self.kick.notify();
        }
    }

    /// Takes the dirty rooms (the flush's list); hand it back with [`Cork::give_back`].
    pub fn take(&self) -> Vec<RoomId> {
        let mut list = std::mem::take(&mut *self.spare.borrow_mut());
        std::mem::swap(&mut list, &mut *self.dirty.borrow_mut());
        list
    }

    /// Returns a flushed list, so the next turn's reuses its allocation.
    pub fn give_back(&self, mut list: Vec<RoomId>) {
        list.clear();
        *self.spare.borrow_mut() = list;
    }

    /// Waits until a flush is due: a room is dirty, and the pacing gap after the last
    /// flush has passed.
    pub async fn due(&self) {
        self.kick.notified().await;
        if let Some((ended, took)) = self.last.get() {
            let at = ended + (took * PACE).min(MAX_WAIT);
            let now = Instant::now();
            if at > now + MIN_WAIT {
                monoio::time::sleep(at - now).await;
            }
        }
    }

    /// Records a flush's start, for the pacing of the next one.
    pub fn flushed(&self, started: Instant) {
        let now = Instant::now();
        self.last.set(Some((now, now - started)));
    }

    /// How loaded the shard is, for the rooms' shedding ([`super::shed`]).
    pub fn shard_load(&self, now: Instant) -> Shard {
        let took = self.last.get().map_or(Duration::ZERO, |(_, took)| took);
        Shard::judge(self.demand.borrow_mut().sample(now), took, MAX_WAIT)
    }
}
