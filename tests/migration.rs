//! Moving from nginx-rtmp or SRS: a real nginx with the RTMP module (Debian's `nginx` and
//! `libnginx-mod-rtmp`; scripts/test.sh installs them) asks liveshard's hook receiver
//! whether to take a publisher (`on_publish`), and pushes what it takes to liveshard with
//! the relay key (`push rtmp://…/live?relay_key=…`). The publisher is the real ffmpeg; what
//! liveshard then serves is read back with ffprobe and the REST API. SRS's `http_hooks`
//! contract is checked by posting what SRS posts.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::api::{call, create_room, dev_login, err, ok};
use support::media::{probe, publish, rtmp_addr, signed_url, wait_live, Ffmpeg};
use support::{eventually, Server, TempDir};

const HOOK_KEY: &str = "hook-key-0123456789abcdef";
const RELAY_KEY: &str = "relay-key-0123456789abcdef";
const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
/// Where Debian puts it (not on every user's PATH).
const NGINX: &str = "/usr/sbin/nginx";
const T: Duration = Duration::from_secs(20);

fn liveshard() -> Server {
    Server::start(&[
        "--shards",
        "2",
        "--set",
        "auth.dev_login=true",
        "--set",
        &format!("media.hook_receiver_key={HOOK_KEY}"),
        "--set",
        &format!("media.relay_key={RELAY_KEY}"),
    ])
}

/// A real nginx running the RTMP module in the foreground, killed when dropped.
struct Nginx {
    child: Child,
    rtmp: String,
    dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with `applications` (the `application … { … }` blocks) on a free
    /// loopback port, and waits until it accepts connections.
    fn start(applications: &str) -> Nginx {
        for file in [NGINX, MODULE] {
            assert!(
                Path::new(file).exists(),
                "{file} is missing: run scripts/test.sh \
                 (it installs nginx and libnginx-mod-rtmp)"
            );
        }
        let dir = TempDir::new("nginx");
        let port = free_port();
        let p = dir.0.display();
        let conf = format!(
            "load_module {MODULE};\n\
             daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {p}/error.log info;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port};\n{applications}\n}} }}\n"
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir.0)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx {
            child,
            rtmp: format!("127.0.0.1:{port}"),
            dir,
        };
        let up = eventually(Duration::from_secs(10), || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.log());
            }
            TcpStream::connect(&nginx.rtmp).ok()
        });
        assert!(up.is_some(), "nginx did not listen: {}", nginx.log());
        nginx
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `url` (a push URL liveshard signed) pointed at `host` instead.
fn via(url: &str, host: &str) -> String {
    let path = url
        .strip_prefix("rtmp://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path)
        .expect("rtmp://host:port/app/stream?sig");
    format!("rtmp://{host}/{path}")
}

/// The `application live` block of an edge that asks liveshard and pushes to it.
fn edge_asking(server: &Server, push_query: &str) -> String {
    let hook = format!(
        "http://{}/api/v1/hooks/nginx-rtmp?key={HOOK_KEY}",
        server.http
    );
    format!(
        "application live {{ live on;\n on_publish {hook};\n on_play {hook};\n \
         push rtmp://{}/live{push_query}; }}",
        rtmp_addr(server)
    )
}

/// Waits for ffmpeg to give up, and returns what it printed.
fn refused(mut ffmpeg: Ffmpeg) -> String {
    let status = eventually(T, || ffmpeg.try_wait().ok().flatten()).expect("ffmpeg stops");
    let mut stderr = String::new();
    std::io::Read::read_to_string(ffmpeg.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "ffmpeg was refused: {stderr}");
    stderr
}

/// Everything the server has logged, kept across calls (reading consumes).
struct Log<'a> {
    server: &'a Server,
    lines: Vec<String>,
}

impl<'a> Log<'a> {
    fn new(server: &'a Server) -> Self {
        Log {
            server,
            lines: Vec::new(),
        }
    }

    /// Waits for a line that contains every one of `parts`.
    fn expect(&mut self, parts: &[&str]) -> String {
        let found = eventually(T, || {
            self.lines.extend(self.server.logs());
            self.lines
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
        });
        found.unwrap_or_else(|| panic!("no log line with {parts:?}:\n{}", self.lines.join("\n")))
    }
}

