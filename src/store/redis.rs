//! The Redis backend: what several nodes share when `cluster.redis` is set (C10).
//!
//! Layout (key names in [`crate::cluster::keys`]; everything of one room carries `{room}`
//! as its hash tag, so on a Redis Cluster it lives in one slot and one script can touch it):
//!
//! | key | type | what |
//! |---|---|---|
//! | `room(id)` | string | the room (JSON) |
//! | `ROOMS` | sorted set | every room id, scored by `created_at` |
//! | `OPEN_ROOMS` | sorted set | open rooms, scored by `-created_at` (newest first) |
//! | `mods(id)` | string | the room's moderation state (JSON) |
//! | `seq(id)` | string | the room's last item id |
//! | `history(id)` | stream | items: entry id `<item id>-0`, fields `i` (the item) and `p` (priority) |
//! | `user(uid)` | string | the user (JSON) |
//! | `openid(openid)` | string | the uid of a WeChat openid |
//! | `REVOKED_TOKENS` | sorted set | `uid\njti`, scored by the token's expiry |
//! | `REVOKED_COUNTS` | hash | uid → how many of `REVOKED_TOKENS` are theirs |
//! | `REVOKED_USERS` | hash | uid → `not_before until` |
//!
//! Atomicity: each command or script touches keys of one slot. A room's record and its
//! entries in the two room indexes are different slots, so they are written one after the
//! other (record first): a node that stops in between leaves an index entry without a
//! record (skipped on read) or a record missing from the open index until its next update.
//! `update_room` reads, applies the patch in Rust, and writes with a compare-and-set script
//! on the record, retried on conflict. A user and its openid are two slots too: the openid
//! key is taken with `SET NX` first, so two first logins at once make one user. The
//! revocation keys share the `{rev}` tag, so each revocation change is one script.
//!
//! Connection: one, held; a connection-level failure drops it and the next command
//! reconnects. A call retries once on a fresh connection when the held one broke (not when
//! it timed out), never more; while Redis is away, one connection attempt per
//! `RETRY_AFTER` (250 ms) and the calls between fail at once. So a Redis that is down fails each
//! call fast with [`StoreError::Unavailable`] (REST: 503 50307) and nothing waits for it.
//! Errors and logs never carry the URL (it may hold a password).

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use redis::{ConnectionLike, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

use super::model::{ModState, Room, RoomPage, RoomPatch, RoomState, User};
use super::{Backend, RevocationCounts, StoreError};
use crate::auth::Revocation;
use crate::cluster::client::{Conn, Target};
use crate::cluster::keys;

/// While Redis is unreachable, at most one connection attempt this often; calls between
/// fail at once (a Redis that times out would otherwise hold every queued call that long).
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Attempts of an `update_room` compare-and-set before it gives up.
const CAS_TRIES: usize = 8;

/// Appends one room's items: `XADD` each, then `seq` = max(seq, largest id). An id that is
/// not above the stream's last is refused (another writer took it), unless the very same
/// item is stored under it: a call retried after a lost reply adds nothing twice.
/// KEYS: history, seq. ARGV: maxlen, then (id, item) pairs.
const APPEND: &str = r#"
local maxs, max = nil, -1
for i = 2, #ARGV, 2 do
  local sid = ARGV[i] .. '-0'
  local r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], sid, 'i', ARGV[i + 1], 'p', 'p')
  if type(r) == 'table' and r.err then
    local same = false
    local e = redis.call('XRANGE', KEYS[1], sid, sid)
    if e[1] then
      local f = e[1][2]
      for j = 1, #f, 2 do
        if f[j] == 'i' and f[j + 1] == ARGV[i + 1] then same = true end
      end
    end
    if not same then
      return redis.error_reply('item ' .. ARGV[i] .. ' not stored: ' .. r.err)
    end
  end
  local id = tonumber(ARGV[i])
  if id > max then max, maxs = id, ARGV[i] end
end
if maxs then
  local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
  if max > seq then redis.call('SET', KEYS[2], maxs) end
end
return 1
"#;

/// Compare-and-set of one string key. KEYS: the key. ARGV: expected, new.
const CAS: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Deletes a room's record, moderation and history (the last id stays, so a room id
/// reused later never repeats an item id); returns the record that was there.
/// KEYS: room, mods, history.
const DELETE_ROOM: &str = r#"
local old = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return old
"#;

/// Revokes one token. KEYS: tokens, counts. ARGV: uid, jti, exp.
const REVOKE_TOKEN: &str = r#"
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1] .. '\n' .. ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end
return 1
"#;

