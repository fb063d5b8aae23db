//! One worker process: reads its [`WorkerPlan`] from stdin, starts `threads` glommio
//! executors that open and drive this worker's slice of the connections, writes progress and
//! its final [`WorkerReport`] as JSON lines on stdout, and starts publishing when the parent
//! writes `go` (the barrier that keeps every worker's viewers up before the first message).
//!
//! Threads: the main thread only reads stdin (a helper thread), aggregates counters once a
//! second and writes stdout. Each executor thread owns its connections; what it shares with
//! the main thread is [`ExecShared`]: Relaxed counters (statistics, no ordering with other
//! data) and a mutex-guarded interval histogram taken once a second — never touched per
//! message.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::hist;
use crate::local::{unix_ns, ExecShared, Local, MediaAgg, Shared, TargetAgg};
use crate::marker::Scanner;
use crate::plan::{Scenario, WorkerPlan};
use crate::report::{WorkerCommand, WorkerEvent, WorkerReport};
use crate::{conn, hls, media, probe};

/// Registered-buffer memory per executor. glommio registers it with io_uring, which pins it
/// against RLIMIT_MEMLOCK (8 MiB on these machines, per user, counted once per ring: three
/// rings per executor). Network I/O here never uses registered buffers, so the minimum is
/// enough and leaves room for many executors and processes.
const IO_MEMORY: usize = 64 << 10;
/// Submission queue depth per ring; glommio queues past it in user space.
const RING_DEPTH: usize = 512;
/// Handshakes in flight per executor when no --ramp is given (keeps the server's accept
/// backlog from overflowing into SYN retries).
const CONNECTS_IN_FLIGHT: u64 = 64;
/// How often a worker reports progress to the parent.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The executor's life: connect its slice, wait for go, run, stop, report.
async fn run_executor(shared: Arc<Shared>, t: usize) -> WorkerReport {
    let plan = shared.plan.clone();
    let local = Rc::new(Local {
        scanner: Scanner::new(plan.run_id),
        connect_permits: glommio::sync::Semaphore::new(CONNECTS_IN_FLIGHT),
        measuring: Cell::new(false),
        stopping: Cell::new(false),
        fds: RefCell::new(HashSet::new()),
        hist: RefCell::new(hist::new_histogram()),
        lag: RefCell::new(hist::new_histogram()),
        deliveries: Cell::new(0),
        frames: Cell::new(0),
        bytes_in: Cell::new(0),
        failures: RefCell::default(),
        failure_samples: RefCell::default(),
        disconnects: RefCell::default(),
        sent_per_room: RefCell::new(vec![0; plan.rooms]),
        viewers_per_room: RefCell::new(vec![0; plan.rooms]),
        viewers_up: Cell::new(0),
        publishers_up: Cell::new(0),
        acks: Cell::new(0),
        server_errors: Cell::new(0),
        server_error_sample: RefCell::new(None),
        refused_rate_limited: Cell::new(0),
        media: RefCell::new(MediaAgg::default()),
        per_target: RefCell::new(
            plan.targets
                .iter()
                .map(|_| TargetAgg::new(plan.rooms))
                .collect(),
        ),
        shared: shared.clone(),
        t,
    });

    let pubs: Vec<usize> = (0..plan.publishers).filter(|&p| plan.owns(p, t)).collect();
    let viewers: Vec<usize> = (0..plan.viewers).filter(|&v| plan.owns(v, t)).collect();
    let total = (pubs.len() + viewers.len()) as u64;
    let executors = (plan.workers * plan.threads) as f64;
    let spacing = (plan.ramp > 0.0).then(|| Duration::from_secs_f64(executors / plan.ramp));
    let t0 = Instant::now();

    let mut tasks = Vec::with_capacity(total as usize);
    let order = pubs
        .iter()
        .map(|&p| conn::Role::Publisher(p))
        .chain(viewers.iter().map(|&v| conn::Role::Viewer(v)));
    for (k, role) in order.enumerate() {
        let start = spacing.map(|s| t0 + s * k as u32);
        tasks.push(match role {
            conn::Role::Viewer(v) if plan.scenario == Scenario::HlsViewers => {
                glommio::spawn_local(hls::run(local.clone(), v, start))
            }
            conn::Role::Viewer(v) if plan.scenario.is_media() => {
                glommio::spawn_local(media::run(local.clone(), v, start))
            }
            _ => glommio::spawn_local(conn::run(local.clone(), role, start)),
        });
    }

    let flusher = {
        let local = local.clone();
        glommio::spawn_local(async move {
            while !local.exec().finished.load(Relaxed) {
                glommio::timer::sleep(Duration::from_millis(250)).await;
                local.flush();
            }
        })
    };

    // Connect phase: every connection attempted (each bounded by --connect-timeout).
    while local.exec().attempted.load(Relaxed) < total && !shared.abort.load(Relaxed) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    local.flush();
    local.exec().connect_done.store(true, Relaxed);

    // Barrier: wait for the parent's go.
    let go_at = loop {
        if shared.abort.load(Relaxed) {
            break None;
        }
        match shared.go_at_ns.load(Relaxed) {
            0 => glommio::timer::sleep(Duration::from_millis(5)).await,
            ns => break Some(ns),
        }
    };
    if let Some(go_at) = go_at {
        sleep_until_unix(go_at, &shared).await;
        local.measuring.set(true);
        let run_ms = match plan.scenario {
            Scenario::WsFanout => plan.duration_ms + plan.drain_ms,
            Scenario::WsIdle => plan.hold_ms,
            Scenario::FlvViewers | Scenario::RtmpViewers | Scenario::HlsViewers => plan.duration_ms,
        };
        sleep_until_unix(go_at + run_ms * 1_000_000, &shared).await;
    }
    local.stop();
    for task in tasks {
        task.await;
    }
    // Flushed before `finished`, so the worker's last progress line (the report's timeline)
    // holds every delivery and latency, not only its final report.
    local.flush();
    local.exec().finished.store(true, Relaxed);
    flusher.await;
    local.flush();

    let mut r = WorkerReport {
        viewers_up: local.viewers_up.get(),
        publishers_up: local.publishers_up.get(),
        connect_failures: local.failures.take(),
        connect_failure_samples: local.failure_samples.take(),
        sent_per_room: local.sent_per_room.take(),
        viewers_per_room: local.viewers_per_room.take(),
        acks: local.acks.get(),
        server_errors: local.server_errors.get(),
        server_error_sample: local.server_error_sample.take(),
        refused_rate_limited: local.refused_rate_limited.get(),
        disconnects: local.disconnects.take(),
        ..WorkerReport::default()
    };
    r.send_lag_hist = hist::hist_to_b64(&local.lag.borrow());
    r.targets = local
        .per_target
        .take()
        .into_iter()
        .map(TargetAgg::into_report)
        .collect();
    if plan.scenario.is_media() {
        r.media = Some(local.media.take().into_report());
    }
    r
}

