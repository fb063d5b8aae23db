//! Danmaku over WebSocket, black-box against the real server: fan-out across shards, auth,
//! slow consumers, heartbeats, limits, bad frames, history, private messages, moderation,
//! and the danmaku counters in `/metrics`.
//!
//! Every behavioural scenario runs twice, with `--shards 1` and with `--shards 3`
//! (`on_one_and_three_shards!`). With three shards the scenarios place their clients on
//! chosen shards (`joined_on`): each connection first asks `GET /healthz` — which answers
//! with the shard that accepted the TCP connection — and is upgraded on that same
//! connection only if it landed where the scenario wants it, so "moderator and target on
//! different shards" or "a viewer on every shard" is a fact of the test, not luck.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::ws::{Client, Event};
use support::{token, Server};

const T: Duration = Duration::from_secs(10);

/// Generates `NAME::one_shard` and `NAME::three_shards`, calling `NAME(1)` and `NAME(3)`.
macro_rules! on_one_and_three_shards {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn one_shard() {
                super::$name(1)
            }

            #[test]
            fn three_shards() {
                super::$name(3)
            }
        }
    )*};
}

on_one_and_three_shards!(
    three_hundred_clients_three_rooms,
    anonymous_viewers_read_but_may_not_send,
    expired_or_forged_tokens_are_refused,
    a_client_that_stops_reading_is_closed_while_others_keep_receiving,
    a_silent_connection_is_closed_after_two_heartbeats_and_a_pinging_one_stays,
    rate_limit_length_and_filter_answer_with_errors,
    one_users_connections_share_one_rate_limit,
    each_bad_frame_kind_gets_its_close_code,
    history_on_join_has_the_last_items,
    private_messages_reach_only_their_target,
    moderators_mute_kick_and_ban_across_shards,
    online_counts_are_pushed_and_gifts_arrive,
    metrics_count_a_known_exchange,
    bytes_written_to_a_short_lived_connection_are_counted,
    idle_viewers_park_and_are_woken_by_what_they_send_and_what_they_are_sent,
);

fn start(shards: usize, extra: &[&str]) -> Server {
    let n = shards.to_string();
    let mut args = vec!["--shards", n.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn items_of(v: &Value) -> Vec<Value> {
    v["msgs"].as_array().cloned().unwrap_or_default()
}

// --- placement: which shard holds a connection ------------------------------------------

/// Opens a TCP connection that the shard `shard` accepted (asking `/healthz` on it, and
/// trying again on a new connection until the kernel's SO_REUSEPORT hash lands there).
fn tcp_on_shard(server: &Server, shard: usize) -> TcpStream {
    for _ in 0..300 {
        let stream = TcpStream::connect(server.http).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        (&stream)
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = support::read_response(&mut BufReader::new(&stream)).expect("healthz answer");
        assert_eq!(resp.status, 200);
        if resp.json()["data"]["shard"].as_u64() == Some(shard as u64) {
            return stream;
        }
    }
    panic!("no connection landed on shard {shard} in 300 tries");
}

/// A WebSocket connection to `/ws?QUERY` accepted by shard `shard` (upgraded on the same
/// keep-alive connection that asked `/healthz`). Err carries the HTTP status of a refusal.
fn connect_on(
    server: &Server,
    query: &str,
    headers: &[(&str, &str)],
    shard: usize,
) -> Result<Client, u16> {
    Client::upgrade(tcp_on_shard(server, shard), server.http, query, headers)
}

/// A viewer on shard `shard` that has joined (its `history` arrived).
fn joined_on(server: &Server, query: &str, shard: usize) -> Client {
    let mut c = connect_on(server, query, &[], shard).expect("upgrade accepted");
    c.expect("history", T);
    c
}

fn with_token(server: &Server, room: &str, uid: &str) -> String {
    format!("room={room}&token={}", token(server, uid, &[]))
}

// --- metrics ------------------------------------------------------------------------------

const CONNS: &str = "liveshard_ws_connections";
const ROOMS_HOME: &str = "liveshard_ws_rooms_home";
const ROOMS_LOCAL: &str = "liveshard_ws_rooms_local";
const MSGS_IN: &str = "liveshard_ws_messages_in_total";
const REJECTED: &str = "liveshard_ws_messages_rejected_total";
const ITEMS: &str = "liveshard_ws_items_total";
const BATCHES: &str = "liveshard_ws_batches_total";
const MSGS_OUT: &str = "liveshard_ws_messages_out_total";
const DROPPED: &str = "liveshard_ws_messages_dropped_total";
const BYTES_OUT: &str = "liveshard_ws_bytes_out_total";
const FLUSHES: &str = "liveshard_ws_flushes_total";
const FLUSH_WRITES: &str = "liveshard_ws_flush_writes_total";
const SLOW_CLOSED: &str = "liveshard_ws_slow_consumer_closed_total";
const HEARTBEAT_CLOSED: &str = "liveshard_ws_heartbeat_closed_total";
const QUEUE_BYTES: &str = "liveshard_ws_queue_bytes";
const PARKED: &str = "liveshard_ws_parked";

/// One scrape of `/metrics`.
struct Scrape {
    samples: HashMap<String, f64>,
    shards: usize,
}

impl Scrape {
    /// A per-shard sample; a missing one fails the test (a renamed metric is a break).
    fn at(&self, name: &str, shard: usize) -> f64 {
        let key = format!("{name}{{shard=\"{shard}\"}}");
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("/metrics has no {key}"))
    }

    fn per_shard(&self, name: &str) -> Vec<f64> {
        (0..self.shards).map(|s| self.at(name, s)).collect()
    }

    fn sum(&self, name: &str) -> f64 {
        self.per_shard(name).iter().sum()
    }
}

fn scrape(server: &Server, shards: usize) -> Scrape {
    let resp = server.get("/metrics");
    assert_eq!(resp.status, 200);
    let samples = resp
        .text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Scrape { samples, shards }
}

/// Scrapes until `done` holds (danmaku counters reach `/metrics` once a second per shard)
/// or 5 s pass; returns the last scrape either way, for the caller's exact assertions.
fn settle(server: &Server, shards: usize, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(server, shards);
        if done(&m) || Instant::now() >= deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many connections each shard should hold, from a list of placements.
fn per_shard_count(placements: &[usize], shards: usize) -> Vec<f64> {
    let mut v = vec![0.0; shards];
    for &s in placements {
        v[s] += 1.0;
    }
    v
}

// --- fan-out ------------------------------------------------------------------------------

/// 300 clients over 3 rooms; one logged-in sender per room posts 30 items. Every client
/// gets every item of its room exactly once, in strictly increasing id order, and nothing
/// from the other rooms. The counters agree: 90 posts in, 90 items, nothing dropped, at
/// least one queued frame per batch a viewer read, and no connection left afterwards.
fn three_hundred_clients_three_rooms(shards: usize) {
    let server = start(
        shards,
        &[
            "--set",
            "danmaku.rate_per_sec=1000",
            "--set",
            "danmaku.rate_burst=1000",
        ],
    );
    const ROOMS: usize = 3;
    const PER_ROOM: usize = 100;
    const ITEMS_PER_ROOM: usize = 30;
    let tokens: Vec<String> = (0..ROOMS)
        .map(|r| token(&server, &format!("sender{r}"), &[]))
        .collect();
    let joined = Arc::new(Barrier::new(ROOMS * PER_ROOM));
    let addr = server.http;
    let mut handles = Vec::new();
    for (room, room_token) in tokens.iter().enumerate() {
        for i in 0..PER_ROOM {
            let joined = joined.clone();
            let tok = (i == 0).then(|| room_token.clone());
            handles.push(std::thread::spawn(move || {
                let query = match &tok {
                    Some(t) => format!("room=fan{room}&token={t}"),
                    None => format!("room=fan{room}"),
                };
                let mut c = Client::connect(addr, &query).expect("upgrade accepted");
                c.expect("history", T);
                joined.wait();
                let mut acked = Vec::new();
                if tok.is_some() {
                    for n in 0..ITEMS_PER_ROOM {
                        c.send(json!({"type": "danmaku", "text": format!("room{room}-item{n}"), "cid": format!("c{n}")}));
                    }
                }
                let mut seen = Vec::new();
                let mut batches = 0u64;
                let deadline = Instant::now() + Duration::from_secs(60);
                while seen.len() < ITEMS_PER_ROOM || (tok.is_some() && acked.len() < ITEMS_PER_ROOM)
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    assert!(
                        !left.is_zero(),
                        "room {room} client {i}: {} of {ITEMS_PER_ROOM} items",
                        seen.len()
                    );
                    match c.next(left) {
                        Event::Json(v) if v["type"] == "batch" => {
                            batches += 1;
                            assert_eq!(v["room"], format!("fan{room}"));
                            for item in items_of(&v) {
                                assert_eq!(
                                    item["room"],
                                    format!("fan{room}"),
                                    "nothing from other rooms"
                                );
                                seen.push((
                                    item["id"].as_u64().unwrap(),
                                    item["text"].as_str().unwrap().to_string(),
                                ));
                            }
                        }
                        Event::Json(v) if v["type"] == "ack" => {
                            acked.push(v["id"].as_u64().unwrap())
                        }
                        Event::Json(v) if v["type"] == "error" => panic!("error: {v}"),
                        Event::Json(_) => {}
                        other => panic!("room {room} client {i}: {other:?}"),
                    }
                }
                // A little longer: nothing more (no duplicates) may arrive.
                if let Event::Json(v) = c.next(Duration::from_millis(300)) {
                    assert_ne!(v["type"], "batch", "unexpected extra batch {v}");
                }
                (room, i, seen, acked, batches)
            }));
        }
    }
    let mut batch_frames_read = 0u64;
    let mut batch_frames_per_room = [0u64; ROOMS];
    for h in handles {
        let (room, i, seen, acked, batches) = h.join().expect("client thread");
        batch_frames_read += batches;
        if i == 0 {
            batch_frames_per_room[room] = batches;
        }
        assert_eq!(seen.len(), ITEMS_PER_ROOM, "exactly once");
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "ids strictly increasing: {seen:?}"
        );
        let texts: HashSet<String> = seen.iter().map(|(_, t)| t.clone()).collect();
        let want: HashSet<String> = (0..ITEMS_PER_ROOM)
            .map(|n| format!("room{room}-item{n}"))
            .collect();
        assert_eq!(texts, want);
        if !acked.is_empty() {
            let ids: HashSet<u64> = seen.iter().map(|(id, _)| *id).collect();
            assert_eq!(
                ids,
                acked.into_iter().collect(),
                "acked ids are the delivered ids"
            );
        }
    }
    // Every client thread has ended and dropped its connection.
    let total = (ROOMS * ITEMS_PER_ROOM) as f64;
    // Each shard publishes its counters on its own sweep: wait for the viewers' shards too.
    let m = settle(&server, shards, |m| {
        m.sum(MSGS_IN) == total
            && m.sum(ITEMS) == total
            && m.sum(CONNS) == 0.0
            && m.sum(MSGS_OUT) >= batch_frames_read as f64
    });
    assert_eq!(
        m.sum(MSGS_IN),
        total,
        "posts in: {:?}",
        m.per_shard(MSGS_IN)
    );
    assert_eq!(m.sum(ITEMS), total, "items: {:?}", m.per_shard(ITEMS));
    assert_eq!(m.sum(REJECTED), 0.0);
    assert_eq!(m.sum(DROPPED), 0.0, "no healthy viewer missed a frame");
    assert!(
        m.sum(MSGS_OUT) >= batch_frames_read as f64,
        "messages out {} < {batch_frames_read} batch frames the viewers read",
        m.sum(MSGS_OUT)
    );
    assert!(
        m.sum(BATCHES) >= batch_frames_per_room.iter().sum::<u64>() as f64,
        "batches {} < distinct batch frames {batch_frames_per_room:?}",
        m.sum(BATCHES)
    );
    assert_eq!(m.sum(CONNS), 0.0, "connections back to 0 after all closed");
}

