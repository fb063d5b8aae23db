//! A minimal RTMP play client, sans-IO: bytes in through [`PlayClient::handle_input`],
//! events out through a callback, bytes to send from [`PlayClient::take_output`].
//!
//! Written for measuring, independently of the server it measures (it shares no code with
//! liveshard's RTMP stack). What it supports:
//! - the simple handshake only (C1 with a zero version field, C2 echoing S1); servers answer
//!   it with the simple form (nginx-rtmp, liveshard, SRS all do);
//! - the chunk stream: basic headers of 1–3 bytes, message headers of types 0–3, extended
//!   timestamps (also on type-3 chunks that follow one), Set Chunk Size, Abort;
//! - `connect` → `createStream` → `play` (AMF0, start -2000: live or recorded), then Set
//!   Buffer Length, as ffmpeg does; `_result`/`_error`/`onStatus` answers; AMF3 command
//!   messages (type 17) whose body is AMF0 after the leading byte;
//! - flow control: Acknowledgement whenever the server's window is received, a Window
//!   Acknowledgement Size answer to Set Peer Bandwidth, Ping Response to Ping Request;
//! - audio, video and aggregate messages, reported by type, length and (video) frame kind.
//!
//! Not supported: the digest handshake, RTMPE/RTMPS, AMF3 values, shared objects, sending
//! media. Bounds: at most [`MAX_CHUNK_STREAMS`] chunk streams, a chunk size of at most
//! [`MAX_CHUNK_SIZE`], and only control, command and aggregate messages are assembled, each
//! at most [`MAX_ASSEMBLED`] bytes; of audio and video only the first [`MEDIA_HEAD`] bytes
//! are kept, so a viewer's memory does not depend on the size of what it receives.

use crate::amf0::{self, Value};
use crate::flvproto::{video_kind, VideoKind};

pub const HANDSHAKE_LEN: usize = 1536;
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;
pub const MAX_ASSEMBLED: u32 = 1 << 20;
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Bytes kept from the start of an audio or video message.
pub const MEDIA_HEAD: usize = 8;
/// Our own chunk size: never changed, so the protocol default.
const OUT_CHUNK_SIZE: usize = 128;
/// What Set Buffer Length announces (ffmpeg's default).
const BUFFER_MS: u32 = 3000;

const CSID_CONTROL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_PLAY: u8 = 8;

const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;
const ACK: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW_ACK_SIZE: u8 = 5;
const SET_PEER_BANDWIDTH: u8 = 6;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const COMMAND_AMF3: u8 = 17;
const COMMAND_AMF0: u8 = 20;
const AGGREGATE: u8 = 22;

const TXN_CONNECT: f64 = 1.0;
const TXN_CREATE_STREAM: f64 = 2.0;

/// Why the connection cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtmpError(pub &'static str);

impl std::fmt::Display for RtmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What to play: `rtmp://HOST[:PORT]/APP/NAME` split the way ffmpeg splits it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlayTarget {
    pub app: String,
    /// The play name, query included (servers read signatures from it).
    pub name: String,
    pub tc_url: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `onStatus NetStream.Play.Start`: the stream is on its way.
    Playing,
    /// `_error`, or an error `onStatus`, for connect, createStream or play.
    Refused(String),
    /// A complete audio (8) or video (9) message.
    Media {
        type_id: u8,
        len: u32,
        video: Option<VideoKind>,
    },
    /// The publisher went away (`NetStream.Play.UnpublishNotify`); the connection stays.
    Unpublished,
    /// The server sent the `close` command.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Reading S0 and S1 (1 + 1536 bytes).
    S0S1,
    /// Skipping S2.
    S2 {
        left: usize,
    },
    Chunks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshake,
    Connecting,
    CreatingStream,
    Starting,
    Playing,
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    Header,
    /// Payload bytes of the current chunk of chunk stream `cs` (an index) still to come.
    Payload {
        cs: usize,
        left: u32,
    },
}

/// One chunk stream's header state and its message in progress.
#[derive(Debug)]
struct ChunkStream {
    id: u32,
    timestamp: u32,
    delta: u32,
    len: u32,
    type_id: u8,
    /// The last message header had an extended timestamp (so type-3 chunks carry one).
    ext: bool,
    /// Bytes of the current message received; `got == len` when none is in progress.
    got: u32,
    assemble: bool,
    body: Vec<u8>,
    head: [u8; MEDIA_HEAD],
    head_len: usize,
}

