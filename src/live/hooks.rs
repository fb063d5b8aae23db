//! HTTP callbacks on stream events, in the spirit of SRS's `http_hooks` (and nginx-rtmp's
//! `on_publish`): a JSON POST per event to a configured URL, through the outbound HTTP
//! pool (never on a shard's loop), with a timeout.
//!
//! `on_publish` and `on_play` decide. A 2xx answer allows the client when its body is
//! empty, `0`, or a JSON object whose `code` is 0 (`{"code":0}`, what SRS receivers send;
//! `"0"` too). Anything else refuses: another body on a 2xx, any other status, or no
//! answer within the timeout. The refusal the client sees (RTMP `onStatus` description,
//! HTTP error message) carries the receiver's text, cleaned and cut to
//! [`REASON_MAX_CHARS`], so an operator's "banned until 10:00" reaches the user.
//! nginx-rtmp's `on_publish` contract ("2xx allows, 3xx redirects, else refuses") maps
//! to this: a 2xx with one of the bodies above allows; a 3xx refuses (streams are not
//! redirected; the outbound client follows no redirects), as does 4xx/5xx.
//! `on_unpublish` and `on_stop` are notifications; their answers are ignored.
//!
//! Hook URLs may carry credentials in their query and the event's `param` carries the
//! client's `txSecret`: the body goes to the receiver as is, but a failed call is logged
//! with the URL through [`crate::logging::redact`], and the client is told only its kind
//! ("timed out", "cannot connect"), not the hook's address.

use std::time::Duration;

use serde::Serialize;

use std::net::SocketAddr;

use super::engine::Live;

#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub on_publish: Option<String>,
    pub on_unpublish: Option<String>,
    pub on_play: Option<String>,
    pub on_stop: Option<String>,
    pub timeout: Duration,
}

impl Hooks {
    pub fn from_config(m: &crate::config::MediaConfig) -> Self {
        let url = |s: &String| (!s.is_empty()).then(|| s.clone());
        Self {
            on_publish: url(&m.on_publish),
            on_unpublish: url(&m.on_unpublish),
            on_play: url(&m.on_play),
            on_stop: url(&m.on_stop),
            timeout: Duration::from_millis(m.hook_timeout_ms),
        }
    }
}

/// The body of every callback (SRS's field names).
#[derive(Serialize)]
pub struct Event<'a> {
    pub action: &'static str,
    pub client_id: String,
    pub ip: String,
    pub vhost: &'static str,
    pub app: &'a str,
    pub stream: &'a str,
    /// The query the client sent, with its leading `?` (signatures included).
    pub param: String,
    /// "rtmp", "flv" or "hls".
    pub protocol: &'static str,
}

/// The longest part of a receiver's answer quoted in a refusal.
pub const REASON_MAX_CHARS: usize = 200;

/// Asks `url` whether to allow `event`; `Err(reason)` when refused.
pub async fn ask(live: &Live, url: &str, event: &Event<'_>) -> Result<(), String> {
    let timeout = live.settings().hooks.timeout;
    let reply = live.ctx.outbound.post_json(url, event, timeout).await;
    if let Err(e) = &reply {
        // The details (which host, why) are for the operator; the client gets the kind.
        let hook = crate::logging::redact(url);
        tracing::warn!(action = event.action, %hook, error = %e, "hook call failed");
    }
    verdict(event.action, reply)
}

/// Decides from the hook's answer (see the module doc).
fn verdict(
    action: &str,
    reply: Result<crate::outbound::HttpReply, crate::outbound::OutboundError>,
) -> Result<(), String> {
    match reply {
        Ok(reply) if (200..300).contains(&reply.status) => {
            if allows(&reply.body) {
                Ok(())
            } else {
                Err(format!(
                    "{action} refused by its hook: {}",
                    receiver_text(&reply.body)
                ))
            }
        }
        Ok(reply) => {
            let text = receiver_text(&reply.body);
            if text.is_empty() {
                Err(format!(
                    "{action} refused by its hook (HTTP {})",
                    reply.status
                ))
            } else {
                Err(format!(
                    "{action} refused by its hook (HTTP {}): {text}",
                    reply.status
                ))
            }
        }
        Err(e) => Err(format!("{action} hook failed: {}", failure(&e))),
    }
}

