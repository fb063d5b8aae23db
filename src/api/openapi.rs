//! The OpenAPI 3 document served at `GET /api/v1/openapi.json`.
//!
//! Written by hand, operation by operation, so it says what a client needs (fields,
//! limits, error codes); `tests/api_openapi.rs` keeps it true both ways: every API route
//! the router has is in it, and every operation in it is answered by the server. `OPTIONS`
//! (CORS preflight) is listed for every path, since the router has it for every path.
//! `tests/api_openapi.rs` also runs `openapi-spec-validator` (PyPI) on the served
//! document, so it stays valid OpenAPI, not just true.

use serde_json::{json, Map, Value};

use super::error::CODES;
use crate::config::Config;

fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"type": "integer", "enum": [0]},
            "message": {"type": "string"},
            "data": data,
        }
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
           "description": description})
}

fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema,
           "description": description})
}

/// One operation. `errors` are the API codes it may answer (statuses are derived).
struct Op {
    summary: &'static str,
    auth: bool,
    params: Vec<Value>,
    body: Option<Value>,
    ok: Value,
    errors: &'static [u32],
}

impl Op {
    fn new(summary: &'static str) -> Self {
        Op {
            summary,
            auth: false,
            params: Vec::new(),
            body: None,
            ok: envelope(json!({"type": "object"})),
            errors: &[],
        }
    }

    fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    fn params(mut self, p: Vec<Value>) -> Self {
        self.params = p;
        self
    }

    fn body(mut self, schema: Value) -> Self {
        self.body = Some(json!({
            "required": true,
            "content": {"application/json": {"schema": schema}}
        }));
        self
    }

    fn raw_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn ok(mut self, data: Value) -> Self {
        self.ok = envelope(data);
        self
    }

    fn ok_raw(mut self, response: Value) -> Self {
        self.ok = response;
        self
    }

    fn errors(mut self, codes: &'static [u32]) -> Self {
        self.errors = codes;
        self
    }

    fn build(self) -> Value {
        let mut responses = Map::new();
        if self.ok.get("content").is_some() {
            responses.insert("200".into(), self.ok);
        } else {
            responses.insert(
                "200".into(),
                json!({"description": "ok",
                       "content": {"application/json": {"schema": self.ok}}}),
            );
        }
        let mut codes: Vec<u32> = self.errors.to_vec();
        if self.auth {
            codes.extend([40101, 40102, 40103, 40105]);
        }
        let mut by_status: std::collections::BTreeMap<u16, Vec<u32>> = Default::default();
        for c in codes {
            // API codes are 5 digits (status × 100 + n); the danmaku protocol's, which
            // `POST /rooms/{id}/danmaku` answers with, are 4 (status × 10 + n).
            let status = if c >= 10_000 { c / 100 } else { c / 10 };
            by_status.entry(status as u16).or_default().push(c);
        }
        for (status, codes) in by_status {
            let list: Vec<String> = codes.iter().map(u32::to_string).collect();
            responses.insert(
                status.to_string(),
                json!({"description": format!("error codes {}", list.join(", ")),
                       "content": {"application/json": {"schema": schema_ref("Error")}}}),
            );
        }
        let mut op = json!({"summary": self.summary, "responses": responses});
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some(b) = self.body {
            op["requestBody"] = b;
        }
        if self.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        op
    }
}

fn room_id() -> Value {
    path_param("id", "room id (also the stream name and the danmaku room)")
}

fn uid() -> Value {
    path_param("uid", "the user acted on")
}

fn seconds_body(description: &str, max: u64) -> Value {
    json!({"type": "object", "required": ["seconds"], "properties": {
        "seconds": {"type": "integer", "minimum": 0, "maximum": max, "description": description}
    }})
}

fn moderation_ok() -> Value {
    json!({"type": "object", "properties": {
        "room": {"type": "string"}, "uid": {"type": "string"},
        "action": {"type": "string"}, "seconds": {"type": "integer"}
    }})
}

const MOD_ERRORS: &[u32] = &[40001, 40302, 40401, 40901, 42201, 50301, 50304];
const OWNER_ERRORS: &[u32] = &[40001, 40301, 40401, 40901, 42201, 50301, 50304];

