//! Low-Latency HLS against a real publisher: ffmpeg publishes over RTMP (1 s GOP) to a
//! server with `media.hls_low_latency`; the playlist lists fMP4 parts with the LL-HLS
//! tags, every part is served byte for byte as the segment it makes up, ffmpeg decodes
//! the playlist, a blocking playlist reload and a hinted part come back once the part
//! exists, and requests for what never comes end cleanly: 503 after three target
//! durations, 404 for a hinted part whose segment ended first, 400 for what is too far
//! ahead.

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use support::media::{publish, signed_url};
use support::{HttpResponse, Server};

const T: Duration = Duration::from_secs(20);

/// A server with LL-HLS: 2 s segments of 333 ms parts, plus `extra` flags.
fn start(extra: &[&str]) -> Server {
    let mut args = vec![
        "--shards",
        "2",
        "--set",
        "media.hls_segment_secs=2",
        "--set",
        "media.hls_low_latency=true",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// What a player reads of an LL-HLS playlist.
#[derive(Debug, Default)]
struct Ll {
    text: String,
    /// Finished segments: (msn, URI, its parts' URIs).
    segments: Vec<(u64, String, Vec<String>)>,
    /// Parts listed after the last segment (the one being written).
    open_parts: Vec<String>,
    hint: Option<String>,
    ended: bool,
}

fn parse(text: &str) -> Ll {
    let mut ll = Ll {
        text: text.to_string(),
        ..Ll::default()
    };
    let mut msn = None;
    let mut parts = Vec::new();
    for l in text.lines() {
        let uri = || {
            let start = l.find("URI=\"").expect("a URI") + 5;
            l[start..].split('"').next().unwrap().to_string()
        };
        if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = Some(v.parse::<u64>().unwrap());
        } else if l.starts_with("#EXT-X-PART:") {
            parts.push(uri());
        } else if l.starts_with("#EXT-X-PRELOAD-HINT:") {
            ll.hint = Some(uri());
        } else if l == "#EXT-X-ENDLIST" {
            ll.ended = true;
        } else if !l.starts_with('#') && !l.is_empty() {
            let n = msn.expect("EXT-X-MEDIA-SEQUENCE first");
            ll.segments
                .push((n, l.to_string(), std::mem::take(&mut parts)));
            msn = Some(n + 1);
        }
    }
    ll.open_parts = parts;
    ll
}

fn playlist(server: &Server, stream: &str, query: &str) -> (HttpResponse, Ll) {
    let r = server.get(&format!("/live/{stream}.m3u8{query}"));
    let ll = if r.status == 200 {
        parse(&r.text())
    } else {
        Ll::default()
    };
    (r, ll)
}

/// One GET on a fresh connection to `addr` (from another thread than the server's owner).
fn get_at(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    support::read_response(&mut BufReader::new(s)).expect("a response")
}

/// (msn, part) of a part URI `{stream}-{msn}.{part}.m4s`.
fn position(uri: &str) -> (u64, u32) {
    let stem = uri.strip_suffix(".m4s").unwrap();
    let (_, at) = stem.rsplit_once('-').unwrap();
    let (msn, part) = at.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

/// Waits until the playlist lists `n` finished segments with parts.
fn wait_parts(server: &Server, stream: &str, n: usize) -> Ll {
    support::eventually(T, || {
        let (r, ll) = playlist(server, stream, "");
        let with_parts = ll.segments.iter().filter(|s| !s.2.is_empty()).count();
        (r.status == 200 && with_parts >= n).then_some(ll)
    })
    .unwrap_or_else(|| panic!("{stream} never listed {n} segments with parts"))
}

#[test]
fn parts_are_listed_served_and_make_up_their_segment() {
    let server = start(&[]);
    let _ff = publish(&signed_url(&server, "cam", &[]), 40);
    let ll = wait_parts(&server, "cam", 2);
    let text = &ll.text;
    assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n"), "{text}");
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999\n"),
        "{text}"
    );
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.333\n"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-MAP:URI=\"cam-"), "{text}");
    let hint = ll.hint.clone().expect("a preload hint");
    // The hint names the part after the last one listed.
    let last = ll
        .open_parts
        .last()
        .or_else(|| ll.segments.last().and_then(|s| s.2.last()))
        .unwrap();
    let (lm, lp) = position(last);
    let (hm, hp) = position(&hint);
    assert!(
        (hm, hp) == (lm, lp + 1) || (hm, hp) == (lm + 1, 0),
        "hint {hint} after {last}"
    );

    // Every part of a finished segment is served, and they make up the segment exactly.
    let (msn, uri, parts) = ll.segments.iter().rev().find(|s| !s.2.is_empty()).unwrap();
    let whole = server.get(&format!("/live/{uri}"));
    assert_eq!(whole.status, 200);
    let mut joined = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(position(p), (*msn, i as u32));
        let r = server.get(&format!("/live/{p}"));
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.header("content-type"), Some("video/iso.segment"));
        assert_eq!(&r.body[4..8], b"moof", "{p} is a fragment");
        joined.extend_from_slice(&r.body);
    }
    assert_eq!(joined, whole.body, "segment {msn} is its parts end to end");
    assert!(
        text.contains(&format!("URI=\"{}\",INDEPENDENT=YES", parts[0])),
        "a segment's first part starts on a keyframe: {text}"
    );
    // A part under the TS extension, or of a segment long gone, is not found.
    assert_eq!(server.get(&format!("/live/cam-{msn}.0.ts")).status, 404);
    assert_eq!(server.get("/live/cam-5.0.m4s").status, 404);

    // Players that know nothing of parts play the segments: ffmpeg decodes 3 s.
    let url = server.url("/live/cam.m3u8");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &url, "-t", "3", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "decoder errors");
}

