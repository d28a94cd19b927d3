//! logship's Prometheus metrics (prometheus-client), served on `--admin ADDR` at `/metrics`.
//! Per-file series are labelled with the file path and removed when the file is let go, so the
//! label set stays as small as the set of files being read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub file: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub sink: String,
    pub reason: String,
}

/// Per-sink delivery metrics (network sinks).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub batches_sent: Family<SinkLabel, Counter>,
    pub bytes_sent: Family<SinkLabel, Counter>,
    pub events_sent: Family<SinkLabel, Counter>,
    pub retries: Family<SinkLabel, Counter>,
    pub failures: Family<FailureLabel, Counter>,
    pub events_rejected: Family<SinkLabel, Counter>,
    pub in_flight: Family<SinkLabel, Gauge>,
    pub last_success: Family<SinkLabel, Gauge>,
    pub up: Family<SinkLabel, Gauge>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub sinks: SinkMetrics,
    pub files_watched: Gauge,
    pub lines_read: Family<FileLabel, Counter>,
    pub bytes_read: Family<FileLabel, Counter>,
    pub lag_bytes: Family<FileLabel, Gauge>,
    pub lines_shipped: Counter,
    pub batches_shipped: Counter,
    pub rotations: Counter,
    pub truncations: Counter,
    pub checkpoint_writes: Counter,
    pub checkpoint_errors: Counter,
    pub lines_split: Counter,
    pub lines_invalid: Counter,
    pub lines_invalid_utf8: Counter,
    pub events_truncated: Counter,
}

impl Metrics {
    /// The metrics and a registry that serves them.
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics::default();
        let mut r = Registry::with_prefix("logship");
        r.register(
            "files_watched",
            "Files open for reading",
            m.files_watched.clone(),
        );
        r.register("read_lines", "Lines read, per file", m.lines_read.clone());
        r.register("read_bytes", "Bytes read, per file", m.bytes_read.clone());
        r.register(
            "lag_bytes",
            "Bytes written to a file but not yet acknowledged by every sink",
            m.lag_bytes.clone(),
        );
        r.register(
            "shipped_lines",
            "Events acknowledged by every sink",
            m.lines_shipped.clone(),
        );
        r.register(
            "shipped_batches",
            "Batches acknowledged by every sink",
            m.batches_shipped.clone(),
        );
        r.register(
            "rotations",
            "Files seen renamed away or deleted",
            m.rotations.clone(),
        );
        r.register(
            "truncations",
            "Files seen truncated (copytruncate)",
            m.truncations.clone(),
        );
        r.register(
            "checkpoint_writes",
            "Checkpoint files written",
            m.checkpoint_writes.clone(),
        );
        r.register(
            "checkpoint_errors",
            "Checkpoint writes that failed",
            m.checkpoint_errors.clone(),
        );
        r.register(
            "lines_split",
            "Pieces cut from lines longer than --max-line-bytes",
            m.lines_split.clone(),
        );
        r.register(
            "lines_invalid",
            "Lines that did not parse as the --format says (shipped raw)",
            m.lines_invalid.clone(),
        );
        r.register(
            "lines_invalid_utf8",
            "Lines with invalid UTF-8 (shipped with U+FFFD)",
            m.lines_invalid_utf8.clone(),
        );
        r.register(
            "events_truncated",
            "Multiline or CRI events cut at --max-event-bytes",
            m.events_truncated.clone(),
        );
        let s = &m.sinks;
        r.register(
            "sink_batches_sent",
            "Requests (or syslog batches) a sink delivered, counting partial retries",
            s.batches_sent.clone(),
        );
        r.register(
            "sink_sent_bytes",
            "Bytes a sink put on the wire (after compression)",
            s.bytes_sent.clone(),
        );
        r.register(
            "sink_events_sent",
            "Events a sink's receiver accepted",
            s.events_sent.clone(),
        );
        r.register(
            "sink_retries",
            "Attempts a sink made again after a retryable failure",
            s.retries.clone(),
        );
        r.register(
            "sink_failures",
            "Failed attempts by reason: connect, timeout, status_429, status_5xx, rejected, item_rejected, partial_success",
            s.failures.clone(),
        );
        r.register(
            "sink_events_rejected",
            "Events a receiver refused for good (not retried; see --dead-letter-file)",
            s.events_rejected.clone(),
        );
        r.register(
            "sink_in_flight_batches",
            "Batches a sink is delivering now",
            s.in_flight.clone(),
        );
        r.register(
            "sink_last_success_timestamp_seconds",
            "Unix time of the sink's last successful delivery",
            s.last_success.clone(),
        );
        r.register(
            "sink_up",
            "1 while the sink's receiver is reachable (its last contact succeeded)",
            s.up.clone(),
        );
        (m, r)
    }

    fn label(file: &str) -> FileLabel {
        FileLabel {
            file: file.to_string(),
        }
    }

    pub fn read(&self, file: &str, lines: u64, bytes: u64, split: u64, invalid_utf8: u64) {
        let l = Metrics::label(file);
        self.lines_read.get_or_create(&l).inc_by(lines);
        self.bytes_read.get_or_create(&l).inc_by(bytes);
        if split > 0 {
            self.lines_split.inc_by(split);
        }
        if invalid_utf8 > 0 {
            self.lines_invalid_utf8.inc_by(invalid_utf8);
        }
    }

    pub fn decoded(&self, invalid: u64, truncated: u64) {
        if invalid > 0 {
            self.lines_invalid.inc_by(invalid);
        }
        if truncated > 0 {
            self.events_truncated.inc_by(truncated);
        }
    }

    pub fn lag(&self, file: &str, bytes: u64) {
        self.lag_bytes
            .get_or_create(&Metrics::label(file))
            .set(bytes.min(i64::MAX as u64) as i64);
    }

    /// Drops the per-file series of a file that was let go.
    pub fn forget(&self, file: &str) {
        let l = Metrics::label(file);
        self.lines_read.remove(&l);
        self.bytes_read.remove(&l);
        self.lag_bytes.remove(&l);
    }
}
