//! Model tests of the tailer: a deterministic harness drives the real [`Tailer`] through
//! sequences of file-system operations on a real temporary directory (append, rename rotation,
//! copytruncate with the copy seen whole or half written, delete and recreate with the inode
//! reused, rename out of the glob, rewrite in place), the order in which logship notices them
//! (a read, a check of the open files, a scan of the directory, each on its own), the
//! acknowledgements and checkpoint saves, and a kill and restart from the last saved checkpoint
//! at any step. What was shipped is then compared with a small model:
//!
//! - every line written is shipped at least once;
//! - the lines of one file's content are shipped in order (a copy continues its original);
//! - a line is shipped again only after a kill that found it shipped but not yet acknowledged
//!   and saved (the documented replay window), at most once per such kill.
//!
//! Short sequences are run exhaustively; longer ones from seeds (a failure prints its seed and
//! its operations; `LOGSHIP_MODEL_SEED=N` replays one). Vector's `file_watcher` model tests
//! (`lib/file-source/src/file_watcher/tests/`) are the example this follows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{Control, ReadFrom, TailSettings, Tailer};
use crate::batch::Batch;
use crate::checkpoint::{FileId, Positions, Store};
use crate::decode::{DecodeSettings, Format};
use crate::discover::Globs;
use crate::identity::FINGERPRINT_BYTES;
use crate::metrics::Metrics;

/// How a stream's file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rename,
    CopyTruncate,
    Recreate,
}

const STREAMS: [(&str, Kind); 3] = [
    ("r", Kind::Rename),
    ("t", Kind::CopyTruncate),
    ("d", Kind::Recreate),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Appends lines to the stream's file (one line stays under a fingerprint, three pass it).
    Append(usize, u8),
    /// Rename rotation within the glob: `x.log.N` -> `x.log.N+1`, `x.log` -> `x.log.1`.
    Rotate(usize),
    /// copytruncate, the copy written whole before the truncation.
    CopyTruncate(usize),
    /// copytruncate's copy caught half written: its first 100 bytes only, for now.
    CopyBegin(usize),
    /// The copy completed, then the original truncated.
    CopyEnd(usize),
    /// The file deleted; the next append creates it again (usually on the same inode).
    Delete(usize),
    /// The file moved out of the glob.
    MoveOut(usize),
    /// The file truncated and written again in place with more lines than it had.
    Rewrite(usize),
    /// logship reads what is new (and sends a batch).
    Read,
    /// logship checks its open files (rotation, truncation, settling).
    Check,
    /// logship scans the directory (change events, the scan timer).
    Scan,
    /// The sinks acknowledge every batch handed to them.
    Ack,
    /// The checkpoint file is written.
    Save,
    /// SIGKILL and restart from the checkpoint file.
    Kill,
}

struct Stream {
    name: &'static str,
    kind: Kind,
    /// The lines in the current file.
    current: Vec<u64>,
    /// Copies and rotated files inside the glob, newest first, by generation.
    rotated: usize,
    /// A copy begun and not ended: its path and the lines it will hold.
    copying: Option<(PathBuf, Vec<u64>)>,
    /// Generation of the current file, for the per-content order check.
    generation: u64,
}

/// One shipped line: stream, sequence number.
type Line = (usize, u64);

/// A batch handed over: the positions it acknowledges and its lines.
type Handed = (Vec<(FileId, u64)>, Vec<Line>);

struct Shipped {
    /// Every line handed to the sinks, in order.
    lines: Vec<Line>,
    /// Batches handed over and not yet acknowledged: their positions and their lines.
    pending: Vec<Handed>,
}

struct World {
    dir: tempfile::TempDir,
    logs: PathBuf,
    store: Store,
    streams: Vec<Stream>,
    next_seq: u64,
    /// Which generation each line was written in (lines of one content stay in order).
    generation_of: HashMap<Line, (usize, u64)>,
    shipped: Arc<Mutex<Shipped>>,
    tailer: Option<Tailer>,
    positions: Arc<Positions>,
    /// Lines acknowledged since the last save.
    acked_unsaved: Vec<Line>,
    /// Lines acknowledged and saved.
    saved: HashSet<Line>,
    /// How many kills found each line shipped but not yet saved: its allowed replays.
    windows: HashMap<Line, usize>,
    log: Vec<Op>,
    /// What happened, for a failure's message: each operation, the lines each one shipped,
    /// the checkpoint entries each restart loaded.
    trace: Vec<String>,
}

