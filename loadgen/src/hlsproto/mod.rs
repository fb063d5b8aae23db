//! The HLS client side, sans-IO: an HTTP/1.1 response reader for a keep-alive connection (the
//! head parser and the chunked decoder are [`crate::flvproto`]'s), the media playlist parser
//! (RFC 8216 plus the Low-Latency HLS tags of draft-pantos-hls-rfc8216bis that liveshard
//! writes), and how a URI listed in a playlist becomes a request target.
//!
//! Everything is bounded: a response head at most
//! [`MAX_HEAD`](crate::flvproto::MAX_HEAD), a playlist body at most
//! [`MAX_PLAYLIST`] (kept, to be parsed), a segment or part body at most [`MAX_MEDIA`]
//! (counted and dropped, never kept); a playlist lists at most [`MAX_SEGMENTS`] segments of
//! at most [`MAX_PARTS`] parts each, with URIs of at most [`MAX_URI`] visible ASCII bytes.
//! Input past a bound or malformed is a [`ProtoError`] naming what was wrong; the driver
//! counts it and goes on with the next request (a new connection if the response was cut).

mod m3u8;

pub use crate::flvproto::ProtoError;
use crate::flvproto::{parse_head, Chunked, HeadError, ResponseHead};
pub use m3u8::{parse_playlist, Playlist};

/// Largest playlist body read.
pub const MAX_PLAYLIST: usize = 256 << 10;
/// Largest segment or part body read.
pub const MAX_MEDIA: u64 = 64 << 20;
/// Bytes kept of an error answer's body, for the report's sample.
const ERROR_BODY_KEPT: usize = 200;
/// Segments one playlist may list.
pub const MAX_SEGMENTS: usize = 10_000;
/// Parts one segment may list.
pub const MAX_PARTS: usize = 1_000;
/// Longest URI accepted in a playlist.
pub const MAX_URI: usize = 2048;

/// How a response's body ends.
#[derive(Debug)]
enum Framing {
    Head,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// One response read from a keep-alive connection, fed as it arrives.
#[derive(Debug)]
pub struct Response {
    playlist: bool,
    head_buf: Vec<u8>,
    head: Option<ResponseHead>,
    framing: Framing,
    body: Vec<u8>,
    keep: usize,
    limit: u64,
    body_len: u64,
    fed: bool,
}

/// Whether a response is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    NeedMore,
    Done,
}

impl Response {
    /// A playlist response: its body (at most [`MAX_PLAYLIST`]) is kept.
    pub fn playlist() -> Self {
        Self::new(true)
    }

    /// A segment, part or init segment: its body (at most [`MAX_MEDIA`]) is only counted.
    pub fn media() -> Self {
        Self::new(false)
    }

    fn new(playlist: bool) -> Self {
        Response {
            playlist,
            head_buf: Vec::new(),
            head: None,
            framing: Framing::Head,
            body: Vec::new(),
            keep: 0,
            limit: 0,
            body_len: 0,
            fed: false,
        }
    }

