//! HLS against real clients: ffmpeg publishes over RTMP (1 s GOP, 1 s segments); ffprobe
//! and ffmpeg play the m3u8 back; the playlist slides, segments are served with their
//! types from any shard, signed play and the on_play hook apply, the playlist ends with
//! `#EXT-X-ENDLIST` when the publisher stops or the server is told to stop, and a
//! publisher that reconnects continues the same playlist.

mod support;

use std::io::{BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use support::media::{probe, publish, signed_query, signed_url, wait_live};
use support::{HookServer, HttpResponse, Server};

const T: Duration = Duration::from_secs(20);

/// A server with 1 s segments plus `extra` flags.
fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--set", "media.hls_segment_secs=1"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A playlist as a player reads it.
#[derive(Debug)]
struct Playlist {
    media_sequence: u64,
    target: u64,
    /// (duration seconds, URI)
    segments: Vec<(f64, String)>,
    /// Per segment: its `#EXT-X-PROGRAM-DATE-TIME` and the stream time of its `t=` title.
    times: Vec<(String, u64)>,
    discontinuities: usize,
    ended: bool,
}

fn parse_playlist(text: &str) -> Playlist {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "{text}");
    let mut p = Playlist {
        media_sequence: 0,
        target: 0,
        segments: Vec::new(),
        times: Vec::new(),
        discontinuities: 0,
        ended: false,
    };
    let mut duration = None;
    let mut pdt = None;
    for l in lines {
        if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
        } else if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = v.parse().unwrap();
        } else if let Some(v) = l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(v.to_string());
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            let (d, title) = v.split_once(',').expect("EXTINF has a comma");
            duration = Some(d.parse::<f64>().unwrap());
            let t = title
                .strip_prefix("t=")
                .expect("the stream time is the title");
            p.times.push((
                pdt.take().expect("each segment has its program date-time"),
                t.parse().unwrap(),
            ));
        } else if l == "#EXT-X-DISCONTINUITY" {
            p.discontinuities += 1;
        } else if l == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !l.starts_with('#') && !l.is_empty() {
            p.segments
                .push((duration.take().expect("EXTINF before URI"), l.into()));
        }
    }
    p
}

fn get_playlist(server: &Server, stream: &str) -> Option<(HttpResponse, Playlist)> {
    let r = server.get(&format!("/live/{stream}.m3u8"));
    if r.status != 200 {
        return None;
    }
    let p = parse_playlist(&r.text());
    Some((r, p))
}

