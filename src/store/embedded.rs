//! The embedded backend: one redb database file in the data directory.
//!
//! redb is a pure-Rust, crash-safe B-tree store with ACID write transactions: a commit
//! with `Durability::Immediate` has been fsynced when it returns, which is what lets the
//! danmaku ack wait for it. Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `users` | uid | User (JSON) |
//! | `openids` | openid | uid |
//! | `rooms` | room id | Room (JSON) |
//! | `open_rooms` | (u64::MAX - created_at, room id) | () — open rooms, newest first |
//! | `mods` | room id | ModState (JSON) |
//! | `last_ids` | room id | last item id |
//! | `danmaku` | (room id, item id) | item JSON, as clients see it |
//! | `revoked_tokens` | (uid, jti) | the token's expiry |
//! | `revoked_users` | uid | (not_before, until) |
//!
//! Danmaku history is a bounded tail per room: appending trims what falls out of it.

use std::path::Path;

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::model::{ModState, Room, RoomPage, RoomPatch, RoomState, User};
use super::{Backend, RevocationCounts, StoreError};
use crate::auth::Revocation;

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const OPENIDS: TableDefinition<&str, &str> = TableDefinition::new("openids");
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
const MODS: TableDefinition<&str, &[u8]> = TableDefinition::new("mods");
const LAST_IDS: TableDefinition<&str, u64> = TableDefinition::new("last_ids");
const DANMAKU: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("danmaku");
const OPEN_ROOMS: TableDefinition<(u64, &str), ()> = TableDefinition::new("open_rooms");
const REVOKED_TOKENS: TableDefinition<(&str, &str), u64> = TableDefinition::new("revoked_tokens");
const REVOKED_USERS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("revoked_users");

