//! Logging setup shared by every binary: human-readable text when stderr is a terminal (in
//! colour unless `NO_COLOR` is set), JSON lines otherwise (what `kubectl logs` and log pipelines want), or as `--log-format` says. The level
//! comes from `--log-level`, and `RUST_LOG` (a tracing `EnvFilter` directive) overrides it.
//!
//! The h2 crate's own events are kept to errors unless a `--log-level` directive names `h2` (or
//! RUST_LOG is set): h2 logs a peer's protocol slips at WARN, one line per frame, so a client
//! sending stray PING acks could make podproxy write some nine times its input to the log.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// The output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging flags every binary flattens into its clap struct. `env_prefix` differs per binary, so
/// the env twins (`WAITFOR_LOG_LEVEL`, ...) are declared by each binary; these are the shared
/// value types and the init function.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `waitfor=debug`.
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("--log-level {level:?} is not a valid level or filter ({reason}); use error, warn, info, debug or trace")]
    BadLevel { level: String, reason: String },
    #[error(
        "RUST_LOG={value:?} is not a valid filter ({reason}); unset it or use e.g. RUST_LOG=debug"
    )]
    BadRustLog { value: String, reason: String },
}

/// The filter for `--log-level`: the level or directives given, with the h2 crate kept to
/// errors unless a directive names it.
fn level_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    let bad = |e: &dyn std::fmt::Display| LoggingError::BadLevel {
        level: level.to_string(),
        reason: e.to_string(),
    };
    let filter = EnvFilter::try_new(level).map_err(|e| bad(&e))?;
    let names_h2 = level
        .split(',')
        .any(|d| d.trim() == "h2" || d.trim().starts_with("h2=") || d.trim().starts_with("h2::"));
    if names_h2 {
        return Ok(filter);
    }
    let quiet_h2 = "h2=error".parse().map_err(|e| bad(&e))?;
    Ok(filter.add_directive(quiet_h2))
}

/// Installs the global subscriber. Call once, from `main`, before anything logs.
pub fn init(settings: &LogSettings) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::BadRustLog {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => level_filter(&settings.level)?,
    };
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_ansi(use_color(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .try_init()
    };
    Ok(())
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything but the empty
/// string (https://no-color.org).
fn use_color(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_colours_off_on_a_terminal() {
        assert!(use_color(true, None));
        assert!(!use_color(true, Some("1".into())));
        assert!(
            use_color(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_color(false, None));
    }

    #[test]
    fn h2_is_kept_to_errors_unless_a_directive_names_it() {
        let shown = |level: &str| level_filter(level).map(|f| f.to_string());
        assert!(shown("info").expect("valid").contains("h2=error"));
        assert!(shown("podproxy=debug,warn")
            .expect("valid")
            .contains("h2=error"));
        // Asked for: left as asked.
        let asked = shown("info,h2=debug").expect("valid");
        assert!(
            asked.contains("h2=debug") && !asked.contains("h2=error"),
            "{asked}"
        );
        assert!(!shown("h2::proto=trace")
            .expect("valid")
            .contains("h2=error"));
        // A directive that only starts with the letters is another crate.
        assert!(shown("h2load=debug,info")
            .expect("valid")
            .contains("h2=error"));
    }
}
