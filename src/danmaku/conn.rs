//! The danmaku WebSocket connection driver: upgrade, then one task per connection that
//! reads and is its own writer, while there is something to do: idle, it parks.
//!
//! - `GET /ws?room=ID[&token=JWT][&since=ID]` is checked (room id, upgrade headers, Origin allow-list,
//!   token from the query or `Sec-WebSocket-Protocol`) before the 101 is sent.
//! - The task waits for readability without holding a buffer, so an idle connection owns
//!   no read memory; it decodes frames and hands each message to [`super::client`] (which
//!   forwards posts to the room's home shard).
//! - Frames go to the socket directly while it takes them (the room's end-of-turn flush,
//!   replies); what it did not take waits in the connection's queue (the rules are in
//!   [`super::viewer`]), and the task then also waits for writability and sends the queue
//!   with one `sendmsg` ([`crate::outq::OutQueue::send_queued`]): no write is ever left in
//!   flight, so the task goes on reading, and there is no writer task (15,000 idle
//!   connections, `bench/fanout.sh --pin --shards 1 --idle-conns 15000`: 1.8-2.25 KiB each
//!   instead of 2.4-2.8 KiB with a writer task each; `bench/runs/2026-12-06-vm-issue12`).
//!   While the queue is over its bound the task decodes nothing (back-pressure: a client
//!   that does not read cannot make the server answer it into memory) and only writes,
//!   until the queue is under its bound again.
//! - Idle (nothing read and undecoded, nothing queued, not closing), a TCP connection parks
//!   ([`super::park`]): its task ends, and its socket waits in the shard's epoll set until
//!   it is readable, something is queued for it, or it is closed; then a new task resumes
//!   it ([`resume`]). 15,000 idle connections (`bench/fanout.sh --pin --shards 1
//!   --idle-conns 15000`) took 1.45 KiB each with a task each, 0.49 KiB parked, and
//!   347 B parked without their outbound queue (`bench/runs/2026-12-06-vm-issue12-park`).
//! - At the end it writes what is queued ([`crate::outq::write_loop`]), then the close
//!   frame.
//!
//! The state the task and the shard's rooms share is [`super::viewer::Conn`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use crate::sock::Sock;
use bytes::BytesMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};

use super::engine::Danmaku;
use super::park::{self, Parked};
use super::protocol::close;
use super::viewer::{Conn, User};
use super::{valid_room_id, RoomId};
use crate::http::{self, code as http_code, Held, Reply, Request, Response};
use crate::outq::{End, Timeout};
use crate::sockio::{read_append, readable, writable};
use crate::ws::codec::{close_frame, Decoder};
use crate::ws::handshake::{check_upgrade, switching_protocols};

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
    let since = match req.query("since") {
        None => None,
        Some(s) => match super::protocol::parse_since(&s) {
            Some(n) => Some(n),
            None => {
                return fail(
                    400,
                    http_code::BAD_REQUEST,
                    "since must be an item id (a non-negative integer)",
                )
            }
        },
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
    Reply::Takeover(Box::new(move |stream, leftover, held| {
        Box::pin(run(
            dm,
            stream,
            leftover,
            (room.into(), since),
            (user, held),
            response,
        ))
    }))
}

/// Bytes reserved per read. Client messages are small; a larger frame grows the buffer
/// only while it is being read.
const READ_CHUNK: usize = 1024;

async fn run(
    dm: Rc<Danmaku>,
    stream: Sock,
    leftover: BytesMut,
    room: (RoomId, Option<u64>),
    (user, held): (Option<Rc<User>>, Held),
    response: Vec<u8>,
) {
    // The opening is boxed and finished before the long-lived part starts, so that what
    // it needed (the 101's buffer, a timer) is not part of the connection's future for
    // the connection's whole life (measured: this future went from 1,648 to 648 bytes).
    let Some((conn, stream)) = Box::pin(open(&dm, stream, room, user, response)).await else {
        return;
    };
    drive(dm, conn, stream, leftover, held, false).await;
}

/// A parked connection's new task (`super::park`): it reads what woke it, and parks again
/// once idle.
pub(super) async fn resume(dm: Rc<Danmaku>, conn: Rc<Conn>, parked: Parked) {
    match park::stream_of(parked.fd) {
        Ok(stream) => {
            let stream = Sock::Tcp(stream);
            drive(dm, conn, stream, BytesMut::new(), parked.held, true).await
        }
        Err(_) => {
            conn.close_now(close::ABNORMAL, "resume failed");
            dm.unregister(&conn);
        }
    }
}

