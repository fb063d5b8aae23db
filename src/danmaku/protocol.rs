//! The danmaku wire protocol: JSON text frames (see `docs/protocol.md`), sans-IO.
//!
//! Client messages are parsed here into typed values (bounded: the frame limit caps the
//! input, and every string field is length-checked). Server messages are encoded here: a
//! room item (danmaku, gift, like, system, live) is serialized once, when the home shard
//! assigns its id, and batches and history frames are concatenations of those encodings
//! inside one WebSocket frame.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::ws::codec::{header_len, put_header};

/// Error codes sent in `{"type":"error","code":…}`. Stable: clients switch on them.
pub mod code {
    /// Not JSON, unknown type, or a field missing or of the wrong type.
    pub const BAD_MESSAGE: u32 = 4001;
    /// Sending needs a logged-in user; this connection is anonymous.
    pub const LOGIN_REQUIRED: u32 = 4010;
    /// The token given in an `auth` message was refused.
    pub const BAD_TOKEN: u32 = 4011;
    /// Already authenticated; a connection has one user.
    pub const ALREADY_AUTHENTICATED: u32 = 4012;
    /// The user is muted in this room.
    pub const MUTED: u32 = 4031;
    /// The user is banned from this room.
    pub const BANNED: u32 = 4032;
    /// Slow mode: wait before sending again.
    pub const SLOW_MODE: u32 = 4033;
    /// A moderation command from someone who is not the owner or an admin.
    pub const NOT_ALLOWED: u32 = 4034;
    /// The private message's target is not in the room.
    pub const NO_SUCH_USER: u32 = 4040;
    /// Text empty or longer than the limit (after control characters are removed).
    pub const TEXT_LENGTH: u32 = 4130;
    /// Text refused by the keyword filter.
    pub const FILTERED: u32 = 4220;
    /// Too many messages: the per-connection rate limit.
    pub const RATE_LIMITED: u32 = 4290;
    /// The server could not take the message now; retry later.
    pub const BUSY: u32 = 5030;
    /// In a cluster: Redis could not be reached; the item went to this server's viewers
    /// only and was not stored.
    pub const CLUSTER_UNAVAILABLE: u32 = 5031;
}

/// Close codes the server sends (besides RFC 6455's 1002/1007/1009 for bad frames).
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Never sent on the wire (RFC 6455 §7.4.1): used internally for "the peer is gone,
    /// close without a close frame".
    pub const ABNORMAL: u16 = 1006;
    pub const GOING_AWAY: u16 = 1001;
    /// Slow consumer (over its queue bound past the grace period).
    pub const POLICY: u16 = 1008;
    /// The server could not admit the connection now.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Kicked by a moderator.
    pub const KICKED: u16 = 4001;
    /// Banned from the room.
    pub const BANNED: u16 = 4003;
    /// The connection's token was revoked (its user logged out, or an admin revoked the
    /// user's tokens); the same number as the error code for a refused token.
    pub const TOKEN_REVOKED: u16 = 4011;
    /// No message (not even a ping) for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4008;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Scroll,
    Top,
    Bottom,
}

/// What a client may send.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    Auth {
        token: String,
    },
    Danmaku {
        #[serde(default)]
        cid: Option<String>,
        text: String,
        #[serde(default)]
        color: Option<String>,
        #[serde(default)]
        mode: Option<Mode>,
    },
    Gift {
        #[serde(default)]
        cid: Option<String>,
        gift_id: String,
        #[serde(default)]
        count: Option<u32>,
    },
    Like {
        #[serde(default)]
        cid: Option<String>,
        #[serde(default)]
        count: Option<u32>,
    },
    Pm {
        #[serde(default)]
        cid: Option<String>,
        to: String,
        text: String,
    },
    Ping {
        #[serde(default)]
        ts: Option<serde_json::Value>,
    },
    Mute {
        #[serde(default)]
        cid: Option<String>,
        uid: String,
        seconds: u64,
    },
    Unmute {
        #[serde(default)]
        cid: Option<String>,
        uid: String,
    },
    Ban {
        #[serde(default)]
        cid: Option<String>,
        uid: String,
    },
    Unban {
        #[serde(default)]
        cid: Option<String>,
        uid: String,
    },
    Kick {
        #[serde(default)]
        cid: Option<String>,
        uid: String,
    },
    SlowMode {
        #[serde(default)]
        cid: Option<String>,
        seconds: u64,
    },
}

