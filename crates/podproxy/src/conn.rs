//! What podproxy watches on each client connection, below hyper: activity, for `--idle-timeout`
//! and `--header-read-timeout` ([`Activity`], with HTTP/2's header blocks followed by
//! [`H2Heads`]), and HTTP/1 request framing, to refuse requests that carry both
//! Transfer-Encoding and Content-Length ([`Framing`]).
//!
//! hyper settles HTTP/1 framing before a request reaches podproxy: for a request with both
//! headers it follows RFC 9112 section 6.3 (Transfer-Encoding wins, Content-Length is dropped,
//! the connection is closed after the answer), so the request podproxy sees no longer shows the
//! conflict. The RFC also lets a server reject such a request, which is what a proxy should do
//! (it is the signature of request smuggling): [`ClientIo`] reads the request heads as they pass
//! to hyper, with httparse (hyper's own head parser), follows each body's framing to find the
//! next head, and marks the request by its number on the connection; the handler answers a
//! marked request 400 and closes. Anything the sniffer cannot follow (HTTP/2, an upgrade, a head
//! hyper itself will refuse) ends the sniffing for that connection; hyper's own checks remain.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the handler knows of the connection a request came on.
#[derive(Debug)]
pub struct ClientConn {
    pub peer: std::net::SocketAddr,
    /// The peer's address as an `X-Forwarded-For` value, made once for the connection.
    pub peer_value: http::HeaderValue,
    pub tls: bool,
    pub activity: Arc<Activity>,
    pub framing: Arc<Framing>,
    /// Times the upstream waits of the connection's HTTP/1 requests.
    pub head_timer: HeadTimer,
    /// The connection's place under `--max-connections` (None for one taken at the drain
    /// beyond it): released when the connection ends, or, if it is upgraded, when its tunnel
    /// does, which takes it.
    pub permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl ClientConn {
    /// Takes the connection's permit (see `permit`).
    pub fn take_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// One timer for all the upstream waits of an HTTP/1 connection, whose requests come one after
/// another: each request moves its deadline on. A later deadline only updates the timer that
/// is already in tokio's wheel (`Sleep::reset` extends a registered timer in place), where a
/// timer per request was made, registered and removed again every time: about 2% of podproxy's
/// instructions per request. HTTP/2 streams run side by side and keep a timer each.
#[derive(Default)]
pub struct HeadTimer(std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>);

impl HeadTimer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pin<Box<tokio::time::Sleep>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next wait ends at `at`.
    pub fn set(&self, at: tokio::time::Instant) {
        let mut timer = self.lock();
        match timer.as_mut() {
            Some(sleep) => sleep.as_mut().reset(at),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Ready once the deadline last set has passed.
    pub fn poll_elapsed(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.lock().as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for HeadTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadTimer")
    }
}

/// Whether a connection moves bytes, and how many requests on it are in flight. Moving a byte
/// bumps a counter rather than reading the clock (the clock read on every read and write was a
/// visible share of the per-request CPU); the idle watch samples it.
///
/// For `--header-read-timeout` it also counts reads and requests, and says whether the
/// connection reads HTTP/1 heads at all (not HTTP/2): bytes read while no
/// request is in flight and no new one has started are a head on its way, which the sweeper
/// times (see `server::Open::sweep`). Where that count cannot tell (HTTP/2, whose PINGs and
/// SETTINGS are bytes too, and the first bytes before the protocol is known), `head_open` says
/// whether a head is on its way.
#[derive(Debug)]
pub struct Activity {
    events: AtomicU64,
    reads: AtomicU64,
    requests: AtomicU64,
    heads: AtomicBool,
    /// HTTP/2: a header block has begun and not ended ([`H2Heads`]); before the protocol is
    /// known: some of the first bytes have come, not enough to tell.
    head_open: AtomicBool,
    /// HTTP/2: idle means no stream (see `idle_count`).
    streams: AtomicBool,
    pub in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            events: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            heads: AtomicBool::new(false),
            head_open: AtomicBool::new(false),
            streams: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// The connection speaks HTTP/2 (see `idle_count`).
    pub fn set_streams(&self) {
        self.streams.store(true, Ordering::Relaxed);
    }

    /// What counts against idleness, besides a request in flight: for HTTP/1 (and a tunnel)
    /// any byte moved; for HTTP/2 only a new stream, as a client's PINGs and SETTINGS are no
    /// work, and would otherwise hold an idle connection (and its place under
    /// `--max-connections`) open for ever.
    pub fn idle_count(&self) -> u64 {
        if self.streams.load(Ordering::Relaxed) {
            self.requests()
        } else {
            self.events()
        }
    }

    /// Bytes moved (reads and writes that moved any) so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Reads that brought bytes, so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Requests handed to the handler, so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Whether the connection reads HTTP/1 request heads: set once hyper's HTTP/1 connection
    /// takes it. An upgraded connection leaves the sweeper with that hyper connection, so its
    /// tunnel's bytes are never taken for a head.
    pub fn reads_heads(&self) -> bool {
        self.heads.load(Ordering::Relaxed)
    }

    pub fn set_reads_heads(&self) {
        self.heads.store(true, Ordering::Relaxed);
    }

    /// Whether a head is on its way that the read count cannot show (see `head_open`).
    pub fn head_open(&self) -> bool {
        self.head_open.load(Ordering::Relaxed)
    }

    /// An HTTP/2 header block is open (or, before the protocol is known, the first bytes
    /// are): until it ends the client can send no other frame on the connection (RFC 9113
    /// sections 4.3 and 6.10: only its CONTINUATION frames may follow), so it is timed by `--header-read-timeout`
    /// whatever streams are in flight, and cut with them. It is timed by what podproxy has
    /// read: h2 stops reading while it cannot queue its own answers (a PING's, say) behind a
    /// response the client is slow to take, so a block can look open for as long as such a
    /// client takes to read; over `--header-read-timeout` (10s) that takes a link of a few
    /// kB/s. An HTTP/1 head is timed only with no request in flight: bytes that come then are
    /// the request's body or a pipelined head.
    pub fn head_holds_connection(&self) -> bool {
        !self.reads_heads() && self.head_open()
    }

    pub(crate) fn set_head_open(&self, open: bool) {
        if self.head_open.load(Ordering::Relaxed) != open {
            self.head_open.store(open, Ordering::Relaxed);
        }
    }

    fn touch(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn touch_read(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The start of an idle watch: quiet from now on.
    pub fn quiet(&self) -> Quiet {
        Quiet {
            seen: self.idle_count(),
            since: Instant::now(),
        }
    }

    /// Looks again at `now`: how long the connection has had no request in flight and moved no
    /// byte (a move or a request restarts the count).
    pub fn quiet_for(&self, quiet: &mut Quiet, now: Instant) -> Duration {
        let events = self.idle_count();
        if events != quiet.seen || self.in_flight.load(Ordering::SeqCst) > 0 {
            quiet.seen = events;
            quiet.since = now;
        }
        now.duration_since(quiet.since)
    }

    /// Resolves once the connection has been quiet for `idle` (noticed within
    /// [`idle_step`] after that).
    pub async fn idle(&self, idle: Duration) {
        let mut quiet = self.quiet();
        loop {
            let left = idle.saturating_sub(quiet.since.elapsed());
            tokio::time::sleep(left.min(idle_step(idle)).max(Duration::from_millis(10))).await;
            if self.quiet_for(&mut quiet, Instant::now()) >= idle {
                return;
            }
        }
    }
}

/// An idle watch's state: the activity count last seen, and since when it has stood still.
#[derive(Debug)]
pub struct Quiet {
    pub seen: u64,
    since: Instant,
}

/// How often an idle watch looks: a quarter of the timeout, at least 100ms.
pub fn idle_step(idle: Duration) -> Duration {
    (idle / 4).max(Duration::from_millis(100))
}

/// A request in flight on a connection; dropped when its response is done.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.requests.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The requests on one connection whose heads carried both Transfer-Encoding and
/// Content-Length, by number (1 for the first request on the connection).
#[derive(Debug, Default)]
pub struct Framing {
    /// The number of the marked request, 0 for none (sniffing stops at the first).
    marked: AtomicU64,
    /// Requests handed to the handler so far.
    served: AtomicU64,
}

impl Framing {
    /// Called by the handler for each request, in order: whether this one is marked.
    pub fn next_is_conflicting(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        self.marked.load(Ordering::SeqCst) == n
    }
}

/// Where the sniffer is in the byte stream.
#[derive(Debug)]
enum Phase {
    Head,
    /// Content-Length bytes left.
    Body(u64),
    ChunkSize,
    ChunkExt,
    ChunkSizeLf,
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    /// Trailer lines after the last chunk; `bool`: the current line is empty so far.
    Trailer(bool),
    TrailerLf(bool),
    /// Not following any more.
    Off,
}

/// The largest head the sniffer holds; hyper refuses larger ones (431) anyway.
const MAX_HEAD: usize = 128 * 1024;

struct Sniffer {
    phase: Phase,
    head: Vec<u8>,
    chunk_size: u64,
    requests: u64,
    framing: Arc<Framing>,
}

impl Sniffer {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Head if self.head.is_empty() => {
                    // The usual case, a whole head in one read: parsed where it lies.
                    match self.parse_head(data) {
                        Some(used) => data = &data[used..],
                        None => {
                            if data.len() > MAX_HEAD {
                                self.phase = Phase::Off;
                            }
                            if !matches!(self.phase, Phase::Off) {
                                self.head.extend_from_slice(data);
                            }
                            return;
                        }
                    }
                }
                Phase::Head => {
                    let had = self.head.len();
                    let mut head = std::mem::take(&mut self.head);
                    head.extend_from_slice(data);
                    match self.parse_head(&head) {
                        Some(used) => {
                            let consumed = used - had;
                            head.clear();
                            self.head = head;
                            data = &data[consumed..];
                        }
                        None => {
                            if head.len() > MAX_HEAD {
                                self.phase = Phase::Off;
                            }
                            self.head = head;
                            return;
                        }
                    }
                }
                Phase::Body(left) => {
                    let n = (data.len() as u64).min(left);
                    data = &data[n as usize..];
                    self.phase = if left == n {
                        Phase::Head
                    } else {
                        Phase::Body(left - n)
                    };
                }
                Phase::ChunkData(left) => {
                    let n = (data.len() as u64).min(left);
                    data = &data[n as usize..];
                    self.phase = if left == n {
                        Phase::ChunkDataCr
                    } else {
                        Phase::ChunkData(left - n)
                    };
                }
                _ => {
                    let b = data[0];
                    data = &data[1..];
                    self.chunk_byte(b);
                }
            }
        }
    }

    /// One byte of chunked framing outside chunk data (RFC 9112 section 7.1).
    fn chunk_byte(&mut self, b: u8) {
        self.phase = match (&self.phase, b) {
            (Phase::ChunkSize, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                match self.chunk_size.checked_mul(16) {
                    Some(v) => {
                        self.chunk_size = v + digit;
                        Phase::ChunkSize
                    }
                    None => Phase::Off,
                }
            }
            (Phase::ChunkSize | Phase::ChunkExt, b';') | (Phase::ChunkExt, _) if b != b'\r' => {
                Phase::ChunkExt
            }
            (Phase::ChunkSize | Phase::ChunkExt, b'\r') => Phase::ChunkSizeLf,
            (Phase::ChunkSizeLf, b'\n') => {
                let size = std::mem::take(&mut self.chunk_size);
                if size == 0 {
                    Phase::Trailer(true)
                } else {
                    Phase::ChunkData(size)
                }
            }
            (Phase::ChunkDataCr, b'\r') => Phase::ChunkDataLf,
            (Phase::ChunkDataLf, b'\n') => Phase::ChunkSize,
            (Phase::Trailer(empty), b'\r') => Phase::TrailerLf(*empty),
            (Phase::Trailer(_), _) => Phase::Trailer(false),
            (Phase::TrailerLf(true), b'\n') => Phase::Head,
            (Phase::TrailerLf(false), b'\n') => Phase::Trailer(true),
            _ => Phase::Off,
        };
    }

    /// Parses a head from `buf`; returns the bytes it used once complete, and sets the phase
    /// to the body's framing.
    fn parse_head(&mut self, buf: &[u8]) -> Option<usize> {
        match plain_head(buf) {
            Head::Partial => return None,
            Head::Plain(used) => {
                self.requests += 1;
                self.phase = Phase::Head;
                return Some(used);
            }
            Head::Parse => {}
        }
        // Left uninitialised for httparse to fill: zeroing 128 headers per request cost more
        // than parsing a small head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        let used = match req.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                // hyper answers this itself (or it is HTTP/2's preface): stop following.
                self.phase = Phase::Off;
                return None;
            }
        };
        self.requests += 1;
        let mut lengths = Vec::new();
        let mut chunked = None;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        self.phase = match (chunked, lengths.as_slice()) {
            (Some(_), [_, ..]) => {
                self.framing.marked.store(self.requests, Ordering::SeqCst);
                Phase::Off
            }
            _ if upgrade => Phase::Off,
            (Some(true), []) => Phase::ChunkSize,
            (Some(false), []) => Phase::Off,
            (None, []) => Phase::Head,
            (None, [one]) => match std::str::from_utf8(one)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                Some(0) => Phase::Head,
                Some(n) => Phase::Body(n),
                None => Phase::Off,
            },
            (None, _) => Phase::Off,
        };
        Some(used)
    }
}

