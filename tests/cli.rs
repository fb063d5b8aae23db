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
