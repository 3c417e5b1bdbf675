//! Logging for every command: `[log]` level and format (or `--log-format`,
//! or `RUST_LOG`), to standard error, with the dependencies that would
//! write secrets switched off.

use super::LogFormatArg;
use crate::config::{Config, LogFormat};

/// Log targets of dependencies that write protocol lines verbatim — IMAP
/// `LOGIN` with the password, `AUTHENTICATE` responses with OAuth tokens,
/// SMTP `AUTH` — and whole messages: always off, whatever `RUST_LOG` or
/// `[log] level` says (lettre's `tracing` feature is also off in Cargo.toml).
const SECRET_LOGGING_TARGETS: &[&str] = &["async_imap::imap_stream", "lettre"];

pub(super) fn init(config: Option<&Config>, arg: Option<LogFormatArg>) {
    use tracing_subscriber::EnvFilter;
    let level = config
        .map(|c| c.log.level.clone())
        .unwrap_or_else(|| "info".into());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    for target in SECRET_LOGGING_TARGETS {
        if let Ok(d) = format!("{target}=off").parse() {
            filter = filter.add_directive(d);
        }
    }
    let json = match arg {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Human) => false,
        None => config.is_some_and(|c| matches!(c.log.format, LogFormat::Json)),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
