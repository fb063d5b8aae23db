//! Streams across nodes: the `cluster-media` thread, which holds this node's stream
//! claims in Redis and tells shards which node publishes a stream.
//!
//! - **Claim.** A publish takes `ls:{stream}:claim` = `<node id>|<advertise>` with a TTL
//!   ([`CLAIM_TTL`]), unless another node holds it: then the publish is refused as a
//!   second local publisher would be. The thread refreshes every claim it holds every
//!   third of the TTL, and deletes it (only while it is still ours) when the stream ends,
//!   so a node that dies lets its streams go within the TTL.
//! - **Lookup.** A viewer of a stream that is not live on its node asks who holds the
//!   claim; the answer is the other node's advertised HTTP address (resolved here, off
//!   the shard), which the stream's home shard pulls it from (`live::pull`).
//! - **Redis unreachable.** A claim that Redis does not answer is let through (the
//!   publish works on this node alone; the shard counts it) and kept on the held list,
//!   so the refresh takes it in Redis as soon as Redis answers again, if no other node
//!   took it meanwhile. A lookup that Redis does not answer finds nothing.
//!
//! Shards never wait on Redis: requests go through a bounded channel (full: the caller
//! is told "busy" at once), answers come back by oneshot.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::client::{Conn, Target};
use super::keys;
use crate::config::ClusterConfig;

/// How long a claim lives in Redis without a refresh.
pub const CLAIM_TTL: Duration = Duration::from_secs(10);
/// How long after a failed connection the thread tries Redis again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Takes the claim if it is free or already ours (and renews its TTL); answers the value
/// it holds after (ours when taken).
const TAKE: &str = r"
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v";

/// Deletes the claim only while it is ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The answer to a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the stream in the cluster.
    Granted,
    /// Another node does (its node id).
    Held(String),
    /// Redis did not answer: publish here alone.
    Unreachable,
}

enum Req {
    Claim {
        stream: String,
        answer: oneshot::Sender<Claim>,
    },
    Release {
        stream: String,
    },
    Lookup {
        stream: String,
        answer: oneshot::Sender<Option<SocketAddr>>,
    },
}

/// The shards' handle on the `cluster-media` thread (cloned into every shard's live
/// settings).
#[derive(Clone)]
pub struct MediaCluster {
    tx: SyncSender<Req>,
    node: Arc<str>,
}

impl std::fmt::Debug for MediaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaCluster({})", self.node)
    }
}

impl MediaCluster {
    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes `stream`'s cluster-wide claim. `None`: the thread's queue is full (busy).
    pub async fn claim(&self, stream: &str) -> Option<Claim> {
        let (answer, rx) = oneshot::channel();
        let req = Req::Claim {
            stream: stream.to_string(),
            answer,
        };
        self.tx.try_send(req).ok()?;
        rx.await.ok()
    }