// --- auth ---------------------------------------------------------------------------------

fn anonymous_viewers_read_but_may_not_send(shards: usize) {
    let server = start(shards, &[]);
    // An anonymous viewer on every shard; the logged-in sender on another shard than the
    // first of them.
    let mut anons: Vec<Client> = (0..shards)
        .map(|s| joined_on(&server, "room=r1", s))
        .collect();
    anons[0].send(json!({"type": "danmaku", "text": "hi", "cid": "a1"}));
    let e = anons[0].expect("error", T);
    assert_eq!(e["code"], 4010);
    assert_eq!(e["cid"], "a1");
    anons[shards - 1].send(json!({"type": "gift", "gift_id": "rose", "cid": "a2"}));
    assert_eq!(anons[shards - 1].expect("error", T)["code"], 4010);
    // They still read what logged-in users send.
    let mut user = joined_on(&server, &with_token(&server, "r1", "u1"), 1 % shards);
    user.send(json!({"type": "danmaku", "text": "hello", "cid": "u"}));
    assert_eq!(user.expect("ack", T)["cid"], "u");
    for anon in anons.iter_mut() {
        let b = anon.expect("batch", T);
        let items = items_of(&b);
        assert_eq!(items.len(), 1, "only the logged-in post: {b}");
        assert_eq!(items[0]["text"], "hello");
        assert_eq!(items[0]["uid"], "u1");
        assert_eq!(items[0]["nick"], "nick-u1");
    }
    // Only the logged-in post went in.
    let m = settle(&server, shards, |m| m.sum(MSGS_IN) >= 1.0);
    assert_eq!(m.sum(MSGS_IN), 1.0, "anonymous sends never reach the room");
    assert_eq!(m.sum(ITEMS), 1.0);
}

fn expired_or_forged_tokens_are_refused(shards: usize) {
    let server = start(shards, &[]);
    let expired = token(&server, "u1", &["--ttl", "0"]);
    let forged = token(
        &server,
        "u1",
        &["--set", "auth.jwt_secret=a-different-secret-entirely"],
    );
    for s in 0..shards {
        assert_eq!(
            connect_on(&server, &format!("room=r&token={expired}"), &[], s).err(),
            Some(401),
            "expired, shard {s}"
        );
        assert_eq!(
            connect_on(&server, &format!("room=r&token={forged}"), &[], s).err(),
            Some(401),
            "forged, shard {s}"
        );
        assert_eq!(
            connect_on(&server, "room=r&token=not.a.jwt", &[], s).err(),
            Some(401),
            "malformed, shard {s}"
        );
        // The same refusal for a token offered as the subprotocol.
        assert_eq!(
            connect_on(&server, "room=r", &[("Sec-WebSocket-Protocol", &forged)], s).err(),
            Some(401),
            "forged subprotocol, shard {s}"
        );
    }
    // And in a first `auth` message, on another shard than the viewer who reads along.
    let mut reader = joined_on(&server, "room=r", 0);
    let mut c = joined_on(&server, "room=r", shards - 1);
    for bad in [&forged, &expired] {
        c.send(json!({"type": "auth", "token": bad}));
        assert_eq!(c.expect("error", T)["code"], 4011);
    }
    // Still anonymous after the refusals.
    c.send(json!({"type": "danmaku", "text": "not yet", "cid": "n"}));
    assert_eq!(c.expect("error", T)["code"], 4010);
    let good = token(&server, "u2", &[]);
    c.send(json!({"type": "auth", "token": good}));
    assert_eq!(c.expect("authed", T)["uid"], "u2");
    c.send(json!({"type": "auth", "token": good}));
    assert_eq!(c.expect("error", T)["code"], 4012);
    c.send(json!({"type": "danmaku", "text": "now I may"}));
    assert_eq!(items_of(&c.expect("batch", T))[0]["uid"], "u2");
    let seen = items_of(&reader.expect("batch", T));
    assert_eq!(
        (
            seen.len(),
            seen[0]["uid"].as_str(),
            seen[0]["text"].as_str()
        ),
        (1, Some("u2"), Some("now I may"))
    );
}

#[test]
fn token_in_subprotocol_is_accepted_and_echoed() {
    let server = Server::start(&[]);
    let t = token(&server, "u7", &[]);
    let mut c =
        Client::connect_with(server.http, "room=r", &[("Sec-WebSocket-Protocol", &t)]).unwrap();
    c.expect("history", T);
    c.send(json!({"type": "like", "cid": "l"}));
    assert_eq!(c.expect("ack", T)["cid"], "l");
}

#[test]
fn bad_requests_to_the_endpoint() {
    let server = Server::start(&["--set", "danmaku.origins=https://ok.example"]);
    assert_eq!(Client::connect(server.http, "room=").err(), Some(400));
    assert_eq!(
        Client::connect(server.http, "room=has%20space").err(),
        Some(400)
    );
    assert_eq!(
        Client::connect_with(server.http, "room=r", &[("Origin", "https://evil.example")]).err(),
        Some(403)
    );
    assert!(
        Client::connect_with(server.http, "room=r", &[("Origin", "https://ok.example")]).is_ok()
    );
    // A plain GET is told to upgrade.
    let resp = server.get("/ws?room=r");
    assert_eq!(resp.status, 426);
}

// --- slow consumers -----------------------------------------------------------------------

