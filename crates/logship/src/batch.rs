//! Events and the batches they travel in. A batch keeps its messages in one byte buffer (no
//! allocation per line on the hot path), knows the position in its file that each event ends at,
//! and is bounded by lines and bytes. Encoding to `raw` or `json` output lives here too, so every
//! sink writes the same bytes.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::checkpoint::FileId;

/// A file as events refer to it.
#[derive(Debug)]
pub struct Source {
    pub id: FileId,
    pub path: Arc<str>,
}

/// One event: a line, or several joined (multiline, CRI partials).
#[derive(Debug)]
pub struct Event {
    pub source: u32,
    pub start: u32,
    pub end: u32,
    /// When it was read, in Unix nanoseconds.
    pub read_at: i64,
    /// Fields parsed from the line (json or cri input).
    pub fields: Option<Box<Map<String, Value>>>,
}

/// Events bound for the sinks, with the file positions they acknowledge when shipped.
#[derive(Debug, Default)]
pub struct Batch {
    pub seq: u64,
    pub data: Vec<u8>,
    pub events: Vec<Event>,
    pub sources: Vec<Source>,
    /// For each file in the batch, the offset its last event ends at.
    pub offsets: Vec<(FileId, u64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.offsets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Adds one event from `id`, ending at `end_offset` in that file.
    pub fn push(
        &mut self,
        id: FileId,
        path: &Arc<str>,
        message: &[u8],
        end_offset: u64,
        read_at: i64,
        fields: Option<Box<Map<String, Value>>>,
    ) {
        let source = self.source_index(id, path);
        let start = self.data.len() as u32;
        self.data.extend_from_slice(message);
        self.events.push(Event {
            source,
            start,
            end: self.data.len() as u32,
            read_at,
            fields,
        });
        self.advance(id, end_offset);
    }

    /// Records that `id` is consumed up to `end_offset` without an event (bytes that produce no
    /// event, e.g. the tail of an over-long line that was cut).
    pub fn advance(&mut self, id: FileId, end_offset: u64) {
        match self.offsets.iter_mut().rev().find(|(f, _)| *f == id) {
            Some((_, o)) => *o = (*o).max(end_offset),
            None => self.offsets.push((id, end_offset)),
        }
    }

    fn source_index(&mut self, id: FileId, path: &Arc<str>) -> u32 {
        if let Some(i) = self.sources.iter().rposition(|s| s.id == id) {
            return i as u32;
        }
        self.sources.push(Source {
            id,
            path: Arc::clone(path),
        });
        (self.sources.len() - 1) as u32
    }

    pub fn message(&self, e: &Event) -> &[u8] {
        &self.data[e.start as usize..e.end as usize]
    }
}

/// The shape of what sinks write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Each line as it was read.
    Raw,
    /// One JSON object per line: timestamp, file, message, labels, fields.
    Json,
}

/// Turns batches into output bytes. Labels are serialized once.
#[derive(Debug, Clone)]
pub struct Encoder {
    output: Output,
    labels_json: Arc<str>,
}

impl Encoder {
    pub fn new(output: Output, labels: &[(String, String)]) -> Encoder {
        let map: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let labels_json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
        Encoder {
            output,
            labels_json: labels_json.into(),
        }
    }

    /// Appends the encoding of every event in `batch` to `out`.
    pub fn encode(&self, batch: &Batch, out: &mut Vec<u8>) {
        match self.output {
            Output::Raw => {
                out.reserve(batch.data.len() + batch.events.len());
                for e in &batch.events {
                    out.extend_from_slice(batch.message(e));
                    out.push(b'\n');
                }
            }
            Output::Json => {
                let mut stamp = TimestampCache::default();
                // `","file":"<path>","message":` once per file, not once per event.
                let file_parts: Vec<Vec<u8>> = batch
                    .sources
                    .iter()
                    .map(|s| {
                        let mut part = b"\",\"file\":".to_vec();
                        write_json_str(&mut part, &s.path);
                        part.extend_from_slice(b",\"message\":");
                        part
                    })
                    .collect();
                out.reserve(batch.data.len() * 2);
                for e in &batch.events {
                    out.extend_from_slice(b"{\"timestamp\":\"");
                    out.extend_from_slice(stamp.format(e.read_at).as_bytes());
                    out.extend_from_slice(&file_parts[e.source as usize]);
                    // The reader made every message valid UTF-8; lossy is only a guard.
                    match std::str::from_utf8(batch.message(e)) {
                        Ok(text) => write_json_str(out, text),
                        Err(_) => write_json_str(out, &String::from_utf8_lossy(batch.message(e))),
                    }
                    out.extend_from_slice(b",\"labels\":");
                    out.extend_from_slice(self.labels_json.as_bytes());
                    if let Some(fields) = &e.fields {
                        out.extend_from_slice(b",\"fields\":");
                        let _ = serde_json::to_writer(&mut *out, fields);
                    }
                    out.extend_from_slice(b"}\n");
                }
            }
        }
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping (RFC 8259 section 7); writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 timestamps, formatted once per distinct instant (a read chunk shares one).
#[derive(Default)]
struct TimestampCache {
    last: Option<(i64, String)>,
}

impl TimestampCache {
    fn format(&mut self, nanos: i64) -> &str {
        if self.last.as_ref().map(|(n, _)| *n) != Some(nanos) {
            let text = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            self.last = Some((nanos, text));
        }
        self.last
            .as_ref()
            .map(|(_, s)| s.as_str())
            .unwrap_or_default()
    }
}

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_json_encodings() {
        let path: Arc<str> = "/logs/app.log".into();
        let mut b = Batch::default();
        b.push(7, &path, b"hello \"world\"", 14, 0, None);
        let mut fields = Map::new();
        fields.insert("level".into(), Value::String("info".into()));
        b.push(7, &path, b"second", 21, 0, Some(Box::new(fields)));
        assert_eq!(b.offsets, vec![(7, 21)]);

        let mut raw = Vec::new();
        Encoder::new(Output::Raw, &[]).encode(&b, &mut raw);
        assert_eq!(raw, b"hello \"world\"\nsecond\n");

        let mut json = Vec::new();
        Encoder::new(Output::Json, &[("pod".into(), "web-1".into())]).encode(&b, &mut json);
        let lines: Vec<Value> = json
            .split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("valid json"))
            .collect();
        assert_eq!(lines[0]["message"], "hello \"world\"");
        assert_eq!(lines[0]["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(lines[0]["file"], "/logs/app.log");
        assert_eq!(lines[0]["labels"]["pod"], "web-1");
        assert_eq!(lines[1]["fields"]["level"], "info");
    }
}
