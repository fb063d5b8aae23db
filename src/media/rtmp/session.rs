//! The server side of one RTMP connection as a state machine: bytes and time in, events
//! and bytes to write out. No socket, no clock of its own.
//!
//! The driver calls [`ServerSession::handle_input`] with what it read, then drains
//! [`ServerSession::poll_event`] and writes what [`ServerSession::poll_transmit`] returns.
//! `connect` is answered by the session itself; `publish` and `play` become
//! [`Event::Publish`] / [`Event::Play`] requests that the application answers with
//! [`ServerSession::accept_publish`], [`ServerSession::accept_play`] or
//! [`ServerSession::reject`]. A reject sends an `onStatus` error whose description ffmpeg
//! prints ("Server error: …") and puts the session in the closing state: the driver writes
//! what is pending and closes the socket ([`ServerSession::is_closing`]).
//!
//! One stream per connection: `createStream` always answers message stream
//! [`play::STREAM_ID`], which is what the shared play packaging ([`super::play`]) assumes.
//! A publisher's audio, video and data messages come out as [`Event::Media`]; `onMetaData`
//! (with or without the `@setDataFrame` wrapper) as [`Event::Metadata`], its payload a
//! zero-copy slice of the message that starts at `onMetaData`, ready to forward as is.
//!
//! Which errors close what: every [`SessionError`] closes this connection only; none can
//! affect the shard. Media from a connection that is not an accepted publisher is dropped,
//! not an error (publishers wait for `NetStream.Publish.Start` before sending any: ffmpeg
//! and librtmp/OBS do).
//!
//! What a peer can make the session hold depends on what it has proven: until a publish is
//! accepted — and for players, always — the chunk decoder runs on
//! [`SessionConfig::chunk_limits`] ([`ChunkLimits::before_publish`]: 16 KiB messages,
//! 16 KiB of partial messages), enough for any command; a larger message closes the
//! connection at its header. [`ServerSession::accept_publish`] (the signature checked and
//! the claim held) switches to [`SessionConfig::publish_chunk_limits`] and charges partial
//! messages to the shard's [`PartialBudget`] ([`ServerSession::set_publish_budget`]).
//! Output only ever answers input (a reply per command or ping), so
//! what [`ServerSession::poll_transmit`] returns is proportional to what was read; the
//! driver's bounded outbound queue covers a peer that does not read.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::chunk::{
    encode_message, ChunkDecoder, ChunkError, ChunkLimits, PartialBudget, DEFAULT_CHUNK_SIZE,
};
use super::handshake::{Handshake, HandshakeError, HandshakeKind};
use super::message::{self, types, user_control, CommandError};
use super::play;
use crate::media::amf0::{Amf0Error, Amf0Value, Limits};
use crate::media::flv::FlvError;
use crate::media::kind::MediaKind;
use crate::media::packet::MediaMessage;

/// Chunk stream for protocol control and user control messages (fixed by the spec).
pub(super) const CSID_CONTROL: u32 = 2;
/// Chunk stream for the session's command replies.
const CSID_COMMAND: u32 = 3;
/// Tags one aggregate message may carry (see `handle_aggregate`).
pub(super) const MAX_AGGREGATE_TAGS: usize = 4096;

/// `onStatus` codes an application passes to [`ServerSession::reject`].
pub mod status {
    /// The stream name is not acceptable (bad or missing signature, unknown app, …).
    pub const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
    /// Publishing refused (a hook said no, the stream already has a publisher, …).
    pub const PUBLISH_DENIED: &str = "NetStream.Publish.Denied";
    /// No such stream to play.
    pub const PLAY_NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
    /// Playing refused (bad signature, Referer, …).
    pub const PLAY_FAILED: &str = "NetStream.Play.Failed";
}

/// Settings of a session. All play sessions must keep [`play`]'s fixed values; these are the
/// parts that may differ per deployment.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// Chunk stream limits until a publish is accepted, and for players throughout.
    pub chunk_limits: ChunkLimits,
    /// Chunk stream limits for an accepted publisher.
    pub publish_chunk_limits: ChunkLimits,
    pub amf0_limits: Limits,
    /// Window Acknowledgement Size and Set Peer Bandwidth announced after `connect`.
    pub window_ack_size: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            chunk_limits: ChunkLimits::before_publish(),
            publish_chunk_limits: ChunkLimits::default(),
            amf0_limits: Limits::default(),
            window_ack_size: 2_500_000,
        }
    }
}

