//! A room's two halves.
//!
//! [`HomeRoom`] lives only on the room's home shard (`hash(room) % shards`) and is the
//! authority: it assigns ids, keeps history, applies the delivery cap and moderation, knows
//! how many viewers each shard has and which users are in the room, and batches items for
//! the merge window. [`LocalRoom`] lives on every shard that has viewers of the room: the
//! list of those viewers, and the per-user index for private messages and kicks.
//!
//! Both are plain data owned by one shard; nothing here is shared across threads.
//! `LocalRoom` is in `local_room.rs` (re-exported here).

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::hygiene::TokenBucket;
pub use super::local_room::LocalRoom;
use super::protocol::{code, gap_frame, item_id, list_frame, list_frame_with};
use super::{RoomId, Uid};

/// How an item competes for the room's delivery cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Plain danmaku and likes: sampled when the room is over its cap.
    Plain,
    /// Paid/VIP users' danmaku: never dropped.
    Vip,
    /// Gifts: never dropped.
    Gift,
    /// System notices, live/offline: never dropped.
    System,
}

impl Priority {
    /// The letter an item's priority travels as between nodes.
    pub fn letter(self) -> u8 {
        match self {
            Priority::Plain => b'p',
            Priority::Vip => b'v',
            Priority::Gift => b'g',
            Priority::System => b's',
        }
    }

    pub fn from_letter(l: u8) -> Priority {
        match l {
            b'v' => Priority::Vip,
            b'g' => Priority::Gift,
            b's' => Priority::System,
            _ => Priority::Plain,
        }
    }
}

/// The delivery cap: a token bucket of `per_sec` items with a one-second burst. Every
/// delivered item takes a token; plain items are delivered only when one is available, so
/// what gets through is spread evenly over time (a sample, not the first N of a second).
/// Higher priorities always get through and may drive the bucket negative, which leaves
/// less room for plain items — they pay for what they displace.
#[derive(Debug)]
struct Cap {
    per_sec: f64,
    tokens: f64,
    last_ms: u64,
}

impl Cap {
    fn admit(&mut self, priority: Priority, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        if priority == Priority::Plain {
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        } else {
            self.tokens = (self.tokens - 1.0).max(-self.per_sec);
            true
        }
    }
}

/// Per-room settings, from the config (room-level overrides come with the REST API).
#[derive(Clone, Debug)]
pub struct RoomSettings {
    pub history_capacity: usize,
    /// Items per second delivered at most; 0 = no cap.
    pub cap_per_sec: u32,
    /// Each user's posts per second in the room, and the burst (all their connections
    /// together).
    pub user_rate: (f32, f32),
    /// The heartbeat interval clients are told in the `history` frame (ms).
    pub heartbeat_ms: u64,
}

/// Rate-limit buckets a room keeps before it forgets the refilled ones.
const MAX_BUCKETS: usize = 10_000;

