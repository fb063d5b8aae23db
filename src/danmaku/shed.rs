//! Shedding plain danmaku past saturation: the degradation that keeps a room's latency
//! bounded when it is offered more than can be written to its viewers.
//!
//! The corked flush ([`super::cork`]) is the first step: under load each write carries more
//! items, so the cost per delivery falls. Past that, one of two things fills up, and both
//! are seen at the room's flush on its home shard:
//!
//! - **The viewers' side** (their links, or the machine's NIC): the kernel stops taking a
//!   viewer's bytes and they wait in its queue ([`crate::outq::Batch::behind`]). One slow
//!   viewer is the slow-consumer policy's business; a quarter of the room's viewers (and at
//!   least [`MIN_BEHIND`]) behind at once means the room sends more than its audience can
//!   take.
//! - **The shard's core**: the shard's thread wanted the CPU (ran, or waited to run) for
//!   [`SATURATED`] of the last [`DEMAND_EVERY`] or more ([`Demand`]), or a flush took longer
//!   than the pacing's longest wait ([`super::cork::MAX_WAIT`]). Work then arrives faster
//!   than it is done and waits unread in the posts' sockets, where no flush sees it.
//!
//! Overloaded for [`SHED_AFTER`] in a row, the room admits only a share of its new plain
//! danmaku to live batches; the rest is sampled out as the room cap does it (acked,
//! stored, in history, not in live batches; counted in `liveshard_ws_shed_total`). The
//! share falls by a quarter every [`STEP`] while the overload lasts, and grows back by
//! [`RECOVER_PER_SEC`] once the room's viewers keep up again (fewer than one in sixteen,
//! or than [`MIN_BEHIND`], behind) and the shard has room. Gifts, VIP and system items are
//! never shed, and a burst shorter than [`SHED_AFTER`] sheds nothing.
//!
//! The home shard judges from its own viewers of the room: connections are spread over
//! shards, so they are a sample of the room's audience. A room with no viewers on its home
//! shard is not shed.

use std::time::{Duration, Instant};

/// An overload shorter than this sheds nothing.
pub const SHED_AFTER: Duration = Duration::from_millis(250);
/// How often the admitted share falls while the overload lasts.
pub const STEP: Duration = Duration::from_millis(100);
/// The share kept at each step down.
const DECREASE: f64 = 0.75;
/// How fast the share grows back once the room keeps up (per second).
pub const RECOVER_PER_SEC: f64 = 0.25;
/// The least share admitted: a room in overload still shows some of its danmaku.
pub const MIN_SHARE: f64 = 0.02;
/// Fewer viewers behind than this never count as the room's overload.
pub const MIN_BEHIND: usize = 16;
/// The shard's demand for its core at which it is saturated.
pub const SATURATED: f64 = 0.95;
/// Under this demand the shard has room again.
const ROOMY: f64 = 0.85;
/// How often the shard's demand is measured.
pub const DEMAND_EVERY: Duration = Duration::from_millis(100);

/// How hard the shard works, as its flushes see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shard {
    /// Its core is saturated, or a flush outlasted the pacing.
    Saturated,
    Busy,
    /// It has room, and its flushes are short.
    Roomy,
}

impl Shard {
    /// From the shard's demand for its core and its last flush's duration (`max_wait` is
    /// the pacing's longest wait).
    pub fn judge(demand: f64, took: Duration, max_wait: Duration) -> Shard {
        if demand >= SATURATED || took > max_wait {
            Shard::Saturated
        } else if demand < ROOMY && took <= max_wait / 2 {
            Shard::Roomy
        } else {
            Shard::Busy
        }
    }
}

/// The share of the time the shard's thread wanted its core: running, or runnable and
/// waiting for it (`/proc/thread-self/schedstat`). Waiting counts: a shard that shares
/// its core with another thread is as saturated when it never parks as one that has the
/// core alone. Unavailable (no procfs), it reads 0 and only the flushes' duration counts.
#[derive(Default)]
pub struct Demand {
    file: Option<std::fs::File>,
    opened: bool,
    /// When it was last measured, and the thread's running plus waiting time then (ns).
    last: Option<(Instant, u64)>,
    share: f64,
}

