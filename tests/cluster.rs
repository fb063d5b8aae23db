//! Several nodes as one service over Redis (C10): three `liveshard` processes on loopback
//! against one real `redis-server`, and against a three-master Redis Cluster. What a
//! viewer sees: the same danmaku on every node, once each, in one order, with the same
//! ids; online counts over every node, dropping a node killed with `kill -9`; moderation
//! that holds on every node; Redis going away and coming back without a restart.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::{require_redis, RedisCluster, RedisServer};
use support::ws::{Client, Event};
use support::{eventually, Server};

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "auth.jwt_secret=cluster-test-secret-0123456789abcdef";

fn node(redis: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--redis",
        redis,
        "--shards",
        "2",
        "--set",
        SECRET,
        "--set",
        "danmaku.rate_per_sec=1000",
        "--set",
        "danmaku.rate_burst=1000",
        "--set",
        "cluster.heartbeat_ms=300",
        "--set",
        "cluster.node_ttl_ms=2000",
        "--set",
        "danmaku.online_interval_ms=200",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn token(server: &Server, uid: &str) -> String {
    support::token(server, uid, &["--set", SECRET])
}

/// A viewer of `room` on `server` that has joined (its `history` arrived).
fn viewer(server: &Server, room: &str, uid: Option<&str>) -> Client {
    let q = match uid {
        Some(u) => format!("room={room}&token={}", token(server, u)),
        None => format!("room={room}"),
    };
    let mut c = Client::connect(server.http, &q).expect("upgrade accepted");
    c.expect("history", T);
    c
}

/// The items of `batch` frames a viewer gets until it has `n` (other frames skipped).
fn collect(c: &mut Client, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut items = Vec::new();
    while items.len() < n && Instant::now() < deadline {
        if let Event::Json(v) = c.next(Duration::from_millis(500)) {
            if v["type"] == "batch" {
                items.extend(v["msgs"].as_array().unwrap().iter().cloned());
            }
        }
    }
    items
}

/// Acks (by cid) a sender got, until it has `n`.
fn acks(c: &mut Client, n: usize) -> HashMap<String, Value> {
    let deadline = Instant::now() + T;
    let mut out = HashMap::new();
    while out.len() < n && Instant::now() < deadline {
        if let Event::Json(v) = c.next(Duration::from_millis(500)) {
            if v["type"] == "ack" || v["type"] == "error" {
                out.insert(v["cid"].as_str().unwrap_or_default().to_string(), v);
            }
        }
    }
    out
}

fn ids(items: &[Value]) -> Vec<u64> {
    items.iter().map(|i| i["id"].as_u64().unwrap()).collect()
}

/// Publishers on two nodes, viewers on all three: every viewer gets every item once, in
/// the same order, with the same ids, and each sender's acks carry those ids.
fn danmaku_crosses_nodes(redis: &str) {
    let nodes: Vec<Server> = (0..3).map(|_| node(redis, &[])).collect();
    let room = "cross";
    let mut viewers: Vec<Client> = nodes.iter().map(|n| viewer(n, room, None)).collect();
    let mut alice = viewer(&nodes[0], room, Some("alice"));
    let mut carol = viewer(&nodes[2], room, Some("carol"));
    const N: usize = 40;
    for i in 0..N {
        alice.send(json!({"type": "danmaku", "text": format!("a{i}"), "cid": format!("a{i}")}));
        carol.send(json!({"type": "danmaku", "text": format!("c{i}"), "cid": format!("c{i}")}));
    }
    let seen: Vec<Vec<Value>> = viewers.iter_mut().map(|v| collect(v, 2 * N)).collect();
    for (i, items) in seen.iter().enumerate() {
        assert_eq!(
            items.len(),
            2 * N,
            "viewer on node {i} got {} items",
            items.len()
        );
        let ids = ids(items);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        assert_eq!(ids, super_ids(&seen[0]), "node {i} saw other ids or order");
        let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
        assert_eq!(
            texts,
            seen[0]
                .iter()
                .map(|i| i["text"].as_str().unwrap())
                .collect::<Vec<_>>()
        );
        for who in ["a", "c"] {
            let mine: Vec<&str> = texts
                .iter()
                .copied()
                .filter(|t| t.starts_with(who))
                .collect();
            let sent: Vec<String> = (0..N).map(|k| format!("{who}{k}")).collect();
            assert_eq!(mine, sent, "{who}'s items in the order sent");
        }
    }
    // Batches, not messages, went to Redis: one script per room per merge window.
    let publishes: f64 = nodes
        .iter()
        .map(|n| {
            n.metric("liveshard_cluster_commands_total{kind=\"publish\"}")
                .unwrap_or(0.0)
        })
        .sum();
    assert!(
        publishes >= 2.0 && publishes < (2 * N) as f64,
        "{publishes} scripts for {} items",
        2 * N
    );
    // Each ack holds the id every node delivered the item under.
    let by_text: HashMap<&str, u64> = seen[0]
        .iter()
        .map(|i| (i["text"].as_str().unwrap(), i["id"].as_u64().unwrap()))
        .collect();
    for (sender, who) in [(&mut alice, "a"), (&mut carol, "c")] {
        let got = acks(sender, N);
        for k in 0..N {
            let cid = format!("{who}{k}");
            let ack = &got[&cid];
            assert_eq!(ack["type"], "ack", "{ack}");
            assert_eq!(ack["id"].as_u64(), Some(by_text[cid.as_str()]), "{ack}");
        }
    }
}

fn super_ids(items: &[Value]) -> Vec<u64> {
    ids(items)
}

#[test]
fn danmaku_crosses_nodes_on_one_redis() {
    require_redis();
    let redis = RedisServer::start();
    danmaku_crosses_nodes(&redis.url());
}

#[test]
fn danmaku_crosses_nodes_on_a_redis_cluster() {
    require_redis();
    let redis = RedisCluster::start(3);
    danmaku_crosses_nodes(&redis.url());
}

/// The latest `online` count a viewer saw, read until it equals `want`.
fn online_reaches(c: &mut Client, want: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Event::Json(v) = c.next(Duration::from_millis(300)) {
            if v["type"] == "online" && v["count"].as_u64() == Some(want) {
                return true;
            }
        }
    }
    false
}

