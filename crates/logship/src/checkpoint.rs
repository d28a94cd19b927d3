//! Where reading resumes after a restart. One JSON file, `checkpoints.json`, written atomically
//! (temp file, fsync, rename, fsync of the directory) and only with offsets the sinks have
//! acknowledged, so a crash at any instant loses nothing: at worst the last unacknowledged batch
//! is shipped again. A corrupt file is reported and set aside (renamed), never a crash loop.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::identity::{DevIno, Head};

/// The file name inside the checkpoint directory.
pub const FILE_NAME: &str = "checkpoints.json";
const FORMAT_VERSION: u32 = 1;
/// How many finished files (rotated away, deleted, truncated) are remembered at most, so that a
/// copy of one that shows up again is recognized. The oldest are forgotten first.
pub const MAX_RELEASED: usize = 4096;
/// How long a finished file is remembered at least (within [`MAX_RELEASED`]): a copy, a file
/// renamed further up a rotation chain, or one found after a restart within this window resumes
/// where it was acknowledged. Vector's checkpointer keeps a removed file's position for 60 s
/// (`EXPIRATION_GRACE_DURATION` in its file-source `checkpointer.rs`); rotation schemes that copy
/// late (logrotate's `delaycompress`) or a sidecar down for minutes need longer.
pub const RELEASED_RETENTION_SECS: u64 = 600;
/// How many of a path's latest finished files are remembered past [`RELEASED_RETENTION_SECS`]
/// (within [`MAX_RELEASED`]): its last generations, for a logship that was down longer.
pub const RELEASED_KEEP_PER_PATH: usize = 8;

/// A file's identity and acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub head_len: u32,
    pub head_hash: u64,
    /// Every byte before this offset has been acknowledged by every sink.
    pub offset: u64,
    /// When the file was let go or truncated (Unix seconds): the entry is then only remembered,
    /// and expires (see [`RELEASED_RETENTION_SECS`]). None while a file is tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
}

impl Entry {
    pub fn head(&self) -> Head {
        Head {
            len: self.head_len,
            hash: self.head_hash,
        }
    }

    pub fn dev_ino(&self) -> DevIno {
        DevIno {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    files: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {dir} is not writable ({source}); set --checkpoint-dir to a writable volume (e.g. an emptyDir)")]
    NotWritable { dir: String, source: io::Error },
    #[error("writing checkpoints to {path} failed: {source}")]
    Write { path: String, source: io::Error },
}

/// The checkpoint file on disk. Clones share one writer lock, so that saves never run at the
/// same time (they share the temp file) and an older snapshot never replaces a newer one.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    path: PathBuf,
    /// The generation of the snapshot on disk (0: none written by this process).
    written: Arc<Mutex<u64>>,
}

/// The positions at one instant, numbered: a higher generation was taken later, so it is at
/// least as far on in every file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    pub entries: Vec<Entry>,
}

/// What was found at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<Entry>,
    /// No checkpoint file existed: this is the very first start (`--read-from` applies).
    pub first_start: bool,
}