impl Demand {
    /// The demand over the last [`DEMAND_EVERY`] or more, measured again when that has
    /// passed. Call it on the shard's thread.
    pub fn sample(&mut self, now: Instant) -> f64 {
        if self.last.is_some_and(|(t, _)| now < t + DEMAND_EVERY) {
            return self.share;
        }
        if !self.opened {
            self.opened = true;
            self.file = std::fs::File::open("/proc/thread-self/schedstat").ok();
        }
        let Some(wanted) = self.file.as_ref().and_then(read_schedstat) else {
            return 0.0;
        };
        if let Some((t, before)) = self.last {
            let wall = now.saturating_duration_since(t).as_nanos() as f64;
            self.share = (wanted.saturating_sub(before) as f64 / wall).min(1.0);
        }
        self.last = Some((now, wanted));
        self.share
    }
}

/// Running plus waiting nanoseconds from a schedstat file (`run wait slices`).
fn read_schedstat(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_schedstat(&buf[..n])
}

fn parse_schedstat(text: &[u8]) -> Option<u64> {
    let mut fields = std::str::from_utf8(text).ok()?.split_ascii_whitespace();
    let run: u64 = fields.next()?.parse().ok()?;
    let wait: u64 = fields.next()?.parse().ok()?;
    Some(run.saturating_add(wait))
}

/// What one flush of a room saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// More is offered than gets written.
    Over,
    /// Between: the share holds.
    Holding,
    /// The viewers keep up and the shard's flushes are short.
    Clear,
}

impl Load {
    /// Judges a room's flush: `behind` of its `viewers` were behind, on a `shard` so loaded.
    pub fn judge(behind: usize, viewers: usize, shard: Shard) -> Load {
        if shard == Shard::Saturated || (behind >= MIN_BEHIND && behind * 4 >= viewers) {
            Load::Over
        } else if (behind < MIN_BEHIND || behind * 16 < viewers) && shard == Shard::Roomy {
            Load::Clear
        } else {
            Load::Holding
        }
    }
}

/// A room's shedding state (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shed {
    /// The share of plain danmaku admitted to live batches.
    share: f64,
    /// Error diffusion of the share over the room's items.
    acc: f64,
    /// Since when the room has been overloaded, if it is.
    over_since: Option<Instant>,
    /// When the share last moved.
    stepped: Option<Instant>,
}

impl Default for Shed {
    fn default() -> Self {
        Shed {
            share: 1.0,
            acc: 0.0,
            over_since: None,
            stepped: None,
        }
    }
}

impl Shed {
    /// The share of new plain danmaku admitted to live batches (1.0 unless shedding).
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Moves the share after a flush that saw `load` at `now`.
    pub fn observe(&mut self, load: Load, now: Instant) {
        match load {
            Load::Over => {
                let since = *self.over_since.get_or_insert(now);
                let due = self.stepped.is_none_or(|t| now >= t + STEP);
                if due && now >= since + SHED_AFTER {
                    self.share = (self.share * DECREASE).max(MIN_SHARE);
                    self.stepped = Some(now);
                }
            }
            Load::Holding => {
                self.over_since = None;
                if self.share < 1.0 {
                    // Holding does not earn the time it lasted as recovery later.
                    self.stepped = Some(now);
                }
            }
            Load::Clear => {
                self.over_since = None;
                if self.share < 1.0 {
                    let since = self.stepped.unwrap_or(now);
                    let grown =
                        RECOVER_PER_SEC * now.saturating_duration_since(since).as_secs_f64();
                    self.share = (self.share + grown).min(1.0);
                    self.stepped = Some(now);
                }
            }
        }
    }

