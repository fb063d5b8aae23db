//! Live media against real clients: ffmpeg publishes over RTMP with a signed URL; ffprobe
//! and ffmpeg play it back over HTTP-FLV and RTMP, on every shard; signatures, a second
//! publisher, the on_publish hook, live/offline notices and the publisher grace period;
//! signed play, the on_play and on_stop hooks and the Referer allow-list for HTTP-FLV and
//! RTMP players, an RTMP player on another shard than the publisher's, and the media
//! metrics of a live stream.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::api::{create_room, dev_login, ok as api_ok};
use support::media::{
    probe, publish, rtmp_addr, signed_query, signed_url, wait_expired, wait_live,
};
use support::ws::{Client, Event};
use support::{require, HookServer, Server};

const T: Duration = Duration::from_secs(20);

fn assert_h264_aac(streams: &[(String, String, u64, u64)]) {
    assert!(
        streams
            .iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && s.2 == 640 && s.3 == 360),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{streams:?}"
    );
}

fn metric_sum(server: &Server, name: &str, shards: usize) -> f64 {
    (0..shards)
        .map(|s| {
            server
                .metric(&format!("{name}{{shard=\"{s}\"}}"))
                .unwrap_or(0.0)
        })
        .sum()
}

fn per_shard(server: &Server, name: &str, shards: usize) -> Vec<f64> {
    (0..shards)
        .map(|s| {
            server
                .metric(&format!("{name}{{shard=\"{s}\"}}"))
                .unwrap_or(0.0)
        })
        .collect()
}

#[test]
fn signed_publish_plays_back_over_flv_and_rtmp_and_decodes_cleanly() {
    let server = Server::start(&["--shards", "2"]);
    let mut ff = publish(&signed_url(&server, "cam1", &[]), 30);
    wait_live(&server, "cam1");
    assert_h264_aac(&probe(&format!("http://{}/live/cam1.flv", server.http)));
    assert_h264_aac(&probe(&format!("rtmp://{}/live/cam1", rtmp_addr(&server))));
    // Five seconds of FLV decoded with no error at all.
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &format!("http://{}/live/cam1.flv", server.http),
            "-t",
            "5",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "decoder errors");
    // The players started from the GOP cache (a keyframe at once).
    let hits = support::eventually(T, || {
        let n = metric_sum(&server, "liveshard_media_gop_cache_hits_total", 2);
        (n >= 3.0).then_some(n)
    });
    assert!(hits.is_some(), "three players started from the cache");
    let _ = ff.kill();
}

#[test]
fn viewers_on_every_shard_get_the_stream() {
    let shards = 3;
    let server = Server::start(&["--shards", "3"]);
    let mut ff = publish(&signed_url(&server, "spread", &[]), 40);
    wait_live(&server, "spread");
    let owner = per_shard(&server, "liveshard_media_publishers", shards)
        .iter()
        .position(|&n| n == 1.0)
        .expect("one shard owns the publisher");
    // Open FLV viewers until some sit on shards other than the owner's; all must get media.
    let mut viewers = Vec::new();
    let deadline = Instant::now() + T;
    loop {
        let mut s = server.connect();
        write!(s, "GET /live/spread.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        viewers.push(s);
        let counts = per_shard(&server, "liveshard_media_viewers_flv", shards);
        let elsewhere = counts
            .iter()
            .enumerate()
            .filter(|(i, &n)| *i != owner && n > 0.0)
            .count();
        // Viewers on two shards or more, one of them not the owner: the owner then sends
        // to at least two shards (all of them on one other shard would make it one).
        let shards_with_viewers = counts.iter().filter(|&&n| n > 0.0).count();
        if elsewhere >= 1 && shards_with_viewers >= 2 && viewers.len() >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no viewer landed off the owner shard: {counts:?}"
        );
    }
    for (i, v) in viewers.iter_mut().enumerate() {
        v.set_read_timeout(Some(T)).unwrap();
        let mut got = vec![0u8; 64 * 1024];
        let mut total = 0;
        let mut head = Vec::new();
        while total < 200 * 1024 {
            let n = v.read(&mut got).expect("media keeps coming");
            assert!(n > 0, "viewer {i} closed early");
            if head.len() < 512 {
                head.extend_from_slice(&got[..n.min(512)]);
            }
            total += n;
        }
        let text = String::from_utf8_lossy(&head);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            head.windows(3).any(|w| w == b"FLV"),
            "viewer {i} got an FLV header"
        );
    }
    let subscribed = server
        .metric("liveshard_stream_subscribed_shards{stream=\"spread\"}")
        .unwrap();
    assert!(
        subscribed >= 2.0,
        "the owner sends to other shards: {subscribed}"
    );
    let out = metric_sum(&server, "liveshard_media_bytes_out_total", shards);
    assert!(out > 0.0);
    let _ = ff.kill();
}

/// An ffmpeg publish that must be refused: it exits non-zero and prints why.
fn refused(url: &str) -> String {
    let mut ff = publish(url, 5);
    let status = {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = ff.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "ffmpeg was not refused");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut err = String::new();
    ff.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "ffmpeg should fail: {err}");
    err
}