/// A moderation refusal: the error code and message sent to the sender.
pub type Refusal = (u32, &'static str);

pub struct HomeRoom {
    pub id: RoomId,
    next_id: u64,
    /// Items already delivered (or sampled out), in id order, each with its id, encoded
    /// once.
    history: VecDeque<(u64, Bytes)>,
    history_capacity: usize,
    /// Items waiting for the merge window, in id order.
    pending: Vec<(u64, Bytes)>,
    /// Items the delivery cap sampled out since the last flush, in id order: they join
    /// history with the pending items at the flush, so history only ever grows by ids
    /// above every id already in it, and every id in it is below every pending one.
    sampled: Vec<(u64, Bytes)>,
    /// The highest id that fell out of history (0: none): a resume from below it has a gap.
    dropped_upto: u64,
    /// `"heartbeat_ms":…,"history_max":…` for the `history` frame (built once).
    meta: Box<str>,
    /// Whether the room is on its shard's list of rooms to flush.
    pub dirty: bool,
    /// When the oldest pending item's post was decoded (for the delivery histogram); the
    /// engine sets it on push and takes it on flush.
    pub pending_since: Option<std::time::Instant>,
    cap: Option<Cap>,
    /// Viewers per shard, as each shard last reported (absolute counts).
    shard_counts: Vec<u32>,
    /// Logged-in users in the room and how many connections each has.
    users: HashMap<Uid, u32>,
    pub online_changed: bool,
    pub online_sent_ms: u64,
    pub owner: Option<Uid>,
    admins: HashSet<Uid>,
    /// Muted users and when each mute ends (ms; u64::MAX for "until unmuted").
    mutes: HashMap<Uid, u64>,
    bans: HashSet<Uid>,
    slow_mode_ms: u64,
    last_post_ms: HashMap<Uid, u64>,
    /// Per-user rate limit: (rate, burst) and each recent poster's bucket.
    user_rate: (f32, f32),
    buckets: HashMap<Uid, TokenBucket>,
    /// When the room last had no viewers and nothing pending (ms), for eviction.
    pub idle_since_ms: Option<u64>,
    /// The stream clock (C4): the latest media timestamp seen and when it was seen.
    media_clock: Option<(u64, u64)>,
    /// The last history frame built, for `n` items (dropped when history changes).
    history_frame_cache: Option<(usize, Bytes)>,
    /// The last resume answer built, for a `since` (dropped when history changes): the
    /// viewers of a server that restarted all come back with about the same one.
    resume_cache: Option<(u64, JoinFrames)>,
    /// True until the stored state (last id, history tail, moderation) has been loaded;
    /// messages for the room wait in `waiting` meanwhile.
    pub loading: bool,
    pub waiting: Vec<(usize, super::Msg)>,
    /// In a cluster: posts checked here that wait for the merge window to go to Redis,
    /// which gives them their ids (`crate::cluster`).
    pub outbox: Vec<crate::cluster::Outgoing>,
    /// In a cluster: viewers of the room on the other nodes, from the last heartbeat.
    elsewhere: u64,
}

impl HomeRoom {
    pub fn new(id: RoomId, shards: usize, settings: &RoomSettings, now_ms: u64) -> Self {
        Self {
            id,
            next_id: 1,
            history: VecDeque::new(),
            history_capacity: settings.history_capacity,
            pending: Vec::new(),
            sampled: Vec::new(),
            dropped_upto: 0,
            meta: format!(
                r#""heartbeat_ms":{},"history_max":{}"#,
                settings.heartbeat_ms, settings.history_capacity
            )
            .into(),
            dirty: false,
            pending_since: None,
            cap: (settings.cap_per_sec > 0).then_some(Cap {
                per_sec: settings.cap_per_sec as f64,
                tokens: settings.cap_per_sec as f64,
                last_ms: now_ms,
            }),
            shard_counts: vec![0; shards],
            users: HashMap::new(),
            online_changed: false,
            online_sent_ms: 0,
            owner: None,
            admins: HashSet::new(),
            mutes: HashMap::new(),
            bans: HashSet::new(),
            slow_mode_ms: 0,
            last_post_ms: HashMap::new(),
            user_rate: settings.user_rate,
            buckets: HashMap::new(),
            idle_since_ms: Some(now_ms),
            media_clock: None,
            loading: false,
            waiting: Vec::new(),
            outbox: Vec::new(),
            elsewhere: 0,
            history_frame_cache: None,
            resume_cache: None,
        }
    }

    /// Brings back what was stored: ids continue after the last one, the history tail and
    /// the moderation state are as they were.
    pub fn restore(&mut self, state: crate::store::model::RoomState, now_ms: u64) {
        self.next_id = self.next_id.max(state.last_id + 1);
        let mut tail: Vec<(u64, Bytes)> = state
            .tail
            .into_iter()
            .filter_map(|item| Some((item_id(&item)?, item)))
            .collect();
        tail.sort_by_key(|(id, _)| *id);
        // What the store no longer holds is as gone as what fell out of history.
        self.dropped_upto = match tail.first() {
            Some((first, _)) => first - 1,
            None => state.last_id,
        };
        let skip = tail.len().saturating_sub(self.history_capacity);
        if skip > 0 {
            self.dropped_upto = tail[skip - 1].0;
        }
        for (id, item) in tail.into_iter().skip(skip) {
            self.remember(id, item);
        }
        let m = state.mods;
        if m.owner.is_some() {
            self.owner = m.owner.map(Into::into);
        }
        self.admins.extend(m.admins.into_iter().map(Into::into));
        self.bans.extend(m.bans.into_iter().map(Into::into));
        for (uid, until) in m.mutes {
            if until > now_ms {
                self.mutes.insert(uid.into(), until);
            }
        }
        if m.slow_mode_secs > 0 {
            self.slow_mode_ms = m.slow_mode_secs * 1000;
        }
    }

    /// The moderation state to persist (expired mutes left out).
    pub fn mod_snapshot(&self, now_ms: u64) -> crate::store::model::ModState {
        let mut s = crate::store::model::ModState {
            owner: self.owner.as_deref().map(str::to_string),
            admins: self.admins.iter().map(|u| u.to_string()).collect(),
            mutes: self
                .mutes
                .iter()
                .filter(|(_, &until)| until > now_ms)
                .map(|(u, &until)| (u.to_string(), until))
                .collect(),
            bans: self.bans.iter().map(|u| u.to_string()).collect(),
            slow_mode_secs: self.slow_mode_ms / 1000,
        };
        s.admins.sort();
        s.bans.sort();
        s.mutes.sort();
        s
    }

    /// Total viewers across shards.
    /// Viewers in all: this node's shards, plus the other nodes' in a cluster.
    pub fn online(&self) -> u64 {
        self.local_online() + self.elsewhere
    }

    /// Viewers on this node.
    pub fn local_online(&self) -> u64 {
        self.shard_counts.iter().map(|&c| c as u64).sum()
    }

    /// In a cluster: the viewers the other nodes report.
    pub fn set_elsewhere(&mut self, n: u64) {
        if self.elsewhere != n {
            self.elsewhere = n;
            self.online_changed = true;
        }
    }

    /// In a cluster: ids up to `id` are taken (items from Redis, or ids a failed batch
    /// took); the next item here has a higher one.
    pub fn advance_to(&mut self, id: u64) {
        self.next_id = self.next_id.max(id + 1);
    }

    /// In a cluster: another node changed the room's moderation; this is the whole of it.
    pub fn set_mods(&mut self, m: crate::store::model::ModState, now_ms: u64) {
        self.owner = m.owner.map(Into::into);
        self.admins = m.admins.into_iter().map(Into::into).collect();
        self.bans = m.bans.into_iter().map(Into::into).collect();
        self.mutes = m
            .mutes
            .into_iter()
            .filter(|(_, until)| *until > now_ms)
            .map(|(u, until)| (u.into(), until))
            .collect();
        self.slow_mode_ms = m.slow_mode_secs * 1000;
    }

    /// Shards that currently have viewers: where batches go.
    pub fn targets(&self) -> impl Iterator<Item = usize> + '_ {
        self.shard_counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(s, _)| s)
    }

    pub fn set_count(&mut self, shard: usize, count: u32, now_ms: u64) {
        if self.shard_counts[shard] != count {
            self.shard_counts[shard] = count;
            self.online_changed = true;
        }
        self.update_idle(now_ms);
    }

    pub fn user_joined(&mut self, uid: &Uid) {
        *self.users.entry(uid.clone()).or_insert(0) += 1;
    }

    pub fn user_left(&mut self, uid: &Uid) {
        if let Some(n) = self.users.get_mut(uid) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(uid);
            }
        }
    }

    pub fn has_user(&self, uid: &str) -> bool {
        self.users.contains_key(uid)
    }

    /// Notes when the room became idle: no viewer on this node and nothing pending.
    pub fn update_idle(&mut self, now_ms: u64) {
        let idle = self.local_online() == 0 && self.pending.is_empty() && self.sampled.is_empty();
        match (idle, self.idle_since_ms) {
            (true, None) => self.idle_since_ms = Some(now_ms),
            (false, Some(_)) => self.idle_since_ms = None,
            _ => {}
        }
    }

    pub fn is_banned(&self, uid: &str) -> bool {
        self.bans.contains(uid)
    }

    pub fn is_moderator(&self, uid: &str) -> bool {
        self.owner.as_deref() == Some(uid) || self.admins.contains(uid)
    }

    /// Whether `uid` may post now: ban, mute, the user's rate limit and slow mode. Records
    /// the post (its token, its time for slow mode) when it is allowed.
    pub fn admit(&mut self, uid: &Uid, now_ms: u64) -> Result<(), Refusal> {
        if self.bans.contains(uid) {
            return Err((code::BANNED, "you are banned from this room"));
        }
        if let Some(&until) = self.mutes.get(uid) {
            if until > now_ms {
                return Err((code::MUTED, "you are muted in this room"));
            }
            self.mutes.remove(uid);
        }
        let (rate, burst) = self.user_rate;
        if self.buckets.len() >= MAX_BUCKETS {
            // Bounded: a bucket that has refilled is the same as none.
            self.buckets.retain(|_, b| !b.refilled(rate, burst, now_ms));
        }
        let bucket = self
            .buckets
            .entry(uid.clone())
            .or_insert_with(|| TokenBucket::full(burst, now_ms));
        if !bucket.take(rate, burst, now_ms) {
            return Err((code::RATE_LIMITED, "too many messages; slow down"));
        }
        if self.slow_mode_ms > 0 && !self.is_moderator(uid) {
            if let Some(&last) = self.last_post_ms.get(uid) {
                if now_ms < last + self.slow_mode_ms {
                    return Err((code::SLOW_MODE, "slow mode: wait before sending again"));
                }
            }
            if self.last_post_ms.len() > 100_000 {
                // Bounded: forget posts older than the interval (they no longer matter).
                let horizon = now_ms.saturating_sub(self.slow_mode_ms);
                self.last_post_ms.retain(|_, &mut t| t >= horizon);
            }
            self.last_post_ms.insert(uid.clone(), now_ms);
        }
        Ok(())
    }

    /// The next id, strictly increasing per room.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues item `id` (encoded) for the next batch, or — if the delivery cap samples it
    /// out — for history only, at the next flush. Returns whether it will be delivered.
    /// Ids come in increasing order.
    pub fn push(&mut self, id: u64, item: Bytes, priority: Priority, now_ms: u64) -> bool {
        let deliver = self.cap.as_mut().is_none_or(|c| c.admit(priority, now_ms));
        if deliver {
            self.pending.push((id, item));
        } else {
            self.sampled.push((id, item));
        }
        self.idle_since_ms = None;
        deliver
    }

    /// Takes item `id` for history only, not live batches (shed under load): it joins
    /// history with the next flush, as an item the cap samples out does.
    pub fn sample(&mut self, id: u64, item: Bytes) {
        self.sampled.push((id, item));
        self.idle_since_ms = None;
    }

    /// Appends to history (ids above every id in it).
    fn remember(&mut self, id: u64, item: Bytes) {
        self.history_frame_cache.take();
        self.resume_cache.take();
        if self.history_capacity == 0 {
            self.dropped_upto = id;
            return;
        }
        if self.history.len() == self.history_capacity {
            if let Some((old, _)) = self.history.pop_front() {
                self.dropped_upto = old;
            }
        }
        self.history.push_back((id, item));
    }

    /// Encodes the pending items as one batch frame (once, for every viewer on every
    /// shard) and moves them, with the items sampled out meanwhile, into history in id
    /// order. `None` if nothing was pending (sampled items still move).
    pub fn flush(&mut self) -> Option<Bytes> {
        let frame = (!self.pending.is_empty())
            .then(|| list_frame("batch", &self.id, self.pending.iter().map(|(_, b)| b)));
        let mut pending = std::mem::take(&mut self.pending).into_iter().peekable();
        let mut sampled = std::mem::take(&mut self.sampled).into_iter().peekable();
        loop {
            let next = match (pending.peek(), sampled.peek()) {
                (Some(p), Some(s)) if p.0 < s.0 => pending.next(),
                (Some(_), Some(_)) | (None, Some(_)) => sampled.next(),
                (Some(_), None) => pending.next(),
                (None, None) => break,
            };
            if let Some((id, item)) = next {
                self.remember(id, item);
            }
        }
        frame
    }

    /// The last `n` delivered items as a `history` frame. Items still pending are not in it:
    /// they reach a new viewer in the next batch, so nothing arrives twice.
    ///
    /// The frame is kept until history changes: a join storm into a busy room encodes it
    /// once per merge window, not once per viewer.
    pub fn history_frame(&mut self, n: usize) -> Bytes {
        if let Some((cached_n, frame)) = &self.history_frame_cache {
            if *cached_n == n {
                return frame.clone();
            }
        }
        let skip = self.history.len().saturating_sub(n);
        let frame = list_frame_with(
            "history",
            &self.id,
            &self.meta,
            self.history.iter().skip(skip).map(|(_, b)| b),
        );
        self.history_frame_cache = Some((n, frame.clone()));
        frame
    }

    /// The last id given to an item (0: none yet).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// The oldest id a resume can still get: every item from it on is in history or
    /// waits for the next flush.
    pub fn first_kept(&self) -> u64 {
        self.dropped_upto + 1
    }

    /// The answer to a viewer that comes back having seen every item up to `since`: the
    /// items of history above it as a `history` frame, preceded by a `gap` frame when
    /// some it has not seen are gone (`since` below [`HomeRoom::first_kept`] − 1) or when
    /// `since` is an id this room never gave (its ids went back: it then gets all of
    /// history). Items still pending are not in it (the next batch brings them, as for
    /// any join), so with the join answered on the home shard's lane ahead of that batch,
    /// nothing arrives twice and nothing is missed. At most the history cap of items.
    pub fn resume_frames(&mut self, since: u64) -> JoinFrames {
        if let Some((cached, frames)) = &self.resume_cache {
            if *cached == since {
                return frames.clone();
            }
        }
        let first = self.first_kept();
        let ahead = since > self.last_id();
        let gap =
            (ahead || since.saturating_add(1) < first).then(|| gap_frame(&self.id, since, first));
        let from = if ahead { 0 } else { since };
        let start = self.history.partition_point(|(id, _)| *id <= from);
        let history = list_frame_with(
            "history",
            &self.id,
            &self.meta,
            self.history.range(start..).map(|(_, b)| b),
        );
        let frames = JoinFrames { gap, history };
        self.resume_cache = Some((since, frames.clone()));
        frames
    }

    // --- moderation -----------------------------------------------------------------

    pub fn mute(&mut self, uid: Uid, until_ms: u64) {
        self.mutes.insert(uid, until_ms);
    }

    pub fn unmute(&mut self, uid: &str) {
        self.mutes.remove(uid);
    }

    pub fn ban(&mut self, uid: Uid) {
        self.bans.insert(uid);
    }

    pub fn unban(&mut self, uid: &str) {
        self.bans.remove(uid);
    }

    pub fn set_slow_mode(&mut self, secs: u64) {
        self.slow_mode_ms = secs.saturating_mul(1000);
        self.last_post_ms.clear();
    }

    pub fn add_admin(&mut self, uid: Uid) {
        self.admins.insert(uid);
    }

    pub fn remove_admin(&mut self, uid: &str) {
        self.admins.remove(uid);
    }

    // --- media timeline (C4) ----------------------------------------------------------

    /// Records the stream's timestamp `media_ms` as seen at `now_ms`.
    pub fn set_media_clock(&mut self, media_ms: u64, now_ms: u64) {
        self.media_clock = Some((media_ms, now_ms));
    }

    pub fn clear_media_clock(&mut self) {
        self.media_clock = None;
    }

    /// Nothing here that the store does not hold: no item ever, no owner or moderation,
    /// no rate-limit or slow-mode state, no stream clock. Rebuilding such a room costs one
    /// store read, so an idle one need not be kept for `room_idle_secs` (anonymous joins to
    /// made-up room ids would otherwise each hold a room that long).
    pub fn is_pristine(&self) -> bool {
        self.next_id == 1
            && self.history.is_empty()
            && self.pending.is_empty()
            && self.sampled.is_empty()
            && self.outbox.is_empty()
            && self.owner.is_none()
            && self.admins.is_empty()
            && self.mutes.is_empty()
            && self.bans.is_empty()
            && self.slow_mode_ms == 0
            && self.buckets.is_empty()
            && self.last_post_ms.is_empty()
            && self.media_clock.is_none()
            && !self.is_live()
    }

    /// Whether the room's stream is live (its media clock is running).
    pub fn is_live(&self) -> bool {
        self.media_clock.is_some()
    }

    /// The stream timestamp now: the last one seen plus the time since, at most
    /// [`MEDIA_CLOCK_RUN_MS`] past it. The live engine ticks while video arrives, so the
    /// clock stops (within that bound) when the publisher stops sending, and stays
    /// stopped through the publisher's grace period.
    pub fn media_now(&self, now_ms: u64) -> Option<u64> {
        self.media_clock
            .map(|(media, at)| media + now_ms.saturating_sub(at).min(MEDIA_CLOCK_RUN_MS))
    }
}

