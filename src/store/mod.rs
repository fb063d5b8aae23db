//! Storage, off the shards' event loops (C9).
//!
//! One dedicated thread ("store") owns the backend and serves requests from a bounded
//! channel. Shards never wait on it: a request that needs an answer carries a oneshot whose
//! completion wakes the waiting task on its shard (monoio wakes across threads); a shard
//! that finds the channel full gets [`StoreError::Busy`] at once.
//!
//! Danmaku appends are group-committed: the thread takes every append waiting in the
//! channel (up to a batch), writes them in one transaction, commits (fsync under the
//! `durable` policy), and only then tells each sender's shard what became of its items
//! ([`Committed`], through the [`CommitSink`] the wiring gives the thread; the danmaku
//! engine there builds the ack frames). So an acknowledged item survives `kill -9`, and the cost of the
//! fsync is shared by everything that arrived while the previous commit was running.
//!
//! [`Backend`] is the interface a second backend (Redis, for clusters) implements;
//! [`embedded`] is the default, a redb file in the data directory. Every method is a
//! single-key or simple-index operation (rooms are created if absent, changed by an
//! atomic [`model::RoomPatch`], paged from an index of open rooms), so a Redis backend can
//! map them onto hashes, sorted sets and `HSETNX`/`WATCH` without a query language.
//! [`files`] keeps uploaded files (covers) on a thread of their own; [`recordings`] writes
//! recorded streams (DVR) and reads them back for VOD, on two more.
//!
//! Token revocations (logout, an admin's revoke-all) go through the backend too, so they
//! hold for every node sharing it: the thread applies the bounds of [`RevokeOutcome`]
//! (a user's logouts past `auth::MAX_REVOKED_PER_USER`, or any past the global cap, become
//! that user's "not before" mark), commits durably, and only then answers; expired
//! entries are swept at start and every [`SWEEP_EVERY`].

pub mod embedded;
pub mod files;
pub mod model;
pub mod recordings;
pub mod redis;
pub mod thumbs;

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::auth::Revocation;
use crate::ids::ConnRef;
use model::{ModState, Room, RoomPage, RoomPatch, RoomState, User};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The request channel is full: storage is behind. Retry later.
    Busy,
    /// The store thread is gone (shutting down, or it failed).
    Closed,
    /// The backend failed (I/O, full disk…).
    Backend(String),
    /// Stored data could not be read back.
    Corrupt(String),
    /// The backend cannot be reached (the Redis backend, with Redis down or cut off); a
    /// retry may succeed once it is back.
    Unavailable,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Busy => f.write_str("storage is busy"),
            StoreError::Closed => f.write_str("storage is closed"),
            StoreError::Backend(e) => write!(f, "storage failed: {e}"),
            StoreError::Corrupt(e) => write!(f, "stored data is corrupt: {e}"),
            StoreError::Unavailable => f.write_str("storage is unreachable"),
        }
    }
}

/// What a storage backend does; every call runs on the store thread.
pub trait Backend: Send + 'static {
    /// Appends items (room, id, encoded item) in one durable step.
    fn append_danmaku(&mut self, items: &[(String, u64, Bytes)]) -> Result<(), StoreError>;
    /// Items of `room` with ids below `before`, newest first.
    fn danmaku_page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError>;
    /// What a home shard needs to bring `room` back: last id, newest `tail` items, moderation.
    fn room_state(&self, room: &str, tail: usize) -> Result<RoomState, StoreError>;
    fn save_mods(&mut self, room: &str, mods: &ModState) -> Result<(), StoreError>;
    fn put_user(&mut self, user: &User) -> Result<(), StoreError>;
    fn get_user(&self, uid: &str) -> Result<Option<User>, StoreError>;
    fn user_by_openid(&self, openid: &str) -> Result<Option<User>, StoreError>;
    fn put_room(&mut self, room: &Room) -> Result<(), StoreError>;
    fn get_room(&self, id: &str) -> Result<Option<Room>, StoreError>;
    fn list_rooms(&self) -> Result<Vec<Room>, StoreError>;
    fn delete_room(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Stores a new room; `false` (and nothing written) if the id is taken.
    fn create_room(&mut self, room: &Room) -> Result<bool, StoreError>;
    /// Applies `patch` to room `id` in one atomic step; the room as it now is, `None` if
    /// there is no such room.
    fn update_room(&mut self, id: &str, patch: &RoomPatch) -> Result<Option<Room>, StoreError>;
    /// Rooms by id, in the order asked (`None` where there is none).
    fn get_rooms(&self, ids: &[String]) -> Result<Vec<Option<Room>>, StoreError>;
    /// Open (not closed) rooms, newest first, leaving out the ids in `skip`: `limit`
    /// rooms after the first `offset`, and how many there are in all.
    fn open_rooms_page(
        &self,
        skip: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<RoomPage, StoreError>;
    /// The user with `new.openid`, created as `new` if there is none yet (atomic, so two
    /// first logins at once make one user).
    fn user_by_openid_or_create(&mut self, new: &User) -> Result<User, StoreError>;
    /// The user `new.uid`, created as `new` if absent.
    fn user_or_create(&mut self, new: &User) -> Result<User, StoreError>;
    /// Revokes token `jti` of `uid` until `exp`; committed durably (fsynced) on return,
    /// whatever the danmaku durability policy.
    fn revoke_token(&mut self, uid: &str, jti: &str, exp: u64) -> Result<(), StoreError>;
    /// Refuses `uid`'s tokens issued before `not_before`, until `until`; a mark already
    /// there only moves forward. Durable on return.
    fn revoke_user(&mut self, uid: &str, not_before: u64, until: u64) -> Result<(), StoreError>;
    /// Every revocation still in force at `now` (expired ones are dropped first).
    fn revocations(&mut self, now: u64) -> Result<Vec<Revocation>, StoreError>;
    /// Drops revocations expired by `now`; how many were dropped.
    fn sweep_revocations(&mut self, now: u64) -> Result<usize, StoreError>;
    /// How many revocations are kept, for the bounds (expired ones not yet swept count).
    fn revocation_counts(&self, uid: &str) -> Result<RevocationCounts, StoreError>;
}

/// What [`Backend::revocation_counts`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationCounts {
    /// Revoked tokens of this user.
    pub user_tokens: usize,
    /// Revoked tokens of everyone.
    pub tokens: usize,
    /// Users with a "not before" mark.
    pub marks: usize,
    /// Whether this user has one.
    pub has_mark: bool,
}

