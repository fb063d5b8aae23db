//! Nodes sharing their store through Redis (`--redis`): rooms, users, moderation and
//! danmaku history written on one node are what another reads, on one Redis server and on
//! a Redis Cluster; with Redis down, REST writes answer 503 50307 and work again once it
//! is back, without restarting the node.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::api::{call, create_room, dev_login, err, ok};
use support::redis::{RedisCluster, RedisServer};
use support::{eventually, Server};

const T: Duration = Duration::from_secs(15);
const STORE_UNAVAILABLE: u64 = 50307;

fn node(url: &str) -> Server {
    Server::start(&[
        "--shards",
        "2",
        "--redis",
        url,
        "--set",
        "auth.jwt_secret=cluster-store-test-secret-0123456789abcdef",
        "--set",
        "auth.dev_login=true",
        "--set",
        "danmaku.merge_window_ms=0",
        "--set",
        "danmaku.rate_per_sec=1000",
        "--set",
        "danmaku.rate_burst=1000",
    ])
}

fn login(server: &Server, uid: &str, nick: &str) -> Value {
    let body = json!({"uid": uid, "nick": nick});
    ok(&call(server, "POST", "/api/v1/auth/dev", None, Some(&body)))
}

fn post(server: &Server, room: &str, token: &str, text: &str) -> support::HttpResponse {
    let body = json!({"type": "danmaku", "text": text});
    call(
        server,
        "POST",
        &format!("/api/v1/rooms/{room}/danmaku"),
        Some(token),
        Some(&body),
    )
}

