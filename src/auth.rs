//! Login tokens: HS256 JSON Web Tokens, issued by `liveshard token` (and the login API) and
//! verified on WebSocket connect.
//!
//! Only HS256 is accepted. The header's `alg` must be exactly "HS256" — `none`, other HMAC
//! sizes and every asymmetric algorithm are refused before the signature is looked at, so
//! there is no algorithm confusion to exploit. Checked: signature (constant time), `exp`
//! (required), `nbf` if present, `iss` (must equal the configured issuer), `sub` non-empty.
//!
//! Every token issued here carries a `jti` (128 random bits, base64url) and an `iat`, so it
//! can be revoked ([`Revoked`], the per-shard copy of the stored revocations): by its `jti`
//! (logout), or with every other token of its user issued before a "not before" mark (an
//! admin's revoke). A token without a `jti` (issued before tokens had one) can only be
//! stopped by its user's mark; a token without an `iat` counts as issued at 0, so any mark
//! of its user refuses it.
//!
//! Why not the `jsonwebtoken` crate: it brings the RSA/EC/EdDSA stacks for algorithms we
//! must refuse anyway. HMAC-SHA256 and base64 come from RustCrypto and the `base64` crate;
//! what is left here is the claim checks.
//!
//! Also here: the server's other keys, each configured or generated on first start in the
//! data directory (`jwt.secret`, `push.key`, `play.key`; see [`MediaKeys`]).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest token we look at; anything longer is refused unparsed.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a verified token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    #[serde(default)]
    pub nick: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default)]
    pub iss: String,
    /// Token id, for revoking this token alone (logout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Global roles, e.g. "admin".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Claims {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    /// `alg` is not HS256 (includes "none").
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    MissingSubject,
    /// Logged out, or revoked by an admin (see [`Revoked`]).
    Revoked,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => "token is malformed",
            TokenError::Algorithm => "token algorithm not accepted (HS256 only)",
            TokenError::Signature => "token signature is invalid",
            TokenError::Expired => "token has expired",
            TokenError::NotYetValid => "token is not valid yet",
            TokenError::Issuer => "token issuer is not accepted",
            TokenError::MissingSubject => "token has no subject",
            TokenError::Revoked => "token has been revoked: log in again",
        }
    }
}

/// Signs and verifies tokens with one secret and issuer.
#[derive(Clone)]
pub struct Jwt {
    secret: Vec<u8>,
    issuer: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jwt {
    pub fn new(secret: impl Into<Vec<u8>>, issuer: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            issuer: issuer.into(),
        }
    }

    /// A token for `uid` valid for `ttl_secs` from `now`.
    pub fn issue(
        &self,
        uid: &str,
        nick: &str,
        roles: &[String],
        ttl_secs: u64,
        now: u64,
    ) -> String {
        let claims = Claims {
            sub: uid.to_string(),
            nick: nick.to_string(),
            exp: now + ttl_secs,
            nbf: None,
            iat: Some(now),
            iss: self.issuer.clone(),
            jti: Some(new_jti()),
            roles: roles.to_vec(),
        };
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }

    /// Verifies `token` at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(TokenError::MissingSubject);
        }
        if claims.jti.as_ref().is_some_and(|j| j.len() > MAX_JTI_LEN) {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

/// 128 random bits, base64url: a token's id. `getrandom` does not fail on Linux ≥ 3.17
/// once the pool is initialised; if it ever did, the id falls back to the clock and a
/// counter, which is still unique per process (ids need to be unique, not secret: the
/// token's signature is what cannot be forged).
fn new_jti() -> String {
    let mut raw = [0u8; 16];
    let mut filled = 0;
    while filled < raw.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `raw`.
        let n = unsafe {
            libc::getrandom(
                raw[filled..].as_mut_ptr().cast::<libc::c_void>(),
                raw.len() - filled,
                0,
            )
        };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            raw[..8].copy_from_slice(&nanos.to_le_bytes());
            raw[8..].copy_from_slice(
                &NEXT
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .to_le_bytes(),
            );
            break;
        }
        filled += n as usize;
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// Longest `jti` kept in a revocation (ours are 22 characters; a longer one in a validly
/// signed token is refused as malformed rather than stored).
pub const MAX_JTI_LEN: usize = 64;

/// Revoked tokens kept in all (past it, a logout becomes its user's mark; see
/// `store::decide`). A jti entry costs about 80 bytes in each shard's copy.
pub const MAX_REVOKED_TOKENS: usize = 100_000;
/// Revoked tokens kept per user: a user who logs out more often than this within a token
/// lifetime gets a mark instead (all their older tokens stop), so one account cannot grow
/// the set.
pub const MAX_REVOKED_PER_USER: usize = 32;
/// Users with a mark, past which a logout that needs a new mark is refused (503).
pub const MAX_USER_MARKS: usize = 100_000;

/// One stored revocation, as the store keeps it and the shards apply it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// The token with this `jti`; kept until the token would have expired.
    Token { jti: String, exp: u64 },
    /// Every token of `uid` issued before `not_before` (`iat < not_before`); kept until
    /// `until`, when every token it could refuse has expired.
    User {
        uid: String,
        not_before: u64,
        until: u64,
    },
}

