//! The layering: defaults, then the TOML file, then `LIVESHARD_*` environment variables,
//! then flags, merged as a TOML tree and checked key by key against the defaults' tree
//! ([`Config::load`]). Also the environment names and aliases, [`unknown_env`], and the
//! redaction of [`SECRET_KEYS`] when the config is printed.

use std::fmt;
use std::path::PathBuf;

use toml::Value;

use super::{Config, ConfigError};

/// Short environment names for the keys people set most.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("LIVESHARD_HTTP", "server.http"),
    ("LIVESHARD_RTMP", "server.rtmp"),
    ("LIVESHARD_SHARDS", "server.shards"),
    ("LIVESHARD_DATA_DIR", "server.data_dir"),
    ("LIVESHARD_DRIVER", "server.driver"),
    ("LIVESHARD_LOG", "log.level"),
    ("LIVESHARD_JWT_SECRET", "auth.jwt_secret"),
    ("LIVESHARD_PUSH_KEY", "media.push_key"),
];

/// `LIVESHARD_*` variables that are not configuration: the test harness, the tuning
/// scripts and the benchmarks read them, so they are never warned about.
pub const NON_CONFIG_ENV_PREFIXES: &[&str] =
    &["LIVESHARD_TEST_", "LIVESHARD_TUNING_", "LIVESHARD_BENCH_"];
pub const NON_CONFIG_ENV: &[&str] = &["LIVESHARD_REV"];

/// A `LIVESHARD_*` variable that names no configuration key: it is ignored, which a typo
/// (`LIVESHARD_JWT_SECRETT`) should not be silently, so it is warned about at start and
/// by `config check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEnv {
    pub var: String,
    /// The closest known variable, when one is close.
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "environment variable {} is not a setting; ignored",
            self.var
        )?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean {s}?)")?;
        }
        Ok(())
    }
}

/// The `LIVESHARD_*` names in `vars` that set nothing (see [`UnknownEnv`]), sorted.
pub fn unknown_env<'a>(vars: impl IntoIterator<Item = &'a str>) -> Vec<UnknownEnv> {
    let defaults = Value::try_from(Config::default()).expect("defaults serialize");
    let mut leaves = Vec::new();
    leaf_paths(&defaults, "", &mut leaves);
    let known: Vec<String> = ENV_ALIASES
        .iter()
        .map(|(a, _)| a.to_string())
        .chain(leaves.iter().map(|k| env_name(k)))
        .collect();
    let mut out: Vec<UnknownEnv> = vars
        .into_iter()
        .filter(|v| v.starts_with("LIVESHARD_"))
        .filter(|v| !NON_CONFIG_ENV.contains(v))
        .filter(|v| !NON_CONFIG_ENV_PREFIXES.iter().any(|p| v.starts_with(p)))
        .filter(|v| !known.iter().any(|k| k == v))
        .map(|var| {
            let suggestion = known
                .iter()
                .map(|k| (strsim::levenshtein(var, k), k))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, k)| k.clone());
            UnknownEnv {
                var: var.to_string(),
                suggestion,
            }
        })
        .collect();
    out.sort_by(|a, b| a.var.cmp(&b.var));
    out
}

/// Keys whose values are secrets: shown as "<redacted>" when the config is printed.
pub const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "media.push_key",
    "media.play_key",
    "media.relay_key",
    "media.hook_receiver_key",
    "cluster.redis",
    "wechat.secret",
    "cluster.key",
];

/// Where the layers come from.
#[derive(Default)]
pub struct Sources {
    /// Path and contents of the config file, if one was given.
    pub file: Option<(PathBuf, String)>,
    /// Environment variables (only `LIVESHARD_*` are looked at).
    pub env: Vec<(String, String)>,
    /// Flag overrides as (dotted key, raw value), in command-line order.
    pub flags: Vec<(String, String)>,
}

impl Sources {
    /// Reads the file (if any) and this process's environment.
    pub fn gather(
        file: Option<PathBuf>,
        flags: Vec<(String, String)>,
    ) -> Result<Self, Vec<ConfigError>> {
        let file = match file {
            None => None,
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => Some((path, text)),
                Err(e) => {
                    return Err(vec![ConfigError {
                        key: String::new(),
                        source: path.display().to_string(),
                        message: format!("cannot read config file: {e}"),
                    }])
                }
            },
        };
        Ok(Self {
            file,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("LIVESHARD_"))
                .collect(),
            flags,
        })
    }
}