    /// Whether the next plain item goes to live batches: about `share` of them, spread
    /// evenly (with a share of 0.25, every fourth).
    pub fn admit(&mut self) -> bool {
        if self.share >= 1.0 {
            self.acc = 0.0;
            return true;
        }
        self.acc += self.share;
        if self.acc >= 1.0 {
            self.acc -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[test]
    fn a_room_is_over_when_a_quarter_of_its_viewers_are_behind_or_the_shard_is_saturated() {
        let roomy = Shard::Roomy;
        assert_eq!(Load::judge(250, 1000, roomy), Load::Over);
        assert_eq!(Load::judge(249, 1000, roomy), Load::Holding);
        assert_eq!(Load::judge(62, 1000, roomy), Load::Clear);
        assert_eq!(Load::judge(62, 1000, Shard::Busy), Load::Holding);
        // A few slow viewers in a small room are the slow-consumer policy's business.
        assert_eq!(Load::judge(1, 2, roomy), Load::Clear);
        assert_eq!(Load::judge(15, 20, roomy), Load::Clear);
        assert_eq!(Load::judge(16, 300, roomy), Load::Clear);
        assert_eq!(Load::judge(19, 300, roomy), Load::Holding);
        assert_eq!(Load::judge(16, 20, roomy), Load::Over);
        assert_eq!(Load::judge(0, 1000, Shard::Saturated), Load::Over);
    }

    #[test]
    fn the_shard_is_saturated_by_its_demand_or_by_flushes_past_the_pacing() {
        let fast = Duration::from_millis(2);
        assert_eq!(Shard::judge(0.97, fast, WAIT), Shard::Saturated);
        assert_eq!(Shard::judge(0.2, WAIT * 2, WAIT), Shard::Saturated);
        assert_eq!(Shard::judge(0.9, fast, WAIT), Shard::Busy);
        assert_eq!(Shard::judge(0.2, WAIT * 3 / 4, WAIT), Shard::Busy);
        assert_eq!(Shard::judge(0.5, fast, WAIT), Shard::Roomy);
    }

    #[test]
    fn schedstat_gives_running_plus_waiting_time() {
        assert_eq!(parse_schedstat(b"1500 2500 7\n"), Some(4000));
        assert_eq!(parse_schedstat(b"1500"), None);
        assert_eq!(parse_schedstat(b"x 1 2"), None);
        // This thread's own file, where there is one, reads and grows.
        let mut d = Demand::default();
        let t = Instant::now();
        d.sample(t);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(5) {
            std::hint::black_box(0u64);
        }
        let share = d.sample(t + DEMAND_EVERY);
        assert!((0.0..=1.0).contains(&share), "{share}");
        if d.file.is_some() {
            assert!(share > 0.0, "the spin was counted");
        }
    }

    #[test]
    fn an_overload_sheds_only_when_it_lasts_and_the_share_grows_back_once_clear() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Shed::default();
        // A burst shorter than SHED_AFTER sheds nothing.
        for n in (0..240).step_by(20) {
            s.observe(Load::Over, ms(n));
        }
        assert_eq!(s.share(), 1.0);
        s.observe(Load::Holding, ms(245));
        assert_eq!(s.over_since, None, "the overload ended");
        // A lasting one: a quarter less every step.
        for n in (300..=850).step_by(10) {
            s.observe(Load::Over, ms(n));
        }
        assert!((s.share() - DECREASE.powi(4)).abs() < 1e-9, "{}", s.share());
        for n in (860..30_000).step_by(10) {
            s.observe(Load::Over, ms(n));
        }
        assert_eq!(s.share(), MIN_SHARE);
        // Holding keeps the share; clear flushes grow it by the time they cover.
        s.observe(Load::Holding, ms(31_000));
        assert_eq!(s.share(), MIN_SHARE);
        s.observe(Load::Clear, ms(32_000));
        assert!(
            (s.share() - (MIN_SHARE + RECOVER_PER_SEC)).abs() < 1e-9,
            "{}",
            s.share()
        );
        // A room that went quiet is whole again at its next clear flush.
        s.observe(Load::Clear, ms(60_000));
        assert_eq!(s.share(), 1.0);
    }

    #[test]
    fn a_share_admits_that_many_items_evenly() {
        let mut s = Shed {
            share: 0.25,
            ..Shed::default()
        };
        let admitted: Vec<bool> = (0..12).map(|_| s.admit()).collect();
        assert!(
            admitted
                .chunks(4)
                .all(|c| c.iter().filter(|&&a| a).count() == 1),
            "{admitted:?}"
        );
        s.share = 1.0;
        assert!((0..10).all(|_| s.admit()));
    }
}
