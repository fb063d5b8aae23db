//! The danmaku WebSocket connection: upgrade, then a reader and a writer per connection.
//!
//! - `GET /ws?room=ID[&token=JWT]` is checked (room id, upgrade headers, Origin allow-list,
//!   token from the query or `Sec-WebSocket-Protocol`) before the 101 is sent.
//! - The *reader* (the connection's own task) waits for readability without holding a
//!   buffer, so an idle connection owns no read memory; it decodes frames and hands each
//!   message to [`super::client`] (which forwards posts to the room's home shard). While
//!   the outbound queue is over its bound it decodes nothing (back-pressure: a client that
//!   does not read cannot make the server answer it into memory) and goes on under half
//!   the bound.
//! - The *writer* drains the connection's outbound queue of shared `Bytes` with vectored
//!   writes. Every frame counts against the queue's one byte bound ([`super::sendq`]):
//!   past it, droppable frames (batches, online counts) are dropped for this viewer and
//!   counted, must-send frames stop at twice the bound (the connection is closed then),
//!   and pongs are coalesced to one. A connection judged slow for the grace period is
//!   closed with 1008 "slow consumer" by the shard's sweeper, which also closes one whose
//!   oldest unwritten byte is older than the write timeout.
//!
//! [`Conn`] is the state both tasks and the shard's rooms share (`Rc`, `Cell`): it can be
//! built without a socket, which is how the fan-out benchmark drives it.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use shards::local::Notify;

use super::engine::Danmaku;
use super::hygiene::TokenBucket;
use super::protocol::close;
use super::sendq::{Overflow, SendQueue};
use super::{valid_room_id, ConnRef, RoomId, Uid};
use crate::auth::Claims;
use crate::http::{self, code as http_code, Reply, Request, Response};
use crate::sockio::{read_append, readable, send_now, IoVecs, SendNow};
use crate::ws::codec::{close_frame, Decoder};
use crate::ws::handshake::{check_upgrade, switching_protocols};

/// A logged-in user, as the token says.
#[derive(Debug)]
pub struct User {
    pub uid: Uid,
    pub nick: Arc<str>,
    pub admin: bool,
    pub vip: bool,
    /// The token's id and issue time, so a revocation can find the connections that
    /// used it (kept here, not in `Conn`, which anonymous viewers also pay for).
    pub jti: Option<Box<str>>,
    pub iat: u64,
}

impl User {
    pub(super) fn from_claims(c: Claims) -> Self {
        let nick = if c.nick.is_empty() {
            c.sub.clone()
        } else {
            c.nick.clone()
        };
        Self {
            admin: c.has_role("admin"),
            vip: c.has_role("vip"),
            jti: c.jti.map(String::into_boxed_str),
            iat: c.iat.unwrap_or(0),
            uid: c.sub.into(),
            nick: nick.into(),
        }
    }

    /// Whether `rev` names the token this user connected with.
    pub fn revoked_by(&self, rev: &crate::auth::Revocation) -> bool {
        match rev {
            crate::auth::Revocation::Token { jti, .. } => self.jti.as_deref() == Some(jti.as_str()),
            crate::auth::Revocation::User {
                uid, not_before, ..
            } => &*self.uid == uid.as_str() && self.iat < *not_before,
        }
    }
}

