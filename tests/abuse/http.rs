//! Abuse tests: http. See `main.rs`.

#[allow(unused_imports)]
use super::*;