/// The document for a server running with `cfg`.
pub fn document(cfg: &Config) -> Value {
    let mut paths: Vec<(&str, Vec<(&str, Op)>)> = Vec::new();
    paths.push((
        "/api/v1/auth/wechat",
        vec![(
            "post",
            Op::new("Log in with a wx.login() code (WeChat jscode2session)")
                .body(
                    json!({"type": "object", "required": ["code"], "properties": {
                        "code": {"type": "string", "maxLength": 128},
                        "nick": {"type": "string", "maxLength": 32,
                                 "description": "used when the user is created"},
                        "avatar_url": {"type": "string", "maxLength": 512}
                    }}),
                )
                .ok(schema_ref("Login"))
                .errors(&[
                    40001, 40104, 42201, 42901, 50001, 50201, 50202, 50301, 50302, 50303, 50304,
                    50401,
                ]),
        )],
    ));
    if cfg.auth.dev_login {
        paths.push((
            "/api/v1/auth/dev",
            vec![(
                "post",
                Op::new("Log in as any uid (only with auth.dev_login = true)")
                    .body(
                        json!({"type": "object", "required": ["uid"], "properties": {
                            "uid": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                            "nick": {"type": "string", "maxLength": 32}
                        }}),
                    )
                    .ok(schema_ref("Login"))
                    .errors(&[40001, 42201, 50001, 50301]),
            )],
        ));
    }
    if !cfg.media.hook_receiver_key.is_empty() {
        let key = query_param(
            "key",
            json!({"type": "string"}),
            "media.hook_receiver_key (required; checked before the body is read)",
        );
        let allowed = json!({"type": "object", "properties": {
            "allowed": {"type": "boolean"},
            "call": {"type": "string", "description": "a call answered without a decision"}
        }});
        paths.push((
            "/api/v1/hooks/nginx-rtmp",
            vec![(
                "post",
                Op::new(
                    "nginx-rtmp on_publish / on_play target (only with                      media.hook_receiver_key): decides with liveshard's own publish and                      play checks; 2xx allows, 403 refuses",
                )
                .params(vec![key.clone()])
                .raw_body(json!({"required": true, "content": {
                    "application/x-www-form-urlencoded": {"schema": {
                        "type": "object", "required": ["call"],
                        "properties": {
                            "call": {"type": "string", "description": "publish, play, or a notification"},
                            "app": {"type": "string"},
                            "name": {"type": "string"},
                            "addr": {"type": "string"},
                            "tcurl": {"type": "string"}
                        },
                        "additionalProperties": {"type": "string",
                            "description": "the client's query (txSecret, txTime, relay_key)"}
                    }}
                }}))
                .ok(allowed.clone())
                .errors(&[40002, 40308, 40309, 41300]),
            )],
        ));
        paths.push((
            "/api/v1/hooks/srs",
            vec![(
                "post",
                Op::new(
                    "SRS http_hooks target (only with media.hook_receiver_key): decides                      on_publish / on_play with liveshard's own checks; 200 with code 0                      allows, 403 refuses",
                )
                .params(vec![key])
                .body(json!({"type": "object", "required": ["action"], "properties": {
                    "action": {"type": "string", "description": "on_publish, on_play, or a notification"},
                    "app": {"type": "string"},
                    "stream": {"type": "string"},
                    "param": {"type": "string", "description": "the client's query, with its leading ?"},
                    "ip": {"type": "string"},
                    "tcUrl": {"type": "string"}
                }}))
                .ok(allowed)
                .errors(&[40002, 40308, 40309, 41300]),
            )],
        ));
    }
    paths.push((
        "/api/v1/auth/logout",
        vec![(
            "post",
            Op::new(
                "Log out: revoke the bearer token (REST and WebSocket refuse it; \
                 connections that used it are closed with 4011)",
            )
            .auth()
            .ok(schema_ref("Revocation"))
            .errors(&[50001, 50301, 50305]),
        )],
    ));
    paths.push((
        "/api/v1/admin/users/{uid}/revoke",
        vec![(
            "post",
            Op::new(
                "Revoke every token of a user issued until now (global admins; \
                 tokens issued later work)",
            )
            .auth()
            .params(vec![uid()])
            .ok(schema_ref("Revocation"))
            .errors(&[40307, 42201, 50001, 50301]),
        )],
    ));
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
        "/api/v1/rooms/{id}/recording",
        vec![
            (
                "post",
                Op::new("Record the room's live stream until its publisher leaves (owner or admin)")
                    .auth()
                    .params(vec![room_id()])
                    .ok(json!({"type": "object", "properties": {
                        "room": {"type": "string"}, "recording": {"type": "boolean"},
                        "started": {"type": "boolean", "description": "false: it already was"}
                    }}))
                    .errors(&[40301, 40401, 40902, 50001, 50301, 50304, 50306]),
            ),
            (
                "delete",
                Op::new("Stop recording the room's stream (owner or admin)")
                    .auth()
                    .params(vec![room_id()])
                    .ok(json!({"type": "object", "properties": {
                        "room": {"type": "string"}, "recording": {"type": "boolean"},
                        "stopped": {"type": "boolean", "description": "false: it was not recorded (or is not live)"}
                    }}))
                    .errors(&[40301, 40401, 50001, 50301, 50304]),
            ),
        ],
    ));
    paths.push((
        "/api/v1/recordings",
        vec![(
            "get",
            Op::new("Recordings, newest first (at most 1000), each with its VOD URL")
                .params(vec![query_param(
                    "room",
                    json!({"type": "string"}),
                    "only this room's recordings",
                )])
                .ok(
                    json!({"type": "object", "properties": {"items": {"type": "array", "items": {
                    "type": "object", "properties": {
                        "id": {"type": "string"}, "room": {"type": "string"},
                        "stream": {"type": "string"}, "started_ms": {"type": "integer"},
                        "duration_ms": {"type": "integer"}, "bytes": {"type": "integer"},
                        "recording": {"type": "boolean", "description": "still being written"},
                        "url": {"type": "string"}
                    }}}}}),
                )
                .errors(&[42201, 50001, 50301]),
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
        "/api/v1/openapi.json",
        vec![(
            "get",
            Op::new("This document").ok_raw(json!({"description": "OpenAPI 3",
                "content": {"application/json": {"schema": {"type": "object"}}}})),
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

    paths.push((
        "/vod/{id}.flv",
        vec![(
            "get",
            Op::new("A recording played back (FLV), with `Range`: one range gets 206, several the whole file, past the end 416; `If-Range` against the `ETag`")
                .params(vec![path_param("id", "a recording's id (from the list)")])
                .ok_raw(json!({"description": "the recording, or the part asked for (206)",
                    "content": {"video/x-flv": {"schema": {"type": "string", "format": "binary"}}}}))
                .errors(&[40305, 40403, 41600, 50001, 50301]),
        )],
    ));
    let mut out = Map::new();
    for (path, ops) in paths {
        let mut item = Map::new();
        // Path parameters are declared once, on the path item, so every operation of the
        // path (the CORS preflight included) has them, as OpenAPI requires.
        let mut path_params: Vec<Value> = Vec::new();
        for (method, op) in ops {
            let mut op = op.build();
            if let Some(Value::Array(params)) = op.get_mut("parameters") {
                params.retain(|p| {
                    if p["in"] != "path" {
                        return true;
                    }
                    if !path_params.iter().any(|q| q["name"] == p["name"]) {
                        path_params.push(p.clone());
                    }
                    false
                });
                if params.is_empty() {
                    op.as_object_mut().map(|o| o.remove("parameters"));
                }
            }
            item.insert(method.into(), op);
        }
        if !path_params.is_empty() {
            item.insert("parameters".into(), Value::Array(path_params));
        }
        item.insert(
            "options".into(),
            json!({"summary": "CORS preflight", "responses": {
                "204": {"description": "allowed (headers say what)"},
                "403": {"description": "error code 40303: origin not allowed",
                        "content": {"application/json": {"schema": schema_ref("Error")}}}
            }}),
        );
        out.insert(path.into(), Value::Object(item));
    }

    let codes: Vec<Value> = CODES
        .iter()
        .map(|(c, s, m)| json!({"code": c, "status": s, "meaning": m}))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "liveshard API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every answer is {code, message, data}; code 0 is success. \
                Error codes are status×100+n and listed in x-error-codes (and docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "paths": out,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message", "data"], "properties": {
                    "code": {"type": "integer"}, "message": {"type": "string"},
                    "data": {"nullable": true, "type": "object", "properties": {
                        "field": {"type": "string"}}}
                }},
                "User": {"type": "object", "properties": {
                    "uid": {"type": "string"}, "nick": {"type": "string"},
                    "avatar_url": {"type": "string"}, "created_at": {"type": "integer"}
                }},
                "Login": {"type": "object", "properties": {
                    "token": {"type": "string"}, "expires_at": {"type": "integer"},
                    "user": schema_ref("User")
                }},
                "Revocation": {"type": "object", "required": ["revoked", "until"], "properties": {
                    "revoked": {"type": "string", "enum": ["token", "user"],
                                "description": "token: this token alone; user: every token of `uid` issued before `not_before` (a logout past the per-user bound becomes this)"},
                    "uid": {"type": "string"},
                    "not_before": {"type": "integer", "description": "Unix seconds: tokens with an earlier iat are refused"},
                    "until": {"type": "integer", "description": "Unix seconds: when the revocation is forgotten (every token it refuses has expired)"}
                }},
                "Push": {"type": "object", "properties": {
                    "url": {"type": "string"}, "server_url": {"type": "string"},
                    "stream_key": {"type": "string"}, "expires_at": {"type": "integer"}
                }},
                "Play": {"type": "object", "properties": {
                    "rtmp": {"type": "string"}, "flv": {"type": "string"},
                    "hls": {"type": "string", "description": "left out while the room's stream has a codec HLS does not carry (HEVC, AV1 or VP9 video, audio other than AAC); its playlist then answers 415 / 41502"}
                }},
                "CoverThumbs": {"type": "object",
                    "description": "thumbnail URLs by width in pixels (an image narrower than a width is not enlarged)",
                    "properties": {"320": {"type": "string"}, "640": {"type": "string"}}},
                "Room": {"type": "object", "properties": {
                    "id": {"type": "string"}, "owner": {"type": "string"},
                    "title": {"type": "string"}, "category": {"type": "string"},
                    "cover_url": {"type": "string"},
                    "cover_thumbs": {"allOf": [schema_ref("CoverThumbs")], "nullable": true,
                        "description": "JPEG thumbnails of a cover uploaded here, by width; null for other cover URLs"},
                    "created_at": {"type": "integer"}, "updated_at": {"type": "integer"},
                    "status": {"type": "string", "enum": ["live", "offline", "closed"]},
                    "live": {"type": "boolean"}, "online": {"type": "integer"},
                    "admins": {"type": "array", "items": {"type": "string"}},
                    "play": schema_ref("Play"), "ws_url": {"type": "string"}
                }}
            }
        },
        "x-error-codes": codes,
    })
}
