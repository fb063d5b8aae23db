//! Danmaku without a WebSocket, for networks that block it (SPEC C13): a room's stream as
//! Server-Sent Events and posts as plain HTTP requests (the routes are the API's,
//! `api/sse.rs` and `api/danmaku.rs`).
//!
//! Both go through the engine exactly as a WebSocket does, with a [`Conn`] that has no
//! socket:
//! - a *reader* (an event stream) is registered and joined like any viewer (with `since`
//!   for a resume), so the home shard's join answer, the room's batches, online counts,
//!   private messages, kicks and its slow-consumer rules all reach its queue; the stream's
//!   driver takes the frames ([`Danmaku::take_for_reader`]) and writes each as an event
//!   ([`sse_event`]: the frame's own JSON bytes, a slice of the shared buffer, between a
//!   small head and a blank line);
//! - a *post* makes a short-lived `Conn` for the user, hands the message to the same
//!   checks as a WebSocket message (`client::submit`: login, rate, text, filter, then the
//!   room's home shard: moderation, the user's rate, slow mode, the id, the store) and
//!   waits for the one frame that answers it, ack or error.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::client;
use super::engine::Danmaku;
use super::protocol::{self, code, ClientMsg};
use super::viewer::{Conn, User};
use super::RoomId;
use crate::auth::Claims;

/// How long a post over HTTP waits for its answer (the home shard and, for a durable ack,
/// the store's group commit).
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a post over HTTP was answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted with this room item id.
    Ack(u64),
    /// Refused with the WebSocket protocol's error code and message.
    Refused(u32, String),
}

impl Danmaku {
    /// Registers an event-stream reader of `room` (anonymous without `claims`) and asks
    /// the room's home to admit it; with `since`, it gets the items after that id.
    pub fn open_reader(
        &self,
        room: RoomId,
        claims: Option<Claims>,
        since: Option<u64>,
    ) -> Rc<Conn> {
        let user = claims.map(|c| Rc::new(User::from_claims(c)));
        let conn = self.register(room, user);
        self.join_since(&conn, since);
        conn
    }

    /// Takes what is queued for a reader, in order.
    pub fn take_for_reader(&self, conn: &Conn) -> Vec<Bytes> {
        conn.take_frames()
    }

    /// A reader sends nothing: its stream's driver vouches for it to the heartbeat check
    /// (the stream's writes are watched by its own write timeout and the slow-consumer
    /// rules instead).
    pub fn reader_alive(&self, conn: &Conn) {
        conn.touch(self.now());
    }

    /// The byte bound of a viewer's queue and the heartbeat interval: a reader's stream
    /// queue has the same bound, and a keep-alive at least once per interval.
    pub fn reader_limits(&self) -> (usize, Duration) {
        let s = self.settings();
        (s.queue_bytes, s.heartbeat)
    }

    /// One `danmaku`, `gift` or `like` message (the WebSocket message's JSON) from the user
    /// of `claims`, posted to `room`: the answer is what the WebSocket would have sent.
    pub async fn post_over_http(&self, room: RoomId, claims: Claims, body: &[u8]) -> Answer {
        let msg = match protocol::parse_client(body) {
            Ok(
                m @ (ClientMsg::Danmaku { .. } | ClientMsg::Gift { .. } | ClientMsg::Like { .. }),
            ) => m,
            Ok(_) => {
                return Answer::Refused(
                    code::BAD_MESSAGE,
                    "only danmaku, gift and like messages can be posted here".into(),
                )
            }
            Err(why) => return Answer::Refused(code::BAD_MESSAGE, why),
        };
        let conn = self.register(room, Some(Rc::new(User::from_claims(claims))));
        // A post is not a connection: the gauge does not count it.
        self.ctx.metrics.ws_connections.fetch_sub(1, Relaxed);
        client::submit(self, &conn, msg);
        let frame = monoio::time::timeout(POST_TIMEOUT, async {
            loop {
                if let Some(f) = conn.take_frames().into_iter().next() {
                    return Some(f);
                }
                if conn.is_closing() {
                    // Its user was kicked or banned meanwhile, or the server stops.
                    return None;
                }
                conn.out().changed().await;
            }
        })
        .await;
        self.ctx.metrics.ws_connections.fetch_add(1, Relaxed);
        self.forget(&conn);
        match frame {
            Ok(Some(f)) => answer_of(&f),
            Ok(None) => Answer::Refused(code::BUSY, "closed before the answer; retry".into()),
            Err(_) => Answer::Refused(
                code::BUSY,
                "no answer in time: the message may or may not have been kept".into(),
            ),
        }
    }
}

/// Completes when a frame is queued for `conn` or it starts closing (a reader's wait).
pub fn frames_queued(conn: &Conn) -> shards::local::Notified<'_> {
    conn.out().changed()
}

/// The JSON payload of a server text frame (unmasked, one frame), sharing its buffer.
fn payload(frame: &Bytes) -> Option<Bytes> {
    if frame.len() < 2 || frame[0] != 0x81 {
        return None;
    }
    let head = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (frame.len() > head).then(|| frame.slice(head..))
}

/// The ack or error frame that answers a post.
fn answer_of(frame: &Bytes) -> Answer {
    #[derive(Deserialize)]
    struct A {
        #[serde(rename = "type")]
        t: String,
        id: Option<u64>,
        code: Option<u32>,
        message: Option<String>,
    }
    let parsed = payload(frame).and_then(|p| serde_json::from_slice::<A>(&p).ok());
    match parsed {
        Some(A {
            t, id: Some(id), ..
        }) if t == "ack" => Answer::Ack(id),
        Some(A {
            code: Some(c),
            message,
            ..
        }) => Answer::Refused(c, message.unwrap_or_default()),
        _ => Answer::Refused(code::BUSY, "unexpected answer; retry".into()),
    }
}

