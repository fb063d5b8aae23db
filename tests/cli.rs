//! The command line: `config check` on good and bad configurations.

mod support;

use std::process::Command;

use support::{TempDir, BIN};

fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("config").arg("check").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("LIVESHARD_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_the_effective_config_with_precedence() {
    let dir = TempDir::new("cfg");
    let file = dir.0.join("ok.toml");
    std::fs::write(
        &file,
        "[server]\nshards = 2\nhttp = \"127.0.0.1:9000\"\n[http]\nidle_timeout_ms = 1234\n",
    )
    .unwrap();
    let (code, out, err) = check(
        &[
            "--config",
            file.to_str().unwrap(),
            "--http",
            "127.0.0.1:9100",
        ],
        &[
            ("LIVESHARD_SHARDS", "3"),
            ("LIVESHARD_HTTP", "127.0.0.1:9050"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shards = 3"), "env beats file:\n{out}");
    assert!(
        out.contains("http = \"127.0.0.1:9100\""),
        "flag beats env:\n{out}"
    );
    assert!(
        out.contains("idle_timeout_ms = 1234"),
        "file beats defaults:\n{out}"
    );
}

#[test]
fn config_check_reports_each_bad_key() {
    let dir = TempDir::new("cfg");
    let file = dir.0.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nshardz = 4\n[http]\nmax_headers = \"lots\"\n",
    )
    .unwrap();
    let (code, out, err) = check(
        &[
            "--config",
            file.to_str().unwrap(),
            "--set",
            "log.level=loud",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("server.shardz") && err.contains("unknown key"),
        "{err}"
    );
    assert!(
        err.contains("http.max_headers") && err.contains("expected integer"),
        "{err}"
    );
    // Type errors stop before value checks, so log.level is reported once the file is fixed.
    std::fs::write(&file, "[server]\nshards = 4\n").unwrap();
    let (code, _, err) = check(
        &[
            "--config",
            file.to_str().unwrap(),
            "--set",
            "log.level=loud",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("log.level"), "{err}");
}

#[test]
fn config_check_reports_a_missing_file_and_bad_toml() {
    let (code, _, err) = check(&["--config", "/nonexistent/liveshard.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read config file"), "{err}");
    let dir = TempDir::new("cfg");
    let file = dir.0.join("broken.toml");
    std::fs::write(&file, "[server\nshards = ").unwrap();
    let (code, _, err) = check(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn serve_refuses_to_start_on_a_bad_config() {
    let out = Command::new(BIN)
        .args(["serve", "--shards", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.shards"));
}

#[test]
fn config_check_warns_about_an_unknown_liveshard_variable_and_still_succeeds() {
    let (code, out, err) = check(
        &[],
        &[
            ("LIVESHARD_JWT_SECRETT", "0123456789abcdef0123"),
            // Read by the test harness and the tuning scripts, not settings: no warning.
            ("LIVESHARD_TEST_LOG", "1"),
            ("LIVESHARD_TUNING_STATE", "/tmp/x"),
        ],
    );
    assert_eq!(code, 0, "a warning is not an error: {err}");
    assert!(
        out.contains("[server]"),
        "the config is still printed:\n{out}"
    );
    assert!(
        err.contains("LIVESHARD_JWT_SECRETT") && err.contains("did you mean LIVESHARD_JWT_SECRET?"),
        "{err}"
    );
    assert!(!err.contains("LIVESHARD_TEST_LOG"), "{err}");
    assert!(!err.contains("LIVESHARD_TUNING_STATE"), "{err}");
    // Known names (aliases and derived ones) are not warned about.
    let (code, _, err) = check(
        &[],
        &[
            ("LIVESHARD_JWT_SECRET", "0123456789abcdef0123"),
            ("LIVESHARD_HTTP_IDLE_TIMEOUT_MS", "5000"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn serve_warns_at_start_about_an_unknown_liveshard_variable() {
    use std::io::BufRead as _;
    let dir = TempDir::new("envwarn");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--http",
        "127.0.0.1:0",
        "--rtmp",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(&dir.0)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("LIVESHARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LIVESHARD_PUSH_KEYY", "typo");
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = support::eventually(std::time::Duration::from_secs(10), || {
        rx.try_iter().find(|l| l.contains("LIVESHARD_PUSH_KEYY"))
    });
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a warning naming the variable");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("did you mean LIVESHARD_PUSH_KEY?"), "{line}");
}

fn sign(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("sign").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("LIVESHARD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sign_refuses_a_zero_ttl_instead_of_printing_an_expired_url() {
    let dir = TempDir::new("sign");
    let data = dir.0.to_str().unwrap();
    let (code, out, err) = sign(&["--stream", "s1", "--ttl", "0", "--data-dir", data]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "no URL printed: {out}");
    assert!(err.contains("--ttl must be at least 1"), "{err}");
    let (code, out, err) = sign(&["--stream", "s1", "--ttl", "1", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("txSecret="), "{out}");
    // A configured TTL of 0 is refused by the config check.
    let (code, _, err) = check(&["--set", "media.push_url_ttl_secs=0"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("media.push_url_ttl_secs"), "{err}");
}

fn secret_of(url: &str) -> String {
    url.split("txSecret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn sign_play_uses_a_play_key_of_its_own() {
    let dir = TempDir::new("sign");
    let data = dir.0.to_str().unwrap();
    let (code, push, err) = sign(&["--stream", "s1", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    let (code, play, err) = sign(&["--stream", "s1", "--play", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(secret_of(&push), secret_of(&play), "{push} / {play}");
    let push_key = std::fs::read(dir.0.join("push.key")).unwrap();
    let play_key = std::fs::read(dir.0.join("play.key")).unwrap();
    assert!(play_key.len() >= 32);
    assert_ne!(push_key, play_key);
    // The same key for both is refused, wherever it comes from.
    let (code, _, err) = check(
        &[
            "--set",
            "media.push_key=samesamesame",
            "--set",
            "media.play_key=samesamesame",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("media.play_key"), "{err}");
    let file_key = String::from_utf8(push_key).unwrap();
    let (code, out, err) = sign(&[
        "--stream",
        "s1",
        "--play",
        "--data-dir",
        data,
        "--set",
        &format!("media.play_key={file_key}"),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("must differ from the push key"), "{err}");
}
