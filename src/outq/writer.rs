//! The one writer of an [`OutQueue`]: a connection's writer task drains the queue into
//! its socket with vectored writes of shared `Bytes`, until the queue finishes or aborts
//! or the peer fails.
//!
//! A partial write keeps the unwritten rest of its batch ([`IoVecs::advance`]) and writes
//! it first next time; only then are more frames taken. The write timeout is the caller's
//! choice ([`Timeout`]).

use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRent;

use super::{OutQueue, State};
use crate::sockio::IoVecs;

/// Frames per vectored write.
const MAX_IOVECS: usize = 64;

/// When the writer gives up on a peer that does not take its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Never: the caller watches [`OutQueue::oldest_unwritten`] itself (the danmaku
    /// sweeper, which closes with a code).
    Off,
    /// When the oldest unwritten byte has waited this long, so a peer that takes a few
    /// bytes at a time does not restart the clock (event streams).
    OldestByte(Duration),
    /// When one write makes no progress for this long. For media viewers: their queue may
    /// rightly hold half a minute of stream (4 MiB at 1 Mbit/s) while they keep up, and
    /// their lag is judged by [`super::Policy::SkipToKeyframe`]; the writer only catches a
    /// peer that stopped reading altogether.
    EachWrite(Duration),
}

/// Why [`write_loop`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The queue was finished (or aborted with nothing left) and all of it was written.
    Finished,
    /// Aborted with bytes unwritten; a write in flight was abandoned.
    Aborted,
    /// A write failed (the peer is gone).
    Failed,
    /// The [`Timeout`] ran out.
    TimedOut,
}

/// Runs [`write_loop`] as its own task for a stream with nothing to send after its data
/// (media players), then shuts the socket down.
pub fn spawn_writer<W: AsyncWriteRent + 'static>(
    out: std::rc::Rc<OutQueue>,
    mut writer: W,
    timeout: Timeout,
    written: impl FnMut(usize) + 'static,
) -> monoio::task::JoinHandle<()> {
    monoio::spawn(async move {
        write_loop(&out, &mut writer, timeout, written).await;
        let _ = writer.shutdown().await;
    })
}

/// Writes `out` to `writer` until it is finished or aborted, or the peer fails or times
/// out (`timeout`). `written(n)` is told each write's size, and at the end the direct bytes not yet
/// collected (metrics). Wakes a reader paused in [`OutQueue::wait_drained`] when the queue
/// drains under half its bound. When it returns, the queue is aborted, nothing writes to
/// the socket directly any more and the reader has been woken; shutting the socket down
/// (after a last frame, say a WebSocket close) is the caller's.
pub async fn write_loop<W: AsyncWriteRent>(
    out: &OutQueue,
    writer: &mut W,
    timeout: Timeout,
    mut written: impl FnMut(usize),
) -> End {
    let mut iov = IoVecs::new();
    let end = loop {
        {
            let mut q = out.queue();
            while iov.len() < MAX_IOVECS {
                match q.take_next() {
                    Some(b) => iov.push(b),
                    None => break,
                }
            }
        }
        if iov.is_empty() {
            out.in_flight.set(false);
            if out.state.get() != State::Open {
                break End::Finished;
            }
            out.wake.notified().await;
            continue;
        }
        if out.state.get() == State::Aborted {
            break End::Aborted;
        }
        out.in_flight.set(true);
        iov.prepare();
        let result = match timeout {
            Timeout::Off => monoio::select! {
                r = writer.writev(iov) => Some(Some(r)),
                _ = out.abort.notified() => None,
            },
            Timeout::EachWrite(t) => timed_write(out, writer, iov, t).await,
            Timeout::OldestByte(t) => {
                let now = Instant::now();
                let since = out.oldest_unwritten().unwrap_or(now);
                let left = (since + t).saturating_duration_since(now);
                timed_write(out, writer, iov, left).await
            }
        };
        let (n, back) = match result {
            None => break End::Aborted,
            Some(None) => break End::TimedOut,
            Some(Some((Err(_), _))) => break End::Failed,
            Some(Some((Ok(n), back))) => (n, back),
        };
        iov = back;
        iov.advance(n);
        written(n);
        let resume = {
            let mut q = out.queue();
            q.wrote(n);
            q.below_low_water()
        };
        if resume && out.reader_paused.get() {
            out.reader.notify();
        }
    };
    // From here on nothing may write to the socket directly: it is about to close.
    out.fd.set(None);
    out.in_flight.set(false);
    out.state.set(State::Aborted);
    out.reader.notify();
    written(out.take_direct_bytes() as usize);
    end
}

/// One vectored write within `limit`, unless the queue is aborted first (`None`);
/// `Some(None)`: it timed out. Boxed, so that a writer without a timeout (a WebSocket
/// connection's, which lives as long as the connection) does not carry the timer's size.
fn timed_write<'a, W: AsyncWriteRent>(
    out: &'a OutQueue,
    writer: &'a mut W,
    iov: IoVecs,
    limit: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = WriteResult> + 'a>> {
    Box::pin(async move {
        monoio::select! {
            r = monoio::time::timeout(limit, writer.writev(iov)) => Some(r.ok()),
            _ = out.abort.notified() => None,
        }
    })
}

/// What a write raced against an abort gave: `None` aborted, `Some(None)` timed out.
type WriteResult = Option<Option<monoio::BufResult<usize, IoVecs>>>;

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    use bytes::Bytes;
    use monoio::io::AsyncWriteRent as _;

    use super::*;
    use crate::outq::{Offer, Policy};

    /// A small socket buffer makes nearly every write partial: what the peer reads must
    /// still be every frame, whole and in order, counted once.
    #[test]
    fn the_writer_drains_everything_in_order_through_partial_writes() {
        const FRAMES: usize = 48;
        const LEN: usize = 64 * 1024;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let frames: Vec<Bytes> = (0..FRAMES)
            .map(|i| Bytes::from(vec![i as u8; LEN]))
            .collect();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let sent = frames.clone();
        let (end, written) = rt.block_on(async move {
            let mut stream = monoio::net::TcpStream::connect(addr).await.unwrap();
            crate::sockio::set_send_buffer(stream.as_raw_fd(), 4096);
            let out = OutQueue::new(FRAMES * LEN, Policy::Drop);
            out.set_fd(stream.as_raw_fd());
            for f in sent {
                // The first goes out directly as far as it fits; the rest is queued.
                assert_eq!(out.send(f), Offer::Queued);
            }
            out.finish();
            let mut written = 0;
            let timeout = Timeout::EachWrite(Duration::from_secs(10));
            let end = write_loop(&out, &mut stream, timeout, |n| written += n).await;
            assert_eq!(out.fd(), None, "no direct sends after the writer stopped");
            let _ = stream.shutdown().await;
            (end, written)
        });
        let got = peer.join().unwrap();
        assert_eq!(end, End::Finished);
        assert_eq!(written, FRAMES * LEN, "every byte counted once");
        assert_eq!(got.len(), FRAMES * LEN);
        for (i, chunk) in got.chunks(LEN).enumerate() {
            assert!(chunk.iter().all(|&b| b == i as u8), "frame {i} intact");
        }
    }
}
