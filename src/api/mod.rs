//! The REST API under `/api/v1` (SPEC C8): what the mini-program calls with `wx.request`.
//!
//! Every answer is the envelope `{"code":0,"message":"ok","data":…}`; errors carry a stable
//! non-zero code (status×100+n, table in [`error`] and `docs/api.md`). Files:
//! - [`error`]      — `ApiError` and the code table.
//! - [`input`]      — bearer tokens, JSON bodies and fields, path ids, randomness.
//! - [`login`]      — `POST /auth/wechat`, `POST /auth/dev`.
//! - [`revoke`]     — `POST /auth/logout`, `POST /admin/users/{uid}/revoke`.
//! - [`wechat`]     — the WeChat client: `jscode2session`, the cached access token.
//! - [`rooms`]      — rooms CRUD, listing with live status, push-URL signing.
//! - [`moderation`] — mutes, bans, kicks, admins, slow mode.
//! - [`history`]    — paging a room's stored danmaku.
//! - [`hooks`]      — `POST /hooks/nginx-rtmp`, `POST /hooks/srs`: deciding an nginx-rtmp
//!   or SRS fleet's publishes and plays.
//! - [`danmaku`]    — `POST /rooms/{id}/danmaku`: sending without a WebSocket.
//! - [`covers`]     — cover uploads (type sniffed from bytes) and serving them back.
//! - [`recordings`] — `POST`/`DELETE /rooms/{id}/recording`, `GET /recordings`.
//! - [`vod`]        — `GET /vod/{id}.flv`: recordings played back with `Range`.
//! - [`sse`]        — `GET /rooms/{id}/events` and `GET /rooms/{id}/danmaku/stream`,
//!   Server-Sent Events.
//! - [`cors`]       — the origin allow-list and preflight answers.
//! - [`urls`]       — public push/play/ws/cover URLs.
//! - [`openapi`]    — the OpenAPI 3 document.
//!
//! Handlers run on the shard that accepted the request. What they need from elsewhere they
//! ask without blocking: the store thread (rooms, users, history), the files thread
//! (covers), the outbound pool (WeChat), and a room's home shard through the engines'
//! ports (`port().call`: online counts, live status, moderation). [`Api`] is what they are
//! given: the API sits above the engines and reaches them only through it.

pub mod cors;
pub mod covers;
pub mod danmaku;
pub mod error;
pub mod history;
pub mod hooks;
pub mod input;
pub mod login;
pub mod moderation;
pub mod openapi;
pub mod recordings;
pub mod revoke;
pub mod rooms;
pub mod sse;
pub mod urls;
pub mod vod;
pub mod wechat;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use crate::http::{self, Method, Reply, Request, Response, Router};
use crate::store::files::{Files, FilesHandle};
use crate::store::recordings::{RecordSettings, Recorder, RecorderHandle};
use error::ApiResult;
use moderation::Action;

/// One shard's API context: what every handler gets, and nothing else of the shard.
pub struct Api {
    pub config: Arc<Config>,
    pub shared: Arc<Shared>,
    pub store: crate::store::StoreHandle,
    pub outbound: crate::outbound::OutboundHandle,
    pub tokens: Rc<crate::auth::Tokens>,
    pub danmaku: Rc<crate::danmaku::Danmaku>,
    pub live: Rc<crate::live::Live>,
    pub metrics: crate::metrics::Slot,
    pub shutdown: Rc<shards::local::Signal>,
}

impl Api {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.danmaku.port().shards()
    }
}

/// What the API handlers share, read-only after start (built once, before the shards).
pub struct Shared {
    /// Key for push URLs (`media.push_key` or `<data_dir>/push.key`).
    pub push_key: String,
    /// Key for play URLs (`media.play_key` or `<data_dir>/play.key`; never the push key).
    pub play_key: String,
    /// Where the HTTP front listens (fallback host for public URLs).
    pub http_addr: SocketAddr,
    /// Where RTMP listens (the port of derived push/play URLs).
    pub rtmp_addr: SocketAddr,
    /// `None` when `wechat.appid` is empty.
    pub wechat: Option<wechat::WeChat>,
    pub files: FilesHandle,
    /// The recorder and VOD threads (recordings under `media.record_dir`).
    pub recordings: RecorderHandle,
}

