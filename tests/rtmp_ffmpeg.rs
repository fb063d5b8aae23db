//! Real RTMP clients against the sans-IO session: `ffmpeg` publishes a generated H.264/AAC
//! stream with a signed URL, `ffprobe` plays the captured stream back through the one-encode
//! packaging, and bad signatures are refused with a reason ffmpeg prints.
//!
//! The server side here is a plain blocking std TCP loop in the test process that does what
//! a connection driver does: read, `handle_input`, answer requests, write what the session
//! returns. ffmpeg/ffprobe come from Debian packages (scripts/test.sh installs them); when
//! they are missing the tests fail and say so.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use liveshard::media::flv::{AudioTag, VideoTag};
use liveshard::media::rtmp::{status, Event, HandshakeKind, ServerSession, SessionConfig};
use liveshard::media::{sign, MediaKind, MediaMessage, Packaged};

const KEY: &str = "e12c46f2612d5106e2034781ab261ca3";

fn tool(name: &str) -> &str {
    let found = Command::new(name)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not on PATH: these tests need the real client. \
         Run scripts/test.sh (it installs it), or `apt-get install -y ffmpeg`."
    );
    name
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a client to completion, killing it if it outlives `limit`.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("client output")
}

/// Everything the server saw on one publishing connection.
#[derive(Default)]
struct Capture {
    events: Vec<Event>,
    error: Option<String>,
}

/// Writes everything the session has to send.
fn flush(session: &mut ServerSession, sock: &mut TcpStream) -> std::io::Result<()> {
    while let Some(bytes) = session.poll_transmit() {
        sock.write_all(&bytes)?;
    }
    Ok(())
}

/// Accepts one publisher and drives a session until the client leaves or is refused.
/// Publishes are checked against `KEY` the way the server will check them.
fn serve_publisher(listener: TcpListener) -> Capture {
    let (mut sock, _) = listener.accept().expect("accept");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut session = ServerSession::new(SessionConfig::default(), Instant::now());
    let mut capture = Capture::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // ffmpeg closes right after deleteStream, with our replies unread: a reset is
            // its way of hanging up.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                capture.error = Some(format!("read: {e}"));
                break;
            }
        };
        if let Err(e) = session.handle_input(&buf[..n], Instant::now()) {
            capture.error = Some(e.to_string());
        }
        while let Some(ev) = session.poll_event() {
            if let Event::Publish(req) = &ev {
                let query = req.query.as_deref().unwrap_or("");
                match sign::verify(KEY, &req.stream, query, unix_now()) {
                    Ok(()) => session.accept_publish().expect("pending publish"),
                    Err(e) => {
                        let code = match e {
                            sign::SignError::Missing | sign::SignError::Malformed => {
                                status::PUBLISH_BAD_NAME
                            }
                            _ => status::PUBLISH_DENIED,
                        };
                        let why = format!("publish of {}/{} refused: {e}", req.app, req.stream);
                        session.reject(code, &why).expect("pending publish");
                    }
                }
            }
            capture.events.push(ev);
        }
        if flush(&mut session, &mut sock).is_err() || session.is_closing() {
            break;
        }
    }
    capture
}

/// Accepts one player, accepts its play, writes `start` (packaged once, the way every
/// viewer is served), tells it the stream ended, and waits for it to leave.
fn serve_player(listener: TcpListener, start: Vec<Packaged>) -> Vec<Event> {
    let (mut sock, _) = listener.accept().expect("accept");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut session = ServerSession::new(SessionConfig::default(), Instant::now());
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if session.handle_input(&buf[..n], Instant::now()).is_err() {
            break;
        }
        let mut play = false;
        while let Some(ev) = session.poll_event() {
            if matches!(ev, Event::Play(_)) {
                session.accept_play().expect("pending play");
                play = true;
            }
            seen.push(ev);
        }
        if flush(&mut session, &mut sock).is_err() {
            break;
        }
        if play {
            for p in &start {
                if sock.write_all(&p.rtmp).is_err() {
                    break;
                }
            }
            session.notify_unpublished();
            let _ = flush(&mut session, &mut sock);
        }
    }
    seen
}