/// What a client is told about a failed hook call: the kind, not the hook's address.
fn failure(e: &crate::outbound::OutboundError) -> &'static str {
    use crate::outbound::OutboundError as E;
    match e {
        E::Busy | E::Closed => "server busy, retry",
        E::Timeout => "timed out",
        E::Connect(_) => "cannot connect",
        E::TooLarge => "answer too large",
        E::BadUrl(_) => "bad hook URL",
        E::Io(_) => "bad answer",
    }
}

/// Whether a 2xx body allows: empty, `0`, or a JSON object with `code` 0 (or `"0"`).
fn allows(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text == "0" {
        return true;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => match map.get("code") {
            Some(serde_json::Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(serde_json::Value::String(s)) => s.trim() == "0",
            _ => false,
        },
        _ => false,
    }
}

/// The receiver's answer as it may be shown to a client: control and invisible
/// characters removed, at most [`REASON_MAX_CHARS`] characters.
fn receiver_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let clean = crate::text::clean_text(&text);
    let mut chars = clean.chars();
    let mut out: String = chars.by_ref().take(REASON_MAX_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Tells `url` about `event`, without waiting for the answer to matter.
pub fn notify(live: &Live, url: &str, event: &Event<'_>) {
    let timeout = live.settings().hooks.timeout;
    let call = live.ctx.outbound.post_json(url, event, timeout);
    monoio::spawn(async move {
        let _ = call.await;
    });
}

/// The callback body for `action` on `stream` by the client at `peer`.
pub fn event<'a>(
    action: &'static str,
    live: &'a Live,
    stream: &'a str,
    query: &str,
    peer: SocketAddr,
    protocol: &'static str,
) -> Event<'a> {
    Event {
        action,
        client_id: format!("{}-{}", live.ctx.port.me(), peer),
        ip: peer.ip().to_string(),
        vhost: "__defaultVhost__",
        app: &live.settings().app,
        stream,
        param: if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        },
        protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{HttpReply, OutboundError};

    fn answer(status: u16, body: &str) -> Result<(), String> {
        verdict(
            "on_publish",
            Ok(HttpReply {
                status,
                body: body.as_bytes().to_vec(),
            }),
        )
    }

    #[test]
    fn srs_and_nginx_rtmp_style_answers_allow() {
        for body in [
            "",
            "0",
            " 0\n",
            r#"{"code":0}"#,
            r#"{"code": 0, "msg": "ok"}"#,
        ] {
            assert_eq!(answer(200, body), Ok(()), "{body:?}");
        }
        assert_eq!(answer(204, ""), Ok(()));
        assert_eq!(answer(200, r#"{"code":"0"}"#), Ok(()));
        assert_eq!(answer(200, r#"{"code":0.0}"#), Ok(()));
    }

    #[test]
    fn anything_else_refuses_with_the_receivers_text() {
        let why = answer(200, r#"{"code":403,"msg":"no"}"#).unwrap_err();
        assert_eq!(
            why,
            r#"on_publish refused by its hook: {"code":403,"msg":"no"}"#
        );
        assert!(answer(200, "1").unwrap_err().ends_with(": 1"));
        assert!(answer(200, "[0]").is_err());
        assert!(answer(200, r#"{"msg":"no code"}"#).is_err());
        assert!(answer(200, r#"{"code":null}"#).is_err());
        assert!(answer(200, "false").is_err());
        assert_eq!(
            answer(403, "0").unwrap_err(),
            "on_publish refused by its hook (HTTP 403): 0"
        );
        assert_eq!(
            answer(302, "").unwrap_err(),
            "on_publish refused by its hook (HTTP 302)"
        );
    }

    #[test]
    fn the_quoted_text_is_bounded_and_cleaned() {
        let long = format!("deny\u{202E}\u{0}{}", "x".repeat(5000));
        let why = answer(200, &long).unwrap_err();
        assert!(
            why.starts_with("on_publish refused by its hook: denyxxx"),
            "{why}"
        );
        assert!(why.chars().count() < REASON_MAX_CHARS + 50, "{}", why.len());
        assert!(why.ends_with('…'));
    }

    #[test]
    fn a_failed_call_names_no_secret() {
        let e = OutboundError::Connect(
            "http://hooks.example/on_publish?token=hunter2: Connection Failed".into(),
        );
        let why = verdict("on_publish", Err(e)).unwrap_err();
        assert_eq!(why, "on_publish hook failed: cannot connect");
    }
}