fn line_text(stream: &str, seq: u64) -> String {
    // 89 bytes and a newline: one line is under a fingerprint (256 bytes), three are over.
    format!("{stream} {seq:08} {}", ".".repeat(78))
}

fn parse_line(text: &str) -> Line {
    let (name, rest) = text.split_once(' ').expect("a model line");
    let stream = STREAMS
        .iter()
        .position(|(n, _)| *n == name)
        .expect("a known stream");
    (stream, rest[..8].parse().expect("a sequence number"))
}

impl World {
    fn new() -> World {
        // On tmpfs where there is one: the checkpoint saves fsync, which is the real code's
        // business but would make thousands of runs slow on a disk.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let logs = dir.path().join("logs");
        fs::create_dir(&logs).expect("logs dir");
        fs::create_dir(dir.path().join("archive")).expect("archive dir");
        let store = Store::open(&dir.path().join("checkpoints"), true).expect("store");
        let streams = STREAMS
            .iter()
            .map(|&(name, kind)| Stream {
                name,
                kind,
                current: Vec::new(),
                rotated: 0,
                copying: None,
                generation: 0,
            })
            .collect();
        let mut w = World {
            dir,
            logs,
            store,
            streams,
            next_seq: 1,
            generation_of: HashMap::new(),
            shipped: Arc::new(Mutex::new(Shipped {
                lines: Vec::new(),
                pending: Vec::new(),
            })),
            tailer: None,
            positions: Arc::new(Positions::new(Vec::new())),
            acked_unsaved: Vec::new(),
            saved: HashSet::new(),
            windows: HashMap::new(),
            log: Vec::new(),
            trace: Vec::new(),
        };
        w.start();
        w
    }

    fn start(&mut self) {
        // A new process: a new store (its saves are numbered from the new positions').
        self.store = Store::open(&self.dir.path().join("checkpoints"), true).expect("store");
        let loaded = self.store.load();
        self.trace.push(format!(
            "  start with {:?}",
            loaded
                .entries
                .iter()
                .map(|e| format!(
                    "{} {}:{} head {} at {}",
                    e.path.rsplit('/').next().unwrap_or_default(),
                    e.ino,
                    e.head_hash % 1000,
                    e.head_len,
                    e.offset
                ))
                .collect::<Vec<_>>()
        ));
        self.positions = Arc::new(Positions::new(loaded.entries));
        let glob = format!("{}/*.log*", self.logs.display());
        let settings = TailSettings {
            globs: Globs::new(&[glob], &[]).expect("globs"),
            read_from: ReadFrom::Head,
            max_line_bytes: 64 * 1024,
            decode: DecodeSettings {
                format: Format::Raw,
                multiline_start: None,
                multiline_timeout: Duration::from_secs(1),
                max_event_bytes: 1 << 20,
            },
            // Small batches, so that a read makes several and a kill can split them.
            batch_max_lines: 2,
            batch_max_bytes: 1 << 20,
            batch_timeout: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(3600),
            scan_interval: Duration::from_secs(3600),
            // Let go as soon as a file is gone and read: the most hostile setting.
            rotate_wait: Duration::ZERO,
            // Two looks with the same size settle a file: the operations decide when.
            settle: Duration::ZERO,
            exit_on_file: None,
            oneshot: false,
            drain_quiet: Duration::ZERO,
        };
        let shipped = Arc::clone(&self.shipped);
        let outlet: super::Outlet = Box::new(move |batch: Batch| {
            let lines: Vec<Line> = batch
                .events
                .iter()
                .map(|e| parse_line(&batch.text(e)))
                .collect();
            let mut s = shipped.lock().expect("shipped");
            s.lines.extend(&lines);
            s.pending.push((batch.offsets.clone(), lines));
            Ok(())
        });
        let (_tx, rx) = mpsc::sync_channel(1);
        let (metrics, _registry) = Metrics::new();
        let mut tailer = Tailer::new(
            settings,
            Arc::clone(&self.positions),
            Arc::new(metrics),
            outlet,
            Control {
                stop: Arc::new(AtomicBool::new(false)),
                wake: rx,
                rescan: Arc::new(AtomicBool::new(false)),
            },
            loaded.first_start,
        );
        tailer.scan(true);
        tailer.first_start = false;
        self.tailer = Some(tailer);
    }

