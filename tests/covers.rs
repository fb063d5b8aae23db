//! Cover thumbnails, black-box against the real server: real JPEG and PNG uploads get 320
//! and 640 px wide JPEG thumbnails that ffprobe reads at the promised size, served with
//! long-lived caching and named in the room record; a decompression bomb (20,000 × 20,000
//! pixels in a few hundred KB) is refused from its header, quickly and without the memory a
//! decode would take; a truncated image with a valid header is refused cleanly.

mod support;

use std::io::{BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::api::{call, chunk, create_room, dev_login, err, ok, png};
use support::{read_response, HttpResponse, Server, TempDir};

const MIB: u64 = 1024 * 1024;

fn server() -> Server {
    Server::start(&["--shards", "2", "--set", "auth.dev_login=true"])
}

fn upload(server: &Server, token: &str, image: &[u8]) -> HttpResponse {
    server.request(
        "POST",
        "/api/v1/uploads/cover",
        &[("Authorization", &format!("Bearer {token}"))],
        image,
    )
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    format!("/{}", rest.split_once('/').unwrap().1)
}

/// A test picture made by ffmpeg (`testsrc2`) as `file` (its extension picks the codec).
fn ffmpeg_image(dir: &TempDir, file: &str, size: &str) -> Vec<u8> {
    support::require("ffmpeg");
    let path = dir.0.join(file);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}"))
        .args(["-frames:v", "1"])
        .arg(&path)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).unwrap()
}

