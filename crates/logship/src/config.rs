//! logship's command line (clap, every flag with a `LOGSHIP_*` env twin; repeatable flags take
//! comma-separated lists from env) and its validation into a typed [`Config`]. Every error names
//! the flag and the fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use podkit_runtime::logging::{LogFormat, LogSettings};
use podkit_runtime::{parse_duration, parse_size};

use crate::batch::Output;
use crate::decode::{DecodeSettings, Format};
use crate::discover::Globs;
use crate::sink::delivery::{
    Compression, Credential, CredentialKind, DeadLetter, EsAction, NetSettings, OtlpEncoding,
    SyslogSettings,
};
use crate::sink::{HttpKind, SinkSpec};
use crate::tail::{ReadFrom, TailSettings};

/// The Downward API variables read into labels, and the label names they become.
pub const DOWNWARD_API: [(&str, &str); 4] = [
    ("POD_NAME", "pod"),
    ("POD_NAMESPACE", "namespace"),
    ("NODE_NAME", "node"),
    ("CONTAINER_NAME", "container"),
];

const AFTER_HELP: &str = "\
Sinks: stdout (default); file:///path; http(s)://host:port/path (POST of NDJSON records);
loki://host:port (push API); elasticsearch://host:port/INDEX (_bulk); otlp://host:port
(OTLP/HTTP /v1/logs); each network scheme also as NAME+https:// (TLS); syslog+tcp://,
syslog+tls://, syslog+udp://host:port (RFC 5424, octet-counted on TCP and TLS). Several sinks
fan out: a position is checkpointed once every sink has taken the lines before it.
Network sinks retry connection errors, timeouts, redirects, 401, 403, 408, 429, 5xx (but 501,
505; OTLP: 429, 502-504) and statuses outside 100-599 with backoff, honouring Retry-After;
other answers are refused for good: logged, counted, and written to --dead-letter-file when set.
Labels: --label key=value, plus pod, namespace, node and container from the Downward API
variables POD_NAME, POD_NAMESPACE, NODE_NAME and CONTAINER_NAME when set.
Lines longer than --max-line-bytes are split into pieces of at most that size (never dropped).

Exit codes: 0 done (drained after SIGTERM, --oneshot, --exit-on-file); 1 a sink failed or the
drain did not finish in --drain-timeout; 2 usage or configuration error (including an
unwritable checkpoint directory).";

