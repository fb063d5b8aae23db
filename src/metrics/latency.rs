//! The latency histograms' labels, the slots of the threads that are not shards, and the
//! rendering that adds every slot of a histogram together at scrape.

use super::histogram::{self, Histogram, Merged};
use super::render::escape_label;
use super::Metrics;

/// Label of HTTP requests that matched no route (404, 405) or failed before routing.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Outbound call kinds, the `kind` label of [`histogram::OUTBOUND`].
pub const OUTBOUND_KINDS: [&str; 3] = ["hook", "wechat_login", "wechat_token"];
/// Outbound call durations by [`OUTBOUND_KINDS`] index, written by the pool threads.
pub static OUTBOUND_TIMES: [Histogram; 3] = [const { Histogram::new() }; 3];

/// Store operations, the `op` label of [`histogram::STORE`]; the last is for any other.
pub const STORE_OPS: [&str; 18] = [
    "append_danmaku",
    "save_mods",
    "room_state",
    "danmaku_page",
    "put_user",
    "get_user",
    "user_by_openid",
    "put_room",
    "get_room",
    "list_rooms",
    "delete_room",
    "create_room",
    "update_room",
    "get_rooms",
    "open_rooms_page",
    "user_by_openid_or_create",
    "user_or_create",
    "other",
];
/// Store operation durations by [`STORE_OPS`] index, written by the store thread.
pub static STORE_TIMES: [Histogram; 18] = [const { Histogram::new() }; 18];

/// Records a store operation's duration (called on the store thread).
pub fn observe_store(op: &str, d: std::time::Duration) {
    let i = STORE_OPS
        .iter()
        .position(|o| *o == op)
        .unwrap_or(STORE_OPS.len() - 1);
    STORE_TIMES[i].observe_shared(&histogram::STORE, d);
}

/// Media protocols, the `protocol` label of [`histogram::TTFF`].
pub const TTFF_PROTOCOLS: [&str; 2] = ["rtmp", "flv"];

/// How many rooms `liveshard_room_online` lists at most (the busiest).
pub const TOP_ROOMS: usize = 20;

/// Appends the latency histograms, each shard's slots added together. Routes nobody
/// asked for yet are left out (their family header is always there).
pub(super) fn render(metrics: &Metrics, out: &mut String) {
    histogram::header(out, &histogram::HTTP);
    let labels = metrics.routes.iter().copied().chain([UNMATCHED_ROUTE]);
    for (i, route) in labels.enumerate() {
        let mut m = Merged::default();
        for s in metrics.shards.iter() {
            m.add(&s.http_durations[i]);
        }
        if m.count() > 0 {
            let label = format!("route=\"{}\"", escape_label(route));
            m.render(out, &histogram::HTTP, &label);
        }
    }
    histogram::header(out, &histogram::DANMAKU);
    let mut m = Merged::default();
    for s in metrics.shards.iter() {
        m.add(&s.danmaku_delivery);
    }
    m.render(out, &histogram::DANMAKU, "");
    histogram::header(out, &histogram::TTFF);
    for (i, p) in TTFF_PROTOCOLS.iter().enumerate() {
        let mut m = Merged::default();
        for s in metrics.shards.iter() {
            m.add(&s.ttff[i]);
        }
        m.render(out, &histogram::TTFF, &format!("protocol=\"{p}\""));
    }
    histogram::header(out, &histogram::OUTBOUND);
    for (kind, h) in OUTBOUND_KINDS.iter().zip(&OUTBOUND_TIMES) {
        let mut m = Merged::default();
        m.add(h);
        m.render(out, &histogram::OUTBOUND, &format!("kind=\"{kind}\""));
    }
    histogram::header(out, &histogram::STORE);
    for (op, h) in STORE_OPS.iter().zip(&STORE_TIMES) {
        let mut m = Merged::default();
        m.add(h);
        if m.count() > 0 {
            m.render(out, &histogram::STORE, &format!("op=\"{op}\""));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn shards_slots_are_added_and_unknown_routes_share_one_label() {
        let m = Metrics::new(2, shards::DriverInUse::Epoll, ["/b", "/a/{id}", "/b", "/c"]);
        let a = m.route_index(Some("/a/{id}"));
        assert_ne!(a, m.route_index(None));
        assert_eq!(m.route_index(Some("/zzz")), m.route_index(None));
        m.shards[0].observe_http(a, Duration::from_micros(300));
        m.shards[1].observe_http(a, Duration::from_millis(3));
        m.shards[1].observe_http(m.route_index(None), Duration::from_micros(50));
        let mut out = String::new();
        render(&m, &mut out);
        let http = "liveshard_http_request_duration_seconds";
        assert!(out.contains(&format!("{http}_count{{route=\"/a/{{id}}\"}} 2\n")));
        assert!(out.contains(&format!(
            "{http}_bucket{{route=\"/a/{{id}}\",le=\"0.0005\"}} 1\n"
        )));
        assert!(out.contains(&format!("{http}_sum{{route=\"/a/{{id}}\"}} 0.0033\n")));
        assert!(out.contains(&format!("{http}_count{{route=\"unmatched\"}} 1\n")));
        assert!(
            !out.contains("route=\"/b\""),
            "routes not asked for are left out"
        );
        assert_eq!(out.matches("# TYPE ").count(), 5, "{out}");
    }
}