impl Config {
    /// Merges the layers and validates the result; returns every error found.
    pub fn load(sources: &Sources) -> Result<Config, Vec<ConfigError>> {
        let defaults = Value::try_from(Config::default()).expect("defaults serialize");
        let mut merged = defaults.clone();
        let mut errors = Vec::new();

        if let Some((path, text)) = &sources.file {
            let origin = path.display().to_string();
            match text.parse::<toml::Table>() {
                Ok(table) => overlay(
                    &defaults,
                    &mut merged,
                    "",
                    &Value::Table(table),
                    &origin,
                    &mut errors,
                ),
                Err(e) => errors.push(ConfigError {
                    key: String::new(),
                    source: origin,
                    message: format!("not valid TOML: {}", e.message()),
                }),
            }
        }

        let mut leaves = Vec::new();
        leaf_paths(&defaults, "", &mut leaves);
        let mut env_layer: Vec<(String, String, String)> = Vec::new();
        for (var, value) in &sources.env {
            let key = ENV_ALIASES
                .iter()
                .find(|(alias, _)| alias == var)
                .map(|(_, key)| key.to_string())
                .or_else(|| leaves.iter().find(|k| env_name(k) == *var).cloned());
            if let Some(key) = key {
                env_layer.push((key, value.clone(), format!("env {var}")));
            }
        }
        // Aliases first, so the derived name of the same key (more specific) wins.
        env_layer.sort_by_key(|(_, _, origin)| {
            !ENV_ALIASES
                .iter()
                .any(|(a, _)| origin == &format!("env {a}"))
        });
        let flag_layer = sources
            .flags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), format!("flag {k}")));
        for (key, raw, origin) in env_layer.into_iter().chain(flag_layer) {
            match lookup(&defaults, &key) {
                None => errors.push(ConfigError {
                    key,
                    source: origin,
                    message: "unknown key".into(),
                }),
                Some(default) => match parse_as(default, &raw) {
                    Ok(v) => set(&mut merged, &key, v),
                    Err(message) => errors.push(ConfigError {
                        key,
                        source: origin,
                        message,
                    }),
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let config: Config = match serde_path_to_error::deserialize(merged) {
            Ok(c) => c,
            Err(e) => {
                return Err(vec![ConfigError {
                    key: e.path().to_string(),
                    source: "config".into(),
                    message: e.inner().message().to_string(),
                }])
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml_redacted(&self) -> String {
        let mut v = Value::try_from(self).expect("config serializes");
        for key in SECRET_KEYS {
            if let Some(Value::String(s)) = lookup(&v, key) {
                if !s.is_empty() {
                    set(&mut v, key, Value::String("<redacted>".into()));
                }
            }
        }
        toml::to_string_pretty(&v).unwrap_or_default()
    }
}

/// The environment variable derived from a dotted key.
pub fn env_name(key: &str) -> String {
    format!("LIVESHARD_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Table(t) => {
            for (k, child) in t {
                leaf_paths(child, &join(prefix, k), out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn lookup<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(v, |v, part| v.as_table()?.get(part))
}

fn set(v: &mut Value, key: &str, value: Value) {
    let mut parts = key.split('.').peekable();
    let mut cur = v;
    while let Some(part) = parts.next() {
        let Some(table) = cur.as_table_mut() else {
            return;
        };
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return;
        }
        cur = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Default::default()));
    }
}

/// Lays `layer` over `merged`, checking each key and type against `defaults`.
fn overlay(
    defaults: &Value,
    merged: &mut Value,
    prefix: &str,
    layer: &Value,
    origin: &str,
    errors: &mut Vec<ConfigError>,
) {
    let Some(table) = layer.as_table() else {
        return;
    };
    for (k, v) in table {
        let key = join(prefix, k);
        match lookup(defaults, &key) {
            None => errors.push(ConfigError {
                key,
                source: origin.into(),
                message: "unknown key".into(),
            }),
            Some(Value::Table(_)) => {
                if v.is_table() {
                    overlay(defaults, merged, &key, v, origin, errors);
                } else {
                    errors.push(ConfigError {
                        key,
                        source: origin.into(),
                        message: format!("expected a table, found {}", v.type_str()),
                    });
                }
            }
            Some(default) => {
                if same_kind(default, v) {
                    set(merged, &key, v.clone());
                } else {
                    errors.push(ConfigError {
                        key,
                        source: origin.into(),
                        message: format!("expected {}, found {}", default.type_str(), v.type_str()),
                    });
                }
            }
        }
    }
}

fn same_kind(default: &Value, v: &Value) -> bool {
    matches!(
        (default, v),
        (Value::String(_), Value::String(_))
            | (Value::Integer(_), Value::Integer(_))
            | (Value::Float(_), Value::Float(_) | Value::Integer(_))
            | (Value::Boolean(_), Value::Boolean(_))
            | (Value::Array(_), Value::Array(_))
            | (Value::Datetime(_), Value::Datetime(_))
    )
}

/// Parses a raw string (environment or flag) as the type of the key's default.
fn parse_as(default: &Value, raw: &str) -> Result<Value, String> {
    match default {
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected integer, found {raw:?}")),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("expected float, found {raw:?}")),
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected boolean, found {raw:?}")),
        },
        Value::Array(_) => {
            let trimmed = raw.trim();
            if trimmed.starts_with('[') {
                format!("v = {trimmed}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .ok_or_else(|| format!("expected an array, found {raw:?}"))
            } else {
                Ok(Value::Array(
                    trimmed
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        Value::Table(_) => Err("is a section, not a value".into()),
        Value::Datetime(_) => raw
            .parse()
            .map(Value::Datetime)
            .map_err(|_| format!("expected a datetime, found {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_liveshard_variables_are_named_with_the_closest_known_one() {
        let found = unknown_env([
            "LIVESHARD_JWT_SECRETT",
            "LIVESHARD_JWT_SECRET",
            "LIVESHARD_HTTP_IDLE_TIMEOUT_MS",
            "LIVESHARD_DANMAKU_MERGE_WINDOW",
            "LIVESHARD_ZZZZZZZZZZZZZZZZ",
            "LIVESHARD_TEST_LOG",
            "LIVESHARD_TUNING_STATE",
            "LIVESHARD_REV",
            "PATH",
        ]);
        let got: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|u| (u.var.as_str(), u.suggestion.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "LIVESHARD_DANMAKU_MERGE_WINDOW",
                    Some("LIVESHARD_DANMAKU_MERGE_WINDOW_MS")
                ),
                ("LIVESHARD_JWT_SECRETT", Some("LIVESHARD_JWT_SECRET")),
                ("LIVESHARD_ZZZZZZZZZZZZZZZZ", None),
            ]
        );
    }
}
