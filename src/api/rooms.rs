//! Rooms: create, list (live first, with online counts), get, update, re-sign the push URL,
//! close.
//!
//! A room's record (owner, title, admins, closed) is in the store; its live state (online
//! count, whether its stream is live) is on its home shard, asked through the danmaku engine's port (`port().call`).
//! The room id is also the stream name and the danmaku room id.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{json, Value};

use super::error::{self, ApiError, ApiResult};
use super::input;
use super::urls::{self, Bases};
use super::Api;
use crate::auth::Claims;
use crate::danmaku::{Danmaku, ModOp, PostBody};
use crate::http::{Request, Response};
use crate::live::Live;
use crate::store::model::{Room, RoomPatch};
use crate::store::Request as StoreRequest;

/// Online count and live status of a room, from its home shard; `(0, false)` when the
/// room is not active there (or the shard could not be asked).
pub async fn status(api: &Rc<Api>, id: &str) -> (u64, bool) {
    let home = api.danmaku.port().home_of(id);
    let room = id.to_string();
    let here = api
        .danmaku
        .port()
        .call(home, move |d: &Rc<Danmaku>| d.home_status(&room))
        .await
        .flatten();
    // In a cluster, a room this node does not hold may be busy on another.
    here.or_else(|| {
        api.danmaku
            .directory()
            .iter()
            .find(|(r, _, _)| &**r == id)
            .map(|(_, n, live)| (*n, *live))
    })
    .unwrap_or((0, false))
}

/// Every room that is live or has viewers, on any shard (in a cluster, on any node, as
/// of the last heartbeat, with this node's own rooms as they are now): id → (online, live).
async fn active(api: &Rc<Api>) -> HashMap<String, (u64, bool)> {
    let mut all: HashMap<String, (u64, bool)> = api
        .danmaku
        .directory()
        .iter()
        .map(|(r, n, live)| (r.to_string(), (*n, *live)))
        .collect();
    for s in 0..api.shards() {
        let call = api
            .danmaku
            .port()
            .call(s, |d: &Rc<Danmaku>| d.home_active());
        for (id, online, live) in call.await.into_iter().flatten() {
            // The home shard's count is current; live may be so on another node.
            let e = all.entry(id).or_default();
            *e = (online, live || e.1);
        }
    }
    all
}

/// Which of the live rooms `ids` HLS refuses for a codec it does not carry (VP9,
/// …): one call to each owner shard of their streams.
async fn hls_refused(api: &Rc<Api>, ids: &[&str]) -> HashSet<String> {
    let mut by_owner: HashMap<usize, Vec<String>> = HashMap::new();
    for id in ids {
        if let Some(owner) = api.live.owner(id) {
            by_owner.entry(owner).or_default().push((*id).to_string());
        }
    }
    let mut refused = HashSet::new();
    for (owner, streams) in by_owner {
        let call = api
            .live
            .port()
            .call(owner, move |l: &Rc<Live>| l.hls_refused_among(&streams));
        if let Some(r) = call.await {
            refused.extend(r);
        }
    }
    refused
}

/// Whether room `id`'s play URLs include HLS: not while its stream is one HLS refuses.
async fn hls_playable(api: &Rc<Api>, id: &str) -> bool {
    hls_refused(api, &[id]).await.is_empty()
}

/// The stored room `id`, or 40401.
pub async fn load(api: &Api, id: &str) -> ApiResult<Room> {
    let id = id.to_string();
    api.store
        .call(|reply| StoreRequest::GetRoom { id, reply })
        .await?
        .ok_or_else(ApiError::room_not_found)
}

/// Owner (or a global admin) only: 40301 otherwise.
pub fn check_owner(claims: &Claims, room: &Room) -> ApiResult<()> {
    if claims.sub == room.owner || claims.has_role("admin") {
        Ok(())
    } else {
        Err(ApiError::new(
            error::NOT_OWNER,
            "only the room owner may do that",
        ))
    }
}

pub fn check_open(room: &Room) -> ApiResult<()> {
    if room.closed {
        Err(ApiError::new(error::ROOM_CLOSED, "the room is closed"))
    } else {
        Ok(())
    }
}

/// Applies a moderation action on the room's home shard and returns once it is applied
/// there (or queued behind the room's stored state loading, ahead of anything later), so
/// it is in force on every shard when the API answers.
///
/// The home shard queues the room's new moderation state to the store as it applies the
/// action; one more store round trip after that (the store answers in order) means it is
/// committed before the API answers.
pub async fn moderate(api: &Rc<Api>, room: &str, op: ModOp) -> ApiResult<()> {
    let home = api.danmaku.port().home_of(room);
    if !api.danmaku.moderate_as_server(room.into(), op) {
        return Err(ApiError::busy());
    }
    // The lane to the home shard is first in, first out: once this call has run there, so
    // has the action (or it is queued behind the room's loading, ahead of what follows).
    api.danmaku
        .port()
        .call(home, |_: &Rc<Danmaku>| ())
        .await
        .ok_or_else(ApiError::busy)?;
    let id = room.to_string();
    api.store
        .call(|reply| StoreRequest::GetRoom { id, reply })
        .await?;
    Ok(())
}

