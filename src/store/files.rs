//! Uploaded files (room covers) on disk, on a thread of their own ("files").
//!
//! Writing a 2 MiB file and fsyncing it takes milliseconds: on the store thread it would
//! delay danmaku acks, on a shard it would stall every connection of that shard. So files
//! get their own thread and bounded channel, like the store: shards send a request with a
//! oneshot and await it; a full channel answers [`StoreError::Busy`] at once.
//!
//! Nothing can escape the directory: the only names accepted (here, and again by the
//! callers) are generated ones — lower-case hex, one dot, a known extension — so no name
//! can hold a `/`, a `..` or anything a filesystem would interpret. A save is written to a
//! temporary file, fsynced, renamed into place and the directory fsynced, so a file is
//! either entirely there after a crash or not at all.
//!
//! A cover upload ([`FilesHandle::save_cover`]) is decoded and its thumbnails derived here
//! too ([`super::thumbs`]), so the shard that took the upload only awaits the answer. The
//! thumbnails (`<stem>-320.jpg`, `<stem>-640.jpg`) are written before the original, so an
//! original that exists has its thumbnails. A thumbnail asked for that is missing (a cover
//! uploaded before thumbnails existed) is derived from its original on that first read.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::thumbs::{self, Refusal};
use super::StoreError;

/// Extensions a stored file may have.
pub const EXTENSIONS: &[&str] = &["jpg", "png", "webp"];

/// Whether `name` is one we could have generated: 16–64 lower-case hex digits, a dot and a
/// known extension (an original), or the same digits, `-` and a thumbnail width, `.jpg`.
pub fn valid_name(name: &str) -> bool {
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    match stem.split_once('-') {
        None => valid_stem(stem) && EXTENSIONS.contains(&ext),
        Some((stem, width)) => valid_stem(stem) && ext == "jpg" && thumb_width(width).is_some(),
    }
}

