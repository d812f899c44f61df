//! Repository snippets (`[serving] repository_snippets`): the workspace's functions in a
//! `retrieve::Index`, built on a thread of its own when the editor names its roots and kept up to
//! date by a file watcher. The relay never waits for it: a request made while the index is being
//! built, or while a batch of changed files is being swapped in, goes without snippets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::context::head;
use crate::daemon::protocol::ContextFile;
use crate::retrieve::{self, Index};
use crate::watch;

/// About what a default prompt shows of the text before the cursor, in bytes.
const NEAR_BYTES: usize = 4096;

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[derive(Default)]
struct State {
    /// `None` until the first build is done.
    index: Option<Index>,
    /// Files changed while the first build ran, read again once it is done.
    pending: Vec<PathBuf>,
    build_ms: u64,
}

pub(super) struct Repository {
    roots: Vec<PathBuf>,
    state: Arc<Mutex<State>>,
    _watcher: Option<watch::Watcher>,
}

impl Repository {
    pub(super) fn start(roots: Vec<PathBuf>) -> Repository {
        let state = Arc::new(Mutex::new(State::default()));
        let changed = state.clone();
        // A watcher of our own: the capture stage's watches the same roots for test reports, but
        // lives in another stage behind the `CaptureSink` interface (ARCHITECTURE.md, layers).
        let watcher = watch::watch(&roots, move |changes| apply(&changed, &changes)).map_err(|error| {
            tracing::warn!(%error, "repository snippets will not follow changes on disk");
        });
        let building = state.clone();
        let walked = roots.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut index = Index::build(&walked);
            let build_ms = started.elapsed().as_millis() as u64;
            tracing::info!(files = index.files(), functions = index.len(), build_ms, "repository snippets indexed");
            let mut state = building.lock().expect("snippets state");
            for path in std::mem::take(&mut state.pending) {
                index.update(&path);
            }
            *state = State { index: Some(index), pending: Vec::new(), build_ms };
        });
        Repository { roots, state, _watcher: watcher.ok() }
    }

    /// The `k` best snippets for a cursor between `prefix` and `suffix` in `current` (a path under
    /// a root), as context files named by their path under the root; nothing when the index is
    /// busy. Functions of the current file that the prompt's window shows anyway are skipped, and so
    /// is the saved copy of the one being written (the engine drops any context the window shows,
    /// but they would have taken a place).
    pub(super) fn search(
        &self,
        prefix: &str,
        suffix: &str,
        current: Option<&Path>,
        k: usize,
        max_bytes: usize,
    ) -> Vec<ContextFile> {
        let Ok(state) = self.state.try_lock() else { return Vec::new() };
        let Some(index) = &state.index else { return Vec::new() };
        let near_prefix = &prefix[ceil_boundary(prefix, prefix.len().saturating_sub(NEAR_BYTES))..];
        let near_suffix = &suffix[..ceil_boundary(suffix, NEAR_BYTES / 4)];
        // By its first line: the copy on disk of the function being written differs from the
        // editor's text in its body, not in its signature.
        let hits = index.search(prefix, k, |path, text| {
            let signature = text.lines().next().unwrap_or(text).trim();
            Some(path) == current && (near_prefix.contains(signature) || near_suffix.contains(signature))
        });
        hits.into_iter()
            .map(|hit| ContextFile {
                path: self.relative(&hit.path),
                text: head(&hit.text, max_bytes).trim_end().to_owned(),
            })
            .collect()
    }

    fn relative(&self, path: &Path) -> String {
        let under = self.roots.iter().find_map(|root| path.strip_prefix(root).ok());
        under.unwrap_or(path).to_string_lossy().into_owned()
    }

    /// For `marunochi.status`: what is indexed, or that it is still being built.
    pub(super) fn status(&self) -> Value {
        match self.state.try_lock() {
            Ok(state) => match &state.index {
                Some(index) => json!({"files": index.files(), "functions": index.len(), "build_ms": state.build_ms}),
                None => json!("indexing"),
            },
            Err(_) => json!("updating"),
        }
    }
}

/// Files are read and parsed outside the lock, then swapped in one by one, so a search never waits
/// behind a large batch (a branch switch).
fn apply(state: &Mutex<State>, changes: &watch::Changes) {
    let renamed_dirs = changes.renamed.iter().filter(|(_, to)| to.is_dir());
    let mut files: Vec<PathBuf> = changes.files.clone();
    for (from, to) in renamed_dirs {
        if let Some(index) = state.lock().expect("snippets state").index.as_mut() {
            index.remove_tree(from);
        }
        files.extend(retrieve::source_files(std::slice::from_ref(to)));
    }
    for path in files {
        let units = retrieve::units_of(&path);
        let mut state = state.lock().expect("snippets state");
        match state.index.as_mut() {
            Some(index) => index.set_units(&path, units),
            None => state.pending.push(path),
        }
    }
}
