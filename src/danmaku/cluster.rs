//! The danmaku engine in a cluster of nodes over Redis ([`crate::cluster`]): a home
//! room's checked posts go to Redis once per merge window, and what every node's home
//! shard hears back — the room's items with their ids, control messages, this node's
//! acks, the other nodes' viewer counts — is handled here.
//!
//! While Redis is unreachable, a batch it did not take still reaches this node's viewers:
//! each item with `"local":true` and the id of the last item before it (it is not stored,
//! not in history, and no other node sees it); its sender gets an error saying so.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::engine::{bump, Danmaku};
use super::protocol::{self, close, code, list_frame};
use super::room::Priority;
use super::{Msg, RoomId, Uid};
use crate::cluster::{Event, Outgoing, Request};
use crate::store::model::ModState;

/// A moderation change, as it goes to the other nodes: the room's whole moderation state
/// after it, and the user to disconnect, if any.
#[derive(Serialize, Deserialize)]
struct Control {
    node: String,
    mods: ModState,
    #[serde(default)]
    kick: Option<(String, u16)>,
}

impl Danmaku {
    /// Sends a home room's batch to Redis; if the queue is full, its senders are told.
    pub(super) fn send_outbox(&self, room: &RoomId, floor: u64, items: Vec<Outgoing>) {
        let Some(cluster) = &self.ctx.cluster else {
            return;
        };
        if items.is_empty() {
            return;
        }
        let req = Request::Publish {
            room: room.clone(),
            shard: self.port().me(),
            floor,
            items,
        };
        if let Err(Request::Publish { items, .. }) = cluster.send(req) {
            self.local_only(room, items);
        }
    }

    /// Tells every other node about a revocation committed here (this node's shards
    /// have applied it).
    pub fn send_revocation(&self, rev: &crate::auth::Revocation) {
        let Some(cluster) = &self.ctx.cluster else {
            return;
        };
        let body = serde_json::to_vec(rev).unwrap_or_default();
        if cluster.send(Request::Revoked(body.into())).is_err() {
            tracing::error!("a revocation could not be queued for the other nodes; they apply it at their next start");
        }
    }

    /// Asks every node to stop `room`'s publisher, wherever it is (the room was closed
    /// here).
    pub fn stop_stream_everywhere(&self, room: &RoomId) {
        if let Some(cluster) = &self.ctx.cluster {
            if cluster.send(Request::StopStream(room.clone())).is_err() {
                tracing::warn!(%room, "could not ask the other nodes to stop the closed room's stream");
            }
        }
    }

    /// Tells the other nodes holding `room` about a moderation change made here.
    pub(super) fn send_control(&self, room: &RoomId, mods: ModState, kick: Option<(Uid, u16)>) {
        let Some(cluster) = &self.ctx.cluster else {
            return;
        };
        let body = serde_json::to_vec(&Control {
            node: cluster.node.to_string(),
            mods,
            kick: kick.map(|(u, c)| (u.to_string(), c)),
        })
        .unwrap_or_default();
        let _ = cluster.send(Request::Control {
            room: room.clone(),
            body: body.into(),
        });
    }

    pub(super) fn on_cluster(&self, ev: Event) {
        match ev {
            Event::Items {
                room,
                first,
                last,
                items,
            } => self.on_items(&room, first, last, items),
            Event::Published { room, acks, failed } => {
                for (id, ack) in acks {
                    self.reply_to(Some(ack.conn), protocol::ack_frame(ack.cid.as_deref(), id));
                }
                if !failed.is_empty() {
                    self.local_only(&room, failed);
                }
            }
            Event::Control { room, body } => self.on_control(&room, &body),
            Event::Revoked(body) => match serde_json::from_slice(&body) {
                Ok(rev) => self.apply_revocation(&rev),
                Err(_) => tracing::warn!("unreadable revocation from another node"),
            },
            Event::Directory(dir) => *self.directory.borrow_mut() = dir,
            // The wiring hands these to the live engine.
            Event::StopStream(_) => {}
            Event::Elsewhere { counts } => {
                let mut home = self.home.borrow_mut();
                for (room, n) in counts {
                    if let Some(r) = home.get_mut(&room) {
                        r.set_elsewhere(n);
                    }
                }
            }
        }
    }

