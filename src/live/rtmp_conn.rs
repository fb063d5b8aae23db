//! The RTMP connection driver: one task per connection on the shard that accepted it,
//! feeding socket bytes to a sans-IO [`ServerSession`] and acting on its events; a writer
//! task drains the connection's [`OutQueue`] (session replies, and for a player the shared
//! media `Bytes`).
//!
//! A publish is checked in this order — the checks of [`super::admission`] (app, stream
//! name, relay key or signature with `media.push_key`, the room not closed, the
//! `on_publish` hook), with `cluster.redis` the stream's claim across nodes
//! ([`crate::cluster::media`]: held by another node is refused like a second publisher
//! here; Redis unreachable lets it through on this node alone), then the stream's home
//! granting the claim — and refused at the first failure with an `onStatus` error whose
//! description says why, then the connection closes. A play is checked likewise
//! (signature only with `media.play_sign`, `on_play`, the stream live, here or on another
//! node it is then pulled from, `super::pull`). Each check has its own key: a publish
//! only the push key (or the relay key), a play only the play key, so a play URL never
//! publishes ([`crate::auth::MediaKeys`]).
//!
//! Time limits: the handshake and the publish/play request must come within
//! [`SETUP_TIMEOUT`]; a publisher silent for [`PUBLISH_IDLE`] is treated as lost (its
//! claim then waits out the grace period). A player may stay silent.
//!
//! Memory limits: until its publish is accepted a connection may hold 16 KiB of partial
//! messages ([`ChunkLimits::before_publish`]; players stay there), so an unauthenticated
//! peer costs its read buffer and little more. An accepted publisher gets
//! `media.max_message_bytes` per message, twice that (at least 16 MiB) of partial messages,
//! and shares the shard's `media.max_partial_bytes_per_shard` with the other publishers
//! there; passing that closes it (logged, `liveshard_media_partial_limit_closed_total`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::Splitable;
use monoio::net::TcpStream;
use shards::local::Notify;

use super::admission::{self, Ask, Refusal};
use super::engine::{ClaimAnswer, Live, Proto, Viewer};
use super::hooks;
use super::StreamId;
use crate::cluster::media as cluster;
use crate::media::rtmp::chunk::MAX_MESSAGE_LEN;
use crate::media::rtmp::{
    status, ChunkError, ChunkLimits, Event, PlayRequest, PublishRequest, ServerSession,
    SessionConfig, SessionError,
};
use crate::media::timeline::Resume;
use crate::outq::{spawn_writer, OutQueue, Policy, Timeout};
use crate::sockio::read_append;

/// Handshake plus the publish or play request.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// No input from a publisher for this long: the publisher is lost.
pub const PUBLISH_IDLE: Duration = Duration::from_secs(20);
const READ_CHUNK: usize = 16 * 1024;
/// Replies (acknowledgements, pongs, command results) waiting for a peer that is not a
/// player. Each answers input of about its own size, so a peer that sends pings or
/// commands and never reads would otherwise queue what it sends until the write timeout
/// (`http.write_timeout_ms`, 30 s) — at loopback speed, gigabytes. Real clients read
/// their replies; 64 KiB is thousands of them.
const REPLY_QUEUE_LIMIT: usize = 64 * 1024;

enum Role {
    Setup,
    Publisher {
        stream: StreamId,
        stop: Rc<Notify>,
        unpublished: bool,
        query: String,
    },
    Player {
        stream: StreamId,
        viewer: Rc<Viewer>,
        query: String,
    },
}

