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
//! Reads while Redis is unreachable answer from what this node last read (`cache.rs`): a
//! room, a page of the room list, a user; writes fail.
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
use redis::{ConnectionLike, RedisError, RedisResult, Value};

use super::model::{ModState, Room, RoomPage, RoomPatch, RoomState, User};
use super::{Backend, RevocationCounts, StoreError};
use crate::auth::Revocation;
use crate::cluster::client::{Conn, Target};
use crate::cluster::keys;
use cache::ReadCache;
use codec::*;
use scripts::*;

mod cache;
mod codec;
mod scripts;
#[cfg(test)]
mod tests;

/// While Redis is unreachable, at most one connection attempt this often; calls between
/// fail at once (a Redis that times out would otherwise hold every queued call that long).
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Attempts of an `update_room` compare-and-set before it gives up; between two, a pause
/// that grows with the attempt, with some jitter, so writers that collided do not collide
/// again in step (two nodes patching one room at once on a loaded machine took more than 8
/// back-to-back tries).
const CAS_TRIES: u32 = 40;

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
    /// What the last reads found: answers while Redis is unreachable.
    seen: ReadCache,
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
            seen: ReadCache::new(),
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
        match self.get(&keys::user(uid)).and_then(parse_opt::<User>) {
            Ok(u) => {
                if let Some(u) = &u {
                    self.seen.user(u);
                }
                Ok(u)
            }
            Err(StoreError::Unavailable) => self
                .seen
                .cached_user(uid)
                .map(Some)
                .ok_or(StoreError::Unavailable),
            Err(e) => Err(e),
        }
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
        match self.get(&keys::room(id)).and_then(parse_opt::<Room>) {
            Ok(r) => {
                self.seen.room(id, r.as_ref());
                Ok(r)
            }
            Err(StoreError::Unavailable) => self
                .seen
                .cached_room(id)
                .map(Some)
                .ok_or(StoreError::Unavailable),
            Err(e) => Err(e),
        }
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
        for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() % 500);
                let pause = 200 * attempt.min(10) + jitter;
                std::thread::sleep(Duration::from_micros(pause.into()));
            }
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
        let found = self
            .with(|c| {
                redis::cmd("MGET")
                    .arg(&keys)
                    .query::<Vec<Option<Vec<u8>>>>(c)
            })
            .and_then(|found| {
                found
                    .into_iter()
                    .map(parse_opt)
                    .collect::<Result<Vec<Option<Room>>, _>>()
            });
        match found {
            Ok(rooms) => {
                for (id, r) in ids.iter().zip(&rooms) {
                    self.seen.room(id, r.as_ref());
                }
                Ok(rooms)
            }
            // What this node last read of each (rooms it never read are left out).
            Err(StoreError::Unavailable) => {
                Ok(ids.iter().map(|id| self.seen.cached_room(id)).collect())
            }
            Err(e) => Err(e),
        }
    }

    fn open_rooms_page(
        &self,
        skip: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<RoomPage, StoreError> {
        match self.open_rooms_page_now(skip, offset, limit) {
            Ok(page) => {
                self.seen.page(offset, limit, &page);
                Ok(page)
            }
            // The page as this node last read it.
            Err(StoreError::Unavailable) => self
                .seen
                .cached_page(offset, limit)
                .ok_or(StoreError::Unavailable),
            Err(e) => Err(e),
        }
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

impl RedisBackend {
    /// [`Backend::open_rooms_page`] from Redis.
    fn open_rooms_page_now(
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
}
