//! HTTP callbacks on stream events, in the spirit of SRS's `http_hooks` (and nginx-rtmp's
//! `on_publish`): a JSON POST per event to a configured URL, through the outbound HTTP
//! pool (never on a shard's loop), with a timeout.
//!
//! `on_publish` and `on_play` decide: a 2xx answer whose body is empty or `0` allows the
//! client; any other status or body, or no answer within the timeout, refuses it.
//! `on_unpublish` and `on_stop` are notifications; their answers are ignored.

use std::time::Duration;

use serde::Serialize;

use crate::shard::Shard;

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

/// Asks `url` whether to allow `event`; `Err(reason)` when refused.
pub async fn ask(shard: &Shard, url: &str, event: &Event<'_>) -> Result<(), String> {
    let timeout = shard.common.live.hooks.timeout;
    match shard.common.outbound.post_json(url, event, timeout).await {
        Ok(reply) if (200..300).contains(&reply.status) => {
            let body = String::from_utf8_lossy(&reply.body);
            let body = body.trim();
            if body.is_empty() || body == "0" {
                Ok(())
            } else {
                Err(format!("{} refused by its hook", event.action))
            }
        }
        Ok(reply) => Err(format!(
            "{} refused by its hook (HTTP {})",
            event.action, reply.status
        )),
        Err(e) => Err(format!("{} hook failed: {e}", event.action)),
    }
}

/// Tells `url` about `event`, without waiting for the answer to matter.
pub fn notify(shard: &Shard, url: &str, event: &Event<'_>) {
    let timeout = shard.common.live.hooks.timeout;
    let call = shard.common.outbound.post_json(url, event, timeout);
    monoio::spawn(async move {
        let _ = call.await;
    });
}