pub struct PlayClient {
    target: PlayTarget,
    stage: Stage,
    s0s1: Vec<u8>,
    reading: Reading,
    hdr: [u8; 18],
    hdr_len: usize,
    streams: Vec<ChunkStream>,
    chunk_size: u32,
    /// Window Acknowledgement Size the server asked for (0: none yet).
    window: u32,
    received: u64,
    acked: u64,
    phase: Phase,
    out: Vec<u8>,
}

impl PlayClient {
    /// A client that has queued C0 and C1; `seed` fills C1's random part.
    pub fn new(target: PlayTarget, seed: u64) -> Self {
        let mut out = Vec::with_capacity(1 + HANDSHAKE_LEN);
        out.push(3);
        out.extend_from_slice(&[0; 8]); // time 0, then the zero field: the simple handshake
        let mut x = seed | 1;
        while out.len() < 1 + HANDSHAKE_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(1 + HANDSHAKE_LEN);
        PlayClient {
            target,
            stage: Stage::S0S1,
            s0s1: Vec::with_capacity(1 + HANDSHAKE_LEN),
            reading: Reading::Header,
            hdr: [0; 18],
            hdr_len: 0,
            streams: Vec::new(),
            chunk_size: 128,
            window: 0,
            received: 0,
            acked: 0,
            phase: Phase::Handshake,
            out,
        }
    }