/// One viewer's connection state, shared by its tasks and its shard's room.
pub struct Conn {
    pub id: ConnRef,
    pub room: RoomId,
    pub user: RefCell<Option<Rc<User>>>,
    /// Position in its `LocalRoom`'s viewer list (for O(1) removal).
    pub room_slot: Cell<usize>,
    /// True once the home shard accepted the join and the connection is in its room.
    pub joined: Cell<bool>,
    /// Everything on its way to the peer, under one byte bound (see `sendq`).
    q: RefCell<SendQueue>,
    /// The reader stopped decoding because the queue is over its bound.
    reader_paused: Cell<bool>,
    /// Closed as a slow consumer (counted once, when the connection is let go).
    slow: Cell<bool>,
    last_seen: Cell<Instant>,
    /// This connection's own post rate limit (the room's home keeps the per-user one).
    pub(super) bucket: Cell<TokenBucket>,
    closing: Cell<Option<(u16, &'static str)>>,
    /// Wakes the writer: data queued, or closing.
    writer: Notify,
    /// Wakes the reader: closing, or the queue drained enough to read again.
    reader: Notify,
    /// Aborts a write in flight (slow consumer, shutdown bound, write timeout).
    abort: Notify,
    /// The socket, for [`send_now`] while nothing is queued; `None` without a socket
    /// (benchmarks) and from the moment the writer stops.
    fd: Cell<Option<RawFd>>,
    /// The writer holds bytes it has not finished writing: no direct send may overtake them.
    in_flight: Cell<bool>,
    /// Bytes written straight from the fan-out path, for metrics.
    direct_bytes: Cell<u64>,
}

impl Conn {
    pub fn new(
        id: ConnRef,
        room: RoomId,
        user: Option<Rc<User>>,
        queue_limit: usize,
        burst: f32,
    ) -> Self {
        Self {
            id,
            room,
            user: RefCell::new(user),
            room_slot: Cell::new(usize::MAX),
            joined: Cell::new(false),
            q: RefCell::new(SendQueue::new(queue_limit)),
            reader_paused: Cell::new(false),
            slow: Cell::new(false),
            last_seen: Cell::new(Instant::now()),
            bucket: Cell::new(TokenBucket::full(burst, crate::danmaku::engine::now_ms())),
            closing: Cell::new(None),
            writer: Notify::new(),
            reader: Notify::new(),
            abort: Notify::new(),
            fd: Cell::new(None),
            in_flight: Cell::new(false),
            direct_bytes: Cell::new(0),
        }
    }

    /// Puts `frame` on the wire at once if nothing is ahead of it. Returns true if that
    /// took care of it (all of it went, or its unwritten tail is queued first); false if
    /// the caller must queue it.
    fn try_direct(&self, frame: &Bytes) -> bool {
        // No socket (the benchmark's in-memory sink), or the writer has stopped.
        let Some(fd) = self.fd.get() else {
            return false;
        };
        if self.in_flight.get() || !self.q.borrow().is_empty() {
            return false;
        }
        match send_now(fd, &[frame]) {
            SendNow::All => {
                self.direct_bytes
                    .set(self.direct_bytes.get() + frame.len() as u64);
                true
            }
            SendNow::Partial(n) => {
                self.direct_bytes.set(self.direct_bytes.get() + n as u64);
                self.q
                    .borrow_mut()
                    .push_rest(frame.slice(n..), Instant::now());
                self.writer.notify();
                true
            }
            SendNow::Nothing => false,
        }
    }

    /// Bytes written directly since the last call (the sweeper collects them).
    pub fn take_direct_bytes(&self) -> u64 {
        self.direct_bytes.replace(0)
    }

    /// When the oldest byte not yet written was queued, if one is: the write timeout
    /// runs from there, so a peer that takes a few bytes at a time does not restart it.
    pub fn write_since(&self) -> Option<Instant> {
        self.q.borrow().oldest_unwritten()
    }

    pub fn uid(&self) -> Option<Uid> {
        self.user.borrow().as_ref().map(|u| u.uid.clone())
    }

    /// Sends a frame this connection must get (acks, errors, history, private messages).
    /// Past the hard ceiling (twice the bound) the connection is closed as a slow consumer
    /// instead: it has stopped reading, and nothing more is held for it.
    pub fn send(&self, frame: Bytes) {
        if self.closing.get().is_some() {
            return;
        }
        if self.try_direct(&frame) {
            return;
        }
        let pushed = self.q.borrow_mut().push(frame, Instant::now());
        match pushed {
            Ok(()) => self.writer.notify(),
            Err(Overflow) => self.close_slow(),
        }
    }