fn not_live(server: &Server, stream: &str) {
    assert_eq!(server.get(&format!("/live/{stream}.flv")).status, 404);
}

#[test]
fn nginx_rtmp_asks_liveshard_and_its_relay_push_goes_live() {
    let server = liveshard();
    let nginx = Nginx::start(&edge_asking(&server, &format!("?relay_key={RELAY_KEY}")));
    let alice = dev_login(&server, "alice");
    let room = create_room(&server, &alice, "moved from nginx");
    let id = room["id"].as_str().unwrap().to_string();
    let push = via(room["push"]["url"].as_str().unwrap(), &nginx.rtmp);

    // The publisher talks to nginx only; nginx asks liveshard, then pushes to it.
    let _ffmpeg = publish(&push, 60);
    wait_live(&server, &id);
    // The room's status follows from its home shard.
    let live = eventually(T, || {
        let room = ok(&server.get(&format!("/api/v1/rooms/{id}")));
        (room["live"] == true && room["status"] == "live").then_some(())
    });
    assert!(live.is_some(), "the room never showed live through the API");
    let streams = probe(&server.url(&format!("/live/{id}.flv")));
    assert!(
        streams.contains(&("video".into(), "h264".into(), 640, 360)),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{streams:?}"
    );
    // Players on nginx are asked about too (no play signature required here): allowed.
    let from_nginx = probe(&format!("rtmp://{}/live/{id}", nginx.rtmp));
    assert!(from_nginx.iter().any(|s| s.1 == "h264"), "{from_nginx:?}");

    let mut log = Log::new(&server);
    log.expect(&["publishing", &id]);
    assert!(
        log.lines
            .iter()
            .all(|l| !l.contains(RELAY_KEY) && !l.contains(HOOK_KEY)),
        "a key reached the log:\n{}",
        log.lines.join("\n")
    );
}

#[test]
fn nginx_rtmp_refuses_the_publishers_liveshard_refuses() {
    let server = liveshard();
    let nginx = Nginx::start(&edge_asking(&server, &format!("?relay_key={RELAY_KEY}")));
    let mut log = Log::new(&server);

    // A forged signature: nginx refuses the publisher, nothing reaches liveshard.
    let good = via(&signed_url(&server, "forged", &[]), &nginx.rtmp);
    let tx_time = good.split_once("txTime=").unwrap().1;
    let forged = format!(
        "{}?txSecret={}&txTime={tx_time}",
        good.split_once('?').unwrap().0,
        "0".repeat(32)
    );
    let stderr = refused(publish(&forged, 10));
    assert!(!stderr.is_empty());
    log.expect(&["hook call refused", "forged", "signature mismatch"]);
    not_live(&server, "forged");

    // No signature at all.
    refused(publish(&format!("rtmp://{}/live/unsigned", nginx.rtmp), 10));
    log.expect(&["hook call refused", "unsigned", "missing txSecret"]);
    not_live(&server, "unsigned");

    // A room its owner closed: its signed URL no longer publishes through nginx either.
    let alice = dev_login(&server, "alice");
    let room = create_room(&server, &alice, "closed");
    let id = room["id"].as_str().unwrap().to_string();
    ok(&call(
        &server,
        "DELETE",
        &format!("/api/v1/rooms/{id}"),
        Some(&alice),
        None,
    ));
    let push = via(room["push"]["url"].as_str().unwrap(), &nginx.rtmp);
    refused(publish(&push, 10));
    log.expect(&["hook call refused", &id, "the room is closed"]);
    not_live(&server, &id);
}

