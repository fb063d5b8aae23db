//! HTTPS and WSS (`server.https`): TLS with rustls, terminated on the shard that accepted
//! the connection.
//!
//! A TLS connection is served as two things on its shard:
//! - the **pump**: the client's TCP socket, its rustls state, and one end of a Unix socket
//!   pair. It decrypts what the client sends into the pair and encrypts what comes out of
//!   the pair to the client;
//! - the **inside**: the pair's other end, a [`Sock::Tls`], served by the same HTTP
//!   driver, WebSocket, SSE and FLV code as a plain connection — including their direct
//!   `sendmsg` and queue bounds, which now apply to the pair. Nothing can reach the client
//!   unencrypted: the inside never sees the client's socket.
//!
//! Back-pressure crosses the pair: the pump reads plaintext only once everything it
//! encrypted has gone to the client, so a client that stops reading fills the pair, and
//! the inside's queue bounds judge it exactly as they judge a plain socket (the send
//! buffer cap a driver sets, [`Sock::set_send_buffer`], is applied to the client's socket
//! too). The client's EOF (or `close_notify`) shuts the pair's write side, so the inside
//! sees EOF; the inside closing makes the pump send `close_notify` and close. A client
//! that takes nothing for `http.write_timeout_ms` is closed by the pump whatever the
//! inside does (a backstop: the danmaku engine's slow-consumer judgement comes first).
//!
//! **Handshakes** run on the shard, as one task per connection, bounded in time
//! (`http.header_timeout_ms`): a handshake is a few hundred microseconds of CPU (ECDSA
//! P-256; see `benches/tls.rs` for the figure on this machine), never a wait on the
//! shard. The admission caps and rates of `server.*` apply to TLS connections before the
//! handshake, as to any connection.
//!
//! **Certificates** are read at start (a bad pair is an error before any thread starts)
//! and again on SIGHUP ([`TlsFront::reload`]): new handshakes get the new certificate,
//! connections already open keep theirs. A reload that fails (a file missing, a key that
//! does not match) keeps the old pair and says why in the log. The pair is behind a
//! read lock taken once per handshake (never on a connection's data path). Sessions
//! resume with TLS 1.3 tickets, whose key every shard shares (no per-shard cache, so a
//! client that lands on another shard resumes too).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpStream, UnixStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use crate::sock::{ClientSocket, Sock};

/// The largest certificate chain or key file read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Bytes read from either side per turn of the pump (a TLS record is at most 16 KiB of
/// plaintext, so one record per read).
const CHUNK: usize = 16 * 1024;

