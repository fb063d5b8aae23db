//! The WebSocket opening handshake (RFC 6455 §4.2), server side.
//!
//! [`check_upgrade`] validates the request head and returns what the 101 needs; a request
//! that is not a valid upgrade gets a 4xx from the caller before the connection is
//! switched. The accept key is computed by tungstenite.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::http::RequestHead;

/// A valid upgrade request, reduced to what the response and the application need.
#[derive(Debug)]
pub struct Upgrade {
    pub accept: String,
    /// Protocols the client offered in `Sec-WebSocket-Protocol`, in order.
    pub protocols: Vec<String>,
    pub origin: Option<String>,
}

/// Why an upgrade is refused: status and message for the error envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

pub fn check_upgrade(head: &RequestHead) -> Result<Upgrade, Refusal> {
    if !head.header_has_token("upgrade", "websocket") {
        return Err(refuse(426, "WebSocket upgrade required"));
    }
    if !head.header_has_token("connection", "upgrade") {
        return Err(refuse(400, "Connection header must contain Upgrade"));
    }
    if head.minor_version == 0 {
        return Err(refuse(400, "WebSocket needs HTTP/1.1"));
    }
    if head.header_str("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(refuse(426, "Sec-WebSocket-Version must be 13"));
    }
    let key = head
        .header_str("sec-websocket-key")
        .map(str::trim)
        .ok_or(refuse(400, "Sec-WebSocket-Key missing"))?;
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(refuse(400, "Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    let protocols = head
        .headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .take(8)
        .collect();
    Ok(Upgrade {
        accept: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        protocols,
        origin: head.header_str("origin").map(str::to_string),
    })
}

/// The 101 response head, selecting `protocol` if given.
pub fn switching_protocols(accept: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::codec::{parse_head, HeadLimits};

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET /ws?room=a HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse_head(
            raw.as_bytes(),
            HeadLimits {
                max_header_bytes: 16384,
                max_headers: 64,
            },
        )
        .unwrap()
        .unwrap()
        .0
    }

    const OK: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn rfc_example_accept_key() {
        let u = check_upgrade(&head(OK)).unwrap();
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let resp = String::from_utf8(switching_protocols(&u.accept, Some("tok"))).unwrap();
        assert!(resp.contains("Sec-WebSocket-Protocol: tok\r\n"));
    }

    #[test]
    fn protocols_and_origin_are_reported() {
        let u = check_upgrade(&head(&format!(
            "{OK}Sec-WebSocket-Protocol: a, b\r\nOrigin: https://x.cn\r\n"
        )))
        .unwrap();
        assert_eq!(u.protocols, vec!["a", "b"]);
        assert_eq!(u.origin.as_deref(), Some("https://x.cn"));
    }

    #[test]
    fn bad_upgrades_are_refused() {
        assert_eq!(check_upgrade(&head("")).unwrap_err().status, 426);
        let no_key = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
        assert_eq!(check_upgrade(&head(no_key)).unwrap_err().status, 400);
        let v8 = OK.replace("Version: 13", "Version: 8");
        assert_eq!(check_upgrade(&head(&v8)).unwrap_err().status, 426);
        let short = OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
        assert_eq!(check_upgrade(&head(&short)).unwrap_err().status, 400);
    }
}
