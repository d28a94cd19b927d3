//! OTLP/HTTP logs: `POST /v1/logs` with an `ExportLogsServiceRequest` (OTLP specification,
//! "OTLP/HTTP"), as binary protobuf (`application/x-protobuf`, the default) or as OTLP/JSON
//! (`application/json`, `--otlp-encoding json`). Both are built from the official definitions,
//! the messages opentelemetry-proto generates from opentelemetry-proto's `.proto` files; its
//! serde mapping is the OTLP/JSON one (lowerCamelCase names, 64-bit integers as strings).
//!
//! One ResourceLogs per batch: the resource attributes are the Downward API labels under their
//! semantic-convention names (`k8s.pod.name`, `k8s.namespace.name`, `k8s.container.name`,
//! `k8s.node.name`) and every other `--label` as it is; one ScopeLogs (`logship`); one LogRecord
//! per event with the message as a string body, `observed_time_unix_nano` (when logship read it;
//! `time_unix_nano` is left 0, unknown, as the data model asks when the event time is not known),
//! the attribute `log.file.path`, and a severity when the line's parsed fields carry a level.
//!
//! A 200 answer may carry `partial_success` with `rejected_log_records`: those records were
//! dropped by the receiver and must not be sent again; logship logs and counts them.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::client::Answer;
use super::delivery::OtlpEncoding;
use super::http::{Payload, Protocol, Verdict};
use crate::batch::Batch;

pub struct Otlp {
    encoding: OtlpEncoding,
    resource: Resource,
}

/// The semantic-convention name of a Downward API label.
fn attribute_name(label: &str) -> &str {
    match label {
        "pod" => "k8s.pod.name",
        "namespace" => "k8s.namespace.name",
        "container" => "k8s.container.name",
        "node" => "k8s.node.name",
        other => other,
    }
}

