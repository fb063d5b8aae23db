//! What `hls-viewers` reports besides the media figures every viewer scenario has: the
//! counts its pollers keep (worker → parent, merged), the results the report gives
//! (ingest → received latency, blocking reload hold times) and their summary lines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use hdrhistogram::Histogram;

use crate::hist::{hist_from_b64, hist_to_b64, merge, new_histogram, Percentiles};
use crate::report::thousands;

/// Counts over all of a run (connect phase included), summed over viewers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct HlsCounts {
    /// Playlist answers with 200, blocking reloads included.
    pub playlists: u64,
    /// Playlist requests with `_HLS_msn`/`_HLS_part` answered with 200.
    pub blocking_reloads: u64,
    /// Whole segments fetched (plain mode).
    pub segments: u64,
    /// Parts fetched from the playlist's `#EXT-X-PART` list (low-latency mode).
    pub parts: u64,
    /// Parts fetched through `#EXT-X-PRELOAD-HINT` (held by the server until complete).
    pub hinted_parts: u64,
    /// Hinted parts answered 404: their segment was cut before they came to be.
    pub hint_404: u64,
    pub init_segments: u64,
    /// Playlist requests answered 503 (a blocking reload held past its limit).
    pub status_503: u64,
    /// Body bytes of segments, parts and init segments (the socket bytes are the media
    /// figures' `bytes_total`).
    pub media_bytes: u64,
    /// New media that no playlist dated (no `#EXT-X-PROGRAM-DATE-TIME`): not timed.
    pub undated: u64,
    /// Media received before the time its playlist says its last frame was ingested: the
    /// date-time runs ahead of the ingest (the stream's epoch was fixed by a first frame
    /// that came late), or the server's clock is ahead of ours. Their latencies are
    /// negative: they count in the percentiles but not in the latency histogram.
    pub early: u64,
    /// The next media wanted had left the playlist (the viewer fell behind) and it jumped.
    pub resyncs: u64,
    /// New connections after the first (the server closed the previous one, or it failed).
    pub reconnects: u64,
    /// Failed requests by kind: `http_404`, `protocol`, `timeout`, an errno name, …
    pub errors: BTreeMap<String, u64>,
    /// The first error text of each kind.
    pub error_samples: BTreeMap<String, String>,
}

impl HlsCounts {
    pub fn error(&mut self, kind: String, detail: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.error_samples.entry(kind).or_insert(detail);
    }

    fn merge(&mut self, r: &HlsCounts) {
        self.playlists += r.playlists;
        self.blocking_reloads += r.blocking_reloads;
        self.segments += r.segments;
        self.parts += r.parts;
        self.hinted_parts += r.hinted_parts;
        self.hint_404 += r.hint_404;
        self.init_segments += r.init_segments;
        self.status_503 += r.status_503;
        self.media_bytes += r.media_bytes;
        self.undated += r.undated;
        self.early += r.early;
        self.resyncs += r.resyncs;
        self.reconnects += r.reconnects;
        for (k, v) in &r.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.error_samples {
            self.error_samples.entry(k.clone()).or_insert(v.clone());
        }
    }
}

/// One worker's (or executor's) HLS figures.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct HlsReport {
    #[serde(flatten)]
    pub counts: HlsCounts,
    /// Blocking reload hold times in the window (µs), HdrHistogram V2 base64.
    pub hold_hist: String,
    /// How early the early media came (µs), HdrHistogram V2 base64.
    #[serde(default)]
    pub early_hist: String,
}

impl HlsReport {
    pub fn merge(&mut self, r: &HlsReport) {
        self.counts.merge(&r.counts);
        for (mine, theirs) in [
            (&mut self.hold_hist, &r.hold_hist),
            (&mut self.early_hist, &r.early_hist),
        ] {
            let mut h = hist_from_b64(mine).unwrap_or_else(|_| new_histogram());
            if let Ok(t) = hist_from_b64(theirs) {
                merge(&mut h, &t);
            }
            *mine = hist_to_b64(&h);
        }
    }
}

/// The HLS part of an hls-viewers report.
#[derive(Debug, Clone, Serialize)]
pub struct HlsResults {
    /// "plain" (whole segments) or "low-latency" (parts, blocking reloads).
    pub mode: &'static str,
    pub hints: bool,
    /// Ingest → received, per part (low-latency) or segment (plain) fetched in the window:
    /// from when its last frame was ingested (its segment's #EXT-X-PROGRAM-DATE-TIME plus
    /// the durations up to its end) to when its last byte arrived here. Not glass to glass:
    /// no encoder, player buffer or decoder is in it. Signed: negative when it came before
    /// the time its playlist gives (see `early`).
    pub ingest_to_received_us: SignedPercentiles,
    /// From sending a blocking reload to its answer's last byte, in the window.
    pub blocking_reload_hold_us: Percentiles,
    #[serde(flatten)]
    pub counts: HlsCounts,
}