/// A viewer that stops reading (tiny receive buffer, never read) while a sender posts
/// rounds of 5 × ~1 KB items: the server drops frames for it, then closes it as a slow
/// consumer on its shard; healthy viewers — on its shard and on every other — get every
/// item, each within well under a second of its send, before, during and after.
fn a_client_that_stops_reading_is_closed_while_others_keep_receiving(shards: usize) {
    const QUEUE: usize = 16384;
    let server = start(
        shards,
        &[
            "--set",
            "danmaku.merge_window_ms=50",
            "--set",
            &format!("danmaku.queue_bytes={QUEUE}"),
            "--set",
            "danmaku.send_buffer_bytes=4096",
            "--set",
            "danmaku.slow_grace_ms=1500",
            "--set",
            "danmaku.max_text_chars=1000",
            "--set",
            "danmaku.rate_per_sec=1000",
            "--set",
            "danmaku.rate_burst=1000",
        ],
    );
    let stalled_shard = 0;
    let mut stalled = joined_on(&server, "room=slow", stalled_shard);
    support::shrink_receive_buffer(stalled.ws.get_ref());
    // Healthy viewers: two on the stalled one's shard, one on each other shard.
    let mut placements = vec![stalled_shard, stalled_shard];
    placements.extend(1..shards);
    let sender_shard = shards - 1;
    let start_all = Arc::new(Barrier::new(placements.len() + 1));
    let healthy: Vec<_> = placements
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let mut c = joined_on(&server, "room=slow", s);
            let start_all = start_all.clone();
            std::thread::spawn(move || {
                start_all.wait();
                // (text, id, arrival) of every item, until the sender's "END".
                let mut got: Vec<(String, u64, Instant)> = Vec::new();
                loop {
                    let b = c.expect("batch", T);
                    let at = Instant::now();
                    for item in items_of(&b) {
                        let text = item["text"].as_str().unwrap().to_string();
                        if text == "END" {
                            return (got, c);
                        }
                        got.push((text, item["id"].as_u64().unwrap(), at));
                    }
                    assert!(got.len() < 100_000, "viewer {i}: runaway");
                }
            })
        })
        .collect();
    let mut sender = joined_on(&server, &with_token(&server, "slow", "s"), sender_shard);
    let mut conns_on = per_shard_count(&placements, shards);
    conns_on[stalled_shard] += 1.0;
    conns_on[sender_shard] += 1.0;
    start_all.wait();

    let text = "x".repeat(900);
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    // What the shards hold once the server let go of the stalled viewer.
    let mut conns_after = conns_on.clone();
    conns_after[stalled_shard] -= 1.0;
    let mut closed_at_round = None;
    let mut max_queue_on_stalled_shard = 0.0f64;
    let mut round = 0;
    // Rounds until the server dropped the stalled viewer's connection, then five more.
    while closed_at_round.is_none_or(|r| round < r + 5) {
        assert!(
            round < 150,
            "the stalled viewer was never let go: {:?} connections per shard",
            scrape(&server, shards).per_shard(CONNS)
        );
        for n in 0..5 {
            let t = format!("{round}-{n}-{text}");
            sent_at.insert(t.clone(), Instant::now());
            sender.send(json!({"type": "danmaku", "text": t}));
        }
        // The sender reads too (it is a viewer of its own room), at least its acks.
        for _ in 0..5 {
            sender.expect("ack", T);
        }
        if round % 4 == 3 {
            let m = scrape(&server, shards);
            max_queue_on_stalled_shard =
                max_queue_on_stalled_shard.max(m.at(QUEUE_BYTES, stalled_shard));
            if closed_at_round.is_none() && m.per_shard(CONNS) == conns_after {
                closed_at_round = Some(round);
            }
        }
        std::thread::sleep(Duration::from_millis(60));
        round += 1;
    }
    sender.send(json!({"type": "danmaku", "text": "END"}));

    // Every healthy viewer got every item exactly once, in order, in time.
    let mut latencies = Vec::new();
    let mut still_open = Vec::new();
    for (i, h) in healthy.into_iter().enumerate() {
        let (got, c) = h.join().expect("healthy viewer");
        still_open.push(c);
        assert_eq!(got.len(), sent_at.len(), "viewer {i} missed items");
        assert!(
            got.windows(2).all(|w| w[0].1 < w[1].1),
            "viewer {i}: ids strictly increasing"
        );
        let texts: HashSet<&String> = got.iter().map(|g| &g.0).collect();
        assert_eq!(texts.len(), sent_at.len(), "viewer {i}: no duplicates");
        for (text, _, at) in &got {
            latencies.push(at.duration_since(sent_at[text]));
        }
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().unwrap();
    eprintln!("healthy viewers: median {median:?}, worst {worst:?} over {round} rounds");
    // Never held up by the stalled one (its grace period is 1.5 s; the merge window 50 ms).
    assert!(worst < Duration::from_millis(500), "an item took {worst:?}");
    assert!(
        median < Duration::from_millis(200),
        "median latency {median:?}"
    );

    // The server closed exactly the stalled viewer, on its shard, and let go of it.
    let mut expected_closed = vec![0.0; shards];
    expected_closed[stalled_shard] = 1.0;
    let m = settle(&server, shards, |m| {
        m.per_shard(SLOW_CLOSED) == expected_closed && m.sum(QUEUE_BYTES) == 0.0
    });
    assert_eq!(
        m.per_shard(SLOW_CLOSED),
        expected_closed,
        "slow-consumer closes"
    );
    assert_eq!(m.per_shard(HEARTBEAT_CLOSED), vec![0.0; shards]);
    assert_eq!(
        m.per_shard(CONNS),
        conns_after,
        "only the stalled connection is gone"
    );
    assert!(
        m.at(DROPPED, stalled_shard) >= 1.0,
        "frames were dropped for it before it was closed"
    );
    // While it stalled its shard held queued bytes for it — bounded by the queue limit
    // per connection there (healthy viewers hold next to nothing).
    let bound = QUEUE as f64 * conns_on[stalled_shard];
    assert!(
        max_queue_on_stalled_shard > 0.0 && max_queue_on_stalled_shard <= bound,
        "queue bytes on the stalled viewer's shard peaked at {max_queue_on_stalled_shard}"
    );
    assert_eq!(m.sum(QUEUE_BYTES), 0.0, "nothing left queued");

    // The stalled client, reading at last, finds a gap and then its connection closed. The
    // close frame may not have fit into its full buffers, so EOF without one is fine.
    let mut ids = Vec::new();
    let close = loop {
        match stalled.next(T) {
            Event::Json(v) if v["type"] == "batch" => {
                ids.extend(items_of(&v).iter().map(|i| i["id"].as_u64().unwrap()))
            }
            Event::Json(_) => {}
            Event::Closed(c) => break c.map(|c| c.0),
            Event::Timeout => panic!("the stalled connection was not closed"),
        }
    };
    assert!(matches!(close, Some(1008) | None), "close {close:?}");
    assert!(
        ids.len() < sent_at.len(),
        "it missed items ({} of {})",
        ids.len(),
        sent_at.len()
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "what it got, in order");
}

// --- parked connections ------------------------------------------------------------------

/// Idle viewers on every shard park (no task: `liveshard_ws_parked` counts them all), and
/// parked they still get every batch, have their pings answered, are told to go away by a
/// kick, and are let go when they hang up; each parks again once idle.
fn idle_viewers_park_and_are_woken_by_what_they_send_and_what_they_are_sent(shards: usize) {
    park_and_wake(shards, &[]);
}

/// The same under the epoll driver: parking has its own epoll set whatever the runtime
/// uses, and the fan-out sends one `sendmsg` per viewer instead of an io_uring batch.
#[test]
fn idle_viewers_park_and_wake_under_the_epoll_driver() {
    park_and_wake(2, &["--driver", "epoll"]);
}

fn park_and_wake(shards: usize, extra: &[&str]) {
    let server = start(
        shards,
        &[&["--set", "danmaku.merge_window_ms=0"], extra].concat(),
    );
    let mut viewers: Vec<Client> = (0..4 * shards)
        .map(|i| joined_on(&server, "room=park", i % shards))
        .collect();
    let mut sender = joined_on(&server, &with_token(&server, "park", "s"), 0);
    let mut admin = joined_on(
        &server,
        &format!(
            "room=park&token={}",
            token(&server, "boss", &["--role", "admin"])
        ),
        shards - 1,
    );
    let all = (viewers.len() + 2) as f64;
    let m = settle(&server, shards, |m| m.sum(PARKED) == all);
    assert_eq!(m.sum(PARKED), all, "every idle connection parks");
    assert_eq!(m.per_shard(PARKED), m.per_shard(CONNS));

    // What they are sent reaches them parked: straight to their sockets.
    for n in 0..5 {
        sender.send(json!({"type": "danmaku", "text": format!("p{n}")}));
        sender.expect("ack", T);
    }
    for (i, v) in viewers.iter_mut().enumerate() {
        let mut texts = Vec::new();
        while texts.len() < 5 {
            let b = v.expect("batch", T);
            texts.extend(
                items_of(&b)
                    .iter()
                    .map(|m| m["text"].as_str().unwrap().to_string()),
            );
        }
        assert_eq!(texts, ["p0", "p1", "p2", "p3", "p4"], "viewer {i}");
    }
    // What they send wakes them: a ping is answered, and they park again.
    for v in viewers.iter_mut() {
        v.send(json!({"type": "ping", "ts": 7}));
        assert_eq!(v.expect("pong", T)["ts"], 7);
    }
    let m = settle(&server, shards, |m| m.sum(PARKED) == all);
    assert_eq!(m.sum(PARKED), all, "parked again once idle");

    // A kick reaches a parked viewer (its task is started to send the close), on another
    // shard than the moderator's when there are several.
    let mut target = joined_on(&server, &with_token(&server, "park", "victim"), 0);
    let all = all + 1.0;
    settle(&server, shards, |m| m.sum(PARKED) == all);
    admin.send(json!({"type": "kick", "uid": "victim", "cid": "k"}));
    assert_eq!(admin.expect("ack", T)["cid"], "k");
    assert_eq!(
        target.expect_close(T),
        Some(4001),
        "the parked viewer was kicked"
    );
    // One hangs up while parked: the server lets it go.
    viewers.pop().unwrap().close();
    let left = all - 2.0;
    let m = settle(&server, shards, |m| {
        m.sum(CONNS) == left && m.sum(PARKED) == left
    });
    assert_eq!((m.sum(CONNS), m.sum(PARKED)), (left, left));
}

