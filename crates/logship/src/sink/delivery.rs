//! What the network sinks share: their settings ([`NetSettings`]), retry timing ([`Backoff`],
//! [`retry_after`]), which failures are worth retrying ([`Failure`]), the dead-letter file, the
//! credential files (read again when Kubernetes swaps a Secret volume's symlink), and each
//! sink's reachability, which `/readyz` reports ([`Health`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ::http::{HeaderName, HeaderValue};
use podkit_runtime::admin::Readiness;
use rand::Rng;

use crate::metrics::{FailureLabel, Metrics, SinkLabel};

/// Request-body compression for the HTTP-based sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

/// Elasticsearch's bulk action: `create` (required by data streams) or `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EsAction {
    Create,
    Index,
}

/// OTLP/HTTP body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpEncoding {
    Protobuf,
    Json,
}

/// Settings every network sink reads.
#[derive(Debug)]
pub struct NetSettings {
    pub compression: Compression,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub dead_letter: Option<DeadLetter>,
    pub auth: Option<Credential>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub tls: Arc<rustls::ClientConfig>,
    pub loki_tenant: Option<HeaderValue>,
    pub es_action: EsAction,
    pub otlp_encoding: OtlpEncoding,
    pub syslog: SyslogSettings,
    /// `--label` and Downward API labels, in order.
    pub labels: Vec<(String, String)>,
}

/// RFC 5424 header fields.
#[derive(Debug, Clone)]
pub struct SyslogSettings {
    /// The facility number (0-23).
    pub facility: u8,
    pub app_name: String,
    pub hostname: String,
    /// The SD-ID the labels go under (`name@enterprise-number`).
    pub sd_id: String,
}

/// Why an attempt failed; the `reason` label of `logship_sink_failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made, or broke before an answer.
    Connect(String),
    /// No complete answer within `--request-timeout`.
    Timeout,
    /// An answer with a status worth retrying (401, 403, 408, 429, 5xx but 501 and 505).
    Status(u16, Option<Duration>),
    /// A redirect (to the location given): the sink's URL is not the endpoint. Retried, and
    /// logged, so that fixing the URL loses nothing.
    Redirect(u16, String),
    /// A 2xx answer that does not say what was taken.
    BadAnswer(String),
    /// A status outside 100-599, which RFC 9110 section 15 makes invalid: a broken receiver, or
    /// something broken between. Its meaning is unknown, so nothing is refused for it: retried.
    InvalidStatus(u16),
}

impl Failure {
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout => "timeout",
            Failure::Status(429, _) => "status_429",
            Failure::Status(408, _) => "status_408",
            Failure::Status(401 | 403, _) => "status_401_403",
            Failure::Status(_, _) => "status_5xx",
            Failure::Redirect(_, _) => "redirect",
            Failure::BadAnswer(_) => "bad_answer",
            Failure::InvalidStatus(_) => "invalid_status",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connection failed: {e}"),
            Failure::Timeout => write!(f, "no answer within --request-timeout"),
            Failure::Status(s @ (401 | 403), _) => write!(
                f,
                "answered {s}; check the credentials (--bearer-token-file, --basic-auth-file) and the receiver's permissions"
            ),
            Failure::Status(s, _) => write!(f, "answered {s}"),
            Failure::Redirect(s, to) => write!(
                f,
                "answered {s}, a redirect to {to}; point --sink at the final URL"
            ),
            Failure::BadAnswer(why) => write!(f, "answered 2xx, but {why}"),
            Failure::InvalidStatus(s) => write!(
                f,
                "answered {s}, a status outside 100-599 (RFC 9110 section 15); check the receiver and any proxy in front of it"
            ),
        }
    }
}

/// Whether an HTTP status means "try again later" (RFC 9110 section 15: 408 and 429 ask for it;
/// 5xx are the server's trouble, except 501 and 505, which will not change on a retry). 401 and
/// 403 are retried too: credentials are rotated (a token file updated a moment after the
/// receiver's), and Elasticsearch answers 403 while an index is blocked for a full disk; what
/// a fix of the credentials or the disk would ship is kept in the files meanwhile, not dropped.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 401 | 403 | 408 | 429)
        || (500..=599).contains(&status) && !matches!(status, 501 | 505)
}

/// The longest Retry-After honoured; a larger value is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Parses a Retry-After value (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date.
pub fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let delay = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with jitter: each delay doubles up to the maximum, and a random half of it
/// is taken away, so that many logship replicas retrying the same receiver spread out.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; `server` is a Retry-After the receiver asked for,
    /// which wins over the computed delay.
    pub fn delay(&mut self, server: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        if let Some(d) = server {
            // Never sooner than the first backoff step: `Retry-After: 0` must not spin.
            return d.max(self.initial);
        }
        let half = base / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// `--basic-auth-file` (`user:password`) or `--bearer-token-file`: read when first needed and
/// again whenever the file changes (a Kubernetes Secret volume swaps a `..data` symlink, which
/// changes the inode the path resolves to).
#[derive(Debug)]
pub struct Credential {
    kind: CredentialKind,
    path: PathBuf,
    cached: Mutex<Option<(FileKey, HeaderValue)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Basic,
    Bearer,
}

type FileKey = (u64, u64, Option<SystemTime>, u64);

fn file_key(path: &Path) -> std::io::Result<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino(), m.modified().ok(), m.len()))
}