#[test]
fn online_counts_are_global_and_a_killed_node_drops_out() {
    require_redis();
    online_counts(&RedisServer::start().url());
}

#[test]
fn online_counts_are_global_on_a_redis_cluster() {
    require_redis();
    online_counts(&RedisCluster::start(3).url());
}

fn online_counts(redis: &str) {
    let a = node(redis, &[]);
    let b = node(redis, &[]);
    let room = "counted";
    let mut watcher = viewer(&a, room, None);
    let _more_a = viewer(&a, room, None);
    let _on_b: Vec<Client> = (0..3).map(|_| viewer(&b, room, None)).collect();
    assert!(
        online_reaches(&mut watcher, 5, T),
        "node A counts its 2 viewers and node B's 3"
    );
    b.crash();
    // node_ttl_ms = 2000: gone within it, plus a heartbeat.
    assert!(
        online_reaches(&mut watcher, 2, Duration::from_secs(6)),
        "node B's viewers stop counting once it is gone"
    );
}

#[test]
fn a_ban_on_one_node_holds_on_the_others() {
    require_redis();
    ban_everywhere(&RedisServer::start().url());
}

#[test]
fn a_ban_on_one_node_holds_on_the_others_on_a_redis_cluster() {
    require_redis();
    ban_everywhere(&RedisCluster::start(3).url());
}

fn ban_everywhere(redis: &str) {
    let nodes: Vec<Server> = (0..3).map(|_| node(redis, &[])).collect();
    let room = "moderated";
    let owner = "owner1";
    // The room's owner (the first poster with the admin role would be simpler, but any
    // global admin may moderate).
    let admin_tok = support::token(&nodes[0], owner, &["--set", SECRET, "--role", "admin"]);
    let mut admin =
        Client::connect(nodes[0].http, &format!("room={room}&token={admin_tok}")).unwrap();
    admin.expect("history", T);
    let mut mallory_b = viewer(&nodes[1], room, Some("mallory"));
    let mut watcher_c = viewer(&nodes[2], room, None);
    admin.send(json!({"type": "ban", "uid": "mallory", "cid": "b1"}));
    // Mallory's connection on node B is closed as banned.
    let closed = mallory_b.expect_close(T);
    assert_eq!(closed, Some(4003), "banned close code on another node");
    // And a new attempt on node C is refused.
    let q = format!("room={room}&token={}", token(&nodes[2], "mallory"));
    let mut again = Client::connect(nodes[2].http, &q).unwrap();
    assert_eq!(again.expect_close(T), Some(4003));
    // The room is otherwise fine on C.
    admin.send(json!({"type": "danmaku", "text": "still here", "cid": "x"}));
    let items = collect(&mut watcher_c, 1);
    assert_eq!(items[0]["text"], "still here");
}

