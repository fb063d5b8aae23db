//! The `liveshard` command: `serve`, `token`, `sign`, `config check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use liveshard::config::{Config, ConfigError, Sources};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "liveshard",
    version,
    about = "Thread-per-core live-streaming backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Print a login token signed with the configured secret (for tests, loadgen, local use).
    Token {
        /// User id (the token's `sub`).
        #[arg(long)]
        uid: String,
        /// Display name.
        #[arg(long, default_value = "")]
        nick: String,
        /// Lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
        /// Roles, e.g. --role admin (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print a signed RTMP push URL, or with --play a play URL (Tencent Cloud CSS
    /// txSecret/txTime scheme).
    Sign {
        /// Stream name (also the danmaku room id).
        #[arg(long)]
        stream: String,
        /// Sign a play URL with the play key (media.play_key or <data_dir>/play.key)
        /// instead of a push URL with the push key.
        #[arg(long)]
        play: bool,
        /// RTMP application (default: media.app).
        #[arg(long)]
        app: Option<String>,
        /// Validity in seconds, at least 1 (default: media.push_url_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
        /// Host[:port] to put in the URL (default: server.rtmp).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, or every error with its key.
    Check(ConfigArgs),
}

/// Where the configuration comes from. Flags win over `LIVESHARD_*` variables, which win
/// over the file.
#[derive(Args, Clone)]
struct ConfigArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP listen address (server.http).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// RTMP listen address (server.rtmp).
    #[arg(long, value_name = "ADDR")]
    rtmp: Option<String>,
    /// HTTPS listen address (server.https; needs server.tls_cert and server.tls_key).
    #[arg(long, value_name = "ADDR")]
    https: Option<String>,
    /// Redis for a cluster of nodes (cluster.redis): redis://, rediss:// or
    /// redis+cluster://h1:p1,h2:p2.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Number of shards, 0 = one per CPU (server.shards).
    #[arg(long, value_name = "N")]
    shards: Option<String>,
    /// Data directory (server.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// I/O driver: auto, uring or epoll (server.driver).
    #[arg(long, value_name = "DRIVER")]
    driver: Option<String>,
    /// Log level (log.level).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Any other key: --set http.idle_timeout_ms=5000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, Vec<ConfigError>> {
        let mut flags: Vec<(String, String)> = [
            ("server.http", &self.http),
            ("server.rtmp", &self.rtmp),
            ("server.https", &self.https),
            ("cluster.redis", &self.redis),
            ("server.shards", &self.shards),
            ("server.data_dir", &self.data_dir),
            ("server.driver", &self.driver),
            ("log.level", &self.log_level),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect();
        for kv in &self.set {
            match kv.split_once('=') {
                Some((k, v)) => flags.push((k.trim().to_string(), v.to_string())),
                None => {
                    return Err(vec![ConfigError {
                        key: kv.clone(),
                        source: "flag --set".into(),
                        message: "expected KEY=VALUE".into(),
                    }])
                }
            }
        }
        Config::load(&Sources::gather(self.config.clone(), flags)?)
    }
}

/// `LIVESHARD_*` variables of this process that set nothing (typos, most likely).
fn unknown_env() -> Vec<liveshard::config::UnknownEnv> {
    let vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    liveshard::config::unknown_env(vars.iter().map(String::as_str))
}

/// Prints the unknown-variable warnings on stderr (commands that do not log).
fn warn_env() {
    for w in unknown_env() {
        eprintln!("warning: {w}");
    }
}

fn report(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("config error: {e}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            // Warnings go to stderr and do not change the exit status.
            warn_env();
            match args.load() {
                Ok(config) => {
                    // Secrets by key, and credentials in URLs (a hook's ?token=…).
                    print!("{}", liveshard::logging::redact(&config.to_toml_redacted()));
                    ExitCode::SUCCESS
                }
                Err(errors) => report(&errors),
            }
        }
        Command::Token {
            uid,
            nick,
            ttl,
            roles,
            config,
        } => {
            warn_env();
            let config = match config.load() {
                Ok(c) => c,
                Err(errors) => return report(&errors),
            };
            let secret = match liveshard::auth::load_or_create_secret(
                &config.auth.jwt_secret,
                &config.server.data_dir,
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("liveshard: token secret: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let jwt = liveshard::auth::Jwt::new(secret, config.auth.jwt_issuer.clone());
            let ttl = ttl.unwrap_or(config.auth.token_ttl_secs);
            println!(
                "{}",
                jwt.issue(&uid, &nick, &roles, ttl, liveshard::auth::now_unix())
            );
            ExitCode::SUCCESS
        }
        Command::Sign {
            stream,
            play,
            app,
            ttl,
            host,
            config,
        } => {
            warn_env();
            let config = match config.load() {
                Ok(c) => c,
                Err(errors) => return report(&errors),
            };
            if !liveshard::live::valid_stream(&stream) {
                eprintln!("liveshard: stream names are 1-64 of A-Z a-z 0-9 _ - .");
                return ExitCode::from(2);
            }
            let ttl = ttl.unwrap_or(config.media.push_url_ttl_secs);
            if ttl == 0 {
                eprintln!("liveshard: --ttl must be at least 1 (a URL valid for 0 seconds is already expired)");
                return ExitCode::from(2);
            }
            // Each kind of URL with its own key: a play URL must never publish.
            let keys = liveshard::auth::MediaKeys::load(&config.media, &config.server.data_dir);
            let key = match keys {
                Ok(k) if play => k.play,
                Ok(k) => k.push,
                Err(e) => {
                    eprintln!("liveshard: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let expiry = liveshard::auth::now_unix().saturating_add(ttl);
            let (secret, time) = liveshard::media::sign::sign(&key, &stream, expiry);
            let host = host.unwrap_or_else(|| config.server.rtmp.to_string());
            let app = app.unwrap_or(config.media.app.clone());
            println!("rtmp://{host}/{app}/{stream}?txSecret={secret}&txTime={time}");
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            let config = match args.load() {
                Ok(c) => c,
                Err(errors) => {
                    warn_env();
                    return report(&errors);
                }
            };
            liveshard::logging::init(&config.log.level, &config.log.format);
            for w in unknown_env() {
                tracing::warn!(var = %w.var, suggestion = w.suggestion.as_deref().unwrap_or(""), "{w}");
            }
            let m = &config.media;
            if m.play_sign && !m.push_key.is_empty() && m.play_key.is_empty() {
                // A shared push key suggests several nodes; a generated play key is not.
                tracing::warn!(
                    "media.play_key is not set: play URLs are signed with this node's \
                     generated <data_dir>/play.key; set media.play_key to share it between nodes"
                );
            }
            match liveshard::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("liveshard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
