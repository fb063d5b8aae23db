//! The segmenter ops the `ts_mux` and `fmp4_mux` targets drive (included by both, not a
//! target itself): the input as records `op step(2) len(2) payload`, each a message in, a
//! cut, an end, a resume, a hand-over to another shard, or segment look-ups.

use liveshard::media::hls::{HlsConfig, Segmenter};
use liveshard::media::MediaKind;

/// Runs the records in `rest` on `seg`, calling `check` after each.
pub fn drive(
    seg: &mut Segmenter,
    cfg: HlsConfig,
    first: u64,
    mut rest: &[u8],
    mut check: impl FnMut(&Segmenter),
) {
    let mut ts: u32 = 0;
    while rest.len() >= 5 {
        let op = rest[0];
        let step = u32::from(u16::from_be_bytes([rest[1], rest[2]]));
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        ts = if op & 0x80 != 0 {
            ts.wrapping_sub(step)
        } else {
            ts.wrapping_add(step)
        };
        match op & 0x07 {
            0 => {
                seg.push(MediaKind::Video, ts, payload);
            }
            1 => {
                seg.push(MediaKind::Audio, ts, payload);
            }
            2 => {
                seg.push(MediaKind::Data, ts, payload);
            }
            3 => {
                seg.finish();
            }
            4 => {
                seg.end();
            }
            5 => seg.resume(),
            6 => {
                // The stream moves to another shard: a new segmenter adopts the history.
                let history = seg.take_history();
                let mut next = Segmenter::new("fuzz", cfg, u64::from(step));
                next.adopt(history);
                *seg = next;
            }
            _ => {
                let _ = seg.segment(u64::from(step));
                let _ = seg.segment(first.wrapping_add(u64::from(op)));
                let _ = seg.segment_of(first.wrapping_add(u64::from(op)));
                let _ = seg.init_segment(u64::from(step));
            }
        }
        check(seg);
    }
}