/// A `publish` waiting for the application's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishRequest {
    pub app: String,
    /// The stream name without its query.
    pub stream: String,
    /// The query that came with the request: the stream name's, else the app's, else the
    /// tcUrl's (clients put signatures in any of them).
    pub query: Option<String>,
    /// `live`, `record` or `append`, as the client sent it.
    pub publish_type: String,
    pub tc_url: Option<String>,
}

/// A `play` waiting for the application's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlayRequest {
    pub app: String,
    pub stream: String,
    /// As for [`PublishRequest::query`].
    pub query: Option<String>,
    pub tc_url: Option<String>,
}

/// What the session has to tell the application.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The handshake finished (and which form the client spoke).
    Handshake(HandshakeKind),
    /// `connect` was received and answered with success.
    Connect {
        /// The app name without any query.
        app: String,
        tc_url: Option<String>,
        /// A query on the app name (`rtmp://host/live?k=v/stream`).
        query: Option<String>,
    },
    /// The client asks to publish; answer with `accept_publish` or `reject`.
    Publish(PublishRequest),
    /// The client asks to play; answer with `accept_play` or `reject`.
    Play(PlayRequest),
    /// `onMetaData` from the publisher. `message.payload` starts at the `onMetaData` string
    /// (the `@setDataFrame` wrapper removed) and is what players expect.
    Metadata {
        message: MediaMessage,
        /// The metadata object (an ECMA array or object: width, height, codecs, …).
        object: Amf0Value,
    },
    /// An audio, video or other data message from the accepted publisher.
    Media(MediaMessage),
    /// The publisher stopped (FCUnpublish, deleteStream or closeStream).
    Unpublish,
    /// The player stopped (deleteStream or closeStream).
    PlayStop,
}

