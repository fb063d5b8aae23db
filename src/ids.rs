//! The names everything agrees on: room and user ids, a connection's address across shards,
//! and which shard is a room's home. A leaf: the engines, the store and the API all use it.

use std::sync::Arc;

/// Room ids and user ids travel between shards; `Arc<str>` clones are a refcount bump.
pub type RoomId = Arc<str>;
pub type Uid = Arc<str>;

/// Which shard is a room's home: FNV-1a of its id, so every shard (and every node, later)
/// computes the same answer without asking anyone. A stream's owner is its room's home.
pub fn home_shard(room: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in room.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % shards as u64) as usize
}

/// Room ids: 1–64 of `A-Z a-z 0-9 _ - .` (they appear in URLs and stream names).
pub fn valid_room_id(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A connection's address across shards: its shard, slab key and a generation that makes
/// a reply to a connection that has since closed (and whose key was reused) harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub shard: u16,
    pub key: u32,
    pub gen: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_spread() {
        assert_eq!(home_shard("room-1", 4), home_shard("room-1", 4));
        let mut seen = [0; 4];
        for i in 0..1000 {
            seen[home_shard(&format!("room-{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }

    #[test]
    fn room_ids() {
        assert!(valid_room_id("abc_1-2.x"));
        assert!(!valid_room_id(""));
        assert!(!valid_room_id("a b"));
        assert!(!valid_room_id(&"a".repeat(65)));
        assert!(!valid_room_id("房间"));
    }
}