/// (width, height) of `bytes` as ffprobe decodes them.
fn probe(dir: &TempDir, bytes: &[u8]) -> (u32, u32) {
    support::require("ffprobe");
    let path = dir.0.join(format!("probe-{}.jpg", support::rand_u64()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height,codec_name",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && text.starts_with("mjpeg,"), "{text}");
    let mut it = text.split(',').skip(1).map(|n| n.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Fetches a thumbnail URL: 200, a JPEG, cached for a year; returns its bytes.
fn fetch_thumb(server: &Server, url: &str) -> Vec<u8> {
    let r = server.get(&path_of(url));
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"), "{url}");
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable"),
        "{url}"
    );
    r.body
}

#[test]
fn uploads_get_320_and_640_thumbnails_that_a_real_decoder_reads_at_that_size() {
    let server = server();
    let dir = TempDir::new("covers");
    let alice = dev_login(&server, "alice");
    for (file, size, heights) in [
        ("photo.jpg", "1280x720", [180, 360]),
        ("shot.png", "1000x600", [192, 384]),
    ] {
        let image = ffmpeg_image(&dir, file, size);
        let up = ok(&upload(&server, &alice, &image));
        let (w, h) = size.split_once('x').unwrap();
        assert_eq!(up["width"].to_string(), w, "{up}");
        assert_eq!(up["height"].to_string(), h, "{up}");
        for (width, height) in [320, 640].into_iter().zip(heights) {
            let url = up["thumbs"][width.to_string()].as_str().unwrap();
            let thumb = fetch_thumb(&server, url);
            assert_eq!(
                probe(&dir, &thumb),
                (width, height),
                "{file} at {width}: {url}"
            );
            assert!(
                thumb.len() < image.len(),
                "{file}: a thumbnail smaller than the image"
            );
        }
        // The original is still served byte for byte.
        assert_eq!(
            server.get(&path_of(up["url"].as_str().unwrap())).body,
            image
        );

        // The room record names the thumbnails of its cover.
        let room = create_room(&server, &alice, "thumbs")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/api/v1/rooms/{room}");
        let body = json!({"cover_url": up["url"]});
        ok(&call(&server, "PATCH", &path, Some(&alice), Some(&body)));
        let got = ok(&call(&server, "GET", &path, None, None));
        assert_eq!(got["cover_url"], up["url"]);
        assert_eq!(got["cover_thumbs"], up["thumbs"], "{got}");
        // A cover from elsewhere has no thumbnails of ours.
        let body = json!({"cover_url": "https://img.example.com/a.png"});
        ok(&call(&server, "PATCH", &path, Some(&alice), Some(&body)));
        let got = ok(&call(&server, "GET", &path, None, None));
        assert_eq!(got["cover_thumbs"], Value::Null, "{got}");
    }

    // Smaller than a width: not enlarged, the thumbnail keeps the image's own size.
    let up = ok(&upload(&server, &alice, &png(200, 50)));
    for width in ["320", "640"] {
        let thumb = fetch_thumb(&server, up["thumbs"][width].as_str().unwrap());
        assert_eq!(probe(&dir, &thumb), (200, 50), "{width}");
    }
}

/// A zlib stream of `n` zero bytes in one fixed-Huffman block: a zero literal, then
/// matches of 258 at distance 1 (13 bits each: about 160 to 1), then the remainder as
/// literals. What a decompression bomb is made of.
fn zlib_zeros(n: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        /// `len` bits of `v`, least significant first (deflate's header fields).
        fn put(&mut self, v: u64, len: u32) {
            self.acc |= v << self.len;
            self.len += len;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// A Huffman code: most significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            for i in (0..len).rev() {
                self.put((code >> i) & 1, 1);
            }
        }
    }
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        len: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // fixed Huffman
    b.code(0x30, 8); // literal 0
    let matches = (n - 1) / 258;
    for _ in 0..matches {
        b.code(0xC5, 8); // length code 285: 258
        b.code(0, 5); // distance code 0: 1
    }
    for _ in 0..(n - 1) % 258 {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block
    if b.len > 0 {
        b.out.push(b.acc as u8); // to a byte boundary
    }
    // Adler-32 of n zeros: a stays 1, b adds 1 per byte.
    let adler = ((n % 65521) << 16) | 1;
    b.out.extend_from_slice(&(adler as u32).to_be_bytes());
    b.out
}

/// A PNG whose header says `w` × `h` (bit depth, colour type) with `idat` as its data.
fn png_with(w: u32, h: u32, depth: u8, color: u8, idat: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// (VmRSS, VmHWM) of the server, in bytes.
fn memory(server: &Server) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stored_covers(server: &Server) -> usize {
    std::fs::read_dir(server.data_dir.join("covers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_20000_by_20000_png_bomb_is_refused_from_its_header_quickly_with_bounded_rss() {
    let server = server();
    let alice = dev_login(&server, "alice");
    // A whole, valid 1-bit greyscale PNG: 50 MB of zero rows in 310 KB; decoded to 8-bit
    // greyscale (how decoders hand it out) it is 400 MB.
    let (w, h) = (20_000u32, 20_000u32);
    let rows = u64::from(h) * (1 + u64::from(w).div_ceil(8));
    let bomb = png_with(w, h, 1, 0, &zlib_zeros(rows));
    assert!(bomb.len() < 400 * 1024, "{}", bomb.len());
    // The same header in RGBA (1.6 GB decoded) with only the first few KB of its data.
    let rgba = png_with(w, h, 8, 6, &zlib_zeros(4 * u64::from(w) * 10)[..2000]);
    let (rss_before, _) = memory(&server);
    for (what, image) in [("1-bit", &bomb), ("RGBA", &rgba)] {
        let start = Instant::now();
        let r = upload(&server, &alice, image);
        let took = start.elapsed();
        let v = err(&r, 413, 41302);
        assert!(
            v["message"].as_str().unwrap().contains("20000 x 20000"),
            "{what}: {v}"
        );
        assert!(
            took < Duration::from_secs(3),
            "{what} bomb refused in {took:?}"
        );
        eprintln!("{what} bomb ({} bytes) refused in {took:?}", image.len());
    }
    let (rss_after, peak) = memory(&server);
    eprintln!(
        "RSS {} MiB before, {} MiB after, peak {} MiB",
        rss_before / MIB,
        rss_after / MIB,
        peak / MIB
    );
    assert!(
        peak.saturating_sub(rss_before) < 64 * MIB,
        "the bombs grew the server from {} MiB to a peak of {} MiB (decoding the smaller \
         one alone takes 400 MB)",
        rss_before / MIB,
        peak / MIB
    );
    assert_eq!(stored_covers(&server), 0, "nothing stored");
    // Still serving uploads.
    ok(&upload(&server, &alice, &png(8, 8)));
}

#[test]
fn a_truncated_image_with_a_valid_header_is_refused_cleanly() {
    let server = server();
    let alice = dev_login(&server, "alice");
    let image = png(64, 64);
    let cut = &image[..image.len() / 2];
    let v = err(&upload(&server, &alice, cut), 422, 42202);
    assert!(v["message"].as_str().unwrap().contains("decoded"), "{v}");
    // A valid header and a data stream of garbage.
    let garbage = png_with(64, 64, 8, 6, &[0x78, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
    err(&upload(&server, &alice, &garbage), 422, 42202);
    assert_eq!(stored_covers(&server), 0, "nothing stored");
    ok(&upload(&server, &alice, &image));
}

#[test]
fn uploads_past_the_decode_queue_are_busy_at_once_and_covers_are_served_meanwhile() {
    let server = Server::start(&["--shards", "2", "--set", "auth.dev_login=true"]);
    let dir = TempDir::new("covers-busy");
    let alice = dev_login(&server, "alice");
    let small = ok(&upload(&server, &alice, &png(64, 36)));
    let thumb = path_of(small["thumbs"]["320"].as_str().unwrap());
    // 6.5 Mpx: a few tenths of a second to decode each, longer than ten uploads take to
    // arrive.
    let big = ffmpeg_image(&dir, "big.jpg", "2560x2560");
    let addr = server.http;
    let head = format!(
        "POST /api/v1/uploads/cover HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {alice}\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let answers: Vec<(u16, u64, Duration)> = std::thread::scope(|s| {
        let uploads: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    let start = Instant::now();
                    let mut c = std::net::TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    c.write_all(head.as_bytes()).unwrap();
                    c.write_all(&big).unwrap();
                    let r = read_response(&mut BufReader::new(c)).expect("an answer");
                    (
                        r.status,
                        r.json()["code"].as_u64().unwrap(),
                        start.elapsed(),
                    )
                })
            })
            .collect();
        // While they are decoded, covers are still served at once.
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        let r = server.get(&thumb);
        assert_eq!(r.status, 200);
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "a thumbnail took {took:?} meanwhile"
        );
        uploads.into_iter().map(|u| u.join().unwrap()).collect()
    });
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let done = answers.iter().filter(|a| a.0 == 200).count();
    eprintln!("{answers:?}");
    // One decoding and 4 waiting: the rest of ten that arrive together are busy.
    assert!(done >= 1 && !busy.is_empty(), "{answers:?}");
    for b in busy {
        assert_eq!(b.1, 50301, "{answers:?}");
        assert!(
            b.2 < Duration::from_millis(500),
            "busy at once: {answers:?}"
        );
    }
}
