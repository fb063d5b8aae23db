//! The HTTP-FLV client side, sans-IO: the response head, the chunked transfer coding, and an
//! FLV tag scanner that finds tag boundaries and types — enough to time the first frame and
//! the first keyframe and to see gaps between tags, nothing is decoded. The head parser and
//! the chunked decoder also serve the HLS poller's responses (`hlsproto.rs`).
//!
//! Everything here streams: each read's bytes go through [`Body::feed`] once, payloads are
//! never copied or buffered (only the first [`TAG_HEAD`] bytes of a tag are kept, to classify
//! video), so a viewer costs the same few dozen bytes of state however large its frames are.
//! Malformed input (a bad chunk size line, an unknown tag type, a PreviousTagSize that does
//! not match its tag) is an error: a measurement must not go on counting garbage.

use memchr::memmem;

/// Largest response head we read.
pub const MAX_HEAD: usize = 16 << 10;
/// Bytes kept from the start of each tag's data (the video tag header needs at most 2).
pub const TAG_HEAD: usize = 8;
/// Longest chunk-size line (hex digits plus extensions) we accept.
const MAX_SIZE_LINE: usize = 1024;

/// Input that cannot be what the server should send; the connection is closed and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What matters of a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    /// `Content-Length`, when given (and not overridden by chunked coding).
    pub content_length: Option<u64>,
    /// The server closes the connection after this response (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// Bytes of the head, blank line included; the body starts there.
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    NeedMore,
    Bad(&'static str),
}

/// Parses the response head in `buf` once it is complete (`NeedMore` until then).
pub fn parse_head(buf: &[u8]) -> Result<ResponseHead, HeadError> {
    let Some(end) = memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HeadError::Bad("response head too long"))
        } else {
            Err(HeadError::NeedMore)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Bad("not an HTTP/1.x response"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(HeadError::Bad("bad status code"))?;
    let mut chunked = false;
    let mut content_length = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Bad("header line without a colon"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| HeadError::Bad("bad Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Bad("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    Ok(ResponseHead {
        status,
        chunked,
        content_length: if chunked { None } else { content_length },
        close,
        len: end + 4,
    })
}

/// The chunked transfer coding (RFC 9112 §7.1), decoded in place.
#[derive(Debug)]
pub struct Chunked {
    state: CState,
    size: u64,
    line: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    /// Hex digits of a chunk size.
    Size,
    /// After the digits: extensions or whitespace up to CR.
    SizeRest,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines, each ending in CRLF; an empty one ends the body.
    TrailerStart,
    Trailer,
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: CState::Size,
            size: 0,
            line: 0,
        }
    }
}

impl Chunked {
    /// Decodes `input`, handing each run of body bytes to `out`; stops at the end of the
    /// body (bytes after it are ignored: the server closes the connection there).
    pub fn feed(
        &mut self,
        input: &[u8],
        mut out: impl FnMut(&[u8]) -> Result<(), ProtoError>,
    ) -> Result<(), ProtoError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                CState::Size => {
                    let digit = match b {
                        b'0'..=b'9' => Some(b - b'0'),
                        b'a'..=b'f' => Some(b - b'a' + 10),
                        b'A'..=b'F' => Some(b - b'A' + 10),
                        _ => None,
                    };
                    match digit {
                        Some(d) => {
                            self.line += 1;
                            if self.line > 15 {
                                return Err(ProtoError("chunk size too large"));
                            }
                            self.size = self.size * 16 + u64::from(d);
                        }
                        None if self.line == 0 => return Err(ProtoError("bad chunk size")),
                        None if b == b'\r' => self.state = CState::SizeLf,
                        None if b == b';' || b == b' ' || b == b'\t' => {
                            self.state = CState::SizeRest
                        }
                        None => return Err(ProtoError("bad chunk size")),
                    }
                    i += 1;
                }
                CState::SizeRest => {
                    self.line += 1;
                    if self.line > MAX_SIZE_LINE {
                        return Err(ProtoError("chunk size line too long"));
                    }
                    if b == b'\r' {
                        self.state = CState::SizeLf;
                    }
                    i += 1;
                }
                CState::SizeLf => {
                    if b != b'\n' {
                        return Err(ProtoError("chunk size line without LF"));
                    }
                    self.line = 0;
                    self.state = if self.size == 0 {
                        CState::TrailerStart
                    } else {
                        CState::Data
                    };
                    i += 1;
                }
                CState::Data => {
                    let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    out(&input[i..i + n])?;
                    i += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = CState::DataCr;
                    }
                }
                CState::DataCr => {
                    if b != b'\r' {
                        return Err(ProtoError("chunk data not followed by CRLF"));
                    }
                    self.state = CState::DataLf;
                    i += 1;
                }
                CState::DataLf => {
                    if b != b'\n' {
                        return Err(ProtoError("chunk data not followed by CRLF"));
                    }
                    self.state = CState::Size;
                    i += 1;
                }
                CState::TrailerStart | CState::Trailer => {
                    let start = self.state == CState::TrailerStart;
                    if b == b'\r' {
                        self.state = CState::TrailerLf { empty: start };
                    } else {
                        self.line += 1;
                        if self.line > MAX_HEAD {
                            return Err(ProtoError("trailer too long"));
                        }
                        self.state = CState::Trailer;
                    }
                    i += 1;
                }
                CState::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ProtoError("trailer line without LF"));
                    }
                    self.state = if empty {
                        CState::Done
                    } else {
                        CState::TrailerStart
                    };
                    i += 1;
                }
                CState::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// The last chunk and its trailers have arrived: the stream ended.
    pub fn is_done(&self) -> bool {
        self.state == CState::Done
    }
}

