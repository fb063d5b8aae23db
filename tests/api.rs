//! The REST API, black-box against the real server: rooms, moderation, history, covers,
//! CORS, Server-Sent Events and durability across `kill -9`. Each route is tried on its
//! happy path, without a token, as someone who is not the owner, and with bad input, and
//! each refusal is checked for its status and stable code (docs/api.md).

mod support;

use std::io::{BufReader, Write};
use std::time::Duration;

use serde_json::{json, Value};
use support::api::{call, create_room, dev_login, err, multipart, ok, png, Sse};
use support::ws::{Client, Event};
use support::{eventually, read_response, Server};

const T: Duration = Duration::from_secs(10);

fn server() -> Server {
    Server::start(&[
        "--shards",
        "2",
        "--set",
        "auth.dev_login=true",
        "--set",
        "danmaku.merge_window_ms=0",
        "--set",
        "danmaku.online_interval_ms=100",
    ])
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    format!("/{}", rest.split_once('/').unwrap().1)
}

#[test]
fn dev_login_is_off_by_default_and_on_when_configured() {
    let off = Server::start(&["--shards", "1"]);
    let body = json!({"uid": "alice"});
    let r = call(&off, "POST", "/api/v1/auth/dev", None, Some(&body));
    err(&r, 404, 40400);

    let on = server();
    let data = ok(&call(&on, "POST", "/api/v1/auth/dev", None, Some(&body)));
    assert_eq!(data["user"]["uid"], "alice");
    assert!(data["expires_at"].as_u64().unwrap() > 0);
    let bad = json!({"uid": "a b"});
    let e = err(
        &call(&on, "POST", "/api/v1/auth/dev", None, Some(&bad)),
        422,
        42201,
    );
    assert_eq!(e["data"]["field"], "uid");
    let r = on.request("POST", "/api/v1/auth/dev", &[], b"{not json");
    err(&r, 400, 40001);
    let r = on.request("POST", "/api/v1/auth/dev", &[], b"[1,2]");
    err(&r, 400, 40001);
}

