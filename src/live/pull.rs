//! Streams across nodes, the viewer's side: a stream published on another node is pulled
//! from it, once per stream, by the stream's home shard here, and ingested exactly as a
//! local publisher's messages are (`Live::ingest`), so the GOP cache, the mirrors on every
//! shard, the HLS segmenter and the viewers work as for a local stream.
//!
//! - A viewer (HTTP-FLV, RTMP play, HLS playlist) of a stream not live here asks the
//!   `cluster-media` thread who holds the stream's claim ([`crate::cluster::media`]). If
//!   another node does, the stream's home shard is asked to pull it ([`Live::pull`]) and
//!   the viewer waits, at most [`WAIT`], for the stream to be announced here.
//! - The pull is one HTTP-FLV request to the other node, `GET /{app}/{stream}.flv` with
//!   the cluster key (`X-Liveshard-Cluster-Key`, `cluster.key`), which that node accepts
//!   in place of the play signature, the Referer list and the play hooks. The home shard
//!   takes the stream's local claim and becomes its owner, then reads the chunked body,
//!   takes FLV tags out of it and ingests each (the `onStreamTime` tag the other node
//!   writes is left out; this node writes its own).
//! - It ends when the other node's response ends (its stream ended: the stream ends
//!   here as it would locally, and the viewers here see it end), on an error or
//!   [`IDLE`] without a byte, or when no viewer has wanted the stream for the linger
//!   ([`linger`]: no shard subscribed, no HLS playlist asked for).
//!
//! Bounds: the response head is at most [`MAX_HEAD`] bytes; a chunk-size line at most
//! [`MAX_SIZE_LINE`]; FLV bytes are held only until a tag is whole, and a tag larger than
//! `media.max_message_bytes` ends the pull. Nothing is sized by a length the peer declared.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::engine::{ClaimAnswer, Live};
use super::StreamId;
use crate::media::flv;
use crate::media::{MediaKind, MediaMessage};
use crate::sockio::read_append;

/// The header a node's pull carries its cluster key in.
pub const CLUSTER_KEY_HEADER: &str = "x-liveshard-cluster-key";
/// Connecting to the other node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The other node's response head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// No byte from the other node for this long ends the pull.
pub const IDLE: Duration = Duration::from_secs(20);
/// How long a viewer waits for a pulled stream to be live here.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a pull goes on without viewers, at least.
const LINGER: Duration = Duration::from_secs(5);
/// How often a pull checks whether it is still wanted.
const CHECK_EVERY: Duration = Duration::from_secs(1);
pub const MAX_HEAD: usize = 8 * 1024;
pub const MAX_SIZE_LINE: usize = 64;
const READ_CHUNK: usize = 64 * 1024;

/// A pull running on this (home) shard.
pub(super) struct PullState {
    /// When a viewer last wanted the stream.
    demand: Cell<Instant>,
}

/// How long a pull goes on after its last viewer: [`LINGER`], or three HLS target
/// durations (an HLS player holds no connection; it asks for the playlist that often).
pub fn linger(settings: &super::Settings) -> Duration {
    LINGER.max(Duration::from_millis(u64::from(settings.hls.target_ms) * 3))
}

