//! The stream clock, sans-IO: the one timeline every output of a stream is stamped with.
//!
//! A publisher's timestamps are its own: ffmpeg or OBS start at 0, a publisher that
//! reconnects starts at 0 again, and an encoder may jump. Viewers and danmaku need one
//! clock that neither goes back nor leaps, so the ingest stamps every message with
//! **stream time**: the publisher's timestamp plus an offset. The offset starts at 0 (a
//! stream's first publisher keeps its own timestamps) and changes only at a break: a new
//! publisher of the same stream whose clock would go back (or leap more than
//! [`MAX_JUMP_MS`]) from where the stream stopped, or a jump within one publisher (back
//! more than [`MAX_BACKWARDS_MS`], forward more than [`MAX_JUMP_MS`]). At a break the next
//! frame is placed one frame interval after the latest stream time, so the clock carries
//! on where it stopped.
//!
//! Everything downstream reads stream time: the FLV tags and RTMP chunks players get, the
//! TS timestamps and `#EXT-X-PROGRAM-DATE-TIME` of HLS segments, and the danmaku
//! `media_ts` (C4). The **epoch** ties it to the wall clock: the Unix time (ms) at which
//! stream time was 0, fixed at the stream's first frame (`wall clock − its stream time`)
//! and kept across reconnects, so a segment starting at stream time `t` has the program
//! date-time `epoch + t`, and a player's `playingDate − epoch` is the stream time on
//! screen.
//!
//! Stream time is RTMP's 32-bit millisecond clock (it wraps after ~49 days, as the
//! publisher's own would).

/// A forward step larger than this between two frames is a break, not a long frame.
pub const MAX_JUMP_MS: u32 = 10_000;
/// A step back larger than this is a break; less is interleaving (audio a little behind
/// video).
pub const MAX_BACKWARDS_MS: u32 = 1_000;
/// The frame interval assumed at a break before any was seen.
const DEFAULT_GAP_MS: u32 = 40;
/// The longest interval between two frames taken as the frame interval.
const MAX_GAP_MS: u32 = 1_000;

/// Where a stream's clock stopped, handed to its next publisher (through the claim on
/// the stream's home shard), so the clock carries on across a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// Unix ms at stream time 0.
    pub epoch_ms: u64,
    /// The latest stream time stamped.
    pub last_ms: u32,
    /// The latest frame interval.
    pub gap_ms: u32,
}

/// One stream's clock on its owner (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    offset: u32,
    /// The publisher's latest frame timestamp (`None` until its first frame).
    last_raw: Option<u32>,
    /// The latest stream time stamped.
    last_out: Option<u32>,
    gap: u32,
    epoch_ms: Option<u64>,
}

