//! Enhanced RTMP end to end, with a current ffmpeg (the static build `imageio-ffmpeg`
//! ships; `scripts/test.sh` installs it): it publishes H.264, HEVC, AV1 and VP9 (with AAC)
//! to a room's push URL — HEVC, AV1 and VP9 as Enhanced RTMP (`hvc1`, `av01`, `vp09`), as
//! ffmpeg ≥ 6.1 does by itself. For each codec:
//! - a viewer joining mid-stream over HTTP-FLV gets `onStreamTime`, `onMetaData`, the
//!   video metadata (`colorInfo`) where ffmpeg sends one, the video and the audio
//!   sequence headers, then a keyframe, all in the published codec;
//! - ffmpeg reads the stream back over HTTP-FLV and RTMP, reports the codec and decodes
//!   it without an error;
//! - HLS: H.264 plays in MPEG-TS segments, HEVC and AV1 in fMP4 ones (an init segment
//!   with `hvcC` / `av1C`, `.m4s` segments), and H.264 in fMP4 too with
//!   `media.hls_fmp4`: ffprobe sees both tracks and ffmpeg decodes them without an error;
//!   VP9 is refused with 415 / 41502 naming the codec, never served as their audio alone, and the room's
//!   `play` URLs leave `hls` out while it is so.
//!
//! And H.264 with a second AAC track, which ffmpeg sends as Enhanced RTMP multitrack
//! `mp4a`: a joining viewer gets both tracks' headers, and HLS carries the default tracks.
//!
//! Encodes are 160x90 at 10 fps with a 1 s GOP, so the tests stay quick on two cores.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::api::{call, create_room, dev_login, err, ok};
use support::media::{probe, wait_live};
use support::Server;

const T: Duration = Duration::from_secs(20);

/// The static ffmpeg of the `imageio-ffmpeg` Python package (Debian's 5.1 predates
/// Enhanced RTMP).
fn ffmpeg() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
            ])
            .output();
        let path = out
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty());
        path.expect(
            "a current static ffmpeg is needed (python3 package imageio-ffmpeg): \
             run scripts/test.sh, which installs it",
        )
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    H264,
    Hevc,
    Av1,
    Vp9,
}

impl Codec {
    /// The encoder and its settings: fast, a keyframe every 10 frames (1 s).
    fn encoder(self) -> &'static [&'static str] {
        match self {
            Codec::H264 => &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "10",
            ],
            Codec::Hevc => &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-x265-params",
                "log-level=error:keyint=10:min-keyint=10",
            ],
            Codec::Av1 => &[
                "-c:v",
                "libsvtav1",
                "-preset",
                "12",
                "-g",
                "10",
                "-svtav1-params",
                "lp=1",
            ],
            Codec::Vp9 => &[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-g",
                "10",
            ],
        }
    }

    /// The codec name ffmpeg prints for the stream it reads.
    fn ffmpeg_name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
            Codec::Av1 => "av1",
            Codec::Vp9 => "vp9",
        }
    }

    /// The Enhanced RTMP FourCC, or `None` for legacy FLV (codec id 7).
    fn fourcc(self) -> Option<&'static [u8; 4]> {
        match self {
            Codec::H264 => None,
            Codec::Hevc => Some(b"hvc1"),
            Codec::Av1 => Some(b"av01"),
            Codec::Vp9 => Some(b"vp09"),
        }
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The current ffmpeg publishing generated video in `codec` and AAC to `url` in real
/// time for `secs`.
fn publish(url: &str, codec: Codec, secs: u32) -> Proc {
    publish_tracks(url, codec, secs, 1)
}