    fn tailer(&mut self) -> &mut Tailer {
        self.tailer.as_mut().expect("a running tailer")
    }

    fn path(&self, s: usize) -> PathBuf {
        self.logs.join(format!("{}.log", self.streams[s].name))
    }

    fn rotated_path(&self, s: usize, n: usize) -> PathBuf {
        self.logs.join(format!("{}.log.{n}", self.streams[s].name))
    }

    /// Renames `x.log.N` up by one, newest last, to make room for a new `x.log.1`.
    fn shift_up(&mut self, s: usize) {
        for n in (1..=self.streams[s].rotated).rev() {
            fs::rename(self.rotated_path(s, n), self.rotated_path(s, n + 1)).expect("shift up");
        }
        self.streams[s].rotated += 1;
    }

    fn content(&self, s: usize, lines: &[u64]) -> String {
        lines
            .iter()
            .map(|&q| line_text(self.streams[s].name, q) + "\n")
            .collect()
    }

    /// Whether every line of the stream's current file is acknowledged and saved: only then
    /// may it be destroyed (deleted, moved out, rewritten) without a legitimate loss.
    fn all_saved(&self, s: usize) -> bool {
        self.streams[s]
            .current
            .iter()
            .all(|&q| self.saved.contains(&(s, q)))
    }

    /// Whether `op` can be applied now (the model's rules for the writer).
    fn allowed(&self, op: Op) -> bool {
        let kind = |s: usize| self.streams[s].kind;
        let copying = |s: usize| self.streams[s].copying.is_some();
        let exists = |s: usize| self.path(s).exists();
        match op {
            Op::Append(s, _) => !copying(s),
            Op::Rotate(s) => kind(s) == Kind::Rename && exists(s),
            Op::CopyTruncate(s) | Op::CopyBegin(s) => {
                kind(s) == Kind::CopyTruncate && exists(s) && !copying(s)
            }
            Op::CopyEnd(s) => copying(s),
            Op::Delete(s) | Op::MoveOut(s) => {
                kind(s) == Kind::Recreate && exists(s) && self.all_saved(s)
            }
            Op::Rewrite(s) => exists(s) && !copying(s) && self.all_saved(s),
            _ => true,
        }
    }

    fn apply(&mut self, op: Op) {
        let before = self.shipped.lock().expect("shipped").lines.len();
        self.apply_op(op);
        let shipped = self.shipped.lock().expect("shipped");
        let new = &shipped.lines[before..];
        self.trace.push(if new.is_empty() {
            format!("{op:?}")
        } else {
            format!("{op:?} shipped {new:?}")
        });
    }

