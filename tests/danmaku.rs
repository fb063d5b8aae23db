//! Danmaku over WebSocket, black-box against the real server: fan-out across shards, auth,
//! slow consumers, heartbeats, limits, bad frames, history, private messages, moderation.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::ws::{Client, Event};
use support::{token, Server};

const T: Duration = Duration::from_secs(10);

fn items_of(v: &Value) -> Vec<Value> {
    v["msgs"].as_array().cloned().unwrap_or_default()
}

/// 300 clients over 3 rooms; one logged-in sender per room posts 30 items. Every client
/// gets every item of its room exactly once, in strictly increasing id order, and nothing
/// from the other rooms.
fn fan_out(shards: &str) {
    let server = Server::start(&[
        "--shards",
        shards,
        "--set",
        "danmaku.rate_per_sec=1000",
        "--set",
        "danmaku.rate_burst=1000",
    ]);
    const ROOMS: usize = 3;
    const PER_ROOM: usize = 100;
    const ITEMS: usize = 30;
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
                    for n in 0..ITEMS {
                        c.send(json!({"type": "danmaku", "text": format!("room{room}-item{n}"), "cid": format!("c{n}")}));
                    }
                }
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while seen.len() < ITEMS || (tok.is_some() && acked.len() < ITEMS) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    assert!(!left.is_zero(), "room {room} client {i}: {} of {ITEMS} items", seen.len());
                    match c.next(left) {
                        Event::Json(v) if v["type"] == "batch" => {
                            assert_eq!(v["room"], format!("fan{room}"));
                            for item in items_of(&v) {
                                assert_eq!(item["room"], format!("fan{room}"), "nothing from other rooms");
                                seen.push((item["id"].as_u64().unwrap(), item["text"].as_str().unwrap().to_string()));
                            }
                        }
                        Event::Json(v) if v["type"] == "ack" => acked.push(v["id"].as_u64().unwrap()),
                        Event::Json(v) if v["type"] == "error" => panic!("error: {v}"),
                        Event::Json(_) => {}
                        other => panic!("room {room} client {i}: {other:?}"),
                    }
                }
                // A little longer: nothing more (no duplicates) may arrive.
                if let Event::Json(v) = c.next(Duration::from_millis(300)) {
                    assert_ne!(v["type"], "batch", "unexpected extra batch {v}");
                }
                (room, seen, acked)
            }));
        }
    }
    for h in handles {
        let (room, seen, acked) = h.join().expect("client thread");
        assert_eq!(seen.len(), ITEMS, "exactly once");
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "ids strictly increasing: {seen:?}"
        );
        let texts: HashSet<String> = seen.iter().map(|(_, t)| t.clone()).collect();
        let want: HashSet<String> = (0..ITEMS).map(|n| format!("room{room}-item{n}")).collect();
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
}

#[test]
fn three_hundred_clients_three_rooms_one_shard() {
    fan_out("1");
}

#[test]
fn three_hundred_clients_three_rooms_three_shards() {
    fan_out("3");
}

#[test]
fn anonymous_viewers_read_but_may_not_send() {
    let server = Server::start(&["--shards", "2"]);
    let mut anon = Client::connect(server.http, "room=r1").unwrap();
    anon.expect("history", T);
    anon.send(json!({"type": "danmaku", "text": "hi", "cid": "a1"}));
    let e = anon.expect("error", T);
    assert_eq!(e["code"], 4010);
    assert_eq!(e["cid"], "a1");
    // It still reads what logged-in users send.
    let mut user = Client::connect(
        server.http,
        &format!("room=r1&token={}", token(&server, "u1", &[])),
    )
    .unwrap();
    user.expect("history", T);
    user.send(json!({"type": "danmaku", "text": "hello"}));
    let b = anon.expect("batch", T);
    assert_eq!(items_of(&b)[0]["text"], "hello");
    assert_eq!(items_of(&b)[0]["uid"], "u1");
    assert_eq!(items_of(&b)[0]["nick"], "nick-u1");
}

