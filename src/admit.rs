//! Admission at accept: which new connections a shard serves.
//!
//! Three checks, in order, each with its own [`Refusal`] reason (counted in `/metrics` as
//! `liveshard_connections_refused_total{reason=…}`):
//! 1. `accept_rate` — the shard-wide storm guard (`server.accept_rate_per_sec`, off by
//!    default), so a connection storm cannot starve the connections already open;
//! 2. `per_ip_cap` — open connections one client address holds (`server.max_conns_per_ip`);
//! 3. `per_ip_rate` — new connections per second from one client address, a token bucket
//!    (`server.accept_rate_per_ip`, `server.accept_burst_per_ip`).
//!
//! Addresses in `server.per_ip_exempt` (loopback by default: a local reverse proxy, the
//! load generator) skip the per-address checks. An IPv6 client is counted by its /64, the
//! block one subscriber is given, so rotating through addresses inside it gains nothing;
//! an IPv4-mapped IPv6 address is its IPv4 address.
//!
//! The per-address numbers are split over the shards ([`share`]): the kernel spreads one
//! address's connections over the SO_REUSEPORT listeners by a hash of the 4-tuple, so each
//! shard judges its share alone and no shard asks another. A share is n / shards plus a
//! margin for the hash's uneven spread, so an address is refused near n in total rather than
//! when its fullest shard reaches n / shards.
//!
//! Memory: one small entry per address with an open connection (bounded by the open
//! connections themselves), plus at most [`MAX_IDLE`] entries that only remember a recent
//! accept rate; past that, refilled buckets are swept, and if none are, an address's rate
//! state is forgotten when its last connection closes (it starts again with a full bucket).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::config::ServerConfig;

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    AcceptRate = 0,
    PerIpCap = 1,
    PerIpRate = 2,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::AcceptRate, Refusal::PerIpCap, Refusal::PerIpRate];

    /// The `reason` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AcceptRate => "accept_rate",
            Refusal::PerIpCap => "per_ip_cap",
            Refusal::PerIpRate => "per_ip_rate",
        }
    }

    /// What a refused HTTP client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AcceptRate => "the server is accepting too many new connections, retry later",
            Refusal::PerIpCap => "too many open connections from your address, retry later",
            Refusal::PerIpRate => "too many new connections from your address, retry later",
        }
    }

    /// The `Retry-After` of the answer, seconds: a rate refills within a second; a
    /// connection cap waits for connections to close.
    pub fn retry_after_secs(self) -> u32 {
        match self {
            Refusal::AcceptRate | Refusal::PerIpRate => 1,
            Refusal::PerIpCap => 5,
        }
    }
}

/// An address block, `a.b.c.d/n` or `x::y/n` (a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix must be 0 to {max}")),
            },
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(u32::from(n) as u128, u32::from(a) as u128, self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                prefix_eq(u128::from(n), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a >> shift) == (b >> shift)
}

/// An IPv4-mapped IPv6 address as IPv4; anything else as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The key a client address is counted under: IPv4 as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// One shard's share of a per-address number `n` (0 stays 0, "off"): n / shards plus three
/// standard deviations of how many of n connections the kernel's 4-tuple hash puts on one
/// shard (binomial, p = 1 / shards), at most n. With one shard it is n exactly; with 16 and
/// n = 1,000 it is 86 (62.5 + 23), so an address reaches the cap at about 1,000 connections,
/// and can never hold more than 16 × 86.
pub fn share(n: u32, shards: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let p = 1.0 / f64::from(shards.max(1));
    let mean = f64::from(n) * p;
    let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
    ((mean + 3.0 * sd).ceil() as u32).clamp(1, n)
}

/// Entries kept per shard for addresses with no open connection (rate state only).
pub const MAX_IDLE: usize = 16 * 1024;
/// Idle entries are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    last: Instant,
}