impl Store {
    /// Creates the directory if needed and proves it is writable. With `parents` false (the
    /// default place, beside the logs), a directory whose parent does not exist is not created
    /// now, nor its parents ever: it is made at the first save that has something to keep,
    /// once the logs' directory has appeared.
    pub fn open(dir: &Path, parents: bool) -> Result<Store, CheckpointError> {
        let not_writable = |source| CheckpointError::NotWritable {
            dir: dir.display().to_string(),
            source,
        };
        let store = Store {
            dir: dir.to_path_buf(),
            path: dir.join(FILE_NAME),
            written: Arc::new(Mutex::new(0)),
        };
        if !parents && dir.parent().is_some_and(|p| !p.exists()) {
            return Ok(store);
        }
        if parents {
            fs::create_dir_all(dir).map_err(not_writable)?;
        } else if let Err(e) = fs::create_dir(dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(not_writable(e));
            }
        }
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(not_writable)?;
        let _ = fs::remove_file(&probe);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoints; a corrupt file is renamed aside and reported.
    pub fn load(&self) -> Loaded {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Loaded {
                    entries: Vec::new(),
                    first_start: true,
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e,
                    "cannot read the checkpoint file; files will be read from their start");
                return Loaded::default();
            }
        };
        match serde_json::from_str::<OnDisk>(&text) {
            Ok(on_disk) if on_disk.version == FORMAT_VERSION => Loaded {
                entries: on_disk.files,
                first_start: false,
            },
            Ok(on_disk) => {
                self.set_aside(&format!("unknown format version {}", on_disk.version));
                Loaded::default()
            }
            Err(e) => {
                self.set_aside(&e.to_string());
                Loaded::default()
            }
        }
    }

    fn set_aside(&self, reason: &str) {
        let aside = self.dir.join(format!(
            "{FILE_NAME}.corrupt-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        ));
        let moved = fs::rename(&self.path, &aside);
        tracing::error!(
            path = %self.path.display(), aside = %aside.display(), reason,
            "the checkpoint file is corrupt ({reason}); it was moved to {} and files are read from their start (lines may be shipped twice){}",
            aside.display(),
            moved.err().map(|e| format!("; moving it failed: {e}")).unwrap_or_default()
        );
    }

    /// Writes `snapshot` atomically: a reader sees the old file or the new one, never a mix.
    /// Saves are serialized; a snapshot older than the one already written is skipped (returns
    /// false), which happens when a periodic save was still running as the final one was made.
    pub fn save(&self, snapshot: &Snapshot) -> Result<bool, CheckpointError> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if snapshot.generation <= *written {
            return Ok(false);
        }
        self.write(&snapshot.entries)?;
        *written = snapshot.generation;
        Ok(true)
    }

    fn write(&self, entries: &[Entry]) -> Result<(), CheckpointError> {
        let err = |source| CheckpointError::Write {
            path: self.path.display().to_string(),
            source,
        };
        if !self.dir.exists() {
            if entries.is_empty() {
                // Nothing read yet from logs whose directory is missing: nothing to keep.
                return Ok(());
            }
            if let Err(e) = fs::create_dir(&self.dir) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(err(e));
                }
            }
        }
        let body = serde_json::to_vec(&OnDisk {
            version: FORMAT_VERSION,
            files: entries.to_vec(),
        })
        .map_err(|e| err(io::Error::other(e)))?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

/// A tracked file's number for the life of the process.
pub type FileId = u64;

/// Seconds since the Unix epoch, for [`Entry::released_at`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[derive(Debug)]
struct Tracked {
    entry: Entry,
    released: Option<u64>,
    /// The file this one took over from (a copy or a rename found by its first bytes), which the
    /// reader had read further than the sinks had acknowledged: acknowledgements of that file
    /// advance this one too, and this one's position never runs ahead of them.
    predecessor: Option<FileId>,
}

/// What [`Positions::claim`] found for a file about to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The remembered identity and acknowledged offset.
    pub entry: Entry,
    /// A file still tracked (let go or truncated, its last lines not yet acknowledged) with the
    /// same content: the new file follows its acknowledgements.
    pub tracked: Option<FileId>,
}

/// The positions of every file, shared by the reader (which registers and releases files) and
/// the acknowledgement path (which advances offsets). Saved by the checkpoint task, which
/// [`Positions::changed`] wakes.
#[derive(Debug, Default)]
pub struct Positions {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    tracked: HashMap<FileId, Tracked>,
    /// Entries loaded at start or released since, not tracked by any open file; each with
    /// [`Entry::released_at`] set.
    remembered: Vec<Entry>,
    dirty: bool,
    /// Snapshots taken so far.
    generation: u64,
}

