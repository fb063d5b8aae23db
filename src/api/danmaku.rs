//! `POST /api/v1/rooms/{id}/danmaku`: send a danmaku, gift or like without a WebSocket.
//!
//! The body is the WebSocket message itself (`{"type":"danmaku","text":…}`, see
//! `docs/protocol.md`); it goes through the danmaku engine exactly as one sent on a
//! WebSocket (`danmaku::plain`): the same checks, the same room id sequence, and the same
//! ack, which the answer waits for. Refusals by the danmaku rules carry the WebSocket
//! protocol's 4-digit error code, whose first three digits are the HTTP status
//! (4290 → 429); token errors are the API's own (401xx).

use std::rc::Rc;

use super::error::{ApiError, ApiResult};
use super::input;
use super::Api;
use crate::danmaku::plain::Answer;
use crate::danmaku::protocol::code;
use crate::http::{Request, Response};

pub async fn post(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let room = input::room_id(&req)?;
    if req.header("authorization").is_none() {
        return Ok(refused(
            code::LOGIN_REQUIRED,
            "log in to send (anonymous viewers may only read): Authorization: Bearer <token>",
        ));
    }
    let claims = input::bearer(&api, &req)?;
    if api.shutdown.is_raised() {
        return Err(ApiError::busy());
    }
    Ok(
        match api
            .danmaku
            .post_over_http(room.into(), claims, &req.body)
            .await
        {
            Answer::Ack(id) => Response::ok(&serde_json::json!({ "id": id })),
            Answer::Refused(c, message) => refused(c, &message),
        },
    )
}

/// A refusal with a danmaku error code (4-digit: the status is its first three digits).
fn refused(code: u32, message: &str) -> Response {
    Response::error((code / 10) as u16, code, message)
}
