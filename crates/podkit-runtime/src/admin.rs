//! The admin HTTP server logship and podproxy mount: `/healthz` (the process is alive),
//! `/readyz` (200 while [`Readiness`] is set, 503 otherwise) and `/metrics` (the Prometheus text
//! exposition of a prometheus-client registry). It takes its listener from the caller, so tests
//! run it on port 0, and stops when the [`Shutdown`] fires.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Shutdown;

/// Whether the process is ready to serve; shared between the admin server and the code that knows.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the admin server serves.
#[derive(Clone)]
pub struct Admin {
    pub registry: Arc<Registry>,
    pub readiness: Readiness,
}

/// The content type of the Prometheus text format, version 0.0.4, which prometheus-client emits.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Admin {
    /// Answers one request; public so a binary can mount these paths on a server of its own.
    pub fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match req.uri().path() {
            "/healthz" | "/live" => text(StatusCode::OK, "ok\n"),
            "/readyz" | "/ready" => {
                if self.readiness.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => {
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
                        );
                        resp
                    }
                    Err(_) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                    ),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: use /healthz, /readyz or /metrics\n",
            ),
        }
    }

    /// Serves until `shutdown` fires. Connections in progress are finished, not cut.
    pub async fn serve(self, listener: TcpListener, mut shutdown: Shutdown) {
        // The address bound, so that `--admin 127.0.0.1:0` (a port the kernel picks) can be
        // found, and an operator sees where to look.
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(admin = %addr, "admin endpoints on http://{addr}: /healthz, /readyz, /metrics (/live and /ready are the same)");
        }
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::warn!(error = %err, "admin server: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.recv() => break,
            };
            let admin = self.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = admin.respond(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("podkit_test_events", "Events seen", counter.clone());
        counter.inc_by(3);
        let admin = Admin {
            registry: Arc::new(registry),
            readiness: Readiness::default(),
        };
        let readiness = admin.readiness.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, trigger) = Shutdown::new();
        let server = tokio::spawn(admin.serve(listener, shutdown));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        readiness.set(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        // The other names, kept for manifests written before one vocabulary was chosen.
        assert!(get(addr, "/live").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("podkit_test_events_total 3"), "{metrics}");
        assert!(metrics.contains("version=0.0.4"), "{metrics}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        trigger.fire(crate::Signal::Requested);
        server.await.expect("server task");
    }
}
