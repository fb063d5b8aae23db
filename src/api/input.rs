//! What handlers read from a request, checked: the bearer token, a JSON object body and
//! its fields, path ids, query numbers. Each check answers a precise [`ApiError`] (the
//! field it is about, the range it wanted), never a panic.

use serde_json::{Map, Value};

use super::error::{self, ApiError, ApiResult};
use super::Api;
use crate::auth::{Claims, TokenError};
use crate::http::Request;

/// The caller's verified claims, from `Authorization: Bearer <token>`.
pub fn bearer(api: &Api, req: &Request) -> ApiResult<Claims> {
    bearer_header(api, req.header("authorization"))
}

/// [`bearer`] from the `Authorization` value alone: for checks on a request head before
/// its body is read.
pub fn bearer_header(api: &Api, authorization: Option<&str>) -> ApiResult<Claims> {
    let Some(value) = authorization else {
        return Err(ApiError::new(
            error::TOKEN_MISSING,
            "login required: send Authorization: Bearer <token>",
        ));
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::new(
            error::TOKEN_MISSING,
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    api.tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => ApiError::new(error::TOKEN_EXPIRED, e.message()),
        TokenError::Revoked => ApiError::new(error::TOKEN_REVOKED, e.message()),
        _ => ApiError::new(error::TOKEN_INVALID, e.message()),
    })
}

/// The body as a JSON object; an empty body is an empty object (for routes whose fields
/// are all optional).
pub fn json_object(req: &Request) -> ApiResult<Map<String, Value>> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            error::BAD_JSON,
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            error::BAD_JSON,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// A text field: cleaned (control and invisible characters removed, trimmed), then
/// checked to be `min..=max` characters. `Ok(None)` when absent or null.
pub fn text(
    body: &Map<String, Value>,
    field: &'static str,
    min: usize,
    max: usize,
) -> ApiResult<Option<String>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let cleaned = crate::danmaku::hygiene::clean_text(s);
            let n = cleaned.chars().count();
            if n < min || n > max {
                Err(ApiError::field(
                    field,
                    format!("{field} must be {min} to {max} characters"),
                ))
            } else {
                Ok(Some(cleaned))
            }
        }
        Some(_) => Err(ApiError::field(field, format!("{field} must be a string"))),
    }
}

/// Like [`text`], but absent is an error.
pub fn required_text(
    body: &Map<String, Value>,
    field: &'static str,
    min: usize,
    max: usize,
) -> ApiResult<String> {
    text(body, field, min, max)?
        .ok_or_else(|| ApiError::field(field, format!("{field} is required")))
}

/// A whole number field in `0..=max`; `Ok(None)` when absent or null.
pub fn number(body: &Map<String, Value>, field: &'static str, max: u64) -> ApiResult<Option<u64>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(ApiError::field(
                field,
                format!("{field} must be a whole number from 0 to {max}"),
            )),
        },
    }
}

/// A URL field for images: empty, our own `/covers/…` path, or an http(s) URL without
/// spaces or quotes, at most 512 bytes.
pub fn image_url(body: &Map<String, Value>, field: &'static str) -> ApiResult<Option<String>> {
    let Some(url) = (match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return Err(ApiError::field(field, format!("{field} must be a string"))),
    }) else {
        return Ok(None);
    };
    let ok = url.is_empty()
        || (url.len() <= 512
            && (url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("/covers/"))
            && url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\')));
    if ok {
        Ok(Some(url))
    } else {
        Err(ApiError::field(
            field,
            format!("{field} must be an http(s) URL or /covers/… path of at most 512 bytes"),
        ))
    }
}

/// The `{id}` path parameter as a room id (anything else cannot name a room: 404).
pub fn room_id(req: &Request) -> ApiResult<String> {
    req.param("id")
        .filter(|id| crate::danmaku::valid_room_id(id))
        .map(str::to_string)
        .ok_or_else(ApiError::room_not_found)
}

/// The `{uid}` path parameter: 1–128 bytes, no control characters, spaces or slashes.
pub fn uid_param(req: &Request) -> ApiResult<String> {
    req.param("uid")
        .filter(|u| valid_uid(u))
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::field(
                "uid",
                "uid must be 1-128 bytes without spaces, slashes or control characters",
            )
        })
}

pub fn valid_uid(uid: &str) -> bool {
    (1..=128).contains(&uid.len())
        && uid
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != '/')
}

/// A query number in `min..=max`, `default` when absent.
pub fn query_number(
    req: &Request,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> ApiResult<u64> {
    match req.query(name) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::field(
                name,
                format!("{name} must be a whole number from {min} to {max}"),
            )),
        },
    }
}

/// `n` random bytes from the kernel (getrandom(2): never blocks once the system has
/// booted, no file descriptor).
pub fn random_bytes<const N: usize>() -> ApiResult<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which lives
        // for the whole call.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                N - filled,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "getrandom failed");
            return Err(ApiError::new(error::INTERNAL, "no randomness available"));
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// A random id of `len` characters from `a-z0-9` (about 5.2 bits each).
pub fn random_id(len: usize) -> ApiResult<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>()? {
            // 252 = 7 * 36: rejecting the rest keeps every character equally likely.
            if b < 252 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(b % 36)]));
            }
        }
    }
    Ok(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn text_fields_are_cleaned_and_bounded() {
        let b = obj(json!({"title": "  hi\u{200b}\u{0007} ", "n": 5, "long": "x".repeat(65)}));
        assert_eq!(text(&b, "title", 1, 64).unwrap().as_deref(), Some("hi"));
        assert_eq!(text(&b, "missing", 1, 64).unwrap(), None);
        assert_eq!(text(&b, "long", 1, 64).unwrap_err().field, Some("long"));
        assert_eq!(text(&b, "n", 1, 64).unwrap_err().code, error::INVALID_FIELD);
        assert!(required_text(&b, "missing", 1, 4).is_err());
    }

    #[test]
    fn numbers_and_urls() {
        let b = obj(json!({"s": 5, "neg": -1, "f": 1.5, "big": 10_000,
            "u1": "https://x/y.png", "u2": "/covers/ab.png", "u3": "javascript:alert(1)",
            "u4": "https://x/\"onload", "u5": ""}));
        assert_eq!(number(&b, "s", 10).unwrap(), Some(5));
        assert!(number(&b, "neg", 10).is_err());
        assert!(number(&b, "f", 10).is_err());
        assert!(number(&b, "big", 10).is_err());
        assert!(image_url(&b, "u1").unwrap().is_some());
        assert!(image_url(&b, "u2").unwrap().is_some());
        assert!(image_url(&b, "u3").is_err());
        assert!(image_url(&b, "u4").is_err());
        assert_eq!(image_url(&b, "u5").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn random_ids_use_the_alphabet() {
        let id = random_id(12).unwrap();
        assert_eq!(id.len(), 12);
        assert!(crate::danmaku::valid_room_id(&id));
        assert_ne!(id, random_id(12).unwrap());
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn uids() {
        assert!(valid_uid("u_1-x.y"));
        assert!(!valid_uid(""));
        assert!(!valid_uid("a b"));
        assert!(!valid_uid("a/b"));
        assert!(!valid_uid(&"x".repeat(129)));
    }
}
