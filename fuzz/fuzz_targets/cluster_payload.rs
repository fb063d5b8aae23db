//! A message on a room's Redis channel, as another node (or anything that can publish on
//! the channel) sent it: `i<first> <last>` and one line per item, or `c<body>`. Must never
//! panic, and what it reads is no more than what came: one item per line at most, each a
//! slice of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveshard::cluster::{parse_payload, Parsed};

fuzz_target!(|data: &[u8]| {
    match parse_payload(data) {
        Some(Parsed::Items { items, .. }) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count();
            assert!(items.len() <= lines);
            let bytes: usize = items.iter().map(|(_, i)| i.len() + 2).sum();
            assert!(bytes <= data.len());
        }
        Some(Parsed::Control(body)) => assert_eq!(body.len() + 1, data.len()),
        None => {}
    }
});