/// A room as clients see it; `hls`: whether its play URLs include HLS.
pub fn view(
    api: &Api,
    bases: &Bases,
    room: &Room,
    (online, live): (u64, bool),
    hls: bool,
) -> Value {
    let now = crate::auth::now_unix();
    let live = live && !room.closed;
    let status = if room.closed {
        "closed"
    } else if live {
        "live"
    } else {
        "offline"
    };
    json!({
        "id": room.id,
        "owner": room.owner,
        "title": room.title,
        "category": room.category,
        "cover_url": room.cover_url,
        "cover_thumbs": urls::cover_thumbs(bases, &room.cover_url),
        "created_at": room.created_at,
        "updated_at": room.updated_at,
        "status": status,
        "live": live,
        "online": online,
        "admins": room.admins,
        "play": urls::play(api, bases, &room.id, now, hls),
        "ws_url": urls::ws(bases, &room.id),
    })
}

/// `POST /api/v1/rooms {"title", "category"?, "cover_url"?}`.
pub async fn create(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    let body = input::json_object(&req)?;
    let title = input::required_text(&body, "title", 1, 64)?;
    let category = input::text(&body, "category", 0, 32)?.unwrap_or_default();
    let cover_url = input::image_url(&body, "cover_url")?.unwrap_or_default();
    let now = crate::auth::now_unix();
    // 12 characters of a-z0-9 is 62 bits: a collision is a retry, not a failure.
    for _ in 0..4 {
        let room = Room {
            id: input::random_id(12)?,
            owner: claims.sub.clone(),
            title: title.clone(),
            category: category.clone(),
            cover_url: cover_url.clone(),
            created_at: now,
            updated_at: now,
            closed: false,
            admins: Vec::new(),
        };
        let stored = room.clone();
        let created = api
            .store
            .call(|reply| StoreRequest::CreateRoom {
                room: stored,
                reply,
            })
            .await?;
        if !created {
            continue;
        }
        let owner = ModOp::SetOwner {
            uid: claims.sub.as_str().into(),
        };
        if let Err(e) = moderate(&api, &room.id, owner).await {
            // The API checks ownership from the stored room; only moderating over the
            // WebSocket waits for the owner to reach the danmaku room.
            tracing::warn!(room = %room.id, error = %e.message, "room owner not set in danmaku");
        }
        let bases = urls::bases(&api, &req);
        let mut data = view(&api, &bases, &room, (0, false), true);
        data["push"] = json!(urls::push(&api, &bases, &room.id, now));
        return Ok(Response::ok(&data));
    }
    Err(ApiError::new(
        error::INTERNAL,
        "could not allocate a room id",
    ))
}

/// `GET /api/v1/rooms?status=live|all&page=1&size=20`: live rooms first (most viewers
/// first), then the other open rooms, newest first.
pub async fn list(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let which = req.query("status").unwrap_or_else(|| "all".into());
    if which != "live" && which != "all" {
        return Err(ApiError::field("status", "status must be live or all"));
    }
    let page = input::query_number(&req, "page", 1, 1, 10_000)? as usize;
    let max_size = api.config().api.page_size_max as u64;
    let size = input::query_number(&req, "size", 20.min(max_size), 1, max_size)? as usize;
    let offset = (page - 1) * size;

    let active = active(&api).await;
    let mut live: Vec<(&String, u64)> = active
        .iter()
        .filter(|(_, (_, live))| *live)
        .map(|(id, (online, _))| (id, *online))
        .collect();
    live.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let live_ids: Vec<String> = live.iter().map(|(id, _)| (*id).clone()).collect();
    let ids = live_ids.clone();
    let stored = api
        .store
        .call(|reply| StoreRequest::GetRooms { ids, reply })
        .await?;
    let live_rooms: Vec<Room> = stored.into_iter().flatten().filter(|r| !r.closed).collect();

    let mut rooms: Vec<Room> = live_rooms.iter().skip(offset).take(size).cloned().collect();
    let mut total = live_rooms.len();
    if which == "all" {
        let skip = live_ids;
        let store_offset = offset.saturating_sub(live_rooms.len());
        let limit = size - rooms.len();
        let rest = api
            .store
            .call(|reply| StoreRequest::OpenRoomsPage {
                skip,
                offset: store_offset,
                limit,
                reply,
            })
            .await?;
        total += rest.total;
        rooms.extend(rest.rooms);
    }
    let bases = urls::bases(&api, &req);
    let live_here: Vec<&str> = rooms
        .iter()
        .filter(|r| active.get(&r.id).is_some_and(|st| st.1))
        .map(|r| r.id.as_str())
        .collect();
    let no_hls = hls_refused(&api, &live_here).await;
    let items: Vec<Value> = rooms
        .iter()
        .map(|r| {
            let st = active.get(&r.id).copied().unwrap_or((0, false));
            view(&api, &bases, r, st, !no_hls.contains(&r.id))
        })
        .collect();
    Ok(Response::ok(&json!({
        "items": items,
        "page": page,
        "size": size,
        "total": total,
    })))
}

