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

#[test]
fn anonymous_clients_that_never_read_a_2_mib_cover_share_one_copy() {
    let server = Server::start(&["--shards", "1"]);
    // A real PNG (uploads are decoded for their thumbnails) just under the 2 MiB limit:
    // 720 × 720 RGBA in stored (uncompressed) blocks is 2,074,xxx bytes.
    let image = support::api::png(720, 720);
    assert!(
        (2_000_000..2 * 1024 * 1024).contains(&image.len()),
        "{}",
        image.len()
    );
    let token = support::token(&server, "cover-owner", &[]);
    let up = server.request(
        "POST",
        "/api/v1/uploads/cover",
        &[("Authorization", &format!("Bearer {token}"))],
        &image,
    );
    assert_eq!(up.status, 200, "{}", up.text());
    let name = up.json()["data"]["name"].as_str().unwrap().to_string();
    let before = rss_bytes(&server);
    let mut conns: Vec<TcpStream> = Vec::new();
    let peak = peak_rss_during(&server, Duration::from_millis(700), || {
        for _ in 0..100 {
            let mut s = server.connect();
            // A small receive window, and never a read: the answer stays with the server.
            let small: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option value of the right size.
            unsafe {
                use std::os::fd::AsRawFd;
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &small as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            write!(s, "GET /covers/{name} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            conns.push(s);
        }
    });
    let grew = peak.saturating_sub(before);
    eprintln!(
        "100 stalled readers of one 2 MiB cover: RSS {} MiB → peak {} MiB (+{} KiB)",
        before / MIB,
        peak / MIB,
        grew / 1024
    );
    assert!(
        grew < 24 * MIB,
        "100 clients not reading one 2 MiB cover grew the server by {} MiB (from {} MiB; \
         a copy each grew it by ~56 MiB, the rest of 200 MiB in socket buffers)",
        grew / MIB,
        before / MIB
    );
    // Others are still served, byte for byte.
    let resp = server.get(&format!("/covers/{name}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, image);
    drop(conns);
}
