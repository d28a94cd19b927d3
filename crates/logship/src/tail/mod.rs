//! The reading loop, on a thread of its own (file reads are blocking; one thread reading large
//! chunks with pread beats async file I/O here). It owns every open file and decides, each
//! round, what to read, what was rotated, truncated or deleted, and when a batch goes out.
//!
//! Promises:
//! - A file renamed away (rotation) or deleted is read to its end through the open handle, and
//!   let go only after it has stayed at its end for `--rotate-wait`.
//! - A file that shrinks below the read offset (copytruncate) is read again from 0; its old
//!   identity is remembered so that the copy, if the glob matches it, resumes where we were.
//! - A new file whose first bytes equal an open file's (a copy made before truncation) waits on
//!   standby, and takes over that file's position when the original is truncated or let go.
//! - Batches go out when full, when the reader is idle, and at the end; sending blocks while the
//!   sinks are behind, so the files are the buffer and memory stays bounded.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::batch::{now_nanos, Batch};
use crate::checkpoint::{FileId, Positions};
use crate::decode::{DecodeSettings, Decoder};
use crate::discover::{Globs, Wake};
use crate::identity::{DevIno, Head, FINGERPRINT_BYTES};
use crate::metrics::Metrics;
use crate::reader::LineReader;

mod rotation;
use rotation::{Recent, Settling, Standby};

#[cfg(test)]
mod model;

/// Where `--read-from` starts files present at the very first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFrom {
    Head,
    End,
}

#[derive(Debug, Clone)]
pub struct TailSettings {
    pub globs: Globs,
    pub read_from: ReadFrom,
    pub max_line_bytes: usize,
    pub decode: DecodeSettings,
    pub batch_max_lines: usize,
    pub batch_max_bytes: usize,
    pub batch_timeout: Duration,
    pub poll_interval: Duration,
    pub scan_interval: Duration,
    pub rotate_wait: Duration,
    /// How long a new file that cannot be told yet (shorter than a fingerprint, or than the
    /// position known for its content) must keep its size before it is read.
    pub settle: Duration,
    pub exit_on_file: Option<PathBuf>,
    pub oneshot: bool,
    /// After SIGTERM, keep reading until no file has grown for this long: the app, stopped at
    /// the same moment, often writes its last lines while shutting down.
    pub drain_quiet: Duration,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (SIGTERM): everything written was read and sent.
    Drained,
    /// `--exit-on-file` appeared: everything was read and sent.
    ExitFile,
    /// `--oneshot`: every file was read to its end and sent.
    Oneshot,
    /// The sinks went away.
    SinksClosed,
}

/// How the rest of the process steers the reading loop.
pub struct Control {
    /// Set to ask for a drain.
    pub stop: Arc<AtomicBool>,
    /// Wake-ups from the change watcher (and from the drain request).
    pub wake: mpsc::Receiver<Wake>,
    /// Set when files may have appeared or gone.
    pub rescan: Arc<AtomicBool>,
}

/// Sends a batch to the sinks; blocks while they are behind. Err means they are gone.
pub type Outlet = Box<dyn FnMut(Batch) -> Result<(), ()> + Send>;

struct Tracked {
    id: FileId,
    path: PathBuf,
    label: Arc<str>,
    file: File,
    dev_ino: DevIno,
    head: Head,
    /// The first bytes of the file as read by us (up to a fingerprint): always at least every
    /// byte before `emitted` (or the whole fingerprint), grown from our own reads, never from a
    /// later look at the file, which may already hold other content.
    head_bytes: Vec<u8>,
    /// Bytes read so far (what the reader has consumed).
    offset: u64,
    /// Offset just past the last event handed to a batch.
    emitted: u64,
    reader: LineReader,
    decoder: Decoder,
    gone_since: Option<Instant>,
    size: u64,
}

pub struct Tailer {
    s: TailSettings,
    positions: Arc<Positions>,
    metrics: Arc<Metrics>,
    outlet: Outlet,
    stop: Arc<AtomicBool>,
    wake: mpsc::Receiver<Wake>,
    rescan: Arc<AtomicBool>,
    first_start: bool,
    files: Vec<Tracked>,
    standby: Vec<Standby>,
    settling: Vec<Settling>,
    /// Fingerprints of files let go or truncated lately, with how far they were read: a copy
    /// found after its original was truncated resumes there, even before the acknowledgement.
    recent: std::collections::VecDeque<Recent>,
    /// Draining: every file is read now, none waits to settle.
    draining: bool,
    next_id: FileId,
    batch: Batch,
    batch_started: Option<Instant>,
    seq: u64,
    buf: Vec<u8>,
    /// A read found a file rewritten: check the files now rather than at the next poll.
    check_now: bool,
}

const READ_CHUNK: usize = 256 * 1024;
/// The most read from one file before the others get their turn.
const FAIR_SHARE: usize = 4 * 1024 * 1024;