/// One frame for a reader as a Server-Sent Event: write `head`, `data`, then [`SSE_END`].
pub struct SseEvent {
    /// `event: TYPE\n`, `id: N\n` when the frame carries items past the last id, `data: `.
    pub head: Bytes,
    /// The frame's JSON, one line, a slice of the frame everyone shares.
    pub data: Bytes,
    /// A batch or an online count: may be dropped for a reader that does not keep up.
    pub droppable: bool,
}

/// What ends every event.
pub const SSE_END: Bytes = Bytes::from_static(b"\n\n");

/// The event for one frame a reader was sent; `last_id` is the highest item id the
/// reader has been sent (the `id:` of the events, so a reconnect's `Last-Event-ID` is a
/// `since`). A `gap` resets it: the history after it says where the reader is.
pub fn sse_event(frame: &Bytes, last_id: &mut u64) -> Option<SseEvent> {
    const START: &[u8] = br#"{"type":""#;
    const KEY: &[u8] = br#""type":""#;
    let data = payload(frame)?;
    // Items, batches and history frames start with their type; other frames are objects
    // with sorted keys, where the top-level `"type":"` is the last one (no string holds
    // one unescaped, and these frames nest no objects).
    let at = if data.starts_with(START) {
        START.len()
    } else {
        data.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len()
    };
    let rest = &data[at..];
    let name_len = rest.iter().position(|&b| b == b'"')?;
    let name = std::str::from_utf8(&rest[..name_len]).ok()?.to_owned();
    let name = name.as_str();
    if name.is_empty() || name.len() > 16 || !name.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut id = None;
    match name {
        "history" | "batch" => {
            if let Some(last) = last_item_id(&data).filter(|&l| l > *last_id) {
                *last_id = last;
                id = Some(last);
            }
        }
        "gap" => *last_id = 0,
        _ => {}
    }
    let head = match id {
        Some(id) => format!("event: {name}\nid: {id}\ndata: "),
        None => format!("event: {name}\ndata: "),
    };
    Some(SseEvent {
        head: Bytes::from(head),
        data,
        droppable: matches!(name, "batch" | "online"),
    })
}

/// The id of the last item of a `history` or `batch` payload. Items are JSON objects that
/// start `{"type":"KIND","id":N`; no string inside one can hold `{"` unescaped, so the last
/// such start is the last item's.
fn last_item_id(payload: &[u8]) -> Option<u64> {
    const START: &[u8] = br#"{"type":""#;
    let at = payload
        .get(1..)?
        .windows(START.len())
        .rposition(|w| w == START)?
        + 1
        + START.len();
    let rest = &payload[at..];
    let kind_len = rest.iter().position(|&b| b == b'"')?;
    let digits = rest[kind_len..].strip_prefix(br#"","id":"#)?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::danmaku::protocol::{ack_frame, error_frame, list_frame, online_frame};

    /// An item as the engine encodes it (`type` first, then `id`).
    fn item(id: u64, text: &str) -> Bytes {
        let text = serde_json::to_string(text).unwrap();
        Bytes::from(format!(r#"{{"type":"danmaku","id":{id},"text":{text}}}"#))
    }

    #[test]
    fn a_batch_becomes_one_event_with_its_last_id() {
        let items = [item(7, r#"{"type":"x","id":99}"#), item(8, "b")];
        let frame = list_frame("batch", "r1", items.iter());
        let mut last = 3;
        let ev = sse_event(&frame, &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: batch\nid: 8\ndata: ");
        assert_eq!(last, 8);
        assert!(ev.droppable);
        let v: serde_json::Value = serde_json::from_slice(&ev.data).unwrap();
        assert_eq!(v["msgs"][1]["id"], 8);
        assert!(!ev.data.contains(&b'\n'));
        // Nothing newer: no id line (the reader's last id stays).
        let ev = sse_event(&frame, &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: batch\ndata: ");
        // A long frame (16-bit length).
        let many: Vec<Bytes> = (10..400).map(|i| item(i, "long enough")).collect();
        let ev = sse_event(&list_frame("history", "r1", many.iter()), &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: history\nid: 399\ndata: ");
        // An empty history has no id.
        let ev = sse_event(&list_frame("history", "r1", [].iter()), &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: history\ndata: ");
    }

    #[test]
    fn other_frames_keep_their_type_and_answers_parse() {
        let mut last = 5;
        let ev = sse_event(&online_frame("r", 3), &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: online\ndata: ");
        assert!(ev.droppable);
        let pm = protocol::pm_frame("r", "a", "n", "b", r#"{"type":"x"}"#, 1);
        let ev = sse_event(&pm, &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: pm\ndata: ");
        assert!(!ev.droppable);
        let ev = sse_event(&protocol::gap_frame("r", 5, 9), &mut last).unwrap();
        assert_eq!(&ev.head[..], b"event: gap\ndata: ");
        assert!(!ev.droppable);
        assert_eq!(last, 0);
        assert!(sse_event(&Bytes::from_static(b"\x88\x02\x03\xe8"), &mut last).is_none());
        assert_eq!(answer_of(&ack_frame(Some("c"), 41)), Answer::Ack(41));
        assert_eq!(
            answer_of(&error_frame(4290, "slow down", None)),
            Answer::Refused(4290, "slow down".into())
        );
    }
}
