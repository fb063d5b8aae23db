//! Structured logs on stderr: text for people, JSON lines for collectors; and [`redact`],
//! which keeps secrets out of them.
//!
//! Secrets reach log lines inside other text: a WeChat call's URL carries the AppSecret
//! (`secret=`) and a login code (`js_code=`), a hook URL may carry a token, a client's
//! query carries `txSecret`, and HTTP clients put the URL in their error messages. Two
//! layers keep them out: errors that quote a URL redact it where they are made
//! (`crate::outbound`), and every formatted log line passes through [`redact`] on its way
//! to stderr ([`RedactingStderr`]), so a field added later cannot leak one either. Lines
//! are few (no per-message logging on hot paths), so a scan per line costs nothing that
//! matters.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber. `level` and `format` were validated by the config.
pub fn init(level: &str, format: &str) {
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(RedactingStderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Stderr, with [`redact`] applied to each formatted event (the fmt layer writes one
/// event with one `write_all`).
pub struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = Redacting;
    fn make_writer(&'a self) -> Redacting {
        Redacting
    }
}

pub struct Redacting;

impl Write for Redacting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// What a redacted value is replaced with.
pub const MASK: &str = "***";

/// Whether `name` (of a `name=value` pair) names a secret: WeChat's `secret`, `js_code`,
/// `access_token`, `session_key`, the stream signature `txSecret`, `sign`, and anything
/// called a token, secret, password or key.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "js_code" | "sign" | "sig" | "signature" | "key" | "authorization"
    ) || ["secret", "token", "password", "passwd", "_key", "-key"]
        .iter()
        .any(|s| n.ends_with(s))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Where a value that starts at `from` ends: at a query, quoting or field delimiter, or
/// a `: ` (HTTP clients write `URL: reason`).
fn value_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        let ends = b <= b' '
            || matches!(
                b,
                b'&' | b'"' | b'\'' | b'\\' | b'#' | b',' | b';' | b')' | b']' | b'}' | b'<' | b'>'
            )
            || (b == b':' && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()));
        if ends {
            return i;
        }
        i += 1;
    }
    i
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// The end of a JSON Web Token starting at `from` (`eyJ…​.eyJ…​.sig`), if one does.
fn jwt_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    for part in 0..3 {
        let start = i;
        while i < bytes.len() && is_b64url(bytes[i]) {
            i += 1;
        }
        // Header and claims are JSON objects: base64url of `{"` is `eyJ`.
        if part < 2 && (i - start < 4 || !bytes[start..].starts_with(b"eyJ")) {
            return None;
        }
        if part < 2 {
            if bytes.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    Some(i)
}

/// `text` with secrets replaced by [`MASK`]: values of secret-named `name=value` pairs
/// (query strings, `key=value` log fields), `Bearer` credentials, and JSON Web Tokens.
/// Borrowed when nothing was found.
pub fn redact(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // (start of the secret, its end) when one starts here.
        let found = if b == b'=' {
            let name_start = bytes[..i]
                .iter()
                .rposition(|&c| !is_name_byte(c))
                .map_or(0, |p| p + 1);
            let end = value_end(bytes, i + 1);
            (name_start < i && end > i + 1 && is_secret_name(&text[name_start..i]))
                .then_some((i + 1, end))
        } else if b == b'e' && (i == 0 || !is_b64url(bytes[i - 1])) {
            jwt_end(bytes, i).map(|end| (i, end))
        } else if (b == b'B' || b == b'b')
            && bytes.len() > i + 7
            && bytes[i..i + 7].eq_ignore_ascii_case(b"bearer ")
            && (i == 0 || !is_name_byte(bytes[i - 1]))
        {
            let end = value_end(bytes, i + 7);
            (end > i + 7).then_some((i + 7, end))
        } else {
            None
        };
        match found {
            Some((start, end)) if &text[start..end] != MASK => {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..start]);
                o.push_str(MASK);
                copied = end;
                i = end;
            }
            Some((_, end)) => i = end,
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_urls_are_masked() {
        let url = "http://127.0.0.1:9/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3cr3t: Connection Failed";
        assert_eq!(
            redact(url),
            "http://127.0.0.1:9/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=***: Connection Failed"
        );
        let login =
            "/sns/jscode2session?appid=wx1&secret=abc&js_code=0a1b&grant_type=authorization_code";
        assert_eq!(
            redact(login),
            "/sns/jscode2session?appid=wx1&secret=***&js_code=***&grant_type=authorization_code"
        );
        assert_eq!(
            redact("param=?txSecret=f85a2ab3&txTime=5C271099"),
            "param=?txSecret=***&txTime=5C271099"
        );
        assert_eq!(
            redact("x?access_token=T&sign=Z&api_key=K&app_secret=Q"),
            "x?access_token=***&sign=***&api_key=***&app_secret=***"
        );
    }

    #[test]
    fn secrets_in_json_log_lines_are_masked() {
        let line = r#"{"fields":{"error":"bad reply: cannot connect: http://h/t?appid=a&secret=zz: refused"}}"#;
        assert_eq!(
            redact(line),
            r#"{"fields":{"error":"bad reply: cannot connect: http://h/t?appid=a&secret=***: refused"}}"#
        );
    }

    #[test]
    fn tokens_and_bearer_credentials_are_masked() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl";
        assert_eq!(redact(&format!("token {jwt} refused")), "token *** refused");
        assert_eq!(
            redact("Authorization: Bearer abc.def"),
            "Authorization: Bearer ***"
        );
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for s in [
            "publishing stream=cam1 peer=127.0.0.1:5000",
            "error=timed out",
            "liveshard started http_addr=127.0.0.1:8080",
            "a = b",
            "eyJ but not a token",
            "secret=",
            "secret=***",
        ] {
            assert!(matches!(redact(s), Cow::Borrowed(_)), "{s}");
        }
    }
}
