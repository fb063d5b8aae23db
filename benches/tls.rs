//! What TLS costs the shard that terminates it (`server.https`, `src/tls.rs`), measured on
//! the server's own settings (`TlsFront::load`), in memory (no sockets, so only CPU):
//! - a full handshake (TLS 1.3, X25519), server side only, with an ECDSA P-256
//!   certificate and, when the `openssl` command is there to make one, an RSA-2048 one;
//! - a resumed handshake (a TLS 1.3 ticket from an earlier connection);
//! - encrypting danmaku frames: a 200-byte frame per record, and 16 KiB records (a
//!   corked batch, or media).
//!
//! Printed, not asserted: a benchmark, never a timed test.
//!
//! Run: `cargo bench --bench tls`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveshard::tls::TlsFront;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConnection};

const HANDSHAKES: u32 = 2000;

fn main() {
    let dir = std::env::temp_dir().join(format!("liveshard-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ecdsa = make_ecdsa(&dir);
    println!("server-side CPU per TLS 1.3 handshake ({HANDSHAKES} each), one core:");
    run_kind("ECDSA P-256", &dir, &ecdsa);
    match make_rsa(&dir) {
        Some(rsa) => run_kind("RSA-2048", &dir, &rsa),
        None => println!("  RSA-2048: skipped (no openssl command to make a key)"),
    }
    encrypt_cost(&dir, &ecdsa);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate authority, and a leaf for `localhost` it signed, as PEM files; returns the
/// CA's PEM.
fn make_ecdsa(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A name of its own: the leaf's default one would make it look like the CA.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "liveshard bench CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ecdsa-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("ecdsa-key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// A self-signed RSA-2048 pair for `localhost` made by `openssl` (not a CA: the client
/// trusts it as it is); returns its PEM, or None without the command.
fn make_rsa(dir: &Path) -> Option<String> {
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(dir.join("rsa-key.pem"))
        .arg("-out")
        .arg(dir.join("rsa-cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| std::fs::read_to_string(dir.join("rsa-cert.pem")).unwrap())
}

fn front(dir: &Path, kind: &str) -> TlsFront {
    let name = if kind.starts_with("RSA") {
        "rsa"
    } else {
        "ecdsa"
    };
    TlsFront::load(
        &dir.join(format!("{name}-cert.pem")),
        &dir.join(format!("{name}-key.pem")),
    )
    .unwrap()
}

fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One handshake in memory; returns the time spent in the server's calls, and whether the
/// session was resumed.
fn handshake(
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<ClientConfig>,
) -> (Duration, bool) {
    let mut client = ClientConnection::new(
        client_cfg.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let t = Instant::now();
    let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
    let server_time = t.elapsed() + exchange(&mut client, &mut server);
    let resumed = matches!(
        client.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    (server_time, resumed)
}

/// Passes records both ways until the handshake is over and neither side has anything to
/// send; returns the time spent in the server's calls.
fn exchange(client: &mut ClientConnection, server: &mut ServerConnection) -> Duration {
    let mut server_time = Duration::ZERO;
    let mut wire = Vec::new();
    while client.is_handshaking() || server.is_handshaking() || server.wants_write() {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let t = Instant::now();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        server_time += t.elapsed();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        if wire.is_empty() && !client.wants_write() {
            break;
        }
    }
    server_time
}

fn run_kind(kind: &str, dir: &Path, ca_pem: &str) {
    let server_cfg = front(dir, kind).server_config();
    // Full: a client with no session to resume (a fresh config each time would also cost
    // client setup; resumption is off instead).
    let mut full_cfg = (*client_config(ca_pem)).clone();
    full_cfg.resumption = rustls::client::Resumption::disabled();
    let full_cfg = Arc::new(full_cfg);
    let mut total = Duration::ZERO;
    for _ in 0..HANDSHAKES {
        let (t, resumed) = handshake(&server_cfg, &full_cfg);
        assert!(!resumed);
        total += t;
    }
    let full = total / HANDSHAKES;
    // Resumed: one client config keeps the tickets of its earlier handshakes.
    let resuming = client_config(ca_pem);
    handshake(&server_cfg, &resuming);
    let (mut total, mut n) = (Duration::ZERO, 0u32);
    for _ in 0..HANDSHAKES {
        let (t, resumed) = handshake(&server_cfg, &resuming);
        if resumed {
            total += t;
            n += 1;
        }
    }
    let resumed = if n > 0 {
        format!("{:.0} µs", (total / n).as_secs_f64() * 1e6)
    } else {
        "no resumption".to_string()
    };
    println!(
        "  {kind:12} full {:>6.0} µs ({:>5.0}/s per core)   resumed {resumed} ({n} of {HANDSHAKES})",
        full.as_secs_f64() * 1e6,
        1.0 / full.as_secs_f64(),
    );
}

/// Encrypting what the pump sends: `frame`-byte writes into rustls, then the records out.
fn encrypt_cost(dir: &Path, ca_pem: &str) {
    let server_cfg = front(dir, "ECDSA").server_config();
    let client_cfg = client_config(ca_pem);
    let mut client =
        ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut server = ServerConnection::new(server_cfg).unwrap();
    exchange(&mut client, &mut server);
    assert!(!server.is_handshaking());
    println!(
        "encrypting on the server ({:?}):",
        server.negotiated_cipher_suite().map(|s| s.suite())
    );
    for (label, frame, count) in [
        ("200 B frames", 200usize, 200_000u32),
        ("16 KiB records", 16 * 1024, 20_000),
    ] {
        let payload = vec![b'x'; frame];
        let mut out = Vec::with_capacity(64 * 1024);
        let t = Instant::now();
        for _ in 0..count {
            server.writer().write_all(&payload).unwrap();
            out.clear();
            server.write_tls(&mut out).unwrap();
        }
        let el = t.elapsed();
        let per = el / count;
        let gbps = (frame as f64 * count as f64 * 8.0) / el.as_secs_f64() / 1e9;
        println!(
            "  {label:15} {:>7.0} ns per write, {gbps:.2} Gbit/s of plaintext per core",
            per.as_secs_f64() * 1e9
        );
    }
}
