//! One outbound queue for every stream the server writes to a peer: danmaku WebSocket,
//! HTTP-FLV and RTMP play viewers, Server-Sent Events.
//!
//! - [`Queue`] (sans-IO, [`queue`]) holds the frames under one byte bound and judges the
//!   consumer: droppable vs must-send frames, the drop or skip-to-keyframe [`Policy`], the
//!   coalesced pong, the slow-consumer clock and the write clock. Its rules are written
//!   there and unit-tested with time passed in.
//! - [`OutQueue`] is that queue shared (`Rc`, `RefCell`, `Cell`) by the code that produces
//!   frames (a room's fan-out, a stream's mirror, the connection's own reader) and the one
//!   writer task of the connection. When nothing is queued and no write is in flight, a
//!   frame goes straight to the socket with [`send_now_iter`] (one `sendmsg`, no task
//!   wake-up: the common case of a consumer that keeps up); whatever does not fit is queued
//!   first for the writer.
//! - [`OutQueue::offer_batch_all`] writes a room's turn to all its viewers; where the shard
//!   allows it, the direct writes go in one io_uring submit ([`sendring`]).
//! - [`write_loop`] ([`writer`]) is the writer: it drains the queue with vectored writes
//!   until the queue is finished or aborted, or the peer fails or times out.
//!
//! Life of a queue: open → [`OutQueue::finish`] (the writer writes what is queued, then
//! stops) or [`OutQueue::abort`] (it stops now; a write in flight is abandoned). When the
//! writer stops, the socket is no longer written directly and the connection's reader is
//! woken ([`OutQueue::reader_notified`]).
//!
//! Depends on nothing but `bytes`, [`crate::sockio`], `shards::local`, monoio and io-uring.

pub mod queue;
pub mod sendring;
pub mod writer;

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::time::Instant;

use bytes::Bytes;
use shards::local::{Notified, Notify};

use crate::sockio::{send_now_iter, SendNow};
pub use queue::{Kind, Offer, Policy, Queue, HARD_CEILING};
pub use writer::{spawn_writer, write_loop, End, Timeout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// Write what is queued, then stop.
    Finishing,
    /// Stop now; what is queued is abandoned.
    Aborted,
}

/// What [`OutQueue::offer_batch`] did with a run of frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Frames sent or queued.
    pub delivered: usize,
    /// Frames dropped: the consumer is over its bound.
    pub dropped: usize,
    /// Whether they went to the socket directly (one system call).
    pub wrote: bool,
    /// Bytes that went to the socket directly.
    pub sent: usize,
    /// Whether the socket's consumer is behind: part of the run waits in the queue because
    /// the socket did not take it (a socketless consumer never counts).
    pub behind: bool,
}

/// A connection's outbound queue, shared by its producers and its writer task.
pub struct OutQueue {
    /// The queue proper, made when first needed and let go when an idle connection parks
    /// holding nothing ([`OutQueue::release_if_pristine`]): 160 bytes an idle connection
    /// does not pay for.
    q: RefCell<Option<Box<Queue>>>,
    limit: usize,
    policy: Policy,
    state: Cell<State>,
    /// Wakes the writer: data queued, or a state change.
    wake: Notify,
    /// Aborts a write in flight.
    abort: Notify,
    /// Wakes the connection's reader: the queue finished or aborted, the writer stopped,
    /// or it drained under half the bound while the reader waited in
    /// [`OutQueue::wait_drained`].
    reader: Notify,
    /// The reader waits in [`OutQueue::wait_drained`].
    reader_paused: Cell<bool>,
    /// The socket, for direct sends while nothing is queued; `None` without a socket (the
    /// fan-out benchmark) and from the moment the writer stops.
    fd: Cell<Option<RawFd>>,
    /// The writer holds bytes it has not finished writing: no direct send may overtake them.
    in_flight: Cell<bool>,
    /// Bytes written directly, not yet collected for metrics.
    direct_bytes: Cell<u64>,
}

impl OutQueue {
    pub fn new(limit: usize, policy: Policy) -> Self {
        Self {
            q: RefCell::new(None),
            limit,
            policy,
            state: Cell::new(State::Open),
            wake: Notify::new(),
            abort: Notify::new(),
            reader: Notify::new(),
            reader_paused: Cell::new(false),
            fd: Cell::new(None),
            in_flight: Cell::new(false),
            direct_bytes: Cell::new(0),
        }
    }