/// The TLS side of the HTTP front, shared by every shard.
pub struct TlsFront {
    config: Arc<ServerConfig>,
    certs: Arc<Certs>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// The certificate handed to each new handshake.
#[derive(Debug)]
struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

impl TlsFront {
    /// Reads the certificate chain and key and builds the server's TLS settings.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsFront, String> {
        let key = load_pair(cert_path, key_path)?;
        let certs = Arc::new(Certs {
            current: RwLock::new(Arc::new(key)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("TLS session tickets: {e}"))?;
        Ok(TlsFront {
            config: Arc::new(config),
            certs,
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        })
    }

    /// The TLS settings every handshake uses (the benchmark drives them in memory).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Reads the certificate and key files again; new handshakes get them. On an error the
    /// pair in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = load_pair(&self.cert_path, &self.key_path)?;
        match self.certs.current.write() {
            Ok(mut k) => *k = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
        Ok(())
    }
}

/// Reads a PEM chain and key and checks that the key is the leaf's.
fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = read_bounded(cert_path, "server.tls_cert")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server.tls_cert {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "server.tls_cert {}: no CERTIFICATE in the file",
            cert_path.display()
        ));
    }
    let key_pem = read_bounded(key_path, "server.tls_key")?;
    // The key's bytes never reach a message: only what kind of problem it was.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        format!(
            "server.tls_key {}: no private key in PEM (PKCS#8, PKCS#1 or SEC1) found",
            key_path.display()
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        format!(
            "server.tls_key {}: not a key type TLS can use (RSA, ECDSA P-256/P-384, Ed25519)",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        format!(
            "server.tls_key {} does not belong to the certificate in {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(certified)
}

fn read_bounded(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let mut out = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if out.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{key} {}: larger than {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    Ok(out)
}

/// The labels of `liveshard_tls_handshakes_total`, by index: `ok`, then each
/// [`HandshakeError::index`].
pub const HANDSHAKE_RESULTS: [&str; 4] = ["ok", "timeout", "io", "tls"];

/// Why a TLS connection ended before its inside was served.
#[derive(Debug)]
pub enum HandshakeError {
    /// No complete handshake within the bound.
    Timeout,
    /// The client closed, or the socket failed.
    Io(io::Error),
    /// The client's messages broke TLS (told with an alert).
    Tls(rustls::Error),
}

impl HandshakeError {
    /// Its index in [`HANDSHAKE_RESULTS`].
    pub fn index(&self) -> usize {
        match self {
            HandshakeError::Timeout => 1,
            HandshakeError::Io(_) => 2,
            HandshakeError::Tls(_) => 3,
        }
    }

    /// A label for the metric and the log.
    pub fn label(&self) -> &'static str {
        HANDSHAKE_RESULTS[self.index()]
    }
}

/// Completes the handshake with a client (within `timeout`), then starts the pump and
/// returns the inside of the connection for the HTTP driver. `write_timeout` bounds each
/// write of the pump to the client (a client that stops reading is closed after it).
pub async fn accept(
    front: &TlsFront,
    tcp: TcpStream,
    timeout: Duration,
    write_timeout: Duration,
) -> Result<Sock, HandshakeError> {
    let _ = tcp.set_nodelay(true);
    let conn = ServerConnection::new(front.config.clone()).map_err(HandshakeError::Tls)?;
    let mut tcp = tcp;
    let mut conn = conn;
    match monoio::time::timeout(timeout, handshake(&mut tcp, &mut conn)).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    let (outer, inner) = std::os::unix::net::UnixStream::pair().map_err(HandshakeError::Io)?;
    for s in [&outer, &inner] {
        s.set_nonblocking(true).map_err(HandshakeError::Io)?;
    }
    let outer = UnixStream::from_std(outer).map_err(HandshakeError::Io)?;
    let inner = UnixStream::from_std(inner).map_err(HandshakeError::Io)?;
    let client = Rc::new(ClientSocket::default());
    monoio::spawn(pump(tcp, conn, outer, client.clone(), write_timeout));
    Ok(Sock::Tls(inner, client))
}

async fn handshake(tcp: &mut TcpStream, conn: &mut ServerConnection) -> Result<(), HandshakeError> {
    let mut buf = Vec::with_capacity(CHUNK);
    let mut out = Vec::new();
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out).map_err(HandshakeError::Io)?;
            let (r, o) = tcp.write_all(out).await;
            out = o;
            r.map_err(HandshakeError::Io)?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        buf.clear();
        let (r, b) = tcp.read(buf).await;
        buf = b;
        match r {
            Ok(0) => {
                return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e) => return Err(HandshakeError::Io(e)),
        }
        if let Err(e) = feed(conn, &buf) {
            // Tell the client why (the alert rustls queued), best effort.
            out.clear();
            if conn.write_tls(&mut out).is_ok() && !out.is_empty() {
                let _ = tcp.write_all(out).await;
            }
            return Err(e);
        }
    }
}

/// Gives rustls every byte of `data` and lets it process them.
fn feed(conn: &mut ServerConnection, mut data: &[u8]) -> Result<(), HandshakeError> {
    while !data.is_empty() {
        conn.read_tls(&mut data).map_err(HandshakeError::Io)?;
        conn.process_new_packets().map_err(HandshakeError::Tls)?;
    }
    Ok(())
}

/// A side failed (the socket, or TLS): the pump closes the connection.
struct Broken;