/// HTTP/2's connection preface (RFC 9113 section 3.4), which a client speaking HTTP/2 with
/// prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Follows an HTTP/2 client's frames as they pass to hyper, only as far as it takes to know
/// whether a header block is on its way, so that `--header-read-timeout` cuts a client that
/// drips one (a slowloris over HTTP/2: neither hyper nor h2 times a header block, and
/// `--idle-timeout` would take a minute). A frame is a 9-byte header (24-bit payload length,
/// type, flags, stream) and its payload (RFC 9113 section 4.1); a header block is a HEADERS
/// frame (or PUSH_PROMISE, which a client may not send) and the CONTINUATION frames after it,
/// up to the end of the frame flagged END_HEADERS (sections 4.3, 6.2 and 6.10). The preface
/// counts as a head too until it is whole. Frames are only counted, never judged: h2 refuses
/// what is malformed.
#[derive(Debug)]
pub struct H2Heads {
    /// Bytes of the preface still to come.
    preface_left: usize,
    /// The frame header being read, and how much of it has come.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// A header block has begun and its last frame has not ended.
    in_block: bool,
    /// The current frame ends the header block (END_HEADERS).
    ends_block: bool,
}

const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;

impl Default for H2Heads {
    fn default() -> H2Heads {
        H2Heads {
            preface_left: H2_PREFACE.len(),
            header: [0; 9],
            have: 0,
            payload_left: 0,
            in_block: false,
            ends_block: false,
        }
    }
}

