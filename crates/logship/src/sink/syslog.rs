//! The syslog sink: RFC 5424 messages over TCP, TLS or UDP.
//!
//! Each event becomes `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - - [podkit@32473 ...] MSG`
//! (RFC 5424 section 6): PRI from `--syslog-facility` and the event's level when its parsed fields
//! carry one (info otherwise); TIMESTAMP when logship read it, in UTC with microseconds (the
//! most TIME-SECFRAC allows); HOSTNAME the pod (or node) from the Downward API, else the host
//! name; APP-NAME `--syslog-app-name` (default: the container label, else `logship`); the labels
//! and the file path as structured data under `--syslog-sd-id` (default `podkit@32473`; 32473 is
//! the enterprise number RFC 5612 reserves for documentation, so operators with their own IANA
//! enterprise number set theirs); MSG the message, multiline events included.
//!
//! On TCP and TLS every message is octet-counted (`LEN SP MSG`, RFC 6587 section 3.4.1, the
//! framing RFC 5425 requires on TLS), so a message may hold newlines. One connection is kept and
//! made again when it breaks; a batch is written whole and acknowledged once written. Syslog has
//! no application acknowledgement: before each batch the connection is checked for a close by
//! the receiver, so a batch is not written into a connection the receiver has already left, and
//! a batch whose write fails is written again whole on a new connection (a receiver may then see
//! some lines twice, never none). On UDP (RFC 5426) each message is one datagram, cut to
//! [`MAX_UDP_BYTES`]; UDP itself may drop datagrams, which is why TCP or TLS is the choice for
//! logs that matter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::Receiver;

use super::delivery::{Backoff, Failure, NetSettings, SinkStats};
use super::{SinkContext, SinkError};
use crate::batch::{Batch, Event};

/// The largest UDP datagram logship sends (the IPv4 UDP payload limit is 65 507 bytes).
pub const MAX_UDP_BYTES: usize = 65_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Udp,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub struct SyslogSink {
    transport: Transport,
    host: String,
    port: u16,
    net: Arc<NetSettings>,
    stats: SinkStats,
    /// `[podkit@32473 k="v" ...` without the closing bracket and file.
    sd_head: String,
    header_tail: String,
    conn: Option<Box<dyn Stream>>,
    udp: Option<UdpSocket>,
    in_flight: Arc<AtomicUsize>,
}

/// Facility names (RFC 5424 table 1) to numbers.
pub fn facility(name: &str) -> Option<u8> {
    let n = match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        other => return other.parse::<u8>().ok().filter(|n| *n <= 23),
    };
    Some(n)
}

/// A level name to an RFC 5424 severity (0 emergency .. 7 debug).
fn severity(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "emerg" | "emergency" | "panic" => 0,
        "alert" => 1,
        "crit" | "critical" | "fatal" => 2,
        "err" | "error" => 3,
        "warn" | "warning" => 4,
        "notice" => 5,
        "debug" | "trace" => 7,
        _ => 6,
    }
}

/// PRINTUSASCII without space, at most `max` characters; `-` (nil) when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// An SD-NAME: PRINTUSASCII but `=`, space, `]` and `"`, at most 32 characters.
fn sd_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect()
}