impl Positions {
    /// Positions from the checkpoint file. Its entries are remembered, not tracked, until a file
    /// claims them; the ones of files tracked when it was written count as released now.
    pub fn new(loaded: Vec<Entry>) -> Positions {
        let now = unix_now();
        let remembered = loaded
            .into_iter()
            .map(|mut e| {
                e.released_at.get_or_insert(now);
                e
            })
            .collect();
        let mut state = State {
            remembered,
            ..State::default()
        };
        state.expire(now);
        Positions {
            state: Mutex::new(state),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the state changed and wakes the checkpoint task.
    fn touch(&self, state: &mut State) {
        state.dirty = true;
        self.changed.notify_one();
    }

    /// Resolves when positions changed since the last snapshot was taken (or since the last
    /// call): the checkpoint task waits on it instead of polling.
    pub async fn changed(&self) {
        if self.lock().dirty {
            return;
        }
        self.changed.notified().await;
    }

    /// The remembered position of `file`, whose current head is `head` (see
    /// [`crate::identity`]).
    ///
    /// - A full fingerprint matches by content alone, among the remembered entries and the
    ///   tracked ones (a copy of a file still being read to its end), and the furthest
    ///   acknowledged offset wins: every such entry describes the same bytes. A remembered match
    ///   is kept, not consumed, so that a second copy (a rotation chain renamed further up, a
    ///   restart) resumes as well; it expires like any other.
    /// - A shorter head needs the same device and inode, and the file must still start with the
    ///   bytes it was taken from; or, when the file it described was truncated in place since
    ///   (its path holds that inode with other bytes: copytruncate while logship was down), any
    ///   file that starts with all those bytes is its copy. That entry is consumed, since the
    ///   content it described is now tracked again.
    pub fn claim(&self, dev_ino: DevIno, file: &File, head: Head) -> Option<Claim> {
        let mut state = self.lock();
        if head.is_fingerprint() {
            let remembered = state
                .remembered
                .iter()
                .filter(|e| e.head() == head)
                .max_by_key(|e| e.offset)
                .map(|e| Claim {
                    entry: e.clone(),
                    tracked: None,
                });
            let tracked = state
                .tracked
                .iter()
                .filter(|(_, t)| t.entry.head() == head)
                .max_by_key(|(_, t)| t.entry.offset)
                .map(|(&id, t)| Claim {
                    entry: t.entry.clone(),
                    tracked: Some(id),
                });
            let found = match (remembered, tracked) {
                (Some(r), Some(t)) if r.entry.offset > t.entry.offset => Some(Claim {
                    entry: r.entry,
                    tracked: t.tracked,
                }),
                (r, Some(t)) => Some(Claim {
                    entry: Entry {
                        offset: t.entry.offset.max(r.map_or(0, |r| r.entry.offset)),
                        ..t.entry
                    },
                    tracked: t.tracked,
                }),
                (r, None) => r,
            };
            if found.is_some() {
                return found;
            }
        }
        // The furthest of them, should several describe these bytes: each offset is within
        // the bytes matched, so each is safe, and the furthest replays least.
        let found = state
            .remembered
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                let theirs = e.head();
                !theirs.is_fingerprint()
                    && head.len >= theirs.len
                    && (e.dev_ino() == dev_ino || truncated_in_place(e))
                    && theirs.is_prefix_of(file).unwrap_or(false)
            })
            .max_by_key(|(_, e)| e.offset)
            .map(|(i, _)| i)?;
        let entry = state.remembered.swap_remove(found);
        self.touch(&mut state);
        Some(Claim {
            entry,
            tracked: None,
        })
    }

    /// Starts tracking a file at `entry.offset`.
    pub fn track(&self, id: FileId, entry: Entry) {
        self.track_after(id, entry, None);
    }

