//! Login tokens for publishers: HS256 JWTs signed with the server's secret
//! (`--token-secret`), or read one per line from a file (`--tokens`).
//!
//! The claims are the ones liveshard checks (`sub`, `nick`, `exp`, `iat`, `iss`); the peers
//! in `bench/` accept any token. HMAC-SHA256 and base64 come from the same crates the server
//! uses, so a token signed here is byte-for-byte what `liveshard token` would print.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// An HS256 token for `uid`, valid for `ttl_secs` from `now` (Unix seconds).
pub fn sign(secret: &[u8], issuer: &str, uid: &str, now: u64, ttl_secs: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": uid,
        "nick": uid,
        "exp": now + ttl_secs,
        "iat": now,
        "iss": issuer,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Tokens from a file: one per line, blank lines and `#` comments skipped.
pub fn read_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tokens from {}: {e}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(format!("{} holds no tokens", path.display()));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_three_parts_and_verifies() {
        let t = sign(b"s3cret", "liveshard", "lg-p0", 1_700_000_000, 3600);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "lg-p0");
        assert_eq!(claims["iss"], "liveshard");
        assert_eq!(claims["exp"], 1_700_003_600u64);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .unwrap();
    }
}
