//! WeChat login against a local server that speaks WeChat's documented JSON contract
//! (`/sns/jscode2session`, `/cgi-bin/token`): users found or created by openid, every
//! WeChat error mapped to its API code, timeouts, and the access token kept fresh — one
//! refresh at a time, before it expires.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::api::{call, err, ok};
use support::Server;

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = "s3cret&=+";

#[derive(Default)]
struct Log {
    token_fetches: Vec<Instant>,
    in_flight: usize,
    max_in_flight: usize,
    bad_credentials: usize,
    /// How many of the next token fetches answer `{"errcode":-1}` (WeChat busy).
    token_failures: usize,
}

/// The stand-in for api.weixin.qq.com.
struct WeChat {
    base: String,
    log: Arc<Mutex<Log>>,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl WeChat {
    fn start(token_delay: Duration) -> WeChat {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let log = shared.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    let q: HashMap<String, String> = query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), decode(v)))
                        .collect();
                    let creds_ok = q.get("appid").map(String::as_str) == Some(APPID)
                        && q.get("secret").map(String::as_str) == Some(SECRET);
                    let (status, body) = if !creds_ok {
                        log.lock().unwrap().bad_credentials += 1;
                        (
                            200,
                            json!({"errcode": 40013, "errmsg": "invalid appid"}).to_string(),
                        )
                    } else {
                        match path {
                            "/sns/jscode2session" => session(&q),
                            "/cgi-bin/token" => {
                                assert_eq!(q["grant_type"], "client_credential");
                                let n = {
                                    let mut l = log.lock().unwrap();
                                    l.token_fetches.push(Instant::now());
                                    l.in_flight += 1;
                                    l.max_in_flight = l.max_in_flight.max(l.in_flight);
                                    l.token_fetches.len()
                                };
                                std::thread::sleep(token_delay);
                                let mut l = log.lock().unwrap();
                                l.in_flight -= 1;
                                if l.token_failures > 0 {
                                    l.token_failures -= 1;
                                    (
                                        200,
                                        json!({"errcode": -1, "errmsg": "system error"})
                                            .to_string(),
                                    )
                                } else {
                                    (
                                        200,
                                        json!({"access_token": format!("tok-{n}"), "expires_in": 7200})
                                            .to_string(),
                                    )
                                }
                            }
                            _ => (404, "not found".to_string()),
                        }
                    };
                    let mut w = conn;
                    let _ = write!(
                        w,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        WeChat { base, log }
    }

    fn fetches(&self) -> Vec<Instant> {
        self.log.lock().unwrap().token_fetches.clone()
    }
}

/// `jscode2session` by the code: `ok-NAME` is openid `o-NAME`; the rest are the errors.
fn session(q: &HashMap<String, String>) -> (u16, String) {
    assert_eq!(q["grant_type"], "authorization_code");
    let code = q["js_code"].as_str();
    let error = |errcode: i64, errmsg: &str| {
        (
            200,
            json!({"errcode": errcode, "errmsg": errmsg}).to_string(),
        )
    };
    match code {
        "bad" => error(40029, "invalid code"),
        "used" => error(40163, "code been used"),
        "limit" => error(45011, "api minute-quota reach limit"),
        "busy" => error(-1, "system error"),
        "risky" => error(40226, "high risk user"),
        "html" => (502, "<html>bad gateway</html>".into()),
        "slow" => {
            std::thread::sleep(Duration::from_secs(3));
            (
                200,
                json!({"openid": "o-slow", "session_key": "k"}).to_string(),
            )
        }
        c => match c.strip_prefix("ok-") {
            Some(name) if name.starts_with("union") => (
                200,
                json!({"openid": format!("o-{name}"), "session_key": "k", "unionid": "un-1"})
                    .to_string(),
            ),
            Some(name) => (
                200,
                json!({"openid": format!("o-{name}"), "session_key": "k"}).to_string(),
            ),
            None => error(40029, "invalid code"),
        },
    }
}