/// The `open_rooms` key of a room: newest first when iterated in key order.
fn open_key(room: &Room) -> (u64, &str) {
    (u64::MAX - room.created_at, room.id.as_str())
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub struct Embedded {
    db: Database,
    /// Items kept per room.
    tail: u64,
    durability: Durability,
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes a room and keeps the open-rooms index in step with it.
fn write_room(tx: &redb::WriteTransaction, room: &Room) -> Result<(), StoreError> {
    let mut rooms = tx.open_table(ROOMS)?;
    let mut open = tx.open_table(OPEN_ROOMS)?;
    let old: Option<Room> = {
        let v = rooms.get(room.id.as_str())?;
        v.map(|v| parse(v.value())).transpose()?
    };
    if let Some(old) = &old {
        open.remove(open_key(old))?;
    }
    rooms.insert(room.id.as_str(), json(room).as_slice())?;
    if !room.closed {
        open.insert(open_key(room), ())?;
    }
    Ok(())
}

impl Embedded {
    /// Opens (or creates) `dir/liveshard.redb`. `fsync` false trades durability of the
    /// last commits for speed (the configured policy decides).
    pub fn open(dir: &Path, tail: u64, fsync: bool) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        let db = Database::create(dir.join("liveshard.redb"))?;
        // Create every table once so readers never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(USERS)?;
        tx.open_table(OPENIDS)?;
        tx.open_table(ROOMS)?;
        tx.open_table(MODS)?;
        tx.open_table(LAST_IDS)?;
        tx.open_table(DANMAKU)?;
        tx.open_table(REVOKED_TOKENS)?;
        tx.open_table(REVOKED_USERS)?;
        {
            // A data directory from before the index existed: build it once.
            let rooms = tx.open_table(ROOMS)?;
            let mut open = tx.open_table(OPEN_ROOMS)?;
            if open.is_empty()? && !rooms.is_empty()? {
                for row in rooms.iter()? {
                    let (_, v) = row?;
                    let room: Room = parse(v.value())?;
                    if !room.closed {
                        open.insert(open_key(&room), ())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(Self {
            db,
            tail: tail.max(1),
            durability: if fsync {
                Durability::Immediate
            } else {
                Durability::Eventual
            },
        })
    }

    fn write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability);
        Ok(tx)
    }

    /// A write that is fsynced on commit whatever the policy: a revocation is answered
    /// only once it would survive `kill -9`.
    fn write_durable(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        Ok(tx)
    }
}

impl Backend for Embedded {
    fn append_danmaku(&mut self, items: &[(String, u64, Bytes)]) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut d = tx.open_table(DANMAKU)?;
            let mut last = tx.open_table(LAST_IDS)?;
            for (room, id, item) in items {
                d.insert((room.as_str(), *id), item.as_ref())?;
                let prev = last.get(room.as_str())?.map(|v| v.value()).unwrap_or(0);
                if *id > prev {
                    last.insert(room.as_str(), *id)?;
                }
                // Trim what falls out of the tail (one item per append in steady state).
                if *id > self.tail {
                    let cut = id - self.tail;
                    d.retain_in((room.as_str(), 0)..=(room.as_str(), cut), |_, _| false)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn danmaku_page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let tx = self.db.begin_read()?;
        let d = tx.open_table(DANMAKU)?;
        let end = before.unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(limit);
        for row in d.range((room, 0)..(room, end))?.rev().take(limit) {
            let (_, v) = row?;
            out.push(Bytes::copy_from_slice(v.value()));
        }
        Ok(out)
    }

    fn room_state(&self, room: &str, tail: usize) -> Result<RoomState, StoreError> {
        let tx = self.db.begin_read()?;
        let last_id = tx
            .open_table(LAST_IDS)?
            .get(room)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mods = match tx.open_table(MODS)?.get(room)? {
            Some(v) => parse(v.value())?,
            None => ModState::default(),
        };
        drop(tx);
        let mut items = self.danmaku_page(room, None, tail)?;
        items.reverse();
        Ok(RoomState {
            last_id,
            tail: items,
            mods,
        })
    }

    fn save_mods(&mut self, room: &str, mods: &ModState) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.open_table(MODS)?.insert(room, json(mods).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn put_user(&mut self, user: &User) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.open_table(USERS)?
            .insert(user.uid.as_str(), json(user).as_slice())?;
        if !user.openid.is_empty() {
            tx.open_table(OPENIDS)?
                .insert(user.openid.as_str(), user.uid.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get_user(&self, uid: &str) -> Result<Option<User>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(USERS)?;
        let v = t.get(uid)?;
        v.map(|v| parse(v.value())).transpose()
    }

    fn user_by_openid(&self, openid: &str) -> Result<Option<User>, StoreError> {
        let uid = {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(OPENIDS)?;
            let v = t.get(openid)?;
            v.map(|v| v.value().to_string())
        };
        match uid {
            Some(uid) => self.get_user(&uid),
            None => Ok(None),
        }
    }

    fn put_room(&mut self, room: &Room) -> Result<(), StoreError> {
        let tx = self.write()?;
        write_room(&tx, room)?;
        tx.commit()?;
        Ok(())
    }

    fn get_room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ROOMS)?;
        let v = t.get(id)?;
        v.map(|v| parse(v.value())).transpose()
    }

    fn list_rooms(&self) -> Result<Vec<Room>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ROOMS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(parse(v.value())?);
        }
        Ok(out)
    }

    fn delete_room(&mut self, id: &str) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let old: Option<Room> = {
            let mut rooms = tx.open_table(ROOMS)?;
            let removed = rooms.remove(id)?;
            removed.map(|v| parse(v.value())).transpose()?
        };
        let existed = old.is_some();
        if let Some(old) = &old {
            tx.open_table(OPEN_ROOMS)?.remove(open_key(old))?;
        }
        tx.open_table(MODS)?.remove(id)?;
        tx.open_table(DANMAKU)?
            .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        // The last id stays: a room id reused later still never repeats an item id.
        tx.commit()?;
        Ok(existed)
    }

    fn create_room(&mut self, room: &Room) -> Result<bool, StoreError> {
        let tx = self.write()?;
        if tx.open_table(ROOMS)?.get(room.id.as_str())?.is_some() {
            return Ok(false);
        }
        write_room(&tx, room)?;
        tx.commit()?;
        Ok(true)
    }

    fn update_room(&mut self, id: &str, patch: &RoomPatch) -> Result<Option<Room>, StoreError> {
        let tx = self.write()?;
        let current: Option<Room> = {
            let rooms = tx.open_table(ROOMS)?;
            let v = rooms.get(id)?;
            v.map(|v| parse(v.value())).transpose()?
        };
        let Some(mut room) = current else {
            return Ok(None);
        };
        patch.apply(&mut room);
        write_room(&tx, &room)?;
        tx.commit()?;
        Ok(Some(room))
    }

    fn get_rooms(&self, ids: &[String]) -> Result<Vec<Option<Room>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ROOMS)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let v = t.get(id.as_str())?;
            out.push(v.map(|v| parse(v.value())).transpose()?);
        }
        Ok(out)
    }

    fn open_rooms_page(
        &self,
        skip: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<RoomPage, StoreError> {
        let tx = self.db.begin_read()?;
        let rooms = tx.open_table(ROOMS)?;
        let open = tx.open_table(OPEN_ROOMS)?;
        let mut skipped_open = 0usize;
        for id in skip {
            let v = rooms.get(id.as_str())?;
            if let Some(v) = v {
                let room: Room = parse(v.value())?;
                if !room.closed {
                    skipped_open += 1;
                }
            }
        }
        let total = (open.len()? as usize).saturating_sub(skipped_open);
        let mut ids = Vec::with_capacity(limit);
        let mut seen = 0usize;
        for row in open.iter()? {
            if ids.len() >= limit {
                break;
            }
            let (k, _) = row?;
            let id = k.value().1;
            if skip.iter().any(|s| s == id) {
                continue;
            }
            if seen >= offset {
                ids.push(id.to_string());
            }
            seen += 1;
        }
        let mut page = Vec::with_capacity(ids.len());
        for id in ids {
            let v = rooms.get(id.as_str())?;
            if let Some(v) = v {
                page.push(parse(v.value())?);
            }
        }
        Ok(RoomPage { rooms: page, total })
    }

    fn user_by_openid_or_create(&mut self, new: &User) -> Result<User, StoreError> {
        if let Some(u) = self.user_by_openid(&new.openid)? {
            return Ok(u);
        }
        // The store thread is the only writer, so nothing can come between the look-up and
        // the write.
        self.put_user(new)?;
        Ok(new.clone())
    }

    fn user_or_create(&mut self, new: &User) -> Result<User, StoreError> {
        if let Some(u) = self.get_user(&new.uid)? {
            return Ok(u);
        }
        self.put_user(new)?;
        Ok(new.clone())
    }

    fn revoke_token(&mut self, uid: &str, jti: &str, exp: u64) -> Result<(), StoreError> {
        let tx = self.write_durable()?;
        tx.open_table(REVOKED_TOKENS)?.insert((uid, jti), exp)?;
        tx.commit()?;
        Ok(())
    }

    fn revoke_user(&mut self, uid: &str, not_before: u64, until: u64) -> Result<(), StoreError> {
        let tx = self.write_durable()?;
        {
            let mut t = tx.open_table(REVOKED_USERS)?;
            let old = t.get(uid)?.map(|v| v.value()).unwrap_or((0, 0));
            t.insert(uid, (old.0.max(not_before), old.1.max(until)))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn revocations(&mut self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        let tx = self.write_durable()?;
        Self::sweep_in(&tx, now)?;
        let mut out = Vec::new();
        {
            let tokens = tx.open_table(REVOKED_TOKENS)?;
            for row in tokens.iter()? {
                let (k, v) = row?;
                out.push(Revocation::Token {
                    jti: k.value().1.to_string(),
                    exp: v.value(),
                });
            }
            let users = tx.open_table(REVOKED_USERS)?;
            for row in users.iter()? {
                let (k, v) = row?;
                let (not_before, until) = v.value();
                out.push(Revocation::User {
                    uid: k.value().to_string(),
                    not_before,
                    until,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn sweep_revocations(&mut self, now: u64) -> Result<usize, StoreError> {
        let tx = self.write_durable()?;
        let n = Self::sweep_in(&tx, now)?;
        tx.commit()?;
        Ok(n)
    }

    fn revocation_counts(&self, uid: &str) -> Result<RevocationCounts, StoreError> {
        let tx = self.db.begin_read()?;
        let tokens = tx.open_table(REVOKED_TOKENS)?;
        let users = tx.open_table(REVOKED_USERS)?;
        // Bounded: a user holds at most `auth::MAX_REVOKED_PER_USER` entries.
        let user_tokens = tokens
            .range((uid, "")..)?
            .take_while(|r| r.as_ref().is_ok_and(|(k, _)| k.value().0 == uid));
        Ok(RevocationCounts {
            user_tokens: user_tokens.count(),
            tokens: tokens.len()? as usize,
            marks: users.len()? as usize,
            has_mark: users.get(uid)?.is_some(),
        })
    }
}

impl Embedded {
    fn sweep_in(tx: &redb::WriteTransaction, now: u64) -> Result<usize, StoreError> {
        let mut dropped = 0;
        let mut tokens = tx.open_table(REVOKED_TOKENS)?;
        tokens.retain(|_, exp| {
            let keep = exp > now;
            dropped += usize::from(!keep);
            keep
        })?;
        let mut users = tx.open_table(REVOKED_USERS)?;
        users.retain(|_, (_, until)| {
            let keep = until > now;
            dropped += usize::from(!keep);
            keep
        })?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "liveshard-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn danmaku_tail_is_bounded_and_pages_newest_first() {
        let dir = tmp();
        let mut s = Embedded::open(&dir, 5, true).unwrap();
        let items: Vec<(String, u64, Bytes)> = (1..=8)
            .map(|i| ("r".to_string(), i, Bytes::from(format!("{{\"id\":{i}}}"))))
            .collect();
        s.append_danmaku(&items).unwrap();
        s.append_danmaku(&[("other".into(), 1, Bytes::from_static(b"{}"))])
            .unwrap();
        let page = s.danmaku_page("r", None, 3).unwrap();
        assert_eq!(
            page,
            vec![
                Bytes::from("{\"id\":8}"),
                Bytes::from("{\"id\":7}"),
                Bytes::from("{\"id\":6}")
            ]
        );
        let older = s.danmaku_page("r", Some(6), 10).unwrap();
        assert_eq!(
            older,
            vec![Bytes::from("{\"id\":5}"), Bytes::from("{\"id\":4}")],
            "ids 1-3 were trimmed"
        );
        let st = s.room_state("r", 2).unwrap();
        assert_eq!(st.last_id, 8);
        assert_eq!(
            st.tail,
            vec![Bytes::from("{\"id\":7}"), Bytes::from("{\"id\":8}")]
        );
        assert_eq!(s.room_state("other", 10).unwrap().last_id, 1);
        drop(s);
        // Reopened: everything is still there.
        let s = Embedded::open(&dir, 5, true).unwrap();
        assert_eq!(s.room_state("r", 10).unwrap().last_id, 8);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn users_rooms_and_mods_round_trip() {
        let dir = tmp();
        let mut s = Embedded::open(&dir, 5, true).unwrap();
        let u = User {
            uid: "u1".into(),
            openid: "oABC".into(),
            nick: "n".into(),
            avatar_url: String::new(),
            created_at: 1,
        };
        s.put_user(&u).unwrap();
        assert_eq!(s.user_by_openid("oABC").unwrap(), Some(u.clone()));
        assert_eq!(s.get_user("u1").unwrap(), Some(u));
        let r = Room {
            id: "r1".into(),
            owner: "u1".into(),
            title: "t".into(),
            category: String::new(),
            cover_url: String::new(),
            created_at: 1,
            updated_at: 1,
            closed: false,
            admins: Vec::new(),
        };
        s.put_room(&r).unwrap();
        assert_eq!(s.list_rooms().unwrap(), vec![r.clone()]);
        let m = ModState {
            bans: vec!["x".into()],
            ..Default::default()
        };
        s.save_mods("r1", &m).unwrap();
        assert_eq!(s.room_state("r1", 10).unwrap().mods, m);
        assert!(s.delete_room("r1").unwrap());
        assert_eq!(s.get_room("r1").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
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
    fn open_rooms_page_newest_first_and_closed_rooms_leave_it() {
        let dir = tmp();
        let mut s = Embedded::open(&dir, 5, true).unwrap();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(s.create_room(&room(id, 10 + i as u64)).unwrap());
        }
        assert!(!s.create_room(&room("a", 99)).unwrap(), "ids are unique");
        let ids = |p: &RoomPage| p.rooms.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let p = s.open_rooms_page(&[], 0, 10).unwrap();
        assert_eq!(ids(&p), ["d", "c", "b", "a"]);
        assert_eq!(p.total, 4);
        let p = s.open_rooms_page(&["c".into()], 1, 2).unwrap();
        assert_eq!(ids(&p), ["b", "a"]);
        assert_eq!(p.total, 3);
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
        assert_eq!(s.update_room("nope", &patch).unwrap(), None);
        let p = s.open_rooms_page(&[], 0, 10).unwrap();
        assert_eq!(ids(&p), ["d", "c", "a"]);
        assert_eq!(p.total, 3);
        let got = s.get_rooms(&["a".into(), "zz".into()]).unwrap();
        assert_eq!(got[0].as_ref().map(|r| r.id.as_str()), Some("a"));
        assert_eq!(got[1], None);
        assert!(s.delete_room("d").unwrap());
        assert_eq!(s.open_rooms_page(&[], 0, 10).unwrap().total, 2);
        drop(s);
        let s = Embedded::open(&dir, 5, true).unwrap();
        assert_eq!(ids(&s.open_rooms_page(&[], 0, 10).unwrap()), ["c", "a"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn users_are_created_once() {
        let dir = tmp();
        let mut s = Embedded::open(&dir, 5, true).unwrap();
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
        let mut dev = mk("dev", "d");
        dev.openid.clear();
        assert_eq!(s.user_or_create(&dev).unwrap().nick, "d");
        dev.nick = "other".into();
        assert_eq!(s.user_or_create(&dev).unwrap().nick, "d");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn revocations_are_kept_across_reopen_and_swept_when_expired() {
        let dir = tmp();
        let mut s = Embedded::open(&dir, 5, false).unwrap();
        s.revoke_token("u1", "j1", 100).unwrap();
        s.revoke_token("u1", "j2", 300).unwrap();
        s.revoke_token("u2", "j3", 300).unwrap();
        s.revoke_user("u3", 50, 200).unwrap();
        s.revoke_user("u3", 40, 150).unwrap();
        let counts = s.revocation_counts("u1").unwrap();
        assert_eq!(
            counts,
            RevocationCounts {
                user_tokens: 2,
                tokens: 3,
                marks: 1,
                has_mark: false
            }
        );
        assert!(s.revocation_counts("u3").unwrap().has_mark);
        assert_eq!(
            s.revocation_counts("u").unwrap().user_tokens,
            0,
            "a prefix is not the user"
        );
        drop(s);
        // Reopened (the durability policy was the fast one; revocations are fsynced anyway).
        let mut s = Embedded::open(&dir, 5, false).unwrap();
        let mut all = s.revocations(10).unwrap();
        all.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(all.len(), 4);
        assert!(
            all.contains(&Revocation::User {
                uid: "u3".into(),
                not_before: 50,
                until: 200
            }),
            "a mark only moves forward: {all:?}"
        );
        // At 100 the first token has expired; at 200 the mark has.
        assert_eq!(s.revocations(100).unwrap().len(), 3);
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn revocations_past_the_bounds_become_the_users_mark() {
        use crate::store::{decide, RevokeOutcome};
        let tok = Revocation::Token {
            jti: "j".into(),
            exp: 9,
        };
        let mark = Revocation::User {
            uid: "u".into(),
            not_before: 5,
            until: 9,
        };
        let c = |user_tokens, tokens, marks, has_mark| RevocationCounts {
            user_tokens,
            tokens,
            marks,
            has_mark,
        };
        let per_user = crate::auth::MAX_REVOKED_PER_USER;
        let total = crate::auth::MAX_REVOKED_TOKENS;
        let marks = crate::auth::MAX_USER_MARKS;
        assert_eq!(
            decide(c(0, 0, 0, false), tok.clone(), mark.clone()),
            RevokeOutcome::Stored(tok.clone())
        );
        assert_eq!(
            decide(c(per_user, per_user, 0, false), tok.clone(), mark.clone()),
            RevokeOutcome::Stored(mark.clone())
        );
        assert_eq!(
            decide(c(0, total, 0, false), tok.clone(), mark.clone()),
            RevokeOutcome::Stored(mark.clone())
        );
        assert_eq!(
            decide(c(0, total, marks, false), tok.clone(), mark.clone()),
            RevokeOutcome::Full
        );
        assert_eq!(
            decide(c(0, total, marks, true), tok.clone(), mark.clone()),
            RevokeOutcome::Stored(mark.clone()),
            "a user's existing mark can always move"
        );
        assert_eq!(
            decide(c(0, total, marks, false), mark.clone(), mark.clone()),
            RevokeOutcome::Stored(mark),
            "an admin's revoke is always kept"
        );
    }
}
