//! The per-connection HTTP/1.1 driver.
//!
//! One task per connection, on the shard that accepted it. The loop reads until a request
//! head parses, routes it, collects its body within the route's limit, runs the handler and
//! queues the response. Requests are handled one after another, so pipelined requests are
//! answered in order; responses to pipelined requests that are already buffered are
//! written together in one write.
//!
//! Time limits (all from [`HttpLimits`]):
//! - idle: no byte of a next request within `idle_timeout` → close quietly;
//! - head: the head not complete within `header_timeout` of its first byte (slowloris)
//!   → 408 and close;
//! - body: the body not complete within `body_timeout` → 408 and close;
//! - write: a response not accepted by the peer within `write_timeout` → close.
//!
//! Bodies: a route's gate (if any) checks the head before a body byte is read; a GET,
//! HEAD or OPTIONS route takes no body (a declared one is a 413, unread); a body buffer
//! grows with what arrives, within the route's limit, and all the bodies a shard holds at
//! once stay within `body_budget` (past it, a 503 with `Retry-After`).
//!
//! Which errors close: any error response to a request whose body was not read (we cannot
//! find the next request), every 408/413/431/400 from the parser, and any I/O error. Errors
//! never leave this task: a connection's failure is its own.
//!
//! On shutdown an idle connection is closed at once; a request in flight finishes and its
//! response carries `Connection: close`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::sock::Sock;
use bytes::{Buf, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use shards::local::Signal;

use crate::sockio::read_append;

use super::codec::{self, BodyDecoder, BodyFraming, HeadLimits, HttpError, Method, RequestHead};
use super::router::{Lookup, Router};
use super::{code, Reply, Request, Response};

/// Limits and timeouts of the HTTP front.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub head: HeadLimits,
    /// Body limit for routes that do not set their own.
    pub max_body: u64,
    /// Bytes of partial request bodies the shard may hold at once, all connections
    /// together; past it, the request that would grow them is answered 503.
    pub body_budget: u64,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

/// What the driver needs from the application's per-shard state.
pub trait Service: Sized + 'static {
    fn router(&self) -> &Router<Self>;
    fn limits(&self) -> &HttpLimits;
    /// Raised when the shard begins its graceful shutdown.
    fn shutdown(&self) -> &Signal;
    /// Called once per response written (for metrics): its status, the pattern of the
    /// route it matched (`None`: no route, or refused before routing) and how long since
    /// the first byte of its head. Takeovers (WebSocket, media) are not answers: not called.
    fn observe(&self, status: u16, route: Option<&'static str>, elapsed: Duration);
    /// Lets the application add headers (CORS, say) to an answer the HTTP layer gives on
    /// its own for a request whose head it has read: 404, 405, 413, 408 during the body.
    fn refine(&self, _head: &RequestHead, r: Response) -> Response {
        r
    }
}

/// What a request's duration metric needs: its route pattern and when its head began.
#[derive(Clone, Copy)]
struct Timing {
    route: Option<&'static str>,
    started: Instant,
}

impl Timing {
    fn unrouted(started: Option<Instant>) -> Self {
        Self {
            route: None,
            started: started.unwrap_or_else(Instant::now),
        }
    }
}

/// Bytes reserved per read when the buffer runs short. Small on purpose: most requests
/// fit, and an idle keep-alive connection holds no more than this.
const READ_CHUNK: usize = 4096;
/// The most buffer capacity (read or write) a connection keeps while it waits for its
/// next request; past it, a buffer is dropped and the next request starts a fresh one.
const KEEP_IDLE: usize = 2 * READ_CHUNK;
/// Responses queued for pipelined requests are flushed at least this often.
const MAX_PENDING_OUT: usize = 64 * 1024;
/// Bodies up to this size are copied next to their head (one write); larger ones are
/// written as their own buffer.
const INLINE_BODY: usize = 16 * 1024;

thread_local! {
    /// Bytes of request bodies being collected or handled on this shard (a shard is one
    /// thread), charged as body buffers grow.
    static BODY_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// One request's share of [`BODY_BYTES`], given back when it is dropped.
struct BodyCharge(u64);

impl BodyCharge {
    /// Charges the request for `now` bytes (it only grows); false if the shard is then
    /// over `budget`.
    fn update(&mut self, now: usize, budget: u64) -> bool {
        let now = now as u64;
        if now > self.0 {
            BODY_BYTES.with(|b| b.set(b.get() + (now - self.0)));
            self.0 = now;
        }
        BODY_BYTES.with(|b| b.get()) <= budget
    }
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        BODY_BYTES.with(|b| b.set(b.get().saturating_sub(self.0)));
    }
}

enum ReadOutcome {
    Data,
    Eof,
    Timeout,
    Shutdown,
    Failed,
}

/// Serves one connection until it closes, or until a handler takes it over: then the
/// takeover is returned, for the caller to run as a task of its own — the HTTP state of
/// this connection (buffers, the parser's future) is freed before a long-lived WebSocket or
/// media stream starts.
pub async fn serve<S: Service>(
    state: Rc<S>,
    stream: Sock,
    peer: SocketAddr,
) -> Option<super::Handover> {
    let mut next = None;
    serve_until_takeover(state, stream, peer, &mut next).await;
    next
}

async fn serve_until_takeover<S: Service>(
    state: Rc<S>,
    mut stream: Sock,
    peer: SocketAddr,
    next: &mut Option<super::Handover>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        // 1. A request head.
        let mut started = (!buf.is_empty()).then(Instant::now);
        let (head, head_len) = loop {
            if !buf.is_empty() {
                match codec::parse_head(&buf, state.limits().head) {
                    Ok(Some(parsed)) => break parsed,
                    Ok(None) => {}
                    Err(e) => {
                        return fail(&state, stream, out, e, None, Timing::unrouted(started)).await
                    }
                }
            }
            if !out.is_empty() && !flush(&state, &mut stream, &mut out).await {
                return;
            }
            let limits = state.limits();
            let (deadline, shutdown) = match started {
                None => (Instant::now() + limits.idle_timeout, Some(state.shutdown())),
                Some(t) => (t + limits.header_timeout, None),
            };
            if shutdown.is_some_and(|s| s.is_raised()) {
                return close_gracefully(stream).await;
            }
            if started.is_none() && buf.capacity() > KEEP_IDLE {
                // Idle between requests: keep no more than a small buffer, whatever the
                // last request needed (a 16 KiB head, a pipelined burst).
                buf = BytesMut::new();
            }
            let (outcome, b) = read_some(&mut stream, buf, deadline, shutdown).await;
            buf = b;
            match outcome {
                ReadOutcome::Data => {
                    started.get_or_insert_with(Instant::now);
                }
                ReadOutcome::Timeout if started.is_some() => {
                    return fail(
                        &state,
                        stream,
                        out,
                        HttpError::Timeout,
                        None,
                        Timing::unrouted(started),
                    )
                    .await
                }
                ReadOutcome::Shutdown | ReadOutcome::Timeout => {
                    return close_gracefully(stream).await
                }
                ReadOutcome::Eof | ReadOutcome::Failed => return,
            }
        };
        buf.advance(head_len);
        let mut timing = Timing::unrouted(started);

        // 2. Route it.
        let has_body = head.framing != BodyFraming::None;
        let (handler, params, body_limit, gate) = match head.method {
            None => {
                let r = Response::error(501, code::NOT_IMPLEMENTED, "method not implemented");
                if respond(&state, &mut stream, &mut out, r, false, false, timing).await {
                    finish(&state, stream, out).await;
                }
                return;
            }
            Some(method) => {
                let routed = match state.router().lookup(method, &head.path) {
                    Lookup::Found {
                        handler,
                        params,
                        body_limit,
                        gate,
                        pattern,
                    } => {
                        timing.route = Some(pattern);
                        let limit = match body_limit {
                            Some(l) => l,
                            // GET, HEAD and OPTIONS routes take no body unless they say so.
                            None if matches!(
                                method,
                                Method::Get | Method::Head | Method::Options
                            ) =>
                            {
                                0
                            }
                            None => state.limits().max_body,
                        };
                        Ok((handler, params, limit, gate))
                    }
                    Lookup::MethodNotAllowed(methods) => {
                        let allow: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                        Err(
                            Response::error(405, code::METHOD_NOT_ALLOWED, "method not allowed")
                                .header("Allow", allow.join(", ")),
                        )
                    }
                    Lookup::NotFound => Err(Response::error(404, code::NOT_FOUND, "not found")),
                };
                match routed {
                    Ok(found) => found,
                    Err(r) => {
                        // Answered without reading a body: keep the connection only if
                        // there is none to skip.
                        let r = state.refine(&head, r);
                        let keep = head.keep_alive && !has_body;
                        let head_only = method == Method::Head;
                        if !respond(&state, &mut stream, &mut out, r, keep, head_only, timing).await
                        {
                            return;
                        }
                        if keep {
                            continue;
                        }
                        return finish(&state, stream, out).await;
                    }
                }
            }
        };

        // 3. The route's check of the head (authentication), before any body byte is
        //    read: refused, it is answered and the connection closed with the body unread.
        if let Some(gate) = gate {
            if let Err(r) = gate(&state, &head) {
                let r = state.refine(&head, r);
                let head_only = head.method == Some(Method::Head);
                if respond(&state, &mut stream, &mut out, r, false, head_only, timing).await {
                    finish(&state, stream, out).await;
                }
                return;
            }
        }

        // 4. Its body, buffered as it arrives (never at its declared size).
        let mut decoder = match BodyDecoder::new(head.framing, body_limit) {
            Ok(d) => d,
            Err(e) => return fail(&state, stream, out, e, Some(&head), timing).await,
        };
        if has_body && head.expect_continue {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body_deadline = Instant::now() + state.limits().body_timeout;
        // Held until the handler is done with the body.
        let mut charge = BodyCharge(0);
        let budget = state.limits().body_budget;
        let body = loop {
            let decoded = decoder.decode(&mut buf);
            let held = match &decoded {
                Ok(Some(body)) => body.len(),
                _ => decoder.buffered(),
            };
            if !charge.update(held, budget) {
                return fail(&state, stream, out, HttpError::Busy, Some(&head), timing).await;
            }
            match decoded {
                Ok(Some(body)) => break body,
                Ok(None) => {}
                Err(e) => return fail(&state, stream, out, e, Some(&head), timing).await,
            }
            if !out.is_empty() && !flush(&state, &mut stream, &mut out).await {
                return;
            }
            let (outcome, b) = read_some(&mut stream, buf, body_deadline, None).await;
            buf = b;
            match outcome {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout => {
                    return fail(&state, stream, out, HttpError::Timeout, Some(&head), timing).await
                }
                _ => return,
            }
        };

        // 5. The handler, and its answer.
        let is_head = head.method == Some(Method::Head);
        let wants_keep_alive = head.keep_alive;
        let request = Request {
            head,
            body,
            params,
            peer,
            tls: stream.is_tls(),
        };
        let reply = handler(state.clone(), request).await;
        drop(charge);
        match reply {
            Reply::Response(r) => {
                let keep = wants_keep_alive && !state.shutdown().is_raised();
                if !respond(&state, &mut stream, &mut out, r, keep, is_head, timing).await {
                    return;
                }
                if !keep {
                    return finish(&state, stream, out).await;
                }
                // More pipelined bytes already here: answer them before writing.
                if (buf.is_empty() || out.len() >= MAX_PENDING_OUT)
                    && !flush(&state, &mut stream, &mut out).await
                {
                    return;
                }
            }
            Reply::Takeover(takeover) => {
                if !out.is_empty() && !flush(&state, &mut stream, &mut out).await {
                    return;
                }
                *next = Some(super::Handover {
                    takeover,
                    sock: stream,
                    rest: buf,
                });
                return;
            }
        }
    }
}

/// Queues `r` (head + body) into `out`; large bodies are written straight away.
/// Returns false if the connection failed.
async fn respond<S: Service>(
    state: &Rc<S>,
    stream: &mut Sock,
    out: &mut Vec<u8>,
    r: Response,
    keep_alive: bool,
    head_only: bool,
    timing: Timing,
) -> bool {
    state.observe(r.status, timing.route, timing.started.elapsed());
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let has_length = !(100..200).contains(&r.status) && r.status != 204;
    codec::encode_head(
        out,
        r.status,
        &headers,
        has_length.then_some(r.body.len()),
        keep_alive,
    );
    if head_only || r.body.is_empty() {
        return true;
    }
    if r.body.len() <= INLINE_BODY {
        out.extend_from_slice(&r.body);
        return true;
    }
    if !flush(state, stream, out).await {
        return false;
    }
    let write = stream.write_all(r.body);
    matches!(
        monoio::time::timeout(state.limits().write_timeout, write).await,
        Ok((Ok(_), _))
    )
}

/// Answers a request that cannot be served and closes.
async fn fail<S: Service>(
    state: &Rc<S>,
    mut stream: Sock,
    mut out: Vec<u8>,
    e: HttpError,
    head: Option<&RequestHead>,
    timing: Timing,
) {
    let code = match &e {
        HttpError::HeadersTooLarge | HttpError::TooManyHeaders => code::HEADERS_TOO_LARGE,
        HttpError::BodyTooLarge | HttpError::BodyNotAllowed => code::BODY_TOO_LARGE,
        HttpError::Malformed(_) => code::BAD_REQUEST,
        HttpError::UnsupportedVersion => code::VERSION,
        HttpError::UnsupportedTransferEncoding => code::NOT_IMPLEMENTED,
        HttpError::Timeout => code::TIMEOUT,
        HttpError::Busy => code::UNAVAILABLE,
    };
    tracing::debug!(error = ?e, "refusing request");
    let mut r = Response::error(e.status(), code, e.message());
    if e == HttpError::Busy {
        r = r.header("Retry-After", "1");
    }
    if let Some(head) = head {
        r = state.refine(head, r);
    }
    if respond(state, &mut stream, &mut out, r, false, false, timing).await {
        finish(state, stream, out).await;
    }
}

/// Writes what is queued, then closes gracefully.
async fn finish<S: Service>(state: &Rc<S>, mut stream: Sock, mut out: Vec<u8>) {
    if flush(state, &mut stream, &mut out).await {
        close_gracefully(stream).await;
    }
}

/// Writes everything in `out`. Returns false if the peer is gone or too slow.
async fn flush<S: Service>(state: &Rc<S>, stream: &mut Sock, out: &mut Vec<u8>) -> bool {
    let pending = std::mem::take(out);
    let write = stream.write_all(pending);
    match monoio::time::timeout(state.limits().write_timeout, write).await {
        Ok((Ok(_), mut buf)) => {
            buf.clear();
            // A burst of pipelined answers does not stay reserved on an idle connection.
            if buf.capacity() <= KEEP_IDLE {
                *out = buf;
            }
            true
        }
        _ => false,
    }
}

/// Reads once into `buf`, bounded by `deadline` and, if given, the shutdown signal.
/// A read that loses the race is cancelled; its buffer is dropped with it, which is why
/// every outcome but `Data` ends the connection.
async fn read_some(
    stream: &mut Sock,
    buf: BytesMut,
    deadline: Instant,
    shutdown: Option<&Signal>,
) -> (ReadOutcome, BytesMut) {
    let wait = deadline.saturating_duration_since(Instant::now());
    let read = read_append(stream, buf, READ_CHUNK);
    let result = match shutdown {
        Some(signal) => monoio::select! {
            r = monoio::time::timeout(wait, read) => Some(r),
            _ = signal.wait() => None,
        },
        None => Some(monoio::time::timeout(wait, read).await),
    };
    match result {
        None => (ReadOutcome::Shutdown, BytesMut::new()),
        Some(Err(_)) => (ReadOutcome::Timeout, BytesMut::new()),
        Some(Ok((Ok(0), buf))) => (ReadOutcome::Eof, buf),
        Some(Ok((Ok(_), buf))) => (ReadOutcome::Data, buf),
        Some(Ok((Err(_), buf))) => (ReadOutcome::Failed, buf),
    }
}

/// How long a connection refused at accept may take to send the start of its request.
/// Short: a client that sends nothing is closed without an answer, so a flood of refused
/// connections cannot park work on the shard.
const REFUSE_WAIT: Duration = Duration::from_millis(250);
/// What is read of a refused connection's request: enough to see that it is HTTP.
const REFUSE_READ: usize = 1024;

/// Answers a connection refused at accept (see `crate::admit`): one short read, bounded
/// by [`REFUSE_WAIT`] and [`REFUSE_READ`]; if what arrived looks like an HTTP request, a
/// `503` with `Retry-After` and the JSON error envelope, then a brief close. Anything else
/// (silence, a TLS hello, garbage) is closed without a word.
pub async fn refuse(mut stream: Sock, retry_after_secs: u32, message: &str) {
    let read = stream.read(Vec::with_capacity(REFUSE_READ));
    let head = match monoio::time::timeout(REFUSE_WAIT, read).await {
        Ok((Ok(n), buf)) if n > 0 => buf,
        _ => return,
    };
    // A request line starts with a method token: upper-case letters, then a space.
    let method_len = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == 0 || (method_len < head.len() && head[method_len] != b' ') {
        return;
    }
    let r = Response::error(503, code::UNAVAILABLE, message);
    let mut out = Vec::with_capacity(256);
    let retry = retry_after_secs.to_string();
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .chain([("Retry-After", retry.as_str())])
        .collect();
    codec::encode_head(&mut out, 503, &headers, Some(r.body.len()), false);
    out.extend_from_slice(&r.body);
    if let Ok((Ok(_), _)) = monoio::time::timeout(REFUSE_WAIT, stream.write_all(out)).await {
        close_within(stream, REFUSE_WAIT, 16 * 1024).await;
    }
}

/// Closes so that the peer sees our last response: shut down our side, then read and
/// discard briefly, so unread request bytes do not turn the close into a reset that would
/// destroy the response in flight.
pub async fn close_gracefully(stream: Sock) {
    close_within(stream, Duration::from_millis(500), 256 * 1024).await
}

/// [`close_gracefully`] within `wait` and at most `max_drain` bytes read and discarded.
async fn close_within(mut stream: Sock, wait: Duration, max_drain: usize) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + wait;
    let mut drained = 0usize;
    // monoio reads into `[len..capacity]`: the buffer is emptied before each read.
    let mut buf = Vec::with_capacity(4096);
    while drained < max_drain {
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, stream.read(buf)).await {
            Ok((Ok(n), mut b)) if n > 0 => {
                drained += n;
                b.clear();
                buf = b;
            }
            _ => break,
        }
    }
}
