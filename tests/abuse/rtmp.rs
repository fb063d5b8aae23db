//! Abuse tests: rtmp. See `main.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use liveshard::media::rtmp::chunk::encode_message;

use super::support::media::{publish, rtmp_addr, signed_url, wait_live};
use super::*;

/// A client that completes the handshake (C0+C1, then S1 echoed as C2) and nothing more.
fn handshaken(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(rtmp_addr(server)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    s.read_exact(&mut s0s1s2).unwrap();
    s.write_all(&s0s1s2[1..1537]).unwrap();
    s
}

/// Defect 3: the chunk decoder allocated each message's declared length at its first
/// chunk, before any publish was accepted. 16 chunk streams declaring 1,048,512-byte video
/// messages, one 128-byte chunk each (~2.3 KB sent), held 16.4 MB per connection until
/// the 15 s setup timeout: 20 such connections, +328 MB.
#[test]
fn unauthenticated_rtmp_clients_declaring_huge_messages_hold_little_and_are_closed() {
    let server = Server::start(&["--shards", "1"]);
    // The first chunk of a 1,048,512-byte video message on each of 16 chunk streams,
    // written by the project's own encoder.
    let body = vec![0x17u8; 1_048_512];
    let mut attack = Vec::new();
    for csid in 3..19 {
        let mut out = BytesMut::new();
        encode_message(&mut out, csid, 9, 1, 0, &body, 128);
        attack.extend_from_slice(&out[..12 + 128]);
    }
    let before = rss_bytes(&server);
    let mut conns = Vec::new();
    let peak = peak_rss_during(&server, Duration::from_millis(500), || {
        for _ in 0..20 {
            let mut s = handshaken(&server);
            // Written whole: the server may close as soon as it reads the first header.
            let _ = s.write_all(&attack);
            conns.push(s);
        }
    });
    let grown = peak.saturating_sub(before);
    eprintln!("RSS grew by {} KiB during the attack", grown / 1024);
    assert!(
        grown < 40 * MIB,
        "RSS grew by {} MiB for 20 connections of {} bytes each (the old decoder held ~328 MB)",
        grown / MIB,
        attack.len() + 1537 + 1536
    );
    for (i, mut s) in conns.into_iter().enumerate() {
        assert!(
            support::closed_within(&mut s, Duration::from_secs(5)),
            "connection {i} was not closed (it declared media before any publish)"
        );
    }
    // A real publisher still gets through afterwards.
    let _ff = publish(&signed_url(&server, "after", &[]), 10);
    wait_live(&server, "after");
}

/// Beyond the list: every ping (or command) is answered, and the answers were queued for
/// a peer that never reads until the 30 s write timeout — as much as it could send in
/// that time. A peer that does not read its replies is now closed once 64 KiB wait.
#[test]
fn an_rtmp_client_that_sends_pings_and_never_reads_the_pongs_is_closed() {
    use liveshard::media::rtmp::message::user_control_event;
    let server = Server::start(&["--shards", "1"]);
    let mut s = handshaken(&server);
    // A small receive buffer, so the pongs back up into the server soon.
    let small: libc::c_int = 4096;
    // SAFETY: a valid socket descriptor and an int-sized option value.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut block = BytesMut::new();
    while block.len() < 64 * 1024 {
        encode_message(&mut block, 2, 4, 0, 0, &user_control_event(6, 7), 128);
    }
    let before = rss_bytes(&server);
    let limit = 64 * MIB as usize;
    let mut sent = 0usize;
    let peak = peak_rss_during(&server, Duration::from_millis(200), || {
        while sent < limit {
            match s.write(&block) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
    });
    assert!(
        sent < limit,
        "still open after {} MiB of pings whose pongs were never read",
        sent / MIB as usize
    );
    let grown = peak.saturating_sub(before);
    eprintln!(
        "closed after {} KiB sent; RSS grew by {} KiB",
        sent / 1024,
        grown / 1024
    );
    assert!(
        grown < 16 * MIB,
        "RSS grew by {} MiB for {} MiB of unread pongs",
        grown / MIB,
        sent / MIB as usize
    );
}

/// Writes one AMF0 command on chunk stream 3.
fn command(s: &mut TcpStream, stream_id: u32, values: &[liveshard::media::amf0::Amf0Value]) {
    let mut out = BytesMut::new();
    let body = liveshard::media::amf0::encode_all(values);
    encode_message(&mut out, 3, 20, stream_id, 0, &body, 128);
    s.write_all(&out).unwrap();
}

/// Reads until `needle` has been seen in what the server sent (or panics on close/timeout).
fn read_until(s: &mut TcpStream, needle: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut buf).expect("the server answers");
        assert!(n > 0, "closed before {}", String::from_utf8_lossy(needle));
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Authenticated publishers together are bounded too: partial messages of all the
/// publishers of a shard share `media.max_partial_bytes_per_shard`, and the one whose
/// chunk would pass it is closed, logged and counted.
#[test]
fn publishers_holding_many_partial_messages_are_closed_at_the_shards_bound() {
    use liveshard::media::amf0::Amf0Value as V;
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "media.max_message_bytes=1048576",
        "--set",
        "media.max_partial_bytes_per_shard=1048576",
    ]);
    let url = signed_url(&server, "heavy", &[]);
    let (_, name) = url.rsplit_once('/').unwrap();
    let mut s = handshaken(&server);
    let tc_url = format!("rtmp://{}/live", rtmp_addr(&server));
    command(
        &mut s,
        0,
        &[
            V::string("connect"),
            V::Number(1.0),
            V::object([("app", V::string("live")), ("tcUrl", V::string(tc_url))]),
        ],
    );
    command(
        &mut s,
        0,
        &[V::string("createStream"), V::Number(2.0), V::Null],
    );
    command(
        &mut s,
        1,
        &[
            V::string("publish"),
            V::Number(0.0),
            V::Null,
            V::string(name),
            V::string("live"),
        ],
    );
    read_until(&mut s, b"NetStream.Publish.Start");

    // Chunks of 256 KiB; the first chunk of a 1,000,000-byte video message on each of five
    // chunk streams: four fill the shard's 1 MiB, the fifth would pass it.
    let chunk = 256 * 1024;
    let mut out = BytesMut::new();
    encode_message(&mut out, 2, 1, 0, 0, &(chunk as u32).to_be_bytes(), 128);
    let body = vec![0x17u8; 1_000_000];
    for csid in 4..9 {
        let mut m = BytesMut::new();
        encode_message(&mut m, csid, 9, 1, 0, &body, chunk as u32);
        out.extend_from_slice(&m[..12 + chunk]);
    }
    let _ = s.write_all(&out);
    assert!(
        support::closed_within(&mut s, Duration::from_secs(5)),
        "the publisher past the shard's bound was not closed"
    );
    let closed = support::eventually(Duration::from_secs(5), || {
        server
            .metric("liveshard_media_partial_limit_closed_total{shard=\"0\"}")
            .filter(|v| *v >= 1.0)
    });
    assert_eq!(closed, Some(1.0), "not counted");
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("max_partial_bytes_per_shard")),
        "no log line says why"
    );
}
