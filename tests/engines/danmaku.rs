//! The danmaku engine across shards: ordering, acks, online counts, caps, moderation,
//! rate and slow mode on the virtual clock, heartbeats, and a randomized run that checks
//! the invariants after every step.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use liveshard::auth::{Jwt, Revoked, Tokens};
use liveshard::danmaku::engine::Ctx;
use liveshard::danmaku::protocol::close;
use liveshard::danmaku::viewer::{Conn, User};
use liveshard::danmaku::{Danmaku, Msg, Shared};
use liveshard::metrics::{Metrics, Slot};
use liveshard::store::Request as StoreRequest;
use liveshard::ws::codec::Message;
use serde_json::Value;

use crate::harness::{breathe, config, parse_frames, run, Frame, Net, TestStore, VirtualClock};

struct Cluster {
    net: Rc<Net<Msg>>,
    shards: Vec<Rc<Danmaku>>,
    clock: Rc<VirtualClock>,
    store: liveshard::store::StoreHandle,
    _store: TestStore,
    commits: std::sync::mpsc::Receiver<(usize, liveshard::store::Committed)>,
}

impl Cluster {
    fn new(n: usize, flags: &[(&str, &str)]) -> Self {
        let mut flags = flags.to_vec();
        // The engine's default window is 50 ms; tests flush by hand unless they set 0.
        if !flags.iter().any(|(k, _)| *k == "danmaku.merge_window_ms") {
            flags.push(("danmaku.merge_window_ms", "0"));
        }
        let cfg = config(&flags);
        let shared = Arc::new(Shared::from_config(&cfg).expect("settings"));
        let metrics = Arc::new(Metrics::new(
            n,
            shards::DriverInUse::Epoll,
            std::iter::empty::<&'static str>(),
        ));
        let mut store = TestStore::start(false);
        let commits = std::mem::replace(&mut store.commits, std::sync::mpsc::channel().1);
        let net = Net::new(n);
        let clock = VirtualClock::new();
        let jwt = Arc::new(Jwt::new(b"test-secret".to_vec(), "liveshard"));
        let shards = (0..n)
            .map(|i| {
                Danmaku::new(Ctx {
                    port: net.port(i),
                    shared: shared.clone(),
                    store: store.handle(),
                    metrics: Slot::new(metrics.clone(), i),
                    tokens: Rc::new(Tokens::new(jwt.clone(), Revoked::default())),
                    shutdown: shards::local::Signal::new(),
                    clock: clock.clone(),
                    cluster: None,
                })
            })
            .collect();
        Self {
            net,
            shards,
            clock,
            store: store.handle(),
            _store: store,
            commits,
        }
    }

    /// Delivers every message in flight (and those they cause), and every commit the
    /// store reported. Returns how many were delivered.
    fn pump(&self) -> usize {
        let mut n = 0;
        loop {
            let mut moved = false;
            while let Ok((shard, c)) = self.commits.try_recv() {
                self.shards[shard].handle(shard, Msg::Committed(c));
                self.shards[shard].flush_viewers();
                moved = true;
                n += 1;
            }
            while let Some((from, to, msg)) = self.net.pop() {
                // Each message is a turn of its shard's loop, ended by the flush.
                self.shards[to].handle(from, msg);
                self.shards[to].flush_viewers();
                moved = true;
                n += 1;
            }
            if !moved {
                return n;
            }
        }
    }

