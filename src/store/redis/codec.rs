//! What goes between the Redis backend and Redis: errors as the store reports them,
//! records as JSON, a stream's items.

use bytes::Bytes;
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use super::super::StoreError;

/// Whether `e` says Redis (or the connection to it) is not there, rather than that a
/// command was wrong.
pub(super) fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(ServerErrorKind::BusyLoading)
                | ErrorKind::Server(ServerErrorKind::MasterDown)
                | ErrorKind::Server(ServerErrorKind::ReadOnly)
        )
}

/// A command's failure as the store reports it: the kind and the server's detail, never
/// the URL.
pub(super) fn failed(e: &RedisError) -> StoreError {
    if unreachable(e) {
        StoreError::Unavailable
    } else {
        StoreError::Backend(format!(
            "redis: {:?} {}",
            e.kind(),
            e.detail().unwrap_or_default()
        ))
    }
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn parse_opt<T: serde::de::DeserializeOwned>(
    b: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    b.map(|b| parse(&b)).transpose()
}

/// The `i` field of each entry of an `XRANGE` / `XREVRANGE` reply, in reply order.
pub(super) fn stream_items(v: Value) -> Result<Vec<Bytes>, StoreError> {
    let corrupt = || StoreError::Corrupt("not a stream range reply".into());
    let Value::Array(entries) = v else {
        return match v {
            Value::Nil => Ok(Vec::new()),
            _ => Err(corrupt()),
        };
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(corrupt());
        };
        if parts.len() != 2 {
            return Err(corrupt());
        }
        let fields = match parts.pop() {
            Some(Value::Array(f)) => f,
            Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => return Err(corrupt()),
        };
        let mut item = None;
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if matches!(&k, Value::BulkString(k) if k == b"i") {
                if let Value::BulkString(b) = v {
                    item = Some(Bytes::from(b));
                }
            }
        }
        out.push(item.ok_or_else(|| StoreError::Corrupt("a history entry without `i`".into()))?);
    }
    Ok(out)
}
