//! Listening and draining. Each listener accepts connections (at most `--max-connections` open
//! at once) and serves HTTP/1.1 (upgrades included) or HTTP/2: by ALPN under TLS, else by the
//! first bytes (HTTP/2's preface is prior knowledge, RFC 9113 section 3.4), with hyper's own
//! connection builders. On shutdown: `/ready` turns 503 and the ready file goes at once; the
//! listeners keep accepting for `--drain-delay` (endpoints are still leaving the Service), then
//! close; keep-alive clients are asked to go (`Connection: close`, HTTP/2 GOAWAY), and requests
//! in flight get up to `--drain-timeout` to finish; upgraded connections too, which are closed
//! at its end (see `tunnel`).
//!
//! A connection's task polls only its hyper connection: the idle timeout and the drain reach it
//! through [`Control`] (a flag and a waker), set by one sweeper for all connections, instead of
//! timers and channels that every wake-up of every connection would poll.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use podkit_runtime::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conn::{idle_step, Activity, ClientConn, ClientIo, Framing, Quiet};
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

/// What the sweeper has asked of a connection, as bits (0: nothing yet).
const GRACEFUL: u8 = 1;
const CLOSE: u8 = 2;
/// A request head took longer than `--header-read-timeout`.
const CUT: u8 = 4;

/// How the sweeper reaches one connection's task.
struct Control {
    ask: AtomicU8,
    waker: AtomicWaker,
    /// The connection's activity, and its count when the sweeper asked it to close.
    activity: Arc<Activity>,
    sampled: AtomicU64,
    /// The connection's request count when the sweeper cut a slow head.
    cut_at: AtomicU64,
}

impl Control {
    fn new(activity: Arc<Activity>) -> Control {
        Control {
            ask: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            activity,
            sampled: AtomicU64::new(0),
            cut_at: AtomicU64::new(0),
        }
    }

    fn ask(&self, what: u8) {
        self.ask.fetch_or(what, Ordering::AcqRel);
        self.waker.wake();
    }

    /// The sweeper found the connection idle with its activity count at `events`.
    fn ask_close(&self, events: u64) {
        self.sampled.store(events, Ordering::Release);
        self.ask(CLOSE);
    }

    /// Whether the connection is to close now: asked to, and still as idle as when the
    /// sweeper looked. The connection's task decides, not the sweeper: on a multi-threaded
    /// runtime a request may have come in between the sweeper's look and its ask, and it is
    /// served (the ask is withdrawn).
    fn closing(&self) -> bool {
        let asked = self.ask.load(Ordering::Acquire);
        if asked & CUT != 0 {
            // Withdrawn if the head was complete after all: its request has started, or, with
            // HTTP/2 streams in flight, the header block has ended (a request, or trailers).
            let slow = self.activity.requests() == self.cut_at.load(Ordering::Acquire)
                && (self.activity.in_flight.load(Ordering::SeqCst) == 0
                    || self.activity.head_holds_connection());
            if slow {
                return true;
            }
            self.ask.fetch_and(!CUT, Ordering::AcqRel);
        }
        if asked & CLOSE == 0 {
            return false;
        }
        let idle = self.activity.idle_count() == self.sampled.load(Ordering::Acquire)
            && self.activity.in_flight.load(Ordering::SeqCst) == 0;
        if !idle {
            self.ask.fetch_and(!CLOSE, Ordering::AcqRel);
        }
        idle
    }

    /// The sweeper found a request head on its way for longer than `--header-read-timeout`,
    /// with `requests` requests started on the connection.
    fn ask_cut(&self, requests: u64) {
        self.cut_at.store(requests, Ordering::Release);
        self.ask(CUT);
    }

    fn graceful_asked(&self) -> bool {
        self.ask.load(Ordering::Acquire) & GRACEFUL != 0
    }
}

/// A connection as the sweeper sees it.
struct Tracked {
    control: Arc<Control>,
    quiet: Quiet,
    head: HeadWatch,
}

/// The sweeper's watch on a connection's next request head: the read and request counts last
/// seen, and since when a head has been on its way with no request starting. On HTTP/1 that is
/// since bytes came with no request in flight; on HTTP/2, and before the protocol is known,
/// since the connection's `head_open` was first seen (a header block, or first bytes, on their
/// way), with streams in flight too (see `Activity::head_holds_connection`). hyper's own
/// header timer was one timer per request (made, put in the timer wheel while a keep-alive
/// connection waits, and dropped): about 4% of podproxy's instructions per request.
#[derive(Debug, Default)]
struct HeadWatch {
    reads: u64,
    requests: u64,
    since: Option<Instant>,
}

