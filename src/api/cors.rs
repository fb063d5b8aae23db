//! CORS for browsers: an allow-list of origins (`cors.allow_origins`; `"*"` allows any,
//! empty turns CORS off), the `Access-Control-Allow-Origin` header on API answers, and the
//! `OPTIONS` preflight answer for every API path.
//!
//! Mini-programs do not need any of this (`wx.request` is not a browser fetch); the demo
//! web page and other browser clients do. Tokens travel in `Authorization`, never in
//! cookies, so credentials are not allowed and `*` is safe to use.

use std::rc::Rc;

use super::Api;
use crate::config::CorsConfig;
use crate::http::codec::RequestHead;
use crate::http::{self, Method, Reply, Request, Response};

use super::error::{self, ApiError};

/// The `Access-Control-Allow-Origin` value for this request: `None` if it carries no
/// `Origin` or the origin is not allowed.
pub fn allow_origin(cfg: &CorsConfig, req: &Request) -> Option<String> {
    allow(cfg, req.header("origin")?)
}

/// The allowed origin for the HTTP layer's own answers under `/api/` (404, 405, 413, 408),
/// so that a browser can read those too.
pub fn refine(cfg: &CorsConfig, head: &RequestHead, resp: Response) -> Response {
    if !head.path.starts_with("/api/") {
        return resp;
    }
    let allowed = head.header_str("origin").and_then(|o| allow(cfg, o));
    decorate(resp, allowed.as_deref())
}

fn allow(cfg: &CorsConfig, origin: &str) -> Option<String> {
    let origin = origin.trim();
    if origin.is_empty() || origin.len() > 256 {
        return None;
    }
    if cfg.allow_origins.iter().any(|o| o == "*") {
        return Some("*".into());
    }
    cfg.allow_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
        .then(|| origin.to_string())
}

/// Adds the CORS headers to an answer (when the origin is allowed).
pub fn decorate(mut resp: Response, allow: Option<&str>) -> Response {
    if let Some(origin) = allow {
        resp = resp
            .header("Access-Control-Allow-Origin", origin)
            .header("Vary", "Origin");
    }
    resp
}

/// The `OPTIONS` handler for a path served under `methods`.
pub fn preflight(methods: Vec<Method>) -> http::Handler<Api> {
    let mut names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
    names.push("OPTIONS");
    let allow = names.join(", ");
    let allow = Rc::new(allow);
    http::handler(move |api: Rc<Api>, req: Request| {
        let allow = allow.clone();
        async move {
            let cfg = &api.config().cors;
            if req.header("origin").is_none() {
                // A plain OPTIONS: say what the path supports.
                return Reply::Response(Response::empty(204).header("Allow", allow.as_str()));
            }
            let Some(origin) = allow_origin(cfg, &req) else {
                return Reply::Response(
                    ApiError::new(error::ORIGIN_NOT_ALLOWED, "origin not allowed").response(),
                );
            };
            let r = Response::empty(204)
                .header("Access-Control-Allow-Origin", origin)
                .header("Access-Control-Allow-Methods", allow.as_str())
                .header("Access-Control-Allow-Headers", cfg.allow_headers.join(", "))
                .header("Access-Control-Max-Age", cfg.max_age_secs.to_string())
                .header(
                    "Vary",
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                );
            Reply::Response(r)
        }
    })
}
