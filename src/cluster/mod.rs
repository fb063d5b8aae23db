//! Several nodes as one service over Redis (C10, SPEC §1 "Beyond one machine").
//!
//! [`client`] is the connection (one server or a Redis Cluster); [`keys`] the names every
//! node agrees on.

pub mod client;
pub mod keys;