fn publish_args(port: u16, query: &str, seconds: u32) -> Vec<String> {
    let url = format!("rtmp://127.0.0.1:{port}/live/test{query}");
    [
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-c:a",
        "aac",
        "-t",
        &seconds.to_string(),
        "-f",
        "flv",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn media(events: &[Event]) -> Vec<&MediaMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Media(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn ffmpeg_publishes_a_signed_stream_and_ffprobe_plays_it_back() {
    let ffmpeg = tool("ffmpeg");
    let ffprobe = tool("ffprobe");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || serve_publisher(listener));
    let (secret, time) = sign::sign(KEY, "test", unix_now() + 3600);
    let mut cmd = Command::new(ffmpeg);
    cmd.args(publish_args(
        port,
        &format!("?txSecret={secret}&txTime={time}"),
        3,
    ));
    let out = run_with_limit(cmd, Duration::from_secs(60));
    let capture = server.join().expect("server thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert_eq!(capture.error, None, "session error; ffmpeg said: {stderr}");
    let ev = &capture.events;

    // connect(app=live), then publish(stream=test) with the signature query parsed out.
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Connect { app, .. } if app == "live")),
        "no connect(live): {:?}",
        &ev[..ev.len().min(4)]
    );
    let publish = ev
        .iter()
        .find_map(|e| match e {
            Event::Publish(r) => Some(r),
            _ => None,
        })
        .expect("a publish request");
    assert_eq!(publish.app, "live");
    assert_eq!(publish.stream, "test");
    let query = publish.query.as_deref().unwrap_or("");
    assert_eq!(sign::query_param(query, "txSecret"), Some(secret.as_str()));
    assert_eq!(sign::query_param(query, "txTime"), Some(time.as_str()));

    // onMetaData with the source's size.
    let meta = ev
        .iter()
        .find_map(|e| match e {
            Event::Metadata { object, .. } => Some(object),
            _ => None,
        })
        .expect("onMetaData");
    assert_eq!(meta.get("width").and_then(|v| v.as_f64()), Some(640.0));
    assert_eq!(meta.get("height").and_then(|v| v.as_f64()), Some(360.0));

    // Sequence headers, a keyframe, and about 3 s of audio and video.
    let msgs = media(ev);
    let video: Vec<_> = msgs.iter().filter(|m| m.kind == MediaKind::Video).collect();
    let audio: Vec<_> = msgs.iter().filter(|m| m.kind == MediaKind::Audio).collect();
    assert!(video
        .iter()
        .any(|m| VideoTag::parse(&m.payload).is_ok_and(|t| t.is_avc_sequence_header())));
    assert!(audio
        .iter()
        .any(|m| AudioTag::parse(&m.payload).is_ok_and(|t| t.is_aac_sequence_header())));
    let keyframes = video
        .iter()
        .filter(|m| VideoTag::parse(&m.payload).is_ok_and(|t| t.is_keyframe()))
        .count();
    // -g 25 at 25 fps over 3 s: a keyframe each second.
    assert!(keyframes >= 2, "{keyframes} keyframes");
    assert!(video.len() >= 70, "{} video messages", video.len());
    assert!(audio.len() >= 100, "{} audio messages", audio.len());
    let span = |ms: &[&&MediaMessage]| {
        let first = ms.first().map_or(0, |m| m.timestamp);
        let last = ms.last().map_or(0, |m| m.timestamp);
        last.saturating_sub(first)
    };
    assert!(
        (2700..=3300).contains(&span(&video)),
        "video spans {} ms",
        span(&video)
    );
    assert!(
        (2700..=3300).contains(&span(&audio)),
        "audio spans {} ms",
        span(&audio)
    );
    assert!(
        ev.iter().any(|e| matches!(e, Event::Unpublish)),
        "ffmpeg's FCUnpublish/deleteStream was not reported"
    );

    // Play it back: every message packaged once, served as-is to ffprobe.
    let mut start = Vec::new();
    for e in ev {
        match e {
            Event::Metadata { message, .. } | Event::Media(message) => {
                start.push(Packaged::new(message).expect("packages"));
            }
            _ => {}
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || serve_player(listener, start));
    let mut cmd = Command::new(ffprobe);
    cmd.args([
        "-hide_banner",
        "-v",
        "error",
        "-show_entries",
        "stream=codec_name,width,height",
        "-of",
        "default=noprint_wrappers=1",
        &format!("rtmp://127.0.0.1:{port}/live/test"),
    ]);
    let out = run_with_limit(cmd, Duration::from_secs(60));
    let seen = server.join().expect("player thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffprobe failed: {stderr}");
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Play(r) if r.app == "live" && r.stream == "test")),
        "no play(live/test)"
    );
    // ffmpeg sends a digest C1 and, when playing, verifies S1's digest and S2's signature.
    assert!(
        seen.contains(&Event::Handshake(HandshakeKind::Digest)),
        "ffprobe did not get the digest handshake"
    );
    for want in [
        "codec_name=h264",
        "width=640",
        "height=360",
        "codec_name=aac",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == want),
            "ffprobe did not report {want}: {stdout} {stderr}"
        );
    }
}

#[test]
fn bad_signatures_are_refused_with_a_reason_ffmpeg_prints() {
    let ffmpeg = tool("ffmpeg");
    let now = unix_now();
    let (good, time) = sign::sign(KEY, "test", now + 3600);
    let (_, past) = sign::sign(KEY, "test", now - 60);
    let expired_secret = sign::sign(KEY, "test", now - 60).0;
    let cases = [
        (
            format!("?txSecret={}&txTime={time}", "0".repeat(32)),
            "signature mismatch",
        ),
        (
            format!("?txSecret={expired_secret}&txTime={past}"),
            "signature expired",
        ),
        // A valid signature for another stream name.
        (
            format!(
                "?txSecret={}&txTime={time}",
                sign::sign(KEY, "other", now + 3600).0
            ),
            "signature mismatch",
        ),
        (String::new(), "missing txSecret/txTime"),
    ];
    assert_ne!(good.len(), 0);
    for (query, reason) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || serve_publisher(listener));
        let mut cmd = Command::new(ffmpeg);
        cmd.args(publish_args(port, &query, 1));
        let out = run_with_limit(cmd, Duration::from_secs(60));
        let capture = server.join().expect("server thread");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "ffmpeg succeeded with query {query:?}: {stderr}"
        );
        assert!(
            stderr.contains(reason) && stderr.contains("publish of live/test refused"),
            "ffmpeg's stderr does not show the reason {reason:?}: {stderr}"
        );
        eprintln!("refused as expected ({reason}): {}", stderr.trim());
        assert!(
            media(&capture.events).is_empty(),
            "media was accepted from a refused publisher"
        );
    }
}
