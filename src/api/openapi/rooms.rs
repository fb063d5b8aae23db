//! Rooms: their records, stream URLs, danmaku over HTTP and SSE, moderation, events, and
//! cover images.

use serde_json::json;

use super::op::*;
use crate::config::Config;

/// `/api/v1/rooms*`, cover uploads and `/covers/`.
pub(super) fn paths(cfg: &Config) -> Paths {
    let mut paths: Paths = Vec::new();
    paths.push((
        "/api/v1/rooms",
        vec![
            (
                "get",
                Op::new("List open rooms: live first (most viewers first), then newest")
                    .params(vec![
                        query_param(
                            "status",
                            json!({"type": "string", "enum": ["live", "all"], "default": "all"}),
                            "live: only live rooms",
                        ),
                        query_param(
                            "page",
                            json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 1}),
                            "1-based page",
                        ),
                        query_param(
                            "size",
                            json!({"type": "integer", "minimum": 1,
                                   "maximum": cfg.api.page_size_max, "default": 20}),
                            "rooms per page",
                        ),
                    ])
                    .ok(json!({"type": "object", "properties": {
                        "items": {"type": "array", "items": schema_ref("Room")},
                        "page": {"type": "integer"}, "size": {"type": "integer"},
                        "total": {"type": "integer"}
                    }}))
                    .errors(&[42201, 50001, 50301]),
            ),
            (
                "post",
                Op::new("Create a room; answers its signed push URL")
                    .auth()
                    .body(json!({"type": "object", "required": ["title"], "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": 64},
                        "category": {"type": "string", "maxLength": 32},
                        "cover_url": {"type": "string", "maxLength": 512}
                    }}))
                    .ok(json!({"allOf": [schema_ref("Room"), {"type": "object", "properties": {
                        "push": schema_ref("Push")}}]}))
                    .errors(&[40001, 42201, 50001, 50301]),
            ),
        ],
    ));
    paths.push((
        "/api/v1/rooms/{id}",
        vec![
            (
                "get",
                Op::new("A room, with its live status and online count")
                    .params(vec![room_id()])
                    .ok(schema_ref("Room"))
                    .errors(&[40401, 50001, 50301]),
            ),
            (
                "patch",
                Op::new("Change a room's title, category or cover (owner)")
                    .auth()
                    .params(vec![room_id()])
                    .body(json!({"type": "object", "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": 64},
                        "category": {"type": "string", "maxLength": 32},
                        "cover_url": {"type": "string", "maxLength": 512}
                    }}))
                    .ok(schema_ref("Room"))
                    .errors(OWNER_ERRORS),
            ),
            (
                "delete",
                Op::new("Close a room (owner): viewers are told, the stream ends")
                    .auth()
                    .params(vec![room_id()])
                    .ok(schema_ref("Room"))
                    .errors(&[40301, 40401, 50001, 50301]),
            ),
        ],
    ));
    paths.push((
        "/api/v1/rooms/{id}/push-url",
        vec![(
            "post",
            Op::new("Sign a fresh push URL (owner)")
                .auth()
                .params(vec![room_id()])
                .ok(json!({"type": "object", "properties": {"push": schema_ref("Push")}}))
                .errors(&[40301, 40401, 40901, 50001, 50301]),
        )],
    ));
    paths.push((
        "/api/v1/rooms/{id}/danmaku",
        vec![
            (
            "get",
            Op::new("A room's stored history, newest first")
                .params(vec![
                    room_id(),
                    query_param(
                        "before",
                        json!({"type": "integer", "minimum": 1}),
                        "only items with a smaller id (the previous page's next_before)",
                    ),
                    query_param(
                        "limit",
                        json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
                        "items per page",
                    ),
                ])
                .ok(json!({"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object",
                        "description": "room items exactly as WebSocket clients see them"}},
                    "next_before": {"type": "integer", "nullable": true}
                }}))
                .errors(&[40401, 42201, 50001, 50301]),
            ),
            (
                "post",
                Op::new(
                    "Send a danmaku, gift or like without a WebSocket: the WebSocket message as \
                     the body, the same checks, ids and ack (refusals carry the danmaku \
                     protocol's 4-digit codes, docs/protocol.md)",
                )
                .auth()
                .params(vec![room_id()])
                .body(json!({"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["danmaku", "gift", "like"]},
                    "cid": {"type": "string", "maxLength": 64},
                    "text": {"type": "string", "description": "danmaku: 1 to danmaku.max_text_chars characters"},
                    "color": {"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$"},
                    "mode": {"type": "string", "enum": ["scroll", "top", "bottom"]},
                    "gift_id": {"type": "string", "maxLength": 64},
                    "count": {"type": "integer", "minimum": 1}
                }}))
                .ok(json!({"type": "object", "required": ["id"], "properties": {
                    "id": {"type": "integer", "description": "the room item id (as in the ack)"}
                }}))
                .errors(&[
                    4001, 4010, 4031, 4032, 4033, 4130, 4220, 4290, 5030, 40401, 50301,
                ]),
            ),
        ],
    ));
    paths.push((
        "/api/v1/rooms/{id}/danmaku/stream",
        vec![(
            "get",
            Op::new(
                "The room's danmaku as Server-Sent Events (gap, history, batch, online, pm, \
                 close); id = the last item id, so Last-Event-ID resumes",
            )
            .params(vec![
                room_id(),
                query_param(
                    "since",
                    json!({"type": "integer", "minimum": 0}),
                    "resume after this item id (Last-Event-ID wins)",
                ),
                query_param(
                    "token",
                    json!({"type": "string"}),
                    "a login token, for clients that cannot send Authorization",
                ),
                json!({"name": "Last-Event-ID", "in": "header", "required": false,
                       "schema": {"type": "string"},
                       "description": "resume after this item id (EventSource sends it)"}),
            ])
            .ok_raw(json!({"description": "an event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}))
            .errors(&[40102, 40103, 40105, 40401, 42201, 50301, 50304]),
        )],
    ));
    for (path, what) in [
        ("/api/v1/rooms/{id}/mutes/{uid}", "Mute"),
        ("/api/v1/rooms/{id}/bans/{uid}", "Ban"),
    ] {
        let (post, delete) = if what == "Mute" {
            (
                Op::new("Mute a user in the room (owner or room admin)")
                    .body(seconds_body("0 = until unmuted", 30 * 24 * 3600)),
                Op::new("Unmute a user (owner or room admin)"),
            )
        } else {
            (
                Op::new(
                    "Ban a user from the room; their connections are closed (owner or room admin)",
                ),
                Op::new("Lift a ban (owner or room admin)"),
            )
        };
        paths.push((
            path,
            vec![
                (
                    "post",
                    post.auth()
                        .params(vec![room_id(), uid()])
                        .ok(moderation_ok())
                        .errors(MOD_ERRORS),
                ),
                (
                    "delete",
                    delete
                        .auth()
                        .params(vec![room_id(), uid()])
                        .ok(moderation_ok())
                        .errors(MOD_ERRORS),
                ),
            ],
        ));
    }
    paths.push((
        "/api/v1/rooms/{id}/kick/{uid}",
        vec![(
            "post",
            Op::new("Close a user's connections to the room (owner or room admin)")
                .auth()
                .params(vec![room_id(), uid()])
                .ok(moderation_ok())
                .errors(MOD_ERRORS),
        )],
    ));
    paths.push((
        "/api/v1/rooms/{id}/admins/{uid}",
        vec![
            (
                "post",
                Op::new("Make a user a room admin (owner)")
                    .auth()
                    .params(vec![room_id(), uid()])
                    .ok(moderation_ok())
                    .errors(OWNER_ERRORS),
            ),
            (
                "delete",
                Op::new("Remove a room admin (owner)")
                    .auth()
                    .params(vec![room_id(), uid()])
                    .ok(moderation_ok())
                    .errors(OWNER_ERRORS),
            ),
        ],
    ));
    paths.push((
        "/api/v1/rooms/{id}/slow-mode",
        vec![(
            "put",
            Op::new("Set slow mode: one message per N seconds per user (owner or room admin)")
                .auth()
                .params(vec![room_id()])
                .body(seconds_body("0 = off", 3600))
                .ok(moderation_ok())
                .errors(MOD_ERRORS),
        )],
    ));
    paths.push((
        "/api/v1/rooms/{id}/events",
        vec![(
            "get",
            Op::new(
                "Server-Sent Events: `live` and `online` when they change (polled each second)",
            )
            .params(vec![room_id()])
            .ok_raw(json!({"description": "an event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}))
            .errors(&[40401, 50001, 50301, 50304]),
        )],
    ));
    paths.push((
        "/api/v1/uploads/cover",
        vec![(
            "post",
            Op::new("Upload a cover image (JPEG, PNG or WebP, decided from the bytes)")
                .auth()
                .raw_body(json!({"required": true, "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "file": {"type": "string", "format": "binary"}}}}
                }}))
                .ok(json!({"type": "object", "properties": {
                    "url": {"type": "string"}, "name": {"type": "string"},
                    "content_type": {"type": "string"}, "size": {"type": "integer"},
                    "width": {"type": "integer"}, "height": {"type": "integer"},
                    "thumbs": schema_ref("CoverThumbs")
                }}))
                .errors(&[41301, 41302, 41501, 42201, 42202, 50001, 50301]),
        )],
    ));
    paths.push((
        "/covers/{name}",
        vec![(
            "get",
            Op::new("An uploaded cover image, or one of its JPEG thumbnails (`<stem>-320.jpg`, `<stem>-640.jpg`)")
                .params(vec![path_param("name", "the name an upload answered")])
                .ok_raw(json!({"description": "the image", "content": {
                    "image/jpeg": {}, "image/png": {}, "image/webp": {}}}))
                .errors(&[40402, 50001, 50301]),
        )],
    ));

    paths
}
