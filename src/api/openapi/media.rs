//! Media beside the room records: the hook receiver for other media servers, recordings
//! and their playback.

use serde_json::json;

use super::op::*;
use crate::config::Config;

/// `/api/v1/hooks/*` (with `media.hook_receiver_key`), recordings and `/vod/`.
pub(super) fn paths(cfg: &Config) -> Paths {
    let mut paths: Paths = Vec::new();
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
    paths
}
