//! [`Sock`]: the byte stream a connection driver serves — the client's TCP socket, or,
//! behind HTTPS, the plaintext end of a socket pair whose other end [`crate::tls`]
//! encrypts to the client.
//!
//! Both are stream sockets, so everything a driver does works on either unchanged: owned
//! reads and writes, readiness polls, and the direct `sendmsg` on the descriptor
//! ([`crate::outq::OutQueue::set_fd`]). Nothing a driver writes can bypass TLS: its
//! descriptor is the pair's end, never the client's socket.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;

/// A connection's stream: plain TCP, or the inside of a TLS connection.
pub enum Sock {
    Tcp(TcpStream),
    Tls(UnixStream, Rc<ClientSocket>),
}

/// What the inside of a TLS connection may ask of the client's socket, which the pump
/// owns (it applies a request before its next write to the client).
#[derive(Default)]
pub struct ClientSocket {
    /// A send buffer cap for the client's socket (`SO_SNDBUF`), not yet applied.
    pub send_buffer: Cell<Option<usize>>,
}

// SAFETY: both variants are `Split` in monoio (their read and write halves may run
// concurrently on the one descriptor), and `Sock` adds no state of its own.
unsafe impl Split for Sock {}

impl Sock {
    /// Turns Nagle off on a TCP socket (a socket pair has none; the pump's socket to a TLS
    /// client has it off).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nodelay(on),
            Sock::Tls(..) => Ok(()),
        }
    }

    /// Caps the kernel send buffer between this connection and its client (see
    /// [`crate::sockio::set_send_buffer`]): the socket's own, or for TLS both the pair's
    /// and the client's socket's, so a client that stops reading backs up into the
    /// inside's queue as soon as it would over plain TCP.
    pub fn set_send_buffer(&self, bytes: usize) {
        crate::sockio::set_send_buffer(self.as_raw_fd(), bytes);
        if let Sock::Tls(_, client) = self {
            client.send_buffer.set(Some(bytes));
        }
    }

    /// Waits until a read would not block (a poll: no buffer held).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.readable(false).await,
            Sock::Tls(s, _) => s.readable(false).await,
        }
    }

    /// Waits until a write would not block (a poll: no buffer held).
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.writable(false).await,
            Sock::Tls(s, _) => s.writable(false).await,
        }
    }

    /// Whether the client reached this stream over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Sock::Tls(..))
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Tls(s, _) => s.as_raw_fd(),
        }
    }
}

impl AsyncReadRent for Sock {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.read(buf).await,
            Sock::Tls(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.readv(buf).await,
            Sock::Tls(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Sock {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.write(buf).await,
            Sock::Tls(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.writev(buf).await,
            Sock::Tls(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush().await,
            Sock::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown().await,
            Sock::Tls(s, _) => s.shutdown().await,
        }
    }
}
