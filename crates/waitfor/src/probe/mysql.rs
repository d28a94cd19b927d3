//! mysql:// targets (MySQL and MariaDB): the server greeting arrives. The server speaks first: a
//! packet (3-byte little-endian length, 1-byte sequence id) whose payload starts with protocol
//! version 10 and the server version (MySQL docs, "Protocol::HandshakeV10"). An ERR packet (0xff,
//! then a 2-byte error code and a message, e.g. 1040 "Too many connections" or 1129 "Host is
//! blocked") means the server is there but will not take us: not ready, with its message.

use tokio::io::AsyncReadExt;

use super::{tcp, ProbeError};
use crate::target::HostPort;

const MAX_GREETING: usize = 64 * 1024;

pub async fn check(addr: &HostPort) -> Result<String, ProbeError> {
    let mut stream = tcp::connect(addr).await?;
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len == 0 || len > MAX_GREETING {
        return Err(ProbeError::NotReady(format!(
            "not a MySQL server (greeting length {len})"
        )));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    parse_greeting(&payload)
}

fn parse_greeting(payload: &[u8]) -> Result<String, ProbeError> {
    match payload.first() {
        Some(10) => {
            let version = payload[1..].split(|b| *b == 0).next().unwrap_or_default();
            Ok(format!(
                "greeting from server {}",
                String::from_utf8_lossy(version)
            ))
        }
        Some(0xff) if payload.len() >= 3 => {
            let code = u16::from_le_bytes([payload[1], payload[2]]);
            let message = String::from_utf8_lossy(&payload[3..]);
            Err(ProbeError::NotReady(format!(
                "server refused us: {code} {message}"
            )))
        }
        other => Err(ProbeError::NotReady(format!(
            "not a MySQL server (protocol byte {:?})",
            other
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_and_error_packets() {
        assert_eq!(
            parse_greeting(b"\x0a10.11.6-MariaDB\0rest"),
            Ok("greeting from server 10.11.6-MariaDB".into())
        );
        let err = parse_greeting(b"\xff\x10\x04Too many connections").expect_err("refused");
        assert!(
            err.to_string().contains("1040 Too many connections"),
            "{err}"
        );
        assert!(parse_greeting(b"\x09").is_err());
    }
}
