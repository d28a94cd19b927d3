//! Which files to read: the `--path` globs minus the `--exclude` globs, re-scanned so that files
//! created later are found. A change-event watcher (notify: inotify on Linux) on each glob's
//! directory wakes the reader as soon as something is written, created or renamed; the reader
//! also polls on a timer, as the safety net for missed or overflowed events and for filesystems
//! without inotify.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use glob::Pattern;

/// A wake-up from the watcher. Whether files may have appeared or gone is kept in a separate
/// flag ([`Wakes::rescan`]), so it is never lost when a wake-up is dropped on a full channel.
pub type Wake = ();

/// What the watcher tells the reader.
#[derive(Debug, Clone)]
pub struct Wakes {
    pub tx: mpsc::SyncSender<Wake>,
    pub rescan: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("--path {pattern:?} is not a valid glob ({reason}); e.g. /var/log/app/*.log")]
    BadPath { pattern: String, reason: String },
    #[error("--path {0:?} must be absolute, e.g. /var/log/app/*.log")]
    Relative(String),
    #[error("--exclude {pattern:?} is not a valid glob ({reason})")]
    BadExclude { pattern: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Globs {
    include: Vec<String>,
    exclude: Vec<Pattern>,
    /// logship's own files (checkpoint directory, file sinks, dead-letter file): never read,
    /// whatever the globs say, or a recursive glob would ship them back in a loop.
    own: Vec<PathBuf>,
}

impl Globs {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Globs, DiscoverError> {
        for p in include {
            if !p.starts_with('/') {
                return Err(DiscoverError::Relative(p.clone()));
            }
            Pattern::new(p).map_err(|e| DiscoverError::BadPath {
                pattern: p.clone(),
                reason: e.msg.to_string(),
            })?;
        }
        let exclude = exclude
            .iter()
            .map(|p| {
                Pattern::new(p).map_err(|e| DiscoverError::BadExclude {
                    pattern: p.clone(),
                    reason: e.msg.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Globs {
            include: include.to_vec(),
            exclude,
            own: Vec::new(),
        })
    }

    /// Leaves out `path` (a file, or a directory and everything under it), which logship
    /// itself writes. Compared component by component, as given and made canonical.
    pub fn never_read(&mut self, path: &Path) {
        self.own.push(path.to_path_buf());
        if let Ok(canonical) = std::fs::canonicalize(path) {
            if canonical != path {
                self.own.push(canonical);
            }
        }
    }

    fn is_own(&self, path: &Path) -> bool {
        self.own.iter().any(|own| path.starts_with(own))
    }

    /// Regular files matching now, sorted (so reading order is stable).
    pub fn scan(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        for pattern in &self.include {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                if self.exclude.iter().any(|x| x.matches_path(&path)) || self.is_own(&path) {
                    continue;
                }
                if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    found.insert(path);
                }
            }
        }
        found
    }

    /// Whether `path` is one we read (used for paths seen in change events).
    pub fn matches(&self, path: &Path) -> bool {
        self.include
            .iter()
            .any(|p| Pattern::new(p).is_ok_and(|p| p.matches_path(path)))
            && !self.exclude.iter().any(|x| x.matches_path(path))
    }

    /// The directories to watch: each glob's longest prefix without wildcards.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        self.include.iter().map(|p| static_dir(p)).collect()
    }

    /// The `--path` patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.include
    }

    /// Each glob's directory that does not exist, with its glob.
    pub fn missing_dirs(&self) -> Vec<(PathBuf, &str)> {
        self.include
            .iter()
            .map(|p| (static_dir(p), p.as_str()))
            .filter(|(d, _)| !d.exists())
            .collect()
    }

    /// The directory of the first glob (the default home of the checkpoints).
    pub fn first_dir(&self) -> Option<PathBuf> {
        self.include.first().map(|p| static_dir(p))
    }
}

/// `/var/log/app/*.log` → `/var/log/app`; `/logs/*/x.log` → `/logs`.
fn static_dir(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::from("/");
    let parts: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last || part.contains(['*', '?', '[']) {
            break;
        }
        dir.push(part);
    }
    dir
}

/// Keeps a notify watcher alive; dropping it stops the events.
pub struct Watcher {
    _inner: Option<notify::RecommendedWatcher>,
}

/// Watches the glob directories; events arrive through `wakes`. Watch failures (a directory
/// that does not exist yet, no inotify) are logged and left to the poll.
pub fn watch(globs: &Globs, wakes: Wakes) -> Watcher {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let handler = move |res: notify::Result<notify::Event>| {
        let rescan = match &res {
            Ok(ev) => !matches!(
                ev.kind,
                EventKind::Modify(notify::event::ModifyKind::Data(_)) | EventKind::Access(_)
            ),
            Err(_) => true,
        };
        if rescan {
            wakes
                .rescan
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        // A full channel already holds a wake-up: nothing is lost by dropping this one.
        let _ = wakes.tx.try_send(());
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no change events (inotify unavailable?); polling only");
            return Watcher { _inner: None };
        }
    };
    for dir in globs.watch_dirs() {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch {} for changes; polling it", dir.display());
        }
    }
    Watcher {
        _inner: Some(watcher),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_dirs_stop_at_the_first_wildcard() {
        assert_eq!(
            static_dir("/var/log/app/*.log"),
            PathBuf::from("/var/log/app")
        );
        assert_eq!(static_dir("/logs/*/x.log"), PathBuf::from("/logs"));
        assert_eq!(static_dir("/logs/app.log"), PathBuf::from("/logs"));
    }

    #[test]
    fn scan_applies_excludes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a.log", "b.log", "b.log.gz", "c.txt"] {
            std::fs::write(dir.path().join(name), "x\n").expect("write");
        }
        let d = dir.path().display();
        let globs = Globs::new(&[format!("{d}/*.log*")], &[format!("{d}/*.gz")]).expect("globs");
        let names: Vec<String> = globs
            .scan()
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, vec!["a.log", "b.log"]);
        assert!(Globs::new(&["relative/*.log".into()], &[]).is_err());
        assert!(Globs::new(&["/x/[.log".into()], &[]).is_err());
    }
}
