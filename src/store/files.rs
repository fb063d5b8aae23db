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
//! A cover upload ([`FilesHandle::save_cover`]) is decoded, thumbnailed ([`super::thumbs`])
//! and written on a second thread ("thumbs") with a queue of its own of [`THUMBS_QUEUE`]
//! uploads: decoding a large image takes a second or more, and on the files thread it
//! would hold up every cover being served. A full queue is [`StoreError::Busy`] at once.
//! The thumbnails (`<stem>-320.jpg`, `<stem>-640.jpg`) are written before the original, so
//! an original that exists has its thumbnails. A thumbnail asked for that is missing (a
//! cover uploaded before thumbnails existed) is derived from its original on that first
//! read, on the files thread; an original that cannot be thumbnailed is remembered
//! ([`FAILED_MAX`] names), so asking again costs nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;

use super::thumbs::{self, Refusal};
use super::StoreError;

/// Cover uploads waiting to be decoded (each holds its image, at most
/// `api.cover_max_bytes`), besides the one being decoded.
pub const THUMBS_QUEUE: usize = 4;
/// Originals remembered as not thumbnailable (stored before thumbnails existed).
pub const FAILED_MAX: usize = 1024;

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
    /// The thumbs thread's queue (cover uploads).
    thumbs: SyncSender<FileRequest>,
}

fn send(tx: &SyncSender<FileRequest>, req: FileRequest) -> Result<(), StoreError> {
    tx.try_send(req).map_err(|e| match e {
        TrySendError::Full(_) => StoreError::Busy,
        TrySendError::Disconnected(_) => StoreError::Closed,
    })
}

impl FilesHandle {
    fn send(&self, req: FileRequest) -> Result<(), StoreError> {
        send(&self.tx, req)
    }