/// A user's mark, only ever moved forward. KEYS: users. ARGV: uid, not_before, until.
const REVOKE_USER: &str = r#"
local nb, un = tonumber(ARGV[2]), tonumber(ARGV[3])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local a, b = string.match(old, '^(%d+) (%d+)$')
  if a and tonumber(a) > nb then nb = tonumber(a) end
  if b and tonumber(b) > un then un = tonumber(b) end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %d', nb, un))
return 1
"#;

/// Drops revocations expired at `now` (expiry ≤ now); how many. KEYS: tokens, counts,
/// users. ARGV: now.
const SWEEP: &str = r#"
local now = tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(gone) do
  local uid = string.match(m, '^([^\n]*)\n')
  if uid and redis.call('HINCRBY', KEYS[2], uid, -1) <= 0 then
    redis.call('HDEL', KEYS[2], uid)
  end
end
local n = #gone
if n > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local marks = redis.call('HGETALL', KEYS[3])
for i = 1, #marks, 2 do
  local un = tonumber(string.match(marks[i + 1], ' (%d+)$') or '0')
  if un <= now then
    redis.call('HDEL', KEYS[3], marks[i])
    n = n + 1
  end
end
return n
"#;

struct Scripts {
    append: redis::Script,
    cas: redis::Script,
    delete_room: redis::Script,
    revoke_token: redis::Script,
    revoke_user: redis::Script,
    sweep: redis::Script,
}

pub struct RedisBackend {
    target: Target,
    timeout: Duration,
    conn: RefCell<Option<Conn>>,
    /// Whether the last attempt found Redis unreachable (logged once per outage).
    down: std::cell::Cell<bool>,
    /// No connection attempt before this (set when one failed).
    quiet_until: std::cell::Cell<Option<std::time::Instant>>,
    /// Items kept per room (`XADD … MAXLEN ~`).
    tail: u64,
    scripts: Scripts,
}

/// Whether `e` says Redis (or the connection to it) is not there, rather than that a
/// command was wrong.
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(ServerErrorKind::BusyLoading)
                | ErrorKind::Server(ServerErrorKind::MasterDown)
                | ErrorKind::Server(ServerErrorKind::ReadOnly)
        )
}

/// A command's failure as the store reports it: the kind and the server's detail, never
/// the URL.
fn failed(e: &RedisError) -> StoreError {
    if unreachable(e) {
        StoreError::Unavailable
    } else {
        StoreError::Backend(format!(
            "redis: {:?} {}",
            e.kind(),
            e.detail().unwrap_or_default()
        ))
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_opt<T: serde::de::DeserializeOwned>(b: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    b.map(|b| parse(&b)).transpose()
}

/// The `i` field of each entry of an `XRANGE` / `XREVRANGE` reply, in reply order.
fn stream_items(v: Value) -> Result<Vec<Bytes>, StoreError> {
    let corrupt = || StoreError::Corrupt("not a stream range reply".into());
    let Value::Array(entries) = v else {
        return match v {
            Value::Nil => Ok(Vec::new()),
            _ => Err(corrupt()),
        };
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(corrupt());
        };
        if parts.len() != 2 {
            return Err(corrupt());
        }
        let fields = match parts.pop() {
            Some(Value::Array(f)) => f,
            Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => return Err(corrupt()),
        };
        let mut item = None;
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if matches!(&k, Value::BulkString(k) if k == b"i") {
                if let Value::BulkString(b) = v {
                    item = Some(Bytes::from(b));
                }
            }
        }
        out.push(item.ok_or_else(|| StoreError::Corrupt("a history entry without `i`".into()))?);
    }
    Ok(out)
}

impl RedisBackend {
    /// A backend for `url`; connects now if it can, but a Redis that is not there yet is
    /// only a warning: each call connects again until one succeeds.
    pub fn open(url: &str, timeout: Duration, tail: u64) -> Result<Self, String> {
        let target = Target::parse(url, timeout)?;
        let backend = Self {
            target,
            timeout,
            conn: RefCell::new(None),
            down: std::cell::Cell::new(false),
            quiet_until: std::cell::Cell::new(None),
            tail: tail.max(1),
            scripts: Scripts {
                append: redis::Script::new(APPEND),
                cas: redis::Script::new(CAS),
                delete_room: redis::Script::new(DELETE_ROOM),
                revoke_token: redis::Script::new(REVOKE_TOKEN),
                revoke_user: redis::Script::new(REVOKE_USER),
                sweep: redis::Script::new(SWEEP),
            },
        };
        match backend.target.connect(timeout) {
            Ok(c) => *backend.conn.borrow_mut() = Some(c),
            Err(e) => {
                backend.down.set(true);
                tracing::warn!(
                    error = ?e.kind(),
                    "redis is not reachable yet; the store connects again on each request"
                );
            }
        }
        Ok(backend)
    }

