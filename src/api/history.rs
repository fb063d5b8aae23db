//! `GET /api/v1/rooms/{id}/danmaku?before=ID&limit=N`: a room's stored history, newest
//! first, paged by item id.
//!
//! Items are the JSON objects the store keeps exactly as WebSocket clients saw them; they
//! are copied into the answer as they are, never decoded and encoded again.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ApiResult;
use super::input;
use super::rooms;
use super::Api;
use crate::http::{Request, Response};
use crate::store::Request as StoreRequest;

/// Most items per page.
pub const MAX_LIMIT: u64 = 100;

pub async fn page(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let id = input::room_id(&req)?;
    let limit = input::query_number(&req, "limit", 20, 1, MAX_LIMIT)? as usize;
    let before = match req.query("before") {
        None => None,
        Some(_) => Some(input::query_number(&req, "before", 0, 1, u64::MAX)?),
    };
    rooms::load(&api, &id).await?;
    let room = id.clone();
    let items = api
        .store
        .call(|reply| StoreRequest::DanmakuPage {
            room,
            before,
            limit,
            reply,
        })
        .await?;
    // The next page starts below the oldest item here, if this page was full.
    let next_before = if items.len() == limit {
        items.last().and_then(|i| item_id(i))
    } else {
        None
    };
    Ok(Response::with_body(
        200,
        "application/json",
        envelope(&items, next_before),
    ))
}

/// The `id` of a stored item.
fn item_id(item: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    serde_json::from_slice::<Id>(item).ok().map(|i| i.id)
}

/// `{"code":0,"message":"ok","data":{"items":[…],"next_before":…}}` around raw items.
fn envelope(items: &[Bytes], next_before: Option<u64>) -> Bytes {
    let len: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut out = BytesMut::with_capacity(len + 96);
    out.put_slice(br#"{"code":0,"message":"ok","data":{"items":["#);
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_slice(br#"],"next_before":"#);
    match next_before {
        Some(id) => out.put_slice(id.to_string().as_bytes()),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b"}}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_json() {
        let items = vec![
            Bytes::from_static(br#"{"type":"danmaku","id":9,"text":"a"}"#),
            Bytes::from_static(br#"{"type":"gift","id":8}"#),
        ];
        let body = envelope(&items, item_id(&items[1]));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"]["items"][0]["id"], 9);
        assert_eq!(v["data"]["next_before"], 8);
        let v: serde_json::Value = serde_json::from_slice(&envelope(&[], None)).unwrap();
        assert_eq!(v["data"]["items"], serde_json::json!([]));
        assert!(v["data"]["next_before"].is_null());
    }
}
