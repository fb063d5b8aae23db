//! Moderation: the viewer shard sends an action to the room's home shard, which checks
//! who may do it, applies it to the room (mute, ban, kick, slow mode, admins, owner),
//! stores the room's moderation state, acks the actor and kicks the user's connections on
//! every shard with viewers of the room.

use std::rc::Rc;

use bytes::Bytes;

use super::engine::Danmaku;
use super::protocol::{self, close, code};
use super::viewer::Conn;
use super::{Actor, ModOp, Msg, RoomId, Uid};
use crate::store::Request;

impl Danmaku {
    /// Sends a moderation action to the room's home shard.
    pub fn moderate(&self, room: RoomId, op: ModOp, actor: Actor, conn: Option<&Rc<Conn>>) {
        let home = self.home_of(&room);
        let msg = Msg::Moderate {
            room,
            op,
            actor: Box::new(actor),
        };
        if self.submit(home, msg).is_err() {
            if let Some(conn) = conn {
                conn.send(protocol::error_frame(
                    code::BUSY,
                    "server busy, retry",
                    None,
                ));
            }
        }
    }

    /// Sends a moderation action by the server itself (the REST API, having checked who
    /// may) to the room's home shard. False if the mesh refused it.
    pub fn moderate_as_server(&self, room: RoomId, op: ModOp) -> bool {
        let home = self.home_of(&room);
        let msg = Msg::Moderate {
            room,
            op,
            actor: Box::new(Actor::System),
        };
        self.submit(home, msg).is_ok()
    }

    pub(super) fn on_moderate(&self, room: RoomId, op: ModOp, actor: Actor) {
        let now = self.now_ms();
        let (reply_to, cid) = match &actor {
            Actor::User { reply, cid, .. } => (Some(*reply), cid.clone()),
            Actor::System => (None, None),
        };
        let answer = |frame: Bytes| {
            if let Some(to) = reply_to {
                let _ = self.submit(to.shard as usize, Msg::Reply { conn: to, frame });
            }
        };
        let mut home = self.home.borrow_mut();
        let r = self.home_room(&mut home, &room, now);
        let allowed = match &actor {
            Actor::System => true,
            Actor::User {
                uid, global_admin, ..
            } => {
                let owner_only = matches!(
                    op,
                    ModOp::AddAdmin { .. } | ModOp::RemoveAdmin { .. } | ModOp::SetOwner { .. }
                );
                *global_admin
                    || (!owner_only && r.is_moderator(uid))
                    || r.owner.as_deref() == Some(&**uid)
            }
        };
        if !allowed {
            return answer(protocol::error_frame(
                code::NOT_ALLOWED,
                "only the room owner or an admin may do that",
                cid.as_deref(),
            ));
        }
        let mut kick: Option<(Uid, u16, &'static str)> = None;
        match op {
            ModOp::Mute { uid, secs } => {
                let until = if secs == 0 {
                    u64::MAX
                } else {
                    now.saturating_add(secs.saturating_mul(1000))
                };
                r.mute(uid, until);
            }
            ModOp::Unmute { uid } => r.unmute(&uid),
            ModOp::Ban { uid } => {
                r.ban(uid.clone());
                kick = Some((uid, close::BANNED, "banned from this room"));
            }
            ModOp::Unban { uid } => r.unban(&uid),
            ModOp::Kick { uid } => kick = Some((uid, close::KICKED, "kicked by a moderator")),
            ModOp::SlowMode { secs } => r.set_slow_mode(secs.min(3600)),
            ModOp::AddAdmin { uid } => r.add_admin(uid),
            ModOp::RemoveAdmin { uid } => r.remove_admin(&uid),
            ModOp::SetOwner { uid } => r.owner = Some(uid),
        }
        let mods = r.mod_snapshot(now);
        self.send_control(
            &room,
            mods.clone(),
            kick.as_ref().map(|(u, c, _)| (u.clone(), *c)),
        );
        if let Err(e) = self.ctx.store.send(Request::SaveMods {
            room: room.to_string(),
            mods,
        }) {
            tracing::warn!(%room, error = %e, "moderation change not stored");
        }
        let targets: Vec<usize> = r.targets().collect();
        drop(home);
        answer(protocol::action_ack_frame(cid.as_deref()));
        if let Some((uid, code, reason)) = kick {
            for s in targets {
                let msg = Msg::Kick {
                    room: room.clone(),
                    uid: uid.clone(),
                    code,
                    reason,
                };
                let _ = self.submit(s, msg);
            }
        }
    }
}
