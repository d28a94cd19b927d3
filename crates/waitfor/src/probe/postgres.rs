//! postgres:// targets: ready exactly when `pg_isready` would say "accepting connections".
//!
//! We send a protocol 3.0 StartupMessage (PostgreSQL docs, "Message Formats") and read the first
//! reply. libpq's PQpingParams, which pg_isready uses, reports the server as up on any answer but
//! an ErrorResponse with SQLSTATE 57P03 (cannot_connect_now: starting up, shutting down, or in
//! recovery without hot standby). So an authentication request ('R'), a parameter negotiation
//! ('v'), or an error such as "role does not exist" (28000) or "too many connections" (53300)
//! all prove the server is accepting connections; no credentials are needed.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{tcp, ProbeError};
use crate::target::HostPort;

const PROTOCOL_3_0: i32 = 196_608;
const CANNOT_CONNECT_NOW: &str = "57P03";
/// The largest first reply we read; an ErrorResponse is a few hundred bytes.
const MAX_REPLY: usize = 16 * 1024;

pub async fn check(addr: &HostPort, user: &str) -> Result<String, ProbeError> {
    let mut stream = tcp::connect(addr).await?;
    stream
        .write_all(&startup_message(user))
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    let kind = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    match kind {
        b'R' | b'v' => Ok("accepting connections".into()),
        b'E' => {
            let body_len = usize::try_from(len - 4)
                .ok()
                .filter(|n| *n <= MAX_REPLY)
                .ok_or_else(|| {
                    ProbeError::NotReady(format!("not a PostgreSQL server (error length {len})"))
                })?;
            let mut body = vec![0u8; body_len];
            stream
                .read_exact(&mut body)
                .await
                .map_err(|e| ProbeError::from_io(&e))?;
            let (code, message) = error_fields(&body);
            if code == CANNOT_CONNECT_NOW {
                Err(ProbeError::NotReady(format!(
                    "rejecting connections: {message}"
                )))
            } else {
                Ok(format!(
                    "accepting connections (answered {code}: {message})"
                ))
            }
        }
        other => Err(ProbeError::NotReady(format!(
            "not a PostgreSQL server (first reply byte {other:#04x})"
        ))),
    }
}

fn startup_message(user: &str) -> Vec<u8> {
    let mut params = Vec::new();
    for (k, v) in [
        ("user", user),
        ("database", "postgres"),
        ("application_name", "waitfor"),
    ] {
        params.extend_from_slice(k.as_bytes());
        params.push(0);
        params.extend_from_slice(v.as_bytes());
        params.push(0);
    }
    params.push(0);
    let len = (8 + params.len()) as i32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    msg.extend_from_slice(&params);
    msg
}

/// The SQLSTATE ('C') and message ('M') fields of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        if let Some((&tag, value)) = field.split_first() {
            let value = String::from_utf8_lossy(value).into_owned();
            match tag {
                b'C' => code = value,
                b'M' => message = value,
                _ => {}
            }
        }
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_is_length_prefixed_protocol_3() {
        let msg = startup_message("app");
        assert_eq!(
            i32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize,
            msg.len()
        );
        assert_eq!(&msg[4..8], &PROTOCOL_3_0.to_be_bytes());
        assert!(msg.ends_with(b"waitfor\0\0"));
    }

    #[test]
    fn error_fields_pick_code_and_message() {
        let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert_eq!(
            error_fields(body),
            (
                "57P03".to_string(),
                "the database system is starting up".to_string()
            )
        );
    }
}
