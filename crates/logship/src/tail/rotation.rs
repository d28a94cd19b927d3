//! Which file is which, and where reading it starts: new files, renames, copies, truncation,
//! deletion, and letting go. The reading loop ([`super`]) calls these between reads.
//!
//! Promises (each has a model test in [`super::model`] and a binary test):
//! - A file's identity is its content: the hash of its first bytes ([`crate::identity`]). A file
//!   whose fingerprint is known (a copy, a file renamed within the glob or further up a rotation
//!   chain, a file found again after a restart) resumes at the furthest position known for that
//!   content: the reader's own while this process runs, else the acknowledged one, which is
//!   remembered for [`crate::checkpoint::RELEASED_RETENTION_SECS`] after a file is let go.
//! - A new file that cannot be told yet (shorter than a fingerprint, or shorter than the
//!   position known for its content: a copy still being written) waits until its size has
//!   stayed the same for `settle` before it is read, so a copy caught while empty is not read
//!   again from its first byte as a new file.
//! - A new file whose first bytes equal those of a file being read (a copy made before the
//!   truncation) waits on standby and takes over that file's position when the original is
//!   truncated or let go.
//! - A file that shrinks below the read offset, or whose first bytes are no longer the ones
//!   read (rewritten in place), is read again from 0; its old content's position is
//!   remembered so that its copy, if the glob matches it, resumes there.
//! - The head kept for a tracked file always covers every byte before its position
//!   ([`Tracked::head_bytes`]), so a short file's identity can never claim more than was read.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{ReadFrom, Tailer, Tracked};
use crate::checkpoint::{Entry, FileId};
use crate::decode::Decoder;
use crate::identity::{DevIno, Head, FINGERPRINT_BYTES};
use crate::reader::LineReader;

/// A file whose first bytes equal those of a file being read: a copy made before truncation.
pub(super) struct Standby {
    pub path: PathBuf,
    pub file: File,
    pub dev_ino: DevIno,
    pub head_bytes: Vec<u8>,
}

/// A new file that cannot be told yet, waiting for its size to stay the same.
pub(super) struct Settling {
    pub path: PathBuf,
    pub dev_ino: DevIno,
    pub size: u64,
    /// When it was first seen with this size.
    pub since: Instant,
    /// When it was first seen.
    pub first_seen: Instant,
}

/// The longest a file that looks like a copy being written waits for it to grow.
const COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A fingerprint this process let go of or saw truncated, with how far it was read.
pub(super) struct Recent {
    pub head: Head,
    /// Its first bytes, to recognize a copy of it caught before it has a fingerprint.
    pub head_bytes: Vec<u8>,
    pub dev_ino: DevIno,
    pub offset: u64,
    pub id: FileId,
    /// Truncated in place (its copy, if any, is another file), rather than let go.
    pub truncated: bool,
}

impl Recent {
    /// Whether a file with device and inode `dev_ino`, head `head` and first bytes `bytes`
    /// continues this content: a fingerprint by content; the content of a truncated file
    /// (copytruncate's original, whose copy is a new file) by its first bytes, all of them;
    /// a shorter head of a file let go by device and inode and the file still starting with
    /// those bytes (the test [`crate::checkpoint::Positions::claim`] makes).
    fn describes(&self, dev_ino: DevIno, head: Head, bytes: &[u8], file: &File) -> bool {
        if self.head.is_fingerprint() {
            self.head == head
        } else if self.truncated {
            !self.head_bytes.is_empty() && bytes.starts_with(&self.head_bytes)
        } else {
            self.dev_ino == dev_ino
                && head.len >= self.head.len
                && self.head.is_prefix_of(file).unwrap_or(false)
        }
    }
}

/// How many [`Recent`] entries are kept (the acknowledged positions outlive them, in
/// [`crate::checkpoint::Positions`]).
const RECENT: usize = 64;