/// The connection's life after the opening: reads and writes until it ends, or parks
/// when idle.
async fn drive(
    dm: Rc<Danmaku>,
    conn: Rc<Conn>,
    stream: Sock,
    leftover: BytesMut,
    held: Held,
    resumed: bool,
) {
    // TLS connections are served through a pump task of their own, and do not park.
    let parkable = matches!(stream, Sock::Tcp(_)) && dm.parking.get().is_some();
    let (mut reader, mut writer) = stream.into_split();
    let mut held = held;
    let mut buf = leftover;
    let mut resumed = resumed;
    loop {
        let park = parkable.then_some(resumed);
        match read_loop(&dm, &conn, reader, &writer, buf, park).await {
            Ended::Closed => break,
            Ended::Idle(r) => match try_park(&dm, &conn, r, writer, held) {
                None => return,
                Some((r, w, h)) => {
                    // It could not park: it goes on waiting in its task.
                    (reader, writer, held, buf, resumed) = (r, w, h, BytesMut::new(), true);
                }
            },
        }
    }
    conn.close(close::ABNORMAL, "reader ended");
    // Boxed: the last writes' state is not part of the future the connection holds for
    // its whole life.
    Box::pin(write_loop(dm.clone(), conn.clone(), writer)).await;
    dm.unregister(&conn);
    drop(held);
}

type Halves = (OwnedReadHalf<Sock>, OwnedWriteHalf<Sock>, Held);

/// Parks an idle connection: its socket goes to the shard's epoll set as a descriptor of
/// its own (a duplicate: the runtime's stream may still be referenced by a cancelled
/// poll, so it is let go rather than taken apart), and its task ends. `None` once parked;
/// the halves back when it cannot park (a TLS connection, no epoll set, a wake-up due).
fn try_park(
    dm: &Danmaku,
    conn: &Conn,
    reader: OwnedReadHalf<Sock>,
    writer: OwnedWriteHalf<Sock>,
    held: Held,
) -> Option<Halves> {
    let Some(parking) = dm.parking.get() else {
        return Some((reader, writer, held));
    };
    // (Only TCP connections get here: `drive`'s `parkable`.)
    let sock = match reader.reunite(writer) {
        Ok(s) => s,
        Err(e) => return Some((e.0, e.1, held)),
    };
    let dup = match &sock {
        // SAFETY: dup on an open descriptor; a new one it returns is ours.
        Sock::Tcp(tcp) => match unsafe { libc::fcntl(tcp.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) } {
            fd if fd >= 0 => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            _ => None,
        },
        Sock::Tls(..) => None,
    };
    let Some(dup) = dup else {
        let (r, w) = sock.into_split();
        return Some((r, w, held));
    };
    let new_fd = dup.as_raw_fd();
    match parking.park(conn, dup, held) {
        Ok(()) => {
            conn.set_fd(new_fd);
            drop(sock);
            None
        }
        Err((_dup, held)) => {
            let (r, w) = sock.into_split();
            Some((r, w, held))
        }
    }
}

/// How [`read_loop`] ended.
enum Ended {
    /// The connection is done (closed, failed, or closing): its last writes follow.
    Closed,
    /// Nothing to do until the peer sends or something is queued: it may park.
    Idle(OwnedReadHalf<Sock>),
}

/// Sends the 101, registers the connection and asks the room's home to admit it.
async fn open(
    dm: &Rc<Danmaku>,
    mut stream: Sock,
    (room, since): (RoomId, Option<u64>),
    user: Option<Rc<User>>,
    response: Vec<u8>,
) -> Option<(Rc<Conn>, Sock)> {
    let settings = &dm.ctx.shared.settings;
    let write = monoio::time::timeout(Duration::from_secs(10), stream.write_all(response)).await;
    if !matches!(write, Ok((Ok(_), _))) {
        return None;
    }
    if settings.send_buffer > 0 {
        stream.set_send_buffer(settings.send_buffer);
    }
    let conn = dm.register(room, user);
    conn.set_fd(stream.as_raw_fd());
    dm.join_since(&conn, since);
    Some((conn, stream))
}

