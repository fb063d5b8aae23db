//! Logging in and out, and revoking tokens.

use serde_json::json;

use super::op::*;
use crate::config::Config;

/// `/api/v1/auth/*` and the admin revocation.
pub(super) fn paths(cfg: &Config) -> Paths {
    let mut paths: Paths = Vec::new();
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
    paths
}
