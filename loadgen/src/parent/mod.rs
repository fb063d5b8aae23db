//! The parent process: starts `--procs` workers (this same binary, `loadgen worker`), hands
//! each its plan, holds the start barrier (go only once every worker has all its connections
//! up), draws the live progress line, reads the server's side (/metrics, /proc) around the
//! measurement, merges the workers' histograms and counters, and prints and writes the report.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::hist::{self, Percentiles};
use crate::local::unix_ns;
use crate::plan::{Plan, Scenario};
use crate::probe;
use crate::report::{
    self, Connections, FanoutResults, IdleResults, MediaResults, Report, Results, UrlResults,
    WorkerCommand, WorkerEvent, WorkerReport,
};
use crate::timeline::{Collector, Progress};
use crate::worker::merge_worker;

const DROPPED_METRIC: &str = "liveshard_ws_messages_dropped_total";
const SHED_METRIC: &str = "liveshard_ws_shed_total";

/// The server's drop counter and, where it has one, its shed counter (one scrape).
fn scrape_drops(url: &str) -> Result<(u64, Option<u64>), String> {
    let text = probe::scrape_text(url)?;
    let dropped = probe::sum_samples(&text, DROPPED_METRIC)
        .ok_or_else(|| format!("{url} has no {DROPPED_METRIC}"))?;
    Ok((dropped, probe::sum_samples(&text, SHED_METRIC)))
}
/// liveshard's media counters a media run reports the change of.
const MEDIA_METRICS: [&str; 5] = [
    "liveshard_media_bytes_out_total",
    "liveshard_media_gop_cache_hits_total",
    "liveshard_media_frames_skipped_total",
    "liveshard_media_slow_viewers_closed_total",
    "liveshard_media_frames_lost_total",
];
/// liveshard's HLS counters an hls-viewers run reports the change of (a counter the server
/// does not have is left out).
const HLS_METRICS: [&str; 5] = [
    "liveshard_media_hls_requests_total",
    "liveshard_media_hls_blocking_requests_total",
    "liveshard_media_hls_bytes_out_total",
    "liveshard_media_hls_segments_total",
    "liveshard_media_hls_input_skipped_total",
];
/// Lead time between the go command and the start, so every worker has read it.
const GO_LEAD: Duration = Duration::from_millis(200);

mod results;

use results::{fanout_results, media_results, FanoutServer, MediaServer};

enum Msg {
    Event(WorkerEvent),
    Garbled(String),
    Exited,
}

#[derive(Default)]
struct WorkerState {
    up: u64,
    failed: u64,
    deliveries: u64,
    frames: u64,
    bytes_in: u64,
    ready: bool,
    report: Option<WorkerReport>,
    exited: bool,
}

/// Kills every worker still running when the run ends early.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