/// A shard's in-memory copy of the live revocations: looked up on every token check, so
/// a check costs two hash look-ups and never touches the store or another shard. Loaded
/// from the store at start and kept current by the broadcast that follows each committed
/// revocation; entries are dropped once they expire ([`Revoked::sweep`]).
#[derive(Clone, Debug, Default)]
pub struct Revoked {
    /// jti → the token's expiry.
    tokens: std::collections::HashMap<String, u64>,
    /// uid → (not_before, until).
    users: std::collections::HashMap<String, (u64, u64)>,
}

impl Revoked {
    pub fn from_list(list: impl IntoIterator<Item = Revocation>) -> Self {
        let mut r = Self::default();
        for rev in list {
            r.apply(&rev);
        }
        r
    }

    pub fn apply(&mut self, rev: &Revocation) {
        match rev {
            Revocation::Token { jti, exp } => {
                self.tokens.insert(jti.clone(), *exp);
            }
            Revocation::User {
                uid,
                not_before,
                until,
            } => {
                let e = self.users.entry(uid.clone()).or_insert((0, 0));
                // Marks only move forward: a later mark refuses everything an earlier did.
                e.0 = e.0.max(*not_before);
                e.1 = e.1.max(*until);
            }
        }
    }

    /// Whether `c` (already verified) has been revoked.
    pub fn refuses(&self, c: &Claims) -> bool {
        if let Some(jti) = &c.jti {
            if self.tokens.contains_key(jti.as_str()) {
                return true;
            }
        }
        self.users
            .get(c.sub.as_str())
            .is_some_and(|&(not_before, _)| c.iat.unwrap_or(0) < not_before)
    }

    /// Drops what expired by `now`.
    pub fn sweep(&mut self, now: u64) {
        self.tokens.retain(|_, exp| *exp > now);
        self.users.retain(|_, (_, until)| *until > now);
    }

    pub fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One shard's token check: signature and claims ([`Jwt`]), then this shard's copy of the
/// revocations ([`Revoked`]), never the store or another shard. The engines that check
/// tokens (the danmaku upgrade, the API) share one per shard behind an `Rc`.
pub struct Tokens {
    jwt: std::sync::Arc<Jwt>,
    revoked: std::cell::RefCell<Revoked>,
}

impl Tokens {
    pub fn new(jwt: std::sync::Arc<Jwt>, revoked: Revoked) -> Self {
        Self {
            jwt,
            revoked: std::cell::RefCell::new(revoked),
        }
    }

    pub fn jwt(&self) -> &Jwt {
        &self.jwt
    }

    /// Verifies a login token: signature and claims, then the revocations.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.jwt.verify(token, now_unix())?;
        if self.revoked.borrow().refuses(&claims) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// A committed revocation: later checks refuse what it names.
    pub fn apply(&self, rev: &Revocation) {
        self.revoked.borrow_mut().apply(rev);
    }

    /// Drops revocations that expired.
    pub fn sweep(&self, now: u64) {
        self.revoked.borrow_mut().sweep(now);
    }
}

/// The signing secret: the configured one, or one generated on first start and kept in
/// the data directory (mode 0600), so a default install is neither insecure nor broken
/// between restarts, and `liveshard token --data-dir DIR` signs with the same secret.
pub fn load_or_create_secret(configured: &str, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    load_or_create_key_file(configured, data_dir, "jwt.secret")
}

/// The two keys of signed stream URLs, as Tencent Cloud CSS has them: a push key and a
/// play key. They must differ: the signature says nothing about push or play, so a play
/// URL signed with the push key would publish to the room, and play URLs are handed to
/// every viewer (`GET /api/v1/rooms/{id}` is anonymous). A publish is checked only with
/// `push`, a play only with `play`.
#[derive(Clone)]
pub struct MediaKeys {
    /// `media.push_key`, or `<data_dir>/push.key`.
    pub push: String,
    /// `media.play_key`, or `<data_dir>/play.key`.
    pub play: String,
}

impl std::fmt::Debug for MediaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaKeys { push: <redacted>, play: <redacted> }")
    }
}

impl MediaKeys {
    /// Both keys, each configured or generated on first start and kept in the data
    /// directory (mode 0600), so URLs signed before a restart stay valid after it.
    pub fn load(media: &crate::config::MediaConfig, data_dir: &Path) -> Result<Self, String> {
        let push = load_or_create_push_key(&media.push_key, data_dir)
            .map_err(|e| format!("push key: {e}"))?;
        let play = load_or_create_play_key(&media.play_key, data_dir)
            .map_err(|e| format!("play key: {e}"))?;
        if push == play {
            return Err("media.play_key must differ from the push key \
                 (with the same key a play URL would also publish)"
                .into());
        }
        Ok(Self { push, play })
    }
}

/// The key for signed push URLs: `media.push_key`, or one generated on first start and
/// kept in `<data_dir>/push.key` (mode 0600), the same way as the token secret.
pub fn load_or_create_push_key(configured: &str, data_dir: &Path) -> std::io::Result<String> {
    load_or_create_text_key(configured, data_dir, "push.key")
}