impl H2Heads {
    /// Takes the next bytes the client sent; whether a head is on its way after them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        loop {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.frame_ended();
                }
            } else if !bytes.is_empty() {
                let n = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 9 {
                    self.have = 0;
                    self.frame_began();
                }
            }
            if bytes.is_empty() {
                return self.open();
            }
        }
    }

    fn frame_began(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        let ends = flags & FLAG_END_HEADERS != 0;
        match kind {
            FRAME_HEADERS | FRAME_PUSH_PROMISE => {
                self.in_block = true;
                self.ends_block = ends;
            }
            FRAME_CONTINUATION => self.ends_block = ends,
            _ => self.ends_block = false,
        }
        self.payload_left = u32::from_be_bytes([0, l0, l1, l2]) as usize;
        if self.payload_left == 0 {
            self.frame_ended();
        }
    }

    fn frame_ended(&mut self) {
        if self.ends_block {
            self.in_block = false;
            self.ends_block = false;
        }
    }

    /// The preface is not whole, or a header block is open, or a frame header has come far
    /// enough (its type, the fourth byte) to show one beginning.
    fn open(&self) -> bool {
        self.preface_left > 0
            || self.in_block
            || (self.have >= 4
                && matches!(
                    self.header[3],
                    FRAME_HEADERS | FRAME_PUSH_PROMISE | FRAME_CONTINUATION
                ))
    }
}

