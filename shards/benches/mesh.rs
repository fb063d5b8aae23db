//! Benchmarks of the messaging primitive every cross-shard path uses.
//!
//! - `ring/push_pop`: one message through an rtrb SPSC ring on one thread (the floor).
//! - `ring/stream_1M`: a producer thread streams messages to a consumer thread.
//! - `mesh/round_trip`: shard 0 submits to shard 1 through the mesh, shard 1 answers,
//!   shard 0 receives the answer — the cost of one cross-shard hop and back, wake-ups
//!   included (both shards idle in between, the worst case for wake-up latency).
//! - `mesh/burst_1k`: shard 0 submits 1000 messages in one turn and waits until shard 1
//!   has handled them all — the batched case (one wake-up for many messages).
//!
//! Run: `cargo bench -p shards --bench mesh`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shards::{local::Notify, Driver, EngineConfig};

#[derive(Clone, Copy)]
enum Msg {
    Ping(u64),
    Pong(u64),
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    let (mut p, mut q) = rtrb::RingBuffer::<[u64; 2]>::new(4096);
    g.bench_function("push_pop", |b| {
        b.iter(|| {
            p.push(std::hint::black_box([1, 2])).unwrap();
            std::hint::black_box(q.pop().unwrap());
        })
    });
    const N: u64 = 1_000_000;
    g.throughput(Throughput::Elements(N));
    g.bench_function("stream_1M", |b| {
        b.iter(|| {
            let (mut p, mut q) = rtrb::RingBuffer::<u64>::new(4096);
            let consumer = std::thread::spawn(move || {
                let mut got = 0;
                while got < N {
                    if let Ok(chunk) = q.read_chunk(q.slots()) {
                        got += chunk.len() as u64;
                        chunk.commit_all();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut sent = 0;
            while sent < N {
                if p.push(sent).is_ok() {
                    sent += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            consumer.join().unwrap();
        })
    });
    g.finish();
}

/// Starts two shards; shard 0 runs `rounds` batches of `burst` pings each time the bench
/// asks, and reports the elapsed time back.
fn mesh(c: &mut Criterion) {
    let (ask_tx, ask_rx) = mpsc::channel::<(u64, u64)>();
    let (done_tx, done_rx) = mpsc::channel::<Duration>();
    let ask_rx = std::sync::Mutex::new(Some(ask_rx));
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    let cfg = EngineConfig {
        shards: 2,
        driver: Driver::Auto,
        ..EngineConfig::default()
    };
    let engine = shards::start::<Msg, (), _, _>(cfg, vec![(), ()], move |ctx, ()| {
        // Only shard 0 drives the benchmark; shard 1 must not take its channels.
        let (asks, done) = if ctx.id == 0 {
            (
                ask_rx.lock().unwrap().take(),
                done_tx.lock().unwrap().take(),
            )
        } else {
            (None, None)
        };
        async move {
            let mesh = ctx.mesh.clone();
            let pongs = Rc::new(Cell::new(0u64));
            let arrived = Rc::new(Notify::new());
            {
                let (pongs, arrived, m) = (pongs.clone(), arrived.clone(), mesh.clone());
                monoio::spawn(async move {
                    m.serve(|from, msg| match msg {
                        Msg::Ping(n) => {
                            let _ = m.submit_to(from, Msg::Pong(n));
                        }
                        Msg::Pong(n) => {
                            std::hint::black_box(n);
                            pongs.set(pongs.get() + 1);
                            arrived.notify();
                        }
                    })
                    .await
                });
            }
            if ctx.id == 1 {
                ctx.stop_signal().wait().await;
                return;
            }
            let (asks, done) = (asks.unwrap(), done.unwrap());
            loop {
                let (rounds, burst) = match asks.try_recv() {
                    Ok(ask) => ask,
                    Err(mpsc::TryRecvError::Empty) => {
                        monoio::time::sleep(Duration::from_micros(200)).await;
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return,
                };
                let start = Instant::now();
                for r in 0..rounds {
                    pongs.set(0);
                    for i in 0..burst {
                        mesh.submit_to(1, Msg::Ping(r * burst + i)).unwrap();
                    }
                    while pongs.get() < burst {
                        arrived.notified().await;
                    }
                }
                done.send(start.elapsed()).unwrap();
            }
        }
    })
    .expect("engine starts");

    let mut g = c.benchmark_group("mesh");
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip", |b| {
        b.iter_custom(|iters| {
            ask_tx.send((iters, 1)).unwrap();
            done_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("shard 0 answers")
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("burst_1k", |b| {
        b.iter_custom(|iters| {
            ask_tx.send((iters, 1000)).unwrap();
            done_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("shard 0 answers")
        })
    });
    g.finish();
    drop(ask_tx);
    engine.stop();
    engine.join(Duration::from_secs(5));
}

criterion_group!(benches, ring, mesh);
criterion_main!(benches);
