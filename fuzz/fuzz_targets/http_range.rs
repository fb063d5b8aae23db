//! `Range` / `If-Range` resolution (VOD): arbitrary header values against arbitrary
//! lengths. Must never panic, and a part it answers always lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveshard::http::range::{resolve, Ranged};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, rest) = data.split_at(8);
    // Lengths from 0 up, small ones most often, the largest ones too.
    let len = u64::from_le_bytes(len.try_into().unwrap()) >> (len[0] % 64);
    let text = String::from_utf8_lossy(rest);
    let (range, if_range) = text.split_once('\n').unwrap_or((&text, ""));
    let if_range = (!if_range.is_empty()).then_some(if_range);
    match resolve(Some(range), if_range, "\"e\"", len) {
        Ranged::Part { start, end } => assert!(start <= end && end < len),
        Ranged::Full | Ranged::Unsatisfiable => {}
    }
});