/// Waits until `stream`'s playlist lists at least `n` segments.
fn wait_segments(server: &Server, stream: &str, n: usize) -> Playlist {
    support::eventually(T, || {
        let (_, p) = get_playlist(server, stream)?;
        (p.segments.len() >= n).then_some(p)
    })
    .unwrap_or_else(|| panic!("{stream} never listed {n} segments"))
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
fn hls_plays_back_h264_and_aac_and_decodes_without_errors() {
    let server = start(&["--shards", "2"]);
    let _ff = publish(&signed_url(&server, "cam1", &[]), 40);
    wait_segments(&server, "cam1", 2);
    let url = server.url("/live/cam1.m3u8");
    let streams = probe(&url);
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
    // Four seconds decoded (live, so new segments are fetched as they come), no error.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &url, "-t", "4", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "decoder errors");

    // Segments are muxed on one shard only (the owner); requests were answered on both.
    let segments = per_shard(&server, "liveshard_media_hls_segments_total", 2);
    assert_eq!(
        segments.iter().filter(|&&n| n > 0.0).count(),
        1,
        "{segments:?}"
    );
    for _ in 0..20 {
        assert_eq!(server.get("/live/cam1.m3u8").status, 200);
    }
    let requests = per_shard(&server, "liveshard_media_hls_requests_total", 2);
    assert!(requests.iter().all(|&n| n > 0.0), "{requests:?}");
    let bytes: f64 = per_shard(&server, "liveshard_media_hls_bytes_out_total", 2)
        .iter()
        .sum();
    assert!(bytes > 100_000.0, "{bytes}");
    let skipped: f64 = per_shard(&server, "liveshard_media_hls_input_skipped_total", 2)
        .iter()
        .sum();
    assert_eq!(skipped, 0.0, "ffmpeg's stream is all usable");
}

#[test]
fn the_playlist_slides_and_segments_are_served_with_their_types() {
    let server = start(&["--shards", "2", "--set", "media.hls_window=3"]);
    let _ff = publish(&signed_url(&server, "slide", &[]), 40);
    let first = wait_segments(&server, "slide", 1);
    let (r, _) = get_playlist(&server, "slide").unwrap();
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // Over a few seconds the window fills, then slides: at most 3 segments, numbers
    // rising, durations near the 1 s target.
    let slid = support::eventually(T, || {
        let (_, p) = get_playlist(&server, "slide")?;
        assert!(p.segments.len() <= 3, "{p:?}");
        assert!(p.target >= 1 && p.target <= 2, "{p:?}");
        assert!(!p.ended);
        // Listed 3, held 3 more: the first segment is gone once it is 4 behind.
        (p.media_sequence >= first.media_sequence + 4).then_some(p)
    })
    .expect("the media sequence advances");
    assert_eq!(slid.segments.len(), 3);
    for (d, uri) in &slid.segments {
        assert!((0.5..=2.0).contains(d), "{d}");
        assert!(uri.starts_with("slide-") && uri.ends_with(".ts"), "{uri}");
    }
    let seqs: Vec<u64> = slid
        .segments
        .iter()
        .map(|(_, u)| u["slide-".len()..u.len() - 3].parse().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (slid.media_sequence..slid.media_sequence + 3).collect::<Vec<_>>()
    );

    // Every segment from any shard: TS packets with the right headers.
    for (_, uri) in &slid.segments {
        for _ in 0..4 {
            let r = server.get(&format!("/live/{uri}"));
            assert_eq!(r.status, 200, "{uri}");
            assert_eq!(r.header("content-type"), Some("video/mp2t"));
            assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
            assert_eq!(r.header("access-control-allow-origin"), Some("*"));
            assert!(!r.body.is_empty() && r.body.len() % 188 == 0);
            assert!(r.body.chunks(188).all(|p| p[0] == 0x47));
        }
    }
    // Long gone, and never made.
    let old = server.get(&format!("/live/slide-{}.ts", first.media_sequence));
    assert_eq!(old.status, 404);
    let future = server.get(&format!("/live/slide-{}.ts", slid.media_sequence + 1000));
    assert_eq!(future.status, 404);
}

#[test]
fn a_stream_that_is_not_live_is_a_404() {
    let server = start(&[]);
    let r = server.get("/live/nothing.m3u8");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], 40400);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(server.get("/live/nothing-1.ts").status, 404);
    assert_eq!(server.get("/live/nothing.ts").status, 404);
    assert_eq!(server.get("/other/nothing.m3u8").status, 404);
    assert_eq!(server.get("/live/bad%20name.m3u8").status, 404);
}

#[test]
fn the_playlist_ends_with_endlist_after_the_publisher_stops() {
    let server = start(&["--shards", "2"]);
    let mut ff = publish(&signed_url(&server, "short", &[]), 5);
    wait_segments(&server, "short", 1);
    assert!(ff.wait().unwrap().success());
    // ffmpeg unpublished: the open segment was finished and the playlist ended.
    let (_, p) = support::eventually(T, || {
        get_playlist(&server, "short").filter(|(_, p)| p.ended)
    })
    .expect("the playlist ends");
    assert!(p.segments.len() >= 3, "{p:?}");
    let total: f64 = p.segments.iter().map(|s| s.0).sum();
    assert!(total >= 3.0, "the last seconds are in it: {p:?}");
    // Still served for a while, from any shard, with its segments.
    for _ in 0..6 {
        let (_, again) = get_playlist(&server, "short").expect("kept after the end");
        assert!(again.ended);
        let last = &again.segments.last().unwrap().1;
        assert_eq!(server.get(&format!("/live/{last}")).status, 200);
    }
    // The stream itself is gone.
    assert_eq!(server.get("/live/short.flv").status, 404);
}

#[test]
fn signed_play_guards_the_playlist_and_its_segments() {
    let server = start(&["--shards", "2", "--set", "media.play_sign=true"]);
    let url = signed_url(&server, "paid", &[]);
    let query = signed_query(&signed_url(&server, "paid", &["--play"]));
    let _ff = publish(&url, 30);
    let signed = format!("/live/paid.m3u8?{query}");
    let p = support::eventually(T, || {
        let r = server.get(&signed);
        (r.status == 200)
            .then(|| parse_playlist(&r.text()))
            .filter(|p| !p.segments.is_empty())
    })
    .expect("the signed playlist is served");
    let unsigned = server.get("/live/paid.m3u8");
    assert_eq!(unsigned.status, 403);
    assert_eq!(unsigned.json()["code"], 40305);
    // Segment URIs carry the signature, and need it.
    let uri = &p.segments[0].1;
    assert!(uri.ends_with(&format!(".ts?{query}")), "{uri}");
    assert_eq!(server.get(&format!("/live/{uri}")).status, 200);
    let bare = uri.split('?').next().unwrap();
    assert_eq!(server.get(&format!("/live/{bare}")).status, 403);
    // ffprobe follows the signed URIs.
    let streams = probe(&server.url(&signed));
    assert!(streams.iter().any(|s| s.1 == "h264"), "{streams:?}");
}

