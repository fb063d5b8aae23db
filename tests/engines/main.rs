//! The engines tested in memory: several shards' instances of the danmaku and live engines
//! on one thread, joined by an in-memory mesh, on a virtual clock (see `harness.rs`).
//! Each test builds its own small cluster and finishes in milliseconds, so behaviour
//! across shards (ordering, caps, moderation, joins and leaves, claims, grace, mirrors)
//! is checked by the hundred without a socket.

mod danmaku;
mod harness;
mod live;