impl HlsResults {
    /// `latency`: the latencies of 0 and more (the workers' merged latency histogram).
    pub fn new(r: &HlsReport, ll: bool, hints: bool, latency: &Histogram<u64>) -> Self {
        let hist = |b64: &str| hist_from_b64(b64).unwrap_or_else(|_| new_histogram());
        let hold = hist(&r.hold_hist);
        HlsResults {
            mode: if ll { "low-latency" } else { "plain" },
            hints,
            ingest_to_received_us: SignedPercentiles::of(latency, &hist(&r.early_hist)),
            blocking_reload_hold_us: Percentiles::of(&hold),
            counts: r.counts.clone(),
        }
    }

    /// The summary lines.
    pub fn summary(&self, s: &mut String) {
        let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
        let sms = |us: i64| format!("{:.1}", us as f64 / 1000.0);
        let l = &self.ingest_to_received_us;
        let unit = if self.mode == "plain" {
            "segment"
        } else {
            "part"
        };
        s.push_str(&format!(
            "ingest→recv  ms per {unit}: min {} p50 {} p90 {} p99 {} max {} (n={}; last frame \
             ingested → last byte received, not glass-to-glass)\n",
            sms(l.min),
            sms(l.p50),
            sms(l.p90),
            sms(l.p99),
            sms(l.max),
            thousands(l.count)
        ));
        if l.below_zero > 0 {
            s.push_str(&format!(
                "             {} of them before the time the playlist gives: its date-time runs \
                 ahead of the ingest (the epoch fixed by a first frame that came late) or the \
                 server's clock is ahead of ours\n",
                thousands(l.below_zero)
            ));
        }
        let c = &self.counts;
        if self.mode != "plain" {
            let h = &self.blocking_reload_hold_us;
            s.push_str(&format!(
                "reloads      {} blocking reloads, held ms p50 {} p99 {} max {} (mean {:.1}); \
                 {} answered 503\n",
                thousands(c.blocking_reloads),
                ms(h.p50),
                ms(h.p99),
                ms(h.max),
                h.mean / 1000.0,
                thousands(c.status_503)
            ));
        }
        s.push_str(&format!(
            "fetched      {} playlists, {} segments, {} parts + {} hinted ({} hints 404), {} \
             init segments, {} media bytes\n",
            thousands(c.playlists),
            thousands(c.segments),
            thousands(c.parts),
            thousands(c.hinted_parts),
            thousands(c.hint_404),
            thousands(c.init_segments),
            thousands(c.media_bytes)
        ));
        let errors: u64 = c.errors.values().sum();
        s.push_str(&format!(
            "hls errors   {} ({}); {} reconnects, {} resyncs, {} undated, {} early\n",
            thousands(errors),
            if c.errors.is_empty() {
                "none".to_string()
            } else {
                c.errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", thousands(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            thousands(c.reconnects),
            thousands(c.resyncs),
            thousands(c.undated),
            thousands(c.early)
        ));
        for (k, v) in &c.error_samples {
            s.push_str(&format!("             {k}: {v}\n"));
        }
    }
}

/// Percentiles (µs) of a signed quantity kept in two histograms: the values of 0 and more,
/// and the magnitudes of the values below 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignedPercentiles {
    pub count: u64,
    /// How many were below 0.
    pub below_zero: u64,
    pub min: i64,
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub p999: i64,
    pub max: i64,
}

impl SignedPercentiles {
    pub fn of(at_least_zero: &Histogram<u64>, below_zero: &Histogram<u64>) -> Self {
        let (neg, pos) = (below_zero.len(), at_least_zero.len());
        let total = neg + pos;
        if total == 0 {
            return SignedPercentiles::default();
        }
        // The value of rank `r` (1-based, ascending) over both: the negative ones first,
        // largest magnitude first.
        let at = |q: f64| -> i64 {
            let r = ((q * total as f64).ceil() as u64).clamp(1, total);
            if r <= neg {
                let from_top = (neg - r + 1) as f64 / neg as f64;
                -(below_zero.value_at_quantile(from_top) as i64)
            } else {
                at_least_zero.value_at_quantile((r - neg) as f64 / pos as f64) as i64
            }
        };
        SignedPercentiles {
            count: total,
            below_zero: neg,
            min: if neg > 0 {
                -(below_zero.max() as i64)
            } else {
                at_least_zero.min() as i64
            },
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: if pos > 0 {
                at_least_zero.max() as i64
            } else {
                -(below_zero.min() as i64)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_percentiles_put_the_early_ones_first() {
        let (mut late, mut early) = (new_histogram(), new_histogram());
        for v in [10u64, 20, 30, 40, 50, 60] {
            late.record(v).unwrap();
        }
        for v in [100u64, 5, 7, 9] {
            early.record(v).unwrap();
        }
        let p = SignedPercentiles::of(&late, &early);
        assert_eq!((p.count, p.below_zero, p.min, p.max), (10, 4, -100, 60));
        // Ascending: -100 -9 -7 -5 10 20 30 40 50 60.
        assert_eq!(p.p50, 10);
        assert_eq!(p.p90, 50);
        assert_eq!(p.p99, 60);
        let only_early = SignedPercentiles::of(&new_histogram(), &early);
        assert_eq!((only_early.p50, only_early.max), (-9, -5), "the 2nd of 4");
        assert_eq!(
            SignedPercentiles::of(&new_histogram(), &new_histogram()).count,
            0
        );
    }
}
