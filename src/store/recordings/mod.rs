//! Recordings (DVR) on disk: FLV files written on a thread of their own ("recorder"),
//! listed and read for VOD on another ("vod").
//!
//! The owner shard of a recorded stream hands each packaged message (`Packaged`: two
//! refcounts, no copy) to the recorder through one bounded channel shared by every
//! recording ([`RecorderHandle::send_tag`] never blocks: a full channel is `false`, and the
//! shard then drops that recording's frames until its next keyframe). The recorder writes
//! `FLV header + onMetaData + sequence headers + tags from a keyframe on`, timestamps
//! rebased so each file starts at 0, through a buffered writer flushed every second; a
//! file is cut at the first keyframe after `media.record_segment_secs` or
//! `media.record_segment_bytes` and the next one starts with the headers again, so every
//! file plays on its own. A closed file is fsynced. Retention (`media.record_max_files`,
//! `media.record_max_bytes`, per stream) deletes the oldest closed files when a new one
//! opens.
//!
//! A write error (disk full, the directory gone) stops that recording: logged with its
//! reason, counted (`liveshard_record_write_errors_total`), and the shard is told through
//! the recording's [`Flags`] so it stops sending; the live stream is not touched.
//!
//! Names: a recording file is `<id>_<stream>.flv` in one flat directory, where `<id>` is 16
//! lower-case hex digits (the start in Unix ms, then a counter) and `<stream>` a valid
//! stream name (no `/`). A VOD request names an id only; the file is found in the index the
//! recorder keeps (rebuilt from the directory at start), never from the request's path.
//!
//! Files: this one (the handle, settings, counters, names), `writer` (the recorder thread),
//! `vod` (the vod thread).
//!
//! The index is a `Mutex` shared by these two threads only: shards never touch it (they ask
//! the vod thread by channel and oneshot, and a full channel is "busy" at once).

mod vod;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;

use super::StoreError;
use crate::media::Packaged;

/// The largest piece of a file one VOD read returns (what a connection holds at once).
pub const READ_CHUNK: usize = 128 * 1024;
/// Requests waiting for the vod thread at most.
const VOD_QUEUE: usize = 256;
/// Entries one list answer carries at most (newest first).
pub const LIST_MAX: usize = 1000;

/// What the recorder is configured with (`[media]`).
#[derive(Clone, Debug)]
pub struct RecordSettings {
    pub dir: PathBuf,
    pub segment: Duration,
    pub segment_bytes: u64,
    pub max_files: usize,
    /// 0: no byte limit.
    pub max_bytes: u64,
    pub queue: usize,
}

impl RecordSettings {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        let m = &cfg.media;
        let dir = if m.record_dir.as_os_str().is_empty() {
            cfg.server.data_dir.join("recordings")
        } else {
            m.record_dir.clone()
        };
        Self {
            dir,
            segment: Duration::from_secs(m.record_segment_secs),
            segment_bytes: m.record_segment_bytes,
            max_files: m.record_max_files,
            max_bytes: m.record_max_bytes,
            queue: m.record_queue,
        }
    }
}

/// One recording's two flags, between its shard and the recorder. Relaxed: each is a
/// one-way latch read on the next message; nothing else is published through it.
#[derive(Debug, Default)]
pub struct Flags {
    /// Set by the shard: the recording is over (the `Close` message may not fit the queue).
    pub closed: AtomicBool,
    /// Set by the recorder: a write failed, the recording stopped.
    pub failed: AtomicBool,
}

/// The recorder's counters (`/metrics`). Written by the recorder thread, except
/// `dropped`, which shards bump when a full queue makes them drop a frame.
#[derive(Debug, Default)]
pub struct RecStats {
    pub active: AtomicU64,
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    pub deleted: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
}

impl RecStats {
    /// The Prometheus text of these counters (families listed in `docs/metrics.md`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let families: [(&str, &str, &str, &AtomicU64); 6] = [
            (
                "liveshard_record_active",
                "gauge",
                "Recordings in progress.",
                &self.active,
            ),
            (
                "liveshard_record_bytes_total",
                "counter",
                "Bytes written to recording files.",
                &self.bytes,
            ),
            (
                "liveshard_record_files_total",
                "counter",
                "Recording files opened.",
                &self.files,
            ),
            (
                "liveshard_record_deleted_total",
                "counter",
                "Recording files deleted by retention.",
                &self.deleted,
            ),
            (
                "liveshard_record_write_errors_total",
                "counter",
                "Recordings stopped by a write error (disk full, directory gone).",
                &self.errors,
            ),
            (
                "liveshard_record_frames_dropped_total",
                "counter",
                "Frames a recording dropped because the recorder's queue was full.",
                &self.dropped,
            ),
        ];
        for (name, kind, help, v) in families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
    }
}

/// One recording file, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub stream: Arc<str>,
    /// Unix ms of its first frame.
    pub started_ms: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Still being written.
    pub open: bool,
}

impl Entry {
    fn file_name(&self) -> String {
        format!("{}_{}.flv", self.id, self.stream)
    }
}

/// Whether `id` is one the recorder could have made: 16 lower-case hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<id>_<stream>.flv` → (id, stream), for names the recorder makes and nothing else.
fn parse_name(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".flv")?;
    let (id, stream) = (stem.get(..16)?, stem.get(16..)?.strip_prefix('_')?);
    (valid_id(id) && crate::ids::valid_room_id(stream)).then_some((id, stream))
}

