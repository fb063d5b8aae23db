//! A post on the room's home shard: admission (moderation, rate, slow mode), private
//! messages, the item's id and one encode, the delivery cap, the store append and its ack,
//! then the merge window (or an immediate frame when the window is zero).

use bytes::Bytes;

use super::engine::{bump, Danmaku};
use super::protocol::{self, code, encode_item, Item, ItemBody};
use super::room::Priority;
use super::{Msg, Post, PostBody, RoomId};
use crate::store::{AckTo, Request};

impl Danmaku {
    pub(super) fn on_post(&self, post: Post) {
        let now = self.now_ms();
        let reply = |frame: Bytes| self.reply_to(post.from, frame);
        let mut home = self.home.borrow_mut();
        let r = self.home_room(&mut home, &post.room, now);
        if post.from.is_some() {
            if let Err((c, m)) = r.admit(&post.uid, now) {
                return reply(protocol::error_frame(c, m, post.cid.as_deref()));
            }
        }
        if let PostBody::Pm { to, text } = &post.body {
            if !r.has_user(to) {
                return reply(protocol::error_frame(
                    code::NO_SUCH_USER,
                    "that user is not in this room",
                    post.cid.as_deref(),
                ));
            }
            // Not a room item: no id from the room's sequence (it is neither stored nor
            // replayed, so an id here would be a hole in the room's ids for everyone).
            let frame = protocol::pm_frame(&post.room, &post.uid, &post.nick, to, text, now);
            let targets: Vec<usize> = r.targets().collect();
            drop(home);
            reply(protocol::action_ack_frame(post.cid.as_deref()));
            for s in targets {
                let msg = Msg::DeliverTo {
                    room: post.room.clone(),
                    uid: to.clone(),
                    frame: frame.clone(),
                };
                let _ = self.submit(s, msg);
            }
            return;
        }
        let media_ts = r.media_now(now);
        let (kind, body, priority) = match &post.body {
            PostBody::Danmaku { text, color, mode } => (
                "danmaku",
                ItemBody::Danmaku {
                    text,
                    color,
                    mode: *mode,
                },
                if post.vip {
                    Priority::Vip
                } else {
                    Priority::Plain
                },
            ),
            PostBody::Gift { gift_id, count } => (
                "gift",
                ItemBody::Gift {
                    gift_id,
                    count: *count,
                },
                Priority::Gift,
            ),
            PostBody::Like { count } => ("like", ItemBody::Like { count: *count }, Priority::Plain),
            PostBody::System { text } => ("system", ItemBody::System { text }, Priority::System),
            PostBody::Live { live } => (
                "live",
                ItemBody::Live {
                    status: if *live { "live" } else { "offline" },
                },
                Priority::System,
            ),
            PostBody::Pm { .. } => unreachable!("handled above"),
        };
        if self.ctx.cluster.is_some() {
            // Redis gives the id (crate::cluster): the item goes out with the merge window.
            let (prefix, suffix) = protocol::encode_item_parts(&Item {
                kind,
                id: 0,
                room: &post.room,
                uid: &post.uid,
                nick: &post.nick,
                ts: now,
                media_ts,
                body,
            });
            bump(&self.counters.items, 1);
            r.outbox.push(crate::cluster::Outgoing {
                prio: priority.letter(),
                prefix,
                suffix,
                ack: post.from.map(|conn| crate::cluster::Ack {
                    conn,
                    cid: post.cid.clone(),
                }),
            });
            if self.settings().merge_window.is_zero() {
                let (items, floor) = (std::mem::take(&mut r.outbox), r.last_id());
                drop(home);
                self.send_outbox(&post.room, floor, items);
            } else if !r.dirty {
                r.dirty = true;
                self.dirty.borrow_mut().push(post.room.clone());
                self.flush_kick.notify();
            }
            return;
        }
        let id = r.next_id();
        let item = encode_item(&Item {
            kind,
            id,
            room: &post.room,
            uid: &post.uid,
            nick: &post.nick,
            ts: now,
            media_ts,
            body,
        });
        bump(&self.counters.items, 1);
        // Past saturation a room sheds a share of its plain items (`super::shed`).
        if priority == Priority::Plain && !self.admit_plain(&post.room) {
            r.sample(id, item.clone());
            bump(&self.counters.shed, 1);
        } else if r.push(id, item.clone(), priority, now) {
            r.pending_since.get_or_insert(post.at);
        } else {
            bump(&self.counters.sampled_out, 1);
        }
        // The ack waits for the store under the durable policy: it is sent by the store
        // thread once the item is committed.
        let durable = self.settings().durable_ack && post.from.is_some();
        let append = Request::AppendDanmaku {
            room: post.room.to_string(),
            id,
            item,
            ack: durable.then(|| AckTo {
                conn: post.from.expect("checked"),
                cid: post.cid.clone(),
            }),
        };
        match self.ctx.store.send(append) {
            Ok(()) if durable => {}
            Ok(()) => reply(protocol::ack_frame(post.cid.as_deref(), id)),
            Err(e) => {
                tracing::warn!(room = %post.room, error = %e, "item not stored");
                reply(protocol::error_frame(
                    code::BUSY,
                    "delivered but not stored; retry later",
                    post.cid.as_deref(),
                ));
            }
        }
        if self.settings().merge_window.is_zero() {
            // Window 0: one frame per item, sent at once.
            if let Some(frame) = r.flush() {
                let targets: Vec<usize> = r.targets().collect();
                let since = r.pending_since.take();
                drop(home);
                self.deliver(&post.room, frame, targets, since);
            }
        } else if !r.dirty {
            r.dirty = true;
            self.dirty.borrow_mut().push(post.room.clone());
            self.flush_kick.notify();
        }
    }
}

impl Danmaku {
    /// Whether a plain item of `room` goes to live batches: all of them unless the room
    /// sheds past saturation, as its viewers on this (its home) shard show (`super::shed`).
    fn admit_plain(&self, room: &RoomId) -> bool {
        self.local
            .borrow_mut()
            .get_mut(room)
            .is_none_or(|r| r.shed.admit())
    }
}
