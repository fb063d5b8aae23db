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
//! The index is a `Mutex` shared by these two threads only: shards never touch it (they ask
//! the vod thread by channel and oneshot, and a full channel is "busy" at once).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::StoreError;
use crate::media::flv;
use crate::media::{MediaKind, Packaged};

/// The largest piece of a file one VOD read returns (what a connection holds at once).
pub const READ_CHUNK: usize = 128 * 1024;
/// Requests waiting for the vod thread at most.
const VOD_QUEUE: usize = 256;
/// Entries one list answer carries at most (newest first).
pub const LIST_MAX: usize = 1000;
/// How often open files are flushed (so VOD sees them grow) and stop flags are read.
const TICK: Duration = Duration::from_secs(1);

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
        let index: Index = Arc::new(Mutex::new(scan(&settings.dir)));
        let stats = Arc::new(RecStats::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let (vod, vod_rx) = std::sync::mpsc::sync_channel(VOD_QUEUE);
        let dir = settings.dir.clone();
        let writer = Writer {
            settings,
            index: index.clone(),
            stats: stats.clone(),
            recs: HashMap::new(),
            counter: 0,
        };
        let threads = vec![
            std::thread::Builder::new()
                .name("recorder".into())
                .spawn(move || writer.run(&rx))?,
            std::thread::Builder::new()
                .name("vod".into())
                .spawn(move || serve_vod(&dir, &index, &vod_rx))?,
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
        let deadline = Instant::now() + timeout;
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("recorder thread still busy at exit");
            }
        }
    }
}

