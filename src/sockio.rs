//! Small socket helpers shared by the connection drivers (HTTP, WebSocket, RTMP).
//!
//! monoio reads into an owned buffer starting at its *beginning* (`write_ptr` is the start
//! of the allocation), so appending to what is already buffered needs a slice view from
//! `len..capacity`. Every driver reads through [`read_append`] so that trap exists once.

use std::io;

use bytes::BytesMut;
use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::AsyncReadRent;

/// Reads once, appending to `buf` (reserving `min_spare` bytes of room first if needed).
/// Returns the byte count (0 = EOF) and the buffer.
pub async fn read_append<R: AsyncReadRent>(
    r: &mut R,
    mut buf: BytesMut,
    min_spare: usize,
) -> (io::Result<usize>, BytesMut) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let view: SliceMut<BytesMut> = buf.slice_mut(len..);
    let (res, view) = r.read(view).await;
    (res, view.into_inner())
}

/// Waits until the read half of a split socket is readable, without holding a buffer: an
/// idle connection owns no read memory while it waits.
pub async fn readable(half: &monoio::io::OwnedReadHalf<crate::sock::Sock>) -> io::Result<()> {
    // SAFETY: `readable` takes `&self` and only submits a poll on the shared fd; monoio's
    // `Split` contract for its streams allows read-side and write-side operations to run
    // concurrently, which is what the write half does meanwhile.
    let stream = unsafe { &*half.0.get() };
    stream.readable().await
}

/// Waits until the write half of a split socket can take bytes again (after a direct send
/// found its buffer full), without holding a buffer or a write in flight: the connection
/// goes on reading meanwhile.
pub async fn writable(half: &monoio::io::OwnedWriteHalf<crate::sock::Sock>) -> io::Result<()> {
    // SAFETY: as in `readable`: `writable` takes `&self` and only submits a poll on the
    // shared fd, which the split halves may do concurrently.
    let stream = unsafe { &*half.0.get() };
    stream.writable().await
}

/// What a [`send_now`] managed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendNow {
    /// Everything went to the kernel.
    All,
    /// The first `n` bytes went; the socket buffer is full.
    Partial(usize),
    /// Nothing went: the socket buffer is full (or the peer is gone — the connection's
    /// writer finds out on its next write).
    Nothing,
}

