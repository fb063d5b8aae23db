//! The in-memory cluster the engine tests run on: N instances of an engine on one thread,
//! joined by an in-memory mesh (FIFO per sender, like the rings), on a virtual clock, with
//! the real store (redb in a temporary directory) behind them. No sockets: a viewer is a
//! connection object whose outbound queue the test reads, the way a peer would.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use bytes::Bytes;
use liveshard::clock::Clock;
use liveshard::config::{Config, Sources};
use liveshard::port::{Mesh, Port};
use liveshard::store::{Committed, Store};

/// A clock the test moves by hand.
pub struct VirtualClock {
    base: Instant,
    base_ms: u64,
    offset: Cell<Duration>,
}

impl VirtualClock {
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            base: Instant::now(),
            base_ms: 1_800_000_000_000,
            offset: Cell::new(Duration::ZERO),
        })
    }

    pub fn advance(&self, d: Duration) {
        self.offset.set(self.offset.get() + d);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.base + self.offset.get()
    }

    fn unix_ms(&self) -> u64 {
        self.base_ms + self.offset.get().as_millis() as u64
    }
}

/// The in-memory mesh: one queue of (from, to, message), delivered in order.
pub struct Net<M> {
    queue: RefCell<VecDeque<(usize, usize, M)>>,
    shards: usize,
    /// Messages in flight at most; past it a send is refused, as a full ring is.
    capacity: Cell<usize>,
    pub refused: Cell<u64>,
}

impl<M> Net<M> {
    pub fn new(shards: usize) -> Rc<Self> {
        Rc::new(Self {
            queue: RefCell::new(VecDeque::new()),
            shards,
            capacity: Cell::new(1 << 20),
            refused: Cell::new(0),
        })
    }

    /// Makes the mesh refuse sends once `n` messages are in flight.
    pub fn set_capacity(&self, n: usize) {
        self.capacity.set(n);
    }

    pub fn port(self: &Rc<Self>, me: usize) -> Port<M>
    where
        M: 'static,
    {
        Port::new(Rc::new(End {
            net: self.clone(),
            me,
        }))
    }

    pub fn pop(&self) -> Option<(usize, usize, M)> {
        self.queue.borrow_mut().pop_front()
    }

    pub fn in_flight(&self) -> usize {
        self.queue.borrow().len()
    }
}

struct End<M> {
    net: Rc<Net<M>>,
    me: usize,
}

impl<M> Mesh<M> for End<M> {
    fn me(&self) -> usize {
        self.me
    }

    fn shards(&self) -> usize {
        self.net.shards
    }

    fn submit_to(&self, to: usize, msg: M) -> Result<(), M> {
        assert!(
            to < self.net.shards,
            "a message to a shard that does not exist"
        );
        let mut q = self.net.queue.borrow_mut();
        if q.len() >= self.net.capacity.get() {
            self.net.refused.set(self.net.refused.get() + 1);
            return Err(msg);
        }
        q.push_back((self.me, to, msg));
        Ok(())
    }
}

/// A config with the given `key=value` overrides (the same layering the server uses).
pub fn config(flags: &[(&str, &str)]) -> Config {
    Config::load(&Sources {
        file: None,
        env: Vec::new(),
        flags: flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .unwrap_or_else(|e| panic!("config: {e:?}"))
}

/// The real store in a temporary directory, and the commits it reports.
pub struct TestStore {
    pub store: Option<Store>,
    pub commits: Receiver<(usize, Committed)>,
    dir: std::path::PathBuf,
}

impl TestStore {
    pub fn start(durable: bool) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "liveshard-engines-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let backend =
            liveshard::store::embedded::Embedded::open(&dir, 1000, durable).expect("store opens");
        let mut store = Store::new(Box::new(backend), 4096);
        let (tx, commits) = channel();
        store
            .start(Box::new(move |shard, c| {
                let _ = tx.send((shard, c));
            }))
            .expect("store thread starts");
        Self {
            store: Some(store),
            commits,
            dir,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn handle(&self) -> liveshard::store::StoreHandle {
        self.store.as_ref().expect("running").handle()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(s) = self.store.take() {
            s.join(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs an async test body on a single-threaded runtime with timers.
pub fn run<F: std::future::Future<Output = ()>>(f: F) {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Lets the runtime run other tasks (store answers arrive through them).
pub async fn breathe() {
    monoio::time::sleep(Duration::from_millis(1)).await;
}

/// One WebSocket frame as a client reads it: the JSON text of an unmasked text frame, or
/// the close code of a close frame.
#[derive(Debug)]
pub enum Frame {
    Json(serde_json::Value),
    Close(u16),
    Other(u8),
}

pub fn parse_frames(frames: &[Bytes]) -> Vec<Frame> {
    let mut all = Vec::new();
    for f in frames {
        let mut b = &f[..];
        while b.len() >= 2 {
            let opcode = b[0] & 0x0f;
            let (len, head) = match b[1] & 0x7f {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let payload = &b[head..head + len];
            all.push(match opcode {
                1 => Frame::Json(serde_json::from_slice(payload).expect("frames carry JSON")),
                8 => Frame::Close(u16::from_be_bytes([payload[0], payload[1]])),
                other => Frame::Other(other),
            });
            b = &b[head + len..];
        }
    }
    all
}
