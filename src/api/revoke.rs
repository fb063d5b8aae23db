//! Logout and token revocation: `POST /auth/logout` revokes the presented token, `POST
//! /admin/users/{uid}/revoke` (global admins) every token of a user issued until now.
//!
//! A revocation is committed by the store thread first (fsynced: it survives `kill -9`,
//! and it is what a node sharing the store reads at start), then applied on every shard of
//! this node through the danmaku engine's port (`port().call`), and only then answered: once the answer is out, every
//! shard refuses the token and has closed the WebSocket connections that used it (4011).
//! Token checks read each shard's own copy ([`crate::auth::Revoked`]), never the store.
//! In a cluster, the revocation then goes to every other node over Redis
//! ([`crate::cluster`]), which applies it on its shards the same way.
//!
//! An admin's mark, and the mark a logout becomes past the bounds (see
//! `store::decide`), refuse the user's tokens issued before the next second: a token
//! issued in the same second as the revocation cannot be told apart from one issued just
//! before it (`iat` is in seconds), so it is refused too.

use std::rc::Rc;
use std::time::Duration;

use serde_json::json;

use super::error::{self, ApiError, ApiResult};
use super::input;
use super::Api;
use crate::auth::{now_unix, Revocation};
use crate::danmaku::Danmaku;
use crate::http::{Request, Response};
use crate::store::{Request as StoreRequest, RevokeOutcome};

/// `POST /api/v1/auth/logout`: revokes the bearer token.
pub async fn logout(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    let now = now_unix();
    let mark = Revocation::User {
        uid: claims.sub.clone(),
        not_before: now + 1,
        until: mark_until(&api, now).max(claims.exp),
    };
    let rev = match &claims.jti {
        Some(jti) => Revocation::Token {
            jti: jti.clone(),
            exp: claims.exp,
        },
        // A token from before tokens had ids: only its user's mark can stop it.
        None => mark.clone(),
    };
    let stored = commit(&api, claims.sub, rev, mark).await?;
    Ok(Response::ok(&view(&stored)))
}

/// `POST /api/v1/admin/users/{uid}/revoke`: every token of `uid` issued until now stops
/// working (a global admin only).
pub async fn revoke_user(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let claims = input::bearer(&api, &req)?;
    if !claims.has_role("admin") {
        return Err(ApiError::new(
            error::ADMIN_REQUIRED,
            "only a global admin may revoke a user's tokens",
        ));
    }
    let uid = input::uid_param(&req)?;
    let now = now_unix();
    let mark = Revocation::User {
        uid: uid.clone(),
        not_before: now + 1,
        until: mark_until(&api, now),
    };
    let stored = commit(&api, uid.clone(), mark.clone(), mark).await?;
    tracing::info!(%uid, by = %claims.sub, "every token of the user revoked");
    Ok(Response::ok(&view(&stored)))
}

/// When a mark set at `now` can be forgotten: every token it refuses was issued by now
/// and lives at most `auth.token_ttl_secs`. (A longer-lived token from `liveshard token
/// --ttl` outlives its user's mark; logging it out revokes it by its id until it expires.)
fn mark_until(api: &Api, now: u64) -> u64 {
    now.saturating_add(1)
        .saturating_add(api.config().auth.token_ttl_secs)
}

fn view(rev: &Revocation) -> serde_json::Value {
    match rev {
        Revocation::Token { exp, .. } => json!({"revoked": "token", "until": exp}),
        Revocation::User {
            uid,
            not_before,
            until,
        } => json!({"revoked": "user", "uid": uid, "not_before": not_before, "until": until}),
    }
}

/// Stores the revocation, then applies what was stored on every shard.
async fn commit(
    api: &Rc<Api>,
    uid: String,
    rev: Revocation,
    mark: Revocation,
) -> ApiResult<Revocation> {
    let outcome = api
        .store
        .call(|reply| StoreRequest::Revoke {
            uid,
            rev,
            mark,
            reply,
        })
        .await?;
    let stored = match outcome {
        RevokeOutcome::Stored(r) => r,
        RevokeOutcome::Full => {
            tracing::warn!("revocation refused: the revocation set is full");
            return Err(ApiError::new(
                error::REVOCATIONS_FULL,
                "too many revoked tokens are kept; the token expires on time, discard it",
            ));
        }
    };
    broadcast(api, &stored).await;
    // The other nodes of a cluster (they share the store, and read it at start).
    api.danmaku.send_revocation(&stored);
    Ok(stored)
}

/// Applies `rev` on every shard, waiting for each. A full mesh is retried for a while (a
/// revocation is rare, and worth the wait); a shard still unreachable then is logged, and
/// gets the revocation from the store at the next start.
async fn broadcast(api: &Rc<Api>, rev: &Revocation) {
    for to in 0..api.shards() {
        let mut tries = 0;
        loop {
            let r = rev.clone();
            if api
                .danmaku
                .port()
                .call(to, move |d: &Rc<Danmaku>| d.apply_revocation(&r))
                .await
                .is_some()
            {
                break;
            }
            tries += 1;
            if tries >= 100 || api.shutdown.is_raised() {
                tracing::error!(to, "revocation not applied on a shard (mesh full)");
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