/// Caps a socket's kernel send buffer (`SO_SNDBUF`; the kernel doubles the value for its
/// bookkeeping). This turns send autotuning off for the socket, so a stalled peer holds at
/// most this much kernel memory and the server's own byte-bounded queue sees back-pressure
/// at once. Failures are ignored: the kernel default stays.
pub fn set_send_buffer(fd: std::os::fd::RawFd, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a descriptor the caller owns (an invalid one only fails), with a pointer to a live c_int of the
    // given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Writes `parts` to a connected socket *now*, without waiting and without the event loop:
/// one `sendmsg(MSG_DONTWAIT)`. The fan-out paths use it when a connection has nothing
/// queued and no write in flight, so the common case — a viewer keeping up — costs one
/// system call and no task wake-up; whatever does not fit is queued for the writer task.
/// The socket itself stays blocking (io_uring operations on it are unchanged).
///
/// The caller guarantees `fd` is open and owned by the connection it writes for, and that
/// no other write to it is in flight (bytes would interleave).
pub fn send_now(fd: std::os::fd::RawFd, parts: &[&[u8]]) -> SendNow {
    send_now_iter(fd, parts.iter().copied())
}

/// Most buffers one [`send_now_iter`] gathers (the rest waits for the next call).
pub const SEND_NOW_MAX_PARTS: usize = 64;

/// [`send_now`] over any run of buffers (the first [`SEND_NOW_MAX_PARTS`] of them).
pub fn send_now_iter<'a>(
    fd: std::os::fd::RawFd,
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> SendNow {
    let mut g = Gather::new(parts);
    if g.total == 0 {
        return SendNow::All;
    }
    // SAFETY: the msghdr points at `g`'s iovecs, which point at live slices; both outlive
    // the call.
    let sent = unsafe { libc::sendmsg(fd, g.msghdr(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    SendNow::of(sent, g.total)
}

/// Up to [`SEND_NOW_MAX_PARTS`] buffers as one `sendmsg`'s iovecs, on the stack.
pub struct Gather {
    iov: [libc::iovec; SEND_NOW_MAX_PARTS],
    n: usize,
    msg: libc::msghdr,
    /// The bytes the iovecs hold.
    pub total: usize,
}

impl Gather {
    /// The first [`SEND_NOW_MAX_PARTS`] of `parts`; the slices must outlive every use of
    /// [`Gather::msghdr`].
    pub fn new<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut g = Gather {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; SEND_NOW_MAX_PARTS],
            n: 0,
            // SAFETY: an all-zero msghdr is valid (no name, no control data).
            msg: unsafe { std::mem::zeroed() },
            total: 0,
        };
        for (slot, part) in g.iov.iter_mut().zip(parts) {
            slot.iov_base = part.as_ptr() as *mut libc::c_void;
            slot.iov_len = part.len();
            g.total += part.len();
            g.n += 1;
        }
        g
    }

    /// The message header over the iovecs (valid while `self` is neither moved nor
    /// dropped).
    pub fn msghdr(&mut self) -> &libc::msghdr {
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.n as _;
        &self.msg
    }
}

impl SendNow {
    /// What a send of `total` bytes that returned `sent` (bytes, or < 0 for an error) did.
    pub fn of(sent: isize, total: usize) -> SendNow {
        match sent {
            s if s <= 0 => SendNow::Nothing,
            s if s as usize >= total => SendNow::All,
            s => SendNow::Partial(s as usize),
        }
    }

    /// The bytes that went, for a send of buffers of these lengths (all of what one send
    /// gathers for [`SendNow::All`]: the first [`SEND_NOW_MAX_PARTS`]).
    pub fn bytes(self, lens: impl IntoIterator<Item = usize>) -> usize {
        match self {
            SendNow::All => lens.into_iter().take(SEND_NOW_MAX_PARTS).sum(),
            SendNow::Partial(n) => n,
            SendNow::Nothing => 0,
        }
    }
}

/// A batch of shared buffers for one vectored write, reused across writes.
///
/// Holds the `Bytes` being written (so they live while the kernel reads them) and the
/// iovec array pointing into them. After a partial write, [`IoVecs::advance`] drops what
/// was written and trims the first remaining buffer, so the rest goes out first next time.
pub struct IoVecs {
    bufs: std::collections::VecDeque<bytes::Bytes>,
    iovecs: Vec<libc::iovec>,
}

impl Default for IoVecs {
    fn default() -> Self {
        Self::new()
    }
}

impl IoVecs {
    /// Empty; grows to the largest batch the connection writes (an idle connection that
    /// never wrote holds nothing).
    pub fn new() -> Self {
        Self {
            bufs: std::collections::VecDeque::new(),
            iovecs: Vec::new(),
        }
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            bufs: std::collections::VecDeque::with_capacity(n),
            iovecs: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    pub fn push(&mut self, b: bytes::Bytes) {
        if !b.is_empty() {
            self.bufs.push_back(b);
        }
    }

    /// Rebuilds the iovec array; call after pushing and before writing.
    pub fn prepare(&mut self) {
        self.iovecs.clear();
        for b in &self.bufs {
            self.iovecs.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
    }

    /// Forgets the first `n` bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                n = 0;
            }
        }
        self.iovecs.clear();
    }
}

// SAFETY: the iovecs point into the `Bytes` held in `bufs`. `Bytes` data never moves when
// the handle moves, and `bufs` is not touched while the runtime owns this value (during a
// write), so every pointer stays valid and points at `iov_len` readable bytes. `prepare`
// must be called after the last change, which the writer does right before each write.
unsafe impl monoio::buf::IoVecBuf for IoVecs {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_now_writes_what_fits_and_never_blocks() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(
            send_now(client.as_raw_fd(), &[b"ab", b"", b"cd"]),
            SendNow::All
        );
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcd");
        // Nobody reads: the socket fills, and send_now says so instead of blocking.
        let big = vec![7u8; 1 << 20];
        let mut last = SendNow::All;
        for _ in 0..64 {
            last = send_now(client.as_raw_fd(), &[&big]);
            if last != SendNow::All {
                break;
            }
        }
        assert!(
            matches!(last, SendNow::Partial(_) | SendNow::Nothing),
            "{last:?}"
        );
    }

    #[test]
    fn iovecs_advance_over_partial_writes() {
        let mut v = IoVecs::with_capacity(4);
        v.push(bytes::Bytes::from_static(b"abc"));
        v.push(bytes::Bytes::new());
        v.push(bytes::Bytes::from_static(b"defg"));
        v.prepare();
        assert_eq!(v.iovecs.len(), 2);
        v.advance(4);
        assert_eq!(v.len(), 1);
        v.prepare();
        assert_eq!(v.iovecs[0].iov_len, 3);
        v.advance(3);
        assert!(v.is_empty());
    }
}