impl Live {
    /// On any shard, for a viewer of `stream`, which is not live here: if another node
    /// publishes it, has the stream's home shard pull it and waits (at most [`WAIT`])
    /// until this shard knows it live. False without `cluster.redis`, when no other node
    /// publishes it, or when the pull did not start in time.
    pub async fn watch_remote(self: &Rc<Self>, stream: &str) -> bool {
        let Some(cluster) = self.settings().cluster.clone() else {
            return false;
        };
        let Some(from) = cluster.lookup(stream).await else {
            return false;
        };
        let s: StreamId = stream.into();
        let home = self.port().home_of(&s);
        if self
            .port()
            .call(home, move |h: &Rc<Live>| h.pull(s, from))
            .await
            .is_none()
        {
            return false;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if self.is_watchable(stream) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // The announcement comes through this shard's mesh; polled, bounded above.
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// On the stream's home shard: pull `stream` from the node at `from`, unless it is
    /// pulled already (then a viewer wants it still) or claimed here.
    pub fn pull(self: &Rc<Self>, stream: StreamId, from: SocketAddr) {
        let now = self.now();
        if let Some(p) = self.pulls.borrow().get(&stream) {
            p.demand.set(now);
            return;
        }
        if self.registry.borrow().contains_key(&stream) {
            return;
        }
        let state = Rc::new(PullState {
            demand: Cell::new(now),
        });
        self.pulls
            .borrow_mut()
            .insert(stream.clone(), state.clone());
        let me = self.clone();
        monoio::spawn(async move {
            let m = &me.ctx.metrics;
            m.cluster_pulls.fetch_add(1, Relaxed);
            m.cluster_pulls_active.fetch_add(1, Relaxed);
            tracing::info!(stream = %stream, %from, "pulling a stream from another node");
            match run(&me, &stream, from, &state).await {
                Ok(why) => tracing::info!(stream = %stream, %from, why, "pull ended"),
                Err(e) => tracing::warn!(stream = %stream, %from, error = %e, "pull failed"),
            }
            me.pulls.borrow_mut().remove(&stream);
            m.cluster_pulls_active.fetch_sub(1, Relaxed);
        });
    }

    /// On the owner shard: a viewer wants `stream` (an HLS playlist request), so a pull
    /// of it goes on.
    pub(super) fn touch_pull(&self, stream: &str) {
        if let Some(p) = self.pulls.borrow().get(stream) {
            p.demand.set(self.now());
        }
    }

    /// Whether a pull is still wanted: some shard subscribed, or a viewer asked lately.
    fn pull_wanted(&self, stream: &StreamId, state: &PullState) -> bool {
        let now = self.now();
        if self.has_subscribers(stream) {
            state.demand.set(now);
        }
        now.saturating_duration_since(state.demand.get()) < linger(self.settings())
    }
}

/// The pull, from the connection to its end; `Ok` says why it ended.
async fn run(
    live: &Rc<Live>,
    stream: &StreamId,
    from: SocketAddr,
    state: &PullState,
) -> Result<&'static str, String> {
    let mut conn = monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(from))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = conn.set_nodelay(true);
    let settings = live.settings();
    let request = format!(
        "GET /{}/{stream}.flv HTTP/1.1\r\nHost: {from}\r\nUser-Agent: liveshard-pull\r\n\
         {CLUSTER_KEY_HEADER}: {}\r\nConnection: close\r\n\r\n",
        settings.app, settings.cluster_key
    );
    let (res, _) = conn.write_all(request.into_bytes()).await;
    res.map_err(|e| format!("request: {e}"))?;

    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        match response_head(&buf)? {
            Some(n) => {
                buf.advance(n);
                break;
            }
            None if buf.len() >= MAX_HEAD => return Err("response head too large".into()),
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (res, b) = monoio::time::timeout(left, read_append(&mut conn, buf, 4096))
            .await
            .map_err(|_| "no response".to_string())?;
        buf = b;
        match res {
            Ok(0) => return Err("closed before the response".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }

    // The stream is this node's now: its home (this shard) claims it and owns it.
    let me = live.port().me();
    if live.claim_as(stream.clone(), me, true) == ClaimAnswer::Busy {
        return Err("the stream is published on this node".into());
    }
    let stop = live.start_owned_at(stream, None);
    // A pull is not a publishing connection (`liveshard_media_publishers`).
    live.ctx.metrics.media_publishers.fetch_sub(1, Relaxed);
    let ended = relay(live, stream, state, &mut conn, buf, &stop).await;
    // The stream ends here now (not after a grace), before the pull is forgotten, so a
    // viewer that comes next starts a new pull rather than finding this one ending.
    live.hls.publisher_gone(&live.ctx, stream);
    live.release(stream.clone(), me, true, None);
    ended
}

/// Reads the body and ingests its tags until the pull ends.
async fn relay(
    live: &Rc<Live>,
    stream: &StreamId,
    state: &PullState,
    conn: &mut TcpStream,
    mut buf: BytesMut,
    stop: &shards::local::Notify,
) -> Result<&'static str, String> {
    let max_tag =
        live.settings().max_message_bytes + flv::TAG_HEADER_LEN + flv::PREVIOUS_TAG_SIZE_LEN;
    let mut body = Body::new(max_tag);
    let mut last_input = Instant::now();
    let mut next_check = Instant::now() + CHECK_EVERY;
    loop {
        let ended = body.feed(&mut buf)?;
        body.tags(|kind, timestamp, payload, metadata| {
            live.ingest(
                stream,
                MediaMessage {
                    kind,
                    timestamp,
                    payload,
                },
                metadata,
            )
        })?;
        if ended {
            return Ok("the stream ended on its node");
        }
        let now = Instant::now();
        if now >= next_check {
            if !live.pull_wanted(stream, state) {
                return Ok("no viewer left");
            }
            next_check = now + CHECK_EVERY;
        }
        if now.saturating_duration_since(last_input) >= IDLE {
            return Err("the other node sent nothing".into());
        }
        let wait = next_check.saturating_duration_since(now);
        // Readability first (a poll, no buffer): a read is never cancelled with bytes in it.
        let woke = monoio::select! {
            r = conn.readable(false) => Wake::Readable(r.is_ok()),
            _ = monoio::time::sleep(wait) => Wake::Check,
            _ = live.ctx.shutdown.wait() => Wake::Stop,
            _ = stop.notified() => Wake::Stop,
        };
        match woke {
            Wake::Check => continue,
            Wake::Stop => return Ok("stopped"),
            Wake::Readable(false) => return Err("the connection failed".into()),
            Wake::Readable(true) => {}
        }
        let (res, b) = read_append(conn, buf, READ_CHUNK).await;
        buf = b;
        match res {
            Ok(0) => return Err("the other node closed the connection".into()),
            Ok(_) => last_input = Instant::now(),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

enum Wake {
    Readable(bool),
    Check,
    Stop,
}

/// The length of a `200` response head at the front of `buf`, `None` if incomplete.
fn response_head(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if resp.code != Some(200) {
                return Err(format!("the other node answered {:?}", resp.code));
            }
            let chunked = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && std::str::from_utf8(h.value)
                        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
            });
            if !chunked {
                return Err("the other node's answer is not chunked".into());
            }
            Ok(Some(n))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad response head: {e}")),
    }
}

/// Where the chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(usize),
    DataEnd,
    Done,
}

