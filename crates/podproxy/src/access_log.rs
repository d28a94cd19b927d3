//! The access log: one line per request, JSON (default) or the combined log format, written to
//! stdout or to a file on the shared volume for logship to ship. Lines reach the file within
//! [`FLUSH_EVERY`]; a file renamed or deleted away (rotation) is reopened under its name.
//! Authorization and Cookie values are never logged; query strings can be redacted. Writing
//! happens on a task of its own behind a bounded queue: a slow disk never slows requests, and
//! a full queue drops the line and counts it (`podproxy_access_log_dropped_total`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::sync::mpsc;

pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
const QUEUE_LINES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    File(PathBuf),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "off" => Ok(Target::Off),
            "stdout" | "-" => Ok(Target::Stdout),
            p if p.starts_with('/') => Ok(Target::File(PathBuf::from(p))),
            other => Err(format!(
                "--access-log {other:?}: use an absolute path, stdout or off"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Combined,
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unix nanoseconds when the request arrived.
    pub start_nanos: i128,
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub protocol: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream: Option<String>,
    pub upstream_time: Option<Duration>,
    pub request_id: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
}

/// Formats entries and hands them to the writer task.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
    format: Format,
    redact_query: bool,
    pub dropped: Counter,
}

impl AccessLog {
    /// Starts the writer task (none for `Off`). A file that cannot be opened is an error now,
    /// not a silent loss later.
    pub fn start(target: Target, format: Format, redact_query: bool) -> Result<AccessLog, String> {
        let dropped = Counter::default();
        let tx = match target {
            Target::Off => None,
            Target::Stdout => {
                let (tx, rx) = mpsc::channel(QUEUE_LINES);
                tokio::spawn(write_loop(rx, Sink::Stdout));
                Some(tx)
            }
            Target::File(path) => {
                let file = open(&path).map_err(|e| {
                    format!("--access-log {}: cannot open for appending ({e}); give a writable path, e.g. on an emptyDir", path.display())
                })?;
                let (tx, rx) = mpsc::channel(QUEUE_LINES);
                tokio::spawn(write_loop(rx, Sink::File { path, file }));
                Some(tx)
            }
        };
        Ok(AccessLog {
            tx,
            format,
            redact_query,
            dropped,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        let line = self.format_line(entry);
        if tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    pub fn format_line(&self, e: &Entry) -> String {
        let query = e.query.as_deref().map(|q| {
            if self.redact_query {
                "REDACTED".to_string()
            } else {
                q.to_string()
            }
        });
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(e.start_nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        match self.format {
            Format::Json => {
                let v = json!({
                    "time": time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "client": e.client,
                    "method": e.method,
                    "path": e.path,
                    "query": query,
                    "protocol": e.protocol,
                    "status": e.status,
                    "bytes_in": e.bytes_in,
                    "bytes_out": e.bytes_out,
                    "duration_ms": e.duration.as_secs_f64() * 1000.0,
                    "upstream": e.upstream,
                    "upstream_ms": e.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
                    "request_id": e.request_id,
                    "host": e.host,
                    "user_agent": e.user_agent,
                });
                v.to_string()
            }
            Format::Combined => {
                // Apache's combined format: %h - - [%d/%b/%Y:%H:%M:%S %z] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
                let stamp = time
                    .format(time::macros::format_description!(
                        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
                    ))
                    .unwrap_or_default();
                let target = match &query {
                    Some(q) => format!("{}?{q}", e.path),
                    None => e.path.clone(),
                };
                format!(
                    "{} - - [{stamp}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                    e.client,
                    e.method,
                    target.replace('"', "%22"),
                    e.protocol,
                    e.status,
                    e.bytes_out,
                    e.referer.as_deref().unwrap_or("-").replace('"', "%22"),
                    e.user_agent.as_deref().unwrap_or("-").replace('"', "%22"),
                )
            }
        }
    }
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

async fn write_loop(mut rx: mpsc::Receiver<String>, mut sink: Sink) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    if buf.len() >= 64 * 1024 {
                        flush(&mut sink, &mut buf);
                    }
                }
                None => {
                    flush(&mut sink, &mut buf);
                    return;
                }
            },
            _ = tick.tick() => {
                reopen_if_rotated(&mut sink);
                flush(&mut sink, &mut buf);
            }
        }
    }
}

fn flush(sink: &mut Sink, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let result = match sink {
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(buf).and_then(|()| out.flush())
        }
        Sink::File { file, .. } => file.write_all(buf),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "access log write failed; {} bytes lost", buf.len());
    }
    buf.clear();
}

/// A rotated-away file (renamed or deleted) is replaced by a new one under the same name.
fn reopen_if_rotated(sink: &mut Sink) {
    let Sink::File { path, file } = sink else {
        return;
    };
    let current = file.metadata().map(|m| (m.dev(), m.ino())).ok();
    let at_path = std::fs::metadata(&*path).map(|m| (m.dev(), m.ino())).ok();
    if at_path.is_none() || at_path != current {
        match open(path) {
            Ok(new) => {
                tracing::info!(path = %path.display(), "access log rotated; reopened {}", path.display());
                *file = new;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot reopen the access log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            start_nanos: 0,
            client: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/api/items".into(),
            query: Some("token=secret".into()),
            protocol: "HTTP/1.1".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 42,
            duration: Duration::from_millis(3),
            upstream: Some("http://127.0.0.1:5000".into()),
            upstream_time: Some(Duration::from_millis(2)),
            request_id: "abc".into(),
            host: Some("shop".into()),
            user_agent: Some("curl/8".into()),
            referer: None,
        }
    }

    #[test]
    fn json_and_combined_lines() {
        let log = AccessLog {
            tx: None,
            format: Format::Json,
            redact_query: true,
            dropped: Counter::default(),
        };
        let v: serde_json::Value = serde_json::from_str(&log.format_line(&entry())).expect("json");
        assert_eq!(v["status"], 200);
        assert_eq!(v["query"], "REDACTED");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        let combined = AccessLog {
            format: Format::Combined,
            redact_query: false,
            ..log
        };
        assert_eq!(
            combined.format_line(&entry()),
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /api/items?token=secret HTTP/1.1\" 200 42 \"-\" \"curl/8\""
        );
    }
}
