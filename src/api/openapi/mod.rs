//! The OpenAPI 3 document served at `GET /api/v1/openapi.json`.
//!
//! Written by hand, operation by operation, so it says what a client needs (fields,
//! limits, error codes); `tests/api_openapi.rs` keeps it true both ways: every API route
//! the router has is in it, and every operation in it is answered by the server. `OPTIONS`
//! (CORS preflight) is listed for every path, since the router has it for every path.
//! `tests/api_openapi.rs` also runs `openapi-spec-validator` (PyPI) on the served
//! document, so it stays valid OpenAPI, not just true.
//!
//! One file per area of the API lists its paths ([`auth`], [`rooms`], [`media`]); [`op`]
//! holds the operation builder they share; this file puts them together with the schemas.

mod auth;
mod media;
mod op;
mod rooms;

use serde_json::{json, Map, Value};

use super::error::CODES;
use crate::config::Config;
use op::{schema_ref, Op, Paths};

/// The document for a server running with `cfg`.
pub fn document(cfg: &Config) -> Value {
    let mut paths: Paths = Vec::new();
    paths.extend(auth::paths(cfg));
    paths.extend(rooms::paths(cfg));
    paths.extend(media::paths(cfg));
    paths.push((
        "/api/v1/openapi.json",
        vec![(
            "get",
            Op::new("This document").ok_raw(json!({"description": "OpenAPI 3",
                "content": {"application/json": {"schema": {"type": "object"}}}})),
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
                    "hls": {"type": "string", "description": "left out while the room's stream has a codec HLS does not carry (VP9 video, audio other than AAC; HEVC and AV1 play in fMP4 segments); its playlist then answers 415 / 41502"}
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
