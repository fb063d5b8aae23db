//! Logins: `POST /auth/wechat` (a `wx.login()` code → WeChat `jscode2session` → a user
//! found or created by openid → a token) and `POST /auth/dev` (any uid, for local use;
//! only with `auth.dev_login = true`).

use std::rc::Rc;

use serde_json::json;

use super::error::{self, ApiError, ApiResult};
use super::input;
use super::wechat::WxError;
use super::Api;
use crate::http::{Request, Response};
use crate::store::model::User;
use crate::store::Request as StoreRequest;

/// What a login answers: the token and who it is for.
fn logged_in(api: &Api, user: &User) -> Response {
    let now = crate::auth::now_unix();
    let ttl = api.config().auth.token_ttl_secs;
    let token = api.tokens.jwt().issue(&user.uid, &user.nick, &[], ttl, now);
    Response::ok(&json!({
        "token": token,
        "expires_at": now.saturating_add(ttl),
        "user": user_view(user),
    }))
}

pub fn user_view(user: &User) -> serde_json::Value {
    json!({
        "uid": user.uid,
        "nick": user.nick,
        "avatar_url": user.avatar_url,
        "created_at": user.created_at,
    })
}

/// WeChat's errors as API errors (see the table in `docs/api.md`).
fn wechat_error(e: WxError) -> ApiError {
    match e {
        WxError::Code { errcode, .. } if errcode == 40029 || errcode == 40163 => ApiError::new(
            error::WECHAT_CODE_INVALID,
            "the WeChat login code is invalid or was already used; call wx.login() again",
        ),
        WxError::Code { errcode: 45011, .. } => ApiError::new(
            error::WECHAT_RATE_LIMITED,
            "WeChat rate limit reached; retry in a minute",
        ),
        WxError::Code { errcode: -1, .. } => {
            ApiError::new(error::WECHAT_BUSY, "WeChat is busy; retry")
        }
        WxError::Code { errcode, errmsg } => ApiError::new(
            error::WECHAT_REFUSED,
            format!("WeChat refused the login (errcode {errcode}: {errmsg})"),
        ),
        WxError::Timeout => ApiError::new(error::WECHAT_TIMEOUT, "WeChat did not answer in time"),
        WxError::BadReply(e) => {
            tracing::warn!(error = %e, "WeChat login failed");
            ApiError::new(error::WECHAT_BAD_REPLY, "WeChat could not be reached")
        }
        WxError::Busy => ApiError::busy(),
    }
}

/// `POST /api/v1/auth/wechat {"code", "nick"?, "avatar_url"?}`.
pub async fn wechat(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let body = input::json_object(&req)?;
    let code = input::required_text(&body, "code", 1, 128)?;
    let nick = input::text(&body, "nick", 0, 32)?.unwrap_or_default();
    let avatar_url = input::image_url(&body, "avatar_url")?.unwrap_or_default();
    let Some(wx) = api.shared.wechat.as_ref() else {
        return Err(ApiError::new(
            error::WECHAT_NOT_CONFIGURED,
            "WeChat login is not configured on this server",
        ));
    };
    let session = wx
        .code2session(&api.outbound, &code)
        .await
        .map_err(wechat_error)?;
    let new = User {
        uid: format!("u{}", input::random_id(15)?),
        openid: session.openid,
        nick,
        avatar_url,
        created_at: crate::auth::now_unix(),
    };
    let user = api
        .store
        .call(|reply| StoreRequest::UserByOpenidOrCreate { user: new, reply })
        .await?;
    Ok(logged_in(&api, &user))
}

/// `POST /api/v1/auth/dev {"uid", "nick"?}` — registered only with `auth.dev_login`.
pub async fn dev(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let body = input::json_object(&req)?;
    let uid = input::required_text(&body, "uid", 1, 64)?;
    if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ApiError::field(
            "uid",
            "uid must be 1-64 of A-Z a-z 0-9 _ - .",
        ));
    }
    let nick = input::text(&body, "nick", 0, 32)?.unwrap_or_default();
    let new = User {
        uid,
        openid: String::new(),
        nick,
        avatar_url: String::new(),
        created_at: crate::auth::now_unix(),
    };
    let user = api
        .store
        .call(|reply| StoreRequest::UserOrCreate { user: new, reply })
        .await?;
    Ok(logged_in(&api, &user))
}
