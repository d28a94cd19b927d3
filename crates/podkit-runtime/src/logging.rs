//! Logging setup shared by every binary: human-readable text when stderr is a terminal, JSON lines
//! otherwise (what `kubectl logs` and log pipelines want), or as `--log-format` says. The level
//! comes from `--log-level`, and `RUST_LOG` (a tracing `EnvFilter` directive) overrides it.

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

/// Installs the global subscriber. Call once, from `main`, before anything logs.
pub fn init(settings: &LogSettings) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::BadRustLog {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => EnvFilter::try_new(&settings.level).map_err(|e| LoggingError::BadLevel {
            level: settings.level.clone(),
            reason: e.to_string(),
        })?,
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
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    Ok(())
}