#[test]
fn rooms_are_created_read_updated_resigned_and_closed_by_their_owner() {
    let server = server();
    let alice = dev_login(&server, "alice");
    let bob = dev_login(&server, "bob");

    // Create: auth missing, bad token, bad input, then the happy path.
    let body = json!({"title": "Evening jazz", "category": "music", "cover_url": "/covers/x.png"});
    err(
        &call(&server, "POST", "/api/v1/rooms", None, Some(&body)),
        401,
        40101,
    );
    err(
        &call(
            &server,
            "POST",
            "/api/v1/rooms",
            Some("not.a.token"),
            Some(&body),
        ),
        401,
        40102,
    );
    let e = err(
        &call(
            &server,
            "POST",
            "/api/v1/rooms",
            Some(&alice),
            Some(&json!({})),
        ),
        422,
        42201,
    );
    assert_eq!(e["data"]["field"], "title");
    let long = json!({"title": "x".repeat(65)});
    err(
        &call(&server, "POST", "/api/v1/rooms", Some(&alice), Some(&long)),
        422,
        42201,
    );
    let bad_cover = json!({"title": "t", "cover_url": "javascript:alert(1)"});
    let e = err(
        &call(
            &server,
            "POST",
            "/api/v1/rooms",
            Some(&alice),
            Some(&bad_cover),
        ),
        422,
        42201,
    );
    assert_eq!(e["data"]["field"], "cover_url");
    let r = server.request(
        "POST",
        "/api/v1/rooms",
        &[("Authorization", &format!("Bearer {alice}"))],
        b"{\"title\":",
    );
    err(&r, 400, 40001);

    let room = ok(&call(
        &server,
        "POST",
        "/api/v1/rooms",
        Some(&alice),
        Some(&body),
    ));
    let id = room["id"].as_str().unwrap().to_string();
    assert_eq!(room["owner"], "alice");
    assert_eq!(room["title"], "Evening jazz");
    assert_eq!(room["status"], "offline");
    assert_eq!(room["online"], 0);
    // No public URLs configured: they follow the request's Host header (`t` here).
    let host = "t";
    assert_eq!(room["ws_url"], format!("ws://{host}/ws?room={id}"));
    assert_eq!(room["play"]["flv"], format!("http://{host}/live/{id}.flv"));
    assert_eq!(room["play"]["hls"], format!("http://{host}/live/{id}.m3u8"));
    assert!(room["play"]["rtmp"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/live/{id}")));
    // The push URL is signed with the server's push key (kept in the data dir).
    let push = &room["push"];
    let key = std::fs::read_to_string(server.data_dir.join("push.key")).unwrap();
    let stream_key = push["stream_key"].as_str().unwrap();
    let (name, query) = stream_key.split_once('?').unwrap();
    assert_eq!(name, id);
    let now = liveshard::auth::now_unix();
    liveshard::media::sign::verify(&key, &id, query, now).expect("push URL verifies");
    assert!(push["expires_at"].as_u64().unwrap() > now + 3600);
    assert_eq!(
        push["url"].as_str().unwrap(),
        format!("{}/{stream_key}", push["server_url"].as_str().unwrap())
    );

    // Get.
    let got = ok(&server.get(&format!("/api/v1/rooms/{id}")));
    assert_eq!(got["id"], id.as_str());
    assert!(
        got.get("push").is_none(),
        "push URLs are for the owner only"
    );
    err(&server.get("/api/v1/rooms/no-such-room"), 404, 40401);
    err(&server.get("/api/v1/rooms/bad%20id"), 404, 40401);

    // Update.
    let path = format!("/api/v1/rooms/{id}");
    let change = json!({"title": "Late jazz"});
    err(
        &call(&server, "PATCH", &path, None, Some(&change)),
        401,
        40101,
    );
    err(
        &call(&server, "PATCH", &path, Some(&bob), Some(&change)),
        403,
        40301,
    );
    err(
        &call(&server, "PATCH", &path, Some(&alice), Some(&json!({}))),
        422,
        42201,
    );
    err(
        &call(
            &server,
            "PATCH",
            &path,
            Some(&alice),
            Some(&json!({"category": 5})),
        ),
        422,
        42201,
    );
    err(
        &call(
            &server,
            "PATCH",
            "/api/v1/rooms/nope",
            Some(&alice),
            Some(&change),
        ),
        404,
        40401,
    );
    let updated = ok(&call(&server, "PATCH", &path, Some(&alice), Some(&change)));
    assert_eq!(updated["title"], "Late jazz");
    assert_eq!(updated["category"], "music", "untouched fields stay");

    // Re-sign the push URL.
    let resign = format!("/api/v1/rooms/{id}/push-url");
    err(&call(&server, "POST", &resign, None, None), 401, 40101);
    err(
        &call(&server, "POST", &resign, Some(&bob), None),
        403,
        40301,
    );
    err(
        &call(
            &server,
            "POST",
            "/api/v1/rooms/nope/push-url",
            Some(&alice),
            None,
        ),
        404,
        40401,
    );
    let fresh = ok(&call(&server, "POST", &resign, Some(&alice), None));
    let (_, query) = fresh["push"]["stream_key"]
        .as_str()
        .unwrap()
        .split_once('?')
        .unwrap();
    liveshard::media::sign::verify(&key, &id, query, now).expect("re-signed URL verifies");

    // Close: viewers are told; the room refuses changes and leaves the lists.
    let mut viewer = Client::connect(server.http, &format!("room={id}")).unwrap();
    viewer.expect("history", T);
    err(&call(&server, "DELETE", &path, None, None), 401, 40101);
    err(
        &call(&server, "DELETE", &path, Some(&bob), None),
        403,
        40301,
    );
    err(
        &call(&server, "DELETE", "/api/v1/rooms/nope", Some(&alice), None),
        404,
        40401,
    );
    let closed = ok(&call(&server, "DELETE", &path, Some(&alice), None));
    assert_eq!(closed["status"], "closed");
    let notice = viewer.expect("batch", T);
    assert!(
        notice.to_string().contains("closed"),
        "viewers get a system item: {notice}"
    );
    assert_eq!(ok(&server.get(&path))["status"], "closed");
    err(
        &call(&server, "PATCH", &path, Some(&alice), Some(&change)),
        409,
        40901,
    );
    err(
        &call(&server, "POST", &resign, Some(&alice), None),
        409,
        40901,
    );
    let again = ok(&call(&server, "DELETE", &path, Some(&alice), None));
    assert_eq!(again["status"], "closed", "closing twice answers the same");
    let list = ok(&server.get("/api/v1/rooms"));
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != id.as_str()),
        "closed rooms are not listed"
    );
}

