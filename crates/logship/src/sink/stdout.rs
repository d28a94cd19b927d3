//! The stdout sink: what `kubectl logs` shows. A batch is acknowledged once written and flushed
//! to the pipe the container runtime reads.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc::Receiver;

use super::{SinkContext, SinkError};
use crate::batch::Batch;

pub fn run(mut rx: Receiver<Arc<Batch>>, ctx: SinkContext) -> Result<(), SinkError> {
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    while let Some(batch) = rx.blocking_recv() {
        buf.clear();
        ctx.encoder.encode(&batch, &mut buf);
        let mut out = stdout.lock();
        out.write_all(&buf)
            .and_then(|()| out.flush())
            .map_err(|e| SinkError::Failed {
                sink: "stdout".into(),
                reason: format!("write failed: {e}"),
            })?;
        ctx.acks.ack(batch.seq);
    }
    Ok(())
}