pub async fn serve(live: Rc<Live>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let settings = &live.ctx.settings;
    let max_message = settings.max_message_bytes.min(MAX_MESSAGE_LEN as usize);
    let config = SessionConfig {
        chunk_limits: ChunkLimits::before_publish(),
        publish_chunk_limits: ChunkLimits {
            max_message_size: max_message as u32,
            // A whole message plus what interleaves with it (audio, data).
            max_buffered: (2 * max_message).max(ChunkLimits::default().max_buffered),
            ..ChunkLimits::default()
        },
        ..SessionConfig::default()
    };
    let mut session = ServerSession::new(config, Instant::now());
    session.set_publish_budget(live.partial_budget());
    let outbox = Rc::new(OutQueue::new(
        settings.viewer_queue_bytes,
        Policy::SkipToKeyframe,
    ));
    outbox.set_fd(std::os::fd::AsRawFd::as_raw_fd(&stream));
    let (mut reader, writer) = stream.into_split();
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

    let started = Instant::now();
    let mut role = Role::Setup;
    let mut abandon = false;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let never = Notify::new();
    loop {
        while let Some(b) = session.poll_transmit() {
            outbox.send(b);
        }
        if session.is_closing() || !outbox.is_open() {
            break;
        }
        // A player's queue also holds media: the GOP cache it started with (queued whole)
        // and live frames under the slow-viewer bound. Replies may come on top of that,
        // not unboundedly.
        let reply_bound = match &role {
            Role::Player { .. } => {
                settings.viewer_queue_bytes
                    + settings.gop.max_bytes
                    + crate::media::gop::SLOTS * crate::media::gop::MAX_SLOT_BYTES
                    + REPLY_QUEUE_LIMIT
            }
            _ => REPLY_QUEUE_LIMIT,
        };
        if outbox.queued_bytes() > reply_bound {
            tracing::debug!(
                %peer,
                queued = outbox.queued_bytes(),
                "RTMP peer does not read its replies; closed"
            );
            // Not flushed: it would wait out the write timeout for a peer that won't read.
            abandon = true;
            break;
        }
        let deadline = match &role {
            Role::Setup => Some(started + SETUP_TIMEOUT),
            Role::Publisher { .. } => Some(session.last_input() + PUBLISH_IDLE),
            Role::Player { .. } => None,
        };
        let (stop, ended) = match &role {
            Role::Publisher { stop, .. } => (&**stop, &never),
            Role::Player { viewer, .. } => (&never, &viewer.ended),
            Role::Setup => (&never, &never),
        };
        let read = read_with_deadline(&mut reader, buf, deadline);
        let outcome = monoio::select! {
            r = read => Wake::Read(r),
            // The server stops: a stream ends now (not after the grace period), a player is
            // told, like an operator's stop.
            _ = live.ctx.shutdown.wait() => Wake::Stop,
            _ = stop.notified() => Wake::Stop,
            _ = ended.notified() => Wake::Ended,
            _ = outbox.reader_notified() => Wake::Closed,
        };
        let (n, b) = match outcome {
            Wake::Read(Some((n, b))) if n > 0 => (n, b),
            Wake::Stop => {
                match &mut role {
                    // Closed by the operator or the shutdown: the stream ends now, not
                    // after the grace period.
                    Role::Publisher { unpublished, .. } => *unpublished = true,
                    Role::Player { .. } => {
                        session.notify_unpublished();
                        while let Some(b) = session.poll_transmit() {
                            outbox.send(b);
                        }
                    }
                    Role::Setup => {}
                }
                break;
            }
            Wake::Ended => {
                // The stream went offline: tell the player, let the outbox drain, close.
                session.notify_unpublished();
                while let Some(b) = session.poll_transmit() {
                    outbox.send(b);
                }
                break;
            }
            _ => break,
        };
        let _ = n;
        buf = b;
        if let Err(e) = session.handle_input(&buf, Instant::now()) {
            note_input_error(&live, &role, peer, &e);
            // What the session still has to say (an acknowledgement, a pong) goes out.
            while let Some(b) = session.poll_transmit() {
                outbox.send(b);
            }
            break;
        }
        buf.clear();
        let mut done = false;
        while let Some(event) = session.poll_event() {
            if !on_event(&live, &mut session, &mut role, &outbox, peer, event).await {
                done = true;
                break;
            }
        }
        if done {
            // Unpublished, stopped playing, or refused: the connection ends here (what the
            // session still has to say goes out first), not when the peer hangs up.
            while let Some(b) = session.poll_transmit() {
                outbox.send(b);
            }
            break;
        }
    }
    match role {
        Role::Publisher {
            stream,
            unpublished,
            query,
            ..
        } => {
            live.publisher_gone(&stream, unpublished);
            if let Some(url) = &settings.hooks.on_unpublish {
                hooks::notify(
                    &live,
                    url,
                    &hooks::event("on_unpublish", &live, &stream, &query, peer, "rtmp"),
                );
            }
        }
        Role::Player {
            stream,
            viewer,
            query,
        } => {
            live.unwatch(&stream, &viewer);
            if let Some(url) = &settings.hooks.on_stop {
                hooks::notify(
                    &live,
                    url,
                    &hooks::event("on_stop", &live, &stream, &query, peer, "rtmp"),
                );
            }
        }
        Role::Setup => {}
    }
    if abandon {
        outbox.abort();
    } else {
        outbox.finish();
    }
    writer_task.await;
}

