//! What loadgen reads outside its own connections: the server's `/metrics` (a plain blocking
//! HTTP GET, from the parent, never on an executor), the server process in `/proc/PID`
//! (RSS, CPU time; for servers made of several processes, like nginx's master and workers,
//! the process and its descendants), this process's descriptor limit, and the machine's
//! facts for reports.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

/// (soft, hard) RLIMIT_NOFILE.
pub fn nofile_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (1024, 1024);
    }
    (r.rlim_cur, r.rlim_max)
}

/// Raises the soft descriptor limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let (soft, hard) = nofile_limit();
    if soft < hard {
        let r = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            return hard;
        }
    }
    soft
}

/// RLIMIT_MEMLOCK soft limit in KiB (io_uring registered buffers count against it).
pub fn memlock_kib() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `nofile_limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur / 1024
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS"))
}

/// utime + stime of `pid` (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("malformed /proc stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("no utime")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("no stime")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / hz)
}

/// `pid` and every process descended from it (children found through /proc/*/stat).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // After the command name's ')': state, then the parent's pid.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    tree
}

/// CPU seconds of `pid` and its descendants (those that exit in between are not counted).
pub fn tree_cpu_seconds(pid: u32) -> Result<f64, String> {
    let own = cpu_seconds(pid)?;
    let rest: f64 = process_tree(pid)[1..]
        .iter()
        .filter_map(|&p| cpu_seconds(p).ok())
        .sum();
    Ok(own + rest)
}

/// VmRSS of `pid` and its descendants, in KiB.
pub fn tree_rss_kib(pid: u32) -> Result<u64, String> {
    let own = rss_kib(pid)?;
    let rest: u64 = process_tree(pid)[1..]
        .iter()
        .filter_map(|&p| rss_kib(p).ok())
        .sum();
    Ok(own + rest)
}

/// The body of a Prometheus text endpoint (a 200 answer), fetched with a plain blocking GET.
pub fn scrape_text(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("metrics URL must be http://, got {url:?}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport} resolves to nothing"))?;
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut body = Vec::new();
    s.take(64 << 20)
        .read_to_end(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        let first = text.lines().next().unwrap_or("");
        return Err(format!("{url}: {first}"));
    }
    Ok(text.into_owned())
}

/// The sum of `name`'s samples in Prometheus text, `None` when there is none.
pub fn sum_samples(text: &str, name: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = match rest.rfind('}') {
            Some(i) => &rest[i + 1..],
            None => rest,
        };
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum += v;
            found = true;
        }
    }
    found.then_some(sum as u64)
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: String,
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub mem_total_kib: u64,
    pub nofile_hard: u64,
    pub memlock_kib: u64,
}

pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_total_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        mem_total_kib,
        nofile_hard: nofile_limit().1,
        memlock_kib: memlock_kib(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_over_label_sets_only_for_the_exact_name() {
        let text = "# HELP liveshard_ws_messages_dropped_total x\n\
                    liveshard_ws_messages_dropped_total{shard=\"0\"} 3\n\
                    liveshard_ws_messages_dropped_total{shard=\"1\"} 4\n\
                    liveshard_ws_messages_dropped_totalx 100\n";
        assert_eq!(
            sum_samples(text, "liveshard_ws_messages_dropped_total"),
            Some(7)
        );
        assert_eq!(sum_samples(text, "nope"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }

    #[test]
    fn a_process_tree_includes_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(std::process::id());
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()), "{tree:?}");
        // Until the child has exec'd `sleep`, its RSS is a copy of ours; after that it stays
        // put, so the tree's sum is larger than the child's alone by our own (nonzero) RSS.
        // (Comparing against our own RSS instead races with other tests' allocations.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .map_or(true, |c| c.trim() != "sleep")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exec'd"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let child_rss = rss_kib(child.id()).unwrap();
        let tree_rss = tree_rss_kib(std::process::id()).unwrap();
        assert!(
            tree_rss > child_rss,
            "{tree_rss} KiB vs the child's {child_rss} KiB"
        );
        assert!(tree_cpu_seconds(std::process::id()).is_ok());
        let _ = child.kill();
        let _ = child.wait();
    }
}
