//! The `cluster` thread: room batches to Redis (one script each), control messages, and
//! the heartbeat that shares online counts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Conn;
use super::{keys, Event, Outgoing, Request, RoomCount, Settings, Sink, Stats};
use crate::ids::{home_shard, RoomId};

/// Items per script call at most (a bigger batch goes in several, in order).
const MAX_ITEMS: usize = 256;
/// Requests taken from the queue per round at most.
const MAX_ROUND: usize = 1024;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

const BATCH: &str = include_str!("batch.lua");
const CONTROL: &str = "return redis.call('SPUBLISH', KEYS[1], ARGV[1])";
const COUNTS: &str = "redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1";

/// A connection that comes back after failures, with backoff between attempts.
pub(super) struct Link {
    conn: Option<Conn>,
    next_try: Instant,
    backoff: Duration,
}

impl Link {
    pub(super) fn new() -> Self {
        Link {
            conn: None,
            next_try: Instant::now(),
            backoff: Duration::from_millis(100),
        }
    }

    /// Runs `f` on the connection (connecting first if needed); on failure the connection
    /// is dropped and the next attempt waits for the backoff.
    pub(super) fn run<T>(
        &mut self,
        s: &Settings,
        stats: &Stats,
        f: impl FnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Option<T> {
        if self.conn.is_none() {
            if Instant::now() < self.next_try {
                return None;
            }
            match s.target.connect(s.timeout) {
                Ok(c) => {
                    self.conn = Some(c);
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return self.failed(stats, &e),
            }
        }
        let started = Instant::now();
        let conn = self.conn.as_mut()?;
        match f(conn) {
            Ok(v) => {
                stats.observe(started.elapsed());
                stats.set_up(true);
                self.backoff = Duration::from_millis(100);
                Some(v)
            }
            Err(e) => self.failed(stats, &e),
        }
    }

    fn failed<T>(&mut self, stats: &Stats, e: &redis::RedisError) -> Option<T> {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        stats.set_up(false);
        // The error's kind only: its text may carry the URL.
        if e.code().is_some() && self.conn.is_some() {
            // Redis answered with an error (a script's, CLUSTERDOWN…): the connection is
            // good.
            tracing::warn!(kind = ?e.kind(), "redis refused a command");
        } else {
            tracing::debug!(kind = ?e.kind(), "redis connection failed");
            self.conn = None;
            self.next_try = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        None
    }
}

pub(super) fn run(s: Settings, rx: Receiver<Request>, sink: Sink, stats: Arc<Stats>) {
    let batch = redis::Script::new(BATCH);
    let control = redis::Script::new(CONTROL);
    let counts_script = redis::Script::new(COUNTS);
    let mut link = Link::new();
    let mut counts: Vec<Vec<RoomCount>> = vec![Vec::new(); s.shards];
    let mut next_beat = Instant::now();
    loop {
        let wait = next_beat.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut round: Vec<Request> = first.into_iter().collect();
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(r) => round.push(r),
                Err(_) => break,
            }
        }
        // A room's batches in this round go as one (in arrival order: one home shard
        // sends them, in order).
        let mut rooms: Vec<(RoomId, usize, u64, Vec<Outgoing>)> = Vec::new();
        for req in round {
            match req {
                Request::Publish {
                    room,
                    shard,
                    floor,
                    items,
                } => match rooms.iter_mut().find(|(r, ..)| *r == room) {
                    Some((_, _, f, all)) => {
                        *f = (*f).max(floor);
                        all.extend(items);
                    }
                    None => rooms.push((room, shard, floor, items)),
                },
                Request::Control { room, body } => {
                    let mut payload = Vec::with_capacity(body.len() + 1);
                    payload.push(b'c');
                    payload.extend_from_slice(&body);
                    let sent = link.run(&s, &stats, |c| {
                        control
                            .key(keys::channel(&room))
                            .arg(payload)
                            .invoke::<i64>(c.like())
                    });
                    if sent.is_some() {
                        stats.controls.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Request::Revoked(body) => {
                    let mut payload = Vec::with_capacity(body.len() + s.node.len() + 2);
                    payload.push(b'r');
                    payload.extend_from_slice(s.node.as_bytes());
                    payload.push(b'\n');
                    payload.extend_from_slice(&body);
                    let sent = link.run(&s, &stats, |c| {
                        control
                            .key(keys::NODES_CHANNEL)
                            .arg(payload)
                            .invoke::<i64>(c.like())
                    });
                    if sent.is_some() {
                        stats.controls.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tracing::error!("a revocation could not be sent to the other nodes; they apply it at their next start");
                    }
                }
                Request::StopStream(room) => {
                    let payload = [b"s", room.as_bytes()].concat();
                    let sent = link.run(&s, &stats, |c| {
                        control
                            .key(keys::NODES_CHANNEL)
                            .arg(payload)
                            .invoke::<i64>(c.like())
                    });
                    match sent {
                        Some(_) => stats.controls.fetch_add(1, Ordering::Relaxed),
                        None => {
                            tracing::warn!(%room, "could not ask the other nodes to stop the closed room's stream");
                            0
                        }
                    };
                }
                Request::Counts { shard, counts: c } => {
                    if let Some(slot) = counts.get_mut(shard) {
                        *slot = c;
                    }
                }
            }
        }
        for (room, shard, floor, items) in rooms {
            publish(
                &s,
                &mut link,
                &stats,
                &batch,
                &sink,
                (room, shard, floor),
                items,
            );
        }
        if Instant::now() >= next_beat {
            heartbeat(&s, &mut link, &stats, &counts_script, &counts, &sink);
            next_beat = Instant::now() + s.heartbeat;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn publish(
    s: &Settings,
    link: &mut Link,
    stats: &Stats,
    script: &redis::Script,
    sink: &Sink,
    (room, shard, floor): (RoomId, usize, u64),
    items: Vec<Outgoing>,
) {
    let mut acks = Vec::new();
    let mut failed = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let chunk: Vec<Outgoing> = items.by_ref().take(MAX_ITEMS).collect();
        let mut inv = script.prepare_invoke();
        inv.key(keys::seq(&room))
            .key(keys::history(&room))
            .key(keys::channel(&room))
            .arg(s.history.max(1))
            .arg(floor);
        for it in &chunk {
            inv.arg(&[it.prio][..])
                .arg(&it.prefix[..])
                .arg(&it.suffix[..]);
        }
        let first = link.run(s, stats, |c| inv.invoke::<u64>(c.like()));
        let n = chunk.len() as u64;
        match first {
            Some(first) => {
                stats.publishes.fetch_add(1, Ordering::Relaxed);
                stats.items.fetch_add(n, Ordering::Relaxed);
                for (i, it) in chunk.into_iter().enumerate() {
                    if let Some(a) = it.ack {
                        acks.push((first + i as u64, a));
                    }
                }
            }
            None => {
                stats.refused.fetch_add(n, Ordering::Relaxed);
                failed.extend(chunk);
            }
        }
    }
    if !acks.is_empty() || !failed.is_empty() {
        sink(shard, Event::Published { room, acks, failed });
    }
}

/// Rooms in the directory every shard gets, the busiest first, at most.
const DIRECTORY_MAX: usize = 10_000;

/// Writes this node's counts (replacing the last ones, expiring unless renewed; each
/// value `viewers:live`), marks the node alive, reads every other live node's, and tells
/// each home shard how many viewers its rooms have elsewhere, and every shard the
/// directory of rooms with viewers or a live stream on any node.
fn heartbeat(
    s: &Settings,
    link: &mut Link,
    stats: &Stats,
    script: &redis::Script,
    counts: &[Vec<RoomCount>],
    sink: &Sink,
) {
    let now = crate::clock::unix_ms();
    let ttl = s.node_ttl.as_millis() as u64;
    let mine: Vec<&RoomCount> = counts.iter().flatten().collect();
    let others = link.run(s, stats, |c| {
        let mut inv = script.prepare_invoke();
        inv.key(keys::node_online(&s.node)).arg(ttl);
        for (room, n, live) in mine.iter().filter(|(_, n, live)| *n > 0 || *live) {
            inv.arg(&room[..]).arg(format!("{n}:{}", u8::from(*live)));
        }
        inv.invoke::<i64>(c.like())?;
        redis::cmd("ZADD")
            .arg(keys::NODES)
            .arg(now)
            .arg(&s.node[..])
            .query::<i64>(c.like())?;
        let horizon = now.saturating_sub(ttl);
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(keys::NODES)
            .arg("-inf")
            .arg(format!("({horizon}"))
            .query::<i64>(c.like())?;
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::NODES)
            .arg(horizon)
            .arg("+inf")
            .query(c.like())?;
        let mut others: HashMap<String, (u64, bool)> = HashMap::new();
        for node in nodes.iter().filter(|n| **n != *s.node) {
            let all: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(keys::node_online(node))
                .query(c.like())?;
            for (room, v) in all {
                let (n, live) = v.split_once(':').unwrap_or((&v, "0"));
                let e = others.entry(room).or_default();
                e.0 += n.parse::<u64>().unwrap_or(0);
                e.1 |= live == "1";
            }
        }
        Ok(others)
    });
    let Some(others) = others else { return };
    stats.heartbeats.fetch_add(1, Ordering::Relaxed);
    // Every room this node counts gets a figure (0 when no other node has viewers), so a
    // node that left stops counting at once.
    let mut per_shard: Vec<Vec<(RoomId, u64)>> = vec![Vec::new(); s.shards];
    for (room, _, _) in &mine {
        let n = others.get(&room[..]).map_or(0, |(n, _)| *n);
        per_shard[home_shard(room, s.shards)].push((room.clone(), n));
    }
    for (shard, counts) in per_shard.into_iter().enumerate() {
        if !counts.is_empty() {
            sink(shard, Event::Elsewhere { counts });
        }
    }
    let mut all: HashMap<RoomId, (u64, bool)> = others
        .into_iter()
        .map(|(r, v)| (RoomId::from(r), v))
        .collect();
    for (room, n, live) in mine {
        let e = all.entry(room.clone()).or_default();
        e.0 += n;
        e.1 |= *live;
    }
    let mut dir: Vec<RoomCount> = all
        .into_iter()
        .filter(|(_, (n, live))| *n > 0 || *live)
        .map(|(r, (n, live))| (r, n, live))
        .collect();
    dir.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    dir.truncate(DIRECTORY_MAX);
    let dir = Arc::new(dir);
    for shard in 0..s.shards {
        sink(shard, Event::Directory(dir.clone()));
    }
}