/// Longest client message id echoed back in acks.
pub const MAX_CID: usize = 64;
/// Longest id or gift name accepted.
pub const MAX_ID: usize = 64;
/// Longest `ts` of an app-level ping (as JSON), echoed back in its pong.
pub const MAX_TS: usize = 64;

impl ClientMsg {
    /// The client's correlation id, for the messages that carry one.
    pub fn cid(&self) -> Option<&str> {
        match self {
            ClientMsg::Danmaku { cid, .. }
            | ClientMsg::Gift { cid, .. }
            | ClientMsg::Like { cid, .. }
            | ClientMsg::Pm { cid, .. }
            | ClientMsg::Mute { cid, .. }
            | ClientMsg::Unmute { cid, .. }
            | ClientMsg::Ban { cid, .. }
            | ClientMsg::Unban { cid, .. }
            | ClientMsg::Kick { cid, .. }
            | ClientMsg::SlowMode { cid, .. } => cid.as_deref(),
            _ => None,
        }
    }
}

/// Parses a client text frame. The error is the message sent back with `BAD_MESSAGE`.
pub fn parse_client(text: &[u8]) -> Result<ClientMsg, String> {
    let msg: ClientMsg = serde_json::from_slice(text).map_err(|e| {
        let mut s = e.to_string();
        s.truncate(160);
        s
    })?;
    let cid = msg.cid();
    if cid.is_some_and(|c| c.len() > MAX_CID) {
        return Err(format!("cid longer than {MAX_CID} bytes"));
    }
    let ids: &[&str] = match &msg {
        ClientMsg::Gift { gift_id, .. } => &[gift_id],
        ClientMsg::Pm { to, .. } => &[to],
        ClientMsg::Mute { uid, .. }
        | ClientMsg::Unmute { uid, .. }
        | ClientMsg::Ban { uid, .. }
        | ClientMsg::Unban { uid, .. }
        | ClientMsg::Kick { uid, .. } => &[uid],
        _ => &[],
    };
    if ids.iter().any(|id| id.is_empty() || id.len() > MAX_ID) {
        return Err(format!("ids must be 1 to {MAX_ID} bytes"));
    }
    // `ts` is echoed in the pong: without a bound a client could have the server send it
    // a frame as large as the one it sent, for every ping.
    if let ClientMsg::Ping { ts: Some(ts) } = &msg {
        if serde_json::to_vec(ts).map_or(true, |v| v.len() > MAX_TS) {
            return Err(format!("ts longer than {MAX_TS} bytes of JSON"));
        }
    }
    Ok(msg)
}

/// `#RRGGBB` (case-insensitive), normalised to upper case; default white.
pub fn parse_color(color: Option<&str>) -> Option<String> {
    let Some(c) = color else {
        return Some("#FFFFFF".into());
    };
    let hex = c.strip_prefix('#')?;
    (hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("#{}", hex.to_ascii_uppercase()))
}

/// A room item as clients see it inside `batch` and `history`.
#[derive(Clone, Copy, Serialize)]
pub struct Item<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: u64,
    pub room: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub uid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub nick: &'a str,
    /// Server time, ms since the Unix epoch.
    pub ts: u64,
    /// The room's stream timestamp (ms) when the item was accepted, if the room is live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_ts: Option<u64>,
    #[serde(flatten)]
    pub body: ItemBody<'a>,
}

#[derive(Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum ItemBody<'a> {
    Danmaku {
        text: &'a str,
        color: &'a str,
        mode: Mode,
    },
    Gift {
        gift_id: &'a str,
        count: u32,
    },
    Like {
        count: u32,
    },
    System {
        text: &'a str,
    },
    Live {
        status: &'a str,
    },
}

pub fn encode_item(item: &Item<'_>) -> Bytes {
    Bytes::from(serde_json::to_vec(item).unwrap_or_default())
}

