//! Abuse tests: rtmp. See `main.rs`.

#[allow(unused_imports)]
use super::*;
