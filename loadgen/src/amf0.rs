//! The AMF0 subset an RTMP play client needs, sans-IO: writing the values its commands carry
//! (number, boolean, string, object, null) and reading what servers answer (those plus
//! undefined, ECMA and strict arrays, dates and long strings).
//!
//! Reading is bounded: nesting at most [`MAX_DEPTH`] deep, lengths checked against the bytes
//! actually there, so no input makes it allocate more than the message it was given.

/// Deepest nesting of objects and arrays we read.
pub const MAX_DEPTH: usize = 16;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const UNSUPPORTED: u8 = 0x0D;
const XML_DOCUMENT: u8 = 0x0F;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Str(String),
    /// Objects and ECMA arrays: key/value pairs in order.
    Object(Vec<(String, Value)>),
    Array(Vec<Value>),
    Null,
    Undefined,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

pub fn write_number(out: &mut Vec<u8>, n: f64) {
    out.push(NUMBER);
    out.extend_from_slice(&n.to_be_bytes());
}

pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.push(BOOLEAN);
    out.push(u8::from(b));
}

pub fn write_null(out: &mut Vec<u8>) {
    out.push(NULL);
}

/// A string value; longer than 65,535 bytes becomes a long string.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    if let Ok(len) = u16::try_from(s.len()) {
        out.push(STRING);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(LONG_STRING);
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_key(out: &mut Vec<u8>, k: &str) {
    let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(k.len() as u16).to_be_bytes());
    out.extend_from_slice(k);
}

/// Any value (objects recursively).
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Number(n) => write_number(out, *n),
        Value::Bool(b) => write_bool(out, *b),
        Value::Str(s) => write_string(out, s),
        Value::Object(props) => {
            out.push(OBJECT);
            for (k, v) in props {
                write_key(out, k);
                write_value(out, v);
            }
            out.extend_from_slice(&[0, 0, OBJECT_END]);
        }
        Value::Array(items) => {
            out.push(STRICT_ARRAY);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for v in items {
                write_value(out, v);
            }
        }
        Value::Null => write_null(out),
        Value::Undefined => out.push(UNDEFINED),
    }
}

/// Reads every value in `buf` (a command message body).
pub fn read_all(mut buf: &[u8]) -> Result<Vec<Value>, &'static str> {
    let mut values = Vec::new();
    while !buf.is_empty() {
        values.push(read_value(&mut buf, 0)?);
    }
    Ok(values)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if buf.len() < n {
        return Err("AMF0 value cut short");
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn read_u16(buf: &mut &[u8]) -> Result<usize, &'static str> {
    let b = take(buf, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn read_u32(buf: &mut &[u8]) -> Result<usize, &'static str> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn read_utf8(buf: &mut &[u8], len: usize) -> Result<String, &'static str> {
    // Lossy: a server's odd bytes in a description must not fail the whole command.
    Ok(String::from_utf8_lossy(take(buf, len)?).into_owned())
}

/// Key/value pairs up to the empty key and the object-end marker.
fn read_props(buf: &mut &[u8], depth: usize) -> Result<Vec<(String, Value)>, &'static str> {
    let mut props = Vec::new();
    loop {
        let len = read_u16(buf)?;
        if len == 0 && buf.first() == Some(&OBJECT_END) {
            *buf = &buf[1..];
            return Ok(props);
        }
        let key = read_utf8(buf, len)?;
        let value = read_value(buf, depth + 1)?;
        props.push((key, value));
    }
}

fn read_value(buf: &mut &[u8], depth: usize) -> Result<Value, &'static str> {
    if depth > MAX_DEPTH {
        return Err("AMF0 nested too deep");
    }
    let marker = take(buf, 1)?[0];
    Ok(match marker {
        NUMBER => {
            let b = take(buf, 8)?;
            Value::Number(f64::from_be_bytes(b.try_into().expect("8 bytes")))
        }
        BOOLEAN => Value::Bool(take(buf, 1)?[0] != 0),
        STRING => {
            let len = read_u16(buf)?;
            Value::Str(read_utf8(buf, len)?)
        }
        LONG_STRING | XML_DOCUMENT => {
            let len = read_u32(buf)?;
            Value::Str(read_utf8(buf, len)?)
        }
        OBJECT => Value::Object(read_props(buf, depth)?),
        ECMA_ARRAY => {
            // The count is advisory; the end marker ends it.
            read_u32(buf)?;
            Value::Object(read_props(buf, depth)?)
        }
        STRICT_ARRAY => {
            let count = read_u32(buf)?;
            // Each value takes at least one byte: a count past that is a lie.
            if count > buf.len() {
                return Err("AMF0 array longer than its message");
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(read_value(buf, depth + 1)?);
            }
            Value::Array(items)
        }
        DATE => {
            let b = take(buf, 10)?;
            Value::Number(f64::from_be_bytes(b[..8].try_into().expect("8 bytes")))
        }
        NULL => Value::Null,
        UNDEFINED | UNSUPPORTED => Value::Undefined,
        _ => return Err("unsupported AMF0 type"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = vec![
            Value::Str("_result".into()),
            Value::Number(1.0),
            Value::Object(vec![
                ("fmsVer".into(), Value::Str("FMS/3,0,1,123".into())),
                ("capabilities".into(), Value::Number(31.0)),
                (
                    "nested".into(),
                    Value::Object(vec![("b".into(), Value::Bool(true))]),
                ),
            ]),
            Value::Null,
            Value::Array(vec![Value::Undefined, Value::Number(-2.5)]),
        ];
        let mut out = Vec::new();
        for x in &v {
            write_value(&mut out, x);
        }
        assert_eq!(read_all(&out).unwrap(), v);
        assert_eq!(
            v[2].get("fmsVer").and_then(Value::as_str),
            Some("FMS/3,0,1,123")
        );
    }

    #[test]
    fn ecma_arrays_read_as_objects() {
        let mut out = vec![ECMA_ARRAY, 0, 0, 0, 1];
        out.extend_from_slice(&[0, 5]);
        out.extend_from_slice(b"width");
        write_number(&mut out, 640.0);
        out.extend_from_slice(&[0, 0, OBJECT_END]);
        let v = read_all(&out).unwrap();
        assert_eq!(v[0].get("width").and_then(Value::as_f64), Some(640.0));
    }

    #[test]
    fn hostile_input_is_refused_without_allocating() {
        assert!(read_all(&[STRING, 0xFF, 0xFF, b'a']).is_err());
        assert!(read_all(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(read_all(&[0x42]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n([OBJECT, 0, 1, b'k'], 100)
            .flatten()
            .collect();
        assert_eq!(read_all(&deep), Err("AMF0 nested too deep"));
        // Every prefix of a valid command is an error, never a panic.
        let mut out = Vec::new();
        write_string(&mut out, "onStatus");
        write_value(
            &mut out,
            &Value::Object(vec![("code".into(), Value::Str("x".into()))]),
        );
        for n in 0..out.len() {
            assert!(read_all(&out[..n]).is_err() || n == 0 || n == 11);
        }
    }
}