#[test]
fn redis_away_and_back_without_a_restart() {
    require_redis();
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), &["--set", "cluster.command_timeout_ms=500"]);
    let b = node(&redis.url(), &["--set", "cluster.command_timeout_ms=500"]);
    let room = "weather";
    let mut on_a = viewer(&a, room, None);
    let mut on_b = viewer(&b, room, None);
    let mut poster = viewer(&a, room, Some("poster"));
    poster.send(json!({"type": "danmaku", "text": "before", "cid": "p0"}));
    assert_eq!(collect(&mut on_b, 1)[0]["text"], "before");
    assert_eq!(collect(&mut on_a, 1)[0]["text"], "before");

    redis.stop();
    poster.send(json!({"type": "danmaku", "text": "during", "cid": "p1"}));
    // Node A's viewers still get it, marked local; the sender is told it was not stored.
    let during = collect(&mut on_a, 1);
    assert_eq!(during[0]["text"], "during");
    assert_eq!(during[0]["local"], true);
    let got = acks(&mut poster, 2);
    assert_eq!(got["p1"]["type"], "error", "{:?}", got);
    assert_eq!(got["p1"]["code"], 5031);
    // Readiness says why.
    assert!(eventually(T, || {
        let r = a.get("/readyz");
        (r.json()["data"]["status"] == "degraded").then_some(())
    })
    .is_some());

    redis.restart();
    // Cross-node delivery resumes with no restart of either node.
    let resumed = eventually(Duration::from_secs(15), || {
        poster.send(json!({"type": "danmaku", "text": "after", "cid": "p2"}));
        let got = acks(&mut poster, 1);
        (got.get("p2").map(|v| v["type"] == "ack") == Some(true)).then_some(())
    });
    assert!(resumed.is_some(), "posts are acknowledged again");
    let items = collect(&mut on_b, 1);
    assert_eq!(items[0]["text"], "after");
    assert!(
        items[0]["id"].as_u64().unwrap() > 1,
        "ids go on from where they were"
    );
}

#[test]
fn a_node_listens_only_to_rooms_it_has_viewers_of() {
    require_redis();
    let redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    let c = node(&redis.url(), &[]);
    let _v = viewer(&a, "busy", None);
    let subs = |s: &Server| s.metric("liveshard_cluster_subscriptions").unwrap_or(-1.0);
    assert!(eventually(T, || (subs(&a) == 1.0).then_some(())).is_some());
    assert_eq!(subs(&c), 0.0, "node C has no viewer of any room");
    assert_eq!(
        redis.cli(&["PUBSUB", "SHARDNUMSUB", "ls:{busy}:ch"]),
        "ls:{busy}:ch\n1"
    );
}

#[test]
fn a_room_is_let_go_after_its_last_viewer_here_leaves() {
    require_redis();
    let redis = RedisServer::start();
    let a = node(&redis.url(), &["--set", "cluster.room_linger_ms=300"]);
    let b = node(&redis.url(), &[]);
    let mut on_b = viewer(&b, "brief", None);
    let v = viewer(&a, "brief", None);
    let subs = |s: &Server| s.metric("liveshard_cluster_subscriptions").unwrap_or(-1.0);
    assert!(eventually(T, || (subs(&a) == 1.0).then_some(())).is_some());
    v.close();
    // Posts elsewhere do not keep it: node B's viewer posts on.
    let mut poster = viewer(&b, "brief", Some("talker"));
    let gone = eventually(T, || {
        poster.send(json!({"type": "danmaku", "text": "still talking"}));
        (subs(&a) == 0.0).then_some(())
    });
    assert!(gone.is_some(), "node A unsubscribed once its viewer left");
    assert!(!collect(&mut on_b, 1).is_empty());
}

/// A node whose subscription connection is cut while others post fills what it missed
/// from the room's stream: its viewers get every item once, in order.
#[test]
fn a_node_that_missed_messages_fills_them_from_the_stream() {
    require_redis();
    let redis = RedisServer::start();
    let port = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    fill_holes(&redis.url(), &[port]);
}

#[test]
fn a_node_that_missed_messages_fills_them_on_a_redis_cluster() {
    require_redis();
    let redis = RedisCluster::start(3);
    fill_holes(&redis.url(), &redis.ports);
}