#[test]
fn a_blocking_reload_and_a_hinted_part_come_back_when_the_part_exists() {
    let server = start(&[]);
    let _ff = publish(&signed_url(&server, "cam", &[]), 40);
    let ll = wait_parts(&server, "cam", 1);
    let hint = ll.hint.clone().expect("a preload hint");
    let (msn, part) = position(&hint);

    // Ask for the hinted part and for the playlist that lists it, before it exists.
    let ((status, text), (part_status, bytes)) = thread::scope(|s| {
        let (http, path) = (server.http, format!("/live/{hint}"));
        let part_req = s.spawn(move || get_at(http, &path));
        let r = server.get(&format!("/live/cam.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
        let p = part_req.join().unwrap();
        ((r.status, r.text()), (p.status, p.body))
    });
    assert_eq!(status, 200);
    assert!(
        text.contains("#EXT-X-PART:DURATION=") && text.contains(&format!("\"{hint}\"")),
        "the answer lists the part it waited for:\n{text}"
    );
    // The hinted part came, unless a keyframe ended its segment first.
    let later = server.get(&format!("/live/{hint}"));
    match part_status {
        200 => {
            assert_eq!(&bytes[4..8], b"moof");
            assert_eq!(later.body, bytes, "the part waited for is the part served");
        }
        404 => assert_eq!(later.status, 404, "a hinted part that never came"),
        s => panic!("hinted part: {s}"),
    }
    // Asking for a segment (no part) waits for it whole.
    let (r, next) = playlist(&server, "cam", &format!("?_HLS_msn={}", msn + 1));
    assert_eq!(r.status, 200);
    assert!(
        next.segments.iter().any(|s| s.0 == msn + 1),
        "segment {} is listed:\n{}",
        msn + 1,
        next.text
    );
    let blocking: f64 = (0..2)
        .map(|s| {
            server
                .metric(&format!(
                    "liveshard_media_hls_blocking_requests_total{{shard=\"{s}\"}}"
                ))
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(blocking, 2.0);

    // What is already there is answered at once, the same as a plain request would.
    let (r, old) = playlist(&server, "cam", &format!("?_HLS_msn={msn}&_HLS_part=0"));
    assert_eq!(r.status, 200);
    assert!(!old.segments.is_empty());
}

#[test]
fn what_never_comes_ends_cleanly() {
    // The publisher goes away but its stream stays (the grace), so nothing new comes.
    let server = start(&["--set", "media.publisher_grace_ms=60000"]);
    let mut ff = publish(&signed_url(&server, "cam", &[]), 40);
    let ll = wait_parts(&server, "cam", 1);
    let (msn, part) = position(ll.hint.as_deref().unwrap());

    // Too far past the live edge: 400 at once. Malformed: 400.
    for q in [
        format!("?_HLS_msn={}", msn + 5),
        format!("?_HLS_msn={msn}&_HLS_part={}", part + 9),
        format!("?_HLS_part={part}"),
        "?_HLS_msn=x".to_string(),
    ] {
        let (r, _) = playlist(&server, "cam", &q);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(r.json()["code"], 40000, "{q}");
    }

    ff.kill().unwrap();
    ff.wait().unwrap();
    // The open segment is finished when the publisher goes: its hint disappears, and the
    // part it named never comes.
    let (gone_msn, gone_part) = support::eventually(T, || {
        let (_, ll) = playlist(&server, "cam", "");
        match ll.hint {
            None => Some(ll.segments.last().map(|s| (s.0, s.2.len() as u32))?),
            Some(_) => None,
        }
    })
    .expect("the hint goes with the publisher");
    let r = server.get(&format!("/live/cam-{gone_msn}.{gone_part}.m4s"));
    assert_eq!(
        r.status, 404,
        "a part of a finished segment that never came"
    );

    // The next segment never comes: the reload is held three target durations (6 s),
    // then answered 503 with Retry-After, and so is its first part.
    let next = gone_msn + 1;
    let (r, _) = playlist(&server, "cam", &format!("?_HLS_msn={next}&_HLS_part=0"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = server.get(&format!("/live/cam-{next}.0.m4s"));
    assert_eq!(r.status, 503, "{}", r.text());

    // The publisher comes back: the part is made and a waiting reload gets it (a player
    // asks again after a 503, as one would while the publisher connects).
    let _ff = publish(&signed_url(&server, "cam", &[]), 40);
    let ll = support::eventually(T, || {
        let (r, ll) = playlist(&server, "cam", &format!("?_HLS_msn={next}&_HLS_part=0"));
        assert!(r.status == 200 || r.status == 503, "{}", r.text());
        (r.status == 200).then_some(ll)
    })
    .expect("the reload is answered once the publisher is back");
    assert!(
        ll.text.contains(&format!("\"cam-{next}.0.m4s\"")),
        "{}",
        ll.text
    );
}
