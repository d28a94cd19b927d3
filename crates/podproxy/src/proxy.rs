//! One request through the proxy: refuse what must be refused (absolute-form for another host,
//! CONNECT, a malformed path, an oversized body), normalize the path, pick the route, shape the
//! headers, forward with a response-head timeout, stream the answer back, pass upgrades
//! (WebSocket) through once the upstream has answered 101, and log the request.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, REFERER, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

use crate::access_log::{AccessLog, Entry};
use crate::conn::{ClientConn, InFlight};
use crate::forward;
use crate::metrics::{Metrics, RouteMetrics};
use crate::normalize::normalize_path;
use crate::pool::PoolSlot;
use crate::route::{Route, Routes, Upstream};
use crate::tunnel::Tunnels;
use crate::upstream::{
    request_uri, Body as UpstreamRequestBody, BoxError, Clients, SendError, UpstreamBody,
};

/// What every request needs; shared by all connections.
pub struct Proxy {
    pub routes: Routes,
    pub clients: Clients,
    pub trusted: forward::TrustedProxies,
    pub access_log: AccessLog,
    pub metrics: Arc<Metrics>,
    /// Per route (same order as `routes`), then one for requests no route took.
    pub route_metrics: Vec<RouteMetrics>,
    /// Per route (same order as `routes`): its upstream's slot in the HTTP/1.1 pool, if it is
    /// the pool's ([`Clients::slot`]).
    pub pool_slots: Vec<Option<PoolSlot>>,
    pub upstream_response_timeout: Duration,
    /// `--request-timeout`, None when off.
    pub request_timeout: Option<Duration>,
    /// `--idle-timeout`, which also bounds a quiet upgraded connection.
    pub idle_timeout: Duration,
    /// Set at SIGTERM: HTTP/1 answers carry `Connection: close` from then on.
    pub draining: AtomicBool,
    /// The upgraded connections open now, which the drain waits for too.
    pub tunnels: Arc<Tunnels>,
    pub max_body_bytes: u64,
}

/// Facts about the request kept for the access log. Header values are kept as they came
/// (a `HeaderValue` clone shares the read buffer) and turned into text only if a line is written.
struct Seen {
    start: Instant,
    start_nanos: i128,
    client: SocketAddr,
    method: Method,
    path: String,
    query: Option<String>,
    protocol: &'static str,
    request_id: Option<HeaderValue>,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    /// None for a request without a body (ended as it came).
    body: Option<Arc<BodyProgress>>,
    /// The route taken (its position), once known.
    route: Option<usize>,
}

/// A request being served, from the moment it is prepared: if its future is dropped before
/// the answer (the client closed its connection, or reset its HTTP/2 stream, while the
/// upstream was still working), it is counted and logged as 499, nginx's "client closed
/// request", rather than vanishing from the metrics and the access log.
struct Pending {
    proxy: Arc<Proxy>,
    seen: Seen,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.proxy.abandoned(&mut self.seen);
        }
    }
}

/// The status logged for a request whose client left before its answer (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

/// A request ready for its upstream. [`Proxy::prepare`] makes it without awaiting anything,
/// because hyper moves the future a request is served by into its dispatcher, and every
/// connection keeps a slot of that size: what the future holds across the upstream wait is all
/// it should hold. Made inside one async fn, routing and header shaping had grown it to 8.5 KiB
/// (the request, the scan, and the nested upstream future twice over, as rustc lays out an
/// awaited future); now it is 672 bytes, with the upstream wait (1.6 KiB) boxed.
struct Prepared {
    req: Request<UpstreamRequestBody>,
    /// The route's position in `Proxy::routes`.
    index: usize,
    /// The client's side of the upgrade it asked for (HTTP/1.1), to be joined once the upstream
    /// answers 101.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: bool,
    /// The client speaks HTTP/1, so its requests come one at a time (see `HeadTimer`).
    http1: bool,
}

/// How far the request body has come: bytes passed, and whether it has ended.
#[derive(Debug, Default)]
struct BodyProgress {
    bytes: AtomicU64,
    ended: AtomicBool,
}

