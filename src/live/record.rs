//! The owner shard's side of a recording (DVR): which of the streams published here are
//! recorded, and each of their messages handed to the recorder thread
//! ([`crate::store::recordings`]) as the `Packaged` the ingest already made (refcounts).
//!
//! The shard never waits: a full recorder queue makes that recording drop frames until the
//! next keyframe (metadata and sequence headers are still offered), counted in
//! `liveshard_record_frames_dropped_total`. A recording the recorder stopped (a write
//! error) is forgotten at its next message. A recording lasts while its publisher does:
//! `media.record = "all"` starts one at every publish, the API starts one for a live
//! stream, and the publisher leaving (or the API) ends it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use super::engine::Live;
use super::StreamId;
use crate::media::Packaged;
use crate::store::recordings::Started;

/// The recordings of streams published on this shard.
#[derive(Default)]
pub(crate) struct Recordings {
    on: RefCell<HashMap<StreamId, Rec>>,
}

struct Rec {
    started: Started,
    /// Frames are dropped until the next keyframe (the queue was full).
    resync: bool,
}

/// Why a recording did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The stream is not published on this shard (not live, or it moved).
    NotLive,
    /// No recorder, or its queue is full.
    Unavailable,
}

impl Live {
    /// The shard that owns `stream` now, as announced to every shard.
    pub fn owner_of(&self, stream: &str) -> Option<usize> {
        self.owners.borrow().get(stream).copied()
    }

    /// Whether `stream` (published here) is being recorded.
    pub fn is_recording(&self, stream: &str) -> bool {
        self.recordings.on.borrow().contains_key(stream)
    }

    /// Starts recording `stream`, published on this shard, from its GOP cache on. `Ok(false)`
    /// if it already was.
    pub fn record_start(self: &Rc<Self>, stream: &str) -> Result<bool, RecordError> {
        let recorder = self
            .settings()
            .recorder
            .as_ref()
            .ok_or(RecordError::Unavailable)?;
        if self.is_recording(stream) {
            return Ok(false);
        }
        let owned = self.owned.borrow();
        let (stream, o) = owned.get_key_value(stream).ok_or(RecordError::NotLive)?;
        let started = recorder
            .open(stream.clone())
            .ok_or(RecordError::Unavailable)?;
        // What a joining viewer gets: metadata, sequence headers, then the GOP from its
        // keyframe; the recorder starts its file at that keyframe.
        let mut resync = false;
        for p in o.gop.iter() {
            if !recorder.send_tag(started.key, p.clone()) {
                resync = true;
                break;
            }
        }
        tracing::info!(%stream, "recording started");
        self.recordings
            .on
            .borrow_mut()
            .insert(stream.clone(), Rec { started, resync });
        Ok(true)
    }

    /// Stops recording `stream`; false if it was not recorded here.
    pub fn record_stop(&self, stream: &str) -> bool {
        let Some(rec) = self.recordings.on.borrow_mut().remove(stream) else {
            return false;
        };
        if let Some(r) = &self.settings().recorder {
            r.close(&rec.started);
        }
        tracing::info!(%stream, "recording stopped");
        true
    }

    /// A publish started on this shard: recorded from the start under `media.record = "all"`.
    pub(super) fn record_on_publish(self: &Rc<Self>, stream: &StreamId) {
        // A stream pulled from another node is recorded there, where it is published.
        if self.settings().record_all && !self.pulls.borrow().contains_key(stream) {
            if let Err(e) = self.record_start(stream) {
                tracing::warn!(%stream, error = ?e, "recording not started");
            }
        }
    }

    /// One message of `stream` (ingest): to the recorder if the stream is recorded.
    pub(super) fn record_frame(&self, stream: &StreamId, p: &Packaged) {
        let mut on = self.recordings.on.borrow_mut();
        if on.is_empty() {
            return;
        }
        let Some(rec) = on.get_mut(stream) else {
            return;
        };
        let Some(recorder) = &self.settings().recorder else {
            return;
        };
        if rec.started.flags.failed.load(Relaxed) {
            // The recorder stopped it (logged and counted there); the stream goes on.
            on.remove(stream);
            return;
        }
        if rec.resync && !(p.class.is_keyframe() || p.class.is_essential()) {
            recorder.stats().dropped.fetch_add(1, Relaxed);
            return;
        }
        if p.class.is_keyframe() {
            rec.resync = false;
        }
        if !recorder.send_tag(rec.started.key, p.clone()) {
            rec.resync = true;
            recorder.stats().dropped.fetch_add(1, Relaxed);
        }
    }
}
