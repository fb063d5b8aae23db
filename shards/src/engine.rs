//! Starting, pinning and stopping shards.
//!
//! [`start`] resolves the I/O driver once (io_uring unless it is unavailable or `epoll` is
//! forced), builds the mesh, then spawns one thread per shard. Each thread pins itself to
//! one allowed CPU, builds its own monoio runtime, starts its mesh flusher and runs the
//! application's shard future. `start` returns only when every shard has built its
//! runtime, so a driver that fails on one core is an error at start, not a silent gap.

use std::fmt;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::local::Signal;
use crate::mesh::{self, Mesh, MeshStats, Remote, Shared};

/// How often a shard that has drained looks whether the others have too (only while
/// stopping).
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Which I/O driver to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll, always.
    Epoll,
}

/// The driver the shards actually run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverInUse {
    Uring,
    Epoll,
}

impl DriverInUse {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverInUse::Uring => "io_uring",
            DriverInUse::Epoll => "epoll",
        }
    }
}

impl fmt::Display for DriverInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub shards: usize,
    pub driver: Driver,
    /// Pin shard i to the i-th CPU this process may run on (round robin past the last).
    pub pin: bool,
    /// Slots per ring (one ring per ordered shard pair).
    pub ring_capacity: usize,
    /// Messages a shard may hold back per destination when that ring is full.
    pub backlog_capacity: usize,
    /// io_uring submission queue entries per shard.
    pub uring_entries: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: available_cpus().len(),
            driver: Driver::Auto,
            pin: true,
            ring_capacity: 4096,
            backlog_capacity: 65536,
            uring_entries: 1024,
        }
    }
}

/// What a shard's future gets: who it is, its mesh endpoint and its stop signal.
pub struct ShardCtx<M> {
    pub id: usize,
    pub count: usize,
    pub driver: DriverInUse,
    /// The CPU this shard is pinned to, if pinning succeeded.
    pub cpu: Option<usize>,
    pub mesh: Rc<Mesh<M>>,
    stop: Rc<Signal>,
}

impl<M> Clone for ShardCtx<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            count: self.count,
            driver: self.driver,
            cpu: self.cpu,
            mesh: self.mesh.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<M> ShardCtx<M> {
    /// Raised when the engine asks this shard to stop (seen by the mesh receive loop,
    /// so the shard must be running [`Mesh::serve`]).
    pub fn stop_signal(&self) -> &Rc<Signal> {
        &self.stop
    }
}

/// The running shards, seen from the thread that started them.
pub struct Engine<M> {
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    driver: DriverInUse,
    remotes: Vec<Remote<M>>,
}

impl<M> Engine<M> {
    pub fn driver(&self) -> DriverInUse {
        self.driver
    }

    /// A sender into each shard, for threads that are not shards (index = shard id).
    pub fn remotes(&self) -> Vec<Remote<M>> {
        self.remotes.clone()
    }

    /// Each shard's mesh counters, for metrics.
    pub fn mesh_stats(&self) -> Arc<[MeshStats]> {
        self.shared.stats.clone()
    }

    /// Asks every shard to stop (their stop signals are raised); does not wait.
    pub fn stop(&self) {
        for d in self.shared.doorbells.iter() {
            d.request_stop();
        }
    }