/// What a look at a head's lines, before httparse, tells.
#[derive(Debug, PartialEq)]
enum Head {
    /// No end of the head yet.
    Partial,
    /// An HTTP/1.x head of this many bytes with no line that could be Content-Length,
    /// Transfer-Encoding or Upgrade, and no CONNECT: no body follows it, the next head does.
    Plain(usize),
    /// Anything else: httparse reads it.
    Parse,
}

/// The usual head (a GET, a HEAD) needs no full parse to be followed: its end is the first
/// empty line (RFC 9112 section 2.1), and with none of the headers that frame a body or end
/// HTTP/1 (compared by name, case-insensitively, as a line's start) nothing follows but the
/// next head. Whatever looks different in the least is left to httparse, as is a request line
/// that does not end in HTTP/1.0 or HTTP/1.1 (HTTP/2's preface among them).
fn plain_head(buf: &[u8]) -> Head {
    const FRAMING: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
    let mut start = 0;
    let mut first = true;
    loop {
        let Some(nl) = memchr::memchr(b'\n', &buf[start..]) else {
            return Head::Partial;
        };
        let line = &buf[start..start + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += nl + 1;
        if first {
            let http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
            if !http1 || line.starts_with(b"CONNECT ") {
                return Head::Parse;
            }
            first = false;
        } else if line.is_empty() {
            return Head::Plain(start);
        } else if FRAMING
            .iter()
            .any(|name| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name))
        {
            return Head::Parse;
        }
    }
}