/// A file to serve: its index entry and its length on disk now.
#[derive(Clone, Debug)]
pub struct Stat {
    pub entry: Entry,
    pub len: u64,
}

type Index = Arc<Mutex<Vec<Entry>>>;

enum RecMsg {
    Open {
        key: u64,
        stream: Arc<str>,
        flags: Arc<Flags>,
    },
    Tag {
        key: u64,
        tag: Packaged,
    },
    Close {
        key: u64,
    },
    Stop,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum VodReq {
    List {
        stream: Option<String>,
        reply: Reply<Vec<Entry>>,
    },
    Stat {
        id: String,
        reply: Reply<Option<Stat>>,
    },
    Read {
        id: String,
        offset: u64,
        len: usize,
        reply: Reply<Option<Bytes>>,
    },
    Stop,
}

/// The shards' side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct RecorderHandle {
    tx: SyncSender<RecMsg>,
    vod: SyncSender<VodReq>,
    stats: Arc<RecStats>,
    next_key: Arc<AtomicU64>,
}

impl std::fmt::Debug for RecorderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecorderHandle")
    }
}

/// A recording started on a shard: its key and flags.
#[derive(Debug)]
pub struct Started {
    pub key: u64,
    pub flags: Arc<Flags>,
}

impl RecorderHandle {
    pub fn stats(&self) -> &RecStats {
        &self.stats
    }

    /// Starts recording `stream`; `None` if the recorder's queue is full or it stopped.
    pub fn open(&self, stream: Arc<str>) -> Option<Started> {
        // Relaxed: a unique number is all that is needed.
        let key = self.next_key.fetch_add(1, Relaxed);
        let flags = Arc::new(Flags::default());
        let msg = RecMsg::Open {
            key,
            stream,
            flags: flags.clone(),
        };
        self.tx.try_send(msg).ok()?;
        Some(Started { key, flags })
    }

    /// One message of recording `key`; `false` if the queue is full (never waits).
    pub fn send_tag(&self, key: u64, tag: Packaged) -> bool {
        self.tx.try_send(RecMsg::Tag { key, tag }).is_ok()
    }

    /// Ends recording `key` (its flag first: the message is only a wake-up).
    pub fn close(&self, started: &Started) {
        started.flags.closed.store(true, Relaxed);
        let _ = self.tx.try_send(RecMsg::Close { key: started.key });
    }

    fn ask(&self, req: VodReq) -> Result<(), StoreError> {
        self.vod.try_send(req).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Busy,
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Recordings (of `stream`, or all), newest first, at most [`LIST_MAX`].
    pub async fn list(&self, stream: Option<String>) -> Result<Vec<Entry>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ask(VodReq::List { stream, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// The recording `id` and its length now; `None` if there is none.
    pub async fn stat(&self, id: String) -> Result<Option<Stat>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ask(VodReq::Stat { id, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Up to `len` (at most [`READ_CHUNK`]) bytes of recording `id` from `offset`.
    pub async fn read(
        &self,
        id: String,
        offset: u64,
        len: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let len = len.min(READ_CHUNK);
        self.ask(VodReq::Read {
            id,
            offset,
            len,
            reply,
        })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// The recorder and vod threads, started before the shards and joined after them.
pub struct Recorder {
    handle: RecorderHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Recorder {
    /// Creates the directory, indexes the recordings already in it and starts both threads.
    pub fn start(settings: RecordSettings) -> std::io::Result<Self> {
        std::fs::create_dir_all(&settings.dir)?;
        let index: Index = Arc::new(Mutex::new(writer::scan(&settings.dir)));
        let stats = Arc::new(RecStats::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let (vod, vod_rx) = std::sync::mpsc::sync_channel(VOD_QUEUE);
        let dir = settings.dir.clone();
        let writer = writer::Writer::new(settings, index.clone(), stats.clone());
        let threads = vec![
            std::thread::Builder::new()
                .name("recorder".into())
                .spawn(move || writer.run(&rx))?,
            std::thread::Builder::new()
                .name("vod".into())
                .spawn(move || vod::serve(&dir, &index, &vod_rx))?,
        ];
        Ok(Self {
            handle: RecorderHandle {
                tx,
                vod,
                stats,
                next_key: Arc::new(AtomicU64::new(1)),
            },
            threads,
        })
    }

    pub fn handle(&self) -> RecorderHandle {
        self.handle.clone()
    }

    /// Closes (and fsyncs) open files, then stops; waits up to `timeout`.
    pub fn join(self, timeout: Duration) {
        // Blocking is fine here: this is the main thread, not a shard.
        let _ = self.handle.tx.send(RecMsg::Stop);
        let _ = self.handle.vod.send(VodReq::Stop);
        crate::threads::join_within(self.threads, timeout, "recorder thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_names_are_recordings() {
        assert_eq!(
            parse_name("0123456789abcdef_room-1.flv"),
            Some(("0123456789abcdef", "room-1"))
        );
        assert_eq!(
            parse_name("0123456789abcdef_a_b.flv"),
            Some(("0123456789abcdef", "a_b"))
        );
        for bad in [
            "0123456789ABCDEF_r.flv",
            "0123456789abcde_r.flv",
            "0123456789abcdef_.flv",
            "0123456789abcdef_r.ts",
            "0123456789abcdef_r/x.flv",
            "0123456789abcdefr.flv",
            "",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert!(valid_id("0123456789abcdef"));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("0123456789abcdeg"));
    }
}
