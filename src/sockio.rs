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