async fn read_loop(
    dm: &Rc<Danmaku>,
    conn: &Rc<Conn>,
    mut reader: OwnedReadHalf<Sock>,
    writer: &OwnedWriteHalf<Sock>,
    mut buf: BytesMut,
    park: Option<bool>,
) -> Ended {
    let mut decoder = Decoder::new(dm.ctx.shared.settings.ws);
    // `park`: None, it never parks; Some(resumed): it parks when idle, except that a
    // resumed connection first waits for what woke it (it would park again at once).
    let mut may_park = park == Some(false);
    loop {
        // Back-pressure: while the peer does not take what it is sent, nothing it sent is
        // decoded (not even what is already buffered), so it cannot make the server
        // answer it into memory; its frames wait in the kernel, and its TCP window closes.
        while conn.out().backed_up() {
            let woke = monoio::select! {
                w = writable(writer) => Woke::Writable(w.is_ok()),
                _ = conn.out().reader_notified() => Woke::Closing,
            };
            if conn.is_closing() || !send_queued(dm, conn, woke) {
                return Ended::Closed;
            }
        }
        match decoder.decode(&mut buf) {
            Ok(Some(msg)) => {
                super::client::on_message(dm, conn, msg);
                if conn.is_closing() {
                    return Ended::Closed;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                conn.close(e.close_code(), e.reason());
                return Ended::Closed;
            }
        }
        let full = conn.out().queued_bytes() > 0;
        if buf.is_empty() && decoder.is_idle() {
            if may_park && !full && !conn.is_closing() {
                // Nothing to do until the peer sends or something is queued: park.
                return Ended::Idle(reader);
            }
            // Idle: hold no read memory until the next byte arrives.
            buf = BytesMut::new();
        }
        // Frames the socket did not take directly wait for it to be writable again; the
        // connection goes on reading meanwhile (a peer that reads nothing fills its queue
        // and is judged by the sweeper).
        let woke = monoio::select! {
            r = readable(&reader) => Woke::Readable(r.is_ok()),
            _ = conn.out().reader_notified() => Woke::Closing,
            _ = conn.out().changed() => Woke::Queued,
            w = writable_if(full, writer) => Woke::Writable(w.is_ok()),
        };
        may_park = park.is_some();
        match woke {
            _ if conn.is_closing() => return Ended::Closed,
            Woke::Closing => continue,
            Woke::Readable(false) => {
                conn.close_now(close::ABNORMAL, "read failed");
                return Ended::Closed;
            }
            Woke::Readable(true) => {}
            Woke::Queued | Woke::Writable(_) => {
                if !send_queued(dm, conn, woke) {
                    return Ended::Closed;
                }
                continue;
            }
        }
        let (res, b) = read_append(&mut reader, buf, READ_CHUNK).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => {
                // The peer is gone: nothing more can be written either.
                conn.close_now(close::ABNORMAL, "peer closed");
                return Ended::Closed;
            }
        }
    }
}

/// What woke the connection's task.
enum Woke {
    /// The socket has bytes (or failed: false).
    Readable(bool),
    /// The queue finished or aborted.
    Closing,
    /// Frames were queued: the socket did not take them directly.
    Queued,
    /// The socket can take bytes again (or failed: false).
    Writable(bool),
}

/// Waits for the socket to be writable when `full`, else never completes.
async fn writable_if(full: bool, writer: &OwnedWriteHalf<Sock>) -> std::io::Result<()> {
    if full {
        writable(writer).await
    } else {
        std::future::pending().await
    }
}

/// Sends what the queue holds, as far as the socket takes it now (one `sendmsg`, never a
/// write left in flight: the connection is its own writer, so an idle one holds no writer
/// task). False if the socket failed; the connection is then closed.
fn send_queued(dm: &Danmaku, conn: &Conn, woke: Woke) -> bool {
    if matches!(woke, Woke::Writable(false)) {
        conn.close_now(close::ABNORMAL, "write failed");
        return false;
    }
    dm.wrote(conn.out().send_queued() as usize);
    true
}

/// The connection's last writes: what is queued, then the close frame.
async fn write_loop(dm: Rc<Danmaku>, conn: Rc<Conn>, mut writer: OwnedWriteHalf<Sock>) {
    // The sweeper enforces the write timeout (it closes with a code), so none here.
    let end = crate::outq::write_loop(conn.out(), &mut writer, Timeout::Off, |n| dm.wrote(n)).await;
    let closing = conn.closing().filter(|(c, _)| *c != close::ABNORMAL);
    if end == End::Finished {
        if let Some((code, reason)) = closing {
            write_close(&mut writer, code, reason, Duration::from_millis(500)).await;
        }
        let _ = writer.shutdown().await;
        return;
    }
    // Aborted or failed: the reader must stop too; try the close frame briefly, then give up.
    conn.close(close::ABNORMAL, "write failed");
    if let Some((code, reason)) = closing {
        write_close(&mut writer, code, reason, Duration::from_millis(100)).await;
    }
}

/// Writes a close frame, waiting at most `limit`. The timer is boxed so that the writer's
/// future, which lives as long as the connection, does not carry its size (measured: the
/// writer's future shrank from 1.4 KiB to a few hundred bytes).
async fn write_close(writer: &mut OwnedWriteHalf<Sock>, code: u16, reason: &str, limit: Duration) {
    let frame = close_frame(code, reason);
    let _ = Box::pin(monoio::time::timeout(limit, writer.write_all(frame))).await;
}

/// Turns an HTTP-level helper into a handler (keeps `routes.rs` free of danmaku types).
pub fn handler() -> http::Handler<Danmaku> {
    http::handler(ws_handler)
}
