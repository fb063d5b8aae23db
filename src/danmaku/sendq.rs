//! One WebSocket connection's outbound queue and the judgment of its consumer, sans-IO.
//!
//! Every frame the server sends a connection counts against ONE byte bound (`limit`),
//! whatever produced it: acks, errors, history, private messages, fan-out batches, pongs.
//!
//! - Fan-out frames ([`SendQueue::push_droppable`]) are dropped for this viewer past the
//!   bound. Frames the connection must get ([`SendQueue::push`]) are queued up to a hard
//!   ceiling of twice the bound; past it the connection has to be closed (nothing more is
//!   queued). The connection's own reader stops decoding while the queue is over the bound
//!   ([`SendQueue::backed_up`]) and resumes under half of it, so a client that never reads
//!   cannot make the server answer it (errors, pongs) into memory.
//! - Pongs are coalesced: one pending pong at most, answering the latest ping (RFC 6455
//!   §5.5.3 allows it), handed to the writer at the next frame boundary.
//! - The slow-consumer clock ([`SendQueue::over_since`]) starts when the queue passes the
//!   bound, by any kind of frame. It stops only when the queue drains under half the bound,
//!   or when the peer took a whole bound's worth of bytes since the clock started: a viewer
//!   that reads at least `limit` bytes per grace period is slow but alive (it loses fan-out
//!   frames, not its connection); one that reads a trickle is not, however often it reads.
//! - [`SendQueue::oldest_unwritten`] is when the oldest byte not yet written was queued:
//!   the write timeout is measured from it, so partial writes do not restart the clock.
//!
//! Time is passed in, so the rules are unit-tested here without a socket.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

/// The must-send ceiling, as a multiple of the bound.
pub const HARD_CEILING: usize = 2;

/// Why a must-send frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug)]
pub struct SendQueue {
    limit: usize,
    /// Frames waiting for the writer, with the time each was queued.
    frames: VecDeque<(Bytes, Instant)>,
    /// The front frame is the tail of one partly written already: nothing may precede it.
    head_partial: bool,
    /// The pending pong, if any, and when its ping came.
    pong: Option<(Bytes, Instant)>,
    /// Frames the writer took and has not finished: (queued at, bytes left), oldest first.
    taken: VecDeque<(Instant, usize)>,
    /// Bytes queued or taken and not yet written.
    bytes: usize,
    over_since: Option<Instant>,
    /// Bytes written since `over_since` was set.
    written_while_over: usize,
}

