//! The file sink: appends to a file. A batch is acknowledged once written to it (the kernel's
//! page cache), not fsynced: the positions that acknowledgement advances exist to survive a
//! restart of logship or of its container, which keeps the page cache, while what a node loss
//! takes (the page cache) it takes together with the Pod and its emptyDir, checkpoints included.
//! Fsyncing every batch would tie throughput to the disk for no gain in that model. A special
//! file (a FIFO, /dev/stdout) works as well as a regular one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc::Receiver;

use super::{SinkContext, SinkError};
use crate::batch::Batch;

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

    pub fn run(mut self, mut rx: Receiver<Arc<Batch>>, ctx: SinkContext) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        while let Some(batch) = rx.blocking_recv() {
            buf.clear();
            ctx.encoder.encode(&batch, &mut buf);
            self.file.write_all(&buf).map_err(|e| SinkError::Failed {
                sink: format!("file://{}", self.path.display()),
                reason: format!("write failed: {e}"),
            })?;
            ctx.acks.ack(batch.seq);
        }
        Ok(())
    }
}