/// The key for signed play URLs: `media.play_key`, or one generated on first start and
/// kept in `<data_dir>/play.key` (mode 0600), never the push key (see [`MediaKeys`]).
pub fn load_or_create_play_key(configured: &str, data_dir: &Path) -> std::io::Result<String> {
    load_or_create_text_key(configured, data_dir, "play.key")
}

fn load_or_create_text_key(
    configured: &str,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<String> {
    let key = load_or_create_key_file(configured, data_dir, file)?;
    String::from_utf8(key).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not UTF-8", data_dir.join(file).display()),
        )
    })
}

/// `configured` if set; else the contents of `data_dir/file` (at least 32 bytes), created
/// with 32 random bytes (base64url) when missing.
fn load_or_create_key_file(
    configured: &str,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<Vec<u8>> {
    if !configured.is_empty() {
        return Ok(configured.as_bytes().to_vec());
    }
    let path = data_dir.join(file);
    match std::fs::read(&path) {
        Ok(s) if s.len() >= 32 => return Ok(s),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than 32 bytes", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut raw = [0u8; 32];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let secret = URL_SAFE_NO_PAD.encode(raw).into_bytes();
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    use std::io::Write as _;
    f.write_all(&secret)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt() -> Jwt {
        Jwt::new("s3cret", "liveshard")
    }

    #[test]
    fn round_trip() {
        let t = jwt().issue("u1", "Nick", &["admin".into()], 60, 1000);
        let c = jwt().verify(&t, 1001).unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.nick, "Nick");
        assert!(c.has_role("admin"));
    }

    #[test]
    fn expiry_signature_issuer_are_checked() {
        let t = jwt().issue("u1", "", &[], 60, 1000);
        assert_eq!(jwt().verify(&t, 1060), Err(TokenError::Expired));
        assert_eq!(
            Jwt::new("other", "liveshard").verify(&t, 1001),
            Err(TokenError::Signature)
        );
        assert_eq!(
            Jwt::new("s3cret", "someone").verify(&t, 1001),
            Err(TokenError::Issuer)
        );
        let mut tampered = t.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(jwt().verify(&tampered, 1001).is_err());
    }

    #[test]
    fn tokens_carry_distinct_jtis_and_an_iat() {
        let a = jwt()
            .verify(&jwt().issue("u1", "", &[], 60, 1000), 1001)
            .unwrap();
        let b = jwt()
            .verify(&jwt().issue("u1", "", &[], 60, 1000), 1001)
            .unwrap();
        assert_eq!(a.iat, Some(1000));
        let (ja, jb) = (a.jti.clone().unwrap(), b.jti.clone().unwrap());
        assert_eq!(ja.len(), 22, "128 bits, base64url");
        assert_ne!(ja, jb);
    }

    #[test]
    fn revoked_refuses_by_jti_and_by_user_mark_and_forgets_expired_entries() {
        let c = |sub: &str, jti: Option<&str>, iat: Option<u64>| Claims {
            sub: sub.into(),
            nick: String::new(),
            exp: 2000,
            nbf: None,
            iat,
            iss: "liveshard".into(),
            jti: jti.map(Into::into),
            roles: Vec::new(),
        };
        let mut r = Revoked::from_list([Revocation::Token {
            jti: "j1".into(),
            exp: 2000,
        }]);
        assert!(r.refuses(&c("u1", Some("j1"), Some(1000))));
        assert!(!r.refuses(&c("u1", Some("j2"), Some(1000))));
        r.apply(&Revocation::User {
            uid: "u2".into(),
            not_before: 1500,
            until: 3000,
        });
        assert!(r.refuses(&c("u2", Some("x"), Some(1499))));
        assert!(
            !r.refuses(&c("u2", Some("x"), Some(1500))),
            "issued at the mark"
        );
        assert!(
            r.refuses(&c("u2", None, None)),
            "no iat: refused by any mark"
        );
        assert!(!r.refuses(&c("u3", None, Some(1))));
        // An earlier mark does not move the mark back.
        r.apply(&Revocation::User {
            uid: "u2".into(),
            not_before: 10,
            until: 20,
        });
        assert!(r.refuses(&c("u2", Some("x"), Some(1499))));
        r.sweep(2000);
        assert_eq!(r.len(), 1, "the jti entry expired with its token");
        r.sweep(3000);
        assert!(r.is_empty());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"sub":"u1","exp":99999999999,"iss":"liveshard"}"#);
        for alg in ["none", "None", "HS512", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let token = format!("{header}.{payload}.");
            assert_eq!(jwt().verify(&token, 1), Err(TokenError::Algorithm), "{alg}");
        }
        assert_eq!(jwt().verify("a.b", 1), Err(TokenError::Malformed));
        assert_eq!(jwt().verify("a.b.c.d", 1), Err(TokenError::Malformed));
        assert_eq!(
            jwt().verify(&"x".repeat(5000), 1),
            Err(TokenError::Malformed)
        );
    }
}
