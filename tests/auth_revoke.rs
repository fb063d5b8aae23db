//! Logout and token revocation, black-box against the real server: a logged-out token is
//! refused on REST (401 40105), on the WebSocket upgrade (query and subprotocol) and in the
//! `auth` message, and the connections that used it are closed with 4011 at once on every
//! shard; an admin's revoke stops every older token of a user but not a newer one; and both
//! survive `kill -9`.

mod support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::api::{call, dev_login, err, ok};
use support::ws::{Client, Event};
use support::{eventually, token, Server};

const T: Duration = Duration::from_secs(10);
/// How soon a connection that used a revoked token must be closed.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
const TOKEN_REVOKED: u64 = 40105;
const CLOSE_TOKEN_REVOKED: u16 = 4011;

fn start(shards: usize) -> Server {
    let n = shards.to_string();
    Server::start(&["--shards", &n, "--set", "auth.dev_login=true"])
}

/// A TCP connection accepted by shard `shard` (asking `/healthz` until the kernel's
/// SO_REUSEPORT hash lands there).
fn tcp_on_shard(server: &Server, shard: usize) -> TcpStream {
    for _ in 0..300 {
        let stream = TcpStream::connect(server.http).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        (&stream)
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = support::read_response(&mut BufReader::new(&stream)).expect("healthz answer");
        if resp.json()["data"]["shard"].as_u64() == Some(shard as u64) {
            return stream;
        }
    }
    panic!("no connection landed on shard {shard} in 300 tries");
}

/// A joined viewer on shard `shard`; `auth` goes in the query, a subprotocol, or nowhere.
fn viewer(server: &Server, shard: usize, query: &str, headers: &[(&str, &str)]) -> Client {
    let mut c = Client::upgrade(tcp_on_shard(server, shard), server.http, query, headers)
        .expect("upgrade accepted");
    c.expect("history", T);
    c
}

fn logout(server: &Server, token: &str) -> support::HttpResponse {
    call(server, "POST", "/api/v1/auth/logout", Some(token), None)
}

/// The connection is closed with 4011 within [`CLOSE_WITHIN`] of `since`.
fn assert_closed_as_revoked(c: &mut Client, since: Instant, what: &str) {
    let code = c.expect_close(T);
    assert_eq!(code, Some(CLOSE_TOKEN_REVOKED), "{what}");
    assert!(
        since.elapsed() < CLOSE_WITHIN,
        "{what}: closed after {:?}",
        since.elapsed()
    );
}

fn assert_still_open(c: &mut Client, what: &str) {
    c.send(json!({"type": "ping", "ts": 1}));
    loop {
        match c.next(T) {
            Event::Json(v) if v["type"] == "pong" => return,
            Event::Json(_) => continue,
            other => panic!("{what}: expected a pong, got {other:?}"),
        }
    }
}

/// Every REST answer for `token` (several connections, so several shards) is 401 40105.
fn assert_refused_on_rest(server: &Server, token: &str) {
    for _ in 0..6 {
        let r = call(
            server,
            "POST",
            "/api/v1/rooms",
            Some(token),
            Some(&json!({"title": "t"})),
        );
        err(&r, 401, TOKEN_REVOKED);
    }
}

#[test]
fn a_logged_out_token_is_refused_everywhere_and_its_connections_close_on_every_shard() {
    let server = start(3);
    let tok = dev_login(&server, "alice");
    let other_device = dev_login(&server, "alice");
    let q = format!("room=r1&token={tok}");
    // The same token on three shards, each way a token is accepted.
    let mut by_query = viewer(&server, 0, &q, &[]);
    let mut by_protocol = viewer(&server, 1, "room=r1", &[("Sec-WebSocket-Protocol", &tok)]);
    let mut by_auth = viewer(&server, 2, "room=r1", &[]);
    by_auth.send(json!({"type": "auth", "token": tok}));
    by_auth.expect("authed", T);
    let mut other = viewer(&server, 1, &format!("room=r1&token={other_device}"), &[]);
    let mut anonymous = viewer(&server, 2, "room=r1", &[]);

    let at = Instant::now();
    let data = ok(&logout(&server, &tok));
    assert_eq!(data["revoked"], "token", "{data}");
    assert!(data["until"].as_u64().is_some(), "{data}");
    assert_closed_as_revoked(&mut by_query, at, "token in the query, shard 0");
    assert_closed_as_revoked(&mut by_protocol, at, "token as subprotocol, shard 1");
    assert_closed_as_revoked(&mut by_auth, at, "token in `auth`, shard 2");
    assert_still_open(&mut other, "the user's other token");
    assert_still_open(&mut anonymous, "an anonymous viewer");

    assert_refused_on_rest(&server, &tok);
    err(&logout(&server, &tok), 401, TOKEN_REVOKED);
    for shard in 0..3 {
        let up = Client::upgrade(tcp_on_shard(&server, shard), server.http, &q, &[]);
        assert_eq!(up.err(), Some(401), "query token, shard {shard}");
        let up = Client::upgrade(
            tcp_on_shard(&server, shard),
            server.http,
            "room=r1",
            &[("Sec-WebSocket-Protocol", &tok)],
        );
        assert_eq!(up.err(), Some(401), "subprotocol token, shard {shard}");
        let mut c = viewer(&server, shard, "room=r1", &[]);
        c.send(json!({"type": "auth", "token": tok}));
        let e = c.expect("error", T);
        assert_eq!(e["code"], 4011, "{e}");
        assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    }
    // The other device's token still works on REST.
    ok(&call(
        &server,
        "POST",
        "/api/v1/rooms",
        Some(&other_device),
        Some(&json!({"title": "still in"})),
    ));
}

