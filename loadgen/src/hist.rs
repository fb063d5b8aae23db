//! Latency histograms: the one shape every histogram of a run has, its wire form between
//! worker and parent (HdrHistogram V2, base64), merging, and the percentiles a report
//! shows. Below both the report types and the timeline, which each use it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn hist_to_b64(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Serializing into a Vec cannot fail for a histogram we built.
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serialize histogram");
    STANDARD.encode(buf)
}

pub fn hist_from_b64(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| format!("histogram base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("histogram: {e:?}"))
}

/// Adds `from` into `into`, widening nothing: both come from [`new_histogram`].
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Same bounds on both sides, so `add` cannot fail.
    let _ = into.add(from);
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        Percentiles {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_wire() {
        let mut h = new_histogram();
        for v in [5u64, 50, 500, 5000, 50_000] {
            h.record(v).unwrap();
        }
        let back = hist_from_b64(&hist_to_b64(&h)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        let mut sum = new_histogram();
        merge(&mut sum, &back);
        merge(&mut sum, &h);
        assert_eq!(sum.len(), 10);
    }
}
