//! The hook receiver: liveshard deciding for another media server. An nginx-rtmp fleet's
//! `on_publish` / `on_play` (`POST /api/v1/hooks/nginx-rtmp`) or an SRS fleet's
//! `http_hooks` (`POST /api/v1/hooks/srs`) asks here, and the answer comes from the same
//! checks liveshard applies to its own publishers and players ([`crate::live::admission`]:
//! app, stream name, push signature or relay key, closed room, liveshard's own hooks; for
//! a play the play signature when `media.play_sign` is on). So rooms and signed URLs made
//! by liveshard's API authorize streams an existing fleet carries, before it moves.
//!
//! The contracts:
//! - nginx-rtmp: a form-encoded POST (`call`, `app`, `name`, `addr`, `tcurl`, `flashver`,
//!   `swfurl`, `pageurl`, `clientid`, `type` or `start`/`duration`/`reset`, then the
//!   client's own query appended as is). Any 2xx allows, anything else refuses (it reads
//!   only the status). The client's query is every field after nginx-rtmp's own; with
//!   none, the query of `tcurl` (a client that signed the app, `rtmp://host/live?…/name`).
//! - SRS: a JSON POST (`action`, `client_id`, `ip`, `vhost`, `app`, `stream`, `param`
//!   with its leading `?`, `tcUrl`). It allows on HTTP 200 with a body whose `code` is 0.
//!
//! nginx-rtmp also asks `on_play` for the local side of its own `push` (no app, flashver
//! `ngx-local-relay`); that is answered like a notification, since the push itself is
//! decided when it publishes here.
//!
//! One answer serves both: allowed is 200 with the API envelope (`{"code":0,…}`);
//! refused is 403 with code 40309 and the reason. Calls that only report (nginx-rtmp's
//! `done`, `publish_done`, `update`, …; SRS's `on_unpublish`, `on_stop`, …) and
//! `connect` are answered 200: the decision is taken at publish and play.
//!
//! Protection: the routes exist only when `media.hook_receiver_key` is set, and a call
//! must carry it as `?key=` in its URL (checked from the head, before the body is read;
//! compared in constant time). Bodies are bounded by [`MAX_BODY_BYTES`] before anything
//! is parsed. Refusals quote no key and no signature; the `key` parameter is one
//! [`crate::logging::redact`] hides.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult, HOOK_BODY_INVALID, HOOK_KEY_REFUSED, HOOK_REFUSED};
use super::Api;
use crate::http::{self, router::percent_decode, Request, RequestHead, Response};
use crate::live::admission::{self, Ask};
use crate::media::sign;

/// The largest hook body read. nginx-rtmp's fields are bounded by its own buffers (a
/// stream name 256 bytes, a URL about 1 KiB each); SRS sends a few hundred bytes.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;

/// Fields nginx-rtmp writes itself: anything else in its form is the client's query.
const NGINX_FIELDS: &[&str] = &[
    "app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "epoch", "call", "name",
    "type", "start", "duration", "reset",
];

/// The flashver nginx-rtmp gives the local session of its own relay.
const NGINX_RELAY_FLASHVER: &str = "ngx-local-relay";

/// What the caller asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Publish,
    Play,
    /// A notification or a call decided elsewhere (answered 200): its name.
    Other(String),
}

/// One hook call, from either contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    pub action: Action,
    pub app: String,
    /// Without a query.
    pub stream: String,
    /// The client's query, without the `?`, as it sent it (not decoded).
    pub query: String,
    /// The client's address, when the caller gave one that parses.
    pub ip: Option<IpAddr>,
}

/// Why a body cannot be read as a hook call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    NotUtf8,
    NotJson,
    /// A field is missing, or not valid percent-encoding.
    Field(&'static str),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::NotUtf8 => f.write_str("the body is not UTF-8"),
            BodyError::NotJson => f.write_str("the body is not a JSON object"),
            BodyError::Field(name) => write!(f, "the body has no valid `{name}`"),
        }
    }
}

/// Reads nginx-rtmp's form (see the module doc). The first occurrence of each of its own
/// fields is its; the rest is the client's query, kept as the client wrote it.
pub fn parse_nginx_rtmp(body: &[u8]) -> Result<HookCall, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut client: Vec<&str> = Vec::new();
    for pair in text.trim_end_matches(['\r', '\n']).split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match NGINX_FIELDS.iter().find(|f| **f == k) {
            Some(&name) if !fields.iter().any(|(n, _)| *n == name) => fields.push((name, v)),
            _ => client.push(pair),
        }
    }
    let field = |name: &'static str| -> Result<String, BodyError> {
        let raw = fields
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v);
        percent_decode(&raw.replace('+', " ")).ok_or(BodyError::Field(name))
    };
    let call = field("call")?;
    let app = field("app")?;
    let action = match call.as_str() {
        // nginx-rtmp's own relay: each `push` plays the stream locally and asks `on_play`
        // for it, with no app (a client's connect must name one) and this flashver.
        "play" if app.is_empty() && field("flashver")? == NGINX_RELAY_FLASHVER => {
            Action::Other("relay".to_owned())
        }
        "publish" => Action::Publish,
        "play" => Action::Play,
        "" => return Err(BodyError::Field("call")),
        other => Action::Other(other.to_owned()),
    };
    let mut query = client.join("&");
    if query.is_empty() {
        query = query_of_url(&field("tcurl")?);
    }
    let call = HookCall {
        app,
        stream: field("name")?,
        query,
        ip: field("addr")?.parse().ok(),
        action,
    };
    needs_names(call)
}