#[test]
fn an_admin_revoke_stops_every_older_token_of_the_user_and_not_a_newer_one() {
    let server = start(3);
    let carol = [token(&server, "carol", &[]), dev_login(&server, "carol")];
    let dave = token(&server, "dave", &[]);
    let admin = token(&server, "boss", &["--role", "admin"]);
    let mut conns: Vec<Client> = (0..3)
        .map(|shard| {
            let t = &carol[shard % 2];
            viewer(&server, shard, &format!("room=r2&token={t}"), &[])
        })
        .collect();
    let mut bystander = viewer(&server, 0, &format!("room=r2&token={dave}"), &[]);

    // Only a global admin may, and the uid is checked.
    let r = call(
        &server,
        "POST",
        "/api/v1/admin/users/carol/revoke",
        Some(&dave),
        None,
    );
    err(&r, 403, 40307);
    let r = call(
        &server,
        "POST",
        "/api/v1/admin/users/carol/revoke",
        None,
        None,
    );
    err(&r, 401, 40101);

    let at = Instant::now();
    let data = ok(&call(
        &server,
        "POST",
        "/api/v1/admin/users/carol/revoke",
        Some(&admin),
        None,
    ));
    assert_eq!(
        (data["revoked"].as_str(), data["uid"].as_str()),
        (Some("user"), Some("carol"))
    );
    for (i, c) in conns.iter_mut().enumerate() {
        assert_closed_as_revoked(c, at, &format!("carol's connection on shard {i}"));
    }
    assert_still_open(&mut bystander, "another user's connection");
    for t in &carol {
        assert_refused_on_rest(&server, t);
        let up = Client::connect(server.http, &format!("room=r2&token={t}"));
        assert_eq!(up.err(), Some(401));
    }
    // A token issued from the mark on works (iat is in seconds: the mark is the next one).
    let not_before = data["not_before"].as_u64().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    eventually(Duration::from_secs(3), || {
        (now() >= not_before).then_some(())
    })
    .expect("the clock reaches the mark");
    let fresh = dev_login(&server, "carol");
    ok(&call(
        &server,
        "POST",
        "/api/v1/rooms",
        Some(&fresh),
        Some(&json!({"title": "back"})),
    ));
    for shard in 0..3 {
        viewer(&server, shard, &format!("room=r2&token={fresh}"), &[]);
    }
}

#[test]
fn revocations_survive_kill_9() {
    let server = start(2);
    let gone = dev_login(&server, "erin");
    let frank = token(&server, "frank", &[]);
    let admin = token(&server, "boss", &["--role", "admin"]);
    ok(&logout(&server, &gone));
    ok(&call(
        &server,
        "POST",
        "/api/v1/admin/users/frank/revoke",
        Some(&admin),
        None,
    ));
    // Acknowledged means committed: no clean shutdown needed.
    let dir = server.crash();
    let server = Server::start_in(dir, &["--shards", "2", "--set", "auth.dev_login=true"]);
    for t in [&gone, &frank] {
        assert_refused_on_rest(&server, t);
        for shard in 0..2 {
            let up = Client::upgrade(
                tcp_on_shard(&server, shard),
                server.http,
                &format!("room=r3&token={t}"),
                &[],
            );
            assert_eq!(up.err(), Some(401), "shard {shard}");
        }
    }
    // Only what was revoked: a new token of the logged-out user works.
    let again = dev_login(&server, "erin");
    let mut c = viewer(&server, 1, &format!("room=r3&token={again}"), &[]);
    assert_still_open(&mut c, "a new token after restart");
}

/// Each logout needs a token from a login, but one account may log in and out at will: past
/// 32 revoked tokens its logouts become one mark, so the account holds at most 33 entries.
#[test]
fn one_users_logouts_past_the_bound_become_a_single_mark() {
    let server = start(1);
    let older = token(&server, "gina", &[]);
    let mut last = None;
    for i in 0..33 {
        let t = dev_login(&server, "gina");
        last = Some(ok(&logout(&server, &t)));
        if i < 32 {
            assert_eq!(last.as_ref().unwrap()["revoked"], "token", "logout {i}");
        }
    }
    let last = last.unwrap();
    assert_eq!(
        (last["revoked"].as_str(), last["uid"].as_str()),
        (Some("user"), Some("gina")),
        "the 33rd: {last}"
    );
    // The mark is a revocation like the others: an older token of the user is refused.
    err(&logout(&server, &older), 401, TOKEN_REVOKED);
}