impl Proxy {
    /// Serves one request. The work before the upstream wait is done here, when hyper takes
    /// the request, and the future returned holds only what lives across that wait (the
    /// request itself is gone by then; see `Prepared`).
    pub fn handle(
        self: Arc<Self>,
        conn: Arc<ClientConn>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
        // Counted for every request, in order, so the mark lands on the right one.
        let conflicting = conn.framing.next_is_conflicting();
        let in_flight = InFlight::new(&conn.activity);
        let client = conn.peer;
        let http1 = req.version() < Version::HTTP_2;
        let logging = self.access_log.enabled();
        let header = |name| logging.then(|| req.headers().get(name).cloned()).flatten();
        let found = forward::scan(req.headers());
        let mut seen = Seen {
            start: Instant::now(),
            start_nanos: if logging {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i128)
                    .unwrap_or_default()
            } else {
                0
            },
            client,
            method: req.method().clone(),
            path: if logging {
                req.uri().path().to_string()
            } else {
                String::new()
            },
            // Kept for the log only; the upstream's target takes it from the request itself.
            query: logging
                .then(|| req.uri().query().map(str::to_string))
                .flatten(),
            protocol: protocol_name(req.version()),
            request_id: None,
            // The target's authority (HTTP/1.1 absolute-form, HTTP/2's :authority) wins over
            // Host: RFC 9112 section 3.2.2, RFC 9113 section 8.3.1.
            // One with userinfo is refused (see `prepare`), and never logged.
            host: req
                .uri()
                .authority()
                .filter(|a| !a.as_str().contains('@'))
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| found.host.clone())
                .filter(|h| !h.as_bytes().contains(&b'@')),
            user_agent: header(USER_AGENT),
            referer: header(REFERER),
            body: (!req.body().is_end_stream()).then(|| Arc::new(BodyProgress::default())),
            route: None,
        };
        let deadline = self
            .request_timeout
            .map(|t| tokio::time::Instant::from_std(seen.start) + t);
        // A refused request still gets an id, for its answer and its log line.
        let incoming_id = found.request_id.clone();
        let prepared = self
            .prepare(&conn, req, found, &mut seen, conflicting)
            .inspect_err(|_| refused_id(&mut seen, incoming_id));
        async move {
            // From here on, a request whose client leaves before its answer is still logged and
            // counted (see `Pending`).
            let mut pending = Pending {
                proxy: self,
                seen,
                answered: false,
            };
            let proxy = &pending.proxy;
            // The wait on the upstream ends at the sooner of the response-head timeout and the
            // request deadline (on the connection's timer for HTTP/1, see `HeadTimer`); the
            // body's timer is made only if a body stalls.
            // Boxed: unboxed, rustc keeps room for this future twice in the one returned here.
            let forwarded = match prepared {
                Ok(prepared) => {
                    Box::pin(proxy.forward(&conn, prepared, &pending.seen, deadline)).await
                }
                Err(refused) => Err(refused),
            };
            let (resp, upstream_time) = match forwarded {
                Ok((r, t)) => (r.map(Reply::Upstream), t),
                Err((status, why)) => (
                    error_response(status, why, pending.seen.request_id.as_ref()).map(Reply::Fixed),
                    None,
                ),
            };
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let mut resp = resp;
            if !switching && http1 && proxy.draining.load(Ordering::Relaxed) {
                close_after(&mut resp);
            }
            let deadline = deadline.filter(|_| !switching);
            let status = resp.status().as_u16();
            pending.answered = true;
            let on_end = pending
                .proxy
                .answered(&mut pending.seen, status, upstream_time);
            Ok(finish_response(resp, in_flight, deadline, on_end))
        }
    }

    /// Refuses what must be refused, routes, and shapes the upstream request.
    fn prepare(
        &self,
        conn: &ClientConn,
        mut req: Request<Incoming>,
        found: forward::Scanned,
        seen: &mut Seen,
        conflicting: bool,
    ) -> Result<Prepared, (StatusCode, &'static str)> {
        if conflicting {
            // Seen on the wire by the connection's framing sniffer (see crate::conn): refused,
            // and hyper closes the connection after the answer.
            return Err((
                StatusCode::BAD_REQUEST,
                "both Transfer-Encoding and Content-Length\n",
            ));
        }
        if found.hosts_repeated {
            // Routed by one and read by an app as another, or joined: refused (RFC 9112
            // section 3.2, for HTTP/1.1; HTTP/2 has one :authority and no use for two).
            return Err((StatusCode::BAD_REQUEST, "more than one Host header\n"));
        }
        if req.method() == Method::CONNECT {
            return Err((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n"));
        }
        // RFC 9110 section 4.2.4: userinfo in an http(s) target is to be treated as an error.
        if req
            .uri()
            .authority()
            .is_some_and(|a| a.as_str().contains('@'))
        {
            return Err((
                StatusCode::BAD_REQUEST,
                "userinfo in the request target is refused\n",
            ));
        }
        // Nor is a Host that is no `uri-host[:port]` (RFC 9112 section 3.2) when it is the
        // request's host: `handle` found it with userinfo and kept none (with an authority,
        // Host is not used, and is replaced on the way up).
        if seen.host.is_none() && found.host.is_some() {
            return Err((StatusCode::BAD_REQUEST, "userinfo in Host is refused\n"));
        }
        // RFC 9113 section 8.3.1: an HTTP/2 request whose Host names another entity than its
        // :authority should be treated as malformed. Routed by one and checked by an app by
        // the other, it is a way around host routes; refused rather than passed on.
        if req.version() == Version::HTTP_2 {
            if let (Some(authority), Some(host)) = (req.uri().authority(), found.host.as_ref()) {
                let default_port = if conn.tls { 443 } else { 80 };
                if !same_entity(authority, host, default_port) {
                    return Err((StatusCode::BAD_REQUEST, "Host differs from :authority\n"));
                }
            }
        }
        // HTTP/1.x absolute-form (RFC 9112 3.2.2) is what clients send to forward proxies; we
        // are none, so it is refused unless it names one of our host routes.
        if req.version() < Version::HTTP_2 {
            if let Some(authority) = req.uri().authority() {
                if !self.names_a_host_route(authority) {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "absolute-form requests for another host are refused\n",
                    ));
                }
            }
            // Framing (RFC 9112 6.3) is settled by hyper's parser before we see the request:
            // conflicting Content-Length values and a non-chunked Transfer-Encoding are answered
            // 400; with both Transfer-Encoding and Content-Length, Transfer-Encoding wins, the
            // length is dropped and the connection is closed after the answer. This is a second
            // line for requests built by other means (HTTP/2 is framed by its own frames).
            if found.content_length.is_some() {
                if found.hop.transfer_encoding() {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "both Transfer-Encoding and Content-Length\n",
                    ));
                }
                if found.content_lengths_differ {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "conflicting Content-Length values\n",
                    ));
                }
            }
        }
        // Owned only when normalizing changed the path; most paths are taken as they came.
        let rewritten = match normalize_path(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(p)) => Some(p),
            Err(_) => return Err((StatusCode::BAD_REQUEST, "malformed path\n")),
        };
        let path = rewritten.as_deref().unwrap_or(req.uri().path());
        if self.access_log.enabled() {
            seen.path.clear();
            seen.path.push_str(path);
        }
        let host = seen.host.clone();
        let host_str = host.as_ref().and_then(|h| h.to_str().ok());
        let index = self
            .routes
            .find_index(host_str, &crate::normalize::without_params(path))
            .ok_or((StatusCode::NOT_FOUND, "no route\n"))?;
        seen.route = Some(index);
        let route = self.routes.get(index);
        if req.body().size_hint().lower() > self.max_body_bytes {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"));
        }

        let http1 = req.version() < Version::HTTP_2;
        // A target with an authority (absolute-form that got this far names one of our host
        // routes; HTTP/2's :authority) was routed by it, and the upstream's Host says the same:
        // the Host it came with is replaced (RFC 9112 section 3.2.2, RFC 9113 section 8.3.1).
        let has_authority = req.uri().authority().is_some();
        let upgrade = http1 && found.upgrade;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        // TE is hop-by-hop, but "TE: trailers" says the client takes trailers, which a gRPC
        // server needs to hear (the one TE value HTTP/2 allows, RFC 9113 section 8.2.2):
        // passed on, as the end-to-end fact it is.
        let named_others = found.hop.remove(&mut parts.headers, upgrade);
        // Rarely, Connection names end-to-end headers, which are gone now: looked up again.
        let (host_header, request_id, request_ids) = if named_others {
            looked_up_again(&parts.headers)
        } else {
            (found.host, found.request_id, found.request_ids)
        };
        if found.te_trailers {
            parts
                .headers
                .insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        if found.other_forwarding && !self.trusted.trusts(conn.peer.ip()) {
            forward::remove_other_forwarding(&mut parts.headers);
        }
        forward::set_forwarded(
            &mut parts.headers,
            conn.peer.ip(),
            &conn.peer_value,
            if conn.tls { "https" } else { "http" },
            host.as_ref(),
            &self.trusted,
        );
        seen.request_id = Some(forward::request_id(
            &mut parts.headers,
            request_id.as_ref(),
            request_ids,
        ));
        // An origin-form target that neither normalizing nor the route changes goes to the
        // HTTP/1.1 pool as it came, not written and parsed again.
        let as_it_came = rewritten.is_none()
            && !route.rewrites_path()
            && !route.h2c
            && matches!(route.upstream, Upstream::Http { .. })
            && parts.uri.scheme().is_none();
        if !as_it_came {
            parts.uri = upstream_target(route, rewritten.as_deref(), &parts.uri)?;
        }
        parts.version = if route.h2c {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if !http1 && !route.h2c {
            forward::join_cookies(&mut parts.headers);
        }
        if route.h2c {
            parts.headers.remove(HOST);
        } else if host_header.is_none() || has_authority {
            if let Some(h) = host {
                parts.headers.insert(HOST, h);
            }
        }
        // A request that came without a body goes without one: no wrapper, no box.
        let body = match &seen.body {
            None => UpstreamRequestBody::Empty,
            Some(progress) => UpstreamRequestBody::Streaming(
                LimitedBody::new(body, self.max_body_bytes, Arc::clone(progress)).boxed(),
            ),
        };
        Ok(Prepared {
            req: Request::from_parts(parts, body),
            index,
            client_upgrade,
            upgrade,
            http1,
        })
    }

    /// Sends a prepared request and waits for the upstream's response head (at most until the
    /// sooner of `--upstream-response-timeout` and the request deadline); passes an upgrade
    /// through once the upstream has answered 101.
    #[allow(clippy::type_complexity)]
    async fn forward(
        &self,
        conn: &ClientConn,
        prepared: Prepared,
        seen: &Seen,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Response<UpstreamBody>, Option<Duration>), (StatusCode, &'static str)> {
        let Prepared {
            req: upstream_req,
            index,
            client_upgrade,
            upgrade,
            http1,
        } = prepared;
        let route = self.routes.get(index);
        // The clock is read once per request (its arrival); the upstream's own time only when
        // the access log wants it.
        let sent = self.access_log.enabled().then(Instant::now);
        let head_deadline =
            tokio::time::Instant::from_std(seen.start) + self.upstream_response_timeout;
        let wait_until = deadline.map_or(head_deadline, |d| d.min(head_deadline));
        // A route to an HTTP/1.1 upstream over TCP (the usual sidecar's) goes to the pool
        // straight; the others through hyper-util's clients, boxed, so that their code and
        // state stay out of the usual path.
        let waited = match self.pool_slots.get(index).and_then(Option::as_ref) {
            Some(slot) => {
                let send = self.clients.pool().send(slot, upstream_req, seen.start);
                head_within(conn, http1, wait_until, send).await.map(|r| {
                    r.map(|resp| resp.map(UpstreamBody::Pooled))
                        .map_err(SendError::Pool)
                })
            }
            None => {
                let send = Box::pin(self.clients.send(
                    &route.upstream,
                    route.h2c,
                    upstream_req,
                    seen.start,
                ));
                head_within(conn, http1, wait_until, send).await
            }
        };
        let response = match waited {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.upstream_failed(route, &e)),
            // The request deadline came first: whoever is slow gets the blame.
            Err(_) if deadline.is_some_and(|d| d <= head_deadline) => {
                return Err(request_timed_out(seen))
            }
            Err(_) => {
                return Err((
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream did not answer in time\n",
                ))
            }
        };
        // RFC 9110 section 15: every valid status code is within 100 to 599; hyper reads any
        // three digits. An answer outside is the upstream's fault, not something to pass on.
        if response.status().as_u16() > 599 {
            return Err(invalid_status(route, response.status()));
        }
        let upstream_time = sent.map(|t| t.elapsed());
        let mut response = response;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            if let Some(client_side) = client_upgrade {
                self.pass_upgrade(conn, client_side, &mut response);
            }
        }
        let (mut parts, body) = response.into_parts();
        forward::remove_hop_by_hop(&mut parts.headers, switching && upgrade);
        if let Some(id) = &seen.request_id {
            parts.headers.insert(forward::X_REQUEST_ID, id.clone());
        }
        Ok((Response::from_parts(parts, body), upstream_time))
    }

    /// Whether an absolute-form target's host is one of the host routes'.
    #[cold]
    #[inline(never)]
    fn names_a_host_route(&self, authority: &http::uri::Authority) -> bool {
        let host = authority.host();
        self.routes.iter().any(|r| {
            r.host
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        })
    }

    /// The answer to a request its upstream failed (no response head), and the metric and the
    /// debug line it is counted by. Out of line, as every rare path of the per-request code (see
    /// `forward::names_others`).
    #[cold]
    #[inline(never)]
    fn upstream_failed(&self, route: &Route, e: &SendError) -> (StatusCode, &'static str) {
        if e.is_connect() {
            self.metrics.upstream_connect_errors.inc();
        }
        tracing::debug!(upstream = %route.upstream, error = %e, "upstream request failed");
        if e.body_error().is_some_and(|s| s.is::<BodyTooLarge>()) {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        (StatusCode::BAD_GATEWAY, "upstream unavailable\n")
    }

    /// Joins the client's side of an upgrade to the upstream's once the upstream answered 101,
    /// and copies both ways until either side ends, the tunnel is idle for `--idle-timeout`, or
    /// the drain closes it at `--drain-timeout`.
    #[cold]
    #[inline(never)]
    fn pass_upgrade(
        &self,
        conn: &ClientConn,
        client_side: hyper::upgrade::OnUpgrade,
        response: &mut Response<UpstreamBody>,
    ) {
        let upstream_side = hyper::upgrade::on(response);
        let (activity, idle) = (Arc::clone(&conn.activity), self.idle_timeout);
        let mut tunnel = self.tunnels.open();
        // A tunnel is still one of the client connections `--max-connections` counts.
        let permit = conn.take_permit();
        tokio::spawn(async move {
            if let (Ok(c), Ok(u)) = (client_side.await, upstream_side.await) {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                // The client side still counts its bytes on the connection's activity.
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                    _ = activity.idle(idle) => {
                        tracing::debug!("closing an upgraded connection idle for {}", podkit_runtime::units::format_duration(idle));
                    }
                    () = tunnel.closed() => {}
                }
            }
            drop((tunnel, permit));
        });
    }

    /// Counts an answered request, and gives what logs it once its body is done.
    fn answered(
        &self,
        seen: &mut Seen,
        status: u16,
        upstream_time: Option<Duration>,
    ) -> Option<OnEnd> {
        let metrics = seen
            .route
            .and_then(|i| self.route_metrics.get(i))
            .or(self.route_metrics.last());
        if let Some(m) = metrics {
            m.request(status, seen.start.elapsed());
        }
        // Checked here, so that without a log nothing is taken from `seen` for nothing.
        if self.access_log.enabled() {
            self.access_log_entry(seen, status, upstream_time)
        } else {
            None
        }
    }

    /// Counts and logs a request whose client left before its answer (see `Pending`).
    #[cold]
    #[inline(never)]
    fn abandoned(&self, seen: &mut Seen) {
        if let Some(log) = self.answered(seen, CLIENT_CLOSED, None) {
            log(0);
        }
    }

    /// What the access log writes once the response is done (None when it is off).
    fn access_log_entry(
        &self,
        seen: &mut Seen,
        status: u16,
        upstream_time: Option<Duration>,
    ) -> Option<OnEnd> {
        if !self.access_log.enabled() {
            return None;
        }
        // What the line needs, taken from `seen` (which is not used after).
        let seen = Seen {
            method: std::mem::replace(&mut seen.method, Method::GET),
            path: std::mem::take(&mut seen.path),
            query: seen.query.take(),
            request_id: seen.request_id.take(),
            host: seen.host.take(),
            user_agent: seen.user_agent.take(),
            referer: seen.referer.take(),
            body: seen.body.take(),
            ..*seen
        };
        let log = self.access_log.clone();
        // The upstream is named only for requests that were sent to one.
        let upstream = upstream_time
            .and(seen.route)
            .map(|i| self.routes.get(i).upstream.to_string());
        let text =
            |v: Option<HeaderValue>| v.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Some(Box::new(move |bytes_out| {
            log.log(&Entry {
                start_nanos: seen.start_nanos,
                client: seen.client.ip().to_string(),
                method: seen.method.to_string(),
                path: seen.path,
                query: seen.query,
                protocol: seen.protocol.to_string(),
                status,
                bytes_in: seen
                    .body
                    .as_ref()
                    .map_or(0, |b| b.bytes.load(Ordering::Relaxed)),
                bytes_out,
                duration: seen.start.elapsed(),
                upstream,
                upstream_time,
                request_id: text(seen.request_id).unwrap_or_default(),
                host: text(seen.host),
                user_agent: text(seen.user_agent),
                referer: text(seen.referer),
            })
        }))
    }
}

