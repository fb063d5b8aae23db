//! The HTTP/1.1 front, black-box: keep-alive, pipelining, every limit's status, malformed
//! input, timeouts, shards, graceful shutdown — on io_uring (or its fallback) and on epoll.

mod support;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use support::{closed_within, read_response, Server};

/// Runs a scenario once with the default driver and once with `--driver epoll`.
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod auto_driver {
            $(#[test] fn $name() { super::$name(&[]); })*
        }
        mod epoll_driver {
            $(#[test] fn $name() { super::$name(&["--driver", "epoll"]); })*
        }
    };
}

on_both_drivers!(
    keep_alive_serves_many_requests_on_one_connection,
    pipelined_requests_are_answered_in_order,
    header_block_over_16k_is_431,
    more_than_64_headers_is_431,
    body_over_the_limit_is_413,
    chunked_body_over_the_limit_is_413,
    chunked_and_expect_continue_bodies_are_read,
    malformed_requests_get_400_and_others_are_still_served,
    slow_header_gets_408_and_close,
    idle_keep_alive_connection_is_closed,
    unknown_path_is_404_envelope_and_wrong_method_405_with_allow,
    connections_spread_over_shards,
    sigterm_drains_an_in_flight_request_and_exits_0,
);

fn args<'a>(driver: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    driver.iter().chain(extra).copied().collect()
}

fn keep_alive_serves_many_requests_on_one_connection(driver: &[&str]) {
    let server = Server::start(driver);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..20 {
        write!(w, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let resp = read_response(&mut r).expect("response on the same connection");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["data"]["status"], "ok");
        assert_eq!(
            resp.header("connection"),
            None,
            "keep-alive is the HTTP/1.1 default"
        );
    }
    // The driver in use is in the ready line and in /metrics; by default it is io_uring,
    // and only a fallback the server announces may make it epoll.
    let in_use = server
        .ready_field("driver")
        .expect("ready line has driver=");
    assert_eq!(
        server.metric(&format!("liveshard_driver{{driver=\"{in_use}\"}}")),
        Some(1.0)
    );
    if driver.is_empty() {
        if in_use == "epoll" {
            let logs = server.logs().join("\n");
            assert!(logs.contains("falling back to epoll"), "{logs}");
        } else {
            assert_eq!(in_use, "io_uring");
        }
    } else {
        assert_eq!(in_use, "epoll");
    }
}

fn pipelined_requests_are_answered_in_order(driver: &[&str]) {
    let server = Server::start(driver);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    // Three requests in one write; the middle one is a 404, the last asks to close.
    w.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let a = read_response(&mut r).unwrap();
    let b = read_response(&mut r).unwrap();
    let c = read_response(&mut r).unwrap();
    assert_eq!((a.status, b.status, c.status), (200, 404, 200));
    assert_eq!(a.json()["data"]["status"], "ok");
    assert_eq!(c.json()["data"]["status"], "ready");
    assert_eq!(c.header("connection"), Some("close"));
    assert!(
        read_response(&mut r).is_none(),
        "closed after Connection: close"
    );
}

fn header_block_over_16k_is_431(driver: &[&str]) {
    let server = Server::start(driver);
    let mut s = server.connect();
    let big = "a".repeat(17 * 1024);
    // The server answers as soon as the block passes the limit; the write may be cut short.
    let _ = write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"
    );
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.status, 431);
    assert_eq!(resp.json()["code"], 43100);
    // Just under the limit is fine.
    let ok = "a".repeat(15 * 1024);
    let mut s = server.connect();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut BufReader::new(s)).unwrap().status, 200);
}

fn more_than_64_headers_is_431(driver: &[&str]) {
    let server = Server::start(driver);
    let send = |n: usize| {
        let mut s = server.connect();
        let mut req = String::from("GET /healthz HTTP/1.1\r\nConnection: close\r\n");
        for i in 0..n - 1 {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        read_response(&mut BufReader::new(s)).unwrap()
    };
    assert_eq!(send(64).status, 200, "64 headers are allowed");
    let resp = send(65);
    assert_eq!(resp.status, 431);
    assert!(resp.json()["message"]
        .as_str()
        .unwrap()
        .contains("too many"));
}

/// The test servers below take bodies on `POST /debug/echo` (no limit of its own: it has
/// `http.max_body_bytes`); GET routes take none.
const ECHO: &[&str] = &["--set", "server.debug_endpoints=true"];

fn body_over_the_limit_is_413(driver: &[&str]) {
    let server = Server::start(&args(
        driver,
        &[ECHO, &["--set", "http.max_body_bytes=1000"]].concat(),
    ));
    let mut s = server.connect();
    // Declared too large: refused before a byte of the body is read.
    write!(
        s,
        "POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n"
    )
    .unwrap();
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["code"], 41300);
    // Within the limit: read and served.
    let resp = server.request("POST", "/debug/echo", &[], &[b'x'; 1000]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"]["bytes"], 1000);
}

fn chunked_body_over_the_limit_is_413(driver: &[&str]) {
    let server = Server::start(&args(
        driver,
        &[ECHO, &["--set", "http.max_body_bytes=1000"]].concat(),
    ));
    let mut s = server.connect();
    write!(
        s,
        "POST /debug/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..3 {
        let _ = write!(s, "200\r\n{}\r\n", "y".repeat(0x200));
    }
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.status, 413);
}

