//! From flags to a validated plan, in two steps (raw clap args → [`Plan`]), and the rules for
//! who owns which connection: viewer `v` joins room `v % R`, publisher `p` posts to room
//! `p % R`; connection `i` of a kind belongs to worker `i % K`, and within it to executor
//! `(i / K) % T`. With several `--url`s (ws-fanout), viewer `v` connects to URL
//! `(v / R) % N` (round robin within its room, so every room has viewers on every URL) and
//! publishers to the first. Media viewers all watch the one stream of `--url`. Every bound
//! loadgen keeps (time, counts, targets) is checked here.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rtmpproto::{self, PlayTarget};
pub use crate::urls::{parse_src_range, parse_ws_url, resolve, split_url};
use crate::{marker, token, CommonArgs, FanoutArgs, HlsArgs, IdleArgs, MediaArgs, WsArgs};

pub const MAX_CONNS: usize = 1_000_000;
pub const MAX_PROCS: usize = 256;
pub const MAX_THREADS: usize = 64;
pub const MAX_ROOMS: usize = 100_000;
pub const MAX_DURATION_S: f64 = 3600.0;
pub const MAX_RATE: f64 = 10_000_000.0;
pub const MAX_PAYLOAD: usize = 60_000;
pub const MAX_SRC_ADDRS: u32 = 1 << 16;
pub const MAX_URLS: usize = 64;
/// Lifetime of tokens loadgen signs: longer than any run it allows.
const TOKEN_TTL_S: u64 = 4 * 3600;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    WsFanout,
    WsIdle,
    FlvViewers,
    RtmpViewers,
    HlsViewers,
}

impl Scenario {
    pub fn is_media(self) -> bool {
        matches!(
            self,
            Scenario::FlvViewers | Scenario::RtmpViewers | Scenario::HlsViewers
        )
    }
}

/// hls-viewers: how the pollers play.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct HlsPlan {
    /// Low-Latency HLS: parts and blocking reloads instead of whole segments.
    pub ll: bool,
    /// Low-latency: also fetch the preload-hinted part.
    pub hints: bool,
}

/// What one worker process is told on its stdin: the whole load plus its own index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub scenario: Scenario,
    pub worker: usize,
    pub workers: usize,
    pub threads: usize,
    pub pin: bool,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path: without query for WebSocket (`/ws`), with it for HTTP-FLV.
    pub path: String,
    pub room_prefix: String,
    pub rooms: usize,
    pub viewers: usize,
    pub publishers: usize,
    /// Messages per second over all publishers.
    pub rate: f64,
    pub duration_ms: u64,
    pub drain_ms: u64,
    pub hold_ms: u64,
    pub payload: usize,
    /// Connections per second over all workers; 0 = unpaced.
    pub ramp: f64,
    pub connect_timeout_ms: u64,
    pub heartbeat_ms: u64,
    /// First source address and how many follow it (0 = let the kernel choose).
    pub src_first: Option<Ipv4Addr>,
    pub src_count: u32,
    /// Publisher tokens, used round robin by global publisher index.
    pub tokens: Vec<String>,
    pub run_id: u32,
    /// Media: a gap between tags longer than this is a stall.
    #[serde(default)]
    pub stall_ms: u64,
    /// rtmp-viewers: app, play name and tcUrl.
    #[serde(default)]
    pub rtmp: Option<PlayTarget>,
    /// Media: the least kbit/s over the window for a viewer to count as held.
    #[serde(default)]
    pub min_kbps: u64,
    /// hls-viewers: plain or low-latency play.
    #[serde(default)]
    pub hls: Option<HlsPlan>,
    /// ws-fanout with several URLs: all of them, the first being `addr`, `host`, `path`
    /// (where publishers connect). Empty with one URL.
    #[serde(default)]
    pub targets: Vec<Target>,
}

