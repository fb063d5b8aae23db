//! Abuse tests: the HTTP front. See `main.rs`.
//!
//! A request body is buffered as it arrives, never at the size its head declares; an
//! upload is authenticated from its head before a byte of its body is read; a route that
//! takes no body refuses a declared one at once.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::support::{self, read_response};
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

#[test]
fn partial_bodies_past_the_shard_budget_get_503() {
    // Bodies are buffered as they arrive; the shard's budget bounds them all together.
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "server.debug_endpoints=true",
        "--set",
        "http.max_body_bytes=2000000",
        "--set",
        "http.body_budget_bytes=1200000",
    ]);
    let conns: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = server.connect();
            let _ = s.write_all(
                b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
            );
            let _ = s.write_all(&vec![b'x'; 300_000]);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    // Whichever body pushed the total over the budget is refused (the others wait for
    // the rest of theirs).
    let refused = support::eventually(Duration::from_secs(5), || {
        conns.iter().find_map(|s| {
            let r = read_response(&mut BufReader::new(s.try_clone().ok()?))?;
            Some(r)
        })
    })
    .expect("one of three 300 KB partial bodies is refused over a 1.2 MB budget");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["code"], 50300);
    // Once they are gone, the budget is free again.
    drop(conns);
    let ok = support::eventually(Duration::from_secs(5), || {
        let r = server.request("POST", "/debug/echo", &[], &[b'y'; 500_000]);
        (r.status == 200).then_some(r)
    });
    assert!(
        ok.is_some(),
        "served again once the partial bodies are gone"
    );
}