/// `b` is after `a` on the wrapping clock.
fn later(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

impl Timeline {
    /// A new stream's clock.
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// The clock of a stream resumed by a new publisher.
    pub fn resumed(from: Resume) -> Timeline {
        Timeline {
            offset: 0,
            last_raw: None,
            last_out: Some(from.last_ms),
            gap: from.gap_ms,
            epoch_ms: Some(from.epoch_ms),
        }
    }

    /// A new publisher takes over on this owner: its first frame decides the offset.
    pub fn restart(&mut self) {
        self.last_raw = None;
    }

    /// Unix ms at stream time 0, once the stream had a frame.
    pub fn epoch_ms(&self) -> Option<u64> {
        self.epoch_ms
    }

    /// The latest stream time stamped.
    pub fn last_ms(&self) -> Option<u32> {
        self.last_out
    }

    /// What the next publisher needs to carry the clock on.
    pub fn resume_point(&self) -> Option<Resume> {
        Some(Resume {
            epoch_ms: self.epoch_ms?,
            last_ms: self.last_out?,
            gap_ms: self.gap,
        })
    }

    /// Stream time for an audio or video frame at the publisher's `raw` timestamp, seen
    /// at Unix time `now_ms` (which fixes the epoch at the stream's first frame).
    pub fn stamp_frame(&mut self, raw: u32, now_ms: u64) -> u32 {
        let brk = match (self.last_raw, self.last_out) {
            (None, None) => false,
            // A new publisher: keep its timestamps if they carry on from where the
            // stream stopped.
            (None, Some(out)) => !later(out, raw) || raw.wrapping_sub(out) > MAX_JUMP_MS,
            (Some(prev), _) => {
                if later(prev, raw) {
                    raw.wrapping_sub(prev) > MAX_JUMP_MS
                } else {
                    prev.wrapping_sub(raw) > MAX_BACKWARDS_MS
                }
            }
        };
        if brk {
            let next = self
                .last_out
                .unwrap_or(0)
                .wrapping_add(self.gap_or_default());
            self.offset = next.wrapping_sub(raw);
            self.last_raw = Some(raw);
        } else {
            match self.last_raw {
                Some(prev) if later(prev, raw) => {
                    let gap = raw.wrapping_sub(prev);
                    if gap <= MAX_GAP_MS {
                        self.gap = gap;
                    }
                    self.last_raw = Some(raw);
                }
                Some(_) => {}
                None => {
                    // A stream's first frame, or a new publisher carrying on by itself.
                    self.offset = 0;
                    self.last_raw = Some(raw);
                }
            }
        }
        let out = raw.wrapping_add(self.offset);
        if self.last_out.is_none_or(|l| later(l, out)) {
            self.last_out = Some(out);
        }
        if self.epoch_ms.is_none() {
            self.epoch_ms = Some(now_ms.saturating_sub(u64::from(out)));
        }
        out
    }

    /// Stream time for a message that is not a frame (metadata, a sequence header): the
    /// current offset, never before the latest frame of a previous publisher.
    pub fn stamp_other(&self, raw: u32) -> u32 {
        match (self.last_raw, self.last_out) {
            (Some(_), _) => raw.wrapping_add(self.offset),
            (None, Some(out)) => out,
            (None, None) => raw,
        }
    }

    fn gap_or_default(&self) -> u32 {
        if self.gap == 0 {
            DEFAULT_GAP_MS
        } else {
            self.gap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_publisher_keeps_its_timestamps_and_fixes_the_epoch() {
        let mut t = Timeline::new();
        assert_eq!(t.stamp_other(0), 0);
        assert_eq!(t.stamp_frame(0, 1_000_000), 0);
        assert_eq!(t.stamp_frame(40, 1_000_040), 40);
        assert_eq!(t.stamp_frame(23, 1_000_041), 23, "audio a little behind");
        assert_eq!(t.epoch_ms(), Some(1_000_000));
        assert_eq!(t.last_ms(), Some(40));
        let mut late = Timeline::new();
        assert_eq!(late.stamp_frame(5_000, 1_000_000), 5_000);
        assert_eq!(late.epoch_ms(), Some(995_000));
    }

    #[test]
    fn a_publisher_that_starts_again_at_zero_carries_the_clock_on() {
        let mut t = Timeline::new();
        for f in 0..=100 {
            t.stamp_frame(f * 40, 1_000_000 + u64::from(f) * 40);
        }
        let resume = t.resume_point().unwrap();
        assert_eq!(
            resume,
            Resume {
                epoch_ms: 1_000_000,
                last_ms: 4000,
                gap_ms: 40
            }
        );
        // On another shard, from the claim.
        let mut n = Timeline::resumed(resume);
        assert_eq!(n.stamp_other(0), 4000, "headers do not go back");
        assert_eq!(n.stamp_frame(0, 2_000_000), 4040);
        assert_eq!(n.stamp_frame(40, 2_000_040), 4080);
        assert_eq!(n.epoch_ms(), Some(1_000_000), "the epoch is kept");
        // On the same shard.
        t.restart();
        assert_eq!(t.stamp_frame(0, 2_000_000), 4040);
        assert_eq!(t.stamp_frame(40, 2_000_040), 4080);
        // A publisher whose clock carries on by itself keeps it.
        let mut k = Timeline::resumed(resume);
        assert_eq!(k.stamp_frame(7000, 2_000_000), 7000);
    }

    #[test]
    fn jumps_within_a_publisher_are_smoothed() {
        let mut t = Timeline::new();
        t.stamp_frame(1000, 0);
        t.stamp_frame(1040, 0);
        assert_eq!(t.stamp_frame(60_000, 0), 1080, "forward leap");
        assert_eq!(t.stamp_frame(60_040, 0), 1120);
        assert_eq!(t.stamp_frame(100, 0), 1160, "back to the start");
        assert_eq!(t.stamp_frame(140, 0), 1200);
        assert_eq!(t.stamp_other(140), 1200);
    }

    #[test]
    fn the_wrapping_clock_is_not_a_jump() {
        let mut t = Timeline::new();
        assert_eq!(t.stamp_frame(u32::MAX - 20, 10_000_000_000), u32::MAX - 20);
        assert_eq!(t.stamp_frame(19, 10_000_000_040), 19);
        assert_eq!(t.last_ms(), Some(19));
    }
}
