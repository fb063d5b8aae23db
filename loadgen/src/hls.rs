//! The HLS poller driver on glommio, for `hls-viewers`: each viewer keeps one HTTP/1.1
//! keep-alive connection (a new one when the server closes it or it fails; the socket comes
//! from [`conn::start_connect`], so `--src` works as for the other scenarios) and on it
//! asks, one request at a time, for its media playlist and then for what the [`Player`]
//! picks from it. Answers go through [`Response`]: playlists are kept (at most 256 KiB) and
//! parsed, media bodies are counted and dropped.
//!
//! What one viewer measures:
//! - ingest → received latency of every segment (plain) or part (low-latency) that came
//!   to be after its first playlist and arrived inside the measurement window: the wall
//!   clock when its last byte was read minus when its last frame was ingested, as the
//!   playlist dates it ([`crate::hlsplayer`]). It goes into the executor's latency histogram
//!   (`Local::hist`), so the progress line, the timeline and the report carry it as they
//!   carry ws-fanout's latency. The server's clock and ours are the same machine's here;
//!   across machines they must agree (NTP) for the figure to mean anything;
//! - blocking reload hold time: from writing the request to the answer's last byte;
//! - time to the first segment or part, from the start of the first connect (as TTFF);
//! - stalls: no new segment or part for 3 × the target duration ([`Player::check_stall`]);
//! - [`HlsCounts`](crate::hlsreport::HlsCounts), bytes received, and *held* as `media.rs`
//!   defines it.
//!
//! A viewer is up once its first playlist came (within `--connect-timeout`). From then on a
//! failed request is counted and the viewer carries on, as a player retries; only the end
//! of the run or of the stream (`#EXT-X-ENDLIST`) ends it.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::conn::{self, io_failure, Failure};
use crate::hlsplayer::{Fetch, Kind, Mode, Player, Step};
use crate::hlsproto::{parse_playlist, Feed, Response};
use crate::local::{unix_ns, Local};

/// Read buffer per viewer, as for the other media viewers: bodies are counted as they pass,
/// so this only sets how much one read takes in (a 333 ms part of a 600 kbit/s stream in
/// one or two reads, a 2 s segment in five) against memory per viewer (32 KiB × 20,000
/// viewers per process is 640 MiB).
const READ_BUF: usize = 32 << 10;
/// Pause after a failed request, so a refusing server is not asked in a tight loop.
const RETRY_MS: u64 = 500;
/// How much longer than 3 × the target duration (the server's longest hold of a blocking
/// reload) a request may take before the viewer gives up on it.
const HOLD_MARGIN: Duration = Duration::from_secs(5);

/// What one viewer has seen so far.
struct Viewer {
    t0: Instant,
    first_media: bool,
    last_media: Option<Instant>,
    longest_gap: Duration,
    stalled_in_window: bool,
    window_bytes: u64,
    up_before_go: bool,
}

impl Viewer {
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_millis() as u64
    }

    /// A new segment or part arrived complete at `now`.
    fn on_media(&mut self, local: &Local, now: Instant) {
        if let Some(last) = self.last_media {
            self.longest_gap = self.longest_gap.max(now.saturating_duration_since(last));
        }
        self.last_media = Some(now);
        if !self.first_media {
            self.first_media = true;
            let us = (now.saturating_duration_since(self.t0).as_micros() as u64).max(1);
            local.media.borrow_mut().ttff_key.saturating_record(us);
        }
    }

    /// Counts a stall if the player says one began.
    fn check_stall(&mut self, local: &Local, player: &mut Player) -> bool {
        if !player.check_stall(self.ms(Instant::now())) {
            return false;
        }
        let mut agg = local.media.borrow_mut();
        agg.r.stalls += 1;
        if local.measuring.get() {
            agg.r.stalls_in_window += 1;
            self.stalled_in_window = true;
        }
        true
    }
}