pub fn run(plan: Plan) -> Result<ExitCode, String> {
    let started_unix_ms = unix_ns() / 1_000_000;
    let machine = probe::machine();
    let wp = &plan.worker;
    let fanout = wp.scenario == Scenario::WsFanout;
    let media = wp.scenario.is_media();
    let tty = !plan.quiet && std::io::stderr().is_terminal();
    // Media servers may be several processes (nginx: a master and its workers).
    let server_cpu = |pid: u32| {
        if media {
            probe::tree_cpu_seconds(pid)
        } else {
            probe::cpu_seconds(pid)
        }
    };

    let rss_before = match (wp.scenario, plan.server_pid) {
        (Scenario::WsIdle, Some(pid)) => Some(probe::rss_kib(pid)?),
        (s, Some(pid)) if s.is_media() => Some(probe::tree_rss_kib(pid)?),
        _ => None,
    };
    let media_before = match (&plan.metrics_url, media) {
        (Some(u), true) => Some(probe::scrape_text(u)),
        _ => None,
    };
    let dropped_before = plan.metrics_url.as_deref().map(scrape_drops);

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let (tx, rx) = mpsc::channel::<(usize, Msg)>();
    let mut workers = Workers {
        children: Vec::new(),
        stdins: Vec::new(),
    };
    for w in 0..plan.procs {
        let mut child = Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start worker {w}: {e}"))?;
        let mut stdin = child.stdin.take();
        let mut wplan = wp.clone();
        wplan.worker = w;
        let line = serde_json::to_string(&wplan).map_err(|e| e.to_string())?;
        if let Some(s) = stdin.as_mut() {
            writeln!(s, "{line}").map_err(|e| format!("worker {w}: {e}"))?;
        }
        let stdout = child.stdout.take().ok_or("worker has no stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let msg = match serde_json::from_str::<WorkerEvent>(&line) {
                    Ok(ev) => Msg::Event(ev),
                    Err(_) => Msg::Garbled(line),
                };
                if tx.send((w, msg)).is_err() {
                    return;
                }
            }
            let _ = tx.send((w, Msg::Exited));
        });
        workers.children.push(child);
        workers.stdins.push(stdin);
    }
    drop(tx);

    let total_conns = (wp.viewers + wp.publishers) as u64;
    let per_exec = total_conns.div_ceil((wp.workers * wp.threads) as u64);
    let ramp_s = if wp.ramp > 0.0 {
        total_conns as f64 / wp.ramp
    } else {
        0.0
    };
    // Every attempt is bounded by the connect timeout, with 64 in flight per executor.
    let connect_bound = Duration::from_secs_f64(
        ramp_s + (wp.connect_timeout_ms as f64 / 1000.0) * (1.0 + per_exec as f64 / 64.0) + 30.0,
    );
    let run_ms = match wp.scenario {
        Scenario::WsFanout => wp.duration_ms + wp.drain_ms,
        Scenario::WsIdle => wp.hold_ms,
        Scenario::FlvViewers | Scenario::RtmpViewers | Scenario::HlsViewers => wp.duration_ms,
    };
    let worker_pids: Vec<u32> = workers.children.iter().map(Child::id).collect();
    let loadgen_cpu = || -> Option<f64> {
        worker_pids
            .iter()
            .map(|&p| probe::cpu_seconds(p).ok())
            .sum::<Option<f64>>()
    };
    let t0 = Instant::now();
    let mut deadline = t0 + connect_bound;

    let mut st: Vec<WorkerState> = (0..plan.procs).map(|_| WorkerState::default()).collect();
    let mut so_far = hist::new_histogram();
    let mut go_at: Option<u64> = None;
    let mut rss_after = None;
    let mut cpu_go = None;
    let mut cpu_publish_end = None;
    let mut cpu_end = None;
    let mut dropped_after = None;
    let mut media_after = None;
    let mut loadgen_go = None;
    let mut loadgen_end = None;
    // (time, deliveries) at each draw; the rate shown is over the last two seconds, so
    // workers' unsynchronized reports do not make it jump.
    let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut timeline: Option<Collector> = None;
    let mut last_draw = Instant::now();

    while st.iter().any(|s| s.report.is_none()) {
        if Instant::now() > deadline {
            return Err(format!(
                "workers did not finish in time (bound {:.0} s); giving up",
                deadline.duration_since(t0).as_secs_f64()
            ));
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((w, Msg::Event(ev))) => match ev {
                WorkerEvent::Progress {
                    up,
                    failed,
                    deliveries,
                    frames,
                    bytes_in,
                    interval_hist,
                    at_unix_ns,
                } => {
                    let s = &mut st[w];
                    (s.up, s.failed, s.deliveries, s.frames) = (up, failed, deliveries, frames);
                    s.bytes_in = bytes_in;
                    let h = hist::hist_from_b64(&interval_hist).ok();
                    if let Some(h) = &h {
                        hist::merge(&mut so_far, h);
                    }
                    if let Some(t) = timeline.as_mut() {
                        t.add(Progress {
                            worker: w,
                            at_ns: at_unix_ns,
                            up,
                            deliveries,
                            bytes_in,
                            hist: h.as_ref(),
                        });
                    }
                }
                WorkerEvent::Ready { up, failed } => {
                    let s = &mut st[w];
                    (s.up, s.failed, s.ready) = (up, failed, true);
                }
                WorkerEvent::Report(r) => st[w].report = Some(*r),
                WorkerEvent::Fatal { message } => {
                    if tty {
                        eprintln!();
                    }
                    return Err(format!("worker {w}: {message}"));
                }
            },
            Ok((w, Msg::Garbled(line))) => eprintln!("loadgen: worker {w} said: {line}"),
            Ok((w, Msg::Exited)) => {
                st[w].exited = true;
                if st[w].report.is_none() {
                    let status = workers.children[w].wait().ok();
                    return Err(format!("worker {w} exited without a report ({status:?})"));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }

        // The barrier: go once every worker has tried all its connections.
        if go_at.is_none() && st.iter().all(|s| s.ready) {
            match (wp.scenario, plan.server_pid) {
                (Scenario::WsIdle, Some(pid)) => {
                    std::thread::sleep(Duration::from_millis(plan.settle_ms));
                    rss_after = Some(probe::rss_kib(pid)?);
                }
                (s, Some(pid)) if s.is_media() => rss_after = probe::tree_rss_kib(pid).ok(),
                _ => {}
            }
            let at = unix_ns() + GO_LEAD.as_nanos() as u64;
            for (w, stdin) in workers.stdins.iter_mut().enumerate() {
                let cmd = serde_json::to_string(&WorkerCommand::Go { at_unix_ns: at })
                    .map_err(|e| e.to_string())?;
                if let Some(s) = stdin.as_mut() {
                    writeln!(s, "{cmd}").map_err(|e| format!("worker {w}: {e}"))?;
                    let _ = s.flush();
                }
            }
            go_at = Some(at);
            let mut t = Collector::new(at, run_ms, plan.procs);
            for (w, s) in st.iter().enumerate() {
                t.baseline(w, s.deliveries, s.bytes_in);
            }
            timeline = Some(t);
            deadline =
                Instant::now() + GO_LEAD + Duration::from_millis(run_ms) + Duration::from_secs(60);
            std::thread::sleep(GO_LEAD);
            cpu_go = plan.server_pid.and_then(|p| server_cpu(p).ok());
            loadgen_go = loadgen_cpu();
        }
        if let Some(at) = go_at {
            let now = unix_ns();
            if (fanout || media)
                && cpu_publish_end.is_none()
                && now >= at + wp.duration_ms * 1_000_000
            {
                cpu_publish_end = plan.server_pid.and_then(|p| server_cpu(p).ok());
                loadgen_end = loadgen_cpu();
            }
            if cpu_end.is_none() && now >= at + run_ms * 1_000_000 {
                cpu_end = plan.server_pid.and_then(|p| server_cpu(p).ok());
                if media {
                    media_after = plan.metrics_url.as_deref().map(probe::scrape_text);
                }
                dropped_after = plan.metrics_url.as_deref().map(scrape_drops);
            }
        }

        if tty && last_draw.elapsed() >= Duration::from_millis(500) {
            last_draw = Instant::now();
            let count = if media {
                st.iter().map(|s| s.bytes_in).sum::<u64>() * 8
            } else {
                st.iter().map(|s| s.deliveries).sum()
            };
            samples.push_back((last_draw, count));
            while samples.len() > 5 {
                samples.pop_front();
            }
            let rate = match (samples.front(), samples.back()) {
                (Some(a), Some(b)) if b.0 > a.0 => {
                    b.1.saturating_sub(a.1) as f64 / (b.0 - a.0).as_secs_f64()
                }
                _ => 0.0,
            };
            let what = match (media, wp.scenario) {
                (false, _) => Drawn::Messages,
                (true, Scenario::HlsViewers) => Drawn::HlsLatency,
                (true, _) => Drawn::Ttff,
            };
            draw(&st, total_conns, t0, go_at.is_some(), rate, &so_far, what);
        }
    }
    if tty {
        eprintln!();
    }
    if cpu_end.is_none() {
        cpu_end = plan.server_pid.and_then(|p| server_cpu(p).ok());
    }
    if media && media_after.is_none() {
        media_after = plan.metrics_url.as_deref().map(probe::scrape_text);
    }
    if dropped_after.is_none() {
        dropped_after = plan.metrics_url.as_deref().map(scrape_drops);
    }
    drop(workers);

    // Merge.
    let mut merged = WorkerReport {
        sent_per_room: vec![0; wp.rooms],
        viewers_per_room: vec![0; wp.rooms],
        ..WorkerReport::default()
    };
    let mut latency = hist::new_histogram();
    let mut lag = hist::new_histogram();
    for s in st {
        let r = s.report.expect("loop ends when every worker reported");
        let h = hist::hist_from_b64(&r.latency_hist)?;
        hist::merge(&mut latency, &h);
        merge_worker(&mut merged, r, &mut lag);
    }
    let failed: u64 = merged.connect_failures.values().sum();
    let up = merged.viewers_up + merged.publishers_up;
    let publishers_up = merged.publishers_up;
    let connections = Connections {
        attempted: total_conns,
        up,
        failed,
        failures: merged.connect_failures.clone(),
        failure_samples: merged.connect_failure_samples.clone(),
    };
    if let Some(n) = merged.connect_failures.get("EMFILE") {
        let (_, hard) = probe::nofile_limit();
        eprintln!(
            "loadgen: {n} connects failed with EMFILE (too many open files): a process may hold \
             at most {hard} descriptors here; spread the connections with --procs {}",
            total_conns
                .div_ceil(hard.saturating_sub(1000).max(1))
                .max(plan.procs as u64 + 1)
        );
    }

    let results = if media {
        let loadgen_cores = match (loadgen_go, loadgen_end) {
            (Some(a), Some(b)) if wp.duration_ms > 0 => {
                Some((b - a) / (wp.duration_ms as f64 / 1000.0))
            }
            _ => None,
        };
        media_results(
            &plan,
            &merged,
            connections,
            &latency,
            MediaServer {
                cpu_go,
                cpu_end: cpu_publish_end.or(cpu_end),
                rss_before,
                rss_after,
                metrics_before: media_before,
                metrics_after: media_after,
                loadgen_cores,
            },
        )
    } else if fanout {
        fanout_results(
            &plan,
            &merged,
            connections,
            &latency,
            &lag,
            FanoutServer {
                dropped_before,
                dropped_after,
                cpu_go,
                cpu_publish_end,
                cpu_end,
            },
        )
    } else {
        let bytes_per_conn = match (rss_before, rss_after) {
            (Some(b), Some(a)) if up > 0 => Some((a as f64 - b as f64) * 1024.0 / up as f64),
            _ => None,
        };
        Results::Idle(IdleResults {
            connections,
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            bytes_per_conn,
            disconnects: merged.disconnects.clone(),
            hold_s: wp.hold_ms as f64 / 1000.0,
        })
    };
    let mut warnings = Vec::new();
    if let Results::Fanout(r) = &results {
        if let Some(w) = rate_limit_warning(r.sent, r.refused_rate_limited) {
            warnings.push(w);
        }
    }
    for w in &warnings {
        eprintln!("loadgen: {w}");
    }
    let report = Report {
        tool: "loadgen",
        version: env!("CARGO_PKG_VERSION"),
        started_unix_ms,
        config: plan.config.clone(),
        machine,
        results,
        latency_hist_v2: (fanout || media).then(|| hist::hist_to_b64(&latency)),
        timeline: timeline.map(Collector::finish),
        warnings,
    };
    print!("{}", report.summary(&plan.url));
    if let Some(path) = &plan.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &plan.html {
        let hist = (fanout || media).then_some(&latency);
        std::fs::write(path, crate::html::page(&report, &plan.url, hist))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let no_publisher = fanout && publishers_up == 0;
    if no_publisher && up > 0 {
        eprintln!(
            "loadgen: no publisher connected, so nothing was sent: this run measured nothing"
        );
    }
    Ok(if up == 0 || no_publisher {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The warning for a run whose posts the server mostly refused: the numbers then measure
/// the rate limit, not fan-out. Over half refused is well past any burst at the start.
fn rate_limit_warning(sent: u64, refused: u64) -> Option<String> {
    (sent > 0 && refused * 2 > sent).then(|| {
        format!(
            "{} of {} posts ({:.1}%) were refused by the server's rate limit (error 4290), so \
             this run measured the limit, not fan-out. liveshard limits each user's posts to a \
             room (all their connections together), and each connection, to \
             danmaku.rate_per_sec (default 2) with bursts of danmaku.rate_burst (default 5); \
             each loadgen publisher is one user. Raise both above --rate / --publishers (e.g. \
             liveshard serve --set danmaku.rate_per_sec=1000 --set danmaku.rate_burst=1000, \
             or [danmaku] rate_per_sec and rate_burst in its config file), or spread the rate \
             over more --publishers.",
            report::thousands(refused),
            report::thousands(sent),
            refused as f64 * 100.0 / sent as f64
        )
    })
}

/// What the progress line shows: messages and their latency, or received bits and the
/// time to first frame or (hls-viewers) the ingest → received latency.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drawn {
    Messages,
    Ttff,
    HlsLatency,
}

/// The live progress line (stderr, terminals only).
fn draw(
    st: &[WorkerState],
    total: u64,
    t0: Instant,
    running: bool,
    rate: f64,
    so_far: &Histogram<u64>,
    what: Drawn,
) {
    let up: u64 = st.iter().map(|s| s.up).sum();
    let failed: u64 = st.iter().map(|s| s.failed).sum();
    let p99 = if so_far.is_empty() {
        "-".to_string()
    } else {
        format!("{:.2} ms", so_far.value_at_quantile(0.99) as f64 / 1000.0)
    };
    let phase = if running { "running" } else { "connecting" };
    let mut err = std::io::stderr().lock();
    let _ = if what != Drawn::Messages {
        let label = if what == Drawn::Ttff {
            "TTFF"
        } else {
            "ingest→recv"
        };
        write!(
            err,
            "\r\x1b[2K[{:6.1}s] {phase}: {up}/{total} up, {failed} failed | {:.1} Mbit/s | {label} p99 {p99}",
            t0.elapsed().as_secs_f64(),
            rate / 1e6
        )
    } else {
        write!(
            err,
            "\r\x1b[2K[{:6.1}s] {phase}: {up}/{total} up, {failed} failed | {:.0} msgs/s | p99 {p99}",
            t0.elapsed().as_secs_f64(),
            rate
        )
    };
    let _ = err.flush();
}