/// A PARAM-VALUE with `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
fn sd_value(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

fn timestamp(nanos: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".into())
}

impl SyslogSink {
    pub fn new(
        transport: Transport,
        host: &str,
        port: u16,
        name: &str,
        ctx: &SinkContext,
    ) -> Result<SyslogSink, SinkError> {
        let net = Arc::clone(&ctx.net);
        let mut sd_head = format!("[{}", net.syslog.sd_id);
        for (k, v) in &net.labels {
            sd_head.push(' ');
            sd_head.push_str(&sd_name(k));
            sd_head.push_str("=\"");
            sd_value(&mut sd_head, v);
            sd_head.push('"');
        }
        let header_tail = format!(
            " {} {} - - ",
            header_field(&net.syslog.hostname, 255),
            header_field(&net.syslog.app_name, 48)
        );
        let stats = SinkStats::new(name, Arc::clone(&ctx.metrics), ctx.health.clone());
        Ok(SyslogSink {
            transport,
            host: host.to_string(),
            port,
            net,
            stats,
            sd_head,
            header_tail,
            conn: None,
            udp: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// One RFC 5424 message.
    fn message(&self, batch: &Batch, e: &Event, out: &mut Vec<u8>) {
        let level = e.fields.as_ref().and_then(|f| {
            ["level", "severity", "lvl"]
                .iter()
                .find_map(|k| f.get(*k).and_then(|v| v.as_str()))
        });
        let pri = u16::from(self.net.syslog.facility) * 8 + u16::from(level.map_or(6, severity));
        let mut head = format!("<{pri}>1 {}{}", timestamp(e.read_at), self.header_tail);
        head.push_str(&self.sd_head);
        head.push_str(" file=\"");
        sd_value(&mut head, batch.path(e));
        head.push_str("\"] ");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(batch.message(e));
    }

    /// The batch as octet-counted frames.
    fn frames(&self, batch: &Batch) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.bytes() + batch.len() * 160);
        let mut msg = Vec::new();
        for e in &batch.events {
            msg.clear();
            self.message(batch, e, &mut msg);
            out.extend_from_slice(msg.len().to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(&msg);
        }
        out
    }

    pub async fn run(
        mut self,
        mut rx: Receiver<Arc<Batch>>,
        ctx: SinkContext,
    ) -> Result<(), SinkError> {
        let probe = if self.transport == Transport::Udp {
            self.stats.set_up(true);
            None
        } else {
            Some(super::delivery::spawn_probe(
                self.stats.clone(),
                (self.host.clone(), self.port),
                self.net.connect_timeout,
                Arc::clone(&self.in_flight),
            ))
        };
        while let Some(batch) = rx.recv().await {
            if !batch.events.is_empty() {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                self.stats.in_flight(1);
                self.deliver(&batch).await;
                self.stats.in_flight(-1);
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            ctx.acks.ack(batch.seq);
        }
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.shutdown()).await;
        }
        if let Some(p) = probe {
            p.abort();
        }
        Ok(())
    }

    async fn deliver(&mut self, batch: &Batch) {
        let mut backoff = Backoff::new(self.net.retry_initial, self.net.retry_max);
        let data = match self.transport {
            Transport::Udp => Vec::new(),
            _ => self.frames(batch),
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.transport {
                Transport::Udp => self.send_udp(batch).await,
                _ => self.send_stream(&data).await,
            };
            match result {
                Ok(()) => {
                    self.stats.set_up(true);
                    let bytes = if data.is_empty() {
                        batch.bytes()
                    } else {
                        data.len()
                    };
                    self.stats.sent(bytes, batch.len());
                    return;
                }
                Err(failure) => {
                    self.conn = None;
                    self.stats.failed(failure.reason());
                    self.stats.set_up(false);
                    let delay = backoff.delay(None);
                    tracing::warn!(sink = %self.stats.name, attempt, error = %failure,
                        "sink {}: {failure}; trying again in {} (attempt {attempt})", self.stats.name,
                        podkit_runtime::units::format_duration(delay));
                    self.stats.retried();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, Failure> {
        let timeout = self.net.connect_timeout;
        let tcp =
            tokio::time::timeout(timeout, TcpStream::connect((self.host.as_str(), self.port)))
                .await
                .map_err(|_| Failure::Timeout)?
                .map_err(|e| Failure::Connect(format!("{}:{}: {e}", self.host, self.port)))?;
        let _ = tcp.set_nodelay(true);
        if self.transport == Transport::Tcp {
            return Ok(Box::new(tcp));
        }
        let mut config = (*self.net.tls).clone();
        config.alpn_protocols.clear();
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Failure::Connect(format!("{}: not a TLS server name: {e}", self.host)))?;
        let tls = tokio::time::timeout(
            timeout,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|e| Failure::Connect(format!("TLS handshake with {}: {e}", self.host)))?;
        Ok(Box::new(tls))
    }

    async fn send_stream(&mut self, data: &[u8]) -> Result<(), Failure> {
        if let Some(conn) = self.conn.as_mut() {
            if closed_by_peer(conn).await {
                tracing::info!(sink = %self.stats.name, "sink {}: the receiver closed the connection; connecting again", self.stats.name);
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Connect("no connection".into()));
        };
        let write = async {
            conn.write_all(data).await?;
            conn.flush().await
        };
        match tokio::time::timeout(self.net.request_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Connect(format!("write: {e}"))),
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn send_udp(&mut self, batch: &Batch) -> Result<(), Failure> {
        if self.udp.is_none() {
            let bind = if self.host.contains(':') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let sock = UdpSocket::bind(bind)
                .await
                .map_err(|e| Failure::Connect(format!("UDP socket: {e}")))?;
            sock.connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| Failure::Connect(format!("{}:{}: {e}", self.host, self.port)))?;
            self.udp = Some(sock);
        }
        let Some(sock) = self.udp.as_ref() else {
            return Err(Failure::Connect("no socket".into()));
        };
        let mut msg = Vec::new();
        for e in &batch.events {
            msg.clear();
            self.message(batch, e, &mut msg);
            msg.truncate(MAX_UDP_BYTES);
            if let Err(e) = sock.send(&msg).await {
                self.udp = None;
                return Err(Failure::Connect(format!("send: {e}")));
            }
        }
        Ok(())
    }
}

/// Whether the receiver has closed (or reset) the connection: a syslog receiver never sends,
/// so a read that completes at once means it is gone. One poll, no waiting.
async fn closed_by_peer(conn: &mut Box<dyn Stream>) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::ZERO, conn.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_escapes() {
        assert_eq!(facility("local0"), Some(16));
        assert_eq!(facility("3"), Some(3));
        assert_eq!(facility("24"), None);
        assert_eq!(severity("ERROR"), 3);
        assert_eq!(severity("whatever"), 6);
        assert_eq!(header_field("my app", 48), "myapp");
        assert_eq!(header_field("", 48), "-");
        assert_eq!(
            sd_name("app.kubernetes.io/name=x"),
            "app.kubernetes.io/name_x"
        );
        let mut v = String::new();
        sd_value(&mut v, r#"a"b]c\d"#);
        assert_eq!(v, r#"a\"b\]c\\d"#);
        assert_eq!(
            timestamp(1_500_000_000_123_456_789),
            "2017-07-14T02:40:00.123456Z"
        );
    }
}
