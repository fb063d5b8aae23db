//! Media helpers: signed push URLs from the real `liveshard sign`, and a real ffmpeg
//! publisher that is killed when dropped.

use std::io::{BufReader, Write};
use std::process::{Child, Command, Stdio};

use super::{require, Server, BIN};

pub fn rtmp_addr(server: &Server) -> String {
    server.ready_field("rtmp").expect("ready line has rtmp=")
}

/// A push URL signed the way an operator gets one: `liveshard sign`; with `--play` in
/// `extra`, a play URL signed with the play key (a push signature does not play, and a
/// play signature does not publish).
pub fn signed_url(server: &Server, stream: &str, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([
            "sign",
            "--stream",
            stream,
            "--host",
            &rtmp_addr(server),
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The query of a signed URL (`txSecret=…&txTime=…`).
pub fn signed_query(url: &str) -> String {
    url.split_once('?').expect("a signed URL").1.to_string()
}

/// Waits until the `txTime` of a signed URL has passed (`liveshard sign` refuses
/// `--ttl 0`, so an expired URL is one signed with `--ttl 1` and waited out).
pub fn wait_expired(url: &str) {
    let expiry = signed_query(url)
        .split('&')
        .find_map(|kv| kv.strip_prefix("txTime="))
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .expect("txTime in a signed URL");
    let expired = super::eventually(std::time::Duration::from_secs(5), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now > expiry).then_some(())
    });
    assert!(expired.is_some(), "{url} did not expire");
}

/// A running ffmpeg, killed (and reaped) when dropped, so a failing test leaves no
/// publisher behind.
pub struct Ffmpeg(Child);

impl std::ops::Deref for Ffmpeg {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Ffmpeg {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg publishing a generated 640x360 H.264 + AAC source (1 s GOP) for `secs`; its
/// stderr (errors only) is piped for the test to read.
pub fn publish(url: &str, secs: u32) -> Ffmpeg {
    require("ffmpeg");
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-t", &secs.to_string(), "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg starts");
    Ffmpeg(child)
}

/// Waits for a publisher to be live (its HTTP-FLV URL answers 200).
pub fn wait_live(server: &Server, stream: &str) {
    let live = super::eventually(std::time::Duration::from_secs(20), || {
        let mut s = server.connect();
        write!(s, "GET /live/{stream}.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut BufReader::new(s), &mut line).ok()?;
        line.contains(" 200 ").then_some(())
    });
    assert!(live.is_some(), "stream {stream} did not go live");
}

/// ffprobe's view of a URL: (codec_type, codec_name, width, height) per stream.
pub fn probe(url: &str) -> Vec<(String, String, u64, u64)> {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-show_streams",
            "-of",
            "json",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}
