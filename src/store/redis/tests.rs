//! The Redis backend against a real `redis-server` (installed by `scripts/test.sh`), one
//! per test.

use super::*;

struct TestRedis {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl TestRedis {
    fn start() -> TestRedis {
        let dir = std::env::temp_dir().join(format!(
            "liveshard-redis-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(child) = Self::spawn(port, &dir) {
                return TestRedis { child, port, dir };
            }
        }
        panic!("redis-server did not start");
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Option<std::process::Child> {
        let mut child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            let pong = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return Some(child);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = Self::spawn(self.port, &self.dir) {
                self.child = c;
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no restart");
        }
    }

    fn backend(&self, tail: u64) -> RedisBackend {
        RedisBackend::open(&self.url(), Duration::from_secs(2), tail).unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn item(i: u64) -> Bytes {
    Bytes::from(format!("{{\"id\":{i},\"text\":\"é \\\" 👍\"}}"))
}

#[test]
fn history_pages_newest_first_byte_for_byte() {
    let r = TestRedis::start();
    let mut s = r.backend(1000);
    let items: Vec<(String, u64, Bytes)> = (1..=8).map(|i| ("r".into(), i, item(i))).collect();
    s.append_danmaku(&items).unwrap();
    s.append_danmaku(&[("other".into(), 1, Bytes::from_static(b"{}"))])
        .unwrap();
    assert_eq!(
        s.danmaku_page("r", None, 3).unwrap(),
        [item(8), item(7), item(6)]
    );
    assert_eq!(
        s.danmaku_page("r", Some(3), 10).unwrap(),
        [item(2), item(1)]
    );
    assert_eq!(
        s.danmaku_page("r", Some(1), 10).unwrap(),
        Vec::<Bytes>::new()
    );
    let st = s.room_state("r", 2).unwrap();
    assert_eq!(st.last_id, 8);
    assert_eq!(st.tail, [item(7), item(8)]);
    assert_eq!(s.room_state("other", 10).unwrap().last_id, 1);
    assert_eq!(s.room_state("none", 10).unwrap().last_id, 0);

    // A retried append adds nothing twice; another item under a taken id is refused.
    s.append_danmaku(&items[6..]).unwrap();
    assert_eq!(s.danmaku_page("r", None, 100).unwrap().len(), 8);
    assert!(s
        .append_danmaku(&[("r".into(), 8, Bytes::from_static(b"{\"x\":1}"))])
        .is_err());
    // The counter never moves back.
    s.append_danmaku(&[("r".into(), 9, item(9))]).unwrap();
    assert_eq!(s.room_state("r", 0).unwrap().last_id, 9);
}

#[test]
fn history_is_trimmed_to_about_the_tail() {
    let r = TestRedis::start();
    let mut s = r.backend(100);
    let items: Vec<(String, u64, Bytes)> = (1..=1000).map(|i| ("r".into(), i, item(i))).collect();
    s.append_danmaku(&items).unwrap();
    let kept = s.danmaku_page("r", None, 10_000).unwrap().len();
    // `MAXLEN ~` trims whole stream nodes: at least the tail, never much more.
    assert!((100..400).contains(&kept), "{kept}");
}

fn room(id: &str, created_at: u64) -> Room {
    Room {
        id: id.into(),
        owner: "o".into(),
        title: id.into(),
        category: String::new(),
        cover_url: String::new(),
        created_at,
        updated_at: created_at,
        closed: false,
        admins: Vec::new(),
    }
}

#[test]
fn rooms_page_like_the_embedded_store() {
    let r = TestRedis::start();
    let mut s = r.backend(10);
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        assert!(s.create_room(&room(id, 10 + i as u64)).unwrap());
    }
    assert!(!s.create_room(&room("a", 99)).unwrap(), "ids are unique");
    assert!(s.create_room(&room("e", 13)).unwrap(), "same time as d");
    let ids = |p: &RoomPage| p.rooms.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let p = s.open_rooms_page(&[], 0, 10).unwrap();
    assert_eq!(ids(&p), ["d", "e", "c", "b", "a"]);
    assert_eq!(p.total, 5);
    let p = s.open_rooms_page(&["c".into(), "zz".into()], 2, 2).unwrap();
    assert_eq!(ids(&p), ["b", "a"]);
    assert_eq!(p.total, 4);
    let patch = RoomPatch {
        close: true,
        add_admin: Some("x".into()),
        title: Some("B".into()),
        updated_at: 50,
        ..RoomPatch::default()
    };
    let b = s.update_room("b", &patch).unwrap().unwrap();
    assert!(b.closed);
    assert_eq!(b.admins, ["x"]);
    assert_eq!(b.title, "B");
    assert_eq!(s.get_room("b").unwrap(), Some(b));
    assert_eq!(s.update_room("nope", &patch).unwrap(), None);
    let p = s.open_rooms_page(&[], 0, 10).unwrap();
    assert_eq!(ids(&p), ["d", "e", "c", "a"]);
    assert_eq!(p.total, 4);
    let got = s.get_rooms(&["a".into(), "zz".into()]).unwrap();
    assert_eq!(got[0].as_ref().map(|r| r.id.as_str()), Some("a"));
    assert_eq!(got[1], None);
    let all: Vec<String> = s.list_rooms().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(all, ["a", "b", "c", "d", "e"], "closed ones too, by id");
    s.append_danmaku(&[("d".into(), 1, item(1))]).unwrap();
    s.save_mods("d", &ModState::default()).unwrap();
    assert!(s.delete_room("d").unwrap());
    assert!(!s.delete_room("d").unwrap());
    assert_eq!(s.open_rooms_page(&[], 0, 10).unwrap().total, 3);
    let st = s.room_state("d", 10).unwrap();
    assert!(st.tail.is_empty(), "history goes with the room");
    assert_eq!(st.last_id, 1, "the last id stays");
    // put_room keeps the indexes in step.
    let mut c = s.get_room("c").unwrap().unwrap();
    c.closed = true;
    s.put_room(&c).unwrap();
    assert_eq!(ids(&s.open_rooms_page(&[], 0, 10).unwrap()), ["e", "a"]);
}

#[test]
fn users_and_mods_round_trip_and_users_are_created_once() {
    let r = TestRedis::start();
    let mut s = r.backend(10);
    let mk = |uid: &str, nick: &str| User {
        uid: uid.into(),
        openid: "oX".into(),
        nick: nick.into(),
        avatar_url: String::new(),
        created_at: 1,
    };
    let first = s.user_by_openid_or_create(&mk("u1", "first")).unwrap();
    let again = s.user_by_openid_or_create(&mk("u2", "second")).unwrap();
    assert_eq!(first, again, "the same openid finds the same user");
    assert_eq!(s.user_by_openid("oX").unwrap(), Some(first.clone()));
    assert_eq!(s.get_user("u2").unwrap(), None);
    let mut dev = mk("dev", "d");
    dev.openid.clear();
    assert_eq!(s.user_or_create(&dev).unwrap().nick, "d");
    dev.nick = "other".into();
    assert_eq!(s.user_or_create(&dev).unwrap().nick, "d");
    s.put_user(&dev).unwrap();
    assert_eq!(s.get_user("dev").unwrap(), Some(dev));
    let m = ModState {
        owner: Some("u1".into()),
        bans: vec!["x".into()],
        mutes: vec![("y".into(), u64::MAX)],
        ..Default::default()
    };
    s.save_mods("r1", &m).unwrap();
    assert_eq!(s.room_state("r1", 10).unwrap().mods, m);
}

#[test]
fn revocations_like_the_embedded_store() {
    let r = TestRedis::start();
    let mut s = r.backend(10);
    s.revoke_token("u1", "j1", 100).unwrap();
    s.revoke_token("u1", "j2", 300).unwrap();
    s.revoke_token("u1", "j2", 300).unwrap();
    s.revoke_token("u2", "j3", 300).unwrap();
    s.revoke_user("u3", 50, 200).unwrap();
    s.revoke_user("u3", 40, 150).unwrap();
    assert_eq!(
        s.revocation_counts("u1").unwrap(),
        RevocationCounts {
            user_tokens: 2,
            tokens: 3,
            marks: 1,
            has_mark: false
        }
    );
    assert!(s.revocation_counts("u3").unwrap().has_mark);
    assert_eq!(s.revocation_counts("u").unwrap().user_tokens, 0);
    let all = s.revocations(10).unwrap();
    assert_eq!(all.len(), 4);
    assert!(
        all.contains(&Revocation::User {
            uid: "u3".into(),
            not_before: 50,
            until: 200
        }),
        "a mark only moves forward: {all:?}"
    );
    assert!(all.contains(&Revocation::Token {
        jti: "j1".into(),
        exp: 100
    }));
    assert_eq!(s.revocations(100).unwrap().len(), 3);
    assert_eq!(s.revocation_counts("u1").unwrap().user_tokens, 1);
    assert_eq!(s.sweep_revocations(200).unwrap(), 1);
    let left = s.revocations(200).unwrap();
    assert_eq!(left.len(), 2);
    assert!(left
        .iter()
        .all(|r| matches!(r, Revocation::Token { exp: 300, .. })));
    assert_eq!(s.sweep_revocations(300).unwrap(), 2);
    assert_eq!(
        s.revocation_counts("u1").unwrap(),
        RevocationCounts::default()
    );
}

#[test]
fn a_down_redis_fails_fast_and_is_used_again_once_back() {
    let mut r = TestRedis::start();
    let mut s = r.backend(10);
    assert!(s.create_room(&room("a", 1)).unwrap());
    r.stop();
    let t = std::time::Instant::now();
    assert_eq!(s.get_room("a"), Err(StoreError::Unavailable));
    assert_eq!(s.create_room(&room("b", 1)), Err(StoreError::Unavailable));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    r.restart();
    // A call after the restart reconnects by itself (at most one attempt per
    // RETRY_AFTER while it was down).
    assert!(until_up(|| s.create_room(&room("b", 1))));
    assert_eq!(s.get_room("b").unwrap().map(|r| r.id), Some("b".into()));

    // Started while Redis is down: no error until a call, which connects.
    r.stop();
    let mut late = r.backend(10);
    assert_eq!(late.get_user("x"), Err(StoreError::Unavailable));
    r.restart();
    assert_eq!(until_up(|| late.get_user("x")), None);
    assert!(late.create_room(&room("c", 1)).unwrap());
}

#[test]
fn two_nodes_patching_one_room_at_once_lose_nothing() {
    let r = TestRedis::start();
    let mut s = r.backend(10);
    assert!(s.create_room(&room("a", 1)).unwrap());
    let nodes: Vec<_> = (0..2)
        .map(|n| {
            let mut b = r.backend(10);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let patch = RoomPatch {
                        add_admin: Some(format!("n{n}-{i}")),
                        updated_at: i,
                        ..RoomPatch::default()
                    };
                    b.update_room("a", &patch).unwrap().unwrap();
                }
            })
        })
        .collect();
    for t in nodes {
        t.join().unwrap();
    }
    let a = s.get_room("a").unwrap().unwrap();
    assert_eq!(a.admins.len(), 50, "{:?}", a.admins);
    // And two first logins with one openid on two nodes make one user.
    let mut other = r.backend(10);
    let mk = |uid: &str| User {
        uid: uid.into(),
        openid: "oY".into(),
        nick: uid.into(),
        avatar_url: String::new(),
        created_at: 1,
    };
    let first = s.user_by_openid_or_create(&mk("u1")).unwrap();
    assert_eq!(other.user_by_openid_or_create(&mk("u2")).unwrap(), first);
}

/// Calls `f` until it is not `Unavailable` (within 5 s); its value.
fn until_up<T: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, StoreError>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Err(StoreError::Unavailable) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn a_redis_that_does_not_answer_times_out_once_then_fails_at_once() {
    let r = TestRedis::start();
    let s = RedisBackend::open(&r.url(), Duration::from_millis(300), 10).unwrap();
    assert_eq!(s.get_user("x"), Ok(None));
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &r.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let t = std::time::Instant::now();
    assert_eq!(s.get_user("x"), Err(StoreError::Unavailable));
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(1500),
        "no retry after a timeout: {first:?}"
    );
    let t = std::time::Instant::now();
    assert_eq!(s.get_user("x"), Err(StoreError::Unavailable));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    signal("-CONT");
    assert_eq!(until_up(|| s.get_user("x")), None);
}

#[test]
fn errors_never_carry_the_url() {
    let e = RedisBackend::open("redis://user:secret@[::1", Duration::from_secs(1), 1)
        .err()
        .unwrap();
    assert!(!e.contains("secret"), "{e}");
}
