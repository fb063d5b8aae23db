//! Moderation over REST: mutes, bans, kicks, slow mode (owner or room admin) and room
//! admins (owner only). Each action is applied on the room's home shard before the answer
//! ([`super::rooms::moderate`]), so it holds on every shard at once, and the home shard
//! persists it with the room's moderation state.
//!
//! Who may act is decided from the stored room (its owner and admin list, which only this
//! API changes) and the caller's token (`admin` role: any room).

use std::rc::Rc;

use serde_json::json;

use super::error::{self, ApiError, ApiResult};
use super::input;
use super::rooms;
use super::Api;
use crate::auth::Claims;
use crate::danmaku::ModOp;
use crate::http::{Request, Response};
use crate::store::model::{Room, RoomPatch};
use crate::store::Request as StoreRequest;

/// Longest timed mute: 30 days (0 = until unmuted).
const MAX_MUTE_SECS: u64 = 30 * 24 * 3600;
/// Longest slow-mode interval.
const MAX_SLOW_SECS: u64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Mute,
    Unmute,
    Ban,
    Unban,
    Kick,
    AddAdmin,
    RemoveAdmin,
    SlowMode,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Kick => "kick",
            Action::AddAdmin => "add_admin",
            Action::RemoveAdmin => "remove_admin",
            Action::SlowMode => "slow_mode",
        }
    }

    fn owner_only(self) -> bool {
        matches!(self, Action::AddAdmin | Action::RemoveAdmin)
    }
}

fn check_moderator(claims: &Claims, room: &Room) -> ApiResult<()> {
    if claims.sub == room.owner || claims.has_role("admin") || room.admins.contains(&claims.sub) {
        Ok(())
    } else {
        Err(ApiError::new(
            error::NOT_MODERATOR,
            "only the room owner or a room admin may do that",
        ))
    }
}

/// The handler for one action.
pub async fn act(api: Rc<Api>, req: Request, action: Action) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    let id = input::room_id(&req)?;
    let uid = match action {
        Action::SlowMode => None,
        _ => Some(input::uid_param(&req)?),
    };
    let body = input::json_object(&req)?;
    let seconds =
        match action {
            Action::Mute => Some(input::number(&body, "seconds", MAX_MUTE_SECS)?.ok_or_else(
                || ApiError::field("seconds", "seconds is required (0 = until unmuted)"),
            )?),
            Action::SlowMode => Some(
                input::number(&body, "seconds", MAX_SLOW_SECS)?
                    .ok_or_else(|| ApiError::field("seconds", "seconds is required (0 = off)"))?,
            ),
            _ => None,
        };
    let room = rooms::load(&api, &id).await?;
    if action.owner_only() {
        rooms::check_owner(&claims, &room)?;
    } else {
        check_moderator(&claims, &room)?;
    }
    rooms::check_open(&room)?;

    let target: Option<crate::danmaku::Uid> = uid.as_deref().map(Into::into);
    let op = match (action, target) {
        (Action::Mute, Some(uid)) => ModOp::Mute {
            uid,
            secs: seconds.unwrap_or(0),
        },
        (Action::Unmute, Some(uid)) => ModOp::Unmute { uid },
        (Action::Ban, Some(uid)) => ModOp::Ban { uid },
        (Action::Unban, Some(uid)) => ModOp::Unban { uid },
        (Action::Kick, Some(uid)) => ModOp::Kick { uid },
        (Action::AddAdmin, Some(uid)) => ModOp::AddAdmin { uid },
        (Action::RemoveAdmin, Some(uid)) => ModOp::RemoveAdmin { uid },
        (Action::SlowMode, _) => ModOp::SlowMode {
            secs: seconds.unwrap_or(0),
        },
        (_, None) => return Err(ApiError::field("uid", "uid is required")),
    };
    if matches!(action, Action::AddAdmin | Action::RemoveAdmin) {
        // The stored list decides who may use this API; the danmaku room's copy decides
        // who may moderate over the WebSocket. The store first: a failure leaves both as
        // they were.
        let who = uid.clone().unwrap_or_default();
        let patch = RoomPatch {
            add_admin: (action == Action::AddAdmin).then(|| who.clone()),
            remove_admin: (action == Action::RemoveAdmin).then_some(who),
            updated_at: crate::auth::now_unix(),
            ..RoomPatch::default()
        };
        let key = id.clone();
        api.store
            .call(|reply| StoreRequest::UpdateRoom {
                id: key,
                patch,
                reply,
            })
            .await?
            .ok_or_else(ApiError::room_not_found)?;
    }
    rooms::moderate(&api, &id, op).await?;
    let mut data = json!({"room": id, "action": action.name()});
    if let Some(uid) = uid {
        data["uid"] = json!(uid);
    }
    if let Some(s) = seconds {
        data["seconds"] = json!(s);
    }
    Ok(Response::ok(&data))
}
