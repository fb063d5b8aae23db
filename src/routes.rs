//! The route table of the HTTP front, and the operational routes themselves.
//!
//! Capabilities register their routes here, in one place, so the whole surface is visible
//! at a glance (and the OpenAPI document can be checked against it).

use std::rc::Rc;
use std::time::Duration;

use serde_json::json;

use crate::app::App;
use crate::config::Config;
use crate::danmaku::Danmaku;
use crate::http::{code, handler, Method, Reply, Request, Response, Router};
use crate::live::Live;

/// Every route. Each capability's handlers take its own context (the danmaku engine, the
/// live engine, the API), mounted here from the shard's [`App`].
pub fn router(cfg: &Config) -> Router<App> {
    let mut r = Router::new();
    r.add(Method::Get, "/healthz", handler(healthz));
    r.add(Method::Get, "/readyz", handler(readyz));
    r.add(Method::Get, "/metrics", handler(metrics));

    let mut danmaku = Router::new();
    danmaku.add(Method::Get, "/ws", crate::danmaku::conn::handler());
    r.mount(danmaku, |app| app.danmaku.clone());

    let mut live = Router::new();
    live.add(
        Method::Get,
        "/{app}/{stream}.flv",
        crate::live::flv::handler(),
    );
    live.add(
        Method::Get,
        "/{app}/{stream}.m3u8",
        crate::live::hls::playlist_handler(),
    );
    // HLS segments: `{stream}-{sequence}.ts`, or in fMP4 `{stream}-{sequence}.m4s` and
    // their init segments `{stream}-{sequence}.mp4`, named by the playlist.
    live.add(
        Method::Get,
        "/{app}/{segment}.ts",
        crate::live::hls::segment_handler(),
    );
    live.add(
        Method::Get,
        "/{app}/{segment}.m4s",
        crate::live::hls::fmp4_segment_handler(),
    );
    live.add(
        Method::Get,
        "/{app}/{segment}.mp4",
        crate::live::hls::init_handler(),
    );
    r.mount(live, |app| app.live.clone());

    let mut api = Router::new();
    crate::api::register(&mut api, cfg);
    r.mount(api, |app| app.api.clone());
    // The demo page and its libraries (`clients/`), read once at start.
    crate::web::register(&mut r, &cfg.server.clients_dir);
    if cfg.server.debug_endpoints {
        r.add(Method::Get, "/debug/sleep", handler(debug_sleep));
        // No limit of its own: bodies up to `http.max_body_bytes`, the default for
        // routes that take one.
        r.add(Method::Post, "/debug/echo", handler(debug_echo));
    }
    r
}

/// Liveness: the shard's loop answers.
async fn healthz(app: Rc<App>, _req: Request) -> Reply {
    Response::ok(&json!({"status": "ok", "shard": app.id})).into()
}

/// Readiness: ready to take new work (false while shutting down).
async fn readyz(app: Rc<App>, _req: Request) -> Reply {
    if app.shutting_down() {
        Response::error(503, code::UNAVAILABLE, "shutting down").into()
    } else if app.danmaku.cluster().is_some_and(|c| !c.is_up()) {
        // Serving this node's viewers, but not one with the others: a load balancer may
        // prefer other nodes, and an operator sees why.
        Response::ok(&json!({"status": "degraded", "redis": "unreachable"})).into()
    } else {
        Response::ok(&json!({"status": "ready"})).into()
    }
}

async fn metrics(app: Rc<App>, _req: Request) -> Reply {
    let mut text = app.metrics.registry().render(app.mesh.all_stats());
    // Per-stream numbers live on the streams' owner shards: ask each.
    let mut streams = Vec::new();
    let shards = app.mesh.shards();
    for s in 0..shards {
        let call = app.live.port().call(s, |l: &Rc<Live>| l.stream_stats());
        if let Some(mut stats) = call.await {
            streams.append(&mut stats);
        }
    }
    crate::metrics::render_streams(&mut text, &streams);
    // Online counts live on the rooms' home shards: each lists its active rooms, and the
    // busiest few are rendered (bounded labels, whatever the number of rooms).
    let mut rooms = Vec::new();
    for s in 0..shards {
        let call = app
            .danmaku
            .port()
            .call(s, |d: &Rc<Danmaku>| d.home_active());
        if let Some(active) = call.await {
            rooms.extend(active.into_iter().map(|(room, online, _)| (room, online)));
        }
    }
    crate::metrics::render_rooms(&mut text, &mut rooms);
    app.api.shared.recordings.stats().render(&mut text);
    if let Some(c) = app.danmaku.cluster() {
        c.stats.render(&mut text);
    }
    Response::with_body(200, "text/plain; version=0.0.4; charset=utf-8", text).into()
}

/// `GET /debug/sleep?ms=N` answers after N ms (at most 60 s): a request that is in flight
/// for as long as a drill needs (graceful shutdown, slow-client handling).
async fn debug_sleep(_app: Rc<App>, req: Request) -> Reply {
    let Some(ms) = req.query("ms").and_then(|v| v.parse::<u64>().ok()) else {
        return Response::error(400, code::BAD_REQUEST, "ms must be a number").into();
    };
    let ms = ms.min(60_000);
    monoio::time::sleep(Duration::from_millis(ms)).await;
    Response::ok(&json!({"slept_ms": ms})).into()
}

/// `POST /debug/echo` answers how many body bytes it received: a route under the default
/// body limit, for drills on request bodies (framing, limits, slow senders).
async fn debug_echo(_app: Rc<App>, req: Request) -> Reply {
    Response::ok(&json!({"bytes": req.body.len()})).into()
}
