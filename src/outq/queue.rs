//! The sans-IO half of an outbound queue: what is queued, what the writer holds, the byte
//! bound and the judgment of the consumer. Time is passed in, so every rule below is
//! unit-tested here without a socket.
//!
//! - Every frame counts against ONE byte bound (`limit`), whatever produced it.
//! - A frame is [`Kind::MustSend`] (acks, errors, history, protocol replies, stream
//!   headers) or [`Kind::Droppable`] (fan-out batches, online counts, live media frames).
//!   What happens to a droppable frame past the bound is the queue's [`Policy`]:
//!   [`Policy::Drop`] drops it for this consumer; [`Policy::SkipToKeyframe`] skips it and
//!   every frame after it until the next keyframe (a viewer that fell behind resumes on a
//!   picture it can decode), and closes the consumer if it is still over the bound at that
//!   keyframe.
//! - Under [`Policy::Drop`] must-send frames are queued up to a hard ceiling of twice the
//!   bound ([`HARD_CEILING`]); past it the consumer has to be closed. Under
//!   [`Policy::SkipToKeyframe`] must-send frames are never refused (a media viewer's GOP
//!   start is bounded by the GOP cache, its protocol replies by its driver).
//! - Pongs are coalesced: one pending pong at most, answering the latest ping (RFC 6455
//!   §5.5.3 allows it), handed to the writer at the next frame boundary.
//! - The slow-consumer clock ([`Queue::over_since`]) starts when the queue passes the
//!   bound, by any kind of frame. It stops only when the queue drains under half the bound,
//!   or when the peer took a whole bound's worth of bytes since the clock started: a viewer
//!   that reads at least `limit` bytes per grace period is slow but alive (it loses
//!   droppable frames, not its connection); one that reads a trickle is not, however often
//!   it reads.
//! - [`Queue::oldest_unwritten`] is when the oldest byte not yet written was queued: the
//!   write timeout is measured from it, so partial writes do not restart the clock.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

/// The must-send ceiling under [`Policy::Drop`], as a multiple of the bound.
pub const HARD_CEILING: usize = 2;

/// What a queue does with a droppable frame while it is over its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Drop it (the slow-consumer clock runs); must-send frames stop at twice the bound.
    /// WebSocket and event streams.
    Drop,
    /// Skip it and every droppable frame until the next keyframe; still over the bound at
    /// that keyframe, close. Must-send frames always pass. Media viewers.
    SkipToKeyframe,
}

/// What kind of frame is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MustSend,
    /// `keyframe`: a point a decoder can start from (only [`Policy::SkipToKeyframe`] reads it).
    Droppable {
        keyframe: bool,
    },
}

/// What became of an offered frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Dropped or skipped for this consumer; it lags.
    Dropped,
    /// The consumer must be closed: a must-send frame past the hard ceiling, or still
    /// behind at a keyframe. Nothing was queued.
    Closed,
}

/// One queued buffer.
#[derive(Debug)]
struct Part {
    bytes: Bytes,
    /// When it was queued.
    at: Instant,
    /// It continues a frame whose start went before it (the rest of a multi-part frame, or
    /// the tail of a partly written one): nothing, not even a pong, may precede it.
    cont: bool,
}

#[derive(Debug)]
pub struct Queue {
    limit: usize,
    policy: Policy,
    /// Buffers waiting for the writer, oldest first.
    frames: VecDeque<Part>,
    /// The pending pong, if any, and when its ping came.
    pong: Option<(Bytes, Instant)>,
    /// Buffers the writer took and has not finished: (queued at, bytes left), oldest first.
    taken: VecDeque<(Instant, usize)>,
    /// Bytes queued or taken and not yet written.
    bytes: usize,
    over_since: Option<Instant>,
    /// Bytes written since `over_since` was set.
    written_while_over: usize,
    /// [`Policy::SkipToKeyframe`]: droppable frames are skipped until a keyframe.
    skipping: bool,
}

