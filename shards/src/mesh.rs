//! The cross-shard mesh: one bounded lock-free SPSC ring per ordered pair of shards.
//!
//! Each shard holds the producer end of its ring to every other shard and the consumer end
//! of every ring into it. A message is *moved* into a ring slot (for danmaku and media the
//! message carries a refcounted `Bytes`, so a fan-out moves a pointer, never the payload).
//!
//! ## One wake-up per batch
//! `submit_to` only pushes into the ring and marks the destination dirty. A flusher task on
//! the sending shard runs once the tasks that are ready in this turn of the event loop have
//! run, and rings each dirty destination's [`Doorbell`] once. The doorbell is an atomic
//! "pending" flag plus a waker: a doorbell that is already pending is not rung again, so a
//! busy receiver gets no wake-ups at all while it keeps draining.
//!
//! ## Overflow policy (a full ring never blocks an event loop)
//! 1. Ring full → the message goes to a local, ordered backlog for that destination; while
//!    the backlog is non-empty every later message to that destination queues behind it, so
//!    per-pair order is kept. The flusher moves the backlog into the ring as the receiver
//!    frees slots (it retries every millisecond while any backlog is non-empty).
//! 2. Backlog at its cap (`backlog_capacity` messages) → `submit_to` returns the message in
//!    [`Full`] and the shard's `overflow` counter increments. The caller decides: a sender
//!    answers its client "busy" instead of acknowledging, a fan-out batch is dropped for that
//!    shard and counted. Nothing ever waits for room.
//!
//! Messages to the shard itself take the same path through a local queue (no atomics), so
//! a handler sees local and remote messages in one place and is never re-entered.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use rtrb::{Consumer, Producer, PushError, RingBuffer};

use crate::local::{yield_now, Notify, Signal};

/// Returned by [`Mesh::submit_to`] when the destination's ring and backlog are both full.
/// Carries the message back so the caller can answer, retry later or drop it knowingly.
pub struct Full<M>(pub M);

impl<M> std::fmt::Debug for Full<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Full(..)")
    }
}