    /// Starts tracking a file that takes over from `predecessor` at `entry.offset`, the offset
    /// the reader had reached in the predecessor (the byte offsets of a copy or a renamed file
    /// are the original's). Its saved position starts at what was acknowledged of the
    /// predecessor and follows the predecessor's acknowledgements, so a restart before they
    /// arrive reads the unacknowledged part again instead of losing it.
    pub fn track_after(&self, id: FileId, mut entry: Entry, predecessor: Option<FileId>) {
        let mut state = self.lock();
        let acked = predecessor.and_then(|p| state.tracked.get(&p).map(|t| t.entry.offset));
        if let Some(acked) = acked {
            entry.offset = entry.offset.min(acked);
        }
        entry.released_at = None;
        state.tracked.insert(
            id,
            Tracked {
                entry,
                released: None,
                predecessor: predecessor.filter(|_| acked.is_some()),
            },
        );
        self.touch(&mut state);
    }

    /// The file's head, path or identity changed (it grew, or was renamed).
    pub fn update(&self, id: FileId, head: Head, dev_ino: DevIno, path: &str) {
        let mut state = self.lock();
        if let Some(t) = state.tracked.get_mut(&id) {
            t.entry.head_len = head.len;
            t.entry.head_hash = head.hash;
            t.entry.dev = dev_ino.dev;
            t.entry.ino = dev_ino.ino;
            if t.entry.path != path {
                t.entry.path = path.to_string();
            }
            self.touch(&mut state);
        }
    }

    /// The file will not be read past `final_offset`; once that is acknowledged it is only
    /// remembered (so a copy of it is recognized), not tracked.
    pub fn release(&self, id: FileId, final_offset: u64) {
        let mut state = self.lock();
        let done = match state.tracked.get_mut(&id) {
            Some(t) => {
                t.released = Some(final_offset);
                t.entry.offset >= final_offset
            }
            None => false,
        };
        if done {
            state.retire(id);
        }
        self.touch(&mut state);
    }

    /// Every sink has acknowledged these positions.
    pub fn acknowledge(&self, offsets: &[(FileId, u64)]) {
        let mut state = self.lock();
        let mut retire = Vec::new();
        for &(id, offset) in offsets {
            for (&tid, t) in state.tracked.iter_mut() {
                if tid != id && t.predecessor != Some(id) {
                    continue;
                }
                if offset > t.entry.offset {
                    t.entry.offset = offset;
                }
                if t.released.is_some_and(|f| t.entry.offset >= f) {
                    retire.push(tid);
                }
            }
        }
        for id in retire {
            state.retire(id);
        }
        self.touch(&mut state);
    }

    /// The acknowledged offset of a tracked file.
    pub fn acknowledged(&self, id: FileId) -> Option<u64> {
        self.lock().tracked.get(&id).map(|t| t.entry.offset)
    }

    /// The entries to save, if anything changed since the last call.
    pub fn snapshot_if_dirty(&self) -> Option<Snapshot> {
        let mut state = self.lock();
        if !state.dirty {
            return None;
        }
        Some(state.take_snapshot())
    }

    /// The entries to save, changed or not.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().take_snapshot()
    }

    /// A snapshot could not be saved: the next save tries again.
    pub fn mark_dirty(&self) {
        let mut state = self.lock();
        self.touch(&mut state);
    }

    /// How many bytes a tracked file has that are not yet acknowledged, given its size.
    pub fn lag(&self, id: FileId, size: u64) -> u64 {
        self.acknowledged(id)
            .map(|o| size.saturating_sub(o))
            .unwrap_or(0)
    }
}

/// Whether the file an entry describes is still at its path, on its inode, but no longer starts
/// with the entry's bytes: it was truncated (and perhaps written again) in place.
fn truncated_in_place(e: &Entry) -> bool {
    let Ok(file) = File::open(&e.path) else {
        return false;
    };
    file.metadata().is_ok_and(|m| DevIno::of(&m) == e.dev_ino())
        && !e.head().is_prefix_of(&file).unwrap_or(true)
}

