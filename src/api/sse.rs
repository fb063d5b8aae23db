//! `GET /api/v1/rooms/{id}/events`: a room's live status and online count as Server-Sent
//! Events.
//!
//! The handler takes the connection over ([`Reply::Takeover`]) and writes a
//! `text/event-stream` body until the client leaves or the server shuts down. Every
//! `api.sse_poll_ms` (default 1 s) it asks the room's home shard for the room's state
//! (`port().call` → `home_status`) and sends an event only when something changed:
//!
//! ```text
//! event: live
//! data: {"room":"r1","live":true}
//!
//! event: online
//! data: {"room":"r1","online":42}
//! ```
//!
//! Both are sent once on connect. A `: keep-alive` comment goes out after
//! `api.sse_keepalive_secs` without an event, so proxies keep the stream open and a
//! vanished client is noticed by a failed write. The body is delimited by the connection
//! closing (`Connection: close`), as EventSource expects; `retry: 3000` asks browsers to
//! reconnect after 3 s. Each shard serves at most `api.sse_max_per_shard` streams.
//!
//! Events go out through the connection's outbound queue ([`crate::outq`]) and its writer
//! task, like every other stream: bounded ([`QUEUE_LIMIT`]), sent directly while the client
//! keeps up, and ended when the oldest unwritten byte waited `http.write_timeout_ms`.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::sock::Sock;
use bytes::BytesMut;
use monoio::io::{AsyncReadRent, OwnedReadHalf, Splitable};

use super::error::{ApiError, ApiResult};
use super::Api;
use super::{cors, input, rooms};
use crate::http::{self, Reply, Request};
use crate::outq::{write_loop, Offer, OutQueue, Policy, Timeout};

/// Bytes an event stream may have waiting for a client that does not read. An event is a
/// few dozen bytes and at most two go out per poll, so this is many minutes of them; past
/// twice this the stream is closed.
const QUEUE_LIMIT: usize = 64 * 1024;

thread_local! {
    /// Event streams open on this shard (each shard is one thread).
    static OPEN: Cell<usize> = const { Cell::new(0) };
}

/// Counts a stream open for as long as it lives.
struct Open;

