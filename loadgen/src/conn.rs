//! WebSocket connection drivers on glommio: open a socket (optionally bound to a `--src`
//! address), upgrade it, then run it as a viewer (read frames, find markers, record latency,
//! answer pings, send the app heartbeat) or a publisher (paced posts on one descriptor, acks
//! and echoes drained on a duplicate of it). The socket set-up ([`start_connect`]) and the
//! failure kinds are shared with the media drivers (`media.rs`).
//!
//! Why sockets are made with socket2 and handed to glommio: glommio's `TcpStream::connect`
//! cannot bind a source address first. glommio streams try the syscall first and fall back
//! to an io_uring poll, so the first write of the upgrade request simply waits until the
//! non-blocking connect has completed (or reports its error).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::local::{unix_ns, Local};
use crate::marker;
use crate::wsproto::{self, FrameError, Rng};

/// The start of liveshard's rate-limit refusal, `{"type":"error","code":4290,…}` (code
/// RATE_LIMITED in docs/protocol.md).
const RATE_LIMITED_ERROR: &[u8] = br#""type":"error","code":4290"#;

/// Viewer read buffers start small (idle connections stay cheap) and grow to fit a frame.
const INITIAL_BUF: usize = 4096;

#[derive(Clone, Copy, Debug)]
pub enum Role {
    Viewer(usize),
    Publisher(usize),
}

/// An upgraded connection and the bytes read past the upgrade response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

/// Why a connection attempt failed: a short kind for counting and the full text.
pub struct Failure(pub String, pub String);

pub fn io_kind(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL",
        Some(libc::EADDRINUSE) => "EADDRINUSE",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ENETUNREACH) => "ENETUNREACH",
        Some(libc::ENOBUFS) => "ENOBUFS",
        _ if e.kind() == io::ErrorKind::TimedOut => "timeout",
        _ => "io",
    };
    name.to_string()
}

pub fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure(io_kind(&e), format!("{what}: {e}"))
}

/// Creates the socket and starts a non-blocking connect.
pub fn start_connect(addr: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    sock.set_nodelay(true)?;
    if let Some(ip) = src {
        // Let connect() pick the port for the full 4-tuple, so each source address gives
        // its own ephemeral range instead of reserving a port at bind time.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket, a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => Ok(sock),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(sock),
        Err(e) => Err(e),
    }
}