    /// Runs `f` on the connection: connects if there is none (unless an attempt failed
    /// less than [`RETRY_AFTER`] ago); a held connection that fails at connection level
    /// (not by timing out) is dropped and `f` runs once more on a fresh one.
    fn with<T>(
        &self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.conn.borrow_mut();
        let mut fresh = false;
        loop {
            if slot.is_none() {
                if self
                    .quiet_until
                    .get()
                    .is_some_and(|t| std::time::Instant::now() < t)
                {
                    return Err(StoreError::Unavailable);
                }
                match self.target.connect(self.timeout) {
                    Ok(c) => *slot = Some(c),
                    Err(e) => {
                        self.went_down(&e);
                        return Err(StoreError::Unavailable);
                    }
                }
                fresh = true;
            }
            let conn = slot.as_mut().expect("connected above");
            match f(conn.like()) {
                Ok(v) => {
                    if self.down.replace(false) {
                        tracing::warn!("redis is reachable again");
                    }
                    return Ok(v);
                }
                Err(e) if unreachable(&e) => {
                    *slot = None;
                    if fresh || e.is_timeout() {
                        self.went_down(&e);
                        return Err(StoreError::Unavailable);
                    }
                    tracing::debug!(error = ?e.kind(), "redis connection lost; reconnecting");
                }
                Err(e) => return Err(failed(&e)),
            }
        }
    }

    /// Notes that Redis cannot be reached: a warning at the start of an outage, debug
    /// lines after it (every request tries again).
    fn went_down(&self, e: &RedisError) {
        self.quiet_until
            .set(Some(std::time::Instant::now() + RETRY_AFTER));
        if self.down.replace(true) {
            tracing::debug!(error = ?e.kind(), "redis still unreachable");
        } else {
            tracing::warn!(error = ?e.kind(), "redis is unreachable; storage calls fail until it is back");
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| redis::cmd("GET").arg(key).query(c))
    }

    /// Sets `key` to `value` only if it is absent; whether it was.
    fn set_nx(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let r: Option<String> =
            self.with(|c| redis::cmd("SET").arg(key).arg(value).arg("NX").query(c))?;
        Ok(r.is_some())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with(|c| redis::cmd("SET").arg(key).arg(value).query::<()>(c))
    }

    /// Puts the room in (or takes it out of) the indexes, as its record now says.
    fn index_room(&self, room: &Room) -> Result<(), StoreError> {
        self.with(|c| {
            redis::cmd("ZADD")
                .arg(keys::ROOMS)
                .arg(room.created_at)
                .arg(&room.id)
                .query::<()>(c)
        })?;
        if room.closed {
            self.with(|c| {
                redis::cmd("ZREM")
                    .arg(keys::OPEN_ROOMS)
                    .arg(&room.id)
                    .query::<()>(c)
            })
        } else {
            self.with(|c| {
                redis::cmd("ZADD")
                    .arg(keys::OPEN_ROOMS)
                    .arg(-(room.created_at as f64))
                    .arg(&room.id)
                    .query::<()>(c)
            })
        }
    }
}

impl Backend for RedisBackend {
    fn append_danmaku(&mut self, items: &[(String, u64, Bytes)]) -> Result<(), StoreError> {
        // One script call per room, the room's items in the order they came.
        let mut rooms: Vec<&str> = Vec::new();
        for (room, _, _) in items {
            if !rooms.contains(&room.as_str()) {
                rooms.push(room);
            }
        }
        for room in rooms {
            let (hist, seq) = (keys::history(room), keys::seq(room));
            self.with(|c| {
                let mut inv = self.scripts.append.prepare_invoke();
                inv.key(&hist).key(&seq).arg(self.tail);
                for (r, id, item) in items {
                    if r == room {
                        inv.arg(*id).arg(item.as_ref());
                    }
                }
                inv.invoke::<()>(c)
            })?;
        }
        Ok(())
    }

