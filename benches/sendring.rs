//! A room's flush to real sockets: one `sendmsg` per viewer against one io_uring batch of
//! sends per flush (`liveshard::outq::sendring`), the same `OutQueue::offer_batch_all` call
//! either way.
//!
//! The sender runs on the first CPU; a reader thread on the last CPU drains every viewer's
//! socket. Each flush is one turn of one 100-byte frame to every viewer. What is measured
//! is the sending thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), which on loopback
//! includes the kernel's TCP work for the receiving side too, per delivery; the two modes
//! alternate, several rounds each, and the median is printed.
//!
//! Printed, not asserted: a benchmark, never a timed test.
//!
//! Run: `cargo bench --bench sendring` (`-- 1000` for another viewer count).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use liveshard::outq::{sendring, OutQueue, Policy};

const FLUSHES: usize = 2_000;
const ROUNDS: usize = 5;

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the set names one CPU of this machine.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes one timespec.
    unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}

fn main() {
    let viewers: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let cpus = shards::engine::available_cpus();
    pin(cpus[0]);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..viewers {
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (p, _) = listener.accept().unwrap();
        c.set_nodelay(true).unwrap();
        p.set_nonblocking(true).unwrap();
        clients.push(c);
        peers.push(p);
    }
    let outs: Vec<OutQueue> = clients
        .iter()
        .map(|c| {
            let o = OutQueue::new(1 << 20, Policy::Drop);
            o.set_fd(c.as_raw_fd());
            o
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let cpu = *cpus.last().unwrap();
        std::thread::spawn(move || {
            pin(cpu);
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                for p in &mut peers {
                    while matches!(p.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
        })
    };

    let frame = [Bytes::from(vec![b'x'; 100])];
    let mut ring_ns = Vec::new();
    let mut plain_ns = Vec::new();
    let mut behind = 0u64;
    for round in 0..2 * ROUNDS {
        let ring = round % 2 == 0;
        sendring::allow(ring);
        if ring {
            assert!(
                sendring::with(|r| r.is_some()),
                "io_uring is not available here: nothing to compare"
            );
        }
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for _ in 0..FLUSHES {
            OutQueue::offer_batch_all(
                &outs,
                |o| Some(o),
                &frame,
                Instant::now(),
                |b| {
                    behind += b.behind as u64;
                },
            );
            // A viewer whose socket was full gets the rest once it has room, as its writer
            // would: no queue grows over the run.
            for o in &outs {
                if o.queued_bytes() > 0 {
                    o.send_queued();
                }
            }
        }
        let per = (thread_cpu_ns() - cpu0) as f64 / (FLUSHES * viewers) as f64;
        let wall = wall0.elapsed().as_secs_f64();
        println!(
            "{:<8} {viewers} viewers × {FLUSHES} flushes: {per:6.0} ns CPU per delivery, {:.2} M deliveries/s",
            if ring { "io_uring" } else { "sendmsg" },
            (FLUSHES * viewers) as f64 / wall / 1e6
        );
        if ring {
            ring_ns.push(per);
        } else {
            plain_ns.push(per);
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, p) = (median(&mut ring_ns), median(&mut plain_ns));
    println!(
        "median: io_uring batch {r:.0} ns, one sendmsg each {p:.0} ns per delivery: the batch costs {:.2}× ({behind} writes found a full socket)",
        r / p
    );
}
