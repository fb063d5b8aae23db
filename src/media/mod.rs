//! Media, sans-IO: everything between the bytes of an RTMP ingest socket and the bytes a
//! viewer is sent, with no socket and no clock in it.
//!
//! - [`kind`]   — [`MediaKind`] and the payload size limit every codec shares.
//! - [`amf0`]   — AMF0 values (commands, metadata), bounded decoder and encoder.
//! - [`rtmp`]   — handshake, chunk stream, the server session state machine, play packaging.
//! - [`flv`]    — FLV header and tags, and what audio/video payloads say (codec, keyframe,
//!   sequence header; H.264, AAC, Enhanced RTMP HEVC).
//! - [`class`]  — [`Class`]: what a message is (keyframe, sequence header, metadata,
//!   codec), read once from its first bytes.
//! - [`packet`] — [`MediaMessage`] from the ingest and [`Packaged`]: one encode per
//!   protocol and one classification, shared by every viewer on every shard.
//! - [`gop`]    — the GOP cache a joining viewer starts from.
//! - [`sign`]   — signed push/play URLs (Tencent Cloud CSS `txSecret`/`txTime`).
//! - [`ts`]     — MPEG-TS muxing of H.264 + AAC (PAT/PMT, PES, Annex B, ADTS).
//! - [`fmp4`]   — fragmented MP4 (CMAF) of H.264/HEVC/AV1 + AAC: init segment, `moof`+`mdat`.
//! - [`hls`]    — the HLS segmenter: TS or fMP4 segments cut on keyframes, the sliding m3u8.
//! - [`timeline`] — the stream clock: one timeline (stream time and its epoch) for every
//!   output of a stream, carried across publisher reconnects.
//!
//! The flow, once the connection drivers are wired: the publisher's shard feeds socket
//! bytes to a [`rtmp::ServerSession`], classifies each [`MediaMessage`] once, stamps it
//! with stream time ([`timeline::Timeline`]) and packages it once ([`Packaged::stamped`]), keeps it in the stream's [`gop::GopCache`] and hands the same
//! `Bytes` to every shard with viewers; RTMP viewers are written `Packaged::rtmp`, HTTP-FLV
//! viewers `Packaged::flv`. The same shard feeds each message to the stream's
//! [`hls::Segmenter`], so a TS segment is also muxed once, whoever fetches it.

pub mod amf0;
pub mod class;
pub mod flv;
pub mod fmp4;
pub mod gop;
pub mod hls;
pub mod kind;
pub mod packet;
pub mod rtmp;
pub mod sign;
pub mod timeline;
pub mod ts;

pub use class::Class;
pub use kind::{MediaKind, PackageError};
pub use packet::{MediaMessage, Packaged};
