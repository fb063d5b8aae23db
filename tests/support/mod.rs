//! Shared helpers for black-box tests: start the real `liveshard` binary on free ports,
//! speak raw HTTP/1.1 to it, and read what a client would see.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_liveshard");

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    /// The ready line's other fields (rtmp=…, driver=…).
    pub ready_line: String,
    stderr: mpsc::Receiver<String>,
    keep_data: bool,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "liveshard-test-{tag}-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

impl Server {
    /// Starts `liveshard serve` on a free HTTP port with a fresh data dir plus `args`.
    pub fn start(args: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "liveshard-data-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        Self::start_in(dir, args)
    }

    /// Like [`Server::start`] with a given data dir (for restarts on the same data).
    pub fn start_in(data_dir: PathBuf, args: &[&str]) -> Server {
        Self::start_with_env(data_dir, args, &[])
    }

    /// Like [`Server::start_in`], with these environment variables set for the server.
    pub fn start_with_env(data_dir: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--http")
            .arg("127.0.0.1:0")
            .arg("--rtmp")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("LIVESHARD_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("liveshard binary starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("LIVESHARD_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) if line.starts_with("liveshard ready") => {
                    let http = field(&line, "http")
                        .expect("ready line has http=")
                        .parse()
                        .unwrap();
                    return Server {
                        child,
                        http,
                        data_dir,
                        ready_line: line,
                        stderr: err_rx,
                        keep_data: false,
                    };
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let log: Vec<String> = err_rx.try_iter().collect();
                    panic!("server did not become ready; stderr:\n{}", log.join("\n"));
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A field of the ready line, e.g. `rtmp`.
    pub fn ready_field(&self, name: &str) -> Option<String> {
        field(&self.ready_line, name)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through the `kill` command keeps tests free of libc.
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.http).expect("connect to server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// One GET on a fresh connection.
    pub fn get(&self, path: &str) -> HttpResponse {
        let mut s = self.connect();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        read_response(&mut BufReader::new(s)).expect("a response")
    }

    /// A request with a body on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut s = self.connect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        read_response(&mut BufReader::new(s)).expect("a response")
    }

    /// Current value of a Prometheus sample (first matching line, labels as written).
    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok())?
        })
    }
}

impl Server {
    /// `kill -9`: no shutdown, no flush. Returns the data dir, which is kept for a restart.
    pub fn crash(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_data = true;
        self.data_dir.clone()
    }