/// One WebSocket URL of a run with several.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl WorkerPlan {
    /// Source address for global connection index `i` (viewers first, then publishers).
    pub fn src_for(&self, i: usize) -> Option<Ipv4Addr> {
        let first = self.src_first?;
        let off = (i as u64 % u64::from(self.src_count.max(1))) as u32;
        Some(Ipv4Addr::from(u32::from(first) + off))
    }

    /// Whether global index `i` of a kind belongs to executor `t` of this worker.
    pub fn owns(&self, i: usize, t: usize) -> bool {
        i % self.workers == self.worker && (i / self.workers) % self.threads == t
    }

    pub fn room_of(&self, i: usize) -> usize {
        i % self.rooms
    }

    /// URLs viewers are spread over (1 when the run has one).
    pub fn target_count(&self) -> usize {
        self.targets.len().max(1)
    }

    /// The URL viewer `v` connects to: round robin within its room.
    pub fn target_of_viewer(&self, v: usize) -> usize {
        (v / self.rooms.max(1)) % self.target_count()
    }

    /// Address, `Host` header and path of URL `i` (0: the first, the publishers').
    pub fn target(&self, i: usize) -> (SocketAddr, &str, &str) {
        match self.targets.get(i) {
            Some(t) => (t.addr, &t.host, &t.path),
            None => (self.addr, &self.host, &self.path),
        }
    }

    pub fn room_name(&self, room: usize) -> String {
        format!("{}{room}", self.room_prefix)
    }

    /// Connections this worker opens, all executors together.
    #[cfg(test)]
    pub fn conns_here(&self) -> usize {
        let share = |n: usize| n / self.workers + usize::from(self.worker < n % self.workers);
        share(self.viewers) + share(self.publishers)
    }
}

/// The validated run: what the parent needs besides the workers' plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub worker: WorkerPlan,
    pub url: String,
    pub procs: usize,
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub server_pid: Option<u32>,
    pub metrics_url: Option<String>,
    pub settle_ms: u64,
    pub quiet: bool,
    /// The flags as given, for the report.
    pub config: serde_json::Value,
}

pub fn fanout(a: FanoutArgs) -> Result<Plan, String> {
    let c = &a.common;
    check_range("--rooms", a.rooms, 1, MAX_ROOMS)?;
    check_range("--viewers", a.viewers, 0, MAX_CONNS)?;
    check_range("--publishers", a.publishers, 1, MAX_CONNS)?;
    if a.viewers + a.publishers > MAX_CONNS {
        return Err(format!("at most {MAX_CONNS} connections in one run"));
    }
    if !(a.rate > 0.0 && a.rate <= MAX_RATE) {
        return Err(format!("--rate must be in (0, {MAX_RATE}]"));
    }
    if !(a.duration > 0.0 && a.duration <= MAX_DURATION_S) {
        return Err(format!(
            "--duration must be in (0, {MAX_DURATION_S}] seconds"
        ));
    }
    if !(0.0..=60.0).contains(&a.drain) {
        return Err("--drain must be in [0, 60] seconds".into());
    }
    if a.payload > MAX_PAYLOAD {
        return Err(format!("--payload must be at most {MAX_PAYLOAD} bytes"));
    }
    let tokens = match (&a.token_secret, &a.tokens) {
        (Some(secret), _) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            (0..a.publishers)
                .map(|p| {
                    token::sign(
                        secret.as_bytes(),
                        &a.token_issuer,
                        &format!("lg-p{p}"),
                        now,
                        TOKEN_TTL_S,
                    )
                })
                .collect()
        }
        (None, Some(path)) => {
            let mut t = token::read_file(path)?;
            t.truncate(a.publishers);
            t
        }
        (None, None) => {
            return Err(
                "publishers must be logged in: give --token-secret S (the server's \
                 auth.jwt_secret, or the contents of DATA_DIR/jwt.secret) or --tokens FILE"
                    .into(),
            )
        }
    };
    let urls = &a.ws.url;
    check_range("--url (how many)", urls.len(), 1, MAX_URLS)?;
    let mut worker = ws_common(c, &a.ws, &urls[0], Scenario::WsFanout)?;
    if urls.len() > 1 {
        worker.targets = urls
            .iter()
            .map(|u| {
                let (addr, host, path) = parse_ws_url(u)?;
                check_target(c, u, addr)?;
                Ok(Target { addr, host, path })
            })
            .collect::<Result<_, String>>()?;
    }
    worker.rooms = a.rooms;
    worker.viewers = a.viewers;
    worker.publishers = a.publishers;
    worker.rate = a.rate;
    worker.duration_ms = (a.duration * 1000.0).round() as u64;
    worker.drain_ms = (a.drain * 1000.0).round() as u64;
    worker.payload = a.payload;
    worker.tokens = tokens;
    check_procs(c, a.viewers + a.publishers)?;
    let metrics_url = match a.metrics_url.as_deref() {
        Some("none") => None,
        Some(u) => Some(u.to_string()),
        None => Some(format!("http://{}/metrics", worker.host)),
    };
    let url = urls.join(",");
    let mut config = serde_json::json!({
        "scenario": "ws-fanout",
        "url": url,
        "rooms": a.rooms,
        "viewers": a.viewers,
        "publishers": a.publishers,
        "rate": a.rate,
        "duration_s": a.duration,
        "payload": a.payload,
        "drain_s": a.drain,
        "ramp": c.ramp,
        "src": c.src,
        "procs": c.procs,
        "threads": c.threads,
        "pin": c.pin,
        "heartbeat_s": a.ws.heartbeat,
        "tokens": if a.token_secret.is_some() { "signed" } else { "file" },
        "metrics_url": metrics_url,
        "server_pid": c.server_pid,
        "marker_len_max": marker::MAX_MARKER_LEN,
    });
    if urls.len() > 1 {
        config["urls"] = serde_json::json!(urls);
    }
    Ok(Plan {
        worker,
        url,
        procs: c.procs,
        json: c.json.clone(),
        html: c.html.clone(),
        server_pid: c.server_pid,
        metrics_url,
        settle_ms: 0,
        quiet: c.quiet,
        config,
    })
}