impl Credential {
    /// Reads the file once, so that a missing or malformed file stops logship at start.
    pub fn new(kind: CredentialKind, path: &Path) -> Result<Credential, String> {
        let c = Credential {
            kind,
            path: path.to_path_buf(),
            cached: Mutex::new(None),
        };
        c.header()?;
        Ok(c)
    }

    fn flag(&self) -> &'static str {
        match self.kind {
            CredentialKind::Basic => "--basic-auth-file",
            CredentialKind::Bearer => "--bearer-token-file",
        }
    }

    /// The Authorization header value, from the file as it is now. If the file cannot be read
    /// any more, the last good value is kept (and the error returned only if there is none).
    pub fn header(&self) -> Result<HeaderValue, String> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let key = file_key(&self.path);
        if let (Ok(key), Some((k, v))) = (&key, cached.as_ref()) {
            if k == key {
                return Ok(v.clone());
            }
        }
        let read = key
            .map_err(|e| e.to_string())
            .and_then(|key| Ok((key, self.read()?)));
        match read {
            Ok((key, value)) => {
                if cached.is_some() {
                    tracing::info!(file = %self.path.display(), "{}: the file changed; using the new credentials", self.flag());
                }
                *cached = Some((key, value.clone()));
                Ok(value)
            }
            Err(e) => match cached.as_ref() {
                Some((_, v)) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "{} {}: {e}; keeping the credentials read before", self.flag(), self.path.display());
                    Ok(v.clone())
                }
                None => Err(format!("{} {}: {e}", self.flag(), self.path.display())),
            },
        }
    }

    fn read(&self) -> Result<HeaderValue, String> {
        use base64::Engine;
        let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
        let text = text.trim_end_matches(['\n', '\r']);
        let value = match self.kind {
            CredentialKind::Basic => {
                if !text.contains(':') {
                    return Err("give user:password on one line".into());
                }
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(text)
                )
            }
            CredentialKind::Bearer => {
                if text.is_empty() {
                    return Err("the token file is empty".into());
                }
                format!("Bearer {text}")
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "the file holds characters a header cannot carry".to_string())?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `--dead-letter-file`: events a receiver refused for good, one JSON line each, with the sink,
/// the status and the receiver's reason.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<File>,
}

impl DeadLetter {
    pub fn open(path: &Path) -> Result<DeadLetter, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                format!(
                    "--dead-letter-file {}: cannot open for appending: {e}; check the directory exists and is writable",
                    path.display()
                )
            })?;
        Ok(DeadLetter {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one line per record (`records` is NDJSON, as the JSON encoder writes it).
    pub fn write(&self, sink: &str, status: Option<u16>, reason: &str, records: &[u8]) {
        let mut out = Vec::with_capacity(records.len() + 128);
        let head = serde_json::json!({ "sink": sink, "status": status, "reason": reason });
        let head = head.to_string();
        for record in records.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
            out.extend_from_slice(b",\"event\":");
            out.extend_from_slice(record);
            out.extend_from_slice(b"}\n");
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = file.write_all(&out) {
            tracing::error!(file = %self.path.display(), error = %e, "--dead-letter-file {}: write failed: {e}; those events are only counted", self.path.display());
        }
    }
}

/// Which sinks are reachable; `/readyz` is 200 while logship runs and every sink is.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    up: Vec<AtomicBool>,
    running: AtomicBool,
    readiness: Readiness,
    /// Held while readiness is computed and stored, so two sinks changing at once cannot leave a
    /// stale answer.
    update: Mutex<()>,
}

impl Health {
    pub fn new(sinks: usize, readiness: Readiness) -> Health {
        Health {
            inner: Arc::new(HealthInner {
                up: (0..sinks).map(|_| AtomicBool::new(true)).collect(),
                running: AtomicBool::new(false),
                readiness,
                update: Mutex::new(()),
            }),
        }
    }

    pub fn set_running(&self, running: bool) {
        self.inner.running.store(running, Ordering::SeqCst);
        self.update();
    }

    pub fn slot(&self, index: usize) -> HealthSlot {
        HealthSlot {
            health: self.clone(),
            index,
        }
    }

    fn update(&self) {
        let _serial = self
            .inner
            .update
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let all_up = self.inner.up.iter().all(|u| u.load(Ordering::SeqCst));
        self.inner
            .readiness
            .set(all_up && self.inner.running.load(Ordering::SeqCst));
    }
}

/// One sink's place in [`Health`], with its metrics.
#[derive(Debug, Clone)]
pub struct HealthSlot {
    health: Health,
    index: usize,
}

impl HealthSlot {
    pub fn set_up(&self, up: bool) {
        if let Some(flag) = self.health.inner.up.get(self.index) {
            flag.store(up, Ordering::SeqCst);
        }
        self.health.update();
    }

