//! The `--html` report: one self-contained page (inline CSS and SVG, no scripts, no fonts or
//! anything else fetched) with the run's parameters, the summary figures exactly as the JSON
//! report has them, throughput and latency percentiles over the window, and the latency
//! histogram in log-scaled buckets. Every text that comes from the run (URL, flags, error
//! samples, keys) is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::Value;

use crate::hist::Percentiles;
use crate::report::{thousands, Report, Results};
use crate::timeline::Timeline;

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
/// Histogram buckets per decade of latency.
const PER_DECADE: f64 = 4.0;
/// Line colours: p50, p90, p99, max (and the single series of a throughput chart).
const COLOURS: [&str; 4] = ["#1f77b4", "#2ca02c", "#ff7f0e", "#d62728"];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:800px;\
color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}table{border-collapse:\
collapse;font-size:.9em}td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.cards{display:flex;flex-wrap:wrap;\
gap:8px}.card{border:1px solid #ccc;border-radius:6px;padding:6px 12px;min-width:110px}\
.card b{display:block;font-size:1.25em}.card span{font-size:.8em;color:#555}.warn{background:\
#fff3cd;border:1px solid #e0b000;border-radius:6px;padding:8px 12px;margin:8px 0}\
svg{font-size:11px}svg text{fill:#333}.axis{stroke:#888}.grid{stroke:#eee}";

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page. `hist`: the merged latency histogram, for the scenarios that have one.
pub fn page(report: &Report, url: &str, hist: Option<&Histogram<u64>>) -> String {
    let scenario = report.config["scenario"].as_str().unwrap_or("loadgen");
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>loadgen {} {}</title><style>{STYLE}</style></head><body>\n\
         <h1>loadgen {} <code>{}</code></h1>\n<p>Started {} · loadgen {}</p>\n",
        esc(scenario),
        esc(url),
        esc(scenario),
        esc(url),
        esc(&utc(report.started_unix_ms)),
        esc(report.version),
    );
    for w in &report.warnings {
        let _ = writeln!(s, "<div class=\"warn\"><b>Warning:</b> {}</div>", esc(w));
    }
    s.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
    for (label, value) in cards(&report.results) {
        let _ = writeln!(
            s,
            "<div class=\"card\"><span>{}</span><b>{}</b></div>",
            esc(&label),
            esc(&value)
        );
    }
    s.push_str("</div>\n");
    if let Some(t) = &report.timeline {
        charts(&mut s, &report.results, t);
    }
    if let Some(h) = hist.filter(|h| !h.is_empty()) {
        let what = match &report.results {
            Results::Media(r) if r.hls.is_some() => "Latency, ingest → received",
            Results::Media(_) => "Time to first frame",
            _ => "Latency, publish → deliver",
        };
        let _ = writeln!(s, "<h2>{what}: histogram</h2>\n{}", histogram_svg(h));
    }
    s.push_str("<h2>Results</h2>\n");
    let results = serde_json::to_value(&report.results).unwrap_or(Value::Null);
    table(&mut s, &results);
    s.push_str("<h2>Parameters</h2>\n");
    table(&mut s, &report.config);
    s.push_str("<h2>Machine</h2>\n");
    table(
        &mut s,
        &serde_json::to_value(&report.machine).unwrap_or(Value::Null),
    );
    s.push_str("</body></html>\n");
    s
}

/// The headline figures, formatted as the summary line and the results table format them.
fn cards(results: &Results) -> Vec<(String, String)> {
    let us = |v: u64| format!("{} µs", thousands(v));
    let mut c = Vec::new();
    match results {
        Results::Fanout(r) => {
            c.push(("delivered".into(), thousands(r.deliveries)));
            c.push(("expected".into(), thousands(r.expected_deliveries)));
            c.push((
                "delivered/s".into(),
                thousands(r.deliveries_per_sec.round() as u64),
            ));
            c.push(("sent/s".into(), format!("{:.1}", r.sent_per_sec)));
            latency_cards(&mut c, "latency", &r.latency_us);
            c.push(("connect errors".into(), thousands(r.connections.failed)));
            c.push(("server errors".into(), thousands(r.server_errors)));
            c.push((
                "refused (rate limit)".into(),
                thousands(r.refused_rate_limited),
            ));
            c.push((
                "server dropped".into(),
                r.server_dropped.map_or("—".into(), thousands),
            ));
            c.push((
                "server shed".into(),
                r.server_shed.map_or("—".into(), thousands),
            ));
            c.push((
                "disconnects".into(),
                thousands(r.disconnects.values().sum()),
            ));
            c.push(("send lag p99".into(), us(r.send_lag_us.p99)));
        }
        Results::Idle(r) => {
            c.push(("up".into(), thousands(r.connections.up)));
            c.push(("connect errors".into(), thousands(r.connections.failed)));
            c.push((
                "bytes per connection".into(),
                r.bytes_per_conn.map_or("—".into(), |b| format!("{b:.0}")),
            ));
            c.push((
                "disconnects".into(),
                thousands(r.disconnects.values().sum()),
            ));
        }
        Results::Media(r) => {
            c.push(("viewers held".into(), thousands(r.viewers_held)));
            c.push(("viewers at start".into(), thousands(r.viewers_at_start)));
            c.push(("Mbit/s".into(), format!("{:.1}", r.mbit_per_sec)));
            match &r.hls {
                Some(h) => {
                    let l = &h.ingest_to_received_us;
                    for (name, v) in [
                        ("p50", l.p50),
                        ("p90", l.p90),
                        ("p99", l.p99),
                        ("max", l.max),
                    ] {
                        c.push((
                            format!("ingest→received {name}"),
                            format!("{:.1} ms", v as f64 / 1000.0),
                        ));
                    }
                    c.push(("received early".into(), thousands(l.below_zero)));
                    if h.mode != "plain" {
                        let hold = &h.blocking_reload_hold_us;
                        for (name, v) in [("p50", hold.p50), ("p99", hold.p99)] {
                            let ms = format!("{:.1} ms", v as f64 / 1000.0);
                            c.push((format!("reload hold {name}"), ms));
                        }
                    }
                    c.push((
                        "HLS errors".into(),
                        thousands(h.counts.errors.values().sum()),
                    ));
                }
                None => latency_cards(&mut c, "TTFF", &r.ttff_us),
            }
            c.push(("stalls in window".into(), thousands(r.stalls_in_window)));
            c.push(("connect errors".into(), thousands(r.connections.failed)));
            c.push((
                "disconnects".into(),
                thousands(r.disconnects.values().sum()),
            ));
        }
    }
    c
}

fn latency_cards(c: &mut Vec<(String, String)>, what: &str, p: &Percentiles) {
    for (name, v) in [
        ("p50", p.p50),
        ("p90", p.p90),
        ("p99", p.p99),
        ("p99.9", p.p999),
        ("max", p.max),
    ] {
        c.push((format!("{what} {name}"), format!("{} µs", thousands(v))));
    }
}

fn charts(s: &mut String, results: &Results, t: &Timeline) {
    let pts = &t.points;
    if pts.is_empty() {
        return;
    }
    let x_max = t.window_s;
    let series = |f: fn(&crate::timeline::Point) -> f64| -> Vec<(f64, f64)> {
        pts.iter().map(|p| (p.t_s + p.secs / 2.0, f(p))).collect()
    };
    let (title, unit, one): (&str, &str, Vec<(f64, f64)>) = match results {
        Results::Fanout(_) => (
            "Deliveries per second",
            "msgs/s",
            series(|p| p.deliveries_per_sec),
        ),
        Results::Media(_) => ("Received", "Mbit/s", series(|p| p.mbit_per_sec)),
        Results::Idle(_) => ("Connections up", "connections", series(|p| p.up as f64)),
    };
    let _ = writeln!(
        s,
        "<h2>{title} ({} s intervals)</h2>\n{}",
        t.interval_s,
        line_chart(unit, x_max, &[(unit, COLOURS[0], one)])
    );
    // Media latencies are times to first frame, taken while viewers connect (before the
    // window): over the window they would be a few stragglers, not a curve. HLS latencies
    // are taken all through the window, as fan-out's are.
    let curve = match results {
        Results::Fanout(_) => true,
        Results::Media(r) => r.hls.is_some(),
        Results::Idle(_) => false,
    };
    if curve && pts.iter().any(|p| p.latency_us.count > 0) {
        let lat = |f: fn(&Percentiles) -> u64| -> Vec<(f64, f64)> {
            pts.iter()
                .filter(|p| p.latency_us.count > 0)
                .map(|p| (p.t_s + p.secs / 2.0, f(&p.latency_us) as f64 / 1000.0))
                .collect()
        };
        let lines = [
            ("p50", COLOURS[0], lat(|l| l.p50)),
            ("p90", COLOURS[1], lat(|l| l.p90)),
            ("p99", COLOURS[2], lat(|l| l.p99)),
            ("max", COLOURS[3], lat(|l| l.max)),
        ];
        let _ = writeln!(
            s,
            "<h2>Latency percentiles per interval</h2>\n{}",
            line_chart("ms", x_max, &lines)
        );
    }
}

/// Rounds up to 1, 2, 2.5 or 5 times a power of ten.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn axis_label(v: f64) -> String {
    if v >= 1000.0 {
        thousands(v.round() as u64)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Lines over seconds of the window; y from 0.
/// One line of a chart: its name, colour and (seconds, value) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

fn line_chart(unit: &str, x_max: f64, series: &[Series<'_>]) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let y_top = nice_ceil(
        series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|&(_, y)| y))
            .fold(0.0, f64::max),
    );
    let x_max = x_max.max(1e-9);
    let px = |x: f64| LEFT + x / x_max * pw;
    let py = |y: f64| TOP + ph - y / y_top * ph;
    let mut s = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"{}\">",
        esc(unit)
    );
    for k in 0..=4 {
        let y = y_top * k as f64 / 4.0;
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            py(y) + 4.0,
            esc(&axis_label(y)),
            y0 = py(y)
        );
        let x = x_max * k as f64 / 4.0;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{} s</text>",
            px(x),
            H - BOTTOM + 16.0,
            esc(format!("{x:.1}").trim_end_matches(".0"))
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{base}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{right}\" y1=\"{base}\" y2=\"{base}\"/>\
         <text x=\"12\" y=\"{mid}\" transform=\"rotate(-90 12 {mid})\" \
         text-anchor=\"middle\">{unit}</text>",
        base = TOP + ph,
        right = W - RIGHT,
        mid = TOP + ph / 2.0,
        unit = esc(unit)
    );
    for (i, (name, colour, pts)) in series.iter().enumerate() {
        let line: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            line.join(" ")
        );
        if pts.len() <= 60 {
            for &(x, y) in pts {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\">\
                     <title>{}: {} at {:.1} s</title></circle>",
                    px(x),
                    py(y),
                    esc(name),
                    esc(&axis_label(y)),
                    x
                );
            }
        }
        let lx = LEFT + 10.0 + i as f64 * 70.0;
        let _ = write!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            H - 12.0,
            lx + 14.0,
            H - 8.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn us_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", axis_label(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", axis_label(us / 1e3))
    } else {
        format!("{} µs", axis_label(us))
    }
}