impl Open {
    fn try_new(max: usize) -> Option<Open> {
        OPEN.with(|n| {
            (n.get() < max).then(|| {
                n.set(n.get() + 1);
                Open
            })
        })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

pub fn handler() -> http::Handler<Api> {
    http::handler(events)
}

async fn events(api: Rc<Api>, req: Request) -> Reply {
    let allow = cors::allow_origin(&api.config().cors, &req);
    match prepare(&api, &req).await {
        Ok((room, open)) => Reply::Takeover(Box::new(move |stream, _leftover, held| {
            http::hold(held, stream_events(api, stream, room, allow, open))
        })),
        Err(e) => Reply::Response(cors::decorate(e.response(), allow.as_deref())),
    }
}

async fn prepare(api: &Rc<Api>, req: &Request) -> ApiResult<(String, Open)> {
    let id = input::room_id(req)?;
    rooms::load(api, &id).await?;
    if api.shutdown.is_raised() {
        return Err(ApiError::busy());
    }
    let open = Open::try_new(api.config().api.sse_max_per_shard).ok_or_else(|| {
        ApiError::new(
            super::error::SERVER_BUSY,
            "too many event streams on this server, retry later",
        )
    })?;
    Ok((id, open))
}

fn event(out: &mut String, name: &str, data: &serde_json::Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

/// Resolves when the client closes its side (or the connection fails).
async fn closed_by_peer(mut reader: OwnedReadHalf<Sock>) {
    let mut buf = Vec::with_capacity(64);
    loop {
        let (r, b) = reader.read(buf).await;
        match r {
            Ok(0) | Err(_) => return,
            // Nothing is expected from an event-stream client: discard.
            Ok(_) => {
                buf = b;
                buf.clear();
            }
        }
    }
}

async fn stream_events(
    api: Rc<Api>,
    stream: Sock,
    room: String,
    allow: Option<String>,
    _open: Open,
) {
    let cfg = &api.config().api;
    let poll = Duration::from_millis(cfg.sse_poll_ms);
    let keepalive = Duration::from_secs(cfg.sse_keepalive_secs);
    let write_timeout = Duration::from_millis(api.config().http.write_timeout_ms);
    let head = event_stream_head(allow.as_deref());
    // Counted as an answer; a stream has no duration to put in the histogram.
    api.metrics.observe_status(200);

    let (out, reader, writer_task) = start_writer(stream, QUEUE_LIMIT, write_timeout);
    let mut peer_gone = std::pin::pin!(closed_by_peer(reader));
    let mut pending = BytesMut::from(head.as_bytes());
    let mut last: Option<(u64, bool)> = None;
    let mut last_write = Instant::now();
    loop {
        let (online, live) = rooms::status(&api, &room).await;
        let mut out_text = String::new();
        if last.map(|l| l.1) != Some(live) {
            event(
                &mut out_text,
                "live",
                &serde_json::json!({"room": room, "live": live}),
            );
        }
        if last.map(|l| l.0) != Some(online) {
            event(
                &mut out_text,
                "online",
                &serde_json::json!({"room": room, "online": online}),
            );
        }
        last = Some((online, live));
        if out_text.is_empty() && last_write.elapsed() >= keepalive {
            out_text.push_str(": keep-alive\n\n");
        }
        pending.extend_from_slice(out_text.as_bytes());
        if !pending.is_empty() {
            let bytes = std::mem::take(&mut pending).freeze();
            if out.send(bytes) != Offer::Queued {
                break;
            }
            last_write = Instant::now();
        }
        monoio::select! {
            _ = &mut peer_gone => break,
            _ = api.shutdown.wait() => break,
            // The writer stopped: the client failed or took too long.
            _ = out.reader_notified() => break,
            _ = monoio::time::sleep(poll) => {}
        }
    }
    // Nothing more goes out: the client left, or the server stops.
    out.abort();
    writer_task.await;
}

/// `GET /api/v1/rooms/{id}/danmaku/stream[?since=ID][&token=JWT]`: the room's danmaku as
/// Server-Sent Events, for clients that cannot hold a WebSocket.
///
/// The stream is a danmaku viewer like a WebSocket one (`danmaku::plain`): joined on the
/// room's home shard (with `since`, or `Last-Event-ID`, which wins: a resume), sent the same
/// frames, each as one event named by its `type` whose `data` is the frame's JSON — `gap`,
/// `history`, `batch`, `online`, `pm` — and, when the engine closes it (kick, ban, token
/// revoked, slow consumer, shutdown), a last `close` event with the WebSocket close code.
/// `history` and `batch` events carry `id:` = the highest item id sent so far. Like `/ws`,
/// any valid room id may be read, anonymously or as the user of a token (`Authorization:
/// Bearer`, or `?token=` since EventSource cannot set headers).
pub fn danmaku_handler() -> http::Handler<Api> {
    http::handler(danmaku_events)
}

async fn danmaku_events(api: Rc<Api>, req: Request) -> Reply {
    let allow = cors::allow_origin(&api.config().cors, &req);
    match prepare_danmaku(&api, &req) {
        Ok(ready) => Reply::Takeover(Box::new(move |stream, _leftover, held| {
            http::hold(held, stream_danmaku(api, stream, ready, allow))
        })),
        Err(e) => Reply::Response(cors::decorate(e.response(), allow.as_deref())),
    }
}

/// A danmaku stream's room, user, resume point and its place under the per-shard cap.
struct DanmakuStream {
    room: String,
    claims: Option<crate::auth::Claims>,
    since: Option<u64>,
    open: Open,
}

fn prepare_danmaku(api: &Rc<Api>, req: &Request) -> ApiResult<DanmakuStream> {
    let room = input::room_id(req)?;
    let claims = if req.header("authorization").is_some() {
        Some(input::bearer(api, req)?)
    } else {
        match req.query("token").filter(|t| !t.is_empty()) {
            Some(t) => Some(input::bearer_header(api, Some(&format!("Bearer {t}")))?),
            None => None,
        }
    };
    let since = match req
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| req.query("since"))
    {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(crate::danmaku::protocol::parse_since(&s).ok_or_else(|| {
            ApiError::field("since", "since (or Last-Event-ID) must be an item id")
        })?),
    };
    if api.shutdown.is_raised() {
        return Err(ApiError::busy());
    }
    let open = Open::try_new(api.config().api.sse_max_per_shard).ok_or_else(|| {
        ApiError::new(
            super::error::SERVER_BUSY,
            "too many event streams on this server, retry later",
        )
    })?;
    Ok(DanmakuStream {
        room,
        claims,
        since,
        open,
    })
}

async fn stream_danmaku(api: Rc<Api>, stream: Sock, s: DanmakuStream, allow: Option<String>) {
    use crate::danmaku::plain::{frames_queued, sse_event, SSE_END};
    use crate::outq::Kind;

    let _open = s.open;
    let dm = api.danmaku.clone();
    let (queue_bytes, heartbeat) = dm.reader_limits();
    let keepalive = Duration::from_secs(api.config().api.sse_keepalive_secs).min(heartbeat);
    let write_timeout = Duration::from_millis(api.config().http.write_timeout_ms);
    let head = event_stream_head(allow.as_deref());
    api.metrics.observe_status(200);

    let (out, reader, writer_task) = start_writer(stream, queue_bytes, write_timeout);
    let mut peer_gone = std::pin::pin!(closed_by_peer(reader));
    let _ = out.send(bytes::Bytes::from(head));
    let conn = dm.open_reader(s.room.into(), s.claims, s.since);
    let mut last_id = s.since.unwrap_or(0);
    let mut last_write = Instant::now();
    loop {
        dm.reader_alive(&conn);
        // While the client is behind, frames wait in the viewer's queue, where the
        // engine's slow-consumer rules judge them as for a WebSocket.
        if !out.backed_up() {
            for frame in dm.take_for_reader(&conn) {
                let Some(ev) = sse_event(&frame, &mut last_id) else {
                    continue;
                };
                let kind = if ev.droppable {
                    Kind::Droppable { keyframe: false }
                } else {
                    Kind::MustSend
                };
                if out.offer(&[&ev.head, &ev.data, &SSE_END], kind, Instant::now()) == Offer::Closed
                {
                    conn.close_now(crate::danmaku::protocol::close::POLICY, "slow consumer");
                }
                last_write = Instant::now();
            }
        }
        if let Some((code, reason)) = conn.closing() {
            if out.is_open() {
                let data = serde_json::json!({"code": code, "reason": reason});
                let _ = out.send(bytes::Bytes::from(format!(
                    "event: close\ndata: {data}\n\n"
                )));
            }
            break;
        }
        if last_write.elapsed() >= keepalive {
            let _ = out.send(bytes::Bytes::from_static(b": keep-alive\n\n"));
            last_write = Instant::now();
        }
        let backed_up = out.backed_up();
        let writer_news = async {
            if backed_up {
                out.wait_drained().await
            } else {
                out.reader_notified().await
            }
        };
        let wait = keepalive.saturating_sub(last_write.elapsed());
        monoio::select! {
            _ = frames_queued(&conn) => {}
            _ = writer_news => {
                if !out.is_open() {
                    // The writer stopped: the client failed or took too long.
                    break;
                }
            }
            _ = &mut peer_gone => break,
            _ = monoio::time::sleep(wait) => {}
        }
    }
    if !conn.is_closing() {
        conn.close_now(crate::danmaku::protocol::close::ABNORMAL, "stream ended");
    }
    dm.unregister(&conn);
    // What is queued (the close event) goes out within the write timeout.
    out.finish();
    writer_task.await;
}

/// The head of an event stream (and the client's retry interval), with the CORS answer
/// when the origin is allowed.
fn event_stream_head(allow: Option<&str>) -> String {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Connection: close\r\nX-Accel-Buffering: no\r\n",
    );
    if let Some(origin) = allow {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str("\r\nretry: 3000\n\n");
    head
}

/// An event stream's outbound queue (`limit` bytes) and its writer task, which gives up on
/// a peer whose oldest unwritten byte waited `write_timeout`; the read half is the caller's
/// (to notice the peer closing).
fn start_writer(
    stream: Sock,
    limit: usize,
    write_timeout: Duration,
) -> (
    Rc<OutQueue>,
    OwnedReadHalf<Sock>,
    monoio::task::JoinHandle<()>,
) {
    let out = Rc::new(OutQueue::new(limit, Policy::Drop));
    out.set_fd(stream.as_raw_fd());
    let (reader, mut writer) = stream.into_split();
    let writer_task = {
        let out = out.clone();
        monoio::spawn(async move {
            write_loop(
                &out,
                &mut writer,
                Timeout::OldestByte(write_timeout),
                |_| {},
            )
            .await;
        })
    };
    (out, reader, writer_task)
}
