//! Black-box tests of `tuning/`: the scripts an operator runs to prepare a machine for a million
//! connections (check.sh, apply.sh, revert.sh, irq-affinity.sh) and the files they install.
//!
//! Every test builds a fake `/proc`, `/sys` and `/etc` under a temporary directory and points the
//! scripts at it through the `LIVESHARD_TUNING_*` variables, so the test decides the "current"
//! values and nothing here ever reads or writes the real `/proc/sys`. Assertions are on what a
//! person would see: the rows of the report, the printed commands, exit statuses, and the values
//! left in the fake tree.
//!
//! Plain std so it also runs outside cargo:
//! `rustc --edition 2021 --test tests/tuning.rs -o /tmp/tuning_test && CARGO_MANIFEST_DIR=$PWD /tmp/tuning_test`

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

// ------------------------------------------------------------------------------------------------
// Helpers

fn repo_root() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = option_env!("CARGO_MANIFEST_DIR") {
        return PathBuf::from(dir);
    }
    let mut dir = std::env::current_dir().expect("current dir");
    loop {
        if dir.join("tuning/settings.conf").is_file() {
            return dir;
        }
        assert!(
            dir.pop(),
            "cannot find the repository root; set CARGO_MANIFEST_DIR"
        );
    }
}

fn tuning_dir() -> PathBuf {
    repo_root().join("tuning")
}

/// One row of tuning/settings.conf.
#[derive(Debug, Clone)]
struct Setting {
    kind: String,
    key: String,
    recommended: String,
    rule: String,
}

fn settings() -> Vec<Setting> {
    let text = fs::read_to_string(tuning_dir().join("settings.conf")).expect("read settings.conf");
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = t.split('|').map(str::trim).collect();
        assert!(
            cols.len() >= 4,
            "settings.conf row has too few columns: {line}"
        );
        out.push(Setting {
            kind: cols[0].to_string(),
            key: cols[1].to_string(),
            recommended: squeeze(cols[2]),
            rule: squeeze(cols[3]),
        });
    }
    assert!(out.len() >= 15, "settings.conf lost rows: {}", out.len());
    out
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn recommended(key: &str) -> String {
    settings()
        .into_iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("{key} missing from settings.conf"))
        .recommended
}

/// 64 GiB of RAM and 4 KiB pages make tcp_mem's recommendation RAM/16, RAM/8, RAM/4 in pages.
const MEM_TOTAL_KIB: u64 = 64 * 1024 * 1024;
const TCP_MEM_FOR_64_GIB: &str = "1048576 2097152 4194304";

/// What a freshly booted kernel typically has (vectors separated by tabs, as the kernel prints).
const UNTUNED: &[(&str, &str)] = &[
    ("fs.file-max", "2466174"),
    ("fs.nr_open", "1048576"),
    ("net.core.somaxconn", "4096"),
    ("net.ipv4.tcp_max_syn_backlog", "2048"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.core.netdev_max_backlog", "1000"),
    ("net.ipv4.ip_local_port_range", "32768\t60999"),
    ("net.ipv4.tcp_tw_reuse", "2"),
    ("net.ipv4.tcp_fin_timeout", "60"),
    ("net.ipv4.tcp_max_orphans", "131072"),
    ("net.ipv4.tcp_mem", "287898\t383866\t575796"),
    ("net.ipv4.tcp_rmem", "4096\t131072\t6291456"),
    ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
    ("fs.epoll.max_user_watches", "5491489"),
    ("kernel.io_uring_disabled", "0"),
    ("net.netfilter.nf_conntrack_max", "262144"),
    ("net.netfilter.nf_conntrack_buckets", "65536"),
    ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "120"),
];