#[test]
fn bad_missing_and_expired_signatures_are_refused_and_nothing_is_published() {
    let server = Server::start(&["--shards", "2"]);
    let good = signed_url(&server, "guarded", &[]);
    let base = good.split('?').next().unwrap().to_string();
    let err = refused(&base);
    assert!(err.contains("missing txSecret"), "{err}");
    let tampered = good.replace("txSecret=", "txSecret=0");
    let err = refused(&tampered);
    assert!(
        err.contains("malformed") || err.contains("mismatch"),
        "{err}"
    );
    let other_stream = signed_url(&server, "other", &[]).replacen("/other?", "/guarded?", 1);
    assert!(refused(&other_stream).contains("signature mismatch"));
    let expired = signed_url(&server, "guarded", &["--ttl", "1"]);
    wait_expired(&expired);
    assert!(refused(&expired).contains("expired"));
    // Nothing was published.
    assert_eq!(server.get("/live/guarded.flv").status, 404);
    assert_eq!(metric_sum(&server, "liveshard_media_publishers", 2), 0.0);
}

#[test]
fn a_second_publisher_to_a_live_stream_is_refused() {
    let server = Server::start(&["--shards", "2"]);
    let url = signed_url(&server, "solo", &[]);
    let mut first = publish(&url, 30);
    wait_live(&server, "solo");
    let err = refused(&url);
    assert!(err.contains("already being published"), "{err}");
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first publisher is unaffected"
    );
    let _ = first.kill();
}

#[test]
fn on_publish_hook_can_refuse_and_hooks_are_told_what_happened() {
    let no = HookServer::start(200, "1");
    let server = Server::start(&["--set", &format!("media.on_publish={}", no.url)]);
    let err = refused(&signed_url(&server, "hooked", &[]));
    assert!(err.contains("refused by its hook"), "{err}");
    let asked = no.requests.recv_timeout(T).unwrap();
    assert_eq!(
        (
            asked["action"].as_str(),
            asked["stream"].as_str(),
            asked["app"].as_str()
        ),
        (Some("on_publish"), Some("hooked"), Some("live"))
    );
    assert!(asked["param"].as_str().unwrap().contains("txSecret="));
    drop(server);

    let yes = HookServer::start(200, "0");
    let server = Server::start(&[
        "--set",
        &format!("media.on_publish={}", yes.url),
        "--set",
        &format!("media.on_unpublish={}", yes.url),
    ]);
    let mut ff = publish(&signed_url(&server, "hooked", &[]), 3);
    wait_live(&server, "hooked");
    assert_eq!(
        yes.requests.recv_timeout(T).unwrap()["action"],
        "on_publish"
    );
    assert!(ff.wait().unwrap().success());
    assert_eq!(
        yes.requests.recv_timeout(T).unwrap()["action"],
        "on_unpublish"
    );
}

/// Waits for a `live` item with `status` in the room's batches.
fn expect_live(c: &mut Client, status: &str) {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next(left) {
            Event::Json(v) if v["type"] == "batch" => {
                if v["msgs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["type"] == "live" && m["status"] == status)
                {
                    return;
                }
            }
            Event::Json(_) => {}
            other => panic!("waiting for live={status}: {other:?}"),
        }
    }
}

#[test]
fn live_and_offline_reach_the_danmaku_room() {
    let server = Server::start(&["--shards", "2"]);
    let mut viewer = Client::connect(server.http, "room=show").unwrap();
    viewer.expect("history", T);
    let mut ff = publish(&signed_url(&server, "show", &[]), 3);
    expect_live(&mut viewer, "live");
    assert!(ff.wait().unwrap().success());
    // ffmpeg unpublishes at the end: offline at once, not after the grace period.
    expect_live(&mut viewer, "offline");
    assert_eq!(server.get("/live/show.flv").status, 404);
}

#[test]
fn a_publisher_that_reconnects_within_the_grace_period_resumes_for_its_viewers() {
    let server = Server::start(&["--shards", "2", "--set", "media.publisher_grace_ms=8000"]);
    let url = signed_url(&server, "flaky", &[]);
    let mut room = Client::connect(server.http, "room=flaky").unwrap();
    room.expect("history", T);
    let mut first = publish(&url, 60);
    wait_live(&server, "flaky");
    expect_live(&mut room, "live");
    let mut viewer = server.connect();
    write!(viewer, "GET /live/flaky.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    viewer.set_read_timeout(Some(T)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    assert!(viewer.read(&mut buf).unwrap() > 0);
    // The publisher's connection drops without an unpublish (kill -9).
    first.kill().unwrap();
    let _ = first.wait();
    std::thread::sleep(Duration::from_millis(500));
    let mut second = publish(&url, 60);
    // The same viewer connection keeps receiving media from the new publisher.
    let resumed = Instant::now();
    let mut after = 0;
    while after < 300 * 1024 {
        let n = viewer.read(&mut buf).expect("viewer still connected");
        assert!(n > 0, "viewer closed");
        after += n;
        assert!(resumed.elapsed() < T);
    }
    // And the room never saw it go offline.
    if let Event::Json(v) = room.next(Duration::from_millis(500)) {
        assert!(!v.to_string().contains("offline"), "{v}");
    }
    let _ = second.kill();
}

#[test]
fn playing_a_stream_that_is_not_live_is_a_404_or_not_found() {
    let server = Server::start(&[]);
    let r = server.get("/live/nothing.flv");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], 40400);
    assert_eq!(server.get("/other/nothing.flv").status, 404);
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
            &format!("rtmp://{}/live/nothing", rtmp_addr(&server)),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn danmaku_items_carry_the_stream_timestamp_while_live() {
    let server = Server::start(&["--shards", "2"]);
    let token = support::token(&server, "fan", &[]);
    let mut c = Client::connect(server.http, &format!("room=timed&token={token}")).unwrap();
    c.expect("history", T);
    c.send(serde_json::json!({"type": "danmaku", "text": "before"}));
    let before = &c.expect("batch", T)["msgs"][0];
    assert!(
        before.get("media_ts").is_none(),
        "no stream, no media time: {before}"
    );
    let mut ff = publish(&signed_url(&server, "timed", &[]), 30);
    expect_live(&mut c, "live");
    let mut stamps = Vec::new();
    for n in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        c.send(serde_json::json!({"type": "danmaku", "text": format!("during {n}")}));
        let deadline = Instant::now() + T;
        let item = loop {
            let b = c.expect("batch", deadline.saturating_duration_since(Instant::now()));
            if let Some(i) = b["msgs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["type"] == "danmaku")
            {
                break i.clone();
            }
        };
        stamps.push(
            item["media_ts"]
                .as_u64()
                .expect("a media timestamp while live"),
        );
    }
    assert!(
        stamps[1] > stamps[0] + 1000,
        "the stream clock advances: {stamps:?}"
    );
    let _ = ff.kill();
}

