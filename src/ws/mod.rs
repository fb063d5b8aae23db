//! WebSocket (RFC 6455) for the danmaku endpoint, sans-IO.
//!
//! - [`handshake`] — validates an upgrade request and builds the 101 response.
//! - [`codec`]     — frame decoder (unmasking, fragmentation, control frames, limits, UTF-8)
//!   and server frame encoding. Frame headers are parsed and formatted by tungstenite; we
//!   keep our own small state instead of tungstenite's `WebSocket`, whose per-connection
//!   buffers would cost more than a whole idle connection may.
//!
//! The connection driver that uses these is `crate::danmaku::conn`.

pub mod codec;
pub mod handshake;

pub use codec::{close_frame, encode_frame, Decoder, Message, WsError, WsLimits};