#[test]
fn public_urls_come_from_the_config_when_set() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "auth.dev_login=true",
        "--set",
        "api.public_http=https://live.example.com/",
        "--set",
        "api.public_rtmp=rtmp://push.example.com:1935",
        "--set",
        "media.play_sign=true",
    ]);
    let alice = dev_login(&server, "alice");
    let room = create_room(&server, &alice, "public");
    let id = room["id"].as_str().unwrap();
    assert_eq!(
        room["ws_url"],
        format!("wss://live.example.com/ws?room={id}")
    );
    let flv = room["play"]["flv"].as_str().unwrap();
    assert!(
        flv.starts_with(&format!("https://live.example.com/live/{id}.flv?txSecret=")),
        "{flv}"
    );
    assert!(room["push"]["url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("rtmp://push.example.com:1935/live/{id}?txSecret=")));
    let check = std::process::Command::new(support::BIN)
        .args(["config", "check", "--set", "api.public_http=ftp://x"])
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("api.public_http"));
}

#[test]
fn a_global_admin_may_act_as_any_owner() {
    let server = server();
    let alice = dev_login(&server, "alice");
    let root = support::token(&server, "root", &["--role", "admin"]);
    let id = create_room(&server, &alice, "r")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let change = json!({"title": "moderated"});
    let r = call(
        &server,
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(&root),
        Some(&change),
    );
    assert_eq!(ok(&r)["title"], "moderated");
    let expired = support::token(&server, "alice", &["--ttl", "0"]);
    err(
        &call(
            &server,
            "PATCH",
            &format!("/api/v1/rooms/{id}"),
            Some(&expired),
            Some(&change),
        ),
        401,
        40103,
    );
}

