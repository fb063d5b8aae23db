//! AMF0 values: decode and encode, sans-IO and bounded.
//!
//! AMF0 is the encoding of RTMP commands (`connect`, `publish`, `onStatus`, …) and of data
//! messages (`onMetaData`). Everything here works on byte slices already in memory.
//!
//! Hostile input cannot make the decoder recurse or allocate without bound: nesting depth,
//! the total number of values in one decode (each value costs a fixed-size node, so a
//! one-byte `Null` repeated would otherwise turn 8 MiB of input into hundreds of MiB of
//! nodes) and string lengths are all capped by [`Limits`]. Declared element counts are never
//! trusted for pre-allocation. Errors separate "the input ends too soon"
//! ([`Amf0Error::Incomplete`]) from input that can never be valid.
//!
//! Strings are UTF-8 in AMF0; invalid sequences are replaced (lossy) rather than refused,
//! because encoders put free text in metadata and a stray byte there should not cost the
//! stream its metadata. Unsupported markers (references, typed objects, AMF3 switch, …) are
//! refused: no RTMP client we serve sends them in the messages we read.

use std::fmt;

use bytes::{BufMut, BytesMut};

const MARKER_NUMBER: u8 = 0x00;
const MARKER_BOOLEAN: u8 = 0x01;
const MARKER_STRING: u8 = 0x02;
const MARKER_OBJECT: u8 = 0x03;
const MARKER_NULL: u8 = 0x05;
const MARKER_UNDEFINED: u8 = 0x06;
const MARKER_ECMA_ARRAY: u8 = 0x08;
const MARKER_OBJECT_END: u8 = 0x09;
const MARKER_STRICT_ARRAY: u8 = 0x0A;
const MARKER_DATE: u8 = 0x0B;
const MARKER_LONG_STRING: u8 = 0x0C;

/// One AMF0 value. Object and ECMA-array properties keep their wire order (metadata readers
/// and our own replies care about order more than about lookup speed; they are short).
#[derive(Clone, Debug, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the Unix epoch, and the (unused, reserved) time-zone field.
    Date {
        millis: f64,
        time_zone: i16,
    },
    /// A string longer than 65535 bytes (marker 0x0C).
    LongString(String),
}

impl Amf0Value {
    /// The text of a `String` or `LongString`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties of an `Object` or `EcmaArray`.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The first property called `key` of an `Object` or `EcmaArray`.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Builds an `Object` from `(key, value)` pairs.
    pub fn object<K: Into<String>>(props: impl IntoIterator<Item = (K, Amf0Value)>) -> Amf0Value {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn string(s: impl Into<String>) -> Amf0Value {
        Amf0Value::String(s.into())
    }
}

/// Caps applied while decoding. The defaults fit every RTMP command and live `onMetaData`
/// we have seen with a wide margin.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Containers nested deeper than this are refused (the decoder recurses per level).
    pub max_depth: usize,
    /// Values (of any kind, nested included) decoded by one call.
    pub max_values: usize,
    /// Bytes in one string (long strings included).
    pub max_string_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_values: 16 * 1024,
            max_string_len: 1024 * 1024,
        }
    }
}

/// Why AMF0 input could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Amf0Error {
    /// The input ends inside a value. Within a complete RTMP message this means the message
    /// is truncated; callers that hold a whole message treat it as bad input.
    Incomplete,
    /// A marker this decoder does not accept (references, typed objects, AMF3, …).
    UnsupportedMarker(u8),
    /// An object-end marker where a value was expected.
    UnexpectedObjectEnd,
    /// Containers nested deeper than [`Limits::max_depth`].
    TooDeep,
    /// More values than [`Limits::max_values`].
    TooManyValues,
    /// A string longer than [`Limits::max_string_len`].
    StringTooLong,
}

impl fmt::Display for Amf0Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amf0Error::Incomplete => f.write_str("AMF0 value truncated"),
            Amf0Error::UnsupportedMarker(m) => write!(f, "unsupported AMF0 marker 0x{m:02x}"),
            Amf0Error::UnexpectedObjectEnd => f.write_str("unexpected AMF0 object end"),
            Amf0Error::TooDeep => f.write_str("AMF0 values nested too deep"),
            Amf0Error::TooManyValues => f.write_str("too many AMF0 values"),
            Amf0Error::StringTooLong => f.write_str("AMF0 string too long"),
        }
    }
}

impl std::error::Error for Amf0Error {}