/// Sleeps until a wall-clock time, waking at least every 100 ms to notice an abort.
async fn sleep_until_unix(at_ns: u64, shared: &Shared) {
    loop {
        if shared.abort.load(Relaxed) {
            return;
        }
        let now = unix_ns();
        if now >= at_ns {
            return;
        }
        let left = Duration::from_nanos(at_ns - now).min(Duration::from_millis(100));
        glommio::timer::sleep(left).await;
    }
}

fn emit(out: &mut impl Write, ev: &WorkerEvent) {
    // The parent reads lines; a failed write means it is gone, and stdin EOF will abort us.
    if let Ok(line) = serde_json::to_string(ev) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Entry point of `loadgen worker`.
pub fn main() -> ExitCode {
    let mut out = std::io::stdout().lock();
    let stdin = std::io::stdin();
    let mut first = String::new();
    if stdin.lock().read_line(&mut first).is_err() {
        return ExitCode::from(2);
    }
    let plan: WorkerPlan = match serde_json::from_str(&first) {
        Ok(p) => p,
        Err(e) => {
            emit(
                &mut out,
                &WorkerEvent::Fatal {
                    message: format!("bad worker plan: {e}"),
                },
            );
            return ExitCode::from(2);
        }
    };
    probe::raise_nofile();

    let shared = Arc::new(Shared {
        execs: (0..plan.threads).map(|_| ExecShared::new()).collect(),
        go_at_ns: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        plan,
    });

    // Commands from the parent; EOF (the parent died or gave up) aborts the run.
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("lg-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if let Ok(WorkerCommand::Go { at_unix_ns }) = serde_json::from_str(&line) {
                        shared.go_at_ns.store(at_unix_ns.max(1), Relaxed);
                    }
                }
                shared.abort.store(true, Relaxed);
            })
            .ok();
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for t in 0..shared.plan.threads {
        let shared = shared.clone();
        let started = started_tx.clone();
        let placement = if shared.plan.pin {
            Placement::Fixed((shared.plan.worker * shared.plan.threads + t) % cores)
        } else {
            Placement::Unbound
        };
        let name = format!("lg-w{}-t{t}", shared.plan.worker);
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let ex = LocalExecutorBuilder::new(placement)
                    .name(&name)
                    .io_memory(IO_MEMORY)
                    .ring_depth(RING_DEPTH)
                    .make();
                match ex {
                    Ok(ex) => {
                        let _ = started.send(Ok(()));
                        Some(ex.run(run_executor(shared, t)))
                    }
                    Err(e) => {
                        let _ = started.send(Err(e.to_string()));
                        None
                    }
                }
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                let _ = started_tx.send(Err(format!("cannot start a thread: {e}")));
            }
        }
    }
    drop(started_tx);
    for res in started_rx.iter().take(shared.plan.threads) {
        if let Err(e) = res {
            shared.abort.store(true, Relaxed);
            emit(
                &mut out,
                &WorkerEvent::Fatal {
                    message: format!(
                        "glommio could not start an executor: {e}. It needs io_uring \
                         (Linux ≥ 5.8, not blocked by seccomp, e.g. Docker's default profile) \
                         and at least 512 KiB of RLIMIT_MEMLOCK (here: {} KiB; raise it with \
                         `ulimit -l`, or LimitMEMLOCK= for a unit)",
                        probe::memlock_kib()
                    ),
                },
            );
            return ExitCode::from(3);
        }
    }

    // Progress twice a second; ready once every connection was tried.
    let mut total = hist::new_histogram();
    let mut ready_sent = false;
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let execs = &shared.execs;
        let sum = |f: fn(&ExecShared) -> &AtomicU64| {
            execs.iter().map(|e| f(e).load(Relaxed)).sum::<u64>()
        };
        if !ready_sent && execs.iter().all(|e| e.connect_done.load(Relaxed)) {
            ready_sent = true;
            emit(
                &mut out,
                &WorkerEvent::Ready {
                    up: sum(|e| &e.up),
                    failed: sum(|e| &e.failed),
                },
            );
        }
        let finished = execs.iter().all(|e| e.finished.load(Relaxed));
        if Instant::now() >= next_progress || finished {
            next_progress += PROGRESS_EVERY;
            let mut interval = hist::new_histogram();
            for e in execs {
                if let Ok(mut h) = e.interval.lock() {
                    hist::merge(&mut interval, &h);
                    h.reset();
                }
            }
            hist::merge(&mut total, &interval);
            emit(
                &mut out,
                &WorkerEvent::Progress {
                    up: sum(|e| &e.up),
                    failed: sum(|e| &e.failed),
                    deliveries: sum(|e| &e.deliveries),
                    frames: sum(|e| &e.frames),
                    bytes_in: sum(|e| &e.bytes_in),
                    interval_hist: hist::hist_to_b64(&interval),
                    at_unix_ns: unix_ns(),
                },
            );
        }
        if finished {
            break;
        }
    }

    let mut merged = WorkerReport {
        sent_per_room: vec![0; shared.plan.rooms],
        viewers_per_room: vec![0; shared.plan.rooms],
        ..WorkerReport::default()
    };
    let mut lag = hist::new_histogram();
    for h in handles {
        let Ok(Some(r)) = h.join() else {
            emit(
                &mut out,
                &WorkerEvent::Fatal {
                    message: "an executor thread panicked".into(),
                },
            );
            return ExitCode::from(3);
        };
        merge_worker(&mut merged, r, &mut lag);
    }
    for e in &shared.execs {
        if let Ok(h) = e.interval.lock() {
            hist::merge(&mut total, &h);
        }
        merged.deliveries += e.deliveries.load(Relaxed);
        merged.frames += e.frames.load(Relaxed);
        merged.bytes_in += e.bytes_in.load(Relaxed);
    }
    merged.latency_hist = hist::hist_to_b64(&total);
    merged.send_lag_hist = hist::hist_to_b64(&lag);
    emit(&mut out, &WorkerEvent::Report(Box::new(merged)));
    ExitCode::SUCCESS
}