    /// Queues a fan-out frame unless the queue is over its bound; returns false if the
    /// frame was dropped for this viewer (the slow-consumer clock starts then). `now` is
    /// read once per fan-out by the caller.
    pub fn send_droppable(&self, frame: &Bytes, now: Instant) -> bool {
        if self.closing.get().is_some() {
            return true;
        }
        if self.try_direct(frame) {
            return true;
        }
        let queued = self.q.borrow_mut().push_droppable(frame, now);
        if queued {
            self.writer.notify();
        }
        queued
    }

    /// Answers a ping. At most one pong waits: a newer ping replaces the older one's answer
    /// (RFC 6455 §5.5.3), so a flood of pings holds one control frame, not a queue of them.
    pub(super) fn send_pong(&self, frame: Bytes) {
        if self.closing.get().is_some() {
            return;
        }
        if self.try_direct(&frame) {
            return;
        }
        self.q.borrow_mut().set_pong(frame, Instant::now());
        self.writer.notify();
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.q.borrow().bytes()
    }

    /// Takes every queued frame, in order (an in-memory peer: the engine tests).
    pub fn take_frames(&self) -> Vec<Bytes> {
        self.q.borrow_mut().take_frames()
    }

    /// The close code and reason, once the connection started closing.
    pub fn close_reason(&self) -> Option<(u16, &'static str)> {
        self.closing.get()
    }

    /// Takes every queued frame (the fan-out benchmark's in-memory sink).
    pub fn drain_queue(&self) -> usize {
        self.q.borrow_mut().drain()
    }

    pub fn over_since(&self) -> Option<Instant> {
        self.q.borrow().over_since()
    }

