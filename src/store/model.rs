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
    /// Room admins (set by the owner through the API): they may moderate the room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
}

/// A change to a room, applied atomically by the store (read, change, write in one step,
/// so two changes at once never lose each other). `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomPatch {
    pub title: Option<String>,
    pub category: Option<String>,
    pub cover_url: Option<String>,
    /// Only ever set to true: a closed room stays closed.
    pub close: bool,
    pub add_admin: Option<String>,
    pub remove_admin: Option<String>,
    pub updated_at: u64,
}

impl RoomPatch {
    /// Applies the patch to `room`.
    pub fn apply(&self, room: &mut Room) {
        if let Some(t) = &self.title {
            room.title = t.clone();
        }
        if let Some(c) = &self.category {
            room.category = c.clone();
        }
        if let Some(c) = &self.cover_url {
            room.cover_url = c.clone();
        }
        if self.close {
            room.closed = true;
        }
        if let Some(a) = &self.add_admin {
            if !room.admins.contains(a) {
                room.admins.push(a.clone());
            }
        }
        if let Some(a) = &self.remove_admin {
            room.admins.retain(|x| x != a);
        }
        room.updated_at = room.updated_at.max(self.updated_at);
    }
}

/// One page of open rooms, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomPage {
    pub rooms: Vec<Room>,
    /// Open rooms in all (the `skip` list excluded).
    pub total: usize,
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