    /// Bytes to write to the server, if any.
    pub fn take_output(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    pub fn is_playing(&self) -> bool {
        self.phase == Phase::Playing
    }

    /// Consumes everything in `input`, reporting events to `on`.
    pub fn handle_input(
        &mut self,
        mut input: &[u8],
        on: &mut impl FnMut(Event),
    ) -> Result<(), RtmpError> {
        self.received += input.len() as u64;
        while !input.is_empty() {
            match self.stage {
                Stage::S0S1 => {
                    let n = (1 + HANDSHAKE_LEN - self.s0s1.len()).min(input.len());
                    self.s0s1.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.s0s1.len() == 1 + HANDSHAKE_LEN {
                        if self.s0s1[0] != 3 {
                            return Err(RtmpError(
                                "server answered with an RTMP version other than 3",
                            ));
                        }
                        // C2 echoes S1.
                        self.out.extend_from_slice(&self.s0s1[1..]);
                        self.s0s1 = Vec::new();
                        self.stage = Stage::S2 {
                            left: HANDSHAKE_LEN,
                        };
                    }
                }
                Stage::S2 { left } => {
                    let n = left.min(input.len());
                    input = &input[n..];
                    if left == n {
                        self.stage = Stage::Chunks;
                        self.send_connect();
                    } else {
                        self.stage = Stage::S2 { left: left - n };
                    }
                }
                Stage::Chunks => self.read_chunks(&mut input, on)?,
            }
        }
        if self.window > 0 && self.received - self.acked >= u64::from(self.window) {
            self.acked = self.received;
            let seq = (self.received & 0xFFFF_FFFF) as u32;
            self.send(CSID_CONTROL, ACK, 0, &seq.to_be_bytes());
        }
        Ok(())
    }

    /// Header bytes needed for the chunk header in `hdr` so far (more may be asked for once
    /// the first bytes say how long it is).
    fn header_need(&self) -> usize {
        if self.hdr_len == 0 {
            return 1;
        }
        let fmt = self.hdr[0] >> 6;
        let basic = match self.hdr[0] & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        if self.hdr_len < basic {
            return basic;
        }
        let mh = [11, 7, 3, 0][usize::from(fmt)];
        if self.hdr_len < basic + mh {
            return basic + mh;
        }
        let ext = if fmt < 3 {
            self.hdr[basic..basic + 3] == [0xFF; 3]
        } else {
            let id = self.csid(basic);
            self.streams.iter().any(|c| c.id == id && c.ext)
        };
        basic + mh + if ext { 4 } else { 0 }
    }

    fn csid(&self, basic: usize) -> u32 {
        match basic {
            2 => 64 + u32::from(self.hdr[1]),
            3 => 64 + u32::from(self.hdr[1]) + 256 * u32::from(self.hdr[2]),
            _ => u32::from(self.hdr[0] & 0x3F),
        }
    }

    fn read_chunks(
        &mut self,
        input: &mut &[u8],
        on: &mut impl FnMut(Event),
    ) -> Result<(), RtmpError> {
        while !input.is_empty() {
            match self.reading {
                Reading::Header => {
                    loop {
                        let need = self.header_need();
                        if self.hdr_len >= need {
                            break;
                        }
                        if input.is_empty() {
                            return Ok(());
                        }
                        let n = (need - self.hdr_len).min(input.len());
                        self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&input[..n]);
                        self.hdr_len += n;
                        *input = &input[n..];
                    }
                    let done = self.start_chunk()?;
                    self.hdr_len = 0;
                    if let Some(cs) = done {
                        self.complete(cs, on)?;
                    }
                }
                Reading::Payload { cs, left } => {
                    let n = (left as usize).min(input.len());
                    let s = &mut self.streams[cs];
                    if s.assemble {
                        s.body.extend_from_slice(&input[..n]);
                    } else if s.head_len < MEDIA_HEAD {
                        let keep = n.min(MEDIA_HEAD - s.head_len);
                        s.head[s.head_len..s.head_len + keep].copy_from_slice(&input[..keep]);
                        s.head_len += keep;
                    }
                    s.got += n as u32;
                    *input = &input[n..];
                    let left = left - n as u32;
                    if left > 0 {
                        self.reading = Reading::Payload { cs, left };
                    } else {
                        self.reading = Reading::Header;
                        if s.got == s.len {
                            self.complete(cs, on)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the complete chunk header in `hdr`; returns the chunk stream whose message
    /// is already complete (an empty message), else sets up reading the payload.
    fn start_chunk(&mut self) -> Result<Option<usize>, RtmpError> {
        let hdr = self.hdr;
        let h = &hdr[..self.hdr_len];
        let fmt = h[0] >> 6;
        let basic = match h[0] & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let id = self.csid(basic);
        let m = &h[basic..];
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let field = if fmt < 3 { u24(&m[..3]) } else { 0 };
        let mh = [11, 7, 3, 0][usize::from(fmt)];
        let ext_value = (h.len() == basic + mh + 4).then(|| {
            let e = &m[mh..mh + 4];
            u32::from_be_bytes([e[0], e[1], e[2], e[3]])
        });
        let idx = match self.streams.iter().position(|c| c.id == id) {
            Some(i) => i,
            None => {
                if fmt != 0 {
                    return Err(RtmpError("a chunk stream starts without a full header"));
                }
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(RtmpError("too many chunk streams"));
                }
                self.streams.push(ChunkStream {
                    id,
                    timestamp: 0,
                    delta: 0,
                    len: 0,
                    type_id: 0,
                    ext: false,
                    got: 0,
                    assemble: false,
                    body: Vec::new(),
                    head: [0; MEDIA_HEAD],
                    head_len: 0,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[idx];
        let in_progress = s.got < s.len;
        if fmt < 3 && in_progress {
            return Err(RtmpError(
                "a new message starts before the last one on its chunk stream ended",
            ));
        }
        if fmt < 3 {
            s.ext = field == 0xFF_FFFF;
            let value = if s.ext {
                ext_value.unwrap_or(field)
            } else {
                field
            };
            if fmt == 0 {
                s.timestamp = value;
                s.delta = 0;
            } else {
                s.delta = value;
                s.timestamp = s.timestamp.wrapping_add(value);
            }
            if fmt <= 1 {
                s.len = u24(&m[3..6]);
                s.type_id = m[6];
            }
        } else if !in_progress {
            s.timestamp = s.timestamp.wrapping_add(s.delta);
        }
        if !in_progress {
            // A new message on this chunk stream.
            s.got = 0;
            s.assemble = matches!(
                s.type_id,
                SET_CHUNK_SIZE
                    | ABORT
                    | ACK
                    | USER_CONTROL
                    | WINDOW_ACK_SIZE
                    | SET_PEER_BANDWIDTH
                    | COMMAND_AMF3
                    | COMMAND_AMF0
                    | AGGREGATE
            );
            if s.assemble && s.len > MAX_ASSEMBLED {
                return Err(RtmpError("control or command message over the size limit"));
            }
            s.body.clear();
            s.head_len = 0;
            if s.len == 0 {
                return Ok(Some(idx));
            }
        }
        let left = (s.len - s.got).min(self.chunk_size);
        self.reading = Reading::Payload { cs: idx, left };
        Ok(None)
    }

    fn complete(&mut self, cs: usize, on: &mut impl FnMut(Event)) -> Result<(), RtmpError> {
        let s = &mut self.streams[cs];
        let (type_id, len) = (s.type_id, s.len);
        if !s.assemble {
            if type_id == AUDIO || type_id == VIDEO {
                let video = (type_id == VIDEO).then(|| video_kind(&s.head[..s.head_len]));
                on(Event::Media {
                    type_id,
                    len,
                    video,
                });
            }
            return Ok(());
        }
        let body = std::mem::take(&mut s.body);
        let r = self.dispatch(type_id, &body, on);
        // Give the allocation back for the next message of this chunk stream.
        let s = &mut self.streams[cs];
        s.body = body;
        s.body.clear();
        r
    }

    fn dispatch(
        &mut self,
        type_id: u8,
        body: &[u8],
        on: &mut impl FnMut(Event),
    ) -> Result<(), RtmpError> {
        let u32_at = |i: usize| -> Result<u32, RtmpError> {
            body.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(RtmpError("control message too short"))
        };
        match type_id {
            SET_CHUNK_SIZE => {
                let size = u32_at(0)? & 0x7FFF_FFFF;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(RtmpError("Set Chunk Size out of range"));
                }
                self.chunk_size = size;
            }
            ABORT => {
                let id = u32_at(0)?;
                if let Some(s) = self.streams.iter_mut().find(|s| s.id == id) {
                    s.got = s.len;
                    s.body.clear();
                }
            }
            USER_CONTROL => {
                let event = body
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or(RtmpError("user control message too short"))?;
                // 6: Ping Request, answered with Ping Response (7) and the same timestamp.
                if event == 6 {
                    let mut pong = vec![0, 7];
                    pong.extend_from_slice(&u32_at(2)?.to_be_bytes());
                    self.send(CSID_CONTROL, USER_CONTROL, 0, &pong);
                }
            }
            WINDOW_ACK_SIZE => self.window = u32_at(0)?,
            SET_PEER_BANDWIDTH => {
                let size = u32_at(0)?;
                self.send(CSID_CONTROL, WINDOW_ACK_SIZE, 0, &size.to_be_bytes());
            }
            COMMAND_AMF3 => self.command(body.get(1..).unwrap_or(&[]), on)?,
            COMMAND_AMF0 => self.command(body, on)?,
            AGGREGATE => aggregate(body, on)?,
            _ => {}
        }
        Ok(())
    }

    fn command(&mut self, body: &[u8], on: &mut impl FnMut(Event)) -> Result<(), RtmpError> {
        let values = amf0::read_all(body).map_err(RtmpError)?;
        let name = values.first().and_then(Value::as_str).unwrap_or("");
        let txn = values.get(1).and_then(Value::as_f64).unwrap_or(0.0);
        // The information object: the first object after the transaction id.
        let info = values
            .iter()
            .skip(2)
            .find(|v| matches!(v, Value::Object(_)));
        let text = |k: &str| info.and_then(|i| i.get(k)).and_then(Value::as_str);
        match name {
            "_result" if self.phase == Phase::Connecting && txn == TXN_CONNECT => {
                self.phase = Phase::CreatingStream;
                let mut b = Vec::new();
                amf0::write_string(&mut b, "createStream");
                amf0::write_number(&mut b, TXN_CREATE_STREAM);
                amf0::write_null(&mut b);
                self.send(CSID_COMMAND, COMMAND_AMF0, 0, &b);
            }
            "_result" if self.phase == Phase::CreatingStream && txn == TXN_CREATE_STREAM => {
                let id = values
                    .get(3)
                    .and_then(Value::as_f64)
                    .ok_or(RtmpError("createStream answered without a stream id"))?;
                if !(0.0..=f64::from(u32::MAX)).contains(&id) {
                    return Err(RtmpError("createStream answered a bad stream id"));
                }
                let stream_id = id as u32;
                self.phase = Phase::Starting;
                let mut b = Vec::new();
                amf0::write_string(&mut b, "play");
                amf0::write_number(&mut b, 0.0);
                amf0::write_null(&mut b);
                amf0::write_string(&mut b, &self.target.name);
                amf0::write_number(&mut b, -2000.0);
                self.send(CSID_PLAY, COMMAND_AMF0, stream_id, &b);
                let mut ev = vec![0, 3];
                ev.extend_from_slice(&stream_id.to_be_bytes());
                ev.extend_from_slice(&BUFFER_MS.to_be_bytes());
                self.send(CSID_CONTROL, USER_CONTROL, 0, &ev);
            }
            "_error" => {
                self.phase = Phase::Refused;
                on(Event::Refused(format!(
                    "{} {}",
                    text("code").unwrap_or("_error"),
                    text("description").unwrap_or("")
                )));
            }
            "onStatus" => {
                let code = text("code").unwrap_or("");
                if code == "NetStream.Play.Start" && self.phase == Phase::Starting {
                    self.phase = Phase::Playing;
                    on(Event::Playing);
                } else if text("level") == Some("error")
                    || code.ends_with(".StreamNotFound")
                    || code.ends_with(".Failed")
                {
                    self.phase = Phase::Refused;
                    on(Event::Refused(format!(
                        "{code} {}",
                        text("description").unwrap_or("")
                    )));
                } else if code == "NetStream.Play.UnpublishNotify" {
                    on(Event::Unpublished);
                }
            }
            "close" => on(Event::Closed),
            _ => {}
        }
        Ok(())
    }

    fn send_connect(&mut self) {
        self.phase = Phase::Connecting;
        let mut b = Vec::new();
        amf0::write_string(&mut b, "connect");
        amf0::write_number(&mut b, TXN_CONNECT);
        let props = Value::Object(vec![
            ("app".into(), Value::Str(self.target.app.clone())),
            ("flashVer".into(), Value::Str("LNX 9,0,124,2".into())),
            ("tcUrl".into(), Value::Str(self.target.tc_url.clone())),
            ("fpad".into(), Value::Bool(false)),
            ("capabilities".into(), Value::Number(15.0)),
            ("audioCodecs".into(), Value::Number(4071.0)),
            ("videoCodecs".into(), Value::Number(252.0)),
            ("videoFunction".into(), Value::Number(1.0)),
        ]);
        amf0::write_value(&mut b, &props);
        self.send(CSID_COMMAND, COMMAND_AMF0, 0, &b);
    }

    /// One message in chunks of [`OUT_CHUNK_SIZE`]: a type-0 header, then type-3 headers.
    fn send(&mut self, csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) {
        debug_assert!((2..64).contains(&csid));
        self.out.push(csid);
        self.out.extend_from_slice(&[0, 0, 0]);
        self.out
            .extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        self.out.push(type_id);
        self.out.extend_from_slice(&stream_id.to_le_bytes());
        for (i, chunk) in payload.chunks(OUT_CHUNK_SIZE).enumerate() {
            if i > 0 {
                self.out.push(0xC0 | csid);
            }
            self.out.extend_from_slice(chunk);
        }
    }
}

/// Audio and video messages inside an aggregate (FLV tags without the file header).
fn aggregate(mut body: &[u8], on: &mut impl FnMut(Event)) -> Result<(), RtmpError> {
    while !body.is_empty() {
        if body.len() < 11 {
            return Err(RtmpError("aggregate message cut short"));
        }
        let type_id = body[0];
        let len = u32::from_be_bytes([0, body[1], body[2], body[3]]);
        let end = 11 + len as usize + 4;
        if body.len() < end {
            return Err(RtmpError("aggregate message cut short"));
        }
        let data = &body[11..11 + len as usize];
        if type_id == AUDIO || type_id == VIDEO {
            let video = (type_id == VIDEO).then(|| video_kind(&data[..data.len().min(MEDIA_HEAD)]));
            on(Event::Media {
                type_id,
                len,
                video,
            });
        }
        body = &body[end..];
    }
    Ok(())
}

/// `rtmp://HOST[:PORT]/APP/NAME[?QUERY]` → (HOST:PORT, the play target).
pub fn parse_url(url: &str) -> Result<(String, PlayTarget), String> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| format!("--url must start with rtmp://, got {url:?}"))?;
    let (hostport, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{url:?} has no /APP/STREAM"))?;
    if hostport.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let (app, name) = path
        .split_once('/')
        .ok_or_else(|| format!("{url:?} has no /APP/STREAM"))?;
    if app.is_empty() || name.is_empty() || name.starts_with('?') {
        return Err(format!("{url:?} has no /APP/STREAM"));
    }
    let with_port = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.to_string()
        } else {
            format!("{hostport}:1935")
        }
    } else if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:1935")
    };
    let target = PlayTarget {
        app: app.to_string(),
        name: name.to_string(),
        tc_url: format!("rtmp://{hostport}/{app}"),
    };
    Ok((with_port, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's side written out by hand: chunks of `size` with the headers a server uses.
    fn chunked(csid: u8, type_id: u8, sid: u32, ts: u32, body: &[u8], size: usize) -> Vec<u8> {
        let mut out = vec![csid];
        let ext = ts >= 0xFF_FFFF;
        let field = if ext { 0xFF_FFFF } else { ts };
        out.extend_from_slice(&field.to_be_bytes()[1..]);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&sid.to_le_bytes());
        if ext {
            out.extend_from_slice(&ts.to_be_bytes());
        }
        for (i, c) in body.chunks(size).enumerate() {
            if i > 0 {
                out.push(0xC0 | csid);
                if ext {
                    out.extend_from_slice(&ts.to_be_bytes());
                }
            }
            out.extend_from_slice(c);
        }
        out
    }

    fn command(name: &str, txn: f64, rest: &[Value]) -> Vec<u8> {
        let mut b = Vec::new();
        amf0::write_string(&mut b, name);
        amf0::write_number(&mut b, txn);
        for v in rest {
            amf0::write_value(&mut b, v);
        }
        b
    }

    fn status(level: &str, code: &str) -> Vec<u8> {
        command(
            "onStatus",
            0.0,
            &[
                Value::Null,
                Value::Object(vec![
                    ("level".into(), Value::Str(level.into())),
                    ("code".into(), Value::Str(code.into())),
                    ("description".into(), Value::Str("d".into())),
                ]),
            ],
        )
    }

    /// Decodes what the client sent (always 128-byte chunks, type-0 then type-3 headers).
    fn sent_commands(out: &[u8]) -> Vec<(u8, u32, Vec<Value>)> {
        let mut msgs = Vec::new();
        let mut i = 0;
        while i < out.len() {
            assert!(out[i] < 64 && out[i] >= 2, "type-0 header expected");
            let len = u32::from_be_bytes([0, out[i + 4], out[i + 5], out[i + 6]]) as usize;
            let type_id = out[i + 7];
            let sid = u32::from_le_bytes(out[i + 8..i + 12].try_into().unwrap());
            i += 12;
            let mut body = Vec::new();
            while body.len() < len {
                if !body.is_empty() {
                    assert_eq!(out[i] >> 6, 3);
                    i += 1;
                }
                let n = (len - body.len()).min(OUT_CHUNK_SIZE);
                body.extend_from_slice(&out[i..i + n]);
                i += n;
            }
            let values = if type_id == COMMAND_AMF0 {
                amf0::read_all(&body).unwrap()
            } else {
                vec![Value::Number(body.len() as f64)]
            };
            msgs.push((type_id, sid, values));
        }
        msgs
    }

    fn target() -> PlayTarget {
        parse_url("rtmp://127.0.0.1:1935/live/cam?txSecret=ab&txTime=1")
            .unwrap()
            .1
    }

    /// Feeds `bytes` in pieces of `piece`, collecting events and what the client sent.
    fn feed(c: &mut PlayClient, bytes: &[u8], piece: usize) -> (Vec<Event>, Vec<u8>) {
        let mut events = Vec::new();
        let mut sent = Vec::new();
        for p in bytes.chunks(piece) {
            c.handle_input(p, &mut |e| events.push(e)).unwrap();
            if let Some(o) = c.take_output() {
                sent.extend(o);
            }
        }
        (events, sent)
    }

    #[test]
    fn plays_through_connect_create_stream_and_play() {
        for piece in [1, 3, 100, 5000] {
            let mut c = PlayClient::new(target(), 7);
            let c0c1 = c.take_output().unwrap();
            assert_eq!(c0c1.len(), 1 + HANDSHAKE_LEN);
            assert_eq!(&c0c1[..9], &[3, 0, 0, 0, 0, 0, 0, 0, 0]);

            let mut s = vec![3u8];
            s.extend((0..HANDSHAKE_LEN).map(|i| i as u8));
            s.extend(vec![9u8; HANDSHAKE_LEN]);
            let (_, sent) = feed(&mut c, &s, piece);
            assert_eq!(
                &sent[..HANDSHAKE_LEN],
                &s[1..1 + HANDSHAKE_LEN],
                "C2 echoes S1"
            );
            let connect = sent_commands(&sent[HANDSHAKE_LEN..]);
            assert_eq!(connect[0].2[0], Value::Str("connect".into()));
            assert_eq!(
                connect[0].2[2].get("tcUrl").and_then(Value::as_str),
                Some("rtmp://127.0.0.1:1935/live")
            );

            let mut s = chunked(2, WINDOW_ACK_SIZE, 0, 0, &5000u32.to_be_bytes(), 128);
            s.extend(chunked(
                2,
                SET_PEER_BANDWIDTH,
                0,
                0,
                &[0, 0, 0x13, 0x88, 2],
                128,
            ));
            s.extend(chunked(
                2,
                SET_CHUNK_SIZE,
                0,
                0,
                &4096u32.to_be_bytes(),
                128,
            ));
            let props = Value::Object(vec![("fmsVer".into(), Value::Str("x".repeat(300)))]);
            s.extend(chunked(
                3,
                COMMAND_AMF0,
                0,
                0,
                &command("_result", 1.0, &[props]),
                4096,
            ));
            let (events, sent) = feed(&mut c, &s, piece);
            assert!(events.is_empty());
            let msgs = sent_commands(&sent);
            assert_eq!(msgs[0].0, WINDOW_ACK_SIZE, "answer to Set Peer Bandwidth");
            assert_eq!(msgs[1].2[0], Value::Str("createStream".into()));

            let mut s = chunked(
                3,
                COMMAND_AMF0,
                0,
                0,
                &command("_result", 2.0, &[Value::Null, Value::Number(1.0)]),
                4096,
            );
            s.extend(chunked(4, USER_CONTROL, 0, 0, &[0, 6, 0, 0, 1, 2], 4096));
            let (_, sent) = feed(&mut c, &s, piece);
            let msgs = sent_commands(&sent);
            assert_eq!(msgs[0].1, 1, "play goes on the new stream");
            assert_eq!(msgs[0].2[3], Value::Str("cam?txSecret=ab&txTime=1".into()));
            assert_eq!(msgs[1].0, USER_CONTROL, "Set Buffer Length");
            assert_eq!(msgs[2].0, USER_CONTROL, "Ping Response");

            let mut s = chunked(
                5,
                COMMAND_AMF0,
                1,
                0,
                &status("status", "NetStream.Play.Reset"),
                4096,
            );
            s.extend(chunked(
                5,
                COMMAND_AMF0,
                1,
                0,
                &status("status", "NetStream.Play.Start"),
                4096,
            ));
            s.extend(chunked(6, VIDEO, 1, 0, &[0x17, 0, 0, 0, 0, 1, 2], 4096));
            let mut key = vec![0x17, 1];
            key.resize(10_000, 0xAB);
            s.extend(chunked(6, VIDEO, 1, 0x0100_0000, &key, 4096));
            s.extend(chunked(7, AUDIO, 1, 5, &[0xAF, 1, 2, 3], 4096));
            let (events, sent) = feed(&mut c, &s, piece);
            assert!(c.is_playing());
            assert_eq!(
                events,
                vec![
                    Event::Playing,
                    Event::Media {
                        type_id: 9,
                        len: 7,
                        video: Some(VideoKind::Config)
                    },
                    Event::Media {
                        type_id: 9,
                        len: 10_000,
                        video: Some(VideoKind::Frame { key: true })
                    },
                    Event::Media {
                        type_id: 8,
                        len: 4,
                        video: None
                    },
                ],
                "piece {piece}"
            );
            let acks = sent_commands(&sent);
            assert!(
                acks.iter().any(|m| m.0 == ACK),
                "acknowledged past the 5000-byte window"
            );
        }
    }

    #[test]
    fn compressed_headers_continue_their_chunk_stream() {
        let mut c = PlayClient::new(target(), 1);
        c.stage = Stage::Chunks;
        c.phase = Phase::Playing;
        // type 0 (audio, 4 bytes), type 2 (delta only), type 3 (everything repeated).
        let mut s = chunked(4, AUDIO, 1, 100, &[0xAF, 1, 0, 0], 128);
        s.extend_from_slice(&[0x84, 0, 0, 23, 0xAF, 1, 0, 0]);
        s.extend_from_slice(&[0xC4, 0xAF, 1, 0, 0]);
        // type 1 (new length and type) then a 2-chunk message with a type-3 continuation.
        s.extend_from_slice(&[0x44, 0, 0, 40, 0, 0, 200, VIDEO]);
        s.extend(std::iter::once(0x27).chain(std::iter::repeat_n(1, 127)));
        s.push(0xC4);
        s.extend(std::iter::repeat_n(0, 72));
        let mut events = Vec::new();
        c.handle_input(&s, &mut |e| events.push(e)).unwrap();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(
            events[3],
            Event::Media {
                type_id: 9,
                len: 200,
                video: Some(VideoKind::Frame { key: false })
            }
        );
    }

    #[test]
    fn refusals_and_bad_input() {
        let mut c = PlayClient::new(target(), 1);
        c.stage = Stage::Chunks;
        c.phase = Phase::Starting;
        let s = chunked(
            5,
            COMMAND_AMF0,
            1,
            0,
            &status("error", "NetStream.Play.StreamNotFound"),
            4096,
        );
        let mut events = Vec::new();
        c.handle_input(&s, &mut |e| events.push(e)).unwrap();
        assert!(matches!(&events[0], Event::Refused(why) if why.contains("StreamNotFound")));

        let mut c = PlayClient::new(target(), 1);
        assert!(
            c.handle_input(&[6; 1537], &mut |_| {}).is_err(),
            "RTMPE answer"
        );

        let mut c = PlayClient::new(target(), 1);
        c.stage = Stage::Chunks;
        assert!(
            c.handle_input(&[0xC9, 1, 2, 3], &mut |_| {}).is_err(),
            "type 3 first"
        );
        let mut c = PlayClient::new(target(), 1);
        c.stage = Stage::Chunks;
        let huge = [2, 0, 0, 0, 0xFF, 0xFF, 0xFF, COMMAND_AMF0, 0, 0, 0, 0];
        assert!(
            c.handle_input(&huge, &mut |_| {}).is_err(),
            "16 MiB command"
        );
        let mut c = PlayClient::new(target(), 1);
        c.stage = Stage::Chunks;
        let zero = chunked(2, SET_CHUNK_SIZE, 0, 0, &0u32.to_be_bytes(), 128);
        assert!(c.handle_input(&zero, &mut |_| {}).is_err());
        let mut c = PlayClient::new(target(), 1);
        c.stage = Stage::Chunks;
        let mut many = Vec::new();
        for id in 2..64u8 {
            many.extend(chunked(id, AUDIO, 1, 0, &[], 128));
        }
        for k in 0..10u8 {
            // Two-byte basic headers: chunk streams 64 and up.
            many.extend_from_slice(&[0, k, 0, 0, 0, 0, 0, 0, AUDIO, 1, 0, 0, 0]);
        }
        assert!(
            c.handle_input(&many, &mut |_| {}).is_err(),
            "chunk streams bounded"
        );
    }

    #[test]
    fn urls_split_like_ffmpeg() {
        let (addr, t) = parse_url("rtmp://127.0.0.1/live/s1").unwrap();
        assert_eq!(addr, "127.0.0.1:1935");
        assert_eq!((t.app.as_str(), t.name.as_str()), ("live", "s1"));
        assert_eq!(t.tc_url, "rtmp://127.0.0.1/live");
        assert!(parse_url("rtmp://127.0.0.1/live").is_err());
        assert!(parse_url("http://127.0.0.1/live/x").is_err());
        assert!(parse_url("rtmp://127.0.0.1/live/?x").is_err());
    }
}