/// A client connection's byte stream as hyper reads and writes it: every byte counts as
/// activity, and the bytes read feed the framing sniffer. The first bytes, read to tell the
/// protocol ([`ClientIo::is_http2`]), are kept and given to hyper first.
pub struct ClientIo<T> {
    inner: T,
    activity: Arc<Activity>,
    sniffer: Sniffer,
    /// Read before hyper took over, not handed to it yet.
    first: Vec<u8>,
    /// HTTP/2: follows header blocks, in the sniffer's place (see [`ClientIo::follow_http2`]).
    h2: Option<H2Heads>,
}

impl<T> ClientIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>, framing: Arc<Framing>) -> ClientIo<T> {
        ClientIo {
            inner,
            activity,
            sniffer: Sniffer {
                phase: Phase::Head,
                head: Vec::new(),
                chunk_size: 0,
                requests: 0,
                framing,
            },
            first: Vec::new(),
            h2: None,
        }
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// The connection speaks HTTP/2: from now on the bytes read (the preface first, which the
    /// client sends under ALPN too) are followed for header blocks, not HTTP/1 heads.
    pub fn follow_http2(&mut self) {
        self.h2 = Some(H2Heads::default());
    }

    /// Passes bytes read on to whatever follows them (a function of the fields it needs, so
    /// that the bytes may be borrowed from another field).
    fn follow(h2: &mut Option<H2Heads>, sniffer: &mut Sniffer, activity: &Activity, bytes: &[u8]) {
        match h2.as_mut() {
            Some(h2) => activity.set_head_open(h2.feed(bytes)),
            None => sniffer.feed(bytes),
        }
    }
}

impl<T: AsyncRead + Unpin> ClientIo<T> {
    /// Reads the connection's first bytes, as many as it takes to tell HTTP/2 with prior
    /// knowledge (its preface) from HTTP/1 (anything else; also a connection closed before
    /// saying). This is hyper-util's auto detection, done in the wrapper every read already
    /// passes through rather than in one more layer. From the first byte until the protocol is
    /// known, a head is on its way for `--header-read-timeout` (a preface dripped a byte at a
    /// time is cut like an HTTP/1 head).
    pub async fn is_http2(&mut self) -> io::Result<bool> {
        let told = self.tell_protocol().await;
        self.activity.set_head_open(false);
        told
    }

