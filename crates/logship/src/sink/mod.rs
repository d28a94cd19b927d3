//! Sinks and acknowledgements. The reader hands every batch to every sink (each through its own
//! bounded channel, so a slow sink holds the reader back rather than growing a queue). A sink
//! acknowledges a batch once it is delivered (written to stdout or the file); a batch
//! counts as shipped when every sink has acknowledged it, and positions advance strictly in
//! batch order, so a checkpoint never passes a line some sink has not confirmed. Acknowledgements
//! may arrive later than delivery, and out of order across sinks.

pub mod client;
pub mod delivery;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod loki;
pub mod otlp;
pub mod stdout;
pub mod syslog;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::{Batch, Encoder};
use crate::checkpoint::{FileId, Positions};
use crate::metrics::Metrics;

/// Batches a sink's channel holds before the reader waits.
pub const QUEUE_BATCHES: usize = 4;

/// Where events go, as given by `--sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    /// An HTTP-based sink: `endpoint` is the URL requests go to.
    Http {
        kind: HttpKind,
        endpoint: ::http::Uri,
        text: String,
    },
    Syslog {
        transport: syslog::Transport,
        host: String,
        port: u16,
        text: String,
    },
}

/// The HTTP-based protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpKind {
    /// POST of NDJSON records.
    Ndjson,
    /// Loki's push API.
    Loki,
    /// Elasticsearch's `_bulk` API into `index`.
    Elasticsearch { index: String },
    /// OTLP/HTTP logs.
    Otlp,
}

const SINK_HELP: &str = "use stdout, file:///path, http(s)://host:port/path, loki://host:port, \
elasticsearch://host:port/INDEX, otlp://host:port (each network scheme also as NAME+https://), \
syslog+tcp://, syslog+tls:// or syslog+udp://host:port";

impl SinkSpec {
    pub fn parse(s: &str) -> Result<SinkSpec, String> {
        if s == "stdout" || s == "-" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("--sink {s:?}: a file sink needs an absolute path, e.g. file:///var/log/out.log"));
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("--sink {s:?}: unknown sink; {SINK_HELP}"));
        };
        let bad = |why: &str| format!("--sink {s:?}: {why}");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("the host is missing, e.g. loki://loki.monitoring:3100"));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL (they would show in logs and metrics); use --basic-auth-file or --bearer-token-file",
            ));
        }
        let (name, tls) = match scheme.strip_suffix("+https") {
            Some(n) => (n, true),
            None => (scheme, false),
        };
        let web = if tls { "https" } else { "http" };
        let endpoint = |path: &str| -> Result<::http::Uri, String> {
            format!("{web}://{authority}{path}")
                .parse::<::http::Uri>()
                .map_err(|e| bad(&format!("not a valid URL: {e}")))
        };
        let http = |kind: HttpKind, endpoint: ::http::Uri| SinkSpec::Http {
            kind,
            endpoint,
            text: s.to_string(),
        };
        match (scheme, name) {
            ("http" | "https", _) => {
                let uri = s
                    .parse::<::http::Uri>()
                    .map_err(|e| bad(&format!("not a valid URL: {e}")))?;
                Ok(http(HttpKind::Ndjson, uri))
            }
            (_, "loki") => {
                let path = if path.is_empty() || path == "/" {
                    "/loki/api/v1/push"
                } else {
                    path
                };
                Ok(http(HttpKind::Loki, endpoint(path)?))
            }
            (_, "elasticsearch") => {
                let index = path.trim_matches('/');
                if index.is_empty() || index.contains('/') {
                    return Err(bad(
                        "name the index or data stream as the path, e.g. elasticsearch://es:9200/logs-app-default",
                    ));
                }
                Ok(http(
                    HttpKind::Elasticsearch {
                        index: index.to_string(),
                    },
                    endpoint("/_bulk")?,
                ))
            }
            (_, "otlp") => {
                let path = if path.is_empty() || path == "/" {
                    "/v1/logs"
                } else {
                    path
                };
                Ok(http(HttpKind::Otlp, endpoint(path)?))
            }
            ("syslog+tcp" | "syslog+tls" | "syslog+udp", _) => {
                let transport = match scheme {
                    "syslog+tcp" => syslog::Transport::Tcp,
                    "syslog+tls" => syslog::Transport::Tls,
                    _ => syslog::Transport::Udp,
                };
                if !path.is_empty() && path != "/" {
                    return Err(bad(
                        "a syslog sink takes no path, e.g. syslog+tcp://rsyslog:514",
                    ));
                }
                let uri = format!("x://{authority}")
                    .parse::<::http::Uri>()
                    .map_err(|e| bad(&format!("not a valid host:port: {e}")))?;
                let host = uri.host().unwrap_or_default();
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let Some(port) = uri.port_u16() else {
                    return Err(bad("give the port, e.g. syslog+tcp://rsyslog:514"));
                };
                Ok(SinkSpec::Syslog {
                    transport,
                    host,
                    port,
                    text: s.to_string(),
                })
            }
            _ => Err(format!(
                "--sink {s:?}: unknown sink scheme {scheme:?}; {SINK_HELP}"
            )),
        }
    }

    /// Whether the sink talks to a receiver over the network.
    pub fn is_network(&self) -> bool {
        matches!(self, SinkSpec::Http { .. } | SinkSpec::Syslog { .. })
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdout => write!(f, "stdout"),
            SinkSpec::File(p) => write!(f, "file://{}", p.display()),
            SinkSpec::Http { text, .. } | SinkSpec::Syslog { text, .. } => f.write_str(text),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {reason}")]
    Failed { sink: String, reason: String },
}

