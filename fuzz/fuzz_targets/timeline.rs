//! The stream clock (`media::timeline`) against any run of publisher timestamps, publisher
//! changes and wall-clock times. Must never panic, and the clock it gives viewers must hold:
//! - a frame's stream time is never more than `MAX_BACKWARDS_MS` behind the latest stream
//!   time (interleaving), nor more than `MAX_JUMP_MS` plus one frame interval ahead of it
//!   (a larger step is a break, placed one interval after the latest);
//! - the latest stream time never goes back;
//! - the epoch, once fixed, never changes (across publishers too).
//!
//! Input: an optional resume point (16 bytes after a first byte with its low bit set), then
//! records of 9 bytes: an operation (frame, other message, new publisher), the publisher's
//! timestamp, and how far the wall clock moved.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveshard::media::timeline::{Resume, Timeline, MAX_BACKWARDS_MS, MAX_JUMP_MS};

/// The longest frame interval the clock takes (its `MAX_GAP_MS`).
const MAX_GAP_MS: i64 = 1_000;

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut clock = if first & 1 == 1 && rest.len() >= 16 {
        let (r, tail) = rest.split_at(16);
        rest = tail;
        Timeline::resumed(Resume {
            epoch_ms: u64::from_le_bytes(r[0..8].try_into().unwrap()) >> 20,
            last_ms: u32::from_le_bytes(r[8..12].try_into().unwrap()),
            gap_ms: u32::from_le_bytes(r[12..16].try_into().unwrap()) % 1_001,
        })
    } else {
        Timeline::new()
    };
    let mut now: u64 = 1_700_000_000_000;
    let mut epoch = clock.epoch_ms();
    for rec in rest.chunks_exact(9) {
        let raw = u32::from_le_bytes(rec[1..5].try_into().unwrap());
        now += u64::from(u32::from_le_bytes(rec[5..9].try_into().unwrap()) % 100_000);
        let latest = clock.last_ms();
        match rec[0] % 3 {
            0 => {
                let out = clock.stamp_frame(raw, now);
                if let Some(l) = latest {
                    let step = i64::from(out.wrapping_sub(l) as i32);
                    assert!(
                        step >= -i64::from(MAX_BACKWARDS_MS)
                            && step <= i64::from(MAX_JUMP_MS) + MAX_GAP_MS,
                        "stream time {out} after latest {l}"
                    );
                }
            }
            1 => {
                let _ = clock.stamp_other(raw);
            }
            _ => clock.restart(),
        }
        if let (Some(before), Some(after)) = (latest, clock.last_ms()) {
            assert!(after.wrapping_sub(before) as i32 >= 0, "latest went back");
        }
        match (epoch, clock.epoch_ms()) {
            (Some(e), now_epoch) => assert_eq!(now_epoch, Some(e), "epoch changed"),
            (None, e) => epoch = e,
        }
    }
});