#[test]
fn sigterm_ends_streams_for_publishers_and_viewers_and_exits_promptly() {
    let mut server = Server::start(&["--shards", "2"]);
    let mut ff = publish(&signed_url(&server, "closing", &[]), 60);
    wait_live(&server, "closing");
    let mut viewer = server.connect();
    write!(viewer, "GET /live/closing.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    viewer.set_read_timeout(Some(T)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    assert!(viewer.read(&mut buf).unwrap() > 0);
    let sent = Instant::now();
    server.signal(15);
    // The viewer's body ends with the last chunk, then the connection closes.
    let tail = support::read_tail(&mut viewer).expect("the viewer reads to the end");
    assert!(
        tail.ends_with(b"0\r\n\r\n"),
        "a clean end of the chunked body"
    );
    let status = server.wait_exit(T).expect("exits");
    assert!(status.success());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "did not wait out the shutdown bound: {:?}",
        sent.elapsed()
    );
    // The publisher was disconnected too.
    let deadline = Instant::now() + T;
    while ff.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ffmpeg still publishing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- play checks, hooks, shards and metrics -------------------------------------------

/// An HTTP-FLV play request: the response's status and headers, and the connection
/// positioned at the body.
struct FlvPlay {
    status: u16,
    headers: Vec<(String, String)>,
    body: BufReader<TcpStream>,
}

impl FlvPlay {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads at least `n` more bytes of the chunked FLV body (panics if it ends first).
    fn read(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = String::new();
        while out.len() < n {
            line.clear();
            self.body.read_line(&mut line).expect("a chunk size");
            let size = usize::from_str_radix(line.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            assert!(size > 0, "the FLV body ended after {} bytes", out.len());
            let mut chunk = vec![0; size + 2];
            self.body.read_exact(&mut chunk).expect("a whole chunk");
            assert_eq!(&chunk[size..], b"\r\n", "chunk framing");
            out.extend_from_slice(&chunk[..size]);
        }
        out
    }
}

/// Sends `GET path` with `headers` and reads the response head.
fn flv_open(server: &Server, path: &str, headers: &[(&str, &str)]) -> FlvPlay {
    let mut s = server.connect();
    s.set_read_timeout(Some(T)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut body = BufReader::new(s);
    let mut line = String::new();
    body.read_line(&mut line).expect("a status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        body.read_line(&mut line).expect("a header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("a header");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    FlvPlay {
        status,
        headers,
        body,
    }
}

/// An HTTP-FLV play that must be answered 200 with media: returns the player, having
/// checked the type and that the body starts with the FLV header.
fn flv_plays(server: &Server, path: &str, headers: &[(&str, &str)]) -> FlvPlay {
    let mut p = flv_open(server, path, headers);
    assert_eq!(p.status, 200, "{path} with {headers:?} should play");
    assert_eq!(p.header("content-type"), Some("video/x-flv"));
    let head = p.read(32 * 1024);
    assert!(head.starts_with(b"FLV\x01"), "an FLV header first");
    p
}

/// An HTTP-FLV play that must be refused: the whole refusal (never a 200 body).
fn flv_refused(server: &Server, path: &str, headers: &[(&str, &str)]) -> support::HttpResponse {
    let mut p = flv_open(server, path, headers);
    assert_ne!(p.status, 200, "{path} with {headers:?} should be refused");
    let len: usize = p
        .header("content-length")
        .expect("a refusal has a length")
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    p.body.read_exact(&mut body).unwrap();
    support::HttpResponse {
        status: p.status,
        headers: p.headers,
        body,
    }
}

/// A refusal as a client sees it: `status`, and the JSON error envelope with a non-zero
/// code and a message (the exact codes are not pinned here).
fn assert_envelope(r: &support::HttpResponse, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let v = r.json();
    assert!(
        v["code"].as_u64().is_some_and(|c| c > 0),
        "a non-zero code: {v}"
    );
    let message = v["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "a message: {v}");
    message
}

/// Waits until `GET path` with `headers` starts playing.
fn wait_playable(server: &Server, path: &str, headers: &[(&str, &str)]) {
    let live = support::eventually(T, || {
        (flv_open(server, path, headers).status == 200).then_some(())
    });
    assert!(live.is_some(), "{path} did not start playing");
}

/// ffprobe on a URL that must be refused: its error output.
fn probe_refused(url: &str) -> String {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-show_streams",
            url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ffprobe {url} should fail: {err}");
    err
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg playing `url` over RTMP for `secs` without decoding; with `capture`, one line
/// per packet received (`framecrc`) on its stdout.
fn rtmp_player(url: &str, secs: u32, capture: bool) -> Proc {
    require("ffmpeg");
    let out_format = if capture { "framecrc" } else { "null" };
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-rw_timeout", "10000000"])
        .args(["-i", url, "-t", &secs.to_string(), "-c", "copy"])
        .args(["-f", out_format, "-"])
        .stdin(Stdio::null())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg starts");
    Proc(child)
}

/// The next hook call that satisfies `want`, skipping others.
fn next_hook(hook: &HookServer, timeout: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match hook.requests.recv_timeout(left) {
            Ok(v) if want(&v) => return Some(v),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn on_stop_is_called_when_an_flv_viewer_or_an_rtmp_player_leaves() {
    let hook = HookServer::start(200, "0");
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        &format!("media.on_stop={}", hook.url),
    ]);
    let _ff = publish(&signed_url(&server, "stopper", &[]), 30);
    wait_live(&server, "stopper");
    let is = |param: &'static str| move |v: &Value| v["param"] == param;

    // An HTTP-FLV viewer, told apart from other requests by its query.
    let mut viewer = flv_plays(&server, "/live/stopper.flv?viewer=flv1", &[]);
    viewer.read(16 * 1024);
    assert!(
        next_hook(&hook, Duration::from_millis(700), is("?viewer=flv1")).is_none(),
        "no on_stop while the viewer watches"
    );
    drop(viewer);
    let stop = next_hook(&hook, T, is("?viewer=flv1")).expect("on_stop after the FLV viewer left");
    assert_eq!(stop["action"], "on_stop", "{stop}");
    assert_eq!(stop["stream"], "stopper", "{stop}");
    assert_eq!(stop["app"], "live", "{stop}");
    assert_eq!(stop["protocol"], "flv", "{stop}");
    assert_eq!(stop["ip"], "127.0.0.1", "{stop}");

    // An RTMP player (ffmpeg), while it plays and after it stops.
    let url = format!("rtmp://{}/live/stopper?viewer=rtmp1", rtmp_addr(&server));
    let mut player = rtmp_player(&url, 30, false);
    let playing = support::eventually(T, || {
        (metric_sum(&server, "liveshard_media_viewers_rtmp", 2) == 1.0).then_some(())
    });
    assert!(playing.is_some(), "the RTMP player is counted");
    assert!(
        next_hook(&hook, Duration::from_millis(700), is("?viewer=rtmp1")).is_none(),
        "no on_stop while the player plays"
    );
    assert!(
        player.0.try_wait().unwrap().is_none(),
        "the player is playing"
    );
    interrupt(&player.0);
    let stop =
        next_hook(&hook, T, is("?viewer=rtmp1")).expect("on_stop after the RTMP player left");
    assert_eq!(stop["action"], "on_stop", "{stop}");
    assert_eq!(stop["stream"], "stopper", "{stop}");
    assert_eq!(stop["protocol"], "rtmp", "{stop}");
    let _ = player.0.wait();
}

#[test]
fn signed_play_guards_flv_and_rtmp() {
    let server = Server::start(&["--shards", "2", "--set", "media.play_sign=true"]);
    let url = signed_url(&server, "paid", &[]);
    let query = signed_query(&signed_url(&server, "paid", &["--play"]));
    let expired = signed_url(&server, "paid", &["--play", "--ttl", "1"]);
    let _ff = publish(&url, 30);
    let signed = format!("/live/paid.flv?{query}");
    wait_playable(&server, &signed, &[]);

    // HTTP-FLV: a signed play gets media; unsigned, tampered, another stream's and expired
    // signatures are refused with 403 and the error envelope.
    let _viewer = flv_plays(&server, &signed, &[]);
    let unsigned = flv_refused(&server, "/live/paid.flv", &[]);
    let why = assert_envelope(&unsigned, 403);
    assert!(why.contains("missing"), "{why}");
    let secret = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("txSecret="))
        .unwrap();
    let wrong: String = secret
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let tampered = signed.replace(secret, &wrong);
    assert!(assert_envelope(&flv_refused(&server, &tampered, &[]), 403).contains("mismatch"));
    let other = signed_url(&server, "other", &["--play"]);
    let other = format!("/live/paid.flv?{}", other.split_once('?').unwrap().1);
    assert!(assert_envelope(&flv_refused(&server, &other, &[]), 403).contains("mismatch"));
    // The push signature is for publishing only: it does not play.
    let push_q = signed_query(&url);
    let r = flv_refused(&server, &format!("/live/paid.flv?{push_q}"), &[]);
    assert!(assert_envelope(&r, 403).contains("mismatch"));
    wait_expired(&expired);
    let r = flv_refused(
        &server,
        &format!("/live/paid.flv?{}", signed_query(&expired)),
        &[],
    );
    assert!(assert_envelope(&r, 403).contains("expired"));

    // RTMP: unsigned, another stream's and the push signature refused; the signed URL
    // plays.
    let rtmp = format!("rtmp://{}/live/paid", rtmp_addr(&server));
    let err = probe_refused(&rtmp);
    assert!(err.contains("missing txSecret"), "{err}");
    let err = probe_refused(&format!("{rtmp}?{}", other.split_once('?').unwrap().1));
    assert!(err.contains("mismatch"), "{err}");
    let err = probe_refused(&format!("{rtmp}?{push_q}"));
    assert!(err.contains("mismatch"), "{err}");
    assert_h264_aac(&probe(&format!("{rtmp}?{query}")));
}

/// The regression of "a play URL is a push URL": with `media.play_sign`, the play URL that
/// the anonymous room API hands every viewer must not publish to the room.
#[test]
fn a_play_url_from_the_anonymous_room_api_does_not_publish() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "media.play_sign=true",
        "--set",
        "auth.dev_login=true",
    ]);
    let alice = dev_login(&server, "alice");
    let room = create_room(&server, &alice, "keys");
    let id = room["id"].as_str().unwrap().to_string();
    // The test's requests say `Host: t`; the URLs point at the server here.
    let rtmp_here = format!("rtmp://{}/", rtmp_addr(&server));
    let here = |url: &str| url.replacen("rtmp://t:", "rtmp://127.0.0.1:", 1);
    let push = here(room["push"]["url"].as_str().unwrap());
    assert!(push.starts_with(&rtmp_here), "{push}");

    // What any viewer gets, without a token.
    let seen = api_ok(&server.get(&format!("/api/v1/rooms/{id}")));
    assert!(seen["push"].is_null(), "no push URL for viewers: {seen}");
    let play_rtmp = here(seen["play"]["rtmp"].as_str().unwrap());
    assert!(play_rtmp.contains("txSecret="), "{play_rtmp}");
    let play_flv = seen["play"]["flv"].as_str().unwrap().to_string();
    let flv_path = &play_flv[play_flv.find("/live/").unwrap()..];

    // ffmpeg publishing with the play signature is refused, and nothing goes live.
    let err = refused(&play_rtmp);
    assert!(err.contains("signature mismatch"), "{err}");
    assert_eq!(metric_sum(&server, "liveshard_media_publishers", 2), 0.0);
    assert_eq!(flv_refused(&server, flv_path, &[]).status, 404);

    // The push URL publishes; the play URLs play (RTMP and HTTP-FLV).
    let _ff = publish(&push, 30);
    wait_playable(&server, flv_path, &[]);
    assert_h264_aac(&probe(&play_rtmp));
    assert_h264_aac(&probe(&server.url(flv_path)));
    // A re-signed push URL is signed with the push key: it does not play.
    let again = api_ok(&support::api::call(
        &server,
        "POST",
        &format!("/api/v1/rooms/{id}/push-url"),
        Some(&alice),
        None,
    ));
    let fresh = here(again["push"]["url"].as_str().unwrap());
    let err = probe_refused(&fresh);
    assert!(err.contains("signature mismatch"), "{err}");
}

#[test]
fn on_play_can_refuse_flv_and_rtmp_players() {
    let no = HookServer::start(200, "1");
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        &format!("media.on_play={}", no.url),
    ]);
    let _ff = publish(&signed_url(&server, "gated", &[]), 30);
    // 404 until the stream is live; then the hook is asked and says no.
    let refused = support::eventually(T, || {
        let r = flv_refused(&server, "/live/gated.flv?who=flv", &[]);
        (r.status != 404).then_some(r)
    })
    .expect("the stream goes live");
    let why = assert_envelope(&refused, 403);
    assert!(why.contains("refused by its hook"), "{why}");
    let asked = next_hook(&no, T, |v| v["protocol"] == "flv").expect("on_play asked for FLV");
    assert_eq!(asked["action"], "on_play", "{asked}");
    assert_eq!(asked["stream"], "gated", "{asked}");
    assert_eq!(asked["param"], "?who=flv", "{asked}");
    assert_eq!(
        metric_sum(&server, "liveshard_media_publishers", 2),
        1.0,
        "live"
    );

    let err = probe_refused(&format!(
        "rtmp://{}/live/gated?who=rtmp",
        rtmp_addr(&server)
    ));
    assert!(err.contains("refused by its hook"), "{err}");
    let asked = next_hook(&no, T, |v| v["protocol"] == "rtmp").expect("on_play asked for RTMP");
    assert_eq!(asked["action"], "on_play", "{asked}");
    assert_eq!(asked["stream"], "gated", "{asked}");
    assert_eq!(asked["param"], "?who=rtmp", "{asked}");
    // Nobody was let in.
    assert_eq!(metric_sum(&server, "liveshard_media_viewers_flv", 2), 0.0);
    assert_eq!(metric_sum(&server, "liveshard_media_viewers_rtmp", 2), 0.0);
}