/// An item encoded but for its id: the JSON before it and after it (in a cluster, Redis
/// puts the id in between). The id is the second member, after the type.
pub fn encode_item_parts(item: &Item<'_>) -> (Bytes, Bytes) {
    let whole = encode_item(&Item { id: 0, ..*item });
    let head = format!(r#"{{"type":"{}","id":"#, item.kind);
    debug_assert!(whole.starts_with(head.as_bytes()));
    let at = head.len().min(whole.len());
    // Past the "0" that stands for the id.
    (whole.slice(..at), whole.slice((at + 1).min(whole.len())..))
}

/// Any server message that is a plain JSON object (ack, error, pong, online, pm, …), as a
/// finished text frame.
pub fn frame_json<T: Serialize>(value: &T) -> Bytes {
    let json = serde_json::to_vec(value).unwrap_or_default();
    crate::ws::codec::text_frame(&json)
}

pub fn error_frame(code: u32, message: &str, cid: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct E<'a> {
        #[serde(rename = "type")]
        t: &'static str,
        code: u32,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cid: Option<&'a str>,
    }
    frame_json(&E {
        t: "error",
        code,
        message,
        cid,
    })
}

pub fn ack_frame(cid: Option<&str>, id: u64) -> Bytes {
    #[derive(Serialize)]
    struct A<'a> {
        #[serde(rename = "type")]
        t: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cid: Option<&'a str>,
        id: u64,
    }
    frame_json(&A { t: "ack", cid, id })
}

/// The answer to a moderation action by a viewer (`cid` is `null` when it sent none).
pub fn action_ack_frame(cid: Option<&str>) -> Bytes {
    frame_json(&serde_json::json!({"type": "ack", "cid": cid}))
}

/// A private message, as its recipient's connections get it. It has no `id`: it is not a
/// room item (not stored, never replayed), so it takes nothing from the room's ids.
pub fn pm_frame(room: &str, from: &str, nick: &str, to: &str, text: &str, ts: u64) -> Bytes {
    frame_json(&serde_json::json!({
        "type": "pm", "room": room, "from": from,
        "nick": nick, "to": to, "text": text, "ts": ts,
    }))
}

/// The answer to an application-level `ping` (its `ts` echoed, the server's clock added).
pub fn pong_frame(ts: Option<&serde_json::Value>, server_ts: u64) -> Bytes {
    frame_json(&serde_json::json!({"type": "pong", "ts": ts, "server_ts": server_ts}))
}

/// The answer to a successful `auth` message.
pub fn authed_frame(uid: &str) -> Bytes {
    frame_json(&serde_json::json!({"type": "authed", "uid": uid}))
}

pub fn online_frame(room: &str, count: u64) -> Bytes {
    frame_json(&serde_json::json!({"type": "online", "room": room, "count": count}))
}

/// A resume could not be complete: the items with ids above `from` (the client's `since`)
/// and below `first` are gone; what follows starts at `first`. When `first` ≤ `from`, the
/// room's ids went back (its stored data was lost) and the client should forget its last id.
pub fn gap_frame(room: &str, from: u64, first: u64) -> Bytes {
    frame_json(&serde_json::json!({"type": "gap", "room": room, "from": from, "first": first}))
}

/// A `since` (query parameter, `Last-Event-ID`): an item id, 1 to 20 decimal digits that
/// fit in a u64. `None` for anything else.
pub fn parse_since(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The `id` of an encoded room item (`None` if it has none).
pub fn item_id(item: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Id {
        id: u64,
    }
    serde_json::from_slice::<Id>(item).ok().map(|i| i.id)
}

/// `{"type":KIND,"room":ROOM,"msgs":[item,item,…]}` as one text frame: the items are
/// already-encoded JSON objects, copied once into the frame.
pub fn list_frame<'a>(
    kind: &str,
    room: &str,
    items: impl Iterator<Item = &'a Bytes> + Clone,
) -> Bytes {
    list_frame_with(kind, room, "", items)
}

