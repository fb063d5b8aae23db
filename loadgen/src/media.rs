//! Media viewer drivers on glommio, for `flv-viewers` (HTTP-FLV) and `rtmp-viewers` (RTMP
//! play): connect (the socket comes from [`conn::start_connect`], so `--src` works the same),
//! send the request or run the handshake and `play`, then read until the run stops, handing
//! every read to the sans-IO scanner ([`flvproto`] or [`rtmpproto`]) and timing what it finds.
//!
//! What one viewer measures, all on the executor's monotonic clock:
//! - time to first frame: from the start of the TCP connect to the first complete video tag
//!   (message) that carries a coded frame (sequence headers do not count), and separately to
//!   the first complete keyframe;
//! - bytes received (everything read from the socket: chunk framing and RTMP headers too)
//!   during the measurement window, as the viewer's throughput;
//! - stalls: gaps longer than `--stall-ms` between consecutive tags after the first one, and
//!   a gap still open at the end of the run (for a viewer that never got a tag: since its
//!   connect).
//!
//! A viewer is *held* when it was up when the window started, still connected when it ended,
//! saw no stall inside it, and received at least `--min-kbps` over it. Counts go into the executor's [`MediaAgg`]; the time to first
//! frame goes into the executor's latency histogram (`Local::hist`), so the progress line and
//! the merged report carry it like ws-fanout's latency.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::conn::{self, io_failure, io_kind, Failure};
use crate::flvproto::{self, VideoKind};
use crate::local::{unix_ns, Local, MediaAgg};
use crate::plan::Scenario;
use crate::rtmpproto::{Event, PlayClient};

/// Read buffer per viewer. Scanning streams, so this only sets how much one read takes in
/// (a 600 kbit/s stream fills it in about half a second; the GOP burst in a few reads).
const READ_BUF: usize = 32 << 10;

/// What one viewer has seen so far.
struct Viewer {
    t0: Instant,
    stall: Duration,
    first_frame: bool,
    first_key: bool,
    last_tag: Option<Instant>,
    longest_gap: Duration,
    stalled_in_window: bool,
    window_bytes: u64,
    up_before_go: bool,
}

impl Viewer {
    /// One complete tag (or RTMP media message) that arrived with the read done at `now`.
    fn on_tag(
        &mut self,
        local: &Local,
        agg: &mut MediaAgg,
        now: Instant,
        video: Option<VideoKind>,
    ) {
        if let Some(last) = self.last_tag {
            let gap = now.saturating_duration_since(last);
            self.longest_gap = self.longest_gap.max(gap);
            if gap > self.stall {
                agg.r.stalls += 1;
                if local.measuring.get() {
                    agg.r.stalls_in_window += 1;
                    self.stalled_in_window = true;
                }
            }
        }
        self.last_tag = Some(now);
        agg.r.tags += 1;
        if let Some(VideoKind::Frame { key }) = video {
            agg.r.video_frames += 1;
            let us = (now.saturating_duration_since(self.t0).as_micros() as u64).max(1);
            if !self.first_frame {
                self.first_frame = true;
                local.hist.borrow_mut().saturating_record(us);
            }
            if key {
                agg.r.keyframes += 1;
                if !self.first_key {
                    self.first_key = true;
                    agg.ttff_key.saturating_record(us);
                }
            }
        }
    }
}

/// The protocol state of one viewer.
enum Proto {
    Flv(flvproto::Body),
    Rtmp(Box<PlayClient>),
}

