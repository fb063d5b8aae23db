//! HTTP/1.1 request parsing and response encoding, sans-IO.
//!
//! Bytes in, requests out; nothing here touches a socket or a clock. The connection driver
//! ([`super::conn`]) feeds the buffer, applies the timeouts and writes what we encode.
//!
//! Parsing is in two steps, as a request is read: [`parse_head`] returns the request line and
//! headers once the whole header block is buffered (or says it needs more, or why it is
//! bad); the router then picks the body limit for that route, and [`BodyDecoder`]
//! (in [`super::body`]) collects a `Content-Length` or chunked body within that limit. Errors separate "need more bytes"
//! (`Ok(None)`) from bad input (`Err`), and each bad input maps to one status.

use std::fmt::Write as _;

use bytes::Bytes;

pub use super::body::{BodyDecoder, INITIAL_BODY_CAPACITY};

/// Limits on the request head. Exceeding them is a 431; malformed input is a 400.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// The largest header count httparse is asked to parse into (the stack array); the
/// configured `max_headers` may be lower, never higher.
pub const HEADER_SLOTS: usize = 128;

/// Why a request cannot be served; each maps to one status and a stable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// Header block larger than the limit (431).
    HeadersTooLarge,
    /// More header fields than the limit (431).
    TooManyHeaders,
    /// Body larger than the route allows (413).
    BodyTooLarge,
    /// A body sent to a route that takes none (413): refused from the head, unread.
    BodyNotAllowed,
    /// Malformed request line, header or chunked framing (400).
    Malformed(&'static str),
    /// Only HTTP/1.0 and 1.1 are spoken here (505).
    UnsupportedVersion,
    /// A transfer coding other than chunked (501).
    UnsupportedTransferEncoding,
    /// Headers or body not received in time (408).
    Timeout,
    /// The shard holds as many partial request bodies as it may (503, retry later).
    Busy,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadersTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge | HttpError::BodyNotAllowed => 413,
            HttpError::Malformed(_) => 400,
            HttpError::UnsupportedVersion => 505,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::Timeout => 408,
            HttpError::Busy => 503,
        }
    }

    pub fn message(&self) -> String {
        match self {
            HttpError::HeadersTooLarge => "request header block too large".into(),
            HttpError::TooManyHeaders => "too many request headers".into(),
            HttpError::BodyTooLarge => "request body too large".into(),
            HttpError::BodyNotAllowed => "this route takes no request body".into(),
            HttpError::Malformed(why) => format!("malformed request: {why}"),
            HttpError::UnsupportedVersion => "HTTP version not supported".into(),
            HttpError::UnsupportedTransferEncoding => "transfer encoding not supported".into(),
            HttpError::Timeout => "request not received in time".into(),
            HttpError::Busy => {
                "the server is receiving too many request bodies, retry later".into()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

/// How the body is framed, decided from the headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request line and header block.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// `None` for a method we do not serve (the router answers 405 or 501).
    pub method: Option<Method>,
    pub method_raw: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names lower-cased; values as sent (trimmed by httparse).
    pub headers: Vec<(String, Bytes)>,
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated header (e.g. `Connection`) contains `token`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .any(|(_, v)| {
                std::str::from_utf8(v)
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: the head is incomplete (read more). `Ok(Some((head, n)))`: the head took the
/// first `n` bytes. The 16 KiB limit is checked on what is buffered, so an endless header
/// block is refused as soon as it passes the limit, not when it ends.
pub fn parse_head(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut req = httparse::Request::new(&mut slots);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::UnsupportedVersion),
        Err(e) => return Err(HttpError::Malformed(httparse_reason(e))),
    };
    let len = match status {
        httparse::Status::Partial => {
            if buf.len() > limits.max_header_bytes {
                return Err(HttpError::HeadersTooLarge);
            }
            return Ok(None);
        }
        httparse::Status::Complete(len) => len,
    };
    if len > limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge);
    }
    if req.headers.len() > limits.max_headers {
        return Err(HttpError::TooManyHeaders);
    }
    let method_raw = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or(1);
    if !target.starts_with('/') {
        // Absolute-form and authority-form targets are for proxies; we are an origin.
        return Err(HttpError::Malformed("request target must be a path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        headers.push((h.name.to_ascii_lowercase(), Bytes::copy_from_slice(h.value)));
    }
    let mut head = RequestHead {
        method: Method::parse(&method_raw),
        method_raw,
        path,
        query,
        minor_version,
        headers,
        framing: BodyFraming::None,
        keep_alive: false,
        expect_continue: false,
    };
    head.framing = framing(&head)?;
    head.keep_alive = if minor_version == 0 {
        head.header_has_token("connection", "keep-alive")
    } else {
        !head.header_has_token("connection", "close")
    };
    head.expect_continue = head
        .header_str("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    Ok(Some((head, len)))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        _ => "invalid request",
    }
}

/// Decides the body framing (RFC 9112 §6.3), refusing the ambiguous cases that enable
/// request smuggling: both Transfer-Encoding and Content-Length, or conflicting lengths.
fn framing(head: &RequestHead) -> Result<BodyFraming, HttpError> {
    let te: Vec<&Bytes> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v)
        .collect();
    let cl: Vec<&Bytes> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v)
        .collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(HttpError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if head.minor_version == 0 {
            return Err(HttpError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        // Only a single "chunked" coding is supported; anything else cannot be framed.
        let joined: Vec<String> = te
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect();
        return match joined.as_slice() {
            [only] if only == "chunked" => Ok(BodyFraming::Chunked),
            _ => Err(HttpError::UnsupportedTransferEncoding),
        };
    }
    let mut length: Option<u64> = None;
    for v in cl {
        for part in v.split(|&b| b == b',') {
            let s = std::str::from_utf8(part)
                .map_err(|_| HttpError::Malformed("invalid Content-Length"))?
                .trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 19 {
                return Err(HttpError::Malformed("invalid Content-Length"));
            }
            let n: u64 = s
                .parse()
                .map_err(|_| HttpError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) | None => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
    })
}

/// The reason phrase for the statuses we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes a status line and headers (with the blank line) into `out`.
/// `content_length` adds the header when known; streaming responses pass `None`
/// and set their own framing header.
pub fn encode_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
    keep_alive: bool,
) {
    let mut s = String::with_capacity(128);
    let _ = write!(s, "HTTP/1.1 {} {}\r\n", status, reason(status));
    for (name, value) in headers {
        s.push_str(name);
        s.push_str(": ");
        s.push_str(value);
        s.push_str("\r\n");
    }
    if let Some(n) = content_length {
        let _ = write!(s, "Content-Length: {n}\r\n");
    }
    if !keep_alive {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 16 * 1024,
        max_headers: 64,
    };

    fn head(raw: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(raw.as_bytes(), LIMITS)
    }

    #[test]
    fn parses_a_simple_get_with_query() {
        let (h, n) = head("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(n, "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n".len());
        assert_eq!(h.method, Some(Method::Get));
        assert_eq!(h.path, "/a/b");
        assert_eq!(h.query.as_deref(), Some("x=1&y=2"));
        assert_eq!(h.header_str("host"), Some("h"));
        assert!(h.keep_alive);
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn partial_head_needs_more() {
        assert!(head("GET / HTTP/1.1\r\nHost:").unwrap().is_none());
    }

    #[test]
    fn keep_alive_rules_per_version() {
        let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: Upgrade, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn oversized_header_block_is_431_before_it_ends() {
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(17 * 1024));
        assert_eq!(head(&big).unwrap_err(), HttpError::HeadersTooLarge);
        assert_eq!(HttpError::HeadersTooLarge.status(), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..65 {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(head(&raw).unwrap_err(), HttpError::TooManyHeaders);
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..(HEADER_SLOTS + 5) {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(head(&raw).unwrap_err(), HttpError::TooManyHeaders);
    }

    #[test]
    fn malformed_inputs_are_400() {
        for raw in [
            "GET\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            let e = head(raw).unwrap_err();
            assert_eq!(e.status(), 400, "{raw:?} → {e:?}");
        }
        assert_eq!(head("GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 505);
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err(),
            HttpError::UnsupportedTransferEncoding
        );
    }

    #[test]
    fn same_content_length_twice_is_fine() {
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Length(3));
    }

    #[test]
    fn encodes_a_head() {
        let mut out = Vec::new();
        encode_head(
            &mut out,
            404,
            &[("Content-Type", "application/json")],
            Some(2),
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }
}
