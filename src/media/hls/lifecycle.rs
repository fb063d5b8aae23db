//! A segmenter's life across publishers and owners: closing, ending, resuming, and the
//! history handed from one owner to the next.

use super::*;

impl Segmenter {
    /// Closes the open segment (the publisher is gone; players get its last seconds).
    /// Returns whether a segment was finished. New input starts on a keyframe again.
    pub fn finish(&mut self) -> bool {
        let finished = self.finish_open(None);
        self.video_started = false;
        finished
    }

    /// The stream ended: the open segment is finished, the playlist gets
    /// `#EXT-X-ENDLIST`, and input is ignored until [`Segmenter::resume`].
    pub fn end(&mut self) -> bool {
        let finished = self.finish();
        self.ended = true;
        self.render();
        finished
    }

    /// A publisher (re)starts the stream: codec configuration is forgotten (it sends its
    /// own), and the next segment follows a discontinuity if any came before it.
    pub fn resume(&mut self) {
        self.finish();
        self.mux.reset();
        self.fmp4.reset();
        self.format = if self.cfg.fmp4 {
            Format::Fmp4
        } else {
            Format::Ts
        };
        self.refused = None;
        self.pending_discontinuity |= !self.done.is_empty();
        self.last_ts = None;
        self.last_video_ts = None;
        self.last_audio_ts = None;
        if self.ended {
            self.ended = false;
            self.render();
        }
    }

    /// Takes the finished segments (the open one finished first) for the stream's next
    /// owner; this segmenter is left empty.
    pub fn take_history(&mut self) -> History {
        self.finish();
        let history = History {
            segments: std::mem::take(&mut self.done),
            next_sequence: self.next_sequence,
            dropped_discontinuities: self.dropped_discontinuities,
        };
        self.render();
        history
    }

    /// Adopts a previous owner's segments: they come first, this segmenter's own follow,
    /// renumbered after them with a discontinuity between.
    pub fn adopt(&mut self, history: History) {
        if history.segments.is_empty() {
            return;
        }
        let own = std::mem::take(&mut self.done);
        let mut next = history.next_sequence;
        let mut segments = history.segments;
        let had_own = !own.is_empty();
        let mut prev: Option<(Option<Bytes>, u64)> = None;
        for (i, mut s) in own.into_iter().enumerate() {
            s.sequence = next;
            s.discontinuity |= i == 0;
            // Init segments are named after the first (renumbered) segment using them.
            s.init_seq = match &prev {
                Some((init, seq)) if *init == s.init => *seq,
                _ => next,
            };
            prev = Some((s.init.clone(), s.init_seq));
            next = next.wrapping_add(1);
            segments.push_back(s);
        }
        if !had_own {
            match self.open.as_mut() {
                Some(open) => open.discontinuity = true,
                None => self.pending_discontinuity = true,
            }
        }
        self.next_sequence = next;
        self.dropped_discontinuities += history.dropped_discontinuities;
        self.done = segments;
        self.trim();
        self.render();
    }
}