/// The API's helper threads: files, and the WeChat token keeper when configured.
pub struct Services {
    files: Files,
    recorder: Recorder,
    keeper: Option<wechat::Keeper>,
}

impl Services {
    /// Loads the push and play keys, starts the files thread (covers under `<data_dir>/covers`) and
    /// the WeChat token keeper. Call before the shards start; `rtmp_addr` is where RTMP
    /// listens (the bound address when the configured port is 0).
    pub fn start(
        cfg: &Config,
        http_addr: SocketAddr,
        rtmp_addr: SocketAddr,
    ) -> Result<(Shared, Services), String> {
        let keys = crate::auth::MediaKeys::load(&cfg.media, &cfg.server.data_dir)?;
        let files = Files::start(
            cfg.server.data_dir.join("covers"),
            cfg.api.files_queue,
            cfg.api.cover_max_bytes,
        )
        .map_err(|e| format!("cannot start the files thread: {e}"))?;
        let record = RecordSettings::from_config(cfg);
        let record_dir = record.dir.display().to_string();
        let recorder = Recorder::start(record)
            .map_err(|e| format!("cannot start the recorder in {record_dir}: {e}"))?;
        // The nodes of a cluster share the access token through their Redis.
        let shared = cfg
            .cluster
            .enabled()
            .then(|| {
                let timeout = Duration::from_millis(cfg.cluster.command_timeout_ms);
                crate::cluster::client::Target::parse(&cfg.cluster.redis, timeout).ok()
            })
            .flatten();
        let wechat = wechat::WeChat::from_config(&cfg.wechat, shared);
        let keeper = match &wechat {
            Some(wx) if cfg.wechat.token_refresh => Some(
                wx.start_keeper(cfg.outbound.max_response_bytes)
                    .map_err(|e| format!("cannot start the WeChat token thread: {e}"))?,
            ),
            _ => None,
        };
        let shared = Shared {
            push_key: keys.push,
            play_key: keys.play,
            http_addr,
            rtmp_addr,
            wechat,
            files: files.handle(),
            recordings: recorder.handle(),
        };
        Ok((
            shared,
            Services {
                files,
                recorder,
                keeper,
            },
        ))
    }

    /// Stops the threads (after the shards have stopped).
    pub fn join(self, timeout: Duration) {
        if let Some(k) = self.keeper {
            k.join(timeout);
        }
        self.files.join(timeout);
        self.recorder.join(timeout);
    }
}

/// Wraps a handler that answers `Result<Response, ApiError>`: errors become their
/// envelope, and allowed CORS origins get their header.
fn route<F, Fut>(f: F) -> http::Handler<Api>
where
    F: Fn(Rc<Api>, Request) -> Fut + 'static,
    Fut: Future<Output = ApiResult<Response>> + 'static,
{
    let f = Rc::new(f);
    http::handler(move |api: Rc<Api>, req: Request| {
        let f = f.clone();
        async move {
            let allow = cors::allow_origin(&api.config().cors, &req);
            let resp = match f(api, req).await {
                Ok(r) => r,
                Err(e) => e.response(),
            };
            Reply::Response(cors::decorate(resp, allow.as_deref()))
        }
    })
}

fn moderation_route(action: Action) -> http::Handler<Api> {
    route(move |api, req| moderation::act(api, req, action))
}

