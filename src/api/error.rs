//! API errors: one type for every handler. The codes themselves are the table in
//! [`crate::codes`], re-exported here.

use std::borrow::Cow;

use serde_json::json;

use crate::http::Response;
use crate::store::StoreError;

pub use crate::codes::*;

/// An error answer: status, stable code, message, and the offending field if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: u32,
    pub message: Cow<'static, str>,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: u32, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 42201 for `field`.
    pub fn field(field: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: INVALID_FIELD,
            message: message.into(),
            field: Some(field),
        }
    }

    /// The HTTP status: the code's first three digits.
    pub fn status(&self) -> u16 {
        (self.code / 100) as u16
    }

    pub fn response(&self) -> Response {
        match self.field {
            Some(f) => Response::envelope(
                self.status(),
                self.code,
                &self.message,
                &json!({ "field": f }),
            ),
            None => Response::error(self.status(), self.code, &self.message),
        }
    }

    pub fn room_not_found() -> Self {
        Self::new(ROOM_NOT_FOUND, "no such room")
    }

    pub fn busy() -> Self {
        Self::new(SERVER_BUSY, "server busy, retry")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ApiError::new(STORE_BUSY, "storage is busy, retry"),
            StoreError::Unavailable => {
                ApiError::new(STORE_UNAVAILABLE, "storage is unreachable, retry")
            }
            other => {
                tracing::error!(error = %other, "storage failed");
                ApiError::new(INTERNAL, "storage failed")
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_match_their_status() {
        let mut seen = std::collections::HashSet::new();
        for (code, status, _) in CODES {
            assert!(seen.insert(code), "{code} twice");
            assert_eq!(code / 100, u32::from(*status), "{code}");
            assert_ne!(code % 100, 0, "{code}: n00 codes belong to the HTTP layer");
        }
    }

    /// `docs/api.md` shows exactly this table.
    #[test]
    fn the_documented_table_is_this_one() {
        let doc = include_str!("../../docs/api.md");
        let documented: std::collections::BTreeSet<u32> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .filter(|c: &u32| (10000..60000).contains(c) && c % 100 != 0)
            .collect();
        let ours: std::collections::BTreeSet<u32> = CODES.iter().map(|c| c.0).collect();
        assert_eq!(
            documented, ours,
            "docs/api.md's error table and CODES differ"
        );
    }

    /// Codes outside the API handlers (play refusals, say) come from the table too: no
    /// `Response::error` in the server carries a literal code of its own.
    #[test]
    fn no_error_answer_invents_a_code() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for call in text.split("Response::error(").skip(1) {
                        let code = call.split(',').nth(1).unwrap_or("").trim();
                        if code.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                            found.push(format!("{}: {code}", path.display()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.is_empty(), "literal error codes: {found:?}");
    }

    #[test]
    fn field_errors_name_the_field() {
        let r = ApiError::field("title", "title is required").response();
        assert_eq!(r.status, 422);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"code":42201,"message":"title is required","data":{"field":"title"}}"#
        );
    }
}