#[test]
fn expired_or_forged_tokens_are_refused() {
    let server = Server::start(&[]);
    let expired = token(&server, "u1", &["--ttl", "0"]);
    assert_eq!(
        Client::connect(server.http, &format!("room=r&token={expired}")).err(),
        Some(401)
    );
    let forged = token(
        &server,
        "u1",
        &["--set", "auth.jwt_secret=a-different-secret-entirely"],
    );
    assert_eq!(
        Client::connect(server.http, &format!("room=r&token={forged}")).err(),
        Some(401)
    );
    assert_eq!(
        Client::connect(server.http, "room=r&token=not.a.jwt").err(),
        Some(401)
    );
    // The same refusal for a token offered as the subprotocol.
    assert_eq!(
        Client::connect_with(
            server.http,
            "room=r",
            &[("Sec-WebSocket-Protocol", &forged)]
        )
        .err(),
        Some(401)
    );
    // And in a first `auth` message.
    let mut c = Client::connect(server.http, "room=r").unwrap();
    c.expect("history", T);
    c.send(json!({"type": "auth", "token": forged}));
    assert_eq!(c.expect("error", T)["code"], 4011);
    let good = token(&server, "u2", &[]);
    c.send(json!({"type": "auth", "token": good}));
    assert_eq!(c.expect("authed", T)["uid"], "u2");
    c.send(json!({"type": "danmaku", "text": "now I may"}));
    assert_eq!(items_of(&c.expect("batch", T))[0]["uid"], "u2");
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

#[test]
fn a_client_that_stops_reading_is_closed_while_others_keep_receiving() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "danmaku.merge_window_ms=50",
        "--set",
        "danmaku.queue_bytes=16384",
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
    ]);
    let mut stalled = Client::connect(server.http, "room=slow").unwrap();
    stalled.expect("history", T);
    shrink_receive_buffer(stalled.ws.get_ref());
    let mut healthy: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = Client::connect(server.http, "room=slow").unwrap();
            c.expect("history", T);
            c
        })
        .collect();
    let mut sender = Client::connect(
        server.http,
        &format!("room=slow&token={}", token(&server, "s", &[])),
    )
    .unwrap();
    sender.expect("history", T);
    let text = "x".repeat(900);
    let mut worst = Duration::ZERO;
    for round in 0..40 {
        let sent = Instant::now();
        for n in 0..5 {
            sender.send(json!({"type": "danmaku", "text": format!("{round}-{n}-{text}")}));
        }
        // The sender reads too (it is a viewer of its own room), at least its acks.
        for _ in 0..5 {
            sender.expect("ack", T);
        }
        for c in healthy.iter_mut() {
            let mut got = 0;
            while got < 5 {
                let b = c.expect("batch", T);
                got += items_of(&b).len();
            }
        }
        worst = worst.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(60));
    }
    // Healthy viewers were never held up by the stalled one: well under its grace period.
    assert!(
        worst < Duration::from_millis(1000),
        "a round took {worst:?}"
    );
    let closed = support::eventually(Duration::from_secs(10), || {
        let n = server
            .metric("liveshard_ws_slow_consumer_closed_total{shard=\"0\"}")
            .unwrap_or(0.0)
            + server
                .metric("liveshard_ws_slow_consumer_closed_total{shard=\"1\"}")
                .unwrap_or(0.0);
        (n >= 1.0).then_some(n)
    });
    assert_eq!(closed, Some(1.0), "exactly the stalled client was closed");
    // The stalled client, reading at last, finds its connection closed.
    assert!(matches!(
        stalled.expect_close(Duration::from_secs(10)),
        Some(1008) | None
    ));
    let dropped = server
        .metric("liveshard_ws_messages_dropped_total{shard=\"0\"}")
        .unwrap_or(0.0)
        + server
            .metric("liveshard_ws_messages_dropped_total{shard=\"1\"}")
            .unwrap_or(0.0);
    assert!(
        dropped >= 1.0,
        "frames were dropped for it before it was closed"
    );
}