fn limits_file(nofile_soft: &str, nofile_hard: &str, memlock: &str) -> String {
    format!(
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max cpu time              unlimited            unlimited            seconds   \n\
         Max open files            {nofile_soft:<20} {nofile_hard:<20} files     \n\
         Max locked memory         {memlock:<20} {memlock:<20} bytes     \n"
    )
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fake machine: proc/, sys/, etc/ and a state file, all under one temporary directory.
struct Fake {
    root: PathBuf,
}

impl Fake {
    fn new(name: &str) -> Fake {
        let root = std::env::temp_dir().join(format!(
            "liveshard-tuning-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("proc/sys")).unwrap();
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::create_dir_all(root.join("sys")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("proc/meminfo"),
            format!("MemTotal:       {MEM_TOTAL_KIB} kB\nMemFree:        1000 kB\n"),
        )
        .unwrap();
        let fake = Fake { root };
        fake.set_limits("1024", "524288", "8388608");
        fake
    }

    fn untuned(name: &str) -> Fake {
        let fake = Fake::new(name);
        for (key, value) in UNTUNED {
            fake.set_sysctl(key, value);
        }
        fake
    }

    /// Every setting exactly at its recommendation, process limits included.
    fn tuned(name: &str) -> Fake {
        let fake = Fake::new(name);
        for s in settings() {
            match s.kind.as_str() {
                "sysctl" | "sysctl-advise" => {
                    let value = if s.recommended == "auto" {
                        TCP_MEM_FOR_64_GIB.to_string()
                    } else {
                        s.recommended.replace(' ', "\t")
                    };
                    fake.set_sysctl(&s.key, &value);
                }
                "rlimit" => {}
                other => panic!("unknown kind {other}"),
            }
        }
        fake.set_limits("1048576", "1048576", "unlimited");
        fake
    }

    fn sysctl_path(&self, key: &str) -> PathBuf {
        self.root.join("proc/sys").join(key.replace('.', "/"))
    }

    fn set_sysctl(&self, key: &str, value: &str) {
        let path = self.sysctl_path(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
    }

    fn remove_sysctl(&self, key: &str) {
        fs::remove_file(self.sysctl_path(key)).unwrap();
    }

    fn sysctl(&self, key: &str) -> String {
        squeeze(&fs::read_to_string(self.sysctl_path(key)).unwrap())
    }

    fn set_limits(&self, soft: &str, hard: &str, memlock: &str) {
        fs::write(
            self.root.join("proc/self/limits"),
            limits_file(soft, hard, memlock),
        )
        .unwrap();
    }

    fn state(&self) -> PathBuf {
        self.root.join("state/previous.conf")
    }

    fn etc(&self, rel: &str) -> PathBuf {
        self.root.join("etc").join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// The script with every LIVESHARD_TUNING_* variable pointing into this fake tree, set
    /// explicitly so nothing from the caller's environment can lead to the real /proc/sys.
    fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(tuning_dir().join(script));
        cmd.args(args)
            .env("LIVESHARD_TUNING_PROC", self.root.join("proc"))
            .env("LIVESHARD_TUNING_SYSCTL_ROOT", self.root.join("proc/sys"))
            .env("LIVESHARD_TUNING_SYS", self.root.join("sys"))
            .env("LIVESHARD_TUNING_ETC", self.root.join("etc"))
            .env("LIVESHARD_TUNING_STATE", self.state())
            .env("LIVESHARD_TUNING_PAGESIZE", "4096")
            .current_dir(repo_root());
        cmd
    }

    fn run(&self, script: &str, args: &[&str]) -> Run {
        Run::from(self.command(script, args).output().expect("run script"))
    }

    /// Lets an unprivileged user read the whole tree (whatever the umask was).
    fn open_to_all(&self) {
        fn walk(dir: &Path) {
            chmod(dir, 0o755);
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path);
                } else {
                    chmod(&path, 0o644);
                }
            }
        }
        walk(&self.root);
    }

    /// Every file under the fake tree with its exact content, to prove a run changed nothing.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(
                        path.clone(),
                        String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned(),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &mut out);
        out
    }

    /// The snapshot as the kernel would show it: a written "32768 60999" reads back with a tab,
    /// so values are compared with their blanks squeezed.
    fn values(&self) -> BTreeMap<PathBuf, String> {
        self.snapshot()
            .into_iter()
            .map(|(k, v)| (k, squeeze(&v)))
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A finished run: exit code and stdout+stderr together, as a terminal would show them.
struct Run {
    code: i32,
    out: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&o.stderr));
        Run {
            code: o.status.code().unwrap_or(-1),
            out,
        }
    }
}

impl Run {
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit status {} (wanted {code}); output:\n{}",
            self.code, self.out
        );
        self
    }

    fn expect_contains(&self, needle: &str) -> &Run {
        assert!(
            self.out.contains(needle),
            "output lacks {needle:?}; output:\n{}",
            self.out
        );
        self
    }

    fn expect_lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.out.contains(needle),
            "output has {needle:?}; output:\n{}",
            self.out
        );
        self
    }

    /// The report row for a setting: the line that starts with its name.
    fn row(&self, name: &str) -> String {
        self.out
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with("  "))
            .unwrap_or_else(|| panic!("no row for {name:?}; output:\n{}", self.out))
            .to_string()
    }
}