/// Waits for `send` (an upstream's response head) until `wait_until`: on the connection's timer
/// for HTTP/1 (see `HeadTimer`), on a timer of its own for an HTTP/2 stream. Err when the time
/// came first.
async fn head_within<T>(
    conn: &ClientConn,
    http1: bool,
    wait_until: tokio::time::Instant,
    send: impl Future<Output = T>,
) -> Result<T, ()> {
    if http1 {
        conn.head_timer.set(wait_until);
        tokio::select! {
            biased;
            r = send => Ok(r),
            () = std::future::poll_fn(|cx| conn.head_timer.poll_elapsed(cx)) => Err(()),
        }
    } else {
        tokio::time::timeout_at(wait_until, send)
            .await
            .map_err(|_| ())
    }
}

/// Host, the first X-Request-Id and how many came, read from headers that Connection named
/// others in (and those are gone).
#[cold]
#[inline(never)]
fn looked_up_again(headers: &http::HeaderMap) -> (Option<HeaderValue>, Option<HeaderValue>, usize) {
    let ids = headers.get_all(forward::X_REQUEST_ID).iter().count();
    (
        headers.get(HOST).cloned(),
        headers.get(forward::X_REQUEST_ID).cloned(),
        ids,
    )
}

/// The upstream's request target for a request the route or normalizing changed, or that goes
/// to hyper-util's client (h2c, unix sockets), which takes an absolute URI: the route's path for
/// the (normalized, when `rewritten`) path, and the query as it came.
#[inline(never)]
fn upstream_target(
    route: &Route,
    rewritten: Option<&str>,
    uri: &http::Uri,
) -> Result<http::Uri, (StatusCode, &'static str)> {
    let path = rewritten.unwrap_or(uri.path());
    let mut path_and_query = route.upstream_path(path);
    if let Some(q) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    request_uri(&route.upstream, route.h2c, path_and_query)
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad request target\n"))
}