    pub fn is_up(&self) -> bool {
        self.health
            .inner
            .up
            .get(self.index)
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// A network sink's handles on its metrics and health.
#[derive(Debug, Clone)]
pub struct SinkStats {
    pub name: String,
    /// Counts every reachability verdict, so a probe can tell a delivery spoke after it began.
    contacts: Arc<AtomicUsize>,
    label: SinkLabel,
    metrics: Arc<Metrics>,
    health: HealthSlot,
}

impl SinkStats {
    pub fn new(name: &str, metrics: Arc<Metrics>, health: HealthSlot) -> SinkStats {
        let label = SinkLabel {
            sink: name.to_string(),
        };
        let s = SinkStats {
            name: name.to_string(),
            contacts: Arc::new(AtomicUsize::new(0)),
            label,
            metrics,
            health,
        };
        // Unknown until the first probe or delivery says.
        s.health.set_up(false);
        s.metrics.sinks.up.get_or_create(&s.label).set(0);
        s
    }

    pub fn set_up(&self, up: bool) {
        if up && !self.health.is_up() {
            tracing::info!(sink = %self.name, "sink {}: reachable", self.name);
        }
        self.health.set_up(up);
        self.contacts.fetch_add(1, Ordering::SeqCst);
        self.metrics
            .sinks
            .up
            .get_or_create(&self.label)
            .set(i64::from(up));
    }

    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    pub fn sent(&self, bytes: usize, events: usize) {
        let s = &self.metrics.sinks;
        s.batches_sent.get_or_create(&self.label).inc();
        s.bytes_sent.get_or_create(&self.label).inc_by(bytes as u64);
        s.events_sent
            .get_or_create(&self.label)
            .inc_by(events as u64);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        s.last_success.get_or_create(&self.label).set(now);
    }

    pub fn failed(&self, reason: &str) {
        self.metrics
            .sinks
            .failures
            .get_or_create(&FailureLabel {
                sink: self.name.clone(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn retried(&self) {
        self.metrics.sinks.retries.get_or_create(&self.label).inc();
    }

    pub fn rejected(&self, events: usize) {
        self.metrics
            .sinks
            .events_rejected
            .get_or_create(&self.label)
            .inc_by(events as u64);
    }

    pub fn in_flight(&self, delta: i64) {
        self.metrics
            .sinks
            .in_flight
            .get_or_create(&self.label)
            .inc_by(delta);
    }
}

/// The delay between reachability probes while a sink is idle and down.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Finds out whether a sink's receiver is reachable while no delivery says so: at start, every
/// [`PROBE_INTERVAL`] while the sink is down and idle, and every 5 intervals while it is up and
/// idle (deliveries in flight report for themselves, and a delivery that answered while the
/// probe ran wins over it). The probe is a TCP connect to `addr`.
pub fn spawn_probe(
    stats: SinkStats,
    addr: (String, u16),
    timeout: Duration,
    in_flight: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        let mut round = 0u64;
        loop {
            round += 1;
            let due = first || !stats.is_up() || round.is_multiple_of(5);
            if due && in_flight.load(Ordering::SeqCst) == 0 {
                let contacts = stats.contacts.load(Ordering::SeqCst);
                let connect = tokio::net::TcpStream::connect((addr.0.as_str(), addr.1));
                let result = match tokio::time::timeout(timeout, connect).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no connection within {}",
                        podkit_runtime::units::format_duration(timeout)
                    )),
                };
                let spoke = stats.contacts.load(Ordering::SeqCst) != contacts;
                if in_flight.load(Ordering::SeqCst) == 0 && !spoke {
                    if let (true, Err(e)) = (first, &result) {
                        tracing::warn!(sink = %stats.name, error = %e,
                            "sink {}: cannot reach {}:{} ({e}); logship reads on up to its in-flight bound and ships once the receiver answers",
                            stats.name, addr.0, addr.1);
                    }
                    if let (false, Err(e), true) = (first, &result, stats.is_up()) {
                        tracing::warn!(sink = %stats.name, error = %e, "sink {}: cannot reach {}:{} ({e})", stats.name, addr.0, addr.1);
                    }
                    stats.set_up(result.is_ok());
                }
            }
            first = false;
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = |s: &str| HeaderValue::from_str(s).expect("header");
        assert_eq!(retry_after(&v("3"), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&v("99999"), now), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(retry_after(&v(&later), now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&v(&earlier), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&v("soon"), now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut ceilings = vec![];
        for _ in 0..6 {
            let d = b.delay(None);
            ceilings.push(d);
        }
        for (d, ceiling) in ceilings.iter().zip([100, 200, 400, 800, 800, 800]) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(*d <= ceiling && *d >= ceiling / 2, "{d:?} vs {ceiling:?}");
        }
        assert_eq!(
            b.delay(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        b.reset();
        assert!(b.delay(None) <= Duration::from_millis(100));
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [401, 403, 408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 404, 413, 501, 505] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