/// Says why input closed the connection. Passing the shard's partial-message bound is
/// the one an operator must see (a warning and a metric): it means the shard's
/// publishers together are sending more unfinished messages than it is sized for.
fn note_input_error(live: &Live, role: &Role, peer: SocketAddr, e: &SessionError) {
    let stream = match role {
        Role::Publisher { stream, .. } | Role::Player { stream, .. } => stream.as_ref(),
        Role::Setup => "",
    };
    if let SessionError::Chunk(ChunkError::SharedBufferLimit { .. }) = e {
        live.ctx.metrics.media_partial_closed.fetch_add(1, Relaxed);
        tracing::warn!(
            %peer,
            stream,
            error = %e,
            "RTMP publisher closed: media.max_partial_bytes_per_shard reached"
        );
    } else {
        tracing::debug!(%peer, stream, error = %e, "RTMP connection closed on bad input");
    }
}

enum Wake {
    Read(Option<(usize, BytesMut)>),
    Stop,
    Ended,
    Closed,
}

/// One read, bounded by `deadline` if given. `None` on error or timeout.
async fn read_with_deadline<R: monoio::io::AsyncReadRent>(
    r: &mut R,
    buf: BytesMut,
    deadline: Option<Instant>,
) -> Option<(usize, BytesMut)> {
    let read = read_append(r, buf, READ_CHUNK);
    let (res, buf) = match deadline {
        Some(d) => monoio::time::timeout(d.saturating_duration_since(Instant::now()), read)
            .await
            .ok()?,
        None => read.await,
    };
    res.ok().map(|n| (n, buf))
}

/// Acts on one session event. Returns false when the connection must close.
async fn on_event(
    live: &Rc<Live>,
    session: &mut ServerSession,
    role: &mut Role,
    outbox: &Rc<OutQueue>,
    peer: SocketAddr,
    event: Event,
) -> bool {
    match event {
        Event::Publish(req) => match check_publish(live, &req, peer).await {
            Ok((stream, resume)) => {
                if session.accept_publish().is_err() {
                    return false;
                }
                let stop = live.start_owned_at(&stream, resume);
                tracing::info!(stream = %stream, %peer, "publishing");
                *role = Role::Publisher {
                    stream,
                    stop,
                    unpublished: false,
                    query: req.query.unwrap_or_default(),
                };
                true
            }
            Err((code, why)) => {
                tracing::info!(stream = %req.stream, %peer, reason = %why, "publish refused");
                let _ = session.reject(code, &why);
                true
            }
        },
        // The time to first frame runs from the play command (the play hook included).
        Event::Play(req) => match (Instant::now(), check_play(live, &req, peer).await) {
            (asked, Ok(stream)) => {
                if session.accept_play().is_err() {
                    return false;
                }
                // The session's replies go out before the first media bytes.
                while let Some(b) = session.poll_transmit() {
                    outbox.send(b);
                }
                let send_buffer = live.ctx.settings.send_buffer;
                if let Some(fd) = outbox.fd().filter(|_| send_buffer > 0) {
                    crate::sockio::set_send_buffer(fd, send_buffer);
                }
                let viewer = Viewer::new(outbox.clone(), Proto::Rtmp);
                viewer.requested.set(Some(asked));
                if !live.watch(&stream, viewer.clone()) {
                    session.notify_unpublished();
                    return false;
                }
                *role = Role::Player {
                    stream,
                    viewer,
                    query: req.query.unwrap_or_default(),
                };
                true
            }
            (_, Err((code, why))) => {
                let _ = session.reject(code, &why);
                true
            }
        },
        Event::Metadata { message, .. } => {
            if let Role::Publisher { stream, .. } = role {
                live.ingest(stream, message, true);
            }
            true
        }
        Event::Media(msg) => {
            if let Role::Publisher { stream, .. } = role {
                live.ingest(stream, msg, false);
            }
            true
        }
        Event::Unpublish => {
            if let Role::Publisher { unpublished, .. } = role {
                *unpublished = true;
                return false;
            }
            true
        }
        Event::PlayStop => !matches!(role, Role::Player { .. }),
        Event::Handshake(_) | Event::Connect { .. } => true,
    }
}

