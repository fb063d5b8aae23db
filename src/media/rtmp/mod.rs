//! RTMP, sans-IO: handshake, chunk stream, messages, the server session state machine, and
//! the one-encode packaging for players.
//!
//! - [`handshake`] — C0/C1/C2 ↔ S0/S1/S2, simple and digest ("complex") forms.
//! - [`chunk`]     — chunk stream decoder (reassembly grown with arrival, bounded per
//!   connection and per shard) and encoder.
//! - [`message`]   — protocol control, user control and AMF0 command bodies.
//! - [`session`]   — [`ServerSession`]: bytes + `now` in, [`Event`]s and bytes out;
//!   publish/play requests answered by the application.
//! - [`play`]      — [`play::package`]: one media message → finished chunks shared by every
//!   RTMP viewer.
//!
//! # Why our own code and not a library
//!
//! We evaluated `rml_rtmp` 0.8 (with `rml_amf0` 0.3), the sans-IO candidate, and `rtmp`
//! 0.6 from the xiu project. Reading their sources:
//!
//! - `rml_rtmp` is sans-IO and has a server session, but its chunk deserializer keeps a
//!   single reassembly buffer for all chunk streams (interleaved messages corrupt each
//!   other), computes `message_length - received` in `usize`, so a fmt 1 header that shrinks
//!   the length mid-message underflows (a panic in debug builds; in release a wrapped
//!   size passed to `reserve`, an allocation failure), and subtracts 0xFFFFFF from an
//!   extended timestamp without checking it (another overflow panic). It has no limit on
//!   message size besides the 24-bit field, reserves a whole message up front, and buffers
//!   all input given to it. `rml_amf0` recurses without a depth limit (a few bytes per
//!   level of nested objects overflow the stack) and reads strings with `read`, not
//!   `read_exact`. These sit inside the parser, where no wrapper can fence them. Its
//!   serializer is stateful per connection (header compression) and returns a `Vec` per
//!   call, so media would be encoded once per viewer — the opposite of what we need.
//!   Its last release is from 2023.
//! - xiu's `rtmp` is not sans-IO: the handshake and sessions are async over tokio (with
//!   `tokio` "full" and the unmaintained `failure` crate as dependencies), which does not
//!   fit a monoio thread-per-core server, and its unpacketizer has the same
//!   `msg_length - payload.len()` subtraction.
//!
//! So this module is ours, about the size of the library part we would have used, with
//! the bounds written where input is read. The digest handshake is included (three
//! HMAC-SHA256 via the `hmac`/`sha2` crates), since Flash-era players need it and ffmpeg
//! verifies it when playing. RTMPE (encrypted RTMP) and AMF3 object encoding are not
//! supported; type 17/15 messages with the usual AMF0 body are.

pub mod chunk;
mod commands;
mod encode;
pub mod handshake;
mod limits;
mod media_msg;
pub mod message;
pub mod play;
pub mod session;

pub use chunk::{ChunkDecoder, ChunkError, ChunkLimits, PartialBudget, RawMessage};
pub use handshake::{HandshakeError, HandshakeKind};
pub use session::{
    status, Event, PlayRequest, PublishRequest, ServerSession, SessionConfig, SessionError,
};