/// A TCP connection to `to` from the loopback address `src` (127.0.0.1 is exempt from the
/// per-address limits in the test below, so the scrapes pass and the viewers count).
fn tcp_from(src: std::net::Ipv4Addr, to: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let std::net::SocketAddr::V4(to) = to else {
        panic!("the server listens on IPv4 loopback")
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with live sockaddr_in values; on success
    // its descriptor is owned by the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let (a, b) = (sin(src, 0), sin(*to.ip(), to.port()));
        assert_eq!(
            libc::bind(fd, &a as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(
            libc::connect(fd, &b as *const _ as *const libc::sockaddr, len),
            0
        );
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(T)).unwrap();
        s
    }
}

/// Asks `/healthz` on `s`; the status, or None for a close without an answer.
fn healthz_on(s: &TcpStream) -> Option<u16> {
    (&*s)
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    support::read_response(&mut BufReader::new(s)).map(|r| r.status)
}

/// A parked viewer keeps its place under the per-address connection cap (the listener's
/// hold moves with it from its task to the shard's parking), so idling is no way past the
/// cap; one that hangs up while parked gives its place back.
#[test]
fn parked_viewers_keep_their_place_under_the_per_address_cap() {
    let server = start(
        1,
        &[
            "--set",
            "server.max_conns_per_ip=3",
            "--set",
            "server.per_ip_exempt=127.0.0.1/32",
            "--set",
            "danmaku.merge_window_ms=0",
        ],
    );
    let src = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let viewer = || {
        let s = tcp_from(src, server.http);
        assert_eq!(healthz_on(&s), Some(200));
        let mut c = Client::upgrade(s, server.http, "room=capped", &[]).expect("upgraded");
        c.expect("history", T);
        c
    };
    let mut viewers: Vec<Client> = (0..3).map(|_| viewer()).collect();
    let m = settle(&server, 1, |m| m.sum(PARKED) == 3.0);
    assert_eq!(m.sum(PARKED), 3.0, "all three parked");

    // Parked, they still hold the address's three places.
    let fourth = tcp_from(src, server.http);
    assert_eq!(
        healthz_on(&fourth),
        Some(503),
        "the cap holds while they are parked"
    );

    // One hangs up while parked: its place is free again.
    viewers.pop().unwrap().close();
    let again = support::eventually(Duration::from_secs(5), || {
        (healthz_on(&tcp_from(src, server.http)) == Some(200)).then_some(())
    });
    assert!(
        again.is_some(),
        "the place of the one that left is given back"
    );
}

// --- heartbeats ---------------------------------------------------------------------------

/// A silent and a pinging connection on every shard: each silent one is closed with 4008
/// by its own shard, each pinging one stays.
fn a_silent_connection_is_closed_after_two_heartbeats_and_a_pinging_one_stays(shards: usize) {
    let server = start(shards, &["--set", "danmaku.heartbeat_secs=1"]);
    let mut silent: Vec<Client> = (0..shards)
        .map(|s| joined_on(&server, "room=hb", s))
        .collect();
    let mut alive: Vec<Client> = (0..shards)
        .map(|s| joined_on(&server, "room=hb", s))
        .collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        for a in alive.iter_mut() {
            a.send(json!({"type": "ping", "ts": 42}));
            let pong = a.expect("pong", T);
            assert_eq!(pong["ts"], 42);
            assert!(pong["server_ts"].as_u64().unwrap() > 0);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    for (s, c) in silent.iter_mut().enumerate() {
        assert_eq!(
            c.expect_close(Duration::from_secs(5)),
            Some(4008),
            "shard {s}"
        );
    }
    for a in alive.iter_mut() {
        a.send(json!({"type": "ping"}));
        a.expect("pong", T);
    }
    let m = settle(&server, shards, |m| {
        m.sum(HEARTBEAT_CLOSED) >= shards as f64 && m.sum(CONNS) == shards as f64
    });
    assert_eq!(
        m.per_shard(HEARTBEAT_CLOSED),
        vec![1.0; shards],
        "one heartbeat close per shard"
    );
    assert_eq!(
        m.per_shard(CONNS),
        vec![1.0; shards],
        "the pinging ones remain"
    );
}

#[test]
fn websocket_ping_frames_get_pong_frames() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.http, "room=p").unwrap();
    c.expect("history", T);
    c.send_raw(tungstenite::Message::Ping(b"hey".to_vec().into()));
    c.ws.get_ref().set_read_timeout(Some(T)).unwrap();
    loop {
        match c.ws.read().unwrap() {
            tungstenite::Message::Pong(p) => {
                assert_eq!(&p[..], b"hey");
                break;
            }
            _ => continue,
        }
    }
}

// --- limits and filter --------------------------------------------------------------------

fn rate_limit_length_and_filter_answer_with_errors(shards: usize) {
    let server = start(
        shards,
        &[
            "--set",
            "danmaku.filter_words=badword,坏话",
            "--set",
            "danmaku.max_text_chars=10",
        ],
    );
    let mut c = joined_on(&server, &with_token(&server, "lim", "u"), shards - 1);
    c.send(json!({"type": "danmaku", "text": "BadWord!", "cid": "f"}));
    let e = c.expect("error", T);
    assert_eq!(
        (e["code"].as_u64(), e["cid"].as_str()),
        (Some(4220), Some("f"))
    );
    c.send(json!({"type": "danmaku", "text": "这是坏话", "cid": "f2"}));
    assert_eq!(c.expect("error", T)["code"], 4220);
    c.send(json!({"type": "danmaku", "text": "01234567890", "cid": "long"}));
    assert_eq!(c.expect("error", T)["code"], 4130);
    // Control characters are stripped before the length is counted.
    c.send(json!({"type": "danmaku", "text": "\u{0}\u{7}ok\u{202e}", "cid": "ctl"}));
    assert_eq!(c.expect("ack", T)["cid"], "ctl");
    assert_eq!(items_of(&c.expect("batch", T))[0]["text"], "ok");
    // Burst 5, 2/s: some of ten quick messages are refused. (Four tokens were spent above.)
    for n in 0..10 {
        c.send(json!({"type": "danmaku", "text": format!("m{n}"), "cid": format!("r{n}")}));
    }
    let mut limited = 0;
    let mut accepted = 0;
    let deadline = Instant::now() + T;
    while limited + accepted < 10 && Instant::now() < deadline {
        match c.next(T) {
            Event::Json(v) if v["type"] == "error" => {
                assert_eq!(v["code"], 4290);
                limited += 1;
            }
            Event::Json(v) if v["type"] == "ack" => accepted += 1,
            _ => {}
        }
    }
    assert_eq!(limited + accepted, 10);
    assert!(limited >= 5, "only {limited} rate-limited");
    // The counters say the same: posts in = acks, refusals at the edge = error answers,
    // both on the client's shard.
    let (posts, refused) = ((1 + accepted) as f64, (3 + limited) as f64);
    let m = settle(&server, shards, |m| {
        m.sum(MSGS_IN) >= posts && m.sum(REJECTED) >= refused
    });
    let mut want_in = vec![0.0; shards];
    want_in[shards - 1] = posts;
    let mut want_rejected = vec![0.0; shards];
    want_rejected[shards - 1] = refused;
    assert_eq!(m.per_shard(MSGS_IN), want_in, "posts in");
    assert_eq!(m.per_shard(REJECTED), want_rejected, "rejected");
    assert_eq!(m.sum(ITEMS), posts, "items");
}

/// Counts (acks, rate-limit errors) among the answers to `n` posts.
fn answers(c: &mut Client, n: usize) -> (usize, usize) {
    let (mut acked, mut limited) = (0, 0);
    let deadline = Instant::now() + T;
    while acked + limited < n && Instant::now() < deadline {
        match c.next(T) {
            Event::Json(v) if v["type"] == "ack" => acked += 1,
            Event::Json(v) if v["type"] == "error" => {
                assert_eq!(v["code"], 4290, "{v}");
                limited += 1;
            }
            _ => {}
        }
    }
    (acked, limited)
}