#[test]
fn the_referer_allow_list_guards_flv_play() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "media.referer_allow=servicewechat.com",
    ]);
    let _ff = publish(&signed_url(&server, "hot", &[]), 30);
    let wechat = [(
        "Referer",
        "https://servicewechat.com/wx123/0/page-frame.html",
    )];
    wait_playable(&server, "/live/hot.flv", &wechat);
    // The allowed host and its subdomains play.
    let _a = flv_plays(&server, "/live/hot.flv", &wechat);
    let _b = flv_plays(
        &server,
        "/live/hot.flv",
        &[("Referer", "https://a.servicewechat.com:8443/x")],
    );
    // Foreign pages, look-alikes and (with a list set) no Referer at all are refused.
    for referer in [
        Some("https://evil.example/page"),
        Some("https://servicewechat.com.evil.example/"),
        Some("https://evil.example/?servicewechat.com"),
        Some("https://servicewechat.com@evil.example/"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = referer.map(|r| ("Referer", r)).into_iter().collect();
        let r = flv_refused(&server, "/live/hot.flv", &headers);
        let why = assert_envelope(&r, 403);
        assert!(why.contains("referer"), "{referer:?}: {why}");
    }
    // RTMP has no Referer: the list does not apply to it.
    assert_h264_aac(&probe(&format!("rtmp://{}/live/hot", rtmp_addr(&server))));
    assert_eq!(metric_sum(&server, "liveshard_media_viewers_flv", 2), 2.0);
}