    /// A room's items from Redis, in id order: the same on every node.
    fn on_items(&self, room: &RoomId, first: u64, last: u64, items: Vec<(u8, Bytes)>) {
        let now = self.now_ms();
        let consecutive = items.len() as u64 == last + 1 - first;
        let mut home = self.home.borrow_mut();
        let r = self.home_room(&mut home, room, now);
        let idle_since = r.idle_since_ms;
        let mut any = false;
        for (i, (prio, item)) in items.into_iter().enumerate() {
            let id = if consecutive {
                first + i as u64
            } else {
                match protocol::item_id(&item) {
                    Some(id) => id,
                    None => continue,
                }
            };
            // Already here: published before this node read the room's state.
            if id <= r.last_id() {
                continue;
            }
            r.advance_to(id);
            if r.push(id, item, Priority::from_letter(prio), now) {
                any = true;
            } else {
                bump(&self.counters.sampled_out, 1);
            }
        }
        r.advance_to(last);
        let frame = r.flush();
        // Items from elsewhere do not keep a room with no viewer here.
        if r.local_online() == 0 {
            r.idle_since_ms = idle_since.or(Some(now));
        }
        if !any {
            return;
        }
        // Batched on the posting node already: delivered at once.
        if let Some(frame) = frame {
            let targets: Vec<usize> = r.targets().collect();
            drop(home);
            self.deliver(room, frame, targets, None);
        }
    }

    /// Items Redis did not take: to this node's viewers only, marked as such.
    fn local_only(&self, room: &RoomId, items: Vec<Outgoing>) {
        let (targets, last) = {
            let mut home = self.home.borrow_mut();
            let r = self.home_room(&mut home, room, self.now_ms());
            (r.targets().collect::<Vec<_>>(), r.last_id())
        };
        let mut encoded = Vec::with_capacity(items.len());
        for it in items {
            let id = last.to_string();
            let mut b = BytesMut::with_capacity(it.prefix.len() + id.len() + 13 + it.suffix.len());
            b.put_slice(&it.prefix);
            b.put_slice(id.as_bytes());
            b.put_slice(br#","local":true"#);
            b.put_slice(&it.suffix);
            encoded.push(b.freeze());
            if let Some(ack) = it.ack {
                self.reply_to(
                    Some(ack.conn),
                    protocol::error_frame(
                        code::CLUSTER_UNAVAILABLE,
                        "delivered to this server's viewers only; not stored",
                        ack.cid.as_deref(),
                    ),
                );
            }
        }
        if !targets.is_empty() {
            let frame = list_frame("batch", room, encoded.iter());
            self.deliver(room, frame, targets, None);
        }
    }

    fn on_control(&self, room: &RoomId, body: &[u8]) {
        let Ok(c) = serde_json::from_slice::<Control>(body) else {
            tracing::warn!(%room, "unreadable control message");
            return;
        };
        if self.ctx.cluster.as_ref().is_some_and(|k| *k.node == c.node) {
            return;
        }
        let now = self.now_ms();
        let targets: Vec<usize> = {
            let mut home = self.home.borrow_mut();
            let r = self.home_room(&mut home, room, now);
            r.set_mods(c.mods, now);
            r.targets().collect()
        };
        if let Some((uid, code)) = c.kick {
            let reason = if code == close::BANNED {
                "banned from this room"
            } else {
                "kicked by a moderator"
            };
            for s in targets {
                let msg = Msg::Kick {
                    room: room.clone(),
                    uid: uid.as_str().into(),
                    code,
                    reason,
                };
                let _ = self.submit(s, msg);
            }
        }
    }
}