/// The row's columns, split on runs of two or more spaces.
fn columns(row: &str) -> Vec<String> {
    row.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .expect("Uid line")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs the command as an unprivileged user: as is when we are not root, through setpriv as
/// "nobody" when we are. None when neither is possible.
fn unprivileged(cmd: Command) -> Option<Command> {
    if euid() != 0 {
        return Some(cmd);
    }
    if !on_path("setpriv") {
        return None;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    wrapped.arg(cmd.get_program());
    wrapped.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    wrapped.current_dir(repo_root());
    Some(wrapped)
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// ------------------------------------------------------------------------------------------------
// check.sh

#[test]
fn check_prints_a_row_per_setting_and_fails_on_an_untuned_machine() {
    let fake = Fake::untuned("check-untuned");
    let run = fake.run("check.sh", &[]);
    run.expect_code(1)
        .expect_contains("SETTING")
        .expect_contains("RECOMMENDED");

    for s in settings() {
        let name = match s.kind.as_str() {
            "rlimit" => format!("{} (this shell)", s.key.replace('.', " ")),
            _ => s.key.clone(),
        };
        let row = run.row(&name);
        let status = columns(&row).last().cloned().unwrap();
        assert!(
            ["OK", "DIFF", "n/a"].contains(&status.as_str()),
            "bad status in {row:?}"
        );
        assert!(
            columns(&row).contains(&s.rule),
            "row lacks the rule {:?}: {row:?}",
            s.rule
        );
        if s.kind != "rlimit" && s.recommended != "auto" {
            assert!(
                row.contains(&s.recommended),
                "row lacks the recommendation: {row:?}"
            );
        }
    }

    let somaxconn = columns(&run.row("net.core.somaxconn"));
    assert_eq!(
        somaxconn,
        ["net.core.somaxconn", "4096", "65535", ">=", "DIFF"]
    );
    let ports = columns(&run.row("net.ipv4.ip_local_port_range"));
    assert_eq!(
        ports[1], "32768 60999",
        "tabs from the kernel are shown as spaces"
    );
    assert_eq!(ports.last().unwrap(), "DIFF");
    let tcp_mem = columns(&run.row("net.ipv4.tcp_mem"));
    assert_eq!(
        tcp_mem[2], TCP_MEM_FOR_64_GIB,
        "tcp_mem is sized from MemTotal"
    );
    assert_eq!(
        columns(&run.row("net.ipv4.tcp_syncookies")).last().unwrap(),
        "OK"
    );
    let nofile = columns(&run.row("nofile soft (this shell)"));
    assert_eq!(nofile[1..], ["1024", "1048576", ">=", "DIFF"]);
    let memlock = columns(&run.row("memlock (this shell)"));
    assert_eq!(memlock[1..], ["8 MiB", "unlimited", ">=", "DIFF"]);
    run.expect_contains("Why the differing ones matter")
        .expect_contains("apply.sh --dry-run");
}

#[test]
fn check_passes_when_every_setting_matches() {
    let fake = Fake::tuned("check-tuned");
    let run = fake.run("check.sh", &[]);
    run.expect_code(0)
        .expect_lacks("DIFF")
        .expect_contains("match the recommendations");
    fake.run("check.sh", &["--quiet"]).expect_code(0);
}

#[test]
fn check_counts_values_beyond_the_recommendation_as_ok() {
    let fake = Fake::tuned("check-beyond");
    // systemd raises file-max to LONG_MAX; some kernels print ULONG_MAX (beyond i64).
    fake.set_sysctl("fs.file-max", "9223372036854775807");
    fake.set_sysctl("fs.nr_open", "18446744073709551615");
    fake.set_sysctl("net.ipv4.tcp_fin_timeout", "10");
    fake.set_sysctl("net.ipv4.ip_local_port_range", "1024\t65535");
    fake.set_sysctl("net.ipv4.tcp_rmem", "4096\t87380\t33554432");
    fake.run("check.sh", &[])
        .expect_code(0)
        .expect_lacks("DIFF");

    // ...but one component on the wrong side of its rule is a difference.
    fake.set_sysctl("net.ipv4.tcp_rmem", "4096\t1048576\t33554432");
    let run = fake.run("check.sh", &[]);
    run.expect_code(1);
    assert_eq!(
        columns(&run.row("net.ipv4.tcp_rmem")).last().unwrap(),
        "DIFF"
    );
}

#[test]
fn check_reports_a_missing_sysctl_as_not_present_not_as_an_error() {
    let fake = Fake::tuned("check-missing");
    fake.remove_sysctl("net.netfilter.nf_conntrack_max");
    fake.remove_sysctl("kernel.io_uring_disabled");
    let run = fake.run("check.sh", &[]);
    run.expect_code(0).expect_contains("2 not present here");
    let row = run.row("net.netfilter.nf_conntrack_max");
    assert!(row.contains("n/a (not present here)"), "{row:?}");
    assert_eq!(columns(&row).last().unwrap(), "n/a");
}

#[test]
fn check_json_lists_the_same_verdicts() {
    let fake = Fake::untuned("check-json");
    let run = fake.run("check.sh", &["--json"]);
    run.expect_code(1);
    let text = run.out.trim();
    assert!(
        text.starts_with('{') && text.ends_with('}'),
        "not one JSON object: {text}"
    );
    run.expect_contains(r#""ok":false"#).expect_contains(
        r#"{"setting":"net.core.somaxconn","source":"sysctl","current":"4096","recommended":"65535","rule":">=","status":"DIFF""#,
    );
    let tuned = Fake::tuned("check-json-ok");
    tuned
        .run("check.sh", &["--json"])
        .expect_code(0)
        .expect_contains(r#""ok":true,"differ":0"#);
}

#[test]
fn check_reads_the_installed_unit_and_limits_d() {
    let fake = Fake::tuned("check-installed");
    let unit = fs::read_to_string(tuning_dir().join("liveshard.service")).unwrap();
    let limits = fs::read_to_string(tuning_dir().join("limits.d/90-liveshard.conf")).unwrap();
    fake.write("etc/systemd/system/liveshard.service", &unit);
    fake.write("etc/security/limits.d/90-liveshard.conf", &limits);
    let run = fake.run("check.sh", &[]);
    run.expect_code(0);
    for name in [
        "nofile soft (liveshard.service)",
        "nofile hard (liveshard.service)",
        "memlock (liveshard.service)",
        "nofile soft (limits.d)",
        "nofile hard (limits.d)",
        "memlock (limits.d)",
    ] {
        assert_eq!(columns(&run.row(name)).last().unwrap(), "OK", "{name}");
    }

    // An override drop-in that lowers the limit is caught.
    fake.write(
        "etc/systemd/system/liveshard.service.d/override.conf",
        "[Service]\nLimitNOFILE=4096:65536\n",
    );
    let run = fake.run("check.sh", &[]);
    run.expect_code(1);
    assert_eq!(
        columns(&run.row("nofile soft (liveshard.service)"))[1..],
        ["4096", "1048576", ">=", "DIFF"]
    );
    assert_eq!(
        columns(&run.row("nofile hard (liveshard.service)"))[1],
        "65536"
    );
}

// ------------------------------------------------------------------------------------------------
// apply.sh and revert.sh

#[test]
fn apply_dry_run_prints_the_commands_and_changes_nothing() {
    let fake = Fake::untuned("apply-dry-run");
    let before = fake.snapshot();
    let run = fake.run("apply.sh", &["--dry-run", "--persist"]);
    run.expect_code(0)
        .expect_contains("Dry run: nothing was changed");
    let somaxconn = fake.sysctl_path("net.core.somaxconn");
    run.expect_contains(&format!("+ echo 65535 > {}", somaxconn.display()))
        .expect_contains(&format!(
            "+ echo '10000 65535' > {}",
            fake.sysctl_path("net.ipv4.ip_local_port_range").display()
        ))
        .expect_contains(&format!("+ echo '{TCP_MEM_FOR_64_GIB}' > "))
        .expect_contains(&fake.etc("sysctl.d/90-liveshard.conf").display().to_string())
        .expect_contains(
            &fake
                .etc("security/limits.d/90-liveshard.conf")
                .display()
                .to_string(),
        )
        .expect_contains("would save previous values to");
    // Already-fine settings are not touched, not even in the plan.
    run.expect_lacks("tcp_syncookies:");
    assert_eq!(
        before,
        fake.snapshot(),
        "--dry-run changed files under the fake root"
    );
    assert!(!fake.state().exists(), "--dry-run wrote a state file");
}

#[test]
fn apply_dry_run_works_without_root() {
    let fake = Fake::untuned("apply-dry-run-user");
    fake.open_to_all();
    let before = fake.snapshot();
    let Some(mut cmd) = unprivileged(fake.command("apply.sh", &["--dry-run", "--persist"])) else {
        eprintln!("skipped: running as root and setpriv is not installed");
        return;
    };
    let run = Run::from(cmd.output().unwrap());
    run.expect_code(0)
        .expect_contains("+ echo 65535 > ")
        .expect_lacks("permission denied")
        .expect_lacks("error:");
    assert_eq!(before, fake.snapshot());
}

#[test]
fn apply_sets_values_saves_the_old_ones_and_revert_restores_them() {
    let fake = Fake::untuned("apply-revert");
    fake.write(
        "etc/security/limits.d/90-liveshard.conf",
        "# an older file that was already there\n",
    );
    let before = fake.values();

    let run = fake.run("apply.sh", &["--persist"]);
    run.expect_code(0)
        .expect_contains("saved previous values to")
        .expect_contains("Done:");
    assert_eq!(fake.sysctl("net.core.somaxconn"), "65535");
    assert_eq!(fake.sysctl("net.ipv4.ip_local_port_range"), "10000 65535");
    assert_eq!(fake.sysctl("net.ipv4.tcp_mem"), TCP_MEM_FOR_64_GIB);
    assert_eq!(fake.sysctl("net.ipv4.tcp_fin_timeout"), "15");
    assert_eq!(
        fake.sysctl("net.netfilter.nf_conntrack_max"),
        recommended("net.netfilter.nf_conntrack_max")
    );

    let state = fs::read_to_string(fake.state()).expect("state file written");
    assert!(
        state.contains("sysctl\tnet.core.somaxconn\t4096\n"),
        "{state}"
    );
    assert!(
        state.contains("sysctl\tnet.ipv4.ip_local_port_range\t32768 60999\n"),
        "{state}"
    );
    assert!(
        !state.contains("tcp_syncookies"),
        "unchanged settings are not recorded: {state}"
    );

    let dropin = fake.read("etc/sysctl.d/90-liveshard.conf");
    assert!(
        dropin.contains(&format!("\nnet.ipv4.tcp_mem = {TCP_MEM_FOR_64_GIB}\n")),
        "{dropin}"
    );
    assert!(
        dropin.contains("\nnet.core.somaxconn = 65535\n"),
        "{dropin}"
    );
    let limits = fake.read("etc/security/limits.d/90-liveshard.conf");
    assert_eq!(
        limits,
        fs::read_to_string(tuning_dir().join("limits.d/90-liveshard.conf")).unwrap()
    );

    // Every sysctl now checks OK (this shell's limits are not something apply can change).
    let check = fake.run("check.sh", &[]);
    for s in settings().iter().filter(|s| s.kind != "rlimit") {
        assert_eq!(
            columns(&check.row(&s.key)).last().unwrap(),
            "OK",
            "{}",
            check.row(&s.key)
        );
    }

    // A second apply finds nothing to do and keeps the original values.
    fake.run("apply.sh", &["--persist"]).expect_code(0);
    assert_eq!(fs::read_to_string(fake.state()).unwrap(), state);

    fake.run("revert.sh", &[])
        .expect_code(0)
        .expect_contains("Done:");
    assert_eq!(
        before,
        fake.values(),
        "revert.sh did not restore exactly what was there"
    );
    assert!(!fake.state().exists());
}

#[test]
fn apply_never_lowers_what_is_already_better() {
    let fake = Fake::untuned("apply-merge");
    fake.set_sysctl("fs.file-max", "9223372036854775807");
    fake.set_sysctl("net.ipv4.tcp_mem", "100\t9999999\t300");
    fake.set_sysctl("net.ipv4.tcp_rmem", "4096\t131072\t33554432");
    fake.run("apply.sh", &["--persist"]).expect_code(0);
    assert_eq!(fake.sysctl("fs.file-max"), "9223372036854775807");
    assert_eq!(fake.sysctl("net.ipv4.tcp_mem"), "1048576 9999999 4194304");
    assert_eq!(fake.sysctl("net.ipv4.tcp_rmem"), "4096 131072 33554432");
    let dropin = fake.read("etc/sysctl.d/90-liveshard.conf");
    assert!(
        dropin.contains("\nfs.file-max = 9223372036854775807\n"),
        "the drop-in would lower it: {dropin}"
    );
    assert!(
        dropin.contains("\nnet.ipv4.tcp_mem = 1048576 9999999 4194304\n"),
        "{dropin}"
    );
}

#[test]
fn revert_after_two_applies_restores_the_values_from_before_the_first() {
    let fake = Fake::untuned("apply-twice");
    fake.run("apply.sh", &[]).expect_code(0);
    fake.set_sysctl("net.core.somaxconn", "128"); // someone changed it in between
    fake.run("apply.sh", &[]).expect_code(0);
    assert_eq!(fake.sysctl("net.core.somaxconn"), "65535");
    fake.run("revert.sh", &[]).expect_code(0);
    assert_eq!(fake.sysctl("net.core.somaxconn"), "4096");
}

#[test]
fn apply_skips_settings_not_present_here_and_still_succeeds() {
    let fake = Fake::untuned("apply-missing");
    fake.remove_sysctl("net.netfilter.nf_conntrack_max");
    let run = fake.run("apply.sh", &[]);
    run.expect_code(0)
        .expect_contains("skip net.netfilter.nf_conntrack_max: not present here");
    assert!(
        !fake.sysctl_path("net.netfilter.nf_conntrack_max").exists(),
        "apply created a sysctl"
    );
}

#[test]
fn apply_explains_a_setting_it_cannot_change_and_carries_on() {
    let fake = Fake::untuned("apply-denied");
    // The unprivileged user may write every fake sysctl but somaxconn, and the state directory.
    fake.open_to_all();
    fs::create_dir_all(fake.root.join("state")).unwrap();
    chmod(&fake.root.join("state"), 0o777);
    for (key, _) in UNTUNED {
        chmod(&fake.sysctl_path(key), 0o666);
    }
    chmod(&fake.sysctl_path("net.core.somaxconn"), 0o444);
    let Some(mut cmd) = unprivileged(fake.command("apply.sh", &[])) else {
        eprintln!("skipped: running as root and setpriv is not installed");
        return;
    };
    let run = Run::from(cmd.output().unwrap());
    run.expect_code(1)
        .expect_contains("cannot set net.core.somaxconn: permission denied (not root?)")
        .expect_contains("1 could not be set");
    assert_eq!(fake.sysctl("net.core.somaxconn"), "4096");
    assert_eq!(
        fake.sysctl("net.ipv4.tcp_max_syn_backlog"),
        "65535",
        "it stopped at the first failure"
    );
    let state = fs::read_to_string(fake.state()).unwrap();
    assert!(
        !state.contains("somaxconn"),
        "a value that was never changed is not for revert: {state}"
    );
    assert!(
        state.contains("sysctl\tnet.ipv4.tcp_max_syn_backlog\t2048"),
        "{state}"
    );
}

#[test]
fn apply_without_a_writable_state_file_changes_nothing() {
    let fake = Fake::untuned("apply-no-state");
    fs::write(
        fake.root.join("state"),
        "a file where the state directory should be",
    )
    .unwrap();
    let before = fake.snapshot();
    let run = fake.run("apply.sh", &[]);
    run.expect_code(1)
        .expect_contains("cannot save previous values")
        .expect_contains("Nothing was changed");
    assert_eq!(before, fake.snapshot());
}

#[test]
fn apply_reports_io_uring_disabled_but_leaves_the_policy_alone() {
    let fake = Fake::tuned("apply-io-uring");
    fake.set_sysctl("kernel.io_uring_disabled", "2");
    let run = fake.run("apply.sh", &[]);
    run.expect_code(0)
        .expect_contains("kernel.io_uring_disabled is 2")
        .expect_contains("epoll");
    assert_eq!(fake.sysctl("kernel.io_uring_disabled"), "2");
    assert_eq!(
        columns(&fake.run("check.sh", &[]).row("kernel.io_uring_disabled"))
            .last()
            .unwrap(),
        "DIFF"
    );
}

#[test]
fn revert_dry_run_changes_nothing_and_revert_without_state_is_a_no_op() {
    let fake = Fake::untuned("revert-dry");
    fake.run("revert.sh", &[])
        .expect_code(0)
        .expect_contains("Nothing to revert");
    fake.run("apply.sh", &["--persist"]).expect_code(0);
    let applied = fake.snapshot();
    let run = fake.run("revert.sh", &["--dry-run"]);
    run.expect_code(0)
        .expect_contains(&format!(
            "+ echo 4096 > {}",
            fake.sysctl_path("net.core.somaxconn").display()
        ))
        .expect_contains(&format!(
            "+ rm -f {}",
            fake.etc("sysctl.d/90-liveshard.conf").display()
        ));
    assert_eq!(applied, fake.snapshot());
}

#[test]
fn state_file_can_be_chosen_with_a_flag() {
    let fake = Fake::untuned("state-flag");
    let custom = fake.root.join("elsewhere/prev.conf");
    let custom_arg = custom.to_str().unwrap();
    fake.run("apply.sh", &["--state", custom_arg])
        .expect_code(0);
    assert!(custom.exists() && !fake.state().exists());
    fake.run("revert.sh", &["--state", custom_arg])
        .expect_code(0);
    assert_eq!(fake.sysctl("net.core.somaxconn"), "4096");
}

// ------------------------------------------------------------------------------------------------
// irq-affinity.sh

/// A NIC "eth9" with 5 MSI interrupts, 2 rx and 2 tx queues, on a machine with CPUs 0-3.
fn fake_nic(fake: &Fake) {
    fake.write("sys/devices/system/cpu/online", "0-3\n");
    for irq in 40..45 {
        fake.write(
            &format!("sys/class/net/eth9/device/msi_irqs/{irq}"),
            "msix\n",
        );
        fake.write(&format!("proc/irq/{irq}/smp_affinity_list"), "0-3\n");
    }
    for q in 0..2 {
        fake.write(
            &format!("sys/class/net/eth9/queues/rx-{q}/rps_cpus"),
            "00000000\n",
        );
        fake.write(
            &format!("sys/class/net/eth9/queues/rx-{q}/rps_flow_cnt"),
            "0\n",
        );
        fake.write(
            &format!("sys/class/net/eth9/queues/tx-{q}/xps_cpus"),
            "00000000\n",
        );
    }
    fake.write(
        "proc/interrupts",
        "           CPU0  CPU1  CPU2  CPU3\n  40:  1  2  3  4  PCI-MSI 1-edge  eth9-TxRx-0\n",
    );
    fake.set_sysctl("net.core.rps_sock_flow_entries", "0");
}

#[test]
fn irq_affinity_spreads_interrupts_sets_rps_xps_and_revert_restores() {
    let fake = Fake::new("irq");
    fake_nic(&fake);
    let before = fake.snapshot();
    let before_values = fake.values();

    let run = fake.run("irq-affinity.sh", &["--dry-run", "eth9"]);
    run.expect_code(0)
        .expect_contains("+ echo 2 > ")
        .expect_contains("IRQ 40 (eth9-TxRx-0) -> CPU 0");
    assert_eq!(before, fake.snapshot(), "--dry-run changed something");

    fake.run("irq-affinity.sh", &["eth9"]).expect_code(0);
    let cpus: Vec<String> = (40..45)
        .map(|irq| {
            fake.read(&format!("proc/irq/{irq}/smp_affinity_list"))
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(
        cpus,
        ["0", "1", "2", "3", "0"],
        "round robin over online CPUs"
    );
    let mask =
        |rel: &str| u64::from_str_radix(&fake.read(rel).trim().replace(',', ""), 16).unwrap();
    assert_eq!(
        mask("sys/class/net/eth9/queues/rx-0/rps_cpus"),
        0xf,
        "RPS over all CPUs"
    );
    assert_eq!(
        mask("sys/class/net/eth9/queues/tx-0/xps_cpus"),
        0b0101,
        "CPUs 0 and 2 send on tx-0"
    );
    assert_eq!(
        mask("sys/class/net/eth9/queues/tx-1/xps_cpus"),
        0b1010,
        "CPUs 1 and 3 send on tx-1"
    );
    assert_eq!(
        fake.read("sys/class/net/eth9/queues/rx-1/rps_flow_cnt")
            .trim(),
        "16384"
    );
    assert_eq!(fake.sysctl("net.core.rps_sock_flow_entries"), "32768");

    fake.run("irq-affinity.sh", &["eth9"])
        .expect_code(0)
        .expect_contains("Nothing to change");
    fake.run("revert.sh", &[]).expect_code(0);
    assert_eq!(
        before_values,
        fake.values(),
        "revert.sh did not restore the interrupt settings"
    );
}

#[test]
fn irq_affinity_refuses_while_irqbalance_runs_unless_forced() {
    let fake = Fake::new("irqbalance");
    fake_nic(&fake);
    fake.write("proc/4242/comm", "irqbalance\n");
    let before = fake.snapshot();
    let run = fake.run("irq-affinity.sh", &["eth9"]);
    run.expect_code(1)
        .expect_contains("irqbalance is running")
        .expect_contains("--force");
    assert_eq!(before, fake.snapshot());
    fake.run("irq-affinity.sh", &["--force", "eth9"])
        .expect_code(0);
    assert_eq!(fake.read("proc/irq/41/smp_affinity_list").trim(), "1");
}

#[test]
fn irq_affinity_finds_virtio_interrupts_on_the_parent_pci_device() {
    let fake = Fake::new("irq-virtio");
    fake.write("sys/devices/system/cpu/online", "0-1\n");
    let pci = "sys/devices/pci0000:00/0000:00:03.0";
    fs::create_dir_all(fake.root.join(pci).join("virtio2")).unwrap();
    for irq in 37..40 {
        fake.write(&format!("{pci}/msi_irqs/{irq}"), "msix\n");
        fake.write(&format!("proc/irq/{irq}/smp_affinity_list"), "0-1\n");
    }
    fs::create_dir_all(fake.root.join("sys/class/net/eth0/queues/rx-0")).unwrap();
    std::os::unix::fs::symlink(
        fake.root.join(pci).join("virtio2"),
        fake.root.join("sys/class/net/eth0/device"),
    )
    .unwrap();
    let run = fake.run("irq-affinity.sh", &["eth0"]);
    run.expect_code(0)
        .expect_contains("eth0: 3 interrupts, 2 online CPUs");
    assert_eq!(fake.read("proc/irq/38/smp_affinity_list").trim(), "1");

    fs::create_dir_all(fake.root.join("sys/class/net/lo/queues/rx-0")).unwrap();
    fake.run("irq-affinity.sh", &["lo"])
        .expect_code(0)
        .expect_contains("virtual device");
}

#[test]
fn irq_affinity_names_an_unknown_interface() {
    let fake = Fake::new("irq-unknown");
    fake_nic(&fake);
    fake.run("irq-affinity.sh", &["eth7"])
        .expect_code(2)
        .expect_contains("no network interface 'eth7'");
}

// ------------------------------------------------------------------------------------------------
// The files agree with the table

#[test]
fn committed_sysctl_dropin_is_rendered_from_the_table() {
    let committed = fs::read_to_string(tuning_dir().join("sysctl.d/90-liveshard.conf")).unwrap();
    let fake = Fake::new("render");
    let run = fake.run("apply.sh", &["--print-dropin=reference"]);
    run.expect_code(0);
    assert_eq!(committed, run.out, "regenerate with: tuning/apply.sh --print-dropin=reference > tuning/sysctl.d/90-liveshard.conf");
}

#[test]
fn sysctl_dropin_values_match_the_table() {
    let committed = fs::read_to_string(tuning_dir().join("sysctl.d/90-liveshard.conf")).unwrap();
    let mut pinned = BTreeMap::new();
    for line in committed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key = value: {line:?}"));
        pinned.insert(
            key.trim().trim_start_matches('-').to_string(),
            squeeze(value),
        );
    }
    for s in settings() {
        match (s.kind.as_str(), s.recommended.as_str()) {
            ("sysctl", "auto") => assert!(!pinned.contains_key(&s.key), "{} depends on RAM", s.key),
            ("sysctl", rec) => assert_eq!(
                pinned.get(&s.key).map(String::as_str),
                Some(rec),
                "{}",
                s.key
            ),
            _ => assert!(
                !pinned.contains_key(&s.key),
                "{} must not be set by the drop-in",
                s.key
            ),
        }
    }
    for key in pinned.keys() {
        assert!(
            settings().iter().any(|s| &s.key == key),
            "{key} is in the drop-in but not in settings.conf"
        );
    }
}

#[test]
fn unit_and_limits_d_carry_the_table_limits() {
    let nofile_soft = recommended("nofile.soft");
    let nofile_hard = recommended("nofile.hard");
    assert_eq!(
        nofile_soft, nofile_hard,
        "the unit sets one LimitNOFILE for both"
    );
    let memlock = recommended("memlock");
    assert_eq!(memlock, "unlimited");
    let nr_open: u64 = recommended("fs.nr_open").parse().unwrap();
    assert!(
        nr_open >= nofile_hard.parse().unwrap(),
        "fs.nr_open must allow LimitNOFILE"
    );

    let unit = fs::read_to_string(tuning_dir().join("liveshard.service")).unwrap();
    let directive = |name: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("liveshard.service lacks {name}="))
            .to_string()
    };
    assert_eq!(directive("LimitNOFILE"), nofile_soft);
    assert_eq!(directive("LimitMEMLOCK"), "infinity");
    assert_eq!(
        directive("ExecStart"),
        "/usr/local/bin/liveshard serve --config /etc/liveshard/liveshard.toml"
    );
    assert_eq!(directive("Restart"), "on-failure");
    assert_eq!(directive("KillSignal"), "SIGTERM");
    let stop: u32 = directive("TimeoutStopSec").parse().unwrap();
    assert!(
        stop > 10 && stop <= 30,
        "a little above the server's 10 s graceful shutdown: {stop}"
    );
    assert!(directive("User") != "root");

    let limits = fs::read_to_string(tuning_dir().join("limits.d/90-liveshard.conf")).unwrap();
    let mut seen = BTreeMap::new();
    for line in limits
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 4, "limits.d line: {line:?}");
        seen.insert(format!("{} {}", f[1], f[2]), f[3].to_string());
    }
    assert_eq!(seen.get("soft nofile"), Some(&nofile_soft));
    assert_eq!(seen.get("hard nofile"), Some(&nofile_hard));
    assert_eq!(
        seen.get("soft memlock").map(String::as_str),
        Some("unlimited")
    );
    assert_eq!(
        seen.get("hard memlock").map(String::as_str),
        Some("unlimited")
    );
}

#[test]
fn scripts_are_strict_bash_and_say_what_they_own() {
    for script in ["check.sh", "apply.sh", "revert.sh", "irq-affinity.sh"] {
        let text = fs::read_to_string(tuning_dir().join(script)).unwrap();
        assert!(
            text.starts_with("#!/usr/bin/env bash\n# tuning/"),
            "{script}: shebang and header"
        );
        assert!(
            text.contains("\n# Owns: "),
            "{script}: header says what it owns"
        );
        assert!(
            text.contains("\nset -euo pipefail\n"),
            "{script}: set -euo pipefail"
        );
        let help = Fake::new("help").run(script, &["--help"]);
        help.expect_code(0).expect_contains("usage: tuning/");
        Fake::new("bad-flag")
            .run(script, &["--no-such-flag"])
            .expect_code(2);
    }
    if on_path("shellcheck") {
        let mut cmd = Command::new("shellcheck");
        cmd.current_dir(tuning_dir()).args([
            "-x",
            "lib.sh",
            "check.sh",
            "apply.sh",
            "revert.sh",
            "irq-affinity.sh",
        ]);
        let run = Run::from(cmd.output().unwrap());
        run.expect_code(0);
    } else {
        eprintln!("shellcheck not installed; lint skipped");
    }
}
