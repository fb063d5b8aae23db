//! The HTTP/1.1 request parser: head parsing under the default limits, then the body
//! decoder for whatever framing the head declared, fed in two pieces at a split point the
//! input chooses. Must never panic, and never hold more body than the limit.
//!
//! The limit is huge on purpose: a buffer sized from a declared `Content-Length` (rather
//! than from the bytes that arrived) then trips `-malloc_limit_mb`. Every other input is
//! also decoded with a limit of 0, a route that takes no body.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveshard::http::codec::{parse_head, BodyDecoder, HeadLimits};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 16 * 1024,
    max_headers: 64,
};
const BODY_LIMIT: u64 = 1 << 40;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    // Pipelined: parse as many requests as the input holds.
    while consumed < data.len() {
        let (head, len) = match parse_head(&buf, LIMITS) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        assert!(len <= buf.len());
        let _ = buf.split_to(len);
        consumed += len;
        let limit = if split & 1 == 1 { 0 } else { BODY_LIMIT };
        let Ok(mut decoder) = BodyDecoder::new(head.framing, limit) else { return };
        // Feed the body in two pieces to exercise every resume point.
        let cut = (split as usize).min(buf.len());
        let mut first = buf.split_to(cut);
        let before = first.len();
        match decoder.decode(&mut first) {
            Ok(Some(body)) => {
                assert!(body.len() as u64 <= limit);
                consumed += before - first.len();
                first.unsplit(buf);
                buf = first;
                continue;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        consumed += before - first.len();
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(body)) => assert!(body.len() as u64 <= limit),
            _ => return,
        }
        consumed += before - buf.len();
    }
});
