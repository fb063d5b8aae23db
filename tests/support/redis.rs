//! Real Redis for cluster tests: one `redis-server` ([`RedisServer`]) or a three-master
//! Redis Cluster ([`RedisCluster`]), on free loopback ports, in temporary directories, with
//! no persistence; killed when dropped. `scripts/test.sh` installs `redis-server` and
//! `redis-cli`.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{eventually, TempDir};

/// Fails the test with a clear message unless redis-server and redis-cli run.
pub fn require_redis() {
    super::require_tool("redis-server", "--version", "redis-server");
    super::require_tool("redis-cli", "--version", "redis-tools");
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `redis-cli -p PORT args…`, its output.
pub fn cli(port: u16, args: &[&str]) -> Output {
    cli_auth(port, None, args)
}

fn cli_auth(port: u16, password: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(pw) = password {
        cmd.args(["-a", pw, "--no-auth-warning"]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs")
}

fn cli_text(port: u16, args: &[&str]) -> String {
    auth_text(port, None, args)
}

fn auth_text(port: u16, password: Option<&str>, args: &[&str]) -> String {
    String::from_utf8_lossy(&cli_auth(port, password, args).stdout)
        .trim()
        .to_string()
}

fn pings(port: u16, password: Option<&str>) -> bool {
    auth_text(port, password, &["PING"]) == "PONG"
}

/// Starts `redis-server` on `port` in `dir` with `extra` options; `None` if it exits at
/// once (the port was taken meanwhile).
fn spawn(port: u16, dir: &TempDir, extra: &[&str]) -> Option<Child> {
    let password = extra
        .iter()
        .position(|a| *a == "--requirepass")
        .and_then(|i| extra.get(i + 1).copied());
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir.0)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let up = eventually(Duration::from_secs(10), || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        pings(port, password).then_some(true)
    });
    if up == Some(true) {
        Some(child)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// Starts a server on a free port (trying a few), `extra` options added.
fn start_one(dir: &TempDir, extra: impl Fn(u16) -> Vec<String>) -> (u16, Child) {
    for _ in 0..10 {
        let port = free_port();
        let extra = extra(port);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        if let Some(child) = spawn(port, dir, &extra) {
            return (port, child);
        }
    }
    panic!("redis-server did not start on any of 10 free ports");
}

/// One `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    password: Option<String>,
    /// TLS: its port, certificate and key files (the plain port stays, for `cli`).
    tls: Option<(u16, String, String)>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_inner(None)
    }

    /// A server that requires `password` (`requirepass`); [`RedisServer::url`] carries it.
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_inner(Some(password.to_string()))
    }

    /// A server that also speaks TLS on a port of its own, with this certificate and key
    /// (PEM files); [`RedisServer::tls_url`] names it.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let tls = (
            free_port(),
            cert.display().to_string(),
            key.display().to_string(),
        );
        Self::start_with(None, Some(tls))
    }

    fn start_inner(password: Option<String>) -> RedisServer {
        Self::start_with(password, None)
    }

    fn start_with(password: Option<String>, tls: Option<(u16, String, String)>) -> RedisServer {
        require_redis();
        let dir = TempDir::new("redis");
        let extra = Self::extra(&password, &tls);
        let (port, child) = start_one(&dir, |_| extra.clone());
        RedisServer {
            port,
            child: Some(child),
            dir,
            password,
            tls,
        }
    }

    fn extra(password: &Option<String>, tls: &Option<(u16, String, String)>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(pw) = password {
            out.extend(["--requirepass".into(), pw.clone()]);
        }
        if let Some((port, cert, key)) = tls {
            out.extend([
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.clone(),
                "--tls-key-file".into(),
                key.clone(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
        }
        out
    }

    /// `rediss://localhost:PORT` of a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        let (port, ..) = self.tls.as_ref().expect("started with TLS");
        format!("rediss://localhost:{port}")
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (nothing is kept: no persistence) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) {
        self.stop();
        let extra = Self::extra(&self.password, &self.tls);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let up = eventually(Duration::from_secs(10), || {
            spawn(self.port, &self.dir, &extra)
        });
        self.child = Some(up.expect("redis-server restarts on its port"));
    }

    /// `redis-cli` against this server: its trimmed standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        auth_text(self.port, self.password.as_deref(), args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `n` masters (no replicas).
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        require_redis();
        let dir = TempDir::new("redis-cluster");
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for _ in 0..n {
            let conf_dir = dir.0.clone();
            let (port, child) = start_one(&dir, move |port| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf_dir
                        .join(format!("nodes-{port}.conf"))
                        .display()
                        .to_string(),
                    "--cluster-node-timeout".into(),
                    "5000".into(),
                ]
            });
            ports.push(port);
            children.push(child);
        }
        let mut cluster = RedisCluster {
            ports,
            children,
            _dir: dir,
        };
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.push("--cluster-yes");
        let out = cli(cluster.ports[0], &args);
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = eventually(Duration::from_secs(30), || {
            cluster
                .ports
                .iter()
                .all(|p| cli_text(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                .then_some(())
        });
        if ok.is_none() {
            cluster.stop();
            panic!("the Redis Cluster did not reach cluster_state:ok");
        }
        cluster
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// `redis-cli -c` (following redirections) from the first node: trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        cli_text(self.ports[0], &all)
    }

    pub fn stop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