/// How a viewer's read loop ended.
enum End {
    Stopped,
    /// The server ended the stream: the last HTTP chunk, or RTMP `close`.
    Ended,
    Eof,
    Error(String),
    Protocol(&'static str),
}

impl End {
    fn key(&self) -> String {
        match self {
            End::Stopped => "stopped".into(),
            End::Ended => "ended".into(),
            End::Eof => "eof".into(),
            End::Error(kind) => kind.clone(),
            End::Protocol(_) => "protocol".into(),
        }
    }
}

/// One viewer's whole life: ramp slot, connect, play, read until the run stops.
pub async fn run(local: Rc<Local>, v: usize, start: Option<Instant>) {
    if let Some(at) = start {
        let now = Instant::now();
        if at > now {
            glommio::timer::sleep(at - now).await;
        }
    }
    let plan = local.plan().clone();
    let mut viewer = Viewer {
        t0: Instant::now(),
        stall: Duration::from_millis(plan.stall_ms),
        first_frame: false,
        first_key: false,
        last_tag: None,
        longest_gap: Duration::ZERO,
        stalled_in_window: false,
        window_bytes: 0,
        up_before_go: false,
    };
    let mut buf = vec![0u8; READ_BUF];
    let opened = if local.stopping.get() {
        Err(Failure(
            "aborted".into(),
            "run stopped before connecting".into(),
        ))
    } else {
        let permit = local.connect_permits.acquire_permit(1).await;
        viewer.t0 = Instant::now();
        let r = match plan.scenario {
            Scenario::RtmpViewers => open_rtmp(&local, v, &mut buf, &mut viewer).await,
            _ => open_flv(&local, v, &mut buf, &mut viewer).await,
        };
        drop(permit);
        r
    };
    let exec = local.exec();
    let (mut stream, mut proto) = match opened {
        Ok(x) => x,
        Err(Failure(kind, detail)) => {
            local.record_failure(kind, detail);
            exec.attempted.fetch_add(1, Relaxed);
            return;
        }
    };
    exec.up.fetch_add(1, Relaxed);
    exec.attempted.fetch_add(1, Relaxed);
    local.viewers_up.set(local.viewers_up.get() + 1);
    viewer.up_before_go = local.shared.go_at_ns.load(Relaxed) == 0;
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let fd = stream.as_raw_fd();
    local.fds.borrow_mut().insert(fd);

    let end = read_loop(&local, &mut stream, &mut proto, &mut buf, &mut viewer).await;
    local.fds.borrow_mut().remove(&fd);
    finish(&local, &viewer, end, plan.duration_ms, plan.min_kbps);
}

async fn read_loop(
    local: &Local,
    stream: &mut TcpStream,
    proto: &mut Proto,
    buf: &mut [u8],
    viewer: &mut Viewer,
) -> End {
    loop {
        if local.stopping.get() {
            return End::Stopped;
        }
        let n = match stream.read(buf).await {
            Ok(0) if local.stopping.get() => return End::Stopped,
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
            Err(_) if local.stopping.get() => return End::Stopped,
            Err(e) => return End::Error(io_kind(&e)),
        };
        if local.measuring.get() {
            viewer.window_bytes += n as u64;
            local.bytes_in.set(local.bytes_in.get() + n as u64);
        }
        match absorb(local, proto, &buf[..n], viewer) {
            Ok(false) => {}
            Ok(true) => return End::Ended,
            Err(why) => return End::Protocol(why),
        }
        if let Proto::Rtmp(client) = proto {
            if let Some(out) = client.take_output() {
                if let Err(e) = stream.write_all(&out).await {
                    return End::Error(io_kind(&e));
                }
            }
        }
    }
}

/// Scans one read's bytes; `Ok(true)` when the server ended the stream.
fn absorb(
    local: &Local,
    proto: &mut Proto,
    data: &[u8],
    viewer: &mut Viewer,
) -> Result<bool, &'static str> {
    let now = Instant::now();
    let mut agg = local.media.borrow_mut();
    agg.r.bytes_total += data.len() as u64;
    match proto {
        Proto::Flv(body) => {
            body.feed(data, |tag| {
                if tag.kind == 8 || tag.kind == 9 {
                    viewer.on_tag(local, &mut agg, now, tag.video);
                }
            })
            .map_err(|e| e.0)?;
            Ok(body.is_done())
        }
        Proto::Rtmp(client) => {
            let mut closed = false;
            client
                .handle_input(data, &mut |ev| match ev {
                    Event::Media { video, .. } => viewer.on_tag(local, &mut agg, now, video),
                    Event::Unpublished => agg.r.unpublished += 1,
                    Event::Closed => closed = true,
                    Event::Playing | Event::Refused(_) => {}
                })
                .map_err(|e| e.0)?;
            Ok(closed)
        }
    }
}

/// Adds the viewer's results to the executor's and counts how it ended.
fn finish(local: &Local, viewer: &Viewer, end: End, window_ms: u64, min_kbps: u64) {
    let stopped = matches!(end, End::Stopped);
    let mut agg = local.media.borrow_mut();
    if viewer.up_before_go {
        agg.r.viewers_at_go += 1;
    }
    let mut stalled = viewer.stalled_in_window;
    if stopped {
        // A gap still open when the window closed is a stall too, and so is a viewer that
        // never got a tag at all.
        let since = viewer.last_tag.unwrap_or(viewer.t0);
        if since.elapsed() > viewer.stall {
            agg.r.stalls += 1;
            agg.r.stalls_in_window += 1;
            stalled = true;
        }
    }
    if stalled {
        agg.r.viewers_stalled_in_window += 1;
    }
    if stopped && viewer.up_before_go {
        agg.r.full_window += 1;
        let kbps = viewer.window_bytes * 8 / window_ms.max(1);
        agg.rate_kbps.saturating_record(kbps.max(1));
        let slow = kbps < min_kbps;
        if slow {
            agg.r.slow += 1;
        }
        if !stalled && !slow {
            agg.r.held += 1;
        }
    }
    if !viewer.first_frame {
        agg.r.no_frame += 1;
    }
    if !viewer.first_key {
        agg.r.no_keyframe += 1;
    }
    agg.r.longest_gap_us = agg
        .r
        .longest_gap_us
        .max(viewer.longest_gap.as_micros() as u64);
    drop(agg);
    if !stopped {
        local.record_disconnect(end.key());
        if let End::Protocol(why) = end {
            local
                .failure_samples
                .borrow_mut()
                .entry("protocol".into())
                .or_insert_with(|| why.to_string());
        }
    }
}

