//! URLs and addresses from the command line: `ws://` and `http://`/`rtmp://` targets
//! resolved once, and the `--src` range of loopback source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use crate::plan::MAX_SRC_ADDRS;

/// `ws://HOST[:PORT][/PATH]` → resolved address, Host header, path (query dropped: loadgen
/// adds its own).
pub fn parse_ws_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    if url.starts_with("wss://") {
        return Err("wss:// is not supported: point loadgen at the plain ws:// port".into());
    }
    let (addr, host, path) = split_url(url, "ws://", 80)?;
    let path = path.split('?').next().unwrap_or("/").to_string();
    Ok((addr, host, path))
}

/// `SCHEME HOST[:PORT][/PATH[?QUERY]]` → resolved address, Host header, path with query.
pub fn split_url(
    url: &str,
    scheme: &str,
    default_port: u16,
) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix(scheme)
        .ok_or_else(|| format!("--url must start with {scheme}, got {url:?}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(format!("--url has no host: {url:?}"));
    }
    let with_port = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.to_string()
        } else {
            format!("{hostport}:{default_port}")
        }
    } else if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    Ok((resolve(&with_port)?, hostport.to_string(), path.to_string()))
}

/// `HOST:PORT` → its first address.
pub fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport:?} resolves to no address"))
}

/// `A` or `A-B` (IPv4, inclusive) → first address and count.
pub fn parse_src_range(s: &str) -> Result<(Ipv4Addr, u32), String> {
    let parse = |x: &str| {
        x.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("--src: {x:?} is not an IPv4 address"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let a = parse(s)?;
            (a, a)
        }
    };
    let (lo, hi) = (u32::from(a), u32::from(b));
    if hi < lo {
        return Err(format!("--src: {b} comes before {a}"));
    }
    let count = hi - lo + 1;
    if count > MAX_SRC_ADDRS {
        return Err(format!("--src: at most {MAX_SRC_ADDRS} addresses"));
    }
    if !IpAddr::V4(a).is_loopback() || !IpAddr::V4(b).is_loopback() {
        return Err("--src: source addresses must be in 127.0.0.0/8".into());
    }
    Ok((a, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        let (a, host, path) = parse_ws_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1:8080", "/ws"));
        let (a, _, path) = parse_ws_url("ws://127.0.0.1/ws?room=x").unwrap();
        assert_eq!((a.port(), path.as_str()), (80, "/ws"));
        assert!(parse_ws_url("wss://127.0.0.1/ws").is_err());
        assert!(parse_ws_url("http://127.0.0.1/ws").is_err());
    }

    #[test]
    fn flv_urls_keep_their_query() {
        let (a, host, path) = split_url(
            "http://127.0.0.1:8080/live/s.flv?txSecret=a&txTime=b",
            "http://",
            80,
        )
        .unwrap();
        assert_eq!(a.port(), 8080);
        assert_eq!(host, "127.0.0.1:8080");
        assert_eq!(path, "/live/s.flv?txSecret=a&txTime=b");
        assert!(split_url("rtmp://127.0.0.1/live/s", "http://", 80).is_err());
    }

    #[test]
    fn src_ranges() {
        assert_eq!(
            parse_src_range("127.0.0.2-127.0.0.60").unwrap(),
            (Ipv4Addr::new(127, 0, 0, 2), 59)
        );
        assert_eq!(parse_src_range("127.0.0.9").unwrap().1, 1);
        assert!(parse_src_range("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_src_range("10.0.0.1-10.0.0.2").is_err());
    }
}
