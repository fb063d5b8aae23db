//! The thread-per-core engine liveshard runs on.
//!
//! A *shard* is one OS thread, pinned to one core, running its own monoio event loop
//! (io_uring, or epoll where io_uring is unavailable). Shards share no locks: they talk
//! through a mesh of bounded single-producer/single-consumer rings, one per ordered pair
//! of shards, with one wake-up per batch of messages rather than per message.
//!
//! Layout:
//! - [`engine`]   — start N pinned shards on a chosen driver, hand each its mesh endpoint
//!   and a stop signal, stop and join them.
//! - [`mesh`]     — the SPSC ring mesh: `submit_to(shard, msg)`, `broadcast(msg)`, the
//!   overflow policy, the receive loop and its counters.
//! - [`listener`] — SO_REUSEPORT listener groups: one socket per shard on one port.
//! - [`local`]    — single-thread wake-up primitives (`Notify`, `Signal`) for tasks of one
//!   shard; they are `!Send` on purpose.
//!
//! What crosses threads here: ring slots (moved by value), the per-shard [`mesh::Doorbell`]
//! and counters (atomics). Nothing else.

pub mod engine;
pub mod listener;
pub mod local;
pub mod mesh;

pub use engine::{start, Driver, DriverInUse, Engine, EngineConfig, ShardCtx};
pub use mesh::{Full, Mesh, MeshStats, Remote};