/// What a revocation request ended as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Stored and committed: this (a token revocation may have become its user's mark).
    Stored(Revocation),
    /// Over the global bounds: nothing stored.
    Full,
}

/// How often the store thread drops expired revocations.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Where an item's ack goes once it is stored.
#[derive(Debug)]
pub struct AckTo {
    pub conn: ConnRef,
    pub cid: Option<String>,
}

/// The outcome of one group commit for one shard: the items of its connections that the
/// commit held, with their ids, and whether they are stored.
#[derive(Debug)]
pub struct Committed {
    pub stored: bool,
    pub acks: Vec<(u64, AckTo)>,
}

/// Where the store thread sends each [`Committed`]: `sink(shard, committed)`. It may block
/// (the thread waits for room on that shard's channel), never a shard.
pub type CommitSink = Box<dyn Fn(usize, Committed) + Send>;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the store thread.
pub enum Request {
    AppendDanmaku {
        room: String,
        id: u64,
        item: Bytes,
        ack: Option<AckTo>,
    },
    SaveMods {
        room: String,
        mods: ModState,
    },
    RoomState {
        room: String,
        tail: usize,
        reply: Reply<RoomState>,
    },
    DanmakuPage {
        room: String,
        before: Option<u64>,
        limit: usize,
        reply: Reply<Vec<Bytes>>,
    },
    PutUser {
        user: User,
        reply: Reply<()>,
    },
    GetUser {
        uid: String,
        reply: Reply<Option<User>>,
    },
    UserByOpenid {
        openid: String,
        reply: Reply<Option<User>>,
    },
    PutRoom {
        room: Room,
        reply: Reply<()>,
    },
    GetRoom {
        id: String,
        reply: Reply<Option<Room>>,
    },
    ListRooms {
        reply: Reply<Vec<Room>>,
    },
    DeleteRoom {
        id: String,
        reply: Reply<bool>,
    },
    CreateRoom {
        room: Room,
        reply: Reply<bool>,
    },
    UpdateRoom {
        id: String,
        patch: RoomPatch,
        reply: Reply<Option<Room>>,
    },
    GetRooms {
        ids: Vec<String>,
        reply: Reply<Vec<Option<Room>>>,
    },
    OpenRoomsPage {
        skip: Vec<String>,
        offset: usize,
        limit: usize,
        reply: Reply<RoomPage>,
    },
    UserByOpenidOrCreate {
        user: User,
        reply: Reply<User>,
    },
    UserOrCreate {
        user: User,
        reply: Reply<User>,
    },
    /// Stores a revocation within the bounds; a token's becomes the user mark
    /// `mark` when the bounds say so (see [`decide`]).
    Revoke {
        uid: String,
        rev: Revocation,
        mark: Revocation,
        reply: Reply<RevokeOutcome>,
    },
    /// Finish what was queued before this, then stop.
    Shutdown,
}

/// The shards' side of the store: cheap to clone, never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    tx: SyncSender<Request>,
}