#[test]
fn a_relay_push_without_the_relay_key_or_with_a_wrong_one_is_refused() {
    let server = liveshard();
    // Edges that take any publisher (no hook) and push to liveshard with no key or a
    // wrong one; liveshard's app is `live` whatever the edge's is called.
    let to = rtmp_addr(&server);
    let nginx = Nginx::start(&format!(
        "application nokey {{ live on; push rtmp://{to}/live; }}\n\
         application wrongkey {{ live on; push rtmp://{to}/live?relay_key=not-the-key-0123456789; }}"
    ));
    let mut log = Log::new(&server);

    let _a = publish(&format!("rtmp://{}/nokey/edge1", nginx.rtmp), 60);
    log.expect(&["publish refused", "edge1", "missing txSecret"]);
    let _b = publish(&format!("rtmp://{}/wrongkey/edge2", nginx.rtmp), 60);
    log.expect(&["publish refused", "edge2", "wrong relay key"]);
    // nginx retries every 3 s; each retry is refused the same way.
    log.lines.clear();
    log.expect(&["publish refused", "edge2", "wrong relay key"]);
    not_live(&server, "edge1");
    not_live(&server, "edge2");
    assert!(
        log.lines.iter().all(|l| !l.contains("not-the-key")),
        "a relay key reached the log:\n{}",
        log.lines.join("\n")
    );
}

/// What SRS posts (`http_hooks`), and how its answers read: 200 with code 0 allows.
fn srs(server: &Server, key: &str, body: &Value) -> support::HttpResponse {
    server.request(
        "POST",
        &format!("/api/v1/hooks/srs?key={key}"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

#[test]
fn the_srs_hook_contract_allows_signed_publishers_and_refuses_the_rest() {
    let server = liveshard();
    let url = signed_url(&server, "srs1", &[]);
    let param = format!("?{}", url.split_once('?').unwrap().1);
    let event = |action: &str, stream: &str, param: &str| {
        json!({"server_id": "vid-x", "action": action, "client_id": "3x9", "ip": "192.0.2.9",
               "vhost": "__defaultVhost__", "app": "live", "tcUrl": "rtmp://srs/live",
               "stream": stream, "param": param, "stream_url": format!("/live/{stream}")})
    };
    let allowed = srs(&server, HOOK_KEY, &event("on_publish", "srs1", &param));
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json()["code"], 0, "SRS reads code 0 as allowed");

    // The signature is for srs1: another stream, or no signature, is refused.
    let other = err(
        &srs(&server, HOOK_KEY, &event("on_publish", "srs2", &param)),
        403,
        40309,
    );
    assert!(
        other["message"]
            .as_str()
            .unwrap()
            .contains("signature mismatch"),
        "{other}"
    );
    err(
        &srs(&server, HOOK_KEY, &event("on_publish", "srs1", "")),
        403,
        40309,
    );
    // A relay key authorizes a publish, as on RTMP.
    let relay = format!("?relay_key={RELAY_KEY}");
    ok(&srs(
        &server,
        HOOK_KEY,
        &event("on_publish", "srs3", &relay),
    ));
    // Plays need no signature unless media.play_sign is on; notifications are answered.
    ok(&srs(&server, HOOK_KEY, &event("on_play", "srs1", "")));
    ok(&srs(&server, HOOK_KEY, &event("on_unpublish", "srs1", "")));

    // The key: missing or wrong, refused before the body is looked at.
    let body = event("on_publish", "srs1", &param);
    err(&srs(&server, "", &body), 403, 40308);
    err(&srs(&server, "wrong-0123456789abcdef", &body), 403, 40308);
    let no_key = server.request("POST", "/api/v1/hooks/srs", &[], b"{}");
    err(&no_key, 403, 40308);
    // Bodies: not the contract, or too large.
    err(
        &server.request(
            "POST",
            &format!("/api/v1/hooks/srs?key={HOOK_KEY}"),
            &[],
            b"app=live&call=publish",
        ),
        400,
        40002,
    );
    err(
        &server.request(
            "POST",
            &format!("/api/v1/hooks/nginx-rtmp?key={HOOK_KEY}"),
            &[],
            b"app=live&call=publish",
        ),
        400,
        40002,
    );
    let big = vec![b'a'; 64 * 1024];
    let too_large = server.request(
        "POST",
        &format!("/api/v1/hooks/nginx-rtmp?key={HOOK_KEY}"),
        &[],
        &big,
    );
    assert_eq!(too_large.status, 413);
}

#[test]
fn without_a_hook_key_there_is_no_hook_receiver() {
    let server = Server::start(&["--shards", "1"]);
    let r = server.request(
        "POST",
        "/api/v1/hooks/nginx-rtmp?key=anything-at-all-0123",
        &[],
        b"app=live&call=publish&name=x",
    );
    assert_eq!(r.status, 404);
}
