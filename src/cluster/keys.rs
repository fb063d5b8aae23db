//! Redis key and channel names, shared by the store's Redis backend and the cluster
//! threads, so the two agree on where a room lives.
//!
//! Everything of one room carries the room id as its hash tag (`{room}`): on a Redis
//! Cluster the room's counter, history stream, record, moderation and channel share one
//! slot, so one script can touch all of them and `SPUBLISH` on the channel from inside it.
//! Room ids are `[A-Za-z0-9_.-]` (`ids::valid_room_id`), so no id can break the tag.

/// The prefix of every key liveshard writes.
pub const PREFIX: &str = "ls:";

/// The room's last id (a counter: `INCRBY` gives the next ids).
pub fn seq(room: &str) -> String {
    format!("ls:{{{room}}}:seq")
}

/// The room's items, a Stream whose entry ids are `<item id>-0`, trimmed to the history
/// size (`XADD … MAXLEN ~`).
pub fn history(room: &str) -> String {
    format!("ls:{{{room}}}:hist")
}

/// The room's shard channel: one message per batch of items (and per moderation change).
pub fn channel(room: &str) -> String {
    format!("ls:{{{room}}}:ch")
}

/// The room's record (JSON string).
pub fn room(room: &str) -> String {
    format!("ls:{{{room}}}:room")
}

/// The room's moderation state (JSON string).
pub fn mods(room: &str) -> String {
    format!("ls:{{{room}}}:mods")
}

/// Every room's id, scored by creation time (a sorted set).
pub const ROOMS: &str = "ls:rooms";

/// A user record (JSON string).
pub fn user(uid: &str) -> String {
    format!("ls:user:{{{uid}}}")
}

/// The uid of a WeChat openid.
pub fn openid(openid: &str) -> String {
    format!("ls:openid:{{{openid}}}")
}

/// A node's online counts: a hash room → viewers, expiring unless the node renews it.
pub fn node_online(node: &str) -> String {
    format!("ls:online:{{{node}}}")
}

/// Live nodes: a sorted set node → the time of its last heartbeat (ms).
pub const NODES: &str = "ls:nodes";

/// Open rooms' ids, scored by minus their creation time, so `ZRANGE` pages them newest
/// first (ties by id); closed rooms leave it (a sorted set).
pub const OPEN_ROOMS: &str = "ls:rooms:open";

/// Revoked tokens: a sorted set of `uid\njti`, scored by the token's expiry (Unix
/// seconds). The revocation keys share the `{rev}` hash tag: one slot, so one script can
/// change them together.
pub const REVOKED_TOKENS: &str = "ls:{rev}:tokens";

/// How many of [`REVOKED_TOKENS`] each user has (a hash uid → count).
pub const REVOKED_COUNTS: &str = "ls:{rev}:counts";

/// Users' "not before" marks: a hash uid → `not_before until` (Unix seconds).
pub const REVOKED_USERS: &str = "ls:{rev}:users";

/// The channel every node listens to for the node-wide messages: token revocations, and
/// "stop this stream" when its room is closed (a shard channel, in one slot).
pub const NODES_CHANNEL: &str = "ls:{nodes}:ctl";

/// The WeChat access token of an app, shared by every node:
/// `token\n<refresh at>\n<expires at>` (Unix ms).
pub fn wechat_token(appid: &str) -> String {
    format!("ls:wechat:{{{appid}}}:token")
}

/// Who is fetching the app's WeChat access token now (one node at a time).
pub fn wechat_lock(appid: &str) -> String {
    format!("ls:wechat:{{{appid}}}:lock")
}

/// Who publishes a stream in the cluster: `<node id>|<advertise address>`, set with
/// `NX PX` by the node its publisher is on and refreshed while the stream is live. A
/// stream and its room share the name, so the `{name}` tag puts it in the room's slot.
pub fn stream_claim(stream: &str) -> String {
    format!("ls:{{{stream}}}:claim")
}
