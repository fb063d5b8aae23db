//! Who may publish and who may play a stream: the checks every way in shares, whatever
//! carries the request — an RTMP `publish`/`play` on our own listener
//! ([`super::rtmp_conn`]), or another server asking through its hook (an nginx-rtmp or SRS
//! fleet calling `/api/v1/hooks/…`, `crate::api::hooks`).
//!
//! A publish: the app, the stream name, its authorization — the relay key when the query
//! names one (`?relay_key=`, [`sign::verify_relay`]), else the push signature
//! (`media.push_key`) — the room not closed, and the `on_publish` hook. A play: the app
//! and name, the play signature when `media.play_sign` is on, and the `on_play` hook.
//! What follows is the caller's: the RTMP driver then asks the stream's home for the claim
//! (or checks the stream is live); a hook caller holds the stream itself.
//!
//! A refusal is the RTMP status code to answer with and a sentence that says why, written
//! for the client (no key, no hook address).

use std::net::SocketAddr;

use super::engine::Live;
use super::hooks;
use super::valid_stream;
use crate::auth::now_unix;
use crate::media::rtmp::status;
use crate::media::sign;
use crate::store::Request as StoreRequest;

/// An RTMP `onStatus` code and the reason given with it.
pub type Refusal = (&'static str, String);

/// A publish or play to decide.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    pub app: &'a str,
    /// Without its query.
    pub stream: &'a str,
    /// The query that came with the request, without the `?` (signature or relay key).
    pub query: &'a str,
    /// The client (for the hooks' `ip` and `client_id`).
    pub peer: SocketAddr,
    /// "rtmp", "flv" or "hls": what the hooks are told.
    pub protocol: &'static str,
}

impl Ask<'_> {
    fn what(&self, verb: &str) -> String {
        format!("{verb} of {}/{}", self.app, self.stream)
    }
}

/// Whether `ask` may publish (everything but the claim on the stream's home).
pub async fn publish(live: &Live, ask: &Ask<'_>) -> Result<(), Refusal> {
    let settings = live.settings();
    let what = ask.what("publish");
    if ask.app != settings.app {
        return Err((
            status::PUBLISH_BAD_NAME,
            format!("{what} refused: unknown app (use /{}/)", settings.app),
        ));
    }
    if !valid_stream(ask.stream) {
        return Err((
            status::PUBLISH_BAD_NAME,
            format!("{what} refused: stream names are 1-64 of A-Z a-z 0-9 _ - ."),
        ));
    }
    let authorized = match sign::verify_relay(&settings.relay_key, ask.query) {
        Some(relay) => relay.map_err(|e| e.to_string()),
        None => sign::verify(&settings.push_key, ask.stream, ask.query, now_unix())
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = authorized {
        return Err((status::PUBLISH_BAD_NAME, format!("{what} refused: {e}")));
    }
    let id = ask.stream.to_owned();
    let room = live
        .ctx
        .store
        .call(|reply| StoreRequest::GetRoom { id, reply })
        .await;
    match room {
        Ok(Some(r)) if r.closed => {
            return Err((
                status::PUBLISH_DENIED,
                format!("{what} refused: the room is closed"),
            ));
        }
        Ok(_) => {}
        // A cluster's Redis is away: the signature (or relay key) has authorized the
        // publisher, and the node keeps serving alone rather than stopping every show;
        // only the closed-room check is skipped (docs/operations.md).
        Err(crate::store::StoreError::Unavailable) => {
            tracing::warn!(
                stream = ask.stream,
                "storage unreachable: publishing without the closed-room check"
            );
        }
        Err(e) => {
            return Err((
                status::PUBLISH_DENIED,
                format!("{what} refused: {e}, retry"),
            ))
        }
    }
    if let Some(url) = &settings.hooks.on_publish {
        let event = hooks::event(
            "on_publish",
            live,
            ask.stream,
            ask.query,
            ask.peer,
            ask.protocol,
        );
        if let Err(why) = hooks::ask(live, url, &event).await {
            return Err((status::PUBLISH_DENIED, format!("{what} refused: {why}")));
        }
    }
    Ok(())
}

/// Whether `ask` may play (everything but the stream being live here).
pub async fn play(live: &Live, ask: &Ask<'_>) -> Result<(), Refusal> {
    let settings = live.settings();
    let what = ask.what("play");
    if ask.app != settings.app || !valid_stream(ask.stream) {
        return Err((status::PLAY_NOT_FOUND, format!("{what}: no such stream")));
    }
    if let Err(e) = play_signature(live, ask.stream, ask.query) {
        return Err((status::PLAY_FAILED, format!("{what} refused: {e}")));
    }
    on_play(live, ask)
        .await
        .map_err(|why| (status::PLAY_FAILED, format!("{what} refused: {why}")))
}

/// The play signature, when `media.play_sign` is on (every play protocol checks it).
pub fn play_signature(live: &Live, stream: &str, query: &str) -> Result<(), sign::SignError> {
    let settings = live.settings();
    if !settings.play_sign {
        return Ok(());
    }
    sign::verify(&settings.play_key, stream, query, now_unix())
}

/// Asks the `on_play` hook, when one is configured; `Err(reason)` when it refuses.
pub async fn on_play(live: &Live, ask: &Ask<'_>) -> Result<(), String> {
    let Some(url) = &live.settings().hooks.on_play else {
        return Ok(());
    };
    let event = hooks::event(
        "on_play",
        live,
        ask.stream,
        ask.query,
        ask.peer,
        ask.protocol,
    );
    hooks::ask(live, url, &event).await
}