#[test]
fn room_lists_page_newest_first_with_online_counts() {
    let server = server();
    let alice = dev_login(&server, "alice");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            create_room(&server, &alice, &format!("room {n}"))["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        // Distinct creation seconds are not needed: equal ones are ordered by id.
    }
    let page1 = ok(&server.get("/api/v1/rooms?status=all&page=1&size=2"));
    assert_eq!(page1["total"], 5);
    assert_eq!(page1["size"], 2);
    let page2 = ok(&server.get("/api/v1/rooms?page=2&size=2"));
    let page3 = ok(&server.get("/api/v1/rooms?page=3&size=2"));
    let listed: Vec<String> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every room once across pages");
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(ok(&server.get("/api/v1/rooms?page=9"))["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(ok(&server.get("/api/v1/rooms?status=live"))["total"], 0);

    // A viewer in one room: the list shows its online count.
    let watched = ids[2].clone();
    let mut viewer = Client::connect(server.http, &format!("room={watched}")).unwrap();
    viewer.expect("history", T);
    let online = eventually(T, || {
        let list = ok(&server.get("/api/v1/rooms?size=50"));
        let room = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == watched.as_str())
            .cloned()?;
        (room["online"] == 1).then_some(room)
    });
    assert!(online.is_some(), "the watched room shows 1 online");
    assert_eq!(
        ok(&server.get(&format!("/api/v1/rooms/{watched}")))["online"],
        1
    );

    for bad in [
        "status=paused",
        "page=0",
        "page=x",
        "size=0",
        "size=51",
        "page=10001",
    ] {
        let e = err(&server.get(&format!("/api/v1/rooms?{bad}")), 422, 42201);
        assert!(e["data"]["field"].is_string(), "{bad}: {e}");
    }
}

fn send_and_ack(c: &mut Client, text: &str) -> Result<u64, Value> {
    c.send(json!({"type": "danmaku", "text": text, "cid": text}));
    loop {
        match c.next(T) {
            Event::Json(v) if v["type"] == "ack" && v["cid"] == text => {
                return Ok(v["id"].as_u64().unwrap())
            }
            Event::Json(v) if v["type"] == "error" && v["cid"] == text => return Err(v),
            Event::Json(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn moderation_by_owner_and_room_admins_holds_on_every_shard() {
    let server = Server::start(&[
        "--shards",
        "3",
        "--set",
        "auth.dev_login=true",
        "--set",
        "danmaku.rate_per_sec=100",
        "--set",
        "danmaku.rate_burst=100",
    ]);
    let alice = dev_login(&server, "alice");
    let bob = dev_login(&server, "bob");
    let carol = dev_login(&server, "carol");
    let troll_token = support::token(&server, "troll", &[]);
    let id = create_room(&server, &alice, "modded")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/api/v1/rooms/{id}");
    let connect = || {
        let mut c =
            Client::connect(server.http, &format!("room={id}&token={troll_token}")).unwrap();
        c.expect("history", T);
        c
    };
    let mut troll = connect();

    // Mute: auth, permission, input, then the real thing.
    let mute = format!("{base}/mutes/troll");
    let secs = json!({"seconds": 600});
    err(&call(&server, "POST", &mute, None, Some(&secs)), 401, 40101);
    err(
        &call(&server, "POST", &mute, Some(&bob), Some(&secs)),
        403,
        40302,
    );
    for bad in [
        json!({}),
        json!({"seconds": -1}),
        json!({"seconds": "x"}),
        json!({"seconds": 99999999}),
    ] {
        let e = err(
            &call(&server, "POST", &mute, Some(&alice), Some(&bad)),
            422,
            42201,
        );
        assert_eq!(e["data"]["field"], "seconds");
    }
    let e = err(
        &call(
            &server,
            "POST",
            &format!("{base}/mutes/a%20b"),
            Some(&alice),
            Some(&secs),
        ),
        422,
        42201,
    );
    assert_eq!(e["data"]["field"], "uid");
    err(
        &call(
            &server,
            "POST",
            "/api/v1/rooms/nope/mutes/troll",
            Some(&alice),
            Some(&secs),
        ),
        404,
        40401,
    );
    let done = ok(&call(&server, "POST", &mute, Some(&alice), Some(&secs)));
    assert_eq!(
        done,
        json!({"room": id, "action": "mute", "uid": "troll", "seconds": 600})
    );
    // In force as soon as the API answered, whichever shard the troll is on.
    assert_eq!(
        send_and_ack(&mut troll, "muted?").unwrap_err()["code"],
        4031
    );
    err(
        &call(&server, "DELETE", &mute, Some(&bob), None),
        403,
        40302,
    );
    err(&call(&server, "DELETE", &mute, None, None), 401, 40101);
    ok(&call(&server, "DELETE", &mute, Some(&alice), None));
    send_and_ack(&mut troll, "free again").expect("unmuted");

    // Admins: owner only.
    let bob_admin = format!("{base}/admins/bob");
    err(&call(&server, "POST", &bob_admin, None, None), 401, 40101);
    err(
        &call(&server, "POST", &bob_admin, Some(&bob), None),
        403,
        40301,
    );
    err(
        &call(&server, "POST", &bob_admin, Some(&carol), None),
        403,
        40301,
    );
    ok(&call(&server, "POST", &bob_admin, Some(&alice), None));
    assert_eq!(ok(&server.get(&base))["admins"], json!(["bob"]));
    err(
        &call(
            &server,
            "POST",
            &format!("{base}/admins/carol"),
            Some(&bob),
            None,
        ),
        403,
        40301,
    );

    // A room admin bans: the troll's connection is closed, and a new one is refused.
    let ban = format!("{base}/bans/troll");
    err(&call(&server, "POST", &ban, None, None), 401, 40101);
    err(&call(&server, "POST", &ban, Some(&carol), None), 403, 40302);
    ok(&call(&server, "POST", &ban, Some(&bob), None));
    assert_eq!(troll.expect_close(T), Some(4003));
    let mut again =
        Client::connect(server.http, &format!("room={id}&token={troll_token}")).unwrap();
    assert_eq!(again.expect_close(T), Some(4003));
    err(
        &call(&server, "DELETE", &ban, Some(&carol), None),
        403,
        40302,
    );
    err(&call(&server, "DELETE", &ban, None, None), 401, 40101);
    err(
        &call(
            &server,
            "POST",
            &format!("{base}/bans/a%20b"),
            Some(&bob),
            None,
        ),
        422,
        42201,
    );
    err(
        &call(
            &server,
            "DELETE",
            "/api/v1/rooms/nope/bans/troll",
            Some(&bob),
            None,
        ),
        404,
        40401,
    );
    ok(&call(&server, "DELETE", &ban, Some(&bob), None));
    let mut troll = connect();

    // Kick.
    let kick = format!("{base}/kick/troll");
    err(&call(&server, "POST", &kick, None, None), 401, 40101);
    err(
        &call(&server, "POST", &kick, Some(&carol), None),
        403,
        40302,
    );
    err(
        &call(
            &server,
            "POST",
            &format!("{base}/kick/a%2Fb"),
            Some(&bob),
            None,
        ),
        422,
        42201,
    );
    ok(&call(&server, "POST", &kick, Some(&bob), None));
    assert_eq!(troll.expect_close(T), Some(4001));

    // Slow mode.
    let slow = format!("{base}/slow-mode");
    err(
        &call(&server, "PUT", &slow, None, Some(&json!({"seconds": 5}))),
        401,
        40101,
    );
    err(
        &call(
            &server,
            "PUT",
            &slow,
            Some(&carol),
            Some(&json!({"seconds": 5})),
        ),
        403,
        40302,
    );
    err(
        &call(
            &server,
            "PUT",
            &slow,
            Some(&bob),
            Some(&json!({"seconds": 3601})),
        ),
        422,
        42201,
    );
    err(
        &call(&server, "PUT", &slow, Some(&bob), Some(&json!({}))),
        422,
        42201,
    );
    ok(&call(
        &server,
        "PUT",
        &slow,
        Some(&bob),
        Some(&json!({"seconds": 30})),
    ));
    let mut troll = connect();
    send_and_ack(&mut troll, "first").expect("first message passes");
    assert_eq!(
        send_and_ack(&mut troll, "second").unwrap_err()["code"],
        4033
    );
    ok(&call(
        &server,
        "PUT",
        &slow,
        Some(&alice),
        Some(&json!({"seconds": 0})),
    ));
    send_and_ack(&mut troll, "third").expect("slow mode off");

    // Removing the admin takes the right away.
    err(
        &call(&server, "DELETE", &bob_admin, Some(&bob), None),
        403,
        40301,
    );
    err(&call(&server, "DELETE", &bob_admin, None, None), 401, 40101);
    err(
        &call(
            &server,
            "DELETE",
            &format!("{base}/admins/a%20b"),
            Some(&alice),
            None,
        ),
        422,
        42201,
    );
    ok(&call(&server, "DELETE", &bob_admin, Some(&alice), None));
    err(&call(&server, "POST", &kick, Some(&bob), None), 403, 40302);
    assert_eq!(ok(&server.get(&base))["admins"], json!([]));

    // Every moderation route: an unknown room is 404, a bad user id 422 naming `uid`.
    for (method, what) in [
        ("POST", "mutes"),
        ("DELETE", "mutes"),
        ("POST", "bans"),
        ("DELETE", "bans"),
        ("POST", "kick"),
        ("POST", "admins"),
        ("DELETE", "admins"),
    ] {
        let body = (method == "POST" && what == "mutes").then_some(&secs);
        let unknown = format!("/api/v1/rooms/nope/{what}/troll");
        err(
            &call(&server, method, &unknown, Some(&alice), body),
            404,
            40401,
        );
        let bad = format!("{base}/{what}/a%20b");
        let e = err(&call(&server, method, &bad, Some(&alice), body), 422, 42201);
        assert_eq!(e["data"]["field"], "uid", "{method} {what}");
    }
    err(
        &call(
            &server,
            "PUT",
            "/api/v1/rooms/nope/slow-mode",
            Some(&alice),
            Some(&json!({"seconds": 5})),
        ),
        404,
        40401,
    );
}

#[test]
fn history_pages_newest_first() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "auth.dev_login=true",
        "--set",
        "danmaku.rate_per_sec=100",
        "--set",
        "danmaku.rate_burst=100",
    ]);
    let alice = dev_login(&server, "alice");
    let id = create_room(&server, &alice, "talky")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = Client::connect(server.http, &format!("room={id}&token={alice}")).unwrap();
    c.expect("history", T);
    let mut acked = Vec::new();
    for n in 0..5 {
        acked.push(send_and_ack(&mut c, &format!("line {n}")).unwrap());
    }
    let path = format!("/api/v1/rooms/{id}/danmaku");
    let first = ok(&server.get(&format!("{path}?limit=2")));
    let ids = |v: &Value| -> Vec<u64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&first), vec![acked[4], acked[3]]);
    assert_eq!(first["items"][0]["text"], "line 4");
    assert_eq!(first["items"][0]["uid"], "alice");
    let before = first["next_before"].as_u64().unwrap();
    let second = ok(&server.get(&format!("{path}?limit=2&before={before}")));
    assert_eq!(ids(&second), vec![acked[2], acked[1]]);
    let rest = ok(&server.get(&format!("{path}?limit=100&before={}", acked[1])));
    assert_eq!(ids(&rest), vec![acked[0]]);
    assert!(rest["next_before"].is_null());
    assert_eq!(
        ids(&ok(&server.get(&path))).len(),
        5,
        "default limit covers them"
    );
    for bad in ["limit=0", "limit=101", "limit=x", "before=x", "before=0"] {
        err(&server.get(&format!("{path}?{bad}")), 422, 42201);
    }
    err(&server.get("/api/v1/rooms/nope/danmaku"), 404, 40401);
}