fn server_for(wx: &WeChat, extra: &[&str]) -> Server {
    let base = format!("wechat.api_base={}", wx.base);
    let appid = format!("wechat.appid={APPID}");
    let secret = format!("wechat.secret={SECRET}");
    let mut args = vec![
        "--shards",
        "2",
        "--set",
        &appid,
        "--set",
        &secret,
        "--set",
        &base,
        "--set",
        "wechat.timeout_ms=1000",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn login(server: &Server, code: &str) -> support::HttpResponse {
    call(
        server,
        "POST",
        "/api/v1/auth/wechat",
        None,
        Some(&json!({"code": code, "nick": "小明"})),
    )
}

#[test]
fn wechat_login_finds_or_creates_the_user_by_openid() {
    let wx = WeChat::start(Duration::ZERO);
    let server = server_for(&wx, &[]);
    let first = ok(&login(&server, "ok-alice"));
    let uid = first["user"]["uid"].as_str().unwrap().to_string();
    assert_eq!(first["user"]["nick"], "小明");
    assert!(first.get("session_key").is_none() && !first.to_string().contains("\"k\""));
    let again = ok(&login(&server, "ok-alice"));
    assert_eq!(again["user"]["uid"], uid.as_str(), "same openid, same user");
    let other = ok(&login(&server, "ok-union-bob"));
    assert_ne!(other["user"]["uid"], uid.as_str());

    // The token works for the rest of the API and the WebSocket.
    let token = first["token"].as_str().unwrap();
    let room = ok(&call(
        &server,
        "POST",
        "/api/v1/rooms",
        Some(token),
        Some(&json!({"title": "from WeChat"})),
    ));
    assert_eq!(room["owner"], uid.as_str());
    let mut ws = support::ws::Client::connect(
        server.http,
        &format!("room={}&token={token}", room["id"].as_str().unwrap()),
    )
    .unwrap();
    ws.expect("history", Duration::from_secs(10));
    assert_eq!(
        wx.log.lock().unwrap().bad_credentials,
        0,
        "appid and secret sent right"
    );

    // The user survives a restart.
    let dir = server.crash();
    let server = Server::start_in(
        dir,
        &[
            "--set",
            &format!("wechat.appid={APPID}"),
            "--set",
            &format!("wechat.secret={SECRET}"),
            "--set",
            &format!("wechat.api_base={}", wx.base),
        ],
    );
    assert_eq!(ok(&login(&server, "ok-alice"))["user"]["uid"], uid.as_str());
}

#[test]
fn wechat_errors_map_to_stable_codes() {
    let wx = WeChat::start(Duration::ZERO);
    let server = server_for(&wx, &[]);
    err(&login(&server, "bad"), 401, 40104);
    err(&login(&server, "used"), 401, 40104);
    err(&login(&server, "limit"), 429, 42901);
    err(&login(&server, "busy"), 503, 50302);
    let e = err(&login(&server, "risky"), 502, 50201);
    assert!(e["message"].as_str().unwrap().contains("40226"), "{e}");
    err(&login(&server, "html"), 502, 50202);
    err(&login(&server, "slow"), 504, 50401);
    let e = err(
        &call(
            &server,
            "POST",
            "/api/v1/auth/wechat",
            None,
            Some(&json!({})),
        ),
        422,
        42201,
    );
    assert_eq!(e["data"]["field"], "code");
    err(
        &call(
            &server,
            "POST",
            "/api/v1/auth/wechat",
            None,
            Some(&json!({"code": "x".repeat(129)})),
        ),
        422,
        42201,
    );
    err(
        &server.request("POST", "/api/v1/auth/wechat", &[], b"code=abc"),
        400,
        40001,
    );

    // Not configured, and unreachable.
    let plain = Server::start(&["--shards", "1"]);
    err(&login(&plain, "ok-alice"), 503, 50303);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("wechat.api_base=http://{}", closed.local_addr().unwrap());
    drop(closed);
    let appid = format!("wechat.appid={APPID}");
    let secret = format!("wechat.secret={SECRET}");
    let unreachable = Server::start(&[
        "--shards", "1", "--set", &appid, "--set", &secret, "--set", &dead,
    ]);
    err(&login(&unreachable, "ok-alice"), 502, 50202);
}

#[test]
fn access_token_is_refreshed_before_it_expires_one_refresh_at_a_time() {
    // expires_in is 7200 s; a margin of 7198 s makes the server refresh every 2 s.
    let wx = WeChat::start(Duration::from_millis(300));
    let server = server_for(&wx, &["--set", "wechat.token_refresh_margin_secs=7198"]);
    std::thread::sleep(Duration::from_millis(7500));
    let fetches = wx.fetches();
    assert!(
        (3..=5).contains(&fetches.len()),
        "a refresh about every 2 s, got {}",
        fetches.len()
    );
    for pair in fetches.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1500) && gap < Duration::from_secs(7200),
            "refreshed {gap:?} after the previous one"
        );
    }
    assert_eq!(
        wx.log.lock().unwrap().max_in_flight,
        1,
        "one refresh at a time"
    );
    // Logins are unaffected by refreshes going on.
    ok(&login(&server, "ok-carol"));
    drop(server);

    // With the default margin (300 s) the first token is fetched once and kept.
    let wx = WeChat::start(Duration::ZERO);
    let _server = server_for(&wx, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wx.fetches().len(), 1, "fetched once at start, then cached");

    // And nothing is fetched when the refresher is off.
    let wx = WeChat::start(Duration::ZERO);
    let _server = server_for(&wx, &["--set", "wechat.token_refresh=false"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(wx.fetches().len(), 0);
}

#[test]
fn a_failed_token_fetch_is_retried_with_backoff_until_it_succeeds() {
    let wx = WeChat::start(Duration::ZERO);
    wx.log.lock().unwrap().token_failures = 2;
    let server = server_for(&wx, &[]);
    // Busy, busy, then a token: retried after about 1 s, then after about 2 s.
    let fetched = support::eventually(Duration::from_secs(10), || {
        (wx.fetches().len() >= 3).then_some(())
    });
    assert!(fetched.is_some(), "fetches: {}", wx.fetches().len());
    let f = wx.fetches();
    let (first, second) = (f[1] - f[0], f[2] - f[1]);
    assert!(
        first >= Duration::from_millis(800) && second >= first + Duration::from_millis(500),
        "retries after {first:?} then {second:?}: not backing off"
    );
    // Logins never depended on it.
    ok(&login(&server, "ok-dave"));
    // Once it has a token it keeps it: no more fetches.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(wx.fetches().len(), 3);
}

/// The regression of "the WeChat AppSecret is logged": when WeChat cannot be reached, the
/// WARN lines (token refresh, login) name the failure but not the secret, nor the user's
/// login code, in text and in JSON logs.
#[test]
fn an_unreachable_wechat_is_logged_without_the_app_secret() {
    // A port nobody listens on: the HTTP client's error quotes the whole URL.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let wx = WeChat {
        base,
        log: Arc::default(),
    };
    for format in ["text", "json"] {
        let server = server_for(&wx, &["--set", &format!("log.format={format}")]);
        err(&login(&server, "ok-logincode123"), 502, 50202);
        let mut logs: Vec<String> = Vec::new();
        let warned = support::eventually(Duration::from_secs(10), || {
            logs.extend(server.logs());
            let token = logs
                .iter()
                .any(|l| l.contains("access token not refreshed"));
            let login = logs.iter().any(|l| l.contains("WeChat login failed"));
            (token && login).then_some(())
        });
        let all = logs.join("\n");
        assert!(
            warned.is_some(),
            "both failures are logged ({format}):\n{all}"
        );
        // The secret is `s3cret&=+`, URL-encoded as `s3cret%26%3D%2B`.
        assert!(
            !all.contains("s3cret"),
            "the AppSecret is in the {format} log:\n{all}"
        );
        assert!(
            !all.contains("logincode123"),
            "the login code is in the {format} log:\n{all}"
        );
        assert!(
            all.contains("secret=***"),
            "the URL is still named ({format}):\n{all}"
        );
    }
}