    /// Whether every shard thread has finished.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for all shard threads to finish, up to `timeout`. Returns false if some shard
    /// was still running when the time ran out (its thread is left behind).
    pub fn join(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut threads = self.threads;
        while Instant::now() < deadline {
            if threads.iter().all(|t| t.is_finished()) {
                for t in threads.drain(..) {
                    if t.join().is_err() {
                        tracing::error!("a shard thread panicked");
                    }
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// Resolves the driver that `driver` means on this kernel: io_uring only if the kernel
/// offers every operation monoio uses *and* a ring of `entries` can be set up (a low
/// RLIMIT_MEMLOCK on older kernels fails there, not in the probe).
pub fn resolve_driver(driver: Driver, entries: u32) -> io::Result<DriverInUse> {
    let uring_works = || {
        monoio::utils::detect_uring()
            && RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(entries)
                .build()
                .is_ok()
    };
    match driver {
        Driver::Epoll => Ok(DriverInUse::Epoll),
        Driver::Auto if uring_works() => Ok(DriverInUse::Uring),
        Driver::Auto => Ok(DriverInUse::Epoll),
        Driver::Uring if uring_works() => Ok(DriverInUse::Uring),
        Driver::Uring => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring was asked for but is not available here (kernel too old, \
             io_uring_disabled, or blocked by a seccomp profile); use --driver auto or epoll",
        )),
    }
}

/// The CPUs this process is allowed to run on, in order.
pub fn available_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// Starts `cfg.shards` shards. Shard `i` runs `main(ctx, seeds[i])`; its thread ends when
/// that future completes. `seeds` carries what each shard owns from birth (its listeners).
pub fn start<M, S, F, Fut>(cfg: EngineConfig, seeds: Vec<S>, main: F) -> io::Result<Engine<M>>
where
    M: Send + 'static,
    S: Send + 'static,
    F: Fn(ShardCtx<M>, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    assert!(cfg.shards > 0, "at least one shard");
    assert_eq!(seeds.len(), cfg.shards, "one seed per shard");
    let driver = resolve_driver(cfg.driver, cfg.uring_entries)?;
    let cpus = available_cpus();
    let (shared, parts, remotes) = mesh::build::<M>(cfg.shards, cfg.ring_capacity);
    let main = Arc::new(main);
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let drained = Arc::new(AtomicUsize::new(0));

    let mut threads = Vec::with_capacity(cfg.shards);
    for (id, (parts, seed)) in parts.into_iter().zip(seeds).enumerate() {
        let cfg = cfg.clone();
        let shared = shared.clone();
        let main = main.clone();
        let ready = ready_tx.clone();
        let drained = drained.clone();
        let cpu = cfg.pin.then(|| cpus[id % cpus.len()]);
        let thread = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                let cpu = cpu.filter(|&c| match monoio::utils::bind_to_cpu_set([c]) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(shard = id, cpu = c, error = %e, "could not pin shard");
                        false
                    }
                });
                let shard = async move {
                    let stop = Signal::new();
                    let mesh = Rc::new(Mesh::new(
                        id,
                        parts,
                        shared,
                        cfg.backlog_capacity,
                        cfg.ring_capacity,
                        stop.clone(),
                    ));
                    monoio::spawn(mesh.clone().run_flusher());
                    let ctx = ShardCtx {
                        id,
                        count: cfg.shards,
                        driver,
                        cpu,
                        mesh,
                        stop,
                    };
                    main(ctx, seed).await;
                    // Drained: keep answering the mesh until every shard is, so that a
                    // connection still finishing elsewhere can ask this shard (a
                    // playlist from the stream's owner, say) instead of waiting forever.
                    drained.fetch_add(1, Ordering::AcqRel);
                    while drained.load(Ordering::Acquire) < cfg.shards {
                        monoio::time::sleep(DRAIN_POLL).await;
                    }
                };
                match driver {
                    DriverInUse::Uring => {
                        match RuntimeBuilder::<IoUringDriver>::new()
                            .with_entries(cfg.uring_entries)
                            .enable_timer()
                            .build()
                        {
                            Ok(mut rt) => {
                                let _ = ready.send(Ok(()));
                                rt.block_on(shard)
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                            }
                        }
                    }
                    DriverInUse::Epoll => {
                        match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
                            Ok(mut rt) => {
                                let _ = ready.send(Ok(()));
                                rt.block_on(shard)
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                            }
                        }
                    }
                }
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    let engine = Engine {
        threads,
        shared,
        driver,
        remotes,
    };
    for _ in 0..cfg.shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                engine.stop();
                return Err(io::Error::new(
                    e.kind(),
                    format!("a shard could not build its {driver} runtime: {e}"),
                ));
            }
            Err(_) => {
                engine.stop();
                return Err(io::Error::other("a shard thread died during start"));
            }
        }
    }
    Ok(engine)
}
