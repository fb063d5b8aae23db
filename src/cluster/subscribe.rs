//! The `cluster-sub` thread: this node's subscriptions to its rooms' shard channels, one
//! RESP3 connection per Redis node that owns some (one in all on a single server), and
//! what arrives on them, in id order, to each room's home shard.
//!
//! Holes: each room remembers the last id it passed on. A batch that starts past the next
//! one (a message lost to a reconnection or a failover) is preceded by the missing items,
//! read back from the room's stream. When a subscription is (re)made, the room's counter
//! is read too: items published while this node was not listening are filled at once, and
//! a counter behind what this node has seen (Redis lost its data) is put back, so ids
//! never go backwards.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use redis::{PushKind, Value};

use super::publish::Link;
use super::{keys, parse_payload, Event, Parsed, Settings, Sink, Stats, SubRequest};
use crate::ids::{home_shard, RoomId};

/// A Redis node, `None` for the one server of a non-cluster setup.
type NodeKey = Option<(String, u16)>;

/// The nodes' channel's place among the rooms (no room id has a `*`).
const NODES: &str = "*nodes";

/// Messages read from one connection before looking at the others and the requests.
const READ_BURST: usize = 256;
/// Items read back per call when filling a hole.
const FILL_CHUNK: usize = 512;

/// The counter put back when Redis has less than this node saw; returns what it was.
const FLOOR: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return v";

struct Room {
    node: NodeKey,
    /// The last id passed on to the home shard, or the room's counter when the
    /// subscription was first made.
    last: u64,
    /// Whether `last` is known (the first subscription was confirmed).
    known: bool,
    confirmed: bool,
    waiters: Vec<oneshot::Sender<bool>>,
}

struct NodeConn {
    conn: Option<redis::Connection>,
    next_try: Instant,
    backoff: Duration,
}

struct Sub {
    s: Settings,
    sink: Sink,
    stats: Arc<Stats>,
    rooms: HashMap<RoomId, Room>,
    nodes: HashMap<NodeKey, NodeConn>,
    /// Commands: slot lookups, hole filling, the counter floor.
    cmd: Link,
    floor: redis::Script,
}

