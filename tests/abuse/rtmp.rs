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
    eprintln!("closed after {} KiB sent; RSS grew by {} KiB", sent / 1024, grown / 1024);
    assert!(
        grown < 16 * MIB,
        "RSS grew by {} MiB for {} MiB of unread pongs",
        grown / MIB,
        sent / MIB as usize
    );
}