/// SRS's `http_hooks` body; fields it sends that are not read here are ignored.
#[derive(Deserialize)]
struct SrsBody {
    #[serde(default)]
    action: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    param: String,
    #[serde(default, rename = "tcUrl")]
    tc_url: String,
}

/// Reads SRS's JSON (see the module doc).
pub fn parse_srs(body: &[u8]) -> Result<HookCall, BodyError> {
    let b: SrsBody = serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
    let action = match b.action.as_str() {
        "on_publish" => Action::Publish,
        "on_play" => Action::Play,
        "" => return Err(BodyError::Field("action")),
        other => Action::Other(other.to_owned()),
    };
    let mut query = b.param.strip_prefix('?').unwrap_or(&b.param).to_owned();
    if query.is_empty() {
        query = query_of_url(&b.tc_url);
    }
    needs_names(HookCall {
        action,
        // SRS may pass the app with its query (`live?vhost=…`); the name is before it.
        app: b.app.split('?').next().unwrap_or_default().to_owned(),
        stream: b.stream,
        query,
        ip: b.ip.parse().ok(),
    })
}

/// A publish or a play must name its app and stream; a notification need not.
fn needs_names(call: HookCall) -> Result<HookCall, BodyError> {
    if matches!(call.action, Action::Publish | Action::Play) {
        if call.app.is_empty() {
            return Err(BodyError::Field("app"));
        }
        if call.stream.is_empty() {
            return Err(BodyError::Field("stream"));
        }
    }
    Ok(call)
}