/// How a video tag's data starts (the FLV video tag header, legacy or Enhanced RTMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoKind {
    /// A decoder configuration record (AVC/HEVC sequence header): needed, but not a frame.
    Config,
    /// A coded frame.
    Frame { key: bool },
    /// End of sequence, command frames, metadata: nothing to show.
    Other,
}

/// Classifies a video message by its first bytes (the same layout in FLV tags and RTMP
/// video messages).
pub fn video_kind(head: &[u8]) -> VideoKind {
    let Some(&b) = head.first() else {
        return VideoKind::Other;
    };
    if b & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader, 3 bits of frame type, 4 bits of packet type.
        let frame_type = (b >> 4) & 0x07;
        return match b & 0x0F {
            0 => VideoKind::Config,
            1 | 3 if frame_type != 5 => VideoKind::Frame {
                key: frame_type == 1,
            },
            _ => VideoKind::Other,
        };
    }
    let frame_type = b >> 4;
    if frame_type == 5 {
        return VideoKind::Other;
    }
    match b & 0x0F {
        // AVC, and the HEVC / AV1 ids some servers used before Enhanced RTMP: a packet type.
        7 | 12 | 13 => match head.get(1) {
            Some(0) => VideoKind::Config,
            Some(1) => VideoKind::Frame {
                key: frame_type == 1,
            },
            _ => VideoKind::Other,
        },
        _ => VideoKind::Frame {
            key: frame_type == 1,
        },
    }
}

/// One complete FLV tag, as [`FlvScanner`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    pub size: u32,
    pub timestamp: u32,
    /// For video tags.
    pub video: Option<VideoKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FState {
    /// The 9-byte file header.
    Header,
    /// Bytes of a longer header to skip.
    HeaderRest(u32),
    /// PreviousTagSize (4 bytes), checked against the tag before it.
    PrevSize,
    /// The 11-byte tag header.
    TagHeader,
    TagData,
}

/// Finds FLV tags in a byte stream, however it is split into reads.
#[derive(Debug)]
pub struct FlvScanner {
    state: FState,
    buf: [u8; 11],
    have: usize,
    /// Tag being read: kind, size, timestamp, data bytes left.
    kind: u8,
    size: u32,
    timestamp: u32,
    left: u32,
    head: [u8; TAG_HEAD],
    head_len: usize,
    /// What the next PreviousTagSize must say.
    expect_prev: u32,
}

impl Default for FlvScanner {
    fn default() -> Self {
        FlvScanner {
            state: FState::Header,
            buf: [0; 11],
            have: 0,
            kind: 0,
            size: 0,
            timestamp: 0,
            left: 0,
            head: [0; TAG_HEAD],
            head_len: 0,
            expect_prev: 0,
        }
    }
}

