//! Structured logs on stderr: text for people, JSON lines for collectors.

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;

/// Installs the global subscriber. `level` and `format` were validated by the config.
pub fn init(level: &str, format: &str) {
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
