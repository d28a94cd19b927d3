//! The command line (clap, every flag with a `WAITFOR_*` env twin, so a Pod spec can configure
//! waitfor with env alone) and its validation into a typed [`Config`]. Every error names the flag
//! or target and says what a valid value looks like; nothing falls back to a default silently.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use podkit_runtime::logging::{LogFormat, LogSettings};
use podkit_runtime::parse_duration;
use regex::Regex;

use crate::probe::http::parse_header;
use crate::probe::{HttpExpectations, ProbeSettings, StatusRanges};
use crate::target::Target;

const AFTER_HELP: &str = "\
Targets:
  host:port, tcp://host:port, tcp://[::1]:5432   a TCP port accepts connections
  http://host[:port]/path, https://...            the endpoint answers 2xx (see --http-*)
  unix:///path/to.sock                            the unix socket accepts connections
  file:///path                                    the file exists (see --file-nonempty)
  dns://name                                      the name resolves to an address
  postgres://host[:port]                          PostgreSQL accepts connections (as pg_isready)
  redis://host[:port]                             Redis answers PING (PONG or NOAUTH)
  mysql://host[:port]                             MySQL/MariaDB sends its greeting

Targets may also be given in WAITFOR_TARGETS, separated by spaces or commas (used when none is
on the command line).

Exit codes:
  0    every target is ready (or, with -- COMMAND, COMMAND's own exit code: waitfor execs it)
  2    usage or configuration error
  124  timed out
  126  COMMAND cannot be executed;  127  COMMAND not found
  130  interrupted (SIGINT);  143  terminated (SIGTERM)";

/// Wait until every dependency is really ready, then exit 0 or exec COMMAND.
#[derive(Debug, Parser)]
#[command(name = "waitfor", version = podkit_runtime::VERSION, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to wait for (see Targets below).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// The command to exec once every target is ready (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    /// Give up after this long (e.g. 90s, 5m); 0 waits forever.
    #[arg(long, env = "WAITFOR_TIMEOUT", default_value = "5m")]
    pub timeout: String,

    /// The longest one attempt at one target may take.
    #[arg(long, env = "WAITFOR_ATTEMPT_TIMEOUT", default_value = "2s")]
    pub attempt_timeout: String,

    /// The longest pause between attempts; polling starts at 50ms and backs off up to this.
    #[arg(long, env = "WAITFOR_MAX_INTERVAL", default_value = "1s")]
    pub max_interval: String,

    /// Consecutive successful attempts needed before a target counts as ready.
    #[arg(long, env = "WAITFOR_SUCCESS_COUNT", default_value = "1")]
    pub success_count: String,

    /// Ready as soon as any one target is ready (default: all of them).
    #[arg(long, env = "WAITFOR_ANY")]
    pub any: bool,

    /// Accepted HTTP status codes, e.g. 200,301-302 (default: any 2xx).
    #[arg(long, env = "WAITFOR_HTTP_STATUS")]
    pub http_status: Option<String>,

    /// A regular expression the HTTP response body must match (first 1 MiB).
    #[arg(long, env = "WAITFOR_HTTP_BODY")]
    pub http_body: Option<String>,

    /// A response header that must be present ('Name') or have a value ('Name: value'); repeatable.
    #[arg(long, env = "WAITFOR_HTTP_HEADER")]
    pub http_header: Vec<String>,

    /// A header to send with the HTTP request ('Name: value'); repeatable.
    #[arg(long, env = "WAITFOR_HTTP_REQUEST_HEADER")]
    pub http_request_header: Vec<String>,

    /// A PEM file of CA certificates trusted for https targets, besides the bundled web roots.
    #[arg(long, env = "WAITFOR_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify https certificates.
    #[arg(long, env = "WAITFOR_INSECURE")]
    pub insecure: bool,

    /// A file target is ready only when it is a regular file with content.
    #[arg(long, env = "WAITFOR_FILE_NONEMPTY")]
    pub file_nonempty: bool,

    /// Log format: auto (text on a terminal, JSON otherwise), text or json.
    #[arg(long, env = "WAITFOR_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,

    /// Log level or filter (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, env = "WAITFOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// All targets, or any one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    All,
    Any,
}

/// The validated configuration `run` works from.
#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Vec<Target>,
    pub command: Vec<OsString>,
    /// `None` waits forever.
    pub timeout: Option<Duration>,
    pub attempt_timeout: Duration,
    pub max_interval: Duration,
    pub success_count: u32,
    pub mode: Mode,
    pub probe: ProbeSettings,
    pub log: LogSettings,
}

