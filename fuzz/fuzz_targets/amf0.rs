//! The AMF0 decoder: one value and a whole command sequence, under the default limits.
//! Must never panic or recurse past the depth limit; whatever decodes must re-encode to
//! bytes that decode to the same encoding (lossy strings and NaNs normalise on the first
//! pass, so the comparison is between the first and second encodings).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveshard::media::amf0::{decode, decode_all, encode, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok((value, used)) = decode(data, limits) {
        assert!(used <= data.len());
        let mut once = BytesMut::new();
        encode(&value, &mut once);
        let (again, used_again) = decode(&once, limits).expect("our encoding decodes");
        assert_eq!(used_again, once.len());
        let mut twice = BytesMut::new();
        encode(&again, &mut twice);
        assert_eq!(once, twice);
    }
    let _ = decode_all(data, limits);
});
