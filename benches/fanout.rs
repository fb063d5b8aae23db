//! The danmaku fan-out path in process: one room, 10,000 local viewers with in-memory
//! sinks (each connection's outbound queue), no sockets.
//!
//! What it checks and measures:
//! - encodes per batch: a flush produces one frame, and every viewer's queue holds that
//!   same buffer (same pointer) — checked before measuring, and printed;
//! - allocations per delivery: counted by a wrapping global allocator around one fan-out;
//! - time per delivery: criterion, `fanout/10k_viewers` (one batch to 10k queues);
//! - scaling with shards for ONE room: the same room's 10,000 viewers spread over 1 shard,
//!   then over every core, each shard a real pinned shard of the engine receiving the
//!   room's frames over the mesh from the room's home (shard 0) and fanning them out to
//!   its share with the end-of-turn flush; deliveries per second for each, and the ratio.
//!
//! Printed, not asserted: a benchmark, never a timed test.
//!
//! Run: `cargo bench --bench fanout`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liveshard::danmaku::protocol::{encode_item, Item, ItemBody, Mode};
use liveshard::danmaku::room::{HomeRoom, LocalRoom, Priority, RoomSettings};
use liveshard::danmaku::viewer::Conn;
use liveshard::danmaku::ConnRef;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const VIEWERS: usize = 10_000;

fn setup() -> (HomeRoom, LocalRoom) {
    let home = HomeRoom::new(
        "bench".into(),
        1,
        &RoomSettings {
            history_capacity: 200,
            cap_per_sec: 0,
            user_rate: (2.0, 5.0),
            heartbeat_ms: 30_000,
        },
        0,
    );
    let mut local = LocalRoom::default();
    for i in 0..VIEWERS {
        let id = ConnRef {
            shard: 0,
            key: i as u32,
            gen: 1,
        };
        local.add(Rc::new(Conn::new(
            id,
            "bench".into(),
            None,
            (256 * 1024, 5.0),
            (std::time::Instant::now(), 0),
        )));
    }
    (home, local)
}

fn item(id: u64) -> Bytes {
    encode_item(&Item {
        kind: "danmaku",
        id,
        room: "bench",
        uid: "u1",
        nick: "viewer",
        ts: 1_700_000_000_000,
        media_ts: None,
        body: ItemBody::Danmaku {
            text: "主播好! a typical danmaku line",
            color: "#FFFFFF",
            mode: Mode::Scroll,
        },
    })
}

