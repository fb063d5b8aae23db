//! RTMP message bodies the session reads and writes: protocol control messages
//! (types 1–6), user control events (type 4), and AMF0 commands (type 20, and 17 with its
//! AMF3 prefix byte). Sans-IO; the chunk layer carries them.

use bytes::{Bytes, BytesMut};

use crate::media::amf0::{self, Amf0Error, Amf0Value, Limits};

/// RTMP message type ids.
pub mod types {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// User control event types.
pub mod user_control {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const SET_BUFFER_LENGTH: u16 = 3;
    pub const STREAM_IS_RECORDED: u16 = 4;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

pub fn set_chunk_size(size: u32) -> [u8; 4] {
    size.to_be_bytes()
}

pub fn window_ack_size(size: u32) -> [u8; 4] {
    size.to_be_bytes()
}

pub fn acknowledgement(sequence: u32) -> [u8; 4] {
    sequence.to_be_bytes()
}

/// Limit type 2 = dynamic.
pub fn set_peer_bandwidth(size: u32, limit_type: u8) -> [u8; 5] {
    let b = size.to_be_bytes();
    [b[0], b[1], b[2], b[3], limit_type]
}

/// A user control event with a 4-byte argument (stream id or ping timestamp).
pub fn user_control_event(event: u16, arg: u32) -> [u8; 6] {
    let e = event.to_be_bytes();
    let a = arg.to_be_bytes();
    [e[0], e[1], a[0], a[1], a[2], a[3]]
}

/// A 4-byte big-endian body (Acknowledgement, Window Acknowledgement Size, …).
pub fn read_u32(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A user control event: its type and first 4-byte argument (absent for short bodies).
pub fn read_user_control(payload: &[u8]) -> Option<(u16, Option<u32>)> {
    let e = payload.get(..2)?;
    Some((u16::from_be_bytes([e[0], e[1]]), read_u32(&payload[2..])))
}

/// A decoded AMF0 command: `name(transaction_id, command_object, args…)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    /// The command object (`Null` for most stream commands).
    pub object: Amf0Value,
    pub args: Vec<Amf0Value>,
}

/// Why a command body could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    Amf0(Amf0Error),
    /// No name string, or no transaction id.
    Shape(&'static str),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Amf0(e) => write!(f, "bad command: {e}"),
            CommandError::Shape(why) => write!(f, "bad command: {why}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// The AMF0 body of a command or data message: type 17/15 bodies start with one byte
/// (the AMF3 "switch" prefix, 0) and are AMF0 after it, as every RTMP client sends them.
pub fn amf0_body(type_id: u8, payload: &Bytes) -> Bytes {
    match type_id {
        types::COMMAND_AMF3 | types::DATA_AMF3 if payload.first() == Some(&0) => payload.slice(1..),
        _ => payload.clone(),
    }
}

/// Reads a command body (already past any AMF3 prefix).
pub fn parse_command(body: &[u8], limits: Limits) -> Result<Command, CommandError> {
    let mut values = amf0::decode_all(body, limits)
        .map_err(CommandError::Amf0)?
        .into_iter();
    let name = match values.next() {
        Some(Amf0Value::String(s)) => s,
        _ => return Err(CommandError::Shape("command name is not a string")),
    };
    // Some clients send a missing or non-number transaction id on notify-style calls;
    // treat it as 0 (no reply expected) rather than refusing the command.
    let transaction_id = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
    let object = values.next().unwrap_or(Amf0Value::Null);
    Ok(Command {
        name,
        transaction_id,
        object,
        args: values.collect(),
    })
}

/// Encodes `name(transaction_id, values…)` as a command body.
pub fn command_body(name: &str, transaction_id: f64, values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::new();
    amf0::encode_str(name, &mut out);
    amf0::encode_number(transaction_id, &mut out);
    for v in values {
        amf0::encode(v, &mut out);
    }
    out
}

/// An `onStatus` info object.
pub fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::object([
        ("level", Amf0Value::string(level)),
        ("code", Amf0Value::string(code)),
        ("description", Amf0Value::string(description)),
    ])
}

/// A data message body: a handler name then values (`|RtmpSampleAccess`, `onMetaData`).
pub fn data_body(name: &str, values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::new();
    amf0::encode_str(name, &mut out);
    for v in values {
        amf0::encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trip() {
        let body = command_body(
            "connect",
            1.0,
            &[Amf0Value::object([("app", Amf0Value::string("live"))])],
        );
        let c = parse_command(&body, Limits::default()).unwrap();
        assert_eq!(c.name, "connect");
        assert_eq!(c.transaction_id, 1.0);
        assert_eq!(
            c.object.get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        assert!(c.args.is_empty());
    }

    #[test]
    fn amf3_prefix_is_skipped() {
        let mut p = vec![0u8];
        p.extend_from_slice(&command_body("play", 0.0, &[Amf0Value::Null]));
        let body = amf0_body(types::COMMAND_AMF3, &Bytes::from(p));
        assert_eq!(
            parse_command(&body, Limits::default()).unwrap().name,
            "play"
        );
    }

    #[test]
    fn a_command_without_a_name_is_refused() {
        let mut out = BytesMut::new();
        amf0::encode_number(1.0, &mut out);
        assert!(matches!(
            parse_command(&out, Limits::default()),
            Err(CommandError::Shape(_))
        ));
        assert!(matches!(
            parse_command(&[0x02, 0, 9], Limits::default()),
            Err(CommandError::Amf0(Amf0Error::Incomplete))
        ));
    }

    #[test]
    fn control_bodies() {
        assert_eq!(set_peer_bandwidth(2_500_000, 2), [0, 0x26, 0x25, 0xA0, 2]);
        assert_eq!(
            read_user_control(&user_control_event(6, 99)),
            Some((6, Some(99)))
        );
        assert_eq!(read_user_control(&[0, 3]), Some((3, None)));
        assert_eq!(read_u32(&[1, 2]), None);
    }
}
