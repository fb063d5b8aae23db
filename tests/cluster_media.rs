//! Streams across nodes: three real nodes share one real `redis-server`
//! (`support::redis`). ffmpeg publishes on A; ffprobe plays it from B over HTTP-FLV and HLS (B
//! pulls it from A); a second publisher of the same stream on C is refused while A
//! publishes; once A's publisher is gone the claim is let go, and C may publish it.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use support::media::{probe, publish, rtmp_addr, signed_url, wait_live};
use support::redis::{RedisCluster, RedisServer};
use support::{eventually, Server};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "cluster-test-key";

/// One Redis server or a Redis Cluster, as the tests read it.
trait Cli {
    fn url(&self) -> String;
    fn cli(&self, args: &[&str]) -> String;
}

impl Cli for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    fn cli(&self, args: &[&str]) -> String {
        RedisServer::cli(self, args)
    }
}

impl Cli for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    fn cli(&self, args: &[&str]) -> String {
        RedisCluster::cli(self, args)
    }
}

/// The stream's claim in Redis (empty: none).
fn claim_of(redis: &dyn Cli, stream: &str) -> String {
    redis.cli(&["GET", &format!("ls:{{{stream}}}:claim")])
}

/// The claim's time to live in ms (negative: none).
fn pttl(redis: &dyn Cli, stream: &str) -> i64 {
    redis
        .cli(&["PTTL", &format!("ls:{{{stream}}}:claim")])
        .parse()
        .unwrap()
}

fn node(redis: &dyn Cli) -> Server {
    Server::start(&[
        "--shards",
        "2",
        "--redis",
        &redis.url(),
        "--set",
        &format!("cluster.key={KEY}"),
        "--set",
        "media.hls_segment_secs=1",
        "--set",
        "media.publisher_grace_ms=300",
        "--set",
        SECRET,
    ])
}

const SECRET: &str = "auth.jwt_secret=cluster-media-secret-0123456789abcdef";

fn metric_sum(server: &Server, name: &str) -> f64 {
    (0..2)
        .map(|s| {
            server
                .metric(&format!("{name}{{shard=\"{s}\"}}"))
                .unwrap_or(0.0)
        })
        .sum()
}

