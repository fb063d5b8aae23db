//! The body of an HTTP-FLV answer from another node, as a pull reads it: chunked transfer
//! coding, the FLV header, then tags, arriving in pieces of any size. Must never panic,
//! and never hold more than one tag's limit plus what arrived: a chunk size or a tag size
//! the input declares is never reserved.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveshard::live::pull::Body;

const MAX_TAG: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut body = Body::new(MAX_TAG);
    let mut input = BytesMut::new();
    for part in data.chunks(piece) {
        input.extend_from_slice(part);
        match body.feed(&mut input) {
            Err(_) => return,
            Ok(done) => {
                let ok = body.tags(|_, _, payload, _| assert!(payload.len() <= MAX_TAG));
                if ok.is_err() || done {
                    return;
                }
            }
        }
        // What is held back is at most a partial chunk-size line and its CRLF.
        assert!(input.len() <= 64 + piece + 2, "{} bytes held", input.len());
    }
});
