//! A test receiver for logship's HTTP-based sinks: a real HTTP/1.1 server (hyper) on loopback that
//! records every request (body gunzipped when it says so) and answers from a script, then from a
//! reply function. It can be started late on a port held for it, stopped (every connection closed)
//! and started again, to play a receiver that is down, failing, or slow. The reply functions in
//! the tests follow each API's documented answer shapes (Loki's 204, Elasticsearch's bulk
//! answer with per-item statuses, OTLP's ExportLogsServiceResponse).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podkit_tests::ReservedPort;

/// A request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    /// The body, gunzipped when Content-Encoding says gzip.
    pub body: Vec<u8>,
    /// The body as it came on the wire.
    pub wire_len: usize,
    /// The status the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a [`Receiver`] recorded, readable from any thread.
#[derive(Clone)]
pub struct RequestLog(Arc<State>);

impl RequestLog {
    /// Whether an NDJSON record with this message was in a request answered 2xx.
    pub fn has_message(&self, message: &str) -> bool {
        self.0.messages.lock().expect("lock").contains(message)
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waits this long before answering (a slow receiver).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type ReplyFn = dyn Fn(&Received) -> Reply + Send + Sync;

struct State {
    requests: Mutex<Vec<Received>>,
    /// The `message` of every NDJSON record in a request answered 2xx.
    messages: Mutex<std::collections::HashSet<String>>,
    script: Mutex<VecDeque<Reply>>,
    reply: Mutex<Arc<ReplyFn>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The port, held while the receiver is down (see [`ReservedPort`]).
    held: Option<ReservedPort>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Receiver {
    /// A receiver on a free loopback port, answering `reply` to everything.
    pub fn start(reply: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Receiver {
        let mut r = Receiver::down(reply);
        r.resume();
        r
    }

    /// A receiver that is down (its port held, connections refused) until [`Receiver::resume`].
    pub fn down(reply: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Receiver {
        let held = ReservedPort::new();
        Receiver {
            addr: held.addr(),
            state: Arc::new(State {
                requests: Mutex::new(Vec::new()),
                messages: Mutex::new(Default::default()),
                script: Mutex::new(VecDeque::new()),
                reply: Mutex::new(Arc::new(reply)),
            }),
            runtime: None,
            held: Some(held),
            tls: None,
        }
    }

    /// A receiver that speaks HTTPS with `config` (which may ask for client certificates).
    pub fn start_tls(
        config: rustls::ServerConfig,
        reply: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let mut r = Receiver::down(reply);
        r.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        r.resume();
        r
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Answers these first, in order, then goes back to the reply function.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").extend(replies);
    }

    pub fn set_reply(&self, reply: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.state.reply.lock().expect("lock") = Arc::new(reply);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// A handle on what this receiver records, for other threads.
    pub fn log(&self) -> RequestLog {
        RequestLog(Arc::clone(&self.state))
    }

    /// Starts listening (again) on the same address.
    pub fn resume(&mut self) {
        assert!(self.runtime.is_none(), "already running");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::clone(&self.state);
        let addr = self.addr;
        let tls = self.tls.clone();
        let held = self.held.take().unwrap_or_else(|| ReservedPort::at(addr));
        let listener = held.listen();
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = {
            let _entered = rt.enter();
            tokio::net::TcpListener::from_std(listener).expect("listener")
        };
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (no client certificate, say) just ends here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        self.runtime = Some(rt);
    }

    /// Stops listening and closes every connection, as a receiver that went away.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
            // Down, not gone: the port stays this receiver's.
            self.held = Some(ReservedPort::at(self.addr));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let wire = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let gzip = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(wire.as_ref())
            .read_to_end(&mut out)
            .expect("a valid gzip body");
        out
    } else {
        wire.to_vec()
    };
    let received = Received {
        at: Instant::now(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        wire_len: wire.len(),
        status: 0,
    };
    let mut received = received;
    let scripted = state.script.lock().expect("lock").pop_front();
    let reply = match scripted {
        Some(r) => r,
        None => {
            let f = Arc::clone(&state.reply.lock().expect("lock"));
            f(&received)
        }
    };
    received.status = reply.status;
    if (200..300).contains(&reply.status) {
        let mut messages = state.messages.lock().expect("lock");
        for line in received.body.split(|b| *b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
                    messages.insert(m.to_string());
                }
            }
        }
    }
    state.requests.lock().expect("lock").push(received);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status).expect("status");
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    resp
}

/// The messages of every request answered 2xx, with `parse` reading a body into messages.
pub fn accepted(requests: &[Received], parse: impl Fn(&[u8]) -> Vec<String>) -> Vec<String> {
    requests
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .flat_map(|r| parse(&r.body))
        .collect()
}

/// The `message` of every NDJSON record in `body`.
pub fn ndjson_messages(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("an NDJSON record");
            v["message"].as_str().expect("message").to_string()
        })
        .collect()
}
