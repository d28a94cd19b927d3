//! file:// targets: the path exists (and, with `--file-nonempty`, is a file with content). This
//! is how one container waits for a readiness file another writes on the shared volume.

use std::path::Path;

use super::ProbeError;

pub async fn check(path: &Path, nonempty: bool) -> Result<String, ProbeError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    if nonempty && (!meta.is_file() || meta.len() == 0) {
        return Err(ProbeError::NotReady(if meta.is_file() {
            "file is empty".into()
        } else {
            "not a regular file".into()
        }));
    }
    Ok(format!("exists ({} bytes)", meta.len()))
}
