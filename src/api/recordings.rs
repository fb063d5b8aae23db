//! Recordings over REST: `POST` / `DELETE /api/v1/rooms/{id}/recording` start and stop
//! recording a room's live stream (the room's owner or an admin), `GET /api/v1/recordings`
//! lists the files (`?room=` for one room's), each with its VOD URL (`/vod/{id}.flv`,
//! served by [`super::vod`]).
//!
//! A start or stop runs on the stream's owner shard (`port().call`), where its frames are;
//! the list comes from the vod thread's index ([`crate::store::recordings`]).

use std::rc::Rc;

use serde_json::{json, Value};

use super::error::{self, ApiError, ApiResult};
use super::{input, rooms, urls, Api};
use crate::http::{Request, Response};
use crate::live::Live;
use crate::store::recordings::Entry;

/// `POST /api/v1/rooms/{id}/recording`: records the room's stream until its publisher
/// leaves (or `DELETE`). 409 if the stream is not live.
pub async fn start(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let (id, owner) = authorized(&api, &req).await?;
    let owner = owner.ok_or_else(not_live)?;
    let stream = id.clone();
    let started = api
        .live
        .port()
        .call(owner, move |l: &Rc<Live>| l.record_start(&stream))
        .await
        .ok_or_else(ApiError::busy)?;
    match started {
        Ok(new) => Ok(Response::ok(
            &json!({"room": id, "recording": true, "started": new}),
        )),
        Err(crate::live::RecordError::NotLive) => Err(not_live()),
        Err(crate::live::RecordError::Unavailable) => Err(ApiError::new(
            error::RECORDER_UNAVAILABLE,
            "the recorder is busy or stopped",
        )),
    }
}

/// `DELETE /api/v1/rooms/{id}/recording`: stops recording the room's stream (its file is
/// closed and listed); `stopped` is false if it was not being recorded (or is not live).
pub async fn stop(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let (id, owner) = authorized(&api, &req).await?;
    let stopped = match owner {
        Some(owner) => {
            let stream = id.clone();
            api.live
                .port()
                .call(owner, move |l: &Rc<Live>| l.record_stop(&stream))
                .await
                .ok_or_else(ApiError::busy)?
        }
        None => false,
    };
    Ok(Response::ok(
        &json!({"room": id, "recording": false, "stopped": stopped}),
    ))
}

/// The room id after the owner check, and the shard its stream is published on (`None`:
/// not live).
async fn authorized(api: &Rc<Api>, req: &Request) -> ApiResult<(String, Option<usize>)> {
    let claims = input::bearer(api, req)?;
    let id = input::room_id(req)?;
    let room = rooms::load(api, &id).await?;
    rooms::check_owner(&claims, &room)?;
    let owner = api.live.owner_of(&id);
    Ok((id, owner))
}

fn not_live() -> ApiError {
    ApiError::new(error::STREAM_NOT_LIVE, "the room's stream is not live")
}

/// `GET /api/v1/recordings[?room=]`: newest first, at most 1000.
pub async fn list(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let room = match req.query("room") {
        Some(r) if crate::ids::valid_room_id(&r) => Some(r),
        Some(_) => return Err(ApiError::field("room", "not a room id")),
        None => None,
    };
    let entries = api.shared.recordings.list(room).await?;
    let bases = urls::bases(&api, &req);
    let items: Vec<Value> = entries.iter().map(|e| item(&bases.http, e)).collect();
    Ok(Response::ok(&json!({ "items": items })))
}

fn item(base: &str, e: &Entry) -> Value {
    json!({
        "id": e.id,
        "room": &*e.stream,
        "stream": &*e.stream,
        "started_ms": e.started_ms,
        "duration_ms": e.duration_ms,
        "bytes": e.bytes,
        "recording": e.open,
        "url": format!("{base}/vod/{}.flv", e.id),
    })
}
