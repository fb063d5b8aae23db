//! The table of stable error codes of the REST API and of the HTTP play checks.
//!
//! A code is the HTTP status times 100 plus a number (`40401`: 404, the first reason), the
//! same scheme as the HTTP layer's own codes (`crate::http::code`, which end in `00`), so a
//! client can read the class from the code alone. Codes are never reused or renumbered;
//! [`CODES`] is the table `docs/api.md` shows, and a test keeps the two identical. A leaf:
//! every front (API, danmaku upgrade, media play) names its refusals from here.

/// Every API error code: (code, HTTP status, what it means).
pub const CODES: &[(u32, u16, &str)] = &[
    (
        BAD_JSON,
        400,
        "the body is not a JSON object (or not valid JSON)",
    ),
    (
        HOOK_BODY_INVALID,
        400,
        "a hook call's body is not the caller's contract (nginx-rtmp form, SRS JSON) or lacks a field",
    ),
    (TOKEN_MISSING, 401, "no `Authorization: Bearer` token"),
    (
        TOKEN_INVALID,
        401,
        "the token is malformed, forged, or for another issuer",
    ),
    (TOKEN_EXPIRED, 401, "the token has expired: log in again"),
    (
        WECHAT_CODE_INVALID,
        401,
        "WeChat refused the login code (invalid or already used: errcode 40029 / 40163)",
    ),
    (
        TOKEN_REVOKED,
        401,
        "the token was revoked (logged out, or an admin revoked the user's tokens): log in again",
    ),
    (NOT_OWNER, 403, "only the room owner may do that"),
    (
        NOT_MODERATOR,
        403,
        "only the room owner or a room admin may do that",
    ),
    (
        ORIGIN_NOT_ALLOWED,
        403,
        "CORS preflight from an origin not in `cors.allow_origins`",
    ),
    (
        PLAY_REFERER_REFUSED,
        403,
        "HTTP play (FLV, HLS) from a page whose Referer is not in `media.referer_allow`",
    ),
    (
        PLAY_SIGNATURE_REFUSED,
        403,
        "play signature missing, wrong or expired (`media.play_sign`)",
    ),
    (
        PLAY_HOOK_REFUSED,
        403,
        "the `on_play` hook refused the player",
    ),
    (
        ADMIN_REQUIRED,
        403,
        "only a global admin (role `admin`) may do that",
    ),
    (
        HOOK_KEY_REFUSED,
        403,
        "a hook call without the right `?key=` (`media.hook_receiver_key`)",
    ),
    (
        HOOK_REFUSED,
        403,
        "the publish or play a hook call asked about is refused; the message says why",
    ),
    (ROOM_NOT_FOUND, 404, "no such room"),
    (FILE_NOT_FOUND, 404, "no such uploaded file"),
    (RECORDING_NOT_FOUND, 404, "no such recording"),
    (ROOM_CLOSED, 409, "the room is closed"),
    (
        STREAM_NOT_LIVE,
        409,
        "the room's stream is not live: there is nothing to record",
    ),
    (
        IMAGE_TOO_LARGE,
        413,
        "the image is over `api.cover_max_bytes` (a whole body over the limit is 41300)",
    ),
    (
        IMAGE_DIMENSIONS_TOO_LARGE,
        413,
        "the image's header says more than 8192 pixels a side or 16 Mpx (refused before decoding)",
    ),
    (
        UNSUPPORTED_IMAGE,
        415,
        "not a JPEG, PNG or WebP image (decided from the bytes, not the name)",
    ),
    (
        PLAY_CODEC_UNSUPPORTED,
        415,
        "HLS play of a stream whose codec HLS does not carry here (VP9 or other video; audio other than AAC): play it over HTTP-FLV or RTMP",
    ),
    (
        INVALID_FIELD,
        422,
        "a field is missing, of the wrong type or out of range; `data.field` names it",
    ),
    (
        IMAGE_UNDECODABLE,
        422,
        "the image cannot be decoded (truncated or corrupt past a valid header)",
    ),
    (
        WECHAT_RATE_LIMITED,
        429,
        "WeChat rate limit (errcode 45011): retry later",
    ),
    (
        INTERNAL,
        500,
        "storage failed; the change may not have been made",
    ),
    (
        WECHAT_REFUSED,
        502,
        "WeChat answered with another error; the message carries its errcode",
    ),
    (
        WECHAT_BAD_REPLY,
        502,
        "WeChat could not be reached or sent an answer we cannot read",
    ),
    (STORE_BUSY, 503, "storage is busy: retry"),
    (WECHAT_BUSY, 503, "WeChat is busy (errcode -1): retry"),
    (
        WECHAT_NOT_CONFIGURED,
        503,
        "WeChat login is not configured (`wechat.appid`)",
    ),
    (
        SERVER_BUSY,
        503,
        "the server is busy (internal queues full, or too many event streams): retry",
    ),
    (
        REVOCATIONS_FULL,
        503,
        "too many revoked tokens are kept: the token was not revoked (it still expires on time)",
    ),
    (
        RECORDER_UNAVAILABLE,
        503,
        "the recorder is busy or stopped: the recording did not start; retry",
    ),
    (
        STORE_UNAVAILABLE,
        503,
        "storage (Redis, with `cluster.redis`) cannot be reached: retry once it is back",
    ),
    (WECHAT_TIMEOUT, 504, "WeChat did not answer in time"),
];

