//! http:// and https:// targets: one GET on a fresh connection (no pooling: every attempt sees
//! the server as a new client would), ready when the status is accepted (2xx by default) and the
//! body and headers match what was asked. Redirects are not followed: a 3xx is an answer like any
//! other, accepted only if `--http-status` lists it.

use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use regex::Regex;

use super::{tcp, ProbeError, ProbeSettings};
use crate::target::HostPort;

/// The most of a response body read to match `--http-body` against.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Accepted status codes, e.g. `200,301-302`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(pub Vec<RangeInclusive<u16>>);

impl Default for StatusRanges {
    fn default() -> Self {
        StatusRanges(vec![200..=299])
    }
}

impl StatusRanges {
    /// Parses `200`, `200,204`, `200-299,301`.
    pub fn parse(s: &str) -> Result<StatusRanges, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let code = |c: &str| -> Result<u16, String> {
                match c.trim().parse::<u16>() {
                    Ok(n) if (100..=599).contains(&n) => Ok(n),
                    _ => Err(format!("{c:?} is not an HTTP status code (100-599)")),
                }
            };
            let (lo, hi) = (code(lo)?, code(hi)?);
            if lo > hi {
                return Err(format!("range {part:?} is backwards"));
            }
            ranges.push(lo..=hi);
        }
        if ranges.is_empty() {
            return Err("no status codes given, e.g. 200,301-302".into());
        }
        Ok(StatusRanges(ranges))
    }

    pub fn accepts(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// What an HTTP answer must look like to count as ready, and what the request carries.
#[derive(Debug, Clone, Default)]
pub struct HttpExpectations {
    pub status: StatusRanges,
    pub body: Option<Regex>,
    /// Response headers that must be present; with a value, with exactly that value.
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Extra request headers (e.g. Host, Authorization).
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Parses `Name: value` (or `Name` alone when `value_optional`) into a header pair.
pub fn parse_header(
    s: &str,
    value_optional: bool,
) -> Result<(HeaderName, Option<HeaderValue>), String> {
    let (name, value) = match s.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None if value_optional => (s.trim(), None),
        None => return Err(format!("{s:?} is not 'Name: value'")),
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let value = value
        .map(|v| HeaderValue::from_str(v).map_err(|_| format!("{v:?} is not a valid header value")))
        .transpose()?;
    Ok((name, value))
}

pub async fn check(
    url: &http::Uri,
    addr: &HostPort,
    tls: bool,
    settings: &ProbeSettings,
) -> Result<String, ProbeError> {
    let stream = tcp::connect(addr).await?;
    if tls {
        let config = settings
            .tls
            .clone()
            .ok_or_else(|| ProbeError::Tls("no TLS configuration".into()))?;
        let server_name = rustls_pki_types::ServerName::try_from(addr.host.clone())
            .map_err(|e| ProbeError::Tls(format!("{}: {e}", addr.host)))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(server_name, stream)
            .await
            .map_err(|e| ProbeError::Tls(tls_reason(&e)))?;
        exchange(url, addr, stream, &settings.http).await
    } else {
        exchange(url, addr, stream, &settings.http).await
    }
}

fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

async fn exchange<S>(
    url: &http::Uri,
    addr: &HostPort,
    stream: S,
    expect: &HttpExpectations,
) -> Result<String, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProbeError::Io(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut builder = Request::get(path)
        // RFC 9110 7.2: Host is the authority as the URL gives it.
        .header(
            http::header::HOST,
            url.authority()
                .map(|a| a.as_str())
                .unwrap_or(addr.host.as_str()),
        )
        .header(
            http::header::USER_AGENT,
            concat!("waitfor/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close");
    for (name, value) in &expect.request_headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Io(format!("cannot build request: {e}")))?;
    let response = sender.send_request(request).await.map_err(|e| {
        if e.is_incomplete_message() {
            ProbeError::Io("connection closed before a response arrived".into())
        } else {
            ProbeError::Io(e.to_string())
        }
    });
    let result = match response {
        Ok(response) => judge(response, expect).await,
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

async fn judge(
    response: http::Response<hyper::body::Incoming>,
    expect: &HttpExpectations,
) -> Result<String, ProbeError> {
    let status = response.status();
    if !expect.status.accepts(status.as_u16()) {
        return Err(ProbeError::Http(status.to_string()));
    }
    for (name, value) in &expect.headers {
        let got: Vec<&HeaderValue> = response.headers().get_all(name).iter().collect();
        match value {
            None if got.is_empty() => {
                return Err(ProbeError::Http(format!("{status}, header {name} missing")))
            }
            Some(want) if !got.contains(&want) => {
                let seen = got
                    .first()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_else(|| "missing".into());
                return Err(ProbeError::Http(format!(
                    "{status}, header {name} is {seen:?}, want {:?}",
                    String::from_utf8_lossy(want.as_bytes())
                )));
            }
            _ => {}
        }
    }
    if let Some(pattern) = &expect.body {
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ProbeError::Io(format!("reading body: {e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        if !pattern.is_match(&text) {
            return Err(ProbeError::Http(format!(
                "{status}, body does not match /{pattern}/"
            )));
        }
    }
    Ok(format!("HTTP {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse_lists_and_ranges() {
        let r = StatusRanges::parse("200,301-302").expect("valid");
        assert!(r.accepts(200) && r.accepts(301) && r.accepts(302));
        assert!(!r.accepts(201) && !r.accepts(303));
        assert!(StatusRanges::default().accepts(204));
        assert!(StatusRanges::parse("abc").is_err());
        assert!(StatusRanges::parse("302-301").is_err());
        assert!(StatusRanges::parse("99").is_err());
        assert!(StatusRanges::parse("").is_err());
    }

    #[test]
    fn headers_parse_with_and_without_values() {
        let (n, v) = parse_header("X-Ready: yes", false).expect("valid");
        assert_eq!(n.as_str(), "x-ready");
        assert_eq!(v.as_ref().map(|v| v.as_bytes()), Some(&b"yes"[..]));
        assert!(parse_header("X-Ready", true).expect("valid").1.is_none());
        assert!(parse_header("X-Ready", false).is_err());
        assert!(parse_header("bad name: x", false).is_err());
    }
}
