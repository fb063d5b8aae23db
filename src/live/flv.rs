//! HTTP-FLV play: `GET /{app}/{stream}.flv`, a chunked `video/x-flv` body that starts with
//! the FLV header and the GOP cache (so the player decodes at once) and continues live.
//!
//! Checks before the response starts: the app, the Referer allow-list (anti-hotlinking;
//! `media.referer_allow`), the play signature when `media.play_sign` is on, the stream
//! live, and the `on_play` hook. Refusals are JSON error envelopes (404, 403). HLS
//! (`super::hls`) runs the same checks: [`check_http_play`] and [`ask_on_play`].
//! The response ends (`0\r\n\r\n`) when the stream goes offline. A request with the
//! cluster key (another node pulling the stream, `super::pull`) skips the Referer list,
//! the signature and the hooks; a stream not live here may be live on another node of the
//! cluster, and is then pulled from it ([`Live::watch_remote`]).

use std::net::SocketAddr;
use std::rc::Rc;

use crate::sock::Sock;
use bytes::{Bytes, BytesMut};
use monoio::io::Splitable;

use super::admission::{self, Ask};
use super::engine::{Live, Proto, Viewer};
use super::hooks;
use super::{valid_stream, StreamId};
use crate::codes;
use crate::http::{self, code, Reply, Request, Response};
use crate::outq::{spawn_writer, OutQueue, Policy, Timeout};
use crate::sockio::{read_append, readable};

const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, no-store\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n";

pub fn handler() -> http::Handler<Live> {
    http::handler(flv_handler)
}

async fn flv_handler(live: Rc<Live>, req: Request) -> Reply {
    // The time to first frame runs from here (the play hook included).
    let requested = std::time::Instant::now();
    let Some(name) = req.param("stream") else {
        return not_found().into();
    };
    // Another node of the cluster pulling a stream published here: its key stands for
    // the play signature, the Referer list and the play hooks.
    let pull = cluster_pull(&live, &req);
    let query = if pull {
        if req.param("app") != Some(live.settings().app.as_str()) || !valid_stream(name) {
            return not_found().into();
        }
        String::new()
    } else {
        match check_http_play(&live, &req, name) {
            Ok(query) => query,
            Err(refused) => return refused.into(),
        }
    };
    if !live.is_watchable(name) && (pull || !live.watch_remote(name).await) {
        return not_found().into();
    }
    if !pull {
        if let Err(refused) = ask_on_play(&live, name, &query, req.peer, "flv").await {
            return refused.into();
        }
    }
    let stream: StreamId = name.into();
    let peer = req.peer;
    Reply::Takeover(Box::new(move |sock, _rest, held| {
        crate::http::hold(
            held,
            serve(live, sock, stream, query, peer, requested, !pull),
        )
    }))
}

/// Whether the request carries this node's cluster key (`cluster.key`, compared in
/// constant time): another node pulling a stream (`super::pull`).
fn cluster_pull(live: &Live, req: &Request) -> bool {
    let key = &live.settings().cluster_key;
    !key.is_empty()
        && req
            .header(super::pull::CLUSTER_KEY_HEADER)
            .is_some_and(|given| crate::media::sign::same_secret(key, given))
}

pub(super) fn not_found() -> Response {
    Response::error(404, code::NOT_FOUND, "no such live stream")
}

/// The checks every HTTP play request passes before its stream is looked up (HTTP-FLV
/// and HLS): the app, a valid stream name, the Referer allow-list, and the play signature
/// when `media.play_sign` is on. Returns the request's query (for hooks and for the
/// signature HLS carries on to its segment URLs); a refusal is the response to send.
pub(super) fn check_http_play(live: &Live, req: &Request, name: &str) -> Result<String, Response> {
    let settings = &live.ctx.settings;
    if req.param("app") != Some(settings.app.as_str()) || !valid_stream(name) {
        return Err(not_found());
    }
    if !settings.referer_allow.is_empty()
        && !referer_allowed(req.header("referer"), &settings.referer_allow)
    {
        return Err(Response::error(
            403,
            codes::PLAY_REFERER_REFUSED,
            "referer not allowed",
        ));
    }
    let query = req.head.query.clone().unwrap_or_default();
    if let Err(e) = admission::play_signature(live, name, &query) {
        return Err(Response::error(
            403,
            codes::PLAY_SIGNATURE_REFUSED,
            format!("play refused: {e}"),
        ));
    }
    Ok(query)
}