/// Adds one executor's (or worker's) report into `into`; histograms other than the send lag
/// are merged by the caller.
pub fn merge_worker(into: &mut WorkerReport, r: WorkerReport, lag: &mut Histogram<u64>) {
    into.viewers_up += r.viewers_up;
    into.publishers_up += r.publishers_up;
    for (k, v) in r.connect_failures {
        *into.connect_failures.entry(k).or_default() += v;
    }
    for (k, v) in r.connect_failure_samples {
        into.connect_failure_samples.entry(k).or_insert(v);
    }
    for (k, v) in r.disconnects {
        *into.disconnects.entry(k).or_default() += v;
    }
    for (a, b) in into.sent_per_room.iter_mut().zip(&r.sent_per_room) {
        *a += b;
    }
    for (a, b) in into.viewers_per_room.iter_mut().zip(&r.viewers_per_room) {
        *a += b;
    }
    into.deliveries += r.deliveries;
    into.frames += r.frames;
    into.bytes_in += r.bytes_in;
    into.acks += r.acks;
    into.server_errors += r.server_errors;
    into.refused_rate_limited += r.refused_rate_limited;
    if into.server_error_sample.is_none() {
        into.server_error_sample = r.server_error_sample;
    }
    if let Ok(h) = hist::hist_from_b64(&r.send_lag_hist) {
        hist::merge(lag, &h);
    }
    if let Some(m) = r.media {
        into.media.get_or_insert_with(Default::default).merge(&m);
    }
    if into.targets.len() < r.targets.len() {
        into.targets.resize_with(r.targets.len(), Default::default);
    }
    for (a, b) in into.targets.iter_mut().zip(&r.targets) {
        a.merge(b);
    }
}