impl State {
    fn retire(&mut self, id: FileId) {
        let Some(t) = self.tracked.remove(&id) else {
            return;
        };
        let mut entry = t.entry;
        let now = unix_now();
        entry.released_at = Some(now);
        if entry.head().is_fingerprint() {
            // One entry per content: the furthest position of all files that had it.
            let head = entry.head();
            for old in self.remembered.iter().filter(|e| e.head() == head) {
                entry.offset = entry.offset.max(old.offset);
            }
            self.remembered.retain(|e| e.head() != head);
        }
        self.remembered.push(entry);
        self.expire(now);
    }

    /// Forgets finished files past [`RELEASED_RETENTION_SECS`] that are not among the last
    /// [`RELEASED_KEEP_PER_PATH`] of their path, then the oldest beyond [`MAX_RELEASED`].
    fn expire(&mut self, now: u64) {
        let old = |e: &Entry| {
            e.released_at
                .is_some_and(|at| now.saturating_sub(at) >= RELEASED_RETENTION_SECS)
        };
        if self.remembered.iter().any(old) {
            // Newest first, so the first few of each path are the ones to keep.
            self.remembered
                .sort_by_key(|e| std::cmp::Reverse(e.released_at.unwrap_or(now)));
            let mut per_path: HashMap<String, usize> = HashMap::new();
            self.remembered.retain(|e| {
                let n = per_path.entry(e.path.clone()).or_default();
                *n += 1;
                *n <= RELEASED_KEEP_PER_PATH || !old(e)
            });
        }
        if self.remembered.len() > MAX_RELEASED {
            self.remembered
                .sort_by_key(|e| std::cmp::Reverse(e.released_at.unwrap_or(now)));
            self.remembered.truncate(MAX_RELEASED);
        }
    }

