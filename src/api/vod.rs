//! VOD: `GET /vod/{id}.flv`, a recording played back with HTTP `Range` (RFC 9110 §14).
//!
//! The id is checked (16 lower-case hex digits) and looked up in the recorder's index on
//! the vod thread; no part of the request path reaches the filesystem. The answer is 200
//! (whole file), 206 (one range, `Content-Range`) or 416 (`Content-Range: bytes */len`);
//! several ranges, a malformed `Range` or an `If-Range` that is not the current `ETag`
//! get the whole file (the choices are argued in [`crate::http::range`]). Every answer
//! carries `Accept-Ranges: bytes` and an `ETag` made of the id and the length, so a
//! recording still being written has a new tag as it grows and a stale `If-Range` gets
//! the whole (current) file.
//!
//! The body is streamed: the handler takes the connection over and asks the vod thread for
//! one chunk of at most [`READ_CHUNK`] bytes at a time, writing each before asking for the
//! next, so a connection holds one chunk and a shard never reads a file itself. A write
//! that makes no progress for `http.write_timeout_ms` ends the connection. With
//! `media.play_sign` on, the recording's stream's play signature is required, as for live
//! play.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;

use super::Api;
use crate::codes;
use crate::http::range::{self, Ranged};
use crate::http::{self, Reply, Request, Response};
use crate::sock::Sock;
use crate::store::recordings::{valid_id, READ_CHUNK};
use crate::store::StoreError;

/// A body already started waits this long for a busy vod thread, this many times in a row.
const BUSY_WAIT: Duration = Duration::from_millis(10);
const BUSY_RETRIES: u32 = 200;

pub fn handler() -> http::Handler<Api> {
    http::handler(vod)
}

fn not_found() -> Response {
    Response::error(404, codes::RECORDING_NOT_FOUND, "no such recording")
}

async fn vod(api: Rc<Api>, req: Request) -> Reply {
    let Some(id) = req
        .param("id")
        .filter(|id| valid_id(id))
        .map(str::to_string)
    else {
        return not_found().into();
    };
    let recordings = &api.shared.recordings;
    let stat = match recordings.stat(id.clone()).await {
        Ok(Some(stat)) => stat,
        Ok(None) => return not_found().into(),
        Err(e) => return super::error::ApiError::from(e).response().into(),
    };
    let query = req.head.query.as_deref().unwrap_or("");
    if let Err(e) = crate::live::admission::play_signature(&api.live, &stat.entry.stream, query) {
        return Response::error(
            403,
            codes::PLAY_SIGNATURE_REFUSED,
            format!("play refused: {e}"),
        )
        .into();
    }
    let len = stat.len;
    let etag = format!("\"{id}-{len:x}\"");
    let ranged = range::resolve(req.header("range"), req.header("if-range"), &etag, len);
    let (status, start, end) = match ranged {
        Ranged::Unsatisfiable => {
            let mut r = Response::error(
                416,
                http::code::RANGE_NOT_SATISFIABLE,
                "range not satisfiable",
            );
            r.headers.push(("Content-Range", format!("bytes */{len}")));
            r.headers.push(("Accept-Ranges", "bytes".into()));
            r.headers.push(("ETag", etag));
            return r.into();
        }
        Ranged::Full => ("200 OK", 0, len),
        Ranged::Part { start, end } => ("206 Partial Content", start, end + 1),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: video/x-flv\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\nCache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\n",
        end - start
    );
    if let Ranged::Part { start, end } = ranged {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let timeout = Duration::from_millis(api.config().http.write_timeout_ms);
    Reply::Takeover(Box::new(move |sock, _rest, held| {
        crate::http::hold(
            held,
            send(api, sock, id, Bytes::from(head), start, end, timeout),
        )
    }))
}

/// Writes the head, then bytes `start..end` of recording `id`, one chunk at a time.
async fn send(
    api: Rc<Api>,
    mut sock: Sock,
    id: String,
    head: Bytes,
    mut at: u64,
    end: u64,
    timeout: Duration,
) {
    if !write(&mut sock, head, timeout).await {
        return;
    }
    let mut busy = 0;
    while at < end {
        let want = (end - at).min(READ_CHUNK as u64) as usize;
        let chunk = match api.shared.recordings.read(id.clone(), at, want).await {
            Ok(Some(c)) if !c.is_empty() => c,
            // The vod thread's queue is full: wait a little (at most `BUSY_RETRIES` times
            // in a row) rather than cut a body that has started.
            Err(StoreError::Busy) if busy < BUSY_RETRIES => {
                busy += 1;
                monoio::time::sleep(BUSY_WAIT).await;
                continue;
            }
            // Deleted (retention) or unreadable meanwhile, or the thread is busy: the body
            // stops short and the connection closes, which the client sees as an error.
            other => {
                tracing::warn!(%id, at, answer = ?other.map(|c| c.map(|c| c.len())), "vod read ended early");
                return;
            }
        };
        busy = 0;
        at += chunk.len() as u64;
        if !write(&mut sock, chunk, timeout).await {
            return;
        }
    }
}

async fn write(sock: &mut Sock, bytes: Bytes, timeout: Duration) -> bool {
    matches!(
        monoio::time::timeout(timeout, sock.write_all(bytes)).await,
        Ok((Ok(_), _))
    )
}
