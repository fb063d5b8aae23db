//! Text hygiene and per-connection limits: invisible-character stripping, length limits,
//! the keyword filter (Aho-Corasick) and the token-bucket rate limit.
//!
//! All of it runs on the sender's shard, before a message travels to its room's home
//! shard, so a flood or a filtered word costs the room nothing.
//!
//! Invisible characters are stripped by [`crate::text::clean_text`] (re-exported here).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

pub use crate::text::clean_text;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Refuse the message with an error.
    Reject,
    /// Replace each character of a matched word with `*`.
    Mask,
}

/// The keyword filter, built once at start and shared read-only by all shards.
pub struct Filter {
    automaton: Option<AhoCorasick>,
    mode: FilterMode,
}

pub enum Verdict {
    Clean(String),
    Masked(String),
    Rejected,
}

impl Filter {
    pub fn new(words: &[String], mode: FilterMode) -> Result<Self, String> {
        let words: Vec<&str> = words
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
            .collect();
        let automaton = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&words)
                    .map_err(|e| format!("keyword filter: {e}"))?,
            )
        };
        Ok(Self { automaton, mode })
    }

    pub fn check(&self, text: String) -> Verdict {
        let Some(ac) = &self.automaton else {
            return Verdict::Clean(text);
        };
        if !ac.is_match(&text) {
            return Verdict::Clean(text);
        }
        match self.mode {
            FilterMode::Reject => Verdict::Rejected,
            FilterMode::Mask => {
                let mut out = String::with_capacity(text.len());
                let mut last = 0;
                for m in ac.find_iter(&text) {
                    out.push_str(&text[last..m.start()]);
                    out.extend(text[m.start()..m.end()].chars().map(|_| '*'));
                    last = m.end();
                }
                out.push_str(&text[last..]);
                Verdict::Masked(out)
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, up to `burst`. Time is passed in (ms), so it
/// is plain data a connection keeps in a `Cell`.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f32,
    last_ms: u64,
}

impl TokenBucket {
    pub fn full(burst: f32, now_ms: u64) -> Self {
        Self {
            tokens: burst,
            last_ms: now_ms,
        }
    }

    /// Whether the bucket would be full at `now_ms` (then it is the same as a new one).
    pub fn refilled(&self, rate: f32, burst: f32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        self.tokens + elapsed * rate >= burst
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f32, burst: f32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_rejects_or_masks() {
        let words = vec!["bad".to_string(), "坏话".to_string()];
        let reject = Filter::new(&words, FilterMode::Reject).unwrap();
        assert!(matches!(reject.check("so BAD".into()), Verdict::Rejected));
        assert!(matches!(reject.check("fine".into()), Verdict::Clean(t) if t == "fine"));
        let mask = Filter::new(&words, FilterMode::Mask).unwrap();
        match mask.check("a bad 坏话!".into()) {
            Verdict::Masked(t) => assert_eq!(t, "a *** **!"),
            _ => panic!("expected masking"),
        }
        assert!(matches!(
            Filter::new(&[], FilterMode::Reject)
                .unwrap()
                .check("bad".into()),
            Verdict::Clean(_)
        ));
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::full(5.0, 0);
        assert_eq!((0..10).filter(|_| b.take(2.0, 5.0, 0)).count(), 5);
        assert!(!b.take(2.0, 5.0, 100));
        assert!(b.take(2.0, 5.0, 600));
        assert!(!b.take(2.0, 5.0, 700));
    }
}
