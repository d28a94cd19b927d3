//! podproxy's command line (clap, every flag with a `PODPROXY_*` env twin) and its validation
//! into a typed [`Config`]. Every error names the flag and the fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use podkit_runtime::logging::{LogFormat, LogSettings};
use podkit_runtime::{parse_duration, parse_size};

use crate::access_log;
use crate::forward::TrustedProxies;
use crate::route::{Route, Routes};

const AFTER_HELP: &str = "\
Signals: SIGTERM or SIGINT drains (/readyz turns 503, --drain-delay, then in-flight requests
get --drain-timeout); a second one exits at once; SIGHUP is ignored.

Exit codes: 0 drained; 1 the drain ran out of time with requests still in flight, or an
internal error; 2 usage or configuration error (a flag, a route, a port that cannot be bound,
an unreadable certificate, an unwritable --ready-file or --access-log); 130 or 143 a second
SIGINT or SIGTERM during the drain.";

/// The Pod's front door: route requests on the Pod's port to the containers on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "podproxy", version = podkit_runtime::VERSION, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where to listen, HOST:PORT or :PORT (every interface); repeatable.
    #[arg(
        long,
        env = "PODPROXY_LISTEN",
        value_parser = podkit_runtime::parse_listen_addr,
        value_delimiter = ',',
        default_value = "0.0.0.0:8080"
    )]
    pub listen: Vec<SocketAddr>,

    /// PREFIX=UPSTREAM[,strip][,h2c], e.g. /api=http://127.0.0.1:5000; repeatable.
    #[arg(
        long = "route",
        env = "PODPROXY_ROUTE",
        value_delimiter = ';',
        required = true
    )]
    pub routes: Vec<String>,

    /// stdout, off, or an absolute path (reopened when rotated away).
    #[arg(long, env = "PODPROXY_ACCESS_LOG", default_value = "stdout")]
    pub access_log: String,

    #[arg(
        long,
        env = "PODPROXY_ACCESS_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub access_log_format: access_log::Format,

    /// Log query strings as REDACTED.
    #[arg(long, env = "PODPROXY_ACCESS_LOG_REDACT_QUERY")]
    pub access_log_redact_query: bool,

    /// Serve /live, /ready and /metrics here.
    #[arg(long, env = "PODPROXY_ADMIN", value_parser = podkit_runtime::parse_listen_addr)]
    pub admin: Option<SocketAddr>,

    /// ROUTE=PATH: probe the route's upstream with GET PATH (2xx/3xx is up); repeatable.
    /// Routes without one are probed with a connect.
    #[arg(
        long = "health-check",
        env = "PODPROXY_HEALTH_CHECK",
        value_delimiter = ','
    )]
    pub health_checks: Vec<String>,

    /// How often upstreams are probed for /ready.
    #[arg(long, env = "PODPROXY_HEALTH_INTERVAL", default_value = "2s")]
    pub health_interval: String,

    /// Written once every upstream is up, removed at drain (for `waitfor file://...`).
    #[arg(long, env = "PODPROXY_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// After SIGTERM: keep accepting this long while endpoints leave the Service.
    #[arg(long, env = "PODPROXY_DRAIN_DELAY", default_value = "5s")]
    pub drain_delay: String,

    /// After the drain delay: the longest wait for requests in flight.
    #[arg(long, env = "PODPROXY_DRAIN_TIMEOUT", default_value = "25s")]
    pub drain_timeout: String,

    /// The longest time a client may take to send a request head, from its first bytes
    /// (slowloris): an HTTP/1 head, an HTTP/2 header block (also with streams in flight: it
    /// holds the connection) or preface, or a connection's first bytes before its protocol is
    /// known; the connection is closed.
    #[arg(long, env = "PODPROXY_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,

    /// The longest a request may take from its head to the last byte of its answer (408 if the
    /// client is still sending, 504 if the upstream has not answered; a streaming answer is cut).
    /// 0 turns it off (long-lived gRPC streams); upgraded connections are not bound by it.
    #[arg(long, env = "PODPROXY_REQUEST_TIMEOUT", default_value = "300s")]
    pub request_timeout: String,

    /// A client connection with no request in flight and no byte moved for this long is closed
    /// (keep-alive and upgraded connections alike).
    #[arg(long, env = "PODPROXY_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,

    /// The longest wait for a TCP connection to an upstream (502 after it).
    #[arg(long, env = "PODPROXY_UPSTREAM_CONNECT_TIMEOUT", default_value = "2s")]
    pub upstream_connect_timeout: String,

    /// The longest wait for the upstream's response head (504 after it).
    #[arg(
        long,
        env = "PODPROXY_UPSTREAM_RESPONSE_TIMEOUT",
        default_value = "60s"
    )]
    pub upstream_response_timeout: String,

    /// Pooled upstream connections idle longer than this are closed (below the app's keep-alive).
    #[arg(long, env = "PODPROXY_UPSTREAM_IDLE_TIMEOUT", default_value = "3s")]
    pub upstream_idle_timeout: String,

    /// The largest request head (431 beyond it).
    #[arg(long, env = "PODPROXY_MAX_HEADER_BYTES", default_value = "64KiB")]
    pub max_header_bytes: String,

    /// The largest request body (413 beyond it).
    #[arg(long, env = "PODPROXY_MAX_BODY_BYTES", default_value = "64MiB")]
    pub max_body_bytes: String,

    /// Open client connections at most; more wait to be accepted.
    #[arg(long, env = "PODPROXY_MAX_CONNECTIONS", default_value = "4096")]
    pub max_connections: usize,

    /// PEM certificate chain: terminate TLS on every --listen (reloaded when it changes).
    #[arg(long, env = "PODPROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "PODPROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Peers (CIDRs) whose X-Forwarded-For is extended rather than replaced.
    #[arg(long, env = "PODPROXY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    #[arg(long, env = "PODPROXY_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,

    #[arg(long, env = "PODPROXY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub routes: Routes,
    pub access_log: access_log::Target,
    pub access_log_format: access_log::Format,
    pub access_log_redact_query: bool,
    pub admin: Option<SocketAddr>,
    pub ready_file: Option<PathBuf>,
    pub health_checks: std::collections::HashMap<String, String>,
    pub health_interval: Duration,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    pub header_read_timeout: Duration,
    /// None when turned off (0).
    pub request_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub trusted: TrustedProxies,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log: LogSettings,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let e = ConfigError;
        let duration = |flag: &str, v: &str| -> Result<Duration, ConfigError> {
            match parse_duration(v) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(e(format!("--{flag} must be more than 0"))),
                Err(x) => Err(e(format!("--{flag}: {x}"))),
            }
        };
        let drain_delay =
            parse_duration(&cli.drain_delay).map_err(|x| e(format!("--drain-delay: {x}")))?;
        let routes = cli
            .routes
            .iter()
            .map(|r| Route::parse(r.trim()).map_err(|x| e(x.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let size = |flag: &str, v: &str| -> Result<u64, ConfigError> {
            match parse_size(v) {
                Ok(0) => Err(e(format!("--{flag} must be more than 0"))),
                Ok(n) => Ok(n),
                Err(x) => Err(e(format!("--{flag}: {x}"))),
            }
        };
        let max_header_bytes = size("max-header-bytes", &cli.max_header_bytes)?;
        if max_header_bytes < 8192 {
            return Err(e("--max-header-bytes must be at least 8KiB".into()));
        }
        if cli.max_connections == 0 {
            return Err(e("--max-connections must be more than 0".into()));
        }
        let routes = Routes::new(routes);
        let health_checks = crate::health::parse_checks(&cli.health_checks, &routes).map_err(e)?;
        Ok(Config {
            listen: cli.listen,
            routes,
            health_checks,
            health_interval: duration("health-interval", &cli.health_interval)?,
            access_log: access_log::Target::parse(&cli.access_log).map_err(e)?,
            access_log_format: cli.access_log_format,
            access_log_redact_query: cli.access_log_redact_query,
            admin: cli.admin,
            ready_file: cli.ready_file,
            drain_delay,
            drain_timeout: duration("drain-timeout", &cli.drain_timeout)?,
            header_read_timeout: duration("header-read-timeout", &cli.header_read_timeout)?,
            request_timeout: Some(
                parse_duration(&cli.request_timeout)
                    .map_err(|x| e(format!("--request-timeout: {x}")))?,
            )
            .filter(|d| !d.is_zero()),
            idle_timeout: duration("idle-timeout", &cli.idle_timeout)?,
            upstream_connect_timeout: duration(
                "upstream-connect-timeout",
                &cli.upstream_connect_timeout,
            )?,
            upstream_response_timeout: duration(
                "upstream-response-timeout",
                &cli.upstream_response_timeout,
            )?,
            upstream_idle_timeout: duration("upstream-idle-timeout", &cli.upstream_idle_timeout)?,
            max_header_bytes: usize::try_from(max_header_bytes)
                .map_err(|_| e("--max-header-bytes is too large".into()))?,
            max_body_bytes: size("max-body-bytes", &cli.max_body_bytes)?,
            max_connections: cli.max_connections,
            trusted: TrustedProxies::parse(&cli.trusted_proxies).map_err(e)?,
            tls_cert: cli.tls_cert,
            tls_key: cli.tls_key,
            log: LogSettings {
                format: cli.log_format,
                level: cli.log_level,
            },
        })
    }
}
