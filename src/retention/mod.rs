//! Does accepted code survive? Entries: [`anchor`] (where settled code lives, taken when the
//! capture stage settles it) and [`Sweep`] (the checks that are due: 30 s, 2 m, 5 m, 10 m after
//! acceptance as Copilot measures persistence, 7 d and 30 d as the seed asks).
//!
//! A check finds the code again by its tokens, looking ever wider: near where it was, in the
//! function or class it was anchored to (found by name, so edits above it do not matter), in the
//! whole file, then in the other files of the workspace with the same extension (moved code, a
//! renamed or deleted file). The survival is the best share found (see `survival.rs`).
//! Open documents are read as the editor has them, not as last saved.

mod survival;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::Anchor;
use crate::store::{CheckResult, DueCheck, Store, StoreError};
use crate::syntax::{Analysis, Syntax, tokens};
pub use survival::survival;

/// Bytes around the code's old place searched first; most code has not moved.
const NEARBY_BYTES: usize = 1024;
/// Files larger than this are not searched for moved code (nor read at all).
const MAX_FILE_BYTES: u64 = crate::syntax::MAX_PARSE_BYTES as u64;
/// Files of a workspace searched for moved code, at most.
const MAX_WORKSPACE_FILES: usize = 5_000;

/// A hash of the normalized tokens of `code` (layout and quote style do not change it).
pub fn fingerprint(code: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tokens(code).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Anchors the code at bytes `region` of the document `text` (at `path`, in `language`), with
/// the static analysis of it when the language has a grammar.
pub fn anchor(
    path: &Path,
    root: Option<&Path>,
    language: &str,
    text: &str,
    region: std::ops::Range<usize>,
) -> (Anchor, Option<Analysis>) {
    let analysis = Syntax::for_language(language)
        .and_then(|syntax| Some(syntax.analyze(&syntax.parse(text)?, text, region.clone())));
    let region = floor(text, region.start)..floor(text, region.end.min(text.len()));
    let anchor = Anchor {
        path: path.to_owned(),
        root: root.map(Path::to_owned),
        start: region.start,
        end: region.end,
        scopes: analysis.as_ref().map(|a| a.scopes.clone()).unwrap_or_default(),
        tokens: tokens(&text[region.clone()]).len(),
        fingerprint: fingerprint(&text[region]),
    };
    (anchor, analysis)
}

/// Runs the retention checks that are due.
pub struct Sweep<'a> {
    /// Survival at or above this counts as kept (`retention_7d`, `retention_30d`).
    pub threshold: f64,
    /// The text of a document open in an editor, if it is one.
    pub open_document: &'a dyn Fn(&Path) -> Option<String>,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    pub checked: usize,
    /// Checks whose file could not be judged (unreadable, binary, too big); logged with the reason.
    pub unjudged: usize,
}

impl Sweep<'_> {
    /// Checks everything due by `now_ms` and records the results.
    pub fn run(&self, store: &mut Store, now_ms: i64) -> Result<SweepReport, StoreError> {
        let due = store.due_checks(now_ms)?;
        let mut files = Files { open_document: self.open_document, read: HashMap::new(), workspaces: HashMap::new() };
        let mut by_interaction: HashMap<&str, Vec<&DueCheck>> = HashMap::new();
        for check in &due {
            by_interaction.entry(&check.interaction_id).or_default().push(check);
        }
        let mut report = SweepReport::default();
        let mut results = Vec::with_capacity(due.len());
        for checks in by_interaction.values() {
            let found = locate(checks[0], &mut files);
            if found.is_none() {
                report.unjudged += checks.len();
            }
            report.checked += checks.len();
            for check in checks {
                results.push(CheckResult {
                    interaction_id: check.interaction_id.clone(),
                    label: check.label.clone(),
                    checked_ms: now_ms,
                    survival: found.as_ref().map(|f| f.0),
                    found_in: found.as_ref().and_then(|f| f.1.clone()),
                    kept: found.as_ref().map(|f| f.0 >= self.threshold),
                });
            }
        }
        store.record_checks(&results)?;
        Ok(report)
    }
}

