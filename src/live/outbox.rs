//! A media connection's outbound side: a byte-bounded queue of shared `Bytes` and the task
//! that writes it with vectored writes.
//!
//! Slow viewers (issue policy): while the queue is over its bound, live frames are skipped
//! until the next keyframe — a viewer that falls behind resumes on a picture it can decode
//! instead of on a broken one. When that keyframe comes and the queue is still over the
//! bound, the viewer is closed. Metadata and sequence headers are never skipped (they are
//! rare and a decoder needs them).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use shards::local::Notify;

use std::os::fd::RawFd;

use super::Frame;
use crate::sockio::{send_now, send_now_iter, IoVecs, SendNow, SEND_NOW_MAX_PARTS};

/// What became of an offered frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Skipped: the viewer is behind and waits for a keyframe.
    Skipped,
    /// Still behind at a keyframe: the viewer was told to close.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// Write what is queued, then stop.
    Finishing,
    /// Stop now; what is queued is abandoned.
    Aborted,
}

pub struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    limit: usize,
    skipping: Cell<bool>,
    state: Cell<State>,
    /// Wakes the writer (data or a state change).
    wake: Notify,
    /// Wakes the connection's reader (the outbox closed).
    pub closed: Notify,
    /// The socket, for [`send_now`] while nothing is queued (see `crate::sockio`).
    fd: Cell<Option<RawFd>>,
    /// The writer holds bytes it has not finished writing.
    in_flight: Cell<bool>,
    direct_bytes: Cell<u64>,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Self {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            limit,
            skipping: Cell::new(false),
            state: Cell::new(State::Open),
            wake: Notify::new(),
            closed: Notify::new(),
            fd: Cell::new(None),
            in_flight: Cell::new(false),
            direct_bytes: Cell::new(0),
        }
    }

    /// Lets the outbox write to `fd` directly while nothing is queued. The writer task
    /// clears it before the socket closes.
    pub fn set_fd(&self, fd: RawFd) {
        self.fd.set(Some(fd));
    }

    /// The socket, while the writer has not stopped.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.get()
    }

    /// Bytes written directly since the last call.
    pub fn take_direct_bytes(&self) -> u64 {
        self.direct_bytes.replace(0)
    }

    /// Writes `parts` now if nothing is ahead of them; queues what is left.
    fn enqueue(&self, parts: &[&Bytes]) {
        let mut skip = 0;
        if let Some(fd) = self.fd.get() {
            if !self.in_flight.get() && self.queue.borrow().is_empty() {
                let mut slices: [&[u8]; 4] = [&[]; 4];
                for (slot, p) in slices.iter_mut().zip(parts) {
                    *slot = p;
                }
                match send_now(fd, &slices[..parts.len().min(4)]) {
                    SendNow::All => {
                        let n: usize = parts.iter().map(|p| p.len()).sum();
                        self.direct_bytes.set(self.direct_bytes.get() + n as u64);
                        return;
                    }
                    SendNow::Partial(n) => {
                        self.direct_bytes.set(self.direct_bytes.get() + n as u64);
                        skip = n;
                    }
                    SendNow::Nothing => {}
                }
            }
        }
        let mut q = self.queue.borrow_mut();
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            let rest = p.slice(skip..);
            skip = 0;
            self.bytes.set(self.bytes.get() + rest.len());
            q.push_back(rest);
        }
        self.wake.notify();
    }

    pub fn is_open(&self) -> bool {
        self.state.get() == State::Open
    }

    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Queues bytes the peer must get (protocol replies, the start of a stream).
    pub fn push(&self, b: Bytes) {
        if !self.is_open() || b.is_empty() {
            return;
        }
        self.enqueue(&[&b]);
    }

    /// Offers a live frame whose wire form is `parts`, applying the slow-viewer policy.
    /// Sent at once when nothing is ahead of it.
    pub fn offer(&self, frame: &Frame, parts: &[&Bytes]) -> Offer {
        self.offer_as(frame, parts, false)
    }

    /// Like [`Self::offer`], but the frame waits in the queue for the next [`Self::flush`]
    /// (corking: the frames of one flush interval leave in one system call).
    pub fn offer_corked(&self, frame: &Frame, parts: &[&Bytes]) -> Offer {
        self.offer_as(frame, parts, true)
    }

    fn offer_as(&self, frame: &Frame, parts: &[&Bytes], corked: bool) -> Offer {
        if !self.is_open() {
            return Offer::Skipped;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let over = self.bytes.get() + len > self.limit;
        if !frame.essential {
            if self.skipping.get() {
                if !frame.keyframe {
                    return Offer::Skipped;
                }
                if over {
                    self.finish();
                    return Offer::Closed;
                }
                self.skipping.set(false);
            } else if over {
                self.skipping.set(true);
                return Offer::Skipped;
            }
        }
        if corked {
            let mut q = self.queue.borrow_mut();
            for p in parts {
                self.bytes.set(self.bytes.get() + p.len());
                q.push_back((*p).clone());
            }
            if self.in_flight.get() {
                // The writer is busy with this connection anyway: it takes these too.
                self.wake.notify();
            }
        } else {
            self.enqueue(parts);
        }
        Offer::Queued
    }

    /// Sends what is queued in one system call if no write is in flight; whatever does
    /// not fit goes to the writer task. Returns the bytes sent here.
    pub fn flush(&self) -> u64 {
        let Some(fd) = self.fd.get() else {
            if !self.queue.borrow().is_empty() {
                self.wake.notify();
            }
            return 0;
        };
        if self.in_flight.get() || !self.is_open() {
            return 0;
        }
        let mut q = self.queue.borrow_mut();
        if q.is_empty() {
            return 0;
        }
        let sent = match send_now_iter(fd, q.iter().map(|b| b.as_ref())) {
            SendNow::All => q.iter().take(SEND_NOW_MAX_PARTS).map(Bytes::len).sum(),
            SendNow::Partial(n) => n,
            SendNow::Nothing => 0,
        };
        let mut left = sent;
        while left > 0 {
            let Some(front) = q.front_mut() else { break };
            if front.len() <= left {
                left -= front.len();
                q.pop_front();
            } else {
                bytes::Buf::advance(front, left);
                left = 0;
            }
        }
        self.bytes.set(self.bytes.get().saturating_sub(sent));
        if !q.is_empty() {
            self.wake.notify();
        }
        sent as u64
    }

    /// Writes what is queued, then closes.
    pub fn finish(&self) {
        if self.state.get() == State::Open {
            self.state.set(State::Finishing);
        }
        self.wake.notify();
        self.closed.notify();
    }

    /// Closes now, abandoning what is queued (and a write in flight).
    pub fn abort(&self) {
        self.state.set(State::Aborted);
        self.wake.notify();
        self.closed.notify();
    }
}

