//! The mesh seen from shards: order per sender, every message delivered once, the overflow
//! policy, and stop.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use shards::{Driver, EngineConfig};

#[derive(Clone, Copy, Debug)]
struct Seq {
    from: usize,
    n: u64,
}

fn run_all_to_all(driver: Driver) {
    const SHARDS: usize = 3;
    const PER_PEER: u64 = 20_000;
    let cfg = EngineConfig {
        shards: SHARDS,
        driver,
        // A tiny ring forces the backlog path; a backlog as large as the load keeps every
        // message accepted.
        ring_capacity: 8,
        backlog_capacity: PER_PEER as usize,
        ..EngineConfig::default()
    };
    let (tx, rx) = mpsc::channel::<(usize, Vec<u64>)>();
    let engine = shards::start::<Seq, mpsc::Sender<(usize, Vec<u64>)>, _, _>(
        cfg,
        (0..SHARDS).map(|_| tx.clone()).collect(),
        |ctx, report| async move {
            let next = Rc::new(RefCell::new(vec![0u64; ctx.count]));
            let total = Rc::new(Cell::new(0u64));
            let expected = PER_PEER * (ctx.count as u64 - 1);
            let done = shards::local::Signal::new();
            {
                let (next, total, done) = (next.clone(), total.clone(), done.clone());
                let mesh = ctx.mesh.clone();
                monoio::spawn(async move {
                    mesh.serve(|from, m: Seq| {
                        assert_eq!(from, m.from);
                        let mut next = next.borrow_mut();
                        assert_eq!(next[from], m.n, "order from shard {from}");
                        next[from] += 1;
                        total.set(total.get() + 1);
                        if total.get() == expected {
                            done.raise();
                        }
                    })
                    .await
                });
            }
            for n in 0..PER_PEER {
                for to in 0..ctx.count {
                    if to != ctx.id {
                        ctx.mesh.submit_to(to, Seq { from: ctx.id, n }).unwrap();
                    }
                }
                if n % 64 == 0 {
                    shards::local::yield_now().await;
                }
            }
            done.wait().await;
            report.send((ctx.id, next.borrow().clone())).unwrap();
            ctx.stop_signal().wait().await;
        },
    )
    .unwrap();
    for _ in 0..SHARDS {
        let (id, next) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every shard finishes");
        for (from, n) in next.iter().enumerate() {
            let want = if from == id { 0 } else { PER_PEER };
            assert_eq!(*n, want, "shard {id} from {from}");
        }
    }
    let stats = engine.mesh_stats();
    for s in stats.iter() {
        assert_eq!(s.overflow.load(Ordering::Relaxed), 0);
        assert_eq!(
            s.received.load(Ordering::Relaxed),
            PER_PEER * (SHARDS as u64 - 1)
        );
    }
    engine.stop();
    assert!(
        engine.join(Duration::from_secs(5)),
        "shards stop when asked"
    );
}

#[test]
fn every_message_arrives_once_in_order_on_io_uring_or_fallback() {
    run_all_to_all(Driver::Auto);
}

#[test]
fn every_message_arrives_once_in_order_on_epoll() {
    run_all_to_all(Driver::Epoll);
}