impl Queue {
    pub fn new(limit: usize, policy: Policy) -> Self {
        Self {
            limit,
            policy,
            frames: VecDeque::new(),
            pong: None,
            taken: VecDeque::new(),
            bytes: 0,
            over_since: None,
            written_while_over: 0,
            skipping: false,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds nothing and remembers nothing: a new queue would do the same.
    pub fn is_pristine(&self) -> bool {
        self.is_empty()
            && self.taken.is_empty()
            && self.bytes == 0
            && self.over_since.is_none()
            && !self.skipping
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
            self.frames.front().map(|f| f.at),
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

    /// Judges a frame of `len` bytes by the policy; queues nothing. A [`Offer::Queued`]
    /// answer must be followed by [`Queue::append`] (or a direct send of the frame).
    pub fn admit(&mut self, len: usize, kind: Kind, now: Instant) -> Offer {
        match (self.policy, kind) {
            // A frame always enters an empty queue (so one large history frame is never
            // refused).
            (Policy::Drop, Kind::MustSend) => {
                if self.bytes > 0 && self.bytes + len > self.limit * HARD_CEILING {
                    self.mark_over(now);
                    return Offer::Closed;
                }
            }
            (Policy::Drop, Kind::Droppable { .. }) => {
                if self.bytes > 0 && self.bytes + len > self.limit {
                    self.mark_over(now);
                    return Offer::Dropped;
                }
            }
            (Policy::SkipToKeyframe, Kind::MustSend) => {}
            (Policy::SkipToKeyframe, Kind::Droppable { keyframe }) => {
                let over = self.bytes + len > self.limit;
                if self.skipping {
                    if !keyframe {
                        return Offer::Dropped;
                    }
                    if over {
                        return Offer::Closed;
                    }
                    self.skipping = false;
                } else if over {
                    self.skipping = true;
                    return Offer::Dropped;
                }
            }
        }
        Offer::Queued
    }

    fn push_part(&mut self, bytes: Bytes, at: Instant, cont: bool) {
        self.bytes += bytes.len();
        self.frames.push_back(Part { bytes, at, cont });
    }

    /// Queues a frame whose wire form is `parts`, less its first `sent` bytes (which went
    /// out directly: the rest is then the next thing on the wire, so only call that on an
    /// empty queue with no write in flight).
    pub fn append(&mut self, parts: &[&Bytes], sent: usize, now: Instant) {
        debug_assert!(sent == 0 || (self.is_empty() && self.taken.is_empty()));
        let mut offset = 0;
        for p in parts {
            let (start, end) = (offset, offset + p.len());
            offset = end;
            if end <= sent {
                continue;
            }
            let from = sent.saturating_sub(start);
            let bytes = if from == 0 {
                (*p).clone()
            } else {
                p.slice(from..)
            };
            self.push_part(bytes, now, start + from > 0);
        }
        if self.bytes > self.limit {
            self.mark_over(now);
        }
    }

    /// Queues one whole frame (the common case of [`Queue::append`], without a slice).
    pub fn append_one(&mut self, frame: Bytes, now: Instant) {
        if frame.is_empty() {
            return;
        }
        self.push_part(frame, now, false);
        if self.bytes > self.limit {
            self.mark_over(now);
        }
    }

    /// Sets the pending pong, replacing an older one that was not taken yet.
    pub fn set_pong(&mut self, frame: Bytes, now: Instant) {
        if let Some((old, _)) = self.pong.take() {
            self.bytes -= old.len();
        }
        self.bytes += frame.len();
        self.pong = Some((frame, now));
    }

    /// Whether the front of the queue starts a frame (a pong may go first).
    fn at_boundary(&self) -> bool {
        self.frames.front().is_none_or(|f| !f.cont)
    }

    /// The next buffer for the writer: the pending pong at the first frame boundary, else
    /// the next queued buffer. The writer owns it until [`Queue::wrote`] accounts for it.
    pub fn take_next(&mut self) -> Option<Bytes> {
        let (b, at) = match self.pong.take() {
            Some(p) if self.at_boundary() => p,
            other => {
                self.pong = other;
                let f = self.frames.pop_front()?;
                (f.bytes, f.at)
            }
        };
        self.taken.push_back((at, b.len()));
        Some(b)
    }

    /// The buffers in the order the writer takes them (for a direct send of the queue),
    /// starting with what the writer would take next. Only meaningful while nothing is
    /// taken.
    pub fn pending(&self) -> impl Iterator<Item = &[u8]> {
        let lead = self.frames.iter().take_while(|f| f.cont).count();
        let pong = self.pong.as_ref().map(|p| p.0.as_ref());
        let frames = |r: std::ops::Range<usize>| self.frames.range(r).map(|f| f.bytes.as_ref());
        frames(0..lead)
            .chain(pong)
            .chain(frames(lead..self.frames.len()))
    }

    /// `n` bytes of [`Queue::pending`] went to the kernel directly: accounted for as if the
    /// writer had taken and written them.
    pub fn sent_directly(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let Some(b) = self.take_next() else { break };
            if b.len() <= left {
                left -= b.len();
            } else {
                // Its tail goes back in front, as the continuation of what went.
                let (at, _) = self.taken.pop_back().expect("just taken");
                self.taken.push_back((at, left));
                self.frames.push_front(Part {
                    bytes: b.slice(left..),
                    at,
                    cont: true,
                });
                left = 0;
            }
        }
        self.wrote(n - left);
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
    /// number of buffers.
    pub fn drain(&mut self) -> usize {
        let n = self.frames.len() + usize::from(self.pong.is_some());
        self.frames.clear();
        self.pong = None;
        self.taken.clear();
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

    fn ws(limit: usize) -> Queue {
        Queue::new(limit, Policy::Drop)
    }

    /// Queues a must-send frame the way a WebSocket connection does.
    fn push(q: &mut Queue, f: Bytes, now: Instant) -> Offer {
        let o = q.admit(f.len(), Kind::MustSend, now);
        if o == Offer::Queued {
            q.append_one(f, now);
        }
        o
    }

    fn push_droppable(q: &mut Queue, f: &Bytes, now: Instant) -> bool {
        let o = q.admit(f.len(), Kind::Droppable { keyframe: false }, now);
        if o == Offer::Queued {
            q.append_one(f.clone(), now);
        }
        o == Offer::Queued
    }

    /// Takes everything the writer would and reports it all written.
    fn write_all(q: &mut Queue) -> Vec<Bytes> {
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
        let mut q = ws(1000);
        for _ in 0..10 {
            assert_eq!(push(&mut q, frame(100), t0), Offer::Queued);
        }
        assert!(!q.backed_up() && q.over_since().is_none());
        assert_eq!(push(&mut q, frame(100), t0), Offer::Queued);
        assert!(q.backed_up(), "errors and acks fill the same bound");
        assert_eq!(q.over_since(), Some(t0));
        while push(&mut q, frame(100), t0) == Offer::Queued {}
        assert_eq!(q.bytes(), 2000, "nothing past twice the bound");
        // A fan-out frame is dropped long before that.
        let mut q = ws(1000);
        push(&mut q, frame(950), t0);
        assert!(!push_droppable(&mut q, &frame(100), t0));
        assert_eq!(q.over_since(), Some(t0));
    }

    #[test]
    fn an_empty_queue_takes_one_frame_of_any_size() {
        let t0 = Instant::now();
        let mut q = ws(1000);
        assert!(push_droppable(&mut q, &frame(5000), t0));
        let mut q = ws(1000);
        assert_eq!(push(&mut q, frame(5000), t0), Offer::Queued);
        assert_eq!(write_all(&mut q).len(), 1);
        assert_eq!(q.over_since(), None, "drained: the clock stops");
    }

    #[test]
    fn pongs_coalesce_to_the_latest_and_wait_for_a_frame_boundary() {
        let t0 = Instant::now();
        let mut q = ws(1000);
        // "ta" went out directly; "il" is the rest of that frame.
        q.append(&[&Bytes::from_static(b"tail")], 2, t0);
        push(&mut q, Bytes::from_static(b"next"), t0);
        for i in 0..100u8 {
            q.set_pong(Bytes::from(vec![i]), t0);
        }
        assert_eq!(q.bytes(), 2 + 4 + 1, "one pong held, not a hundred");
        let order = write_all(&mut q);
        assert_eq!(
            order,
            vec![
                Bytes::from_static(b"il"),
                Bytes::from(vec![99u8]),
                Bytes::from_static(b"next")
            ],
            "the partial frame first, then the latest pong"
        );
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn a_pong_never_splits_a_frame_of_several_parts() {
        let t0 = Instant::now();
        let mut q = ws(1000);
        let (a, b, c) = (frame(3), frame(4), frame(5));
        q.append(&[&a, &b, &c], 0, t0);
        assert_eq!(q.take_next(), Some(a));
        q.set_pong(Bytes::from_static(b"p"), t0);
        assert_eq!(q.pending().count(), 3, "b, c, then the pong");
        assert_eq!(q.take_next(), Some(b));
        assert_eq!(q.take_next(), Some(c));
        assert_eq!(q.take_next(), Some(Bytes::from_static(b"p")));
    }

    #[test]
    fn a_trickle_reader_stays_slow_and_a_fast_one_recovers() {
        let t0 = Instant::now();
        let mut q = ws(1000);
        for _ in 0..12 {
            push(&mut q, frame(100), t0);
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
        let mut q2 = ws(1000);
        for _ in 0..12 {
            push(&mut q2, frame(100), t0);
        }
        for _ in 0..9 {
            while q2.take_next().is_some() {}
            q2.wrote(100);
            push(&mut q2, frame(100), t0);
            assert!(q2.over_since().is_some());
        }
        while q2.take_next().is_some() {}
        q2.wrote(100);
        assert!(!q2.below_low_water());
        assert_eq!(q2.over_since(), None, "1000 bytes taken while over");
        // Draining under half the bound stops it too.
        let mut q3 = ws(1000);
        for _ in 0..11 {
            push(&mut q3, frame(100), t0);
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
        let mut q = ws(1000);
        assert_eq!(q.oldest_unwritten(), None);
        push(&mut q, frame(100), t0);
        push(&mut q, frame(100), t1);
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

    fn offer(q: &mut Queue, keyframe: bool, len: usize) -> Offer {
        let now = Instant::now();
        let o = q.admit(len, Kind::Droppable { keyframe }, now);
        if o == Offer::Queued {
            q.append_one(frame(len), now);
        }
        o
    }

    #[test]
    fn a_slow_viewer_skips_to_the_next_keyframe_then_resumes() {
        let mut q = Queue::new(1000, Policy::SkipToKeyframe);
        assert_eq!(offer(&mut q, true, 300), Offer::Queued);
        assert_eq!(offer(&mut q, false, 300), Offer::Queued);
        assert_eq!(offer(&mut q, false, 300), Offer::Queued);
        // Over the bound: skipping starts, and delta frames keep being skipped.
        assert_eq!(offer(&mut q, false, 300), Offer::Dropped);
        // The writer catches up.
        write_all(&mut q);
        assert_eq!(
            offer(&mut q, false, 300),
            Offer::Dropped,
            "no resuming on a delta frame"
        );
        assert_eq!(
            offer(&mut q, true, 300),
            Offer::Queued,
            "resumes on the keyframe"
        );
        assert_eq!(offer(&mut q, false, 300), Offer::Queued);
    }

    #[test]
    fn a_viewer_still_behind_at_the_keyframe_is_closed_and_headers_always_pass() {
        let mut q = Queue::new(1000, Policy::SkipToKeyframe);
        assert_eq!(offer(&mut q, true, 400), Offer::Queued);
        assert_eq!(offer(&mut q, false, 400), Offer::Queued);
        assert_eq!(offer(&mut q, false, 400), Offer::Dropped);
        let t = Instant::now();
        assert_eq!(
            q.admit(400, Kind::MustSend, t),
            Offer::Queued,
            "sequence headers are never skipped"
        );
        q.append_one(frame(400), t);
        assert_eq!(offer(&mut q, true, 400), Offer::Closed);
        // Must-send frames have no ceiling under this policy (a GOP start is large).
        assert_eq!(q.admit(100_000, Kind::MustSend, t), Offer::Queued);
    }

    #[test]
    fn a_direct_send_of_the_queue_accounts_like_the_writer() {
        let t0 = Instant::now();
        let mut q = ws(1000);
        push(&mut q, Bytes::from_static(b"abc"), t0);
        push(&mut q, Bytes::from_static(b"defg"), t0);
        q.set_pong(Bytes::from_static(b"P"), t0);
        let all: Vec<u8> = q.pending().flatten().copied().collect();
        assert_eq!(all, b"Pabcdefg");
        q.sent_directly(3);
        assert_eq!(q.bytes(), 5);
        let rest: Vec<u8> = q.pending().flatten().copied().collect();
        assert_eq!(
            rest, b"cdefg",
            "the rest of the frame that was cut goes first"
        );
        q.set_pong(Bytes::from_static(b"Q"), t0);
        let rest: Vec<u8> = q.pending().flatten().copied().collect();
        assert_eq!(rest, b"cQdefg", "a pong waits for the frame boundary");
        q.sent_directly(6);
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty() && q.oldest_unwritten().is_none());
    }
}