pub fn idle(a: IdleArgs) -> Result<Plan, String> {
    let c = &a.common;
    check_range("--conns", a.conns, 1, MAX_CONNS)?;
    check_range("--rooms", a.rooms, 1, MAX_ROOMS)?;
    if !(0.0..=MAX_DURATION_S).contains(&a.hold) {
        return Err(format!("--hold must be in [0, {MAX_DURATION_S}] seconds"));
    }
    if !(0.0..=600.0).contains(&a.settle) {
        return Err("--settle must be in [0, 600] seconds".into());
    }
    check_procs(c, a.conns)?;
    let [url] = a.ws.url.as_slice() else {
        return Err("ws-idle takes one --url (it measures one server's memory)".into());
    };
    let mut worker = ws_common(c, &a.ws, url, Scenario::WsIdle)?;
    worker.rooms = a.rooms;
    worker.viewers = a.conns;
    worker.hold_ms = (a.hold * 1000.0).round() as u64;
    let config = serde_json::json!({
        "scenario": "ws-idle",
        "url": url,
        "conns": a.conns,
        "rooms": a.rooms,
        "hold_s": a.hold,
        "settle_s": a.settle,
        "ramp": c.ramp,
        "src": c.src,
        "procs": c.procs,
        "threads": c.threads,
        "pin": c.pin,
        "heartbeat_s": a.ws.heartbeat,
        "server_pid": c.server_pid,
    });
    Ok(Plan {
        worker,
        url: url.clone(),
        procs: c.procs,
        json: c.json.clone(),
        html: c.html.clone(),
        server_pid: c.server_pid,
        metrics_url: None,
        settle_ms: (a.settle * 1000.0).round() as u64,
        quiet: c.quiet,
        config,
    })
}

pub fn media(a: MediaArgs, scenario: Scenario) -> Result<Plan, String> {
    let c = &a.common;
    check_range("--viewers", a.viewers, 1, MAX_CONNS)?;
    if !(a.duration > 0.0 && a.duration <= MAX_DURATION_S) {
        return Err(format!(
            "--duration must be in (0, {MAX_DURATION_S}] seconds"
        ));
    }
    if a.stall_ms == 0 || a.stall_ms > 600_000 {
        return Err("--stall-ms must be in [1, 600000]".into());
    }
    check_procs(c, a.viewers)?;
    let (addr, host, path, rtmp) = match scenario {
        Scenario::RtmpViewers => {
            let (hostport, target) = rtmpproto::parse_url(&a.url)?;
            (resolve(&hostport)?, hostport, String::new(), Some(target))
        }
        _ => {
            let (addr, host, path) = split_url(&a.url, "http://", 80)?;
            let file = path.split('?').next().unwrap_or("");
            if scenario == Scenario::HlsViewers && !file.ends_with(".m3u8") {
                return Err(format!(
                    "hls-viewers --url must name a media playlist, \
                     http://HOST:PORT/APP/STREAM.m3u8[?QUERY]; got {:?}",
                    a.url
                ));
            }
            (addr, host, path, None)
        }
    };
    let mut worker = common(c, &a.url, scenario, addr, host, path)?;
    worker.viewers = a.viewers;
    worker.duration_ms = (a.duration * 1000.0).round() as u64;
    worker.stall_ms = a.stall_ms;
    worker.min_kbps = a.min_kbps;
    worker.rtmp = rtmp;
    let metrics_url = match (a.metrics_url.as_deref(), scenario) {
        (Some("none"), _) | (None, Scenario::RtmpViewers) => None,
        (Some(u), _) => Some(u.to_string()),
        (None, _) => Some(format!("http://{}/metrics", worker.host)),
    };
    let name = match scenario {
        Scenario::RtmpViewers => "rtmp-viewers",
        Scenario::HlsViewers => "hls-viewers",
        _ => "flv-viewers",
    };
    let config = serde_json::json!({
        "scenario": name,
        "url": a.url,
        "viewers": a.viewers,
        "duration_s": a.duration,
        "stall_ms": a.stall_ms,
        "min_kbps": a.min_kbps,
        "ramp": c.ramp,
        "src": c.src,
        "procs": c.procs,
        "threads": c.threads,
        "pin": c.pin,
        "connect_timeout_s": c.connect_timeout,
        "metrics_url": metrics_url,
        "server_pid": c.server_pid,
    });
    Ok(Plan {
        worker,
        url: a.url.clone(),
        procs: c.procs,
        json: c.json.clone(),
        html: c.html.clone(),
        server_pid: c.server_pid,
        metrics_url,
        settle_ms: 0,
        quiet: c.quiet,
        config,
    })
}