fn chunked_and_expect_continue_bodies_are_read(driver: &[&str]) {
    let server = Server::start(&args(driver, ECHO));
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"]["bytes"], 3);
    // The next request on the same connection parses: the body was consumed exactly.
    w.write_all(
        b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_response(&mut r).unwrap();
    assert_eq!(interim.status, 100, "100 Continue before the body is sent");
    w.write_all(b"body").unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // A GET route takes no body: a declared one is a 413 at once, unread; an empty
    // chunked body is no body.
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("connection"), Some("close"));
}

fn malformed_requests_get_400_and_others_are_still_served(driver: &[&str]) {
    let server = Server::start(driver);
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let mut s = server.connect();
        s.write_all(bad).unwrap();
        let resp = read_response(&mut BufReader::new(s)).expect("a 400, not a dropped connection");
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(resp.json()["code"], 40000);
        assert!(resp.json()["data"].is_null());
    }
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the server keeps serving"
    );
}

fn slow_header_gets_408_and_close(driver: &[&str]) {
    let server = Server::start(&args(driver, &["--set", "http.header_timeout_ms=400"]));
    let mut s = server.connect();
    let started = Instant::now();
    // A slowloris: a few header bytes, then nothing.
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
    let s2 = s.try_clone().unwrap();
    let resp = read_response(&mut BufReader::new(s2)).unwrap();
    assert_eq!(resp.status, 408);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(closed_within(&mut s, Duration::from_secs(3)));
}

fn idle_keep_alive_connection_is_closed(driver: &[&str]) {
    let server = Server::start(&args(driver, &["--set", "http.idle_timeout_ms=300"]));
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "closed quietly, without a response");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the idle timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn unknown_path_is_404_envelope_and_wrong_method_405_with_allow(driver: &[&str]) {
    let server = Server::start(driver);
    let resp = server.get("/nope");
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.json(),
        serde_json::json!({"code": 40400, "message": "not found", "data": null})
    );
    let resp = server.request("DELETE", "/healthz", &[], b"");
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET"));
    assert_eq!(resp.json()["code"], 40500);
}

