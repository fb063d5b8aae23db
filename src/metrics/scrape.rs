//! Families gathered at scrape from the shards that own the numbers (per-stream figures
//! from the streams' owners, online counts from the rooms' home shards).

use super::render::{escape_label, Writer};
use super::TOP_ROOMS;

/// Per-stream numbers for `/metrics`, as the stream's owner shard reports them.
pub struct StreamStats {
    pub stream: String,
    pub bitrate_bps: f64,
    pub subscribers: usize,
}

/// Appends per-stream samples gathered from the shards that own the streams.
pub fn render_streams(out: &mut String, streams: &[StreamStats]) {
    let mut w = Writer { out };
    w.family(
        "liveshard_stream_ingest_bitrate_bps",
        "gauge",
        "Average ingest bitrate of a live stream since it started (bits/s).",
    );
    for s in streams {
        w.sample_f(
            "liveshard_stream_ingest_bitrate_bps",
            &format!("stream=\"{}\"", s.stream),
            s.bitrate_bps,
        );
    }
    w.family(
        "liveshard_stream_subscribed_shards",
        "gauge",
        "Shards that receive a live stream (have viewers of it).",
    );
    for s in streams {
        w.sample(
            "liveshard_stream_subscribed_shards",
            &format!("stream=\"{}\"", s.stream),
            s.subscribers as u64,
        );
    }
}

/// Appends `liveshard_room_online`: the [`TOP_ROOMS`] rooms with the most viewers, from
/// `rooms` (room, online) as the home shards report them. A bounded label set whatever
/// the number of rooms.
pub fn render_rooms(out: &mut String, rooms: &mut [(String, u64)]) {
    let mut w = Writer { out };
    w.family(
        "liveshard_room_online",
        "gauge",
        "Viewers online in the busiest rooms (at most 20 rooms, by viewers).",
    );
    let top = rooms.len().min(TOP_ROOMS);
    if top > 0 {
        rooms.select_nth_unstable_by(top - 1, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rooms[..top].sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    for (room, online) in &rooms[..top] {
        w.sample(
            "liveshard_room_online",
            &format!("room=\"{}\"", escape_label(room)),
            *online,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_busiest_rooms_are_listed_busiest_first_with_labels_escaped() {
        let mut rooms: Vec<(String, u64)> = (0..100).map(|i| (format!("r{i}"), i)).collect();
        rooms.push(("we\"ird".into(), 1000));
        let mut out = String::new();
        render_rooms(&mut out, &mut rooms);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), TOP_ROOMS);
        assert_eq!(samples[0], "liveshard_room_online{room=\"we\\\"ird\"} 1000");
        assert_eq!(samples[1], "liveshard_room_online{room=\"r99\"} 99");
        assert_eq!(samples[19], "liveshard_room_online{room=\"r81\"} 81");
        let mut out = String::new();
        render_rooms(&mut out, &mut []);
        assert_eq!(out.lines().count(), 2, "the family is there with no rooms");
    }
}