#[test]
fn an_rtmp_player_on_another_shard_than_the_publisher_gets_the_stream() {
    let shards = 3;
    let server = Server::start(&["--shards", "3"]);
    let _ff = publish(&signed_url(&server, "roam", &[]), 40);
    wait_live(&server, "roam");
    let owner = per_shard(&server, "liveshard_media_publishers", shards)
        .iter()
        .position(|&n| n == 1.0)
        .expect("one shard owns the publisher");
    let url = format!("rtmp://{}/live/roam", rtmp_addr(&server));
    // Players land where the kernel puts them: retry until one is off the owner shard.
    let mut attempts = 0;
    let (mut player, shard) = loop {
        attempts += 1;
        assert!(attempts <= 12, "no RTMP player landed off shard {owner}");
        let mut p = rtmp_player(&url, 3, true);
        let counts = support::eventually(T, || {
            let c = per_shard(&server, "liveshard_media_viewers_rtmp", shards);
            (c.iter().sum::<f64>() == 1.0).then_some(c)
        })
        .expect("the player is counted");
        let on = counts.iter().position(|&n| n == 1.0).unwrap();
        if on != owner {
            break (p, on);
        }
        let _ = p.0.kill();
        let _ = p.0.wait();
        let gone = support::eventually(T, || {
            (metric_sum(&server, "liveshard_media_viewers_rtmp", shards) == 0.0).then_some(())
        });
        assert!(gone.is_some(), "a killed player is no longer counted");
    };
    assert!(
        server
            .metric("liveshard_stream_subscribed_shards{stream=\"roam\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "the owner sends the stream to shard {shard}"
    );
    let mut out = String::new();
    player
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = player.0.wait().unwrap();
    let mut err = String::new();
    player
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "player on shard {shard}: {err}");
    // Three seconds of audio and video packets.
    let mut per_stream = std::collections::BTreeMap::new();
    for l in out.lines().filter(|l| !l.starts_with('#')) {
        let idx = l.split(',').next().unwrap().trim().to_string();
        *per_stream.entry(idx).or_insert(0) += 1;
    }
    assert_eq!(per_stream.len(), 2, "video and audio: {per_stream:?}");
    assert!(
        per_stream.values().all(|&n| n >= 40),
        "packets for three seconds: {per_stream:?}"
    );
}