/// Says `Connection: close` in an HTTP/1 answer given while draining.
#[cold]
#[inline(never)]
fn close_after<B>(resp: &mut Response<B>) {
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
}

/// The answer to an upstream response whose status is above 599: a 502, and a warning that
/// names the upstream and the status, since the fault is the app's.
#[cold]
#[inline(never)]
fn invalid_status(route: &Route, status: StatusCode) -> (StatusCode, &'static str) {
    tracing::warn!(
        upstream = %route.upstream,
        status = status.as_u16(),
        "upstream answered a status outside 100-599 (RFC 9110 section 15); answering 502"
    );
    (
        StatusCode::BAD_GATEWAY,
        "upstream answered an invalid status\n",
    )
}

/// The answer when the request deadline came before the upstream's response head: whoever is
/// slow gets the blame, the client still sending (408) or the upstream not answering (504).
#[cold]
#[inline(never)]
fn request_timed_out(seen: &Seen) -> (StatusCode, &'static str) {
    let ended = seen
        .body
        .as_ref()
        .is_none_or(|b| b.ended.load(Ordering::SeqCst));
    if ended {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "the request took longer than --request-timeout\n",
        )
    } else {
        (
            StatusCode::REQUEST_TIMEOUT,
            "the request took longer than --request-timeout\n",
        )
    }
}

