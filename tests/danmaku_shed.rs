//! Past saturation a room sheds plain danmaku instead of queueing seconds of it
//! (`src/danmaku/shed.rs`), black-box against the real server: a room whose audience
//! cannot take what it is sent sheds, counts it, keeps acking, storing and delivering
//! gifts, and delivers everything again once its viewers keep up.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::ws::{Client, Event};
use support::{token, Server};

const T: Duration = Duration::from_secs(10);
const SHED: &str = "liveshard_ws_shed_total";
const SHEDDING: &str = "liveshard_ws_rooms_shedding";
/// Viewers that never read: more than `shed::MIN_BEHIND` (16), so their being behind is
/// the room's overload, not one slow consumer's.
const STALLED: usize = 24;

fn metric(server: &Server, name: &str) -> f64 {
    let resp = server.get("/metrics");
    assert_eq!(resp.status, 200);
    resp.text()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn joined(server: &Server, query: &str) -> Client {
    let mut c = Client::connect(server.http, query).expect("upgrade accepted");
    c.expect("history", T);
    c
}

/// Reads everything that arrived within `wait` and returns the items of the batches.
fn drain(c: &mut Client, wait: Duration) -> Vec<Value> {
    let mut items = Vec::new();
    while let Event::Json(v) = c.next(wait) {
        if v["type"] == "batch" {
            items.extend(v["msgs"].as_array().cloned().unwrap_or_default());
        }
    }
    items
}

/// Posts `n` plain items and waits for their acks; returns their ids.
fn post_round(sender: &mut Client, round: usize, n: usize, text: &str) -> Vec<u64> {
    for i in 0..n {
        sender.send(json!({"type": "danmaku", "text": format!("{round}-{i}-{text}")}));
    }
    (0..n)
        .map(|_| sender.expect("ack", T)["id"].as_u64().expect("ack id"))
        .collect()
}

#[test]
fn a_room_its_viewers_cannot_keep_up_with_sheds_plain_danmaku_and_recovers() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "danmaku.merge_window_ms=0",
        "--set",
        "danmaku.queue_bytes=65536",
        "--set",
        "danmaku.send_buffer_bytes=4096",
        "--set",
        "danmaku.slow_grace_ms=60000",
        "--set",
        "danmaku.max_text_chars=1000",
        "--set",
        "danmaku.rate_per_sec=100000",
        "--set",
        "danmaku.rate_burst=100000",
        "--set",
        "danmaku.history_on_join=50",
    ]);
    let stalled: Vec<Client> = (0..STALLED)
        .map(|_| {
            let c = joined(&server, "room=hot");
            support::shrink_receive_buffer(c.ws.get_ref());
            c
        })
        .collect();
    let mut healthy = joined(&server, "room=hot");
    let mut sender = joined(
        &server,
        &format!("room=hot&token={}", token(&server, "s", &[])),
    );
    assert_eq!(metric(&server, SHEDDING), 0.0);

    // Post until the stalled viewers' buffers are full and the room sheds.
    let text = "x".repeat(900);
    let mut acked = Vec::new();
    let mut got = Vec::new();
    let mut round = 0;
    while metric(&server, SHEDDING) < 1.0 {
        assert!(round < 400, "the room never shed ({} acked)", acked.len());
        acked.extend(post_round(&mut sender, round, 20, &text));
        got.extend(drain(&mut healthy, Duration::from_millis(5)));
        round += 1;
    }
    // Shedding: more rounds, and a gift among them, which is never shed.
    for _ in 0..10 {
        acked.extend(post_round(&mut sender, round, 20, &text));
        got.extend(drain(&mut healthy, Duration::from_millis(5)));
        round += 1;
    }
    sender.send(json!({"type": "gift", "gift_id": "rocket", "count": 1, "cid": "g"}));
    let gift_id = sender.expect("ack", T)["id"].as_u64().unwrap();
    got.extend(drain(&mut healthy, Duration::from_millis(300)));
    assert!(metric(&server, SHED) >= 1.0, "shed items are counted");

    // Every post was acked with its own id; the healthy viewer got a strict, ordered
    // subset of the plain items, and the gift.
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "acks in id order");
    let ids: Vec<u64> = got.iter().map(|i| i["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "delivered in id order");
    assert!(
        got.iter()
            .any(|i| i["type"] == "gift" && i["id"].as_u64() == Some(gift_id)),
        "the gift was delivered"
    );
    let plain = got.iter().filter(|i| i["type"] == "danmaku").count();
    assert!(
        plain < acked.len(),
        "some plain items were shed ({plain} of {} delivered)",
        acked.len()
    );
    // Shed items are stored: a viewer joining now finds the last 50 ids in its history,
    // with no hole where items were shed.
    let mut late = Client::connect(server.http, "room=hot").expect("upgrade accepted");
    let h = late.expect("history", T);
    let history: Vec<u64> = h["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(history.len(), 50, "{history:?}");
    assert!(history.windows(2).all(|w| w[1] == w[0] + 1), "{history:?}");
    assert_eq!(*history.last().unwrap(), gift_id);
    drop(late);

    // The audience that could not keep up leaves: the room recovers, and what is posted
    // then reaches the healthy viewer whole.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, SHEDDING) > 0.0 {
        assert!(Instant::now() < deadline, "the room never recovered");
        post_round(&mut sender, round, 2, "after");
        drain(&mut healthy, Duration::from_millis(50));
        round += 1;
    }
    drain(&mut healthy, Duration::from_millis(200));
    let last = post_round(&mut sender, round, 50, "whole");
    let mut seen = Vec::new();
    while seen.last() != last.last() {
        let b = healthy.expect("batch", T);
        seen.extend(
            b["msgs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["id"].as_u64()),
        );
    }
    assert_eq!(seen, last, "after recovery nothing is shed");
}