/// A connected socket as a glommio stream with the connect timeout on both directions.
fn connect(local: &Local, v: usize) -> Result<TcpStream, Failure> {
    let plan = local.plan();
    let sock =
        conn::start_connect(plan.addr, plan.src_for(v)).map_err(|e| io_failure("connect", e))?;
    // SAFETY: the descriptor comes out of a socket we just made; the stream owns it now.
    let stream = unsafe { TcpStream::from_raw_fd(sock.into_raw_fd()) };
    let timeout = Duration::from_millis(plan.connect_timeout_ms);
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_read_timeout(Some(timeout));
    Ok(stream)
}

/// Reads into `buf[filled..]`, failing the connection attempt on EOF, error or the deadline.
async fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    what: &str,
) -> Result<usize, Failure> {
    if Instant::now() >= deadline {
        return Err(Failure("timeout".into(), format!("{what}: timed out")));
    }
    match stream.read(buf).await {
        Ok(0) => Err(Failure(
            "closed".into(),
            format!("server closed during {what}"),
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(io_failure(what, e)),
    }
}

/// `GET` the FLV URL; up once a 200 head is in (tags already read are scanned).
async fn open_flv(
    local: &Local,
    v: usize,
    buf: &mut [u8],
    viewer: &mut Viewer,
) -> Result<(TcpStream, Proto), Failure> {
    let plan = local.plan();
    let mut stream = connect(local, v)?;
    let deadline = Instant::now() + Duration::from_millis(plan.connect_timeout_ms);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: liveshard-loadgen\r\nAccept: */*\r\n\r\n",
        plan.path, plan.host
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| io_failure("connect/request", e))?;
    let mut filled = 0;
    let head = loop {
        if filled == buf.len() {
            return Err(Failure("http".into(), "response head too long".into()));
        }
        filled += read_some(
            &mut stream,
            &mut buf[filled..],
            deadline,
            "the response head",
        )
        .await?;
        match flvproto::parse_head(&buf[..filled]) {
            Ok(h) => break h,
            Err(flvproto::HeadError::NeedMore) => continue,
            Err(flvproto::HeadError::Bad(why)) => return Err(Failure("http".into(), why.into())),
        }
    };
    if head.status != 200 {
        let body = String::from_utf8_lossy(&buf[head.len..filled.min(head.len + 200)]);
        return Err(Failure(
            format!("http_{}", head.status),
            format!("HTTP {}: {body}", head.status),
        ));
    }
    let mut proto = Proto::Flv(flvproto::Body::new(head.chunked));
    absorb(local, &mut proto, &buf[head.len..filled], viewer)
        .map_err(|why| Failure("protocol".into(), why.into()))?;
    Ok((stream, proto))
}

/// Handshake, connect, createStream, play; up at `NetStream.Play.Start`.
async fn open_rtmp(
    local: &Local,
    v: usize,
    buf: &mut [u8],
    viewer: &mut Viewer,
) -> Result<(TcpStream, Proto), Failure> {
    let plan = local.plan();
    let target = plan
        .rtmp
        .clone()
        .ok_or_else(|| Failure("plan".into(), "no RTMP target in the plan".into()))?;
    let mut stream = connect(local, v)?;
    let deadline = Instant::now() + Duration::from_millis(plan.connect_timeout_ms);
    let mut client = Box::new(PlayClient::new(target, unix_ns() ^ ((v as u64) << 24)));
    let mut refused = None;
    loop {
        if let Some(out) = client.take_output() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| io_failure("connect/handshake", e))?;
        }
        if let Some(why) = refused.take() {
            return Err(Failure("refused".into(), why));
        }
        if client.is_playing() {
            return Ok((stream, Proto::Rtmp(client)));
        }
        let n = read_some(&mut stream, buf, deadline, "the RTMP handshake and play").await?;
        let now = Instant::now();
        let mut agg = local.media.borrow_mut();
        agg.r.bytes_total += n as u64;
        client
            .handle_input(&buf[..n], &mut |ev| match ev {
                Event::Refused(why) => refused = Some(why),
                Event::Media { video, .. } => viewer.on_tag(local, &mut agg, now, video),
                _ => {}
            })
            .map_err(|e| Failure("protocol".into(), e.0.into()))?;
    }
}