    fn apply_op(&mut self, op: Op) {
        self.log.push(op);
        match op {
            Op::Append(s, n) => {
                let seqs: Vec<u64> = (0..n as u64).map(|i| self.next_seq + i).collect();
                self.next_seq += n as u64;
                let text = self.content(s, &seqs);
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path(s))
                    .expect("open for append");
                f.write_all(text.as_bytes()).expect("append");
                let g = self.streams[s].generation;
                for &q in &seqs {
                    self.generation_of.insert((s, q), (s, g));
                }
                self.streams[s].current.extend(seqs);
            }
            Op::Rotate(s) => {
                self.shift_up(s);
                fs::rename(self.path(s), self.rotated_path(s, 1)).expect("rotate");
                self.new_generation(s);
            }
            Op::CopyTruncate(s) => {
                self.shift_up(s);
                fs::copy(self.path(s), self.rotated_path(s, 1)).expect("copy");
                truncate(&self.path(s));
                self.new_generation(s);
            }
            Op::CopyBegin(s) => {
                self.shift_up(s);
                let whole = fs::read(self.path(s)).expect("read original");
                let copy = self.rotated_path(s, 1);
                fs::write(&copy, &whole[..whole.len().min(100)]).expect("half a copy");
                self.streams[s].copying = Some((copy, self.streams[s].current.clone()));
            }
            Op::CopyEnd(s) => {
                let (copy, _) = self.streams[s].copying.take().expect("a copy begun");
                let whole = fs::read(self.path(s)).expect("read original");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&copy)
                    .expect("open copy");
                let have = f.metadata().expect("copy metadata").len() as usize;
                f.write_all_at(&whole[have..], have as u64)
                    .expect("finish copy");
                truncate(&self.path(s));
                self.new_generation(s);
            }
            Op::Delete(s) => {
                fs::remove_file(self.path(s)).expect("delete");
                self.new_generation(s);
            }
            Op::MoveOut(s) => {
                let to = self.dir.path().join("archive").join(format!(
                    "{}.{}",
                    self.streams[s].name, self.streams[s].generation
                ));
                fs::rename(self.path(s), to).expect("move out");
                self.new_generation(s);
            }
            Op::Rewrite(s) => {
                let n = self.streams[s].current.len() as u64 + 2;
                let seqs: Vec<u64> = (0..n).map(|i| self.next_seq + i).collect();
                self.next_seq += n;
                self.new_generation(s);
                let text = self.content(s, &seqs);
                // In place: the same inode, other content, longer than before.
                let f = OpenOptions::new()
                    .write(true)
                    .open(self.path(s))
                    .expect("open for rewrite");
                f.set_len(0).expect("truncate");
                f.write_all_at(text.as_bytes(), 0).expect("rewrite");
                let g = self.streams[s].generation;
                for &q in &seqs {
                    self.generation_of.insert((s, q), (s, g));
                }
                self.streams[s].current = seqs;
            }
            Op::Read => {
                let t = self.tailer();
                t.read_round().expect("outlet");
                if t.check_now {
                    t.check_now = false;
                    t.check_files();
                }
                t.send_batch().expect("outlet");
            }
            Op::Check => self.tailer().check_files(),
            Op::Scan => self.tailer().scan(false),
            Op::Ack => self.ack(),
            Op::Save => {
                let snapshot = self.positions.snapshot();
                for e in &snapshot.entries {
                    // The invariant whose breach lost lines in CI: an entry's head covers every
                    // byte before its offset, so no other content can ever claim that offset.
                    assert!(
                        u64::from(e.head_len) >= e.offset.min(u64::from(FINGERPRINT_BYTES)),
                        "a checkpoint entry's head ({} bytes) does not cover its offset {}: {e:?}",
                        e.head_len,
                        e.offset
                    );
                }
                let written = self.store.save(&snapshot).expect("save checkpoint");
                assert!(written, "a newer snapshot was written already");
                self.saved.extend(self.acked_unsaved.drain(..));
            }
            Op::Kill => {
                self.tailer = None;
                let mut shipped = self.shipped.lock().expect("shipped");
                let mut replayable: Vec<Line> = self.acked_unsaved.drain(..).collect();
                for (_, lines) in shipped.pending.drain(..) {
                    replayable.extend(lines);
                }
                drop(shipped);
                for line in replayable {
                    *self.windows.entry(line).or_default() += 1;
                }
                self.start();
            }
        }
    }

    fn new_generation(&mut self, s: usize) {
        self.streams[s].generation += 1;
        self.streams[s].current.clear();
    }

    fn ack(&mut self) {
        let pending: Vec<_> = self
            .shipped
            .lock()
            .expect("shipped")
            .pending
            .drain(..)
            .collect();
        for (offsets, lines) in pending {
            self.positions.acknowledge(&offsets);
            self.acked_unsaved.extend(lines);
        }
    }

    /// Lets logship see everything, as its timers would, and drain.
    fn finish(&mut self) {
        for s in 0..self.streams.len() {
            if self.streams[s].copying.is_some() {
                self.apply(Op::CopyEnd(s));
            }
        }
        for _ in 0..2 {
            for op in [Op::Read, Op::Check, Op::Scan, Op::Check, Op::Read] {
                self.apply(op);
            }
        }
        self.tailer().drain(Duration::ZERO).expect("drain");
        self.ack();
    }

    /// Compares what was shipped with the model; Err says what differs.
    fn verify(&self) -> Result<(), String> {
        let shipped = self.shipped.lock().expect("shipped");
        let mut count: BTreeMap<Line, usize> = BTreeMap::new();
        let mut last_in_content: HashMap<(usize, u64), u64> = HashMap::new();
        for &line in &shipped.lines {
            let n = count.entry(line).or_default();
            *n += 1;
            if *n > 1 {
                let allowed = self.windows.get(&line).copied().unwrap_or(0);
                if *n > 1 + allowed {
                    return Err(format!(
                        "line {line:?} shipped {n} times, allowed {} (kills that found it unsaved: {allowed})",
                        1 + allowed
                    ));
                }
                continue;
            }
            let content = self.generation_of[&line];
            let last = last_in_content.entry(content).or_default();
            if line.1 < *last {
                return Err(format!(
                    "line {line:?} shipped after {:?} of the same content (out of order)",
                    (line.0, *last)
                ));
            }
            *last = line.1;
        }
        let missing: Vec<&Line> = self
            .generation_of
            .keys()
            .filter(|l| !count.contains_key(l))
            .collect();
        if !missing.is_empty() {
            let mut missing = missing;
            missing.sort();
            return Err(format!("lines never shipped: {missing:?}"));
        }
        Ok(())
    }
}

