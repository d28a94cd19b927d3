//! Listening and draining. Each listener accepts connections (at most `--max-connections` open
//! at once) and serves HTTP/1.1 and HTTP/2 cleartext (prior knowledge) with hyper-util's auto
//! builder, upgrades included. On shutdown: `/ready` turns 503 and the ready file goes at once;
//! the listeners keep accepting for `--drain-delay` (endpoints are still leaving the Service),
//! then close; keep-alive clients are asked to go (`Connection: close`, HTTP/2 GOAWAY), and
//! requests in flight get up to `--drain-timeout` to finish.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use podkit_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conn::{Activity, ClientConn, ClientIo, Framing};
use crate::proxy::Proxy;
use crate::upstream::BoxError;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// Serves `listeners` until `stop_accepting` resolves, then drains for at most `drain_timeout`.
/// Returns the number of connections that were still open when the drain timed out.
pub async fn serve(
    listeners: Vec<TcpListener>,
    proxy: Arc<Proxy>,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop_accepting: Shutdown,
    drain_timeout: Duration,
) -> usize {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // CVE-2023-44487 (rapid reset): hyper caps pending accept resets per connection.
        .max_pending_accept_reset_streams(Some(20));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(64);
    for listener in listeners {
        let tx = conn_tx.clone();
        let permits = Arc::clone(&permits);
        let mut stop = stop_accepting.clone();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = stop.recv() => break,
                };
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.recv() => break,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        if tx.send((stream, peer, permit)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            // Connections the kernel completed before the listener closes are in its accept
            // queue: their clients have sent requests. They are taken and served, not reset.
            loop {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    return;
                };
                match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                    Ok(Ok((stream, peer))) => {
                        let _ = stream.set_nodelay(true);
                        if tx.send((stream, peer, permit)).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
    }
    drop(conn_tx);
    // Until every accept task has stopped (after the drain delay) and handed over its last
    // connections.
    while let Some((stream, peer, permit)) = conn_rx.recv().await {
        let metrics = Arc::clone(&proxy.metrics);
        metrics.open_connections.inc();
        let proxy = Arc::clone(&proxy);
        let activity = Activity::new();
        let framing = Arc::new(Framing::default());
        let client = Arc::new(ClientConn {
            peer,
            peer_value: http::HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
            tls: tls.is_some(),
            activity: Arc::clone(&activity),
            framing: Arc::clone(&framing),
        });
        let service = service_fn(move |req| Arc::clone(&proxy).handle(Arc::clone(&client), req));
        let conn: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>,
        > = match &tls {
            None => {
                let io = ClientIo::new(stream, Arc::clone(&activity), framing);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned();
                Box::pin(graceful.watch(conn))
            }
            Some(acceptor) => {
                // The handshake counts against the header read timeout, like the head.
                let accepting =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let activity = Arc::clone(&activity);
                Box::pin(async move {
                    let stream = accepting
                        .await
                        .map_err(|_| -> BoxError { "TLS handshake timed out".into() })??;
                    let io = ClientIo::new(stream, activity, framing);
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    watcher.watch(conn).await
                })
            }
        };
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = conn => ended,
                _ = activity.idle(idle) => {
                    tracing::debug!(client = %peer, "closing a connection idle for {}", podkit_runtime::units::format_duration(idle));
                    Ok(())
                }
            };
            if let Err(e) = ended {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            metrics.open_connections.dec();
            drop(permit);
        });
    }
    // Responses have said `Connection: close` since the drain began, so HTTP/1 clients leave
    // after their next answer; a moment for that, then the rest are asked to go (an idle
    // HTTP/1 connection is closed, HTTP/2 gets GOAWAY) and requests in flight finish.
    let deadline = tokio::time::Instant::now() + drain_timeout;
    let grace = tokio::time::Instant::now() + DRAIN_GRACE.min(drain_timeout / 2);
    while permits.available_permits() < limits.max_connections
        && tokio::time::Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => limits.max_connections - permits.available_permits(),
    }
}

/// After the listeners close, how long connections get to leave on their own before idle ones
/// are closed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
