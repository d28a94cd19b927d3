//! podproxy: the Pod's front door. accept ([`server`]) → limits → normalize ([`normalize`]) →
//! route ([`route`]) → headers ([`forward`]) → upstream pool ([`upstream`]) → stream back →
//! access log ([`access_log`]) + metrics ([`metrics`]); the drain wraps it all ([`run`]).

pub mod access_log;
pub mod config;
pub mod conn;
pub mod forward;
pub mod health;
pub mod metrics;
pub mod normalize;
pub mod pool;
pub mod proxy;
pub mod route;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod upstream;

use std::sync::Arc;

use podkit_runtime::admin::{Admin, Readiness};
use podkit_runtime::{Shutdown, Signal};
use tokio::net::TcpListener;

pub use config::{Cli, Config, ConfigError};

pub use podkit_runtime::cli::{EXIT_FAILURE, EXIT_USAGE};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error("the drain timed out after --drain-timeout with {0} connections still open")]
    DrainTimeout(usize),
    /// A bug, not the operator's input: exits 1, not 2.
    #[error("{0}")]
    Internal(String),
}

/// Serves until `shutdown` fires, then drains. Listeners are bound by the caller (port 0 in
/// tests).
pub async fn run(
    config: Config,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    mut shutdown: Shutdown,
) -> Result<(), RunError> {
    let access_log = access_log::AccessLog::start(
        config.access_log.clone(),
        config.access_log_format,
        config.access_log_redact_query,
    )
    .map_err(RunError::Setup)?;
    let (metrics, mut registry) = metrics::Metrics::new();
    registry.register(
        "access_log_dropped",
        "Access log lines dropped: the writer fell behind, or a write failed",
        access_log.dropped.clone(),
    );
    let metrics = Arc::new(metrics);
    let readiness = Readiness::default();
    let (admin_stop, admin_trigger) = Shutdown::new();
    if let Some(listener) = admin {
        let admin = Admin {
            registry: Arc::new(registry),
            readiness: readiness.clone(),
        };
        tokio::spawn(admin.serve(listener, admin_stop));
    }
    let clients = upstream::Clients::new(
        config.upstream_connect_timeout,
        config.upstream_idle_timeout,
    );
    let mut route_metrics: Vec<metrics::RouteMetrics> = config
        .routes
        .iter()
        .map(|r| metrics.for_route(&health::route_key(r)))
        .collect();
    route_metrics.push(metrics.for_route("none"));
    let tunnels = Arc::new(tunnel::Tunnels::new(
        metrics.open_connections.clone(),
        metrics.upgraded_connections.clone(),
    ));
    let proxy = Arc::new(proxy::Proxy {
        route_metrics,
        pool_slots: config
            .routes
            .iter()
            .map(|r| clients.slot(&r.upstream, r.h2c))
            .collect(),
        routes: config.routes.clone(),
        clients: clients.clone(),
        trusted: config.trusted.clone(),
        access_log,
        metrics,
        upstream_response_timeout: config.upstream_response_timeout,
        request_timeout: config.request_timeout,
        idle_timeout: config.idle_timeout,
        draining: std::sync::atomic::AtomicBool::new(false),
        tunnels,
        max_body_bytes: config.max_body_bytes,
    });

    let (stop_accepting, stop_trigger) = Shutdown::new();
    let limits = server::Limits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_header_bytes: config.max_header_bytes,
        max_connections: config.max_connections,
    };
    if let Some(path) = &config.ready_file {
        // Fail now, not at the first readiness, if the file cannot be written; and never
        // leave one from an earlier run saying we are ready.
        std::fs::write(path, b"")
            .and_then(|()| std::fs::remove_file(path))
            .map_err(|e| {
                RunError::Setup(format!(
                    "--ready-file {}: cannot write it ({e}); give a writable path",
                    path.display()
                ))
            })?;
    }
    let (tls_stop, tls_trigger) = Shutdown::new();
    let acceptor = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = tls::Tls::new(cert, key).map_err(RunError::Setup)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
            tokio::spawn(tls.watch(tls_stop));
            Some(acceptor)
        }
        _ => None,
    };
    // Only now, with every part of the configuration checked (certificates, the ready file):
    // "listening" is never followed by a configuration error.
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    let routes: Vec<String> = config
        .routes
        .iter()
        .map(|r| {
            format!(
                "{}{} -> {}",
                r.host.as_deref().unwrap_or(""),
                r.prefix,
                r.upstream
            )
        })
        .collect();
    tracing::info!(listen = ?addrs, routes = ?routes, "podproxy listening on {}: {}", addrs.join(", "), routes.join(", "));
    let serving = tokio::spawn(server::serve(
        listeners,
        Arc::clone(&proxy),
        limits,
        acceptor,
        stop_accepting,
        config.drain_timeout,
    ));
    let (health_stop, health_trigger) = Shutdown::new();
    let health = tokio::spawn(health::watch(
        config.routes.clone(),
        config.health_checks.clone(),
        clients,
        readiness.clone(),
        config.ready_file.clone(),
        config.health_interval,
        health_stop,
    ));

    let signal = shutdown.recv().await;
    tracing::info!(signal = ?signal, "draining: not ready; accepting for {} more, then finishing requests in flight (up to {})",
        podkit_runtime::units::format_duration(config.drain_delay),
        podkit_runtime::units::format_duration(config.drain_timeout));
    proxy
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Not ready from now on: the probe round under way is dropped, not waited for (a slow
    // upstream's probe would keep /ready at 200 and the ready file in place for seconds).
    health_trigger.fire(Signal::Requested);
    health.abort();
    let _ = health.await;
    readiness.set(false);
    if let Some(path) = &config.ready_file {
        let _ = std::fs::remove_file(path);
    }
    tokio::time::sleep(config.drain_delay).await;
    stop_trigger.fire(Signal::Requested);
    let open = serving.await.map_err(|e| {
        RunError::Internal(format!(
            "internal error: the server task failed ({e}); please report it as a bug"
        ))
    })?;
    admin_trigger.fire(Signal::Requested);
    tls_trigger.fire(Signal::Requested);
    // Let the access log writer flush what the last requests logged.
    tokio::time::sleep(access_log::FLUSH_EVERY + std::time::Duration::from_millis(100)).await;
    if open > 0 {
        return Err(RunError::DrainTimeout(open));
    }
    tracing::info!("drained: every request finished");
    Ok(())
}
