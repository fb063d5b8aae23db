//! HLS requests on the shard that serves them (any shard): the play checks, the call to
//! the stream's owner (or, for LL-HLS, the wait on it: `super::hls_wait`), and the
//! response. What is served, and why from the owner by a call: `super::hls`.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;

use super::engine::Live;
use super::flv::{ask_on_play, check_http_play, not_found};
use super::hls::*;
use super::hls_wait::{ask_parked, block_wait, Blocking, PlaylistReply};
use super::StreamId;
use crate::codes;
use crate::http::{self, code, query_param, Reply, Request, Response};
use crate::media::hls::Position;

pub fn playlist_handler() -> http::Handler<Live> {
    http::handler(playlist)
}

pub fn segment_handler() -> http::Handler<Live> {
    http::handler(|live, req| segment(live, req, Wanted::Ts))
}

pub fn fmp4_segment_handler() -> http::Handler<Live> {
    http::handler(|live, req| segment(live, req, Wanted::Fmp4))
}

pub fn init_handler() -> http::Handler<Live> {
    http::handler(|live, req| segment(live, req, Wanted::Init))
}

fn cors(r: Response) -> Response {
    r.header("Access-Control-Allow-Origin", "*")
}

fn refused(r: Response) -> Reply {
    cors(r).into()
}

fn busy() -> Reply {
    refused(Response::error(503, code::UNAVAILABLE, "busy, try again"))
}

/// 415 for a stream with a track HLS does not carry here, naming it and what plays it.
fn codec_refused(track: &str) -> Reply {
    refused(Response::error(
        415,
        codes::PLAY_CODEC_UNSUPPORTED,
        format!(
            "this stream's {track} is not carried over HLS here (MPEG-TS segments carry \
             H.264 and AAC): play it over HTTP-FLV or RTMP"
        ),
    ))
}

/// The `?txSecret=…&txTime=…` a signed playlist passes on to its segment URIs. Only
/// called after the signature verified, so both are hex; anything else is left out.
fn signature_suffix(query: &str) -> Option<String> {
    let secret = query_param(query, "txSecret")?;
    let time = query_param(query, "txTime")?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(&secret) && hex(&time)).then(|| format!("?txSecret={secret}&txTime={time}"))
}

