//! The HTTP-based sinks. One engine ([`HttpSink`]) does what they share: up to
//! `--max-in-flight` batches at once (the reader waits beyond that: backpressure), gzip,
//! credentials and headers, retries with backoff for what is worth retrying (connection errors,
//! timeouts, 408, 429, 5xx but 501 and 505; Retry-After honoured), the dead-letter file for what a
//! receiver refuses for good, metrics, and reachability for `/readyz`. A batch is acknowledged
//! once its receiver has taken every event or refused some for good; retries go on until then
//! (or until the drain deadline: what was not acknowledged is shipped again after a restart).
//!
//! Each protocol ([`Protocol`]) only encodes a batch and reads a successful answer: plain NDJSON
//! here, and [`super::loki`], [`super::elasticsearch`], [`super::otlp`].

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use ::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use ::http::{HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc::Receiver;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{Answer, HttpClient};
use super::delivery::{
    retry_after, retryable_status, Backoff, Compression, Failure, NetSettings, SinkStats,
};
use super::{HttpKind, SinkContext, SinkError};
use crate::batch::{Batch, Encoder, Output};

/// What a protocol makes of a batch.
#[derive(Debug, Default)]
pub struct Payload {
    /// The uncompressed request body.
    pub body: Bytes,
    /// For protocols with per-item results (Elasticsearch): each item's bytes in `body` and the
    /// index of its event in the batch. Empty when the request succeeds or fails as a whole.
    pub items: Vec<Item>,
    /// How many events the body carries.
    pub events: usize,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub range: Range<usize>,
    pub event: usize,
}

impl Payload {
    /// A payload with only the items at `keep` (indices into `items`).
    pub fn subset(&self, keep: &[usize]) -> Payload {
        let mut body = Vec::new();
        let mut items = Vec::with_capacity(keep.len());
        for &i in keep {
            if let Some(item) = self.items.get(i) {
                let start = body.len();
                body.extend_from_slice(&self.body[item.range.clone()]);
                items.push(Item {
                    range: start..body.len(),
                    event: item.event,
                });
            }
        }
        Payload {
            body: body.into(),
            events: items.len(),
            items,
        }
    }

    /// The batch indices of the events in this payload.
    fn event_indices(&self, batch: &Batch) -> Vec<usize> {
        if self.items.is_empty() {
            (0..batch.len()).collect()
        } else {
            self.items.iter().map(|i| i.event).collect()
        }
    }
}

/// What a successful (2xx) answer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every event taken.
    Accepted,
    /// Taken, but the receiver dropped `rejected` events and says not to send them again (OTLP
    /// partial success).
    Dropped { rejected: u64, message: String },
    /// Per-item results: send the items at `retry` again; those at `rejected` are refused for good
    /// (index into the payload's items, status, reason).
    Items {
        retry: Vec<usize>,
        rejected: Vec<(usize, u16, String)>,
    },
    /// A 2xx answer that does not say what happened (not the API's answer: a proxy's page, say):
    /// sent again, as nothing proves the events were taken.
    Unreadable(String),
}

/// One HTTP-based protocol.
pub trait Protocol: Send + Sync + 'static {
    fn content_type(&self) -> &'static str;
    /// Headers the protocol adds to every request.
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        Vec::new()
    }
    fn encode(&self, batch: &Batch) -> Payload;
    /// Whether an answer with this status is worth sending again.
    fn retryable(&self, status: u16) -> bool {
        retryable_status(status)
    }
    /// Reads a 2xx answer.
    fn verdict(&self, _answer: &Answer, _payload: &Payload) -> Verdict {
        Verdict::Accepted
    }
}

/// Plain NDJSON: one JSON record per event (timestamp, file, message, labels, fields).
pub struct Ndjson {
    encoder: Encoder,
}

impl Protocol for Ndjson {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn encode(&self, batch: &Batch) -> Payload {
        let mut body = Vec::new();
        self.encoder.encode_json(batch, 0..batch.len(), &mut body);
        Payload {
            body: body.into(),
            items: Vec::new(),
            events: batch.len(),
        }
    }
}

pub struct HttpSink {
    shared: Arc<Shared>,
}

struct Shared {
    protocol: Box<dyn Protocol>,
    endpoint: Uri,
    client: HttpClient,
    net: Arc<NetSettings>,
    stats: SinkStats,
    json: Encoder,
    headers: Vec<(HeaderName, HeaderValue)>,
    in_flight: Arc<AtomicUsize>,
}

