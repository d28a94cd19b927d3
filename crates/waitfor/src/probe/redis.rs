//! redis:// targets: PING answered. `+PONG` is ready; `-NOAUTH` (a password is set) still proves
//! the server is up and serving, so it is ready too; `-LOADING` (the dataset is still being
//! loaded) and other errors are not. Wire format: RESP, redis.io "Redis serialization protocol".

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{tcp, ProbeError};
use crate::target::HostPort;

const MAX_REPLY: u64 = 4096;

pub async fn check(addr: &HostPort) -> Result<String, ProbeError> {
    let mut stream = tcp::connect(addr).await?;
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n")
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(stream, MAX_REPLY));
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    let reply = line.trim_end();
    if reply.is_empty() {
        return Err(ProbeError::Io(
            "connection closed before a PING reply".into(),
        ));
    }
    if reply == "+PONG" {
        Ok("PONG".into())
    } else if reply.starts_with("-NOAUTH") {
        Ok("NOAUTH (up, password required)".into())
    } else if let Some(err) = reply.strip_prefix('-') {
        Err(ProbeError::NotReady(format!(
            "PING answered with error: {err}"
        )))
    } else {
        Err(ProbeError::NotReady(format!(
            "not a Redis server (PING answered {reply:?})"
        )))
    }
}