/// Connects and upgrades one connection to `room` at URL `url` (an index into the plan's
/// targets), with `token` for publishers.
async fn open(
    local: &Local,
    global: usize,
    room: usize,
    url: usize,
    token: Option<&str>,
) -> Result<Conn, Failure> {
    let plan = local.plan();
    let (addr, host, path) = plan.target(url);
    let sock = start_connect(addr, plan.src_for(global)).map_err(|e| io_failure("connect", e))?;
    // SAFETY: the descriptor comes out of a socket we just made; the stream owns it now.
    let mut stream = unsafe { TcpStream::from_raw_fd(sock.into_raw_fd()) };
    let timeout = Duration::from_millis(plan.connect_timeout_ms);
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_read_timeout(Some(timeout));

    let mut rng = Rng::new(unix_ns() ^ (global as u64).rotate_left(32));
    let key = wsproto::new_key(&mut rng);
    let mut target = format!("{path}?room={}", plan.room_name(room));
    if let Some(t) = token {
        target.push_str("&token=");
        target.push_str(t);
    }
    let req = wsproto::upgrade_request(host, &target, &key);
    stream
        .write_all(&req)
        .await
        .map_err(|e| io_failure("connect/upgrade", e))?;

    let mut buf = vec![0u8; INITIAL_BUF];
    let mut filled = 0;
    let deadline = Instant::now() + timeout;
    loop {
        if filled == buf.len() {
            if buf.len() >= wsproto::MAX_HEAD * 2 {
                return Err(Failure("upgrade".into(), "response head too long".into()));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(|e| io_failure("upgrade response", e))?;
        if n == 0 {
            let got = String::from_utf8_lossy(&buf[..filled.min(200)]).into_owned();
            return Err(Failure(
                "closed".into(),
                format!("server closed during the upgrade (read {filled} bytes: {got:?})"),
            ));
        }
        filled += n;
        match wsproto::check_upgrade_response(&buf[..filled], &key) {
            Ok(head) => {
                return Ok(Conn {
                    stream,
                    buf,
                    start: head,
                    filled,
                })
            }
            Err(wsproto::HandshakeError::NeedMore) if Instant::now() < deadline => continue,
            Err(wsproto::HandshakeError::Status(code, body)) => {
                return Err(Failure(
                    format!("http_{code}"),
                    format!("HTTP {code}: {body}"),
                ))
            }
            Err(e) => return Err(Failure("upgrade".into(), e.to_string())),
        }
    }
}

/// One connection's whole life: wait for its ramp slot, connect, run its role.
pub async fn run(local: Rc<Local>, role: Role, start: Option<Instant>) {
    if let Some(at) = start {
        let now = Instant::now();
        if at > now {
            glommio::timer::sleep(at - now).await;
        }
    }
    let plan = local.plan().clone();
    let (global, room, url, token) = match role {
        Role::Viewer(v) => (v, plan.room_of(v), plan.target_of_viewer(v), None),
        Role::Publisher(p) => (
            plan.viewers + p,
            plan.room_of(p),
            0,
            plan.tokens.get(p % plan.tokens.len().max(1)).cloned(),
        ),
    };
    let opened = if local.stopping.get() {
        Err(Failure(
            "aborted".into(),
            "run stopped before connecting".into(),
        ))
    } else {
        let permit = local.connect_permits.acquire_permit(1).await;
        let r = open(&local, global, room, url, token.as_deref()).await;
        drop(permit);
        r
    };
    let exec = local.exec();
    let conn = match opened {
        Ok(c) => c,
        Err(Failure(kind, detail)) => {
            local.record_failure(kind, detail);
            exec.attempted.fetch_add(1, Relaxed);
            return;
        }
    };
    exec.up.fetch_add(1, Relaxed);
    exec.attempted.fetch_add(1, Relaxed);
    match role {
        Role::Viewer(_) => {
            local.viewers_up.set(local.viewers_up.get() + 1);
            local.viewers_per_room.borrow_mut()[room] += 1;
            if let Some(t) = local.per_target.borrow_mut().get_mut(url) {
                t.viewers_up += 1;
                t.viewers_per_room[room] += 1;
            }
            viewer(&local, conn, room, url).await;
        }
        Role::Publisher(p) => {
            local.publishers_up.set(local.publishers_up.get() + 1);
            publisher(&local, conn, p, room).await;
        }
    }
}

/// How a read loop ended.
enum End {
    /// The run is over (loadgen stopped it).
    Stopped,
    /// The server sent a close frame with this code.
    Closed(u16),
    Eof,
    Error(String),
    Protocol(&'static str),
}

impl End {
    fn key(&self) -> String {
        match self {
            End::Stopped => "stopped".into(),
            End::Closed(code) => code.to_string(),
            End::Eof => "eof".into(),
            End::Error(kind) => kind.clone(),
            End::Protocol(_) => "protocol".into(),
        }
    }
}

/// What to do with one server frame.
enum Step {
    Go,
    Reply(u8, Vec<u8>),
    Close(u16),
}

/// Parses every complete frame in `c`'s buffer, calling `on_data` for data frames.
fn drain_frames(c: &mut Conn, mut on_data: impl FnMut(&[u8])) -> Result<Vec<Step>, End> {
    let mut steps = Vec::new();
    loop {
        match wsproto::parse_frame(&c.buf[c.start..c.filled]) {
            Ok(f) => {
                let payload = &c.buf[c.start + f.payload_start..c.start + f.payload_end];
                match f.opcode {
                    wsproto::OP_TEXT | wsproto::OP_BINARY | wsproto::OP_CONT => on_data(payload),
                    wsproto::OP_PING => steps.push(Step::Reply(wsproto::OP_PONG, payload.to_vec())),
                    wsproto::OP_CLOSE => {
                        steps.push(Step::Close(wsproto::close_code(payload)));
                        c.start += f.total;
                        return Ok(steps);
                    }
                    _ => {}
                }
                c.start += f.total;
            }
            Err(FrameError::NeedMore(need)) => {
                // Make room: move the partial frame to the front, grow if it cannot fit.
                if c.start > 0 {
                    c.buf.copy_within(c.start..c.filled, 0);
                    c.filled -= c.start;
                    c.start = 0;
                }
                if need > c.buf.len() || c.filled == c.buf.len() {
                    let want = need.max(c.buf.len() * 2).min(wsproto::MAX_FRAME + 14);
                    c.buf.resize(want, 0);
                }
                steps.push(Step::Go);
                return Ok(steps);
            }
            Err(FrameError::Bad(why)) => return Err(End::Protocol(why)),
        }
    }
}

async fn send_frame(
    stream: &mut TcpStream,
    rng: &mut Rng,
    opcode: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    wsproto::encode_frame(&mut out, opcode, payload, rng.next_u64() as u32);
    stream.write_all(&out).await
}

/// Sends a close frame and gives the socket back, without waiting for the server's answer.
async fn close(local: &Local, mut stream: TcpStream, rng: &mut Rng) {
    local.fds.borrow_mut().remove(&stream.as_raw_fd());
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut out = Vec::with_capacity(8);
    wsproto::encode_close(&mut out, 1000, rng.next_u64() as u32);
    let _ = stream.write_all(&out).await;
}

/// A viewer of URL `url`: reads until the run stops, counting frames and markers.
async fn viewer(local: &Local, mut c: Conn, room: usize, url: usize) {
    let heartbeat = Duration::from_millis(local.plan().heartbeat_ms);
    let _ = c.stream.set_read_timeout(Some(heartbeat));
    let _ = c.stream.set_write_timeout(Some(Duration::from_secs(10)));
    local.fds.borrow_mut().insert(c.stream.as_raw_fd());
    let mut rng = Rng::new(unix_ns() ^ c.stream.as_raw_fd() as u64);
    let mut last_ping = Instant::now();
    let end = 'conn: loop {
        let now_ns = unix_ns();
        let measuring = local.measuring.get();
        let mut frames = 0u64;
        let mut deliveries = 0u64;
        let steps = {
            let mut hist = local.hist.borrow_mut();
            let mut per_target = local.per_target.borrow_mut();
            let mut mine = per_target.get_mut(url);
            drain_frames(&mut c, |payload| {
                frames += 1;
                local.scanner.scan(payload, |m: marker::Marker| {
                    let us = (now_ns.saturating_sub(m.unix_ns) / 1000).max(1);
                    hist.saturating_record(us);
                    if let Some(t) = mine.as_deref_mut() {
                        t.hist.saturating_record(us);
                        t.deliveries += 1;
                    }
                    deliveries += 1;
                });
            })
        };
        local.deliveries.set(local.deliveries.get() + deliveries);
        if measuring {
            local.frames.set(local.frames.get() + frames);
        }
        let steps = match steps {
            Ok(s) => s,
            Err(e) => break e,
        };
        for step in steps {
            match step {
                Step::Go => {}
                Step::Reply(op, payload) => {
                    if let Err(e) = send_frame(&mut c.stream, &mut rng, op, &payload).await {
                        break 'conn End::Error(io_kind(&e));
                    }
                }
                Step::Close(code) => break 'conn End::Closed(code),
            }
        }
        if local.stopping.get() {
            break End::Stopped;
        }
        if last_ping.elapsed() >= heartbeat {
            last_ping = Instant::now();
            if let Err(e) = send_frame(
                &mut c.stream,
                &mut rng,
                wsproto::OP_TEXT,
                br#"{"type":"ping"}"#,
            )
            .await
            {
                break End::Error(io_kind(&e));
            }
        }
        let filled = c.filled;
        match c.stream.read(&mut c.buf[filled..]).await {
            Ok(0) => break End::Eof,
            Ok(n) => {
                c.filled += n;
                if local.measuring.get() {
                    local.bytes_in.set(local.bytes_in.get() + n as u64);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => break End::Error(io_kind(&e)),
        }
    };
    finish(local, c.stream, end, Some((room, url)), &mut rng).await;
}

/// Accounts for how a connection ended and closes it.
async fn finish(
    local: &Local,
    stream: TcpStream,
    end: End,
    viewer: Option<(usize, usize)>,
    rng: &mut Rng,
) {
    let stopped = local.stopping.get() || matches!(end, End::Stopped);
    if !stopped {
        local.record_disconnect(end.key());
        if let Some((room, url)) = viewer {
            if !local.measuring.get() && local.shared.go_at_ns.load(Relaxed) == 0 {
                // Gone before the measurement: it is not expected to receive anything.
                local.viewers_per_room.borrow_mut()[room] -= 1;
                if let Some(t) = local.per_target.borrow_mut().get_mut(url) {
                    t.viewers_per_room[room] -= 1;
                }
            }
        }
        if let End::Protocol(why) = end {
            local
                .failure_samples
                .borrow_mut()
                .entry("protocol".into())
                .or_insert_with(|| why.to_string());
        }
    }
    if matches!(end, End::Eof | End::Error(_)) && !stopped {
        local.fds.borrow_mut().remove(&stream.as_raw_fd());
        return;
    }
    close(local, stream, rng).await;
}

/// A publisher: posts at its share of `--rate` from go for `--duration`, on an even
/// schedule with a per-publisher phase so posts interleave; acks and echoes are drained by a
/// reader task on a duplicate descriptor, so sending never waits behind reading.
async fn publisher(local: &Local, c: Conn, p: usize, room: usize) {
    // SAFETY: dup of a socket we own; the new descriptor is owned by the Socket below.
    let dup = unsafe { libc::dup(c.stream.as_raw_fd()) };
    if dup < 0 {
        local.record_disconnect(format!(
            "publisher-{}",
            io_kind(&io::Error::last_os_error())
        ));
        return;
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns; the stream owns it now.
    let reader_stream = unsafe { TcpStream::from_raw_fd(dup) };
    let Conn {
        stream,
        buf,
        start,
        filled,
    } = c;
    let reader = publisher_reader(
        local,
        Conn {
            stream: reader_stream,
            buf,
            start,
            filled,
        },
    );
    futures_lite::future::zip(reader, publisher_writer(local, stream, p, room)).await;
}

/// Sends the app heartbeat if one is due; publishers are silent before go and after their
/// last post, and the server closes connections silent for two heartbeat intervals.
async fn heartbeat_if_due(
    stream: &mut TcpStream,
    rng: &mut Rng,
    last: &mut Instant,
    every: Duration,
) -> io::Result<()> {
    if last.elapsed() >= every {
        *last = Instant::now();
        send_frame(stream, rng, wsproto::OP_TEXT, br#"{"type":"ping"}"#).await?;
    }
    Ok(())
}

async fn publisher_writer(local: &Local, mut stream: TcpStream, p: usize, room: usize) {
    let plan = local.plan();
    let mut rng = Rng::new(unix_ns() ^ ((p as u64) << 20));
    let heartbeat = Duration::from_millis(plan.heartbeat_ms);
    let mut last_ping = Instant::now();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut result = Ok(());
    let go_at = loop {
        if local.stopping.get() {
            break None;
        }
        match local.shared.go_at_ns.load(Relaxed) {
            0 => {
                glommio::timer::sleep(Duration::from_millis(2)).await;
                result = heartbeat_if_due(&mut stream, &mut rng, &mut last_ping, heartbeat).await;
                if result.is_err() {
                    break None;
                }
            }
            ns => break Some(ns),
        }
    };
    if let Some(go_at) = go_at {
        let per_pub = plan.rate / plan.publishers as f64;
        let interval_ns = 1e9 / per_pub;
        let phase_ns = interval_ns * (p as f64 / plan.publishers as f64);
        let end_ns = go_at + plan.duration_ms * 1_000_000;
        let due = |k: u64| go_at + (phase_ns + interval_ns * k as f64) as u64;
        let mut k: u64 = 0;
        let mut text = String::new();
        let mut json = Vec::new();
        let mut out = Vec::new();
        while due(k) < end_ns && !local.stopping.get() {
            let now = unix_ns();
            if due(k) > now {
                glommio::timer::sleep(Duration::from_nanos(due(k) - now)).await;
                continue;
            }
            // Everything due by now goes out in one write, each message its own frame.
            out.clear();
            let send_ns = unix_ns();
            let mut n = 0u64;
            while due(k) <= send_ns && due(k) < end_ns {
                let lag_us = (send_ns - due(k)) / 1000;
                local.lag.borrow_mut().saturating_record(lag_us.max(1));
                marker::message_text(&mut text, plan.run_id, p as u32, k, send_ns, plan.payload);
                json.clear();
                json.extend_from_slice(br#"{"type":"danmaku","text":""#);
                json.extend_from_slice(text.as_bytes());
                json.extend_from_slice(br#""}"#);
                wsproto::encode_frame(&mut out, wsproto::OP_TEXT, &json, rng.next_u64() as u32);
                k += 1;
                n += 1;
            }
            last_ping = Instant::now();
            result = stream.write_all(&out).await;
            if result.is_err() {
                break;
            }
            local.sent_per_room.borrow_mut()[room] += n;
        }
        while result.is_ok() && !local.stopping.get() {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            result = heartbeat_if_due(&mut stream, &mut rng, &mut last_ping, heartbeat).await;
        }
    }
    match result {
        Err(e) if !local.stopping.get() => {
            local.record_disconnect(format!("publisher-{}", io_kind(&e)));
        }
        Err(_) => {}
        Ok(()) => close(local, stream, &mut rng).await,
    }
}

/// Drains what the server sends a publisher: counts acks and errors (keeping one error as a
/// sample, e.g. a rate-limit refusal), ignores its own echoes.
async fn publisher_reader(local: &Local, mut c: Conn) {
    let _ = c.stream.set_read_timeout(None);
    local.fds.borrow_mut().insert(c.stream.as_raw_fd());
    let ack = memchr::memmem::Finder::new(br#""type":"ack""#);
    let err = memchr::memmem::Finder::new(br#""type":"error""#);
    // liveshard writes the code right after the type (docs/protocol.md, error codes); a
    // danmaku text cannot hold this unescaped, so echoes never match.
    let limited = memchr::memmem::Finder::new(RATE_LIMITED_ERROR);
    let end = 'conn: loop {
        let mut acks = 0;
        let steps = drain_frames(&mut c, |payload| {
            acks += ack.find_iter(payload).count() as u64;
            let errors = err.find_iter(payload).count() as u64;
            if errors > 0 {
                let refused = limited.find_iter(payload).count() as u64;
                local
                    .refused_rate_limited
                    .set(local.refused_rate_limited.get() + refused);
                local.server_errors.set(local.server_errors.get() + errors);
                let mut sample = local.server_error_sample.borrow_mut();
                if sample.is_none() {
                    let cut = &payload[..payload.len().min(200)];
                    *sample = Some(String::from_utf8_lossy(cut).into_owned());
                }
            }
        });
        local.acks.set(local.acks.get() + acks);
        let steps = match steps {
            Ok(s) => s,
            Err(e) => break e,
        };
        for step in steps {
            // Pongs to WebSocket pings would have to share the writer's descriptor and
            // could interleave with a partially written post; liveshard and the peers never
            // ping, they rely on the app heartbeat the writer sends.
            if let Step::Close(code) = step {
                break 'conn End::Closed(code);
            }
        }
        if local.stopping.get() {
            break End::Stopped;
        }
        let filled = c.filled;
        match c.stream.read(&mut c.buf[filled..]).await {
            Ok(0) => break End::Eof,
            Ok(n) => c.filled += n,
            Err(e) => break End::Error(io_kind(&e)),
        }
    };
    if !(local.stopping.get() || matches!(end, End::Stopped)) {
        local.record_disconnect(format!("publisher-{}", end.key()));
    }
    local.fds.borrow_mut().remove(&c.stream.as_raw_fd());
}