/// The pump: one task per TLS connection, on the shard that accepted it. It waits on
/// readiness (polls, no buffer held) and moves bytes with non-blocking calls through a
/// stack buffer, so an idle connection holds no buffer of its own — only rustls's state.
/// A buffer exists only while one side is backed up: encrypted records rustls keeps until
/// the client takes them, or plaintext the inside has not taken yet (`pending`).
async fn pump(
    tcp: TcpStream,
    mut conn: ServerConnection,
    inside: UnixStream,
    client: Rc<ClientSocket>,
    write_timeout: Duration,
) {
    let (tcp_fd, inside_fd) = (tcp.as_raw_fd(), inside.as_raw_fd());
    let mut pending: Vec<u8> = Vec::new();
    let (mut client_open, mut inside_open) = (true, true);
    // Since when the client has taken nothing of what we have for it; the connection
    // ends `write_timeout` after that.
    let mut stalled_since: Option<Instant> = None;
    let mut why = "closed";
    // 1. Out to the client, each time round: whatever rustls has encrypted (within the
    //    send buffer the inside asked for, once it has).
    loop {
        if let Some(bytes) = client.send_buffer.take() {
            crate::sockio::set_send_buffer(tcp_fd, bytes);
        }
        let Ok(flushed) = flush_tls(&mut conn, tcp_fd) else {
            why = "writing to the client failed";
            break;
        };
        let to_client_blocked = flushed.blocked;
        stalled_since = match (flushed.blocked, flushed.progressed, stalled_since) {
            (false, _, _) => None,
            (true, true, _) | (true, false, None) => Some(Instant::now()),
            (true, false, since) => since,
        };
        // 2. In to the inside: the plaintext rustls has decrypted.
        let (to_inside_blocked, client_done) = match deliver(&mut conn, inside_fd, &mut pending) {
            Ok(state) => state,
            Err(Broken) => {
                why = "the inside failed";
                break;
            }
        };
        if client_done && client_open {
            // The client sent close_notify (or its EOF came through rustls): the inside
            // sees EOF; what it still writes goes out.
            client_open = false;
            shutdown(inside_fd, libc::SHUT_WR);
        }
        if !inside_open && !to_client_blocked {
            break;
        }
        if !client_open && !inside_open {
            break;
        }
        // 3. Wait for what can move next. Reading from the client waits while its
        //    plaintext has not been taken; reading from the inside waits while the client
        //    has not taken what was encrypted before (the back-pressure the inside sees).
        let read_client = client_open && !to_inside_blocked;
        let read_inside = inside_open && !to_client_blocked;
        let deadline = stalled_since.map(|t| t + write_timeout);
        let ready = monoio::select! {
            r = when(read_client, tcp.readable(false)) => r.map(|_| Woke::Client),
            r = when(read_inside, inside.readable(false)) => r.map(|_| Woke::Inside),
            r = when(to_client_blocked, tcp.writable(false)) => r.map(|_| Woke::Again),
            r = when(to_inside_blocked, inside.writable(false)) => r.map(|_| Woke::Again),
            _ = until(deadline) => Ok(Woke::Stalled),
        };
        match ready {
            Ok(Woke::Again) => {}
            Ok(Woke::Stalled) => {
                why = "the client took nothing within the write timeout";
                break;
            }
            Err(_) => {
                why = "a socket poll failed";
                break;
            }
            Ok(Woke::Client) => match recv_into(tcp_fd, |data| feed(&mut conn, data)) {
                Received::Data(Ok(())) | Received::NotYet => {}
                // Broke TLS: the alert rustls queued goes out best effort, then close.
                Received::Data(Err(_)) => {
                    why = "the client broke TLS";
                    let _ = flush_tls(&mut conn, tcp_fd);
                    break;
                }
                Received::Eof => {
                    client_open = false;
                    shutdown(inside_fd, libc::SHUT_WR);
                }
                Received::Failed => {
                    why = "reading from the client failed";
                    break;
                }
            },
            Ok(Woke::Inside) => match recv_into(inside_fd, |data| conn.writer().write_all(data)) {
                Received::Data(Ok(())) | Received::NotYet => {}
                Received::Data(Err(_)) | Received::Failed => {
                    why = "reading from the inside failed";
                    break;
                }
                Received::Eof => {
                    // The inside closed: tell the client; close once it is sent.
                    conn.send_close_notify();
                    inside_open = false;
                }
            },
        }
    }
    let _ = flush_tls(&mut conn, tcp_fd);
    shutdown(tcp_fd, libc::SHUT_WR);
    tracing::debug!(reason = why, "TLS connection ended");
    drop(inside);
    drop(tcp);
}