/// The body of an HTTP-FLV response, sans-IO: chunked transfer coding off, the FLV file
/// header skipped, tags out.
pub struct Body {
    chunk: Chunk,
    /// FLV bytes not yet taken as tags (less than one tag, plus the last read).
    flv: BytesMut,
    /// FLV file header bytes still to skip.
    header_left: usize,
    max_tag: usize,
}

impl Body {
    pub fn new(max_tag: usize) -> Body {
        Body {
            chunk: Chunk::Size,
            flv: BytesMut::new(),
            header_left: 13,
            max_tag,
        }
    }

    /// Takes what it can of `input` (left with at most a partial chunk-size line). True
    /// once the last chunk has come.
    pub fn feed(&mut self, input: &mut BytesMut) -> Result<bool, String> {
        loop {
            match self.chunk {
                Chunk::Done => return Ok(true),
                Chunk::Size => {
                    let Some(pos) = input.iter().position(|&b| b == b'\n') else {
                        if input.len() > MAX_SIZE_LINE {
                            return Err("chunk size line too long".into());
                        }
                        return Ok(false);
                    };
                    if pos > MAX_SIZE_LINE {
                        return Err("chunk size line too long".into());
                    }
                    let line = std::str::from_utf8(&input[..pos])
                        .map_err(|_| "bad chunk size".to_string())?;
                    let hex = line.trim_end_matches('\r').split(';').next().unwrap_or("");
                    let size = usize::from_str_radix(hex.trim(), 16)
                        .map_err(|_| "bad chunk size".to_string())?;
                    input.advance(pos + 1);
                    self.chunk = if size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let n = left.min(input.len());
                    let skip = self.header_left.min(n);
                    self.header_left -= skip;
                    self.flv.extend_from_slice(&input[skip..n]);
                    input.advance(n);
                    self.chunk = if n == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n)
                    };
                }
                Chunk::DataEnd => {
                    if input.len() < 2 {
                        return Ok(false);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err("chunk not followed by CRLF".into());
                    }
                    input.advance(2);
                    self.chunk = Chunk::Size;
                }
            }
        }
    }

    /// Hands every whole tag to `f` (kind, timestamp, payload, whether it is the stream's
    /// `onMetaData`); the `onStreamTime` tag and unknown tag types are left out.
    pub fn tags(
        &mut self,
        mut f: impl FnMut(MediaKind, u32, bytes::Bytes, bool),
    ) -> Result<(), String> {
        loop {
            if self.flv.len() < flv::TAG_HEADER_LEN {
                return Ok(());
            }
            let size = u32::from_be_bytes([0, self.flv[1], self.flv[2], self.flv[3]]) as usize;
            let whole = flv::TAG_HEADER_LEN + size + flv::PREVIOUS_TAG_SIZE_LEN;
            if whole > self.max_tag {
                return Err(format!("an FLV tag of {size} bytes is over the limit"));
            }
            if self.flv.len() < whole {
                // The rest comes with the next reads; the buffer grows with what arrives.
                return Ok(());
            }
            let bytes = self.flv.split_to(whole).freeze();
            let Some((tag, _)) = flv::read_tag(&bytes).map_err(|e| e.to_string())? else {
                return Err("FLV tag cut short".into());
            };
            let Some(kind) = MediaKind::from_type_id(tag.tag_type) else {
                continue;
            };
            let mut metadata = false;
            if kind == MediaKind::Data {
                match script_name(&tag.payload) {
                    Some(flv::STREAM_TIME) => continue,
                    Some("onMetaData") => metadata = true,
                    _ => {}
                }
            }
            f(kind, tag.timestamp, tag.payload, metadata);
        }
    }
}