/// Asks the `on_play` hook, when one is configured, whether `peer` may play `name`.
pub(super) async fn ask_on_play(
    live: &Live,
    name: &str,
    query: &str,
    peer: SocketAddr,
    protocol: &'static str,
) -> Result<(), Response> {
    let ask = Ask {
        app: &live.settings().app,
        stream: name,
        query,
        peer,
        protocol,
    };
    admission::on_play(live, &ask)
        .await
        .map_err(|why| Response::error(403, codes::PLAY_HOOK_REFUSED, why))
}

/// Whether the Referer's host is an allowed host or a subdomain of one.
fn referer_allowed(referer: Option<&str>, allow: &[String]) -> bool {
    let Some(r) = referer else { return false };
    let host = r
        .split_once("://")
        .map_or(r, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
    allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        host == a || host.ends_with(&format!(".{a}"))
    })
}

async fn serve(
    live: Rc<Live>,
    sock: Sock,
    stream: StreamId,
    query: String,
    peer: SocketAddr,
    requested: std::time::Instant,
    hooks: bool,
) {
    let settings = &live.ctx.settings;
    if settings.send_buffer > 0 {
        sock.set_send_buffer(settings.send_buffer);
    }
    let outbox = Rc::new(OutQueue::new(
        settings.viewer_queue_bytes,
        Policy::SkipToKeyframe,
    ));
    outbox.set_fd(std::os::fd::AsRawFd::as_raw_fd(&sock));
    outbox.send(Bytes::from_static(HEAD.as_bytes()));
    let viewer = Viewer::new(outbox.clone(), Proto::Flv);
    viewer.requested.set(Some(requested));
    let watching = live.watch(&stream, viewer.clone());
    let (mut reader, writer) = sock.into_split();
    let write_timeout = live.settings().write_timeout;
    let writer_task = {
        let live = live.clone();
        spawn_writer(
            outbox.clone(),
            writer,
            Timeout::EachWrite(write_timeout),
            move |n| live.wrote(n),
        )
    };
    if watching {
        // Until the player hangs up (EOF), the stream ends, or the outbox gives up.
        let mut buf = BytesMut::new();
        loop {
            let woke = monoio::select! {
                r = readable(&reader) => r.is_ok(),
                _ = viewer.ended.notified() => false,
                _ = live.ctx.shutdown.wait() => false,
                _ = outbox.reader_notified() => false,
            };
            if !woke || viewer.is_ended.get() {
                break;
            }
            let (res, b) = read_append(&mut reader, buf, 512).await;
            match res {
                // A player sends nothing after its request; anything it does send is dropped.
                Ok(n) if n > 0 => {
                    let mut b = b;
                    b.clear();
                    buf = b;
                }
                _ => {
                    outbox.abort();
                    break;
                }
            }
        }
        live.unwatch(&stream, &viewer);
        if let Some(url) = settings.hooks.on_stop.as_ref().filter(|_| hooks) {
            hooks::notify(
                &live,
                url,
                &hooks::event("on_stop", &live, &stream, &query, peer, "flv"),
            );
        }
    }
    // The last chunk: the body ends cleanly when the stream does.
    outbox.send(Bytes::from_static(b"0\r\n\r\n"));
    outbox.finish();
    writer_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referer_hosts_and_subdomains() {
        let allow = vec!["servicewechat.com".to_string(), "example.org".to_string()];
        assert!(referer_allowed(
            Some("https://servicewechat.com/wx123/page"),
            &allow
        ));
        assert!(referer_allowed(
            Some("https://a.example.org:8443/x"),
            &allow
        ));
        assert!(!referer_allowed(
            Some("https://evil.com/?servicewechat.com"),
            &allow
        ));
        assert!(!referer_allowed(Some("https://notexample.org/"), &allow));
        assert!(!referer_allowed(
            Some("https://servicewechat.com@evil.com/"),
            &allow
        ));
        assert!(!referer_allowed(None, &allow));
    }
}