impl HttpSink {
    pub fn new(
        kind: &HttpKind,
        endpoint: &Uri,
        name: &str,
        ctx: &SinkContext,
    ) -> Result<HttpSink, SinkError> {
        let net = &ctx.net;
        let protocol: Box<dyn Protocol> = match kind {
            HttpKind::Ndjson => Box::new(Ndjson {
                encoder: Encoder::new(Output::Json, &net.labels),
            }),
            HttpKind::Loki => Box::new(super::loki::Loki::new(net)),
            HttpKind::Elasticsearch { index } => Box::new(
                super::elasticsearch::Elasticsearch::new(index, net.es_action, &net.labels),
            ),
            HttpKind::Otlp => Box::new(super::otlp::Otlp::new(net.otlp_encoding, &net.labels)),
        };
        let mut headers = vec![(
            USER_AGENT,
            HeaderValue::from_static(concat!("logship/", env!("CARGO_PKG_VERSION"))),
        )];
        headers.extend(protocol.headers());
        headers.extend(net.headers.iter().cloned());
        Ok(HttpSink {
            shared: Arc::new(Shared {
                protocol,
                endpoint: endpoint.clone(),
                client: HttpClient::new(net),
                net: Arc::clone(net),
                stats: SinkStats::new(name, Arc::clone(&ctx.metrics), ctx.health.clone()),
                json: Encoder::new(Output::Json, &net.labels),
                headers,
                in_flight: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    pub async fn run(
        self,
        mut rx: Receiver<Arc<Batch>>,
        ctx: SinkContext,
    ) -> Result<(), SinkError> {
        let shared = self.shared;
        let probe = super::delivery::spawn_probe(
            shared.stats.clone(),
            endpoint_addr(&shared.endpoint),
            shared.net.connect_timeout,
            Arc::clone(&shared.in_flight),
        );
        let slots = Arc::new(Semaphore::new(shared.net.max_in_flight));
        let mut tasks = JoinSet::new();
        // A delivery that panicked never acknowledged its batch: every later position would wait
        // on it forever, so the sink fails (logship exits 1 and restarts from its checkpoint).
        let failed = |e: tokio::task::JoinError| SinkError::Failed {
            sink: shared.stats.name.clone(),
            reason: format!("a delivery task failed: {e}"),
        };
        while let Some(batch) = rx.recv().await {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            while let Some(done) = tasks.try_join_next() {
                done.map_err(failed)?;
            }
            let shared = Arc::clone(&shared);
            let acks = Arc::clone(&ctx.acks);
            tasks.spawn(async move {
                shared.deliver(&batch).await;
                acks.ack(batch.seq);
                drop(permit);
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                probe.abort();
                return Err(failed(e));
            }
        }
        probe.abort();
        Ok(())
    }
}

/// host:port of an http(s) URI, for the reachability probe.
fn endpoint_addr(uri: &Uri) -> (String, u16) {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    (host, uri.port_u16().unwrap_or(default))
}

impl Shared {
    /// Delivers one batch: returns once every event is taken or refused for good.
    async fn deliver(self: &Arc<Self>, batch: &Arc<Batch>) {
        if batch.events.is_empty() {
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.stats.in_flight(1);
        self.deliver_events(batch).await;
        self.stats.in_flight(-1);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sends `batch` until every event is taken or refused for good. A batch the receiver
    /// finds too large (413) is sent again as two halves, one after the other, each halved
    /// again if need be; only a single event too large is refused.
    fn deliver_events<'a>(
        self: &'a Arc<Self>,
        batch: &'a Batch,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.send_until_done(batch))
    }

    async fn send_until_done(self: &Arc<Self>, batch: &Batch) {
        // Encoding and compression run here, on the runtime's workers (a few milliseconds a
        // batch), not on the blocking pool: its many threads would each keep a malloc arena of
        // freed batch buffers, which showed as RSS several times the in-flight bound.
        let mut payload = self.protocol.encode(batch);
        let mut backoff = Backoff::new(self.net.retry_initial, self.net.retry_max);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (body, wire) = self.body(&payload);
            let failure = match self.client.send(self.request(body, wire)).await {
                Err(f) => f,
                Ok(answer) if answer.status.is_success() => {
                    self.stats.set_up(true);
                    match self.protocol.verdict(&answer, &payload) {
                        Verdict::Accepted => {
                            self.stats.sent(wire, payload.events);
                            break;
                        }
                        Verdict::Dropped { rejected, message } => {
                            self.stats
                                .sent(wire, payload.events.saturating_sub(rejected as usize));
                            self.stats.failed("partial_success");
                            self.stats.rejected(rejected as usize);
                            tracing::warn!(sink = %self.stats.name, rejected, message = %message,
                                "sink {}: the receiver dropped {rejected} of {} events: {message}", self.stats.name, payload.events);
                            break;
                        }
                        Verdict::Unreadable(why) => Failure::BadAnswer(why),
                        Verdict::Items { retry, rejected } => {
                            self.stats.sent(
                                wire,
                                payload
                                    .events
                                    .saturating_sub(retry.len())
                                    .saturating_sub(rejected.len()),
                            );
                            if !rejected.is_empty() {
                                self.refused_items(batch, &payload, &rejected);
                            }
                            if retry.is_empty() {
                                break;
                            }
                            tracing::warn!(sink = %self.stats.name, retry = retry.len(), attempt,
                                "sink {}: {} of {} items were not taken for now; sending them again", self.stats.name, retry.len(), payload.events);
                            payload = payload.subset(&retry);
                            self.stats.retried();
                            tokio::time::sleep(backoff.delay(None)).await;
                            continue;
                        }
                    }
                }
                Ok(answer) if answer.status.is_redirection() => Failure::Redirect(
                    answer.status.as_u16(),
                    answer
                        .headers
                        .get(::http::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("nowhere")
                        .to_string(),
                ),
                Ok(answer)
                    if answer.status == ::http::StatusCode::PAYLOAD_TOO_LARGE
                        && payload.events > 1 =>
                {
                    self.stats.set_up(true);
                    self.stats.failed("status_413_split");
                    let indices = payload.event_indices(batch);
                    let (first, second) = indices.split_at(indices.len() / 2);
                    tracing::warn!(sink = %self.stats.name, events = indices.len(),
                        "sink {}: the receiver found {} events too large (413); sending them in two halves (lower --batch-max-bytes or --batch-max-lines to avoid this)",
                        self.stats.name, indices.len());
                    let (first, second) = (batch.select(first), batch.select(second));
                    self.deliver_events(&first).await;
                    self.deliver_events(&second).await;
                    break;
                }
                Ok(answer) if answer.status.as_u16() > 599 => {
                    Failure::InvalidStatus(answer.status.as_u16())
                }
                Ok(answer) if self.protocol.retryable(answer.status.as_u16()) => Failure::Status(
                    answer.status.as_u16(),
                    answer
                        .headers
                        .get(::http::header::RETRY_AFTER)
                        .and_then(|v| retry_after(v, SystemTime::now())),
                ),
                Ok(answer) => {
                    // Refused for good: sending it again would get the same answer.
                    self.stats.set_up(true);
                    self.refused_whole(batch, &payload, &answer);
                    break;
                }
            };
            self.stats.failed(failure.reason());
            self.stats.set_up(false);
            let server_delay = match &failure {
                Failure::Status(_, d) => *d,
                _ => None,
            };
            let delay = backoff.delay(server_delay);
            tracing::warn!(sink = %self.stats.name, attempt, error = %failure, retry_in = ?delay,
                "sink {}: {failure}; trying again in {} (attempt {attempt})", self.stats.name,
                podkit_runtime::units::format_duration(delay));
            self.stats.retried();
            tokio::time::sleep(delay).await;
        }
    }

    /// The body as sent, and its size on the wire.
    fn body(&self, payload: &Payload) -> (Bytes, usize) {
        match self.net.compression {
            Compression::None => (payload.body.clone(), payload.body.len()),
            Compression::Gzip => {
                let zipped = gzip(&payload.body);
                let n = zipped.len();
                (Bytes::from(zipped), n)
            }
        }
    }

    fn request(&self, body: Bytes, _wire: usize) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.endpoint.clone();
        let h = req.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(self.protocol.content_type()),
        );
        if self.net.compression == Compression::Gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(auth) = &self.net.auth {
            match auth.header() {
                Ok(v) => {
                    h.insert(AUTHORIZATION, v);
                }
                Err(e) => {
                    tracing::error!(sink = %self.stats.name, "sink {}: {e}", self.stats.name)
                }
            }
        }
        req
    }

    /// A non-retryable answer refused the whole payload.
    fn refused_whole(&self, batch: &Batch, payload: &Payload, answer: &Answer) {
        let status = answer.status.as_u16();
        let reason = String::from_utf8_lossy(&answer.body[..answer.body.len().min(512)])
            .trim()
            .replace('\n', " ");
        self.stats.failed("rejected");
        self.stats.rejected(payload.events);
        tracing::error!(sink = %self.stats.name, status, reason = %reason, events = payload.events,
            "sink {}: the receiver refused {} events with {status} (not retried{}): {reason}",
            self.stats.name, payload.events,
            if self.net.dead_letter.is_some() { "; written to --dead-letter-file" } else { "; set --dead-letter-file to keep them" });
        if let Some(dl) = &self.net.dead_letter {
            let mut records = Vec::new();
            self.json.encode_json(
                batch,
                payload.event_indices(batch).into_iter(),
                &mut records,
            );
            dl.write(&self.stats.name, Some(status), &reason, &records);
        }
    }

    /// Some items were refused for good.
    fn refused_items(&self, batch: &Batch, payload: &Payload, rejected: &[(usize, u16, String)]) {
        self.stats.failed("item_rejected");
        self.stats.rejected(rejected.len());
        let (_, status, reason) = &rejected[0];
        tracing::error!(sink = %self.stats.name, rejected = rejected.len(), status, reason = %reason,
            "sink {}: the receiver refused {} events (not retried), the first with {status}: {reason}",
            self.stats.name, rejected.len());
        if let Some(dl) = &self.net.dead_letter {
            for (item, status, reason) in rejected {
                if let Some(item) = payload.items.get(*item) {
                    let mut record = Vec::new();
                    self.json
                        .encode_json(batch, std::iter::once(item.event), &mut record);
                    dl.write(&self.stats.name, Some(*status), reason, &record);
                }
            }
        }
    }
}

/// gzip at the fastest level: logs compress well even there, and the CPU goes to shipping.
/// Writing into a Vec cannot fail.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8 + 64),
        flate2::Compression::fast(),
    );
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}