/// Whether a Host value names the same host and port as an authority (hosts compared without
/// regard to case, a missing port read as `default_port`). A Host that is no authority names
/// nothing the same.
#[inline(never)]
fn same_entity(authority: &http::uri::Authority, host: &HeaderValue, default_port: u16) -> bool {
    match http::uri::Authority::try_from(host.as_bytes()) {
        Ok(h) => {
            h.host().eq_ignore_ascii_case(authority.host())
                && h.port_u16().unwrap_or(default_port)
                    == authority.port_u16().unwrap_or(default_port)
        }
        Err(_) => false,
    }
}

/// The protocol as the access log names it.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

#[cold]
#[inline(never)]
fn error_response(
    status: StatusCode,
    why: &'static str,
    request_id: Option<&HeaderValue>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(why.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(id) = request_id {
        resp.headers_mut().insert(forward::X_REQUEST_ID, id.clone());
    }
    resp
}

/// The id of a request refused before it was shaped for its upstream (which is where an id is
/// given): the client's if sane, else a new one.
#[cold]
#[inline(never)]
fn refused_id(seen: &mut Seen, incoming: Option<HeaderValue>) {
    if seen.request_id.is_none() {
        let mut scratch = http::HeaderMap::new();
        seen.request_id = Some(forward::request_id(&mut scratch, incoming.as_ref(), 1));
    }
}

/// The error a request body longer than `--max-body-bytes` ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than --max-body-bytes")]
pub struct BodyTooLarge;

/// A request body that fails once more than `max` bytes have passed, and says when it ended.
struct LimitedBody {
    inner: Incoming,
    left: u64,
    progress: Arc<BodyProgress>,
}

impl LimitedBody {
    fn new(inner: Incoming, max: u64, progress: Arc<BodyProgress>) -> LimitedBody {
        LimitedBody {
            inner,
            left: max,
            progress,
        }
    }
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.left -= n;
                    self.progress.bytes.fetch_add(n, Ordering::Relaxed);
                }
                // hyper's clients stop polling a body once it says it has ended (the last byte
                // of a Content-Length, HTTP/2's END_STREAM), so the end is noted here too: it
                // never comes as `None` for those.
                if self.inner.is_end_stream() {
                    self.progress.ended.store(true, Ordering::SeqCst);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                self.progress.ended.store(true, Ordering::SeqCst);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a response body cut by `--request-timeout` ends with.
#[derive(Debug, thiserror::Error)]
#[error("the response took longer than --request-timeout")]
pub struct ResponseTimedOut;

type OnEnd = Box<dyn FnOnce(u64) + Send + Sync>;

/// The response as sent to the client, in one wrapper: it holds the request's place in the
/// connection's in-flight count until the body is done, cuts the body at the request deadline,
/// and counts the bytes for the access log, which it writes once, when the body ends or is
/// dropped.
fn finish_response(
    resp: Response<Reply>,
    in_flight: InFlight,
    deadline: Option<tokio::time::Instant>,
    on_end: Option<OnEnd>,
) -> Response<ResponseBody> {
    let (parts, body) = resp.into_parts();
    let wrapped = ResponseBody {
        inner: body,
        bytes: 0,
        on_end,
        _in_flight: in_flight,
        deadline,
        timer: None,
    };
    Response::from_parts(parts, wrapped)
}

/// What a response carries: the upstream's body, or podproxy's own short answer.
pub enum Reply {
    Upstream(UpstreamBody),
    Fixed(Full<Bytes>),
}

impl Reply {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Reply::Upstream(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            Reply::Fixed(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| match e {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Upstream(b) => b.is_end_stream(),
            Reply::Fixed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Upstream(b) => b.size_hint(),
            Reply::Fixed(b) => b.size_hint(),
        }
    }
}

pub struct ResponseBody {
    inner: Reply,
    bytes: u64,
    on_end: Option<OnEnd>,
    _in_flight: InFlight,
    deadline: Option<tokio::time::Instant>,
    /// Made from `deadline` the first time the body has nothing to give.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {
                if let Some(at) = self.deadline {
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if timer.as_mut().poll(cx).is_ready() {
                        self.deadline = None;
                        self.timer = None;
                        tracing::debug!("cutting a response at --request-timeout");
                        self.finish();
                        return Poll::Ready(Some(Err(Box::new(ResponseTimedOut))));
                    }
                }
            }
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

impl ResponseBody {
    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}
