//! liveshard — a thread-per-core live-streaming backend.
//!
//! The binary (`src/main.rs`) is glue over this library. Where things live:
//! - [`config`]  — TOML + environment + flags → one validated [`config::Config`].
//! - [`server`]  — `serve`: bind listener groups, start the shards, signals, drain.
//! - [`app`]     — one shard's services wired ([`app::App`]: the danmaku and live engines
//!   and the API, each with its narrow context) and [`app::ShardMsg`], what crosses shards.
//! - [`shard`]   — one shard's life: accept loops, mesh dispatch, drain.
//! - [`port`], [`clock`], [`ids`], [`codes`], [`text`] — the leaves the engines share: typed
//!   mesh ports, the engines' clock, ids, the error-code table, text hygiene.
//! - [`admit`]   — admission at accept: per-address caps and rates, the storm guard.
//! - [`routes`]  — the HTTP route table and the operational routes (health, metrics).
//! - [`web`]     — the demo page (`/demo/`) and its player libraries, served from memory.
//! - [`http`]    — HTTP/1.1: sans-IO codec, router, connection driver.
//! - [`ws`]      — WebSocket handshake and frame codec (sans-IO).
//! - [`danmaku`] — rooms, one-encode cross-shard fan-out, the danmaku protocol.
//! - [`auth`]    — HS256 login tokens.
//! - [`api`]     — the REST API under `/api/v1`: login, rooms, covers, moderation, events.
//! - [`outbound`] — outbound HTTP (WeChat, hooks) on a small thread pool, off the shards.
//! - [`store`]   — storage on its own thread: the embedded redb backend, group commits.
//! - [`media`]   — sans-IO media: RTMP session and chunks, AMF0, FLV, GOP cache, URL signing.
//! - [`live`]    — live streams: RTMP ingest and play, HTTP-FLV, stream registry and fan-out.
//! - [`metrics`] — per-shard counters and the Prometheus rendering.
//! - [`logging`] — structured logs.
//! - [`sockio`]  — socket helpers shared by the connection drivers.
//! - [`outq`]    — the one outbound queue and writer of every stream to a peer (WebSocket,
//!   HTTP-FLV, RTMP play, SSE): byte bound, drop or skip-to-keyframe, direct sends.
//!
//! The thread-per-core engine itself (shards, pinning, the SPSC ring mesh, SO_REUSEPORT
//! groups) is the `shards` crate.

pub mod admit;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod codes;
pub mod config;
pub mod danmaku;
pub mod http;
pub mod ids;
pub mod live;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod outbound;
pub mod outq;
pub mod port;
pub mod routes;
pub mod server;
pub mod shard;
pub mod sock;
pub mod sockio;
pub mod store;
pub mod text;
pub mod threads;
pub mod tls;
pub mod web;
pub mod ws;