impl FlvScanner {
    /// Scans `input`, calling `on_tag` as each tag's last data byte arrives.
    pub fn feed(&mut self, input: &[u8], mut on_tag: impl FnMut(Tag)) -> Result<(), ProtoError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                FState::Header | FState::PrevSize | FState::TagHeader => {
                    let want = match self.state {
                        FState::Header => 9,
                        FState::PrevSize => 4,
                        _ => 11,
                    };
                    let n = (want - self.have).min(input.len() - i);
                    self.buf[self.have..self.have + n].copy_from_slice(&input[i..i + n]);
                    self.have += n;
                    i += n;
                    if self.have == want {
                        self.have = 0;
                        self.complete_fixed()?;
                        if self.state == FState::TagData && self.left == 0 {
                            self.finish_tag(&mut on_tag);
                        }
                    }
                }
                FState::HeaderRest(left) => {
                    let n = (input.len() - i).min(left as usize);
                    i += n;
                    let left = left - n as u32;
                    self.state = if left == 0 {
                        FState::PrevSize
                    } else {
                        FState::HeaderRest(left)
                    };
                }
                FState::TagData => {
                    let n = (input.len() - i).min(self.left as usize);
                    let keep = n.min(TAG_HEAD - self.head_len);
                    self.head[self.head_len..self.head_len + keep]
                        .copy_from_slice(&input[i..i + keep]);
                    self.head_len += keep;
                    i += n;
                    self.left -= n as u32;
                    if self.left == 0 {
                        self.finish_tag(&mut on_tag);
                    }
                }
            }
        }
        Ok(())
    }

    fn complete_fixed(&mut self) -> Result<(), ProtoError> {
        let b = &self.buf;
        match self.state {
            FState::Header => {
                if &b[..3] != b"FLV" {
                    return Err(ProtoError("body does not start with an FLV header"));
                }
                if b[3] != 1 {
                    return Err(ProtoError("FLV version is not 1"));
                }
                let len = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
                if !(9..=1024).contains(&len) {
                    return Err(ProtoError("bad FLV header length"));
                }
                self.expect_prev = 0;
                self.state = if len > 9 {
                    FState::HeaderRest(len - 9)
                } else {
                    FState::PrevSize
                };
            }
            FState::PrevSize => {
                let prev = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if prev != self.expect_prev {
                    return Err(ProtoError("PreviousTagSize does not match the tag"));
                }
                self.state = FState::TagHeader;
            }
            FState::TagHeader => {
                if b[0] & 0x20 != 0 {
                    return Err(ProtoError("encrypted FLV tag"));
                }
                self.kind = b[0] & 0x1F;
                if !matches!(self.kind, 8 | 9 | 18) {
                    return Err(ProtoError("unknown FLV tag type"));
                }
                self.size = u32::from_be_bytes([0, b[1], b[2], b[3]]);
                self.timestamp = u32::from_be_bytes([b[7], b[4], b[5], b[6]]);
                self.left = self.size;
                self.head_len = 0;
                self.expect_prev = 11 + self.size;
                self.state = FState::TagData;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish_tag(&mut self, on_tag: &mut impl FnMut(Tag)) {
        let video = (self.kind == 9).then(|| video_kind(&self.head[..self.head_len]));
        on_tag(Tag {
            kind: self.kind,
            size: self.size,
            timestamp: self.timestamp,
            video,
        });
        self.state = FState::PrevSize;
    }
}

/// A response body: chunked, or raw until the server closes.
#[derive(Debug)]
pub struct Body {
    chunked: Option<Chunked>,
    pub flv: FlvScanner,
}

impl Body {
    pub fn new(chunked: bool) -> Self {
        Body {
            chunked: chunked.then(Chunked::default),
            flv: FlvScanner::default(),
        }
    }

    /// Feeds bytes read from the socket; tags found go to `on_tag`.
    pub fn feed(&mut self, input: &[u8], mut on_tag: impl FnMut(Tag)) -> Result<(), ProtoError> {
        match &mut self.chunked {
            Some(c) => {
                let flv = &mut self.flv;
                c.feed(input, |data| flv.feed(data, &mut on_tag))
            }
            None => self.flv.feed(input, on_tag),
        }
    }

    /// The server ended the body (the last chunk): the stream went offline.
    pub fn is_done(&self) -> bool {
        self.chunked.as_ref().is_some_and(Chunked::is_done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, ts: u32, data: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&ts.to_be_bytes()[1..]);
        t.push((ts >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(data);
        t.extend_from_slice(&(11 + data.len() as u32).to_be_bytes());
        t
    }

    fn flv_file() -> Vec<u8> {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        f.extend(tag(18, 0, b"\x02\x00\x0aonMetaData"));
        f.extend(tag(9, 0, &[0x17, 0, 0, 0, 0, 1, 2, 3]));
        f.extend(tag(8, 0, &[0xAF, 0, 0x12, 0x10]));
        f.extend(tag(9, 40, &[0x17, 1, 0, 0, 0, 9, 9, 9, 9, 9, 9]));
        f.extend(tag(8, 23, &[0xAF, 1, 7, 7]));
        f.extend(tag(9, 0x0100_0050, &[0x27, 1, 0, 0, 0, 5]));
        f
    }

    fn chunk(body: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in body.chunks(size) {
            out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        out
    }

    fn scan_in_pieces(body: &mut Body, wire: &[u8], piece: usize) -> Vec<Tag> {
        let mut tags = Vec::new();
        for p in wire.chunks(piece) {
            body.feed(p, |t| tags.push(t)).unwrap();
        }
        tags
    }

    #[test]
    fn tags_are_found_however_the_bytes_are_split() {
        let file = flv_file();
        for piece in [1, 2, 3, 7, 13, 64, 4096] {
            for chunk_size in [1, 5, 17, 1000] {
                let wire = chunk(&file, chunk_size);
                let mut body = Body::new(true);
                let tags = scan_in_pieces(&mut body, &wire, piece);
                let kinds: Vec<_> = tags.iter().map(|t| (t.kind, t.video)).collect();
                assert_eq!(
                    kinds,
                    vec![
                        (18, None),
                        (9, Some(VideoKind::Config)),
                        (8, None),
                        (9, Some(VideoKind::Frame { key: true })),
                        (8, None),
                        (9, Some(VideoKind::Frame { key: false })),
                    ],
                    "piece {piece} chunk {chunk_size}"
                );
                assert_eq!(tags[5].timestamp, 0x0100_0050, "extended timestamp byte");
                assert!(body.is_done());
            }
            let mut raw = Body::new(false);
            assert_eq!(scan_in_pieces(&mut raw, &file, piece).len(), 6);
            assert!(!raw.is_done());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_tag() {
        let mut body = Body::new(false);
        assert!(body.feed(b"GIF89a........", |_| {}).is_err());

        let mut file = flv_file();
        let n = file.len();
        file[n - 1] ^= 1; // the last PreviousTagSize
        file.extend(tag(8, 0, &[0xAF, 1]));
        let mut body = Body::new(false);
        assert_eq!(
            body.feed(&file, |_| {}),
            Err(ProtoError("PreviousTagSize does not match the tag"))
        );

        let mut bad_type = flv_file()[..13].to_vec();
        bad_type.extend(tag(7, 0, &[1]));
        assert!(Body::new(false).feed(&bad_type, |_| {}).is_err());

        let mut c = Chunked::default();
        assert!(c.feed(b"zz\r\n", |_| Ok(())).is_err());
        let mut c = Chunked::default();
        assert!(c.feed(b"ffffffffffffffff\r\n", |_| Ok(())).is_err());
        let mut c = Chunked::default();
        assert!(c.feed(b"2\r\nabX", |_| Ok(())).is_err());
    }

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\nFLV";
        let h = parse_head(ok).unwrap();
        assert_eq!((h.status, h.chunked, h.len), (200, true, ok.len() - 3));
        assert!(!h.close);
        let h = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!((h.status, h.content_length), (404, Some(3)));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").unwrap();
        assert!(h.close && h.content_length.is_none());
        assert!(parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().close);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n"),
            Err(HeadError::NeedMore)
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn video_tag_headers() {
        assert_eq!(video_kind(&[0x17, 0]), VideoKind::Config);
        assert_eq!(video_kind(&[0x17, 1]), VideoKind::Frame { key: true });
        assert_eq!(video_kind(&[0x27, 1]), VideoKind::Frame { key: false });
        assert_eq!(video_kind(&[0x17, 2]), VideoKind::Other);
        assert_eq!(video_kind(&[0x57, 0]), VideoKind::Other);
        assert_eq!(video_kind(&[0x12]), VideoKind::Frame { key: true }, "H.263");
        // Enhanced RTMP: key frame + CodedFramesX, sequence start, inter + CodedFrames.
        assert_eq!(video_kind(&[0x93]), VideoKind::Frame { key: true });
        assert_eq!(video_kind(&[0x90]), VideoKind::Config);
        assert_eq!(video_kind(&[0xA1]), VideoKind::Frame { key: false });
        assert_eq!(video_kind(&[]), VideoKind::Other);
    }
}