/// Appends `suffix` to every URI line of a playlist.
fn with_suffix(text: &[u8], suffix: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 16 * suffix.len());
    for line in text.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if line[0] != b'#' {
            out.extend_from_slice(line);
            out.extend_from_slice(suffix.as_bytes());
        } else if let Some(uri) = quoted_uri(line) {
            // A tag's URI (init segment, part, preload hint), inside its quotes.
            out.extend_from_slice(&line[..uri.end]);
            out.extend_from_slice(suffix.as_bytes());
            out.extend_from_slice(&line[uri.end..]);
        } else {
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// Where the value of a tag's `URI="…"` attribute is in `line`.
fn quoted_uri(line: &[u8]) -> Option<std::ops::Range<usize>> {
    const KEY: &[u8] = b"URI=\"";
    let start = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[start..].iter().position(|&b| b == b'"')?;
    Some(start..start + len)
}

/// `query` without the LL-HLS request parameters (`_HLS_msn`, `_HLS_part`, `_HLS_skip`),
/// which change with every poll: what the `on_play` hook is asked about and its answer
/// remembered under.
fn without_hls_params(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.starts_with("_HLS_"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The shard holding `name`'s segments: its live owner, or where it ended lately.
fn owner_of(live: &Live, name: &str) -> Option<usize> {
    live.owner(name)
        .or_else(|| live.hls.ended_owner(name, live.now()))
}

async fn playlist(live: Rc<Live>, req: Request) -> Reply {
    live.ctx.metrics.media_hls_requests.fetch_add(1, Relaxed);
    let Some(name) = req.param("stream") else {
        return refused(not_found());
    };
    let query = match check_http_play(&live, &req, name) {
        Ok(q) => q,
        Err(r) => return refused(r),
    };
    // Blocking reload (LL-HLS): only where the playlist offers it.
    let blocking = match Blocking::from_query(&query) {
        Ok(b) => b.filter(|_| live.ctx.settings.hls.part_ms > 0),
        Err(why) => return refused(Response::error(400, code::BAD_REQUEST, why)),
    };
    let query = without_hls_params(&query);
    let owner = match owner_of(&live, name) {
        Some(owner) => Some(owner),
        // Live on another node of the cluster: pulled to this one.
        None if live.watch_remote(name).await => owner_of(&live, name),
        None => None,
    };
    let Some(owner) = owner else {
        return refused(not_found());
    };
    let stream: StreamId = name.into();
    let hls = &live.hls;
    if live.ctx.settings.hooks.on_play.is_some() {
        let key = (req.peer.ip(), stream.clone(), query.clone());
        if !hls.hook_allowed(&key, live.now()) {
            if let Err(r) = ask_on_play(&live, name, &query, req.peer, "hls").await {
                return refused(r);
            }
            hls.remember_allowed(key, live.now());
        }
    }
    let answer = match blocking {
        Some(want) => match blocking_playlist(&live, owner, &stream, want).await {
            Ok(answer) => answer,
            Err(reply) => return reply,
        },
        None => match first_playlist(&live, owner, &stream).await {
            Ok(answer) => answer,
            Err(reply) => return reply,
        },
    };
    if let Some(track) = &answer.refused {
        return codec_refused(track);
    }
    if answer.listed == 0 {
        return refused(Response::error(
            404,
            code::NOT_FOUND,
            "no segment yet, try again",
        ));
    }
    let body = match live
        .ctx
        .settings
        .play_sign
        .then(|| signature_suffix(&query))
        .flatten()
    {
        Some(suffix) => with_suffix(&answer.text, &suffix),
        None => answer.text,
    };
    live.ctx
        .metrics
        .media_hls_bytes_out
        .fetch_add(body.len() as u64, Relaxed);
    cors(Response::with_body(200, PLAYLIST_TYPE, body))
        .header("Cache-Control", "no-cache")
        .into()
}

/// A playlist as it is now, waiting (by polling the owner) only for a stream's first
/// segment.
async fn first_playlist(
    live: &Live,
    owner: usize,
    stream: &StreamId,
) -> Result<PlaylistAnswer, Reply> {
    let deadline = Instant::now() + first_segment_wait(&live.ctx.settings);
    loop {
        let s = stream.clone();
        let call = live.port().call(owner, move |o: &Rc<Live>| {
            // A stream pulled from another node goes on while players poll.
            o.touch_pull(&s);
            o.hls.playlist(&s)
        });
        let Some(answer) = call.await else {
            return Err(busy());
        };
        let Some(answer) = answer else {
            return Err(refused(not_found()));
        };
        if answer.listed > 0
            || answer.ended
            || answer.refused.is_some()
            || Instant::now() >= deadline
        {
            return Ok(answer);
        }
        monoio::time::sleep(FIRST_POLL).await;
    }
}

/// A blocking playlist reload: parked on the owner until the playlist has `want`.
async fn blocking_playlist(
    live: &Live,
    owner: usize,
    stream: &StreamId,
    want: Blocking,
) -> Result<PlaylistAnswer, Reply> {
    live.ctx.metrics.media_hls_blocking.fetch_add(1, Relaxed);
    let wait = block_wait(&live.ctx.settings);
    let s = stream.clone();
    let reply = ask_parked(live, owner, wait, move |o: &Rc<Live>, tx| {
        // A stream pulled from another node goes on while players poll.
        o.touch_pull(&s);
        o.hls.park_playlist(&s, want, o.now() + wait, tx);
    })
    .await;
    match reply {
        Some(PlaylistReply::Ready(answer)) => Ok(answer),
        Some(PlaylistReply::Missing) => Err(refused(not_found())),
        Some(PlaylistReply::TooFar) => Err(refused(Response::error(
            400,
            code::BAD_REQUEST,
            "_HLS_msn/_HLS_part is too far past the live edge",
        ))),
        Some(PlaylistReply::Busy) => Err(busy()),
        None => Err(not_in_time()),
    }
}

/// 503 for a blocking request whose segment or part did not come within its wait.
fn not_in_time() -> Reply {
    cors(Response::error(
        503,
        code::UNAVAILABLE,
        "the requested segment or part did not appear in time",
    ))
    .header("Retry-After", "1")
    .into()
}

/// `{stream}-{sequence}` → its parts.
fn parse_segment_name(file: &str) -> Option<(&str, u64)> {
    let (name, seq) = file.rsplit_once('-')?;
    Some((name, number(seq)?))
}

/// `{stream}-{sequence}.{part}` (an LL-HLS part) → its parts.
fn parse_part_name(file: &str) -> Option<(&str, Position)> {
    let (name, at) = file.rsplit_once('-')?;
    let (msn, part) = at.split_once('.')?;
    let msn = number(msn)?;
    let part = u32::try_from(number(part)?).ok()?;
    Some((name, Position { msn, part }))
}

fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

async fn segment(live: Rc<Live>, req: Request, wanted: Wanted) -> Reply {
    live.ctx.metrics.media_hls_requests.fetch_add(1, Relaxed);
    if wanted == Wanted::Fmp4 {
        if let Some((name, at)) = req.param("segment").and_then(parse_part_name) {
            return part(&live, &req, name, at).await;
        }
    }
    let Some((name, sequence)) = req.param("segment").and_then(parse_segment_name) else {
        return refused(not_found());
    };
    if let Err(r) = check_http_play(&live, &req, name) {
        return refused(r);
    }
    let Some(owner) = owner_of(&live, name) else {
        return refused(not_found());
    };
    let stream: StreamId = name.into();
    let Some(found) = live
        .port()
        .call(owner, move |o: &Rc<Live>| {
            o.hls.segment(&stream, sequence, wanted)
        })
        .await
    else {
        return busy();
    };
    segment_reply(&live, found, wanted)
}

/// An LL-HLS part: served when made; one that may still come (the preload hint) is
/// waited for on the owner.
async fn part(live: &Live, req: &Request, name: &str, at: Position) -> Reply {
    if live.ctx.settings.hls.part_ms == 0 {
        return refused(not_found());
    }
    if let Err(r) = check_http_play(live, req, name) {
        return refused(r);
    }
    let Some(owner) = owner_of(live, name) else {
        return refused(not_found());
    };
    let wait = block_wait(&live.ctx.settings);
    let stream: StreamId = name.into();
    let found = ask_parked(live, owner, wait, move |o: &Rc<Live>, tx| {
        o.hls.park_part(&stream, at, o.now() + wait, tx);
    })
    .await;
    match found {
        Some(found) => segment_reply(live, found, Wanted::Fmp4),
        None => not_in_time(),
    }
}

fn segment_reply(live: &Live, found: SegmentAnswer, wanted: Wanted) -> Reply {
    let data = match found {
        SegmentAnswer::Found(data) => data,
        SegmentAnswer::Missing => {
            return refused(Response::error(404, code::NOT_FOUND, "no such segment"))
        }
        SegmentAnswer::Refused(track) => return codec_refused(&track),
        SegmentAnswer::Busy => return busy(),
    };
    live.ctx
        .metrics
        .media_hls_bytes_out
        .fetch_add(data.len() as u64, Relaxed);
    cors(Response::with_body(200, wanted.content_type(), data))
        .header("Cache-Control", SEGMENT_CACHE)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_split_at_the_last_dash() {
        assert_eq!(parse_segment_name("cam-12"), Some(("cam", 12)));
        assert_eq!(parse_segment_name("my-cam-0"), Some(("my-cam", 0)));
        assert_eq!(parse_segment_name("cam-"), None);
        assert_eq!(parse_segment_name("cam-+1"), None);
        assert_eq!(parse_segment_name("cam"), None);
        assert_eq!(parse_segment_name("cam-99999999999999999999999"), None);
    }

    #[test]
    fn part_names_and_hook_queries() {
        let at = |msn, part| Position { msn, part };
        assert_eq!(parse_part_name("my-cam-12.3"), Some(("my-cam", at(12, 3))));
        assert_eq!(parse_part_name("cam-12"), None);
        assert_eq!(parse_part_name("cam-12."), None);
        assert_eq!(parse_part_name("cam-12.3.4"), None);
        assert_eq!(parse_part_name("cam-12.99999999999"), None);
        assert_eq!(parse_segment_name("cam-12.3"), None);
        assert_eq!(
            without_hls_params("txSecret=ab&_HLS_msn=3&txTime=1F&_HLS_part=0"),
            "txSecret=ab&txTime=1F"
        );
    }

    #[test]
    fn signed_playlists_sign_their_segment_uris() {
        let text = b"#EXTM3U\n#EXTINF:2.000,\ncam-1.ts\n#EXTINF:2.000,\ncam-2.ts\n";
        let suffix = signature_suffix("txSecret=abc123&txTime=6E0F&x=1").unwrap();
        let out = with_suffix(text, &suffix);
        assert_eq!(
            &out[..],
            b"#EXTM3U\n#EXTINF:2.000,\ncam-1.ts?txSecret=abc123&txTime=6E0F\n\
              #EXTINF:2.000,\ncam-2.ts?txSecret=abc123&txTime=6E0F\n"
        );
        let text = b"#EXTM3U\n#EXT-X-MAP:URI=\"cam-1.mp4\"\n#EXTINF:2.000,\ncam-1.m4s\n";
        assert_eq!(
            &with_suffix(text, &suffix)[..],
            b"#EXTM3U\n#EXT-X-MAP:URI=\"cam-1.mp4?txSecret=abc123&txTime=6E0F\"\n\
              #EXTINF:2.000,\ncam-1.m4s?txSecret=abc123&txTime=6E0F\n"
        );
        let text = b"#EXT-X-PART:DURATION=0.320,URI=\"cam-2.0.m4s\",INDEPENDENT=YES\n\
                     #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-2.1.m4s\"\n";
        assert_eq!(
            &with_suffix(text, &suffix)[..],
            b"#EXT-X-PART:DURATION=0.320,URI=\"cam-2.0.m4s?txSecret=abc123&txTime=6E0F\",\
              INDEPENDENT=YES\n\
              #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-2.1.m4s?txSecret=abc123&txTime=6E0F\"\n"
        );
        assert_eq!(signature_suffix("txSecret=ab%0A&txTime=1"), None);
        assert_eq!(signature_suffix("txTime=1"), None);
    }
}