/// The recordings found in `dir` at start (a file still open at a crash is listed with
/// what reached the disk).
fn scan(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some((id, stream)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        out.push(Entry {
            id: id.to_string(),
            stream: stream.into(),
            started_ms: u64::from_str_radix(&id[..12], 16).unwrap_or(0),
            duration_ms: last_timestamp(&e.path()).map_or(0, u64::from),
            bytes: meta.len(),
            open: false,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The timestamp of an FLV file's last tag (from its last PreviousTagSize).
fn last_timestamp(path: &Path) -> Option<u32> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut b4 = [0u8; 4];
    f.seek(SeekFrom::Start(len.checked_sub(4)?)).ok()?;
    f.read_exact(&mut b4).ok()?;
    let size = u64::from(u32::from_be_bytes(b4));
    let start = len.checked_sub(4 + size)?;
    if size < 11 || start < 13 {
        return None;
    }
    let mut h = [0u8; 11];
    f.seek(SeekFrom::Start(start)).ok()?;
    f.read_exact(&mut h).ok()?;
    Some(u32::from_be_bytes([h[7], h[4], h[5], h[6]]))
}

/// One recording on the recorder thread.
struct Rec {
    stream: Arc<str>,
    flags: Arc<Flags>,
    metadata: Option<Packaged>,
    video_header: Option<Packaged>,
    audio_header: Option<Packaged>,
    seg: Option<Segment>,
}

/// The file being written.
struct Segment {
    id: String,
    file: BufWriter<File>,
    /// Stream time of its first frame: written as 0.
    base: u32,
    last: u32,
    bytes: u64,
}

struct Writer {
    settings: RecordSettings,
    index: Index,
    stats: Arc<RecStats>,
    recs: HashMap<u64, Rec>,
    counter: u16,
}

impl Writer {
    fn run(mut self, rx: &Receiver<RecMsg>) {
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(RecMsg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(RecMsg::Open { key, stream, flags }) => {
                    self.stats.active.fetch_add(1, Relaxed);
                    self.recs.insert(
                        key,
                        Rec {
                            stream,
                            flags,
                            metadata: None,
                            video_header: None,
                            audio_header: None,
                            seg: None,
                        },
                    );
                }
                Ok(RecMsg::Tag { key, tag }) => self.tag(key, &tag),
                Ok(RecMsg::Close { key }) => self.end(key),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
        let keys: Vec<u64> = self.recs.keys().copied().collect();
        for key in keys {
            self.end(key);
        }
    }

    /// Ends recordings whose shard set their flag; flushes the others.
    fn tick(&mut self) {
        let closed: Vec<u64> = self
            .recs
            .iter()
            .filter(|(_, r)| r.flags.closed.load(Relaxed))
            .map(|(k, _)| *k)
            .collect();
        for key in closed {
            self.end(key);
        }
        let mut failed = Vec::new();
        for (key, rec) in &mut self.recs {
            if let Some(seg) = &mut rec.seg {
                if let Err(e) = seg.file.flush() {
                    failed.push((*key, e));
                }
            }
        }
        for (key, e) in failed {
            self.fail(key, &e);
        }
    }

    /// Closes recording `key`'s file (fsynced) and forgets it.
    fn end(&mut self, key: u64) {
        let Some(mut rec) = self.recs.remove(&key) else {
            return;
        };
        self.stats.active.fetch_sub(1, Relaxed);
        if let Err(e) = self.close_segment(&mut rec) {
            self.stats.errors.fetch_add(1, Relaxed);
            rec.flags.failed.store(true, Relaxed);
            tracing::error!(stream = %rec.stream, error = %e, "recording not closed cleanly");
        }
    }

    /// A write failed: the recording stops (its shard sees `failed`), the stream goes on.
    fn fail(&mut self, key: u64, e: &std::io::Error) {
        let Some(mut rec) = self.recs.remove(&key) else {
            return;
        };
        self.stats.active.fetch_sub(1, Relaxed);
        self.stats.errors.fetch_add(1, Relaxed);
        rec.flags.failed.store(true, Relaxed);
        tracing::error!(stream = %rec.stream, error = %e, "recording stopped: write failed");
        if let Some(seg) = rec.seg.take() {
            self.mark_closed(&seg);
        }
    }

    fn mark_closed(&self, seg: &Segment) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = index.iter_mut().find(|e| e.id == seg.id) {
            e.open = false;
            e.bytes = seg.bytes;
            e.duration_ms = u64::from(seg.last.saturating_sub(seg.base));
        }
    }

    fn close_segment(&self, rec: &mut Rec) -> std::io::Result<()> {
        let Some(mut seg) = rec.seg.take() else {
            return Ok(());
        };
        let done = seg
            .file
            .flush()
            .and_then(|()| seg.file.get_ref().sync_all());
        self.mark_closed(&seg);
        done
    }

    fn tag(&mut self, key: u64, tag: &Packaged) {
        if let Err(e) = self.try_tag(key, tag) {
            self.fail(key, &e);
        }
    }

    fn try_tag(&mut self, key: u64, tag: &Packaged) -> std::io::Result<()> {
        let Some(mut rec) = self.recs.remove(&key) else {
            return Ok(());
        };
        let result = self.write_tag(&mut rec, tag);
        self.recs.insert(key, rec);
        result
    }

    fn write_tag(&mut self, rec: &mut Rec, tag: &Packaged) -> std::io::Result<()> {
        let class = &tag.class;
        if class.is_metadata() || class.is_sequence_header() {
            let slot = if class.is_metadata() {
                &mut rec.metadata
            } else if tag.kind == MediaKind::Video {
                &mut rec.video_header
            } else {
                &mut rec.audio_header
            };
            *slot = Some(tag.clone());
            if let Some(seg) = &mut rec.seg {
                let n = write(seg, tag)?;
                self.stats.bytes.fetch_add(n, Relaxed);
            }
            return Ok(());
        }
        if !class.is_frame() {
            return Ok(());
        }
        // Where a file may start: a keyframe, or any audio frame of a stream without video.
        let start_here =
            class.is_keyframe() || (tag.kind == MediaKind::Audio && rec.video_header.is_none());
        if let Some(seg) = &rec.seg {
            let age = u64::from(tag.timestamp.saturating_sub(seg.base));
            let full = age >= self.settings.segment.as_millis() as u64
                || seg.bytes >= self.settings.segment_bytes;
            if start_here && full {
                self.close_segment(rec)?;
            }
        }
        if rec.seg.is_none() {
            if !start_here {
                return Ok(());
            }
            self.open_segment(rec, tag.timestamp)?;
        }
        if let Some(seg) = &mut rec.seg {
            let n = write(seg, tag)?;
            seg.last = seg.last.max(tag.timestamp);
            self.stats.bytes.fetch_add(n, Relaxed);
            let (id, bytes, dur) = (seg.id.clone(), seg.bytes, seg.last - seg.base);
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = index.iter_mut().rev().find(|e| e.id == id) {
                e.bytes = bytes;
                e.duration_ms = u64::from(dur);
            }
        }
        Ok(())
    }

    fn open_segment(&mut self, rec: &mut Rec, base: u32) -> std::io::Result<()> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.counter = self.counter.wrapping_add(1);
        let id = format!("{:012x}{:04x}", now_ms & 0xFFFF_FFFF_FFFF, self.counter);
        let entry = Entry {
            id: id.clone(),
            stream: rec.stream.clone(),
            started_ms: now_ms,
            duration_ms: 0,
            bytes: 0,
            open: true,
        };
        self.retain(&rec.stream);
        let path = self.settings.dir.join(entry.file_name());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        self.stats.files.fetch_add(1, Relaxed);
        // Listed from the moment it exists, so a failure below leaves no file unlisted.
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
        let seg = rec.seg.insert(Segment {
            id,
            file: BufWriter::with_capacity(64 * 1024, file),
            base,
            last: base,
            bytes: 0,
        });
        let head = flv::header(true, rec.video_header.is_some());
        seg.file.write_all(&head)?;
        seg.bytes += head.len() as u64;
        let mut n = head.len() as u64;
        for h in [&rec.metadata, &rec.video_header, &rec.audio_header]
            .into_iter()
            .flatten()
        {
            n += write(seg, h)?;
        }
        self.stats.bytes.fetch_add(n, Relaxed);
        Ok(())
    }

    /// Deletes `stream`'s oldest closed files so that one more stays within the limits.
    fn retain(&self, stream: &str) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mine: Vec<&Entry> = index.iter().filter(|e| &*e.stream == stream).collect();
            let bytes: u64 = mine.iter().map(|e| e.bytes).sum();
            let over_files = mine.len() >= self.settings.max_files;
            let over_bytes = self.settings.max_bytes > 0 && bytes >= self.settings.max_bytes;
            if !(over_files || over_bytes) {
                return;
            }
            // The index is in id order: the first closed one is the oldest.
            let Some(pos) = index.iter().position(|e| &*e.stream == stream && !e.open) else {
                return;
            };
            let old = index.remove(pos);
            match std::fs::remove_file(self.settings.dir.join(old.file_name())) {
                Ok(()) => {
                    self.stats.deleted.fetch_add(1, Relaxed);
                    tracing::info!(stream, id = %old.id, "recording deleted (retention)");
                }
                Err(e) => {
                    tracing::warn!(stream, id = %old.id, error = %e, "recording not deleted")
                }
            }
        }
    }
}