    /// Stores `bytes` as `name` (a generated name; see [`valid_name`]).
    pub async fn save(&self, name: String, bytes: Bytes) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(FileRequest::Save { name, bytes, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Stores the cover image `bytes` as `name` (an original's generated name) with its
    /// thumbnails; an image that is too large or cannot be decoded is refused and nothing is
    /// written. The decoding and writing are done on the thumbs thread.
    pub async fn save_cover(
        &self,
        name: String,
        bytes: Bytes,
    ) -> Result<Result<Saved, Refusal>, StoreError> {
        let (reply, rx) = oneshot::channel();
        send(&self.thumbs, FileRequest::SaveCover { name, bytes, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// The file `name`, `None` if there is none (or the name is not one of ours).
    pub async fn read(&self, name: String) -> Result<Option<Bytes>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(FileRequest::Read { name, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// The files and thumbs threads, started before the shards and joined after them.
pub struct Files {
    handle: FilesHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Files {
    /// Creates `dir` if needed and starts serving it. `max_read` bounds what a read loads.
    pub fn start(dir: PathBuf, queue: usize, max_read: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
        let (thumbs, thumbs_rx) = std::sync::mpsc::sync_channel(THUMBS_QUEUE);
        let files_dir = dir.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("files".into())
                .spawn(move || serve(&files_dir, &rx, max_read))?,
            std::thread::Builder::new()
                .name("thumbs".into())
                .spawn(move || serve(&dir, &thumbs_rx, max_read))?,
        ];
        Ok(Self {
            handle: FilesHandle { tx, thumbs },
            threads,
        })
    }

    pub fn handle(&self) -> FilesHandle {
        self.handle.clone()
    }

    /// Finishes what is queued, then stops; waits up to `timeout`.
    pub fn join(self, timeout: Duration) {
        // Blocking is fine here: this is the main thread, not a shard.
        let _ = self.handle.tx.send(FileRequest::Stop);
        let _ = self.handle.thumbs.send(FileRequest::Stop);
        crate::threads::join_within(self.threads, timeout, "files thread");
    }
}

fn serve(dir: &Path, rx: &Receiver<FileRequest>, max_read: u64) {
    let mut failed = Failed::default();
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
                let _ = reply.send(read(dir, &name, max_read, &mut failed));
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

/// Originals that could not be thumbnailed, oldest first, at most [`FAILED_MAX`].
#[derive(Default)]
struct Failed(std::collections::VecDeque<String>);

impl Failed {
    fn add(&mut self, stem: &str) {
        if self.0.len() == FAILED_MAX {
            self.0.pop_front();
        }
        self.0.push_back(stem.to_string());
    }
}

/// A missing thumbnail `name`, derived from its original if that exists (and kept).
fn derive_missing(
    dir: &Path,
    name: &str,
    max_read: u64,
    failed: &mut Failed,
) -> Result<Option<Bytes>, StoreError> {
    let Some((stem, width)) = name.split_once('.').and_then(|(s, _)| s.split_once('-')) else {
        return Ok(None);
    };
    if failed.0.iter().any(|f| f == stem) {
        return Ok(None);
    }
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
                failed.add(stem);
                Ok(None)
            }
        };
    }
    Ok(None)
}

fn read(
    dir: &Path,
    name: &str,
    max_read: u64,
    failed: &mut Failed,
) -> Result<Option<Bytes>, StoreError> {
    if !valid_name(name) {
        return Ok(None);
    }
    match read_file(dir, name, max_read)? {
        None if !is_original(name) => derive_missing(dir, name, max_read, failed),
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
            read_file(&dir, name, 100).unwrap(),
            Some(Bytes::from_static(b"data"))
        );
        assert!(read_file(&dir, name, 2).is_err(), "over the read bound");
        assert_eq!(read_file(&dir, "0123456789abcdef.jpg", 100).unwrap(), None);
        assert!(save(&dir, "../x.png", b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn covers_get_thumbnails_and_old_covers_get_them_on_first_read() {
        let dir = std::env::temp_dir().join(format!("liveshard-thumbs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::new_rgb8(800, 400)
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let png = png.into_inner();
        let name = "0123456789abcdef0123456789abcdef.png";
        let saved = save_cover(&dir, name, &png).unwrap().unwrap();
        assert_eq!((saved.width, saved.height), (800, 400));
        let thumbs: Vec<_> = saved.thumbs.iter().map(|t| (t.1, t.2)).collect();
        assert_eq!(thumbs, [(320, 160), (640, 320)]);
        for (thumb, _, _) in &saved.thumbs {
            assert!(dir.join(thumb).is_file(), "{thumb}");
        }
        assert!(matches!(
            save_cover(&dir, name, b"\x89PNG\r\n\x1a\nxx"),
            Ok(Err(_))
        ));

        // Stored before thumbnails existed: derived when first asked for, then kept.
        let old = "fedcba9876543210fedcba9876543210.png";
        save(&dir, old, &png).unwrap();
        let mut failed = Failed::default();
        let t = read(
            &dir,
            "fedcba9876543210fedcba9876543210-320.jpg",
            1 << 20,
            &mut failed,
        );
        assert!(t.unwrap().is_some_and(|b| b.starts_with(&[0xFF, 0xD8])));
        assert!(dir
            .join("fedcba9876543210fedcba9876543210-640.jpg")
            .is_file());
        // An old original that cannot be thumbnailed is tried once.
        let broken = "00000000000000000000000000000000.png";
        save(&dir, broken, b"\x89PNG\r\n\x1a\nxx").unwrap();
        let thumb = "00000000000000000000000000000000-640.jpg";
        assert_eq!(read(&dir, thumb, 1 << 20, &mut failed).unwrap(), None);
        assert_eq!(failed.0.len(), 1);
        assert_eq!(read(&dir, thumb, 1 << 20, &mut failed).unwrap(), None);
        assert_eq!(failed.0.len(), 1);
        assert_eq!(
            read(
                &dir,
                "11111111111111111111111111111111-640.jpg",
                1 << 20,
                &mut failed
            )
            .unwrap(),
            None
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
