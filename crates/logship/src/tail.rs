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
use crate::checkpoint::{Entry, FileId, Positions};
use crate::decode::{DecodeSettings, Decoder};
use crate::discover::{Globs, Wake};
use crate::identity::{DevIno, Head};
use crate::metrics::Metrics;
use crate::reader::LineReader;

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
    /// Bytes read so far (what the reader has consumed).
    offset: u64,
    /// Offset just past the last event handed to a batch.
    emitted: u64,
    reader: LineReader,
    decoder: Decoder,
    gone_since: Option<Instant>,
    size: u64,
}

struct Standby {
    path: PathBuf,
    file: File,
    dev_ino: DevIno,
    head: Head,
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
    /// Fingerprints of files let go or truncated lately, with how far they were read: a copy
    /// found after its original was truncated resumes there, even before the acknowledgement.
    recent: std::collections::VecDeque<(Head, u64, FileId)>,
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
            recent: std::collections::VecDeque::new(),
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

    /// How long to sleep when idle: until the next poll, or sooner for a multiline timeout.
    fn next_wait(&self, now: Instant) -> Duration {
        let mut wait = self.s.poll_interval;
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

    /// Finds new files; recognizes renamed and copied ones.
    fn scan(&mut self, initial: bool) {
        for path in self.s.globs.scan() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let dev_ino = DevIno::of(&meta);
            if let Some(t) = self.files.iter_mut().find(|t| t.dev_ino == dev_ino) {
                if t.path != path && (t.gone_since.is_some() || !t.path.exists()) {
                    // Renamed within the glob: still a file we watch, now under this name.
                    tracing::debug!(from = %t.path.display(), to = %path.display(), "file renamed");
                    t.path = path.clone();
                    t.gone_since = None;
                    self.positions
                        .update(t.id, t.head, t.dev_ino, &path.to_string_lossy());
                }
                continue;
            }
            if self.standby.iter().any(|s| s.dev_ino == dev_ino) {
                continue;
            }
            if let Err(e) = self.open(&path, initial) {
                tracing::warn!(file = %path.display(), error = %e, "cannot open {}; retrying at the next scan", path.display());
            }
        }
        self.metrics.files_watched.set(self.files.len() as i64);
    }