/// The raw bytes of each item of a history answer (`{"…":…,"data":{"items":[A,B,…],…}}`),
/// cut at the top-level commas of the array: the items as the server sent them.
fn raw_items(body: &[u8]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(body).unwrap();
    let start = text.find(r#""items":["#).expect("items") + r#""items":["#.len();
    let bytes = &body[start..];
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    let mut items = Vec::new();
    let mut cur = Vec::new();
    for &b in bytes {
        if in_str {
            cur.push(b);
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' => depth -= 1,
            b']' if depth == 0 => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
                return items;
            }
            b']' => depth -= 1,
            b',' if depth == 0 => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(b);
    }
    panic!("unterminated items array");
}

/// The items of the stream at `ls:{room}:hist`, oldest first, as `redis-cli --raw` prints
/// `XRANGE`: per entry its id, then field and value lines.
fn stored_items(cli: &dyn Fn(&[&str]) -> String, room: &str) -> Vec<String> {
    let out = cli(&["--raw", "XRANGE", &format!("ls:{{{room}}}:hist"), "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        // id, then pairs: i <item>, p <priority>
        let mut j = i + 1;
        while j + 1 < lines.len() && !lines[j].ends_with("-0") {
            if lines[j] == "i" {
                items.push(lines[j + 1].to_string());
            }
            j += 2;
        }
        i = j;
    }
    items
}

/// What every setup checks: two nodes on one Redis (a server or a cluster) act as one
/// store. `cli` runs `redis-cli` against it.
fn shared_store(url: &str, cli: &dyn Fn(&[&str]) -> String) {
    let a = node(url);
    let b = node(url);

    // A user logged in on A is the same user on B (created once, not again).
    let alice_a = login(&a, "alice", "Alice");
    let alice_b = login(&b, "alice", "Someone else");
    assert_eq!(alice_b["user"], alice_a["user"], "B finds A's user");
    let alice = alice_a["token"].as_str().unwrap().to_string();
    let bob = dev_login(&a, "bob");
    let carol = dev_login(&b, "carol");

    // A room created on A; a ban set on A is stored before B ever loads the room.
    let room = create_room(&a, &alice, "Evening jazz");
    let id = room["id"].as_str().unwrap().to_string();
    let base = format!("/api/v1/rooms/{id}");
    ok(&call(
        &a,
        "POST",
        &format!("{base}/bans/bob"),
        Some(&alice),
        None,
    ));
    let mods_key = format!("ls:{{{id}}}:mods");
    eventually(T, || {
        cli(&["GET", &mods_key]).contains("\"bob\"").then_some(())
    })
    .expect("the ban reaches Redis");

    // B reads, lists and updates it; A sees the update.
    assert_eq!(ok(&b.get(&base))["title"], "Evening jazz");
    let listed = ok(&b.get("/api/v1/rooms?status=all&size=50"));
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "B lists A's room: {listed}"
    );
    let patch = json!({"title": "Late jazz"});
    assert_eq!(
        ok(&call(&b, "PATCH", &base, Some(&alice), Some(&patch)))["title"],
        "Late jazz"
    );
    assert_eq!(ok(&a.get(&base))["title"], "Late jazz");
    // Only its owner may change it, on either node.
    err(
        &call(&b, "PATCH", &base, Some(&carol), Some(&patch)),
        403,
        40301,
    );

    // Danmaku posted on A, paged from B: the same bytes, in order.
    let texts = [
        "first",
        "主播好!",
        "quote \" and backslash \\ and emoji 👍🏽",
        "<html> & stuff",
        "last",
    ];
    let ids: Vec<u64> = texts
        .iter()
        .map(|t| ok(&post(&a, &id, &alice, t))["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend: {ids:?}");
    let page = b.get(&format!("{base}/danmaku?limit=100"));
    let data = ok(&page);
    let items = data["items"].as_array().unwrap();
    let got_ids: Vec<u64> = items.iter().map(|i| i["id"].as_u64().unwrap()).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(got_ids, newest_first, "newest first, every item");
    let got_texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let mut want_texts = texts.to_vec();
    want_texts.reverse();
    assert_eq!(got_texts, want_texts);
    // Byte for byte what A stored.
    let mut raw = raw_items(&page.body);
    raw.reverse();
    let stored = stored_items(cli, &id);
    assert_eq!(stored.len(), ids.len(), "{stored:?}");
    for (r, s) in raw.iter().zip(&stored) {
        assert_eq!(std::str::from_utf8(r).unwrap(), s);
    }
    // Paged by `before`.
    let older = ok(&b.get(&format!("{base}/danmaku?before={}&limit=2", ids[3])));
    let older_ids: Vec<u64> = older["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(older_ids, [ids[2], ids[1]]);
    assert_eq!(older["next_before"], ids[1]);

    // B loads the room with A's moderation and ids: bob is banned there too, and B's
    // items follow A's.
    let refused = post(&b, &id, &bob, "let me in");
    assert_eq!(
        (refused.status, refused.json()["code"].as_u64()),
        (403, Some(4032)),
        "{}",
        refused.text()
    );
    let next = ok(&post(&b, &id, &carol, "hello from B"))["id"]
        .as_u64()
        .unwrap();
    assert!(next > ids[4], "B's item {next} follows A's {ids:?}");
    let first = ok(&a.get(&format!("{base}/danmaku?limit=1")));
    assert_eq!(first["items"][0]["id"], next, "A pages B's item");

    // Closed on A: B leaves it out of the open rooms.
    ok(&call(&a, "DELETE", &base, Some(&alice), None));
    let open = ok(&b.get("/api/v1/rooms?size=50"));
    assert!(
        !open["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "a closed room is not listed: {open}"
    );
    assert_eq!(ok(&b.get(&base))["status"], "closed");

    // A logout on A is kept in Redis: a node started after it refuses the token.
    let out = ok(&call(&a, "POST", "/api/v1/auth/logout", Some(&carol), None));
    assert_eq!(out["revoked"], "token");
    let c = node(url);
    let body = json!({"title": "after logout", "category": "test"});
    err(
        &call(&c, "POST", "/api/v1/rooms", Some(&carol), Some(&body)),
        401,
        40105,
    );
    let carol_again = dev_login(&c, "carol");
    ok(&call(
        &c,
        "POST",
        "/api/v1/rooms",
        Some(&carol_again),
        Some(&body),
    ));
}

#[test]
fn nodes_share_rooms_users_moderation_and_history_on_one_redis() {
    let redis = RedisServer::start();
    shared_store(&redis.url(), &|args| redis.cli(args));
}

#[test]
fn nodes_share_rooms_users_moderation_and_history_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    shared_store(&cluster.url(), &|args| cluster.cli(args));
}

#[test]
fn rest_writes_answer_503_while_redis_is_down_and_work_again_when_it_is_back() {
    let mut redis = RedisServer::start_with_password("pw-never-logged-7f3a");
    let a = node(&redis.url());
    let alice = dev_login(&a, "alice");
    create_room(&a, &alice, "before");

    redis.stop();
    let body = json!({"title": "during", "category": "test"});
    let refused = call(&a, "POST", "/api/v1/rooms", Some(&alice), Some(&body));
    err(&refused, 503, STORE_UNAVAILABLE);
    err(&a.get("/api/v1/rooms?status=all"), 503, STORE_UNAVAILABLE);
    assert_eq!(a.get("/healthz").status, 200, "the node itself is up");
    let mut logs = String::new();
    eventually(T, || {
        logs.push_str(&a.logs().join("\n"));
        logs.contains("redis is unreachable").then_some(())
    })
    .expect("the outage is logged");
    logs.push_str(&a.logs().join("\n"));
    assert!(
        !logs.contains("pw-never-logged-7f3a"),
        "the Redis URL (and its password) is never logged: {logs}"
    );

    // Back (empty: no persistence here): the same write succeeds on the same node.
    redis.restart();
    let room = eventually(T, || {
        let r = call(&a, "POST", "/api/v1/rooms", Some(&alice), Some(&body));
        (r.status == 200).then(|| ok(&r))
    })
    .expect("creating a room works again once Redis is back");
    let id = room["id"].as_str().unwrap();
    assert_eq!(
        redis.cli(&["EXISTS", &format!("ls:{{{id}}}:room")]),
        "1",
        "the room is in Redis"
    );
}

#[test]
fn a_node_starts_while_redis_is_down_and_uses_it_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let a = node(&redis.url());
    assert_eq!(a.get("/healthz").status, 200);
    let body = json!({"uid": "alice", "nick": "Alice"});
    err(
        &call(&a, "POST", "/api/v1/auth/dev", None, Some(&body)),
        503,
        STORE_UNAVAILABLE,
    );
    redis.restart();
    let data = eventually(T, || {
        let r = call(&a, "POST", "/api/v1/auth/dev", None, Some(&body));
        (r.status == 200).then(|| ok(&r))
    })
    .expect("login works once Redis is up");
    assert_eq!(data["user"]["nick"], "Alice");
    assert!(redis.cli(&["GET", "ls:user:{alice}"]).contains("Alice"));
}

#[test]
fn rest_writes_answer_503_when_the_redis_cluster_is_down() {
    let mut cluster = RedisCluster::start(3);
    let a = node(&cluster.url());
    let alice = dev_login(&a, "alice");
    create_room(&a, &alice, "before");
    cluster.stop();
    let body = json!({"title": "during", "category": "test"});
    let t = std::time::Instant::now();
    err(
        &call(&a, "POST", "/api/v1/rooms", Some(&alice), Some(&body)),
        503,
        STORE_UNAVAILABLE,
    );
    assert_eq!(a.get("/healthz").status, 200);
    assert!(t.elapsed() < T, "answered in {:?}", t.elapsed());
}