/// Counts in buckets of a quarter decade (1, 1.78, 3.16, 5.62 µs, …), bars on a log x axis.
fn histogram_svg(h: &Histogram<u64>) -> String {
    let bucket = |v: u64| (PER_DECADE * (v.max(1) as f64).log10()).floor() as i64;
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for v in h.iter_recorded() {
        *counts.entry(bucket(v.value_iterated_to())).or_default() += v.count_at_value();
    }
    let (Some(&lo), Some(&hi)) = (counts.keys().next(), counts.keys().last()) else {
        return String::new();
    };
    let n = (hi - lo + 1) as f64;
    let top = nice_ceil(counts.values().copied().max().unwrap_or(1) as f64);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let bw = pw / n;
    let edge = |k: i64| 10f64.powf(k as f64 / PER_DECADE);
    let mut s = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"latency histogram\">"
    );
    for k in 0..=4 {
        let c = top * k as f64 / 4.0;
        let y = TOP + ph - c / top * ph;
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            thousands(c.round() as u64)
        );
    }
    for k in lo..=hi {
        let x = LEFT + (k - lo) as f64 * bw;
        let c = counts.get(&k).copied().unwrap_or(0);
        let bh = c as f64 / top * ph;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\">\
             <title>{} – {}: {}</title></rect>",
            x + 1.0,
            TOP + ph - bh,
            (bw - 2.0).max(1.0),
            COLOURS[0],
            esc(&us_label(edge(k))),
            esc(&us_label(edge(k + 1))),
            thousands(c)
        );
        if k.rem_euclid(PER_DECADE as i64) == 0 || n <= 8.0 {
            let _ = write!(
                s,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                H - BOTTOM + 16.0,
                esc(&us_label((edge(k) * 100.0).round() / 100.0))
            );
        }
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{right}\" y1=\"{base}\" y2=\"{base}\"/>\
         <text x=\"12\" y=\"{mid}\" transform=\"rotate(-90 12 {mid})\" \
         text-anchor=\"middle\">count</text>",
        base = TOP + ph,
        right = W - RIGHT,
        mid = TOP + ph / 2.0
    );
    s.push_str("</svg>");
    s
}