/// One shard's admission state.
pub struct Admission {
    /// Open connections per address on this shard (0 = no cap).
    cap: u32,
    /// Accepts per second per address on this shard (0 = no limit), and the bucket size.
    rate: f64,
    burst: f64,
    /// Shard-wide accepts per second (0 = no limit): tokens and last refill.
    global_rate: f64,
    global: Cell<(f64, Instant)>,
    exempt: Vec<Cidr>,
    table: RefCell<HashMap<IpAddr, Entry>>,
    idle: Cell<usize>,
    last_sweep: Cell<Instant>,
}

/// What [`Admission::admit`] hands back for an admitted connection: the key to release
/// when it closes, when it is counted.
pub type Ticket = Option<IpAddr>;

impl Admission {
    /// The checks for one of `shards` shards. The exempt list was checked by
    /// `Config::validate`; an entry that does not parse is skipped here.
    pub fn new(cfg: &ServerConfig, shards: usize) -> Self {
        let shards = shards.max(1) as u32;
        let now = Instant::now();
        let rate = f64::from(cfg.accept_rate_per_ip) / f64::from(shards);
        let burst = if cfg.accept_rate_per_ip == 0 {
            0.0
        } else {
            f64::from(share(cfg.accept_burst_per_ip, shards))
        };
        Self {
            cap: share(cfg.max_conns_per_ip, shards),
            rate,
            burst,
            global_rate: f64::from(cfg.accept_rate_per_sec),
            global: Cell::new((f64::from(cfg.accept_rate_per_sec), now)),
            exempt: cfg
                .per_ip_exempt
                .iter()
                .filter_map(|s| Cidr::parse(s).ok())
                .collect(),
            table: RefCell::new(HashMap::new()),
            idle: Cell::new(0),
            last_sweep: Cell::new(now),
        }
    }

    fn per_ip(&self) -> bool {
        self.cap > 0 || self.rate > 0.0
    }