fn connections_spread_over_shards(driver: &[&str]) {
    let server = Server::start(&args(driver, &["--shards", "2"]));
    let conns: Vec<_> = (0..24).map(|_| server.connect()).collect();
    let per_shard = |shard: usize| {
        server
            .metric(&format!(
                "liveshard_connections_accepted_total{{shard=\"{shard}\"}}"
            ))
            .unwrap()
    };
    let ok = support::eventually(Duration::from_secs(5), || {
        (per_shard(0) + per_shard(1) >= 24.0).then_some(())
    });
    assert!(ok.is_some());
    assert!(
        per_shard(0) >= 1.0 && per_shard(1) >= 1.0,
        "both shards accept: {} / {}",
        per_shard(0),
        per_shard(1)
    );
    // Each shard answers on its own connections.
    let mut seen = std::collections::HashSet::new();
    for mut c in conns {
        write!(
            c,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let resp = read_response(&mut BufReader::new(c)).unwrap();
        seen.insert(resp.json()["data"]["shard"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), 2, "responses came from both shards");
}

fn sigterm_drains_an_in_flight_request_and_exits_0(driver: &[&str]) {
    let mut server = Server::start(&args(driver, &["--set", "server.debug_endpoints=true"]));
    let mut slow = server.connect();
    write!(slow, "GET /debug/sleep?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let idle = server.connect();
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    server.signal(15);
    // The in-flight request completes, and is told the connection closes.
    let resp = read_response(&mut BufReader::new(slow.try_clone().unwrap()))
        .expect("in-flight request answered");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"]["slept_ms"], 1500);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(closed_within(&mut slow, Duration::from_secs(3)));
    // The idle keep-alive connection was closed without waiting for its idle timeout.
    let mut idle = idle;
    assert!(closed_within(&mut idle, Duration::from_secs(3)));
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits within the bound");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(1000),
        "it waited for the request"
    );
}

#[test]
fn chunk_size_with_leading_whitespace_is_400() {
    // Strict front proxies refuse these or read them differently: a smuggling ingredient.
    let server = Server::start(&["--shards", "1", "--set", "server.debug_endpoints=true"]);
    for body in [
        &b" 5\r\nhello\r\n0\r\n\r\n"[..],
        b"\t5\r\nhello\r\n0\r\n\r\n",
        b"5;x\nfoo\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut s = server.connect();
        s.write_all(b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        s.write_all(body).unwrap();
        let resp = read_response(&mut BufReader::new(s)).expect("an answer");
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(resp.json()["code"], 40000);
    }
    // Whitespace after the digits, before an extension, is what nginx and hyper accept.
    let mut s = server.connect();
    s.write_all(
        b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5 ;ext=1\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"]["bytes"], 5);
}

/// Per-address limits apply to loopback only once the exempt list is emptied.
const NO_EXEMPT: &[&str] = &["--set", "server.per_ip_exempt="];

/// Sends a request on `s` and reads its answer.
fn ask(s: &std::net::TcpStream) -> Option<support::HttpResponse> {
    let mut w = s.try_clone().unwrap();
    write!(w, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
    read_response(&mut BufReader::new(s.try_clone().unwrap()))
}

#[test]
fn per_address_connection_cap_refuses_the_extra_connection() {
    let server = Server::start(
        &[
            &["--shards", "1", "--set", "server.max_conns_per_ip=3"],
            NO_EXEMPT,
        ]
        .concat(),
    );
    let held: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for s in &held {
        assert_eq!(ask(s).map(|r| r.status), Some(200));
    }
    // A client that says nothing is closed without a word.
    let mut silent = server.connect();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "the fourth is closed at once"
    );
    drop(held);
    let again = support::eventually(Duration::from_secs(5), || {
        let s = server.connect();
        (ask(&s).map(|r| r.status) == Some(200)).then_some(())
    });
    assert!(again.is_some(), "room again once the others closed");
    let refused = support::eventually(Duration::from_secs(5), || {
        server
            .metric("liveshard_connections_refused_total{shard=\"0\",reason=\"per_ip_cap\"}")
            .filter(|&n| n >= 1.0)
    });
    assert!(refused.is_some(), "the refusal is counted by its reason");
}

#[test]
fn refused_connection_gets_503_with_retry_after_and_is_counted() {
    let server = Server::start(
        &[
            &[
                "--shards",
                "1",
                "--set",
                "server.max_conns_per_ip=2",
                "--set",
                "server.accept_rate_per_ip=1",
                "--set",
                "server.accept_burst_per_ip=4",
            ],
            NO_EXEMPT,
        ]
        .concat(),
    );
    let held: Vec<_> = (0..2).map(|_| server.connect()).collect();
    for s in &held {
        assert_eq!(ask(s).map(|r| r.status), Some(200));
    }
    // Over the cap: told why, and when to come back.
    let s = server.connect();
    let resp = ask(&s).expect("a 503, not a silent close");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.json()["code"], 50300);
    assert!(resp.json()["message"]
        .as_str()
        .unwrap()
        .contains("too many open connections"));
    // Over the rate (a bucket of 4, refilled at 1 a second): connections opened one after
    // another soon get a 503 that says so.
    drop(held);
    let resp = support::eventually(Duration::from_secs(5), || {
        let s = server.connect();
        ask(&s).filter(|r| r.status == 503 && r.header("retry-after") == Some("1"))
    })
    .expect("the rate refuses a quick series of connections");
    assert!(resp.json()["message"]
        .as_str()
        .unwrap()
        .contains("too many new connections"));
    // Counted per reason (read once the bucket lets a scrape in).
    let counted = support::eventually(Duration::from_secs(5), || {
        let text = std::net::TcpStream::connect(server.http)
            .ok()
            .and_then(|s| {
                let mut w = s.try_clone().ok()?;
                write!(w, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
                read_response(&mut BufReader::new(s))
            })
            .filter(|r| r.status == 200)?
            .text();
        let get = |reason: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "liveshard_connections_refused_total{{shard=\"0\",reason=\"{reason}\"}} "
                    ))
                })
                .and_then(|v| v.parse::<f64>().ok())
        };
        Some((get("per_ip_cap")?, get("per_ip_rate")?))
    })
    .expect("metrics served");
    assert!(counted.0 >= 1.0 && counted.1 >= 1.0, "{counted:?}");
}