/// Decodes one value from the front of `input`; returns it and the bytes it used.
pub fn decode(input: &[u8], limits: Limits) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut d = Decoder {
        input,
        pos: 0,
        limits,
        values: 0,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// Decodes values until `input` is used up (a command: name, transaction id, arguments).
/// [`Limits::max_values`] applies to the whole sequence.
pub fn decode_all(input: &[u8], limits: Limits) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut d = Decoder {
        input,
        pos: 0,
        limits,
        values: 0,
    };
    let mut out = Vec::new();
    while d.pos < input.len() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
    /// Values decoded so far, against `limits.max_values`.
    values: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Incomplete)?;
        let s = self.input.get(self.pos..end).ok_or(Amf0Error::Incomplete)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn utf8(&mut self, len: usize) -> Result<String, Amf0Error> {
        if len > self.limits.max_string_len {
            return Err(Amf0Error::StringTooLong);
        }
        let b = self.take(len)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u16()? as usize;
        self.utf8(len)
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(Amf0Error::TooManyValues);
        }
        let marker = self.u8()?;
        Ok(match marker {
            MARKER_NUMBER => Amf0Value::Number(self.f64()?),
            MARKER_BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            MARKER_STRING => Amf0Value::String(self.short_string()?),
            MARKER_OBJECT => Amf0Value::Object(self.properties(depth)?),
            MARKER_NULL => Amf0Value::Null,
            MARKER_UNDEFINED => Amf0Value::Undefined,
            MARKER_ECMA_ARRAY => {
                // The count is advisory: every encoder we know ends the array with the
                // object-end marker like an object, and readers (ffmpeg, nginx-rtmp) parse it
                // that way. It is never used to size anything.
                let _count = self.u32()?;
                Amf0Value::EcmaArray(self.properties(depth)?)
            }
            MARKER_STRICT_ARRAY => {
                let count = self.u32()?;
                if depth + 1 > self.limits.max_depth {
                    return Err(Amf0Error::TooDeep);
                }
                // Grow as values arrive; a hostile count of 2^32 costs nothing until each
                // element is actually present (and counted against max_values).
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            MARKER_DATE => {
                let millis = self.f64()?;
                let time_zone = self.u16()? as i16;
                Amf0Value::Date { millis, time_zone }
            }
            MARKER_LONG_STRING => {
                let len = self.u32()? as usize;
                Amf0Value::LongString(self.utf8(len)?)
            }
            MARKER_OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    /// Key/value pairs up to the `00 00 09` end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        if depth + 1 > self.limits.max_depth {
            return Err(Amf0Error::TooDeep);
        }
        let mut props = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() {
                // An empty key followed by the end marker closes the object. An empty key
                // followed by a value is a legal (if odd) property.
                if self.input.get(self.pos) == Some(&MARKER_OBJECT_END) {
                    self.pos += 1;
                    return Ok(props);
                }
            }
            let v = self.value(depth + 1)?;
            props.push((key, v));
        }
    }
}

/// Appends the encoding of `value` to `out`. Strings over 65535 bytes are written as long
/// strings; an object key over 65535 bytes (only our own code builds keys) is cut at a
/// character boundary, since the format cannot carry it.
pub fn encode(value: &Amf0Value, out: &mut BytesMut) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(MARKER_NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(MARKER_BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) | Amf0Value::LongString(s) => encode_str(s, out),
        Amf0Value::Object(props) => {
            out.put_u8(MARKER_OBJECT);
            encode_properties(props, out);
        }
        Amf0Value::Null => out.put_u8(MARKER_NULL),
        Amf0Value::Undefined => out.put_u8(MARKER_UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.put_u8(MARKER_ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            encode_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(MARKER_STRICT_ARRAY);
            // A Vec longer than u32::MAX cannot exist in memory we would encode from.
            out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for v in items {
                encode(v, out);
            }
        }
        Amf0Value::Date { millis, time_zone } => {
            out.put_u8(MARKER_DATE);
            out.put_f64(*millis);
            out.put_i16(*time_zone);
        }
    }
}

/// Appends a string value, short or long as its length requires.
pub fn encode_str(s: &str, out: &mut BytesMut) {
    match u16::try_from(s.len()) {
        Ok(len) => {
            out.put_u8(MARKER_STRING);
            out.put_u16(len);
        }
        Err(_) => {
            out.put_u8(MARKER_LONG_STRING);
            out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        }
    }
    out.put_slice(s.as_bytes());
}

/// Appends a number value.
pub fn encode_number(n: f64, out: &mut BytesMut) {
    out.put_u8(MARKER_NUMBER);
    out.put_f64(n);
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut BytesMut) {
    for (k, v) in props {
        let key = truncate_to(k, u16::MAX as usize);
        out.put_u16(key.len() as u16);
        out.put_slice(key.as_bytes());
        encode(v, out);
    }
    out.put_slice(&[0, 0, MARKER_OBJECT_END]);
}

fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encodes a sequence of values into a fresh buffer (a command or data message body).
pub fn encode_all(values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Amf0Value) {
        let mut buf = BytesMut::new();
        encode(&v, &mut buf);
        let (back, used) = decode(&buf, Limits::default()).expect("decodes");
        assert_eq!(used, buf.len());
        assert_eq!(back, v);
    }

    #[test]
    fn every_supported_type_round_trips() {
        roundtrip(Amf0Value::Number(1.5));
        roundtrip(Amf0Value::Boolean(true));
        roundtrip(Amf0Value::string("connect"));
        roundtrip(Amf0Value::Null);
        roundtrip(Amf0Value::Undefined);
        roundtrip(Amf0Value::Date {
            millis: 1.7e12,
            time_zone: 0,
        });
        roundtrip(Amf0Value::object([
            ("app", Amf0Value::string("live")),
            ("nested", Amf0Value::object([("x", Amf0Value::Number(1.0))])),
        ]));
        roundtrip(Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(640.0)),
            ("height".into(), Amf0Value::Number(360.0)),
        ]));
        roundtrip(Amf0Value::StrictArray(vec![
            Amf0Value::Number(1.0),
            Amf0Value::Null,
        ]));
        roundtrip(Amf0Value::LongString("x".repeat(70_000)));
    }

    #[test]
    fn long_text_is_written_as_long_string() {
        let mut buf = BytesMut::new();
        encode(&Amf0Value::string("y".repeat(70_000)), &mut buf);
        assert_eq!(buf[0], MARKER_LONG_STRING);
    }

    #[test]
    fn a_command_decodes_as_a_sequence() {
        let body = encode_all(&[
            Amf0Value::string("publish"),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::string("test?txSecret=a&txTime=b"),
            Amf0Value::string("live"),
        ]);
        let values = decode_all(&body, Limits::default()).unwrap();
        assert_eq!(values.len(), 5);
        assert_eq!(values[3].as_str(), Some("test?txSecret=a&txTime=b"));
    }

    #[test]
    fn truncated_input_is_incomplete_not_bad() {
        let mut buf = BytesMut::new();
        encode(
            &Amf0Value::object([("k", Amf0Value::Number(2.0))]),
            &mut buf,
        );
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut], Limits::default()),
                Err(Amf0Error::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_further() {
        // 100 000 nested objects: `03` then key "a" then the next object.
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            buf.extend_from_slice(&[MARKER_OBJECT, 0, 1, b'a']);
        }
        assert_eq!(
            decode(&buf, Limits::default()).unwrap_err(),
            Amf0Error::TooDeep
        );
        let mut arrays = Vec::new();
        for _ in 0..100_000 {
            arrays.extend_from_slice(&[MARKER_STRICT_ARRAY, 0, 0, 0, 1]);
        }
        assert_eq!(
            decode(&arrays, Limits::default()).unwrap_err(),
            Amf0Error::TooDeep
        );
    }

    #[test]
    fn many_small_values_hit_the_value_cap() {
        // A strict array claiming 2^32-1 nulls, with a million of them present.
        let mut buf = vec![MARKER_STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF];
        buf.extend(std::iter::repeat_n(MARKER_NULL, 1_000_000));
        assert_eq!(
            decode(&buf, Limits::default()).unwrap_err(),
            Amf0Error::TooManyValues
        );
        // And the same claim with nothing behind it is merely truncated.
        assert_eq!(
            decode(&buf[..5], Limits::default()).unwrap_err(),
            Amf0Error::Incomplete
        );
    }

    #[test]
    fn long_string_over_the_cap_is_refused_before_reading() {
        let buf = [MARKER_LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            decode(&buf, Limits::default()).unwrap_err(),
            Amf0Error::StringTooLong
        );
    }

    #[test]
    fn bad_markers_are_errors() {
        assert_eq!(
            decode(&[0x07, 0, 1], Limits::default()).unwrap_err(),
            Amf0Error::UnsupportedMarker(0x07)
        );
        assert_eq!(
            decode(&[MARKER_OBJECT_END], Limits::default()).unwrap_err(),
            Amf0Error::UnexpectedObjectEnd
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let buf = [MARKER_STRING, 0, 2, 0xFF, b'a'];
        let (v, _) = decode(&buf, Limits::default()).unwrap();
        assert_eq!(v.as_str(), Some("\u{FFFD}a"));
    }

    #[test]
    fn ecma_array_lookup_by_key() {
        let v = Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(640.0))]);
        assert_eq!(v.get("width").and_then(Amf0Value::as_f64), Some(640.0));
        assert!(v.get("height").is_none());
    }
}