pub const BAD_JSON: u32 = 40001;
pub const HOOK_BODY_INVALID: u32 = 40002;
pub const TOKEN_MISSING: u32 = 40101;
pub const TOKEN_INVALID: u32 = 40102;
pub const TOKEN_EXPIRED: u32 = 40103;
pub const WECHAT_CODE_INVALID: u32 = 40104;
pub const TOKEN_REVOKED: u32 = 40105;
pub const NOT_OWNER: u32 = 40301;
pub const NOT_MODERATOR: u32 = 40302;
pub const ORIGIN_NOT_ALLOWED: u32 = 40303;
pub const PLAY_REFERER_REFUSED: u32 = 40304;
pub const PLAY_SIGNATURE_REFUSED: u32 = 40305;
pub const PLAY_HOOK_REFUSED: u32 = 40306;
pub const ADMIN_REQUIRED: u32 = 40307;
pub const HOOK_KEY_REFUSED: u32 = 40308;
pub const HOOK_REFUSED: u32 = 40309;
pub const ROOM_NOT_FOUND: u32 = 40401;
pub const FILE_NOT_FOUND: u32 = 40402;
pub const RECORDING_NOT_FOUND: u32 = 40403;
pub const ROOM_CLOSED: u32 = 40901;
pub const STREAM_NOT_LIVE: u32 = 40902;
pub const IMAGE_TOO_LARGE: u32 = 41301;
pub const IMAGE_DIMENSIONS_TOO_LARGE: u32 = 41302;
pub const UNSUPPORTED_IMAGE: u32 = 41501;
pub const PLAY_CODEC_UNSUPPORTED: u32 = 41502;
pub const INVALID_FIELD: u32 = 42201;
pub const IMAGE_UNDECODABLE: u32 = 42202;
pub const WECHAT_RATE_LIMITED: u32 = 42901;
pub const INTERNAL: u32 = 50001;
pub const WECHAT_REFUSED: u32 = 50201;
pub const WECHAT_BAD_REPLY: u32 = 50202;
pub const STORE_BUSY: u32 = 50301;
pub const WECHAT_BUSY: u32 = 50302;
pub const WECHAT_NOT_CONFIGURED: u32 = 50303;
pub const SERVER_BUSY: u32 = 50304;
pub const REVOCATIONS_FULL: u32 = 50305;
pub const RECORDER_UNAVAILABLE: u32 = 50306;
pub const STORE_UNAVAILABLE: u32 = 50307;
pub const WECHAT_TIMEOUT: u32 = 50401;
