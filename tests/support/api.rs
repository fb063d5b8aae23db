//! Helpers for REST API tests: JSON calls with a bearer token, envelope checks, a
//! Server-Sent Events reader, and a small valid PNG.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{read_response, HttpResponse, Server};

/// `METHOD path` with an optional bearer token and JSON body, on a fresh connection.
pub fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let bytes = match body {
        Some(b) => {
            headers.push(("Content-Type", "application/json"));
            b.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    server.request(method, path, &headers, &bytes)
}

/// The `data` of a successful answer (status 200, code 0); panics with the body otherwise.
pub fn ok(resp: &HttpResponse) -> Value {
    let v = resp.json();
    assert_eq!(resp.status, 200, "expected 200: {v}");
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["message"], "ok", "{v}");
    v["data"].clone()
}

/// Checks an error answer: its status and code. Returns the envelope.
pub fn err(resp: &HttpResponse, status: u16, code: u64) -> Value {
    let v = resp.json();
    assert_eq!(
        (resp.status, v["code"].as_u64()),
        (status, Some(code)),
        "expected {status} {code}: {v}"
    );
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

/// A token from `POST /api/v1/auth/dev` (the server must run with `auth.dev_login=true`).
pub fn dev_login(server: &Server, uid: &str) -> String {
    let body = serde_json::json!({"uid": uid, "nick": format!("nick-{uid}")});
    let data = ok(&call(server, "POST", "/api/v1/auth/dev", None, Some(&body)));
    data["token"].as_str().unwrap().to_string()
}

/// Creates a room owned by the token's user; returns the answer's data.
pub fn create_room(server: &Server, token: &str, title: &str) -> Value {
    let body = serde_json::json!({"title": title, "category": "test"});
    ok(&call(
        server,
        "POST",
        "/api/v1/rooms",
        Some(token),
        Some(&body),
    ))
}

/// A Server-Sent Events stream, read as a client would.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

/// One event: its name and its data (parsed as JSON).
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
    /// Its `id:` line, if it had one.
    pub id: Option<String>,
}

impl Sse {
    /// Opens `path`; an error answer comes back as `Err(response)`.
    pub fn open(server: &Server, path: &str) -> Result<Sse, HttpResponse> {
        Self::open_with(server, path, &[])
    }

    pub fn open_with(
        server: &Server,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Sse, HttpResponse> {
        let mut s = server.connect();
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut hs = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            hs.push((k.trim().to_string(), v.trim().to_string()));
        }
        if status != 200 {
            let len: usize = hs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            return Err(HttpResponse {
                status,
                headers: hs,
                body,
            });
        }
        Ok(Sse {
            status,
            headers: hs,
            reader,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next event (comments and `retry:` skipped); `None` on timeout or end of stream.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut event = String::new();
        let mut data = String::new();
        let mut id = None;
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some(SseEvent {
                        event: std::mem::take(&mut event),
                        data,
                        id: id.take(),
                    });
                }
                continue;
            }
            if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if let Some(v) = l.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            }
        }
    }

    /// Waits for an event named `name` whose data satisfies `pred`.
    pub fn expect(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> SseEvent {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(e) if e.event == name && pred(&e.data) => return e,
                Some(e) => seen.push(e),
                None => panic!("no matching `{name}` event within {timeout:?}; saw {seen:?}"),
            }
        }
    }

    /// True if the server ends the stream within `timeout`.
    pub fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Appends a PNG chunk (length, type, data, CRC) to `out`.
pub fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid `w`×`h` RGBA PNG (a colour gradient), with real CRCs and a zlib stream of
/// stored blocks — what any decoder accepts.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&[
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                0x80,
                0xFF,
            ]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A `multipart/form-data` body with one file part; returns (content type, body).
pub fn multipart(
    field: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "----liveshardtestboundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; \
             filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Reads the answer to a request written by hand on `s`.
pub fn response(s: TcpStream) -> HttpResponse {
    read_response(&mut BufReader::new(s)).expect("a response")
}