    /// Feeds bytes read from the socket. Bytes past the end of the response are an error:
    /// requests are not pipelined, so nothing may follow it.
    pub fn handle_input(&mut self, mut input: &[u8]) -> Result<Feed, ProtoError> {
        self.fed |= !input.is_empty();
        if let Framing::Head = self.framing {
            let old = self.head_buf.len();
            self.head_buf.extend_from_slice(input);
            let head = match parse_head(&self.head_buf) {
                Ok(h) => h,
                Err(HeadError::NeedMore) => return Ok(Feed::NeedMore),
                Err(HeadError::Bad(why)) => return Err(ProtoError(why)),
            };
            // The blank line ends past `old`: with all of it before, the head would have
            // parsed at the previous read.
            input = &input[head.len - old..];
            self.head_buf = Vec::new();
            self.start_body(&head)?;
            self.head = Some(head);
        }
        let too_large = self.too_large();
        let Response {
            framing,
            body,
            keep,
            limit,
            body_len,
            ..
        } = self;
        // Counts body bytes, keeps what is to be kept, refuses a body past its bound.
        let mut eat = |data: &[u8]| {
            *body_len += data.len() as u64;
            if *body_len > *limit {
                return Err(too_large);
            }
            let room = keep.saturating_sub(body.len()).min(data.len());
            body.extend_from_slice(&data[..room]);
            Ok(())
        };
        match framing {
            Framing::Head | Framing::Done if input.is_empty() => {}
            Framing::Head | Framing::Done => {
                return Err(ProtoError("bytes after the end of a response"))
            }
            Framing::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                eat(&input[..n])?;
                *left -= n as u64;
                if n < input.len() {
                    return Err(ProtoError("bytes after the end of a response"));
                }
                if *left == 0 {
                    *framing = Framing::Done;
                }
            }
            Framing::Chunked(c) => {
                c.feed(input, &mut eat)?;
                if c.is_done() {
                    *framing = Framing::Done;
                }
            }
            Framing::UntilClose => eat(input)?,
        }
        Ok(match self.framing {
            Framing::Done => Feed::Done,
            _ => Feed::NeedMore,
        })
    }

    fn start_body(&mut self, head: &ResponseHead) -> Result<(), ProtoError> {
        if head.status < 200 {
            return Err(ProtoError("an interim (1xx) response, never asked for"));
        }
        self.limit = if self.playlist {
            MAX_PLAYLIST as u64
        } else {
            MAX_MEDIA
        };
        self.keep = match (self.playlist, head.status) {
            (true, _) => MAX_PLAYLIST,
            (false, 200) => 0,
            (false, _) => ERROR_BODY_KEPT,
        };
        self.framing = if head.status == 204 || head.status == 304 {
            Framing::Done
        } else if head.chunked {
            Framing::Chunked(Chunked::default())
        } else {
            match head.content_length {
                Some(n) if n > self.limit => return Err(self.too_large()),
                Some(0) => Framing::Done,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        Ok(())
    }

    fn too_large(&self) -> ProtoError {
        if self.playlist {
            ProtoError("playlist larger than 256 KiB")
        } else {
            ProtoError("segment larger than 64 MiB")
        }
    }

    /// The server closed the connection. Completes a body that runs until the close; any
    /// other response cut short is an error.
    pub fn handle_eof(&mut self) -> Result<(), ProtoError> {
        match self.framing {
            Framing::UntilClose | Framing::Done => {
                self.framing = Framing::Done;
                Ok(())
            }
            Framing::Head if !self.fed => Err(ProtoError("closed before answering")),
            _ => Err(ProtoError("closed in the middle of a response")),
        }
    }

    /// Whether any byte of this response has arrived.
    pub fn is_started(&self) -> bool {
        self.fed
    }

    pub fn head(&self) -> Option<&ResponseHead> {
        self.head.as_ref()
    }

    pub fn status(&self) -> u16 {
        self.head.as_ref().map_or(0, |h| h.status)
    }

    /// The kept body: a playlist's whole body, or the start of an error answer's.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Body bytes received (after the transfer coding is removed).
    pub fn body_len(&self) -> u64 {
        self.body_len
    }
}

/// The request target for `uri` as listed in the playlist fetched with `base` (path and
/// query) from `host`. A URI without a query gets the playlist's own (a play signature must
/// come with every request); one with a query is taken as it is.
pub fn resolve(host: &str, base: &str, uri: &str) -> Result<String, ProtoError> {
    let (base_path, base_query) = base.split_once('?').unwrap_or((base, ""));
    let mut target = if let Some(rest) = uri.strip_prefix("http://") {
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        if !authority.eq_ignore_ascii_case(host) {
            return Err(ProtoError("a playlist URI on another host"));
        }
        path.to_string()
    } else if uri.contains("://") || uri.starts_with("//") {
        return Err(ProtoError("a playlist URI on another host or scheme"));
    } else if uri.starts_with('/') {
        uri.to_string()
    } else {
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        format!("{dir}{uri}")
    };
    if !target.contains('?') && !base_query.is_empty() {
        target.push('?');
        target.push_str(base_query);
    }
    Ok(target)
}

/// `target` with `params` added to its query (`?` or `&`, as it needs).
pub fn with_query(target: &str, params: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{params}")
}

#[cfg(test)]
mod tests;