/// `GET /api/v1/rooms/{id}`.
pub async fn get(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let id = input::room_id(&req)?;
    let room = load(&api, &id).await?;
    let st = status(&api, &id).await;
    let hls = hls_playable(&api, &id).await;
    let bases = urls::bases(&api, &req);
    Ok(Response::ok(&view(&api, &bases, &room, st, hls)))
}

/// `PATCH /api/v1/rooms/{id} {"title"?, "category"?, "cover_url"?}` (owner).
pub async fn update(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    let id = input::room_id(&req)?;
    let body = input::json_object(&req)?;
    let patch = RoomPatch {
        title: input::text(&body, "title", 1, 64)?,
        category: input::text(&body, "category", 0, 32)?,
        cover_url: input::image_url(&body, "cover_url")?,
        updated_at: crate::auth::now_unix(),
        ..RoomPatch::default()
    };
    if patch.title.is_none() && patch.category.is_none() && patch.cover_url.is_none() {
        return Err(ApiError::field(
            "title",
            "nothing to change: send title, category or cover_url",
        ));
    }
    let room = load(&api, &id).await?;
    check_owner(&claims, &room)?;
    check_open(&room)?;
    let room = api
        .store
        .call(|reply| StoreRequest::UpdateRoom { id, patch, reply })
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    let st = status(&api, &room.id).await;
    let hls = hls_playable(&api, &room.id).await;
    let bases = urls::bases(&api, &req);
    Ok(Response::ok(&view(&api, &bases, &room, st, hls)))
}

/// `POST /api/v1/rooms/{id}/push-url` (owner): a freshly signed push URL.
pub async fn push_url(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    let id = input::room_id(&req)?;
    let room = load(&api, &id).await?;
    check_owner(&claims, &room)?;
    check_open(&room)?;
    let bases = urls::bases(&api, &req);
    let push = urls::push(&api, &bases, &id, crate::auth::now_unix());
    Ok(Response::ok(&json!({ "push": push })))
}

/// `DELETE /api/v1/rooms/{id}` (owner): closes the room. It stays readable (history,
/// status "closed") but refuses changes and publishing and is left out of lists. A live
/// stream is stopped (viewers get its `live` offline item) and viewers get a `system`
/// item. Closing a closed room is a no-op that answers the same.
pub async fn close(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    let id = input::room_id(&req)?;
    let room = load(&api, &id).await?;
    check_owner(&claims, &room)?;
    let bases = urls::bases(&api, &req);
    if room.closed {
        let st = status(&api, &id).await;
        let hls = hls_playable(&api, &id).await;
        return Ok(Response::ok(&view(&api, &bases, &room, st, hls)));
    }
    let patch = RoomPatch {
        close: true,
        updated_at: crate::auth::now_unix(),
        ..RoomPatch::default()
    };
    let key = id.clone();
    let room = api
        .store
        .call(|reply| StoreRequest::UpdateRoom {
            id: key,
            patch,
            reply,
        })
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    let st = status(&api, &id).await;
    // Stop the publisher, if any: the stream's home shard (the room's home) knows which
    // shard holds it; the unpublish that follows tells viewers the stream is offline, and
    // a new publish is refused because the room is closed.
    let stream: crate::live::StreamId = id.as_str().into();
    let home = api.live.port().home_of(&id);
    if api
        .live
        .port()
        .call(home, move |l: &Rc<Live>| l.stop(&stream))
        .await
        .is_none()
    {
        tracing::warn!(room = %id, "could not ask the stream's home shard to stop it");
    }
    // In a cluster, the publisher may be on another node.
    api.danmaku.stop_stream_everywhere(&id.as_str().into());
    api.danmaku.system_post(
        id.as_str().into(),
        PostBody::System {
            text: "This room has been closed.".into(),
        },
    );
    Ok(Response::ok(&view(&api, &bases, &room, st, true)))
}