impl HeadWatch {
    /// Looks again at `now`: how long a head has been on its way, if one is.
    fn look(&mut self, activity: &Activity, now: Instant) -> Option<Duration> {
        let (reads, requests) = (activity.reads(), activity.requests());
        let on_its_way = requests == self.requests
            && if activity.reads_heads() {
                activity.in_flight.load(Ordering::SeqCst) == 0
                    && (reads != self.reads || self.since.is_some())
            } else {
                // Streams in flight or not: an open header block holds the whole connection.
                activity.head_holds_connection()
            };
        if on_its_way {
            self.reads = reads;
            self.since.get_or_insert(now);
        } else {
            *self = HeadWatch {
                reads,
                requests,
                since: None,
            };
        }
        self.since.map(|since| now.duration_since(since))
    }
}

/// Every open connection, by number.
#[derive(Default)]
struct Open {
    conns: Mutex<HashMap<u64, Tracked>>,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every step ([`idle_step`] of the shorter timeout), closes the connections that have moved
    /// no byte and had no request in flight for `idle`, and cuts those whose request head has
    /// been on its way for `header_read_timeout` (noticed within a step of its first bytes, so
    /// cut after between one and one and a half times the timeout).
    async fn sweep(self: Arc<Self>, idle: Duration, header_read_timeout: Duration) {
        let step = idle_step(idle).min(idle_step(header_read_timeout));
        loop {
            tokio::time::sleep(step).await;
            if Arc::strong_count(&self) == 1 {
                return;
            }
            let now = Instant::now();
            for t in self.lock().values_mut() {
                let activity = &t.control.activity;
                if activity.quiet_for(&mut t.quiet, now) >= idle {
                    t.control.ask_close(t.quiet.seen);
                }
                if t.head.look(activity, now) >= Some(header_read_timeout) {
                    t.control.ask_cut(t.head.requests);
                }
            }
        }
    }

    fn ask_all(&self, what: u8) {
        for t in self.lock().values() {
            t.control.ask(what);
        }
    }
}