    fn open(&mut self, path: &Path, initial: bool) -> io::Result<()> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let dev_ino = DevIno::of(&meta);
        let size = meta.len();
        let head = Head::read(&file)?;
        if head.is_fingerprint()
            && self
                .files
                .iter()
                .any(|t| t.gone_since.is_none() && t.head == head && t.dev_ino != dev_ino)
        {
            tracing::info!(file = %path.display(), "{} starts like a file being read (a copy?); it waits and takes over if the original is truncated or removed", path.display());
            self.standby.push(Standby {
                path: path.to_path_buf(),
                file,
                dev_ino,
                head,
            });
            return Ok(());
        }
        let recent = head
            .is_fingerprint()
            .then(|| self.recent.iter().position(|(h, _, _)| *h == head))
            .flatten()
            .and_then(|i| self.recent.remove(i));
        let predecessor = recent.map(|(_, _, id)| id);
        let claimed = self.positions.claim(dev_ino, &file, head);
        let claimed = match (recent, claimed) {
            (Some((_, offset, _)), Some(mut entry)) => {
                entry.offset = entry.offset.max(offset);
                Some(entry)
            }
            (Some((_, offset, _)), None) => Some(Entry {
                path: String::new(),
                dev: 0,
                ino: 0,
                head_len: head.len,
                head_hash: head.hash,
                offset,
            }),
            (None, claimed) => claimed,
        };
        // A file that continues one we were reading (a copy, a file renamed while we were
        // down) is read ahead of the others, so its older lines ship before the newer lines
        // of the file that replaced it.
        let continues = claimed.as_ref().is_some_and(|e| e.offset > 0);
        let offset = match claimed {
            Some(entry) if entry.offset > size => {
                tracing::warn!(file = %path.display(), "{} is shorter than its checkpoint: truncated while we were down; reading it from the start", path.display());
                0
            }
            Some(entry) => entry.offset,
            None if initial && self.first_start && self.s.read_from == ReadFrom::End => size,
            None => 0,
        };
        self.track(
            path.to_path_buf(),
            file,
            dev_ino,
            head,
            offset,
            size,
            continues,
            predecessor,
        );
        Ok(())
    }

    /// Starts reading a file at `offset`; `first` puts it ahead of the others in each round;
    /// `predecessor` is the file it takes over from (see [`Positions::track_after`]).
    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        path: PathBuf,
        file: File,
        dev_ino: DevIno,
        head: Head,
        offset: u64,
        size: u64,
        first: bool,
        predecessor: Option<FileId>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let label: Arc<str> = path.to_string_lossy().into();
        self.positions.track_after(
            id,
            Entry {
                path: label.to_string(),
                dev: dev_ino.dev,
                ino: dev_ino.ino,
                head_len: head.len,
                head_hash: head.hash,
                offset,
            },
            predecessor,
        );
        tracing::info!(file = %label, offset, "watching {label} from offset {offset}");
        let tracked = Tracked {
            id,
            path,
            label,
            file,
            dev_ino,
            head,
            offset,
            emitted: offset,
            reader: LineReader::new(self.s.max_line_bytes),
            decoder: Decoder::new(&self.s.decode),
            gone_since: None,
            size,
        };
        if first {
            self.files.insert(0, tracked);
        } else {
            self.files.push(tracked);
        }
    }

    /// Rotation, truncation, deletion, growth of short files; lets go of finished files.
    fn check_files(&mut self) {
        let now = Instant::now();
        // Keyed by device and inode: truncation and promotion reorder and renumber the files.
        let keys: Vec<DevIno> = self.files.iter().map(|t| t.dev_ino).collect();
        // Per path: a file rotated away keeps its path as its label while it is read to its
        // end, beside the new file at that path; the lag reported is theirs together.
        let mut lags: std::collections::HashMap<Arc<str>, u64> = std::collections::HashMap::new();
        for key in keys {
            let Some(mut i) = self.index_of(key) else {
                continue;
            };
            let size = match self.files[i].file.metadata() {
                Ok(m) => m.len(),
                Err(_) => self.files[i].size,
            };
            self.files[i].size = size;
            let truncated = size < self.files[i].offset || !self.head_still_matches(i, size);
            if truncated {
                self.restart_after_truncation(i, size);
                let Some(j) = self.index_of(key) else {
                    continue;
                };
                i = j;
            }
            let t = &mut self.files[i];
            if t.gone_since.is_none() {
                let moved = match std::fs::metadata(&t.path) {
                    Ok(m) => DevIno::of(&m) != t.dev_ino,
                    Err(_) => true,
                };
                if moved {
                    tracing::info!(file = %t.path.display(), "{} was rotated or deleted; reading it to its end", t.path.display());
                    self.metrics.rotations.inc();
                    t.gone_since = Some(now);
                }
            }
            *lags.entry(Arc::clone(&t.label)).or_default() += self.positions.lag(t.id, size);
            let finished = t
                .gone_since
                .is_some_and(|since| now.duration_since(since) >= self.s.rotate_wait)
                && t.offset >= size;
            if finished {
                self.let_go(i);
            }
        }
        for (label, lag) in lags {
            if self.files.iter().any(|t| t.label == label) {
                self.metrics.lag(&label, lag);
            }
        }
        self.standby.retain(|s| s.path.exists());
        self.metrics.files_watched.set(self.files.len() as i64);
    }

    fn index_of(&self, key: DevIno) -> Option<usize> {
        self.files.iter().position(|t| t.dev_ino == key)
    }

    /// Reports whether a file's first bytes are still the ones we read (a file rewritten in
    /// place has others); for a file shorter than a fingerprint, also grows its head as it grows.
    fn head_still_matches(&mut self, i: usize, size: u64) -> bool {
        let t = &mut self.files[i];
        // The same test as the read path's (see read_chunk), so the two never disagree.
        match t.head.is_prefix_of(&t.file) {
            Ok(true) => {
                if !t.head.is_fingerprint() && size > u64::from(t.head.len) {
                    if let Ok(head) = Head::read(&t.file) {
                        t.head = head;
                        self.positions.update(t.id, head, t.dev_ino, &t.label);
                    }
                }
                true
            }
            Ok(false) => false,
            Err(_) => true,
        }
    }

    fn restart_after_truncation(&mut self, i: usize, size: u64) {
        self.metrics.truncations.inc();
        // Complete lines held in an event (multiline, CRI partials) are shipped; an incomplete
        // last line is dropped here, because its end is in the copy (if copytruncate made one),
        // which resumes where the last complete line ended.
        self.files[i].reader.reset();
        self.flush_file(i);
        let t = &mut self.files[i];
        tracing::info!(file = %t.path.display(), at = t.offset, size, "{} was truncated; reading it again from the start", t.path.display());
        let (old_head, old_offset, old_id) = (t.head, t.emitted, t.id);
        self.positions.release(t.id, t.emitted);
        let new_id = self.next_id;
        self.next_id += 1;
        t.id = new_id;
        t.offset = 0;
        t.emitted = 0;
        t.reader.reset();
        t.head = Head::read(&t.file).unwrap_or(Head { len: 0, hash: 0 });
        self.positions.track(
            new_id,
            Entry {
                path: t.label.to_string(),
                dev: t.dev_ino.dev,
                ino: t.dev_ino.ino,
                head_len: t.head.len,
                head_hash: t.head.hash,
                offset: 0,
            },
        );
        self.remember(old_head, old_offset, old_id);
        self.promote_standby(old_head, old_offset, old_id);
        // copytruncate copies before it truncates: find the copy now, before reading on.
        self.scan(false);
    }

    fn remember(&mut self, head: Head, offset: u64, id: FileId) {
        if head.is_fingerprint() {
            if self.recent.len() >= 64 {
                self.recent.pop_front();
            }
            self.recent.push_back((head, offset, id));
        }
    }

    /// A copy on standby takes over the position of the file it copied.
    fn promote_standby(&mut self, head: Head, offset: u64, predecessor: FileId) {
        let Some(pos) = self.standby.iter().position(|s| s.head == head) else {
            return;
        };
        let s = self.standby.swap_remove(pos);
        let size = s.file.metadata().map(|m| m.len()).unwrap_or(0);
        tracing::info!(file = %s.path.display(), offset, "{} takes over from offset {offset}", s.path.display());
        self.track(
            s.path,
            s.file,
            s.dev_ino,
            s.head,
            offset.min(size),
            size,
            true,
            Some(predecessor),
        );
    }

    fn let_go(&mut self, i: usize) {
        self.flush_file(i);
        let t = self.files.remove(i);
        tracing::info!(file = %t.path.display(), offset = t.offset, "done with {} (read to its end)", t.path.display());
        self.positions.release(t.id, t.emitted);
        self.remember(t.head, t.offset, t.id);
        // The new file at the same path (after a rename rotation) keeps the series.
        if !self.files.iter().any(|other| other.label == t.label) {
            self.metrics.forget(&t.label);
        }
        self.promote_standby(t.head, t.offset, t.id);
    }
}
