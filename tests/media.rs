//! Live media against real clients: ffmpeg publishes over RTMP with a signed URL; ffprobe
//! and ffmpeg play it back over HTTP-FLV and RTMP, on every shard; signatures, a second
//! publisher, the on_publish hook, live/offline notices and the publisher grace period.

mod support;

use std::io::{BufReader, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::media::{publish, rtmp_addr, signed_url};
use support::ws::{Client, Event};
use support::{require, HookServer, Server};

const T: Duration = Duration::from_secs(20);

/// Waits for a publisher to be live (its HTTP-FLV URL answers 200).
fn wait_live(server: &Server, stream: &str) {
    let live = support::eventually(T, || {
        let mut s = server.connect();
        write!(s, "GET /live/{stream}.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut BufReader::new(s), &mut line).ok()?;
        line.contains(" 200 ").then_some(())
    });
    assert!(live.is_some(), "stream {stream} did not go live");
}

/// ffprobe's view of a URL: (codec_type, codec_name, width, height) per stream.
fn probe(url: &str) -> Vec<(String, String, u64, u64)> {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-show_streams",
            "-of",
            "json",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

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
        if elsewhere >= 1 && viewers.len() >= 4 {
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
    let expired = signed_url(&server, "guarded", &["--ttl", "0"]);
    std::thread::sleep(Duration::from_millis(1100));
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
    let mut tail = Vec::new();
    loop {
        match viewer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
            }
            Err(e) => panic!("viewer read failed: {e}"),
        }
    }
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