/// The survival of one suggestion's code and the file it was best found in; `None` when the
/// anchored file cannot be judged.
fn locate(check: &DueCheck, files: &mut Files) -> Option<(f64, Option<String>)> {
    let anchor = check.anchor.as_ref();
    let path = anchor.map(|a| a.path.clone()).or_else(|| crate::uri::to_path(&check.file_path))?;
    let code = tokens(&check.final_code);
    let text = match files.text(&path) {
        Ok(text) => text,
        Err(Unreadable::Missing) => Arc::new(String::new()),
        Err(Unreadable::Reason(reason)) => {
            tracing::warn!(path = %path.display(), reason, "retention check not judged");
            return None;
        }
    };
    let shown = path.display().to_string();
    let mut best = Best { share: 0.0, file: None };
    // Near its old place, then its named unit, then anywhere in the file.
    if let Some(a) = anchor {
        let from = floor(&text, a.start.saturating_sub(NEARBY_BYTES + (a.end - a.start)));
        let to = floor(&text, (a.end + NEARBY_BYTES + (a.end - a.start)).min(text.len()));
        if best.consider(survival(&code, &tokens(&text[from..to])), &shown) {
            return Some(best.into());
        }
    }
    if let Some(unit) = anchor.and_then(|a| named_unit(a, &check.language, &text))
        && best.consider(survival(&code, &tokens(&text[unit])), &shown)
    {
        return Some(best.into());
    }
    if best.consider(survival(&code, &tokens(&text)), &shown) {
        return Some(best.into());
    }
    // Moved to another file of the workspace (or its file renamed or deleted).
    if let Some(root) = anchor.and_then(|a| a.root.clone()) {
        let words: Vec<&str> = code.iter().copied().filter(|t| t.len() > 2).collect();
        for (other, other_text) in files.workspace(&root, &path) {
            // Most files share few of the code's words: skip them without aligning.
            let present = words.iter().filter(|w| other_text.contains(**w)).count();
            if present * 2 < words.len() {
                continue;
            }
            if best.consider(survival(&code, &tokens(&other_text)), &other.display().to_string()) {
                break;
            }
        }
    }
    Some(best.into())
}

/// The best match so far.
struct Best {
    share: f64,
    file: Option<String>,
}

impl Best {
    /// Keeps `share` if it is better; `true` once nothing can beat it.
    fn consider(&mut self, share: f64, file: &str) -> bool {
        if share > self.share {
            self.share = share;
            self.file = Some(file.to_owned());
        }
        self.share >= 1.0
    }
}

impl From<Best> for (f64, Option<String>) {
    fn from(best: Best) -> Self {
        (best.share, best.file)
    }
}

/// The bytes of the innermost named unit of `anchor` that still exists in `text` (by name path).
fn named_unit(anchor: &Anchor, language: &str, text: &str) -> Option<std::ops::Range<usize>> {
    let wanted = anchor.scopes.last()?;
    let syntax = Syntax::for_language(language)?;
    let scopes = syntax.scopes(&syntax.parse(text)?, text);
    let found = scopes.iter().find(|s| s.path == wanted.path && s.kind == wanted.kind)?;
    Some(found.start..found.end)
}

fn floor(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

enum Unreadable {
    Missing,
    Reason(String),
}

/// The files read during one sweep, each once.
struct Files<'a> {
    open_document: &'a dyn Fn(&Path) -> Option<String>,
    read: HashMap<PathBuf, Result<Arc<String>, String>>,
    /// Root and extension → the files searched for moved code.
    workspaces: HashMap<(PathBuf, String), Vec<PathBuf>>,
}

impl Files<'_> {
    fn text(&mut self, path: &Path) -> Result<Arc<String>, Unreadable> {
        if let Some(text) = (self.open_document)(path) {
            return Ok(Arc::new(text));
        }
        if !path.exists() {
            return Err(Unreadable::Missing);
        }
        let read = self
            .read
            .entry(path.to_owned())
            .or_insert_with(|| crate::watch::read_text(path, MAX_FILE_BYTES).map(Arc::new));
        read.clone().map_err(Unreadable::Reason)
    }

    /// The other readable files under `root` with `path`'s extension.
    fn workspace(&mut self, root: &Path, path: &Path) -> Vec<(PathBuf, Arc<String>)> {
        let extension = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let list = self
            .workspaces
            .entry((root.to_owned(), extension.clone()))
            .or_insert_with(|| source_files(root, &extension))
            .clone();
        list.into_iter().filter(|p| p != path).filter_map(|p| Some((p.clone(), self.text(&p).ok()?))).collect()
    }
}

/// Files under `root` ending in `.extension`, outside the directories the watcher ignores too.
fn source_files(root: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && !crate::watch::is_ignored(&path) => pending.push(path),
                Ok(kind) if kind.is_file() && path.extension().is_some_and(|e| e == extension) => {
                    out.push(path);
                    if out.len() == MAX_WORKSPACE_FILES {
                        tracing::warn!(root = %root.display(), "more than {MAX_WORKSPACE_FILES} .{extension} files; the rest is not searched for moved code");
                        return out;
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}