fn one_users_connections_share_one_rate_limit(shards: usize) {
    // Burst 5, 2/s (the defaults): one user, two connections, on two shards when there are.
    let server = start(shards, &[]);
    let mut a = joined_on(&server, &with_token(&server, "shared", "u"), 0);
    let mut b = joined_on(&server, &with_token(&server, "shared", "u"), shards - 1);
    for n in 0..5 {
        a.send(json!({"type": "danmaku", "text": format!("a{n}"), "cid": format!("a{n}")}));
    }
    assert_eq!(answers(&mut a, 5), (5, 0), "the burst from one connection");
    // The second connection has a full bucket of its own, but the user has spent theirs.
    for n in 0..5 {
        b.send(json!({"type": "danmaku", "text": format!("b{n}"), "cid": format!("b{n}")}));
    }
    let (acked, limited) = answers(&mut b, 5);
    assert!(
        acked <= 1 && limited >= 4,
        "a second connection doubled the user's rate: {acked} acked, {limited} limited"
    );
    // Another user in the room is not affected.
    let mut other = joined_on(&server, &with_token(&server, "shared", "v"), shards - 1);
    other.send(json!({"type": "danmaku", "text": "hi", "cid": "v0"}));
    assert_eq!(answers(&mut other, 1), (1, 0));
}

#[test]
fn mask_mode_masks_instead_of_refusing() {
    let server = Server::start(&[
        "--set",
        "danmaku.filter_words=badword",
        "--set",
        "danmaku.filter_mode=mask",
    ]);
    let mut c = Client::connect(
        server.http,
        &format!("room=m&token={}", token(&server, "u", &[])),
    )
    .unwrap();
    c.expect("history", T);
    c.send(json!({"type": "danmaku", "text": "a badword!"}));
    assert_eq!(items_of(&c.expect("batch", T))[0]["text"], "a *******!");
}

// --- bad frames ---------------------------------------------------------------------------