/// Writes `tag` with its timestamp rebased to the segment's start; returns the bytes.
fn write(seg: &mut Segment, tag: &Packaged) -> std::io::Result<u64> {
    let flv = &tag.flv;
    if flv.len() < flv::TAG_HEADER_LEN {
        return Ok(0);
    }
    let ts = tag.timestamp.saturating_sub(seg.base);
    let mut head = [0u8; flv::TAG_HEADER_LEN];
    head.copy_from_slice(&flv[..flv::TAG_HEADER_LEN]);
    let b = ts.to_be_bytes();
    head[4..8].copy_from_slice(&[b[1], b[2], b[3], b[0]]);
    seg.file.write_all(&head)?;
    seg.file.write_all(&flv[flv::TAG_HEADER_LEN..])?;
    seg.bytes += flv.len() as u64;
    Ok(flv.len() as u64)
}

fn serve_vod(dir: &Path, index: &Index, rx: &Receiver<VodReq>) {
    let find = |id: &str| -> Option<Entry> {
        if !valid_id(id) {
            return None;
        }
        let index = index.lock().unwrap_or_else(|p| p.into_inner());
        index.iter().find(|e| e.id == id).cloned()
    };
    while let Ok(req) = rx.recv() {
        match req {
            VodReq::Stop => return,
            VodReq::List { stream, reply } => {
                let index = index.lock().unwrap_or_else(|p| p.into_inner());
                let list = index
                    .iter()
                    .rev()
                    .filter(|e| stream.as_deref().is_none_or(|s| &*e.stream == s))
                    .take(LIST_MAX)
                    .cloned()
                    .collect();
                drop(index);
                let _ = reply.send(Ok(list));
            }
            VodReq::Stat { id, reply } => {
                let stat = find(&id).and_then(|entry| {
                    let len = std::fs::metadata(dir.join(entry.file_name())).ok()?.len();
                    Some(Stat { entry, len })
                });
                let _ = reply.send(Ok(stat));
            }
            VodReq::Read {
                id,
                offset,
                len,
                reply,
            } => {
                let read =
                    find(&id).map(|entry| read_at(&dir.join(entry.file_name()), offset, len));
                let answer = match read {
                    None => Ok(None),
                    Some(Ok(b)) => Ok(Some(b)),
                    Some(Err(e)) => Err(StoreError::Backend(e.to_string())),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    f.take(len.min(READ_CHUNK) as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaMessage;

    fn msg(kind: MediaKind, timestamp: u32, payload: &[u8]) -> Packaged {
        let m = MediaMessage {
            kind,
            timestamp,
            payload: Bytes::copy_from_slice(payload),
        };
        if kind == MediaKind::Data {
            Packaged::new_metadata(&m).unwrap()
        } else {
            Packaged::new(&m).unwrap()
        }
    }

    /// (tag type, timestamp) of every tag of an FLV file.
    fn tags(file: &[u8]) -> Vec<(u8, u32)> {
        assert_eq!(&file[..3], b"FLV");
        let mut at = 13;
        let mut out = Vec::new();
        while at < file.len() {
            let h = &file[at..at + 11];
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            out.push((h[0], u32::from_be_bytes([h[7], h[4], h[5], h[6]])));
            at += 11 + size + 4;
        }
        assert_eq!(at, file.len());
        out
    }

    #[test]
    fn files_start_at_a_keyframe_with_the_headers_rebased_to_zero_and_rotate_with_retention() {
        let dir = std::env::temp_dir().join(format!(
            "liveshard-rec-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = Writer {
            settings: RecordSettings {
                dir: dir.clone(),
                segment: Duration::from_secs(1),
                segment_bytes: 1 << 30,
                max_files: 2,
                max_bytes: 0,
                queue: 16,
            },
            index: Arc::default(),
            stats: Arc::default(),
            recs: HashMap::new(),
            counter: 0,
        };
        let flags = Arc::new(Flags::default());
        w.recs.insert(
            1,
            Rec {
                stream: "cam".into(),
                flags: flags.clone(),
                metadata: None,
                video_header: None,
                audio_header: None,
                seg: None,
            },
        );
        let (v, a) = (MediaKind::Video, MediaKind::Audio);
        let feed = [
            msg(MediaKind::Data, 0, b"\x02\x00\x0aonMetaData\x05"),
            msg(v, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
            msg(a, 0, &[0xaf, 0, 0x12, 0x10]),
            // Before the first keyframe: nothing to start a file with.
            msg(v, 500, &[0x27, 1, 0, 0, 0, 9]),
            msg(v, 1000, &[0x17, 1, 0, 0, 0, 9]),
            msg(a, 1020, &[0xaf, 1, 9]),
            msg(v, 1040, &[0x27, 1, 0, 0, 0, 9]),
            // 1 s after the file's start: the next keyframe opens a new file.
            msg(v, 2000, &[0x17, 1, 0, 0, 0, 9]),
            msg(v, 3000, &[0x17, 1, 0, 0, 0, 9]),
            msg(a, 3020, &[0xaf, 1, 9]),
        ];
        for p in &feed {
            w.tag(1, p);
        }
        w.end(1);
        assert!(!flags.failed.load(Relaxed));
        assert_eq!(w.stats.files.load(Relaxed), 3);
        assert_eq!(w.stats.deleted.load(Relaxed), 1, "two files kept");
        let index = w.index.lock().unwrap().clone();
        assert_eq!(index.len(), 2);
        assert!(index.iter().all(|e| !e.open && &*e.stream == "cam"));
        let second = std::fs::read(dir.join(index[0].file_name())).unwrap();
        assert_eq!(tags(&second), [(18, 0), (9, 0), (8, 0), (9, 0)]);
        assert_eq!(index[0].duration_ms, 0);
        let third = std::fs::read(dir.join(index[1].file_name())).unwrap();
        assert_eq!(tags(&third), [(18, 0), (9, 0), (8, 0), (9, 0), (8, 20)]);
        assert_eq!(index[1].bytes, third.len() as u64);
        assert_eq!(index[1].duration_ms, 20);
        // What a restart finds: the same files, durations from their last tags.
        let scanned = scan(&dir);
        assert_eq!(scanned.len(), 2);
        assert_eq!(scanned[1].duration_ms, 20);
        assert_eq!(scanned[1].bytes, third.len() as u64);
        // A directory that went away stops the recording at its next file.
        let flags = Arc::new(Flags::default());
        w.recs.insert(
            2,
            Rec {
                stream: "cam".into(),
                flags: flags.clone(),
                metadata: None,
                video_header: None,
                audio_header: None,
                seg: None,
            },
        );
        std::fs::remove_dir_all(&dir).unwrap();
        w.tag(2, &feed[4]);
        assert!(flags.failed.load(Relaxed));
        assert_eq!(w.stats.errors.load(Relaxed), 1);
        assert!(w.recs.is_empty());
    }

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
