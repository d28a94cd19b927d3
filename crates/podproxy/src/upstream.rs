//! Connections to upstreams: HTTP/1.1 over TCP through podproxy's own pool (crate::pool, the
//! hot path), and hyper-util's pooled client for HTTP/2 cleartext (`h2c` routes) and for
//! `unix:` upstreams, with a connector for unix sockets. Pooled connections idle longer than
//! `--upstream-idle-timeout` (default 3s, below the usual app keep-alive of 5s) are closed, so
//! a connection is not reused just as the app closes it; a request that fails on a reused
//! connection before anything was written is sent once more.

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

use crate::pool::{Http1Pool, PoolError, PoolSlot, PooledBody};
use crate::route::Upstream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to an upstream: none (most requests: a GET, a health probe), sent
/// without a box or a body wrapper, or a body streamed from the client.
pub enum Body {
    Empty,
    Streaming(BoxBody<Bytes, BoxError>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Streaming(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Streaming(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Empty => hyper::body::SizeHint::with_exact(0),
            Body::Streaming(b) => b.size_hint(),
        }
    }
}

/// Every client podproxy needs, built once.
#[derive(Clone)]
pub struct Clients {
    http1: Http1Pool,
    h2c: Client<HttpConnector, Body>,
    unix1: Client<UnixConnector, Body>,
    unix_h2c: Client<UnixConnector, Body>,
}

impl Clients {
    /// Must be called inside a tokio runtime (the HTTP/1.1 pool starts its idle reaper).
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
            http1: Http1Pool::new(connect_timeout, idle_timeout),
            h2c: builder(true).build(http),
            unix1: builder(false).build(UnixConnector),
            unix_h2c: builder(true).build(UnixConnector),
        }
    }

    /// The HTTP/1.1 pool, for a route that has its slot ([`Clients::slot`]).
    pub fn pool(&self) -> &Http1Pool {
        &self.http1
    }

    /// The HTTP/1.1 pool's slot for `upstream`, when it is the pool's (HTTP/1.1 over TCP): a
    /// route looks it up once.
    pub fn slot(&self, upstream: &Upstream, h2c: bool) -> Option<PoolSlot> {
        match (upstream, h2c) {
            (Upstream::Http { host, port }, false) => Some(self.http1.slot(host, *port)),
            _ => None,
        }
    }

    /// Sends `req` to `upstream`, by the pool for HTTP/1.1 over TCP (the route's slot is looked
    /// up; the proxy's routes keep theirs and use [`Clients::pool`] straight), else by
    /// hyper-util's clients. The request's URI must already name the upstream (see
    /// [`upstream_uri`]), or be origin-form for the pool; `now` is the request's arrival.
    pub async fn send(
        &self,
        upstream: &Upstream,
        h2c: bool,
        req: hyper::Request<Body>,
        now: std::time::Instant,
    ) -> Result<hyper::Response<UpstreamBody>, SendError> {
        let legacy = match (upstream, h2c) {
            (Upstream::Http { host, port }, false) => {
                let slot = self.http1.slot(host, *port);
                return match self.http1.send(&slot, req, now).await {
                    Ok(resp) => Ok(resp.map(UpstreamBody::Pooled)),
                    Err(e) => Err(SendError::Pool(e)),
                };
            }
            // Boxed: these futures are large, and unboxed they would make every request's
            // future (the HTTP/1.1 pool's too) as large, to be moved around on each request.
            (Upstream::Http { .. }, true) => Box::pin(self.h2c.request(req)).await,
            (Upstream::Unix(_), false) => Box::pin(self.unix1.request(req)).await,
            (Upstream::Unix(_), true) => Box::pin(self.unix_h2c.request(req)).await,
        };
        legacy
            .map(|r| r.map(UpstreamBody::Plain))
            .map_err(SendError::Client)
    }
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Pool(PoolError),
    #[error(transparent)]
    Client(hyper_util::client::legacy::Error),
}

impl SendError {
    /// The connection to the upstream could not be made.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Pool(e) => e.is_connect(),
            SendError::Client(e) => e.is_connect(),
        }
    }

    /// The error the request body failed with, if that is why the request failed.
    pub fn body_error(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let hyper_error = match self {
            SendError::Pool(PoolError::Request(e)) => Some(e),
            SendError::Pool(_) => None,
            SendError::Client(e) => {
                std::error::Error::source(e).and_then(|s| s.downcast_ref::<hyper::Error>())
            }
        };
        hyper_error.and_then(std::error::Error::source)
    }
}

/// An upstream's response body: from the HTTP/1.1 pool (which it goes back to once read), or
/// from hyper-util's client.
pub enum UpstreamBody {
    Pooled(PooledBody),
    Plain(hyper::body::Incoming),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Plain(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Plain(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Plain(b) => b.size_hint(),
        }
    }
}

/// The URI a proxied request is sent with: origin-form (`/path?query`, RFC 9112 3.2.1) for
/// HTTP/1.1 over TCP, which podproxy's pool writes as it is, else [`upstream_uri`]'s.
pub fn request_uri(
    upstream: &Upstream,
    h2c: bool,
    path_and_query: String,
) -> Result<Uri, http::Error> {
    match upstream {
        Upstream::Http { .. } if !h2c => Ok(Uri::from_maybe_shared(Bytes::from(path_and_query))?),
        _ => upstream_uri(upstream, &path_and_query),
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