/// The HTTP/1 and HTTP/2 connection settings, made once.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// A hyper connection that can be asked to finish gracefully.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    /// An idle connection is closed with this too (HTTP/2: GOAWAY first, RFC 9113 section
    /// 6.8, so that a request the client sends meanwhile is known not to have been processed),
    /// not only dropped.
    const IDLE_GRACEFULLY: bool = false;

    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    const IDLE_GRACEFULLY: bool = true;

    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` until it ends, or until the sweeper closes it (idle) or asks it to finish.
async fn drive<C: Graceful>(conn: C, control: &Control) -> Result<(), BoxError> {
    let mut conn = std::pin::pin!(conn);
    let mut finishing = false;
    let mut settling: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx: &mut Context<'_>| {
        control.waker.register(cx.waker());
        // hyper reads what has come first (an HTTP/2 handshake, a first request), so that an
        // ask made before this connection was first polled does not drop what was sent.
        if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
            return Poll::Ready(ended.map_err(BoxError::from));
        }
        if control.closing() {
            // Gracefully once (HTTP/2's GOAWAY); dropped if still open when asked again.
            if C::IDLE_GRACEFULLY && !finishing {
                finishing = true;
                conn.as_mut().graceful();
                return conn.as_mut().poll(cx).map_err(BoxError::from);
            }
            return Poll::Ready(Ok(()));
        }
        if control.graceful_asked() && !finishing {
            // hyper closes an HTTP/1 connection that is idle at the ask, and it is idle until it
            // has read the next request: one that has reached the socket counts only once
            // tokio has seen it in epoll, which may not have happened yet when the ask wakes
            // this task (tokio polls epoll between runs of tasks, not before each). A timer
            // fires only after a turn of the driver, which reads epoll in the same turn: by
            // then such a request is read and served (with `Connection: close`), not dropped.
            if settled(&mut settling, cx).is_pending() {
                return Poll::Pending;
            }
            finishing = true;
            conn.as_mut().graceful();
            return conn.as_mut().poll(cx).map_err(BoxError::from);
        }
        Poll::Pending
    })
    .await
}

/// Runs `fut` unless the sweeper closes the connection first (or, with `graceful`, drains it):
/// the steps before hyper's connection (the TLS handshake, reading the first bytes) are cut by
/// the idle timeout too, and a connection that has not said which protocol it speaks, so sent
/// no request, is closed at the drain.
async fn unless_asked<F: Future>(fut: F, control: &Control, graceful: bool) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut settling = None;
    std::future::poll_fn(|cx: &mut Context<'_>| {
        control.waker.register(cx.waker());
        // What has come already is read first.
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if control.closing() {
            return Poll::Ready(None);
        }
        // At the drain, first bytes that reached the socket before the ask are read (see
        // `drive`).
        if graceful && control.graceful_asked() && settled(&mut settling, cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Ready once [`DRAIN_SETTLE`] has passed since its first poll, which starts the wait.
fn settled(settling: &mut Option<Pin<Box<tokio::time::Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    settling
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_SETTLE)))
        .as_mut()
        .poll(cx)
}

/// Serves one connection's byte stream: HTTP/2 if `h2` says so (ALPN) or, when it does not
/// say, if the client starts with HTTP/2's preface; HTTP/1.1 otherwise.
async fn serve_io<T, S>(
    mut io: ClientIo<T>,
    h2: Option<bool>,
    builders: &Builders,
    service: S,
    control: &Control,
) -> Result<(), BoxError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, Error = std::convert::Infallible> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<BoxError>,
{
    let h2 = match h2 {
        Some(h2) => h2,
        None => match unless_asked(io.is_http2(), control, true).await {
            Some(h2) => h2?,
            None => return Ok(()),
        },
    };
    if h2 {
        io.activity().set_streams();
        io.follow_http2();
        let conn = builders.http2.serve_connection(TokioIo::new(io), service);
        drive(conn, control).await
    } else {
        io.activity().set_reads_heads();
        let conn = builders
            .http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        drive(conn, control).await
    }
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
    let mut http1 = http1::Builder::new();
    // No timer: hyper's header read timeout would be one timer per request; the sweeper times
    // heads instead (HeadWatch).
    http1.max_buf_size(limits.max_header_bytes);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // CVE-2023-44487 (rapid reset): hyper caps pending accept resets per connection.
        .max_pending_accept_reset_streams(Some(20));
    let builders = Arc::new(Builders { http1, http2 });
    let open = Arc::new(Open::default());
    tokio::spawn(Arc::clone(&open).sweep(limits.idle_timeout, limits.header_read_timeout));
    let mut next_id: u64 = 0;
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
                        if tx.send((stream, peer, Some(permit))).await.is_err() {
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
            // queue: their clients have sent requests. They are taken and served, not reset,
            // even when --max-connections is reached: the only other choice is to reset them,
            // and there are at most a backlog of them, once.
            for (stream, peer) in last_accepts(listener) {
                let permit = Arc::clone(&permits).try_acquire_owned().ok();
                if permit.is_none() {
                    tracing::debug!(client = %peer, "serving a connection queued at the drain beyond --max-connections");
                }
                let _ = stream.set_nodelay(true);
                if tx.send((stream, peer, permit)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(conn_tx);
    // Until every accept task has stopped (after the drain delay) and handed over its last
    // connections.
    while let Some((stream, peer, permit)) = conn_rx.recv().await {
        // An IPv4 client of a dual-stack listener (`[::]`) is named as IPv4, not as
        // `::ffff:a.b.c.d`, in X-Forwarded-For, the access log and the trust check.
        let peer = std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port());
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
            head_timer: Default::default(),
            permit: std::sync::Mutex::new(permit),
        });
        let conn = Arc::clone(&client);
        let service = hyper::service::service_fn(move |req| {
            Arc::clone(&proxy).handle(Arc::clone(&client), req)
        });
        let control = Arc::new(Control::new(Arc::clone(&activity)));
        next_id += 1;
        let id = next_id;
        open.lock().insert(
            id,
            Tracked {
                control: Arc::clone(&control),
                quiet: activity.quiet(),
                head: HeadWatch::default(),
            },
        );
        let builders = Arc::clone(&builders);
        let open = Arc::clone(&open);
        let tls = tls.clone();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let io = ClientIo::new(stream, activity, framing);
                    serve_io(io, None, &builders, service, &control).await
                }
                Some(acceptor) => {
                    // The handshake counts against the header read timeout, like the head.
                    let handshake =
                        tokio::time::timeout(header_read_timeout, acceptor.accept(stream));
                    match unless_asked(handshake, &control, false).await {
                        None => Ok(()),
                        Some(Err(_)) => Err("TLS handshake timed out".into()),
                        Some(Ok(Err(e))) => Err(e.into()),
                        Some(Ok(Ok(stream))) => {
                            let h2 = stream.get_ref().1.alpn_protocol().map(|p| p == b"h2");
                            let io = ClientIo::new(stream, activity, framing);
                            serve_io(io, h2, &builders, service, &control).await
                        }
                    }
                }
            };
            let asked = control.ask.load(Ordering::Acquire);
            if asked & CUT != 0 {
                tracing::debug!(client = %peer, "closed a connection whose request head took longer than {}", podkit_runtime::units::format_duration(limits.header_read_timeout));
            } else if asked & CLOSE != 0 {
                tracing::debug!(client = %peer, "closed a connection idle for {}", podkit_runtime::units::format_duration(limits.idle_timeout));
            }
            if let Err(e) = ended {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            open.lock().remove(&id);
            metrics.open_connections.dec();
            // Unless an upgrade's tunnel holds it now.
            drop(conn.take_permit());
        });
    }
    // Responses have said `Connection: close` since the drain began, so HTTP/1 clients leave
    // after their next answer; a moment for that, then the rest are asked to go (an idle
    // HTTP/1 connection is closed, HTTP/2 gets GOAWAY) and requests in flight finish.
    let deadline = tokio::time::Instant::now() + drain_timeout;
    let grace = tokio::time::Instant::now() + DRAIN_GRACE.min(drain_timeout / 2);
    // Counted by what is open (a connection leaves `open` as it ends), not by the permits:
    // those taken at the drain beyond --max-connections hold none.
    while !open.lock().is_empty() && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open.ask_all(GRACEFUL);
    // Upgraded connections (WebSocket) are waited for too: the app behind, draining as well,
    // may still close them itself, its close frames passing through.
    while (!open.lock().is_empty() || proxy.tunnels.count() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = proxy.tunnels.close_all();
    if cut > 0 {
        tracing::warn!(
            "closed {cut} upgraded connection(s) (WebSocket) still open at the drain timeout ({})",
            podkit_runtime::units::format_duration(drain_timeout)
        );
    }
    let left = open.lock().len();
    left
}

/// A classic BPF socket filter that drops TCP segments with SYN set and passes the rest. A
/// socket filter sees the TCP header at offset 0; its flags are byte 13, SYN is bit 0x02.
const DROP_SYN: [socket2::SockFilter; 4] = [
    // ldb [13]
    socket2::SockFilter::new(0x30, 0, 0, 13),
    // jset #0x02, to the drop, else to the pass
    socket2::SockFilter::new(0x45, 0, 1, 0x02),
    // ret #0: dropped
    socket2::SockFilter::new(0x06, 0, 0, 0),
    // ret #0xffffffff: passed whole
    socket2::SockFilter::new(0x06, 0, 0, u32::MAX),
];

/// Stops `listener` starting new handshakes, while what is in its accept queue stays there to
/// be accepted: a socket filter that drops SYNs. Linux runs a listener's filter on what comes
/// to it (`tcp_filter` in `tcp_v4_rcv` and `tcp_v6_rcv`), so a client that tries now gets no
/// answer; its SYN is sent again a second later, to a closed port, which refuses it. Only SYNs:
/// a handshake already half done still completes (its connection is taken if it is queued in
/// time), and a connection made from the listener inherits its filter (`sk_clone_lock`), which
/// must not drop what the client sends on it. Shrinking the backlog would not do: with SYN
/// cookies (Linux's default) clients would still complete handshakes, to be reset at the close
/// with their requests written.
fn stop_handshakes(listener: &std::net::TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).attach_filter(&DROP_SYN)
}

/// The connections in `listener`'s accept queue when it stops, taken with accept(2) itself
/// until the queue is empty, after [`stop_handshakes`]. tokio's `accept` would not do: it
/// trusts the readiness last read from epoll, and answers "nothing" for connections that came
/// since, which the close would then reset.
fn last_accepts(listener: TcpListener) -> Vec<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the listener's last connections");
            return Vec::new();
        }
    };
    if let Err(e) = stop_handshakes(&listener) {
        tracing::warn!(error = %e, "cannot stop new handshakes at the drain; a client that connects as the listener closes may be reset");
    }
    let mut taken = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpStream::from_std(stream));
                match stream {
                    Ok(s) => taken.push((s, peer)),
                    Err(e) => {
                        tracing::warn!(client = %peer, error = %e, "cannot serve a connection taken at the drain")
                    }
                }
            }
            // A connection the client gave up on while queued; the rest are still there.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return taken,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed at the drain");
                return taken;
            }
        }
    }
}

/// After the listeners close, how long connections get to leave on their own before idle ones
/// are closed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long a connection waits, once asked to finish, before hyper is told (see `drive`): a
/// few turns of the runtime, so that what reached its socket before the ask is read.
const DRAIN_SETTLE: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::InFlight;

    /// What the drain relies on, checked against this kernel: once handshakes are stopped, a
    /// connection already in the accept queue is still taken and works, and a new one gets no
    /// answer (it is not completed, to be reset at the close).
    #[tokio::test]
    async fn a_stopped_listener_still_hands_over_its_queue_and_completes_no_new_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut queued = std::net::TcpStream::connect(addr).expect("connect");
        let std_listener = listener.into_std().expect("std");
        stop_handshakes(&std_listener).expect("filter");
        // Sent after the stop: the connection made from the listener must not drop it.
        std::io::Write::write_all(&mut queued, b"sent after the stop.").expect("write");
        let late = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            late.is_err(),
            "a handshake completed after the stop: {late:?}"
        );
        let listener = TcpListener::from_std(std_listener).expect("tokio");
        let taken = last_accepts(listener);
        assert_eq!(taken.len(), 1, "the queued connection, and only it");
        let (stream, peer) = taken.into_iter().next().expect("one");
        assert_eq!(peer, queued.local_addr().expect("local"));
        let mut buf = [0u8; 20];
        let mut stream = stream;
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf)
            .await
            .expect("read");
        assert_eq!(&buf, b"sent after the stop.");
        // A connection made from the listener once it is stopped inherits its filter: it must
        // still get what its client sends (only SYNs are dropped).
        socket2::SockRef::from(&stream)
            .attach_filter(&DROP_SYN)
            .expect("filter on the connection");
        std::io::Write::write_all(&mut queued, b"and more").expect("write");
        let mut more = [0u8; 8];
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut more),
        )
        .await
        .expect("the data passed the filter")
        .expect("read");
        assert_eq!(&more, b"and more");
    }

    /// The drain's ask reaches a kept-alive HTTP/1 connection whose next request has arrived
    /// (it is in the socket) but not been read, as tokio has not polled epoll since: the
    /// request is served, not dropped with the connection.
    #[tokio::test(flavor = "current_thread")]
    async fn the_drain_serves_a_request_that_arrived_before_it_on_a_kept_alive_connection() {
        use tokio::io::AsyncReadExt;
        const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let control = Arc::new(Control::new(Activity::new()));
        let service = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
            let empty = http_body_util::Empty::<bytes::Bytes>::new();
            Ok::<_, std::convert::Infallible>(hyper::Response::new(empty))
        });
        let conn = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let driven = tokio::spawn({
            let control = Arc::clone(&control);
            async move { drive(conn, &control).await.map_err(|e| e.to_string()) }
        });
        // A first request and its answer: the connection is idle again, kept alive.
        tokio::io::AsyncWriteExt::write_all(&mut client, REQUEST)
            .await
            .expect("write");
        let mut first = Vec::new();
        while !first.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.expect("first answer");
            first.push(byte[0]);
        }
        assert!(first.starts_with(b"HTTP/1.1 200"));
        // The next request reaches the socket; this thread does not run epoll until the drain
        // has asked, so the connection's task is polled on that ask first.
        assert_eq!(client.try_write(REQUEST).expect("write"), REQUEST.len());
        std::thread::sleep(Duration::from_millis(100));
        control.ask(GRACEFUL);
        tokio::time::timeout(Duration::from_secs(5), driven)
            .await
            .expect("the connection ends")
            .expect("the task")
            .expect("without an error");
        let mut second = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut second))
            .await
            .expect("the client is answered")
            .expect("read");
        let second = String::from_utf8_lossy(&second);
        assert!(second.starts_with("HTTP/1.1 200"), "answer: {second:?}");
    }

    #[test]
    fn a_head_is_timed_from_its_first_bytes_until_its_request_starts() {
        let activity = Activity::new();
        let mut watch = HeadWatch::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Not HTTP/1 (yet, or HTTP/2): nothing is timed, whatever is read.
        activity.touch_read();
        assert_eq!(watch.look(&activity, at(0)), None);
        activity.set_reads_heads();
        // Nothing new read since the last look: a keep-alive wait, not a head.
        assert_eq!(watch.look(&activity, at(1)), None);
        activity.touch_read();
        assert_eq!(watch.look(&activity, at(2)), Some(Duration::ZERO));
        // Slow bytes, or none, do not restart the clock.
        activity.touch_read();
        assert_eq!(watch.look(&activity, at(5)), Some(Duration::from_secs(3)));
        assert_eq!(watch.look(&activity, at(9)), Some(Duration::from_secs(7)));
        // The head was complete: its request started, the watch ends.
        let request = InFlight::new(&activity);
        activity.touch_read();
        assert_eq!(watch.look(&activity, at(10)), None);
        drop(request);
        assert_eq!(watch.look(&activity, at(11)), None);
        // The next head is timed from its own first bytes.
        activity.touch_read();
        assert_eq!(watch.look(&activity, at(12)), Some(Duration::ZERO));
    }

    #[test]
    fn an_http2_header_block_is_timed_and_cut_with_streams_in_flight() {
        let activity = Activity::new();
        let mut watch = HeadWatch::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A stream in flight (a long poll, an upload) and no header block open: nothing timed.
        let stream = InFlight::new(&activity);
        assert_eq!(watch.look(&activity, at(0)), None);
        // A block begins and stalls: timed, stream in flight or not.
        activity.set_head_open(true);
        assert_eq!(watch.look(&activity, at(1)), Some(Duration::ZERO));
        assert_eq!(watch.look(&activity, at(4)), Some(Duration::from_secs(3)));
        let control = Control::new(Arc::clone(&activity));
        control.ask_cut(watch.requests);
        assert!(control.closing(), "cut with a stream in flight");
        // A block that ends starts its request: the watch ends, and a cut asked before that
        // is withdrawn.
        let control = Control::new(Arc::clone(&activity));
        control.ask_cut(watch.requests);
        activity.set_head_open(false);
        let second = InFlight::new(&activity);
        assert!(!control.closing());
        assert_eq!(watch.look(&activity, at(5)), None);
        drop((stream, second));
        // HTTP/1 is not changed by this: bytes read with a request in flight are its body.
        let activity = Activity::new();
        activity.set_reads_heads();
        let mut watch = HeadWatch::default();
        let _request = InFlight::new(&activity);
        activity.touch_read();
        assert_eq!(watch.look(&activity, at(6)), None);
        assert_eq!(watch.look(&activity, at(9)), None);
    }

    #[test]
    fn a_cut_is_withdrawn_when_the_heads_request_started_after_the_sweepers_look() {
        let activity = Activity::new();
        let control = Control::new(Arc::clone(&activity));
        control.ask_cut(activity.requests());
        assert!(control.closing(), "still no request: cut");
        let control = Control::new(Arc::clone(&activity));
        control.ask_cut(activity.requests());
        let request = InFlight::new(&activity);
        assert!(!control.closing());
        drop(request);
        assert!(!control.closing(), "withdrawn for good");
    }

    #[test]
    fn a_close_ask_is_withdrawn_when_a_request_came_after_the_sweepers_look() {
        let activity = Activity::new();
        let control = Control::new(Arc::clone(&activity));
        assert!(!control.closing());
        // Still as the sweeper saw it: closes.
        control.ask_close(activity.events());
        assert!(control.closing());
        // A request arrived between the look and the ask: served, and the ask withdrawn.
        let control = Control::new(Arc::clone(&activity));
        control.ask_close(activity.events());
        let request = InFlight::new(&activity);
        assert!(!control.closing());
        assert_eq!(control.ask.load(Ordering::Acquire) & CLOSE, 0);
        // Its bytes alone (the request done) are enough to withdraw it too.
        let seen = activity.events();
        drop(request);
        control.ask_close(seen);
        assert!(!control.closing());
        // The drain's ask stays when a close is withdrawn.
        control.ask(GRACEFUL);
        control.ask_close(seen);
        assert!(!control.closing());
        assert!(control.graceful_asked());
    }
}