/// The receive side's wake-up, shared by all shards that send to it.
///
/// Padded to two cache lines so that ringing one shard's doorbell does not invalidate the
/// line holding its neighbour's (adjacent-line prefetch pairs 64-byte lines on x86).
#[repr(align(128))]
pub struct Doorbell {
    /// Set by a sender after pushing a batch, cleared by the receiver before it drains.
    pending: AtomicBool,
    /// Set once by the engine to ask the shard to stop.
    stop: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    fn new() -> Self {
        Self {
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Wakes the receiver unless a wake-up is already pending.
    ///
    /// Ordering: the ring push before this is a Release store; SeqCst on the flag orders
    /// it with the receiver's clear-then-drain, so a message pushed after the receiver
    /// cleared the flag is either seen by that drain or causes a new wake-up.
    pub(crate) fn ring(&self) -> bool {
        if !self.pending.swap(true, Ordering::SeqCst) {
            self.waker.wake();
            return true;
        }
        false
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Force a wake-up even if one is pending: the receiver checks `stop` on every turn.
        self.pending.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// Counters of one shard's side of the mesh. Written only by the owning shard (Relaxed:
/// they are statistics, read by whichever shard renders `/metrics`).
#[repr(align(128))]
pub struct MeshStats {
    /// Messages accepted by `submit_to` (into a ring, the backlog or the local queue).
    pub sent: AtomicU64,
    /// Messages handed to this shard's handler.
    pub received: AtomicU64,
    /// Messages refused because ring and backlog were full.
    pub overflow: AtomicU64,
    /// Doorbells this shard rang (wake-ups it caused).
    pub wakeups: AtomicU64,
    /// Messages waiting in this shard's backlogs right now.
    pub backlog: AtomicU64,
    /// Slots in use in the ring from this shard to each destination, as of the last flush.
    pub ring_depth: Box<[AtomicU64]>,
}

impl MeshStats {
    fn new(shards: usize) -> Self {
        Self {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            ring_depth: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Everything shared between threads, created once at start.
pub(crate) struct Shared {
    pub(crate) doorbells: Box<[Doorbell]>,
    pub(crate) stats: Arc<[MeshStats]>,
}

/// The producer end towards one destination, with its overflow backlog.
struct Lane<M> {
    ring: RefCell<Producer<M>>,
    backlog: RefCell<VecDeque<M>>,
    dirty: Cell<bool>,
}

/// One shard's endpoint of the mesh. Lives on its shard (`!Send`): the rings' ends were
/// distributed at start and never move again.
pub struct Mesh<M> {
    me: usize,
    lanes: Box<[Option<Lane<M>>]>,
    inbound: Box<[Option<RefCell<Consumer<M>>>]>,
    external: Receiver<M>,
    local: RefCell<VecDeque<M>>,
    local_dirty: Cell<bool>,
    backlog_capacity: usize,
    drain_quota: usize,
    shared: Arc<Shared>,
    flush: Notify,
    flush_scheduled: Cell<bool>,
    stop: Rc<Signal>,
}

/// Builds the whole mesh: returns the per-shard endpoints' parts, in shard order.
pub(crate) fn build<M>(
    shards: usize,
    ring_capacity: usize,
) -> (Arc<Shared>, Vec<MeshParts<M>>, Vec<Remote<M>>) {
    let mut producers: Vec<Vec<Option<Producer<M>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut consumers: Vec<Vec<Option<Consumer<M>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (p, c) = RingBuffer::new(ring_capacity);
                producers[from][to] = Some(p);
                consumers[to][from] = Some(c);
            }
        }
    }
    let shared = Arc::new(Shared {
        doorbells: (0..shards).map(|_| Doorbell::new()).collect(),
        stats: (0..shards).map(|_| MeshStats::new(shards)).collect(),
    });
    let mut remotes = Vec::with_capacity(shards);
    let parts = producers
        .into_iter()
        .zip(consumers)
        .enumerate()
        .map(|(shard, (producers, consumers))| {
            let (tx, external) = std::sync::mpsc::sync_channel(ring_capacity);
            remotes.push(Remote {
                shard,
                tx,
                shared: shared.clone(),
            });
            MeshParts {
                producers,
                consumers,
                external,
            }
        })
        .collect();
    (shared, parts, remotes)
}

/// The ring ends of one shard, moved to its thread before the endpoint is built there.
pub(crate) struct MeshParts<M> {
    producers: Vec<Option<Producer<M>>>,
    consumers: Vec<Option<Consumer<M>>>,
    external: Receiver<M>,
}

/// A sender into one shard from a thread that is not a shard (storage, outbound HTTP).
///
/// Several such threads may send to one shard, so this is a bounded MPSC channel (std's)
/// drained by the shard's receive loop next to its rings, with the same doorbell: a
/// burst of sends costs the shard one wake-up. `send` blocks when the channel is full —
/// back-pressure on the helper thread, never on a shard.
pub struct Remote<M> {
    shard: usize,
    tx: SyncSender<M>,
    shared: Arc<Shared>,
}

impl<M> Clone for Remote<M> {
    fn clone(&self) -> Self {
        Self {
            shard: self.shard,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<M> Remote<M> {
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Sends `msg`, waiting for room if the shard is behind. Err if the shard is gone.
    pub fn send(&self, msg: M) -> Result<(), M> {
        self.tx.send(msg).map_err(|e| e.0)?;
        self.shared.doorbells[self.shard].ring();
        Ok(())
    }

    /// Sends `msg` if there is room now.
    pub fn try_send(&self, msg: M) -> Result<(), M> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.shared.doorbells[self.shard].ring();
                Ok(())
            }
            Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => Err(m),
        }
    }
}

impl<M> Mesh<M> {
    pub(crate) fn new(
        me: usize,
        parts: MeshParts<M>,
        shared: Arc<Shared>,
        backlog_capacity: usize,
        ring_capacity: usize,
        stop: Rc<Signal>,
    ) -> Self {
        Self {
            me,
            lanes: parts
                .producers
                .into_iter()
                .map(|p| {
                    p.map(|ring| Lane {
                        ring: RefCell::new(ring),
                        backlog: RefCell::new(VecDeque::new()),
                        dirty: Cell::new(false),
                    })
                })
                .collect(),
            inbound: parts
                .consumers
                .into_iter()
                .map(|c| c.map(RefCell::new))
                .collect(),
            external: parts.external,
            local: RefCell::new(VecDeque::new()),
            local_dirty: Cell::new(false),
            backlog_capacity,
            drain_quota: ring_capacity.max(1),
            shared,
            flush: Notify::new(),
            flush_scheduled: Cell::new(false),
            stop,
        }
    }

    /// This shard's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Number of shards in the mesh.
    pub fn shards(&self) -> usize {
        self.lanes.len()
    }

    fn stats(&self) -> &MeshStats {
        &self.shared.stats[self.me]
    }

    /// Every shard's mesh counters (for rendering metrics on any shard).
    pub fn all_stats(&self) -> &[MeshStats] {
        &self.shared.stats
    }

    /// Sends `msg` to shard `to` (which may be this shard). Never waits: see the overflow
    /// policy in the module docs. The receiver is woken once per batch, after the current
    /// turn of this shard's event loop.
    pub fn submit_to(&self, to: usize, msg: M) -> Result<(), Full<M>> {
        if to == self.me {
            let mut q = self.local.borrow_mut();
            if q.len() >= self.backlog_capacity {
                self.stats().overflow.fetch_add(1, Ordering::Relaxed);
                return Err(Full(msg));
            }
            q.push_back(msg);
            self.local_dirty.set(true);
        } else {
            let lane = self.lanes[to]
                .as_ref()
                .expect("a lane to every other shard");
            let mut backlog = lane.backlog.borrow_mut();
            let msg = if backlog.is_empty() {
                match lane.ring.borrow_mut().push(msg) {
                    Ok(()) => None,
                    Err(PushError::Full(msg)) => Some(msg),
                }
            } else {
                Some(msg)
            };
            if let Some(msg) = msg {
                if backlog.len() >= self.backlog_capacity {
                    self.stats().overflow.fetch_add(1, Ordering::Relaxed);
                    return Err(Full(msg));
                }
                backlog.push_back(msg);
                self.stats().backlog.fetch_add(1, Ordering::Relaxed);
            }
            lane.dirty.set(true);
        }
        self.stats().sent.fetch_add(1, Ordering::Relaxed);
        self.schedule_flush();
        Ok(())
    }

    /// Sends a clone of `msg` to every other shard, and `msg` itself to this one if
    /// `include_self`. Returns how many destinations refused it (each counted as overflow).
    pub fn broadcast(&self, msg: M, include_self: bool) -> usize
    where
        M: Clone,
    {
        let mut refused = 0;
        for to in 0..self.shards() {
            if to != self.me && self.submit_to(to, msg.clone()).is_err() {
                refused += 1;
            }
        }
        if include_self && self.submit_to(self.me, msg).is_err() {
            refused += 1;
        }
        refused
    }

    fn schedule_flush(&self) {
        if !self.flush_scheduled.replace(true) {
            self.flush.notify();
        }
    }

    /// Moves backlogs into rings and rings each dirty destination once.
    /// Returns true if some backlog could not be emptied (the ring is still full).
    fn flush_now(&self) -> bool {
        let stats = self.stats();
        let mut stuck = false;
        for (to, lane) in self.lanes.iter().enumerate() {
            let Some(lane) = lane else { continue };
            if !lane.dirty.get() {
                continue;
            }
            let mut ring = lane.ring.borrow_mut();
            let mut backlog = lane.backlog.borrow_mut();
            let mut moved = 0u64;
            while let Some(msg) = backlog.pop_front() {
                match ring.push(msg) {
                    Ok(()) => moved += 1,
                    Err(PushError::Full(msg)) => {
                        backlog.push_front(msg);
                        break;
                    }
                }
            }
            if moved > 0 {
                stats.backlog.fetch_sub(moved, Ordering::Relaxed);
            }
            let depth = (ring.buffer().capacity() - ring.slots()) as u64;
            stats.ring_depth[to].store(depth, Ordering::Relaxed);
            if backlog.is_empty() {
                lane.dirty.set(false);
            } else {
                stuck = true;
            }
            if self.shared.doorbells[to].ring() {
                stats.wakeups.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.local_dirty.replace(false) {
            self.shared.doorbells[self.me].ring();
        }
        stuck
    }

    /// The flusher: runs for the shard's lifetime, started by the engine.
    pub(crate) async fn run_flusher(self: Rc<Self>) {
        loop {
            self.flush.notified().await;
            // Let every task that is ready in this turn submit first: one wake-up per batch.
            yield_now().await;
            self.flush_scheduled.set(false);
            while self.flush_now() {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// The receive loop: hands every inbound message to `handler(from_shard, msg)`, in
    /// per-sender order, for the shard's lifetime. Each shard runs exactly one.
    ///
    /// A round drains at most one ring's capacity from each source, then yields, so a
    /// flood from one shard cannot starve this shard's connections.
    pub async fn serve(&self, mut handler: impl FnMut(usize, M)) {
        let doorbell = &self.shared.doorbells[self.me];
        loop {
            poll_fn(|cx| {
                if doorbell.pending.swap(false, Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                doorbell.waker.register(cx.waker());
                if doorbell.pending.swap(false, Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            if doorbell.stop.load(Ordering::SeqCst) {
                self.stop.raise();
            }
            let mut more = false;
            let mut received = 0u64;
            for (from, consumer) in self.inbound.iter().enumerate() {
                let Some(consumer) = consumer else { continue };
                let mut taken = 0;
                loop {
                    // The borrow ends before the handler runs: a handler may submit.
                    let msg = consumer.borrow_mut().pop();
                    let Ok(msg) = msg else { break };
                    handler(from, msg);
                    taken += 1;
                    if taken == self.drain_quota {
                        more = true;
                        break;
                    }
                }
                received += taken as u64;
            }
            // Messages from helper threads are handed over as coming from this shard.
            let mut taken = 0;
            while let Ok(msg) = self.external.try_recv() {
                handler(self.me, msg);
                taken += 1;
                if taken == self.drain_quota {
                    more = true;
                    break;
                }
            }
            received += taken as u64;
            let mut taken = 0;
            loop {
                let msg = self.local.borrow_mut().pop_front();
                let Some(msg) = msg else { break };
                handler(self.me, msg);
                taken += 1;
                if taken == self.drain_quota {
                    more = true;
                    break;
                }
            }
            received += taken as u64;
            self.stats().received.fetch_add(received, Ordering::Relaxed);
            if more {
                // Come back after other tasks had their turn.
                doorbell.pending.store(true, Ordering::SeqCst);
                yield_now().await;
            }
        }
    }
}