    /// Whether it was closed as a slow consumer.
    pub fn closed_slow(&self) -> bool {
        self.slow.get()
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen.get()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    /// Starts closing: the writer sends what is queued, then the close frame.
    pub fn close(&self, code: u16, reason: &'static str) {
        if self.closing.get().is_none() {
            self.closing.set(Some((code, reason)));
        }
        self.writer.notify();
        self.reader.notify();
    }

    /// Closes without waiting for the queue: a write in flight is abandoned.
    pub fn close_now(&self, code: u16, reason: &'static str) {
        self.close(code, reason);
        self.abort.notify();
    }

    /// Closes with 1008 "slow consumer" at once (the grace ran out, or the hard ceiling).
    pub fn close_slow(&self) {
        if self.closing.get().is_none() {
            self.slow.set(true);
        }
        self.close_now(close::POLICY, "slow consumer");
    }
}

/// `GET /ws`: checks the request and takes the connection over.
pub async fn ws_handler(dm: Rc<Danmaku>, req: Request) -> Reply {
    let fail =
        |status: u16, code: u32, msg: &str| Reply::Response(Response::error(status, code, msg));
    let Some(room) = req.query("room").filter(|r| valid_room_id(r)) else {
        return fail(
            400,
            http_code::BAD_REQUEST,
            "room must be 1-64 of A-Z a-z 0-9 _ - .",
        );
    };
    let upgrade = match check_upgrade(&req.head) {
        Ok(u) => u,
        Err(r) => {
            let mut resp = Response::error(
                r.status,
                http_code::BAD_REQUEST + (r.status as u32 - 400) * 100,
                r.message,
            );
            if r.status == 426 {
                resp = resp
                    .header("Sec-WebSocket-Version", "13")
                    .header("Upgrade", "websocket");
            }
            return Reply::Response(resp);
        }
    };
    let shared = &dm.ctx.shared;
    let origins = &shared.settings.origins;
    if !origins.is_empty()
        && !upgrade
            .origin
            .as_ref()
            .is_some_and(|o| origins.iter().any(|a| a == o))
    {
        return fail(403, 40300, "origin not allowed");
    }
    // A token in the query wins; else the first offered subprotocol that looks like a JWT
    // (mini-programs cannot set headers on wx.connectSocket, but can pass protocols).
    let from_protocol = upgrade
        .protocols
        .iter()
        .find(|p| p.matches('.').count() == 2)
        .cloned();
    let token = req
        .query("token")
        .filter(|t| !t.is_empty())
        .or(from_protocol.clone());
    let user = match token {
        None => None,
        Some(t) => match dm.tokens().verify(&t) {
            Ok(claims) => Some(Rc::new(User::from_claims(claims))),
            Err(crate::auth::TokenError::Revoked) => {
                return fail(
                    401,
                    crate::codes::TOKEN_REVOKED,
                    crate::auth::TokenError::Revoked.message(),
                )
            }
            Err(e) => return fail(401, 40100, e.message()),
        },
    };
    if dm.ctx.shutdown.is_raised() {
        return fail(503, http_code::UNAVAILABLE, "shutting down");
    }
    let response = switching_protocols(
        &upgrade.accept,
        from_protocol
            .as_deref()
            .or(upgrade.protocols.first().map(String::as_str)),
    );
    Reply::Takeover(Box::new(move |stream, leftover| {
        Box::pin(run(dm, stream, leftover, room.into(), user, response))
    }))
}

/// Bytes reserved per read. Client messages are small; a larger frame grows the buffer
/// only while it is being read.
const READ_CHUNK: usize = 1024;
/// Frames per vectored write.
const MAX_IOVECS: usize = 64;

async fn run(
    dm: Rc<Danmaku>,
    stream: TcpStream,
    leftover: BytesMut,
    room: RoomId,
    user: Option<Rc<User>>,
    response: Vec<u8>,
) {
    // The opening is boxed and finished before the long-lived part starts, so that what
    // it needed (the 101's buffer, a timer) is not part of the connection's future for
    // the connection's whole life (measured: this future went from 1,648 to 648 bytes).
    let Some((conn, stream)) = Box::pin(open(&dm, stream, room, user, response)).await else {
        return;
    };
    let (reader, writer) = stream.into_split();
    let writer_task = monoio::spawn(write_loop(dm.clone(), conn.clone(), writer));
    read_loop(&dm, &conn, reader, leftover).await;
    conn.close(close::ABNORMAL, "reader ended");
    writer_task.await;
    dm.unregister(&conn);
}

/// Sends the 101, registers the connection and asks the room's home to admit it.
async fn open(
    dm: &Rc<Danmaku>,
    mut stream: TcpStream,
    room: RoomId,
    user: Option<Rc<User>>,
    response: Vec<u8>,
) -> Option<(Rc<Conn>, TcpStream)> {
    let settings = &dm.ctx.shared.settings;
    let write = monoio::time::timeout(Duration::from_secs(10), stream.write_all(response)).await;
    if !matches!(write, Ok((Ok(_), _))) {
        return None;
    }
    if settings.send_buffer > 0 {
        crate::sockio::set_send_buffer(stream.as_raw_fd(), settings.send_buffer);
    }
    let conn = dm.register(room, user);
    conn.fd.set(Some(stream.as_raw_fd()));
    dm.join(&conn);
    Some((conn, stream))
}

async fn read_loop(
    dm: &Rc<Danmaku>,
    conn: &Rc<Conn>,
    mut reader: OwnedReadHalf<TcpStream>,
    mut buf: BytesMut,
) {
    let mut decoder = Decoder::new(dm.ctx.shared.settings.ws);
    loop {
        // Back-pressure: while the peer does not take what it is sent, nothing it sent is
        // decoded (not even what is already buffered), so it cannot make the server
        // answer it into memory; its frames wait in the kernel, and its TCP window closes.
        while conn.q.borrow().backed_up() {
            conn.reader_paused.set(true);
            conn.reader.notified().await;
            conn.reader_paused.set(false);
            if conn.is_closing() {
                return;
            }
        }
        match decoder.decode(&mut buf) {
            Ok(Some(msg)) => {
                conn.last_seen.set(Instant::now());
                super::client::on_message(dm, conn, msg);
                if conn.is_closing() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                conn.close(e.close_code(), e.reason());
                return;
            }
        }
        if buf.is_empty() && decoder.is_idle() {
            // Idle: hold no read memory until the next byte arrives.
            buf = BytesMut::new();
        }
        let woke = monoio::select! {
            r = readable(&reader) => Some(r),
            _ = conn.reader.notified() => None,
        };
        match woke {
            None if conn.is_closing() => return,
            None => continue,
            Some(Err(_)) => {
                conn.close_now(close::ABNORMAL, "read failed");
                return;
            }
            Some(Ok(())) => {}
        }
        let (res, b) = read_append(&mut reader, buf, READ_CHUNK).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => {
                // The peer is gone: nothing more can be written either.
                conn.close_now(close::ABNORMAL, "peer closed");
                return;
            }
        }
    }
}

async fn write_loop(dm: Rc<Danmaku>, conn: Rc<Conn>, mut writer: OwnedWriteHalf<TcpStream>) {
    write_queue(&dm, &conn, &mut writer).await;
    // From here on nothing may write to the socket directly: it is about to close.
    conn.fd.set(None);
    conn.in_flight.set(false);
    conn.reader.notify();
}

async fn write_queue(dm: &Danmaku, conn: &Conn, writer: &mut OwnedWriteHalf<TcpStream>) {
    let mut iov = IoVecs::new();
    loop {
        {
            let mut q = conn.q.borrow_mut();
            while iov.len() < MAX_IOVECS {
                match q.take_next() {
                    Some(b) => iov.push(b),
                    None => break,
                }
            }
        }
        if iov.is_empty() {
            conn.in_flight.set(false);
            if let Some((code, reason)) = conn.closing.get() {
                if code != close::ABNORMAL {
                    write_close(writer, code, reason, Duration::from_millis(500)).await;
                }
                let _ = writer.shutdown().await;
                return;
            }
            conn.writer.notified().await;
            continue;
        }
        conn.in_flight.set(true);
        iov.prepare();
        let result = monoio::select! {
            r = writer.writev(iov) => Some(r),
            _ = conn.abort.notified() => None,
        };
        let Some((Ok(n), back)) = result else {
            // Aborted or failed: try the close frame briefly, then give up.
            if let Some((code, reason)) = conn.closing.get().filter(|(c, _)| *c != close::ABNORMAL)
            {
                write_close(writer, code, reason, Duration::from_millis(100)).await;
            }
            conn.closing.set(
                conn.closing
                    .get()
                    .or(Some((close::ABNORMAL, "write failed"))),
            );
            return;
        };
        iov = back;
        iov.advance(n);
        dm.wrote(n);
        let resume = {
            let mut q = conn.q.borrow_mut();
            q.wrote(n);
            q.below_low_water()
        };
        if resume && conn.reader_paused.get() {
            conn.reader.notify();
        }
    }
}

/// Writes a close frame, waiting at most `limit`. The timer is boxed so that the writer's
/// future, which lives as long as the connection, does not carry its size (measured: the
/// writer's future shrank from 1.4 KiB to a few hundred bytes).
async fn write_close(
    writer: &mut OwnedWriteHalf<TcpStream>,
    code: u16,
    reason: &str,
    limit: Duration,
) {
    let frame = close_frame(code, reason);
    let _ = Box::pin(monoio::time::timeout(limit, writer.write_all(frame))).await;
}

/// Turns an HTTP-level helper into a handler (keeps `routes.rs` free of danmaku types).
pub fn handler() -> http::Handler<Danmaku> {
    http::handler(ws_handler)
}
