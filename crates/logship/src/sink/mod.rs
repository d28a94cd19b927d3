//! Sinks and acknowledgements. The reader hands every batch to every sink (each through its own
//! bounded channel, so a slow sink holds the reader back rather than growing a queue). A sink
//! acknowledges a batch once it is delivered (written to stdout or the file); a batch
//! counts as shipped when every sink has acknowledged it, and positions advance strictly in
//! batch order, so a checkpoint never passes a line some sink has not confirmed. Acknowledgements
//! may arrive later than delivery, and out of order across sinks.

pub mod file;
pub mod stdout;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::{Batch, Encoder};
use crate::checkpoint::{FileId, Positions};
use crate::metrics::Metrics;

/// Batches a sink's channel holds before the reader waits.
pub const QUEUE_BATCHES: usize = 4;

/// Where events go, as given by `--sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
}

impl SinkSpec {
    pub fn parse(s: &str) -> Result<SinkSpec, String> {
        if s == "stdout" || s == "-" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("--sink {s:?}: a file sink needs an absolute path, e.g. file:///var/log/out.log"));
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        Err(format!(
            "--sink {s:?}: unknown sink; use stdout or file:///path"
        ))
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdout => write!(f, "stdout"),
            SinkSpec::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {reason}")]
    Failed { sink: String, reason: String },
}

/// Collects acknowledgements from every sink and advances positions in batch order.
#[derive(Debug)]
pub struct Acks {
    sinks: usize,
    pending: Mutex<BTreeMap<u64, Pending>>,
    positions: Arc<Positions>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Pending {
    remaining: usize,
    lines: u64,
    offsets: Vec<(FileId, u64)>,
}

impl Acks {
    pub fn new(sinks: usize, positions: Arc<Positions>, metrics: Arc<Metrics>) -> Acks {
        Acks {
            sinks,
            pending: Mutex::new(BTreeMap::new()),
            positions,
            metrics,
        }
    }

    /// Called by the reader before the batch is handed to the sinks.
    pub fn register(&self, batch: &Batch) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                batch.seq,
                Pending {
                    remaining: self.sinks,
                    lines: batch.len() as u64,
                    offsets: batch.offsets.clone(),
                },
            );
    }

    /// A sink has delivered batch `seq`.
    pub fn ack(&self, seq: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pending.get_mut(&seq) {
            p.remaining = p.remaining.saturating_sub(1);
        }
        while let Some(entry) = pending.first_entry() {
            if entry.get().remaining > 0 {
                break;
            }
            let done = entry.remove();
            self.positions.acknowledge(&done.offsets);
            self.metrics.lines_shipped.inc_by(done.lines);
            self.metrics.batches_shipped.inc();
        }
    }
}

/// What every sink task gets.
pub struct SinkContext {
    pub encoder: Encoder,
    pub acks: Arc<Acks>,
}

/// Starts the sink's task; it ends when the channel closes (after delivering everything) or
/// fails.
pub fn spawn(
    spec: &SinkSpec,
    rx: tokio::sync::mpsc::Receiver<Arc<Batch>>,
    ctx: SinkContext,
) -> Result<tokio::task::JoinHandle<Result<(), SinkError>>, SinkError> {
    match spec {
        SinkSpec::Stdout => Ok(tokio::task::spawn_blocking(move || stdout::run(rx, ctx))),
        SinkSpec::File(path) => {
            let sink = file::FileSink::open(path)?;
            Ok(tokio::task::spawn_blocking(move || sink.run(rx, ctx)))
        }
    }
}
