//! The embedded store, black-box: what was acknowledged survives `kill -9`, ids keep
//! increasing across restarts, moderation state persists.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use support::ws::{Client, Event};
use support::{token, Server};

const T: Duration = Duration::from_secs(10);

#[test]
fn acknowledged_danmaku_survives_kill_9_and_ids_continue() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "danmaku.rate_per_sec=1000",
        "--set",
        "danmaku.rate_burst=1000",
    ]);
    let t = token(&server, "writer", &[]);
    let mut c = Client::connect(server.http, &format!("room=durable&token={t}")).unwrap();
    c.expect("history", T);
    for n in 0..20 {
        c.send(json!({"type": "danmaku", "text": format!("keep-{n}"), "cid": format!("{n}")}));
    }
    let mut acked: HashMap<String, u64> = HashMap::new();
    while acked.len() < 20 {
        match c.next(T) {
            Event::Json(v) if v["type"] == "ack" => {
                acked.insert(
                    v["cid"].as_str().unwrap().to_string(),
                    v["id"].as_u64().unwrap(),
                );
            }
            Event::Json(v) if v["type"] == "error" => panic!("{v}"),
            Event::Json(_) => {}
            other => panic!("{other:?}"),
        }
    }
    // Crash right after the last ack: no graceful shutdown, no flush.
    let dir = server.crash();
    let server = Server::start_in(dir, &["--shards", "3"]);
    let mut viewer = Client::connect(server.http, "room=durable").unwrap();
    let history = viewer.expect("history", T);
    let items = history["msgs"].as_array().unwrap();
    let stored: HashMap<String, u64> = items
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap().to_string(),
                m["id"].as_u64().unwrap(),
            )
        })
        .collect();
    for (cid, id) in &acked {
        assert_eq!(
            stored.get(&format!("keep-{cid}")),
            Some(id),
            "acked item {cid} kept with its id"
        );
    }
    // The token minted before the restart still works (the secret is kept in the data
    // dir), and new ids continue after the stored ones.
    let mut c = Client::connect(server.http, &format!("room=durable&token={t}")).unwrap();
    c.expect("history", T);
    c.send(json!({"type": "danmaku", "text": "after restart", "cid": "new"}));
    let id = c.expect("ack", T)["id"].as_u64().unwrap();
    assert!(
        id > *acked.values().max().unwrap(),
        "id {id} continues after the stored ids"
    );
}

#[test]
fn moderation_state_survives_a_restart() {
    let server = Server::start(&["--shards", "2"]);
    let admin = token(&server, "boss", &["--role", "admin"]);
    let troll = token(&server, "troll", &[]);
    let mut a = Client::connect(server.http, &format!("room=modstore&token={admin}")).unwrap();
    a.expect("history", T);
    a.send(json!({"type": "ban", "uid": "troll", "cid": "b"}));
    a.expect("ack", T);
    a.send(json!({"type": "mute", "uid": "quiet", "seconds": 3600, "cid": "m"}));
    a.expect("ack", T);
    drop(a);
    let dir = server.stop();
    let server = Server::start_in(dir, &["--shards", "2"]);
    let mut t = Client::connect(server.http, &format!("room=modstore&token={troll}")).unwrap();
    assert_eq!(t.expect_close(T), Some(4003), "still banned");
    let quiet = token(&server, "quiet", &[]);
    let mut q = Client::connect(server.http, &format!("room=modstore&token={quiet}")).unwrap();
    q.expect("history", T);
    q.send(json!({"type": "danmaku", "text": "hello?", "cid": "q"}));
    assert_eq!(q.expect("error", T)["code"], 4031, "still muted");
}
