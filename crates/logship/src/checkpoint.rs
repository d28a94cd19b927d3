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
/// How many finished files (rotated away, deleted, truncated) are remembered, so that a copy of
/// one that shows up again is recognized. The oldest are forgotten first.
pub const MAX_RELEASED: usize = 4096;

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
    /// Creates the directory if needed and proves it is writable.
    pub fn open(dir: &Path) -> Result<Store, CheckpointError> {
        let not_writable = |source| CheckpointError::NotWritable {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(not_writable)?;
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(not_writable)?;
        let _ = fs::remove_file(&probe);
        Ok(Store {
            dir: dir.to_path_buf(),
            path: dir.join(FILE_NAME),
            written: Arc::new(Mutex::new(0)),
        })
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

#[derive(Debug)]
struct Tracked {
    entry: Entry,
    released: Option<u64>,
    /// The file this one took over from (a copy or a rename found by its first bytes), which the
    /// reader had read further than the sinks had acknowledged: acknowledgements of that file
    /// advance this one too, and this one's position never runs ahead of them.
    predecessor: Option<FileId>,
}

/// The positions of every file, shared by the reader (which registers and releases files) and
/// the acknowledgement path (which advances offsets). Saved by the checkpoint task.
#[derive(Debug, Default)]
pub struct Positions {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tracked: HashMap<FileId, Tracked>,
    /// Entries loaded at start or released since, not tracked by any open file.
    remembered: Vec<(u64, Entry)>,
    release_counter: u64,
    dirty: bool,
    /// Snapshots taken so far.
    generation: u64,
}

impl Positions {
    pub fn new(loaded: Vec<Entry>) -> Positions {
        let remembered = loaded.into_iter().map(|e| (0, e)).collect();
        Positions {
            state: Mutex::new(State {
                remembered,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds and removes the remembered entry that describes `file`, whose current head is
    /// `head` (see [`crate::identity`]): a fingerprint entry matches by content alone (a hash
    /// comparison); a shorter one needs the same device and inode, and the file must still
    /// start with the bytes it was taken from (the only case that reads the file).
    pub fn claim(&self, dev_ino: DevIno, file: &File, head: Head) -> Option<Entry> {
        let mut state = self.lock();
        let found = state.remembered.iter().rposition(|(_, e)| {
            let theirs = e.head();
            if theirs.is_fingerprint() {
                theirs == head
            } else {
                e.dev_ino() == dev_ino
                    && head.len >= theirs.len
                    && theirs.is_prefix_of(file).unwrap_or(false)
            }
        })?;
        Some(state.remembered.swap_remove(found).1)
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
        state.tracked.insert(
            id,
            Tracked {
                entry,
                released: None,
                predecessor: predecessor.filter(|_| acked.is_some()),
            },
        );
        state.dirty = true;
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
            state.dirty = true;
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
        state.dirty = true;
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

    /// A snapshot could not be saved: the next periodic save tries again.
    pub fn mark_dirty(&self) {
        self.lock().dirty = true;
    }

    /// How many bytes a tracked file has that are not yet acknowledged, given its size.
    pub fn lag(&self, id: FileId, size: u64) -> u64 {
        self.acknowledged(id)
            .map(|o| size.saturating_sub(o))
            .unwrap_or(0)
    }
}

impl State {
    fn retire(&mut self, id: FileId) {
        if let Some(t) = self.tracked.remove(&id) {
            self.release_counter += 1;
            self.remembered.push((self.release_counter, t.entry));
            if self.remembered.len() > MAX_RELEASED {
                if let Some(oldest) = self
                    .remembered
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (n, _))| *n)
                    .map(|(i, _)| i)
                {
                    self.remembered.swap_remove(oldest);
                }
            }
            self.dirty = true;
        }
    }

    fn take_snapshot(&mut self) -> Snapshot {
        self.dirty = false;
        self.generation += 1;
        let mut entries: Vec<Entry> = self.remembered.iter().map(|(_, e)| e.clone()).collect();
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
        }
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
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
        let store = Store::open(dir.path()).expect("open");
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
        let store = Store::open(dir.path()).expect("open");
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
        assert_eq!(p.snapshot().entries, vec![entry("/a", 100)]);
    }
}