#[test]
fn covers_are_sniffed_stored_and_served_back_byte_for_byte() {
    let server = server();
    let alice = dev_login(&server, "alice");
    let auth = format!("Bearer {alice}");
    let image = png(16, 9);

    // Raw body.
    err(
        &server.request(
            "POST",
            "/api/v1/uploads/cover",
            &[("Content-Type", "image/png")],
            &image,
        ),
        401,
        40101,
    );
    let r = server.request(
        "POST",
        "/api/v1/uploads/cover",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        &image,
    );
    let up = ok(&r);
    assert_eq!(up["content_type"], "image/png");
    assert_eq!(up["size"], image.len());
    let name = up["name"].as_str().unwrap().to_string();
    assert!(name.ends_with(".png") && name.len() == 36, "{name}");
    let got = server.get(&path_of(up["url"].as_str().unwrap()));
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.body, image, "served back byte for byte");
    assert!(server.data_dir.join("covers").join(&name).is_file());

    // Multipart, with a hostile file name: the name is ignored.
    let (ct, body) = multipart("file", "../../x.png", "image/png", &image);
    let up = ok(&server.request(
        "POST",
        "/api/v1/uploads/cover",
        &[("Authorization", &auth), ("Content-Type", &ct)],
        &body,
    ));
    let name2 = up["name"].as_str().unwrap();
    assert_ne!(name2, name);
    assert!(!name2.contains(".."), "{name2}");
    assert_eq!(
        server.get(&path_of(up["url"].as_str().unwrap())).body,
        image
    );
    assert!(!server.data_dir.join("x.png").exists());
    assert!(!server.data_dir.parent().unwrap().join("x.png").exists());

    // A text file renamed to .png is refused, however it is sent.
    let text = b"just some text, renamed to cover.png\n".to_vec();
    let (ct, body) = multipart("file", "cover.png", "image/png", &text);
    err(
        &server.request(
            "POST",
            "/api/v1/uploads/cover",
            &[("Authorization", &auth), ("Content-Type", &ct)],
            &body,
        ),
        415,
        41501,
    );
    err(
        &server.request(
            "POST",
            "/api/v1/uploads/cover",
            &[("Authorization", &auth), ("Content-Type", "image/png")],
            &text,
        ),
        415,
        41501,
    );
    err(
        &server.request(
            "POST",
            "/api/v1/uploads/cover",
            &[("Authorization", &auth)],
            b"",
        ),
        422,
        42201,
    );
    err(
        &server.request(
            "POST",
            "/api/v1/uploads/cover",
            &[
                ("Authorization", &auth),
                ("Content-Type", "multipart/form-data"),
            ],
            b"--x\r\n",
        ),
        422,
        42201,
    );

    // Over the limit: the body (413 from the HTTP layer before it is read), or the image
    // inside a multipart body that is itself within the route's limit.
    let mut big = png(4, 4);
    big.resize(2 * 1024 * 1024 + 64 * 1024, 0);
    let r = server.request(
        "POST",
        "/api/v1/uploads/cover",
        &[("Authorization", &auth), ("Content-Type", "image/png")],
        &big,
    );
    err(&r, 413, 41300);
    big.truncate(2 * 1024 * 1024 + 100);
    let (ct, body) = multipart("file", "big.png", "image/png", &big);
    err(
        &server.request(
            "POST",
            "/api/v1/uploads/cover",
            &[("Authorization", &auth), ("Content-Type", &ct)],
            &body,
        ),
        413,
        41301,
    );

    // Names that are not generated ones never reach the file system.
    for bad in [
        "/covers/..%2F..%2Fliveshard.redb",
        "/covers/..%2Fpush.key",
        "/covers/00000000000000000000000000000000.png",
        "/covers/x.png",
        "/covers/%2Fetc%2Fpasswd",
    ] {
        err(&server.get(bad), 404, 40402);
    }
    err(&server.get("/covers/../push.key"), 404, 40400);
}