/// What a join is answered with before the online count: an optional `gap` frame, then
/// the `history` frame.
#[derive(Clone, Debug)]
pub struct JoinFrames {
    pub gap: Option<Bytes>,
    pub history: Bytes,
}

/// How far a room's media clock runs on past the live engine's last tick: twice the
/// tick interval (`live::engine::CLOCK_EVERY`, 500 ms), so a running stream never
/// reaches it and a stopped one stops within a second.
pub const MEDIA_CLOCK_RUN_MS: u64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn room(cap: u32) -> HomeRoom {
        HomeRoom::new(
            "r".into(),
            2,
            &RoomSettings {
                history_capacity: 3,
                cap_per_sec: cap,
                user_rate: (1000.0, 1000.0),
                heartbeat_ms: 30_000,
            },
            0,
        )
    }

    #[test]
    fn history_excludes_pending_and_is_capped() {
        let mut r = room(0);
        for i in 0..5 {
            r.push(
                i,
                Bytes::from(format!("{{\"id\":{i}}}")),
                Priority::Plain,
                0,
            );
        }
        assert_eq!(
            &r.history_frame(50)[2..],
            br#"{"type":"history","room":"r","heartbeat_ms":30000,"history_max":3,"msgs":[]}"#
        );
        let batch = r.flush().unwrap();
        assert!(String::from_utf8_lossy(&batch).contains(r#""msgs":[{"id":0},{"id":1}"#));
        assert!(r.flush().is_none());
        let h = r.history_frame(2);
        assert_eq!(
            &h[2..],
            br#"{"type":"history","room":"r","heartbeat_ms":30000,"history_max":3,"msgs":[{"id":3},{"id":4}]}"#
        );
        // The cached frame follows history.
        r.push(5, Bytes::from_static(b"{\"id\":5}"), Priority::Plain, 0);
        assert_eq!(r.history_frame(2), h, "pending items are not history yet");
        r.flush();
        assert_eq!(
            &r.history_frame(2)[2..],
            br#"{"type":"history","room":"r","heartbeat_ms":30000,"history_max":3,"msgs":[{"id":4},{"id":5}]}"#
        );
    }

    fn item(id: u64) -> Bytes {
        Bytes::from(format!("{{\"type\":\"like\",\"id\":{id}}}"))
    }

    fn json(frame: &Bytes) -> serde_json::Value {
        let start = frame.iter().position(|&b| b == b'{').unwrap();
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    fn ids(frame: &Bytes) -> Vec<u64> {
        let v = json(frame);
        v["msgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect()
    }

    fn gap(f: &JoinFrames) -> Option<(u64, u64)> {
        f.gap.as_ref().map(|g| {
            let v = json(g);
            assert_eq!(v["type"], "gap");
            (v["from"].as_u64().unwrap(), v["first"].as_u64().unwrap())
        })
    }

    #[test]
    fn a_resume_gets_the_items_after_since_and_a_gap_for_what_history_lost() {
        let mut r = room(0);
        for _ in 0..5 {
            let id = r.next_id();
            r.push(id, item(id), Priority::Plain, 0);
        }
        let f = r.resume_frames(1);
        assert_eq!((gap(&f), ids(&f.history)), (None, vec![]), "all pending");
        r.flush();
        // History holds 3..=5 (capacity 3): 1 and 2 fell out.
        assert_eq!(r.first_kept(), 3);
        let f = r.resume_frames(2);
        assert_eq!((gap(&f), ids(&f.history)), (None, vec![3, 4, 5]));
        let f = r.resume_frames(4);
        assert_eq!((gap(&f), ids(&f.history)), (None, vec![5]));
        let f = r.resume_frames(5);
        assert_eq!((gap(&f), ids(&f.history)), (None, vec![]));
        let f = r.resume_frames(0);
        assert_eq!((gap(&f), ids(&f.history)), (Some((0, 3)), vec![3, 4, 5]));
        let f = r.resume_frames(1);
        assert_eq!((gap(&f), ids(&f.history)), (Some((1, 3)), vec![3, 4, 5]));
        // An id the room never gave: its ids went back; all of history follows.
        let f = r.resume_frames(99);
        assert_eq!((gap(&f), ids(&f.history)), (Some((99, 3)), vec![3, 4, 5]));
        let h = String::from_utf8_lossy(&f.history).to_string();
        assert!(
            h.contains(r#""heartbeat_ms":30000,"history_max":3,"#),
            "{h}"
        );
    }

    #[test]
    fn sampled_items_join_history_in_id_order_at_the_flush() {
        let mut r = room(1);
        // The cap lets one plain item through per second: 1 is delivered, 2 and 3 not.
        for id in 1..=3 {
            assert_eq!(r.push(id, item(id), Priority::Plain, 0), id == 1);
        }
        r.push(4, item(4), Priority::Gift, 0);
        assert_eq!(ids(&r.history_frame(10)), Vec::<u64>::new());
        assert_eq!(ids(&r.flush().unwrap()), vec![1, 4]);
        assert_eq!(
            ids(&r.history_frame(10)),
            vec![2, 3, 4],
            "capacity 3, id order"
        );
        assert_eq!(r.first_kept(), 2);
        // Sampled items alone move too (no batch).
        assert!(!r.push(5, item(5), Priority::Plain, 10));
        assert!(r.flush().is_none());
        assert_eq!(ids(&r.history_frame(10)), vec![3, 4, 5]);
    }

    #[test]
    fn restored_history_keeps_ids_and_knows_what_it_lacks() {
        let mut r = room(0);
        r.restore(
            crate::store::model::RoomState {
                last_id: 9,
                tail: (5..=9).map(item).collect(),
                mods: Default::default(),
            },
            0,
        );
        assert_eq!(r.last_id(), 9);
        assert_eq!(r.first_kept(), 7, "capacity 3 of the 5 stored");
        let f = r.resume_frames(7);
        assert_eq!((gap(&f), ids(&f.history)), (None, vec![8, 9]));
        let f = r.resume_frames(3);
        assert_eq!((gap(&f), ids(&f.history)), (Some((3, 7)), vec![7, 8, 9]));
    }

    #[test]
    fn cap_samples_plain_but_never_gifts_or_system() {
        let mut r = room(10);
        let mut plain = 0;
        for i in 0..100 {
            // 100 plain items over one second: about 10 + 10 (burst) get through.
            if r.push(i, Bytes::from_static(b"{}"), Priority::Plain, i * 10) {
                plain += 1;
            }
        }
        assert!((15..=21).contains(&plain), "{plain}");
        for i in 0..50 {
            assert!(r.push(
                100 + 2 * i,
                Bytes::from_static(b"{}"),
                Priority::Gift,
                1000 + i
            ));
            assert!(r.push(
                101 + 2 * i,
                Bytes::from_static(b"{}"),
                Priority::System,
                1000 + i
            ));
        }
        assert!(
            !r.push(200, Bytes::from_static(b"{}"), Priority::Plain, 1050),
            "gifts used the room's cap"
        );
    }

    #[test]
    fn rate_limit_is_per_user_whatever_their_connections() {
        let mut r = HomeRoom::new(
            "r".into(),
            2,
            &RoomSettings {
                history_capacity: 3,
                cap_per_sec: 0,
                user_rate: (2.0, 5.0),
                heartbeat_ms: 30_000,
            },
            0,
        );
        let (a, b): (Uid, Uid) = ("a".into(), "b".into());
        // However many connections `a` posts from, they all reach this one room state.
        let allowed = (0..20).filter(|_| r.admit(&a, 1000).is_ok()).count();
        assert_eq!(allowed, 5, "the burst");
        assert_eq!(r.admit(&a, 1000).unwrap_err().0, code::RATE_LIMITED);
        assert!(
            r.admit(&b, 1000).is_ok(),
            "another user has a bucket of their own"
        );
        assert!(r.admit(&a, 1500).is_ok(), "2/s refills one token in 0.5 s");
        assert!(r.admit(&a, 1500).is_err());
        // Buckets are bounded: refilled ones are forgotten when the map is full.
        for i in 0..MAX_BUCKETS + 10 {
            let u: Uid = format!("u{i}").into();
            let _ = r.admit(&u, 100_000 + i as u64 / 10);
        }
        assert!(r.buckets.len() <= MAX_BUCKETS + 1, "{}", r.buckets.len());
    }

    #[test]
    fn moderation_rules() {
        let mut r = room(0);
        let u: Uid = "u1".into();
        assert!(r.admit(&u, 0).is_ok());
        r.mute(u.clone(), 5000);
        assert_eq!(r.admit(&u, 1000).unwrap_err().0, code::MUTED);
        assert!(r.admit(&u, 5000).is_ok(), "mute expires");
        r.set_slow_mode(10);
        assert!(r.admit(&u, 6000).is_ok());
        assert_eq!(r.admit(&u, 7000).unwrap_err().0, code::SLOW_MODE);
        assert!(r.admit(&u, 16000).is_ok());
        r.add_admin(u.clone());
        assert!(
            r.admit(&u, 16001).is_ok(),
            "admins are exempt from slow mode"
        );
        r.ban(u.clone());
        assert_eq!(r.admit(&u, 20000).unwrap_err().0, code::BANNED);
    }

    #[test]
    fn online_counts_and_targets() {
        let mut r = room(0);
        r.set_count(1, 5, 0);
        assert_eq!(r.online(), 5);
        assert_eq!(r.targets().collect::<Vec<_>>(), vec![1]);
        assert!(r.online_changed);
        assert!(r.idle_since_ms.is_none());
        r.set_count(1, 0, 10);
        assert_eq!(r.idle_since_ms, Some(10));
    }

    #[test]
    fn the_media_clock_runs_between_ticks_and_stops_without_them() {
        let mut r = room(0);
        assert_eq!(r.media_now(0), None);
        r.set_media_clock(57_000, 1_000);
        assert_eq!(r.media_now(1_300), Some(57_300));
        r.set_media_clock(57_520, 1_520);
        assert_eq!(r.media_now(1_900), Some(57_900));
        // No tick since: the publisher stopped sending. The clock stops, however long
        // the grace lasts.
        assert_eq!(r.media_now(2_520), Some(58_520));
        assert_eq!(r.media_now(11_520), Some(58_520));
        assert!(r.is_live());
        r.clear_media_clock();
        assert_eq!(r.media_now(12_000), None);
    }
}