/// Tail log files on a shared volume and ship every line, once, through rotation and restarts.
#[derive(Debug, Parser)]
#[command(name = "logship", version = podkit_runtime::VERSION, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Files to read, as absolute globs (e.g. /var/log/app/*.log); repeatable.
    #[arg(
        long = "path",
        env = "LOGSHIP_PATH",
        value_delimiter = ',',
        required = true
    )]
    pub paths: Vec<String>,

    /// Files to leave out, as globs; repeatable.
    #[arg(long, env = "LOGSHIP_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Where to start files that exist at the very first start (no checkpoints yet).
    #[arg(long, env = "LOGSHIP_READ_FROM", value_enum, default_value = "head")]
    pub read_from: ReadFrom,

    /// Where to ship, repeatable (every sink gets every line): stdout, file:///path,
    /// http(s)://host:port/path (NDJSON), loki://host:port, elasticsearch://host:port/INDEX,
    /// otlp://host:port (each network scheme also as NAME+https://), syslog+tcp://,
    /// syslog+tls:// or syslog+udp://host:port.
    #[arg(
        long = "sink",
        env = "LOGSHIP_SINK",
        value_delimiter = ',',
        default_value = "stdout"
    )]
    pub sinks: Vec<String>,

    /// Output shape: raw lines, or one JSON object per line.
    #[arg(long, env = "LOGSHIP_OUTPUT", value_enum, default_value = "raw")]
    pub output: Output,

    /// A label added to every JSON record, key=value; repeatable.
    #[arg(long = "label", env = "LOGSHIP_LABEL", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Input format of the files.
    #[arg(long, env = "LOGSHIP_FORMAT", value_enum, default_value = "raw")]
    pub format: Format,

    /// A regex that matches the first line of a multiline event (e.g. '^\d{4}-').
    #[arg(long, env = "LOGSHIP_MULTILINE_START")]
    pub multiline_start: Option<String>,

    /// Ship a pending multiline event when nothing has followed it for this long.
    #[arg(long, env = "LOGSHIP_MULTILINE_TIMEOUT", default_value = "1s")]
    pub multiline_timeout: String,

    /// The largest multiline or joined CRI event; the rest is cut and counted.
    #[arg(long, env = "LOGSHIP_MAX_EVENT_BYTES", default_value = "1MiB")]
    pub max_event_bytes: String,

    /// The longest line; longer lines are split into pieces of this size.
    #[arg(long, env = "LOGSHIP_MAX_LINE_BYTES", default_value = "256KiB")]
    pub max_line_bytes: String,

    /// Where positions are kept (default: .logship/ beside the first --path).
    #[arg(long, env = "LOGSHIP_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// The most time between an acknowledgement and the checkpoint write that saves it; writes
    /// are coalesced, at most one per interval (10 a second by default).
    #[arg(long, env = "LOGSHIP_CHECKPOINT_INTERVAL", default_value = "100ms")]
    pub checkpoint_interval: String,

    /// Serve /healthz, /readyz and /metrics on this address (e.g. 0.0.0.0:9090).
    #[arg(long, env = "LOGSHIP_ADMIN", value_parser = podkit_runtime::parse_listen_addr)]
    pub admin: Option<SocketAddr>,

    /// Read every file to its end, ship, checkpoint, exit.
    #[arg(long, env = "LOGSHIP_ONESHOT")]
    pub oneshot: bool,

    /// Once this file exists: read everything to its end, ship, checkpoint, exit 0 (Jobs).
    #[arg(long, env = "LOGSHIP_EXIT_ON_FILE")]
    pub exit_on_file: Option<PathBuf>,

    /// After SIGTERM, the longest time to finish reading, shipping and checkpointing.
    #[arg(long, env = "LOGSHIP_DRAIN_TIMEOUT", default_value = "10s")]
    pub drain_timeout: String,

    /// After SIGTERM, keep reading until no file has grown for this long (the app's last words).
    #[arg(long, env = "LOGSHIP_DRAIN_QUIET", default_value = "500ms")]
    pub drain_quiet: String,

    /// A batch holds at most this many events.
    #[arg(long, env = "LOGSHIP_BATCH_MAX_LINES", default_value = "10000")]
    pub batch_max_lines: String,

    /// A batch holds at most about this many bytes of messages.
    #[arg(long, env = "LOGSHIP_BATCH_MAX_BYTES", default_value = "1MiB")]
    pub batch_max_bytes: String,

    /// A batch waits at most this long for more events.
    #[arg(long, env = "LOGSHIP_BATCH_TIMEOUT", default_value = "1s")]
    pub batch_timeout: String,

    /// How often files are checked for rotation, truncation and deletion (the safety net under
    /// change events).
    #[arg(long, env = "LOGSHIP_POLL_INTERVAL", default_value = "250ms")]
    pub poll_interval: String,

    /// How often the globs are scanned for new files (change events trigger scans too).
    #[arg(long, env = "LOGSHIP_SCAN_INTERVAL", default_value = "1s")]
    pub scan_interval: String,

    /// How long a rotated or deleted file stays open after reaching its end, for late writes.
    #[arg(long, env = "LOGSHIP_ROTATE_WAIT", default_value = "5s")]
    pub rotate_wait: String,

    /// Request-body compression for HTTP-based sinks.
    #[arg(long, env = "LOGSHIP_COMPRESSION", value_enum, default_value = "gzip")]
    pub compression: Compression,

    /// The longest a network request (or a syslog batch write) may take, answer included.
    #[arg(long, env = "LOGSHIP_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,

    /// The longest a connection to a network sink may take to open.
    #[arg(long, env = "LOGSHIP_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: String,

    /// Batches a network sink delivers at once; beyond that reading waits (backpressure).
    #[arg(long, env = "LOGSHIP_MAX_IN_FLIGHT", default_value = "4")]
    pub max_in_flight: String,

    /// The first delay before a retry; it doubles (with jitter) up to --retry-max-backoff.
    #[arg(long, env = "LOGSHIP_RETRY_BACKOFF", default_value = "250ms")]
    pub retry_backoff: String,

    /// The longest delay between retries (a Retry-After answer may ask for longer, up to 10m).
    #[arg(long, env = "LOGSHIP_RETRY_MAX_BACKOFF", default_value = "30s")]
    pub retry_max_backoff: String,

    /// Where events a receiver refused for good are appended, one JSON line each.
    #[arg(long, env = "LOGSHIP_DEAD_LETTER_FILE")]
    pub dead_letter_file: Option<PathBuf>,

    /// A file holding user:password for HTTP Basic auth; read again when it changes.
    #[arg(
        long,
        env = "LOGSHIP_BASIC_AUTH_FILE",
        conflicts_with = "bearer_token_file"
    )]
    pub basic_auth_file: Option<PathBuf>,

    /// A file holding a bearer token; read again when it changes (Secret volume updates).
    #[arg(long, env = "LOGSHIP_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<PathBuf>,

    /// A header added to every HTTP request, 'Name: value'; repeatable (one per line in env).
    #[arg(long = "header", env = "LOGSHIP_HEADER", value_delimiter = '\n')]
    pub headers: Vec<String>,

    /// PEM CA certificates trusted for https and TLS sinks, besides the bundled Mozilla roots.
    #[arg(long, env = "LOGSHIP_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate chain for mTLS (with --client-key).
    #[arg(long, env = "LOGSHIP_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, env = "LOGSHIP_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Loki tenant, sent as X-Scope-OrgID.
    #[arg(long, env = "LOGSHIP_LOKI_TENANT")]
    pub loki_tenant: Option<String>,

    /// Elasticsearch bulk action: create (data streams) or index.
    #[arg(long, env = "LOGSHIP_ES_ACTION", value_enum, default_value = "create")]
    pub es_action: EsAction,

    /// OTLP body encoding.
    #[arg(
        long,
        env = "LOGSHIP_OTLP_ENCODING",
        value_enum,
        default_value = "protobuf"
    )]
    pub otlp_encoding: OtlpEncoding,

    /// Syslog facility: a name (user, daemon, local0..local7, ...) or a number 0-23.
    #[arg(long, env = "LOGSHIP_SYSLOG_FACILITY", default_value = "user")]
    pub syslog_facility: String,

    /// Syslog SD-ID the labels go under: name@IANA-enterprise-number (32473 is the
    /// documentation number; set your organisation's).
    #[arg(long, env = "LOGSHIP_SYSLOG_SD_ID", default_value = "podkit@32473")]
    pub syslog_sd_id: String,

    /// Syslog APP-NAME (default: the container label, else logship).
    #[arg(long, env = "LOGSHIP_SYSLOG_APP_NAME")]
    pub syslog_app_name: Option<String>,

    /// Log format: auto (text on a terminal, JSON otherwise), text or json.
    #[arg(long, env = "LOGSHIP_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,

    /// Log level or filter; RUST_LOG overrides it.
    #[arg(long, env = "LOGSHIP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tail: TailSettings,
    pub sinks: Vec<SinkSpec>,
    pub output: Output,
    pub labels: Vec<(String, String)>,
    pub checkpoint_dir: PathBuf,
    /// `--checkpoint-dir` was given (created with its parents), rather than derived from the
    /// first `--path` (created only inside a directory that exists).
    pub checkpoint_dir_given: bool,
    pub checkpoint_interval: Duration,
    pub admin: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub net: Arc<NetSettings>,
    pub log: LogSettings,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Validates the command line; `env` looks up the Downward API variables.
    pub fn from_cli(cli: Cli, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let e = |m: String| ConfigError(m);
        let duration =
            |flag: &str, v: &str| parse_duration(v).map_err(|x| e(format!("--{flag}: {x}")));
        let nonzero = |flag: &str, v: &str| {
            let d = duration(flag, v)?;
            if d.is_zero() {
                return Err(e(format!("--{flag} must be more than 0")));
            }
            Ok(d)
        };
        let size = |flag: &str, v: &str| -> Result<usize, ConfigError> {
            match parse_size(v) {
                Ok(0) => Err(e(format!("--{flag} must be more than 0"))),
                Ok(n) => usize::try_from(n).map_err(|_| e(format!("--{flag} {v:?} is too large"))),
                Err(x) => Err(e(format!("--{flag}: {x}"))),
            }
        };
        let mut globs = Globs::new(&cli.paths, &cli.exclude).map_err(|x| e(x.to_string()))?;
        let sinks = cli
            .sinks
            .iter()
            .map(|s| SinkSpec::parse(s.trim()).map_err(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut labels = Vec::new();
        for l in &cli.labels {
            match l.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    labels.push((k.trim().to_string(), v.to_string()))
                }
                _ => {
                    return Err(e(format!(
                        "--label {l:?}: use key=value, e.g. --label app=web"
                    )))
                }
            }
        }
        for (var, name) in DOWNWARD_API {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                if !labels.iter().any(|(k, _)| k == name) {
                    labels.push((name.to_string(), v));
                }
            }
        }
        let multiline_start = cli
            .multiline_start
            .as_deref()
            .map(|re| {
                regex::bytes::Regex::new(re).map_err(|x| {
                    let last = podkit_runtime::cli::last_line(&x);
                    e(format!(
                        "--multiline-start {re:?} is not a valid regular expression: {last}"
                    ))
                })
            })
            .transpose()?;
        let net = Arc::new(net_settings(&cli, &sinks, &labels)?);
        let checkpoint_dir_given = cli.checkpoint_dir.is_some();
        let checkpoint_dir = match cli.checkpoint_dir {
            Some(d) => d,
            None => globs
                .first_dir()
                .map(|d| d.join(".logship"))
                .ok_or_else(|| e("--path is required".into()))?,
        };
        globs.never_read(&checkpoint_dir);
        for sink in &sinks {
            if let SinkSpec::File(path) = sink {
                globs.never_read(path);
            }
        }
        if let Some(path) = &cli.dead_letter_file {
            globs.never_read(path);
        }
        let poll_interval = nonzero("poll-interval", &cli.poll_interval)?;
        let batch_max_lines = match cli.batch_max_lines.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(e(format!(
                    "--batch-max-lines {:?}: give a whole number above 0",
                    cli.batch_max_lines
                )))
            }
        };
        let exit_on_file = match cli.exit_on_file {
            Some(p) if !p.is_absolute() => {
                return Err(e(format!(
                    "--exit-on-file {}: give an absolute path",
                    p.display()
                )))
            }
            other => other,
        };
        Ok(Config {
            tail: TailSettings {
                globs,
                read_from: cli.read_from,
                max_line_bytes: size("max-line-bytes", &cli.max_line_bytes)?,
                decode: DecodeSettings {
                    format: cli.format,
                    multiline_start,
                    multiline_timeout: nonzero("multiline-timeout", &cli.multiline_timeout)?,
                    max_event_bytes: size("max-event-bytes", &cli.max_event_bytes)?,
                },
                batch_max_lines,
                batch_max_bytes: size("batch-max-bytes", &cli.batch_max_bytes)?,
                batch_timeout: nonzero("batch-timeout", &cli.batch_timeout)?,
                poll_interval,
                scan_interval: nonzero("scan-interval", &cli.scan_interval)?,
                rotate_wait: duration("rotate-wait", &cli.rotate_wait)?,
                // Longer than the moment between a copy's creation and its first write, short
                // enough that a new log file's first line is not held up noticeably.
                settle: poll_interval.min(Duration::from_millis(250)),
                exit_on_file,
                oneshot: cli.oneshot,
                drain_quiet: duration("drain-quiet", &cli.drain_quiet)?,
            },
            sinks,
            output: cli.output,
            labels,
            checkpoint_dir,
            checkpoint_dir_given,
            checkpoint_interval: nonzero("checkpoint-interval", &cli.checkpoint_interval)?,
            admin: cli.admin,
            drain_timeout: nonzero("drain-timeout", &cli.drain_timeout)?,
            net,
            log: LogSettings {
                format: cli.log_format,
                level: cli.log_level,
            },
        })
    }
}