#[test]
fn default_caps_let_a_nat_burst_through() {
    // A campus or carrier NAT: hundreds of users behind one address open their
    // connections at once (a live starts, everyone taps in). The defaults let it through.
    let server = Server::start(&[&["--shards", "2"], NO_EXEMPT].concat());
    let conns: Vec<_> = (0..300).map(|_| server.connect()).collect();
    for s in &conns {
        assert_eq!(ask(s).map(|r| r.status), Some(200));
    }
    let text = server.get("/metrics").text();
    let refused: f64 = text
        .lines()
        .filter(|l| l.starts_with("liveshard_connections_refused_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 0.0, "nothing refused");
}

#[test]
fn accept_rate_limit_closes_a_connection_storm_at_once() {
    let server = Server::start(&["--shards", "1", "--set", "server.accept_rate_per_sec=5"]);
    let mut storm: Vec<_> = (0..40).map(|_| server.connect()).collect();
    let mut closed = 0;
    for s in storm.iter_mut() {
        if closed_within(s, Duration::from_millis(500)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 20,
        "most of a 40-connection burst is refused: {closed}"
    );
    drop(storm);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        server.get("/healthz").status,
        200,
        "served again once the burst is over"
    );
    assert!(
        server
            .metric("liveshard_connections_refused_total{shard=\"0\",reason=\"accept_rate\"}")
            .unwrap()
            >= 20.0
    );
}

#[test]
fn sigint_stops_accepting_and_the_bound_cuts_a_request_that_outlasts_it() {
    let mut server = Server::start(&[
        "--set",
        "server.debug_endpoints=true",
        "--set",
        "server.shutdown_timeout_ms=1500",
    ]);
    let mut slow = server.connect();
    write!(
        slow,
        "GET /debug/sleep?ms=20000 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    server.signal(2);
    // New connections are no longer served once the signal is in.
    std::thread::sleep(Duration::from_millis(200));
    let refused = match std::net::TcpStream::connect(server.http) {
        Err(_) => true,
        Ok(mut s) => {
            let _ = write!(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            read_response(&mut BufReader::new(s)).is_none()
        }
    };
    assert!(refused, "a connection after the signal was served");
    // The 20 s request cannot finish: the process exits at the 1.5 s bound, with 0.
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("exits at the bound");
    assert!(status.success(), "exit status {status:?}");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "exited after {took:?}"
    );
    assert!(closed_within(&mut slow, Duration::from_secs(1)));
}

#[test]
fn metrics_show_connections_responses_lag_memory_and_the_mesh() {
    let server = Server::start(&["--shards", "2"]);
    let held = server.connect();
    let mut w = held.try_clone().unwrap();
    let mut r = BufReader::new(held);
    for path in ["/healthz", "/healthz", "/readyz", "/nope", "/nope"] {
        write!(w, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_response(&mut r).expect("answered");
    }
    let text = server.get("/metrics").text();
    // Sums a family over its shards (and other labels), given a label filter.
    let sum = |name: &str, with: &str| -> Option<f64> {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| l.contains(with))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    assert!(
        sum("liveshard_connections_open", "").unwrap() >= 2.0,
        "{text}"
    );
    assert!(sum("liveshard_connections_accepted_total", "").unwrap() >= 2.0);
    assert!(sum("liveshard_http_responses_total", "class=\"2xx\"").unwrap() >= 3.0);
    assert_eq!(
        sum("liveshard_http_responses_total", "class=\"4xx\""),
        Some(2.0)
    );
    assert_eq!(
        sum("liveshard_http_responses_total", "class=\"5xx\""),
        Some(0.0)
    );
    for shard in 0..2 {
        let lag = sum("liveshard_loop_lag_seconds", &format!("shard=\"{shard}\""))
            .expect("each shard reports its loop lag");
        assert!((0.0..1.0).contains(&lag), "lag {lag}");
    }
    let rss = sum("liveshard_process_resident_memory_bytes", "").unwrap();
    assert!(rss > 1e6 && rss < 4e9, "rss {rss}");
    assert!(sum("liveshard_mesh_ring_depth", "from=\"0\",to=\"1\"").is_some());
    assert!(sum("liveshard_mesh_ring_depth", "from=\"1\",to=\"0\"").is_some());
    assert_eq!(sum("liveshard_mesh_overflow_total", ""), Some(0.0));
    assert_eq!(
        sum("liveshard_driver", "").unwrap(),
        1.0,
        "one driver in use"
    );
}