/// [`list_frame`] with `meta` (JSON members, `"a":1,"b":2`, or empty) after the room.
pub fn list_frame_with<'a>(
    kind: &str,
    room: &str,
    meta: &str,
    items: impl Iterator<Item = &'a Bytes> + Clone,
) -> Bytes {
    let room_json = serde_json::to_string(room).unwrap_or_default();
    let meta_len = if meta.is_empty() { 0 } else { meta.len() + 1 };
    let prefix_len =
        r#"{"type":"","room":,"msgs":["#.len() + kind.len() + room_json.len() + meta_len;
    let (count, items_len) = items
        .clone()
        .fold((0usize, 0usize), |(n, l), i| (n + 1, l + i.len()));
    let payload = prefix_len + items_len + count.saturating_sub(1) + 2;
    let mut out = BytesMut::with_capacity(header_len(payload) + payload);
    put_header(&mut out, OpCode::Data(Data::Text), payload);
    out.put_slice(br#"{"type":""#);
    out.put_slice(kind.as_bytes());
    out.put_slice(br#"","room":"#);
    out.put_slice(room_json.as_bytes());
    if !meta.is_empty() {
        out.put_u8(b',');
        out.put_slice(meta.as_bytes());
    }
    out.put_slice(br#","msgs":["#);
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_slice(b"]}");
    debug_assert_eq!(out.len(), header_len(payload) + payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client message shown in `docs/protocol.md` is one the server reads.
    #[test]
    fn the_documented_client_examples_parse() {
        let doc = include_str!("../../docs/protocol.md");
        let section = doc
            .split("## Client → server")
            .nth(1)
            .and_then(|s| s.split("## Server → client").next())
            .unwrap();
        let examples: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("{\"type\""))
            .collect();
        assert!(examples.len() >= 12, "{examples:?}");
        for e in examples {
            assert!(parse_client(e.as_bytes()).is_ok(), "{e}");
        }
    }

    #[test]
    fn parses_client_messages() {
        let m = parse_client(
            br##"{"type":"danmaku","text":"hi","color":"#ff0000","mode":"top","cid":"c1"}"##,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMsg::Danmaku {
                cid: Some("c1".into()),
                text: "hi".into(),
                color: Some("#ff0000".into()),
                mode: Some(Mode::Top)
            }
        );
        assert!(matches!(
            parse_client(br#"{"type":"ping"}"#).unwrap(),
            ClientMsg::Ping { ts: None }
        ));
        assert!(parse_client(br#"{"type":"nope"}"#).is_err());
        assert!(parse_client(br#"{"type":"danmaku"}"#).is_err());
        assert!(parse_client(b"not json").is_err());
        assert!(parse_client(br#"{"type":"danmaku","text":"x","mode":"sideways"}"#).is_err());
        let long_cid = format!(r#"{{"type":"like","cid":"{}"}}"#, "c".repeat(65));
        assert!(parse_client(long_cid.as_bytes()).is_err());
        assert!(parse_client(br#"{"type":"pm","to":"","text":"x"}"#).is_err());
        assert!(parse_client(br#"{"type":"ping","ts":1732345678901}"#).is_ok());
        assert!(parse_client(br#"{"type":"ping","ts":{"t":"x"}}"#).is_ok());
        let long_ts = format!(r#"{{"type":"ping","ts":[{}0]}}"#, "0,".repeat(40));
        assert!(parse_client(long_ts.as_bytes()).is_err());
    }

    #[test]
    fn colors() {
        assert_eq!(parse_color(None).as_deref(), Some("#FFFFFF"));
        assert_eq!(parse_color(Some("#a0b1c2")).as_deref(), Some("#A0B1C2"));
        assert_eq!(parse_color(Some("red")), None);
        assert_eq!(parse_color(Some("#12345")), None);
    }

    #[test]
    fn a_batch_is_one_valid_frame() {
        let a = encode_item(&Item {
            kind: "danmaku",
            id: 1,
            room: "r\"1",
            uid: "u",
            nick: "n",
            ts: 5,
            media_ts: None,
            body: ItemBody::Danmaku {
                text: "hi",
                color: "#FFFFFF",
                mode: Mode::Scroll,
            },
        });
        let b = encode_item(&Item {
            kind: "gift",
            id: 2,
            room: "r\"1",
            uid: "u",
            nick: "n",
            ts: 6,
            media_ts: Some(77),
            body: ItemBody::Gift {
                gift_id: "rose",
                count: 3,
            },
        });
        let frame = list_frame("batch", "r\"1", [a, b].iter());
        assert_eq!(frame[1], 126, "16-bit length form");
        let payload = &frame[4..];
        assert_eq!(
            u16::from_be_bytes([frame[2], frame[3]]) as usize,
            payload.len()
        );
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["room"], "r\"1");
        assert_eq!(v["msgs"][0]["text"], "hi");
        assert_eq!(v["msgs"][0]["mode"], "scroll");
        assert_eq!(v["msgs"][1]["count"], 3);
        assert_eq!(v["msgs"][1]["media_ts"], 77);
        let empty = list_frame("history", "r", [].iter());
        let v: serde_json::Value = serde_json::from_slice(&empty[2..]).unwrap();
        assert_eq!(v["msgs"].as_array().unwrap().len(), 0);
    }
}