#[test]
fn cors_allow_list_and_preflight() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "cors.allow_origins=https://app.example.com",
    ]);
    let preflight = |origin: &str| {
        server.request(
            "OPTIONS",
            "/api/v1/rooms",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            b"",
        )
    };
    let r = preflight("https://app.example.com");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let methods = r.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    err(&preflight("https://evil.example.com"), 403, 40303);

    let get = |origin: &str| server.request("GET", "/api/v1/rooms", &[("Origin", origin)], b"");
    let r = get("https://app.example.com");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(get("https://evil.example.com")
        .header("access-control-allow-origin")
        .is_none());
    // Errors carry the header too, so a browser can read them.
    let r = server.request(
        "GET",
        "/api/v1/rooms/nope",
        &[("Origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(r.status, 404);
    assert!(r.header("access-control-allow-origin").is_some());
    // So do the answers the HTTP layer gives before any handler runs.
    let app = [("Origin", "https://app.example.com")];
    let r = server.request("GET", "/api/v1/no-such-route", &app, b"");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = server.request("PUT", "/api/v1/rooms", &app, b"");
    assert_eq!(r.status, 405);
    assert!(r.header("access-control-allow-origin").is_some());
    // A body over the route's limit is refused from its Content-Length, before it is sent.
    let mut s = server.connect();
    s.write_all(
        b"POST /api/v1/rooms HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example.com\r\n\
          Content-Length: 2097152\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s)).expect("a response");
    assert_eq!(r.status, 413);
    assert!(r.header("access-control-allow-origin").is_some());
    let r = server.request(
        "GET",
        "/api/v1/no-such-route",
        &[("Origin", "https://evil.example.com")],
        b"",
    );
    assert_eq!(r.status, 404);
    assert!(r.header("access-control-allow-origin").is_none());

    let plain = Server::start(&["--shards", "1"]);
    let r = plain.request(
        "GET",
        "/api/v1/rooms",
        &[("Origin", "https://app.example.com")],
        b"",
    );
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "CORS is off by default"
    );
}

#[test]
fn event_stream_sees_online_changes_and_ends_on_shutdown() {
    let server = server();
    let alice = dev_login(&server, "alice");
    let id = create_room(&server, &alice, "watched")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/rooms/{id}/events");
    match Sse::open(&server, "/api/v1/rooms/nope/events") {
        Err(r) => err(&r, 404, 40401),
        Ok(_) => panic!("events of an unknown room"),
    };
    let mut sse = Sse::open(&server, &path).unwrap();
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let live = sse.expect("live", T, |_| true);
    assert_eq!(live.data, json!({"room": id, "live": false}));
    sse.expect("online", T, |d| d["online"] == 0);

    let mut viewer = Client::connect(server.http, &format!("room={id}")).unwrap();
    viewer.expect("history", T);
    let e = sse.expect("online", T, |d| d["online"] == 1);
    assert_eq!(e.data["room"], id.as_str());
    let mut second = Client::connect(server.http, &format!("room={id}")).unwrap();
    second.expect("history", T);
    sse.expect("online", T, |d| d["online"] == 2);
    viewer.close();
    second.close();
    sse.expect("online", T, |d| d["online"] == 0);

    // Shutdown ends the stream and is not held up by it.
    let mut other = Sse::open(&server, &path).unwrap();
    other.expect("online", T, |_| true);
    server.stop();
    assert!(sse.ends_within(T), "the stream ends on shutdown");
    assert!(other.ends_within(T));
}

#[test]
fn rooms_moderation_and_history_survive_kill_9() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "auth.dev_login=true",
        "--set",
        "danmaku.rate_per_sec=100",
        "--set",
        "danmaku.rate_burst=100",
    ]);
    let alice = dev_login(&server, "alice");
    let kept = create_room(&server, &alice, "kept");
    let id = kept["id"].as_str().unwrap().to_string();
    let gone = create_room(&server, &alice, "gone")["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&call(
        &server,
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(&alice),
        Some(&json!({"category": "jazz"})),
    ));
    ok(&call(
        &server,
        "POST",
        &format!("/api/v1/rooms/{id}/admins/bob"),
        Some(&alice),
        None,
    ));
    ok(&call(
        &server,
        "POST",
        &format!("/api/v1/rooms/{id}/mutes/quiet"),
        Some(&alice),
        Some(&json!({"seconds": 0})),
    ));
    ok(&call(
        &server,
        "DELETE",
        &format!("/api/v1/rooms/{gone}"),
        Some(&alice),
        None,
    ));
    let mut c = Client::connect(server.http, &format!("room={id}&token={alice}")).unwrap();
    c.expect("history", T);
    let mut acked = Vec::new();
    for n in 0..10 {
        acked.push(send_and_ack(&mut c, &format!("durable {n}")).unwrap());
    }
    let push_key = std::fs::read_to_string(server.data_dir.join("push.key")).unwrap();

    let dir = server.crash();
    let server = Server::start_in(dir, &["--shards", "3", "--set", "auth.dev_login=true"]);
    let room = ok(&server.get(&format!("/api/v1/rooms/{id}")));
    assert_eq!(room["title"], "kept");
    assert_eq!(room["category"], "jazz");
    assert_eq!(room["owner"], "alice");
    assert_eq!(room["admins"], json!(["bob"]));
    assert_eq!(
        ok(&server.get(&format!("/api/v1/rooms/{gone}")))["status"],
        "closed"
    );
    let list = ok(&server.get("/api/v1/rooms"));
    assert_eq!(
        list["total"], 1,
        "the closed room stays out of lists: {list}"
    );
    let history = ok(&server.get(&format!("/api/v1/rooms/{id}/danmaku?limit=100")));
    let stored: Vec<u64> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acked item {id} kept: {stored:?}");
    }
    // The token and the push key from before the crash still work.
    let fresh = ok(&call(
        &server,
        "POST",
        &format!("/api/v1/rooms/{id}/push-url"),
        Some(&alice),
        None,
    ));
    let (_, query) = fresh["push"]["stream_key"]
        .as_str()
        .unwrap()
        .split_once('?')
        .unwrap();
    liveshard::media::sign::verify(&push_key, &id, query, liveshard::auth::now_unix())
        .expect("same push key after restart");
    // The mute set through the API is still in force.
    let quiet = support::token(&server, "quiet", &[]);
    let mut q = Client::connect(server.http, &format!("room={id}&token={quiet}")).unwrap();
    q.expect("history", T);
    assert_eq!(
        send_and_ack(&mut q, "still muted?").unwrap_err()["code"],
        4031
    );
}
