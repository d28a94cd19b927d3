//! Elasticsearch's bulk API: `POST /_bulk` with an NDJSON body, an action line and a document
//! line per event (Elasticsearch reference, "Bulk API"). The action is `create` by default, which
//! data streams require, or `index` (`--es-action`). Each document is
//!
//! ```json
//! {"@timestamp": "...", "message": "...", "log": {"file": {"path": "..."}}, "labels": {...}, "fields": {...}}
//! ```
//!
//! (`@timestamp` is what a data stream needs; `log.file.path` and `labels` are ECS names).
//! A 200 answer may still hold failed items: with `"errors": true`, `items[i]` answers the i-th
//! action with its own `status` and `error`. Items that failed with 429 or 5xx are sent again,
//! alone; the others (a mapping conflict, say) are refused for good: logged, counted and written
//! to `--dead-letter-file`, never retried forever.

use serde::Deserialize;

use super::client::Answer;
use super::delivery::{retryable_status, EsAction};
use super::http::{Item, Payload, Protocol, Verdict};
use crate::batch::{write_json_str, Batch, TimestampCache};

pub struct Elasticsearch {
    /// The action line, newline included.
    action: Vec<u8>,
    /// `,"labels":{...}` serialized once.
    labels: Vec<u8>,
}

impl Elasticsearch {
    pub fn new(index: &str, action: EsAction, labels: &[(String, String)]) -> Elasticsearch {
        let verb = match action {
            EsAction::Create => "create",
            EsAction::Index => "index",
        };
        let action = serde_json::json!({ verb: { "_index": index } });
        let mut action = action.to_string().into_bytes();
        action.push(b'\n');
        let map: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut l = b",\"labels\":".to_vec();
        let _ = serde_json::to_writer(&mut l, &map);
        Elasticsearch { action, labels: l }
    }
}

#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Protocol for Elasticsearch {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn encode(&self, batch: &Batch) -> Payload {
        let mut body = Vec::with_capacity(batch.bytes() * 2 + batch.len() * 160);
        let mut items = Vec::with_capacity(batch.len());
        let mut stamp = TimestampCache::default();
        for (i, e) in batch.events.iter().enumerate() {
            let start = body.len();
            body.extend_from_slice(&self.action);
            body.extend_from_slice(b"{\"@timestamp\":\"");
            body.extend_from_slice(stamp.format(e.read_at).as_bytes());
            body.extend_from_slice(b"\",\"message\":");
            write_json_str(&mut body, &batch.text(e));
            body.extend_from_slice(b",\"log\":{\"file\":{\"path\":");
            write_json_str(&mut body, batch.path(e));
            body.extend_from_slice(b"}}");
            body.extend_from_slice(&self.labels);
            if let Some(fields) = &e.fields {
                body.extend_from_slice(b",\"fields\":");
                let _ = serde_json::to_writer(&mut body, fields);
            }
            body.extend_from_slice(b"}\n");
            items.push(Item {
                range: start..body.len(),
                event: i,
            });
        }
        Payload {
            body: body.into(),
            items,
            events: batch.len(),
        }
    }

    fn verdict(&self, answer: &Answer, payload: &Payload) -> Verdict {
        let parsed: BulkAnswer = match serde_json::from_slice(&answer.body) {
            Ok(a) => a,
            Err(e) => {
                return Verdict::Unreadable(format!(
                    "the bulk answer is not the documented JSON ({e})"
                ))
            }
        };
        if !parsed.errors {
            return Verdict::Accepted;
        }
        let mut retry = Vec::new();
        let mut rejected = Vec::new();
        for i in 0..payload.items.len() {
            // Each item is {"<action>": {"status": ..., "error": {...}}}; an item the answer
            // leaves out, or one without a status, is not known to be taken: sent again.
            let result = parsed.items.get(i).and_then(|item| item.values().next());
            let Some(status) = result
                .and_then(|r| r.get("status"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
            else {
                retry.push(i);
                continue;
            };
            let Some(result) = result else {
                continue;
            };
            if status < 300 {
                continue;
            }
            if retryable_status(status) {
                retry.push(i);
            } else {
                let reason = result
                    .get("error")
                    .map(|err| {
                        let t = err.get("type").and_then(|v| v.as_str()).unwrap_or_default();
                        let r = err
                            .get("reason")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default();
                        format!("{t}: {r}")
                    })
                    .unwrap_or_else(|| format!("status {status}"));
                rejected.push((i, status, reason));
            }
        }
        Verdict::Items { retry, rejected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A 200 answer with `body`.
    fn ok_answer(body: &'static [u8]) -> Answer {
        Answer {
            status: hyper::StatusCode::OK,
            headers: Default::default(),
            body: bytes::Bytes::from_static(body),
        }
    }

    #[test]
    fn the_index_action_names_index_and_its_results_are_read_alike() {
        let es = Elasticsearch::new("logs-app", EsAction::Index, &[]);
        let path: Arc<str> = "/l/a.log".into();
        let mut b = Batch::default();
        b.push(1, &path, b"m0", 1, 0, None);
        b.push(1, &path, b"m1", 2, 0, None);
        let p = es.encode(&b);
        let first = p.body.split(|c| *c == b'\n').next().expect("a line");
        assert_eq!(first, br#"{"index":{"_index":"logs-app"}}"#);
        let body = br#"{"errors":true,"items":[{"index":{"status":200}},{"index":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"x"}}}]}"#;
        let answer = ok_answer(body);
        assert_eq!(
            es.verdict(&answer, &p),
            Verdict::Items {
                retry: vec![1],
                rejected: vec![]
            }
        );
    }

    #[test]
    fn items_sorted_into_retry_and_rejected() {
        let es = Elasticsearch::new("logs", EsAction::Create, &[("pod".into(), "p".into())]);
        let path: Arc<str> = "/l/a.log".into();
        let mut b = Batch::default();
        for i in 0..3u64 {
            b.push(1, &path, format!("m{i}").as_bytes(), i + 1, 0, None);
        }
        let p = es.encode(&b);
        let lines: Vec<&[u8]> = p
            .body
            .split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], br#"{"create":{"_index":"logs"}}"#);
        let doc: serde_json::Value = serde_json::from_slice(lines[1]).expect("json");
        assert_eq!(doc["message"], "m0");
        assert_eq!(doc["log"]["file"]["path"], "/l/a.log");
        assert_eq!(doc["labels"]["pod"], "p");
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"logs","status":201}},
            {"create":{"_index":"logs","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_index":"logs","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}}]}"#;
        let answer = ok_answer(body);
        assert_eq!(
            es.verdict(&answer, &p),
            Verdict::Items {
                retry: vec![1],
                rejected: vec![(2, 400, "mapper_parsing_exception: bad field".into())]
            }
        );
        // Items the answer leaves out, or without a status, are sent again.
        let short =
            ok_answer(br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{}}]}"#);
        assert_eq!(
            es.verdict(&short, &p),
            Verdict::Items {
                retry: vec![1, 2],
                rejected: vec![]
            }
        );
        let html = Answer {
            status: hyper::StatusCode::OK,
            headers: Default::default(),
            body: bytes::Bytes::from_static(b"<html>proxy</html>"),
        };
        assert!(matches!(es.verdict(&html, &p), Verdict::Unreadable(_)));
        let again = p.subset(&[1]);
        assert_eq!(again.events, 1);
        assert_eq!(again.items[0].event, 1);
        assert!(String::from_utf8_lossy(&again.body).contains("\"m1\""));
    }
}
