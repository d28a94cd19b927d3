//! Connections to upstreams: a pooled HTTP/1.1 client (hyper-util's), an HTTP/2 cleartext one
//! for `h2c` routes, and a connector for `unix:` upstreams. Pooled connections idle longer than
//! `--upstream-idle-timeout` (default 3s, below the usual app keep-alive of 5s) are closed, so
//! a connection is not reused just as the app closes it; a request that fails on a reused
//! connection before anything was written is retried by the client once.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::route::Upstream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Every client podproxy needs, built once.
#[derive(Clone)]
pub struct Clients {
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
    unix1: Client<UnixConnector, Body>,
    unix_h2c: Client<UnixConnector, Body>,
}

impl Clients {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Clients {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let builder = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(idle_timeout)
                .pool_timer(TokioTimer::new());
            b.timer(TokioTimer::new());
            if h2 {
                b.http2_only(true);
            }
            b
        };
        Clients {
            http1: builder(false).build(http.clone()),
            h2c: builder(true).build(http),
            unix1: builder(false).build(UnixConnector),
            unix_h2c: builder(true).build(UnixConnector),
        }
    }

    /// The request's URI must already name the upstream (see [`upstream_uri`]).
    pub async fn send(
        &self,
        upstream: &Upstream,
        h2c: bool,
        req: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match (upstream, h2c) {
            (Upstream::Http { .. }, false) => self.http1.request(req).await,
            (Upstream::Http { .. }, true) => self.h2c.request(req).await,
            (Upstream::Unix(_), false) => self.unix1.request(req).await,
            (Upstream::Unix(_), true) => self.unix_h2c.request(req).await,
        }
    }
}

/// The absolute URI a request to `upstream` is sent with. For unix sockets, the socket path is
/// carried in the authority, hex-encoded (the connector decodes it); the Host header the
/// upstream sees is the client's, set by the caller.
pub fn upstream_uri(upstream: &Upstream, path_and_query: &str) -> Result<Uri, http::Error> {
    let authority = match upstream {
        Upstream::Http { host, port } if host.contains(':') => format!("[{host}]:{port}"),
        Upstream::Http { host, port } => format!("{host}:{port}"),
        Upstream::Unix(path) => hex_encode(path.to_string_lossy().as_bytes()),
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Connects to the unix socket named (hex-encoded) in the URI's host.
#[derive(Clone, Copy, Debug)]
pub struct UnixConnector;

impl tower_service::Service<Uri> for UnixConnector {
    type Response = UnixIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<UnixIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let path = uri
                .host()
                .and_then(hex_decode)
                .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
                .ok_or_else(|| std::io::Error::other("no unix socket path in the upstream URI"))?;
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok(UnixIo(TokioIo::new(stream)))
        })
    }
}

/// A unix stream the pooled client can use.
pub struct UnixIo(TokioIo<tokio::net::UnixStream>);

impl Connection for UnixIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for UnixIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for UnixIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_travel_hex_encoded_in_the_authority() {
        let uri = upstream_uri(&Upstream::Unix("/run/app.sock".into()), "/x?y=1").expect("uri");
        let decoded = uri.host().and_then(hex_decode).expect("hex");
        assert_eq!(decoded, b"/run/app.sock");
        assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some("/x?y=1"));
        let v6 = upstream_uri(
            &Upstream::Http {
                host: "::1".into(),
                port: 5000,
            },
            "/",
        )
        .expect("uri");
        assert_eq!(v6.to_string(), "http://[::1]:5000/");
    }
}