fn shrink_receive_buffer(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = 2048;
    // SAFETY: setsockopt on a live socket with a pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[test]
fn a_silent_connection_is_closed_after_two_heartbeats_and_a_pinging_one_stays() {
    let server = Server::start(&["--set", "danmaku.heartbeat_secs=1"]);
    let mut silent = Client::connect(server.http, "room=hb").unwrap();
    let mut alive = Client::connect(server.http, "room=hb").unwrap();
    silent.expect("history", T);
    alive.expect("history", T);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        alive.send(json!({"type": "ping", "ts": 42}));
        let pong = alive.expect("pong", T);
        assert_eq!(pong["ts"], 42);
        assert!(pong["server_ts"].as_u64().unwrap() > 0);
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(silent.expect_close(Duration::from_secs(5)), Some(4008));
    alive.send(json!({"type": "ping"}));
    alive.expect("pong", T);
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

#[test]
fn rate_limit_length_and_filter_answer_with_errors() {
    let server = Server::start(&[
        "--set",
        "danmaku.filter_words=badword,坏话",
        "--set",
        "danmaku.max_text_chars=10",
    ]);
    let mut c = Client::connect(
        server.http,
        &format!("room=lim&token={}", token(&server, "u", &[])),
    )
    .unwrap();
    c.expect("history", T);
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
    let deadline = Instant::now() + T;
    let mut answered = 0;
    while answered < 10 && Instant::now() < deadline {
        match c.next(T) {
            Event::Json(v) if v["type"] == "error" => {
                assert_eq!(v["code"], 4290);
                limited += 1;
                answered += 1;
            }
            Event::Json(v) if v["type"] == "ack" => answered += 1,
            _ => {}
        }
    }
    assert_eq!(answered, 10);
    assert!(limited >= 5, "only {limited} rate-limited");
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

/// Raw frames after a real handshake: each kind of bad frame gets its close code.
fn close_code_for(server: &Server, bytes: &[u8]) -> Option<u16> {
    let mut c = Client::connect(server.http, "room=frames").unwrap();
    c.expect("history", T);
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

#[test]
fn each_bad_frame_kind_gets_its_close_code() {
    let server = Server::start(&["--set", "danmaku.max_frame_bytes=1024"]);
    // Unmasked client frame → protocol error.
    assert_eq!(
        close_code_for(&server, &[0x81, 0x02, b'h', b'i']),
        Some(1002)
    );
    // Reserved opcode.
    assert_eq!(close_code_for(&server, &masked(0x83, b"x")), Some(1002));
    // Continuation without a start.
    assert_eq!(close_code_for(&server, &masked(0x80, b"x")), Some(1002));
    // Invalid UTF-8 in a text frame.
    assert_eq!(
        close_code_for(&server, &masked(0x81, &[0xc3, 0x28])),
        Some(1007)
    );
    // Too big.
    assert_eq!(
        close_code_for(&server, &masked(0x81, &[b'a'; 2000])),
        Some(1009)
    );
    // A fragmented message within the limit is reassembled and answered.
    let mut c = Client::connect(server.http, "room=frames").unwrap();
    c.expect("history", T);
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
}

#[test]
fn history_on_join_has_the_last_items() {
    let server = Server::start(&["--shards", "2", "--set", "danmaku.history_on_join=3"]);
    let mut a = Client::connect(
        server.http,
        &format!("room=h&token={}", token(&server, "a", &[])),
    )
    .unwrap();
    a.expect("history", T);
    for n in 0..5 {
        a.send(json!({"type": "danmaku", "text": format!("old{n}"), "cid": format!("{n}")}));
        a.expect("ack", T);
    }
    // Wait until they were delivered (history holds delivered items).
    let mut got = 0;
    while got < 5 {
        got += items_of(&a.expect("batch", T)).len();
    }
    let mut b = Client::connect(server.http, "room=h").unwrap();
    let h = b.expect("history", T);
    let texts: Vec<&str> = h["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["old2", "old3", "old4"]);
    let online = b.expect("online", T);
    assert_eq!(online["count"], 2);
}

#[test]
fn private_messages_reach_only_their_target() {
    let server = Server::start(&["--shards", "3"]);
    let mut clients: Vec<Client> = ["a", "b", "c"]
        .iter()
        .map(|u| {
            let mut c = Client::connect(
                server.http,
                &format!("room=pm&token={}", token(&server, u, &[])),
            )
            .unwrap();
            c.expect("history", T);
            c
        })
        .collect();
    clients[0].send(json!({"type": "pm", "to": "b", "text": "psst", "cid": "p1"}));
    assert_eq!(clients[0].expect("ack", T)["cid"], "p1");
    let pm = clients[1].expect("pm", T);
    assert_eq!(
        (pm["from"].as_str(), pm["to"].as_str(), pm["text"].as_str()),
        (Some("a"), Some("b"), Some("psst"))
    );
    // c sees no pm (a public message sent afterwards arrives first).
    clients[0].send(json!({"type": "danmaku", "text": "public"}));
    loop {
        match clients[2].next(T) {
            Event::Json(v) if v["type"] == "pm" => panic!("c got a pm: {v}"),
            Event::Json(v) if v["type"] == "batch" => break,
            Event::Json(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    clients[0].send(json!({"type": "pm", "to": "nobody", "text": "hello?", "cid": "p2"}));
    let e = clients[0].expect("error", T);
    assert_eq!(
        (e["code"].as_u64(), e["cid"].as_str()),
        (Some(4040), Some("p2"))
    );
}

#[test]
fn moderators_mute_kick_and_ban() {
    let server = Server::start(&["--shards", "2"]);
    let admin_token = token(&server, "boss", &["--role", "admin"]);
    let mut admin = Client::connect(server.http, &format!("room=mod&token={admin_token}")).unwrap();
    admin.expect("history", T);
    let user_token = token(&server, "troll", &[]);
    let mut troll = Client::connect(server.http, &format!("room=mod&token={user_token}")).unwrap();
    troll.expect("history", T);

    // A plain user may not moderate.
    troll.send(json!({"type": "mute", "uid": "boss", "seconds": 60, "cid": "x"}));
    assert_eq!(troll.expect("error", T)["code"], 4034);

    admin.send(json!({"type": "mute", "uid": "troll", "seconds": 60, "cid": "m"}));
    assert_eq!(admin.expect("ack", T)["cid"], "m");
    troll.send(json!({"type": "danmaku", "text": "can you hear me", "cid": "t"}));
    assert_eq!(troll.expect("error", T)["code"], 4031);
    admin.send(json!({"type": "unmute", "uid": "troll", "cid": "u"}));
    admin.expect("ack", T);
    troll.send(json!({"type": "danmaku", "text": "back", "cid": "t2"}));
    assert_eq!(troll.expect("ack", T)["cid"], "t2");

    admin.send(json!({"type": "kick", "uid": "troll"}));
    assert_eq!(troll.expect_close(T), Some(4001));
    // Kicked users may come back; banned ones may not.
    let mut troll = Client::connect(server.http, &format!("room=mod&token={user_token}")).unwrap();
    troll.expect("history", T);
    admin.send(json!({"type": "ban", "uid": "troll"}));
    assert_eq!(troll.expect_close(T), Some(4003));
    let mut again = Client::connect(server.http, &format!("room=mod&token={user_token}")).unwrap();
    assert_eq!(again.expect_close(T), Some(4003));

    admin.send(json!({"type": "slow_mode", "seconds": 30, "cid": "s"}));
    admin.expect("ack", T);
    let other = token(&server, "other", &[]);
    let mut o = Client::connect(server.http, &format!("room=mod&token={other}")).unwrap();
    o.expect("history", T);
    o.send(json!({"type": "danmaku", "text": "one", "cid": "1"}));
    o.expect("ack", T);
    o.send(json!({"type": "danmaku", "text": "two", "cid": "2"}));
    assert_eq!(o.expect("error", T)["code"], 4033);
}

#[test]
fn online_counts_are_pushed_and_gifts_arrive() {
    let server = Server::start(&["--shards", "2", "--set", "danmaku.online_interval_ms=100"]);
    let t = token(&server, "g", &[]);
    let mut a = Client::connect(server.http, &format!("room=on&token={t}")).unwrap();
    a.expect("history", T);
    let _others: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = Client::connect(server.http, "room=on").unwrap();
            c.expect("history", T);
            c
        })
        .collect();
    let deadline = Instant::now() + T;
    loop {
        let v = a.expect("online", deadline.saturating_duration_since(Instant::now()));
        if v["count"] == 5 {
            break;
        }
    }
    a.send(json!({"type": "gift", "gift_id": "rocket", "count": 3, "cid": "g"}));
    let item = &items_of(&a.expect("batch", T))[0];
    assert_eq!(
        (
            item["type"].as_str(),
            item["gift_id"].as_str(),
            item["count"].as_u64()
        ),
        (Some("gift"), Some("rocket"), Some(3))
    );
}

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