pub(super) fn run(s: Settings, rx: Receiver<SubRequest>, sink: Sink, stats: Arc<Stats>) {
    let mut sub = Sub {
        s,
        sink,
        stats,
        rooms: HashMap::new(),
        nodes: HashMap::new(),
        cmd: Link::new(),
        floor: redis::Script::new(FLOOR),
    };
    // The nodes' channel (revocations, streams to stop): listened to for the node's life.
    let (done, _) = oneshot::channel();
    sub.subscribe(RoomId::from(NODES), done);
    loop {
        // Requests: wait for one only while there is nothing to read.
        let idle = sub.nodes.values().all(|n| n.conn.is_none());
        let mut first = None;
        if idle {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => first = Some(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let mut reqs: Vec<SubRequest> = first.into_iter().collect();
        loop {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        for r in reqs {
            match r {
                SubRequest::Subscribe { room, done } => sub.subscribe(room, done),
                SubRequest::Unsubscribe { room } => sub.unsubscribe(&room),
            }
        }
        sub.connect_nodes();
        sub.read_all();
    }
}

impl Sub {
    fn subscribe(&mut self, room: RoomId, done: oneshot::Sender<bool>) {
        if let Some(r) = self.rooms.get_mut(&room) {
            if r.confirmed {
                let _ = done.send(true);
            } else {
                r.waiters.push(done);
            }
            return;
        }
        let Some(node) = self.node_of(&room) else {
            // Redis is down: the room serves this node's viewers; it is subscribed when
            // Redis returns (the home shard asks again when it next brings it up).
            let _ = done.send(false);
            return;
        };
        self.rooms.insert(
            room.clone(),
            Room {
                node: node.clone(),
                last: 0,
                known: false,
                confirmed: false,
                waiters: vec![done],
            },
        );
        let conn = self.nodes.entry(node).or_insert_with(|| NodeConn {
            conn: None,
            next_try: Instant::now(),
            backoff: Duration::from_millis(100),
        });
        if let Some(c) = conn.conn.as_mut() {
            if send(c, "SSUBSCRIBE", &room).is_err() {
                conn.conn = None;
            }
        }
    }

    fn unsubscribe(&mut self, room: &RoomId) {
        let Some(r) = self.rooms.remove(room) else {
            return;
        };
        if r.confirmed {
            self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(Some(c)) = self.nodes.get_mut(&r.node).map(|n| n.conn.as_mut()) {
            let _ = send(c, "SUNSUBSCRIBE", room);
        }
    }

    /// Which Redis node has `room`'s channel; `None` if that cannot be known now.
    fn node_of(&mut self, room: &str) -> Option<NodeKey> {
        if !self.s.target.is_cluster() {
            return Some(None);
        }
        let channel = channel_of(room);
        self.cmd
            .run(&self.s, &self.stats, |c| {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&channel)
                    .query(c.like())?;
                let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(c.like())?;
                Ok(master_of(&slots, slot))
            })?
            .map(Some)
    }

    /// (Re)connects nodes that have rooms and no connection, and subscribes their rooms.
    fn connect_nodes(&mut self) {
        let now = Instant::now();
        let wanted: Vec<NodeKey> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.conn.is_none() && n.next_try <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in wanted {
            let rooms: Vec<RoomId> = self
                .rooms
                .iter()
                .filter(|(_, r)| r.node == key)
                .map(|(id, _)| id.clone())
                .collect();
            if rooms.is_empty() {
                self.nodes.remove(&key);
                continue;
            }
            let node = key.as_ref().map(|(h, p)| (h.as_str(), *p));
            let made = self
                .s
                .target
                .connect_node(node, true, self.s.timeout)
                .and_then(|mut c| {
                    let slice = Duration::from_millis(if self.nodes.len() > 1 { 5 } else { 20 });
                    c.set_read_timeout(Some(slice))?;
                    for room in &rooms {
                        send(&mut c, "SSUBSCRIBE", room)?;
                    }
                    Ok(c)
                });
            let n = self.nodes.get_mut(&key).expect("listed above");
            match made {
                Ok(c) => {
                    n.conn = Some(c);
                    n.backoff = Duration::from_millis(100);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(kind = ?e.kind(), "redis subscriber connection failed");
                    self.stats.set_up(false);
                    n.next_try = now + n.backoff;
                    n.backoff = (n.backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn read_all(&mut self) {
        let keys: Vec<NodeKey> = self.nodes.keys().cloned().collect();
        for key in keys {
            for _ in 0..READ_BURST {
                let Some(Some(c)) = self.nodes.get_mut(&key).map(|n| n.conn.as_mut()) else {
                    break;
                };
                match c.recv_response() {
                    Ok(v) => self.on_value(v),
                    Err(e) if e.is_timeout() => break,
                    Err(e) => {
                        self.lost(&key, &e);
                        break;
                    }
                }
            }
        }
    }

    /// A subscriber connection failed: its rooms are subscribed again on reconnection.
    fn lost(&mut self, key: &NodeKey, e: &redis::RedisError) {
        tracing::debug!(kind = ?e.kind(), "redis subscriber connection lost");
        self.stats.set_up(false);
        if let Some(n) = self.nodes.get_mut(key) {
            n.conn = None;
            n.next_try = Instant::now() + n.backoff;
        }
        for (id, r) in self.rooms.iter_mut().filter(|(_, r)| r.node == *key) {
            if r.confirmed && &**id != NODES {
                self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
            r.confirmed = false;
        }
        if self.s.target.is_cluster() {
            // The slots may have moved (a failover): place each room again.
            let rooms: Vec<RoomId> = self
                .rooms
                .iter()
                .filter(|(_, r)| r.node == *key)
                .map(|(id, _)| id.clone())
                .collect();
            for room in rooms {
                if let Some(node) = self.node_of(&room) {
                    if let Some(r) = self.rooms.get_mut(&room) {
                        r.node = node.clone();
                    }
                    self.nodes.entry(node).or_insert_with(|| NodeConn {
                        conn: None,
                        next_try: Instant::now(),
                        backoff: Duration::from_millis(100),
                    });
                }
            }
        }
    }

    fn on_value(&mut self, v: Value) {
        let Value::Push { kind, data } = v else {
            return;
        };
        let mut data = data.into_iter();
        let Some(room) = data.next().and_then(|c| room_of_channel(&c)) else {
            return;
        };
        match kind {
            PushKind::SSubscribe => self.confirmed(&room),
            PushKind::SMessage => {
                let Some(Value::BulkString(payload)) = data.next() else {
                    return;
                };
                if &*room == NODES {
                    return self.node_message(&payload);
                }
                match parse_payload(&payload) {
                    Some(Parsed::Items { first, last, items }) => {
                        self.items(&room, first, last, items)
                    }
                    Some(Parsed::Control(body)) => {
                        if self.rooms.contains_key(&room) {
                            let shard = home_shard(&room, self.s.shards);
                            (self.sink)(shard, Event::Control { room, body });
                        }
                    }
                    None => tracing::warn!(%room, "unreadable message on a room channel"),
                }
            }
            PushKind::SUnsubscribe => {
                // Not asked for (an unsubscribed room is forgotten first): the slot moved
                // to another node. Place the room again.
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                if r.confirmed && &*room != NODES {
                    self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
                r.confirmed = false;
                if let Some(node) = self.node_of(&room) {
                    if let Some(r) = self.rooms.get_mut(&room) {
                        r.node = node.clone();
                    }
                    let n = self.nodes.entry(node).or_insert_with(|| NodeConn {
                        conn: None,
                        next_try: Instant::now(),
                        backoff: Duration::from_millis(100),
                    });
                    if let Some(c) = n.conn.as_mut() {
                        let _ = send(c, "SSUBSCRIBE", &room);
                    }
                }
            }
            _ => {}
        }
    }

    /// Redis confirmed a subscription: from here on every batch of the room arrives. The
    /// room's counter is read now: the first time, it is where this node starts (what is
    /// below it, the home shard reads with the room's state after this); after a
    /// reconnection, what was published meanwhile is filled at once.
    fn confirmed(&mut self, room: &RoomId) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if &**room == NODES {
            r.confirmed = true;
            return;
        }
        if !r.confirmed {
            r.confirmed = true;
            self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        let (last, known) = (r.last, r.known);
        let floor = &self.floor;
        let seq = self.cmd.run(&self.s, &self.stats, |c| {
            floor.key(keys::seq(room)).arg(last).invoke::<u64>(c.like())
        });
        match seq {
            Some(seq) if !known => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.last = seq;
                    r.known = true;
                }
            }
            Some(seq) if seq > last => self.fill(room, last + 1, seq),
            _ => {}
        }
        if let Some(r) = self.rooms.get_mut(room) {
            for w in r.waiters.drain(..) {
                let _ = w.send(true);
            }
        }
    }

    /// A message on the nodes' channel: a revocation from some node, which every shard
    /// here applies (this node's own were applied before they were sent); a stream to
    /// stop, to its home shard.
    fn node_message(&mut self, payload: &[u8]) {
        if let Some(room) = payload.strip_prefix(b"s") {
            let Ok(room) = std::str::from_utf8(room) else {
                return;
            };
            if crate::ids::valid_room_id(room) {
                let shard = home_shard(room, self.s.shards);
                (self.sink)(shard, Event::StopStream(RoomId::from(room)));
            }
            return;
        }
        let Some(rest) = payload.strip_prefix(b"r") else {
            return;
        };
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return;
        };
        if &rest[..nl] == self.s.node.as_bytes() {
            return;
        }
        let body = Bytes::copy_from_slice(&rest[nl + 1..]);
        for shard in 0..self.s.shards {
            (self.sink)(shard, Event::Revoked(body.clone()));
        }
    }

    fn items(&mut self, room: &RoomId, first: u64, last: u64, items: Vec<(u8, Bytes)>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let (seen, known) = (r.last, r.known);
        if known && last <= seen {
            return;
        }
        if known && first > seen + 1 {
            self.fill(room, seen + 1, first - 1);
        }
        let skip = if seen >= first {
            (seen + 1 - first) as usize
        } else {
            0
        };
        let items: Vec<(u8, Bytes)> = items.into_iter().skip(skip).collect();
        let first = first.max(seen + 1);
        if let Some(r) = self.rooms.get_mut(room) {
            r.last = last;
        }
        let shard = home_shard(room, self.s.shards);
        (self.sink)(
            shard,
            Event::Items {
                room: room.clone(),
                first,
                last,
                items,
            },
        );
    }

    /// Reads items `from..=to` back from the room's stream and passes them on.
    fn fill(&mut self, room: &RoomId, from: u64, to: u64) {
        let mut next = from;
        while next <= to {
            let key = keys::history(room);
            let got = self.cmd.run(&self.s, &self.stats, |c| {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(format!("{next}-0"))
                    .arg(format!("{to}-0"))
                    .arg("COUNT")
                    .arg(FILL_CHUNK)
                    .query::<Vec<(String, Vec<Vec<u8>>)>>(c.like())
            });
            let Some(entries) = got else { return };
            self.stats.fills.fetch_add(1, Ordering::Relaxed);
            let mut items = Vec::with_capacity(entries.len());
            let mut upto = to;
            for (id, fields) in &entries {
                let (mut item, mut prio) = (None, b'p');
                for kv in fields.chunks(2) {
                    match (kv.first().map(|k| &k[..]), kv.get(1)) {
                        (Some(b"i"), Some(v)) => item = Some(Bytes::copy_from_slice(v)),
                        (Some(b"p"), Some(v)) => prio = v.first().copied().unwrap_or(b'p'),
                        _ => {}
                    }
                }
                if let Some(item) = item {
                    items.push((prio, item));
                }
                if entries.len() == FILL_CHUNK {
                    upto = id
                        .split_once('-')
                        .and_then(|(n, _)| n.parse().ok())
                        .unwrap_or(to);
                }
            }
            if let Some(r) = self.rooms.get_mut(room) {
                r.last = r.last.max(upto);
            }
            let shard = home_shard(room, self.s.shards);
            (self.sink)(
                shard,
                Event::Items {
                    room: room.clone(),
                    first: next,
                    last: upto,
                    items,
                },
            );
            next = upto + 1;
        }
    }
}

fn send(c: &mut redis::Connection, what: &str, room: &str) -> redis::RedisResult<()> {
    c.send_packed_command(&redis::cmd(what).arg(channel_of(room)).get_packed_command())
}

fn channel_of(room: &str) -> String {
    if room == NODES {
        keys::NODES_CHANNEL.to_string()
    } else {
        keys::channel(room)
    }
}

/// `ls:{room}:ch` → `room` (the nodes' channel → [`NODES`]).
fn room_of_channel(v: &Value) -> Option<RoomId> {
    let Value::BulkString(b) = v else { return None };
    let s = std::str::from_utf8(b).ok()?;
    if s == keys::NODES_CHANNEL {
        return Some(RoomId::from(NODES));
    }
    let room = s.strip_prefix("ls:{")?.strip_suffix("}:ch")?;
    Some(RoomId::from(room))
}

/// The master serving `slot`, from a `CLUSTER SLOTS` answer.
fn master_of(slots: &Value, slot: u16) -> Option<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|r| {
        let Value::Array(r) = r else { return None };
        let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(m))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        if (*a..=*b).contains(&(slot as i64)) {
            let host = match m.first()? {
                Value::BulkString(h) => String::from_utf8_lossy(h).into_owned(),
                Value::SimpleString(h) => h.clone(),
                _ => return None,
            };
            let Value::Int(port) = m.get(1)? else {
                return None;
            };
            Some((host, *port as u16))
        } else {
            None
        }
    })
}