/// `ports`: every Redis server, where the subscriber connections are cut.
fn fill_holes(redis: &str, ports: &[u16]) {
    let a = node(redis, &[]);
    let b = node(redis, &[]);
    let room = "holes";
    let mut on_b = viewer(&b, room, None);
    let mut poster = viewer(&a, room, Some("poster"));
    const N: usize = 60;
    for i in 0..N {
        poster.send(json!({"type": "danmaku", "text": format!("m{i}"), "cid": format!("m{i}")}));
        if i % 10 == 5 {
            // Every subscriber connection (node B's, node A's) is dropped mid-stream.
            for port in ports {
                support::redis::cli(*port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
            }
        }
    }
    let items = collect(&mut on_b, N);
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want, "every item once, in order");
    let ids = ids(&items);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "no hole in {ids:?}"
    );
    assert!(
        b.metric("liveshard_cluster_commands_total{kind=\"fill\"}")
            .unwrap_or(0.0)
            > 0.0,
        "the holes were filled from the stream"
    );
}

/// A viewer joining on a node that never had the room gets the history posted elsewhere,
/// and a resume (`since`) there gets exactly what came after.
#[test]
fn history_and_resume_on_a_node_that_did_not_see_the_posts() {
    require_redis();
    let redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    let c = node(&redis.url(), &[]);
    let room = "replayed";
    let mut poster = viewer(&a, room, Some("poster"));
    for i in 0..5 {
        poster.send(json!({"type": "danmaku", "text": format!("h{i}"), "cid": format!("h{i}")}));
    }
    let got = acks(&mut poster, 5);
    let id_of = |k: &str| got[k]["id"].as_u64().unwrap();
    let mut late = Client::connect(c.http, &format!("room={room}")).unwrap();
    let history = late.expect("history", T);
    let texts: Vec<&str> = history["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["h0", "h1", "h2", "h3", "h4"]);
    let mut resumed =
        Client::connect(c.http, &format!("room={room}&since={}", id_of("h2"))).unwrap();
    let history = resumed.expect("history", T);
    let ids: Vec<u64> = ids(history["msgs"].as_array().unwrap());
    assert_eq!(ids, [id_of("h3"), id_of("h4")]);
}

/// A logout on one node closes the token's connections on the others and refuses it
/// there from then on.
#[test]
fn a_logout_on_one_node_holds_on_every_node() {
    require_redis();
    logout_everywhere(&RedisServer::start().url());
}

#[test]
fn a_logout_on_one_node_holds_on_every_node_on_a_redis_cluster() {
    require_redis();
    logout_everywhere(&RedisCluster::start(3).url());
}

fn logout_everywhere(redis: &str) {
    let a = node(redis, &[]);
    let b = node(redis, &[]);
    let tok = token(&a, "leaver");
    let q = format!("room=bye&token={tok}");
    let mut on_b = Client::connect(b.http, &q).unwrap();
    on_b.expect("history", T);
    let auth = format!("Bearer {tok}");
    let r = a.request(
        "POST",
        "/api/v1/auth/logout",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on_b.expect_close(T), Some(4011), "closed on the other node");
    let r = b.request(
        "POST",
        "/api/v1/auth/logout",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 401, "refused on the other node: {}", r.text());
}

/// A room's viewers as any node reports them: over every node.
#[test]
fn room_listing_counts_viewers_on_every_node() {
    require_redis();
    let redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let owner = token(&a, "host");
    let small = support::api::create_room(&a, &owner, "small")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let big = support::api::create_room(&a, &owner, "big")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // "small" has 2 viewers, both on A; "big" has 3, all on B.
    let _small: Vec<Client> = (0..2).map(|_| viewer(&a, &small, None)).collect();
    let _big: Vec<Client> = (0..3).map(|_| viewer(&b, &big, None)).collect();
    let online = |s: &Server, id: &str| {
        s.get(&format!("/api/v1/rooms/{id}")).json()["data"]["online"].as_u64()
    };
    let listed = eventually(T, || (online(&a, &big) == Some(3)).then_some(()));
    assert!(
        listed.is_some(),
        "node A reports the viewers of a room held on node B"
    );
    assert_eq!(online(&a, &small), Some(2));
    assert!(eventually(T, || (online(&b, &small) == Some(2)).then_some(())).is_some());
    // The list, from either node, with the counts over every node (live rooms are
    // sorted by them; these two are offline, listed newest first).
    let list = a.get("/api/v1/rooms?status=all").json();
    let mut rooms: Vec<(String, u64)> = list["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["online"].as_u64().unwrap(),
            )
        })
        .collect();
    rooms.sort_by_key(|r| std::cmp::Reverse(r.1));
    assert_eq!(rooms, [(big, 3), (small, 2)], "{list}");
}

