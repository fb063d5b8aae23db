//! The WebSocket frame decoder: arbitrary bytes as a client would send them, fed in two
//! pieces. Must never panic; every message it returns is within the limits, and text is
//! valid UTF-8.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveshard::ws::{Decoder, Message, WsLimits};

const LIMITS: WsLimits = WsLimits {
    max_frame: 4096,
    max_message: 8192,
};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let cut = (split as usize * data.len()) / 255;
    let mut decoder = Decoder::new(LIMITS);
    let mut buf = BytesMut::new();
    for piece in [&data[..cut], &data[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => match m {
                    Message::Text(t) => {
                        assert!(t.len() <= LIMITS.max_message);
                        assert!(std::str::from_utf8(&t).is_ok());
                    }
                    Message::Binary(b) => assert!(b.len() <= LIMITS.max_message),
                    Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
                    Message::Close(_) => {}
                },
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    return;
                }
            }
        }
    }
});
