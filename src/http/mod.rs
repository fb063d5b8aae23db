//! The HTTP/1.1 front: one port serves REST, WebSocket upgrades, HTTP-FLV, HLS, metrics.
//!
//! - [`codec`]  — sans-IO request head parser (httparse), response heads.
//! - [`body`]   — sans-IO body decoder (length / strict chunked), growing with arrival.
//! - [`router`] — method + path pattern → handler, `{param}` segments, 404/405, each
//!   route's body limit and optional pre-body gate.
//! - [`range`]  — sans-IO `Range` / `If-Range` for stored files (VOD).
//! - [`conn`]   — the per-connection driver: reads, limits and timeouts, keep-alive,
//!   pipelined requests answered in order, graceful close, hand-over to upgrades.
//!
//! This module knows nothing of rooms or streams: handlers are `Fn(Rc<S>, Request)` over
//! the application's per-shard state `S`, and a handler that needs the socket for itself
//! (WebSocket, a streamed FLV body) answers [`Reply::Takeover`].

pub mod body;
pub mod codec;
pub mod conn;
pub mod range;
pub mod router;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

pub use codec::{Method, RequestHead};
pub use router::Router;

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A route handler over the application's per-shard state `S`.
pub type Handler<S> = Rc<dyn Fn(Rc<S>, Request) -> LocalBoxFuture<'static, Reply>>;

/// A check of a request's head before its body is read: `Err` is the answer to send
/// (the connection is then closed without reading the body).
pub type Gate<S> = Rc<dyn Fn(&S, &RequestHead) -> Result<(), Response>>;

/// Wraps an async fn as a [`Handler`].
pub fn handler<S, F, Fut>(f: F) -> Handler<S>
where
    F: Fn(Rc<S>, Request) -> Fut + 'static,
    Fut: Future<Output = Reply> + 'static,
{
    Rc::new(move |s, r| Box::pin(f(s, r)))
}

/// A handler that takes the connection over: it gets the socket, whatever was read past
/// the request and the connection's [`Held`], writes its own response head, and owns the
/// connection from then on.
pub type Takeover =
    Box<dyn FnOnce(crate::sock::Sock, BytesMut, Held) -> LocalBoxFuture<'static, ()>>;

/// What the listener holds for as long as a connection lives (its place under the
/// connection limits). A takeover keeps it until the connection ends, wherever the
/// connection then lives (a task, or parked on the shard: `crate::danmaku::park`).
pub struct Held(#[allow(dead_code)] Box<dyn std::any::Any>);

impl Held {
    pub fn new(what: impl std::any::Any) -> Self {
        Held(Box::new(what))
    }
}

/// The usual takeover's future: `f`, with `held` kept until it ends.
pub fn hold(held: Held, f: impl Future<Output = ()> + 'static) -> LocalBoxFuture<'static, ()> {
    Box::pin(async move {
        f.await;
        drop(held);
    })
}

/// A connection a handler took over, not started yet: [`Handover::start`] gives it the
/// listener's [`Held`].
pub struct Handover {
    pub(crate) takeover: Takeover,
    pub(crate) sock: crate::sock::Sock,
    pub(crate) rest: BytesMut,
}

impl Handover {
    pub fn start(self, held: Held) -> LocalBoxFuture<'static, ()> {
        (self.takeover)(self.sock, self.rest, held)
    }
}

/// Path parameters of the matched route, in pattern order.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    pub fn push(&mut self, name: &'static str, value: String) {
        self.0.push((name, value));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A complete request: head, collected body, route parameters and the peer.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
    pub params: Params,
    pub peer: SocketAddr,
    /// The request came over HTTPS (`server.https`).
    pub tls: bool,
}

impl Request {
    /// A query parameter, percent-decoded (`+` is a space, as browsers send forms).
    pub fn query(&self, name: &str) -> Option<String> {
        query_param(self.head.query.as_deref()?, name)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header_str(name)
    }
}

/// Finds `name` in an `a=1&b=2` query string and percent-decodes its value.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| router::percent_decode(&v.replace('+', " ")))?
    })
}

/// A response with a complete body.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_body(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self::with_body(status, "text/plain; charset=utf-8", body)
    }

    /// `{"code":0,"message":"ok","data":…}` with status 200.
    pub fn ok<T: Serialize>(data: &T) -> Self {
        Self::envelope(200, 0, "ok", data)
    }

    /// The error envelope: `{"code":…,"message":…,"data":null}`.
    pub fn error(status: u16, code: u32, message: impl AsRef<str>) -> Self {
        Self::envelope(status, code, message.as_ref(), &())
    }

    pub fn envelope<T: Serialize>(status: u16, code: u32, message: &str, data: &T) -> Self {
        #[derive(Serialize)]
        struct Envelope<'a, T> {
            code: u32,
            message: &'a str,
            data: &'a T,
        }
        let body = serde_json::to_vec(&Envelope {
            code,
            message,
            data,
        })
        .unwrap_or_else(|_| {
            br#"{"code":50000,"message":"response encoding failed","data":null}"#.to_vec()
        });
        Self::with_body(status, "application/json", body)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Stable error codes of the HTTP layer: the status times 100, so a client can read the
/// class from the code. API errors (see `docs/api.md`) use the same scheme.
pub mod code {
    pub const BAD_REQUEST: u32 = 40000;
    pub const NOT_FOUND: u32 = 40400;
    pub const METHOD_NOT_ALLOWED: u32 = 40500;
    pub const TIMEOUT: u32 = 40800;
    pub const BODY_TOO_LARGE: u32 = 41300;
    pub const RANGE_NOT_SATISFIABLE: u32 = 41600;
    pub const HEADERS_TOO_LARGE: u32 = 43100;
    pub const INTERNAL: u32 = 50000;
    pub const NOT_IMPLEMENTED: u32 = 50100;
    pub const UNAVAILABLE: u32 = 50300;
    pub const VERSION: u32 = 50500;
}

/// What a handler answers.
pub enum Reply {
    Response(Response),
    Takeover(Takeover),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Response(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param("a=1&room=r%201&x", "room").as_deref(),
            Some("r 1")
        );
        assert_eq!(query_param("q=a+b", "q").as_deref(), Some("a b"));
        assert_eq!(query_param("x", "x").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
    }

    #[test]
    fn error_envelope_shape() {
        let r = Response::error(404, code::NOT_FOUND, "no route");
        assert_eq!(r.status, 404);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"code":40400,"message":"no route","data":null}"#
        );
    }
}