/// A two-column table of a JSON object, nested keys joined with dots.
fn table(s: &mut String, v: &Value) {
    let mut rows = Vec::new();
    flatten("", v, &mut rows);
    s.push_str("<table>\n");
    for (k, v, numeric) in rows {
        let class = if numeric { " class=\"n\"" } else { "" };
        let _ = writeln!(
            s,
            "<tr><th>{}</th><td{class}>{}</td></tr>",
            esc(&k),
            esc(&v)
        );
    }
    s.push_str("</table>\n");
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String, bool)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&key(k), v, rows);
            }
        }
        Value::Object(_) => rows.push((prefix.into(), "none".into(), false)),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(scalar).collect();
            rows.push((prefix.into(), items.join(", "), false));
        }
        Value::Number(_) => rows.push((prefix.into(), scalar(v), true)),
        _ => rows.push((prefix.into(), scalar(v), false)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => thousands(u),
            (None, Some(f)) if f.abs() >= 100.0 => format!("{f:.1}"),
            (None, Some(f)) => format!("{f:.3}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix milliseconds (the civil-from-days algorithm).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn dates_and_axes() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_633_600_000), "2025-12-02 00:00:00 UTC");
        assert_eq!(nice_ceil(7.0), 10.0);
        assert_eq!(nice_ceil(1.2), 2.0);
        assert_eq!(nice_ceil(2100.0), 2500.0);
    }

    #[test]
    fn histogram_has_a_bar_per_quarter_decade() {
        let mut h = crate::hist::new_histogram();
        for v in [10u64, 11, 100, 1000, 10_000] {
            h.record(v).unwrap();
        }
        let svg = histogram_svg(&h);
        // 10 µs … 10 ms: 12 quarter decades and the last one's bucket.
        assert_eq!(svg.matches("<rect").count(), 13);
        assert!(svg.contains("10 µs") && svg.contains("10 ms"), "{svg}");
    }
}
