//! Cover images: `POST /api/v1/uploads/cover` (raw body or `multipart/form-data`) and
//! `GET /covers/{name}`.
//!
//! The type is decided from the bytes ([`sniff`]: JPEG, PNG or WebP signatures), never
//! from a file name or a Content-Type a client sent. The stored name is generated (32 hex
//! digits and the extension of the sniffed type), so nothing the client sends reaches the
//! file system; the files thread checks the name again ([`crate::store::files`]). The body
//! limit is the route's own (`api.cover_max_bytes` plus room for multipart headers), and
//! the image itself is checked against `api.cover_max_bytes`. The bearer token is checked
//! from the request head ([`gate`]) before a byte of the body is read, so an anonymous
//! client cannot make the server buffer megabytes it will refuse.
//!
//! Each upload is decoded for its 320 and 640 px JPEG thumbnails before it is kept
//! ([`files::FilesHandle::save_cover`], on the thumbs thread: never here); an image whose
//! header is over the pixel limits is 41302 before decoding, one that does not decode
//! 42202. Thumbnails are served by the same route as covers (`<stem>-320.jpg`).
//!
//! Serving is shared ([`Served`]): a cover many clients ask for at once is one copy on the
//! shard, and the copies a shard holds (cached, or being written to clients that read
//! slowly or not at all) stay within [`HELD_MAX`]; past it, a request that needs a fresh
//! copy is answered 503 50304. Without this, a 60-byte anonymous request could make the
//! shard hold a 2 MiB read of the file for as long as the write timeout. Requests for a
//! cover that is being read wait for that read instead of starting their own.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use bytes::Bytes;
use serde_json::json;
use shards::local::Signal;

use super::error::{self, ApiError, ApiResult};
use super::Api;
use super::{input, urls};
use crate::http::{Request, RequestHead, Response};
use crate::store::files;
use crate::store::thumbs::{self, Refusal};

/// What the multipart framing may add to the image within the route's body limit.
pub const MULTIPART_SLACK: u64 = 16 * 1024;

/// An accepted image type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    Jpeg,
    Png,
    Webp,
}

impl ImageType {
    pub fn ext(self) -> &'static str {
        match self {
            ImageType::Jpeg => "jpg",
            ImageType::Png => "png",
            ImageType::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageType::Jpeg => "image/jpeg",
            ImageType::Png => "image/png",
            ImageType::Webp => "image/webp",
        }
    }

    fn from_ext(ext: &str) -> Option<Self> {
        match ext {
            "jpg" => Some(ImageType::Jpeg),
            "png" => Some(ImageType::Png),
            "webp" => Some(ImageType::Webp),
            _ => None,
        }
    }
}

/// The image type of `b`, from its signature and first structure: PNG's signature and
/// `IHDR` chunk, JPEG's SOI and a marker, WebP's RIFF/WEBP header and a VP8 chunk.
pub fn sniff(b: &[u8]) -> Option<ImageType> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if b.len() >= 24 && b.starts_with(PNG) && &b[12..16] == b"IHDR" {
        return Some(ImageType::Png);
    }
    if b.len() >= 4 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF {
        return Some(ImageType::Jpeg);
    }
    if b.len() >= 16 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" && &b[12..15] == b"VP8" {
        return Some(ImageType::Webp);
    }
    None
}

/// The file in a `multipart/form-data` body: the part named `file`, else the first part
/// with a filename, else the first part. `None` if the body is not well-formed.
pub fn multipart_file(body: &Bytes, boundary: &str) -> Option<Bytes> {
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    // Aho-Corasick: linear time whatever the body holds.
    let finder = AhoCorasick::new([delimiter.as_bytes()]).ok()?;
    let starts: Vec<usize> = finder.find_iter(body).map(|m| m.start()).take(64).collect();
    let mut first: Option<Bytes> = None;
    let mut with_filename: Option<Bytes> = None;
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        // A part: CRLF, headers, CRLF CRLF, content, CRLF (before the next delimiter).
        let part = part.strip_prefix(b"\r\n")?;
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let content = part[split + 4..].strip_suffix(b"\r\n")?;
        let disposition = headers
            .split("\r\n")
            .find(|h| {
                h.get(..20)
                    .is_some_and(|p| p.eq_ignore_ascii_case("content-disposition:"))
            })
            .unwrap_or("");
        if disposition.contains("name=\"file\"") {
            return Some(body.slice_ref(content));
        }
        if with_filename.is_none() && disposition.contains("filename=") {
            with_filename = Some(body.slice_ref(content));
        }
        if first.is_none() {
            first = Some(body.slice_ref(content));
        }
    }
    with_filename.or(first)
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type.
fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The upload route's check of the head: a valid bearer token, before the body is read.
/// The refusal is the same envelope the handler would answer (CORS is added by the HTTP
/// layer's `refine`).
pub fn gate(api: &Api, head: &RequestHead) -> Result<(), Response> {
    input::bearer_header(api, head.header_str("authorization"))
        .map(|_| ())
        .map_err(|e| e.response())
}

