//! HTTPS and WSS against the real server (`server.https`), with certificates made here:
//! curl and a rustls client trust the test's CA and get the API; danmaku flows over WSS
//! between clients on both listeners; a certificate for another name, an expired one, or
//! one from an untrusted CA is refused by the clients; SIGHUP swaps the certificate for new
//! connections while an open WSS connection goes on; a bad pair stops the start with a
//! clear error; a client that never finishes its handshake, or speaks plain HTTP to the TLS
//! port, is closed and counted. (Chromium over HTTPS and WSS: `clients/web/test/tls.test.mjs`.)

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use support::{eventually, token, Server, TempDir};

const T: Duration = Duration::from_secs(10);

// --- certificates ---------------------------------------------------------------------------

/// A certificate authority the test's clients may trust.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names`, valid from a day ago for a year unless `expired`.
    /// Returns (chain PEM, key PEM).
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 2);
        } else {
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes a pair where the server reads it (replacing the files by rename, as a
/// certificate tool does, so the server never reads half a file).
fn install(dir: &Path, (cert, key): &(String, String)) {
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn write_ca(dir: &Path, name: &str, ca: &Ca) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, ca.pem()).unwrap();
    p
}

fn start_tls(dir: &Path, extra: &[&str]) -> (Server, SocketAddr) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let mut args = vec![
        "--https".to_string(),
        "127.0.0.1:0".to_string(),
        "--set".to_string(),
        format!("server.tls_cert={}", cert.display()),
        "--set".to_string(),
        format!("server.tls_key={}", key.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let https = server
        .ready_field("https")
        .expect("the ready line names the HTTPS address")
        .parse()
        .unwrap();
    (server, https)
}

// --- clients --------------------------------------------------------------------------------

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` that trusts `ca` and expects the name `localhost`. Err
/// carries the client's reason for refusing the server.
fn tls_connect(addr: SocketAddr, ca: &Path) -> Result<TlsStream, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, sock);
    // Drive the handshake to its end, so a refusal shows here.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(stream)
}

/// `GET path` over HTTPS; (status, body).
fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> Result<(u16, String), String> {
    let mut s = tls_connect(addr, ca)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify still gave a whole response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

/// curl's exit code and stdout for `url` (with `--cacert ca`, when given), its name
/// `localhost` resolved to the server.
fn curl(addr: SocketAddr, ca: Option<&Path>, path: &str) -> (i32, String) {
    support::require("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", addr.port()));
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// A danmaku client over WSS.
struct Wss {
    ws: tungstenite::WebSocket<TlsStream>,
}

impl Wss {
    fn connect(addr: SocketAddr, ca: &Path, query: &str) -> Wss {
        let stream = tls_connect(addr, ca).expect("TLS handshake");
        let url = format!("wss://localhost:{}/ws?{query}", addr.port());
        let (ws, _) = tungstenite::client(url, stream).expect("WebSocket upgrade over TLS");
        let mut c = Wss { ws };
        c.expect("history");
        c
    }

    fn send(&mut self, v: Value) {
        self.ws
            .send(tungstenite::Message::text(v.to_string()))
            .unwrap();
    }

    /// The next message of type `kind` (others skipped), within [`T`].
    fn expect(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + T;
        loop {
            assert!(Instant::now() < deadline, "no {kind} within {T:?}");
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("waiting for {kind}: {e}"),
            }
        }
    }
}

/// `liveshard_tls_handshakes_total` for `result`, all shards together.
fn handshakes(server: &Server, result: &str) -> f64 {
    let text = server.get("/metrics").text();
    let label = format!("result=\"{result}\"}}");
    text.lines()
        .filter(|l| l.starts_with("liveshard_tls_handshakes_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn texts(batch: &Value) -> Vec<String> {
    batch["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

// --- tests ----------------------------------------------------------------------------------

#[test]
fn https_serves_the_api_and_danmaku_flows_between_wss_and_ws() {
    let dir = TempDir::new("tls-basic");
    let ca = Ca::new("test CA");
    let ca_file = write_ca(&dir.0, "ca.pem", &ca);
    install(&dir.0, &ca.leaf(&["localhost", "127.0.0.1"], false));
    let (server, https) = start_tls(&dir.0, &["--shards", "2", "--set", "auth.dev_login=true"]);

    // curl with our CA gets the API; without it, curl refuses the server (exit 60).
    let (code, body) = curl(https, Some(&ca_file), "/healthz");
    assert_eq!(code, 0, "curl --cacert: {body}");
    assert!(body.contains("\"ok\""), "{body}");
    let (code, _) = curl(https, None, "/healthz");
    assert_eq!(code, 60, "curl without the CA refuses the certificate");
    let (status, body) = https_get(https, &ca_file, "/api/v1/rooms?status=live").unwrap();
    assert_eq!(status, 200, "{body}");
    // A room asked for over HTTPS hands out https:// and wss:// URLs (over HTTP, http://).
    let owner = support::api::dev_login(&server, "owner");
    let id = support::api::create_room(&server, &owner, "tls")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = https_get(https, &ca_file, &format!("/api/v1/rooms/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");
    let room: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        room["data"]["ws_url"],
        format!("wss://localhost/ws?room={id}")
    );
    assert_eq!(
        room["data"]["play"]["flv"],
        format!("https://localhost/live/{id}.flv")
    );

    // Danmaku between a WSS sender, a WSS viewer and a plain WS viewer.
    let mut viewer = Wss::connect(https, &ca_file, "room=r1");
    let mut plain = support::ws::Client::connect(server.http, "room=r1").unwrap();
    plain.expect("history", T);
    let tok = token(&server, "u1", &[]);
    let mut sender = Wss::connect(https, &ca_file, &format!("room=r1&token={tok}"));
    sender.send(json!({"type": "danmaku", "text": "over tls", "cid": "c1"}));
    assert_eq!(sender.expect("ack")["cid"], "c1");
    assert_eq!(texts(&viewer.expect("batch")), ["over tls"]);
    assert_eq!(texts(&plain.expect("batch", T)), ["over tls"]);
    plain.send(json!({"type": "danmaku", "text": "no token"}));
    assert_eq!(plain.expect("error", T)["code"], 4010);

    // A larger answer crosses TLS whole (several records).
    let (status, metrics) = https_get(https, &ca_file, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("liveshard_tls_handshakes_total"),
        "{metrics}"
    );
    let ok = handshakes(&server, "ok");
    // curl with the CA, the three GETs and the two WSS clients; curl without the CA failed.
    assert!(ok >= 6.0, "handshakes counted: {ok}");
}

#[test]
fn a_certificate_for_another_name_or_expired_or_from_another_ca_is_refused() {
    let dir = TempDir::new("tls-refused");
    let ca = Ca::new("test CA");
    let ca_file = write_ca(&dir.0, "ca.pem", &ca);
    let other_ca = write_ca(&dir.0, "other-ca.pem", &Ca::new("someone else"));

    // Another name.
    install(&dir.0, &ca.leaf(&["example.com"], false));
    let (server, https) = start_tls(&dir.0, &[]);
    let err = https_get(https, &ca_file, "/healthz").unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    assert_eq!(curl(https, Some(&ca_file), "/healthz").0, 60);
    // The server counted the client's refusal (the client's alert ends the handshake).
    let refused = eventually(T, || (handshakes(&server, "tls") >= 1.0).then_some(()));
    assert!(refused.is_some(), "refused handshakes are counted");
    drop(server);

    // Expired.
    install(&dir.0, &ca.leaf(&["localhost"], true));
    let (_server, https) = start_tls(&dir.0, &[]);
    let err = https_get(https, &ca_file, "/healthz").unwrap_err();
    assert!(err.contains("expired"), "{err}");
    assert_eq!(curl(https, Some(&ca_file), "/healthz").0, 60);

    // A good certificate, but the client trusts another CA.
    install(&dir.0, &ca.leaf(&["localhost"], false));
    let (_server, https) = start_tls(&dir.0, &[]);
    let err = https_get(https, &other_ca, "/healthz").unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(https_get(https, &ca_file, "/healthz").unwrap().0, 200);
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_open_ones_continue() {
    let dir = TempDir::new("tls-reload");
    let (first, second) = (Ca::new("first CA"), Ca::new("second CA"));
    let first_file = write_ca(&dir.0, "first.pem", &first);
    let second_file = write_ca(&dir.0, "second.pem", &second);
    install(&dir.0, &first.leaf(&["localhost"], false));
    let (server, https) = start_tls(&dir.0, &[]);

    let mut old_viewer = Wss::connect(https, &first_file, "room=r1");
    assert!(https_get(https, &second_file, "/healthz").is_err());

    // The renewed pair, then SIGHUP.
    install(&dir.0, &second.leaf(&["localhost"], false));
    server.signal(1);
    let swapped = eventually(T, || https_get(https, &second_file, "/healthz").ok());
    assert_eq!(
        swapped.expect("new connections get the new certificate").0,
        200
    );
    let err = https_get(https, &first_file, "/healthz").unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The connection opened before the reload goes on, and hears a client of the new one.
    let tok = token(&server, "u1", &[]);
    let mut sender = Wss::connect(https, &second_file, &format!("room=r1&token={tok}"));
    sender.send(json!({"type": "danmaku", "text": "after reload", "cid": "c1"}));
    sender.expect("ack");
    assert_eq!(texts(&old_viewer.expect("batch")), ["after reload"]);

    // A bad pair (a key that is not the certificate's) is not taken: the server says why
    // and keeps the pair it has.
    let (cert, _) = second.leaf(&["localhost"], false);
    let (_, stray_key) = first.leaf(&["localhost"], false);
    install(&dir.0, &(cert, stray_key.clone()));
    server.signal(1);
    let said = eventually(T, || {
        server
            .logs()
            .into_iter()
            .find(|l| l.contains("not reloaded"))
    })
    .expect("the failed reload is logged");
    assert!(said.contains("does not belong"), "{said}");
    assert!(
        !said.contains(stray_key.lines().nth(1).unwrap()),
        "no key material in the log"
    );
    assert_eq!(https_get(https, &second_file, "/healthz").unwrap().0, 200);
}

#[test]
fn a_bad_certificate_or_key_stops_the_start_with_a_clear_error() {
    let dir = TempDir::new("tls-bad-start");
    let ca = Ca::new("test CA");
    let (cert, _) = ca.leaf(&["localhost"], false);
    let (_, other_key) = ca.leaf(&["localhost"], false);
    install(&dir.0, &(cert, other_key.clone()));
    let run = |extra: &[String]| {
        Command::new(support::BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .args(extra)
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };
    let tls = |cert: &str, key: &str| {
        vec![
            "--https".to_string(),
            "127.0.0.1:0".to_string(),
            "--set".to_string(),
            format!("server.tls_cert={}", dir.0.join(cert).display()),
            "--set".to_string(),
            format!("server.tls_key={}", dir.0.join(key).display()),
        ]
    };
    for (args, says) in [
        (tls("cert.pem", "key.pem"), "does not belong"),
        (tls("missing.pem", "key.pem"), "server.tls_cert"),
        (tls("cert.pem", "cert.pem"), "no private key"),
        (
            vec!["--https".into(), "127.0.0.1:0".into()],
            "server.tls_cert",
        ),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must not start");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains(other_key.lines().nth(1).unwrap()),
            "no key material in errors"
        );
    }
}

#[test]
fn a_stalled_handshake_or_plain_http_on_the_tls_port_is_closed_and_counted() {
    let dir = TempDir::new("tls-abuse");
    let ca = Ca::new("test CA");
    let ca_file = write_ca(&dir.0, "ca.pem", &ca);
    install(&dir.0, &ca.leaf(&["localhost"], false));
    let (server, https) = start_tls(&dir.0, &["--set", "http.header_timeout_ms=500"]);

    // Connected, never says hello: closed after the head timeout.
    let mut idle = TcpStream::connect(https).unwrap();
    assert!(
        support::closed_within(&mut idle, T),
        "a silent client is closed"
    );
    // Plain HTTP to the TLS port: refused, the connection closed.
    let mut plain = TcpStream::connect(https).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        support::closed_within(&mut plain, T),
        "plain HTTP on the TLS port is closed"
    );
    for result in ["timeout", "tls"] {
        let counted = eventually(T, || (handshakes(&server, result) >= 1.0).then_some(()));
        assert!(counted.is_some(), "a {result} handshake is counted");
    }
    // The listener still serves.
    assert_eq!(https_get(https, &ca_file, "/healthz").unwrap().0, 200);
}

/// What ffprobe (ffmpeg's own TLS, verifying against the test's CA) reads from `url`:
/// Ok(codec names) or Err(its error output).
fn ffprobe_tls(url: &str, ca: &Path) -> Result<Vec<String>, String> {
    support::require("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000", "-tls_verify", "1"])
        .arg("-ca_file")
        .arg(ca)
        .args(["-show_streams", "-of", "json", url])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str().map(str::to_string))
        .collect())
}

#[test]
fn ffprobe_plays_http_flv_and_hls_over_https() {
    let dir = TempDir::new("tls-media");
    let ca = Ca::new("test CA");
    let ca_file = write_ca(&dir.0, "ca.pem", &ca);
    let other_ca = write_ca(&dir.0, "other-ca.pem", &Ca::new("someone else"));
    install(&dir.0, &ca.leaf(&["127.0.0.1"], false));
    let (server, https) = start_tls(&dir.0, &[]);
    let url = support::media::signed_url(&server, "s1", &[]);
    let _ffmpeg = support::media::publish(&url, 30);
    support::media::wait_live(&server, "s1");

    let flv = format!("https://127.0.0.1:{}/live/s1.flv", https.port());
    let codecs = ffprobe_tls(&flv, &ca_file).expect("HTTP-FLV over HTTPS");
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
    assert!(codecs.iter().any(|c| c == "aac"), "{codecs:?}");
    let refused = ffprobe_tls(&flv, &other_ca).unwrap_err();
    assert!(refused.contains("verification"), "{refused}");

    // HLS: the playlist and its segments over HTTPS, once the first segment is cut.
    let m3u8 = format!("https://127.0.0.1:{}/live/s1.m3u8", https.port());
    let codecs = eventually(Duration::from_secs(20), || {
        ffprobe_tls(&m3u8, &ca_file).ok()
    })
    .expect("HLS over HTTPS");
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
}

#[test]
fn a_wss_viewer_that_stops_reading_is_closed_while_another_keeps_receiving() {
    let dir = TempDir::new("tls-slow");
    let ca = Ca::new("test CA");
    let ca_file = write_ca(&dir.0, "ca.pem", &ca);
    install(&dir.0, &ca.leaf(&["localhost"], false));
    let (server, https) = start_tls(
        &dir.0,
        &[
            "--shards",
            "1",
            "--set",
            "danmaku.queue_bytes=16384",
            "--set",
            "danmaku.send_buffer_bytes=4096",
            "--set",
            "danmaku.slow_grace_ms=1000",
            "--set",
            "danmaku.max_text_chars=1000",
            "--set",
            "danmaku.rate_per_sec=1000",
            "--set",
            "danmaku.rate_burst=1000",
            // The TLS side's own bound on a client that takes nothing: past the danmaku
            // engine's judgement (as by default: 30 s against 5 s), so that is what closes.
            "--set",
            "http.write_timeout_ms=4000",
        ],
    );
    let mut stalled = Wss::connect(https, &ca_file, "room=slow");
    support::shrink_receive_buffer(&stalled.ws.get_ref().sock);
    let mut healthy = Wss::connect(https, &ca_file, "room=slow");
    let reader = std::thread::spawn(move || {
        let mut got: Vec<(String, u64)> = Vec::new();
        loop {
            let b = healthy.expect("batch");
            for item in b["msgs"].as_array().unwrap() {
                let text = item["text"].as_str().unwrap().to_string();
                if text == "END" {
                    return got;
                }
                got.push((text, item["id"].as_u64().unwrap()));
            }
        }
    });
    let tok = token(&server, "s", &[]);
    let mut sender = support::ws::Client::connect(server.http, &format!("room=slow&token={tok}"))
        .expect("sender joins");
    sender.expect("history", T);

    let slow_closed = || {
        server
            .metric("liveshard_ws_slow_consumer_closed_total{shard=\"0\"}")
            .unwrap_or(0.0)
    };
    let text = "x".repeat(900);
    let mut sent = Vec::new();
    let mut closed_at = None;
    let mut round = 0;
    while closed_at.is_none_or(|r| round < r + 5) {
        assert!(round < 150, "the stalled WSS viewer was never let go");
        for n in 0..5 {
            let t = format!("{round}-{n}-{text}");
            sender.send(json!({"type": "danmaku", "text": t}));
            sent.push(t);
        }
        for _ in 0..5 {
            sender.expect("ack", T);
        }
        if closed_at.is_none() && round % 4 == 3 && slow_closed() >= 1.0 {
            closed_at = Some(round);
        }
        std::thread::sleep(Duration::from_millis(60));
        round += 1;
    }
    sender.send(json!({"type": "danmaku", "text": "END"}));

    // The reading viewer got everything, once, in order, through its own TLS connection.
    let got = reader.join().expect("healthy viewer");
    assert_eq!(got.len(), sent.len(), "the healthy viewer missed items");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "ids in order");
    assert!(
        got.iter().map(|g| &g.0).eq(sent.iter()),
        "the texts sent, in order"
    );
    assert_eq!(slow_closed(), 1.0, "exactly the stalled viewer was closed");

    // The stalled client, reading at last, gets what was in flight, then the end of its
    // connection (the server's side gave up on it).
    stalled.ws.get_ref().sock.set_read_timeout(Some(T)).unwrap();
    let mut items = 0;
    let ended = loop {
        match stalled.ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                items += v["msgs"].as_array().map_or(0, Vec::len);
            }
            Ok(tungstenite::Message::Close(_)) => break true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    assert!(ended, "the stalled connection was closed");
    assert!(
        items < sent.len(),
        "it missed items ({items} of {})",
        sent.len()
    );
}