/// Why a request got no answer.
enum ReqError {
    /// The run stopped.
    Stopped,
    /// Counted under a kind (`timeout`, `protocol`, an errno name), with the detail.
    Failed(String, String),
}

impl From<Failure> for ReqError {
    fn from(Failure(kind, detail): Failure) -> Self {
        ReqError::Failed(kind, detail)
    }
}

/// One viewer's connection: reopened as needed, one request at a time.
struct Conn {
    v: usize,
    stream: Option<TcpStream>,
    /// An answer was read on the current connection (so the server may have closed it idle).
    reused: bool,
    opened: u64,
    buf: Vec<u8>,
}

impl Conn {
    fn open(&mut self, local: &Local) -> Result<(), ReqError> {
        let plan = local.plan();
        let sock = conn::start_connect(plan.addr, plan.src_for(self.v))
            .map_err(|e| io_failure("connect", e))?;
        // SAFETY: the descriptor comes out of a socket we just made; the stream owns it now.
        let stream = unsafe { TcpStream::from_raw_fd(sock.into_raw_fd()) };
        let _ = stream.set_write_timeout(Some(Duration::from_millis(plan.connect_timeout_ms)));
        local.fds.borrow_mut().insert(stream.as_raw_fd());
        self.opened += 1;
        if self.opened > 1 {
            local.media.borrow_mut().hls().reconnects += 1;
        }
        self.reused = false;
        self.stream = Some(stream);
        Ok(())
    }

    fn close(&mut self, local: &Local) {
        if let Some(s) = self.stream.take() {
            local.fds.borrow_mut().remove(&s.as_raw_fd());
        }
    }

