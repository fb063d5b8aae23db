//! Path routing: method + pattern → handler, with `{param}` segments.
//!
//! A pattern is a `/`-separated list of segments. A segment is a literal (`rooms`), a
//! parameter (`{id}`), or a parameter with a literal suffix (`{stream}.flv`). When several
//! patterns match a path, the one with the most literal segments wins, so `/rooms/new`
//! beats `/rooms/{id}` whatever the order they were added in. A path that matches no
//! pattern is a 404; one that matches only under other methods is a 405 with `Allow`.
//! Routes are a short list scanned per request; a REST surface of a few dozen routes does
//! not need a trie.

use std::rc::Rc;

use super::codec::Method;
use super::{Gate, Handler, Params};

struct Route<S> {
    method: Method,
    pattern: &'static str,
    segments: Vec<Segment>,
    handler: Handler<S>,
    body_limit: Option<u64>,
    gate: Option<Gate<S>>,
}

#[derive(Debug)]
enum Segment {
    Literal(&'static str),
    Param {
        name: &'static str,
        suffix: &'static str,
    },
}

/// The outcome of a lookup.
pub enum Lookup<S> {
    Found {
        handler: Handler<S>,
        params: Params,
        /// The route's own body limit, if it set one.
        body_limit: Option<u64>,
        /// A check of the head that runs before any body byte is read.
        gate: Option<Gate<S>>,
        pattern: &'static str,
    },
    /// The path exists under these methods only.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

pub struct Router<S> {
    routes: Vec<Route<S>>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<S> Router<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Panics on a malformed pattern: patterns are program text.
    pub fn add(&mut self, method: Method, pattern: &'static str, handler: Handler<S>) -> &mut Self {
        self.add_with_limit(method, pattern, handler, None)
    }

    /// Adds a route whose request bodies may be up to `body_limit` bytes. Without one, a
    /// GET, HEAD or OPTIONS route takes no body (a declared one is a 413, unread) and other
    /// methods get `http.max_body_bytes`.
    pub fn add_with_limit(
        &mut self,
        method: Method,
        pattern: &'static str,
        handler: Handler<S>,
        body_limit: Option<u64>,
    ) -> &mut Self {
        self.add_gated(method, pattern, handler, body_limit, None)
    }

    /// Adds a route with a `gate`: a check of the request head (a bearer token, say) that
    /// the driver runs before it reads a byte of the body. What the gate refuses is
    /// answered at once and the connection closed, so an anonymous client cannot make the
    /// server hold a body it will never accept.
    pub fn add_gated(
        &mut self,
        method: Method,
        pattern: &'static str,
        handler: Handler<S>,
        body_limit: Option<u64>,
        gate: Option<Gate<S>>,
    ) -> &mut Self {
        let segments = parse_pattern(pattern);
        self.routes.push(Route {
            method,
            pattern,
            segments,
            handler,
            body_limit,
            gate,
        });
        self
    }

    /// Adds every route of `other`, a router over a narrower state `T` (one engine's
    /// context), reached from this router's state by `project`. So each capability keeps
    /// its handlers over its own context and one table still holds the whole surface.
    pub fn mount<T: 'static>(&mut self, other: Router<T>, project: fn(&S) -> Rc<T>) -> &mut Self
    where
        S: 'static,
    {
        for r in other.routes {
            let inner = r.handler;
            let handler: Handler<S> = Rc::new(move |s: Rc<S>, req| inner(project(&s), req));
            let gate = r
                .gate
                .map(|g| -> Gate<S> { Rc::new(move |s: &S, head| g(&project(s), head)) });
            self.add_gated(r.method, r.pattern, handler, r.body_limit, gate);
        }
        self
    }

