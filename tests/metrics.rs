//! What an operator graphs: `/metrics` is valid Prometheus text; its latency histograms
//! move with known traffic (HTTP by route pattern, danmaku delivery, time to first frame);
//! the busiest rooms' online counts and the standard process metrics are there; and every
//! metric the Grafana dashboard (`deploy/grafana/liveshard.json`) queries exists.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::media::{publish, rtmp_addr, signed_url, wait_live};
use support::ws::Client;
use support::{eventually, token, HookServer, Server};

const T: Duration = Duration::from_secs(20);

/// The scrape, checked for what Prometheus insists on, as (sample → value).
fn scrape(server: &Server) -> HashMap<String, f64> {
    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            let again = typed.insert(name.to_string(), kind.to_string());
            assert!(again.is_none(), "TYPE of {name} given twice");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = key.split('{').next().unwrap();
        let family = [name]
            .into_iter()
            .chain(
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s)),
            )
            .find(|f| typed.contains_key(*f))
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if family != name {
            assert_eq!(typed[family], "histogram", "{line}");
        }
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "sample twice: {key}"
        );
    }
    samples
}

fn count(m: &HashMap<String, f64>, family: &str, labels: &str) -> f64 {
    let key = if labels.is_empty() {
        format!("{family}_count")
    } else {
        format!("{family}_count{{{labels}}}")
    };
    m.get(&key).copied().unwrap_or(0.0)
}

const HTTP: &str = "liveshard_http_request_duration_seconds";

#[test]
fn requests_are_timed_under_their_route_pattern_never_their_path() {
    let server = Server::start(&["--shards", "2"]);
    let before = count(&scrape(&server), HTTP, "route=\"/healthz\"");
    for _ in 0..25 {
        assert_eq!(server.get("/healthz").status, 200);
    }
    for id in ["a1", "b2", "c3"] {
        assert_eq!(server.get(&format!("/api/v1/rooms/{id}")).status, 404);
    }
    assert_eq!(server.get("/no/such/page").status, 404);
    let m = scrape(&server);
    assert!(
        count(&m, HTTP, "route=\"/healthz\"") >= before + 25.0,
        "healthz count {} after 25 requests",
        count(&m, HTTP, "route=\"/healthz\"")
    );
    assert_eq!(count(&m, HTTP, "route=\"/api/v1/rooms/{id}\""), 3.0);
    assert!(count(&m, HTTP, "route=\"unmatched\"") >= 1.0);
    assert!(
        !m.keys().any(|k| k.contains("a1") || k.contains("/no/such")),
        "a raw path became a label"
    );
    // Buckets are cumulative and end at the count.
    let le = |b: &str| m[&format!("{HTTP}_bucket{{route=\"/healthz\",le=\"{b}\"}}")];
    assert!(le("0.001") <= le("1") && le("1") <= le("+Inf"));
    assert_eq!(le("+Inf"), count(&m, HTTP, "route=\"/healthz\""));
}

#[test]
fn a_danmaku_post_seen_by_a_viewer_moves_the_delivery_histogram_and_the_room_gauge() {
    let server = Server::start(&["--shards", "2"]);
    let family = "liveshard_danmaku_delivery_seconds";
    let before = count(&scrape(&server), family, "");
    let mut viewer = Client::connect(server.http, "room=graphs").expect("upgrade");
    viewer.expect("history", T);
    let query = format!("room=graphs&token={}", token(&server, "u1", &[]));
    let mut sender = Client::connect(server.http, &query).expect("upgrade");
    sender.expect("history", T);
    sender.send(json!({"type": "danmaku", "text": "hello", "cid": "c1"}));
    viewer.expect("batch", T);
    let m = eventually(T, || {
        let m = scrape(&server);
        (count(&m, family, "") > before).then_some(m)
    })
    .expect("the delivery histogram counted the batch");
    let sum = m[&format!("{family}_sum")];
    assert!(
        sum < 10.0,
        "a batch delivered at once took {sum} s in the histogram"
    );
    let online = eventually(T, || {
        let m = scrape(&server);
        m.get("liveshard_room_online{room=\"graphs\"}")
            .copied()
            .filter(|n| *n >= 2.0)
    });
    assert_eq!(online, Some(2.0), "two connections in the room");
    // The room's state was loaded from the store when it was first joined.
    let store = "liveshard_store_request_duration_seconds";
    assert!(count(&scrape(&server), store, "op=\"room_state\"") >= 1.0);
}