    /// `GET target`; the whole answer (a playlist's body kept, a segment's counted).
    async fn request(
        &mut self,
        local: &Local,
        viewer: &mut Viewer,
        target: &str,
        playlist: bool,
        timeout: Duration,
    ) -> Result<Response, ReqError> {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: liveshard-loadgen\r\nAccept: */*\r\n\r\n",
            local.plan().host
        );
        let mut retried = false;
        loop {
            if local.stopping.get() {
                return Err(ReqError::Stopped);
            }
            if self.stream.is_none() {
                self.open(local)?;
            }
            let reused = self.reused;
            let mut r = if playlist {
                Response::playlist()
            } else {
                Response::media()
            };
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(timeout));
            match exchange(stream, req.as_bytes(), &mut r, &mut self.buf, local, viewer).await {
                Ok(eof) => {
                    self.reused = true;
                    if eof || r.head().is_some_and(|h| h.close) {
                        self.close(local);
                    }
                    return Ok(r);
                }
                Err(e) => {
                    self.close(local);
                    if local.stopping.get() {
                        return Err(ReqError::Stopped);
                    }
                    // A kept-alive connection the server closed while it was idle: once
                    // more on a new one.
                    if reused && !r.is_started() && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Writes the request and reads its answer; `Ok(true)` when the server closed after it.
async fn exchange(
    stream: &mut TcpStream,
    req: &[u8],
    r: &mut Response,
    buf: &mut [u8],
    local: &Local,
    viewer: &mut Viewer,
) -> Result<bool, ReqError> {
    let proto = |e: crate::hlsproto::ProtoError| ReqError::Failed("protocol".into(), e.0.into());
    stream
        .write_all(req)
        .await
        .map_err(|e| io_failure("request", e))?;
    loop {
        let n = match stream.read(buf).await {
            Ok(0) => {
                r.handle_eof().map_err(proto)?;
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) => return Err(io_failure("response", e).into()),
        };
        local.media.borrow_mut().r.bytes_total += n as u64;
        if local.measuring.get() {
            viewer.window_bytes += n as u64;
            local.bytes_in.set(local.bytes_in.get() + n as u64);
        }
        if r.handle_input(&buf[..n]).map_err(proto)? == Feed::Done {
            return Ok(false);
        }
    }
}

/// How a viewer ended.
enum End {
    Stopped,
    /// The playlist said `#EXT-X-ENDLIST`.
    Ended,
}

/// One viewer's whole life: ramp slot, first playlist, then play until the run stops.
pub async fn run(local: Rc<Local>, v: usize, start: Option<Instant>) {
    if let Some(at) = start {
        let now = Instant::now();
        if at > now {
            glommio::timer::sleep(at - now).await;
        }
    }
    let plan = local.plan().clone();
    let hp = plan.hls.unwrap_or_default();
    let mode = if hp.ll {
        Mode::LowLatency { hints: hp.hints }
    } else {
        Mode::Plain
    };
    let mut player = Player::new(mode, &plan.host, &plan.path);
    let mut conn = Conn {
        v,
        stream: None,
        reused: false,
        opened: 0,
        buf: vec![0u8; READ_BUF],
    };
    let mut viewer = Viewer {
        t0: Instant::now(),
        first_media: false,
        last_media: None,
        longest_gap: Duration::ZERO,
        stalled_in_window: false,
        window_bytes: 0,
        up_before_go: false,
    };
    let opened = if local.stopping.get() {
        Err(Failure(
            "aborted".into(),
            "run stopped before connecting".into(),
        ))
    } else {
        let permit = local.connect_permits.acquire_permit(1).await;
        viewer.t0 = Instant::now();
        let r = first_playlist(&local, &mut conn, &mut player, &mut viewer).await;
        drop(permit);
        r
    };
    let exec = local.exec();
    let step = match opened {
        Ok(step) => step,
        Err(Failure(kind, detail)) => {
            conn.close(&local);
            local.record_failure(kind, detail);
            exec.attempted.fetch_add(1, Relaxed);
            return;
        }
    };
    exec.up.fetch_add(1, Relaxed);
    exec.attempted.fetch_add(1, Relaxed);
    local.viewers_up.set(local.viewers_up.get() + 1);
    viewer.up_before_go = local.shared.go_at_ns.load(Relaxed) == 0;

    // Plain pollers come in one burst here but players come at any time: viewer v waits
    // (v·φ mod 1) of half a target duration once, before its first reload, so their polls
    // spread over the interval. In lockstep, every viewer's latency would be one phase.
    let phase_ms = match mode {
        Mode::Plain => {
            ((v as f64 * 0.618_033_988_75).fract() * (player.target_ms() / 2) as f64) as u64
        }
        Mode::LowLatency { .. } => 0,
    };
    let end = play(&local, &mut conn, &mut player, &mut viewer, step, phase_ms).await;
    conn.close(&local);
    finish(&local, &mut viewer, &mut player, end);
}

/// The first playlist, a plain reload, within the connect timeout: the viewer is up with it.
async fn first_playlist(
    local: &Local,
    conn: &mut Conn,
    player: &mut Player,
    viewer: &mut Viewer,
) -> Result<Step, Failure> {
    let timeout = Duration::from_millis(local.plan().connect_timeout_ms);
    let (target, _) = player.playlist_request();
    let r = match conn.request(local, viewer, &target, true, timeout).await {
        Ok(r) => r,
        Err(ReqError::Stopped) => return Err(Failure("aborted".into(), "run stopped".into())),
        Err(ReqError::Failed(kind, detail)) => return Err(Failure(kind, detail)),
    };
    if r.status() != 200 {
        let body = snippet(r.body());
        return Err(Failure(
            format!("http_{}", r.status()),
            format!("HTTP {}: {body}", r.status()),
        ));
    }
    local.media.borrow_mut().hls().playlists += 1;
    let now = viewer.ms(Instant::now());
    parse_playlist(r.body())
        .and_then(|pl| player.handle_playlist(&pl, now))
        .map_err(|e| Failure("protocol".into(), format!("first playlist: {e}")))
}

/// How long one request may take: the connect timeout, or longer than the server may hold
/// a blocking reload.
fn request_timeout(local: &Local, player: &Player) -> Duration {
    let connect = Duration::from_millis(local.plan().connect_timeout_ms);
    connect.max(Duration::from_millis(3 * player.target_ms()) + HOLD_MARGIN)
}

/// Fetches what each playlist asks for, then asks for the next playlist, until the end.
async fn play(
    local: &Local,
    conn: &mut Conn,
    player: &mut Player,
    viewer: &mut Viewer,
    mut step: Step,
    mut phase_ms: u64,
) -> End {
    let mut ended = false;
    // The last request failed: pause before the next.
    let mut retry = false;
    loop {
        for f in &step.fetches {
            if fetch(local, conn, player, viewer, f).await.is_err() {
                return End::Stopped;
            }
        }
        if ended {
            return End::Ended;
        }
        viewer.check_stall(local, player);
        let delay = if std::mem::take(&mut retry) {
            RETRY_MS
        } else {
            player.poll_delay_ms()
        } + std::mem::take(&mut phase_ms);
        if !sleep(local, delay).await {
            return End::Stopped;
        }
        let (target, blocking) = player.playlist_request();
        let sent = Instant::now();
        let timeout = request_timeout(local, player);
        let answer = conn.request(local, viewer, &target, true, timeout).await;
        let held = sent.elapsed();
        step = Step::default();
        let r = match answer {
            Ok(r) => r,
            Err(ReqError::Stopped) => return End::Stopped,
            Err(ReqError::Failed(kind, detail)) => {
                let mut agg = local.media.borrow_mut();
                agg.hls().error(kind, format!("playlist: {detail}"));
                retry = true;
                continue;
            }
        };
        let status = r.status();
        match status {
            200 => {
                {
                    let mut agg = local.media.borrow_mut();
                    agg.hls().playlists += 1;
                    if blocking {
                        agg.hls().blocking_reloads += 1;
                        if local.measuring.get() {
                            agg.hold.saturating_record((held.as_micros() as u64).max(1));
                        }
                    }
                }
                let now = viewer.ms(Instant::now());
                let parsed = parse_playlist(r.body())
                    .and_then(|pl| Ok((player.handle_playlist(&pl, now)?, pl.ended)));
                match parsed {
                    Ok((s, end)) => {
                        if let Some((at_us, ingested_ms)) = s.hint_timing {
                            record_latency(local, at_us, ingested_ms);
                        }
                        if s.resynced {
                            local.media.borrow_mut().hls().resyncs += 1;
                        }
                        step = s;
                        ended = end;
                    }
                    Err(e) => {
                        let mut agg = local.media.borrow_mut();
                        agg.hls().error("protocol".into(), format!("playlist: {e}"));
                        retry = true;
                    }
                }
            }
            503 => {
                local.media.borrow_mut().hls().status_503 += 1;
                // Held as long as the server holds a blocking reload: ask again at once.
                // Answered sooner, the server is too busy to hold it: pause first.
                retry = held < Duration::from_millis(player.target_ms());
            }
            _ => {
                let body = snippet(r.body());
                let mut agg = local.media.borrow_mut();
                agg.hls().error(
                    format!("http_{status}"),
                    format!("playlist {target}: HTTP {status}: {body}"),
                );
                // Too far ahead (400) or not known: start over from the live edge.
                player.restart();
                retry = true;
            }
        }
    }
}

/// Fetches one init segment, segment or part; `Err` when the run stopped.
async fn fetch(
    local: &Local,
    conn: &mut Conn,
    player: &mut Player,
    viewer: &mut Viewer,
    f: &Fetch,
) -> Result<(), ()> {
    let timeout = request_timeout(local, player);
    let answer = conn.request(local, viewer, &f.target, false, timeout).await;
    let now = Instant::now();
    let at_us = unix_ns() / 1000;
    let ok = match answer {
        Err(ReqError::Stopped) => return Err(()),
        Err(ReqError::Failed(kind, detail)) => {
            let mut agg = local.media.borrow_mut();
            agg.hls().error(kind, format!("{}: {detail}", f.target));
            false
        }
        Ok(r) => {
            let mut agg = local.media.borrow_mut();
            let c = agg.hls();
            match (r.status(), f.kind) {
                (200, kind) => {
                    c.media_bytes += r.body_len();
                    match kind {
                        Kind::Init => c.init_segments += 1,
                        Kind::Segment => c.segments += 1,
                        Kind::Part => c.parts += 1,
                        Kind::Hint => c.hinted_parts += 1,
                    }
                    true
                }
                // The segment was cut before the hinted part came to be.
                (404, Kind::Hint) => {
                    c.hint_404 += 1;
                    false
                }
                (status, _) => {
                    let body = snippet(r.body());
                    c.error(
                        format!("http_{status}"),
                        format!("{}: HTTP {status}: {body}", f.target),
                    );
                    false
                }
            }
        }
    };
    player.handle_fetched(f, ok, viewer.ms(now), at_us);
    if ok && f.kind != Kind::Init {
        viewer.on_media(local, now);
        if f.timed {
            match f.ingested_ms {
                Some(ms) => record_latency(local, at_us, ms),
                // A hinted part is timed once a playlist lists its duration.
                None if f.kind == Kind::Hint => {}
                None => local.media.borrow_mut().hls().undated += 1,
            }
        }
    }
    viewer.check_stall(local, player);
    Ok(())
}

/// Records received (Unix µs) − ingested (Unix ms), in the window: in the latency
/// histogram, or (below 0) in the executor's histogram of how early media came.
fn record_latency(local: &Local, at_us: u64, ingested_ms: u64) {
    if !local.measuring.get() {
        return;
    }
    let ingested_us = ingested_ms.saturating_mul(1000);
    match at_us.checked_sub(ingested_us) {
        Some(us) => local.hist.borrow_mut().saturating_record(us.max(1)),
        None => {
            let mut agg = local.media.borrow_mut();
            agg.hls().early += 1;
            agg.early.saturating_record(ingested_us - at_us);
        }
    }
}

/// The start of an error answer's body, on one line, for the report's sample.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Sleeps `ms`, waking every 100 ms to notice the end of the run; false once it ended.
async fn sleep(local: &Local, ms: u64) -> bool {
    let until = Instant::now() + Duration::from_millis(ms);
    loop {
        if local.stopping.get() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        glommio::timer::sleep((until - now).min(Duration::from_millis(100))).await;
    }
}

/// Adds the viewer's results to the executor's and counts how it ended.
fn finish(local: &Local, viewer: &mut Viewer, player: &mut Player, end: End) {
    let stopped = matches!(end, End::Stopped);
    let plan = local.plan();
    // A gap still open when the window closed is a stall too.
    let open_stall = stopped && player.check_stall(viewer.ms(Instant::now()));
    let mut agg = local.media.borrow_mut();
    if viewer.up_before_go {
        agg.r.viewers_at_go += 1;
    }
    let mut stalled = viewer.stalled_in_window;
    if open_stall {
        agg.r.stalls += 1;
        agg.r.stalls_in_window += 1;
        stalled = true;
    }
    if stalled {
        agg.r.viewers_stalled_in_window += 1;
    }
    if stopped && viewer.up_before_go {
        agg.r.full_window += 1;
        let kbps = viewer.window_bytes * 8 / plan.duration_ms.max(1);
        agg.rate_kbps.saturating_record(kbps.max(1));
        let slow = kbps < plan.min_kbps;
        if slow {
            agg.r.slow += 1;
        }
        if !stalled && !slow {
            agg.r.held += 1;
        }
    }
    if !viewer.first_media {
        agg.r.no_frame += 1;
        agg.r.no_keyframe += 1;
    }
    agg.r.longest_gap_us = agg
        .r
        .longest_gap_us
        .max(viewer.longest_gap.as_micros() as u64);
    drop(agg);
    if let End::Ended = end {
        local.record_disconnect("ended".into());
    }
}