/// Writes the outbox until it is finished, aborted or the peer fails. `written(n)` is told
/// each write's size (metrics). Shuts the write side down at the end.
pub async fn write_loop<W: AsyncWriteRent>(
    outbox: &Outbox,
    writer: &mut W,
    timeout: Duration,
    mut written: impl FnMut(usize),
) {
    let mut iov = IoVecs::new();
    loop {
        if outbox.state.get() == State::Aborted {
            break;
        }
        {
            let mut q = outbox.queue.borrow_mut();
            while iov.len() < 64 {
                match q.pop_front() {
                    Some(b) => iov.push(b),
                    None => break,
                }
            }
        }
        if iov.is_empty() {
            outbox.in_flight.set(false);
            if outbox.state.get() != State::Open {
                break;
            }
            outbox.wake.notified().await;
            continue;
        }
        outbox.in_flight.set(true);
        iov.prepare();
        let result = monoio::select! {
            r = monoio::time::timeout(timeout, writer.writev(iov)) => Some(r),
            _ = wait_abort(outbox) => None,
        };
        let Some(Ok((Ok(n), back))) = result else {
            break;
        };
        iov = back;
        iov.advance(n);
        outbox.bytes.set(outbox.bytes.get().saturating_sub(n));
        written(n);
    }
    // Nothing may write to the socket directly any more: it is about to close.
    outbox.fd.set(None);
    outbox.in_flight.set(false);
    outbox.state.set(State::Aborted);
    outbox.closed.notify();
    written(outbox.take_direct_bytes() as usize);
    let _ = writer.shutdown().await;
}

