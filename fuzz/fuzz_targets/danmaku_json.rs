//! The danmaku client-message parser and the text hygiene that follows it: arbitrary bytes
//! as a text frame's payload. Must never panic; accepted ids stay within their limits and
//! cleaned text has no control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveshard::danmaku::hygiene::clean_text;
use liveshard::danmaku::protocol::{parse_client, parse_color, ClientMsg, MAX_CID};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse_client(data) else { return };
    match msg {
        ClientMsg::Danmaku { cid, text, color, .. } => {
            assert!(cid.is_none_or(|c| c.len() <= MAX_CID));
            let cleaned = clean_text(&text);
            assert!(!cleaned.chars().any(char::is_control));
            if let Some(c) = parse_color(color.as_deref()) {
                assert_eq!(c.len(), 7);
            }
        }
        ClientMsg::Pm { to, text, .. } => {
            assert!(!to.is_empty() && to.len() <= 64);
            let _ = clean_text(&text);
        }
        _ => {}
    }
});