/// The regression of "hooks answering the SRS way refuse everything": SRS receivers answer
/// 200 with `{"code":0}` to allow; another code refuses, and the client is told the text.
#[test]
fn srs_style_hook_answers_allow_and_a_refusal_carries_the_receivers_text() {
    let yes = HookServer::start(200, r#"{"code":0}"#);
    let no = HookServer::start(200, r#"{"code":403,"msg":"no"}"#);
    const TEXT: &str = r#"refused by its hook: {"code":403,"msg":"no"}"#;

    // {"code":0} allows publishing and playing (HTTP-FLV and RTMP).
    let server = Server::start(&[
        "--set",
        &format!("media.on_publish={}", yes.url),
        "--set",
        &format!("media.on_play={}", yes.url),
    ]);
    let _ff = publish(&signed_url(&server, "srs", &[]), 30);
    wait_live(&server, "srs");
    assert_h264_aac(&probe(&format!("rtmp://{}/live/srs", rtmp_addr(&server))));
    drop(server);

    // A refused play says why, over HTTP-FLV (the error envelope) and RTMP.
    let server = Server::start(&[
        "--set",
        &format!("media.on_publish={}", yes.url),
        "--set",
        &format!("media.on_play={}", no.url),
    ]);
    let _ff = publish(&signed_url(&server, "srs", &[]), 30);
    let r = support::eventually(T, || {
        let r = flv_refused(&server, "/live/srs.flv", &[]);
        (r.status != 404).then_some(r)
    })
    .expect("the stream goes live");
    let why = assert_envelope(&r, 403);
    assert!(why.contains(TEXT), "{why}");
    let err = probe_refused(&format!("rtmp://{}/live/srs", rtmp_addr(&server)));
    assert!(err.contains(TEXT), "{err}");
    drop(server);

    // A refused publish says why.
    let server = Server::start(&["--set", &format!("media.on_publish={}", no.url)]);
    let err = refused(&signed_url(&server, "srs", &[]));
    assert!(err.contains(TEXT), "{err}");
    assert_eq!(metric_sum(&server, "liveshard_media_publishers", 1), 0.0);
}

#[test]
fn on_publish_refused_by_a_non_2xx_status() {
    // A 403 refuses even with the body that would allow on a 2xx.
    let hook = HookServer::start(403, "0");
    let server = Server::start(&["--set", &format!("media.on_publish={}", hook.url)]);
    let err = refused(&signed_url(&server, "denied", &[]));
    assert!(err.contains("refused by its hook (HTTP 403)"), "{err}");
    let asked = hook.requests.recv_timeout(T).unwrap();
    assert_eq!(asked["action"], "on_publish");
    assert_eq!(asked["stream"], "denied");
    assert_eq!(server.get("/live/denied.flv").status, 404);
    assert_eq!(metric_sum(&server, "liveshard_media_publishers", 1), 0.0);
}

#[test]
fn media_metrics_follow_a_live_stream() {
    let shards = 2;
    let server = Server::start(&["--shards", "2", "--set", "media.publisher_grace_ms=1000"]);
    let sum = |name: &str| metric_sum(&server, name, shards);
    let started = Instant::now();
    let mut ff = publish(&signed_url(&server, "metered", &[]), 60);
    wait_live(&server, "metered");
    // A stream is live before its first frame; once a player has read media, a keyframe is
    // cached. Counters are published every second.
    drop(flv_plays(&server, "/live/metered.flv", &[]));
    std::thread::sleep(Duration::from_millis(1100));
    let hits0 = sum("liveshard_media_gop_cache_hits_total");
    let mut flv = flv_plays(&server, "/live/metered.flv", &[]);
    let rtmp = rtmp_player(
        &format!("rtmp://{}/live/metered", rtmp_addr(&server)),
        60,
        false,
    );
    let gauges = || {
        [
            "liveshard_media_streams_live",
            "liveshard_media_publishers",
            "liveshard_media_viewers_flv",
            "liveshard_media_viewers_rtmp",
        ]
        .map(&sum)
    };
    let live = support::eventually(T, || {
        flv.read(1);
        let g = gauges();
        (g == [1.0; 4]).then_some(g)
    });
    assert!(
        live.is_some(),
        "one stream, one publisher, one FLV and one RTMP viewer: {:?}",
        gauges()
    );
    // Both players started from the GOP cache.
    let hits = support::eventually(T, || {
        let n = sum("liveshard_media_gop_cache_hits_total");
        (n >= hits0 + 2.0).then_some(n)
    });
    assert!(
        hits.is_some(),
        "GOP cache hits: {hits0} before the two players, {} after",
        sum("liveshard_media_gop_cache_hits_total")
    );
    // Bytes out grow while the viewers watch.
    let out0 = sum("liveshard_media_bytes_out_total");
    flv.read(64 * 1024);
    let grew = support::eventually(T, || {
        flv.read(1);
        let out1 = sum("liveshard_media_bytes_out_total");
        (out1 > out0).then_some(out1)
    });
    assert!(grew.is_some(), "bytes out stayed at {out0}");
    assert!(out0 > 0.0);
    // The stream's ingest bitrate agrees with the bytes received since it started.
    let bitrate = server
        .metric("liveshard_stream_ingest_bitrate_bps{stream=\"metered\"}")
        .expect("a bitrate sample for the stream");
    let bytes_in = sum("liveshard_media_bytes_in_total");
    let estimate = bytes_in * 8.0 / started.elapsed().as_secs_f64();
    assert!(bitrate > 10_000.0, "ingest bitrate {bitrate}");
    assert!(
        bitrate > estimate / 3.0 && bitrate < estimate * 3.0,
        "ingest bitrate {bitrate} b/s vs {bytes_in} bytes in over {:?}",
        started.elapsed()
    );
    // The publisher stops: the gauges fall back to zero and the viewers are let go.
    interrupt(&ff);
    let _ = ff.wait();
    let over = support::eventually(T, || (gauges() == [0.0; 4]).then_some(()));
    assert!(
        over.is_some(),
        "gauges after the stream ended: {:?}",
        gauges()
    );
    drop(rtmp);
}

/// A minimal RTMP player over a raw socket (simple handshake, connect, createStream,
/// play), built from the library's own encoders, for what ffmpeg cannot do: stop playing
/// and keep the connection open.
fn raw_rtmp_player(server: &Server, stream: &str) -> TcpStream {
    use bytes::BytesMut;
    use liveshard::media::amf0::{encode_all, Amf0Value as V};
    use liveshard::media::rtmp::chunk::encode_message;

    let mut s = TcpStream::connect(rtmp_addr(server)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    s.read_exact(&mut s0s1s2).unwrap();
    s.write_all(&s0s1s2[1..1537]).unwrap();
    let command = |values: &[V], stream_id: u32| {
        let mut out = BytesMut::new();
        encode_message(&mut out, 3, 20, stream_id, 0, &encode_all(values), 128);
        out
    };
    let tc_url = format!("rtmp://{}/live", rtmp_addr(server));
    s.write_all(&command(
        &[
            V::string("connect"),
            V::Number(1.0),
            V::object([("app", V::string("live")), ("tcUrl", V::string(tc_url))]),
        ],
        0,
    ))
    .unwrap();
    s.write_all(&command(
        &[V::string("createStream"), V::Number(2.0), V::Null],
        0,
    ))
    .unwrap();
    s.write_all(&command(
        &[
            V::string("play"),
            V::Number(0.0),
            V::Null,
            V::string(stream),
        ],
        1,
    ))
    .unwrap();
    s
}

#[test]
fn a_player_that_stops_playing_is_let_go_without_hanging_up() {
    let server = Server::start(&["--shards", "1"]);
    let _ff = publish(&signed_url(&server, "held", &[]), 30);
    wait_live(&server, "held");
    let mut player = raw_rtmp_player(&server, "held");
    // It plays: media flows and it counts as a viewer.
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < 200_000 {
        let n = player.read(&mut buf).expect("media arrives");
        assert!(n > 0, "closed while playing");
        got += n;
    }
    assert_eq!(metric_sum(&server, "liveshard_media_viewers_rtmp", 1), 1.0);
    // deleteStream, and the socket stays open on our side.
    let mut out = bytes::BytesMut::new();
    liveshard::media::rtmp::chunk::encode_message(
        &mut out,
        3,
        20,
        0,
        0,
        &liveshard::media::amf0::encode_all(&[
            liveshard::media::amf0::Amf0Value::string("deleteStream"),
            liveshard::media::amf0::Amf0Value::Number(4.0),
            liveshard::media::amf0::Amf0Value::Null,
            liveshard::media::amf0::Amf0Value::Number(1.0),
        ]),
        128,
    );
    player.write_all(&out).unwrap();
    // The server stops sending and closes; it does not stream on until we hang up.
    let started = Instant::now();
    let closed = loop {
        match player.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) if started.elapsed() < Duration::from_secs(5) => {}
            Ok(_) => break false,
            Err(_) => break true,
        }
    };
    assert!(closed, "still streaming 5 s after deleteStream");
    let gone = support::eventually(T, || {
        (metric_sum(&server, "liveshard_media_viewers_rtmp", 1) == 0.0).then_some(())
    });
    assert!(gone.is_some(), "the player is still counted");
}

#[test]
fn a_stalled_flv_viewer_skips_to_keyframes_then_is_closed_while_others_play_on() {
    // A small kernel send buffer, so back-pressure reaches the server's queue at once.
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "media.viewer_queue_bytes=131072",
        "--set",
        "media.send_buffer_bytes=16384",
    ]);
    let _ff = publish(&signed_url(&server, "busy", &[]), 60);
    wait_live(&server, "busy");
    let request = b"GET /live/busy.flv HTTP/1.1\r\nHost: t\r\n\r\n";
    // A healthy viewer reads all along, in its own thread.
    let mut healthy = TcpStream::connect(server.http).unwrap();
    healthy.write_all(request).unwrap();
    healthy
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut total, mut per_second) = (0usize, Vec::new());
            let start = Instant::now();
            let mut second = 0usize;
            let mut ended = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match healthy.read(&mut buf) {
                    Ok(0) => {
                        ended = Some("closed by the server");
                        break;
                    }
                    Err(_) => {
                        ended = Some("no data for 2 s");
                        break;
                    }
                    Ok(n) => total += n,
                }
                if start.elapsed().as_secs() as usize > second {
                    per_second.push(total);
                    second += 1;
                }
            }
            (total, per_second, ended, start.elapsed())
        })
    };
    // A stalled one: a tiny receive window, and it never reads.
    let stalled = TcpStream::connect(server.http).unwrap();
    support::shrink_receive_buffer(&stalled);
    (&stalled).write_all(request).unwrap();
    let skipped = support::eventually(T, || {
        (metric_sum(&server, "liveshard_media_frames_skipped_total", 1) > 0.0).then_some(())
    });
    assert!(skipped.is_some(), "the stalled viewer never skipped frames");
    let closed = support::eventually(T, || {
        (metric_sum(&server, "liveshard_media_slow_viewers_closed_total", 1) >= 1.0).then_some(())
    });
    assert!(closed.is_some(), "the stalled viewer was never closed");
    assert_eq!(
        metric_sum(&server, "liveshard_media_viewers_flv", 1),
        1.0,
        "the healthy viewer is still watching"
    );
    // The healthy viewer was never held back: it got the stream's rate throughout, and
    // goes on getting it.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (total, per_second, ended, took) = reader.join().unwrap();
    assert_eq!(ended, None, "the healthy viewer's stream ended");
    let rate = total as f64 / took.as_secs_f64();
    assert!(rate > 40_000.0, "the healthy viewer got {rate:.0} bytes/s");
    assert!(per_second.len() >= 4, "{per_second:?}");
    let slowest = per_second
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .unwrap_or(0);
    assert!(
        slowest > 20_000,
        "a second with only {slowest} bytes for the healthy viewer: {per_second:?}"
    );
}
