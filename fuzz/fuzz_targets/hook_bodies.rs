//! The hook receiver's body parsers: arbitrary bytes as an nginx-rtmp form and as an SRS
//! JSON body. Must never panic; a publish or play always names its app and stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveshard::api::hooks::{parse_nginx_rtmp, parse_srs, Action, HookCall};

fn check(call: &HookCall) {
    if matches!(call.action, Action::Publish | Action::Play) {
        assert!(!call.app.is_empty());
        assert!(!call.stream.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(call) = parse_nginx_rtmp(data) {
        check(&call);
    }
    if let Ok(call) = parse_srs(data) {
        check(&call);
    }
});