/// Registers every API route (and `OPTIONS` for each of their paths) on `r`.
pub fn register(r: &mut Router<Api>, cfg: &Config) {
    let json = Some(cfg.api.json_max_bytes);
    let cover = Some(cfg.api.cover_max_bytes + covers::MULTIPART_SLACK);
    let mut routes: Vec<(Method, &'static str, http::Handler<Api>, Option<u64>)> = vec![
        (
            Method::Post,
            "/api/v1/auth/wechat",
            route(login::wechat),
            json,
        ),
        (
            Method::Post,
            "/api/v1/auth/logout",
            route(revoke::logout),
            None,
        ),
        (
            Method::Post,
            "/api/v1/admin/users/{uid}/revoke",
            route(revoke::revoke_user),
            None,
        ),
        (Method::Get, "/api/v1/rooms", route(rooms::list), None),
        (Method::Post, "/api/v1/rooms", route(rooms::create), json),
        (Method::Get, "/api/v1/rooms/{id}", route(rooms::get), None),
        (
            Method::Patch,
            "/api/v1/rooms/{id}",
            route(rooms::update),
            json,
        ),
        (
            Method::Delete,
            "/api/v1/rooms/{id}",
            route(rooms::close),
            json,
        ),
        (
            Method::Post,
            "/api/v1/rooms/{id}/push-url",
            route(rooms::push_url),
            json,
        ),
        (
            Method::Get,
            "/api/v1/rooms/{id}/danmaku",
            route(history::page),
            None,
        ),
        (
            Method::Post,
            "/api/v1/rooms/{id}/danmaku",
            route(danmaku::post),
            json,
        ),
        (
            Method::Get,
            "/api/v1/rooms/{id}/danmaku/stream",
            sse::danmaku_handler(),
            None,
        ),
        (
            Method::Post,
            "/api/v1/rooms/{id}/mutes/{uid}",
            moderation_route(Action::Mute),
            json,
        ),
        (
            Method::Delete,
            "/api/v1/rooms/{id}/mutes/{uid}",
            moderation_route(Action::Unmute),
            json,
        ),
        (
            Method::Post,
            "/api/v1/rooms/{id}/bans/{uid}",
            moderation_route(Action::Ban),
            json,
        ),
        (
            Method::Delete,
            "/api/v1/rooms/{id}/bans/{uid}",
            moderation_route(Action::Unban),
            json,
        ),
        (
            Method::Post,
            "/api/v1/rooms/{id}/kick/{uid}",
            moderation_route(Action::Kick),
            json,
        ),
        (
            Method::Post,
            "/api/v1/rooms/{id}/admins/{uid}",
            moderation_route(Action::AddAdmin),
            json,
        ),
        (
            Method::Delete,
            "/api/v1/rooms/{id}/admins/{uid}",
            moderation_route(Action::RemoveAdmin),
            json,
        ),
        (
            Method::Put,
            "/api/v1/rooms/{id}/slow-mode",
            moderation_route(Action::SlowMode),
            json,
        ),
        (
            Method::Get,
            "/api/v1/rooms/{id}/events",
            sse::handler(),
            None,
        ),
        (
            Method::Post,
            "/api/v1/uploads/cover",
            route(covers::upload),
            cover,
        ),
        (Method::Get, "/covers/{name}", route(covers::serve), None),
        (
            Method::Post,
            "/api/v1/rooms/{id}/recording",
            route(recordings::start),
            json,
        ),
        (
            Method::Delete,
            "/api/v1/rooms/{id}/recording",
            route(recordings::stop),
            json,
        ),
        (
            Method::Get,
            "/api/v1/recordings",
            route(recordings::list),
            None,
        ),
        (Method::Get, "/vod/{id}.flv", vod::handler(), None),
    ];
    if cfg.auth.dev_login {
        routes.push((Method::Post, "/api/v1/auth/dev", route(login::dev), json));
    }
    if !cfg.media.hook_receiver_key.is_empty() {
        let hook = Some(hooks::MAX_BODY_BYTES);
        routes.push((
            Method::Post,
            "/api/v1/hooks/nginx-rtmp",
            route(hooks::nginx_rtmp),
            hook,
        ));
        routes.push((Method::Post, "/api/v1/hooks/srs", route(hooks::srs), hook));
    }
    let doc = Bytes::from(serde_json::to_vec_pretty(&openapi::document(cfg)).unwrap_or_default());
    routes.push((
        Method::Get,
        "/api/v1/openapi.json",
        route(move |_api, _req| {
            let doc = doc.clone();
            async move { Ok(Response::with_body(200, "application/json", doc)) }
        }),
        None,
    ));

    let mut paths: Vec<(&'static str, Vec<Method>)> = Vec::new();
    for (method, pattern, handler, limit) in routes {
        // Uploads and hook calls are authenticated from the head, before their body is
        // read.
        let gate: Option<http::Gate<Api>> = if pattern == "/api/v1/uploads/cover" {
            Some(Rc::new(covers::gate))
        } else if pattern.starts_with("/api/v1/hooks/") {
            Some(Rc::new(hooks::gate))
        } else {
            None
        };
        r.add_gated(method, pattern, handler, limit, gate);
        match paths.iter_mut().find(|(p, _)| *p == pattern) {
            Some((_, methods)) => methods.push(method),
            None => paths.push((pattern, vec![method])),
        }
    }
    for (pattern, methods) in paths {
        r.add(Method::Options, pattern, cors::preflight(methods));
    }
}
