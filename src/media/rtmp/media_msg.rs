//! Publisher data and aggregate messages for [`ServerSession`]: metadata recognised, the
//! rest forwarded, aggregates split into their FLV tags.

use bytes::Bytes;

use super::session::{Event, ServerSession, SessionError, MAX_AGGREGATE_TAGS};
use crate::media::amf0::{self, Amf0Error, Amf0Value};
use crate::media::flv::{self, FlvError};
use crate::media::kind::MediaKind;
use crate::media::packet::MediaMessage;

impl ServerSession {
    /// A data message from the publisher: metadata is recognised, the rest forwarded.
    pub(super) fn handle_data(&mut self, timestamp: u32, body: Bytes) -> Result<(), SessionError> {
        let limits = self.config.amf0_limits;
        let (first, used) = amf0::decode(&body, limits).map_err(SessionError::Data)?;
        let (name, payload) = match first.as_str() {
            // `@setDataFrame("onMetaData", obj)`: what is forwarded starts after the wrapper.
            Some("@setDataFrame") => {
                let rest = body.slice(used..);
                let (inner, _) = amf0::decode(&rest, limits).map_err(SessionError::Data)?;
                (inner.as_str().unwrap_or("").to_owned(), rest)
            }
            Some(name) => (name.to_owned(), body.clone()),
            None => return Err(SessionError::Data(Amf0Error::Incomplete)),
        };
        if name == "onMetaData" {
            let values = amf0::decode_all(&payload, limits).map_err(SessionError::Data)?;
            let object = values.into_iter().nth(1).unwrap_or(Amf0Value::Null);
            self.events.push_back(Event::Metadata {
                message: MediaMessage {
                    kind: MediaKind::Data,
                    timestamp,
                    payload,
                },
                object,
            });
        } else {
            self.events.push_back(Event::Media(MediaMessage {
                kind: MediaKind::Data,
                timestamp,
                payload,
            }));
        }
        Ok(())
    }

    /// An aggregate message: FLV tags back to back, timestamps relative to the first.
    ///
    /// Each tag becomes an event (and then a packaged message), so the number of tags is
    /// what one message can multiply: an 8 MiB aggregate of empty 15-byte tags would be
    /// 560,000 events at once. Empty tags carry nothing and are skipped; more than
    /// [`MAX_AGGREGATE_TAGS`] is refused (relays that aggregate send a few dozen).
    pub(super) fn handle_aggregate(
        &mut self,
        timestamp: u32,
        body: Bytes,
    ) -> Result<(), SessionError> {
        let mut rest = body;
        let mut base = None;
        let mut tags = 0usize;
        while !rest.is_empty() {
            let (tag, used) = flv::read_tag(&rest)
                .map_err(SessionError::Aggregate)?
                .ok_or(SessionError::Aggregate(FlvError::Truncated))?;
            rest = rest.slice(used..);
            tags += 1;
            if tags > MAX_AGGREGATE_TAGS {
                return Err(SessionError::Aggregate(FlvError::Malformed(
                    "more than 4096 tags in one aggregate message",
                )));
            }
            if tag.payload.is_empty() {
                continue;
            }
            let first = *base.get_or_insert(tag.timestamp);
            let ts = timestamp.wrapping_add(tag.timestamp.wrapping_sub(first));
            match MediaKind::from_type_id(tag.tag_type) {
                Some(MediaKind::Data) => self.handle_data(ts, tag.payload)?,
                Some(kind) => self.events.push_back(Event::Media(MediaMessage {
                    kind,
                    timestamp: ts,
                    payload: tag.payload,
                })),
                None => {}
            }
        }
        Ok(())
    }
}
