//! Several nodes as one service over Redis (C10, SPEC §1 "Beyond one machine").
//!
//! [`client`] is the connection (one server or a Redis Cluster); [`keys`] the names every
//! node agrees on; [`media`] the `cluster-media` thread (stream claims, and where a stream
//! published on another node is).

pub mod client;
pub mod keys;
pub mod media;