/// WeChat's `cgi-bin/token`, as its documented contract has it: a new token per call
/// (each one a little slow), and the times of the calls.
fn token_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = calls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            while reader.read_line(&mut String::new()).unwrap_or(0) > 2 {}
            let n = {
                let mut l = log.lock().unwrap();
                l.push(Instant::now());
                l.len()
            };
            std::thread::sleep(Duration::from_millis(200));
            let body = format!(r#"{{"access_token":"tok-{n}","expires_in":7200}}"#);
            let _ = write!(
                &conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, calls)
}

/// Three nodes keep one WeChat access token between them: one fetch at a time, on the
/// schedule one node alone would keep, not three times as often.
#[test]
fn the_wechat_access_token_is_fetched_by_one_node_at_a_time() {
    require_redis();
    let redis = RedisServer::start();
    let (base, calls) = token_endpoint();
    let base = format!("wechat.api_base={base}");
    // expires_in 7200 s with a margin of 7198 s: due every 2 s.
    let wx = [
        "--set",
        "wechat.appid=wx-cluster",
        "--set",
        "wechat.secret=s3cret",
        "--set",
        &base,
        "--set",
        "wechat.token_refresh_margin_secs=7198",
    ];
    let _nodes: Vec<Server> = (0..3).map(|_| node(&redis.url(), &wx)).collect();
    std::thread::sleep(Duration::from_millis(6500));
    let calls = calls.lock().unwrap().clone();
    assert!(
        (2..=4).contains(&calls.len()),
        "about one fetch every 2 s for the three nodes together, got {}",
        calls.len()
    );
    for pair in calls.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(1500),
            "two fetches {:?} apart",
            pair[1] - pair[0]
        );
    }
}

/// While Redis is away, reads answer from what the node last read; writes answer 503.
#[test]
fn reads_answer_from_what_the_node_has_while_redis_is_away() {
    require_redis();
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    let owner = token(&a, "keeper");
    let id = support::api::create_room(&a, &owner, "kept")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/rooms/{id}");
    assert_eq!(a.get(&path).status, 200);
    assert_eq!(a.get("/api/v1/rooms").status, 200);
    redis.stop();
    let room = support::api::ok(&a.get(&path));
    assert_eq!(room["title"], "kept");
    let list = support::api::ok(&a.get("/api/v1/rooms"));
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "{list}"
    );
    // A room this node never read: nothing to answer from.
    support::api::err(&a.get("/api/v1/rooms/neverseen"), 503, 50307);
    let body = json!({"title": "new", "category": "test"});
    support::api::err(
        &support::api::call(&a, "POST", "/api/v1/rooms", Some(&owner), Some(&body)),
        503,
        50307,
    );
}

/// `rediss://`: the nodes reach Redis over TLS, verifying its certificate against the CA
/// they are given (`SSL_CERT_FILE`), and danmaku crosses nodes as over plain TCP.
#[test]
fn nodes_reach_redis_over_tls() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    require_redis();
    let dir = support::TempDir::new("redis-tls");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let (ca_pem, cert, key) = (
        dir.0.join("ca.pem"),
        dir.0.join("cert.pem"),
        dir.0.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf_cert.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let redis = RedisServer::start_tls(&cert, &key);
    let url = redis.tls_url();
    let ca_file = ca_pem.display().to_string();
    let start = || {
        let data = std::env::temp_dir().join(format!("liveshard-data-tls-{}", support::rand_u64()));
        Server::start_with_env(
            data,
            &["--redis", &url, "--shards", "1", "--set", SECRET],
            &[("SSL_CERT_FILE", &ca_file)],
        )
    };
    let (a, b) = (start(), start());
    let mut on_b = viewer(&b, "secure", None);
    let mut poster = viewer(&a, "secure", Some("poster"));
    poster.send(json!({"type": "danmaku", "text": "over tls", "cid": "t"}));
    assert_eq!(collect(&mut on_b, 1)[0]["text"], "over tls");
    // A node that does not trust the CA does not talk to that Redis.
    let untrusting = node(&url, &[]);
    let refused = eventually(T, || {
        (untrusting.metric("liveshard_cluster_errors_total")? > 0.0).then_some(())
    });
    assert!(refused.is_some(), "errors counted");
    assert_eq!(untrusting.metric("liveshard_cluster_redis_up"), Some(0.0));
    assert_eq!(a.metric("liveshard_cluster_redis_up"), Some(1.0));
}