    /// Whether a new connection from `ip` may be served. An admitted connection's ticket
    /// goes back to [`Admission::release`] when it closes.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        if self.global_rate > 0.0 {
            let (tokens, last) = self.global.get();
            let tokens = (tokens
                + now.saturating_duration_since(last).as_secs_f64() * self.global_rate)
                .min(self.global_rate);
            if tokens < 1.0 {
                self.global.set((tokens, now));
                return Err(Refusal::AcceptRate);
            }
            self.global.set((tokens - 1.0, now));
        }
        if !self.per_ip() || self.exempt.iter().any(|c| c.contains(ip)) {
            return Ok(None);
        }
        let key = client_key(ip);
        let mut table = self.table.borrow_mut();
        let entry = table.entry(key).or_insert_with(|| {
            self.idle.set(self.idle.get() + 1);
            Entry {
                open: 0,
                tokens: self.burst,
                last: now,
            }
        });
        if self.cap > 0 && entry.open >= self.cap {
            return Err(Refusal::PerIpCap);
        }
        if self.rate > 0.0 {
            let elapsed = now.saturating_duration_since(entry.last).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * self.rate).min(self.burst);
            entry.last = now;
            if entry.tokens < 1.0 {
                let forget = entry.open == 0 && self.idle.get() > MAX_IDLE;
                if forget {
                    table.remove(&key);
                    self.idle.set(self.idle.get() - 1);
                }
                return Err(Refusal::PerIpRate);
            }
            entry.tokens -= 1.0;
        }
        if entry.open == 0 {
            self.idle.set(self.idle.get() - 1);
        }
        entry.open += 1;
        Ok(Some(key))
    }

    /// A connection admitted with `ticket` has closed.
    pub fn release(&self, ticket: Ticket) {
        let Some(key) = ticket else { return };
        let mut table = self.table.borrow_mut();
        let Some(entry) = table.get_mut(&key) else {
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        if entry.open > 0 {
            return;
        }
        if self.rate == 0.0 {
            // No rate state to remember.
            table.remove(&key);
            return;
        }
        self.idle.set(self.idle.get() + 1);
        if self.idle.get() > MAX_IDLE {
            let now = Instant::now();
            if now.saturating_duration_since(self.last_sweep.get()) >= SWEEP_EVERY {
                self.last_sweep.set(now);
                self.sweep(&mut table, now);
            }
            if self.idle.get() > MAX_IDLE && table.remove(&key).is_some() {
                self.idle.set(self.idle.get() - 1);
            }
        }
    }

    /// Drops idle entries whose bucket has refilled: they are the same as no entry.
    fn sweep(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let before = table.len();
        table.retain(|_, e| {
            e.open > 0
                || e.tokens + now.saturating_duration_since(e.last).as_secs_f64() * self.rate
                    < self.burst
        });
        self.idle.set(self.idle.get() - (before - table.len()));
    }

    /// Addresses tracked on this shard (for tests).
    pub fn tracked(&self) -> usize {
        self.table.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cap: u32, rate: u32, burst: u32, exempt: &[&str]) -> ServerConfig {
        ServerConfig {
            max_conns_per_ip: cap,
            accept_rate_per_ip: rate,
            accept_burst_per_ip: burst,
            accept_rate_per_sec: 0,
            per_ip_exempt: exempt.iter().map(|s| s.to_string()).collect(),
            ..ServerConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains(ip("127.0.0.9")));
        assert!(c.contains(ip("::ffff:127.1.2.3")));
        assert!(!c.contains(ip("128.0.0.1")));
        assert!(!c.contains(ip("::1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains(ip("2001:db8:1::5")));
        for bad in ["", "10.0.0.0/33", "::/129", "x/8", "10.0.0.0/"] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_cap_counts_open_connections_and_frees_on_release() {
        let a = Admission::new(&cfg(2, 0, 0, &[]), 1);
        let now = Instant::now();
        let t1 = a.admit(ip("10.0.0.1"), now).unwrap();
        let t2 = a.admit(ip("10.0.0.1"), now).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1"), now), Err(Refusal::PerIpCap));
        assert!(a.admit(ip("10.0.0.2"), now).is_ok(), "another address");
        a.release(t1);
        assert!(a.admit(ip("10.0.0.1"), now).is_ok());
        a.release(t2);
    }

    #[test]
    fn shares_leave_room_for_an_uneven_spread() {
        assert_eq!(share(0, 4), 0);
        assert_eq!(share(3, 1), 3);
        assert_eq!(share(1000, 1), 1000);
        assert_eq!(share(1000, 2), 548);
        assert_eq!(share(1000, 16), 86);
        assert_eq!(share(40, 2), 30);
        assert_eq!(share(1, 64), 1);
    }

    #[test]
    fn the_rate_is_a_bucket_per_address() {
        let a = Admission::new(&cfg(0, 10, 3, &[]), 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            a.release(a.admit(ip("10.0.0.1"), t0).unwrap());
        }
        assert_eq!(a.admit(ip("10.0.0.1"), t0), Err(Refusal::PerIpRate));
        assert!(a.admit(ip("10.0.0.2"), t0).is_ok());
        let later = t0 + Duration::from_millis(150);
        assert!(a.admit(ip("10.0.0.1"), later).is_ok(), "refilled");
    }

    #[test]
    fn exempt_addresses_and_the_storm_guard() {
        let a = Admission::new(&cfg(1, 1, 1, &["127.0.0.0/8", "::1"]), 1);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(a.admit(ip("127.0.0.5"), now), Ok(None));
        }
        assert_eq!(a.tracked(), 0);
        let mut c = cfg(0, 0, 0, &[]);
        c.accept_rate_per_sec = 2;
        let a = Admission::new(&c, 1);
        assert!(a.admit(ip("127.0.0.1"), now).is_ok());
        assert!(a.admit(ip("127.0.0.1"), now).is_ok());
        assert_eq!(a.admit(ip("127.0.0.1"), now), Err(Refusal::AcceptRate));
    }

    #[test]
    fn idle_entries_stay_bounded_under_many_addresses() {
        let a = Admission::new(&cfg(1000, 200, 1000, &[]), 1);
        let now = Instant::now();
        for i in 0..(MAX_IDLE as u32 + 5000) {
            let addr = IpAddr::V4((0x0a00_0000 + i).into());
            a.release(a.admit(addr, now).unwrap());
        }
        assert!(a.tracked() <= MAX_IDLE + 1, "{}", a.tracked());
    }
}