enum Woke {
    /// The client sent something.
    Client,
    /// The inside wrote something.
    Inside,
    /// A blocked side can take more.
    Again,
    /// The client took nothing for `write_timeout`.
    Stalled,
}

/// `fut` when `cond`, else a future that never completes (a `select!` branch turned off).
async fn when<F: std::future::Future>(cond: bool, fut: F) -> F::Output {
    if cond {
        fut.await
    } else {
        std::future::pending().await
    }
}

/// Completes at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => monoio::time::sleep_until(monoio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// What one non-blocking read gave.
enum Received<T> {
    Data(T),
    NotYet,
    Eof,
    Failed,
}

/// One non-blocking `recv` from `fd` into a stack buffer, handed to `use_it` (so no buffer
/// outlives the call).
fn recv_into<T>(fd: RawFd, use_it: impl FnOnce(&[u8]) -> T) -> Received<T> {
    let mut buf = [0u8; CHUNK];
    // SAFETY: `buf` is live and writable for its length; `fd` is open (its owner is alive
    // in the caller).
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Received::Eof,
        n if n > 0 => Received::Data(use_it(&buf[..n as usize])),
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Received::NotYet,
            _ => Received::Failed,
        },
    }
}

/// What a [`flush_tls`] managed.
struct Flushed {
    /// The socket is full and some is left in rustls (sent when it is writable again).
    blocked: bool,
    /// Some bytes went.
    progressed: bool,
}

/// Sends what rustls has encrypted to the client without blocking.
fn flush_tls(conn: &mut ServerConnection, fd: RawFd) -> Result<Flushed, Broken> {
    let mut progressed = false;
    while conn.wants_write() {
        match conn.write_tls(&mut FdWriter(fd)) {
            Ok(n) => progressed |= n > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Flushed {
                    blocked: true,
                    progressed,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Broken),
        }
    }
    Ok(Flushed {
        blocked: false,
        progressed,
    })
}

/// Hands the inside what the client sent, without blocking: first what an earlier call
/// could not, then what rustls decrypted since. Ok((blocked, client_done)): `blocked` when
/// the inside's buffer is full (the rest is in `pending`); `client_done` once the client
/// sent close_notify or ended its stream.
fn deliver(
    conn: &mut ServerConnection,
    fd: RawFd,
    pending: &mut Vec<u8>,
) -> Result<(bool, bool), Broken> {
    if !pending.is_empty() {
        match send_some(fd, pending) {
            Ok(n) if n == pending.len() => *pending = Vec::new(),
            Ok(n) => {
                pending.drain(..n);
                return Ok((true, false));
            }
            Err(_) => return Err(Broken),
        }
    }
    let mut buf = [0u8; CHUNK];
    loop {
        let n = match conn.reader().read(&mut buf) {
            Ok(0) => return Ok((false, true)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, false)),
            // The client's stream ended without close_notify.
            Err(_) => return Ok((false, true)),
        };
        match send_some(fd, &buf[..n]) {
            Ok(sent) if sent == n => {}
            Ok(sent) => {
                pending.extend_from_slice(&buf[sent..n]);
                return Ok((true, false));
            }
            Err(_) => return Err(Broken),
        }
    }
}

/// One non-blocking `send`: how much went (0 when the buffer is full).
fn send_some(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is live for its length; `fd` is open (its owner is alive in the caller).
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

/// rustls writes its records straight to the socket through this (non-blocking).
struct FdWriter(RawFd);

impl Write for FdWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match send_some(self.0, data)? {
            0 if !data.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let parts = bufs.iter().take(crate::sockio::SEND_NOW_MAX_PARTS);
        let total = parts.clone().map(|b| b.len()).sum();
        match crate::sockio::send_now_iter(self.0, parts.map(|b| &**b)) {
            crate::sockio::SendNow::All => Ok(total),
            crate::sockio::SendNow::Partial(n) => Ok(n),
            crate::sockio::SendNow::Nothing => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn shutdown(fd: RawFd, how: libc::c_int) {
    // SAFETY: `fd` is open (its owner is alive in the caller); shutdown(2) touches no memory.
    unsafe {
        libc::shutdown(fd, how);
    }
}
