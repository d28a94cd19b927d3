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
    /// The offset in its file this event ends at.
    pub offset: u64,
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
            offset: end_offset,
            read_at,
            fields,
        });
        self.advance(id, end_offset);
    }

    /// Cuts the batch into batches of at most `max_lines` events and about `max_bytes` of
    /// messages (a single larger event goes alone), in order. The reader fills a batch a read
    /// chunk at a time, which may pass the bounds; this makes them exact. Positions reached
    /// without an event stay with the last piece.
    pub fn split(mut self, max_lines: usize, max_bytes: usize) -> Vec<Batch> {
        if self.len() <= max_lines && self.bytes() <= max_bytes {
            return vec![self];
        }
        let mut pieces = Vec::new();
        let mut piece = Batch::default();
        let events = std::mem::take(&mut self.events);
        for e in events {
            let size = (e.end - e.start) as usize;
            if !piece.events.is_empty()
                && (piece.len() >= max_lines || piece.bytes() + size > max_bytes)
            {
                pieces.push(std::mem::take(&mut piece));
            }
            let source = &self.sources[e.source as usize];
            let (id, path) = (source.id, Arc::clone(&source.path));
            piece.push(
                id,
                &path,
                &self.data[e.start as usize..e.end as usize],
                e.offset,
                e.read_at,
                e.fields,
            );
        }
        for (id, offset) in &self.offsets {
            piece.advance(*id, *offset);
        }
        pieces.push(piece);
        pieces
    }

    /// A copy of the events at `indices` (for a receiver that found the whole too large). It
    /// acknowledges nothing: the batch it came from does, once all of it is shipped.
    pub fn select(&self, indices: &[usize]) -> Batch {
        let mut part = Batch {
            seq: self.seq,
            ..Batch::default()
        };
        for e in indices.iter().filter_map(|&i| self.events.get(i)) {
            let source = &self.sources[e.source as usize];
            part.push(
                source.id,
                &source.path,
                &self.data[e.start as usize..e.end as usize],
                e.offset,
                e.read_at,
                e.fields.clone(),
            );
        }
        part
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

    /// The message as text. The reader made every message valid UTF-8; lossy is only a guard.
    pub fn text(&self, e: &Event) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.message(e))
    }

    /// The path of the file `e` came from.
    pub fn path(&self, e: &Event) -> &str {
        self.sources
            .get(e.source as usize)
            .map(|s| &*s.path)
            .unwrap_or_default()
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
            Output::Json => self.encode_json(batch, 0..batch.events.len(), out),
        }
    }

    /// Appends one JSON record per event of `batch` named by `events` (indices), whatever the
    /// configured output: the shape of the HTTP NDJSON sink and the dead-letter file.
    pub fn encode_json(
        &self,
        batch: &Batch,
        events: impl Iterator<Item = usize>,
        out: &mut Vec<u8>,
    ) {
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
        for i in events {
            let Some(e) = batch.events.get(i) else {
                continue;
            };
            out.extend_from_slice(b"{\"timestamp\":\"");
            out.extend_from_slice(stamp.format(e.read_at).as_bytes());
            out.extend_from_slice(&file_parts[e.source as usize]);
            write_json_str(out, batch.text(e).as_ref());
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

/// Appends `s` as a JSON string.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping (RFC 8259 section 7); writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 timestamps, formatted once per distinct instant (a read chunk shares one).
#[derive(Default)]
pub struct TimestampCache {
    last: Option<(i64, String)>,
}

impl TimestampCache {
    pub fn format(&mut self, nanos: i64) -> &str {
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
    fn split_keeps_order_offsets_and_bounds() {
        let a: Arc<str> = "/l/a.log".into();
        let b: Arc<str> = "/l/b.log".into();
        let mut batch = Batch::default();
        for i in 0..5u64 {
            batch.push(1, &a, b"aaaa", (i + 1) * 5, 0, None);
            batch.push(2, &b, b"bb", (i + 1) * 3, 0, None);
        }
        batch.advance(2, 100);
        let pieces = batch.split(4, 1 << 20);
        assert_eq!(
            pieces.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(pieces[0].offsets, vec![(1, 10), (2, 6)]);
        assert_eq!(pieces[2].offsets, vec![(1, 25), (2, 100)]);
        assert_eq!(pieces[1].message(&pieces[1].events[0]), b"aaaa");
        let by_bytes = pieces[0].clone_for_test().split(10, 6);
        assert_eq!(
            by_bytes.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![2, 2]
        );
    }

    impl Batch {
        fn clone_for_test(&self) -> Batch {
            let mut b = Batch::default();
            for e in &self.events {
                let s = &self.sources[e.source as usize];
                b.push(s.id, &s.path, self.message(e), e.offset, e.read_at, None);
            }
            b
        }
    }

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
