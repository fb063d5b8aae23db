//! Abuse tests: ws. See `main.rs`.

#[allow(unused_imports)]
use super::*;