fn truncate(path: &Path) {
    File::options()
        .write(true)
        .open(path)
        .expect("open to truncate")
        .set_len(0)
        .expect("truncate");
}

/// Runs `ops` (skipping the ones the writer's rules do not allow then) and checks the model.
fn run(ops: &[Op]) -> Result<(), String> {
    let mut w = World::new();
    for &op in ops {
        if w.allowed(op) {
            w.apply(op);
        }
    }
    w.finish();
    w.verify().map_err(|e| {
        format!(
            "{e}\noperations applied: {:?}\nwhat happened:\n{}",
            w.log,
            w.trace.join("\n")
        )
    })
}

fn one_stream_ops(s: usize) -> Vec<Op> {
    let mut ops = vec![Op::Append(s, 1), Op::Append(s, 3)];
    ops.extend(match STREAMS[s].1 {
        Kind::Rename => vec![Op::Rotate(s)],
        Kind::CopyTruncate => vec![Op::CopyTruncate(s), Op::CopyBegin(s), Op::CopyEnd(s)],
        Kind::Recreate => vec![Op::Delete(s), Op::MoveOut(s)],
    });
    ops.push(Op::Rewrite(s));
    ops
}

const NOTICES: [Op; 6] = [Op::Read, Op::Check, Op::Scan, Op::Ack, Op::Save, Op::Kill];