/// `POST /api/v1/uploads/cover`.
pub async fn upload(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    input::bearer(&api, &req)?;
    let content_type = req.header("content-type").unwrap_or("");
    let image = if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        let b = boundary(content_type).ok_or_else(|| {
            ApiError::field("file", "multipart/form-data needs a boundary parameter")
        })?;
        multipart_file(&req.body, b)
            .ok_or_else(|| ApiError::field("file", "the multipart body has no file part"))?
    } else {
        req.body.clone()
    };
    if image.is_empty() {
        return Err(ApiError::field("file", "the image is empty"));
    }
    let max = api.config().api.cover_max_bytes;
    if image.len() as u64 > max {
        return Err(ApiError::new(
            error::IMAGE_TOO_LARGE,
            format!("the image is larger than {max} bytes"),
        ));
    }
    let Some(kind) = sniff(&image) else {
        return Err(ApiError::new(
            error::UNSUPPORTED_IMAGE,
            "only JPEG, PNG and WebP images are accepted",
        ));
    };
    let name = format!(
        "{}.{}",
        input::hex(&input::random_bytes::<16>()?),
        kind.ext()
    );
    let size = image.len();
    // Decoded and thumbnailed on the files thread; a full queue is 50301 at once.
    let saved = api
        .shared
        .files
        .save_cover(name.clone(), image)
        .await?
        .map_err(|refusal| match refusal {
            Refusal::TooLarge { .. } => {
                ApiError::new(error::IMAGE_DIMENSIONS_TOO_LARGE, refusal.to_string())
            }
            Refusal::Undecodable(_) => ApiError::new(error::IMAGE_UNDECODABLE, refusal.to_string()),
        })?;
    let bases = urls::bases(&api, &req);
    let thumbs: serde_json::Map<String, serde_json::Value> = saved
        .thumbs
        .iter()
        .zip(thumbs::WIDTHS)
        .map(|((thumb, _, _), w)| (w.to_string(), urls::cover(&bases, thumb).into()))
        .collect();
    Ok(Response::ok(&json!({
        "url": urls::cover(&bases, &name),
        "name": name,
        "content_type": kind.content_type(),
        "size": size,
        "width": saved.width,
        "height": saved.height,
        "thumbs": thumbs,
    })))
}

/// Bytes of cover copies kept per shard for reuse (most recently served first).
pub const CACHE_MAX: u64 = 32 * 1024 * 1024;
/// Bytes of cover copies one shard holds at most: cached, or still being written.
pub const HELD_MAX: u64 = 128 * 1024 * 1024;

/// One shard's served covers: a small cache by name, and the count of every copy alive.
struct Served {
    /// (name, bytes), least recently served first; `cached` bytes in all.
    cache: Vec<(String, Bytes)>,
    cached: u64,
    /// Bytes of copies alive (cache and responses in flight), decremented when the last
    /// reference to a copy is dropped (see [`Counted`]).
    held: Arc<AtomicU64>,
}

thread_local! {
    static SERVED: RefCell<Served> = RefCell::new(Served {
        cache: Vec::new(),
        cached: 0,
        held: Arc::new(AtomicU64::new(0)),
    });
}

/// A cover copy that gives its size back to the shard's count when its last reference
/// goes (the response written, the cache entry evicted).
struct Counted {
    bytes: Bytes,
    held: Arc<AtomicU64>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes.len() as u64, Relaxed);
    }
}

thread_local! {
    /// Covers being read from disk on this shard right now, each with the signal its
    /// other requesters wait on.
    static LOADING: RefCell<Vec<(String, Rc<Signal>)>> = const { RefCell::new(Vec::new()) };
}

/// The signal of a read of `name` under way, if there is one.
fn loading(name: &str) -> Option<Rc<Signal>> {
    LOADING.with(|l| {
        l.borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    })
}

/// A read of a cover under way; when it ends (however it ends) its waiters are woken.
struct Loading(String);

impl Loading {
    fn start(name: &str) -> Loading {
        LOADING.with(|l| l.borrow_mut().push((name.to_string(), Signal::new())));
        Loading(name.to_string())
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        LOADING.with(|l| {
            let mut l = l.borrow_mut();
            if let Some(at) = l.iter().position(|(n, _)| *n == self.0) {
                l.swap_remove(at).1.raise();
            }
        });
    }
}

/// The shared copy of `name`, if the shard has one.
fn cached(name: &str) -> Option<Bytes> {
    SERVED.with(|s| {
        let mut s = s.borrow_mut();
        let at = s.cache.iter().position(|(n, _)| n == name)?;
        let entry = s.cache.remove(at);
        let bytes = entry.1.clone();
        s.cache.push(entry);
        Some(bytes)
    })
}

