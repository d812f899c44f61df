//! Files changing on disk under the workspace roots, for the signals that arrive as files (test
//! reports now; retention's on-disk edits later). Entry: [`watch`].
//!
//! Directories are watched one by one rather than with one recursive watch: inotify needs a watch
//! per directory either way, and a recursive one would spend thousands on `node_modules`, `target`
//! or a virtualenv that never hold the user's own code. New directories are picked up as they
//! appear. Changes are delivered in batches once the tree has been quiet for [`QUIET`], so a test
//! run that rewrites a report several times is read once, complete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

/// How long the tree must be quiet before a batch of changes is delivered.
pub const QUIET: Duration = Duration::from_millis(300);

/// Directories never watched: version control, build output, dependencies, caches.
const IGNORED: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "target",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    ".cache",
];

/// More directories than this under the roots and the rest is left unwatched (said in the log).
const MAX_DIRECTORIES: usize = 20_000;

/// Watching stops when this is dropped (after the batch in progress, if any, is delivered).
pub struct Watcher {
    inner: Option<Arc<Mutex<notify::RecommendedWatcher>>>,
    batches: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The last strong reference: dropping it closes the event channel, which ends the thread.
        drop(self.inner.take());
        if let Some(thread) = self.batches.take() {
            let _ = thread.join();
        }
    }
}

/// One quiet batch of changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// Files created, written, renamed (both names) or removed, sorted, without repeats.
    pub files: Vec<PathBuf>,
    /// Renames seen whole (old name, new name), files or directories, in order.
    pub renamed: Vec<(PathBuf, PathBuf)>,
}

/// Watches the directories under `roots` and calls `on_change` with each quiet batch of changes.
pub fn watch(roots: &[PathBuf], mut on_change: impl FnMut(Changes) + Send + 'static) -> notify::Result<Watcher> {
    let (events, inbox) = mpsc::channel::<notify::Result<notify::Event>>();
    let inner = Arc::new(Mutex::new(notify::recommended_watcher(events)?));
    let mut watched = 0;
    for root in roots {
        add_tree(&inner, root, &mut watched, &mut BTreeSet::new());
    }
    let weak = Arc::downgrade(&inner);
    let batches = std::thread::spawn(move || {
        let mut watched = watched;
        while let Ok(first) = inbox.recv() {
            let mut changed = BTreeSet::new();
            let mut renamed = Vec::new();
            let mut event = Some(first);
            while let Some(next) = event {
                note(next, &weak, &mut changed, &mut renamed, &mut watched);
                event = inbox.recv_timeout(QUIET).ok();
            }
            if !changed.is_empty() || !renamed.is_empty() {
                on_change(Changes { files: changed.into_iter().collect(), renamed });
            }
        }
    });
    Ok(Watcher { inner: Some(inner), batches: Some(batches) })
}

fn note(
    event: notify::Result<notify::Event>,
    watcher: &Weak<Mutex<notify::RecommendedWatcher>>,
    changed: &mut BTreeSet<PathBuf>,
    renamed: &mut Vec<(PathBuf, PathBuf)>,
    watched: &mut usize,
) {
    let event = match event {
        Ok(event) => event,
        Err(error) => return tracing::warn!(%error, "file watcher"),
    };
    if matches!(event.kind, EventKind::Access(_)) {
        return;
    }
    if let (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), [from, to]) = (&event.kind, event.paths.as_slice()) {
        renamed.push((from.clone(), to.clone()));
    }
    for path in event.paths {
        if path.is_dir() {
            if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)))
                && !is_ignored(&path)
                && let Some(watcher) = watcher.upgrade()
            {
                add_tree(&watcher, &path, watched, changed);
            }
        } else {
            changed.insert(path);
        }
    }
}

/// Watches `dir` and the directories below it that are worth watching; the files already in them
/// go to `found` (a new directory may be filled before its watch is in place).
fn add_tree(
    watcher: &Mutex<notify::RecommendedWatcher>,
    dir: &Path,
    watched: &mut usize,
    found: &mut BTreeSet<PathBuf>,
) {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if dir.join("pyvenv.cfg").exists() {
            continue;
        }
        if *watched >= MAX_DIRECTORIES {
            tracing::warn!(dir = %dir.display(), "more than {MAX_DIRECTORIES} directories; the rest is not watched");
            return;
        }
        if let Err(error) = watcher.lock().expect("watcher").watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(%error, dir = %dir.display(), "cannot watch");
            continue;
        }
        *watched += 1;
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && !is_ignored(&entry.path()) => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    found.insert(entry.path());
                }
                _ => {}
            }
        }
    }
}

/// The text of a regular file of at most `max_bytes`; otherwise why not, in words for a log line
/// (a pipe or device would block the reader or never end, binary is not code).
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.len() > max_bytes {
        return Err(format!("{} bytes, more than the {max_bytes} read", metadata.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.contains(&0) {
        return Err("a binary file".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// A directory never watched nor searched (see [`IGNORED`]).
pub fn is_ignored(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|name| IGNORED.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn next_batch(inbox: &mpsc::Receiver<Changes>) -> Changes {
        inbox.recv_timeout(Duration::from_secs(10)).expect("a batch of changes")
    }

    #[test]
    fn changes_arrive_in_quiet_batches_new_directories_included_ignored_ones_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
        let (tx, inbox) = mpsc::channel();
        let watcher = watch(std::slice::from_ref(&root), move |batch| tx.send(batch).unwrap()).unwrap();

        std::fs::write(root.join("node_modules/pkg/index.js"), "x").unwrap();
        std::fs::write(root.join("a.py"), "1").unwrap();
        std::fs::write(root.join("a.py"), "2").unwrap();
        assert_eq!(next_batch(&inbox).files, vec![root.join("a.py")]);

        std::fs::rename(root.join("a.py"), root.join("b.py")).unwrap();
        let batch = next_batch(&inbox);
        assert_eq!(batch.renamed, vec![(root.join("a.py"), root.join("b.py"))]);
        assert_eq!(batch.files, vec![root.join("a.py"), root.join("b.py")]);

        // A directory that arrives full (moved in, or filled before its watch is placed).
        let elsewhere = tempfile::tempdir_in(root.parent().unwrap()).unwrap();
        let staged = elsewhere.path().join("staged");
        std::fs::create_dir_all(staged.join("deeper")).unwrap();
        std::fs::write(staged.join("deeper/report.xml"), "x").unwrap();
        std::fs::rename(&staged, root.join("moved")).unwrap();
        assert_eq!(next_batch(&inbox).files, vec![root.join("moved/deeper/report.xml")]);

        std::fs::create_dir_all(root.join("reports/nested")).unwrap();
        // The new directories are being added to the watch; a file written a moment later is seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        let report = root.join("reports/nested/junit.xml");
        loop {
            std::fs::write(&report, "<testsuite/>").unwrap();
            if let Ok(batch) = inbox.recv_timeout(Duration::from_secs(1))
                && batch.files.contains(&report)
            {
                break;
            }
            assert!(Instant::now() < deadline, "a file in a new directory was never seen");
        }
        drop(watcher);
    }
}