async fn check_publish(
    live: &Rc<Live>,
    req: &PublishRequest,
    peer: SocketAddr,
) -> Result<(StreamId, Option<Resume>), Refusal> {
    let query = req.query.as_deref().unwrap_or_default();
    let ask = Ask {
        app: &req.app,
        stream: &req.stream,
        query,
        peer,
        protocol: "rtmp",
    };
    admission::publish(live, &ask).await?;
    let what = format!("publish of {}/{}", req.app, req.stream);
    let stream: StreamId = req.stream.as_str().into();
    // Across nodes first: a stream published on another node is refused as one published
    // here is (Redis unreachable: published on this node alone).
    if let Some(cluster) = &live.settings().cluster {
        match cluster.claim(&stream).await {
            Some(cluster::Claim::Granted) => {}
            Some(cluster::Claim::Unreachable) => {
                live.ctx
                    .metrics
                    .cluster_claims_unreachable
                    .fetch_add(1, Relaxed);
            }
            Some(cluster::Claim::Held(node)) => {
                tracing::info!(stream = %stream, node, "stream published on another node");
                return Err(busy_stream(&what));
            }
            None => {
                return Err((
                    status::PUBLISH_DENIED,
                    format!("{what} refused: server busy, retry"),
                ))
            }
        }
    }
    let home = live.port().home_of(&stream);
    let from = live.port().me();
    let s = stream.clone();
    match live
        .port()
        .call(home, move |h: &Rc<Live>| {
            let answer = h.claim(s.clone(), from);
            // Where the stream's clock stopped, if a previous publisher left it.
            (answer, h.resume_point(&s))
        })
        .await
    {
        Some((ClaimAnswer::Granted { .. }, resume)) => Ok((stream, resume)),
        Some((ClaimAnswer::Busy, _)) => Err(busy_stream(&what)),
        None => {
            // The cluster claim taken above is let go unless the stream is live here.
            if let Some(cluster) = &live.settings().cluster {
                if !live.is_watchable(&stream) {
                    cluster.release(&stream);
                }
            }
            Err((
                status::PUBLISH_DENIED,
                format!("{what} refused: server busy, retry"),
            ))
        }
    }
}

/// The refusal of a second publisher of a stream (on this node or another).
fn busy_stream(what: &str) -> Refusal {
    (
        status::PUBLISH_BAD_NAME,
        format!("{what} refused: the stream is already being published"),
    )
}

async fn check_play(
    live: &Rc<Live>,
    req: &PlayRequest,
    peer: SocketAddr,
) -> Result<StreamId, Refusal> {
    let ask = Ask {
        app: &req.app,
        stream: &req.stream,
        query: req.query.as_deref().unwrap_or_default(),
        peer,
        protocol: "rtmp",
    };
    admission::play(live, &ask).await?;
    if !live.is_watchable(&req.stream) && !live.watch_remote(&req.stream).await {
        return Err((
            status::PLAY_NOT_FOUND,
            format!("play of {}/{}: the stream is not live", req.app, req.stream),
        ));
    }
    Ok(req.stream.as_str().into())
}
