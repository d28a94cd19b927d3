//! Loki's push API: `POST /loki/api/v1/push` with a JSON body (Grafana Loki HTTP API reference,
//! "Ingest logs"):
//!
//! ```json
//! {"streams": [{"stream": {"label": "value"}, "values": [["<unix ns as a string>", "<line>"]]}]}
//! ```
//!
//! Streams are grouped by label set. The labels are logship's `--label`s and the Downward API
//! (pod, namespace, node, container): one label set per logship, never a label per line, which
//! keeps Loki's stream count (its cardinality) low. Each line is the message as it was read; the
//! file it came from is not a label (a rotated file would start a new stream), and not structured
//! metadata either, which Loki refuses where it is disabled. `--loki-tenant` is sent as
//! `X-Scope-OrgID`. Loki answers 204 on success, 429 when rate-limited, 400 for entries it refuses.

use std::sync::{Mutex, PoisonError};

use ::http::{HeaderName, HeaderValue};

use super::delivery::NetSettings;
use super::http::{Payload, Protocol};
use crate::batch::{write_json_str, Batch};

pub struct Loki {
    /// `{"streams":[{"stream":{...},"values":[` with the labels serialized once.
    head: Vec<u8>,
    tenant: Option<HeaderValue>,
    /// The last timestamp given. Every line of a read chunk was read at the same instant, and
    /// Loki drops an entry with the same stream, timestamp and line as one it has (a repeated
    /// line such as `}` or a health-check log), so timestamps are made strictly increasing.
    last: Mutex<i64>,
}

/// Whether `name` is a valid Loki (Prometheus) label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Loki {
    pub fn new(net: &NetSettings) -> Loki {
        let mut stream = serde_json::Map::new();
        for (k, v) in &net.labels {
            stream.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        if stream.is_empty() {
            // Loki refuses a stream without labels.
            stream.insert("job".into(), serde_json::Value::String("logship".into()));
        }
        let mut head = b"{\"streams\":[{\"stream\":".to_vec();
        let _ = serde_json::to_writer(&mut head, &stream);
        head.extend_from_slice(b",\"values\":[");
        Loki {
            head,
            tenant: net.loki_tenant.clone(),
            last: Mutex::new(0),
        }
    }
}

impl Protocol for Loki {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.tenant
            .iter()
            .map(|t| (HeaderName::from_static("x-scope-orgid"), t.clone()))
            .collect()
    }

    fn encode(&self, batch: &Batch) -> Payload {
        let mut body =
            Vec::with_capacity(self.head.len() + batch.bytes() * 5 / 4 + batch.len() * 64);
        body.extend_from_slice(&self.head);
        // Batches may be encoded concurrently: the timestamps are handed out under the lock.
        let stamps: Vec<i64> = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            batch
                .events
                .iter()
                .map(|e| {
                    *last = (*last + 1).max(e.read_at);
                    *last
                })
                .collect()
        };
        for (i, (e, ts)) in batch.events.iter().zip(stamps).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"[\"");
            body.extend_from_slice(ts.to_string().as_bytes());
            body.extend_from_slice(b"\",");
            write_json_str(&mut body, &batch.text(e));
            body.push(b']');
        }
        body.extend_from_slice(b"]}]}");
        Payload {
            body: body.into(),
            items: Vec::new(),
            events: batch.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names() {
        assert!(valid_label_name("pod"));
        assert!(valid_label_name("_app_1"));
        assert!(!valid_label_name("app.kubernetes.io/name"));
        assert!(!valid_label_name("1app"));
        assert!(!valid_label_name(""));
    }
}