    fn danmaku_page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        if limit == 0 || before == Some(0) {
            return Ok(Vec::new());
        }
        let end = match before {
            Some(b) => format!("({b}-0"),
            None => "+".to_string(),
        };
        let key = keys::history(room);
        let v: Value = self.with(|c| {
            redis::cmd("XREVRANGE")
                .arg(&key)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query(c)
        })?;
        stream_items(v)
    }

    fn room_state(&self, room: &str, tail: usize) -> Result<RoomState, StoreError> {
        let last_id: Option<u64> =
            self.with(|c| redis::cmd("GET").arg(keys::seq(room)).query(c))?;
        let mods = match self.get(&keys::mods(room))? {
            Some(b) => parse(&b)?,
            None => ModState::default(),
        };
        let mut items = self.danmaku_page(room, None, tail)?;
        items.reverse();
        Ok(RoomState {
            last_id: last_id.unwrap_or(0),
            tail: items,
            mods,
        })
    }

    fn save_mods(&mut self, room: &str, mods: &ModState) -> Result<(), StoreError> {
        self.set(&keys::mods(room), &json(mods))
    }

    fn put_user(&mut self, user: &User) -> Result<(), StoreError> {
        self.set(&keys::user(&user.uid), &json(user))?;
        if !user.openid.is_empty() {
            self.set(&keys::openid(&user.openid), user.uid.as_bytes())?;
        }
        Ok(())
    }

    fn get_user(&self, uid: &str) -> Result<Option<User>, StoreError> {
        parse_opt(self.get(&keys::user(uid))?)
    }

    fn user_by_openid(&self, openid: &str) -> Result<Option<User>, StoreError> {
        match self.get(&keys::openid(openid))? {
            Some(uid) => self.get_user(&String::from_utf8_lossy(&uid)),
            None => Ok(None),
        }
    }

    fn put_room(&mut self, room: &Room) -> Result<(), StoreError> {
        self.set(&keys::room(&room.id), &json(room))?;
        self.index_room(room)
    }

    fn get_room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        parse_opt(self.get(&keys::room(id))?)
    }

    fn list_rooms(&self) -> Result<Vec<Room>, StoreError> {
        let mut ids: Vec<String> = self.with(|c| {
            redis::cmd("ZRANGE")
                .arg(keys::ROOMS)
                .arg(0)
                .arg(-1)
                .query(c)
        })?;
        // In id order, as the embedded store lists them.
        ids.sort();
        Ok(self.get_rooms(&ids)?.into_iter().flatten().collect())
    }

    fn delete_room(&mut self, id: &str) -> Result<bool, StoreError> {
        let (room, mods, hist) = (keys::room(id), keys::mods(id), keys::history(id));
        let old: Option<Vec<u8>> = self.with(|c| {
            self.scripts
                .delete_room
                .key(&room)
                .key(&mods)
                .key(&hist)
                .invoke(c)
        })?;
        for index in [keys::ROOMS, keys::OPEN_ROOMS] {
            self.with(|c| redis::cmd("ZREM").arg(index).arg(id).query::<()>(c))?;
        }
        Ok(old.is_some())
    }

    fn create_room(&mut self, room: &Room) -> Result<bool, StoreError> {
        if !self.set_nx(&keys::room(&room.id), &json(room))? {
            return Ok(false);
        }
        self.index_room(room)?;
        Ok(true)
    }

    fn update_room(&mut self, id: &str, patch: &RoomPatch) -> Result<Option<Room>, StoreError> {
        let key = keys::room(id);
        for _ in 0..CAS_TRIES {
            let Some(old) = self.get(&key)? else {
                return Ok(None);
            };
            let mut room: Room = parse(&old)?;
            patch.apply(&mut room);
            let new = json(&room);
            let set: i64 =
                self.with(|c| self.scripts.cas.key(&key).arg(&old).arg(&new).invoke(c))?;
            if set == 1 {
                self.index_room(&room)?;
                return Ok(Some(room));
            }
        }
        Err(StoreError::Backend(
            "the room changed under every try of an update".into(),
        ))
    }

    fn get_rooms(&self, ids: &[String]) -> Result<Vec<Option<Room>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if self.target.is_cluster() {
            // One GET per room: on a Redis Cluster the records are in different slots.
            return ids.iter().map(|id| self.get_room(id)).collect();
        }
        let keys: Vec<String> = ids.iter().map(|id| keys::room(id)).collect();
        let found: Vec<Option<Vec<u8>>> = self.with(|c| redis::cmd("MGET").arg(&keys).query(c))?;
        found.into_iter().map(parse_opt).collect()
    }

    fn open_rooms_page(
        &self,
        skip: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<RoomPage, StoreError> {
        let all: usize = self.with(|c| redis::cmd("ZCARD").arg(keys::OPEN_ROOMS).query(c))?;
        let skipped_open = if skip.is_empty() {
            0
        } else {
            let scores: Vec<Option<f64>> = self.with(|c| {
                redis::cmd("ZMSCORE")
                    .arg(keys::OPEN_ROOMS)
                    .arg(skip)
                    .query(c)
            })?;
            scores.iter().flatten().count()
        };
        let total = all.saturating_sub(skipped_open);
        if limit == 0 {
            return Ok(RoomPage {
                rooms: Vec::new(),
                total,
            });
        }
        // Newest first, ties by id (the order the embedded store pages in); the skipped
        // ids can be anywhere in the range, so take that many more.
        let last = offset + limit + skip.len() - 1;
        let ids: Vec<String> = self.with(|c| {
            redis::cmd("ZRANGE")
                .arg(keys::OPEN_ROOMS)
                .arg(0)
                .arg(last)
                .query(c)
        })?;
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !skip.contains(id))
            .skip(offset)
            .take(limit)
            .collect();
        let rooms = self
            .get_rooms(&ids)?
            .into_iter()
            .flatten()
            .filter(|r| !r.closed)
            .collect();
        Ok(RoomPage { rooms, total })
    }

    fn user_by_openid_or_create(&mut self, new: &User) -> Result<User, StoreError> {
        let okey = keys::openid(&new.openid);
        if self.set_nx(&okey, new.uid.as_bytes())? {
            // The openid is ours: the user record follows (two keys, two slots).
            self.set(&keys::user(&new.uid), &json(new))?;
            return Ok(new.clone());
        }
        let uid = match self.get(&okey)? {
            Some(uid) => String::from_utf8_lossy(&uid).into_owned(),
            None => return Err(StoreError::Backend("an openid vanished while read".into())),
        };
        if let Some(u) = self.get_user(&uid)? {
            return Ok(u);
        }
        // The login that took the openid has not written its user yet (or stopped before
        // it did): write one for that uid unless it appeared meanwhile.
        let user = User {
            uid: uid.clone(),
            ..new.clone()
        };
        self.set_nx(&keys::user(&uid), &json(&user))?;
        Ok(self.get_user(&uid)?.unwrap_or(user))
    }

    fn user_or_create(&mut self, new: &User) -> Result<User, StoreError> {
        if self.set_nx(&keys::user(&new.uid), &json(new))? {
            if !new.openid.is_empty() {
                self.set(&keys::openid(&new.openid), new.uid.as_bytes())?;
            }
            return Ok(new.clone());
        }
        match self.get_user(&new.uid)? {
            Some(u) => Ok(u),
            None => Err(StoreError::Backend("a user vanished while read".into())),
        }
    }

    fn revoke_token(&mut self, uid: &str, jti: &str, exp: u64) -> Result<(), StoreError> {
        self.with(|c| {
            self.scripts
                .revoke_token
                .key(keys::REVOKED_TOKENS)
                .key(keys::REVOKED_COUNTS)
                .arg(uid)
                .arg(jti)
                .arg(exp)
                .invoke::<()>(c)
        })
    }

    fn revoke_user(&mut self, uid: &str, not_before: u64, until: u64) -> Result<(), StoreError> {
        self.with(|c| {
            self.scripts
                .revoke_user
                .key(keys::REVOKED_USERS)
                .arg(uid)
                .arg(not_before)
                .arg(until)
                .invoke::<()>(c)
        })
    }

    fn revocations(&mut self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        self.sweep_revocations(now)?;
        let tokens: Vec<(String, f64)> = self.with(|c| {
            redis::cmd("ZRANGE")
                .arg(keys::REVOKED_TOKENS)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)
        })?;
        let users: Vec<(String, String)> =
            self.with(|c| redis::cmd("HGETALL").arg(keys::REVOKED_USERS).query(c))?;
        let mut out = Vec::with_capacity(tokens.len() + users.len());
        for (member, exp) in tokens {
            let Some((_, jti)) = member.split_once('\n') else {
                return Err(StoreError::Corrupt(
                    "a revoked token without its uid".into(),
                ));
            };
            out.push(Revocation::Token {
                jti: jti.to_string(),
                exp: exp as u64,
            });
        }
        for (uid, v) in users {
            let mark = v
                .split_once(' ')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            let Some((not_before, until)) = mark else {
                return Err(StoreError::Corrupt(
                    "a user mark that is not two times".into(),
                ));
            };
            out.push(Revocation::User {
                uid,
                not_before,
                until,
            });
        }
        Ok(out)
    }

    fn sweep_revocations(&mut self, now: u64) -> Result<usize, StoreError> {
        self.with(|c| {
            self.scripts
                .sweep
                .key(keys::REVOKED_TOKENS)
                .key(keys::REVOKED_COUNTS)
                .key(keys::REVOKED_USERS)
                .arg(now)
                .invoke(c)
        })
    }

    fn revocation_counts(&self, uid: &str) -> Result<RevocationCounts, StoreError> {
        let user_tokens: Option<usize> = self.with(|c| {
            redis::cmd("HGET")
                .arg(keys::REVOKED_COUNTS)
                .arg(uid)
                .query(c)
        })?;
        let tokens: usize =
            self.with(|c| redis::cmd("ZCARD").arg(keys::REVOKED_TOKENS).query(c))?;
        let marks: usize = self.with(|c| redis::cmd("HLEN").arg(keys::REVOKED_USERS).query(c))?;
        let has_mark: bool = self.with(|c| {
            redis::cmd("HEXISTS")
                .arg(keys::REVOKED_USERS)
                .arg(uid)
                .query(c)
        })?;
        Ok(RevocationCounts {
            user_tokens: user_tokens.unwrap_or(0),
            tokens,
            marks,
            has_mark,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against a real `redis-server` (installed by `scripts/test.sh`), one per test.
    use super::*;

    struct TestRedis {
        child: std::process::Child,
        port: u16,
        dir: std::path::PathBuf,
    }

    impl TestRedis {
        fn start() -> TestRedis {
            let dir = std::env::temp_dir().join(format!(
                "liveshard-redis-unit-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            for _ in 0..10 {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                if let Some(child) = Self::spawn(port, &dir) {
                    return TestRedis { child, port, dir };
                }
            }
            panic!("redis-server did not start");
        }

        fn spawn(port: u16, dir: &std::path::Path) -> Option<std::process::Child> {
            let mut child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test.sh installs it)");
            let url = format!("redis://127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return None;
                }
                let pong = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
                if pong.is_ok() {
                    return Some(child);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            None
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn stop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        fn restart(&mut self) {
            self.stop();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(c) = Self::spawn(self.port, &self.dir) {
                    self.child = c;
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "no restart");
            }
        }

        fn backend(&self, tail: u64) -> RedisBackend {
            RedisBackend::open(&self.url(), Duration::from_secs(2), tail).unwrap()
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn item(i: u64) -> Bytes {
        Bytes::from(format!("{{\"id\":{i},\"text\":\"é \\\" 👍\"}}"))
    }

    #[test]
    fn history_pages_newest_first_byte_for_byte() {
        let r = TestRedis::start();
        let mut s = r.backend(1000);
        let items: Vec<(String, u64, Bytes)> = (1..=8).map(|i| ("r".into(), i, item(i))).collect();
        s.append_danmaku(&items).unwrap();
        s.append_danmaku(&[("other".into(), 1, Bytes::from_static(b"{}"))])
            .unwrap();
        assert_eq!(
            s.danmaku_page("r", None, 3).unwrap(),
            [item(8), item(7), item(6)]
        );
        assert_eq!(
            s.danmaku_page("r", Some(3), 10).unwrap(),
            [item(2), item(1)]
        );
        assert_eq!(
            s.danmaku_page("r", Some(1), 10).unwrap(),
            Vec::<Bytes>::new()
        );
        let st = s.room_state("r", 2).unwrap();
        assert_eq!(st.last_id, 8);
        assert_eq!(st.tail, [item(7), item(8)]);
        assert_eq!(s.room_state("other", 10).unwrap().last_id, 1);
        assert_eq!(s.room_state("none", 10).unwrap().last_id, 0);

        // A retried append adds nothing twice; another item under a taken id is refused.
        s.append_danmaku(&items[6..]).unwrap();
        assert_eq!(s.danmaku_page("r", None, 100).unwrap().len(), 8);
        assert!(s
            .append_danmaku(&[("r".into(), 8, Bytes::from_static(b"{\"x\":1}"))])
            .is_err());
        // The counter never moves back.
        s.append_danmaku(&[("r".into(), 9, item(9))]).unwrap();
        assert_eq!(s.room_state("r", 0).unwrap().last_id, 9);
    }

    #[test]
    fn history_is_trimmed_to_about_the_tail() {
        let r = TestRedis::start();
        let mut s = r.backend(100);
        let items: Vec<(String, u64, Bytes)> =
            (1..=1000).map(|i| ("r".into(), i, item(i))).collect();
        s.append_danmaku(&items).unwrap();
        let kept = s.danmaku_page("r", None, 10_000).unwrap().len();
        // `MAXLEN ~` trims whole stream nodes: at least the tail, never much more.
        assert!((100..400).contains(&kept), "{kept}");
    }

    fn room(id: &str, created_at: u64) -> Room {
        Room {
            id: id.into(),
            owner: "o".into(),
            title: id.into(),
            category: String::new(),
            cover_url: String::new(),
            created_at,
            updated_at: created_at,
            closed: false,
            admins: Vec::new(),
        }
    }

    #[test]
    fn rooms_page_like_the_embedded_store() {
        let r = TestRedis::start();
        let mut s = r.backend(10);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(s.create_room(&room(id, 10 + i as u64)).unwrap());
        }
        assert!(!s.create_room(&room("a", 99)).unwrap(), "ids are unique");
        assert!(s.create_room(&room("e", 13)).unwrap(), "same time as d");
        let ids = |p: &RoomPage| p.rooms.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let p = s.open_rooms_page(&[], 0, 10).unwrap();
        assert_eq!(ids(&p), ["d", "e", "c", "b", "a"]);
        assert_eq!(p.total, 5);
        let p = s.open_rooms_page(&["c".into(), "zz".into()], 2, 2).unwrap();
        assert_eq!(ids(&p), ["b", "a"]);
        assert_eq!(p.total, 4);
        let patch = RoomPatch {
            close: true,
            add_admin: Some("x".into()),
            title: Some("B".into()),
            updated_at: 50,
            ..RoomPatch::default()
        };
        let b = s.update_room("b", &patch).unwrap().unwrap();
        assert!(b.closed);
        assert_eq!(b.admins, ["x"]);
        assert_eq!(b.title, "B");
        assert_eq!(s.get_room("b").unwrap(), Some(b));
        assert_eq!(s.update_room("nope", &patch).unwrap(), None);
        let p = s.open_rooms_page(&[], 0, 10).unwrap();
        assert_eq!(ids(&p), ["d", "e", "c", "a"]);
        assert_eq!(p.total, 4);
        let got = s.get_rooms(&["a".into(), "zz".into()]).unwrap();
        assert_eq!(got[0].as_ref().map(|r| r.id.as_str()), Some("a"));
        assert_eq!(got[1], None);
        let all: Vec<String> = s.list_rooms().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(all, ["a", "b", "c", "d", "e"], "closed ones too, by id");
        s.append_danmaku(&[("d".into(), 1, item(1))]).unwrap();
        s.save_mods("d", &ModState::default()).unwrap();
        assert!(s.delete_room("d").unwrap());
        assert!(!s.delete_room("d").unwrap());
        assert_eq!(s.open_rooms_page(&[], 0, 10).unwrap().total, 3);
        let st = s.room_state("d", 10).unwrap();
        assert!(st.tail.is_empty(), "history goes with the room");
        assert_eq!(st.last_id, 1, "the last id stays");
        // put_room keeps the indexes in step.
        let mut c = s.get_room("c").unwrap().unwrap();
        c.closed = true;
        s.put_room(&c).unwrap();
        assert_eq!(ids(&s.open_rooms_page(&[], 0, 10).unwrap()), ["e", "a"]);
    }

    #[test]
    fn users_and_mods_round_trip_and_users_are_created_once() {
        let r = TestRedis::start();
        let mut s = r.backend(10);
        let mk = |uid: &str, nick: &str| User {
            uid: uid.into(),
            openid: "oX".into(),
            nick: nick.into(),
            avatar_url: String::new(),
            created_at: 1,
        };
        let first = s.user_by_openid_or_create(&mk("u1", "first")).unwrap();
        let again = s.user_by_openid_or_create(&mk("u2", "second")).unwrap();
        assert_eq!(first, again, "the same openid finds the same user");
        assert_eq!(s.user_by_openid("oX").unwrap(), Some(first.clone()));
        assert_eq!(s.get_user("u2").unwrap(), None);
        let mut dev = mk("dev", "d");
        dev.openid.clear();
        assert_eq!(s.user_or_create(&dev).unwrap().nick, "d");
        dev.nick = "other".into();
        assert_eq!(s.user_or_create(&dev).unwrap().nick, "d");
        s.put_user(&dev).unwrap();
        assert_eq!(s.get_user("dev").unwrap(), Some(dev));
        let m = ModState {
            owner: Some("u1".into()),
            bans: vec!["x".into()],
            mutes: vec![("y".into(), u64::MAX)],
            ..Default::default()
        };
        s.save_mods("r1", &m).unwrap();
        assert_eq!(s.room_state("r1", 10).unwrap().mods, m);
    }

    #[test]
    fn revocations_like_the_embedded_store() {
        let r = TestRedis::start();
        let mut s = r.backend(10);
        s.revoke_token("u1", "j1", 100).unwrap();
        s.revoke_token("u1", "j2", 300).unwrap();
        s.revoke_token("u1", "j2", 300).unwrap();
        s.revoke_token("u2", "j3", 300).unwrap();
        s.revoke_user("u3", 50, 200).unwrap();
        s.revoke_user("u3", 40, 150).unwrap();
        assert_eq!(
            s.revocation_counts("u1").unwrap(),
            RevocationCounts {
                user_tokens: 2,
                tokens: 3,
                marks: 1,
                has_mark: false
            }
        );
        assert!(s.revocation_counts("u3").unwrap().has_mark);
        assert_eq!(s.revocation_counts("u").unwrap().user_tokens, 0);
        let all = s.revocations(10).unwrap();
        assert_eq!(all.len(), 4);
        assert!(
            all.contains(&Revocation::User {
                uid: "u3".into(),
                not_before: 50,
                until: 200
            }),
            "a mark only moves forward: {all:?}"
        );
        assert!(all.contains(&Revocation::Token {
            jti: "j1".into(),
            exp: 100
        }));
        assert_eq!(s.revocations(100).unwrap().len(), 3);
        assert_eq!(s.revocation_counts("u1").unwrap().user_tokens, 1);
        assert_eq!(s.sweep_revocations(200).unwrap(), 1);
        let left = s.revocations(200).unwrap();
        assert_eq!(left.len(), 2);
        assert!(left
            .iter()
            .all(|r| matches!(r, Revocation::Token { exp: 300, .. })));
        assert_eq!(s.sweep_revocations(300).unwrap(), 2);
        assert_eq!(
            s.revocation_counts("u1").unwrap(),
            RevocationCounts::default()
        );
    }

    #[test]
    fn a_down_redis_fails_fast_and_is_used_again_once_back() {
        let mut r = TestRedis::start();
        let mut s = r.backend(10);
        assert!(s.create_room(&room("a", 1)).unwrap());
        r.stop();
        let t = std::time::Instant::now();
        assert_eq!(s.get_room("a"), Err(StoreError::Unavailable));
        assert_eq!(s.create_room(&room("b", 1)), Err(StoreError::Unavailable));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        r.restart();
        // A call after the restart reconnects by itself (at most one attempt per
        // RETRY_AFTER while it was down).
        assert!(until_up(|| s.create_room(&room("b", 1))));
        assert_eq!(s.get_room("b").unwrap().map(|r| r.id), Some("b".into()));

        // Started while Redis is down: no error until a call, which connects.
        r.stop();
        let mut late = r.backend(10);
        assert_eq!(late.get_user("x"), Err(StoreError::Unavailable));
        r.restart();
        assert_eq!(until_up(|| late.get_user("x")), None);
        assert!(late.create_room(&room("c", 1)).unwrap());
    }

    #[test]
    fn two_nodes_patching_one_room_at_once_lose_nothing() {
        let r = TestRedis::start();
        let mut s = r.backend(10);
        assert!(s.create_room(&room("a", 1)).unwrap());
        let nodes: Vec<_> = (0..2)
            .map(|n| {
                let mut b = r.backend(10);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let patch = RoomPatch {
                            add_admin: Some(format!("n{n}-{i}")),
                            updated_at: i,
                            ..RoomPatch::default()
                        };
                        b.update_room("a", &patch).unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in nodes {
            t.join().unwrap();
        }
        let a = s.get_room("a").unwrap().unwrap();
        assert_eq!(a.admins.len(), 50, "{:?}", a.admins);
        // And two first logins with one openid on two nodes make one user.
        let mut other = r.backend(10);
        let mk = |uid: &str| User {
            uid: uid.into(),
            openid: "oY".into(),
            nick: uid.into(),
            avatar_url: String::new(),
            created_at: 1,
        };
        let first = s.user_by_openid_or_create(&mk("u1")).unwrap();
        assert_eq!(other.user_by_openid_or_create(&mk("u2")).unwrap(), first);
    }

    /// Calls `f` until it is not `Unavailable` (within 5 s); its value.
    fn until_up<T: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, StoreError>) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match f() {
                Err(StoreError::Unavailable) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
    }

    #[test]
    fn a_redis_that_does_not_answer_times_out_once_then_fails_at_once() {
        let r = TestRedis::start();
        let s = RedisBackend::open(&r.url(), Duration::from_millis(300), 10).unwrap();
        assert_eq!(s.get_user("x"), Ok(None));
        let signal = |sig: &str| {
            let ok = std::process::Command::new("kill")
                .args([sig, &r.child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        };
        signal("-STOP");
        let t = std::time::Instant::now();
        assert_eq!(s.get_user("x"), Err(StoreError::Unavailable));
        let first = t.elapsed();
        assert!(
            first < Duration::from_millis(1500),
            "no retry after a timeout: {first:?}"
        );
        let t = std::time::Instant::now();
        assert_eq!(s.get_user("x"), Err(StoreError::Unavailable));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        signal("-CONT");
        assert_eq!(until_up(|| s.get_user("x")), None);
    }

    #[test]
    fn errors_never_carry_the_url() {
        let e = RedisBackend::open("redis://user:secret@[::1", Duration::from_secs(1), 1)
            .err()
            .unwrap();
        assert!(!e.contains("secret"), "{e}");
    }
}