fn fanout(c: &mut Criterion) {
    let (mut home, mut local) = setup();
    // One turn of the shard's loop: the frame is held for the room, then the end-of-turn
    // flush offers it to every viewer (no socket here: each queues it, the in-memory sink).
    let turn = |local: &mut LocalRoom, frame: &Bytes| {
        local.fanout(frame.clone(), None);
        let (done, _) = local.flush(Instant::now());
        (done.delivered, done.dropped)
    };

    // One encode per batch, shared by every viewer.
    for id in 0..10 {
        home.push(id, item(id), Priority::Plain, 0);
    }
    let frame = home.flush().expect("a batch");
    assert!(home.flush().is_none(), "one frame per batch");
    turn(&mut local, &frame);
    let same = local
        .viewers
        .iter()
        .all(|v| v.queued_bytes() == frame.len());
    assert!(same, "every viewer queued exactly the batch");
    for v in &local.viewers {
        v.drain_queue();
    }

    // Allocations per delivery: warm the queues and the room's pending list, then count
    // over one fan-out.
    turn(&mut local, &frame);
    for v in &local.viewers {
        v.drain_queue();
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let (delivered, dropped) = turn(&mut local, &frame);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!((delivered, dropped), (VIEWERS as u64, 0));
    println!(
        "fanout: encodes per batch = 1, frame {} bytes, allocations per delivery = {:.4} ({allocs} over {VIEWERS})",
        frame.len(),
        allocs as f64 / VIEWERS as f64
    );
    for v in &local.viewers {
        v.drain_queue();
    }

    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(VIEWERS as u64));
    g.bench_function("10k_viewers", |b| {
        b.iter(|| {
            turn(&mut local, &frame);
            // The writer's side: take the frames off the queues (not counted separately).
            for v in &local.viewers {
                v.drain_queue();
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_batch_of_10", |b| {
        let mut id = 100;
        b.iter(|| {
            for _ in 0..10 {
                id += 1;
                home.push(id, item(id), Priority::Plain, 0);
            }
            std::hint::black_box(home.flush())
        })
    });
    g.finish();
}

/// Frames the home sends in one scaling run.
const SCALING_FRAMES: u64 = 2_000;

/// One room, [`VIEWERS`] viewers spread over `n` shards; returns deliveries per second from
/// the home's first send to the last shard's last fan-out.
fn one_room_on(n: usize, frame: &Bytes) -> f64 {
    let (done_tx, done_rx) = mpsc::channel::<(u64, Instant)>();
    let done_tx = Mutex::new(done_tx);
    let start = Arc::new(Mutex::new(None::<Instant>));
    let started = start.clone();
    let frame = frame.clone();
    let cfg = shards::EngineConfig {
        shards: n,
        ..shards::EngineConfig::default()
    };
    let engine = shards::start::<Bytes, (), _, _>(cfg, vec![(); n], move |ctx, ()| {
        let done = done_tx.lock().unwrap().clone();
        let (frame, started) = (frame.clone(), started.clone());
        async move {
            let mut local = LocalRoom::default();
            for i in 0..VIEWERS / ctx.count {
                let id = ConnRef {
                    shard: ctx.id as u16,
                    key: i as u32,
                    gen: 1,
                };
                let limits = (256 * 1024, 5.0);
                let conn = Conn::new(id, "bench".into(), None, limits, (Instant::now(), 0));
                local.add(Rc::new(conn));
            }
            let local = RefCell::new(local);
            let (frames, delivered) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
            let all_in = Rc::new(shards::local::Notify::new());
            {
                let (mesh, frames, delivered, all_in) = (
                    ctx.mesh.clone(),
                    frames.clone(),
                    delivered.clone(),
                    all_in.clone(),
                );
                let me = ctx.id;
                monoio::spawn(async move {
                    mesh.serve(|from, f| {
                        // A turn: hold the frame for the room (a shard's own copy, as the
                        // server makes it), flush it to this shard's viewers, and let the
                        // in-memory sink take what they were sent.
                        let f = if from == me {
                            f
                        } else {
                            Bytes::copy_from_slice(&f)
                        };
                        let mut l = local.borrow_mut();
                        l.fanout(f, None);
                        let (d, _) = l.flush(Instant::now());
                        for v in &l.viewers {
                            v.drain_queue();
                        }
                        delivered.set(delivered.get() + d.delivered);
                        frames.set(frames.get() + 1);
                        if frames.get() == SCALING_FRAMES {
                            all_in.notify();
                        }
                    })
                    .await
                });
            }
            if ctx.id == 0 {
                *started.lock().unwrap() = Some(Instant::now());
                for i in 0..SCALING_FRAMES {
                    for s in 0..ctx.count {
                        let mut f = frame.clone();
                        while let Err(back) = ctx.mesh.submit_to(s, f) {
                            f = back.0;
                            shards::local::yield_now().await;
                        }
                    }
                    if i % 32 == 0 {
                        shards::local::yield_now().await;
                    }
                }
            }
            while frames.get() < SCALING_FRAMES {
                all_in.notified().await;
            }
            let _ = done.send((delivered.get(), Instant::now()));
            ctx.stop_signal().wait().await;
        }
    })
    .expect("engine starts");
    let mut total = 0;
    let mut end = None::<Instant>;
    for _ in 0..n {
        let (d, at) = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("every shard finishes");
        total += d;
        end = Some(end.map_or(at, |e| e.max(at)));
    }
    engine.stop();
    engine.join(Duration::from_secs(5));
    assert_eq!(
        total,
        SCALING_FRAMES * (VIEWERS / n * n) as u64,
        "every delivery made"
    );
    let begun = start.lock().unwrap().expect("the home started");
    total as f64 / (end.expect("shards reported") - begun).as_secs_f64()
}

/// Deliveries per second for one room on 1 shard and on every core (see the module docs).
fn scaling(_: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut home, _) = setup();
    for id in 0..10 {
        home.push(id, item(id), Priority::Plain, 0);
    }
    let frame = home.flush().expect("a batch");
    let mut counts = vec![1];
    if cores > 1 {
        counts.push(cores);
    }
    let mut one = None;
    for n in counts {
        // Best of three: the machine's other work only ever slows a run down.
        let rate = (0..3).map(|_| one_room_on(n, &frame)).fold(0.0, f64::max);
        let ratio = one.map(|o: f64| rate / o).unwrap_or(1.0);
        one.get_or_insert(rate);
        println!(
            "fanout/one_room_{n}_shards: {VIEWERS} viewers, {SCALING_FRAMES} frames: {:.1}M deliveries/s ({ratio:.2}x one shard, {:.2}x per shard)",
            rate / 1e6,
            ratio / n as f64
        );
    }
}

criterion_group!(benches, fanout, scaling);
criterion_main!(benches);