    /// Lets `stream`'s claim go (if this node holds it). Never waits.
    pub fn release(&self, stream: &str) {
        let req = Req::Release {
            stream: stream.to_string(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(req) {
            // Kept and refreshed: the stream stays claimed until it is published here
            // again and ends, or the node stops.
            tracing::warn!(
                stream,
                "cluster queue full: a stream claim was not released"
            );
        }
    }

    /// The HTTP address of the node that publishes `stream`, when another node does.
    /// `None` too when the queue is full or Redis does not answer.
    pub async fn lookup(&self, stream: &str) -> Option<SocketAddr> {
        let (answer, rx) = oneshot::channel();
        let req = Req::Lookup {
            stream: stream.to_string(),
            answer,
        };
        self.tx.try_send(req).ok()?;
        rx.await.ok().flatten()
    }
}

/// The `cluster-media` thread; joined at exit after every handle is dropped (it then
/// deletes the claims it still holds).
pub struct MediaThread(JoinHandle<()>);

impl MediaThread {
    pub fn join(self, timeout: Duration) {
        crate::threads::join_within(vec![self.0], timeout, "the cluster-media thread");
    }
}

/// Starts the thread. `node` is this node's id, `advertise` the HTTP address other
/// nodes reach it at.
pub fn start(
    cfg: &ClusterConfig,
    node: &str,
    advertise: &str,
) -> Result<(MediaCluster, MediaThread), String> {
    let timeout = Duration::from_millis(cfg.command_timeout_ms);
    let target = Target::parse(&cfg.redis, timeout).map_err(|e| format!("cluster.redis: {e}"))?;
    let (tx, rx) = sync_channel(cfg.queue);
    let mut worker = Worker {
        target,
        timeout,
        conn: None,
        failed_at: None,
        value: format!("{node}|{advertise}"),
        node: node.to_string(),
        held: HashSet::new(),
    };
    let thread = std::thread::Builder::new()
        .name("cluster-media".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| format!("cannot start the cluster-media thread: {e}"))?;
    Ok((
        MediaCluster {
            tx,
            node: node.into(),
        },
        MediaThread(thread),
    ))
}

struct Worker {
    target: Target,
    timeout: Duration,
    conn: Option<Conn>,
    failed_at: Option<Instant>,
    /// What this node's claims hold: `<node id>|<advertise>`.
    value: String,
    node: String,
    /// Streams this node claims (in Redis, or to take there once it answers).
    held: HashSet<String>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Req>) {
        let every = CLAIM_TTL / 3;
        let mut next = Instant::now() + every;
        loop {
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(req) => self.handle(req),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next {
                self.refresh();
                next = Instant::now() + every;
            }
        }
        // The node stops: its streams are free for other nodes at once.
        for stream in std::mem::take(&mut self.held) {
            let _ = self.release(&stream);
        }
    }

    fn handle(&mut self, req: Req) {
        match req {
            Req::Claim { stream, answer } => {
                let claim = match self.take(&stream) {
                    Ok(v) if v == self.value => Claim::Granted,
                    Ok(v) => Claim::Held(node_of(&v).to_string()),
                    Err(()) => Claim::Unreachable,
                };
                if claim != Claim::Granted {
                    tracing::info!(stream, ?claim, "cluster claim not granted");
                }
                let ours = !matches!(claim, Claim::Held(_));
                if answer.send(claim).is_err() {
                    // The publisher went while it waited: nothing will end its stream
                    // (unless a publisher here holds it already).
                    if ours && !self.held.contains(&stream) {
                        let _ = self.release(&stream);
                    }
                } else if ours {
                    self.held.insert(stream);
                }
            }
            Req::Release { stream } => {
                if self.held.remove(&stream) {
                    let _ = self.release(&stream);
                }
            }
            Req::Lookup { stream, answer } => {
                let addr = self.lookup(&stream);
                let _ = answer.send(addr);
            }
        }
    }

    /// Renews (or, after Redis was away, takes) every claim held.
    fn refresh(&mut self) {
        let held: Vec<String> = self.held.iter().cloned().collect();
        for stream in held {
            match self.take(&stream) {
                Ok(v) if v != self.value => {
                    tracing::warn!(
                        stream,
                        holder = node_of(&v),
                        "another node claimed a stream published here while Redis was away"
                    );
                }
                _ => {}
            }
        }
    }

    fn take(&mut self, stream: &str) -> Result<String, ()> {
        let ttl = CLAIM_TTL.as_millis() as u64;
        let (key, value) = (keys::stream_claim(stream), self.value.clone());
        self.with_conn(|c| {
            redis::Script::new(TAKE)
                .key(&key)
                .arg(&value)
                .arg(ttl)
                .invoke::<String>(c.like())
        })
    }

    fn release(&mut self, stream: &str) -> Result<i64, ()> {
        let (key, value) = (keys::stream_claim(stream), self.value.clone());
        self.with_conn(|c| {
            redis::Script::new(RELEASE)
                .key(&key)
                .arg(&value)
                .invoke::<i64>(c.like())
        })
    }

    fn lookup(&mut self, stream: &str) -> Option<SocketAddr> {
        let key = keys::stream_claim(stream);
        let value = self
            .with_conn(|c| {
                redis::cmd("GET")
                    .arg(&key)
                    .query::<Option<String>>(c.like())
            })
            .ok()??;
        let (node, advertise) = value.rsplit_once('|')?;
        if node == self.node {
            return None;
        }
        match advertise.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => Some(addr),
            _ => {
                tracing::warn!(stream, node, advertise, "cannot resolve a node's address");
                None
            }
        }
    }

    /// Runs `f` on the connection (made first if need be); an error drops it, and no new
    /// one is tried for [`RECONNECT_AFTER`].
    fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, ()> {
        if self.conn.is_none() {
            if self
                .failed_at
                .is_some_and(|t| t.elapsed() < RECONNECT_AFTER)
            {
                return Err(());
            }
            match self.target.connect(self.timeout) {
                Ok(c) => {
                    if self.failed_at.take().is_some() {
                        tracing::info!("cluster-media: Redis reachable again");
                    }
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.note_failure(&e);
                    return Err(());
                }
            }
        }
        let conn = self.conn.as_mut().ok_or(())?;
        f(conn).map_err(|e| {
            self.conn = None;
            self.note_failure(&e);
        })
    }

    fn note_failure(&mut self, e: &redis::RedisError) {
        if self.failed_at.is_none() {
            tracing::warn!(error = ?e.kind(), "cluster-media: Redis unreachable; streams claimed on this node only");
        }
        self.failed_at = Some(Instant::now());
    }
}

/// This node's id and advertised HTTP address: `cluster.node_id` (else the host name and
/// the HTTP port) and `cluster.advertise` (else the HTTP listen address).
pub fn identity(cfg: &ClusterConfig, http: SocketAddr) -> (String, String) {
    let node = if cfg.node_id.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", http.port())
    } else {
        cfg.node_id.clone()
    };
    let advertise = if cfg.advertise.is_empty() {
        http.to_string()
    } else {
        cfg.advertise.clone()
    };
    (node, advertise)
}

/// The node id in a claim's value.
fn node_of(value: &str) -> &str {
    value.rsplit_once('|').map_or(value, |(n, _)| n)
}