/// The name a script tag starts with (an AMF0 string).
fn script_name(payload: &[u8]) -> Option<&str> {
    if payload.len() < 3 || payload[0] != 0x02 {
        return None;
    }
    let len = u16::from_be_bytes([payload[1], payload[2]]) as usize;
    std::str::from_utf8(payload.get(3..3 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn tags_come_out_of_chunks_cut_anywhere() {
        let video = flv::encode_tag(MediaKind::Video, 40, &[0x17, 1, 0, 0, 0, 9]).unwrap();
        let time = flv::stream_time_tag(40);
        let audio = flv::encode_tag(MediaKind::Audio, 41, &[0xAF, 1, 7]).unwrap();
        let mut start = flv::header(true, true).to_vec();
        start.extend_from_slice(&time);
        start.extend_from_slice(&video[..5]);
        let wire = chunked(&[&start, &video[5..], &audio]);
        let expected = vec![
            (MediaKind::Video, 40, vec![0x17, 1, 0, 0, 0, 9], false),
            (MediaKind::Audio, 41, vec![0xAF, 1, 7], false),
        ];
        for cut in 1..wire.len() {
            let mut body = Body::new(1024);
            let (mut got, mut input, mut done) = (Vec::new(), BytesMut::new(), false);
            for piece in [&wire[..cut], &wire[cut..]] {
                input.extend_from_slice(piece);
                done = body.feed(&mut input).unwrap();
                body.tags(|k, ts, p, m| got.push((k, ts, p.to_vec(), m)))
                    .unwrap();
            }
            assert!(done, "cut at {cut}");
            assert_eq!(got, expected, "cut at {cut}");
        }
        let mut body = Body::new(1024);
        let mut input = BytesMut::from(&wire[..]);
        assert!(body.feed(&mut input).unwrap());
        let mut got = Vec::new();
        body.tags(|k, ts, p, m| got.push((k, ts, p.to_vec(), m)))
            .unwrap();
        assert_eq!(got, expected);
    }
    #[test]
    fn oversized_tags_and_size_lines_are_refused() {
        let big = flv::encode_tag(MediaKind::Video, 0, &[0x17; 200]).unwrap();
        let mut start = flv::header(false, true).to_vec();
        start.extend_from_slice(&big);
        let mut body = Body::new(100);
        let mut input = BytesMut::from(&chunked(&[&start])[..]);
        body.feed(&mut input).unwrap();
        assert!(body.tags(|_, _, _, _| {}).is_err());
        let mut body = Body::new(100);
        let mut input = BytesMut::from(&[b'f'; 100][..]);
        assert!(body.feed(&mut input).is_err());
    }
}
