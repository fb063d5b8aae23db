//! One turn's frames written to many sockets in one system call: a batch of io_uring
//! send entries submitted together, instead of one `sendmsg` call per consumer.
//!
//! Every entry carries `MSG_DONTWAIT`, so the kernel tries it inline during the submit and
//! completes it with what the socket took, or `-EAGAIN`; it never waits for room. A batch
//! therefore means exactly what the same non-blocking `sendmsg` calls would
//! ([`crate::sockio::send_now_iter`]), and every completion is in the ring when the submit
//! returns. All entries of a batch point at the same frames (one `msghdr`, or one buffer
//! when the turn has a single frame): nothing is copied or built per consumer.
//!
//! Each shard thread makes its ring on first use; where io_uring cannot be set up the caller
//! falls back to one `sendmsg` per consumer.

use std::cell::RefCell;
use std::os::fd::RawFd;

use bytes::Bytes;
use io_uring::{opcode, types, IoUring};

use crate::sockio::{Gather, SendNow, SEND_NOW_MAX_PARTS};

/// Entries submitted per system call; a larger batch goes in several.
const ENTRIES: u32 = 256;

/// A shard's send ring and the batch being built.
pub struct SendRing {
    ring: IoUring,
    /// (the caller's index, socket) of each consumer in the batch.
    batch: Vec<(u32, RawFd)>,
    /// What each consumer's send did, in batch order.
    results: Vec<SendNow>,
    /// A submit failed: entries may be left unsubmitted, so the ring is let go.
    broken: bool,
}

enum Slot {
    /// Not allowed on this thread ([`allow`]): the shard's runtime does not use io_uring.
    Off,
    Untried,
    Ready(Box<SendRing>),
    Unavailable,
}

thread_local! {
    static RING: RefCell<Slot> = const { RefCell::new(Slot::Off) };
}

/// Lets this thread batch its sends (a shard whose runtime uses io_uring) or not.
pub fn allow(yes: bool) {
    RING.with(|slot| *slot.borrow_mut() = if yes { Slot::Untried } else { Slot::Off });
}

/// Runs `f` with this thread's send ring, made on first use; `None` where batching is not
/// allowed or io_uring cannot be set up, and the caller sends one call at a time.
pub fn with<R>(f: impl FnOnce(Option<&mut SendRing>) -> R) -> R {
    RING.with(|slot| {
        let mut slot = slot.borrow_mut();
        if matches!(*slot, Slot::Untried) {
            *slot = match SendRing::new() {
                Ok(r) => Slot::Ready(Box::new(r)),
                Err(e) => {
                    tracing::info!(error = %e, "batched sends unavailable; one sendmsg per viewer");
                    Slot::Unavailable
                }
            };
        }
        let Slot::Ready(ring) = &mut *slot else {
            return f(None);
        };
        let out = f(Some(ring));
        if ring.broken {
            *slot = Slot::Unavailable;
        }
        out
    })
}

impl SendRing {
    fn new() -> std::io::Result<Self> {
        let ring = IoUring::builder()
            // Only the shard's thread submits; keep submitting past an entry that fails.
            // Kernels before 6.0 lack these: the plain ring does the same (an entry left
            // unsubmitted after a failed one goes with the next submit of the loop below).
            .setup_single_issuer()
            .setup_submit_all()
            .setup_cqsize(2 * ENTRIES)
            .build(ENTRIES)
            .or_else(|_| IoUring::builder().setup_cqsize(2 * ENTRIES).build(ENTRIES))?;
        Ok(Self {
            ring,
            batch: Vec::new(),
            results: Vec::new(),
            broken: false,
        })
    }

    /// Starts a batch.
    pub fn clear(&mut self) {
        self.batch.clear();
        self.results.clear();
    }

    /// Adds a consumer (`index` is the caller's, handed back with its result).
    pub fn push(&mut self, index: usize, fd: RawFd) {
        self.batch.push((index as u32, fd));
    }

    /// Sends the first [`SEND_NOW_MAX_PARTS`] of `frames` to every consumer of the batch.
    pub fn send(&mut self, frames: &[Bytes]) {
        let frames = &frames[..frames.len().min(SEND_NOW_MAX_PARTS)];
        let mut gather = Gather::new(frames.iter().map(|f| f.as_ref()));
        let total = gather.total;
        self.results.clear();
        self.results.resize(self.batch.len(), SendNow::Nothing);
        if total == 0 {
            self.results.fill(SendNow::All);
            return;
        }
        let msg: *const libc::msghdr = gather.msghdr();
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        for (start, chunk) in (0..)
            .step_by(ENTRIES as usize)
            .zip(self.batch.chunks(ENTRIES as usize))
        {
            let mut pushed = 0;
            {
                let mut sq = self.ring.submission();
                for (k, &(_, fd)) in chunk.iter().enumerate() {
                    let entry = if frames.len() == 1 {
                        opcode::Send::new(types::Fd(fd), frames[0].as_ptr(), total as u32)
                            .flags(flags)
                            .build()
                    } else {
                        opcode::SendMsg::new(types::Fd(fd), msg)
                            .flags(flags as u32)
                            .build()
                    };
                    // SAFETY: the entry points at `gather` and `frames`, which outlive
                    // this call, and every entry pushed completes before it returns (below).
                    // The queue holds ENTRIES and is empty between chunks; were it full, the
                    // rest of the chunk would count as not sent.
                    if unsafe { sq.push(&entry.user_data(k as u64)) }.is_err() {
                        break;
                    }
                    pushed += 1;
                }
            }
            let mut seen = 0;
            while seen < pushed {
                match self.ring.submit_and_wait(pushed - seen) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) => {
                        // Not seen on a ring that sets up: what has no result counts as
                        // not sent and waits in its queue.
                        tracing::warn!(error = %e, "batched send failed; one sendmsg per viewer from now");
                        self.broken = true;
                        return;
                    }
                }
                for cqe in self.ring.completion() {
                    let k = cqe.user_data() as usize;
                    self.results[start + k] = SendNow::of(cqe.result() as isize, total);
                    seen += 1;
                }
            }
        }
    }

    /// Each consumer's index and what its send did.
    pub fn results(&self) -> impl Iterator<Item = (usize, SendNow)> + '_ {
        self.batch
            .iter()
            .zip(&self.results)
            .map(|(&(i, _), &r)| (i as usize, r))
    }
}
