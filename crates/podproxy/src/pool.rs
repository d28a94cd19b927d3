//! The keep-alive pool for HTTP/1.1 upstreams over TCP, the proxy's hot path, built on hyper's
//! connection API (`hyper::client::conn::http1`) instead of hyper-util's legacy client, whose
//! general-purpose checkout (a keyed map, a race between checkout and connect, a second task
//! per connection hand-off) cost about a fifth of podproxy's user CPU per request under load.
//!
//! What it promises:
//! - A connection goes back to the pool only once its response body has been read to the end
//!   (or had none) and hyper says it can take the next request; an upgraded (101) connection,
//!   a cut body or `Connection: close` never returns.
//! - Idle connections are reused newest first and closed after `idle_timeout` (default 3s, below
//!   the usual app keep-alive of 5s), so the pool does not hand out a connection the app is
//!   about to close, and at most [`MAX_IDLE_PER_UPSTREAM`] wait per upstream.
//! - A request that a pooled connection could not send (it closed before the request was
//!   written: hyper hands the request back) is sent once more on a new connection; nothing was
//!   sent, so nothing can be done twice (RFC 9110 section 9.2.2 is about requests that may have
//!   been processed). A connect that fails (refused, reset) is tried once more, for the same
//!   reason; a connect timeout is not, so a dead upstream costs one timeout, not two.
//! - Host names are resolved at every new connection, so a Service's address change is seen.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::upstream::Body;

/// The most idle connections kept for one upstream; more are closed when they come back.
pub const MAX_IDLE_PER_UPSTREAM: usize = 512;

/// Why a request did not get a response head.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {upstream}: {source}")]
    Connect {
        upstream: String,
        source: std::io::Error,
    },
    #[error("connect to {upstream}: no answer within the connect timeout")]
    ConnectTimeout { upstream: String },
    #[error("HTTP/1.1 handshake with {upstream}: {source}")]
    Handshake {
        upstream: String,
        source: hyper::Error,
    },
    #[error("{0}")]
    Request(#[source] hyper::Error),
}

struct Idle {
    send: SendRequest<Body>,
    since: Instant,
}

struct Slot {
    host: String,
    port: u16,
    idle: Vec<Idle>,
}

struct Shared {
    /// One slot per upstream, made on first use and never removed, so an index stays valid.
    slots: Mutex<Vec<Slot>>,
    idle_timeout: Duration,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of `host:port`'s slot, made if it is the first request there.
    fn slot(&self, host: &str, port: u16) -> usize {
        let mut slots = self.lock();
        match slots.iter().position(|s| s.port == port && s.host == host) {
            Some(i) => i,
            None => {
                slots.push(Slot {
                    host: host.to_string(),
                    port,
                    idle: Vec::new(),
                });
                slots.len() - 1
            }
        }
    }
}

/// An upstream's place in the pool, from [`Http1Pool::slot`]: its index and the `host:port` it
/// was made for, together, so that a request cannot be sent through one upstream's slot to
/// another upstream.
#[derive(Debug, Clone)]
pub struct PoolSlot {
    index: usize,
    host: Arc<str>,
    port: u16,
}

/// The pool; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Http1Pool {
    shared: Arc<Shared>,
    connect_timeout: Duration,
}