#[test]
fn on_play_is_asked_once_per_player_and_can_refuse() {
    let yes = HookServer::start(200, "0");
    let hook = format!("media.on_play={}", yes.url);
    // One shard: answers are remembered per shard.
    let server = start(&["--shards", "1", "--set", &hook]);
    let _ff = publish(&signed_url(&server, "hooked", &[]), 30);
    wait_segments(&server, "hooked", 1);
    for _ in 0..3 {
        assert_eq!(server.get("/live/hooked.m3u8").status, 200);
    }
    let asked = yes.requests.recv_timeout(T).unwrap();
    assert_eq!(asked["action"], "on_play");
    assert_eq!(asked["stream"], "hooked");
    assert_eq!(asked["protocol"], "hls");
    assert!(
        yes.requests
            .recv_timeout(Duration::from_millis(500))
            .is_err(),
        "repeated polls reuse the answer"
    );
    drop(server);

    let no = HookServer::start(200, "1");
    let server = start(&["--set", &format!("media.on_play={}", no.url)]);
    let _ff = publish(&signed_url(&server, "hooked", &[]), 30);
    let refused = support::eventually(T, || {
        let r = server.get("/live/hooked.m3u8");
        (r.status != 404).then_some(r)
    })
    .unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], 40306);
}

#[test]
fn a_reconnecting_publisher_continues_the_playlist_after_a_discontinuity() {
    let server = start(&["--shards", "2", "--set", "media.publisher_grace_ms=8000"]);
    let url = signed_url(&server, "flaky", &[]);
    let first = publish(&url, 60);
    let before = wait_segments(&server, "flaky", 2);
    // Dropped without an unpublish (kill -9), then back within the grace period, on
    // whichever shard its new connection lands.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let _second = publish(&url, 60);
    let after = support::eventually(T, || {
        let (_, p) = get_playlist(&server, "flaky")?;
        (p.discontinuities > 0 && p.segments.len() >= 3).then_some(p)
    })
    .expect("the playlist shows the break");
    assert!(!after.ended);
    assert!(
        after.media_sequence >= before.media_sequence,
        "numbering carries on: {before:?} then {after:?}"
    );
    let last_before = before.media_sequence + before.segments.len() as u64 - 1;
    assert!(
        after.media_sequence <= last_before + 1,
        "the old segments are still listed: {before:?} then {after:?}"
    );
    // The new ffmpeg starts its timestamps at 0 again; the stream clock carries on, so
    // stream times and program date-times (RFC 3339 in UTC sort as text) keep growing
    // across the break.
    for w in after.times.windows(2) {
        assert!(w[0].1 < w[1].1, "stream time goes on: {:?}", after.times);
        assert!(w[0].0 < w[1].0, "date-times go on: {:?}", after.times);
    }
}

#[test]
fn sigterm_finishes_the_open_segment_for_a_waiting_player() {
    // 30 s segments: nothing is finished before the signal.
    let server = Server::start(&["--set", "media.hls_segment_secs=30"]);
    let _ff = publish(&signed_url(&server, "last", &[]), 60);
    wait_live(&server, "last");
    // A player asks for the playlist: it waits for the first segment...
    let mut player = server.connect();
    player.set_read_timeout(Some(T)).unwrap();
    write!(player, "GET /live/last.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // ...and the server is told to stop: the open segment is finished and listed.
    let asked = Instant::now();
    server.signal(15);
    let r = support::read_response(&mut BufReader::new(player)).expect("an answer");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(r.status, 200, "{}", r.text());
    let p = parse_playlist(&r.text());
    assert!(p.ended, "{p:?}");
    assert_eq!(p.segments.len(), 1, "{p:?}");
    assert!(
        p.segments[0].0 >= 1.0,
        "the seconds before the signal: {p:?}"
    );
}
