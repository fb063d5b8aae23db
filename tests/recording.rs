//! Recording (DVR) and VOD against real clients: ffmpeg publishes over RTMP, the server
//! records the stream to FLV files, ffprobe plays a recording back from `/vod/{id}.flv`,
//! and curl fetches byte ranges that must equal the file on disk byte for byte. Rotation,
//! retention, the API's start and stop, and a write error that stops a recording while the
//! live stream plays on.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::api::{call, create_room, dev_login, err, ok};
use support::media::{probe, publish, signed_url, wait_live};
use support::{eventually, require, Server};

const T: Duration = Duration::from_secs(30);

fn recordings(server: &Server, query: &str) -> Vec<Value> {
    let data = ok(&server.get(&format!("/api/v1/recordings{query}")));
    data["items"].as_array().unwrap().clone()
}

fn metric(server: &Server, name: &str) -> f64 {
    server.metric(name).unwrap_or(0.0)
}

/// curl `url` with `args`; returns (status, headers text, body).
fn curl(url: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
    require("curl");
    let dir = std::env::temp_dir().join(format!("liveshard-curl-{}", support::rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let (body, head) = (dir.join("body"), dir.join("head"));
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    let bytes = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (status, headers, bytes)
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// ffprobe's duration of a URL, in seconds.
fn duration(url: &str) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_format", "-of", "json", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_h264_aac(streams: &[(String, String, u64, u64)]) {
    assert!(
        streams
            .iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && s.2 == 640),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{streams:?}"
    );
}

#[test]
fn a_recorded_stream_plays_back_with_ffprobe_and_curl_ranges_are_byte_exact() {
    let server = Server::start(&["--set", "media.record=all"]);
    let mut ff = publish(&signed_url(&server, "cam", &[]), 4);
    wait_live(&server, "cam");
    assert_eq!(ff.wait().unwrap().code(), Some(0), "ffmpeg published");
    // The publisher is gone: its recording is closed and listed.
    let item = eventually(T, || {
        let items = recordings(&server, "?room=cam");
        items
            .into_iter()
            .find(|i| i["recording"] == false && i["bytes"].as_u64() > Some(0))
    })
    .expect("a finished recording is listed");
    assert_eq!(item["room"], "cam");
    assert!(item["duration_ms"].as_u64().unwrap() > 2000, "{item}");
    let id = item["id"].as_str().unwrap();
    // The list names the URL with the request's Host (`t` from the test client).
    assert_eq!(item["url"], format!("http://t/vod/{id}.flv"));
    let url = server.url(&format!("/vod/{id}.flv"));

    assert_h264_aac(&probe(&url));
    assert!(duration(&url) > 2.0, "ffprobe reads a duration");

    let path = server.data_dir.join(format!("recordings/{id}_cam.flv"));
    let disk = std::fs::read(&path).expect("the recording is on disk");
    assert_eq!(item["bytes"].as_u64(), Some(disk.len() as u64));
    let len = disk.len();

    let (status, head, full) = curl(&url, &[]);
    assert_eq!(status, 200);
    assert_eq!(full, disk, "a full GET is the file");
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    let etag = header(&head, "etag").expect("an ETag").to_string();

    let (status, head, part) = curl(&url, &["-r", "0-99"]);
    assert_eq!(status, 206);
    assert_eq!(part, disk[..100]);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 0-99/{len}").as_str())
    );
    let (status, _, part) = curl(&url, &["-r", "100-"]);
    assert_eq!(status, 206);
    assert_eq!(part, disk[100..]);
    let (status, _, part) = curl(&url, &["-r", "-50"]);
    assert_eq!(status, 206);
    assert_eq!(part, disk[len - 50..]);

    // Past the end: 416 with the length.
    let (status, head, _) = curl(&url, &["-r", &format!("{len}-")]);
    assert_eq!(status, 416);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // Several ranges: the whole file, 200.
    let (status, _, body) = curl(&url, &["-r", "0-1,5-9"]);
    assert_eq!((status, body.len()), (200, len));
    // If-Range: the current ETag gets the range, another one the whole file.
    let (status, _, part) = curl(&url, &["-r", "0-9", "-H", &format!("If-Range: {etag}")]);
    assert_eq!((status, part.as_slice()), (206, &disk[..10]));
    let (status, _, body) = curl(&url, &["-r", "0-9", "-H", "If-Range: \"stale\""]);
    assert_eq!(status, 200);
    assert_eq!(body, disk);

    // Ids are looked up, never used as paths.
    for bad in [
        "/vod/0000000000000000.flv",
        "/vod/..%2f..%2fjwt.flv",
        "/vod/%2e%2e.flv",
    ] {
        err(&server.get(bad), 404, 40403);
    }
}

