//! Black-box tests of the `loadgen` binary against a real `liveshard` server: a small
//! fan-out run whose report must account for every delivery, an idle run that must
//! measure the server's memory per connection, and HTTP-FLV, RTMP and HLS (plain and
//! low-latency) viewer runs of a stream a real ffmpeg publishes, which must time the first
//! frame (the HLS ones every segment or part) and see bytes flow.
//! Then the options a performance engineer leans on: publishers logging in from a
//! `--tokens` file (and refused ones counted), disconnects counted by the server's close
//! code, `--procs` with `--src` merging into one report, `--payload` and `--ramp` showing
//! in the numbers, and the live progress line on a terminal (through `script`, which
//! util-linux provides) and not elsewhere. Last, the reports people read: the `--html`
//! page with the run's figures, and the warning when the server's rate limit refused most
//! posts.
//!
//! The server binary is the workspace's `liveshard`, found next to this package's binary
//! (same target directory): `cargo test --workspace` builds both. The media test needs
//! `ffmpeg` on PATH (scripts/test.sh installs it) and fails, never skips, without it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
const SECRET: &str = "loadgen-test-secret-0123456789abcdef";

fn liveshard_bin() -> PathBuf {
    let p = Path::new(LOADGEN)
        .parent()
        .expect("binary dir")
        .join("liveshard");
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build --bin liveshard`) first",
        p.display()
    );
    p
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "loadgen-test-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A liveshard process on a free port; killed on drop.
struct Server {
    child: Child,
    http: String,
    rtmp: String,
    dir: PathBuf,
}

impl Server {
    fn start(tag: &str) -> Server {
        Server::start_with(tag, &[])
    }

    /// Like [`Server::start`], with more `--set KEY=VALUE` settings (they win over the
    /// defaults above).
    fn start_with(tag: &str, sets: &[&str]) -> Server {
        let dir = temp_dir(tag);
        let mut child = Command::new(liveshard_bin())
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--rtmp",
                "127.0.0.1:0",
                "--shards",
                "2",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--set", &format!("auth.jwt_secret={SECRET}")])
            .args([
                "--set",
                "danmaku.rate_per_sec=1000",
                "--set",
                "danmaku.rate_burst=1000",
            ])
            .args(sets.iter().flat_map(|kv| ["--set", kv]))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("liveshard starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("liveshard prints its ready line");
            if line.starts_with("liveshard ready") {
                break line;
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("ready line has {name}: {line}"))
                .to_string()
        };
        let (http, rtmp) = (field("http="), field("rtmp="));
        Server {
            child,
            http,
            rtmp,
            dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_loadgen(args: &[String]) -> serde_json::Value {
    let json = temp_dir("report").join("report.json");
    let out = Command::new(LOADGEN)
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report written"))
            .expect("report is JSON");
    let _ = std::fs::remove_dir_all(json.parent().unwrap());
    report
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn fanout_report_accounts_for_every_delivery() {
    let server = Server::start("fanout");
    let url = format!("ws://{}/ws", server.http);
    let mut args = strings(&[
        "ws-fanout",
        "--rooms",
        "2",
        "--viewers",
        "50",
        "--publishers",
        "2",
        "--rate",
        "20",
        "--duration",
        "3",
        "--drain",
        "1",
        "--token-secret",
        SECRET,
        "--quiet",
    ]);
    args.extend(["--url".into(), url]);
    args.extend(["--server-pid".into(), server.child.id().to_string()]);
    let report = run_loadgen(&args);
    let r = &report["results"];

    assert_eq!(r["connections"]["failed"], 0, "{r:#}");
    assert_eq!(r["connections"]["up"], 52);
    assert_eq!(r["server_errors"], 0, "{r:#}");
    // 20 msgs/s for 3 s, each to the 25 viewers of its room.
    let sent = r["sent"].as_u64().unwrap();
    assert!((57..=60).contains(&sent), "sent {sent}");
    assert_eq!(r["acks"].as_u64().unwrap(), sent, "every post acknowledged");
    let deliveries = r["deliveries"].as_u64().unwrap();
    assert_eq!(
        deliveries,
        r["expected_deliveries"].as_u64().unwrap(),
        "{r:#}"
    );
    let want = 20.0 * 3.0 * 25.0;
    assert!(
        (deliveries as f64 - want).abs() <= want * 0.05,
        "deliveries {deliveries} ≉ {want}"
    );
    assert_eq!(r["server_dropped"], 0);
    assert!(r["disconnects"].as_object().unwrap().is_empty(), "{r:#}");

    let l = &r["latency_us"];
    let (p50, p99, max) = (
        l["p50"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert_eq!(l["count"].as_u64().unwrap(), deliveries);
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{l}");
    // Merge window 50 ms; generous for a debug build on a shared machine.
    assert!(max < 5_000_000, "{l}");

    assert!(
        r.get("per_url").is_none(),
        "one URL, no per-URL figures: {r:#}"
    );

    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!report["machine"]["kernel"].as_str().unwrap().is_empty());
    assert!(report["latency_hist_v2"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
}

#[test]
fn several_urls_spread_the_viewers_and_report_each_url() {
    // One server behind three URLs (repeated, and comma-separated): what loadgen does with
    // the nodes of a cluster, without the cluster.
    let server = Server::start("urls");
    let url = format!("ws://{}/ws", server.http);
    let mut args = fanout_args(
        &server,
        &[
            "--rooms",
            "2",
            "--viewers",
            "60",
            "--publishers",
            "2",
            "--rate",
            "20",
            "--duration",
            "2",
            "--drain",
            "1",
            "--procs",
            "2",
            "--token-secret",
            SECRET,
            "--quiet",
        ],
    );
    args.extend(["--url".into(), format!("{url},{url}")]);
    let dir = temp_dir("urls-report");
    let json = dir.join("report.json");
    let out = Command::new(LOADGEN)
        .args(&args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let r = &report["results"];
    assert_eq!(r["connections"]["up"], 62, "{r:#}");
    assert_eq!(report["config"]["urls"].as_array().unwrap().len(), 3);
    let per = r["per_url"].as_array().expect("per-URL figures");
    assert_eq!(per.len(), 3);
    let roles: Vec<_> = per.iter().map(|u| u["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["local", "cross-node", "cross-node"]);
    let sum = |k: &str| per.iter().map(|u| u[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("viewers_up"), 60);
    assert_eq!(sum("deliveries"), r["deliveries"].as_u64().unwrap());
    assert_eq!(
        sum("expected_deliveries"),
        r["expected_deliveries"].as_u64().unwrap()
    );
    for u in per {
        // 60 viewers, 2 rooms, 3 URLs: 10 viewers of each room at each URL.
        assert_eq!(u["viewers_up"], 20, "{u:#}");
        assert_eq!(u["deliveries"], u["expected_deliveries"], "{u:#}");
        assert!(u["deliveries"].as_u64().unwrap() > 0);
        assert_eq!(u["latency_us"]["count"], u["deliveries"]);
    }
    assert_eq!(stdout.matches("cross-node ws://").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("local      ws://").count(), 1, "{stdout}");

    // ws-idle measures one server: it takes one URL.
    let out = Command::new(LOADGEN)
        .args(["ws-idle", "--conns", "1", "--url", &format!("{url},{url}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("one --url"));
}

#[test]
fn idle_run_reports_server_memory_per_connection() {
    let server = Server::start("idle");
    let mut args = strings(&[
        "ws-idle", "--conns", "100", "--rooms", "4", "--hold", "0.5", "--settle", "0.5", "--quiet",
    ]);
    args.extend(["--url".into(), format!("ws://{}/ws", server.http)]);
    args.extend(["--server-pid".into(), server.child.id().to_string()]);
    let report = run_loadgen(&args);
    let r = &report["results"];
    assert_eq!(r["connections"]["up"], 100, "{r:#}");
    assert_eq!(r["connections"]["failed"], 0);
    let per_conn = r["bytes_per_conn"]
        .as_f64()
        .expect("bytes_per_conn measured");
    assert!(per_conn > 0.0, "{r:#}");
    assert!(r["rss_after_kib"].as_u64() > r["rss_before_kib"].as_u64());
}

#[test]
fn refuses_targets_off_this_machine() {
    let out = Command::new(LOADGEN)
        .args(["ws-idle", "--url", "ws://192.0.2.1:80/ws", "--conns", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-remote"), "{err}");
}

/// ffmpeg publishing a generated 640x360 H.264 + AAC source (1 s GOP, about 600 kbit/s) in
/// real time; killed on drop.
struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publish(url: &str) -> Publisher {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "ffmpeg is not on PATH: the media test publishes with a real ffmpeg \
         (apt-get install -y ffmpeg, or run scripts/test.sh which installs it)"
    );
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g", "25", "-b:v", "500k", "-maxrate", "500k", "-bufsize", "500k",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-t", "60",
        ])
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg starts");
    Publisher(child)
}

/// Waits until `GET /live/STREAM.flv` answers 200 and a viewer starts from a cached GOP.
fn wait_live(http: &str, stream: &str) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut head = [0u8; 12];
        let live = std::net::TcpStream::connect(http)
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                write!(s, "GET /live/{stream}.flv HTTP/1.1\r\nHost: t\r\n\r\n")?;
                s.read_exact(&mut head)
            })
            .is_ok_and(|()| head.ends_with(b" 200"));
        // Live, and its first keyframe cached: a viewer joining now starts from the GOP
        // cache (the probe itself counts one hit), so the runs below time real starts.
        if live && scrape(http, "liveshard_media_gop_cache_hits_total") > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream {stream} did not go live with a keyframe cached"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What every media run must show: all viewers up, each one timed to its first frame and
/// keyframe, bytes flowing through the window, nobody dropped.
fn assert_viewers_watched(report: &serde_json::Value, viewers: u64) {
    let r = &report["results"];
    assert_eq!(r["connections"]["failed"], 0, "{r:#}");
    assert_eq!(r["connections"]["up"], viewers, "{r:#}");
    assert_eq!(r["viewers_at_start"], viewers, "{r:#}");
    assert_eq!(r["ttff_us"]["count"], viewers, "every viewer timed: {r:#}");
    assert_eq!(r["ttff_keyframe_us"]["count"], viewers, "{r:#}");
    let (p50, p99) = (
        r["ttff_us"]["p50"].as_u64().unwrap(),
        r["ttff_us"]["p99"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99, "{r:#}");
    assert!(r["bytes_in_window"].as_u64().unwrap() > 0, "{r:#}");
    // 3 s of a ~600 kbit/s stream; well under it still shows bytes flowing to everyone.
    let per_viewer_min = r["per_viewer_kbit_s"]["min"].as_u64().unwrap();
    assert!(per_viewer_min >= 100, "every viewer received media: {r:#}");
    assert!(r["video_frames"].as_u64().unwrap() >= viewers * 25, "{r:#}");
    assert!(r["disconnects"].as_object().unwrap().is_empty(), "{r:#}");
    assert!(r["server_cpu_s"].as_f64().is_some(), "{r:#}");
    assert!(report["latency_hist_v2"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
}

#[test]
fn flv_and_rtmp_viewers_time_the_first_frame_of_a_real_stream() {
    let server = Server::start("media");
    let out = Command::new(liveshard_bin())
        .args([
            "sign",
            "--stream",
            "lgmedia",
            "--host",
            &server.rtmp,
            "--data-dir",
        ])
        .arg(server.dir.join("data"))
        .output()
        .expect("liveshard sign runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let push = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let _ffmpeg = publish(&push);
    wait_live(&server.http, "lgmedia");
    let pid = server.child.id().to_string();

    let mut flv = strings(&[
        "flv-viewers",
        "--viewers",
        "20",
        "--duration",
        "3",
        "--quiet",
    ]);
    flv.extend([
        "--url".into(),
        format!("http://{}/live/lgmedia.flv", server.http),
    ]);
    flv.extend(["--server-pid".into(), pid.clone()]);
    let report = run_loadgen(&flv);
    assert_viewers_watched(&report, 20);
    let hits = report["results"]["server_metrics"]["gop_cache_hits_total"]
        .as_u64()
        .expect("liveshard's media counters scraped");
    assert!(
        hits >= 20,
        "every viewer started from the GOP cache: {hits}"
    );

    let mut rtmp = strings(&[
        "rtmp-viewers",
        "--viewers",
        "10",
        "--duration",
        "3",
        "--quiet",
    ]);
    rtmp.extend([
        "--url".into(),
        format!("rtmp://{}/live/lgmedia", server.rtmp),
    ]);
    rtmp.extend(["--server-pid".into(), pid]);
    let report = run_loadgen(&rtmp);
    assert_viewers_watched(&report, 10);
}

#[test]
fn hls_viewers_poll_a_real_stream_plain_and_low_latency() {
    let server = Server::start_with(
        "hls",
        &[
            "media.hls_low_latency=true",
            "media.hls_part_ms=333",
            "media.hls_segment_secs=1",
        ],
    );
    let out = Command::new(liveshard_bin())
        .args([
            "sign",
            "--stream",
            "lghls",
            "--host",
            &server.rtmp,
            "--data-dir",
        ])
        .arg(server.dir.join("data"))
        .output()
        .expect("liveshard sign runs");
    assert!(out.status.success());
    let push = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let _ffmpeg = publish(&push);
    wait_live(&server.http, "lghls");
    let url = format!("http://{}/live/lghls.m3u8", server.http);
    let run = |extra: &[&str]| {
        let mut args = strings(&[
            "hls-viewers",
            "--viewers",
            "8",
            "--duration",
            "3",
            "--quiet",
        ]);
        args.extend(["--url".into(), url.clone()]);
        args.extend(["--server-pid".into(), server.child.id().to_string()]);
        args.extend(strings(extra));
        run_loadgen(&args)
    };

    // Plain: whole segments, each new one timed from its date-time.
    let report = run(&[]);
    let r = &report["results"];
    assert_eq!(r["connections"]["up"], 8, "{r:#}");
    assert_eq!(r["viewers_without_frame"], 0, "{r:#}");
    let h = &r["hls"];
    assert_eq!(h["mode"], "plain", "{h:#}");
    assert!(h["segments"].as_u64().unwrap() >= 8 * 2, "{h:#}");
    assert_eq!(h["parts"], 0, "{h:#}");
    assert!(
        h["ingest_to_received_us"]["count"].as_u64().unwrap() >= 8,
        "{h:#}"
    );
    assert!(h["errors"].as_object().unwrap().is_empty(), "{h:#}");
    assert!(h["playlists"].as_u64().unwrap() > h["segments"].as_u64().unwrap() / 2);
    assert!(r["mbit_per_sec"].as_f64().unwrap() > 0.0, "{r:#}");

    // Low latency: blocking reloads, every part in order (hinted ones too), each timed.
    let report = run(&["--ll"]);
    let r = &report["results"];
    assert_eq!(r["connections"]["up"], 8, "{r:#}");
    assert_eq!(r["viewers_stalled_in_window"], 0, "{r:#}");
    let h = &r["hls"];
    assert_eq!(
        (h["mode"].as_str(), h["hints"].as_bool()),
        (Some("low-latency"), Some(true))
    );
    let parts = h["parts"].as_u64().unwrap() + h["hinted_parts"].as_u64().unwrap();
    // 3 s of 333 ms parts (shorter ones at each keyframe): at least 6 per viewer.
    assert!(parts >= 8 * 6, "{h:#}");
    assert!(h["blocking_reloads"].as_u64().unwrap() >= 8 * 3, "{h:#}");
    assert!(
        h["blocking_reload_hold_us"]["count"].as_u64().unwrap() > 0,
        "{h:#}"
    );
    assert!(
        h["ingest_to_received_us"]["count"].as_u64().unwrap() >= 8 * 6,
        "{h:#}"
    );
    assert_eq!(h["segments"], 0, "{h:#}");
    assert!(h["errors"].as_object().unwrap().is_empty(), "{h:#}");
    assert!(
        report["results"]["server_metrics"]["hls_blocking_requests_total"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
}

#[test]
fn a_stream_that_is_not_live_is_a_connect_failure() {
    let server = Server::start("media-404");
    let mut args = strings(&[
        "flv-viewers",
        "--viewers",
        "3",
        "--duration",
        "0.5",
        "--quiet",
    ]);
    args.extend([
        "--url".into(),
        format!("http://{}/live/nobody.flv", server.http),
    ]);
    let out = Command::new(LOADGEN).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "no viewer up is a failed run: {stdout}"
    );
    assert!(stdout.contains("http_404: 3"), "{stdout}");
}

/// Runs loadgen with `--json`, whatever its exit status: its output and the report, if it
/// wrote one.
fn run_loadgen_raw(args: &[String]) -> (std::process::Output, Option<serde_json::Value>) {
    let dir = temp_dir("report");
    let json = dir.join("report.json");
    let out = Command::new(LOADGEN)
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("loadgen runs");
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("report is JSON"));
    let _ = std::fs::remove_dir_all(&dir);
    (out, report)
}

/// A ws-fanout command line against `server`: `extra` first, then the target.
fn fanout_args(server: &Server, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["ws-fanout"]);
    args.extend(strings(extra));
    args.extend(["--url".into(), format!("ws://{}/ws", server.http)]);
    args
}

/// The sum of a metric's samples on the server's `/metrics`.
fn scrape(http: &str, metric: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).expect("metrics connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A token from `liveshard token`, signed with the test server's secret.
fn liveshard_token(server: &Server, uid: &str) -> String {
    let out = Command::new(liveshard_bin())
        .args(["token", "--uid", uid, "--nick", uid, "--set"])
        .arg(format!("auth.jwt_secret={SECRET}"))
        .arg("--data-dir")
        .arg(server.dir.join("data"))
        .output()
        .expect("liveshard token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(t.matches('.').count(), 2, "a JWT: {t}");
    t
}

#[test]
fn publishers_log_in_with_a_token_file() {
    let server = Server::start("tokens");
    let dir = temp_dir("tokens");
    // Two tokens for three publishers: used round robin; comments and blanks skipped.
    let good = dir.join("good.txt");
    std::fs::write(
        &good,
        format!(
            "# tokens from `liveshard token`\n\n{}\n  {}  \n",
            liveshard_token(&server, "lgtok0"),
            liveshard_token(&server, "lgtok1")
        ),
    )
    .unwrap();
    let mut args = fanout_args(
        &server,
        &[
            "--viewers",
            "20",
            "--publishers",
            "3",
            "--rate",
            "15",
            "--duration",
            "2",
            "--drain",
            "0.5",
            "--quiet",
        ],
    );
    args.extend(["--tokens".into(), good.display().to_string()]);
    let (out, report) = run_loadgen_raw(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report.expect("report written");
    let r = &report["results"];
    assert_eq!(report["config"]["tokens"], "file");
    assert_eq!(r["connections"]["failed"], 0, "{r:#}");
    assert_eq!(r["publishers_up"], 3, "{r:#}");
    assert_eq!(r["viewers_up"], 20, "{r:#}");
    assert_eq!(r["server_errors"], 0, "{r:#}");
    let sent = r["sent"].as_u64().unwrap();
    assert!((27..=30).contains(&sent), "15/s for 2 s: sent {sent}");
    assert_eq!(r["acks"].as_u64().unwrap(), sent, "every post acknowledged");
    assert_eq!(r["deliveries"], r["expected_deliveries"], "{r:#}");
    assert_eq!(r["deliveries"].as_u64().unwrap(), sent * 20);

    // Tokens the server cannot verify: garbage and one signed with another secret. The
    // upgrade is refused (401), so every publisher is a connect failure; viewers still run.
    let bad = dir.join("bad.txt");
    let other = Command::new(liveshard_bin())
        .args(["token", "--uid", "lgbad", "--set"])
        .arg("auth.jwt_secret=some-other-secret-0123456789")
        .arg("--data-dir")
        .arg(dir.join("other"))
        .output()
        .unwrap();
    assert!(other.status.success());
    std::fs::write(
        &bad,
        format!(
            "garbage\n{}\n",
            String::from_utf8_lossy(&other.stdout).trim()
        ),
    )
    .unwrap();
    let mut args = fanout_args(
        &server,
        &[
            "--viewers",
            "5",
            "--publishers",
            "2",
            "--rate",
            "10",
            "--duration",
            "0.5",
            "--drain",
            "0",
            "--quiet",
        ],
    );
    args.extend(["--tokens".into(), bad.display().to_string()]);
    let (out, report) = run_loadgen_raw(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a run with no publisher fails");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no publisher connected"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &report.expect("report written")["results"];
    assert_eq!(r["publishers_up"], 0, "{r:#}");
    assert_eq!(r["viewers_up"], 5, "{r:#}");
    assert_eq!(r["connections"]["failures"]["http_401"], 2, "{r:#}");
    assert_eq!(r["sent"], 0, "{r:#}");
    assert!(stdout.contains("http_401: 2"), "{stdout}");

    // A missing file and a file of comments only are refused before anything connects.
    for (file, says) in [
        (dir.join("missing.txt"), "cannot read tokens from"),
        (dir.join("empty.txt"), "holds no tokens"),
    ] {
        if file.ends_with("empty.txt") {
            std::fs::write(&file, "# nothing here\n\n").unwrap();
        }
        let mut args = fanout_args(
            &server,
            &["--viewers", "1", "--rate", "1", "--duration", "1"],
        );
        args.extend(["--tokens".into(), file.display().to_string()]);
        let (out, report) = run_loadgen_raw(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(report.is_none(), "no report for a run that never started");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn disconnects_are_counted_by_the_servers_close_code() {
    // The server closes a connection silent for two heartbeat intervals (2 s here) with
    // 4008; viewers that heartbeat every second stay, viewers that heartbeat every 20 s
    // (loadgen's default) are closed mid-run.
    let server = Server::start_with("closecode", &["danmaku.heartbeat_secs=1"]);
    let common = [
        "--viewers",
        "30",
        "--rate",
        "10",
        "--duration",
        "3",
        "--metrics-url",
        "none",
        "--token-secret",
        SECRET,
        "--quiet",
    ];
    let mut args = fanout_args(&server, &common);
    args.extend(strings(&["--heartbeat", "1", "--room-prefix", "hb"]));
    let report = run_loadgen(&args);
    let r = &report["results"];
    assert_eq!(r["connections"]["up"], 31, "{r:#}");
    assert!(
        r["disconnects"].as_object().unwrap().is_empty(),
        "heartbeating viewers stay: {r:#}"
    );
    assert_eq!(r["deliveries"], r["expected_deliveries"], "{r:#}");

    let metric = "liveshard_ws_heartbeat_closed_total";
    let before = scrape(&server.http, metric);
    let mut args = fanout_args(&server, &common);
    args.extend(strings(&[
        "--heartbeat",
        "20",
        "--drain",
        "1",
        "--room-prefix",
        "quiet",
    ]));
    let report = run_loadgen(&args);
    let r = &report["results"];
    assert_eq!(r["connections"]["up"], 31, "{r:#}");
    assert_eq!(
        r["disconnects"]["4008"], 30,
        "every silent viewer closed with 4008: {r:#}"
    );
    // The measurement window saw them go: fewer deliveries than 3 s worth.
    let deliveries = r["deliveries"].as_u64().unwrap();
    assert!(deliveries < r["sent"].as_u64().unwrap() * 30, "{r:#}");
    // The server counted the same closes (its counters are published once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let closed = scrape(&server.http, metric) - before;
        if closed >= 30 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server counted {closed} heartbeat closes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_processes_from_many_source_addresses_account_for_everything() {
    // At most 40 connections per client address (30 per shard): 152 connections can only
    // all come up if they really came from several addresses (19 per address over 8).
    let server = Server::start_with(
        "procs",
        &["server.max_conns_per_ip=40", "server.per_ip_exempt="],
    );
    let mut args = fanout_args(
        &server,
        &[
            "--procs",
            "2",
            "--src",
            "127.0.0.2-127.0.0.9",
            "--rooms",
            "2",
            "--viewers",
            "150",
            "--publishers",
            "2",
            "--rate",
            "40",
            "--duration",
            "2",
            "--drain",
            "1",
            "--token-secret",
            SECRET,
            "--quiet",
        ],
    );
    args.extend(["--server-pid".into(), server.child.id().to_string()]);
    let report = run_loadgen(&args);
    let r = &report["results"];
    assert_eq!(report["config"]["procs"], 2);
    assert_eq!(report["config"]["src"], "127.0.0.2-127.0.0.9");
    let c = &r["connections"];
    assert_eq!(c["attempted"], 152, "{r:#}");
    assert_eq!(c["up"], 152, "{r:#}");
    assert_eq!(c["failed"], 0, "{r:#}");
    assert_eq!(r["viewers_up"], 150);
    assert_eq!(r["publishers_up"], 2, "both workers' publishers");
    assert_eq!(r["server_errors"], 0, "{r:#}");
    let sent = r["sent"].as_u64().unwrap();
    assert!((77..=80).contains(&sent), "40/s for 2 s: sent {sent}");
    assert_eq!(r["acks"].as_u64().unwrap(), sent);
    let deliveries = r["deliveries"].as_u64().unwrap();
    assert_eq!(
        deliveries,
        sent * 75,
        "each message to its room's 75 viewers"
    );
    assert_eq!(r["expected_deliveries"].as_u64().unwrap(), deliveries);
    assert_eq!(
        r["latency_us"]["count"].as_u64().unwrap(),
        deliveries,
        "both workers' histograms merged"
    );
    assert!(r["disconnects"].as_object().unwrap().is_empty(), "{r:#}");
    assert_eq!(r["server_dropped"], 0);
    assert!(r["server_cpu_s"].as_f64().is_some());

    // The cap is real: the same shape from one address cannot all come up (at most 30 per
    // shard, 60 in all), and the refused are told so with a 503.
    let mut args = strings(&[
        "ws-idle", "--conns", "100", "--procs", "2", "--hold", "0", "--settle", "0", "--quiet",
    ]);
    args.extend(["--url".into(), format!("ws://{}/ws", server.http)]);
    let (_, report) = run_loadgen_raw(&args);
    let c = &report.expect("report written")["results"]["connections"];
    assert!(
        c["failed"].as_u64().unwrap() >= 40,
        "one address over the cap: {c:#}"
    );
    assert!(c["failures"]["http_503"].as_u64().unwrap() >= 1, "{c:#}");
}

#[test]
fn payload_sets_the_delivered_size_and_ramp_paces_the_connects() {
    let server = Server::start_with("payload", &["danmaku.max_text_chars=1000"]);
    let (viewers, duration, drain) = (50u64, 1.5, 0.5);
    let run = |payload: usize, prefix: &str, ramp: Option<&str>| {
        let mut args = fanout_args(
            &server,
            &[
                "--viewers",
                &viewers.to_string(),
                "--rate",
                "20",
                "--duration",
                &duration.to_string(),
                "--drain",
                &drain.to_string(),
                "--payload",
                &payload.to_string(),
                "--room-prefix",
                prefix,
                "--token-secret",
                SECRET,
                "--quiet",
            ],
        );
        if let Some(r) = ramp {
            args.extend(["--ramp".into(), r.into()]);
        }
        let t = std::time::Instant::now();
        let report = run_loadgen(&args);
        let wall = t.elapsed().as_secs_f64();
        let r = &report["results"];
        assert_eq!(report["config"]["payload"], payload);
        assert_eq!(r["connections"]["up"], viewers + 1, "{r:#}");
        assert_eq!(r["server_errors"], 0, "{r:#}");
        let deliveries = r["deliveries"].as_u64().unwrap();
        assert_eq!(r["expected_deliveries"].as_u64().unwrap(), deliveries);
        assert!(deliveries >= 25 * viewers, "{r:#}");
        let per = r["bytes_in"].as_u64().unwrap() as f64 / deliveries as f64;
        (per, wall, report)
    };
    let (small, wall_fast, _) = run(40, "small", None);
    // 51 connections at 25/s: the last one starts 2 s after the first.
    let (large, wall_ramped, report) = run(540, "large", Some("25"));
    assert_eq!(report["config"]["ramp"], 25.0);

    // Each delivery carries the text: 500 more bytes of it per delivery (JSON and frame
    // overhead are the same).
    let grew = large - small;
    assert!(
        (425.0..=575.0).contains(&grew),
        "bytes per delivery {small:.0} → {large:.0}"
    );
    let connect_s = wall_ramped - duration - drain;
    assert!(
        connect_s >= 0.6 * 51.0 / 25.0,
        "ramped run took {wall_ramped:.2} s (unramped {wall_fast:.2} s)"
    );
}

/// Quotes one argument for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn progress_line_on_a_terminal_only() {
    let found = Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "script (util-linux/bsdutils) is not on PATH: the progress-line test runs loadgen \
         on a pseudo-terminal with it"
    );
    let server = Server::start("progress");
    let args = fanout_args(
        &server,
        &[
            "--viewers",
            "20",
            "--rate",
            "50",
            "--duration",
            "2",
            "--drain",
            "0.2",
            "--metrics-url",
            "none",
            "--token-secret",
            SECRET,
        ],
    );
    let line = std::iter::once(LOADGEN.to_string())
        .chain(args.iter().cloned())
        .map(|a| sh_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    // Redrawn in place (\r, erase line) every half second.
    let draws: Vec<&str> = tty
        .split('\r')
        .filter_map(|d| d.strip_prefix("\x1b[2K["))
        .collect();
    assert!(draws.len() >= 2, "progress redrawn: {tty:?}");
    let running: Vec<&&str> = draws
        .iter()
        .filter(|d| d.contains("running: 21/21 up, 0 failed | "))
        .collect();
    assert!(!running.is_empty(), "{draws:#?}");
    let rate = running
        .iter()
        .filter_map(|d| {
            d.split(" | ")
                .nth(1)?
                .strip_suffix(" msgs/s")?
                .parse::<f64>()
                .ok()
        })
        .fold(0.0, f64::max);
    // 50 msgs/s to 20 viewers: about 1000 deliveries/s once running.
    assert!(rate >= 300.0, "msgs/s shown: {draws:#?}");
    assert!(
        running
            .iter()
            .any(|d| d.contains("p99 ") && d.ends_with(" ms")),
        "{draws:#?}"
    );

    // Not a terminal: no progress line, only the summary.
    let (out, _) = run_loadgen_raw(&args);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("\x1b[2K"), "{stderr:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ws-fanout"));
}

/// A ws-fanout run writing both reports; its stderr, the JSON report and the HTML page.
fn run_with_html(args: &[String]) -> (String, serde_json::Value, String) {
    let dir = temp_dir("html");
    let (json, html) = (dir.join("report.json"), dir.join("report.html"));
    let out = Command::new(LOADGEN)
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "loadgen failed: {}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
        .expect("report is JSON");
    let page = std::fs::read_to_string(&html).expect("--html FILE written");
    let _ = std::fs::remove_dir_all(&dir);
    (stderr, report, page)
}

/// 1234567 → "1,234,567", as the page writes counts and microseconds.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn html_report_is_self_contained_and_shows_the_runs_figures() {
    let server = Server::start("html");
    let args = fanout_args(
        &server,
        &[
            "--viewers",
            "10",
            "--rate",
            "20",
            "--duration",
            "1.5",
            "--drain",
            "0.5",
            "--token-secret",
            SECRET,
            "--procs",
            "2",
            "--quiet",
        ],
    );
    let (stderr, report, page) = run_with_html(&args);
    let r = &report["results"];
    let deliveries = r["deliveries"].as_u64().unwrap();
    let p99 = r["latency_us"]["p99"].as_u64().unwrap();
    assert!(deliveries > 0, "{r:#}");

    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..100]);
    assert!(page.trim_end().ends_with("</html>"));
    assert!(
        page.matches("<svg").count() >= 3,
        "throughput, latency and histogram charts"
    );
    assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    // Viewable offline: nothing to fetch, nothing to run.
    let lower = page.to_ascii_lowercase();
    for fetch in [
        "src=\"http",
        "href=\"http",
        "url(",
        "@import",
        "<script",
        "<link",
        "<iframe",
    ] {
        assert!(!lower.contains(fetch), "page references {fetch}");
    }
    // The JSON report's figures, as the page formats them.
    assert!(
        page.contains(&format!("<b>{}</b>", grouped(deliveries))),
        "delivered {deliveries} not on the page"
    );
    assert!(
        page.contains(&format!("<b>{} µs</b>", grouped(p99))),
        "p99 {p99} µs not on the page"
    );
    // Per-interval figures, merged over both worker processes: the window's deliveries are
    // all in the timeline.
    let points = report["timeline"]["points"].as_array().expect("timeline");
    assert!(!points.is_empty());
    let in_timeline: u64 = points
        .iter()
        .map(|p| p["deliveries"].as_u64().unwrap())
        .sum();
    assert_eq!(in_timeline, deliveries, "{:#}", report["timeline"]);
    // Rate limits raised (Server::start): no refusals, no warning.
    assert_eq!(r["refused_rate_limited"], 0, "{r:#}");
    assert!(!stderr.contains("rate limit"), "{stderr}");
    assert!(!page.contains("class=\"warn\""));
}

#[test]
fn a_run_against_default_rate_limits_counts_refusals_and_says_what_to_raise() {
    // liveshard's defaults: 2 posts/s with bursts of 5, per user in a room.
    let server = Server::start_with(
        "ratelimit",
        &["danmaku.rate_per_sec=2", "danmaku.rate_burst=5"],
    );
    let args = fanout_args(
        &server,
        &[
            "--viewers",
            "5",
            "--rate",
            "30",
            "--duration",
            "1.5",
            "--drain",
            "0.5",
            "--token-secret",
            SECRET,
            "--quiet",
        ],
    );
    let (stderr, report, page) = run_with_html(&args);
    let r = &report["results"];
    let sent = r["sent"].as_u64().unwrap();
    let refused = r["refused_rate_limited"].as_u64().unwrap();
    let acks = r["acks"].as_u64().unwrap();
    assert!(refused * 2 > sent, "{r:#}");
    assert_eq!(
        acks + refused,
        sent,
        "every post acknowledged or refused: {r:#}"
    );
    for setting in ["danmaku.rate_per_sec", "danmaku.rate_burst"] {
        assert!(
            stderr.contains(setting),
            "warning names {setting}: {stderr}"
        );
        assert!(page.contains(setting), "page warns about {setting}");
    }
    assert!(
        stderr.contains("refused by the server's rate limit"),
        "{stderr}"
    );
    assert!(page.contains("class=\"warn\""));
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1);
}