fn valid_stem(stem: &str) -> bool {
    (16..=64).contains(&stem.len())
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn thumb_width(width: &str) -> Option<u32> {
    thumbs::WIDTHS.into_iter().find(|w| w.to_string() == width)
}

/// Whether `name` is a valid original's name (not a thumbnail's).
pub fn is_original(name: &str) -> bool {
    valid_name(name) && !name.contains('-')
}

/// What a cover upload made: the image's dimensions and its thumbnails' (name, width,
/// height), smallest first.
#[derive(Clone, Debug)]
pub struct Saved {
    pub width: u32,
    pub height: u32,
    pub thumbs: Vec<(String, u32, u32)>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum FileRequest {
    Save {
        name: String,
        bytes: Bytes,
        reply: Reply<()>,
    },
    SaveCover {
        name: String,
        bytes: Bytes,
        reply: Reply<Result<Saved, Refusal>>,
    },
    Read {
        name: String,
        reply: Reply<Option<Bytes>>,
    },
    Stop,
}

/// The shards' side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct FilesHandle {
    tx: SyncSender<FileRequest>,
}

impl FilesHandle {
    fn send(&self, req: FileRequest) -> Result<(), StoreError> {
        self.tx.try_send(req).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Busy,
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Stores `bytes` as `name` (a generated name; see [`valid_name`]).
    pub async fn save(&self, name: String, bytes: Bytes) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(FileRequest::Save { name, bytes, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Stores the cover image `bytes` as `name` (an original's generated name) with its
    /// thumbnails; an image that is too large or cannot be decoded is refused and nothing is
    /// written. The decoding is done on the files thread.
    pub async fn save_cover(
        &self,
        name: String,
        bytes: Bytes,
    ) -> Result<Result<Saved, Refusal>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(FileRequest::SaveCover { name, bytes, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// The file `name`, `None` if there is none (or the name is not one of ours).
    pub async fn read(&self, name: String) -> Result<Option<Bytes>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(FileRequest::Read { name, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// The files thread, started before the shards and joined after them.
pub struct Files {
    handle: FilesHandle,
    thread: Option<JoinHandle<()>>,
}

impl Files {
    /// Creates `dir` if needed and starts serving it. `max_read` bounds what a read loads.
    pub fn start(dir: PathBuf, queue: usize, max_read: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
        let thread = std::thread::Builder::new()
            .name("files".into())
            .spawn(move || serve(&dir, &rx, max_read))?;
        Ok(Self {
            handle: FilesHandle { tx },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> FilesHandle {
        self.handle.clone()
    }

    /// Finishes what is queued, then stops; waits up to `timeout`.
    pub fn join(mut self, timeout: Duration) {
        if let Some(t) = self.thread.take() {
            // Blocking is fine here: this is the main thread, not a shard.
            let _ = self.handle.tx.send(FileRequest::Stop);
            let deadline = Instant::now() + timeout;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("files thread still busy at exit");
            }
        }
    }
}

fn serve(dir: &Path, rx: &Receiver<FileRequest>, max_read: u64) {
    while let Ok(req) = rx.recv() {
        match req {
            FileRequest::Stop => return,
            FileRequest::Save { name, bytes, reply } => {
                let result = save(dir, &name, &bytes);
                if let Err(e) = &result {
                    tracing::error!(%name, error = %e, "file not saved");
                }
                let _ = reply.send(result);
            }
            FileRequest::SaveCover { name, bytes, reply } => {
                let result = save_cover(dir, &name, &bytes);
                if let Err(e) = &result {
                    tracing::error!(%name, error = %e, "cover not saved");
                }
                let _ = reply.send(result);
            }
            FileRequest::Read { name, reply } => {
                let _ = reply.send(read(dir, &name, max_read));
            }
        }
    }
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    if !valid_name(name) {
        return Err(StoreError::Backend(format!(
            "not a stored file name: {name:?}"
        )));
    }
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    std::fs::rename(&tmp, dir.join(name)).map_err(io_err)?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err)
}

fn save_cover(dir: &Path, name: &str, bytes: &[u8]) -> Result<Result<Saved, Refusal>, StoreError> {
    if !is_original(name) {
        return Err(StoreError::Backend(format!(
            "not a stored cover name: {name:?}"
        )));
    }
    let Some(format) = thumbs::format_of(name) else {
        return Err(StoreError::Backend(format!("no image format for {name:?}")));
    };
    let ((width, height), made) = match thumbs::derive(bytes, format) {
        Ok(d) => d,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut saved = Saved {
        width,
        height,
        thumbs: Vec::with_capacity(made.len()),
    };
    for t in made {
        let thumb = thumbs::name(name, thumbs::WIDTHS[saved.thumbs.len()]);
        save(dir, &thumb, &t.jpeg)?;
        saved.thumbs.push((thumb, t.width, t.height));
    }
    save(dir, name, bytes)?;
    Ok(Ok(saved))
}

/// A missing thumbnail `name`, derived from its original if that exists (and kept).
fn derive_missing(dir: &Path, name: &str, max_read: u64) -> Result<Option<Bytes>, StoreError> {
    let Some((stem, width)) = name.split_once('.').and_then(|(s, _)| s.split_once('-')) else {
        return Ok(None);
    };
    let Some(at) = thumbs::WIDTHS.iter().position(|w| w.to_string() == width) else {
        return Ok(None);
    };
    for ext in EXTENSIONS {
        let original = format!("{stem}.{ext}");
        let Some(bytes) = read_file(dir, &original, max_read)? else {
            continue;
        };
        let Some(format) = thumbs::format_of(&original) else {
            continue;
        };
        return match thumbs::derive(&bytes, format) {
            Ok((_, made)) => {
                let mut wanted = None;
                for (i, t) in made.into_iter().enumerate() {
                    save(dir, &thumbs::name(&original, thumbs::WIDTHS[i]), &t.jpeg)?;
                    if i == at {
                        wanted = Some(Bytes::from(t.jpeg));
                    }
                }
                Ok(wanted)
            }
            Err(refusal) => {
                tracing::warn!(%original, %refusal, "no thumbnail for a stored cover");
                Ok(None)
            }
        };
    }
    Ok(None)
}

fn read(dir: &Path, name: &str, max_read: u64) -> Result<Option<Bytes>, StoreError> {
    if !valid_name(name) {
        return Ok(None);
    }
    match read_file(dir, name, max_read)? {
        None if !is_original(name) => derive_missing(dir, name, max_read),
        found => Ok(found),
    }
}

fn read_file(dir: &Path, name: &str, max_read: u64) -> Result<Option<Bytes>, StoreError> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => return Ok(None),
        Ok(m) if m.len() > max_read => {
            return Err(StoreError::Corrupt(format!(
                "{name} is larger than expected"
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_names_are_accepted() {
        assert!(valid_name("0123456789abcdef0123456789abcdef.png"));
        assert!(valid_name("0123456789abcdef.webp"));
        assert!(valid_name("0123456789abcdef-320.jpg"));
        assert!(valid_name("0123456789abcdef-640.jpg"));
        assert!(!is_original("0123456789abcdef-640.jpg"));
        for bad in [
            "../../x",
            "..%2F..%2Fx",
            "0123456789abcdef0123456789abcdef.png/../x",
            "0123456789abcdef-320.png",
            "0123456789abcdef-100.jpg",
            "0123456789abcdef-320-320.jpg",
            "-320.jpg",
            "0123456789ABCDEF0123456789ABCDEF.png",
            "0123456789abcdef0123456789abcdef.exe",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef.png.png",
            "/etc/passwd",
            "abc.png",
            "",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn saves_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("liveshard-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = "0123456789abcdef0123456789abcdef.png";
        save(&dir, name, b"data").unwrap();
        assert_eq!(
            read(&dir, name, 100).unwrap(),
            Some(Bytes::from_static(b"data"))
        );
        assert!(read(&dir, name, 2).is_err(), "over the read bound");
        assert_eq!(read(&dir, "0123456789abcdef.jpg", 100).unwrap(), None);
        assert!(save(&dir, "../x.png", b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