impl SendQueue {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            frames: VecDeque::new(),
            head_partial: false,
            pong: None,
            taken: VecDeque::new(),
            bytes: 0,
            over_since: None,
            written_while_over: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing waits for the writer (a direct send may go first).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.pong.is_none()
    }

    /// Over the bound: the connection's reader must stop producing replies.
    pub fn backed_up(&self) -> bool {
        self.bytes > self.limit
    }

    /// Drained enough for a paused reader to go on.
    pub fn below_low_water(&self) -> bool {
        self.bytes <= self.limit / 2
    }

    /// Since when the consumer has been behind, if it is.
    pub fn over_since(&self) -> Option<Instant> {
        self.over_since
    }

    /// When the oldest unwritten byte was queued, if any is.
    pub fn oldest_unwritten(&self) -> Option<Instant> {
        let mut oldest = self.taken.front().map(|t| t.0);
        for t in [
            self.frames.front().map(|f| f.1),
            self.pong.as_ref().map(|p| p.1),
        ]
        .into_iter()
        .flatten()
        {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        oldest
    }

    fn mark_over(&mut self, now: Instant) {
        if self.over_since.is_none() {
            self.over_since = Some(now);
            self.written_while_over = 0;
        }
    }

    fn append(&mut self, frame: Bytes, now: Instant) {
        self.bytes += frame.len();
        self.frames.push_back((frame, now));
        if self.bytes > self.limit {
            self.mark_over(now);
        }
    }

    /// Queues a frame the connection must get. A frame always enters an empty queue (so
    /// one large history frame is never refused); otherwise past the hard ceiling it is
    /// refused and the caller closes the connection.
    pub fn push(&mut self, frame: Bytes, now: Instant) -> Result<(), Overflow> {
        if self.bytes > 0 && self.bytes + frame.len() > self.limit * HARD_CEILING {
            self.mark_over(now);
            return Err(Overflow);
        }
        self.append(frame, now);
        Ok(())
    }

    /// Queues the unwritten tail of a frame whose head went out directly. Only called on
    /// an empty queue with no write in flight, so the tail is the next thing on the wire.
    pub fn push_rest(&mut self, rest: Bytes, now: Instant) {
        debug_assert!(self.frames.is_empty() && self.taken.is_empty());
        self.head_partial = true;
        self.append(rest, now);
    }

    /// Queues a fan-out frame unless that would pass the bound (an empty queue takes any
    /// frame); returns false if it was dropped, and the slow-consumer clock runs.
    pub fn push_droppable(&mut self, frame: &Bytes, now: Instant) -> bool {
        if self.bytes > 0 && self.bytes + frame.len() > self.limit {
            self.mark_over(now);
            return false;
        }
        self.append(frame.clone(), now);
        true
    }

    /// Sets the pending pong, replacing an older one that was not taken yet.
    pub fn set_pong(&mut self, frame: Bytes, now: Instant) {
        if let Some((old, _)) = self.pong.take() {
            self.bytes -= old.len();
        }
        self.bytes += frame.len();
        self.pong = Some((frame, now));
    }

    /// The next buffer for the writer: the pending pong at the first frame boundary, else
    /// the next frame. The writer owns it until [`SendQueue::wrote`] accounts for it.
    pub fn take_next(&mut self) -> Option<Bytes> {
        let (b, at) = match self.pong.take() {
            Some(p) if !self.head_partial => p,
            other => {
                self.pong = other;
                self.head_partial = false;
                self.frames.pop_front()?
            }
        };
        self.taken.push_back((at, b.len()));
        Some(b)
    }

    /// `n` bytes of what the writer took went to the kernel.
    pub fn wrote(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_sub(n);
        let mut left = n;
        // (An empty buffer, which the writer never writes, is done at once.)
        while let Some(front) = self.taken.front_mut() {
            if front.1 <= left {
                left -= front.1;
                self.taken.pop_front();
            } else {
                front.1 -= left;
                break;
            }
        }
        if self.over_since.is_some() {
            self.written_while_over += n;
            if self.below_low_water() || self.written_while_over >= self.limit {
                self.over_since = None;
            }
        }
    }

    /// Forgets everything queued (the fan-out benchmark's in-memory sink); returns the
    /// number of frames.
    /// Takes every queued frame, in the order the peer would get them (an in-memory
    /// peer: the engine tests). The pending pong goes last.
    pub fn take_frames(&mut self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self.frames.drain(..).map(|(b, _)| b).collect();
        out.extend(self.pong.take().map(|(b, _)| b));
        self.drain();
        out
    }

    pub fn drain(&mut self) -> usize {
        let n = self.frames.len() + usize::from(self.pong.is_some());
        self.frames.clear();
        self.pong = None;
        self.taken.clear();
        self.head_partial = false;
        self.bytes = 0;
        self.over_since = None;
        n
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    /// Takes everything the writer would and reports it all written.
    fn write_all(q: &mut SendQueue) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(b) = q.take_next() {
            out.push(b);
        }
        let n = out.iter().map(Bytes::len).sum();
        q.wrote(n);
        out
    }

    #[test]
    fn must_send_frames_count_against_the_bound_and_stop_at_the_ceiling() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000);
        for _ in 0..10 {
            q.push(frame(100), t0).unwrap();
        }
        assert!(!q.backed_up() && q.over_since().is_none());
        q.push(frame(100), t0).unwrap();
        assert!(q.backed_up(), "errors and acks fill the same bound");
        assert_eq!(q.over_since(), Some(t0));
        while q.push(frame(100), t0).is_ok() {}
        assert_eq!(q.bytes(), 2000, "nothing past twice the bound");
        // A fan-out frame is dropped long before that.
        let mut q = SendQueue::new(1000);
        q.push(frame(950), t0).unwrap();
        assert!(!q.push_droppable(&frame(100), t0));
        assert_eq!(q.over_since(), Some(t0));
    }

    #[test]
    fn an_empty_queue_takes_one_frame_of_any_size() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000);
        assert!(q.push_droppable(&frame(5000), t0));
        let mut q = SendQueue::new(1000);
        assert_eq!(q.push(frame(5000), t0), Ok(()));
        assert_eq!(write_all(&mut q).len(), 1);
        assert_eq!(q.over_since(), None, "drained: the clock stops");
    }

    #[test]
    fn pongs_coalesce_to_the_latest_and_wait_for_a_frame_boundary() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000);
        q.push_rest(Bytes::from_static(b"tail"), t0);
        q.push(Bytes::from_static(b"next"), t0).unwrap();
        for i in 0..100u8 {
            q.set_pong(Bytes::from(vec![i]), t0);
        }
        assert_eq!(q.bytes(), 4 + 4 + 1, "one pong held, not a hundred");
        let order = write_all(&mut q);
        assert_eq!(
            order,
            vec![
                Bytes::from_static(b"tail"),
                Bytes::from(vec![99u8]),
                Bytes::from_static(b"next")
            ],
            "the partial frame first, then the latest pong"
        );
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn a_trickle_reader_stays_slow_and_a_fast_one_recovers() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000);
        for _ in 0..12 {
            q.push(frame(100), t0).unwrap();
        }
        assert_eq!(q.over_since(), Some(t0));
        // A few bytes at a time: dipping just under the bound does not clear the clock.
        while q.take_next().is_some() {}
        for _ in 0..45 {
            q.wrote(5);
        }
        assert!(q.bytes() < 1000 && !q.backed_up());
        assert_eq!(q.over_since(), Some(t0), "still judged slow");
        // A whole bound's worth taken since the clock started: slow but alive, even
        // though the queue never went under half.
        let mut q2 = SendQueue::new(1000);
        for _ in 0..12 {
            q2.push(frame(100), t0).unwrap();
        }
        for _ in 0..9 {
            while q2.take_next().is_some() {}
            q2.wrote(100);
            q2.push(frame(100), t0).unwrap();
            assert!(q2.over_since().is_some());
        }
        while q2.take_next().is_some() {}
        q2.wrote(100);
        assert!(!q2.below_low_water());
        assert_eq!(q2.over_since(), None, "1000 bytes taken while over");
        // Draining under half the bound stops it too.
        let mut q3 = SendQueue::new(1000);
        for _ in 0..11 {
            q3.push(frame(100), t0).unwrap();
        }
        while q3.take_next().is_some() {}
        q3.wrote(600);
        assert!(q3.below_low_water());
        assert_eq!(q3.over_since(), None);
    }

    #[test]
    fn the_write_clock_is_the_oldest_unwritten_byte_not_the_last_write() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut q = SendQueue::new(1000);
        assert_eq!(q.oldest_unwritten(), None);
        q.push(frame(100), t0).unwrap();
        q.push(frame(100), t1).unwrap();
        while q.take_next().is_some() {}
        q.wrote(10);
        q.wrote(10);
        assert_eq!(
            q.oldest_unwritten(),
            Some(t0),
            "partial writes keep the clock"
        );
        q.wrote(80);
        assert_eq!(q.oldest_unwritten(), Some(t1));
        q.wrote(100);
        assert_eq!(q.oldest_unwritten(), None);
        q.set_pong(frame(2), t1);
        assert_eq!(q.oldest_unwritten(), Some(t1));
        assert_eq!(q.drain(), 1);
        assert_eq!(q.oldest_unwritten(), None);
    }
}