impl StoreHandle {
    /// Queues a request that needs no answer.
    pub fn send(&self, req: Request) -> Result<(), StoreError> {
        self.tx.try_send(req).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Busy,
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Sends a request built around a reply slot and waits (asynchronously) for the answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// Items taken into one group commit at most.
const GROUP: usize = 1024;

/// The store thread: the backend is opened before the shards start (so a bad data
/// directory stops the server before it listens), the thread once the shards' remotes exist.
pub struct Store {
    backend: Option<Box<dyn Backend>>,
    rx: Option<Receiver<Request>>,
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
}

impl Store {
    pub fn new(backend: Box<dyn Backend>, queue: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue);
        Self {
            backend: Some(backend),
            rx: Some(rx),
            handle: StoreHandle { tx },
            thread: None,
        }
    }

    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// The revocations in force at `now`, read (and swept) before the thread starts, so
    /// every shard begins with them.
    pub fn revocations_at_start(&mut self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        match self.backend.as_mut() {
            Some(b) => b.revocations(now),
            None => Ok(Vec::new()),
        }
    }

    /// Starts serving requests; what each commit did goes to the shards through `sink`.
    pub fn start(&mut self, sink: CommitSink) -> std::io::Result<()> {
        let (Some(backend), Some(rx)) = (self.backend.take(), self.rx.take()) else {
            return Ok(());
        };
        self.thread = Some(
            std::thread::Builder::new()
                .name("store".into())
                .spawn(move || serve(backend, rx, sink))?,
        );
        Ok(())
    }

    /// Lets the thread finish everything queued so far, then waits for it (up to
    /// `timeout`). Call once the shards have stopped.
    pub fn join(mut self, timeout: std::time::Duration) {
        if let Some(t) = self.thread.take() {
            // Blocking is fine here: this is the main thread, not a shard.
            let _ = self.handle.tx.send(Request::Shutdown);
            let deadline = std::time::Instant::now() + timeout;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("store thread still busy at exit");
            }
        }
    }
}

fn serve(mut backend: Box<dyn Backend>, rx: Receiver<Request>, sink: CommitSink) {
    let mut appends: Vec<(String, u64, Bytes)> = Vec::new();
    let mut acks: Vec<(u64, AckTo)> = Vec::new();
    let mut others: Vec<Request> = Vec::new();
    let mut stop = false;
    let mut swept = std::time::Instant::now();
    loop {
        if swept.elapsed() >= SWEEP_EVERY {
            swept = std::time::Instant::now();
            match backend.sweep_revocations(crate::auth::now_unix()) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(dropped = n, "expired revocations swept"),
                Err(e) => tracing::warn!(error = %e, "revocation sweep failed"),
            }
        }
        let first = match rx.recv_timeout(SWEEP_EVERY) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(req) = next.take() {
            match req {
                Request::Shutdown => {
                    stop = true;
                    break;
                }
                Request::AppendDanmaku {
                    room,
                    id,
                    item,
                    ack,
                } => {
                    if let Some(a) = ack {
                        acks.push((id, a));
                    }
                    appends.push((room, id, item));
                }
                other => others.push(other),
            }
            taken += 1;
            if taken < GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            let t = std::time::Instant::now();
            let result = backend.append_danmaku(&appends);
            crate::metrics::observe_store("append_danmaku", t.elapsed());
            appends.clear();
            if let Err(e) = &result {
                tracing::error!(error = %e, "danmaku not stored");
            }
            // One message per shard for the whole group, in commit order.
            acks.sort_by_key(|(_, a)| a.conn.shard);
            while !acks.is_empty() {
                let shard = acks[0].1.conn.shard;
                let n = acks
                    .iter()
                    .take_while(|(_, a)| a.conn.shard == shard)
                    .count();
                let mine: Vec<_> = acks.drain(..n).collect();
                sink(
                    shard as usize,
                    Committed {
                        stored: result.is_ok(),
                        acks: mine,
                    },
                );
            }
        }
        for req in others.drain(..) {
            let (op, t) = (req.op(), std::time::Instant::now());
            answer(&mut *backend, req);
            crate::metrics::observe_store(op, t.elapsed());
        }
        if stop {
            return;
        }
    }
}