/// Collects acknowledgements from every sink and advances positions in batch order.
#[derive(Debug)]
pub struct Acks {
    sinks: usize,
    pending: Mutex<BTreeMap<u64, Pending>>,
    positions: Arc<Positions>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Pending {
    remaining: usize,
    lines: u64,
    offsets: Vec<(FileId, u64)>,
}

impl Acks {
    pub fn new(sinks: usize, positions: Arc<Positions>, metrics: Arc<Metrics>) -> Acks {
        Acks {
            sinks,
            pending: Mutex::new(BTreeMap::new()),
            positions,
            metrics,
        }
    }

    /// Called by the reader before the batch is handed to the sinks.
    pub fn register(&self, batch: &Batch) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                batch.seq,
                Pending {
                    remaining: self.sinks,
                    lines: batch.len() as u64,
                    offsets: batch.offsets.clone(),
                },
            );
    }

    /// A sink has delivered batch `seq`.
    pub fn ack(&self, seq: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pending.get_mut(&seq) {
            p.remaining = p.remaining.saturating_sub(1);
        }
        while let Some(entry) = pending.first_entry() {
            if entry.get().remaining > 0 {
                break;
            }
            let done = entry.remove();
            self.positions.acknowledge(&done.offsets);
            self.metrics.lines_shipped.inc_by(done.lines);
            self.metrics.batches_shipped.inc();
        }
    }
}

/// What every sink task gets.
pub struct SinkContext {
    pub encoder: Encoder,
    pub acks: Arc<Acks>,
    pub metrics: Arc<Metrics>,
    pub net: Arc<delivery::NetSettings>,
    pub health: delivery::HealthSlot,
    pub shutdown: podkit_runtime::Shutdown,
}

/// Starts the sink's task; it ends when the channel closes (after delivering everything) or
/// fails.
pub fn spawn(
    spec: &SinkSpec,
    rx: tokio::sync::mpsc::Receiver<Arc<Batch>>,
    ctx: SinkContext,
) -> Result<tokio::task::JoinHandle<Result<(), SinkError>>, SinkError> {
    match spec {
        SinkSpec::Stdout => Ok(tokio::task::spawn_blocking(move || stdout::run(rx, ctx))),
        SinkSpec::File(path) => {
            let sink = file::FileSink::open(path)?;
            Ok(tokio::task::spawn_blocking(move || sink.run(rx, ctx)))
        }
        SinkSpec::Http {
            kind,
            endpoint,
            text,
        } => {
            let sink = http::HttpSink::new(kind, endpoint, text, &ctx)?;
            Ok(tokio::spawn(sink.run(rx, ctx)))
        }
        SinkSpec::Syslog {
            transport,
            host,
            port,
            text,
        } => {
            let sink = syslog::SyslogSink::new(*transport, host, *port, text, &ctx)?;
            Ok(tokio::spawn(sink.run(rx, ctx)))
        }
    }
}
