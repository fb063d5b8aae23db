//! The URLs the API hands out: push (signed), play (rtmp, flv, hls; signed when
//! `media.play_sign`), the danmaku WebSocket and uploaded covers.
//!
//! Public base URLs come from `[api]` (`public_http`, `public_ws`, `public_rtmp`). When one
//! is empty it is derived from the request: `http://` (`https://` for a request that came
//! over HTTPS) + its `Host` header (so a server
//! reached as `192.168.1.5:8080` hands out URLs that work from where the client is), the
//! WebSocket base from the HTTP one, and RTMP from the same host name on the RTMP port.
//! A `Host` header that is not a plain host[:port] is ignored for the listen address.

use serde::Serialize;

use super::Api;
use crate::http::Request;
use crate::media::sign;

/// Base URLs for one request, without trailing slashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bases {
    pub http: String,
    pub ws: String,
    /// `rtmp://host:port/app`.
    pub rtmp_app: String,
}

/// Whether `host` is a plausible `host[:port]` (names, IPv4, bracketed IPv6).
fn plain_host(host: &str) -> bool {
    (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The host name of `host[:port]` (brackets kept for IPv6).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

pub fn bases(api: &Api, req: &Request) -> Bases {
    let cfg = api.config();
    let api = &api.shared;
    let host = req
        .header("host")
        .map(str::trim)
        .filter(|h| plain_host(h))
        .map(str::to_string)
        .unwrap_or_else(|| api.http_addr.to_string());
    let http = if cfg.api.public_http.is_empty() {
        let scheme = if req.tls { "https" } else { "http" };
        format!("{scheme}://{host}")
    } else {
        cfg.api.public_http.trim_end_matches('/').to_string()
    };
    let ws = if cfg.api.public_ws.is_empty() {
        if let Some(rest) = http.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", http.strip_prefix("http://").unwrap_or(&http))
        }
    } else {
        cfg.api.public_ws.trim_end_matches('/').to_string()
    };
    let rtmp = if cfg.api.public_rtmp.is_empty() {
        format!("rtmp://{}:{}", host_name(&host), api.rtmp_addr.port())
    } else {
        cfg.api.public_rtmp.trim_end_matches('/').to_string()
    };
    Bases {
        http,
        ws,
        rtmp_app: format!("{rtmp}/{}", cfg.media.app),
    }
}

/// A signed push URL, in the shapes publishers ask for.
#[derive(Clone, Debug, Serialize)]
pub struct Push {
    /// The whole URL (`<live-pusher url>`, ffmpeg).
    pub url: String,
    /// OBS's "Server" field: `rtmp://host:port/app`.
    pub server_url: String,
    /// OBS's "Stream key" field: `room?txSecret=…&txTime=…`.
    pub stream_key: String,
    /// Unix seconds after which the signature is refused.
    pub expires_at: u64,
}

pub fn push(api: &Api, bases: &Bases, room: &str, now: u64) -> Push {
    let expires_at = now.saturating_add(api.config().media.push_url_ttl_secs);
    let (secret, time) = sign::sign(&api.shared.push_key, room, expires_at);
    let stream_key = format!("{room}?txSecret={secret}&txTime={time}");
    Push {
        url: format!("{}/{stream_key}", bases.rtmp_app),
        server_url: bases.rtmp_app.clone(),
        stream_key,
        expires_at,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Play {
    pub rtmp: String,
    pub flv: String,
    /// Left out while the room's stream has a codec HLS does not carry (VP9, …; HEVC and AV1 play in fMP4 segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls: Option<String>,
}

/// The play URLs of `room`; `hls` says whether its stream can be played over HLS.
pub fn play(api: &Api, bases: &Bases, room: &str, now: u64, hls: bool) -> Play {
    let media = &api.config().media;
    let query = if media.play_sign {
        let expires_at = now.saturating_add(media.push_url_ttl_secs);
        let (secret, time) = sign::sign(&api.shared.play_key, room, expires_at);
        format!("?txSecret={secret}&txTime={time}")
    } else {
        String::new()
    };
    let app = &media.app;
    Play {
        rtmp: format!("{}/{room}{query}", bases.rtmp_app),
        flv: format!("{}/{app}/{room}.flv{query}", bases.http),
        hls: hls.then(|| format!("{}/{app}/{room}.m3u8{query}", bases.http)),
    }
}

pub fn ws(bases: &Bases, room: &str) -> String {
    format!("{}/ws?room={room}", bases.ws)
}

pub fn cover(bases: &Bases, name: &str) -> String {
    format!("{}/covers/{name}", bases.http)
}

/// The thumbnail URLs (by width) of a room's `cover_url` when it names a cover uploaded
/// here: `/covers/<name>` or any `http(s)://…/covers/<name>` with a generated original's
/// name. They keep the cover URL's own origin (the one the client stored), or `bases`
/// for a bare path. `None` for other images (nothing was derived for them).
pub fn cover_thumbs(
    bases: &Bases,
    cover_url: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let (prefix, name) = cover_url.rsplit_once("/covers/")?;
    if !crate::store::files::is_original(name) {
        return None;
    }
    let origin = if prefix.is_empty() {
        bases.http.as_str()
    } else if prefix.starts_with("http://") || prefix.starts_with("https://") {
        prefix
    } else {
        return None;
    };
    Some(
        crate::store::thumbs::WIDTHS
            .iter()
            .map(|&w| {
                let thumb = crate::store::thumbs::name(name, w);
                (w.to_string(), format!("{origin}/covers/{thumb}").into())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(plain_host("live.example.com:8080"));
        assert!(plain_host("[::1]:8080"));
        assert!(!plain_host("evil.com/path"));
        assert!(!plain_host("a b"));
        assert!(!plain_host(""));
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("127.0.0.1:0"), "127.0.0.1");
    }

    #[test]
    fn thumbnails_of_our_covers_only() {
        let bases = Bases {
            http: "http://h:1".into(),
            ws: String::new(),
            rtmp_app: String::new(),
        };
        let name = "0123456789abcdef0123456789abcdef";
        let t = cover_thumbs(&bases, &format!("/covers/{name}.png")).unwrap();
        assert_eq!(t["320"], format!("http://h:1/covers/{name}-320.jpg"));
        assert_eq!(t["640"], format!("http://h:1/covers/{name}-640.jpg"));
        let t = cover_thumbs(&bases, &format!("https://cdn.x/covers/{name}.webp")).unwrap();
        assert_eq!(t["320"], format!("https://cdn.x/covers/{name}-320.jpg"));
        for other in [
            "",
            "https://x/y.png",
            "https://x/covers/abc.png",
            "/covers/0123456789abcdef-320.jpg",
            "javascript:/covers/0123456789abcdef.png",
        ] {
            assert!(cover_thumbs(&bases, other).is_none(), "{other}");
        }
    }
}