/// Video frames ffprobe decodes from `url` in about two seconds of it.
fn decoded_video_frames(url: &str) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000"])
        .args(["-select_streams", "v:0", "-read_intervals", "%+2"])
        .args(["-count_frames", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "csv=p=0", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or(0)
}

/// An ffmpeg publish that must be refused: it exits non-zero; what it printed.
fn refused(url: &str) -> String {
    let mut ff = publish(url, 5);
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = ff.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ffmpeg was not refused");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    ff.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "ffmpeg should have been refused: {err}");
    err
}

fn status(server: &Server, path: &str) -> u16 {
    let mut s = server.connect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The `live` items (their status) a danmaku viewer got, read until `quiet` passes with
/// nothing new.
fn live_notices(c: &mut support::ws::Client, out: &mut Vec<String>, quiet: Duration) {
    while let support::ws::Event::Json(v) = c.next(quiet) {
        for item in v["msgs"].as_array().into_iter().flatten() {
            if item["type"] == "live" {
                out.push(item["status"].as_str().unwrap_or_default().to_string());
            }
        }
    }
}

#[test]
fn a_stream_published_on_one_node_plays_on_another_and_is_claimed_cluster_wide() {
    across_nodes(&RedisServer::start());
}

#[test]
fn a_stream_plays_across_nodes_on_a_redis_cluster() {
    across_nodes(&RedisCluster::start(3));
}

fn across_nodes(redis: &dyn Cli) {
    let (a, b, c) = (node(redis), node(redis), node(redis));
    let stream = "acrossnodes";

    // A danmaku viewer of the stream's room on B hears live and offline once each, from
    // the node that publishes, whatever B's pulls do.
    let mut room_b = support::ws::Client::connect(b.http, &format!("room={stream}")).unwrap();
    room_b.expect("history", T);
    let mut notices: Vec<String> = Vec::new();

    // Nothing is published anywhere: no node finds it.
    assert_eq!(status(&b, &format!("/live/{stream}.flv")), 404);
    assert_eq!(claim_of(redis, stream), "");

    let mut first = publish(&signed_url(&a, stream, &[]), 60);
    wait_live(&a, stream);
    let claim = claim_of(redis, stream);
    assert!(
        claim.ends_with(&format!("|{}", a.http)),
        "the claim names A's address: {claim}"
    );
    let (ttl0, claimed_at) = (pttl(redis, stream), Instant::now());
    assert!(ttl0 > 0, "the claim has a TTL: {ttl0}");

    // HTTP-FLV from B: pulled from A, decoded.
    let flv = b.url(&format!("/live/{stream}.flv"));
    let streams = probe(&flv);
    assert!(
        streams
            .iter()
            .any(|(t, c, w, h)| t == "video" && c == "h264" && (*w, *h) == (640, 360)),
        "{streams:?}"
    );
    assert!(
        streams
            .iter()
            .any(|(t, c, _, _)| t == "audio" && c == "aac"),
        "{streams:?}"
    );
    let frames = decoded_video_frames(&flv);
    assert!(frames >= 10, "{frames} video frames decoded from B");
    assert!(metric_sum(&b, "liveshard_cluster_pulls_total") >= 1.0);
    assert_eq!(metric_sum(&a, "liveshard_cluster_pulls_total"), 0.0);
    // A pull is no publishing connection.
    assert_eq!(metric_sum(&b, "liveshard_media_publishers"), 0.0);
    assert_eq!(metric_sum(&a, "liveshard_media_publishers"), 1.0);

    // HLS from B: segmented on B from the pulled stream.
    let m3u8 = format!("/live/{stream}.m3u8");
    let listed = eventually(T, || {
        let r = b.get(&m3u8);
        (r.status == 200 && r.text().contains(".ts")).then_some(())
    });
    assert!(listed.is_some(), "B's playlist never listed a segment");
    let streams = probe(&b.url(&m3u8));
    assert!(
        streams
            .iter()
            .any(|(t, c, _, _)| t == "video" && c == "h264"),
        "{streams:?}"
    );

    // A second publisher on C is refused while A publishes.
    let err = refused(&signed_url(&c, stream, &[]));
    assert!(err.contains("already being published"), "{err}");
    assert!(
        first.try_wait().unwrap().is_none(),
        "A's publisher is unaffected"
    );
    assert_eq!(
        status(&c, &format!("/live/{stream}.flv")),
        200,
        "C plays it too"
    );

    // RTMP play from B too.
    let rtmp = format!("rtmp://{}/live/{stream}", rtmp_addr(&b));
    let streams = probe(&rtmp);
    assert!(
        streams
            .iter()
            .any(|(t, c, _, _)| t == "video" && c == "h264"),
        "{streams:?}"
    );

    // No viewer left on B: its pull ends after the linger, while A still publishes.
    let idle = eventually(T, || {
        (metric_sum(&b, "liveshard_cluster_pulls_active") == 0.0).then_some(())
    });
    assert!(idle.is_some(), "B's pull went on without viewers");
    assert!(first.try_wait().unwrap().is_none());
    live_notices(&mut room_b, &mut notices, Duration::from_millis(500));
    assert_eq!(
        notices,
        ["live"],
        "one live notice, no offline from B's pull ending"
    );
    // A renews its claim while it publishes.
    let renewed = eventually(T, || {
        let decayed = ttl0 - claimed_at.elapsed().as_millis() as i64;
        let ttl = pttl(redis, stream);
        (ttl > 0 && ttl > decayed + 500).then_some(())
    });
    assert!(renewed.is_some(), "the claim was not renewed");

    // A viewer on B starts a new pull; when A's publisher goes, the viewer's stream ends
    // on B as it would locally, and after the grace the claim is let go.
    let pulls = metric_sum(&b, "liveshard_cluster_pulls_total");
    let mut viewer = b.connect();
    write!(viewer, "GET /live/{stream}.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    viewer.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "B plays it again");
    assert!(metric_sum(&b, "liveshard_cluster_pulls_total") > pulls);
    let _ = first.kill();
    let _ = first.wait();
    viewer.set_read_timeout(Some(T)).unwrap();
    let tail = support::read_tail(&mut viewer)
        .unwrap_or_else(|e| panic!("B's viewer did not see the stream end: {e}"));
    assert!(tail.ends_with(b"0\r\n\r\n"), "the body ended cleanly");
    let released = eventually(T, || claim_of(redis, stream).is_empty().then_some(()));
    assert!(
        released.is_some(),
        "the claim stayed: {}",
        claim_of(redis, stream)
    );
    let ended = eventually(T, || {
        (status(&b, &format!("/live/{stream}.flv")) == 404
            && metric_sum(&b, "liveshard_cluster_pulls_active") == 0.0)
            .then_some(())
    });
    assert!(ended.is_some(), "B still serves the stream after A's ended");
    live_notices(&mut room_b, &mut notices, Duration::from_millis(500));
    assert_eq!(
        notices,
        ["live", "offline"],
        "offline once, when A's stream ended"
    );

    // Now C may publish it, and B plays it from C.
    let _second = publish(&signed_url(&c, stream, &[]), 60);
    wait_live(&c, stream);
    let claim = claim_of(redis, stream);
    assert!(claim.ends_with(&format!("|{}", c.http)), "{claim}");
    wait_live(&b, stream);
    assert!(decoded_video_frames(&flv) >= 10);
}

/// Closing a room on one node stops its publisher on another, and the room refuses a new
/// publish on every node.
#[test]
fn closing_a_room_on_one_node_stops_its_publisher_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let owner = support::token(&a, "host", &["--set", SECRET]);
    let room = support::api::create_room(&a, &owner, "closing")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ff = publish(&signed_url(&a, &room, &[]), 60);
    wait_live(&a, &room);
    let path = format!("/api/v1/rooms/{room}");
    support::api::ok(&support::api::call(&b, "DELETE", &path, Some(&owner), None));
    let stopped = eventually(T, || ff.try_wait().unwrap().map(|_| ()));
    assert!(stopped.is_some(), "the publisher on A is still publishing");
    let released = eventually(T, || claim_of(&redis, &room).is_empty().then_some(()));
    assert!(
        released.is_some(),
        "the claim stayed: {}",
        claim_of(&redis, &room)
    );
    let err = refused(&signed_url(&b, &room, &[]));
    assert!(err.contains("closed"), "{err}");
}

#[test]
fn only_the_cluster_key_skips_the_play_checks() {
    let redis = RedisServer::start();
    let a = Server::start(&[
        "--redis",
        &redis.url(),
        "--set",
        &format!("cluster.key={KEY}"),
        "--set",
        "media.play_sign=true",
    ]);
    let stream = "keyed";
    let _ff = publish(&signed_url(&a, stream, &[]), 60);
    let path = format!("/live/{stream}.flv");
    let head = |key: &str| {
        let mut s = a.connect();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nX-Liveshard-Cluster-Key: {key}\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    };
    let live = eventually(T, || head(KEY).contains(" 200 ").then_some(()));
    assert!(live.is_some(), "the cluster key did not play the stream");
    // Unsigned, and with a wrong key: the play signature applies.
    assert_eq!(status(&a, &path), 403);
    assert!(head("wrong").contains(" 403 "), "a wrong key played");
}

#[test]
fn without_redis_a_publish_works_on_its_node_and_is_claimed_once_redis_answers() {
    // Redis is down when the node starts.
    let mut redis = RedisServer::start();
    redis.stop();
    let a = Server::start(&[
        "--shards",
        "2",
        "--redis",
        &redis.url(),
        "--set",
        &format!("cluster.key={KEY}"),
    ]);
    let stream = "alone";
    let _ff = publish(&signed_url(&a, stream, &[]), 60);
    wait_live(&a, stream);
    assert!(metric_sum(&a, "liveshard_cluster_claims_unreachable_total") >= 1.0);
    let streams = probe(&a.url(&format!("/live/{stream}.flv")));
    assert!(
        streams
            .iter()
            .any(|(t, c, _, _)| t == "video" && c == "h264"),
        "{streams:?}"
    );
    // Redis comes: the claim is taken by the node's next renewal.
    redis.restart();
    let claimed = eventually(T, || {
        claim_of(&redis, stream)
            .ends_with(&format!("|{}", a.http))
            .then_some(())
    });
    assert!(claimed.is_some(), "claim: {}", claim_of(&redis, stream));
}
