//! The file sink: appends to a file. A batch is acknowledged only once fsynced, and fsyncs are
//! grouped (when the queue is empty, or at least every [`SYNC_EVERY`]), so durability does not
//! cost a disk flush per batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::Receiver;

use super::{SinkContext, SinkError};
use crate::batch::Batch;

pub const SYNC_EVERY: Duration = Duration::from_secs(1);

pub struct FileSink {
    path: PathBuf,
    file: File,
}

impl FileSink {
    pub fn open(path: &Path) -> Result<FileSink, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError::Failed {
                sink: format!("file://{}", path.display()),
                reason: format!(
                    "cannot open for appending: {e}; check the directory exists and is writable"
                ),
            })?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
        })
    }

    fn fail(&self, what: &str, e: std::io::Error) -> SinkError {
        SinkError::Failed {
            sink: format!("file://{}", self.path.display()),
            reason: format!("{what} failed: {e}"),
        }
    }

    pub fn run(mut self, mut rx: Receiver<Arc<Batch>>, ctx: SinkContext) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        let mut unsynced: Vec<u64> = Vec::new();
        let mut last_sync = Instant::now();
        loop {
            let next = if unsynced.is_empty() {
                rx.blocking_recv()
            } else {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(TryRecvError::Empty) => {
                        self.sync(&mut unsynced, &ctx)?;
                        last_sync = Instant::now();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            let Some(batch) = next else {
                return self.sync(&mut unsynced, &ctx);
            };
            buf.clear();
            ctx.encoder.encode(&batch, &mut buf);
            self.file
                .write_all(&buf)
                .map_err(|e| self.fail("write", e))?;
            unsynced.push(batch.seq);
            if last_sync.elapsed() >= SYNC_EVERY {
                self.sync(&mut unsynced, &ctx)?;
                last_sync = Instant::now();
            }
        }
    }

    fn sync(&mut self, unsynced: &mut Vec<u64>, ctx: &SinkContext) -> Result<(), SinkError> {
        if unsynced.is_empty() {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| self.fail("fsync", e))?;
        for seq in unsynced.drain(..) {
            ctx.acks.ack(seq);
        }
        Ok(())
    }
}