/// Why the connection must be closed.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionError {
    Handshake(HandshakeError),
    Chunk(ChunkError),
    Command(CommandError),
    /// An AMF0 data message that does not decode.
    Data(Amf0Error),
    /// An aggregate message whose FLV tags do not read.
    Aggregate(FlvError),
    /// A message the state does not allow (publish before connect, a second publish, …).
    Protocol(&'static str),
    /// The application answered a request that is not pending (not an input error).
    NoPendingRequest,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Handshake(e) => write!(f, "RTMP handshake: {e}"),
            SessionError::Chunk(e) => write!(f, "RTMP chunk stream: {e}"),
            SessionError::Command(e) => write!(f, "RTMP command: {e}"),
            SessionError::Data(e) => write!(f, "RTMP data message: {e}"),
            SessionError::Aggregate(e) => write!(f, "RTMP aggregate message: {e}"),
            SessionError::Protocol(why) => write!(f, "RTMP protocol: {why}"),
            SessionError::NoPendingRequest => f.write_str("no publish or play request pending"),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<ChunkError> for SessionError {
    fn from(e: ChunkError) -> Self {
        SessionError::Chunk(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Handshake,
    /// Waiting for `connect`.
    Connecting,
    Connected,
    /// Rejected or failed: input is ignored, output is flushed, the driver closes.
    Closing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StreamState {
    Idle,
    PublishPending,
    Publishing,
    PlayPending,
    Playing,
}

/// One RTMP server connection. See the module documentation.
#[derive(Debug)]
pub struct ServerSession {
    pub(super) config: SessionConfig,
    pub(super) phase: Phase,
    handshake: Handshake,
    decoder: ChunkDecoder,
    /// Charged with an accepted publisher's partial messages (shared by the shard).
    publish_budget: Option<PartialBudget>,
    out: BytesMut,
    pub(super) out_chunk_size: u32,
    pub(super) events: VecDeque<Event>,
    pub(super) app: String,
    pub(super) app_query: Option<String>,
    pub(super) tc_url: Option<String>,
    pub(super) stream: StreamState,
    pub(super) stream_name: String,
    /// The peer's Window Acknowledgement Size: we acknowledge every that many bytes.
    peer_window: Option<u32>,
    bytes_received: u64,
    bytes_since_ack: u64,
    last_input: Instant,
}

impl ServerSession {
    pub fn new(config: SessionConfig, now: Instant) -> ServerSession {
        // Handshake filler only needs to differ between connections; std's hasher keys are
        // random per process and per call, and cost no system call here.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        ServerSession {
            config,
            phase: Phase::Handshake,
            handshake: Handshake::new(seed),
            decoder: ChunkDecoder::new(config.chunk_limits),
            publish_budget: None,
            out: BytesMut::new(),
            out_chunk_size: DEFAULT_CHUNK_SIZE,
            events: VecDeque::new(),
            app: String::new(),
            app_query: None,
            tc_url: None,
            stream: StreamState::Idle,
            stream_name: String::new(),
            peer_window: None,
            bytes_received: 0,
            bytes_since_ack: 0,
            last_input: now,
        }
    }

    /// The budget an accepted publisher's partial messages are charged to (the shard's,
    /// shared with its other publishers). Without one only the per-connection
    /// [`SessionConfig::publish_chunk_limits`] apply.
    pub fn set_publish_budget(&mut self, budget: PartialBudget) {
        self.publish_budget = Some(budget);
    }

    /// Feeds bytes read from the socket. An error means the connection must be closed
    /// (after writing whatever [`Self::poll_transmit`] still returns).
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Closing {
            return Ok(());
        }
        self.last_input = now;
        let result = self.process(&mut input);
        if result.is_err() {
            self.phase = Phase::Closing;
        }
        result
    }

    fn process(&mut self, input: &mut &[u8]) -> Result<(), SessionError> {
        self.bytes_received += input.len() as u64;
        self.bytes_since_ack += input.len() as u64;
        if self.phase == Phase::Handshake {
            let used = self
                .handshake
                .handle_input(input, &mut self.out)
                .map_err(SessionError::Handshake)?;
            *input = &input[used..];
            if !self.handshake.is_done() {
                return Ok(());
            }
            self.phase = Phase::Connecting;
            if let Some(kind) = self.handshake.kind() {
                self.events.push_back(Event::Handshake(kind));
            }
        }
        while !input.is_empty() && self.phase != Phase::Closing {
            let (used, msg) = self.decoder.decode(input)?;
            *input = &input[used..];
            if let Some(msg) = msg {
                self.handle_message(msg)?;
            }
        }
        if let Some(window) = self.peer_window {
            if window > 0 && self.bytes_since_ack >= u64::from(window) {
                self.bytes_since_ack = 0;
                // The sequence number is the byte count modulo 2^32, as the spec defines.
                let ack = message::acknowledgement(self.bytes_received as u32);
                self.send(CSID_CONTROL, types::ACKNOWLEDGEMENT, 0, &ack);
            }
        }
        Ok(())
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the socket, all pending output as one buffer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// True once the session was rejected or failed: flush and close.
    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// True while an accepted player is playing: the driver may write packaged media
    /// ([`super::play::package`]) between this session's own transmits.
    pub fn is_playing(&self) -> bool {
        self.stream == StreamState::Playing
    }

    /// When input last arrived (for the driver's idle timeout).
    pub fn last_input(&self) -> Instant {
        self.last_input
    }

    /// The app given at `connect` (without its query).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Accepts the pending publish: `NetStream.Publish.Start`, and media starts flowing
    /// as [`Event::Media`].
    pub fn accept_publish(&mut self) -> Result<(), SessionError> {
        if self.stream != StreamState::PublishPending || self.phase == Phase::Closing {
            return Err(SessionError::NoPendingRequest);
        }
        self.stream = StreamState::Publishing;
        // The peer has proven it may publish: media-sized messages from now on.
        self.decoder.set_limits(
            self.config.publish_chunk_limits,
            self.publish_budget.clone(),
        );
        self.send_stream_begin();
        let desc = format!("{} is now published.", self.stream_name);
        self.send_status("status", "NetStream.Publish.Start", &desc);
        Ok(())
    }

    /// Accepts the pending play. After this returns, the driver writes packaged media
    /// (GOP cache first) after whatever [`Self::poll_transmit`] returns.
    pub fn accept_play(&mut self) -> Result<(), SessionError> {
        if self.stream != StreamState::PlayPending || self.phase == Phase::Closing {
            return Err(SessionError::NoPendingRequest);
        }
        self.stream = StreamState::Playing;
        self.send_stream_begin();
        let desc = format!("Playing and resetting {}.", self.stream_name);
        self.send_status("status", "NetStream.Play.Reset", &desc);
        let desc = format!("Started playing {}.", self.stream_name);
        self.send_status("status", "NetStream.Play.Start", &desc);
        let access = message::data_body(
            "|RtmpSampleAccess",
            &[Amf0Value::Boolean(true), Amf0Value::Boolean(true)],
        );
        self.send(play::CSID_DATA, types::DATA_AMF0, play::STREAM_ID, &access);
        Ok(())
    }

    /// Refuses the pending publish or play with an `onStatus` error (`code` from
    /// [`status`], `description` shown by the client), then the session is closing.
    pub fn reject(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        if !matches!(
            self.stream,
            StreamState::PublishPending | StreamState::PlayPending
        ) || self.phase == Phase::Closing
        {
            return Err(SessionError::NoPendingRequest);
        }
        self.send_status("error", code, description);
        self.stream = StreamState::Idle;
        self.phase = Phase::Closing;
        Ok(())
    }

    /// Tells a player its stream's publisher went away (it may come back):
    /// `NetStream.Play.UnpublishNotify` and StreamEOF.
    pub fn notify_unpublished(&mut self) {
        if self.stream != StreamState::Playing {
            return;
        }
        let desc = format!("{} is now unpublished.", self.stream_name);
        self.send_status("status", "NetStream.Play.UnpublishNotify", &desc);
        let eof = message::user_control_event(user_control::STREAM_EOF, play::STREAM_ID);
        self.send(CSID_CONTROL, types::USER_CONTROL, 0, &eof);
    }

    pub(super) fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: &[u8]) {
        encode_message(
            &mut self.out,
            csid,
            type_id,
            stream_id,
            0,
            payload,
            self.out_chunk_size,
        );
    }

    pub(super) fn send_command(
        &mut self,
        stream_id: u32,
        name: &str,
        txn: f64,
        values: &[Amf0Value],
    ) {
        let body = message::command_body(name, txn, values);
        self.send(CSID_COMMAND, types::COMMAND_AMF0, stream_id, &body);
    }

    fn send_status(&mut self, level: &str, code: &str, description: &str) {
        let info = message::status_object(level, code, description);
        self.send_command(play::STREAM_ID, "onStatus", 0.0, &[Amf0Value::Null, info]);
    }

    fn send_stream_begin(&mut self) {
        let ev = message::user_control_event(user_control::STREAM_BEGIN, play::STREAM_ID);
        self.send(CSID_CONTROL, types::USER_CONTROL, 0, &ev);
    }

    fn handle_message(&mut self, msg: super::chunk::RawMessage) -> Result<(), SessionError> {
        match msg.type_id {
            types::COMMAND_AMF0 | types::COMMAND_AMF3 => {
                let body = message::amf0_body(msg.type_id, &msg.payload);
                let cmd = message::parse_command(&body, self.config.amf0_limits)
                    .map_err(SessionError::Command)?;
                self.handle_command(cmd)
            }
            types::DATA_AMF0 | types::DATA_AMF3 => {
                if self.stream != StreamState::Publishing {
                    return Ok(());
                }
                let body = message::amf0_body(msg.type_id, &msg.payload);
                self.handle_data(msg.timestamp, body)
            }
            types::AUDIO | types::VIDEO => {
                if self.stream == StreamState::Publishing {
                    let kind = if msg.type_id == types::AUDIO {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    self.events.push_back(Event::Media(MediaMessage {
                        kind,
                        timestamp: msg.timestamp,
                        payload: msg.payload,
                    }));
                }
                Ok(())
            }
            types::AGGREGATE => {
                if self.stream == StreamState::Publishing {
                    self.handle_aggregate(msg.timestamp, msg.payload)?;
                }
                Ok(())
            }
            types::USER_CONTROL => {
                if let Some((user_control::PING_REQUEST, Some(ts))) =
                    message::read_user_control(&msg.payload)
                {
                    let pong = message::user_control_event(user_control::PING_RESPONSE, ts);
                    self.send(CSID_CONTROL, types::USER_CONTROL, 0, &pong);
                }
                Ok(())
            }
            types::WINDOW_ACK_SIZE => {
                self.peer_window = message::read_u32(&msg.payload);
                Ok(())
            }
            // Set Chunk Size and Abort were applied by the decoder; Acknowledgement and Set
            // Peer Bandwidth concern how much we may send, which the driver's bounded queue
            // already governs; shared objects are not served.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtmp::chunk::RawMessage;
    use crate::media::rtmp::message::Command;
    use crate::media::{amf0, flv};

    /// A minimal in-memory RTMP client: builds the messages a real publisher or player
    /// sends and reads what the server answers.
    struct Client {
        decoder: ChunkDecoder,
        chunk_size: u32,
    }

    impl Client {
        fn new() -> Client {
            Client {
                decoder: ChunkDecoder::new(ChunkLimits::default()),
                chunk_size: 128,
            }
        }

        fn handshake() -> Vec<u8> {
            let mut v = vec![3u8];
            v.extend(std::iter::repeat_n(0u8, 1536));
            v.extend(std::iter::repeat_n(0u8, 1536));
            v
        }

        fn command(&self, stream_id: u32, name: &str, txn: f64, values: &[Amf0Value]) -> Vec<u8> {
            let body = message::command_body(name, txn, values);
            self.message(3, types::COMMAND_AMF0, stream_id, 0, &body)
        }

        fn message(&self, csid: u32, t: u8, stream_id: u32, ts: u32, body: &[u8]) -> Vec<u8> {
            let mut out = BytesMut::new();
            encode_message(&mut out, csid, t, stream_id, ts, body, self.chunk_size);
            out.to_vec()
        }

        fn connect(&self, app: &str) -> Vec<u8> {
            self.command(
                0,
                "connect",
                1.0,
                &[Amf0Value::object([
                    ("app", Amf0Value::string(app)),
                    (
                        "tcUrl",
                        Amf0Value::string(format!("rtmp://127.0.0.1/{app}")),
                    ),
                ])],
            )
        }

        /// Every message the server sent, decoded (past the 3073 handshake bytes).
        fn read(&mut self, mut bytes: &[u8]) -> Vec<RawMessage> {
            let mut out = Vec::new();
            while !bytes.is_empty() {
                let (used, m) = self.decoder.decode(bytes).unwrap();
                bytes = &bytes[used..];
                out.extend(m);
            }
            out
        }
    }

    fn statuses(msgs: &[RawMessage]) -> Vec<(String, String)> {
        msgs.iter()
            .filter(|m| m.type_id == types::COMMAND_AMF0)
            .filter_map(|m| {
                let c = message::parse_command(&m.payload, Limits::default()).ok()?;
                if c.name != "onStatus" {
                    return None;
                }
                let info = c.args.first()?;
                Some((
                    info.get("code")?.as_str()?.to_owned(),
                    info.get("description")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    fn events(s: &mut ServerSession) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// Handshake + connect + createStream, returning the session and client state.
    fn connected(app: &str) -> (ServerSession, Client) {
        let now = Instant::now();
        let mut s = ServerSession::new(SessionConfig::default(), now);
        let mut c = Client::new();
        s.handle_input(&Client::handshake(), now).unwrap();
        let hs = s.poll_transmit().unwrap();
        assert_eq!(hs.len(), 1 + 2 * 1536);
        s.handle_input(&c.connect(app), now).unwrap();
        s.handle_input(&c.command(0, "createStream", 2.0, &[Amf0Value::Null]), now)
            .unwrap();
        let replies = c.read(&s.poll_transmit().unwrap());
        let results: Vec<Command> = replies
            .iter()
            .filter(|m| m.type_id == types::COMMAND_AMF0)
            .map(|m| message::parse_command(&m.payload, Limits::default()).unwrap())
            .collect();
        assert_eq!(results[0].name, "_result");
        assert_eq!(
            results[0].args[0].get("code").and_then(Amf0Value::as_str),
            Some("NetConnection.Connect.Success")
        );
        assert_eq!(results[1].transaction_id, 2.0);
        assert_eq!(results[1].args[0], Amf0Value::Number(1.0));
        assert_eq!(c.decoder.chunk_size(), play::CHUNK_SIZE);
        (s, c)
    }

    #[test]
    fn publisher_connects_publishes_and_sends_media() {
        let (mut s, c) = connected("live");
        let now = Instant::now();
        let ev = events(&mut s);
        assert!(matches!(ev[0], Event::Handshake(HandshakeKind::Simple)));
        assert_eq!(
            ev[1],
            Event::Connect {
                app: "live".into(),
                tc_url: Some("rtmp://127.0.0.1/live".into()),
                query: None
            }
        );
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[
                Amf0Value::Null,
                Amf0Value::string("test?txSecret=abc&txTime=5C271099"),
                Amf0Value::string("live"),
            ],
        );
        // A frame before the publish is accepted is dropped, not an error.
        let early = c.message(6, types::VIDEO, 1, 0, &[0x17, 0, 0, 0, 0]);
        s.handle_input(&publish, now).unwrap();
        s.handle_input(&early, now).unwrap();
        let ev = events(&mut s);
        assert_eq!(
            ev,
            vec![Event::Publish(PublishRequest {
                app: "live".into(),
                stream: "test".into(),
                query: Some("txSecret=abc&txTime=5C271099".into()),
                publish_type: "live".into(),
                tc_url: Some("rtmp://127.0.0.1/live".into()),
            })]
        );
        s.accept_publish().unwrap();
        let mut c = c;
        let st = statuses(&c.read(&s.poll_transmit().unwrap()));
        assert_eq!(st[0].0, "NetStream.Publish.Start");

        // Metadata wrapped in @setDataFrame, then audio and video.
        let meta = message::data_body(
            "@setDataFrame",
            &[
                Amf0Value::string("onMetaData"),
                Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(640.0))]),
            ],
        );
        let mut wire = c.message(4, types::DATA_AMF0, 1, 0, &meta);
        wire.extend(c.message(4, types::AUDIO, 1, 0, &[0xAF, 0, 0x12, 0x10]));
        wire.extend(c.message(6, types::VIDEO, 1, 40, &[0x17, 1, 0, 0, 0, 1, 2, 3]));
        s.handle_input(&wire, now).unwrap();
        let ev = events(&mut s);
        match &ev[0] {
            Event::Metadata { message, object } => {
                assert_eq!(object.get("width"), Some(&Amf0Value::Number(640.0)));
                let (first, _) = amf0::decode(&message.payload, Limits::default()).unwrap();
                assert_eq!(first.as_str(), Some("onMetaData"));
            }
            other => panic!("expected metadata, got {other:?}"),
        }
        assert!(matches!(&ev[1], Event::Media(m) if m.kind == MediaKind::Audio));
        assert!(
            matches!(&ev[2], Event::Media(m) if m.kind == MediaKind::Video && m.timestamp == 40)
        );

        s.handle_input(&c.command(0, "FCUnpublish", 5.0, &[Amf0Value::Null]), now)
            .unwrap();
        s.handle_input(&c.command(0, "deleteStream", 6.0, &[Amf0Value::Null]), now)
            .unwrap();
        assert_eq!(events(&mut s), vec![Event::Unpublish]);
    }

    #[test]
    fn rejected_publish_sends_the_reason_and_closes() {
        let (mut s, mut c) = connected("live");
        let now = Instant::now();
        events(&mut s);
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("test")],
        );
        s.handle_input(&publish, now).unwrap();
        assert!(matches!(events(&mut s)[0], Event::Publish(_)));
        s.reject(
            status::PUBLISH_BAD_NAME,
            "missing txSecret/txTime signature",
        )
        .unwrap();
        assert!(s.is_closing());
        let st = statuses(&c.read(&s.poll_transmit().unwrap()));
        assert_eq!(
            st,
            vec![(
                "NetStream.Publish.BadName".to_owned(),
                "missing txSecret/txTime signature".to_owned()
            )]
        );
        // Input after the reject is ignored; media never becomes events.
        let frame = c.message(6, types::VIDEO, 1, 0, &[0x17, 1, 0, 0, 0]);
        s.handle_input(&frame, now).unwrap();
        assert!(events(&mut s).is_empty());
        assert_eq!(s.accept_publish(), Err(SessionError::NoPendingRequest));
    }

    #[test]
    fn player_is_accepted_and_can_be_told_of_unpublish() {
        let (mut s, mut c) = connected("live?txSecret=x&txTime=y");
        let now = Instant::now();
        let ev = events(&mut s);
        assert!(matches!(&ev[1], Event::Connect { app, query: Some(q), .. }
            if app == "live" && q == "txSecret=x&txTime=y"));
        let play = c.command(
            1,
            "play",
            4.0,
            &[
                Amf0Value::Null,
                Amf0Value::string("test"),
                Amf0Value::Number(-2.0),
            ],
        );
        s.handle_input(&play, now).unwrap();
        match &events(&mut s)[0] {
            Event::Play(req) => {
                assert_eq!(req.stream, "test");
                // No query on the stream name: the app's is used.
                assert_eq!(req.query.as_deref(), Some("txSecret=x&txTime=y"));
            }
            other => panic!("expected play, got {other:?}"),
        }
        s.accept_play().unwrap();
        assert!(s.is_playing());
        let msgs = c.read(&s.poll_transmit().unwrap());
        let codes: Vec<String> = statuses(&msgs).into_iter().map(|s| s.0).collect();
        assert_eq!(codes, vec!["NetStream.Play.Reset", "NetStream.Play.Start"]);
        assert!(msgs
            .iter()
            .any(|m| m.type_id == types::USER_CONTROL && m.payload[..2] == [0, 0]));
        // Packaged media decodes on this connection's chunk stream state.
        let pkt = play::package(MediaKind::Video, 80, &[0x17; 6000]).unwrap();
        let got = c.read(&pkt);
        assert_eq!(got[0].payload.len(), 6000);
        assert_eq!(got[0].timestamp, 80);

        s.notify_unpublished();
        let codes: Vec<String> = statuses(&c.read(&s.poll_transmit().unwrap()))
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(codes, vec!["NetStream.Play.UnpublishNotify"]);
        s.handle_input(&c.command(0, "deleteStream", 0.0, &[Amf0Value::Null]), now)
            .unwrap();
        assert_eq!(events(&mut s), vec![Event::PlayStop]);
    }

    #[test]
    fn query_falls_back_to_the_tc_url() {
        let now = Instant::now();
        let mut s = ServerSession::new(SessionConfig::default(), now);
        let c = Client::new();
        s.handle_input(&Client::handshake(), now).unwrap();
        let connect = c.command(
            0,
            "connect",
            1.0,
            &[Amf0Value::object([
                ("app", Amf0Value::string("live")),
                (
                    "tcUrl",
                    Amf0Value::string("rtmp://h/live?txSecret=s&txTime=t"),
                ),
            ])],
        );
        s.handle_input(&connect, now).unwrap();
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("test")],
        );
        s.handle_input(&publish, now).unwrap();
        let req = events(&mut s)
            .into_iter()
            .find_map(|e| match e {
                Event::Publish(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(req.query.as_deref(), Some("txSecret=s&txTime=t"));
    }

    #[test]
    fn commands_out_of_order_close_the_connection() {
        let now = Instant::now();
        let mut s = ServerSession::new(SessionConfig::default(), now);
        let c = Client::new();
        s.handle_input(&Client::handshake(), now).unwrap();
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("x")],
        );
        assert!(matches!(
            s.handle_input(&publish, now),
            Err(SessionError::Protocol(_))
        ));
        assert!(s.is_closing());

        let (mut s, c) = connected("live");
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("x")],
        );
        s.handle_input(&publish, now).unwrap();
        assert!(matches!(
            s.handle_input(&publish, now),
            Err(SessionError::Protocol(_))
        ));
    }

    #[test]
    fn ping_is_answered_and_acks_follow_the_peer_window() {
        let (mut s, mut c) = connected("live");
        let now = Instant::now();
        s.poll_transmit();
        let ping = c.message(
            2,
            types::USER_CONTROL,
            0,
            0,
            &message::user_control_event(6, 77),
        );
        s.handle_input(&ping, now).unwrap();
        let msgs = c.read(&s.poll_transmit().unwrap());
        assert_eq!(&msgs[0].payload[..], &message::user_control_event(7, 77));

        let win = c.message(
            2,
            types::WINDOW_ACK_SIZE,
            0,
            0,
            &message::window_ack_size(100),
        );
        s.handle_input(&win, now).unwrap();
        let filler = c.message(3, 20, 0, 0, &message::command_body("noop", 0.0, &[]));
        let mut wire = Vec::new();
        while wire.len() < 200 {
            wire.extend_from_slice(&filler);
        }
        s.handle_input(&wire, now).unwrap();
        let msgs = c.read(&s.poll_transmit().unwrap());
        assert!(msgs.iter().any(|m| m.type_id == types::ACKNOWLEDGEMENT));
    }

    #[test]
    fn aggregate_messages_are_split_into_media() {
        let (mut s, c) = connected("live");
        let now = Instant::now();
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("t")],
        );
        s.handle_input(&publish, now).unwrap();
        s.accept_publish().unwrap();
        events(&mut s);
        let mut agg = flv::encode_tag(MediaKind::Audio, 500, &[0xAF, 1, 1])
            .unwrap()
            .to_vec();
        agg.extend_from_slice(
            &flv::encode_tag(MediaKind::Video, 540, &[0x27, 1, 0, 0, 0]).unwrap(),
        );
        s.handle_input(&c.message(6, types::AGGREGATE, 1, 1000, &agg), now)
            .unwrap();
        let ev = events(&mut s);
        let ts: Vec<u32> = ev
            .iter()
            .map(|e| match e {
                Event::Media(m) => m.timestamp,
                _ => 0,
            })
            .collect();
        assert_eq!(ts, vec![1000, 1040]);
        let bad = c.message(6, types::AGGREGATE, 1, 0, &[8, 0, 0, 1]);
        assert!(s.handle_input(&bad, now).is_err());
    }

    #[test]
    fn an_aggregate_cannot_multiply_into_unbounded_events() {
        let (mut s, c) = connected("live");
        let now = Instant::now();
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("t")],
        );
        s.handle_input(&publish, now).unwrap();
        s.accept_publish().unwrap();
        events(&mut s);
        // Empty tags are skipped: nothing to forward.
        let empty = flv::encode_tag(MediaKind::Audio, 0, &[]).unwrap();
        let agg: Vec<u8> = empty
            .iter()
            .copied()
            .cycle()
            .take(empty.len() * 100)
            .collect();
        s.handle_input(&c.message(6, types::AGGREGATE, 1, 0, &agg), now)
            .unwrap();
        assert!(events(&mut s).is_empty());
        // More tags than the cap close the connection instead of queueing them all.
        let one = flv::encode_tag(MediaKind::Audio, 0, &[0xAF]).unwrap();
        let n = MAX_AGGREGATE_TAGS + 1;
        let agg: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
        let mut c = c;
        c.chunk_size = 4096;
        let mut wire = c.message(2, types::SET_CHUNK_SIZE, 0, 0, &4096u32.to_be_bytes());
        wire.extend(c.message(6, types::AGGREGATE, 1, 0, &agg));
        assert!(matches!(
            s.handle_input(&wire, now),
            Err(SessionError::Aggregate(_))
        ));
    }

    #[test]
    fn undecodable_metadata_closes_the_connection() {
        let (mut s, c) = connected("live");
        let now = Instant::now();
        let publish = c.command(
            1,
            "publish",
            0.0,
            &[Amf0Value::Null, Amf0Value::string("t")],
        );
        s.handle_input(&publish, now).unwrap();
        s.accept_publish().unwrap();
        let bad = c.message(4, types::DATA_AMF0, 1, 0, &[0x02, 0, 10, b'o']);
        assert!(matches!(
            s.handle_input(&bad, now),
            Err(SessionError::Data(_))
        ));
    }
}
