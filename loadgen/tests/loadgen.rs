//! Black-box tests of the `loadgen` binary against a real `liveshard` server: a small
//! fan-out run whose report must account for every delivery, an idle run that must
//! measure the server's memory per connection, and HTTP-FLV and RTMP viewer runs of a
//! stream a real ffmpeg publishes, which must time the first frame and see bytes flow.
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

    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!report["machine"]["kernel"].as_str().unwrap().is_empty());
    assert!(report["latency_hist_v2"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
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

/// Waits until `GET /live/STREAM.flv` answers 200 (the publisher is live).
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
        if live {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream {stream} did not go live"
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