    /// SIGTERM and wait for a clean exit; the data dir is kept for a restart.
    pub fn stop(mut self) -> PathBuf {
        self.signal(15);
        let status = self
            .wait_exit(Duration::from_secs(15))
            .expect("server exits after SIGTERM");
        assert!(status.success(), "clean exit: {status:?}");
        self.keep_data = true;
        self.data_dir.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response (Content-Length or chunked body; HEAD-less). `None` on EOF before a
/// status line.
pub fn read_response<R: Read>(r: &mut BufReader<R>) -> Option<HttpResponse> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 101 || status == 100 {
        return Some(resp);
    }
    if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().ok()?;
        let mut body = vec![0; n];
        r.read_exact(&mut body).ok()?;
        resp.body = body;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let n = usize::from_str_radix(line.trim(), 16).ok()?;
            if n == 0 {
                line.clear();
                r.read_line(&mut line).ok()?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            resp.body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(resp)
}

/// True if the peer closed the connection (EOF) within `timeout`.
/// Shrinks a client socket's receive buffer to 2 KiB (the kernel doubles it), so a client
/// that stops reading backs the server up after a few KiB.
pub fn shrink_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = 2048;
    // SAFETY: setsockopt on a live socket with a pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + timeout;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {
                if Instant::now() > deadline {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A login token for `uid`, minted by `liveshard token` against the server's data dir (the
/// way an operator or loadgen gets one).
pub fn token(server: &Server, uid: &str, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([
            "token",
            "--uid",
            uid,
            "--nick",
            &format!("nick-{uid}"),
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub mod ws {
    //! A blocking WebSocket client (tungstenite over std) for tests.
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::{Message, WebSocket};

    pub struct Client {
        pub ws: WebSocket<TcpStream>,
    }

    /// What `next` saw.
    #[derive(Debug)]
    pub enum Event {
        Json(Value),
        Closed(Option<(u16, String)>),
        Timeout,
    }

    impl Client {
        /// Connects to `/ws?room=ROOM[&token=T]`; Err carries the HTTP status of a refusal.
        pub fn connect(addr: std::net::SocketAddr, query: &str) -> Result<Client, u16> {
            Self::connect_with(addr, query, &[])
        }

        pub fn connect_with(
            addr: std::net::SocketAddr,
            query: &str,
            headers: &[(&str, &str)],
        ) -> Result<Client, u16> {
            let stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Self::upgrade(stream, addr, query, headers)
        }

        /// The WebSocket handshake on a connection already open (to a chosen shard, say).
        pub fn upgrade(
            stream: TcpStream,
            addr: std::net::SocketAddr,
            query: &str,
            headers: &[(&str, &str)],
        ) -> Result<Client, u16> {
            let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
                "ws://{addr}/ws?{query}"
            ))
            .unwrap();
            for (k, v) in headers {
                req.headers_mut().insert(
                    tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            match tungstenite::client(req, stream) {
                Ok((ws, _)) => Ok(Client { ws }),
                Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                    Err(resp.status().as_u16())
                }
                Err(e) => panic!("handshake failed: {e}"),
            }
        }

        pub fn send(&mut self, v: Value) {
            self.ws.send(Message::text(v.to_string())).unwrap();
        }

        pub fn send_raw(&mut self, m: Message) {
            self.ws.send(m).unwrap();
        }

        /// The next JSON message (or close / timeout).
        pub fn next(&mut self, timeout: Duration) -> Event {
            self.ws
                .get_ref()
                .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                .unwrap();
            loop {
                match self.ws.read() {
                    Ok(Message::Text(t)) => {
                        return Event::Json(
                            serde_json::from_str(t.as_str()).expect("server sends JSON"),
                        )
                    }
                    Ok(Message::Close(c)) => {
                        return Event::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string())));
                    }
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Event::Timeout
                    }
                    Err(tungstenite::Error::ConnectionClosed)
                    | Err(tungstenite::Error::AlreadyClosed) => return Event::Closed(None),
                    Err(tungstenite::Error::Io(_)) | Err(tungstenite::Error::Protocol(_)) => {
                        return Event::Closed(None)
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }

        /// Waits for a message of `type` (skipping others), up to `timeout`.
        pub fn expect(&mut self, kind: &str, timeout: Duration) -> Value {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next(left) {
                    Event::Json(v) if v["type"] == kind => return v,
                    Event::Json(_) => continue,
                    other => panic!("waiting for {kind}: got {other:?}"),
                }
            }
        }

        /// Waits for the connection to be closed; returns the close code, if any.
        pub fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    panic!("connection not closed within {timeout:?}");
                }
                match self.next(left) {
                    Event::Closed(c) => return c.map(|c| c.0),
                    Event::Json(_) => continue,
                    Event::Timeout => continue,
                }
            }
        }

        pub fn close(mut self) {
            let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }));
        }
    }
}

/// A minimal HTTP server standing in for an external party (a publish-hook receiver):
/// answers every request with `status` and `body`, and reports each request's JSON body.
pub struct HookServer {
    pub url: String,
    pub requests: mpsc::Receiver<serde_json::Value>,
}

impl HookServer {
    pub fn start(status: u16, body: &'static str) -> HookServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    let mut len = 0usize;
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut b = vec![0; len];
                    let _ = r.read_exact(&mut b);
                    if let Ok(v) = serde_json::from_slice(&b) {
                        let _ = tx.send(v);
                    }
                    let mut w = conn;
                    let _ = write!(
                        w,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        HookServer { url, requests: rx }
    }
}

/// ffmpeg / ffprobe, required: scripts/test.sh installs them.
pub fn require(tool: &str) {
    require_tool(tool, "-version", "ffmpeg");
}

/// Fails the test with a clear message unless `tool version_flag` runs; `package` is what
/// scripts/test.sh installs for it.
pub fn require_tool(tool: &str, version_flag: &str, package: &str) {
    let ok = Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{tool} is not installed: run scripts/test.sh (it installs {package})"
    );
}

/// Reads `s` to its end (the peer closed); the last 16 bytes that came.
pub fn read_tail(s: &mut impl Read) -> Result<Vec<u8>, std::io::Error> {
    let (mut tail, mut buf) = (Vec::new(), [0u8; 16 * 1024]);
    loop {
        match s.read(&mut buf)? {
            0 => return Ok(tail),
            n => {
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
            }
        }
    }
}

/// REST API helpers (JSON calls, envelopes, Server-Sent Events, a valid PNG).
pub mod api;
pub mod media;
pub mod redis;