/// The query of a URL (`rtmp://host/live?k=v` → `k=v`), empty when it has none.
fn query_of_url(url: &str) -> String {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('#')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The key check, from the request head (before the body): `?key=` must be
/// `media.hook_receiver_key`.
pub fn gate(api: &Api, head: &RequestHead) -> Result<(), Response> {
    check_key(api, head).map_err(|e| e.response())
}

fn check_key(api: &Api, head: &RequestHead) -> ApiResult<()> {
    let configured = &api.config().media.hook_receiver_key;
    let given = head
        .query
        .as_deref()
        .and_then(|q| http::query_param(q, "key"));
    match given {
        Some(given) if !configured.is_empty() && sign::same_secret(configured, &given) => Ok(()),
        _ => Err(ApiError::new(
            HOOK_KEY_REFUSED,
            "missing or wrong hook key (?key=, media.hook_receiver_key)",
        )),
    }
}

/// `POST /api/v1/hooks/nginx-rtmp?key=…`.
pub async fn nginx_rtmp(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    check_key(&api, &req.head)?;
    let call = parse_nginx_rtmp(&req.body).map_err(bad_body)?;
    decide(&api, &req, call).await
}

/// `POST /api/v1/hooks/srs?key=…`.
pub async fn srs(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    check_key(&api, &req.head)?;
    let call = parse_srs(&req.body).map_err(bad_body)?;
    decide(&api, &req, call).await
}

fn bad_body(e: BodyError) -> ApiError {
    ApiError::new(HOOK_BODY_INVALID, e.to_string())
}

async fn decide(api: &Api, req: &Request, call: HookCall) -> ApiResult<Response> {
    // The client's address as the caller reports it; else the caller's own.
    let peer = SocketAddr::new(call.ip.unwrap_or(req.peer.ip()), 0);
    let ask = Ask {
        app: &call.app,
        stream: &call.stream,
        query: &call.query,
        peer,
        protocol: "rtmp",
    };
    let verdict = match &call.action {
        Action::Publish => admission::publish(&api.live, &ask).await,
        Action::Play => admission::play(&api.live, &ask).await,
        Action::Other(name) => {
            return Ok(Response::ok(&json!({ "call": name, "allowed": true })));
        }
    };
    match verdict {
        Ok(()) => Ok(Response::ok(&json!({ "allowed": true }))),
        Err((_, why)) => {
            tracing::info!(stream = %call.stream, caller = %req.peer, reason = %why, "hook call refused");
            Err(ApiError::new(HOOK_REFUSED, why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX_PUBLISH: &str = "app=live&flashver=FMLE%2F3.0%20%28compatible%3B%20FMSc%2F1.0%29\
        &swfurl=&tcurl=rtmp%3A%2F%2F127.0.0.1%3A1935%2Flive&pageurl=&addr=192.0.2.7\
        &clientid=12&call=publish&name=room1&type=live\
        &txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099";

    #[test]
    fn an_nginx_rtmp_publish_form_gives_the_stream_and_the_clients_query() {
        let c = parse_nginx_rtmp(NGINX_PUBLISH.as_bytes()).unwrap();
        assert_eq!(c.action, Action::Publish);
        assert_eq!(c.app, "live");
        assert_eq!(c.stream, "room1");
        assert_eq!(
            c.query,
            "txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099"
        );
        assert_eq!(c.ip, Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn the_clients_query_cannot_override_nginx_rtmps_fields() {
        let body = "app=live&addr=192.0.2.7&call=play&name=room1&start=0&duration=0&reset=0\
            &name=other&app=x&relay_key=k";
        let c = parse_nginx_rtmp(body.as_bytes()).unwrap();
        assert_eq!(c.action, Action::Play);
        assert_eq!((c.app.as_str(), c.stream.as_str()), ("live", "room1"));
        assert_eq!(c.query, "name=other&app=x&relay_key=k");
    }

    #[test]
    fn a_signature_on_the_app_is_read_from_tcurl() {
        let body = "app=live&tcurl=rtmp%3A%2F%2Fh%2Flive%3FtxSecret%3Dab%26txTime%3D5C\
            &addr=nonsense&call=publish&name=room1&type=live";
        let c = parse_nginx_rtmp(body.as_bytes()).unwrap();
        assert_eq!(c.query, "txSecret=ab&txTime=5C");
        assert_eq!(c.ip, None);
    }

    #[test]
    fn nginx_rtmps_own_relay_play_is_not_a_player() {
        // What nginx-rtmp 1.2 sends for the local side of `push rtmp://…?relay_key=…`.
        let body = "app=&flashver=ngx-local-relay&swfurl=&tcurl=&pageurl=\
            &addr=127.0.0.1:1935/live%3Frelay_key=k&clientid=3&call=play&name=room2\
            &start=0&duration=0&reset=0";
        let c = parse_nginx_rtmp(body.as_bytes()).unwrap();
        assert_eq!(c.action, Action::Other("relay".into()));
        // A client naming that flashver still names an app, and is a player.
        let body = "app=live&flashver=ngx-local-relay&call=play&name=room2";
        let c = parse_nginx_rtmp(body.as_bytes()).unwrap();
        assert_eq!(c.action, Action::Play);
    }

    #[test]
    fn nginx_rtmp_notifications_need_no_stream() {
        let c = parse_nginx_rtmp(b"app=live&call=update_publish&time=3").unwrap();
        assert_eq!(c.action, Action::Other("update_publish".into()));
        let c = parse_nginx_rtmp(b"app=live&call=connect").unwrap();
        assert_eq!(c.action, Action::Other("connect".into()));
    }

    #[test]
    fn bad_nginx_rtmp_bodies_are_named() {
        assert_eq!(parse_nginx_rtmp(b"\xff\xfe"), Err(BodyError::NotUtf8));
        assert_eq!(parse_nginx_rtmp(b""), Err(BodyError::Field("call")));
        assert_eq!(
            parse_nginx_rtmp(b"call=publish&name=x"),
            Err(BodyError::Field("app"))
        );
        assert_eq!(
            parse_nginx_rtmp(b"call=publish&app=live"),
            Err(BodyError::Field("stream"))
        );
        assert_eq!(
            parse_nginx_rtmp(b"call=publish&app=live&name=%zz"),
            Err(BodyError::Field("name"))
        );
    }

    #[test]
    fn an_srs_hook_gives_the_stream_and_its_param() {
        let body = br#"{"server_id":"vid-1","action":"on_publish","client_id":"341w361a",
            "ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live",
            "tcUrl":"rtmp://127.0.0.1:1935/live","stream":"room1",
            "param":"?txSecret=ab&txTime=5C","stream_url":"/live/room1"}"#;
        let c = parse_srs(body).unwrap();
        assert_eq!(c.action, Action::Publish);
        assert_eq!((c.app.as_str(), c.stream.as_str()), ("live", "room1"));
        assert_eq!(c.query, "txSecret=ab&txTime=5C");
        assert_eq!(c.ip, Some("127.0.0.1".parse().unwrap()));
        let play = br#"{"action":"on_play","app":"live?vhost=v","stream":"s","param":"",
            "tcUrl":"rtmp://h/live?txSecret=cd&txTime=6D"}"#;
        let c = parse_srs(play).unwrap();
        assert_eq!(c.action, Action::Play);
        assert_eq!(c.app, "live");
        assert_eq!(c.query, "txSecret=cd&txTime=6D");
        let c = parse_srs(br#"{"action":"on_unpublish"}"#).unwrap();
        assert_eq!(c.action, Action::Other("on_unpublish".into()));
    }

    #[test]
    fn bad_srs_bodies_are_named() {
        assert_eq!(parse_srs(b"app=live"), Err(BodyError::NotJson));
        assert_eq!(parse_srs(b"[1]"), Err(BodyError::NotJson));
        assert_eq!(parse_srs(br#"{"action":3}"#), Err(BodyError::NotJson));
        assert_eq!(parse_srs(b"{}"), Err(BodyError::Field("action")));
        assert_eq!(
            parse_srs(br#"{"action":"on_play","app":"live"}"#),
            Err(BodyError::Field("stream"))
        );
    }
}