#[test]
fn full_ring_and_backlog_refuse_without_blocking() {
    let cfg = EngineConfig {
        shards: 2,
        ring_capacity: 4,
        backlog_capacity: 4,
        ..EngineConfig::default()
    };
    let (tx, rx) = mpsc::channel::<(usize, usize)>();
    let engine = shards::start::<u32, mpsc::Sender<(usize, usize)>, _, _>(
        cfg,
        vec![tx.clone(), tx],
        |ctx, report| async move {
            let got = Rc::new(Cell::new(0usize));
            {
                let (got, mesh) = (got.clone(), ctx.mesh.clone());
                monoio::spawn(async move { mesh.serve(|_, _| got.set(got.get() + 1)).await });
            }
            if ctx.id == 0 {
                // All in one turn: the flusher cannot run in between, so exactly ring +
                // backlog are accepted and the rest come back.
                let refused = (0..100u32)
                    .filter(|&i| ctx.mesh.submit_to(1, i).is_err())
                    .count();
                report.send((0, refused)).unwrap();
            } else {
                while got.get() < 8 {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                report.send((1, got.get())).unwrap();
            }
            ctx.stop_signal().wait().await;
        },
    )
    .unwrap();
    let mut results = [0; 2];
    for _ in 0..2 {
        let (id, v) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        results[id] = v;
    }
    assert_eq!(results[0], 92, "refused");
    assert_eq!(results[1], 8, "delivered: the ring's 4 and the backlog's 4");
    assert_eq!(engine.mesh_stats()[0].overflow.load(Ordering::Relaxed), 92);
    engine.stop();
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn helper_threads_reach_a_shard_through_its_remote() {
    let cfg = EngineConfig {
        shards: 2,
        ring_capacity: 16,
        ..EngineConfig::default()
    };
    let (tx, rx) = mpsc::channel::<u64>();
    let engine = shards::start::<u64, mpsc::Sender<u64>, _, _>(
        cfg,
        vec![tx.clone(), tx],
        |ctx, report| async move {
            let sum = Rc::new(Cell::new(0u64));
            {
                let (sum, mesh) = (sum.clone(), ctx.mesh.clone());
                let report = report.clone();
                monoio::spawn(async move {
                    mesh.serve(|from, n| {
                        assert_eq!(
                            from,
                            mesh.me(),
                            "remote messages come as from the shard itself"
                        );
                        sum.set(sum.get() + n);
                        if n == 0 {
                            report.send(sum.get()).unwrap();
                        }
                    })
                    .await
                });
            }
            ctx.stop_signal().wait().await;
        },
    )
    .unwrap();
    let remote = engine.remotes()[1].clone();
    // Two helper threads, 1000 messages each, more than the channel holds at once.
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let r = remote.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    r.send(1).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    remote.send(0).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2000);
    engine.stop();
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn a_burst_rings_the_receiver_once_not_per_message() {
    const BURST: u64 = 10_000;
    let cfg = EngineConfig {
        shards: 2,
        ring_capacity: 16_384,
        ..EngineConfig::default()
    };
    let (tx, rx) = mpsc::channel::<u64>();
    let engine = shards::start::<u64, mpsc::Sender<u64>, _, _>(
        cfg,
        vec![tx.clone(), tx],
        |ctx, report| async move {
            if ctx.id == 1 {
                let got = Rc::new(Cell::new(0u64));
                let done = shards::local::Signal::new();
                let (g, d) = (got.clone(), done.clone());
                let mesh = ctx.mesh.clone();
                monoio::spawn(async move {
                    mesh.serve(move |_, _n: u64| {
                        g.set(g.get() + 1);
                        if g.get() == BURST {
                            d.raise();
                        }
                    })
                    .await
                });
                done.wait().await;
                report.send(got.get()).unwrap();
            } else {
                // Every shard runs its receive loop (it also hears the stop request).
                let mesh = ctx.mesh.clone();
                monoio::spawn(async move { mesh.serve(|_, _n: u64| {}).await });
                // Let shard 1 park in its event loop first, so the burst must wake it.
                monoio::time::sleep(Duration::from_millis(200)).await;
                for n in 0..BURST {
                    ctx.mesh.submit_to(1, n).unwrap();
                }
            }
            ctx.stop_signal().wait().await;
        },
    )
    .unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("shard 1 gets the burst");
    assert_eq!(got, BURST);
    let stats = engine.mesh_stats();
    assert_eq!(stats[0].sent.load(Ordering::Relaxed), BURST);
    let wakeups = stats[0].wakeups.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&wakeups),
        "{BURST} messages in one turn rang the receiver {wakeups} times"
    );
    engine.stop();
    assert!(engine.join(Duration::from_secs(5)));
}