impl Http1Pool {
    /// Must be called inside a tokio runtime: it starts the task that closes idle connections.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Http1Pool {
        let shared = Arc::new(Shared {
            slots: Mutex::new(Vec::new()),
            idle_timeout,
        });
        tokio::spawn(reap(Arc::downgrade(&shared)));
        Http1Pool {
            shared,
            connect_timeout,
        }
    }

    /// The slot of `host:port`, for [`Http1Pool::send`]: looked up once per upstream (a route
    /// keeps it), not per request.
    pub fn slot(&self, host: &str, port: u16) -> PoolSlot {
        PoolSlot {
            index: self.shared.slot(host, port),
            host: Arc::from(host),
            port,
        }
    }

    /// Sends `req` to the upstream of `slot` on a pooled connection, or a new one.
    /// `now` is the request's arrival, read once by the caller: the first checkout judges idle
    /// connections by it, so one may be taken the few microseconds since then past
    /// `idle_timeout`. A checkout after a retry (a failed connect or a closed pooled
    /// connection, which can take up to the connect timeout) reads the clock again.
    pub async fn send(
        &self,
        slot: &PoolSlot,
        req: Request<Body>,
        now: Instant,
    ) -> Result<Response<PooledBody>, PoolError> {
        let (host, port) = (&*slot.host, slot.port);
        let slot = slot.index;
        let mut req = req;
        to_origin_form(&mut req, host, port);
        let mut retried = false;
        loop {
            let now = if retried { Instant::now() } else { now };
            let (mut send, reused) = match self.checkout(slot, now).await {
                Some(send) => (send, true),
                // Boxed, as the rarer path, to keep the future of every request small.
                None => match Box::pin(self.connect(host, port)).await {
                    Ok(send) => (send, false),
                    Err(e @ PoolError::Connect { .. }) if !retried => {
                        tracing::debug!(error = %e, "connect failed; trying once more");
                        retried = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match send.try_send_request(req).await {
                Ok(resp) => {
                    let keep = resp.status() != StatusCode::SWITCHING_PROTOCOLS;
                    let (parts, body) = resp.into_parts();
                    let back = keep.then(|| Return {
                        send,
                        pool: Arc::clone(&self.shared),
                        slot,
                    });
                    let body = PooledBody { inner: body, back };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused || !retried => {
                        tracing::debug!(error = %e.error(), "a pooled connection closed before the request was sent; sending it again");
                        retried = true;
                        req = unsent;
                    }
                    _ => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection to `host:port` that can take a request now. One that cannot
    /// yet (its response has ended but hyper is still sending the request body, as after an
    /// early 401 or 413 to an upload) is put back at the oldest end rather than waited for: the
    /// wait would be as long as that upload. Each idle connection is looked at once at most.
    async fn checkout(&self, slot: usize, now: Instant) -> Option<SendRequest<Body>> {
        let mut left: Option<usize> = None;
        loop {
            let Idle { mut send, since } = {
                let mut slots = self.shared.lock();
                let idle = &mut slots.get_mut(slot)?.idle;
                let n = left.get_or_insert(idle.len());
                *n = n.checked_sub(1)?;
                idle.pop()?
            };
            if send.is_closed() || now.saturating_duration_since(since) >= self.shared.idle_timeout
            {
                continue;
            }
            match std::future::poll_fn(|cx| Poll::Ready(send.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => return Some(send),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => {
                    if let Some(s) = self.shared.lock().get_mut(slot) {
                        s.idle.insert(0, Idle { send, since });
                    }
                }
            }
        }
    }

    async fn connect(&self, host: &str, port: u16) -> Result<SendRequest<Body>, PoolError> {
        let upstream = || format!("{host}:{port}");
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        {
            Err(_) => {
                return Err(PoolError::ConnectTimeout {
                    upstream: upstream(),
                })
            }
            Ok(Err(source)) => {
                return Err(PoolError::Connect {
                    upstream: upstream(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| PoolError::Handshake {
                upstream: upstream(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(send)
    }
}

/// hyper's connection writes the request target as given: an absolute URI (the health probes
/// build one) becomes origin-form, and a request without Host gets the upstream's (RFC 9112
/// section 3.2: an HTTP/1.1 request must carry one).
fn to_origin_form(req: &mut Request<Body>, host: &str, port: u16) {
    if !req.headers().contains_key(HOST) {
        let authority = match req.uri().authority() {
            Some(a) => a.to_string(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        if let Ok(v) = HeaderValue::from_str(&authority) {
            req.headers_mut().insert(HOST, v);
        }
    }
    if req.uri().scheme().is_some() {
        let target = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(target);
    }
}

impl PoolError {
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            PoolError::Connect { .. }
                | PoolError::ConnectTimeout { .. }
                | PoolError::Handshake { .. }
        )
    }
}

/// Closes connections idle longer than the timeout, until the pool is gone.
async fn reap(shared: Weak<Shared>) {
    let every = shared
        .upgrade()
        .map(|s| (s.idle_timeout / 2).max(Duration::from_millis(100)))
        .unwrap_or_default();
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for slot in shared.lock().iter_mut() {
            slot.idle
                .retain(|i| !i.send.is_closed() && i.since.elapsed() < shared.idle_timeout);
        }
    }
}

/// Where a connection goes once its response is done.
struct Return {
    send: SendRequest<Body>,
    pool: Arc<Shared>,
    slot: usize,
}

impl Return {
    fn give_back(self) {
        if self.send.is_closed() {
            return;
        }
        if let Some(slot) = self.pool.lock().get_mut(self.slot) {
            if slot.idle.len() < MAX_IDLE_PER_UPSTREAM {
                slot.idle.push(Idle {
                    send: self.send,
                    since: Instant::now(),
                });
            }
        }
    }
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    back: Option<Return>,
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(back) = self.back.take() {
                    back.give_back();
                }
            }
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing to read (204, 304, HEAD, Content-Length: 0) is never polled by
        // the server side; its connection is free all the same. A body dropped part-way is
        // not: its connection still has bytes coming and is closed with the body.
        if self.inner.is_end_stream() {
            if let Some(back) = self.back.take() {
                back.give_back();
            }
        }
    }
}