/// Makes `bytes`, just read, the shard's copy of `name`: `None` if the shard already holds
/// [`HELD_MAX`] of copies.
fn keep(name: &str, bytes: Bytes) -> Option<Bytes> {
    SERVED.with(|s| {
        let mut s = s.borrow_mut();
        if let Some((_, b)) = s.cache.iter().find(|(n, _)| n == name) {
            // Read twice at once: serve the first copy.
            return Some(b.clone());
        }
        let len = bytes.len() as u64;
        if s.held.load(Relaxed) + len > HELD_MAX {
            return None;
        }
        s.held.fetch_add(len, Relaxed);
        let shared = Bytes::from_owner(Counted {
            bytes,
            held: s.held.clone(),
        });
        if len <= CACHE_MAX {
            s.cache.push((name.to_string(), shared.clone()));
            s.cached += len;
            while s.cached > CACHE_MAX {
                let (_, old) = s.cache.remove(0);
                s.cached -= old.len() as u64;
            }
        }
        Some(shared)
    })
}

/// `GET /covers/{name}`: an uploaded image, with its type and long-lived caching (names
/// are never reused).
pub async fn serve(api: Rc<Api>, req: Request) -> ApiResult<Response> {
    let not_found = || ApiError::new(error::FILE_NOT_FOUND, "no such file");
    let name = req.param("name").unwrap_or("");
    if !files::valid_name(name) {
        return Err(not_found());
    }
    let kind = name
        .rsplit_once('.')
        .and_then(|(_, ext)| ImageType::from_ext(ext))
        .ok_or_else(not_found)?;
    let bytes = match cached(name) {
        Some(b) => b,
        None => {
            // A read of it already under way: wait for its copy rather than make another.
            if let Some(loading) = loading(name) {
                loading.wait().await;
            }
            match cached(name) {
                Some(b) => b,
                None => {
                    let _loading = Loading::start(name);
                    let read = api
                        .shared
                        .files
                        .read(name.to_string())
                        .await?
                        .ok_or_else(not_found)?;
                    keep(name, read).ok_or_else(ApiError::busy)?
                }
            }
        }
    };
    Ok(Response::with_body(200, kind.content_type(), bytes)
        .header("Cache-Control", "public, max-age=31536000, immutable")
        .header("X-Content-Type-Options", "nosniff"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_1X1: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89,
    ];

    #[test]
    fn sniffs_from_bytes() {
        assert_eq!(sniff(PNG_1X1), Some(ImageType::Png));
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Some(ImageType::Jpeg)
        );
        assert_eq!(
            sniff(b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00"),
            Some(ImageType::Webp)
        );
        assert_eq!(sniff(b"hello, I am a text file named x.png"), None);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n"), None, "signature alone");
        assert_eq!(sniff(b"RIFF\x24\x00\x00\x00WAVEfmt "), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn served_copies_are_shared_and_counted() {
        let held = || SERVED.with(|s| s.borrow().held.load(Relaxed));
        let a = keep("a.png", Bytes::from(vec![1u8; 1000])).unwrap();
        let again = cached("a.png").unwrap();
        assert_eq!(a.as_ptr(), again.as_ptr(), "one copy");
        assert_eq!(held(), 1000);
        // Evicted from the cache and no longer written anywhere: given back.
        let big = keep("b.png", Bytes::from(vec![2u8; CACHE_MAX as usize])).unwrap();
        assert!(cached("a.png").is_none(), "evicted");
        assert_eq!(held(), 1000 + CACHE_MAX, "a is still referenced here");
        drop((a, again));
        assert_eq!(held(), CACHE_MAX);
        drop(big);
        // Over the bound, a fresh copy is refused.
        let mut alive = Vec::new();
        let mut n = 0;
        while let Some(b) = keep(&format!("{n}.png"), Bytes::from(vec![0u8; 16 << 20])) {
            alive.push(b);
            n += 1;
        }
        assert!(held() <= HELD_MAX, "{}", held());
        assert!(n >= 4, "{n}");
    }

    #[test]
    fn multipart_parts() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../x.png\"\r\n\
Content-Type: image/png\r\n\r\nIMAGE\r\nBYTES\r\n--XyZ--\r\n";
        let body = Bytes::from_static(body);
        assert_eq!(
            multipart_file(&body, "XyZ").as_deref(),
            Some(&b"IMAGE\r\nBYTES"[..])
        );
        let only = b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nDATA\r\n--b--\r\n";
        let only = Bytes::from_static(only);
        assert_eq!(multipart_file(&only, "b").as_deref(), Some(&b"DATA"[..]));
        assert_eq!(multipart_file(&Bytes::from_static(b"garbage"), "b"), None);
        let broken = Bytes::from_static(b"--b\r\nno-headers-end--b--");
        assert_eq!(multipart_file(&broken, "b"), None);
        assert_eq!(
            boundary("multipart/form-data; boundary=\"abc\""),
            Some("abc")
        );
        assert_eq!(boundary("image/png"), None);
    }
}
