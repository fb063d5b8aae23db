//! Abuse tests: the HTTP front. See `main.rs`.
//!
//! A request body is buffered as it arrives, never at the size its head declares; an
//! upload is authenticated from its head before a byte of its body is read; a route that
//! takes no body refuses a declared one at once.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::support::read_response;
use super::*;

/// `api.cover_max_bytes` (2 MiB) plus the multipart slack: the largest body the upload
/// route accepts, so the old code allocated all of it from the head.
const COVER_ROUTE_LIMIT: u64 = 2_113_536;

#[test]
fn cover_upload_declaring_2_mib_without_a_token_is_refused_before_its_body() {
    let server = Server::start(&["--shards", "2"]);
    let before = rss_bytes(&server);
    let mut conns: Vec<TcpStream> = Vec::new();
    let peak = peak_rss_during(&server, Duration::from_millis(700), || {
        for _ in 0..100 {
            let mut s = server.connect();
            write!(
                s,
                "POST /api/v1/uploads/cover HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n\
                 Content-Length: {COVER_ROUTE_LIMIT}\r\n\r\nX"
            )
            .unwrap();
            // ... and then nothing: the attacker stalls with the connection open.
            conns.push(s);
        }
    });
    let grew = peak.saturating_sub(before);
    eprintln!(
        "100 stalled anonymous uploads: RSS {} MiB → peak {} MiB (+{} KiB)",
        before / MIB,
        peak / MIB,
        grew / 1024
    );
    assert!(
        grew < 40 * MIB,
        "100 stalled uploads of 1 byte each (declaring {COVER_ROUTE_LIMIT} bytes) grew the \
         server by {} MiB (from {} MiB; the old code grew by 124-165 MiB)",
        grew / MIB,
        before / MIB
    );
    for s in conns {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let resp = read_response(&mut BufReader::new(s))
            .expect("an answer from the head alone, not a wait for the body");
        assert_eq!(resp.status, 401);
        assert_eq!(resp.json()["code"], 40101);
        assert_eq!(resp.header("connection"), Some("close"));
    }
}

#[test]
fn healthz_with_a_declared_1_mib_body_is_413_at_once() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "cors.allow_origins=https://app.example.com",
    ]);
    let mut s = server.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let resp = read_response(&mut BufReader::new(s)).expect("a 413 without waiting");
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["code"], 41300);
    // The same for a GET under the API, with the CORS header a browser needs to read it.
    let mut s = server.connect();
    s.write_all(
        b"GET /api/v1/rooms HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example.com\r\n\
          Content-Length: 1048576\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let resp = read_response(&mut BufReader::new(s)).expect("a 413 without waiting");
    assert_eq!(resp.status, 413);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}