impl Tailer {
    /// Finds new files; recognizes renamed and copied ones.
    pub(super) fn scan(&mut self, initial: bool) {
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
            if let Some(s) = self.standby.iter_mut().find(|s| s.dev_ino == dev_ino) {
                s.path = path;
                continue;
            }
            if let Err(e) = self.open(&path, initial) {
                tracing::warn!(file = %path.display(), error = %e, "cannot open {}; retrying at the next scan", path.display());
            }
        }
        self.metrics.files_watched.set(self.files.len() as i64);
    }

    /// Looks at a file not tracked yet: puts it on standby, lets it settle, or starts reading it
    /// where its content was last read.
    pub(super) fn open(&mut self, path: &Path, initial: bool) -> io::Result<()> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let dev_ino = DevIno::of(&meta);
        let size = meta.len();
        let head_bytes = Head::read_bytes(&file)?;
        let head = Head::of(&head_bytes);
        if head.is_fingerprint()
            && self
                .files
                .iter()
                .any(|t| t.head == head && t.dev_ino != dev_ino)
        {
            tracing::info!(file = %path.display(), "{} starts like a file being read (a copy?); it waits and takes over if the original is truncated or removed", path.display());
            self.settling.retain(|s| s.path != path);
            self.standby.push(Standby {
                path: path.to_path_buf(),
                file,
                dev_ino,
                head_bytes,
            });
            return Ok(());
        }
        let recent = self
            .recent
            .iter()
            .rposition(|r| r.describes(dev_ino, head, &head_bytes, &file));
        let claim = self.positions.claim(dev_ino, &file, head);
        let known = recent
            .map(|i| self.recent[i].offset)
            .max(claim.as_ref().map(|c| c.entry.offset));
        // A copy caught while it is written is shorter than the position known for its
        // content, or shorter than a fingerprint and a prefix of a file we know: it waits
        // until it has grown (up to COPY_WAIT, for a copier that stalls). Any other file
        // shorter than a fingerprint waits until its size has stayed the same for `settle`:
        // a copy of a file whose first bytes we no longer have grows within that. (A short
        // entry claimed by device and inode never waits: its offset is within the bytes it
        // matched.)
        let copying = match known {
            None => self.may_be_a_copy(&head_bytes, dev_ino),
            Some(k) => k > size && claim.as_ref().is_none_or(|c| c.entry.dev_ino() != dev_ino),
        };
        let unknown_short = known.is_none() && !head.is_fingerprint();
        // Files present at the very first start with `--read-from end` are skipped to their
        // end, whatever they are; at a restart, a copy may be caught half written as well.
        let skipped = initial && self.first_start && self.s.read_from == ReadFrom::End;
        if (copying || unknown_short) && !skipped && !self.draining {
            let now = Instant::now();
            let s = match self.settling.iter().position(|s| s.path == path) {
                Some(i) => &mut self.settling[i],
                None => {
                    tracing::debug!(file = %path.display(), size, "{} cannot be told yet; reading it once it has grown or its size settles", path.display());
                    self.settling.push(Settling {
                        path: path.to_path_buf(),
                        dev_ino,
                        size,
                        since: now,
                        first_seen: now,
                    });
                    return Ok(());
                }
            };
            if s.dev_ino != dev_ino {
                // Another file at this path now: it starts waiting afresh.
                s.dev_ino = dev_ino;
                s.size = size;
                s.since = now;
                s.first_seen = now;
                return Ok(());
            }
            if s.size != size || s.since > now {
                s.size = size;
                s.since = now;
                return Ok(());
            }
            let wait = if copying {
                now.duration_since(s.first_seen) < COPY_WAIT
            } else {
                now.duration_since(s.since) < self.s.settle
            };
            if wait {
                return Ok(());
            }
        }
        self.settling.retain(|s| s.path != path);
        let recent = recent.and_then(|i| self.recent.remove(i));
        let predecessor = match (&recent, &claim) {
            (Some(r), _) => Some(r.id),
            (None, Some(c)) => c.tracked,
            (None, None) => None,
        };
        let offset = match known {
            Some(k) if k > size => {
                tracing::warn!(file = %path.display(), size, known = k, "{} is shorter than where its content was read: truncated while we were down, or another file with the same first bytes; reading it from the start", path.display());
                0
            }
            Some(k) => k,
            None if initial && self.first_start && self.s.read_from == ReadFrom::End => size,
            None => 0,
        };
        // A file that continues one we were reading (a copy, a file renamed while we were
        // down) is read ahead of the others, so its older lines ship before the newer lines
        // of the file that replaced it.
        let continues = offset > 0 && known.is_some();
        self.track(
            path.to_path_buf(),
            file,
            dev_ino,
            head_bytes,
            offset,
            size,
            continues,
            predecessor.filter(|_| offset > 0),
        );
        Ok(())
    }

    /// Starts reading a file at `offset`; `first` puts it ahead of the others in each round;
    /// `predecessor` is the file it takes over from (see
    /// [`crate::checkpoint::Positions::track_after`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn track(
        &mut self,
        path: PathBuf,
        file: File,
        dev_ino: DevIno,
        head_bytes: Vec<u8>,
        offset: u64,
        size: u64,
        first: bool,
        predecessor: Option<FileId>,
    ) {
        debug_assert!(
            !self.files.iter().any(|t| t.dev_ino == dev_ino),
            "{} is tracked twice",
            path.display()
        );
        let id = self.next_id;
        self.next_id += 1;
        let label: Arc<str> = path.to_string_lossy().into();
        let head = Head::of(&head_bytes);
        self.positions.track_after(
            id,
            Entry {
                path: label.to_string(),
                dev: dev_ino.dev,
                ino: dev_ino.ino,
                head_len: head.len,
                head_hash: head.hash,
                offset,
                released_at: None,
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
            head_bytes,
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

    /// Rotation, truncation, deletion; lets go of finished files; looks again at files on
    /// standby and at files still settling.
    pub(super) fn check_files(&mut self) {
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
            let truncated = size < self.files[i].offset || !self.head_still_matches(i);
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
        // A standby file renamed away is found again by the next scan, under its new name.
        self.standby
            .retain(|s| std::fs::metadata(&s.path).is_ok_and(|m| DevIno::of(&m) == s.dev_ino));
        self.recheck_settling();
        self.metrics.files_watched.set(self.files.len() as i64);
    }

    /// Looks again at the files waiting to be told (each loop round while there are any: they
    /// are few, and a stat each).
    pub(super) fn recheck_settling(&mut self) {
        let settling: Vec<PathBuf> = self.settling.iter().map(|s| s.path.clone()).collect();
        for path in settling {
            let known = std::fs::metadata(&path).is_ok_and(|m| {
                let d = DevIno::of(&m);
                self.files.iter().any(|t| t.dev_ino == d)
                    || self.standby.iter().any(|s| s.dev_ino == d)
            });
            if known {
                self.settling.retain(|s| s.path != path);
                continue;
            }
            match self.open(&path, false) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.settling.retain(|s| s.path != path);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot open {}; retrying at the next poll", path.display());
                }
            }
        }
    }

    /// Whether a file starting with `bytes`, not known by its fingerprint, may be a copy being
    /// made of a file we know: its bytes so far are the start of that file's, or that file's
    /// first bytes (shorter than a fingerprint: all it had when we read it) are the start of
    /// its bytes, while we have not yet seen that file truncated.
    fn may_be_a_copy(&self, bytes: &[u8], dev_ino: DevIno) -> bool {
        let related = |known: &Vec<u8>| {
            (known.len() >= bytes.len() && known.starts_with(bytes))
                || (!known.is_empty()
                    && known.len() < FINGERPRINT_BYTES as usize
                    && bytes.starts_with(known))
        };
        // What we read of the files we track, and what they hold now: an original may have
        // been truncated and written again before we noticed, and its new content copied.
        let now: Vec<Vec<u8>> = self
            .files
            .iter()
            .filter(|t| t.dev_ino != dev_ino)
            .filter_map(|t| Head::read_bytes(&t.file).ok())
            .collect();
        self.files
            .iter()
            .filter(|t| t.dev_ino != dev_ino)
            .map(|t| &t.head_bytes)
            .chain(self.standby.iter().map(|s| &s.head_bytes))
            .any(related)
            || now
                .iter()
                .any(|known| known.len() >= bytes.len() && known.starts_with(bytes))
            || self
                .recent
                .iter()
                .any(|r| r.head_bytes.len() > bytes.len() && r.head_bytes.starts_with(bytes))
    }

    pub(super) fn index_of(&self, key: DevIno) -> Option<usize> {
        self.files.iter().position(|t| t.dev_ino == key)
    }

    /// Whether a file's first bytes are still the ones we read (a file rewritten in place has
    /// others). The same test as the read path's (see `read_chunk`), so the two never disagree.
    fn head_still_matches(&self, i: usize) -> bool {
        let t = &self.files[i];
        t.head.is_prefix_of(&t.file).unwrap_or(true)
    }

    pub(super) fn restart_after_truncation(&mut self, i: usize, size: u64) {
        self.metrics.truncations.inc();
        // Complete lines held in an event (multiline, CRI partials) are shipped; an incomplete
        // last line is dropped here, because its end is in the copy (if copytruncate made one),
        // which resumes where the last complete line ended.
        self.files[i].reader.reset();
        self.flush_file(i);
        let t = &mut self.files[i];
        tracing::info!(file = %t.path.display(), at = t.offset, size, "{} was truncated; reading it again from the start", t.path.display());
        let (old_head, old_offset, old_id, dev_ino) = (t.head, t.emitted, t.id, t.dev_ino);
        let old_bytes = std::mem::take(&mut t.head_bytes);
        self.positions.release(t.id, t.emitted);
        let new_id = self.next_id;
        self.next_id += 1;
        t.id = new_id;
        t.offset = 0;
        t.emitted = 0;
        t.reader.reset();
        t.head_bytes = Head::read_bytes(&t.file).unwrap_or_default();
        t.head = Head::of(&t.head_bytes);
        self.positions.track(
            new_id,
            Entry {
                path: t.path.to_string_lossy().into_owned(),
                dev: t.dev_ino.dev,
                ino: t.dev_ino.ino,
                head_len: t.head.len,
                head_hash: t.head.hash,
                offset: 0,
                released_at: None,
            },
        );
        self.remember(old_bytes, dev_ino, old_offset, old_id, true);
        self.promote_standby(old_head, old_offset, old_id);
        // copytruncate copies before it truncates: find the copy now, before reading on.
        self.scan(false);
    }

    fn remember(
        &mut self,
        head_bytes: Vec<u8>,
        dev_ino: DevIno,
        offset: u64,
        id: FileId,
        truncated: bool,
    ) {
        let head = Head::of(&head_bytes);
        self.recent
            .retain(|r| r.head != head || r.dev_ino != dev_ino);
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            head,
            head_bytes,
            dev_ino,
            offset,
            id,
            truncated,
        });
    }

    /// A copy on standby takes over the position of the file it copied.
    fn promote_standby(&mut self, head: Head, offset: u64, predecessor: FileId) {
        let Some(pos) = self
            .standby
            .iter()
            .position(|s| Head::of(&s.head_bytes) == head)
        else {
            return;
        };
        let s = self.standby.swap_remove(pos);
        let size = s.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size < offset {
            // A copy still being written: it settles first, then resumes from what was
            // remembered of its content (the caller remembered it just now).
            self.settling.push(Settling {
                path: s.path,
                dev_ino: s.dev_ino,
                size,
                since: Instant::now(),
                first_seen: Instant::now(),
            });
            return;
        }
        tracing::info!(file = %s.path.display(), offset, "{} takes over from offset {offset}", s.path.display());
        self.track(
            s.path,
            s.file,
            s.dev_ino,
            s.head_bytes,
            offset,
            size,
            true,
            Some(predecessor),
        );
    }

    pub(super) fn let_go(&mut self, i: usize) {
        self.flush_file(i);
        let t = self.files.remove(i);
        tracing::info!(file = %t.path.display(), offset = t.offset, "done with {} (read to its end)", t.path.display());
        self.positions.release(t.id, t.emitted);
        self.remember(t.head_bytes.clone(), t.dev_ino, t.offset, t.id, false);
        // The new file at the same path (after a rename rotation) keeps the series.
        if !self.files.iter().any(|other| other.label == t.label) {
            self.metrics.forget(&t.label);
        }
        self.promote_standby(t.head, t.offset, t.id);
    }
}