#[test]
fn a_recording_started_through_the_api_rotates_and_keeps_the_newest_files() {
    let server = Server::start(&[
        "--set",
        "auth.dev_login=true",
        "--set",
        "media.record_segment_secs=1",
        "--set",
        "media.record_max_files=2",
    ]);
    let owner = dev_login(&server, "owner1");
    let other = dev_login(&server, "other1");
    let room = create_room(&server, &owner, "dvr")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/rooms/{room}/recording");
    // Nothing to record before the stream is live.
    err(
        &call(&server, "POST", &path, Some(&owner), None),
        409,
        40902,
    );

    let _ff = publish(&signed_url(&server, &room, &[]), 30);
    wait_live(&server, &room);
    err(
        &call(&server, "POST", &path, Some(&other), None),
        403,
        40301,
    );
    let data = ok(&call(&server, "POST", &path, Some(&owner), None));
    assert_eq!(data["recording"], true);
    assert_eq!(metric(&server, "liveshard_record_active"), 1.0);

    // 1 s GOPs and 1 s segments: a new file about every second, at most two kept.
    let deleted = eventually(T, || {
        (metric(&server, "liveshard_record_deleted_total") >= 2.0).then_some(())
    });
    assert!(deleted.is_some(), "retention deleted old files");
    assert!(metric(&server, "liveshard_record_files_total") >= 4.0);
    let data = ok(&call(&server, "DELETE", &path, Some(&owner), None));
    assert_eq!(data["stopped"], true);
    let stopped = eventually(T, || {
        (metric(&server, "liveshard_record_active") == 0.0).then_some(())
    });
    assert!(stopped.is_some(), "the recording ended");

    let items = recordings(&server, &format!("?room={room}"));
    assert!(items.len() <= 2, "{items:?}");
    assert!(items.iter().all(|i| i["recording"] == false), "{items:?}");
    let on_disk = files_in(&server.data_dir.join("recordings"));
    assert_eq!(on_disk.len(), items.len(), "{on_disk:?}");
    // Every file plays on its own (it starts with the headers and a keyframe).
    for i in &items {
        assert_h264_aac(&probe(
            &server.url(&format!("/vod/{}.flv", i["id"].as_str().unwrap())),
        ));
    }
    err(&server.get("/api/v1/recordings?room=../x"), 422, 42201);
}

#[test]
fn a_write_error_stops_the_recording_and_the_live_stream_plays_on() {
    let dir = std::env::temp_dir().join(format!("liveshard-rec-{}", support::rand_u64()));
    let dir_arg = format!("media.record_dir={}", dir.display());
    let server = Server::start(&[
        "--set",
        "media.record=all",
        "--set",
        "media.record_segment_secs=1",
        "--set",
        &dir_arg,
    ]);
    let _ff = publish(&signed_url(&server, "cam2", &[]), 30);
    wait_live(&server, "cam2");
    let writing = eventually(T, || {
        (metric(&server, "liveshard_record_files_total") >= 1.0).then_some(())
    });
    assert!(writing.is_some(), "recording started");
    // The disk goes away under the recorder: its next file cannot be created.
    std::fs::remove_dir_all(&dir).unwrap();
    let failed = eventually(T, || {
        (metric(&server, "liveshard_record_write_errors_total") >= 1.0).then_some(())
    });
    assert!(failed.is_some(), "the write error is counted");
    assert_eq!(metric(&server, "liveshard_record_active"), 0.0);
    assert!(server
        .logs()
        .iter()
        .any(|l| l.contains("recording stopped: write failed")));
    // The stream is untouched.
    assert_h264_aac(&probe(&server.url("/live/cam2.flv")));
}
