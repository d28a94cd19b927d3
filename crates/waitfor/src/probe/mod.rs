//! Readiness probes: one async check per [`Target`] kind, each answering "ready" or a
//! [`ProbeError`] whose class says why not (refused, timed out, name not found, protocol). A probe
//! makes one attempt and holds nothing between attempts, so names are resolved again every time.
//! The caller caps each attempt with a timeout; probes never retry by themselves.
//!
//! This module is public so logship and podproxy can reuse it (e.g. for upstream health checks).

pub mod dns;
pub mod file;
pub mod http;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod tcp;

use std::sync::Arc;

use crate::target::Target;

pub use self::http::{HttpExpectations, StatusRanges};

/// Why a target is not ready. The variants are the classes the logs tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connection refused")]
    Refused,
    #[error("timed out")]
    TimedOut,
    #[error("name not found ({0})")]
    NameNotFound(String),
    #[error("{0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP {0}")]
    Http(String),
    #[error("{0}")]
    NotReady(String),
    #[error("file not found")]
    FileMissing,
}

impl ProbeError {
    /// A short, stable name of the class, for structured logs.
    pub fn class(&self) -> &'static str {
        match self {
            ProbeError::Refused => "refused",
            ProbeError::TimedOut => "timeout",
            ProbeError::NameNotFound(_) => "name_not_found",
            ProbeError::Io(_) => "io",
            ProbeError::Tls(_) => "tls",
            ProbeError::Http(_) => "http",
            ProbeError::NotReady(_) => "not_ready",
            ProbeError::FileMissing => "file_missing",
        }
    }

    pub(crate) fn from_io(err: &std::io::Error) -> ProbeError {
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused => ProbeError::Refused,
            TimedOut => ProbeError::TimedOut,
            NotFound => ProbeError::FileMissing,
            UnexpectedEof => ProbeError::Io("connection closed by peer before answering".into()),
            _ => ProbeError::Io(err.to_string()),
        }
    }
}

/// Everything a probe needs beyond the target itself; built once from the validated config.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    pub http: HttpExpectations,
    /// TLS client configuration for https targets.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A file target is ready only once it has content.
    pub file_nonempty: bool,
}

/// Makes one attempt at `target`. Returns a short detail for the debug log on success.
pub async fn check(target: &Target, settings: &ProbeSettings) -> Result<String, ProbeError> {
    match target {
        Target::Tcp(addr) => tcp::connect(addr).await.map(|s| {
            let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            format!("connected to {peer}")
        }),
        Target::Http { url, addr, tls } => http::check(url, addr, *tls, settings).await,
        Target::Unix(path) => tokio::net::UnixStream::connect(path)
            .await
            .map(|_| "socket accepted a connection".to_string())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    ProbeError::NotReady("socket file does not exist".into())
                }
                _ => ProbeError::from_io(&e),
            }),
        Target::File(path) => file::check(path, settings.file_nonempty).await,
        Target::Dns(name) => dns::resolve(name).await,
        Target::Postgres { addr, user } => postgres::check(addr, user).await,
        Target::Redis(addr) => redis::check(addr).await,
        Target::Mysql(addr) => mysql::check(addr).await,
    }
}
