//! From lines to events, per file: CRI lines are parsed and their partials joined ([`cri`]),
//! then multiline events are assembled ([`multiline`]), then JSON messages are parsed into
//! fields ([`json`]). A line that does not parse is shipped as it was and counted, never dropped.
//! An event's end offset is that of its last line, so a checkpoint never passes a line that is
//! still held in a pending event.

pub mod cri;
pub mod json;
pub mod multiline;

use std::time::{Duration, Instant};

use regex::bytes::Regex;
use serde_json::{Map, Value};

/// The input format of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain lines.
    Raw,
    /// One JSON object per line; its fields are kept.
    Json,
    /// Kubernetes CRI container logs: `<time> <stream> <P|F> <message>`.
    Cri,
}

/// What the decoders saw that did not fit; counted in metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct DecodeCounts {
    pub invalid: u64,
    pub event_truncated: u64,
}

/// Settings shared by every file's decoder.
#[derive(Debug, Clone)]
pub struct DecodeSettings {
    pub format: Format,
    pub multiline_start: Option<Regex>,
    pub multiline_timeout: Duration,
    pub max_event_bytes: usize,
}

/// A decoded event handed to the batcher: message, end offset in the file, parsed fields.
pub type Emit<'a> = dyn FnMut(&[u8], u64, Option<Box<Map<String, Value>>>) + 'a;

/// One file's decoding state.
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    cri: cri::Joiner,
    multiline: Option<multiline::Assembler>,
    pub counts: DecodeCounts,
}

impl Decoder {
    pub fn new(settings: &DecodeSettings) -> Decoder {
        Decoder {
            format: settings.format,
            cri: cri::Joiner::new(settings.max_event_bytes),
            multiline: settings.multiline_start.clone().map(|re| {
                multiline::Assembler::new(re, settings.multiline_timeout, settings.max_event_bytes)
            }),
            counts: DecodeCounts::default(),
        }
    }

    /// Takes one complete line (without its newline) that ends at `end_offset` in the file.
    pub fn line(&mut self, line: &[u8], end_offset: u64, now: Instant, emit: &mut Emit<'_>) {
        let format = self.format;
        let counts = &mut self.counts;
        let multiline = &mut self.multiline;
        let mut stage2 =
            |msg: &[u8], end: u64, fields: Option<Box<Map<String, Value>>>| match multiline {
                Some(m) => m.push(msg, end, fields, now, &mut |m, e, f| {
                    finish(format, counts, m, e, f, emit)
                }),
                None => finish(format, counts, msg, end, fields, emit),
            };
        match format {
            Format::Cri => {
                let mut invalid = 0;
                self.cri.push(line, end_offset, &mut stage2, &mut invalid);
                self.counts.invalid += invalid;
            }
            Format::Raw | Format::Json => stage2(line, end_offset, None),
        }
        if let Some(m) = &self.multiline {
            self.counts.event_truncated = m.truncated;
        }
    }

    /// When the oldest pending (incomplete) event started waiting, if any.
    pub fn pending_since(&self) -> Option<Instant> {
        self.multiline.as_ref().and_then(|m| m.pending_since())
    }

    /// Flushes a multiline event that has waited longer than the multiline timeout.
    pub fn flush_stale(&mut self, now: Instant, emit: &mut Emit<'_>) {
        let format = self.format;
        let counts = &mut self.counts;
        if let Some(m) = &mut self.multiline {
            m.flush_stale(now, &mut |msg, e, f| {
                finish(format, counts, msg, e, f, emit)
            });
        }
    }

    /// Flushes everything pending (drain, exit, file released).
    pub fn flush_all(&mut self, emit: &mut Emit<'_>) {
        let format = self.format;
        let counts = &mut self.counts;
        let multiline = &mut self.multiline;
        let mut stage2 =
            |msg: &[u8], end: u64, fields: Option<Box<Map<String, Value>>>| match multiline {
                Some(m) => m.push(msg, end, fields, Instant::now(), &mut |m, e, f| {
                    finish(format, counts, m, e, f, emit)
                }),
                None => finish(format, counts, msg, end, fields, emit),
            };
        self.cri.flush(&mut stage2);
        if let Some(m) = &mut self.multiline {
            m.flush(&mut |msg, e, f| finish(format, counts, msg, e, f, emit));
        }
    }
}

/// The last stage: JSON parsing (for json input), then out.
fn finish(
    format: Format,
    counts: &mut DecodeCounts,
    message: &[u8],
    end: u64,
    fields: Option<Box<Map<String, Value>>>,
    emit: &mut Emit<'_>,
) {
    match format {
        Format::Json => match json::parse(message) {
            Some(parsed) => emit(message, end, Some(parsed)),
            None => {
                counts.invalid += 1;
                emit(message, end, None)
            }
        },
        Format::Raw | Format::Cri => emit(message, end, fields),
    }
}