/// The network sinks' settings; files named by flags are read here, so a bad one stops logship
/// at start with exit 2.
fn net_settings(
    cli: &Cli,
    sinks: &[SinkSpec],
    labels: &[(String, String)],
) -> Result<NetSettings, ConfigError> {
    let e = |m: String| ConfigError(m);
    let nonzero = |flag: &str, v: &str| -> Result<Duration, ConfigError> {
        match parse_duration(v) {
            Ok(d) if d.is_zero() => Err(e(format!("--{flag} must be more than 0"))),
            Ok(d) => Ok(d),
            Err(x) => Err(e(format!("--{flag}: {x}"))),
        }
    };
    let max_in_flight = match cli.max_in_flight.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => n,
        _ => {
            return Err(e(format!(
                "--max-in-flight {:?}: give a whole number from 1 to 256",
                cli.max_in_flight
            )))
        }
    };
    let retry_initial = nonzero("retry-backoff", &cli.retry_backoff)?;
    let retry_max = nonzero("retry-max-backoff", &cli.retry_max_backoff)?;
    if retry_max > Duration::from_secs(3600) {
        return Err(e(format!(
            "--retry-max-backoff {}: at most 1h; a longer wait only hides an outage",
            cli.retry_max_backoff
        )));
    }
    if retry_max < retry_initial {
        return Err(e(format!(
            "--retry-max-backoff {} is below --retry-backoff {}; raise it",
            cli.retry_max_backoff, cli.retry_backoff
        )));
    }
    let mut headers = Vec::new();
    for h in cli.headers.iter().filter(|h| !h.trim().is_empty()) {
        let parsed = h.split_once(':').and_then(|(n, v)| {
            let name = http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?;
            let value = http::HeaderValue::from_str(v.trim()).ok()?;
            Some((name, value))
        });
        const RESERVED: [&str; 5] = [
            "content-type",
            "content-encoding",
            "content-length",
            "transfer-encoding",
            "host",
        ];
        match parsed {
            Some((name, _)) if RESERVED.contains(&name.as_str()) => {
                return Err(e(format!(
                    "--header {h:?}: logship sets {name} itself; leave it out"
                )))
            }
            Some((name, _))
                if name == http::header::AUTHORIZATION
                    && (cli.basic_auth_file.is_some() || cli.bearer_token_file.is_some()) =>
            {
                return Err(e(format!(
                    "--header {h:?}: Authorization comes from the credential file; give one or the other"
                )))
            }
            Some(pair) => headers.push(pair),
            None => {
                return Err(e(format!(
                    "--header {h:?}: use 'Name: value', e.g. --header 'X-Api-Key: abc'"
                )))
            }
        }
    }
    let auth = match (&cli.basic_auth_file, &cli.bearer_token_file) {
        (Some(p), _) => Some(Credential::new(CredentialKind::Basic, p).map_err(e)?),
        (None, Some(p)) => Some(Credential::new(CredentialKind::Bearer, p).map_err(e)?),
        (None, None) => None,
    };
    let client_auth = match (&cli.client_cert, &cli.client_key) {
        (Some(cert), Some(key)) => Some(podkit_runtime::tls_client::ClientAuth { cert, key }),
        _ => None,
    };
    let tls = podkit_runtime::tls_client::client_config(cli.ca_file.as_deref(), false, client_auth)
        .map_err(|x| e(x.to_string()))?;
    let loki_tenant = cli
        .loki_tenant
        .as_deref()
        .map(|t| {
            http::HeaderValue::from_str(t.trim()).map_err(|_| {
                e(format!(
                    "--loki-tenant {t:?}: a tenant ID is printable ASCII without control characters"
                ))
            })
        })
        .transpose()?;
    if sinks.iter().any(|s| {
        matches!(
            s,
            SinkSpec::Http {
                kind: HttpKind::Loki,
                ..
            }
        )
    }) {
        if let Some((k, _)) = labels
            .iter()
            .find(|(k, _)| !crate::sink::loki::valid_label_name(k))
        {
            return Err(e(format!(
                "--label {k:?}: Loki label names must match [a-zA-Z_][a-zA-Z0-9_]*; rename it, e.g. {}",
                k.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect::<String>()
            )));
        }
    }
    let facility = crate::sink::syslog::facility(cli.syslog_facility.trim()).ok_or_else(|| {
        e(format!(
            "--syslog-facility {:?}: give a facility name (user, daemon, local0..local7, ...) or a number 0-23",
            cli.syslog_facility
        ))
    })?;
    let label = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let hostname = label("pod")
        .or_else(|| label("node"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default();
    let app_name = cli
        .syslog_app_name
        .clone()
        .or_else(|| label("container"))
        .unwrap_or_else(|| "logship".into());
    let dead_letter = cli
        .dead_letter_file
        .as_deref()
        .map(DeadLetter::open)
        .transpose()
        .map_err(e)?;
    let request_timeout = nonzero("request-timeout", &cli.request_timeout)?;
    Ok(NetSettings {
        compression: cli.compression,
        request_timeout,
        connect_timeout: nonzero("connect-timeout", &cli.connect_timeout)?,
        max_in_flight,
        retry_initial,
        retry_max,
        dead_letter,
        auth,
        headers,
        tls: Arc::new(tls),
        loki_tenant,
        es_action: cli.es_action,
        otlp_encoding: cli.otlp_encoding,
        syslog: SyslogSettings {
            facility,
            app_name,
            hostname,
            sd_id: {
                let id = cli.syslog_sd_id.trim();
                let valid = !id.is_empty()
                    && id.len() <= 32
                    && id
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"' | ' '));
                if !valid {
                    return Err(e(format!(
                        "--syslog-sd-id {id:?}: give name@enterprise-number, at most 32 printable characters without = ] \" or spaces"
                    )));
                }
                id.to_string()
            },
        },
        labels: labels.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("logship").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::from_cli(cli, |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .map_err(|e| e.0)
    }

    #[test]
    fn defaults_and_downward_api_labels() {
        let c = parse(
            &["--path", "/logs/*.log", "--label", "app=web"],
            &[("POD_NAME", "web-1"), ("POD_NAMESPACE", "prod")],
        )
        .expect("valid");
        assert_eq!(c.checkpoint_dir, PathBuf::from("/logs/.logship"));
        assert_eq!(c.sinks, vec![SinkSpec::Stdout]);
        assert_eq!(c.tail.max_line_bytes, 256 * 1024);
        assert_eq!(
            c.labels,
            vec![
                ("app".into(), "web".into()),
                ("pod".into(), "web-1".into()),
                ("namespace".into(), "prod".into())
            ]
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, needle) in [
            (vec!["--path", "logs/*.log"], "--path"),
            (vec!["--path", "/l/*.log", "--sink", "kafka://x"], "--sink"),
            (vec!["--path", "/l/*.log", "--label", "novalue"], "--label"),
            (
                vec!["--path", "/l/*.log", "--multiline-start", "("],
                "--multiline-start",
            ),
            (
                vec!["--path", "/l/*.log", "--max-line-bytes", "0"],
                "--max-line-bytes",
            ),
            (
                vec!["--path", "/l/*.log", "--drain-timeout", "soon"],
                "--drain-timeout",
            ),
        ] {
            let err = parse(&args, &[]).expect_err("invalid");
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