/// A usage or configuration error: one line, naming the flag or target and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Validates the command line; `env_targets` is the value of `WAITFOR_TARGETS`, if set.
    pub fn from_cli(cli: Cli, env_targets: Option<String>) -> Result<Config, ConfigError> {
        let raw_targets: Vec<String> = if !cli.targets.is_empty() {
            cli.targets
        } else {
            env_targets
                .unwrap_or_default()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        if raw_targets.is_empty() {
            return Err(ConfigError(
                "no target given: name at least one (e.g. `waitfor db:5432`) or set WAITFOR_TARGETS".into(),
            ));
        }
        let targets = raw_targets
            .iter()
            .map(|t| Target::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError(e.to_string()))?;

        let duration = |flag: &str, value: &str| {
            parse_duration(value).map_err(|e| ConfigError(format!("--{flag}: {e}")))
        };
        let timeout = duration("timeout", &cli.timeout)?;
        let attempt_timeout = duration("attempt-timeout", &cli.attempt_timeout)?;
        if attempt_timeout.is_zero() {
            return Err(ConfigError(
                "--attempt-timeout must be more than 0, e.g. 2s".into(),
            ));
        }
        let max_interval = duration("max-interval", &cli.max_interval)?;
        if max_interval.is_zero() {
            return Err(ConfigError(
                "--max-interval must be more than 0, e.g. 1s".into(),
            ));
        }
        let success_count = match cli.success_count.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(ConfigError(format!(
                    "--success-count {:?}: give a whole number of at least 1",
                    cli.success_count
                )))
            }
        };

        let status = match &cli.http_status {
            Some(s) => StatusRanges::parse(s)
                .map_err(|e| ConfigError(format!("--http-status {s:?}: {e}")))?,
            None => StatusRanges::default(),
        };
        let body = cli
            .http_body
            .as_deref()
            .map(|re| {
                Regex::new(re).map_err(|e| {
                    let last = podkit_runtime::cli::last_line(&e);
                    ConfigError(format!(
                        "--http-body {re:?} is not a valid regular expression: {last}"
                    ))
                })
            })
            .transpose()?;
        let headers = cli
            .http_header
            .iter()
            .map(|h| parse_header(h, true).map_err(|e| ConfigError(format!("--http-header: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let request_headers = cli
            .http_request_header
            .iter()
            .map(|h| {
                parse_header(h, false)
                    .map(|(n, v)| (n, v.unwrap_or_else(|| http::HeaderValue::from_static(""))))
                    .map_err(|e| ConfigError(format!("--http-request-header: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let has_https = targets
            .iter()
            .any(|t| matches!(t, Target::Http { tls: true, .. }));
        if cli.insecure && cli.ca_file.is_some() {
            return Err(ConfigError(
                "--insecure and --ca-file contradict each other: verify with --ca-file, or skip verification with --insecure".into(),
            ));
        }
        let tls = if has_https || cli.ca_file.is_some() {
            let config = podkit_runtime::tls_client::client_config(
                cli.ca_file.as_deref(),
                cli.insecure,
                None,
            )
            .map_err(|e| ConfigError(e.to_string()))?;
            Some(Arc::new(config))
        } else {
            None
        };

        Ok(Config {
            targets,
            command: cli.command,
            timeout: (!timeout.is_zero()).then_some(timeout),
            attempt_timeout,
            max_interval,
            success_count,
            mode: if cli.any { Mode::Any } else { Mode::All },
            probe: ProbeSettings {
                http: HttpExpectations {
                    status,
                    body,
                    headers,
                    request_headers,
                },
                tls,
                file_nonempty: cli.file_nonempty,
            },
            log: LogSettings {
                format: cli.log_format,
                level: cli.log_level,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("waitfor").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        Config::from_cli(cli, None)
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = config(&["db:5432"]).expect("valid");
        assert_eq!(c.timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.attempt_timeout, Duration::from_secs(2));
        assert_eq!(c.max_interval, Duration::from_secs(1));
        assert_eq!(c.success_count, 1);
        assert_eq!(c.mode, Mode::All);
        assert!(c.probe.tls.is_none());
    }

    #[test]
    fn env_targets_split_on_commas_and_spaces() {
        let cli = Cli::try_parse_from(["waitfor"]).expect("parses");
        let c =
            Config::from_cli(cli, Some("db:5432, redis://cache\nfile:///x".into())).expect("valid");
        assert_eq!(c.targets.len(), 3);
    }

    #[test]
    fn zero_timeout_means_forever() {
        let c = config(&["--timeout", "0", "db:1"]).expect("valid");
        assert_eq!(c.timeout, None);
    }
}