/// Every sequence of `len` operations over one stream's operations and the notices, each
/// started from a file that is already being read (or, with `fresh`, from nothing).
fn exhaustive(s: usize, len: usize, fresh: bool) {
    let mut alphabet = one_stream_ops(s);
    alphabet.extend(NOTICES);
    let prefix: Vec<Op> = if fresh {
        Vec::new()
    } else {
        vec![Op::Append(s, 3), Op::Read, Op::Check, Op::Ack, Op::Save]
    };
    let total = alphabet.len().pow(len as u32);
    let mut failures = Vec::new();
    for n in 0..total {
        let mut ops = prefix.clone();
        let mut k = n;
        for _ in 0..len {
            ops.push(alphabet[k % alphabet.len()]);
            k /= alphabet.len();
        }
        if let Err(e) = run(&ops) {
            failures.push(e);
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing sequences (of {total}), the first:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_short_sequence_of_rename_rotations_keeps_the_model() {
    exhaustive(0, 4, false);
    exhaustive(0, 3, true);
}

#[test]
fn every_short_sequence_of_copytruncates_keeps_the_model() {
    exhaustive(1, 4, false);
    exhaustive(1, 3, true);
}

#[test]
fn every_short_sequence_of_deletions_and_recreations_keeps_the_model() {
    exhaustive(2, 4, false);
    exhaustive(2, 3, true);
}

/// A small generator (xorshift), so a seed means the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_ops(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut all: Vec<Op> = (0..STREAMS.len()).flat_map(one_stream_ops).collect();
    // Appends and notices come more often than rotations, as in life.
    for s in 0..STREAMS.len() {
        all.extend([Op::Append(s, 1), Op::Append(s, 3), Op::Append(s, 3)]);
    }
    all.extend(NOTICES);
    all.extend([Op::Read, Op::Check, Op::Scan, Op::Ack, Op::Save]);
    (0..len).map(|_| all[rng.below(all.len())]).collect()
}

#[test]
fn random_long_sequences_over_three_streams_keep_the_model() {
    let seeds: Vec<u64> = match std::env::var("LOGSHIP_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("LOGSHIP_MODEL_SEED is a number")],
        Err(_) => {
            let n = std::env::var("LOGSHIP_MODEL_SEEDS")
                .map_or(400, |n| n.parse().expect("LOGSHIP_MODEL_SEEDS is a number"));
            (1..=n).collect()
        }
    };
    let len = std::env::var("LOGSHIP_MODEL_LEN")
        .map_or(60, |n| n.parse().expect("LOGSHIP_MODEL_LEN is a number"));
    for seed in seeds {
        let ops = random_ops(seed, len);
        if let Err(e) = run(&ops) {
            panic!("seed {seed} (replay with LOGSHIP_MODEL_SEED={seed}):\n{e}");
        }
    }
}

/// The cause of the 84 lines CI lost (4541-4624 of the copytruncate stream, in
/// `every_line_survives_the_torture_with_a_flapping_http_sink` on cfe83d2), as the events ran:
///
/// 1. logship (re)starts while `copytrunc.log` is empty, just truncated: its head is empty.
/// 2. The reader is held in one long round (a sink in retry backoff); the file fills with a
///    whole generation, which it reads without a check of the files in between, so the empty
///    head (only `check_files` grew it) stays empty.
/// 3. The copy is made and the original truncated; `check_files` sees `size < offset` (and so
///    never grows the head) and releases the old generation with its empty head, at the
///    acknowledged offset, which trails the read one: the sinks were behind.
/// 4. The next generation is read and shipped up to a burst's end; SIGKILL.
/// 5. At the restart, the released entry (same inode, an empty head: a prefix of anything)
///    claims the file, which now holds the next generation, and reading resumes at the old
///    generation's acknowledged offset: the bytes between what the new generation had shipped
///    and that offset were never read.
///
/// With the head grown from what is read, the released entry's head is the old generation's
/// first 256 bytes, which the new generation does not start with.
#[test]
fn the_ci_loss_an_empty_head_claimed_across_generations_is_gone() {
    let mut w = World::new();
    let t = 1;
    fs::write(w.path(t), "").expect("empty file");
    w.apply(Op::Scan);
    w.apply(Op::Check);
    assert_eq!(w.tailer().files.len(), 1, "the empty file is tracked");
    assert_eq!(w.tailer().files[0].head.len, 0);
    // A whole generation read in one round, without a check of the files.
    for _ in 0..10 {
        w.apply(Op::Append(t, 3));
    }
    w.apply(Op::Read);
    // The sinks acknowledge only the first batches.
    let first: Vec<Handed> = {
        let mut shipped = w.shipped.lock().expect("shipped");
        let n = shipped.pending.len() / 2;
        shipped.pending.drain(..n).collect()
    };
    for (offsets, lines) in first {
        w.positions.acknowledge(&offsets);
        w.acked_unsaved.extend(lines);
    }
    w.apply(Op::CopyTruncate(t));
    w.apply(Op::Check);
    w.apply(Op::Scan);
    for _ in 0..4 {
        w.apply(Op::Append(t, 3));
    }
    w.apply(Op::Read);
    w.apply(Op::Ack);
    w.apply(Op::Save);
    for _ in 0..4 {
        w.apply(Op::Append(t, 3));
    }
    w.apply(Op::Kill);
    w.finish();
    if let Err(e) = w.verify() {
        panic!("{e}\n{}", w.trace.join("\n"));
    }
}