/// Completes when the outbox is aborted (checked whenever the writer is woken).
async fn wait_abort(outbox: &Outbox) {
    loop {
        if outbox.state.get() == State::Aborted {
            return;
        }
        outbox.wake.notified().await;
    }
}

/// Writes `bytes` completely or gives up after `timeout` (for a response head).
pub async fn write_all_timeout<W: AsyncWriteRent>(
    w: &mut W,
    bytes: Vec<u8>,
    timeout: Duration,
) -> bool {
    matches!(
        monoio::time::timeout(timeout, w.write_all(bytes)).await,
        Ok((Ok(_), _))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{MediaKind, MediaMessage, Packaged};

    fn frame(keyframe: bool, essential: bool, len: usize) -> Frame {
        let packaged = Packaged::new(&MediaMessage {
            kind: MediaKind::Video,
            timestamp: 0,
            payload: Bytes::from(vec![if keyframe { 0x17 } else { 0x27 }; len]),
        })
        .unwrap();
        Frame {
            stream: "s".into(),
            flv_chunk_head: Bytes::new(),
            packaged,
            keyframe,
            essential,
        }
    }

    fn offer(o: &Outbox, f: &Frame) -> Offer {
        o.offer(f, &[&f.packaged.flv])
    }

    #[test]
    fn corked_frames_leave_together_on_flush() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let o = Outbox::new(1 << 20);
        o.set_fd(client.as_raw_fd());
        let (a, b) = (frame(true, false, 100), frame(false, false, 50));
        assert_eq!(o.offer_corked(&a, &[&a.packaged.flv]), Offer::Queued);
        assert_eq!(o.offer_corked(&b, &[&b.packaged.flv]), Offer::Queued);
        let want = a.packaged.flv.len() + b.packaged.flv.len();
        assert_eq!(o.queued_bytes(), want, "nothing sent before the flush");
        assert_eq!(o.flush(), want as u64);
        assert_eq!(o.queued_bytes(), 0);
        let mut got = vec![0u8; want];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..a.packaged.flv.len()], &a.packaged.flv[..]);
        assert_eq!(&got[a.packaged.flv.len()..], &b.packaged.flv[..]);
    }

    #[test]
    fn a_slow_viewer_skips_to_the_next_keyframe_then_resumes() {
        let o = Outbox::new(1000);
        let (key, delta) = (frame(true, false, 300), frame(false, false, 300));
        assert_eq!(offer(&o, &key), Offer::Queued);
        assert_eq!(offer(&o, &delta), Offer::Queued);
        assert_eq!(offer(&o, &delta), Offer::Queued);
        // Over the bound: skipping starts, and delta frames keep being skipped.
        assert_eq!(offer(&o, &delta), Offer::Skipped);
        // The writer catches up.
        o.queue.borrow_mut().clear();
        o.bytes.set(0);
        assert_eq!(
            offer(&o, &delta),
            Offer::Skipped,
            "no resuming on a delta frame"
        );
        assert_eq!(offer(&o, &key), Offer::Queued, "resumes on the keyframe");
        assert_eq!(offer(&o, &delta), Offer::Queued);
    }

    #[test]
    fn a_viewer_still_behind_at_the_keyframe_is_closed_and_headers_always_pass() {
        let o = Outbox::new(1000);
        let (key, delta, header) = (
            frame(true, false, 400),
            frame(false, false, 400),
            frame(false, true, 400),
        );
        assert_eq!(offer(&o, &key), Offer::Queued);
        assert_eq!(offer(&o, &delta), Offer::Queued);
        assert_eq!(offer(&o, &delta), Offer::Skipped);
        assert_eq!(
            offer(&o, &header),
            Offer::Queued,
            "sequence headers are never skipped"
        );
        assert_eq!(offer(&o, &key), Offer::Closed);
        assert!(!o.is_open());
        assert_eq!(
            offer(&o, &key),
            Offer::Skipped,
            "nothing is queued after closing"
        );
    }
}