    /// Lets frames go to `fd` directly while nothing is queued. The writer clears it when
    /// it stops, before the socket closes. The caller guarantees `fd` is the connection's
    /// own socket and that only this queue's writer writes to it.
    pub fn set_fd(&self, fd: RawFd) {
        self.fd.set(Some(fd));
    }

    /// The socket, while the writer has not stopped.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.get()
    }

    /// Neither finished nor aborted: frames are taken.
    pub fn is_open(&self) -> bool {
        self.state.get() == State::Open
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.peek(Queue::bytes, 0)
    }

    /// Over the bound: the connection's reader must stop producing replies.
    pub fn backed_up(&self) -> bool {
        self.peek(Queue::backed_up, false)
    }

    /// Since when the consumer has been behind, if it is (the slow-consumer clock).
    pub fn over_since(&self) -> Option<Instant> {
        self.peek(Queue::over_since, None)
    }

    /// When the oldest byte not yet written was queued, if one is: the write timeout runs
    /// from there, so a peer that takes a few bytes at a time does not restart it.
    pub fn oldest_unwritten(&self) -> Option<Instant> {
        self.peek(Queue::oldest_unwritten, None)
    }

    /// What `f` says of the queue; `none` if there is none yet.
    fn peek<R>(&self, f: impl FnOnce(&Queue) -> R, none: R) -> R {
        self.q.borrow().as_deref().map_or(none, f)
    }

    /// The queue, made if there is none yet.
    pub(super) fn queue(&self) -> std::cell::RefMut<'_, Queue> {
        std::cell::RefMut::map(self.q.borrow_mut(), |q| {
            &mut **q.get_or_insert_with(|| Box::new(Queue::new(self.limit, self.policy)))
        })
    }

    /// Nothing waits in the queue.
    fn is_empty(&self) -> bool {
        self.peek(Queue::is_empty, true)
    }

    /// Lets the queue go if it holds and remembers nothing (a connection parking).
    pub fn release_if_pristine(&self) {
        let mut q = self.q.borrow_mut();
        if q.as_deref().is_some_and(Queue::is_pristine) {
            *q = None;
        }
    }

    /// Bytes written directly since the last call (for metrics).
    pub fn take_direct_bytes(&self) -> u64 {
        self.direct_bytes.replace(0)
    }

    /// Forgets every queued frame (the fan-out benchmark's in-memory sink); returns how many.
    /// Takes everything queued, in the order the writer would write it, as if the peer had
    /// read it all (an in-memory peer: the engine tests).
    pub fn take_all(&self) -> Vec<Bytes> {
        let mut q = self.queue();
        let mut out = Vec::new();
        while let Some(b) = q.take_next() {
            out.push(b);
        }
        q.wrote(out.iter().map(Bytes::len).sum());
        out
    }

    pub fn drain(&self) -> usize {
        self.queue().drain()
    }

    /// Writes `parts` on the socket now if nothing is ahead of them (`q` is this queue,
    /// borrowed by the caller); returns the bytes that went (counted as direct bytes).
    fn try_direct(&self, queue_empty: bool, parts: &[&Bytes]) -> usize {
        let Some(fd) = self.fd.get() else {
            return 0;
        };
        if self.in_flight.get() || !queue_empty {
            return 0;
        }
        // All of what one call gathers; more parts than that wait in the queue.
        let sent = send_now_iter(fd, parts.iter().map(|p| p.as_ref()))
            .bytes(parts.iter().map(|p| p.len()));
        self.direct_bytes.set(self.direct_bytes.get() + sent as u64);
        sent
    }

    /// Offers a frame whose wire form is `parts`, judged by the queue's [`Policy`]. Sent at
    /// once when nothing is ahead of it; what does not fit is queued for the writer.
    /// [`Offer::Closed`] finishes the queue (the caller may abort it instead).
    pub fn offer(&self, parts: &[&Bytes], kind: Kind, now: Instant) -> Offer {
        self.offer_as(parts, kind, now, false)
    }

    /// Like [`OutQueue::offer`], but the frame waits in the queue for the next
    /// [`OutQueue::flush`] (corking: the frames of one flush interval leave in one system
    /// call).
    pub fn offer_corked(&self, parts: &[&Bytes], kind: Kind, now: Instant) -> Offer {
        self.offer_as(parts, kind, now, true)
    }

    fn offer_as(&self, parts: &[&Bytes], kind: Kind, now: Instant, corked: bool) -> Offer {
        if !self.is_open() {
            return Offer::Dropped;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut q = self.queue();
        let verdict = q.admit(len, kind, now);
        if verdict != Offer::Queued || len == 0 {
            drop(q);
            return self.refused(verdict);
        }
        if corked {
            q.append(parts, 0, now);
            if self.in_flight.get() {
                // The writer is busy with this connection anyway: it takes these too.
                self.wake.notify();
            }
            return verdict;
        }
        let sent = self.try_direct(q.is_empty(), parts);
        if sent < len {
            q.append(parts, sent, now);
            self.wake.notify();
        }
        verdict
    }

    /// Offers one whole frame (the fan-out path: no slice of parts to build, one borrow).
    fn offer_one(&self, frame: &Bytes, kind: Kind, now: Instant) -> Offer {
        if !self.is_open() {
            return Offer::Dropped;
        }
        let mut slot = self.q.borrow_mut();
        if slot.is_none() && self.policy == Policy::Drop {
            // No queue: under Policy::Drop an empty queue admits any frame (see
            // `Queue::admit`), so the socket may take it whole and no queue is made (a
            // parked connection's online counts).
            let sent = self.try_direct(true, &[frame]);
            if sent < frame.len() {
                let q = slot.insert(Box::new(Queue::new(self.limit, self.policy)));
                if sent == 0 {
                    q.append_one(frame.clone(), now);
                } else {
                    q.append(&[frame], sent, now);
                }
                self.wake.notify();
            }
            return Offer::Queued;
        }
        drop(slot);
        let mut q = self.queue();
        let verdict = q.admit(frame.len(), kind, now);
        if verdict != Offer::Queued {
            drop(q);
            return self.refused(verdict);
        }
        let sent = self.try_direct(q.is_empty(), &[frame]);
        if sent < frame.len() {
            if sent == 0 {
                q.append_one(frame.clone(), now);
            } else {
                q.append(&[frame], sent, now);
            }
            self.wake.notify();
        }
        verdict
    }

    /// Offers a run of droppable frames shared by many consumers (a room's frames of one
    /// turn, [`crate::danmaku::cork`]): with nothing queued or in flight they go to the
    /// socket in one `sendmsg` and whatever does not fit is queued for the writer; else each
    /// is judged by the queue's bound behind what is there. `Bytes` are cloned only for what
    /// is queued.
    pub fn offer_batch(&self, frames: &[Bytes], now: Instant) -> Batch {
        if !self.is_open() || frames.is_empty() {
            return Batch::default();
        }
        if let Some(fd) = self.direct_fd() {
            let sent = send_now_iter(fd, frames.iter().map(|f| f.as_ref()));
            return self.sent_directly(frames, sent, now);
        }
        self.queue_batch(frames, now)
    }

    /// The socket to write to now: open, nothing queued and no write in flight.
    fn direct_fd(&self) -> Option<RawFd> {
        let fd = self.fd.get()?;
        let clear = self.is_open()
            && !self.in_flight.get()
            && self.q.borrow().as_deref().is_none_or(Queue::is_empty);
        clear.then_some(fd)
    }

    /// Records a direct write of `frames` (from [`OutQueue::direct_fd`], nothing changed
    /// since) that did `sent`; what the socket did not take is queued for the writer.
    fn sent_directly(&self, frames: &[Bytes], sent: SendNow, now: Instant) -> Batch {
        let total: usize = frames.iter().map(Bytes::len).sum();
        let sent = sent.bytes(frames.iter().map(Bytes::len));
        let mut done = Batch {
            delivered: frames.len(),
            sent,
            wrote: true,
            ..Batch::default()
        };
        if sent < total {
            // The socket is full (rare for a consumer that keeps up): the rest waits.
            done.behind = true;
            let refs: Vec<&Bytes> = frames.iter().collect();
            self.queue().append(&refs, sent, now);
            self.wake.notify();
        }
        done
    }

    /// Queues each of `frames` behind what is there, judged by the queue's bound.
    fn queue_batch(&self, frames: &[Bytes], now: Instant) -> Batch {
        let mut done = Batch::default();
        let mut q = self.queue();
        for f in frames {
            if q.admit(f.len(), Kind::Droppable { keyframe: false }, now) == Offer::Queued {
                q.append_one(f.clone(), now);
                done.delivered += 1;
            } else {
                done.dropped += 1;
            }
        }
        drop(q);
        if done.delivered > 0 {
            self.wake.notify();
        }
        done.behind = self.fd.get().is_some();
        done
    }

    /// [`OutQueue::offer_batch`] to many consumers (a room's flush; `out` gives each item's
    /// queue, `None` to skip it), reporting each one's [`Batch`] to `each`. Those whose
    /// socket can take the frames now are written together in one system call
    /// ([`sendring`]) where the shard allows it.
    ///
    /// Kept because it is the cheaper on a 2-core VM. `cargo bench --bench sendring` (a
    /// sender and a reader on cores of their own): the batch costs 0.95× the `sendmsg`
    /// calls' CPU per delivery at 200 viewers, 0.82× at 1,000 and 0.93× at 4,000. End to
    /// end (`bench/fanout.sh --pin --shards 1 --rooms 1`, window 0, against the same build
    /// with `sendring::allow(false)` in `shard.rs`, five runs each way, the median):
    /// 1,000 × 200 went from 394k to 408k deliveries per server CPU-second and 200 × 1,000
    /// stayed at 378k, within the ±10 % spread of runs. Most of a delivery is the kernel's
    /// TCP work, which no way of submitting saves.
    pub fn offer_batch_all<T>(
        items: &[T],
        out: impl Fn(&T) -> Option<&OutQueue>,
        frames: &[Bytes],
        now: Instant,
        mut each: impl FnMut(Batch),
    ) {
        if frames.is_empty() {
            return;
        }
        sendring::with(|ring| {
            let Some(ring) = ring else {
                items
                    .iter()
                    .filter_map(&out)
                    .filter(|q| q.is_open())
                    .for_each(|q| each(q.offer_batch(frames, now)));
                return;
            };
            ring.clear();
            for (i, item) in items.iter().enumerate() {
                let Some(q) = out(item) else { continue };
                match q.direct_fd() {
                    Some(fd) => ring.push(i, fd),
                    None if q.is_open() => each(q.queue_batch(frames, now)),
                    None => {}
                }
            }
            ring.send(frames);
            for (i, sent) in ring.results() {
                if let Some(q) = out(&items[i]) {
                    each(q.sent_directly(frames, sent, now));
                }
            }
        });
    }

    /// Acts on a verdict other than queued: [`Offer::Closed`] finishes the queue.
    fn refused(&self, verdict: Offer) -> Offer {
        if verdict == Offer::Closed {
            self.finish();
        }
        verdict
    }

    /// Sends a frame the peer must get (acks, errors, history, protocol replies, stream
    /// headers). Under [`Policy::Drop`], past twice the bound it is refused with
    /// [`Offer::Closed`] and the queue finishes: the peer has stopped reading.
    pub fn send(&self, frame: Bytes) -> Offer {
        self.offer_one(&frame, Kind::MustSend, Instant::now())
    }

    /// Sends a droppable frame that is not a keyframe (a fan-out batch, an online count);
    /// returns false if it was dropped for this consumer (the slow-consumer clock runs
    /// then). `now` is read once per fan-out by the caller.
    pub fn send_droppable(&self, frame: &Bytes, now: Instant) -> bool {
        self.offer_one(frame, Kind::Droppable { keyframe: false }, now) == Offer::Queued
    }

    /// Answers a ping. At most one pong waits: a newer ping replaces the older one's
    /// answer (RFC 6455 §5.5.3), so a flood of pings holds one control frame, not a queue.
    pub fn set_pong(&self, frame: Bytes) {
        if !self.is_open() {
            return;
        }
        let mut q = self.queue();
        let sent = self.try_direct(q.is_empty(), &[&frame]);
        if sent == frame.len() {
            return;
        }
        let now = Instant::now();
        if sent > 0 {
            // Its head is on the wire: the rest is part of the stream now, not a pong that
            // a later one may replace.
            q.append(&[&frame], sent, now);
        } else {
            q.set_pong(frame, now);
        }
        self.wake.notify();
    }

    /// Sends what is queued in one system call if no write is in flight; whatever does not
    /// fit goes to the writer task. Returns the bytes sent here.
    pub fn flush(&self) -> u64 {
        let Some(fd) = self.fd.get() else {
            if !self.is_empty() {
                self.wake.notify();
            }
            return 0;
        };
        let sent = self.send_queued_to(fd);
        if !self.is_empty() {
            self.wake.notify();
        }
        sent
    }

    /// Sends what is queued in one system call, as far as the socket takes it now, for a
    /// connection that is its own writer (it waits for the socket to be writable itself):
    /// no wake-up. Returns the bytes sent.
    pub fn send_queued(&self) -> u64 {
        self.fd.get().map_or(0, |fd| self.send_queued_to(fd))
    }

    fn send_queued_to(&self, fd: RawFd) -> u64 {
        if self.in_flight.get() || !self.is_open() {
            return 0;
        }
        let mut slot = self.q.borrow_mut();
        let Some(q) = slot.as_deref_mut().filter(|q| !q.is_empty()) else {
            return 0;
        };
        let sent = send_now_iter(fd, q.pending()).bytes(q.pending().map(<[u8]>::len));
        q.sent_directly(sent);
        sent as u64
    }

    /// Writes what is queued, then stops. Nothing more is taken.
    pub fn finish(&self) {
        if self.state.get() == State::Open {
            self.state.set(State::Finishing);
        }
        self.wake.notify();
        self.reader.notify();
    }

    /// Stops now, abandoning what is queued and a write in flight.
    pub fn abort(&self) {
        self.state.set(State::Aborted);
        self.wake.notify();
        self.abort.notify();
        self.reader.notify();
    }

    /// Has `waker` woken when frames are queued or the reader should look again, for a
    /// connection that waits without a task (`crate::danmaku::park`). True, and nothing
    /// registered for good, if one of them is already due.
    pub fn watch(&self, waker: &std::task::Waker) -> bool {
        self.wake.watch(waker) || self.reader.watch(waker)
    }

    /// Forgets what [`OutQueue::watch`] registered.
    pub fn unwatch(&self) {
        self.wake.unwatch();
        self.reader.unwatch();
    }

    /// Completes when a frame was queued or the queue finished or aborted: for a consumer
    /// that takes the frames itself ([`OutQueue::take_all`]) or a connection that is its own
    /// writer ([`OutQueue::send_queued`]) instead of a writer task (a queue has one or the
    /// other: one task waits here).
    pub fn changed(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Completes when the connection's reader should look again: the queue finished or
    /// aborted, the writer stopped, or (after [`OutQueue::wait_drained`]) it drained.
    pub fn reader_notified(&self) -> Notified<'_> {
        self.reader.notified()
    }

    /// Waits, as the connection's reader, for the writer to drain the queue under half
    /// its bound (or for the queue to close). Call while [`OutQueue::backed_up`].
    pub async fn wait_drained(&self) {
        self.reader_paused.set(true);
        self.reader.notified().await;
        self.reader_paused.set(false);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::sockio::SEND_NOW_MAX_PARTS;

    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (client, peer)
    }

    fn frame(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    const DELTA: Kind = Kind::Droppable { keyframe: false };
    const KEY: Kind = Kind::Droppable { keyframe: true };

    #[test]
    fn corked_frames_leave_together_on_flush() {
        let (client, mut peer) = socket_pair();
        let o = OutQueue::new(1 << 20, Policy::SkipToKeyframe);
        o.set_fd(client.as_raw_fd());
        let (a, b) = (frame(1, 100), frame(2, 50));
        let now = Instant::now();
        assert_eq!(o.offer_corked(&[&a], KEY, now), Offer::Queued);
        assert_eq!(o.offer_corked(&[&b], DELTA, now), Offer::Queued);
        let want = a.len() + b.len();
        assert_eq!(o.queued_bytes(), want, "nothing sent before the flush");
        assert_eq!(o.flush(), want as u64);
        assert_eq!(o.queued_bytes(), 0);
        let mut got = vec![0u8; want];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..a.len()], &a[..]);
        assert_eq!(&got[a.len()..], &b[..]);
    }

    /// The queue proper exists only while it is needed: frames the socket takes whole make
    /// none, a partial send makes one, and once drained and pristine it can be let go.
    #[test]
    fn the_queue_is_made_when_needed_and_let_go_when_pristine() {
        let (client, mut peer) = socket_pair();
        let o = OutQueue::new(1 << 20, Policy::Drop);
        o.set_fd(client.as_raw_fd());
        let small = frame(1, 100);
        assert_eq!(o.send(small.clone()), Offer::Queued);
        assert!(o.send_droppable(&small, Instant::now()));
        assert!(o.q.borrow().is_none(), "sent whole: no queue");
        let mut got = vec![0u8; 2 * small.len()];
        peer.read_exact(&mut got).unwrap();
        // More than the socket takes: the rest waits in a queue made for it.
        let big = frame(2, 8 << 20);
        assert_eq!(o.send(big.clone()), Offer::Queued);
        assert!(o.queued_bytes() > 0);
        o.release_if_pristine();
        assert!(o.q.borrow().is_some(), "a queue that holds bytes stays");
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; big.len()];
            peer.read_exact(&mut buf).unwrap();
            buf == big[..]
        });
        while o.queued_bytes() > 0 {
            o.send_queued();
            std::thread::yield_now();
        }
        assert!(reader.join().unwrap(), "the peer got the frame whole");
        o.release_if_pristine();
        assert!(o.q.borrow().is_none(), "drained and pristine: let go");
        assert_eq!(o.queued_bytes(), 0);
    }

    /// Regression: a direct send of more parts than one `sendmsg` gathers counted them all
    /// as sent, and the parts past the gather limit never reached the peer.
    #[test]
    fn a_frame_of_more_parts_than_one_send_gathers_is_sent_whole() {
        let (client, mut peer) = socket_pair();
        let o = OutQueue::new(1 << 20, Policy::SkipToKeyframe);
        o.set_fd(client.as_raw_fd());
        let parts: Vec<Bytes> = (0..SEND_NOW_MAX_PARTS as u8 + 6)
            .map(|i| frame(i, 3))
            .collect();
        let refs: Vec<&Bytes> = parts.iter().collect();
        assert_eq!(o.offer(&refs, KEY, Instant::now()), Offer::Queued);
        let gathered = 3 * SEND_NOW_MAX_PARTS as u64;
        assert_eq!(o.take_direct_bytes(), gathered, "only what went counts");
        assert_eq!(o.queued_bytes(), 3 * 6, "the rest waits for the writer");
        assert_eq!(o.flush(), 3 * 6);
        let mut got = vec![0u8; 3 * parts.len()];
        peer.read_exact(&mut got).unwrap();
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_batch_goes_in_one_write_when_nothing_is_ahead_and_behind_what_is() {
        let (client, mut peer) = socket_pair();
        let o = OutQueue::new(1000, Policy::Drop);
        o.set_fd(client.as_raw_fd());
        let (a, b) = (frame(1, 10), frame(2, 20));
        let now = Instant::now();
        let done = o.offer_batch(&[a.clone(), b.clone()], now);
        assert_eq!(
            (done.delivered, done.dropped, done.wrote, done.sent),
            (2, 0, true, 30)
        );
        assert_eq!(o.queued_bytes(), 0);
        let mut got = vec![0u8; 30];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..10], &a[..]);
        assert_eq!(&got[10..], &b[..]);

        // Something ahead (no socket now, so it stays): the batch queues behind it, each
        // frame judged by the bound.
        let o = OutQueue::new(1000, Policy::Drop);
        assert_eq!(o.send(frame(3, 900)), Offer::Queued);
        let done = o.offer_batch(&[frame(4, 50), frame(5, 100)], now);
        assert_eq!((done.delivered, done.dropped, done.wrote), (1, 1, false));
        let lens: Vec<usize> = o.take_all().iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            [900, 50],
            "in order, the frame past the bound dropped"
        );
    }

    /// A room's flush to many consumers, through the send ring (where io_uring is) and one
    /// `sendmsg` at a time, the same either way: each consumer whose socket has room gets
    /// the turn whole and in order; one whose socket is full keeps it queued and counts as
    /// behind; a closed one gets nothing. More consumers than one submit carries, and turns
    /// of one frame and of two.
    #[test]
    fn a_turn_reaches_every_consumer_and_a_full_socket_keeps_the_rest() {
        sendring::allow(true);
        assert_eq!(
            sendring::with(|r| r.is_some()),
            monoio::utils::detect_uring(),
            "the ring is used wherever io_uring is"
        );
        a_turn_to_many(true);
        sendring::allow(false);
        assert!(sendring::with(|r| r.is_none()));
        a_turn_to_many(false);
    }

    fn a_turn_to_many(ring: bool) {
        let pairs: Vec<_> = (0..300).map(|_| socket_pair()).collect();
        let outs: Vec<OutQueue> = pairs
            .iter()
            .map(|(client, _)| {
                let o = OutQueue::new(1 << 22, Policy::Drop);
                o.set_fd(client.as_raw_fd());
                o
            })
            .collect();
        // Consumer 0's socket is full; consumer 1 is closed.
        pairs[0].0.set_nonblocking(true).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write(&mut &pairs[0].0, &chunk).is_ok() {}
        outs[1].finish();

        let turns = [vec![frame(1, 10), frame(2, 20)], vec![frame(3, 7)]];
        let now = Instant::now();
        for (t, frames) in turns.iter().enumerate() {
            let mut seen = Vec::new();
            OutQueue::offer_batch_all(&outs, |o| Some(o), frames, now, |b| seen.push(b));
            assert_eq!(
                seen.len(),
                299,
                "turn {t}, ring {ring}: every open consumer, once"
            );
            assert!(seen
                .iter()
                .all(|b| b.delivered == frames.len() && b.dropped == 0));
            let behind: Vec<_> = seen.iter().filter(|b| b.behind).collect();
            assert_eq!(
                behind.len(),
                1,
                "turn {t}, ring {ring}: only the full socket is behind"
            );
        }
        assert_eq!(
            outs[0].queued_bytes(),
            37,
            "both turns wait for the full socket"
        );
        assert_eq!(outs[1].queued_bytes(), 0);
        for (i, (_, peer)) in pairs.iter().enumerate().skip(2) {
            let mut got = vec![0u8; 37];
            (&mut &*peer).read_exact(&mut got).unwrap();
            let want: Vec<u8> = turns.iter().flatten().flat_map(|f| f.to_vec()).collect();
            assert_eq!(got, want, "consumer {i}, ring {ring}");
            assert_eq!(outs[i].queued_bytes(), 0);
        }
    }

    #[test]
    fn a_closed_viewer_takes_nothing_more() {
        let o = OutQueue::new(1000, Policy::SkipToKeyframe);
        let now = Instant::now();
        let (big, small) = (frame(0, 600), frame(0, 100));
        assert_eq!(o.offer(&[&big], KEY, now), Offer::Queued);
        assert_eq!(o.offer(&[&big], DELTA, now), Offer::Dropped);
        assert_eq!(o.offer(&[&big], KEY, now), Offer::Closed);
        assert!(!o.is_open());
        assert_eq!(o.offer(&[&small], KEY, now), Offer::Dropped);
        assert_eq!(o.send(small), Offer::Dropped);
        assert_eq!(o.queued_bytes(), 600);
    }

    #[test]
    fn must_send_past_the_ceiling_closes_a_websocket_queue() {
        let o = OutQueue::new(1000, Policy::Drop);
        for _ in 0..20 {
            assert_eq!(o.send(frame(0, 100)), Offer::Queued);
        }
        assert!(o.backed_up());
        assert!(!o.send_droppable(&frame(0, 10), Instant::now()));
        assert_eq!(o.send(frame(0, 100)), Offer::Closed);
        assert!(!o.is_open());
    }
}