fn string_value(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

/// The OpenTelemetry log data model's severity for a level name (its "Mapping of
/// SeverityNumber" table: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21).
fn severity(level: &str) -> SeverityNumber {
    match level.to_ascii_lowercase().as_str() {
        "trace" => SeverityNumber::Trace,
        "debug" => SeverityNumber::Debug,
        "info" | "information" | "notice" => SeverityNumber::Info,
        "warn" | "warning" => SeverityNumber::Warn,
        "error" | "err" => SeverityNumber::Error,
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => SeverityNumber::Fatal,
        _ => SeverityNumber::Unspecified,
    }
}

impl Otlp {
    pub fn new(encoding: OtlpEncoding, labels: &[(String, String)]) -> Otlp {
        let attributes = labels
            .iter()
            .map(|(k, v)| KeyValue {
                key: attribute_name(k).to_string(),
                value: string_value(v.clone()),
            })
            .collect();
        Otlp {
            encoding,
            resource: Resource {
                attributes,
                ..Default::default()
            },
        }
    }

    fn request(&self, batch: &Batch) -> ExportLogsServiceRequest {
        let log_records = batch
            .events
            .iter()
            .map(|e| {
                let level = e.fields.as_ref().and_then(|f| {
                    ["level", "severity", "lvl"]
                        .iter()
                        .find_map(|k| f.get(*k).and_then(|v| v.as_str()))
                });
                let (severity_number, severity_text) = match level {
                    Some(l) => (severity(l) as i32, l.to_string()),
                    None => (SeverityNumber::Unspecified as i32, String::new()),
                };
                LogRecord {
                    time_unix_nano: 0,
                    observed_time_unix_nano: e.read_at.max(0) as u64,
                    severity_number,
                    severity_text,
                    body: string_value(batch.text(e)),
                    attributes: vec![KeyValue {
                        key: "log.file.path".into(),
                        value: string_value(batch.path(e)),
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "logship".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

impl Protocol for Otlp {
    fn content_type(&self) -> &'static str {
        match self.encoding {
            OtlpEncoding::Protobuf => "application/x-protobuf",
            OtlpEncoding::Json => "application/json",
        }
    }

    fn encode(&self, batch: &Batch) -> Payload {
        let req = self.request(batch);
        let body = match self.encoding {
            OtlpEncoding::Protobuf => req.encode_to_vec(),
            OtlpEncoding::Json => serde_json::to_vec(&req).unwrap_or_default(),
        };
        Payload {
            body: body.into(),
            items: Vec::new(),
            events: batch.len(),
        }
    }

    /// OTLP/HTTP's retryable statuses ("Failures" in the OTLP specification): 429, 502, 503,
    /// 504; every other error status is final.
    fn retryable(&self, status: u16) -> bool {
        matches!(status, 429 | 502 | 503 | 504)
    }

    fn verdict(&self, answer: &Answer, _payload: &Payload) -> Verdict {
        if answer.body.is_empty() {
            return Verdict::Accepted;
        }
        let json = answer
            .headers
            .get(::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let parsed = if json {
            serde_json::from_slice::<JsonResponse>(&answer.body)
                .map(|r| {
                    r.partial_success
                        .map(|p| (p.rejected_log_records.0, p.error_message))
                })
                .map_err(|e| e.to_string())
        } else {
            ExportLogsServiceResponse::decode(answer.body.as_ref())
                .map(|r| {
                    r.partial_success
                        .map(|p| (p.rejected_log_records, p.error_message))
                })
                .map_err(|e| e.to_string())
        };
        match parsed {
            Ok(Some((rejected, message))) if rejected > 0 => Verdict::Dropped {
                rejected: rejected as u64,
                message,
            },
            Ok(Some((_, message))) if !message.is_empty() => {
                tracing::warn!(message = %message, "otlp: the receiver took every record and warns: {message}");
                Verdict::Accepted
            }
            Ok(_) => Verdict::Accepted,
            // A 2xx is the specification's success; an unreadable body cannot take that back.
            Err(e) => {
                tracing::warn!("otlp: the answer is not an ExportLogsServiceResponse ({e}); taking the 2xx status as success");
                Verdict::Accepted
            }
        }
    }
}

/// An OTLP/JSON ExportLogsServiceResponse, read leniently: every field optional, and the
/// 64-bit count as a JSON string (the protobuf JSON mapping) or a number.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResponse {
    partial_success: Option<JsonPartialSuccess>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonPartialSuccess {
    rejected_log_records: Int64,
    error_message: String,
}

#[derive(Default)]
struct Int64(i64);

impl<'de> serde::Deserialize<'de> for Int64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Int64, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => Ok(Int64(n.as_i64().unwrap_or_default())),
            serde_json::Value::String(s) => s
                .parse()
                .map(Int64)
                .map_err(|_| serde::de::Error::custom("not an int64")),
            _ => Ok(Int64(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_carry_resource_and_file_attributes() {
        let otlp = Otlp::new(
            OtlpEncoding::Protobuf,
            &[
                ("pod".into(), "web-1".into()),
                ("app".into(), "shop".into()),
            ],
        );
        let path: Arc<str> = "/l/a.log".into();
        let mut b = Batch::default();
        let mut fields = serde_json::Map::new();
        fields.insert("level".into(), "WARN".into());
        b.push(1, &path, b"hello", 6, 42, Some(Box::new(fields)));
        let p = otlp.encode(&b);
        let req = ExportLogsServiceRequest::decode(p.body.as_ref()).expect("decodes");
        let rl = &req.resource_logs[0];
        let attrs = &rl.resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs[0].key, "k8s.pod.name");
        assert_eq!(attrs[1].key, "app");
        let rec = &rl.scope_logs[0].log_records[0];
        assert_eq!(rec.observed_time_unix_nano, 42);
        assert_eq!(rec.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(rec.attributes[0].key, "log.file.path");
        let json = Otlp::new(OtlpEncoding::Json, &[]).encode(&b);
        let v: serde_json::Value = serde_json::from_slice(&json.body).expect("json");
        let rec = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(rec["observedTimeUnixNano"], "42");
        assert_eq!(rec["body"]["stringValue"], "hello");
        let answer = |body: &'static str| Answer {
            status: hyper::StatusCode::OK,
            headers: [(
                ::http::header::CONTENT_TYPE,
                ::http::HeaderValue::from_static("application/json"),
            )]
            .into_iter()
            .collect(),
            body: bytes::Bytes::from_static(body.as_bytes()),
        };
        for body in [
            r#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too big"}}"#,
            r#"{"partialSuccess":{"rejectedLogRecords":2,"errorMessage":"too big"}}"#,
        ] {
            assert_eq!(
                otlp.verdict(&answer(body), &p),
                Verdict::Dropped {
                    rejected: 2,
                    message: "too big".into()
                }
            );
        }
        assert_eq!(
            otlp.verdict(&answer(r#"{"partialSuccess":{}}"#), &p),
            Verdict::Accepted
        );
        assert_eq!(otlp.verdict(&answer("{}"), &p), Verdict::Accepted);
    }
}
