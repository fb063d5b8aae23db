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

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, OwnedReadHalf, Splitable};
use monoio::net::TcpStream;

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
        Ok((room, open)) => Reply::Takeover(Box::new(move |stream, _leftover| {
            Box::pin(stream_events(api, stream, room, allow, open))
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
async fn closed_by_peer(mut reader: OwnedReadHalf<TcpStream>) {
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
    stream: TcpStream,
    room: String,
    allow: Option<String>,
    _open: Open,
) {
    let cfg = &api.config().api;
    let poll = Duration::from_millis(cfg.sse_poll_ms);
    let keepalive = Duration::from_secs(cfg.sse_keepalive_secs);
    let write_timeout = Duration::from_millis(api.config().http.write_timeout_ms);
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Connection: close\r\nX-Accel-Buffering: no\r\n",
    );
    if let Some(origin) = &allow {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str("\r\nretry: 3000\n\n");
    // Counted as an answer; a stream has no duration to put in the histogram.
    api.metrics.observe_status(200);

    let out = Rc::new(OutQueue::new(QUEUE_LIMIT, Policy::Drop));
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
