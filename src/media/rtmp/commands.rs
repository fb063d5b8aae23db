//! Command handling for [`ServerSession`]: `connect`, `createStream`, `publish`, `play`
//! and the stream-closing commands, answered or turned into events.

use super::message::{self, types, Command};
use super::play;
use super::session::{
    Event, Phase, PlayRequest, PublishRequest, ServerSession, SessionError, StreamState,
    CSID_CONTROL,
};
use crate::media::amf0::Amf0Value;
use crate::media::sign::StreamName;

impl ServerSession {
    pub(super) fn handle_command(&mut self, cmd: Command) -> Result<(), SessionError> {
        if self.phase == Phase::Connecting {
            if cmd.name != "connect" {
                return Err(SessionError::Protocol("a command before connect"));
            }
            return self.handle_connect(cmd);
        }
        let txn = cmd.transaction_id;
        match cmd.name.as_str() {
            "connect" => Err(SessionError::Protocol("connect sent twice")),
            "createStream" => {
                let id = Amf0Value::Number(f64::from(play::STREAM_ID));
                self.send_command(0, "_result", txn, &[Amf0Value::Null, id]);
                Ok(())
            }
            "releaseStream" | "FCPublish" => {
                if txn != 0.0 {
                    self.send_command(0, "_result", txn, &[Amf0Value::Null, Amf0Value::Undefined]);
                }
                Ok(())
            }
            "publish" => {
                self.check_new_stream_request()?;
                let raw = cmd.args.first().and_then(Amf0Value::as_str).unwrap_or("");
                let name = StreamName::parse(raw);
                let publish_type = cmd
                    .args
                    .get(1)
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("live")
                    .to_owned();
                self.stream = StreamState::PublishPending;
                self.stream_name = name.name.clone();
                let query = self.request_query(name.query);
                self.events.push_back(Event::Publish(PublishRequest {
                    app: self.app.clone(),
                    stream: name.name,
                    query,
                    publish_type,
                    tc_url: self.tc_url.clone(),
                }));
                Ok(())
            }
            "play" => {
                self.check_new_stream_request()?;
                let raw = cmd.args.first().and_then(Amf0Value::as_str).unwrap_or("");
                let name = StreamName::parse(raw);
                self.stream = StreamState::PlayPending;
                self.stream_name = name.name.clone();
                let query = self.request_query(name.query);
                self.events.push_back(Event::Play(PlayRequest {
                    app: self.app.clone(),
                    stream: name.name,
                    query,
                    tc_url: self.tc_url.clone(),
                }));
                Ok(())
            }
            "FCUnpublish" => {
                if self.stream == StreamState::Publishing {
                    self.stream = StreamState::Idle;
                    self.events.push_back(Event::Unpublish);
                }
                if txn != 0.0 {
                    self.send_command(0, "_result", txn, &[Amf0Value::Null, Amf0Value::Undefined]);
                }
                Ok(())
            }
            "deleteStream" | "closeStream" => {
                match self.stream {
                    StreamState::Publishing => self.events.push_back(Event::Unpublish),
                    StreamState::Playing => self.events.push_back(Event::PlayStop),
                    _ => {}
                }
                self.stream = StreamState::Idle;
                Ok(())
            }
            // getStreamLength, _checkbw, receiveAudio, pause, …: a live server has nothing
            // to say, and clients do not wait for answers to them.
            _ => Ok(()),
        }
    }

    fn check_new_stream_request(&self) -> Result<(), SessionError> {
        match self.stream {
            StreamState::Idle => Ok(()),
            _ => Err(SessionError::Protocol(
                "publish or play while a stream is already open",
            )),
        }
    }

    /// The stream name's query, else the app's, else the tcUrl's.
    fn request_query(&self, stream_query: Option<String>) -> Option<String> {
        let non_empty = |q: &Option<String>| q.as_ref().filter(|q| !q.is_empty()).cloned();
        non_empty(&stream_query)
            .or_else(|| non_empty(&self.app_query))
            .or_else(|| {
                let url = self.tc_url.as_deref()?;
                let (_, q) = url.split_once('?')?;
                (!q.is_empty()).then(|| q.to_owned())
            })
    }

    fn handle_connect(&mut self, cmd: Command) -> Result<(), SessionError> {
        let raw_app = cmd
            .object
            .get("app")
            .and_then(Amf0Value::as_str)
            .unwrap_or("");
        let app = StreamName::parse(raw_app);
        // Some clients end the app with a slash ("live/").
        self.app = app.name.trim_end_matches('/').to_owned();
        self.app_query = app.query;
        self.tc_url = cmd
            .object
            .get("tcUrl")
            .and_then(Amf0Value::as_str)
            .map(str::to_owned);
        self.phase = Phase::Connected;

        let w = self.config.window_ack_size;
        self.send(
            CSID_CONTROL,
            types::WINDOW_ACK_SIZE,
            0,
            &message::window_ack_size(w),
        );
        self.send(
            CSID_CONTROL,
            types::SET_PEER_BANDWIDTH,
            0,
            &message::set_peer_bandwidth(w, 2),
        );
        self.send(
            CSID_CONTROL,
            types::SET_CHUNK_SIZE,
            0,
            &message::set_chunk_size(play::CHUNK_SIZE),
        );
        self.out_chunk_size = play::CHUNK_SIZE;
        let props = Amf0Value::object([
            ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
            ("capabilities", Amf0Value::Number(31.0)),
        ]);
        let info = Amf0Value::object([
            ("level", Amf0Value::string("status")),
            ("code", Amf0Value::string("NetConnection.Connect.Success")),
            ("description", Amf0Value::string("Connection succeeded.")),
            ("objectEncoding", Amf0Value::Number(0.0)),
        ]);
        self.send_command(0, "_result", cmd.transaction_id, &[props, info]);
        self.events.push_back(Event::Connect {
            app: self.app.clone(),
            tc_url: self.tc_url.clone(),
            query: self.app_query.clone(),
        });
        Ok(())
    }
}
