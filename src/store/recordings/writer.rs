//! The recorder thread: each recording's headers, its file (cut at keyframes by duration or
//! size, fsynced when closed), retention, and a write error stopping the recording.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{parse_name, Entry, Flags, Index, RecMsg, RecStats, RecordSettings};
use crate::media::flv;
use crate::media::{MediaKind, Packaged};

/// How often open files are flushed (so VOD sees them grow) and stop flags are read.
const TICK: Duration = Duration::from_secs(1);

/// The recordings found in `dir` at start (a file still open at a crash is listed with
/// what reached the disk).
pub(super) fn scan(dir: &Path) -> Vec<Entry> {
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

pub(super) struct Writer {
    settings: RecordSettings,
    index: Index,
    stats: Arc<RecStats>,
    recs: HashMap<u64, Rec>,
    counter: u16,
}

impl Writer {
    pub(super) fn new(settings: RecordSettings, index: Index, stats: Arc<RecStats>) -> Self {
        Self {
            settings,
            index,
            stats,
            recs: HashMap::new(),
            counter: 0,
        }
    }

    pub(super) fn run(mut self, rx: &Receiver<RecMsg>) {
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

    /// Ends recordings whose shard set their flag; flushes the others and brings their
    /// index entries up to date (once a second, not per message: the list is at most that
    /// much behind an open file).
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
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        for (key, rec) in &mut self.recs {
            if let Some(seg) = &mut rec.seg {
                if let Err(e) = seg.file.flush() {
                    failed.push((*key, e));
                }
                if let Some(e) = index.iter_mut().rev().find(|e| e.id == seg.id) {
                    e.bytes = seg.bytes;
                    e.duration_ms = u64::from(seg.last.saturating_sub(seg.base));
                }
            }
        }
        drop(index);
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
            self.open_segment(rec, tag)?;
        }
        if let Some(seg) = &mut rec.seg {
            let n = write(seg, tag)?;
            seg.last = seg.last.max(tag.timestamp);
            self.stats.bytes.fetch_add(n, Relaxed);
        }
        Ok(())
    }

    /// Opens a new file for `rec`, starting at `first` (a keyframe, or audio when there is no
    /// video), and writes the FLV header and the stream's headers into it.
    fn open_segment(&mut self, rec: &mut Rec, first: &Packaged) -> std::io::Result<()> {
        let base = first.timestamp;
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
        let has_audio = rec.audio_header.is_some() || first.kind == MediaKind::Audio;
        let has_video = rec.video_header.is_some() || first.kind == MediaKind::Video;
        let head = flv::header(has_audio, has_video);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaMessage;
    use bytes::Bytes;

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
        assert_eq!(second[4], 0b101, "the FLV header says audio and video");
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
}