    /// Every (method, pattern) registered, in order — for the OpenAPI consistency check.
    pub fn routes(&self) -> impl Iterator<Item = (Method, &'static str)> + '_ {
        self.routes.iter().map(|r| (r.method, r.pattern))
    }

    /// Finds the route for `method` and `path` (percent-encoded, no query). HEAD falls back
    /// to GET.
    pub fn lookup(&self, method: Method, path: &str) -> Lookup<S> {
        let parts: Vec<&str> = split_path(path);
        let mut best: Option<(&Route<S>, usize, Params)> = None;
        let mut allowed = Vec::new();
        for route in &self.routes {
            let Some((literals, params)) = match_segments(&route.segments, &parts) else {
                continue;
            };
            let method_ok =
                route.method == method || (method == Method::Head && route.method == Method::Get);
            if !method_ok {
                if !allowed.contains(&route.method) {
                    allowed.push(route.method);
                }
                continue;
            }
            // An exact method beats HEAD→GET; more literals beat fewer.
            let score = literals * 2 + usize::from(route.method == method);
            if best.as_ref().is_none_or(|(_, s, _)| score > *s) {
                best = Some((route, score, params));
            }
        }
        match best {
            Some((route, _, params)) => Lookup::Found {
                handler: Rc::clone(&route.handler),
                params,
                body_limit: route.body_limit,
                gate: route.gate.clone(),
                pattern: route.pattern,
            },
            None if !allowed.is_empty() => Lookup::MethodNotAllowed(allowed),
            None => Lookup::NotFound,
        }
    }
}

fn split_path(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split('/').collect()
}

fn parse_pattern(pattern: &'static str) -> Vec<Segment> {
    assert!(
        pattern.starts_with('/'),
        "route pattern must start with '/': {pattern}"
    );
    split_path(pattern)
        .into_iter()
        .map(|seg| {
            if let Some(rest) = seg.strip_prefix('{') {
                let (name, suffix) = rest
                    .split_once('}')
                    .unwrap_or_else(|| panic!("unclosed '{{' in route pattern {pattern}"));
                assert!(!name.is_empty(), "empty parameter name in {pattern}");
                Segment::Param { name, suffix }
            } else {
                Segment::Literal(seg)
            }
        })
        .collect()
}

/// Matches path parts against segments; returns the literal count and the parameters.
fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<(usize, Params)> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut literals = 0;
    let mut params = Params::default();
    for (seg, part) in segments.iter().zip(parts) {
        match seg {
            Segment::Literal(lit) => {
                if lit != part {
                    return None;
                }
                literals += 1;
            }
            Segment::Param { name, suffix } => {
                let value = part.strip_suffix(suffix)?;
                if value.is_empty() {
                    return None;
                }
                params.push(name, percent_decode(value)?);
            }
        }
    }
    Some((literals, params))
}

/// Decodes `%XX` escapes; `None` if an escape is broken or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Reply, Request, Response};

    fn h(tag: u16) -> Handler<()> {
        Rc::new(
            move |_s: Rc<()>, _r: Request| -> crate::http::LocalBoxFuture<'static, Reply> {
                Box::pin(async move { Reply::Response(Response::empty(tag)) })
            },
        )
    }

    fn found(r: &Router<()>, m: Method, p: &str) -> Option<(&'static str, Params)> {
        match r.lookup(m, p) {
            Lookup::Found {
                pattern, params, ..
            } => Some((pattern, params)),
            _ => None,
        }
    }

    #[test]
    fn literal_beats_param_and_params_are_decoded() {
        let mut r = Router::new();
        r.add(Method::Get, "/rooms/{id}", h(1));
        r.add(Method::Get, "/rooms/new", h(2));
        r.add(Method::Get, "/live/{stream}.flv", h(3));
        let (p, params) = found(&r, Method::Get, "/rooms/a%20b").unwrap();
        assert_eq!(p, "/rooms/{id}");
        assert_eq!(params.get("id"), Some("a b"));
        assert_eq!(
            found(&r, Method::Get, "/rooms/new").unwrap().0,
            "/rooms/new"
        );
        let (p, params) = found(&r, Method::Get, "/live/cam1.flv").unwrap();
        assert_eq!(p, "/live/{stream}.flv");
        assert_eq!(params.get("stream"), Some("cam1"));
        assert!(found(&r, Method::Get, "/live/.flv").is_none());
        assert!(found(&r, Method::Get, "/live/cam1.m3u8").is_none());
        assert!(found(&r, Method::Get, "/rooms/%zz").is_none());
    }

    #[test]
    fn method_not_allowed_lists_methods_and_head_uses_get() {
        let mut r = Router::new();
        r.add(Method::Get, "/healthz", h(1));
        r.add(Method::Post, "/healthz", h(2));
        assert!(found(&r, Method::Head, "/healthz").is_some());
        match r.lookup(Method::Delete, "/healthz") {
            Lookup::MethodNotAllowed(m) => assert_eq!(m, vec![Method::Get, Method::Post]),
            _ => panic!("expected 405"),
        }
        assert!(matches!(r.lookup(Method::Get, "/nope"), Lookup::NotFound));
        assert!(matches!(
            r.lookup(Method::Get, "/healthz/x"),
            Lookup::NotFound
        ));
    }
}