    fn take_snapshot(&mut self) -> Snapshot {
        self.dirty = false;
        self.generation += 1;
        self.expire(unix_now());
        let mut entries: Vec<Entry> = self.remembered.clone();
        entries.extend(self.tracked.values().map(|t| t.entry.clone()));
        Snapshot {
            generation: self.generation,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, offset: u64) -> Entry {
        Entry {
            path: path.into(),
            dev: 1,
            ino: 2,
            head_len: 0,
            head_hash: 0,
            offset,
            released_at: None,
        }
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), true).expect("open");
        assert!(store.load().first_start);
        let snapshot = Snapshot {
            generation: 1,
            entries: vec![entry("/a", 10)],
        };
        assert!(store.save(&snapshot).expect("save"));
        let loaded = store.load();
        assert!(!loaded.first_start);
        assert_eq!(loaded.entries, vec![entry("/a", 10)]);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }

    /// The periodic save can still be running (in a blocking thread, which abort does not stop)
    /// when the final save is made: saves must not share the temp file at the same time, and
    /// the older snapshot, finishing last, must not replace the newer one.
    #[test]
    fn concurrent_saves_are_serialized_and_the_newest_snapshot_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), true).expect("open");
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let generation = i * 4 + t + 1;
                        let entries = (0..200)
                            .map(|n| entry(&format!("/f{n}"), generation))
                            .collect();
                        store
                            .save(&Snapshot {
                                generation,
                                entries,
                            })
                            .expect("a save failed while another ran");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("saver thread");
        }
        let loaded = store.load();
        assert_eq!(loaded.entries.len(), 200);
        assert!(
            loaded.entries.iter().all(|e| e.offset == 200),
            "{:?}",
            &loaded.entries[..2]
        );
        let older = Snapshot {
            generation: 7,
            entries: vec![entry("/a", 7)],
        };
        assert!(
            !store.save(&older).expect("save"),
            "an older snapshot was written"
        );
        assert_eq!(store.load().entries.len(), 200);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), true).expect("open");
        fs::write(store.path(), "{not json").expect("write");
        let loaded = store.load();
        assert!(loaded.entries.is_empty());
        assert!(!loaded.first_start);
        assert!(!store.path().exists());
        let aside = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside);
    }

    #[test]
    fn released_files_are_remembered_once_acknowledged() {
        let p = Positions::new(Vec::new());
        p.track(1, entry("/a", 0));
        p.release(1, 100);
        assert_eq!(p.acknowledged(1), Some(0));
        p.acknowledge(&[(1, 100)]);
        assert_eq!(p.acknowledged(1), None);
        let entries = p.snapshot().entries;
        assert_eq!(entries.len(), 1);
        assert!(entries[0].released_at.is_some());
        assert_eq!(
            entries[0],
            Entry {
                released_at: entries[0].released_at,
                ..entry("/a", 100)
            }
        );
    }

    fn released(path: &str, hash: u64, at: u64) -> Entry {
        Entry {
            head_len: crate::identity::FINGERPRINT_BYTES,
            head_hash: hash,
            released_at: Some(at),
            ..entry(path, 1)
        }
    }

    #[test]
    fn finished_files_are_kept_ten_minutes_the_last_eight_of_a_path_longer_4096_at_most() {
        let now = unix_now();
        let old = now - RELEASED_RETENTION_SECS - 1;
        let mut loaded: Vec<Entry> = (0..10).map(|i| released("/a", i, old - i)).collect();
        loaded.push(released("/b", 100, old));
        loaded.push(released("/c", 200, now - 5));
        let p = Positions::new(loaded);
        let kept = p.snapshot().entries;
        let hashes = |path: &str| -> Vec<u64> {
            let mut h: Vec<u64> = kept
                .iter()
                .filter(|e| e.path == path)
                .map(|e| e.head_hash)
                .collect();
            h.sort();
            h
        };
        // Past the window: only /a's 8 latest (0 is the latest) and /b's one.
        assert_eq!(hashes("/a"), (0..8).collect::<Vec<_>>());
        assert_eq!(hashes("/b"), vec![100]);
        assert_eq!(hashes("/c"), vec![200]);

        // Within the window, every one is kept, up to MAX_RELEASED, newest first.
        let loaded: Vec<Entry> = (0..MAX_RELEASED as u64 + 10)
            .map(|i| released(&format!("/f{i}"), i, now - 1 - i % 100))
            .collect();
        let kept = Positions::new(loaded).snapshot().entries;
        assert_eq!(kept.len(), MAX_RELEASED);
        assert!(kept.iter().all(|e| e.released_at >= Some(now - 100)));
    }

    #[test]
    fn a_claimed_fingerprint_stays_remembered_and_the_furthest_position_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = File::create(dir.path().join("x")).expect("file");
        let fp = Head {
            len: crate::identity::FINGERPRINT_BYTES,
            hash: 7,
        };
        let p = Positions::new(vec![
            Entry {
                offset: 500,
                ..released("/a.log.1", 7, unix_now())
            },
            Entry {
                offset: 900,
                ..released("/a.log", 7, unix_now())
            },
        ]);
        let other = DevIno { dev: 9, ino: 9 };
        let first = p.claim(other, &f, fp).expect("claimed");
        assert_eq!(first.entry.offset, 900);
        // A second copy of the same content (a rotation chain, a restart) finds it too.
        assert_eq!(p.claim(other, &f, fp).expect("again").entry.offset, 900);
    }

    #[tokio::test]
    async fn a_change_wakes_the_checkpoint_task_and_a_snapshot_settles_it() {
        let p = Arc::new(Positions::new(Vec::new()));
        p.track(1, entry("/a", 0));
        // Dirty: no wait.
        p.changed().await;
        assert!(p.snapshot_if_dirty().is_some());
        assert!(p.snapshot_if_dirty().is_none());
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                // Any stored wake-up from before is taken first; then a real change.
                loop {
                    p.changed().await;
                    if p.snapshot_if_dirty().is_some() {
                        return;
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.acknowledge(&[(1, 10)]);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the acknowledgement woke the task")
            .expect("task");
    }
}