pub fn hls(a: HlsArgs) -> Result<Plan, String> {
    if a.no_hints && !a.ll {
        return Err("--no-hints only means something with --ll".into());
    }
    let hls = HlsPlan {
        ll: a.ll,
        hints: a.ll && !a.no_hints,
    };
    let mut plan = media(a.media, Scenario::HlsViewers)?;
    plan.worker.hls = Some(hls);
    plan.config["ll"] = hls.ll.into();
    plan.config["hints"] = hls.hints.into();
    Ok(plan)
}

/// Descriptors a worker keeps for itself (io_uring rings, pipes, publishers' second half).
const FD_SPARE: u64 = 100;

/// Worker processes needed so each stays under the descriptor limit `hard`.
pub fn procs_needed(conns: u64, hard: u64) -> u64 {
    conns.div_ceil(hard.saturating_sub(FD_SPARE).max(1))
}

fn check_range(flag: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("{flag} must be in [{lo}, {hi}], got {v}"));
    }
    Ok(())
}

fn check_procs(c: &CommonArgs, conns: usize) -> Result<(), String> {
    check_range("--procs", c.procs, 1, MAX_PROCS)?;
    check_range("--threads", c.threads, 1, MAX_THREADS)?;
    let per_proc = conns.div_ceil(c.procs);
    let (soft, hard) = crate::probe::nofile_limit();
    if per_proc as u64 + FD_SPARE > hard {
        let want = procs_needed(conns as u64, hard);
        return Err(format!(
            "{per_proc} connections per process exceed this machine's descriptor limit \
             (RLIMIT_NOFILE soft {soft}, hard {hard}); use --procs {want} or more"
        ));
    }
    Ok(())
}

/// A WebSocket scenario's plan: the common part plus rooms' prefix and the heartbeat.
fn ws_common(
    c: &CommonArgs,
    ws: &WsArgs,
    url: &str,
    scenario: Scenario,
) -> Result<WorkerPlan, String> {
    let (addr, host, path) = parse_ws_url(url)?;
    let mut worker = common(c, url, scenario, addr, host, path)?;
    if ws.heartbeat == 0 || ws.heartbeat > 3600 {
        return Err("--heartbeat must be in [1, 3600] seconds".into());
    }
    if ws.room_prefix.is_empty()
        || ws.room_prefix.len() > 40
        || !ws
            .room_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err("--room-prefix: 1–40 characters of A-Z a-z 0-9 _ - .".into());
    }
    worker.heartbeat_ms = ws.heartbeat * 1000;
    worker.room_prefix = ws.room_prefix.clone();
    Ok(worker)
}

