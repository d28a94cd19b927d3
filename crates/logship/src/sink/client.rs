//! The HTTP client of the HTTP-based sinks: hyper-util's pooled client over hyper-rustls, with
//! `--request-timeout` over the whole exchange (connect, send, the full answer) and errors
//! sorted into [`Failure`]s.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::delivery::{Failure, NetSettings};

/// The most of an answer's body read (an Elasticsearch bulk answer for 10 000 items is a few MiB).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How long a pooled connection may sit idle; below the usual server keep-alive (Go's and
/// nginx's are longer), so logship closes first.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(net: &NetSettings) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(net.connect_timeout));
        http.set_nodelay(true);
        // hyper-rustls sets ALPN itself (http/1.1 here) and refuses a config that has some.
        let mut tls = (*net.tls).clone();
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(net.max_in_flight.max(1))
            .build(https);
        HttpClient {
            inner,
            timeout: net.request_timeout,
        }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| Failure::Connect(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::Connect(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }
}

/// An error with its causes, `a: b: c`, so "connection refused" shows under hyper's wrapper.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