#[test]
fn flv_and_rtmp_players_of_a_live_stream_move_the_time_to_first_frame_and_hook_histograms() {
    let hook = HookServer::start(200, "0");
    let on_play = format!("media.on_play={}", hook.url);
    let server = Server::start(&["--shards", "2", "--set", &on_play]);
    let _ff = publish(&signed_url(&server, "ttff", &[]), 30);
    wait_live(&server, "ttff");
    let family = "liveshard_media_ttff_seconds";
    let before = count(&scrape(&server), family, "protocol=\"flv\"");
    let mut player = server.connect();
    write!(player, "GET /live/ttff.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    player
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Read until well past the cached GOP's first keyframe.
    let mut got = 0;
    let mut buf = [0u8; 16384];
    while got < 64 * 1024 {
        let n = player.read(&mut buf).expect("media bytes");
        assert!(n > 0, "stream ended early");
        got += n;
    }
    let after = eventually(T, || {
        let n = count(&scrape(&server), family, "protocol=\"flv\"");
        (n > before).then_some(n)
    });
    assert!(after.is_some(), "no time to first frame was recorded");
    // An RTMP player (ffmpeg) too.
    let rtmp = format!("rtmp://{}/live/ttff", rtmp_addr(&server));
    let played = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &rtmp, "-t", "1", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(played.status.success(), "{played:?}");
    let rtmp_ttff = count(&scrape(&server), family, "protocol=\"rtmp\"");
    assert!(rtmp_ttff >= 1.0, "RTMP play timed: {rtmp_ttff}");
    let m = scrape(&server);
    let hooks = count(
        &m,
        "liveshard_outbound_request_duration_seconds",
        "kind=\"hook\"",
    );
    assert!(hooks >= 1.0, "on_play calls timed: {hooks}");
}

#[test]
fn process_metrics_report_a_start_time_of_now_and_open_descriptors() {
    let server = Server::start(&[]);
    let m = scrape(&server);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = m["process_start_time_seconds"];
    assert!((now - start).abs() < 120.0, "start time {start}, now {now}");
    assert!(m["process_open_fds"] >= 3.0, "{}", m["process_open_fds"]);
    assert!(m["process_max_fds"] >= m["process_open_fds"]);
    assert!(m["process_cpu_seconds_total"] > 0.0);
    assert!(m["process_resident_memory_bytes"] > 1e6);
}

// --- the dashboard ------------------------------------------------------------------------

/// Every PromQL expression in the dashboard (panel targets, nested rows, variables).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// The metric names an expression uses: identifiers outside label matchers, quoted
/// strings and range selectors, of our families (`liveshard_*`, `process_*`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let (mut depth, mut quoted) = (0, false);
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("liveshard_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_the_grafana_dashboard_queries_exists_on_a_fresh_server() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/liveshard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    // Every panel queries the chosen data source, and ids are unique.
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id twice: {p}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 15, "only {} queries", all.len());

    // No traffic at all: every family renders its HELP and TYPE regardless (the cluster
    // families with `cluster.redis` set: a node of a cluster of one).
    let redis = support::redis::RedisServer::start();
    let server = Server::start(&["--redis", &redis.url()]);
    let text = server.get("/metrics").text();
    let mut exposed: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            exposed.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    exposed.insert(format!("{name}{s}"));
                }
            }
        }
    }
    let mut missing = Vec::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "a query with no metric of ours: {e}");
        missing.extend(names.into_iter().filter(|n| !exposed.contains(n)));
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}"
    );
}

#[test]
fn dashboard_queries_are_read_past_label_matchers_and_ranges() {
    let e = r#"histogram_quantile(0.99, sum by (le, route) (rate(liveshard_http_request_duration_seconds_bucket{route=~"/api.*",job="$job"}[$__rate_interval])))"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        ["liveshard_http_request_duration_seconds_bucket"]
    );
}
