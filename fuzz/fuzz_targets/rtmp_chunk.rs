//! The RTMP chunk stream, two ways: the bare chunk decoder on the raw input, and a whole
//! server session that has completed a handshake (and, if the first byte says so, connect +
//! createStream + an accepted publish) fed the rest in input-chosen pieces, with every
//! publish/play request accepted so the media, metadata and aggregate paths are reached.
//! With bit 1 of the first byte set, the session gets the input from its first byte
//! instead, so the handshake (C0 version, C1 digest search) is fuzzed too.
//! The session runs on the real split: command-sized limits until the publish is accepted,
//! then `LIMITS`, with partial messages charged to a shared budget as a shard's are.
//! Must never panic, never hold a message over the limits, never hold more in partial
//! messages than the limits allow, and give the whole budget back when it goes away.
#![no_main]

use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveshard::media::amf0::Amf0Value;
use liveshard::media::rtmp::chunk::encode_message;
use liveshard::media::rtmp::message::command_body;
use liveshard::media::rtmp::{
    ChunkDecoder, ChunkLimits, Event, PartialBudget, ServerSession, SessionConfig,
};

const LIMITS: ChunkLimits = ChunkLimits {
    max_message_size: 256 * 1024,
    max_chunk_streams: 16,
    max_buffered: 512 * 1024,
};

fn command(out: &mut BytesMut, stream_id: u32, name: &str, txn: f64, args: &[Amf0Value]) {
    let body = command_body(name, txn, args);
    encode_message(out, 3, 20, stream_id, 0, &body, 128);
}

/// C0 + C1 + C2 (simple form), then optionally a publisher's opening commands.
fn preamble(publish: bool) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[3]);
    out.extend_from_slice(&[0u8; 2 * 1536]);
    if publish {
        let app = Amf0Value::object([("app", Amf0Value::string("live"))]);
        command(&mut out, 0, "connect", 1.0, &[app]);
        command(&mut out, 0, "createStream", 2.0, &[Amf0Value::Null]);
        let name = Amf0Value::string("test?txSecret=x&txTime=y");
        command(&mut out, 1, "publish", 0.0, &[Amf0Value::Null, name]);
    }
    out
}

fn drive(session: &mut ServerSession, bytes: &[u8]) -> bool {
    let ok = session.handle_input(bytes, Instant::now()).is_ok();
    while let Some(ev) = session.poll_event() {
        match ev {
            Event::Publish(_) => {
                let _ = session.accept_publish();
            }
            Event::Play(_) => {
                let _ = session.accept_play();
            }
            Event::Media(m) => assert!(m.payload.len() <= LIMITS.max_message_size as usize),
            _ => {}
        }
    }
    let _ = session.poll_transmit();
    ok && !session.is_closing()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);

    // The bare decoder.
    let mut dec = ChunkDecoder::new(LIMITS);
    let mut rest = data;
    while !rest.is_empty() {
        let cut = piece.min(rest.len());
        let mut chunk = &rest[..cut];
        rest = &rest[cut..];
        loop {
            match dec.decode(chunk) {
                Ok((used, msg)) => {
                    assert!(used <= chunk.len());
                    assert!(dec.buffered() <= LIMITS.max_buffered);
                    chunk = &chunk[used..];
                    match msg {
                        Some(m) => assert!(m.payload.len() <= LIMITS.max_message_size as usize),
                        None => break,
                    }
                }
                Err(_) => return drive_session(flags, piece, data),
            }
        }
    }
    drive_session(flags, piece, data);
});

fn drive_session(flags: u8, piece: usize, data: &[u8]) {
    let config = SessionConfig {
        chunk_limits: ChunkLimits::before_publish(),
        publish_chunk_limits: LIMITS,
        ..SessionConfig::default()
    };
    let budget = PartialBudget::new(LIMITS.max_buffered / 2);
    let mut session = ServerSession::new(config, Instant::now());
    session.set_publish_budget(budget.clone());
    run_session(&mut session, flags, piece, data);
    assert!(budget.used() <= budget.limit());
    drop(session);
    assert_eq!(budget.used(), 0, "a closed session keeps budget");
}

fn run_session(session: &mut ServerSession, flags: u8, piece: usize, data: &[u8]) {
    if flags & 2 == 0 && !drive(session, &preamble(flags & 1 == 1)) {
        return;
    }
    for chunk in data.chunks(piece) {
        if !drive(session, chunk) {
            return;
        }
    }
}