impl Request {
    /// The `op` label of the store's duration histogram (see [`crate::metrics::STORE_OPS`]).
    fn op(&self) -> &'static str {
        match self {
            Request::SaveMods { .. } => "save_mods",
            Request::RoomState { .. } => "room_state",
            Request::DanmakuPage { .. } => "danmaku_page",
            Request::PutUser { .. } => "put_user",
            Request::GetUser { .. } => "get_user",
            Request::UserByOpenid { .. } => "user_by_openid",
            Request::PutRoom { .. } => "put_room",
            Request::GetRoom { .. } => "get_room",
            Request::ListRooms { .. } => "list_rooms",
            Request::DeleteRoom { .. } => "delete_room",
            Request::CreateRoom { .. } => "create_room",
            Request::UpdateRoom { .. } => "update_room",
            Request::GetRooms { .. } => "get_rooms",
            Request::OpenRoomsPage { .. } => "open_rooms_page",
            Request::UserByOpenidOrCreate { .. } => "user_by_openid_or_create",
            Request::UserOrCreate { .. } => "user_or_create",
            _ => "other",
        }
    }
}

fn answer(b: &mut dyn Backend, req: Request) {
    match req {
        Request::AppendDanmaku { .. } | Request::Shutdown => unreachable!("handled by serve"),
        Request::SaveMods { room, mods } => {
            if let Err(e) = b.save_mods(&room, &mods) {
                tracing::error!(%room, error = %e, "moderation state not saved");
            }
        }
        Request::RoomState { room, tail, reply } => {
            let _ = reply.send(b.room_state(&room, tail));
        }
        Request::DanmakuPage {
            room,
            before,
            limit,
            reply,
        } => {
            let _ = reply.send(b.danmaku_page(&room, before, limit));
        }
        Request::PutUser { user, reply } => {
            let _ = reply.send(b.put_user(&user));
        }
        Request::GetUser { uid, reply } => {
            let _ = reply.send(b.get_user(&uid));
        }
        Request::UserByOpenid { openid, reply } => {
            let _ = reply.send(b.user_by_openid(&openid));
        }
        Request::PutRoom { room, reply } => {
            let _ = reply.send(b.put_room(&room));
        }
        Request::GetRoom { id, reply } => {
            let _ = reply.send(b.get_room(&id));
        }
        Request::ListRooms { reply } => {
            let _ = reply.send(b.list_rooms());
        }
        Request::DeleteRoom { id, reply } => {
            let _ = reply.send(b.delete_room(&id));
        }
        Request::CreateRoom { room, reply } => {
            let _ = reply.send(b.create_room(&room));
        }
        Request::UpdateRoom { id, patch, reply } => {
            let _ = reply.send(b.update_room(&id, &patch));
        }
        Request::GetRooms { ids, reply } => {
            let _ = reply.send(b.get_rooms(&ids));
        }
        Request::OpenRoomsPage {
            skip,
            offset,
            limit,
            reply,
        } => {
            let _ = reply.send(b.open_rooms_page(&skip, offset, limit));
        }
        Request::UserByOpenidOrCreate { user, reply } => {
            let _ = reply.send(b.user_by_openid_or_create(&user));
        }
        Request::UserOrCreate { user, reply } => {
            let _ = reply.send(b.user_or_create(&user));
        }
        Request::Revoke {
            uid,
            rev,
            mark,
            reply,
        } => {
            let _ = reply.send(revoke(b, &uid, rev, mark));
        }
    }
}

/// What a revocation of one of `uid`'s tokens becomes, given the counts: the token's own
/// entry while the user has fewer than `auth::MAX_REVOKED_PER_USER` and everyone fewer
/// than `auth::MAX_REVOKED_TOKENS`; else the user's mark (which also stops their other
/// tokens: the price of logging out that often), as long as there is room for marks or
/// the user has one already; else nothing. So each account holds at most
/// `MAX_REVOKED_PER_USER` + 1 entries, and the whole set stays under its caps.
pub fn decide(counts: RevocationCounts, rev: Revocation, mark: Revocation) -> RevokeOutcome {
    if matches!(rev, Revocation::User { .. }) {
        // An admin's revoke: always kept (one entry per user, and admins are few).
        return RevokeOutcome::Stored(rev);
    }
    if counts.user_tokens < crate::auth::MAX_REVOKED_PER_USER
        && counts.tokens < crate::auth::MAX_REVOKED_TOKENS
    {
        RevokeOutcome::Stored(rev)
    } else if counts.has_mark || counts.marks < crate::auth::MAX_USER_MARKS {
        RevokeOutcome::Stored(mark)
    } else {
        RevokeOutcome::Full
    }
}

fn revoke(
    b: &mut dyn Backend,
    uid: &str,
    rev: Revocation,
    mark: Revocation,
) -> Result<RevokeOutcome, StoreError> {
    let outcome = decide(b.revocation_counts(uid)?, rev, mark);
    match &outcome {
        RevokeOutcome::Stored(Revocation::Token { jti, exp }) => b.revoke_token(uid, jti, *exp)?,
        RevokeOutcome::Stored(Revocation::User {
            uid,
            not_before,
            until,
        }) => b.revoke_user(uid, *not_before, *until)?,
        RevokeOutcome::Full => {}
    }
    Ok(outcome)
}