/// The parts of a worker plan every scenario shares: target, sources, spreading.
fn common(
    c: &CommonArgs,
    url: &str,
    scenario: Scenario,
    addr: SocketAddr,
    host: String,
    path: String,
) -> Result<WorkerPlan, String> {
    check_target(c, url, addr)?;
    let (src_first, src_count) = match &c.src {
        None => (None, 0),
        Some(s) => {
            let (a, b) = parse_src_range(s)?;
            if addr.is_ipv6() {
                return Err("--src takes IPv4 addresses; the target is IPv6".into());
            }
            (Some(a), b)
        }
    };
    if c.connect_timeout == 0 || c.connect_timeout > 300 {
        return Err("--connect-timeout must be in [1, 300] seconds".into());
    }
    let ramp = match c.ramp {
        None => 0.0,
        Some(r) if r > 0.0 && r <= 1e7 => r,
        Some(_) => return Err("--ramp must be in (0, 10000000] connections/s".into()),
    };
    let run_id = {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        ((t ^ (t >> 32) ^ u64::from(std::process::id()).rotate_left(17)) & 0xFFFF_FFFF) as u32
    };
    Ok(WorkerPlan {
        scenario,
        worker: 0,
        workers: c.procs,
        threads: c.threads,
        pin: c.pin,
        addr,
        host,
        path,
        room_prefix: "lg".into(),
        rooms: 1,
        viewers: 0,
        publishers: 0,
        rate: 0.0,
        duration_ms: 0,
        drain_ms: 0,
        hold_ms: 0,
        payload: 0,
        ramp,
        connect_timeout_ms: c.connect_timeout * 1000,
        heartbeat_ms: 0,
        src_first,
        src_count,
        tokens: Vec::new(),
        run_id,
        stall_ms: 0,
        rtmp: None,
        min_kbps: 0,
        hls: None,
        targets: Vec::new(),
    })
}

/// Only loopback targets, unless the address is also given as `--allow-remote`.
fn check_target(c: &CommonArgs, url: &str, addr: SocketAddr) -> Result<(), String> {
    if !addr.ip().is_loopback() && c.allow_remote != Some(addr.ip()) {
        return Err(format!(
            "{url} resolves to {}, which is not a loopback address; loadgen only sends load \
             elsewhere when that address is given explicitly: --allow-remote {}",
            addr.ip(),
            addr.ip()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_suggestion_fits_the_limit() {
        assert_eq!(procs_needed(400, 300), 2);
        assert_eq!(procs_needed(100_000, 20_000), 6);
        assert_eq!(procs_needed(1, 50), 1);
    }

    fn plan(workers: usize, threads: usize, viewers: usize) -> WorkerPlan {
        WorkerPlan {
            scenario: Scenario::WsIdle,
            worker: 0,
            workers,
            threads,
            pin: false,
            addr: "127.0.0.1:1".parse().unwrap(),
            host: String::new(),
            path: "/ws".into(),
            room_prefix: "lg".into(),
            rooms: 3,
            viewers,
            publishers: 0,
            rate: 0.0,
            duration_ms: 0,
            drain_ms: 0,
            hold_ms: 0,
            payload: 0,
            ramp: 0.0,
            connect_timeout_ms: 1,
            heartbeat_ms: 1,
            src_first: Some(Ipv4Addr::new(127, 0, 0, 2)),
            src_count: 3,
            tokens: Vec::new(),
            run_id: 1,
            stall_ms: 0,
            rtmp: None,
            min_kbps: 0,
            hls: None,
            targets: Vec::new(),
        }
    }

    #[test]
    fn every_connection_has_exactly_one_owner() {
        let mut p = plan(3, 2, 100);
        let mut owners = vec![0; 100];
        let mut here = 0;
        for w in 0..3 {
            p.worker = w;
            here += p.conns_here();
            for t in 0..2 {
                for (i, o) in owners.iter_mut().enumerate() {
                    *o += usize::from(p.owns(i, t));
                }
            }
        }
        assert!(owners.iter().all(|&o| o == 1));
        assert_eq!(here, 100);
    }

    #[test]
    fn viewers_of_every_room_spread_over_every_url() {
        let mut p = plan(1, 1, 12);
        assert_eq!(p.target_count(), 1);
        assert!((0..12).all(|v| p.target_of_viewer(v) == 0));
        let t = Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            host: "127.0.0.1:1".into(),
            path: "/ws".into(),
        };
        p.targets = vec![t.clone(), t.clone(), t];
        // 3 rooms, 3 URLs: room r's viewers are r, r+3, r+6, r+9 → URLs 0, 1, 2, 0.
        let mut seen = [[0; 3]; 3];
        for v in 0..12 {
            seen[p.room_of(v)][p.target_of_viewer(v)] += 1;
        }
        assert!(seen.iter().all(|room| room.iter().all(|&n| n >= 1)));
        assert_eq!(seen[0], [2, 1, 1]);
    }

    #[test]
    fn sources_round_robin() {
        let p = plan(1, 1, 10);
        let s: Vec<_> = (0..4).map(|i| p.src_for(i).unwrap().octets()[3]).collect();
        assert_eq!(s, vec![2, 3, 4, 2]);
    }
}
