//! Where segments begin and end: opening one at a frame, closing it (joining its parts, or
//! writing its fMP4 fragment), the window's trim, a timestamp jump taken as a break, and
//! the switch of a publisher to fMP4.

use super::*;

impl Segmenter {
    /// Bytes the open segment holds (TS) or will hold (fMP4's parts and pending samples).
    pub(super) fn open_len(&self) -> usize {
        match self.format {
            Format::Ts => self.open.as_ref().map_or(0, |o| o.buf.len()),
            Format::Fmp4 => {
                self.open.as_ref().map_or(0, |o| o.parts_bytes) + self.fmp4.pending_bytes()
            }
        }
    }

    /// This publisher's video needs fMP4: what was segmented in TS is finished, and the
    /// next segment follows a discontinuity.
    pub(super) fn switch_to_fmp4(&mut self) {
        self.finish_open(None);
        self.format = Format::Fmp4;
        self.video_started = false;
        self.pending_discontinuity |= !self.done.is_empty();
    }

    /// Treats a timestamp jump as a break; returns the segments it finished.
    pub(super) fn check_clock(&mut self, ts: u32) -> u32 {
        let Some(last) = self.last_ts else {
            self.last_ts = Some(ts);
            return 0;
        };
        let jumped = if later(last, ts) {
            ts.wrapping_sub(last) > MAX_JUMP_MS
        } else {
            last.wrapping_sub(ts) > MAX_BACKWARDS_MS
        };
        if !jumped {
            if later(last, ts) {
                self.last_ts = Some(ts);
            }
            return 0;
        }
        self.stats.jumps += 1;
        let finished = self.finish_open(None);
        self.pending_discontinuity = true;
        self.video_started = false;
        self.last_ts = Some(ts);
        self.last_video_ts = None;
        self.last_key_ts = None;
        self.last_audio_ts = None;
        u32::from(finished)
    }

    pub(super) fn open_at(&mut self, ts: u32) {
        let capacity = (self.size_hint + self.size_hint / 8)
            .clamp(4096, self.cfg.max_segment_bytes + ts::PACKET_LEN);
        let (buf, init) = match self.format {
            Format::Ts => {
                let mut buf = BytesMut::with_capacity(capacity);
                self.mux.write_tables(&mut buf);
                (buf, None)
            }
            Format::Fmp4 => {
                // Samples gather in the muxer; the segment is written when it is finished.
                self.fmp4.discard();
                (BytesMut::new(), self.fmp4.init_segment())
            }
        };
        self.open = Some(Open {
            buf,
            start: ts,
            end: ts,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            has_keyframe: false,
            frames: 0,
            init,
            parts: Vec::new(),
            parts_bytes: 0,
            part_start: ts,
            part_independent: false,
        });
        if self.cfg.part_ms > 0 {
            // The playlist hints the new segment's first part.
            self.render();
        }
    }

    /// Closes the open segment; `next` is the first timestamp of its successor, if known.
    /// A segment with no frames is dropped (its discontinuity passes to the next one).
    pub(super) fn finish_open(&mut self, next: Option<u32>) -> bool {
        let Some(mut open) = self.open.take() else {
            return false;
        };
        let data = match &open.init {
            None => open.buf.freeze(),
            Some(_) if self.cfg.part_ms > 0 => self.join_parts(&mut open, next),
            Some(_) => self
                .fmp4
                .fragment(self.next_sequence, next)
                .unwrap_or_default(),
        };
        if open.frames == 0 || data.is_empty() {
            self.fmp4.discard();
            self.pending_discontinuity |= open.discontinuity;
            if self.cfg.part_ms > 0 {
                // The playlist hinted a part of it.
                self.render();
            }
            return false;
        }
        let duration_ms = match next {
            Some(t) => elapsed(open.start, t),
            None => elapsed(open.start, open.end).saturating_add(self.frame_gap),
        };
        if open.init.is_none() {
            self.size_hint = data.len();
        }
        let sequence = self.next_sequence;
        let mut discontinuity = open.discontinuity;
        let mut init_seq = sequence;
        if let Some(prev) = self.done.back() {
            if prev.init == open.init {
                init_seq = prev.init_seq;
            } else {
                // Another init segment (or none after one): players reinitialise.
                discontinuity = true;
            }
        }
        self.done.push_back(Segment {
            sequence,
            duration_ms,
            discontinuity,
            start_ms: open.start,
            pdt_ms: self.epoch_ms.map(|e| e + u64::from(open.start)),
            data,
            init: open.init,
            init_seq,
            parts: open.parts,
        });
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.stats.segments += 1;
        self.trim();
        self.render();
        true
    }

    pub(super) fn trim(&mut self) {
        while self.done.len() > 2 * self.cfg.window {
            if let Some(old) = self.done.pop_front() {
                self.dropped_discontinuities += u64::from(old.discontinuity);
            }
        }
    }
}
