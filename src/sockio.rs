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

/// A batch of shared buffers for one vectored write, reused across writes.
///
/// Holds the `Bytes` being written (so they live while the kernel reads them) and the
/// iovec array pointing into them. After a partial write, [`IoVecs::advance`] drops what
/// was written and trims the first remaining buffer, so the rest goes out first next time.
pub struct IoVecs {
    bufs: std::collections::VecDeque<bytes::Bytes>,
    iovecs: Vec<libc::iovec>,
}

impl IoVecs {
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