impl Tailer {
    pub fn new(
        s: TailSettings,
        positions: Arc<Positions>,
        metrics: Arc<Metrics>,
        outlet: Outlet,
        control: Control,
        first_start: bool,
    ) -> Tailer {
        let chunk = READ_CHUNK.min(s.batch_max_bytes.max(4096));
        Tailer {
            s,
            positions,
            metrics,
            outlet,
            stop: control.stop,
            wake: control.wake,
            rescan: control.rescan,
            first_start,
            files: Vec::new(),
            standby: Vec::new(),
            settling: Vec::new(),
            recent: std::collections::VecDeque::new(),
            draining: false,
            next_id: 1,
            batch: Batch::default(),
            batch_started: None,
            seq: 0,
            buf: vec![0; chunk],
            check_now: false,
        }
    }

    /// Runs until stopped, the exit file appears, (with `--oneshot`) everything is read, or the
    /// sinks go away.
    pub fn run(mut self) -> Ended {
        self.scan(true);
        self.first_start = false;
        let mut last_scan = Instant::now();
        let mut last_check = Instant::now();
        let mut last_settle_check = Instant::now();
        loop {
            let ending = if self.stop.load(Ordering::SeqCst) {
                Some(Ended::Drained)
            } else if self.s.exit_on_file.as_deref().is_some_and(Path::exists) {
                Some(Ended::ExitFile)
            } else if self.s.oneshot {
                Some(Ended::Oneshot)
            } else {
                None
            };
            if let Some(ending) = ending {
                let quiet = match ending {
                    Ended::Drained => self.s.drain_quiet,
                    _ => Duration::ZERO,
                };
                return match self.drain(quiet) {
                    Ok(()) => ending,
                    Err(()) => Ended::SinksClosed,
                };
            }

            let read = match self.read_round() {
                Ok(n) => n,
                Err(()) => return Ended::SinksClosed,
            };
            let now = Instant::now();
            self.flush_stale(now);
            if self.check_now || now.duration_since(last_check) >= self.s.poll_interval {
                self.check_now = false;
                self.check_files();
                last_check = now;
            } else if !self.settling.is_empty()
                && now.duration_since(last_settle_check) >= self.settle_tick()
            {
                // Not every round: each look opens the file, and reading may be busy.
                self.recheck_settling();
                last_settle_check = now;
            }
            if self.rescan.swap(false, Ordering::SeqCst)
                || now.duration_since(last_scan) >= self.s.scan_interval
            {
                self.scan(false);
                last_scan = now;
            }
            let batch_due = self
                .batch_started
                .is_some_and(|t| now.duration_since(t) >= self.s.batch_timeout);
            if (read == 0 || batch_due) && self.send_batch().is_err() {
                return Ended::SinksClosed;
            }
            if read == 0 {
                let wait = self.next_wait(now);
                if let Err(mpsc::RecvTimeoutError::Disconnected) = self.wake.recv_timeout(wait) {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// How often files waiting to be told are looked at between polls.
    fn settle_tick(&self) -> Duration {
        self.s.settle.max(Duration::from_millis(10))
    }

    /// How long to sleep when idle: until the next poll, or sooner for a multiline timeout.
    fn next_wait(&self, now: Instant) -> Duration {
        let mut wait = self.s.poll_interval;
        if !self.settling.is_empty() {
            wait = wait.min(self.settle_tick());
        }
        for t in &self.files {
            if let Some(since) = t.decoder.pending_since() {
                let due = (since + self.s.decode.multiline_timeout).saturating_duration_since(now);
                wait = wait.min(due.max(Duration::from_millis(1)));
            }
        }
        wait
    }

    /// Reads what is new in every file (fair shares); returns the bytes read.
    fn read_round(&mut self) -> Result<usize, ()> {
        let mut total = 0;
        for i in 0..self.files.len() {
            let mut share = 0;
            while share < FAIR_SHARE {
                let n = self.read_chunk(i);
                if n == 0 {
                    break;
                }
                share += n;
                if self.batch_full() {
                    self.send_full_batches()?;
                }
            }
            total += share;
        }
        Ok(total)
    }

    fn batch_full(&self) -> bool {
        self.batch.len() >= self.s.batch_max_lines || self.batch.bytes() >= self.s.batch_max_bytes
    }

    /// Reads one chunk of file `i` into the batch; returns the bytes read.
    fn read_chunk(&mut self, i: usize) -> usize {
        let t = &mut self.files[i];
        let n = match t.file.read_at(&mut self.buf, t.offset) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return 0,
            Err(e) => {
                tracing::warn!(file = %t.path.display(), error = %e, "read failed; retrying at the next poll");
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        // A file truncated and written again past where we were, between two looks, is not
        // shorter than our offset: what was just read is the middle of new content. Its first
        // bytes tell (one short read from the page cache); check_files starts it over.
        if !t.head.is_prefix_of(&t.file).unwrap_or(true) {
            self.check_now = true;
            return 0;
        }
        let start = t.offset;
        // The head grows with what we read, so that it covers every byte before our position.
        let have = t.head_bytes.len() as u64;
        if !t.head.is_fingerprint() && start <= have && have < start + n as u64 {
            let until = (start + n as u64).min(u64::from(FINGERPRINT_BYTES));
            t.head_bytes
                .extend_from_slice(&self.buf[(have - start) as usize..(until - start) as usize]);
            t.head = Head::of(&t.head_bytes);
            self.positions
                .update(t.id, t.head, t.dev_ino, &t.path.to_string_lossy());
        }
        t.offset += n as u64;
        t.size = t.size.max(t.offset);
        let now = Instant::now();
        let read_at = now_nanos();
        let before = t.reader.counts;
        let (id, label) = (t.id, &t.label);
        let batch = &mut self.batch;
        let decoder = &mut t.decoder;
        let emitted = &mut t.emitted;
        let invalid_before = decoder.counts;
        t.reader.feed(&self.buf[..n], start, &mut |line, end| {
            decoder.line(line, end, now, &mut |msg, end, fields| {
                batch.push(id, label, msg, end, read_at, fields);
                *emitted = end;
            });
        });
        if self.batch_started.is_none() && !self.batch.is_empty() {
            self.batch_started = Some(now);
        }
        let after = t.reader.counts;
        self.metrics.read(
            &t.label,
            after.lines - before.lines,
            n as u64,
            after.split - before.split,
            after.invalid_utf8 - before.invalid_utf8,
        );
        let d = t.decoder.counts;
        self.metrics.decoded(
            d.invalid - invalid_before.invalid,
            d.event_truncated - invalid_before.event_truncated,
        );
        n
    }

    fn flush_stale(&mut self, now: Instant) {
        for t in &mut self.files {
            if t.decoder.pending_since().is_none() {
                continue;
            }
            let (id, label, batch, emitted) = (t.id, &t.label, &mut self.batch, &mut t.emitted);
            t.decoder.flush_stale(now, &mut |msg, end, fields| {
                batch.push(id, label, msg, end, now_nanos(), fields);
                *emitted = end;
            });
        }
    }

    /// Ships everything pending in file `i`: a partial last line and any held event.
    fn flush_file(&mut self, i: usize) {
        let t = &mut self.files[i];
        let (id, label, batch, decoder, emitted) = (
            t.id,
            &t.label,
            &mut self.batch,
            &mut t.decoder,
            &mut t.emitted,
        );
        let now = Instant::now();
        let offset = t.offset;
        t.reader.flush(offset, &mut |line, end| {
            decoder.line(line, end, now, &mut |msg, end, fields| {
                batch.push(id, label, msg, end, now_nanos(), fields);
                *emitted = end;
            });
        });
        decoder.flush_all(&mut |msg, end, fields| {
            batch.push(id, label, msg, end, now_nanos(), fields);
            *emitted = end;
        });
    }

    fn send_batch(&mut self) -> Result<(), ()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_started = None;
        for piece in batch.split(self.s.batch_max_lines, self.s.batch_max_bytes) {
            self.send(piece)?;
        }
        Ok(())
    }

    /// Sends the full batches a read chunk completed and keeps the rest (less than a batch)
    /// as the batch being filled, so that a chunk crossing the bound does not become a full
    /// batch plus a small one.
    fn send_full_batches(&mut self) -> Result<(), ()> {
        let batch = std::mem::take(&mut self.batch);
        let mut pieces = batch.split(self.s.batch_max_lines, self.s.batch_max_bytes);
        let last = pieces.pop().unwrap_or_default();
        for piece in pieces {
            self.send(piece)?;
        }
        self.batch = last;
        if self.batch_full() {
            let full = std::mem::take(&mut self.batch);
            self.batch_started = None;
            self.send(full)?;
        } else if self.batch.is_empty() {
            self.batch_started = None;
        }
        Ok(())
    }

    fn send(&mut self, mut piece: Batch) -> Result<(), ()> {
        self.seq += 1;
        piece.seq = self.seq;
        (self.outlet)(piece)
    }

    /// Reads every file until nothing more comes, starting over a file found rewritten.
    fn read_to_end(&mut self) -> Result<usize, ()> {
        let mut read = 0;
        loop {
            let n = self.read_round()?;
            if self.check_now {
                self.check_now = false;
                self.check_files();
                continue;
            }
            if n == 0 {
                return Ok(read);
            }
            read += n;
        }
    }

    /// Reads every file to its end (and on, until they have been quiet for `quiet`), flushes
    /// everything pending, sends the last batch.
    fn drain(&mut self, quiet: Duration) -> Result<(), ()> {
        self.draining = true;
        self.scan(false);
        self.check_files();
        self.read_to_end()?;
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < quiet {
            self.send_batch()?;
            std::thread::sleep(self.s.poll_interval.min(quiet));
            self.scan(false);
            if self.read_to_end()? > 0 {
                quiet_since = Instant::now();
            }
        }
        for i in 0..self.files.len() {
            self.flush_file(i);
            if self.batch_full() {
                self.send_batch()?;
            }
        }
        self.send_batch()
    }
}