/// Raw frames after a real handshake on `shard`: each kind of bad frame gets its close code.
fn close_code_for(server: &Server, shard: usize, bytes: &[u8]) -> Option<u16> {
    let mut c = joined_on(server, "room=frames", shard);
    c.ws.get_mut().write_all(bytes).unwrap();
    c.expect_close(T)
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn each_bad_frame_kind_gets_its_close_code(shards: usize) {
    let server = start(shards, &["--set", "danmaku.max_frame_bytes=1024"]);
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("unmasked client frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved opcode", masked(0x83, b"x"), 1002),
        ("continuation without a start", masked(0x80, b"x"), 1002),
        (
            "invalid UTF-8 in a text frame",
            masked(0x81, &[0xc3, 0x28]),
            1007,
        ),
        ("too big", masked(0x81, &[b'a'; 2000]), 1009),
    ];
    for (i, (what, bytes, code)) in cases.iter().enumerate() {
        let shard = i % shards;
        assert_eq!(
            close_code_for(&server, shard, bytes),
            Some(*code),
            "{what} (shard {shard})"
        );
    }
    // A fragmented message within the limit is reassembled and answered.
    let mut c = joined_on(&server, "room=frames", shards - 1);
    let mut raw = masked(0x01, br#"{"type":"pi"#);
    raw.extend(masked(0x89, b"ctl"));
    raw.extend(masked(0x80, br#"ng","ts":7}"#));
    c.ws.get_mut().write_all(&raw).unwrap();
    assert_eq!(c.expect("pong", T)["ts"], 7);
    // Garbage JSON is an error message, not a close.
    c.send_raw(tungstenite::Message::text("{nope"));
    assert_eq!(c.expect("error", T)["code"], 4001);
    c.send(json!({"type": "ping", "ts": 8}));
    assert_eq!(c.expect("pong", T)["ts"], 8);
    // The five closed connections are gone from the server; the last one remains.
    let m = settle(&server, shards, |m| m.sum(CONNS) == 1.0);
    let mut want = vec![0.0; shards];
    want[shards - 1] = 1.0;
    assert_eq!(m.per_shard(CONNS), want);
}

// --- history ------------------------------------------------------------------------------

fn history_on_join_has_the_last_items(shards: usize) {
    let server = start(
        shards,
        &[
            "--set",
            "danmaku.history_on_join=3",
            "--set",
            "danmaku.rate_burst=10",
        ],
    );
    let mut a = joined_on(&server, &with_token(&server, "h", "a"), 0);
    let mut ids = Vec::new();
    for n in 0..5 {
        a.send(json!({"type": "danmaku", "text": format!("old{n}"), "cid": format!("{n}")}));
        ids.push(a.expect("ack", T)["id"].as_u64().unwrap());
    }
    // Wait until they were delivered (history holds delivered items).
    let mut got = 0;
    while got < 5 {
        got += items_of(&a.expect("batch", T)).len();
    }
    // A newcomer on every shard gets the last three, then the exact online count.
    let mut newcomers = Vec::new();
    for s in 0..shards {
        let mut b = connect_on(&server, "room=h", &[], s).expect("upgrade accepted");
        let h = b.expect("history", T);
        assert_eq!(h["room"], "h");
        let got: Vec<(u64, &str)> = h["msgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["text"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![(ids[2], "old2"), (ids[3], "old3"), (ids[4], "old4")],
            "shard {s}"
        );
        let online = b.expect("online", T);
        assert_eq!(online["count"], 2 + s as u64, "shard {s}");
        newcomers.push(b);
    }
    // Nothing arrives twice: the next batch holds only what came after the history.
    a.send(json!({"type": "danmaku", "text": "new", "cid": "new"}));
    let new_id = a.expect("ack", T)["id"].as_u64().unwrap();
    assert!(new_id > ids[4]);
    for (s, b) in newcomers.iter_mut().enumerate() {
        let items = items_of(&b.expect("batch", T));
        let got: Vec<(u64, &str)> = items
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["text"].as_str().unwrap()))
            .collect();
        assert_eq!(got, vec![(new_id, "new")], "shard {s}");
    }
}

// --- private messages ---------------------------------------------------------------------

/// `a` on one shard sends a pm to `b`, who has a connection on two other shards; `c`, on
/// yet another connection, sees none of it.
fn private_messages_reach_only_their_target(shards: usize) {
    let server = start(shards, &[]);
    let mut a = joined_on(&server, &with_token(&server, "pm", "a"), 0);
    let mut b1 = joined_on(&server, &with_token(&server, "pm", "b"), 1 % shards);
    let mut b2 = joined_on(&server, &with_token(&server, "pm", "b"), 2 % shards);
    let mut c = joined_on(&server, &with_token(&server, "pm", "c"), 2 % shards);
    a.send(json!({"type": "pm", "to": "b", "text": "psst", "cid": "p1"}));
    let ack = a.expect("ack", T);
    assert_eq!(ack["cid"], "p1");
    for b in [&mut b1, &mut b2] {
        let pm = b.expect("pm", T);
        assert_eq!(
            (
                pm["from"].as_str(),
                pm["nick"].as_str(),
                pm["to"].as_str(),
                pm["text"].as_str(),
                pm["room"].as_str()
            ),
            (
                Some("a"),
                Some("nick-a"),
                Some("b"),
                Some("psst"),
                Some("pm")
            )
        );
        assert!(
            pm.get("id").is_none() && ack.get("id").is_none(),
            "a pm is not a room item: no room id ({pm}, {ack})"
        );
    }
    // Neither c nor the sender sees a pm (a public message sent afterwards arrives first).
    a.send(json!({"type": "danmaku", "text": "public"}));
    for (who, viewer) in [("c", &mut c), ("a", &mut a)] {
        loop {
            match viewer.next(T) {
                Event::Json(v) if v["type"] == "pm" => panic!("{who} got a pm: {v}"),
                Event::Json(v) if v["type"] == "batch" => {
                    assert_eq!(items_of(&v)[0]["text"], "public");
                    break;
                }
                Event::Json(_) => continue,
                other => panic!("{who}: {other:?}"),
            }
        }
    }
    // Nor does a user who is not in the room: an error, and nothing delivered.
    a.send(json!({"type": "pm", "to": "nobody", "text": "hello?", "cid": "p2"}));
    let e = a.expect("error", T);
    assert_eq!(
        (e["code"].as_u64(), e["cid"].as_str()),
        (Some(4040), Some("p2"))
    );
    // Once b's connections are gone, b is no longer a target.
    b1.close();
    b2.close();
    let deadline = Instant::now() + T;
    'retry: for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "b still a pm target after leaving"
        );
        std::thread::sleep(Duration::from_millis(100));
        let cid = format!("p3-{attempt}");
        a.send(json!({"type": "pm", "to": "b", "text": "still there?", "cid": cid}));
        loop {
            match a.next(T) {
                Event::Json(v) if v["cid"] == cid.as_str() => match v["code"].as_u64() {
                    Some(4040) => break 'retry,
                    // Not gone yet (acked), or the sender's rate limit: ask again.
                    None | Some(4290) => continue 'retry,
                    Some(_) => panic!("unexpected answer {v}"),
                },
                Event::Json(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
}

// --- moderation ---------------------------------------------------------------------------

/// The moderator on shard 0; the target ("troll") with a connection on every shard, so
/// with three shards two of its connections are on other shards than the moderator's and
/// every action must cross shards (the moderator's shard → the room's home → the target's).
fn moderators_mute_kick_and_ban_across_shards(shards: usize) {
    let server = start(shards, &[]);
    let admin_token = token(&server, "boss", &["--role", "admin"]);
    let admin_query = format!("room=mod&token={admin_token}");
    let mut admin = joined_on(&server, &admin_query, 0);
    let troll_query = with_token(&server, "mod", "troll");
    let troll_on_every_shard = || -> Vec<Client> {
        (0..shards)
            .map(|s| joined_on(&server, &troll_query, s))
            .collect()
    };
    let mut trolls = troll_on_every_shard();

    // A plain user may not moderate.
    let last = shards - 1;
    trolls[last].send(json!({"type": "mute", "uid": "boss", "seconds": 60, "cid": "x"}));
    let e = trolls[last].expect("error", T);
    assert_eq!(
        (e["code"].as_u64(), e["cid"].as_str()),
        (Some(4034), Some("x"))
    );

    // Mute: refused from every shard the target posts from.
    admin.send(json!({"type": "mute", "uid": "troll", "seconds": 60, "cid": "m"}));
    let ack = admin.expect("ack", T);
    assert_eq!(ack["cid"], "m");
    assert!(
        ack.get("id").is_none(),
        "moderation acks carry no id: {ack}"
    );
    for (s, t) in trolls.iter_mut().enumerate() {
        t.send(json!({"type": "danmaku", "text": "can you hear me", "cid": format!("t{s}")}));
        let e = t.expect("error", T);
        assert_eq!(
            (e["code"].as_u64(), e["cid"].as_str()),
            (Some(4031), Some(format!("t{s}").as_str())),
            "muted on shard {s}"
        );
    }
    admin.send(json!({"type": "unmute", "uid": "troll", "cid": "u"}));
    assert_eq!(admin.expect("ack", T)["cid"], "u");
    for (s, t) in trolls.iter_mut().enumerate() {
        t.send(json!({"type": "danmaku", "text": format!("back{s}"), "cid": format!("b{s}")}));
        assert_eq!(
            t.expect("ack", T)["cid"],
            format!("b{s}"),
            "unmuted on shard {s}"
        );
    }
    // The moderator saw only the unmuted posts.
    let mut seen = Vec::new();
    while seen.len() < shards {
        for item in items_of(&admin.expect("batch", T)) {
            seen.push(item["text"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..shards).map(|s| format!("back{s}")).collect::<Vec<_>>()
    );

    // Kick: every connection of the target closes with 4001, the moderator's stays.
    admin.send(json!({"type": "kick", "uid": "troll", "cid": "k"}));
    assert_eq!(admin.expect("ack", T)["cid"], "k");
    for (s, t) in trolls.iter_mut().enumerate() {
        assert_eq!(t.expect_close(T), Some(4001), "kicked on shard {s}");
    }
    admin.send(json!({"type": "ping", "ts": 1}));
    assert_eq!(admin.expect("pong", T)["ts"], 1);

    // Kicked users may come back; banned ones may not.
    let mut trolls = troll_on_every_shard();
    admin.send(json!({"type": "ban", "uid": "troll", "cid": "b"}));
    assert_eq!(admin.expect("ack", T)["cid"], "b");
    for (s, t) in trolls.iter_mut().enumerate() {
        assert_eq!(t.expect_close(T), Some(4003), "banned on shard {s}");
    }
    for s in 0..shards {
        // Upgraded, then refused by the room: a close and no history.
        let mut again = connect_on(&server, &troll_query, &[], s).expect("upgrade");
        match again.next(T) {
            Event::Closed(c) => assert_eq!(c.map(|c| c.0), Some(4003), "rejoin on shard {s}"),
            other => panic!("banned rejoin on shard {s}: {other:?}"),
        }
    }
    // Logging in later with an `auth` message does not get around the ban.
    let mut sneaky = joined_on(&server, "room=mod", last);
    sneaky.send(json!({"type": "auth", "token": token(&server, "troll", &[])}));
    assert_eq!(sneaky.expect("authed", T)["uid"], "troll");
    assert_eq!(sneaky.expect_close(T), Some(4003));

    // Slow mode, for a user on another shard than the moderator's.
    admin.send(json!({"type": "slow_mode", "seconds": 30, "cid": "s"}));
    assert_eq!(admin.expect("ack", T)["cid"], "s");
    let mut o = joined_on(&server, &with_token(&server, "mod", "other"), 1 % shards);
    o.send(json!({"type": "danmaku", "text": "one", "cid": "1"}));
    assert_eq!(o.expect("ack", T)["cid"], "1");
    o.send(json!({"type": "danmaku", "text": "two", "cid": "2"}));
    let e = o.expect("error", T);
    assert_eq!(
        (e["code"].as_u64(), e["cid"].as_str()),
        (Some(4033), Some("2"))
    );

    // The server let go of every kicked, banned and refused connection.
    let mut want = vec![0.0; shards];
    want[0] += 1.0;
    want[1 % shards] += 1.0;
    let m = settle(&server, shards, |m| m.per_shard(CONNS) == want);
    assert_eq!(
        m.per_shard(CONNS),
        want,
        "only the moderator and `other` remain"
    );
}

// --- online counts ------------------------------------------------------------------------

fn online_counts_are_pushed_and_gifts_arrive(shards: usize) {
    let server = start(shards, &["--set", "danmaku.online_interval_ms=100"]);
    let mut a = joined_on(&server, &with_token(&server, "on", "g"), 0);
    let mut others: Vec<Client> = (0..4)
        .map(|i| joined_on(&server, "room=on", (i + 1) % shards))
        .collect();
    // Every viewer, on every shard, is eventually told the exact count.
    for c in std::iter::once(&mut a).chain(others.iter_mut()) {
        let deadline = Instant::now() + T;
        loop {
            let v = c.expect("online", deadline.saturating_duration_since(Instant::now()));
            assert_eq!(v["room"], "on");
            if v["count"] == 5 {
                break;
            }
            assert!(v["count"].as_u64().unwrap() < 5, "never more than 5: {v}");
        }
    }
    // One leaves: the count goes down to 4 for the rest (after, perhaps, a push of the 5
    // they already know from their join answer).
    others.pop().unwrap().close();
    for c in std::iter::once(&mut a).chain(others.iter_mut()) {
        loop {
            let n = c.expect("online", T)["count"].as_u64().unwrap();
            if n == 4 {
                break;
            }
            assert_eq!(n, 5, "only 5, then 4");
        }
    }
    a.send(json!({"type": "gift", "gift_id": "rocket", "count": 3, "cid": "g"}));
    for c in std::iter::once(&mut a).chain(others.iter_mut()) {
        let b = c.expect("batch", T);
        let item = &items_of(&b)[0];
        assert_eq!(
            (
                item["type"].as_str(),
                item["gift_id"].as_str(),
                item["count"].as_u64(),
                item["uid"].as_str()
            ),
            (Some("gift"), Some("rocket"), Some(3), Some("g"))
        );
    }
}

// --- metrics ------------------------------------------------------------------------------

/// A client as the metrics test sees it: every frame counted, with its size on the wire.
struct Peer {
    c: Client,
    /// Frames pushed to it by fan-out (batches and online counts after the join answer).
    pushed: u64,
    /// Bytes of every frame it received (header + payload).
    wire_bytes: u64,
    /// (id, text) of the items it got in batches.
    items: Vec<(u64, String)>,
    errors: Vec<Value>,
    acks: Vec<Value>,
}

impl Peer {
    /// Joins on `shard` and reads the join answer (history, then online).
    fn join(server: &Server, query: &str, shard: usize) -> Peer {
        let c = connect_on(server, query, &[], shard).expect("upgrade accepted");
        let mut p = Peer {
            c,
            pushed: 0,
            wire_bytes: 0,
            items: Vec::new(),
            errors: Vec::new(),
            acks: Vec::new(),
        };
        let h = p.read(T).expect("history");
        assert_eq!(h["type"], "history", "{h}");
        assert!(items_of(&h).is_empty(), "a new room has no history: {h}");
        let o = p.read(T).expect("online");
        assert_eq!(o["type"], "online", "the join answer's count: {o}");
        p
    }

    /// Reads one message (None on timeout) and accounts for it.
    fn read(&mut self, timeout: Duration) -> Option<Value> {
        self.c
            .ws
            .get_ref()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        match self.c.ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let len = t.len();
                self.wire_bytes += (len + header_len(len)) as u64;
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                Some(v)
            }
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads and sorts what arrives until `quiet` passes without a message.
    fn pump(&mut self, quiet: Duration) {
        while let Some(v) = self.read(quiet) {
            match v["type"].as_str() {
                Some("batch") => {
                    self.pushed += 1;
                    for i in items_of(&v) {
                        let text = i["text"].as_str().or(i["gift_id"].as_str());
                        let label = text.unwrap_or(i["type"].as_str().unwrap()).to_string();
                        self.items.push((i["id"].as_u64().unwrap(), label));
                    }
                }
                Some("online") => self.pushed += 1,
                Some("ack") => self.acks.push(v),
                Some("error") => self.errors.push(v),
                _ => panic!("unexpected message {v}"),
            }
        }
    }
}

/// A server frame's header size (unmasked, minimal length encoding).
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// A sender and two viewers per shard in room `met`, one viewer in room `lone`; a known
/// exchange (8 accepted posts, 2 refused). Every danmaku counter in `/metrics` then has
/// exactly the value the clients' own view implies, per shard where placement fixes it,
/// and the gauges go back to 0 once everyone left.
fn metrics_count_a_known_exchange(shards: usize) {
    let server = start(
        shards,
        &[
            "--set",
            "danmaku.online_interval_ms=100",
            "--set",
            "danmaku.room_idle_secs=1",
            "--set",
            "danmaku.filter_words=badword",
            "--set",
            "danmaku.rate_per_sec=100",
            "--set",
            "danmaku.rate_burst=100",
        ],
    );
    let m = scrape(&server, shards);
    for name in [
        CONNS,
        ROOMS_HOME,
        ROOMS_LOCAL,
        MSGS_IN,
        REJECTED,
        ITEMS,
        BATCHES,
        MSGS_OUT,
        DROPPED,
        BYTES_OUT,
        FLUSHES,
        FLUSH_WRITES,
        QUEUE_BYTES,
    ] {
        assert_eq!(m.sum(name), 0.0, "{name} before any client");
    }

    let sender_shard = 0;
    let lone_shard = shards - 1;
    // peers[0] is the sender, the first in `met`: it sees every frame the room encodes.
    let mut peers = vec![Peer::join(
        &server,
        &with_token(&server, "met", "sender"),
        sender_shard,
    )];
    let mut placements = vec![sender_shard];
    for i in 0..2 * shards {
        peers.push(Peer::join(&server, "room=met", i % shards));
        placements.push(i % shards);
    }
    let mut lone = Peer::join(&server, "room=lone", lone_shard);
    placements.push(lone_shard);

    let conns_on = per_shard_count(&placements, shards);
    let mut rooms_local = vec![1.0; shards];
    rooms_local[lone_shard] += 1.0;
    let m = settle(&server, shards, |m| {
        m.per_shard(CONNS) == conns_on
            && m.per_shard(ROOMS_LOCAL) == rooms_local
            && m.sum(ROOMS_HOME) == 2.0
    });
    assert_eq!(m.per_shard(CONNS), conns_on, "connections per shard");
    assert_eq!(m.per_shard(ROOMS_LOCAL), rooms_local, "rooms with viewers");
    assert_eq!(
        m.sum(ROOMS_HOME),
        2.0,
        "rooms homed: {:?}",
        m.per_shard(ROOMS_HOME)
    );

    // The exchange: 6 danmaku, a gift and a like accepted; one filtered, one too long.
    let s = &mut peers[0];
    for n in 0..6 {
        s.c.send(json!({"type": "danmaku", "text": format!("d{n}"), "cid": format!("d{n}")}));
    }
    s.c.send(json!({"type": "gift", "gift_id": "rocket", "cid": "g"}));
    s.c.send(json!({"type": "like", "cid": "l"}));
    s.c.send(json!({"type": "danmaku", "text": "a badword", "cid": "f"}));
    s.c.send(json!({"type": "danmaku", "text": "y".repeat(101), "cid": "long"}));
    const ACCEPTED: usize = 8;
    let deadline = Instant::now() + T;
    while s.acks.len() + s.errors.len() < ACCEPTED + 2 {
        assert!(
            Instant::now() < deadline,
            "answers: {:?} {:?}",
            s.acks,
            s.errors
        );
        s.pump(Duration::from_millis(50));
    }
    let codes: Vec<(u64, &str)> = s
        .errors
        .iter()
        .map(|e| (e["code"].as_u64().unwrap(), e["cid"].as_str().unwrap()))
        .collect();
    assert_eq!(codes, vec![(4220, "f"), (4130, "long")]);
    let mut want: Vec<String> = (0..6).map(|n| format!("d{n}")).collect();
    want.extend(["rocket".to_string(), "like".to_string()]);
    for (i, p) in peers.iter_mut().enumerate() {
        let deadline = Instant::now() + T;
        while p.items.len() < ACCEPTED {
            assert!(Instant::now() < deadline, "peer {i}: {:?}", p.items);
            p.pump(Duration::from_millis(50));
        }
        let texts: Vec<String> = p.items.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(texts, want, "peer {i} got every item once, in order");
        assert!(p.items.windows(2).all(|w| w[0].0 < w[1].0));
    }

    // Everything that was sent has been read: the counters match what the clients saw.
    let mut m;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (out, batches, bytes) = loop {
        for p in peers.iter_mut().chain(std::iter::once(&mut lone)) {
            p.pump(Duration::from_millis(20));
        }
        let out: u64 = peers.iter().map(|p| p.pushed).sum::<u64>() + lone.pushed;
        let batches = peers[0].pushed + lone.pushed;
        let bytes: u64 = peers.iter().map(|p| p.wire_bytes).sum::<u64>() + lone.wire_bytes;
        m = scrape(&server, shards);
        let done = m.sum(MSGS_OUT) == out as f64
            && m.sum(BATCHES) == batches as f64
            && m.sum(BYTES_OUT) == bytes as f64
            && m.sum(MSGS_IN) == ACCEPTED as f64
            && m.sum(QUEUE_BYTES) == 0.0;
        if done || Instant::now() >= deadline {
            break (out, batches, bytes);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every fan-out frame left in an end-of-turn flush, one write per viewer per flush
    // however many frames it carried: writes are at least one and at most the frames.
    assert!(m.sum(FLUSHES) >= 1.0, "flushes: {:?}", m.per_shard(FLUSHES));
    let writes = m.sum(FLUSH_WRITES);
    assert!(
        writes >= 1.0 && writes <= m.sum(MSGS_OUT),
        "flush writes {writes} for {} frames out",
        m.sum(MSGS_OUT)
    );
    let mut want_in = vec![0.0; shards];
    want_in[sender_shard] = ACCEPTED as f64;
    assert_eq!(
        m.per_shard(MSGS_IN),
        want_in,
        "posts in, on the sender's shard"
    );
    let mut want_rejected = vec![0.0; shards];
    want_rejected[sender_shard] = 2.0;
    assert_eq!(m.per_shard(REJECTED), want_rejected, "refused at the edge");
    // Items get their id on the room's home shard: all eight on one shard, which homes a
    // room.
    let items = m.per_shard(ITEMS);
    let home = items
        .iter()
        .position(|&n| n == ACCEPTED as f64)
        .unwrap_or_else(|| panic!("items per shard {items:?}"));
    assert_eq!(
        items.iter().sum::<f64>(),
        ACCEPTED as f64,
        "items {items:?}"
    );
    assert!(
        m.at(ROOMS_HOME, home) >= 1.0,
        "items counted on shard {home}, not a home"
    );
    assert_eq!(
        m.sum(MSGS_OUT),
        out as f64,
        "messages out = frames the viewers read ({:?})",
        m.per_shard(MSGS_OUT)
    );
    assert!(
        out >= (peers.len() + 1) as u64,
        "every viewer got pushes: {out}"
    );
    assert_eq!(
        m.sum(BATCHES),
        batches as f64,
        "batches = frames each room's first viewer read"
    );
    assert_eq!(
        m.sum(BYTES_OUT),
        bytes as f64,
        "bytes out = bytes the clients read"
    );
    assert_eq!(m.sum(DROPPED), 0.0, "nothing dropped");
    assert_eq!(m.sum(QUEUE_BYTES), 0.0, "nothing left queued");
    assert!(lone.items.is_empty(), "nothing from `met` in `lone`");

    // Everyone leaves: the gauges go back to 0 (the idle rooms after room_idle_secs = 1),
    // the counters keep their values.
    for p in peers {
        p.c.close();
    }
    lone.c.close();
    let m = settle(&server, shards, |m| {
        m.sum(CONNS) == 0.0 && m.sum(ROOMS_LOCAL) == 0.0 && m.sum(ROOMS_HOME) == 0.0
    });
    assert_eq!(m.per_shard(CONNS), vec![0.0; shards], "connections");
    assert_eq!(
        m.per_shard(ROOMS_LOCAL),
        vec![0.0; shards],
        "rooms with viewers"
    );
    assert_eq!(m.per_shard(ROOMS_HOME), vec![0.0; shards], "rooms homed");
    assert_eq!(m.sum(QUEUE_BYTES), 0.0);
    assert_eq!(m.sum(MSGS_IN), ACCEPTED as f64);
    assert_eq!(m.sum(ITEMS), ACCEPTED as f64);
}

/// A connection that lives less than a second (the sweeper's period): what it was sent
/// still counts in `liveshard_ws_bytes_out_total` once it is gone.
fn bytes_written_to_a_short_lived_connection_are_counted(shards: usize) {
    let server = start(shards, &[]);
    let mut read = 0;
    for s in 0..shards {
        let mut p = Peer::join(&server, "room=brief", s);
        p.c.send(json!({"type": "ping", "ts": 1}));
        assert_eq!(p.read(T).expect("pong")["type"], "pong");
        read += p.wire_bytes;
        p.c.close();
    }
    let m = settle(&server, shards, |m| {
        m.sum(CONNS) == 0.0 && m.sum(BYTES_OUT) >= read as f64
    });
    assert_eq!(m.sum(CONNS), 0.0);
    assert!(
        m.sum(BYTES_OUT) >= read as f64,
        "bytes out {:?} per shard, but the clients read {read} bytes",
        m.per_shard(BYTES_OUT)
    );
}

// --- shutdown -----------------------------------------------------------------------------

#[test]
fn shutdown_tells_websocket_clients_going_away() {
    let mut server = Server::start(&["--shards", "2"]);
    let mut clients: Vec<Client> = (0..6)
        .map(|_| {
            let mut c = Client::connect(server.http, "room=bye").unwrap();
            c.expect("history", T);
            c
        })
        .collect();
    server.signal(15);
    for c in clients.iter_mut() {
        assert_eq!(c.expect_close(T), Some(1001));
    }
    let status = server.wait_exit(T).expect("exits");
    assert!(status.success());
}

// --- resume, and danmaku without a WebSocket ------------------------------------------------

/// Posts a danmaku on `c` and returns the id its ack carries.
fn post_acked(c: &mut Client, text: &str) -> u64 {
    let cid = format!("c-{text}");
    c.send(json!({"type": "danmaku", "text": text, "cid": cid}));
    loop {
        let ack = c.expect("ack", T);
        if ack["cid"] == cid.as_str() {
            return ack["id"].as_u64().expect("an id");
        }
    }
}

/// Item ids a WebSocket viewer receives until it has `want` of them (batches and history).
fn ids_until(c: &mut Client, want: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < want {
        match c.next(T) {
            Event::Json(v) if v["type"] == "batch" || v["type"] == "history" => {
                ids.extend(items_of(&v).iter().map(|m| m["id"].as_u64().unwrap()));
            }
            Event::Json(_) => {}
            other => panic!("{other:?} with {ids:?} of {want}"),
        }
    }
    ids
}

/// A viewer that drops and comes back on another shard with `since` gets exactly what it
/// missed, then what follows live; a `since` older than history gets a `gap` first. The
/// join answer tells the heartbeat interval and the history cap.
#[test]
fn a_reconnect_with_since_gets_exactly_the_missed_items_or_a_gap() {
    let server = start(
        3,
        &[
            "--set",
            "danmaku.rate_per_sec=1000",
            "--set",
            "danmaku.rate_burst=1000",
            "--set",
            "danmaku.history_capacity=6",
            "--set",
            "danmaku.history_on_join=6",
        ],
    );
    let mut poster = joined_on(&server, &with_token(&server, "back", "p"), 0);
    let mut viewer = joined_on(&server, "room=back", 1);
    let first: Vec<u64> = (0..3)
        .map(|i| post_acked(&mut poster, &format!("a{i}")))
        .collect();
    assert_eq!(ids_until(&mut viewer, 3), first);
    viewer.close();
    let missed: Vec<u64> = (0..4)
        .map(|i| post_acked(&mut poster, &format!("b{i}")))
        .collect();
    assert!(
        missed.windows(2).all(|w| w[1] == w[0] + 1) && missed[0] == first[2] + 1,
        "consecutive ids {first:?} {missed:?}"
    );

    let query = format!("room=back&since={}", first[2]);
    let mut back = connect_on(&server, &query, &[], 2).expect("upgrade");
    let history = back.expect("history", T);
    assert_eq!(history["heartbeat_ms"], 30_000, "{history}");
    assert_eq!(history["history_max"], 6, "{history}");
    // What was flushed before the join is in history; what still waited for the merge
    // window comes in the next batch.
    let mut got: Vec<u64> = items_of(&history)
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    let rest = missed.len() - got.len();
    got.extend(ids_until(&mut back, rest));
    assert_eq!(got, missed, "exactly the missed items");
    let live = post_acked(&mut poster, "c");
    assert_eq!(
        ids_until(&mut back, 1),
        vec![live],
        "then live, nothing twice"
    );

    // History holds the last 6 items: a resume from the first id gets a gap first.
    let mut old = connect_on(&server, "room=back&since=1", &[], 1).expect("upgrade");
    let gap = old.expect("gap", T);
    let first_kept = live - 5;
    assert_eq!(
        (
            gap["room"].as_str(),
            gap["from"].as_u64(),
            gap["first"].as_u64()
        ),
        (Some("back"), Some(1), Some(first_kept))
    );
    let want: Vec<u64> = (first_kept..=live).collect();
    assert_eq!(ids_until(&mut old, want.len()), want);

    assert_eq!(
        connect_on(&server, "room=back&since=x1", &[], 0).err(),
        Some(400),
        "a bad since is refused before the upgrade"
    );
}

/// An SSE reader gets what WebSocket and HTTP posters send, in the order and with the ids
/// the WebSocket viewers see; `Last-Event-ID` resumes it; a POST is refused without a
/// login, when rate limited and when banned, with the WebSocket path's codes.
#[test]
fn danmaku_over_sse_and_post_match_the_websocket() {
    use support::api::{call, err, ok, Sse};
    let server = start(
        3,
        &[
            "--set",
            "danmaku.rate_per_sec=0.01",
            "--set",
            "danmaku.rate_burst=5",
        ],
    );
    let path = "/api/v1/rooms/plain/danmaku/stream";
    let mut sse = Sse::open(&server, path).expect("stream opens");
    let hello = sse.expect("history", T, |_| true);
    assert_eq!(hello.data["heartbeat_ms"], 30_000);
    let mut viewer = joined_on(&server, "room=plain", 1);
    let mut poster = joined_on(&server, &with_token(&server, "plain", "ws"), 2);
    let http_user = token(&server, "http", &[]);
    let post_path = "/api/v1/rooms/plain/danmaku";
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(post_acked(&mut poster, &format!("w{i}")));
        let body = json!({"type": "danmaku", "text": format!("h{i}"), "color": "#00ff00"});
        let data = ok(&call(
            &server,
            "POST",
            post_path,
            Some(&http_user),
            Some(&body),
        ));
        sent.push(data["id"].as_u64().expect("the ack id"));
    }
    let gift = json!({"type": "gift", "gift_id": "rocket", "count": 2});
    sent.push(
        ok(&call(
            &server,
            "POST",
            post_path,
            Some(&http_user),
            Some(&gift),
        ))["id"]
            .as_u64()
            .unwrap(),
    );
    let seen = ids_until(&mut viewer, sent.len());
    assert_eq!(
        seen, sent,
        "the WebSocket viewer's order is the acks' order"
    );

    let mut got = Vec::new();
    let mut last_event_id = None;
    let mut online = None;
    while got.len() < sent.len() || online.is_none() {
        let ev = sse
            .next(T)
            .unwrap_or_else(|| panic!("stream ended with {got:?}"));
        if ev.event == "online" {
            online = ev.data["count"].as_u64();
        }
        if ev.event == "batch" {
            let ids: Vec<u64> = items_of(&ev.data)
                .iter()
                .map(|m| m["id"].as_u64().unwrap())
                .collect();
            assert_eq!(
                ev.id.as_deref(),
                Some(ids.last().unwrap().to_string().as_str())
            );
            last_event_id = ev.id;
            got.extend(ids);
        }
    }
    assert_eq!(
        got, sent,
        "the SSE reader sees what the WebSocket viewer sees"
    );
    assert_eq!(last_event_id, Some(sent.last().unwrap().to_string()));

    // Reconnect with Last-Event-ID (it wins over ?since): exactly what came after.
    let resume_from = sent[3].to_string();
    let mut again = Sse::open_with(
        &server,
        &format!("{path}?since=1"),
        &[("Last-Event-ID", &resume_from)],
    )
    .expect("stream opens");
    let h = again.expect("history", T, |_| true);
    let replay: Vec<u64> = items_of(&h.data)
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(replay, sent[4..].to_vec());
    assert_eq!(h.id, Some(sent.last().unwrap().to_string()));

    // Refusals, with the codes the WebSocket would send.
    let body = json!({"type": "danmaku", "text": "hi"});
    err(
        &call(&server, "POST", post_path, None, Some(&body)),
        401,
        4010,
    );
    err(
        &call(&server, "POST", post_path, Some("x.y.z"), Some(&body)),
        401,
        40102,
    );
    err(
        &call(
            &server,
            "POST",
            post_path,
            Some(&http_user),
            Some(&json!({"type": "ping"})),
        ),
        400,
        4001,
    );
    // `http` has used 4 of its burst of 5 (all its connections together).
    ok(&call(
        &server,
        "POST",
        post_path,
        Some(&http_user),
        Some(&body),
    ));
    err(
        &call(&server, "POST", post_path, Some(&http_user), Some(&body)),
        429,
        4290,
    );
    let admin = token(&server, "boss", &["--role", "admin"]);
    let mut moderator = joined_on(&server, &format!("room=plain&token={admin}"), 0);
    moderator.send(json!({"type": "ban", "uid": "bad", "cid": "b1"}));
    assert_eq!(moderator.expect("ack", T)["cid"], "b1");
    let bad = token(&server, "bad", &[]);
    err(
        &call(&server, "POST", post_path, Some(&bad), Some(&body)),
        403,
        4032,
    );
    // Nothing refused reached the readers.
    let ok_id = sent.last().unwrap() + 1;
    assert_eq!(ids_until(&mut viewer, 1), vec![ok_id]);
}
