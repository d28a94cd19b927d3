//! The file sink: appends to a file. A batch is acknowledged once written to it (the kernel's
//! page cache), not fsynced: the positions that acknowledgement advances exist to survive a
//! restart of logship or of its container, which keeps the page cache, while what a node loss
//! takes (the page cache) it takes together with the Pod and its emptyDir, checkpoints included.
//! Fsyncing every batch would tie throughput to the disk for no gain in that model. A special
//! file (a FIFO, /dev/stdout) works as well as a regular one.
//!
//! A batch is written with one `write(2)` from an unbuffered `File`, so when it is acknowledged
//! the kernel has all of it and a SIGKILL right after loses nothing. A SIGKILL during the write
//! can leave part of it (Linux stops a write between pages when a fatal signal is pending:
//! `generic_perform_write` in mm/filemap.c); that batch was never acknowledged and is shipped
//! again whole by the next run, so at open an unfinished last line of a regular file is cut
//! away (logged), and no line is ever glued to a fragment.

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
        if let Err(e) = cut_unfinished_line(&file, path) {
            return Err(SinkError::Failed {
                sink: format!("file://{}", path.display()),
                reason: format!("cannot check its last line: {e}"),
            });
        }
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

/// Cuts a regular file back to the end of its last complete line (see the module's notes).
fn cut_unfinished_line(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(());
    }
    // The sink's own handle only appends; this one reads and cuts.
    let file = &OpenOptions::new().read(true).write(true).open(path)?;
    let len = meta.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(nl) = memchr::memrchr(b'\n', chunk) {
            let keep = start + nl as u64 + 1;
            if keep < len {
                tracing::warn!(file = %path.display(), bytes = len - keep,
                    "{} ended with an unfinished batch (logship was killed while writing it); cut {} bytes, the batch is shipped again whole",
                    path.display(), len - keep);
                file.set_len(keep)?;
            }
            return Ok(());
        }
        if start == 0 {
            // Not one newline: perhaps not ours; kept, and ended so nothing is glued to it.
            tracing::warn!(file = %path.display(), bytes = len,
                "{} holds no complete line; a newline is added after its {} bytes", path.display(), len);
            return file.write_all_at(b"\n", len);
        }
        end = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.log");
        std::fs::write(&path, "one\ntwo\nthr").expect("write");
        FileSink::open(&path).expect("open");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        std::fs::write(&path, "one\n").expect("write");
        FileSink::open(&path).expect("open");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
        let long = format!("{}\n{}", "x".repeat(100_000), "y".repeat(70_000));
        std::fs::write(&path, &long).expect("write");
        FileSink::open(&path).expect("open");
        assert_eq!(std::fs::read(&path).expect("read").len(), 100_001);
        std::fs::write(&path, "no newline").expect("write");
        FileSink::open(&path).expect("open");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "no newline\n"
        );
    }
}