/// [`publish`] with `audio_tracks` AAC tracks: ffmpeg sends the first in the plain form
/// and the others as Enhanced RTMP multitrack `mp4a`.
fn publish_tracks(url: &str, codec: Codec, secs: u32, audio_tracks: usize) -> Proc {
    let mut maps = vec!["-map", "0:v"];
    for _ in 0..audio_tracks {
        maps.extend(["-map", "1:a"]);
    }
    let child = Command::new(ffmpeg())
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(maps)
        .args(codec.encoder())
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k"])
        .args(["-t", &secs.to_string(), "-f", "flv", url])
        // SVT-AV1 logs its banner on its own unless told otherwise.
        .env("SVT_LOG", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg starts");
    Proc(child)
}

/// A room made through the API, and its push URL pointed at this server's RTMP port.
fn room(server: &Server) -> (String, String, String) {
    let token = dev_login(server, "caster");
    let room = create_room(server, &token, "enhanced");
    let id = room["id"].as_str().unwrap().to_string();
    let push = room["push"]["url"].as_str().unwrap();
    let path = push
        .strip_prefix("rtmp://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path.to_string())
        .expect("rtmp://host:port/app/stream?sig");
    let rtmp = server.ready_field("rtmp").unwrap();
    (id, format!("rtmp://{rtmp}/{path}"), token)
}

/// An HTTP-FLV body read tag by tag, as a player reads it.
struct FlvReader {
    body: BufReader<TcpStream>,
    buf: Vec<u8>,
}

/// One FLV tag: type (8 audio, 9 video, 18 data), timestamp, payload.
type Tag = (u8, u32, Vec<u8>);

impl FlvReader {
    fn open(server: &Server, path: &str) -> FlvReader {
        let mut s = server.connect();
        s.set_read_timeout(Some(T)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut body = BufReader::new(s);
        let mut line = String::new();
        body.read_line(&mut line).unwrap();
        assert!(line.contains(" 200 "), "{path}: {line}");
        loop {
            line.clear();
            body.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
        }
        let mut r = FlvReader {
            body,
            buf: Vec::new(),
        };
        r.fill(13);
        assert_eq!(&r.buf[..4], b"FLV\x01", "an FLV header first");
        r.buf.drain(..13);
        r
    }

    /// Reads HTTP chunks until `n` body bytes are buffered.
    fn fill(&mut self, n: usize) {
        let mut line = String::new();
        while self.buf.len() < n {
            line.clear();
            self.body.read_line(&mut line).expect("a chunk size");
            let size = usize::from_str_radix(line.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            assert!(size > 0, "the FLV body ended");
            let mut chunk = vec![0; size + 2];
            self.body.read_exact(&mut chunk).expect("a whole chunk");
            self.buf.extend_from_slice(&chunk[..size]);
        }
    }

    fn next(&mut self) -> Tag {
        self.fill(11);
        let size = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
        self.fill(11 + size + 4);
        let h = &self.buf[..11];
        let tag = (
            h[0] & 0x1F,
            u32::from_be_bytes([h[7], h[4], h[5], h[6]]),
            self.buf[11..11 + size].to_vec(),
        );
        self.buf.drain(..11 + size + 4);
        tag
    }
}

/// What a tag is, in the terms a player's demuxer uses.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Data(String),
    VideoMetadata,
    VideoHeader,
    AudioHeader,
    /// An extra audio track's (multitrack) SequenceStart, or its MultichannelConfig.
    TrackHeader,
    TrackConfig,
    Keyframe,
    Inter,
    Audio,
    Other(Vec<u8>),
}

fn seen(codec: Codec, (kind, _, p): &Tag) -> Seen {
    match kind {
        18 => {
            // AMF0 string: 0x02, u16 length, the name.
            let len = p
                .get(1..3)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            Seen::Data(String::from_utf8_lossy(p.get(3..3 + len).unwrap_or_default()).into())
        }
        8 if p.get(..2) == Some(&[0xAF, 0][..]) => Seen::AudioHeader,
        8 if p.get(..2) == Some(&[0x95, 0x00][..]) => Seen::TrackHeader,
        8 if p.get(..2) == Some(&[0x95, 0x04][..]) => Seen::TrackConfig,
        8 => Seen::Audio,
        9 => {
            match codec.fourcc() {
                Some(cc) => assert_eq!(&p[1..5], cc, "the published FourCC"),
                None => assert_eq!(p[0] & 0x0F, 7, "legacy H.264"),
            }
            match (codec.fourcc().is_some(), p[0], p.get(1).copied()) {
                (true, 0xD4, _) => Seen::VideoMetadata,
                (true, 0x90, _) | (false, 0x17, Some(0)) => Seen::VideoHeader,
                (true, 0x91 | 0x93, _) | (false, 0x17, Some(1)) => Seen::Keyframe,
                (true, 0xA1 | 0xA3, _) | (false, 0x27, Some(1)) => Seen::Inter,
                _ => Seen::Other(p[..p.len().min(6)].to_vec()),
            }
        }
        _ => Seen::Other(p[..p.len().min(6)].to_vec()),
    }
}

/// Waits until the stream is past its first GOP (a viewer has seen two keyframes), then
/// checks what a viewer joining now is sent first.
fn a_joining_viewer_starts_with_headers_then_a_keyframe(server: &Server, id: &str, codec: Codec) {
    let mut want = vec![
        Seen::Data("onStreamTime".into()),
        Seen::Data("onMetaData".into()),
    ];
    if codec != Codec::H264 {
        // ffmpeg sends `colorInfo` video metadata for HEVC, AV1 and VP9.
        want.push(Seen::VideoMetadata);
    }
    want.extend([Seen::VideoHeader, Seen::AudioHeader, Seen::Keyframe]);
    assert_eq!(joining_viewer_start(server, id, codec), want, "{codec:?}");
}

/// What a viewer joining once the stream is past its first GOP (another viewer has seen
/// two keyframes) gets, up to its first keyframe.
fn joining_viewer_start(server: &Server, id: &str, codec: Codec) -> Vec<Seen> {
    let path = format!("/live/{id}.flv");
    let mut first = FlvReader::open(server, &path);
    let mut keyframes = 0;
    for _ in 0..400 {
        if seen(codec, &first.next()) == Seen::Keyframe {
            keyframes += 1;
            if keyframes == 2 {
                break;
            }
        }
    }
    assert_eq!(keyframes, 2, "{codec:?}: two keyframes in 400 tags");
    let mut late = FlvReader::open(server, &path);
    let mut start = Vec::new();
    loop {
        let s = seen(codec, &late.next());
        let done = s == Seen::Keyframe;
        start.push(s);
        if done || start.len() > 10 {
            break;
        }
    }
    start
}

/// The current ffmpeg reading `url` for two seconds and decoding it: the codecs it
/// reports and its error lines.
fn read_back(url: &str) -> Child {
    Command::new(ffmpeg())
        .args(["-hide_banner", "-loglevel", "repeat+level+info"])
        .args(["-rw_timeout", "10000000", "-i", url])
        .args(["-t", "2", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg starts")
}

fn assert_decodes(what: &str, out: Output, codec: Codec) {
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: ffmpeg failed:\n{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[fatal]"))
        .collect();
    assert!(errors.is_empty(), "{what}: decode errors:\n{log}");
    let video = format!("Video: {}", codec.ffmpeg_name());
    let input: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("Input #0"))
        .take_while(|l| !l.contains("Stream mapping"))
        .collect();
    assert!(
        input.iter().any(|l| l.contains(&video)),
        "{what}: no {video} stream:\n{log}"
    );
    assert!(
        input.iter().any(|l| l.contains("Audio: aac")),
        "{what}: no AAC stream:\n{log}"
    );
}

/// The room's `play` object, from the room itself and from the live list.
fn play_urls(server: &Server, id: &str, token: &str) -> (Value, Value) {
    let one = ok(&call(
        server,
        "GET",
        &format!("/api/v1/rooms/{id}"),
        Some(token),
        None,
    ));
    assert_eq!(one["live"], true, "{one}");
    let list = ok(&call(
        server,
        "GET",
        "/api/v1/rooms?status=live",
        None,
        None,
    ));
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is in the live list: {list}"));
    (one["play"].clone(), item["play"].clone())
}

fn publishes_and_plays_back(codec: Codec) {
    publishes_and_plays_back_with(codec, false);
}

fn publishes_and_plays_back_with(codec: Codec, hls_fmp4: bool) {
    support::require("ffprobe");
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "auth.dev_login=true",
        "--set",
        "media.hls_segment_secs=1",
        "--set",
        if hls_fmp4 {
            "media.hls_fmp4=true"
        } else {
            "media.hls_fmp4=false"
        },
    ]);
    let (id, push, token) = room(&server);
    let _ff = publish(&push, codec, 40);
    wait_live(&server, &id);

    a_joining_viewer_starts_with_headers_then_a_keyframe(&server, &id, codec);

    // FLV and RTMP read back at once, each decoded for two seconds.
    let flv = read_back(&format!("http://{}/live/{id}.flv", server.http));
    let rtmp = read_back(&format!(
        "rtmp://{}/live/{id}",
        server.ready_field("rtmp").unwrap()
    ));
    assert_decodes("HTTP-FLV", flv.wait_with_output().unwrap(), codec);
    assert_decodes("RTMP", rtmp.wait_with_output().unwrap(), codec);

    let m3u8 = format!("/live/{id}.m3u8");
    let (one, listed) = match codec {
        Codec::H264 | Codec::Hevc | Codec::Av1 => {
            let r = server.get(&m3u8);
            assert_eq!(r.status, 200, "{}", r.text());
            let text = r.text();
            // HEVC and AV1, or anything with `media.hls_fmp4`, are fMP4; H.264 alone stays
            // TS.
            let fmp4 = codec != Codec::H264 || hls_fmp4;
            assert_eq!(text.contains("#EXT-X-MAP:URI=\""), fmp4, "{text}");
            assert_eq!(text.contains("#EXT-X-VERSION:7"), fmp4, "{text}");
            assert_eq!(text.contains(".m4s"), fmp4, "{text}");
            assert_eq!(text.contains(".ts"), !fmp4, "{text}");
            if fmp4 {
                fmp4_segments_are_served_as_such(&server, &text, codec);
            }
            let url = format!("http://{}{m3u8}", server.http);
            let streams = probe(&url);
            assert!(
                streams
                    .iter()
                    .any(|s| s.0 == "video" && s.1 == codec.ffmpeg_name()),
                "{streams:?}"
            );
            assert!(
                streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
                "{streams:?}"
            );
            // ffmpeg reads the playlist and its segments and decodes both tracks.
            assert_decodes("HLS", read_back(&url).wait_with_output().unwrap(), codec);
            let (one, listed) = play_urls(&server, &id, &token);
            for play in [&one, &listed] {
                assert!(play["hls"].as_str().is_some_and(|u| u.ends_with(".m3u8")));
            }
            (one, listed)
        }
        Codec::Vp9 => {
            let name = "VP9";
            let v = err(&server.get(&m3u8), 415, 41502);
            let message = v["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("{name} video")) && message.contains("HTTP-FLV"),
                "{message}"
            );
            // No segment either, and none was ever made of its audio alone.
            err(&server.get(&format!("/live/{id}-0.ts")), 415, 41502);
            let (one, listed) = play_urls(&server, &id, &token);
            for play in [&one, &listed] {
                assert!(play.get("hls").is_none(), "no play.hls for {name}: {play}");
            }
            (one, listed)
        }
    };
    for play in [&one, &listed] {
        assert!(play["flv"].as_str().is_some_and(|u| u.ends_with(".flv")));
        assert!(play["rtmp"]
            .as_str()
            .is_some_and(|u| u.starts_with("rtmp://")));
    }
}

#[test]
fn h264_from_a_current_ffmpeg_plays_over_flv_rtmp_and_hls() {
    publishes_and_plays_back(Codec::H264);
}

#[test]
fn hevc_over_enhanced_rtmp_plays_over_flv_rtmp_and_fmp4_hls() {
    publishes_and_plays_back(Codec::Hevc);
}

#[test]
fn h264_plays_over_fmp4_hls_with_hls_fmp4() {
    publishes_and_plays_back_with(Codec::H264, true);
}

/// The playlist's init segment (`video/mp4`: `ftyp` then `moov` with the codec's sample
/// entry) and a media segment (`video/iso.segment`: `moof` then `mdat`); neither under
/// the other container's extension.
fn fmp4_segments_are_served_as_such(server: &Server, playlist: &str, codec: Codec) {
    let map = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a MAP");
    let init = server.get(&format!("/live/{map}"));
    assert_eq!(init.status, 200, "{map}");
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    assert_eq!(&init.body[4..8], b"ftyp");
    let entry: &[u8] = match codec {
        Codec::Hevc => b"hvcC",
        Codec::Av1 => b"av1C",
        _ => b"avcC",
    };
    assert!(
        init.body.windows(4).any(|w| w == entry),
        "{entry:?} in {map}"
    );
    assert!(init.body.windows(4).any(|w| w == b"esds"));
    let seg = playlist
        .lines()
        .find(|l| l.ends_with(".m4s"))
        .expect("a segment");
    let r = server.get(&format!("/live/{seg}"));
    assert_eq!(r.status, 200, "{seg}");
    assert_eq!(r.header("content-type"), Some("video/iso.segment"));
    assert_eq!(&r.body[4..8], b"moof");
    let ts = seg.replace(".m4s", ".ts");
    assert_eq!(server.get(&format!("/live/{ts}")).status, 404, "{ts}");
}

#[test]
fn av1_over_enhanced_rtmp_plays_over_flv_rtmp_and_fmp4_hls() {
    publishes_and_plays_back(Codec::Av1);
}

#[test]
fn vp9_over_enhanced_rtmp_plays_over_flv_and_rtmp_and_hls_refuses_it_clearly() {
    publishes_and_plays_back(Codec::Vp9);
}

#[test]
fn a_second_audio_track_in_multitrack_form_keeps_its_header_for_joiners_and_hls_plays_on() {
    support::require("ffprobe");
    let server = Server::start(&[
        "--set",
        "auth.dev_login=true",
        "--set",
        "media.hls_segment_secs=1",
    ]);
    let (id, push, _) = room(&server);
    let _ff = publish_tracks(&push, Codec::H264, 40, 2);
    wait_live(&server, &id);
    // Track 1's header beside track 0's, not in place of it.
    assert_eq!(
        joining_viewer_start(&server, &id, Codec::H264),
        vec![
            Seen::Data("onStreamTime".into()),
            Seen::Data("onMetaData".into()),
            Seen::VideoHeader,
            Seen::AudioHeader,
            Seen::TrackHeader,
            Seen::TrackConfig,
            Seen::Keyframe,
        ]
    );
    // HLS carries the default tracks; the extra one is left out, not a refusal.
    let m3u8 = format!("/live/{id}.m3u8");
    let r = server.get(&m3u8);
    assert_eq!(r.status, 200, "{}", r.text());
    let streams = probe(&format!("http://{}{m3u8}", server.http));
    assert!(
        streams.iter().any(|s| s.0 == "video" && s.1 == "h264"),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{streams:?}"
    );
}