    /// Pumps until the cluster is quiet: no message in flight, no room loading, and the
    /// store has answered everything sent before (a round trip through it is a barrier:
    /// it serves requests in order and reports a commit before answering what follows).
    async fn settle(&self) {
        for _ in 0..10_000 {
            self.pump();
            if self.shards.iter().any(|s| s.rooms_loading() > 0) {
                breathe().await;
                continue;
            }
            let barrier = self.store.call(|reply| StoreRequest::GetRoom {
                id: "-".into(),
                reply,
            });
            barrier.await.expect("the store answers");
            if self.pump() == 0 && self.shards.iter().all(|s| s.rooms_loading() == 0) {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    fn connect(&self, shard: usize, room: &str, uid: Option<&str>) -> Rc<Conn> {
        self.connect_since(shard, room, uid, None)
    }

    /// A viewer coming back having seen every item up to `since`.
    fn connect_since(
        &self,
        shard: usize,
        room: &str,
        uid: Option<&str>,
        since: Option<u64>,
    ) -> Rc<Conn> {
        let user = uid.map(|u| {
            Rc::new(User {
                uid: u.into(),
                nick: format!("nick-{u}").into(),
                admin: false,
                vip: false,
                jti: None,
                iat: 0,
            })
        });
        let dm = &self.shards[shard];
        let conn = dm.register(room.into(), user);
        dm.join_since(&conn, since);
        conn
    }

    /// Delivers the one message at the head of the mesh, if any.
    fn step(&self) -> bool {
        match self.net.pop() {
            Some((from, to, msg)) => {
                self.shards[to].handle(from, msg);
                self.shards[to].flush_viewers();
                true
            }
            None => false,
        }
    }

    /// Flushes the room's batch on its home shard (the merge window's tick).
    fn flush(&self, room: &str) {
        let home = self.shards[0].port().home_of(room);
        self.shards[home].flush_dirty();
    }

    fn send(&self, conn: &Rc<Conn>, json: &str) {
        let dm = &self.shards[conn.id.shard as usize];
        liveshard::danmaku::client::on_message(
            dm,
            conn,
            Message::Text(Bytes::copy_from_slice(json.as_bytes())),
        );
    }

    fn leave(&self, conn: &Rc<Conn>) {
        self.shards[conn.id.shard as usize].unregister(conn);
    }

    fn tick_online(&self) {
        for s in &self.shards {
            s.push_online(Duration::ZERO);
        }
    }
}

/// What a viewer has been sent since the last call, as JSON messages (batches and
/// history unpacked into their items, tagged with the frame type).
fn received(conn: &Conn) -> Vec<Value> {
    let mut out = Vec::new();
    for f in parse_frames(&conn.take_frames()) {
        match f {
            Frame::Json(v) => match v["type"].as_str() {
                Some("batch") | Some("history") => {
                    for m in v["msgs"].as_array().cloned().unwrap_or_default() {
                        out.push(m);
                    }
                }
                _ => out.push(v),
            },
            Frame::Close(code) => out.push(serde_json::json!({"type": "close", "code": code})),
            Frame::Other(op) => panic!("unexpected opcode {op}"),
        }
    }
    out
}

fn of_type<'a>(msgs: &'a [Value], t: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == t).collect()
}

/// Rates high enough that a test's burst of posts is not limited.
const FAST: &[(&str, &str)] = &[
    ("danmaku.rate_per_sec", "100000"),
    ("danmaku.rate_burst", "100000"),
];

fn post(text: &str, cid: &str) -> String {
    serde_json::json!({"type": "danmaku", "text": text, "cid": cid}).to_string()
}

#[test]
fn items_reach_every_shard_once_in_id_order_and_each_post_is_acked() {
    run(async {
        let c = Cluster::new(3, FAST);
        let viewers: Vec<_> = (0..9).map(|i| c.connect(i % 3, "r", None)).collect();
        let poster = c.connect(1, "r", Some("alice"));
        c.settle().await;
        for v in &viewers {
            assert_eq!(of_type(&received(v), "online").len(), 1, "join answer");
        }
        received(&poster);
        for i in 0..40 {
            c.send(&poster, &post(&format!("m{i}"), &format!("c{i}")));
        }
        c.settle().await;
        let mine = received(&poster);
        let acks = of_type(&mine, "ack");
        assert_eq!(acks.len(), 40, "{mine:?}");
        let ack_ids: Vec<u64> = acks.iter().map(|a| a["id"].as_u64().unwrap()).collect();
        for v in &viewers {
            let items = of_type(&received(v), "danmaku")
                .iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap(),
                        m["text"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>();
            assert_eq!(items.len(), 40);
            assert!(items.windows(2).all(|w| w[0].0 < w[1].0), "ids ascend");
            let texts: Vec<_> = items.iter().map(|(_, t)| t.clone()).collect();
            let want: Vec<_> = (0..40).map(|i| format!("m{i}")).collect();
            assert_eq!(texts, want, "posts arrive in the order they were sent");
            let ids: Vec<u64> = items.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, ack_ids, "the acked id is the delivered one");
        }
    });
}

#[test]
fn online_counts_add_up_across_shards_as_viewers_join_and_leave() {
    run(async {
        let c = Cluster::new(4, &[]);
        let mut conns: Vec<_> = (0..12).map(|i| c.connect(i % 4, "count", None)).collect();
        c.settle().await;
        conns.iter().for_each(|v| drop(received(v)));
        c.tick_online();
        c.settle().await;
        for v in &conns {
            let online = received(v);
            let last = of_type(&online, "online")
                .last()
                .map(|m| m["count"].clone());
            assert_eq!(last, Some(12.into()), "{online:?}");
        }
        for v in conns.drain(..5) {
            c.leave(&v);
        }
        c.settle().await;
        c.tick_online();
        c.settle().await;
        for v in &conns {
            let last = of_type(&received(v), "online")
                .last()
                .map(|m| m["count"].clone());
            assert_eq!(last, Some(7.into()));
        }
    });
}

#[test]
fn a_ban_closes_the_users_connections_on_every_shard_and_refuses_their_return() {
    run(async {
        let c = Cluster::new(3, &[]);
        let owner = c.connect(0, "mod", Some("owner"));
        let bob: Vec<_> = (0..3).map(|s| c.connect(s, "mod", Some("bob"))).collect();
        let other = c.connect(2, "mod", Some("carol"));
        c.settle().await;
        // The first user to claim a room through the API owns it; here the server does.
        assert!(c.shards[2].moderate_as_server(
            "mod".into(),
            liveshard::danmaku::ModOp::SetOwner {
                uid: "owner".into(),
            },
        ));
        c.settle().await;
        received(&owner);
        c.send(&owner, r#"{"type":"ban","uid":"bob","cid":"b1"}"#);
        c.settle().await;
        assert_eq!(of_type(&received(&owner), "ack").len(), 1);
        for b in &bob {
            assert_eq!(b.closing().map(|r| r.0), Some(close::BANNED));
        }
        assert!(other.closing().is_none(), "others stay");
        let again = c.connect(1, "mod", Some("bob"));
        c.settle().await;
        assert_eq!(again.closing().map(|r| r.0), Some(close::BANNED));
        // A viewer who is not a moderator may not ban.
        c.send(&other, r#"{"type":"ban","uid":"owner","cid":"x"}"#);
        c.settle().await;
        let errs = received(&other);
        assert_eq!(of_type(&errs, "error")[0]["code"], 4034, "{errs:?}");
    });
}

#[test]
fn the_per_user_rate_and_slow_mode_follow_the_clock() {
    run(async {
        let c = Cluster::new(
            2,
            &[("danmaku.rate_per_sec", "1"), ("danmaku.rate_burst", "2")],
        );
        let u = c.connect(0, "slow", Some("u"));
        c.settle().await;
        received(&u);
        for i in 0..3 {
            c.send(&u, &post("hi", &format!("a{i}")));
        }
        c.settle().await;
        let r = received(&u);
        assert_eq!(of_type(&r, "ack").len(), 2, "the burst: {r:?}");
        assert_eq!(of_type(&r, "error")[0]["code"], 4290);
        c.clock.advance(Duration::from_secs(2));
        c.send(&u, &post("again", "b"));
        c.settle().await;
        let r = received(&u);
        assert_eq!(of_type(&r, "ack").len(), 1, "refilled with time: {r:?}");

        assert!(c.shards[1].moderate_as_server(
            "slow".into(),
            liveshard::danmaku::ModOp::SlowMode { secs: 30 }
        ));
        c.settle().await;
        received(&u);
        c.clock.advance(Duration::from_secs(5));
        c.send(&u, &post("one", "s1"));
        c.clock.advance(Duration::from_secs(5));
        c.send(&u, &post("two", "s2"));
        c.settle().await;
        let r = received(&u);
        assert_eq!(of_type(&r, "ack").len(), 1, "{r:?}");
        assert_eq!(of_type(&r, "error")[0]["code"], 4033);
        c.clock.advance(Duration::from_secs(30));
        c.send(&u, &post("three", "s3"));
        c.settle().await;
        assert_eq!(of_type(&received(&u), "ack").len(), 1);
    });
}

#[test]
fn the_room_cap_samples_plain_items_but_keeps_gifts() {
    run(async {
        let c = Cluster::new(2, &[("danmaku.room_cap_per_sec", "10")]);
        let viewer = c.connect(1, "busy", None);
        let posters: Vec<_> = (0..30)
            .map(|i| c.connect(i % 2, "busy", Some(&format!("p{i}"))))
            .collect();
        c.settle().await;
        received(&viewer);
        for (i, p) in posters.iter().enumerate() {
            c.send(p, &post("x", &format!("d{i}")));
            c.send(p, r#"{"type":"gift","gift_id":"rose","count":1}"#);
        }
        c.settle().await;
        let got = received(&viewer);
        let plain = of_type(&got, "danmaku").len();
        let gifts = of_type(&got, "gift").len();
        assert!(plain <= 10, "plain items over the cap: {plain}");
        assert_eq!(gifts, 30, "gifts are never sampled out");
        // Every post is still acked (and stored).
        for p in &posters {
            assert_eq!(of_type(&received(p), "ack").len(), 2);
        }
    });
}

#[test]
fn a_silent_connection_is_closed_after_two_heartbeats_on_the_clock() {
    run(async {
        let c = Cluster::new(2, &[("danmaku.heartbeat_secs", "10")]);
        let quiet = c.connect(0, "hb", None);
        let chatty = c.connect(1, "hb", None);
        c.settle().await;
        c.clock.advance(Duration::from_secs(15));
        c.send(&chatty, r#"{"type":"ping"}"#);
        for s in &c.shards {
            s.sweep();
        }
        assert!(quiet.closing().is_none(), "one heartbeat is not enough");
        c.clock.advance(Duration::from_secs(10));
        for s in &c.shards {
            s.sweep();
        }
        assert_eq!(quiet.closing().map(|r| r.0), Some(close::HEARTBEAT_TIMEOUT));
    });
}

#[test]
fn a_full_mesh_answers_busy_instead_of_queueing() {
    run(async {
        let c = Cluster::new(2, &[]);
        let u = c.connect(0, "full", Some("u"));
        c.settle().await;
        received(&u);
        c.net.set_capacity(0);
        c.send(&u, &post("lost?", "f1"));
        let r = received(&u);
        assert_eq!(of_type(&r, "error")[0]["code"], 5030, "{r:?}");
        assert!(c.net.refused.get() > 0);
    });
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_joins_leaves_and_posts_across_shards_keep_every_viewer_in_order() {
    for seed in 1..=20u64 {
        run(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let c = Cluster::new(3, FAST);
            let rooms = ["a", "b"];
            let mut conns: Vec<(Rc<Conn>, &str, u64)> = Vec::new();
            let mut sent = 0;
            for step in 0..200 {
                match rng.below(10) {
                    0..=2 => {
                        let room = rooms[rng.below(2)];
                        let uid = format!("u{}", rng.below(5));
                        conns.push((c.connect(rng.below(3), room, Some(&uid)), room, 0));
                    }
                    3 if !conns.is_empty() => {
                        let (conn, _, _) = conns.swap_remove(rng.below(conns.len()));
                        c.leave(&conn);
                    }
                    _ if !conns.is_empty() => {
                        let i = rng.below(conns.len());
                        c.send(&conns[i].0, &post("p", &format!("s{step}")));
                        sent += 1;
                    }
                    _ => {}
                }
                if rng.below(4) == 0 {
                    c.settle().await;
                    for (conn, room, last) in conns.iter_mut() {
                        for m in received(conn) {
                            if m["type"] == "danmaku" {
                                assert_eq!(m["room"], *room, "seed {seed}");
                                let id = m["id"].as_u64().unwrap();
                                assert!(id > *last, "seed {seed}: id {id} after {last}");
                                *last = id;
                            }
                            assert_ne!(m["type"], "error", "seed {seed}: {m}");
                        }
                    }
                }
            }
            c.settle().await;
            assert!(sent > 0);
            assert_eq!(c.net.in_flight(), 0);
        });
    }
}

/// Item ids in what a viewer was sent, in order.
fn item_ids(msgs: &[Value]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m["type"] == "danmaku")
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// A viewer that comes back with `since` on another shard than the home gets exactly the
/// items after it — from history those flushed before its join reached the home, from
/// batches the rest — while batches flushed before the join are still in flight to its
/// shard (which has another viewer) and items wait for the next window at the home.
#[test]
fn a_resume_gets_each_missed_item_once_with_batches_in_flight_to_its_shard() {
    run(async {
        let flags = [FAST, &[("danmaku.merge_window_ms", "50")]].concat();
        let c = Cluster::new(3, &flags);
        let home = c.shards[0].port().home_of("r");
        let (here, there) = ((home + 1) % 3, (home + 2) % 3);
        let a = c.connect(here, "r", None);
        let poster = c.connect(there, "r", Some("p"));
        c.settle().await;
        for i in 1..=10 {
            c.send(&poster, &post(&format!("m{i}"), &format!("c{i}")));
        }
        c.settle().await;
        c.flush("r");
        c.settle().await;
        assert_eq!(item_ids(&received(&a)), (1..=10).collect::<Vec<_>>());
        // 11..=13 flushed: their batch is on its way to `here`; 14 and 15 wait at the home.
        for i in 11..=13 {
            c.send(&poster, &post(&format!("m{i}"), &format!("c{i}")));
        }
        c.pump();
        c.flush("r");
        for i in 14..=15 {
            c.send(&poster, &post(&format!("m{i}"), &format!("c{i}")));
        }
        assert!(c.net.in_flight() > 0, "a batch is in flight");
        // The viewer comes back on `here` having seen up to 4.
        let r = c.connect_since(here, "r", None, Some(4));
        c.pump();
        let first = received(&r);
        assert_eq!(
            item_ids(&first),
            (5..=13).collect::<Vec<_>>(),
            "history: what was flushed before the join reached the home"
        );
        assert!(of_type(&first, "gap").is_empty());
        c.flush("r");
        c.settle().await;
        assert_eq!(item_ids(&received(&r)), vec![14, 15], "the next batch");
        assert_eq!(item_ids(&received(&a)), (11..=15).collect::<Vec<_>>());
    });
}

/// Joins with `since` interleaved at random with posts, flushes and single mesh steps:
/// every resumed viewer gets exactly the ids after its `since`, in order, once.
#[test]
fn random_resumes_amid_posts_and_flushes_miss_nothing_and_repeat_nothing() {
    for seed in 1..=30u64 {
        run(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let flags = [FAST, &[("danmaku.merge_window_ms", "50")]].concat();
            let c = Cluster::new(3, &flags);
            let watcher = c.connect(rng.below(3), "r", None);
            let posters: Vec<_> = (0..3)
                .map(|s| c.connect(s, "r", Some(&format!("u{s}"))))
                .collect();
            c.settle().await;
            let mut seen: Vec<u64> = Vec::new();
            let mut resumed: Vec<(Rc<Conn>, u64, Vec<u64>)> = Vec::new();
            let mut posts = 0;
            for step in 0..150 {
                match rng.below(8) {
                    0..=3 => {
                        c.send(&posters[rng.below(3)], &post("x", &format!("s{step}")));
                        posts += 1;
                    }
                    4 => c.flush("r"),
                    5 if resumed.len() < 6 => {
                        seen.extend(item_ids(&received(&watcher)));
                        let last = seen.last().copied().unwrap_or(0);
                        let since = last.saturating_sub(rng.below(4) as u64);
                        resumed.push((
                            c.connect_since(rng.below(3), "r", None, Some(since)),
                            since,
                            Vec::new(),
                        ));
                    }
                    _ => {
                        for _ in 0..rng.below(4) {
                            c.step();
                        }
                    }
                }
                for (conn, _, got) in resumed.iter_mut() {
                    let msgs = received(conn);
                    assert!(of_type(&msgs, "gap").is_empty(), "seed {seed}: {msgs:?}");
                    got.extend(item_ids(&msgs));
                }
            }
            c.settle().await;
            c.flush("r");
            c.settle().await;
            seen.extend(item_ids(&received(&watcher)));
            assert_eq!(
                seen,
                (1..=posts).collect::<Vec<_>>(),
                "seed {seed}: the watcher"
            );
            for (conn, since, mut got) in resumed {
                got.extend(item_ids(&received(&conn)));
                assert_eq!(
                    got,
                    (since + 1..=posts).collect::<Vec<_>>(),
                    "seed {seed}: resumed from {since}"
                );
            }
        });
    }
}

/// A `since` older than what history holds: a `gap` naming the first id it still has, then
/// those items. Private messages take no id, so the room's ids stay consecutive.
#[test]
fn a_resume_past_history_gets_a_gap_first_and_pms_take_no_room_id() {
    run(async {
        let flags = [
            FAST,
            &[
                ("danmaku.history_capacity", "5"),
                ("danmaku.history_on_join", "5"),
            ],
        ]
        .concat();
        let c = Cluster::new(2, &flags);
        let a = c.connect(0, "g", Some("a"));
        let b = c.connect(1, "g", Some("b"));
        c.settle().await;
        received(&a);
        received(&b);
        for i in 1..=12 {
            if i % 3 == 0 {
                let pm = serde_json::json!({"type": "pm", "to": "b", "text": "hi", "cid": format!("p{i}")});
                c.send(&a, &pm.to_string());
            }
            c.send(&a, &post(&format!("m{i}"), &format!("c{i}")));
        }
        c.settle().await;
        let got = received(&a);
        let acks = of_type(&got, "ack");
        assert_eq!(acks.len(), 16, "every post and pm acked: {got:?}");
        for ack in &acks {
            if ack["cid"].as_str().unwrap().starts_with('p') {
                assert!(ack.get("id").is_none(), "a pm ack has no id: {ack}");
            }
        }
        assert_eq!(
            item_ids(&got),
            (1..=12).collect::<Vec<_>>(),
            "consecutive ids"
        );
        let pms = of_type(&received(&b), "pm").len();
        assert_eq!(pms, 4);

        let r = c.connect_since(1, "g", None, Some(2));
        c.settle().await;
        let msgs = received(&r);
        let gap = msgs.iter().position(|m| m["type"] == "gap").expect("a gap");
        assert_eq!(msgs[gap]["from"], 2);
        assert_eq!(msgs[gap]["first"], 8);
        assert_eq!(msgs[gap]["room"], "g");
        let first_item = msgs.iter().position(|m| m["type"] == "danmaku").unwrap();
        assert!(gap < first_item, "the gap comes before the items");
        assert_eq!(item_ids(&msgs), (8..=12).collect::<Vec<_>>());

        // Up to date: nothing replayed, no gap.
        let up = c.connect_since(0, "g", None, Some(12));
        c.settle().await;
        let msgs = received(&up);
        assert!(
            of_type(&msgs, "gap").is_empty() && item_ids(&msgs).is_empty(),
            "{msgs:?}"
        );
    });
}

/// A viewer whose join answer reaches its shard in the same turn of the loop as a batch
/// the home sent before answering gets that batch's items once (in its history frame), and
/// the viewers already there get them once: the room's frames pending for the turn are
/// written to the others before the newcomer is added.
#[test]
fn a_join_answered_in_the_same_turn_as_a_batch_gets_its_items_once() {
    run(async {
        // A merge window, so that the batch leaves when the test says.
        let flags = [FAST, &[("danmaku.merge_window_ms", "50")]].concat();
        let c = Cluster::new(2, &flags);
        let home = c.shards[0].port().home_of("r");
        let other = 1 - home;
        let early = c.connect(other, "r", None);
        let poster = c.connect(home, "r", Some("alice"));
        c.settle().await;
        received(&early);
        c.send(&poster, &post("one", "c1"));
        c.settle().await;
        // The merge window closes: the batch is on its way to the viewers' shards.
        c.flush("r");
        let late = c.connect(other, "r", None);
        let mut in_flight = Vec::new();
        while let Some(m) = c.net.pop() {
            in_flight.push(m);
        }
        // The home's turn: its own viewers' batch and the join, answered with a history
        // that holds the item.
        let mut to_other = Vec::new();
        for (from, to, msg) in in_flight {
            if to == home {
                c.shards[home].handle(from, msg);
            } else {
                to_other.push((from, msg));
            }
        }
        c.shards[home].flush_viewers();
        // The other shard's turn: the batch, then (same lane, later) the join's answer,
        // and only then the end-of-turn flush.
        for (from, msg) in to_other {
            c.shards[other].handle(from, msg);
        }
        while let Some((from, to, msg)) = c.net.pop() {
            assert_eq!(to, other, "only the join's answer is left");
            c.shards[other].handle(from, msg);
        }
        c.shards[other].flush_viewers();
        c.settle().await;
        let texts = |conn: &Conn| -> Vec<String> {
            of_type(&received(conn), "danmaku")
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(texts(&late), ["one"], "in its history, once");
        assert_eq!(texts(&early), ["one"], "in the batch, once");
    });
}
