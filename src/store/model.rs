//! What the store keeps: users, rooms, per-room moderation state, danmaku history items.
//! Plain serde types; each backend decides how to lay them out.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: String,
    /// WeChat openid for users who logged in with WeChat; empty for dev logins.
    #[serde(default)]
    pub openid: String,
    pub nick: String,
    #[serde(default)]
    pub avatar_url: String,
    pub created_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Also the stream name and the danmaku room id.
    pub id: String,
    pub owner: String,
    pub title: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub cover_url: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// Closed rooms refuse publishing and are hidden from lists.
    #[serde(default)]
    pub closed: bool,
}

/// A room's moderation state, persisted whole on every change (small, rarely written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModState {
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub admins: Vec<String>,
    /// (uid, until ms since the epoch; u64::MAX = until unmuted)
    #[serde(default)]
    pub mutes: Vec<(String, u64)>,
    #[serde(default)]
    pub bans: Vec<String>,
    #[serde(default)]
    pub slow_mode_secs: u64,
}

/// What a home shard needs to bring a room back after a restart.
#[derive(Clone, Debug, Default)]
pub struct RoomState {
    /// The last id given to an item (0 = none yet).
    pub last_id: u64,
    /// The newest items, oldest first (encoded JSON objects as clients see them).
    pub tail: Vec<bytes::Bytes>,
    pub mods: ModState,
}