    async fn tell_protocol(&mut self) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        self.first.reserve(1024);
        loop {
            let n = self.inner.read_buf(&mut self.first).await?;
            if n > 0 {
                self.activity.touch_read();
                self.activity.set_head_open(true);
            }
            let have = &self.first[..self.first.len().min(H2_PREFACE.len())];
            if have != &H2_PREFACE[..have.len()] || n == 0 {
                return Ok(false);
            }
            if have.len() == H2_PREFACE.len() {
                return Ok(true);
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.first.is_empty() && buf.remaining() > 0 {
            let this = &mut *self;
            let n = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first[..n]);
            Self::follow(
                &mut this.h2,
                &mut this.sniffer,
                &this.activity,
                &this.first[..n],
            );
            this.first.drain(..n);
            if this.first.is_empty() {
                this.first = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                self.activity.touch_read();
                let this = &mut *self;
                Self::follow(
                    &mut this.h2,
                    &mut this.sniffer,
                    &this.activity,
                    &buf.filled()[before..],
                );
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.touch();
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.touch();
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(chunks: &[&[u8]]) -> (u64, u64, bool) {
        let framing = Arc::new(Framing::default());
        let mut s = Sniffer {
            phase: Phase::Head,
            head: Vec::new(),
            chunk_size: 0,
            requests: 0,
            framing: Arc::clone(&framing),
        };
        for c in chunks {
            s.feed(c);
        }
        (
            s.requests,
            framing.marked.load(Ordering::SeqCst),
            matches!(s.phase, Phase::Off),
        )
    }

    #[test]
    fn follows_bodies_to_the_next_head_and_marks_cl_with_te() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let post = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = b"POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        let smuggle = b"POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut all = Vec::new();
        for part in [&get[..], post, chunked, get, smuggle] {
            all.extend_from_slice(part);
        }
        // Whole, and one byte at a time.
        assert_eq!(sniff(&[&all]), (5, 5, true));
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(sniff(&bytes), (5, 5, true));
        // Body bytes that look like a head are not taken for one.
        let inner = b"GET /a HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let mut tricky = format!(
            "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        )
        .into_bytes();
        tricky.extend_from_slice(inner);
        assert_eq!(sniff(&[&tricky, get]), (2, 0, false));
        // HTTP/2's preface stops the sniffer.
        assert!(sniff(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).2);
    }

    /// Detection on `chunks` written one by one (then the writer closes): what it says, and
    /// what a reader gets afterwards.
    async fn detect(chunks: &[&[u8]]) -> (bool, Vec<u8>, u64) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let framing = Arc::new(Framing::default());
        let mut io = ClientIo::new(server, Activity::new(), Arc::clone(&framing));
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for c in chunks {
                client.write_all(&c).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let h2 = io.is_http2().await.expect("detect");
        writer.await.expect("writer");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.expect("read");
        (h2, rest, io.sniffer.requests)
    }

    #[tokio::test]
    async fn the_first_bytes_tell_http2_and_are_read_again() {
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        // The preface split across reads, then a frame.
        let (h2, rest, _) =
            detect(&[&preface[..3], &preface[3..20], &preface[20..], b"FRAME"]).await;
        assert!(h2);
        assert_eq!(rest, [preface, b"FRAME"].concat());
        // HTTP/1 is known at the first byte that differs; the head still reaches the sniffer.
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        let (h2, rest, requests) = detect(&[&post[..1], &post[1..]]).await;
        assert!(!h2);
        assert_eq!(rest, post);
        assert_eq!(requests, 1);
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (h2, rest, requests) = detect(&[&get[..]]).await;
        assert!(!h2);
        assert_eq!(rest, get);
        assert_eq!(requests, 1);
        // Closed part-way through the preface, or at once.
        assert!(!detect(&[b"PRI * HT"]).await.0);
        assert_eq!(detect(&[]).await, (false, Vec::new(), 0));
    }

    #[test]
    fn plain_heads_are_followed_without_a_full_parse_and_the_rest_are_parsed() {
        let get = b"GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\r\nGET /b";
        assert_eq!(plain_head(get), Head::Plain(get.len() - 6));
        assert_eq!(plain_head(b"GET / HTTP/1.0\n\n"), Head::Plain(16));
        assert_eq!(plain_head(b"GET / HTTP/1.1\r\nHost: a\r\n"), Head::Partial);
        for framed in [
            &b"POST / HTTP/1.1\r\nCONTENT-length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\ntransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                plain_head(framed),
                Head::Parse,
                "{:?}",
                String::from_utf8_lossy(framed)
            );
        }
        // Plain GETs between framed requests are counted, so the mark lands on the right one.
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let smuggle = b"POST /z HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let all = [&get[..], get, get, smuggle].concat();
        assert_eq!(sniff(&[&all]), (4, 4, true));
    }

    #[test]
    fn in_flight_and_idle() {
        let a = Activity::new();
        assert_eq!(a.in_flight.load(Ordering::SeqCst), 0);
        let r = InFlight::new(&a);
        assert_eq!(a.in_flight.load(Ordering::SeqCst), 1);
        drop(r);
        assert_eq!(a.in_flight.load(Ordering::SeqCst), 0);
    }

    /// One HTTP/2 frame (RFC 9113 section 4.1).
    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags, 0, 0, 0, 1]);
        f.extend(payload);
        f
    }

    /// Feeds `bytes` a byte at a time: whether a head was on its way after each.
    fn open_after_each(h: &mut H2Heads, bytes: &[u8]) -> Vec<bool> {
        bytes.iter().map(|b| h.feed(&[*b])).collect()
    }

    #[test]
    fn h2_heads_counts_the_preface_then_follows_header_blocks_only() {
        let mut h = H2Heads::default();
        // The preface is a head until it is whole.
        let opens = open_after_each(&mut h, H2_PREFACE);
        assert!(opens[..H2_PREFACE.len() - 1].iter().all(|o| *o));
        assert!(!opens[H2_PREFACE.len() - 1]);
        // SETTINGS, PING, WINDOW_UPDATE and DATA, however slowly they come, are not heads.
        for (kind, payload) in [
            (4u8, &[][..]),
            (6, b"12345678"),
            (8, b"\0\0\x01\0"),
            (0, b"body"),
        ] {
            assert!(open_after_each(&mut h, &frame(kind, 0, payload))
                .iter()
                .all(|o| !o));
        }
        // A HEADERS frame with END_HEADERS: a head from its type byte to its last byte.
        let headers = frame(1, 0x4 | 0x1, b"\x82\x86\x84");
        let opens = open_after_each(&mut h, &headers);
        assert_eq!(
            opens[..3],
            [false, false, false],
            "the length alone says nothing"
        );
        assert!(opens[3..headers.len() - 1].iter().all(|o| *o));
        assert!(!opens[headers.len() - 1]);
        // HEADERS without END_HEADERS, then CONTINUATION frames: open until the one flagged.
        assert!(h.feed(&frame(1, 0x1, b"\x82")));
        assert!(h.feed(&frame(9, 0, b"\x86")));
        assert!(h.feed(&frame(9, 0, b"")));
        assert!(!h.feed(&frame(9, 0x4, b"\x84")));
        // A frame between them that is not a CONTINUATION leaves the block open (h2 refuses it).
        assert!(h.feed(&frame(1, 0, b"\x82")));
        assert!(h.feed(&frame(0, 0, b"x")));
        assert!(!h.feed(&frame(9, 0x4, b"")));
        // An empty HEADERS frame that ends its block closes at once.
        assert!(!h.feed(&frame(1, 0x4, b"")));
    }

    #[test]
    fn h2_heads_reads_the_same_in_one_piece_or_byte_by_byte() {
        let mut all = H2_PREFACE.to_vec();
        all.extend(frame(4, 0, b""));
        all.extend(frame(1, 0x1, b"\x82\x86"));
        all.extend(frame(9, 0, &[7; 300]));
        let mut whole = H2Heads::default();
        assert!(whole.feed(&all), "the block has no END_HEADERS yet");
        let mut bytes = H2Heads::default();
        assert_eq!(open_after_each(&mut bytes, &all).last(), Some(&true));
        let end = frame(9, 0x4, b"\x84");
        assert!(!whole.feed(&end));
        assert_eq!(open_after_each(&mut bytes, &end).last(), Some(&false));
        // Reads that end inside a frame header, and a read that ends one frame and begins the
        // next.
        let mut split = H2Heads::default();
        let mut rest = H2_PREFACE.to_vec();
        rest.extend(frame(0, 0, &[1; 40])); // bytes 24..73
        rest.extend(frame(1, 0x4, b"\x82\x86\x84")); // bytes 73..85
        assert!(!split.feed(&rest[..70]), "inside DATA's payload");
        assert!(!split.feed(&rest[70..76]), "HEADERS' length only");
        assert!(split.feed(&rest[76..80]), "HEADERS' type has come");
        assert!(split.feed(&rest[80..84]), "one byte of its block to come");
        assert!(!split.feed(&rest[84..]));
    }
}
