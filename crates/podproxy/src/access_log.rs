//! The access log: one line per request, JSON (default) or the combined log format, written to
//! stdout or to a file on the shared volume for logship to ship. Lines reach the file within
//! [`FLUSH_EVERY`]; a file renamed or deleted away (rotation) is reopened under its name.
//! Authorization and Cookie values are never logged; query strings can be redacted. Writing
//! happens on a thread of its own behind a bounded queue, never on the runtime's: a slow disk
//! or a stdout pipe nobody reads never slows requests (on one CPU the runtime has one thread,
//! which a blocked write would stop whole, `/live` included). A line the full queue cannot
//! take, or a write fails (a full disk), is dropped and counted
//! (`podproxy_access_log_dropped_total`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde_json::json;

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
    tx: Option<SyncSender<String>>,
    format: Format,
    redact_query: bool,
    pub dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread (none for `Off`). A file that cannot be opened is an error
    /// now, not a silent loss later.
    pub fn start(target: Target, format: Format, redact_query: bool) -> Result<AccessLog, String> {
        let dropped = Counter::default();
        let sink = match target {
            Target::Off => None,
            Target::Stdout => Some(Sink::Stdout),
            Target::File(path) => {
                let file = open(&path).map_err(|e| {
                    format!("--access-log {}: cannot open for appending ({e}); give a writable path, e.g. on an emptyDir", path.display())
                })?;
                Some(Sink::File { path, file })
            }
        };
        let tx = match sink {
            None => None,
            Some(sink) => {
                let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
                let writer = Writer {
                    sink,
                    buf: Vec::with_capacity(FLUSH_BYTES),
                    torn: false,
                    dropped: dropped.clone(),
                };
                std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || writer.run(rx))
                    .map_err(|e| format!("--access-log: cannot start its writer thread ({e})"))?;
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
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
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

/// How often the writer takes the lines that came, and writes them: the queue
/// ([`QUEUE_LINES`]) holds what comes in between, up to 160,000 lines a second.
const POLL: Duration = Duration::from_millis(50);

/// Lines are written in batches of at most this many bytes.
const FLUSH_BYTES: usize = 64 * 1024;

/// The writer thread's state.
struct Writer {
    sink: Sink,
    buf: Vec<u8>,
    /// A failed write left part of a line in the sink: the next write starts a new line, so
    /// that the torn one does not swallow it.
    torn: bool,
    dropped: Counter,
}

impl Writer {
    /// Until every sender is gone: every [`POLL`], takes the lines that came and writes them;
    /// every [`FLUSH_EVERY`], reopens a rotated file. The thread never waits on the queue
    /// itself: a wait would have every request's line wake it (a futex call and a context
    /// switch per request), where a poll takes them in batches.
    fn run(mut self, rx: mpsc::Receiver<String>) {
        let mut reopened = Instant::now();
        loop {
            std::thread::sleep(POLL);
            let mut open = true;
            loop {
                match rx.try_recv() {
                    Ok(line) => {
                        self.buf.extend_from_slice(line.as_bytes());
                        self.buf.push(b'\n');
                        if self.buf.len() >= FLUSH_BYTES {
                            self.flush();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if reopened.elapsed() >= FLUSH_EVERY {
                reopen_if_rotated(&mut self.sink);
                reopened = Instant::now();
            }
            self.flush();
            if !open {
                return;
            }
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = match &mut self.sink {
            Sink::Stdout => {
                write_batch(&mut std::io::stdout().lock(), &mut self.buf, &mut self.torn)
            }
            Sink::File { file, .. } => write_batch(file, &mut self.buf, &mut self.torn),
        };
        if let Err((lines, e)) = result {
            self.dropped.inc_by(lines as u64);
            tracing::error!(error = %e, "access log write failed; {lines} line(s) lost");
        }
    }
}

/// Writes the lines in `buf` (and empties it), after a newline if the last write left a line
/// `torn`; on an error, how many lines were lost (not written whole).
fn write_batch(
    out: &mut impl Write,
    buf: &mut Vec<u8>,
    torn: &mut bool,
) -> Result<(), (usize, std::io::Error)> {
    if *torn {
        buf.insert(0, b'\n');
    }
    let (written, result) = write_counted(out, buf);
    let outcome = match result {
        Ok(()) => {
            *torn = false;
            Ok(())
        }
        Err(e) => {
            // Every line not written whole ends in what is left.
            let lines = buf[written..].iter().filter(|&&b| b == b'\n').count();
            *torn = written > 0 && buf[written - 1] != b'\n';
            Err((lines, e))
        }
    };
    buf.clear();
    outcome
}

/// Writes all of `buf` unless an error comes first; how many bytes were written either way.
fn write_counted(out: &mut impl Write, buf: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match out.write(&buf[written..]) {
            Ok(0) => {
                return (
                    written,
                    Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                )
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, out.flush())
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

    /// Takes `room` bytes, then fails as a full disk does.
    struct Full {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.taken.len() >= self.room {
                return Err(std::io::Error::other("no space left on device"));
            }
            // A few bytes at a time, as a pipe or a nearly full disk takes them.
            let n = buf.len().min(self.room - self.taken.len()).min(7);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_the_lines_lost_and_the_next_starts_a_new_line() {
        let mut out = Full {
            taken: Vec::new(),
            room: 25,
        };
        let mut torn = false;
        let mut buf = b"{\"a\":1}\n{\"b\":2222222}\n{\"c\":3}\n".to_vec();
        // The first two lines (22 bytes) are written whole, the third is torn: one lost.
        assert_eq!(
            write_batch(&mut out, &mut buf, &mut torn).map_err(|(n, _)| n),
            Err(1)
        );
        assert!(torn && buf.is_empty());
        out.room = 1024;
        let mut next = b"{\"d\":4}\n".to_vec();
        write_batch(&mut out, &mut next, &mut torn).expect("written");
        assert!(!torn);
        let text = String::from_utf8(out.taken).expect("utf8");
        // The torn line stands alone; the next one is whole, on a line of its own.
        assert_eq!(text, "{\"a\":1}\n{\"b\":2222222}\n{\"c\n{\"d\":4}\n");
        assert_eq!(text.lines().last(), Some("{\"d\":4}"));
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
