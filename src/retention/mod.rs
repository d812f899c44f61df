//! Does accepted code survive? Entries: [`anchor`] (where settled code lives, taken when the
//! capture stage settles it) and [`Sweep`] (the checks that are due: 30 s, 2 m, 5 m, 10 m after
//! acceptance as Copilot measures persistence, 7 d and 30 d as the seed asks).
//!
//! A check finds the code again by its tokens, looking ever wider: near where it was, in the
//! function or class it was anchored to (found by name, so edits above it do not matter), in the
//! whole file, then in the other files of the workspace with the same extension (moved code, a
//! renamed or deleted file), where only a share at the kept threshold or above counts (a scattered
//! half-match in some other file is not moved code). The survival is the best share found (see
//! `survival.rs`). Open documents are read as the editor has them, not as last
//! saved. Within one sweep each file is read, tokenized and parsed once, and the workspace's files
//! are indexed by word once, when the first check needs them.

mod survival;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::Anchor;
use crate::store::{CheckResult, DueCheck, Store, StoreError};
use crate::syntax::{Analysis, Syntax, tokens};
pub use survival::{Located, Vocabulary, plain_survival};

/// Bytes around the code's old place searched first; most code has not moved.
const NEARBY_BYTES: usize = 1024;
/// Files larger than this are not searched for moved code (nor read at all).
const MAX_FILE_BYTES: u64 = crate::syntax::MAX_PARSE_BYTES as u64;
/// A token pair occurring more often than this in a workspace (`( self`, `) :`) is not looked up
/// when searching for moved code; it counts as present everywhere.
const FREQUENT_PAIR: usize = 256;
/// Stretches of other files searched for one piece of moved code, at most (those sharing the
/// most token pairs with it first; moved code shares all of them).
const MOST_STRETCHES: usize = 32;
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
    /// Stop starting new checks after this long; the rest stay due for the next sweep (the
    /// capture writer's periodic sweep must not hold up the writes behind it). `None`: all.
    pub budget: Option<Duration>,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    pub checked: usize,
    /// Checks whose file could not be judged (unreadable, binary, too big); logged with the reason.
    pub unjudged: usize,
    /// Due checks left for the next sweep because the budget was spent.
    pub deferred: usize,
    /// Time spent reading and indexing workspaces to search for moved code (once per sweep).
    pub indexing: Duration,
}

impl Sweep<'_> {
    /// Checks everything due by `now_ms` (oldest first, within the budget) and records the results.
    pub fn run(&self, store: &mut Store, now_ms: i64) -> Result<SweepReport, StoreError> {
        let started = Instant::now();
        let due = store.due_checks(now_ms)?;
        let mut files = Files::new(self.open_document);
        // One search per suggestion, in the order its oldest check fell due.
        let mut order: Vec<&str> = Vec::new();
        let mut by_interaction: HashMap<&str, Vec<&DueCheck>> = HashMap::new();
        for check in &due {
            let checks = by_interaction.entry(&check.interaction_id).or_default();
            if checks.is_empty() {
                order.push(&check.interaction_id);
            }
            checks.push(check);
        }
        let mut report = SweepReport::default();
        let mut results = Vec::with_capacity(due.len());
        for id in order {
            let checks = &by_interaction[id];
            if self.budget.is_some_and(|budget| started.elapsed() >= budget) {
                report.deferred += checks.len();
                continue;
            }
            let found = locate(checks[0], self.threshold, &mut files);
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
        report.indexing = files.indexing;
        Ok(report)
    }
}

/// The survival of one suggestion's code and the file it was best found in; `None` when the
/// anchored file cannot be judged.
fn locate(check: &DueCheck, threshold: f64, files: &mut Files) -> Option<(f64, Option<String>)> {
    let anchor = check.anchor.as_ref();
    let path = anchor.map(|a| a.path.clone()).or_else(|| crate::uri::to_path(&check.file_path))?;
    let code = files.vocabulary.ids(&check.final_code);
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
    // Near its old place, then anywhere in the file (which holds the function or class it was in,
    // wherever that has moved).
    let whole = files.ids(&path, &text);
    if let Some(a) = anchor {
        let margin = NEARBY_BYTES + (a.end - a.start);
        let nearby = whole.within(a.start.saturating_sub(margin)..a.end + margin);
        if best.consider(files.vocabulary.survival(&code, nearby), &shown) {
            return Some(best.into());
        }
    }
    if best.consider(files.vocabulary.survival(&code, &whole.ids), &shown) {
        return Some(best.into());
    }
    // Moved to another file of the workspace (or its file renamed or deleted): only a file where
    // the code survives at least at the threshold, and better than here, can count.
    if let Some(root) = anchor.and_then(|a| a.root.clone()) {
        let wanted = threshold.max(best.share);
        for stretch in files.could_hold(&root, &path, &code, wanted) {
            let found = files.vocabulary.survival(&code, &stretch.ids.ids[stretch.range]);
            if best.consider(found, &stretch.file.display().to_string()) {
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

/// The files read during one sweep, each read, tokenized and parsed at most once.
struct Files<'a> {
    open_document: &'a dyn Fn(&Path) -> Option<String>,
    vocabulary: Vocabulary,
    read: HashMap<PathBuf, Result<Arc<String>, String>>,
    ids: HashMap<PathBuf, Arc<Located>>,
    /// Root and extension → the files searched for moved code, indexed by word.
    workspaces: HashMap<(PathBuf, String), Workspace>,
    /// Scratch for `could_hold`: per bucket of a workspace, the pair positions found (all zero
    /// between calls).
    hits: Vec<u16>,
    indexing: Duration,
}

/// A workspace's files of one extension, their tokens numbered one after the other (file `i`
/// starts at `starts[i]`), and where each pair of adjacent tokens occurs.
struct Workspace {
    files: Vec<(PathBuf, Arc<Located>)>,
    starts: Vec<u32>,
    at: foldhash::HashMap<u64, Vec<u32>>,
    tokens: u32,
}

impl<'a> Files<'a> {
    fn new(open_document: &'a dyn Fn(&Path) -> Option<String>) -> Files<'a> {
        Files {
            open_document,
            vocabulary: Vocabulary::default(),
            read: HashMap::new(),
            ids: HashMap::new(),
            workspaces: HashMap::new(),
            hits: Vec::new(),
            indexing: Duration::ZERO,
        }
    }

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

    /// The token ids of the whole of `text`, the content of `path`.
    fn ids(&mut self, path: &Path, text: &str) -> Arc<Located> {
        if let Some(ids) = self.ids.get(path) {
            return ids.clone();
        }
        let ids = Arc::new(self.vocabulary.ids_at(text));
        self.ids.insert(path.to_owned(), ids.clone());
        ids
    }

    /// The stretches of the other files under `root` with `path`'s extension in which `code`
    /// could survive at least at the share `wanted`, most likely first.
    ///
    /// The filter (the q-gram lemma for q = 2): a stretch within `k` insertions and deletions of
    /// the code is at most `len + k` tokens long and shares the token pair at no fewer than
    /// `len - 1 - 2k` of the code's pair positions, since each edit breaks at most two. The
    /// workspace is cut into buckets of `len + k` tokens; two buckets hold every such stretch that
    /// starts in the first, and are searched only when their pairs reach that count. Pairs too
    /// frequent to look up (`self .`, `) :`) count as found everywhere, but a window must hold at
    /// least one of the code's rarer pairs; code made only of frequent pairs is not searched for
    /// (any file's boilerplate would match it). The most promising windows are searched, at most
    /// `MOST_STRETCHES` of them.
    fn could_hold(&mut self, root: &Path, path: &Path, code: &[u32], wanted: f64) -> Vec<Stretch> {
        let edits = (code.len() as f64 * (1.0 - wanted) + 1e-9).floor() as usize;
        let Some(needed) = code.len().saturating_sub(1).checked_sub(2 * edits) else { return Vec::new() };
        let extension = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let key = (root.to_owned(), extension);
        if !self.workspaces.contains_key(&key) {
            let started = Instant::now();
            let workspace = self.index(&key.0, &key.1);
            self.workspaces.insert(key.clone(), workspace);
            self.indexing += started.elapsed();
        }
        let workspace = &self.workspaces[&key];
        let lists: Vec<&[u32]> =
            code.windows(2).filter_map(|pair| workspace.at.get(&pair_key(pair)).map(Vec::as_slice)).collect();
        let everywhere = lists.iter().filter(|at| at.len() > FREQUENT_PAIR).count();
        // Distinctive code keeps some of its rarer pairs wherever it went.
        let needed = needed.saturating_sub(everywhere).max(1);
        let bucket = (code.len() + edits) as u32;
        // Per bucket, the code's pair positions found in it (each position once).
        let hits = &mut self.hits;
        hits.resize((workspace.tokens / bucket + 2) as usize, 0);
        let mut touched: Vec<u32> = Vec::new();
        for at in lists.iter().filter(|at| at.len() <= FREQUENT_PAIR) {
            let mut counted = None;
            for &position in *at {
                let bucket = position / bucket;
                if counted != Some(bucket) {
                    counted = Some(bucket);
                    if hits[bucket as usize] == 0 {
                        touched.push(bucket);
                    }
                    hits[bucket as usize] = hits[bucket as usize].saturating_add(1);
                }
            }
        }
        // A window starts at a bucket with hits or at the one before it.
        let mut firsts: Vec<u32> = touched.iter().flat_map(|&b| [b.saturating_sub(1), b]).collect();
        firsts.sort_unstable();
        firsts.dedup();
        let mut stretches: Vec<Stretch> = Vec::new();
        for first in firsts {
            let count = usize::from(hits[first as usize]) + usize::from(hits[first as usize + 1]);
            if count >= needed {
                let window = first * bucket..((first + 2) * bucket).min(workspace.tokens);
                workspace.add_stretches(window, count, path, &mut stretches);
            }
        }
        for bucket in touched {
            hits[bucket as usize] = 0;
        }
        stretches.sort_unstable_by_key(|s| std::cmp::Reverse(s.likely));
        stretches.truncate(MOST_STRETCHES);
        stretches
    }

    fn index(&mut self, root: &Path, extension: &str) -> Workspace {
        let mut workspace =
            Workspace { files: Vec::new(), starts: Vec::new(), at: foldhash::HashMap::default(), tokens: 0 };
        for file in source_files(root, extension) {
            let Ok(text) = self.text(&file) else { continue };
            let ids = self.ids(&file, &text);
            for (offset, pair) in ids.ids.windows(2).enumerate() {
                workspace.at.entry(pair_key(pair)).or_default().push(workspace.tokens + offset as u32);
            }
            workspace.starts.push(workspace.tokens);
            workspace.tokens += ids.ids.len() as u32;
            workspace.files.push((file, ids));
        }
        workspace
    }
}

/// A stretch of a workspace file to search for moved code; `likely`: the pair count that chose it.
struct Stretch {
    file: PathBuf,
    ids: Arc<Located>,
    range: std::ops::Range<usize>,
    likely: usize,
}

impl Workspace {
    /// Adds the parts of `window` (workspace token positions) that lie in files other than `path`.
    fn add_stretches(&self, window: std::ops::Range<u32>, likely: usize, path: &Path, out: &mut Vec<Stretch>) {
        let mut file = self.starts.partition_point(|&start| start <= window.start) - 1;
        while file < self.files.len() && self.starts[file] < window.end {
            let start = self.starts[file];
            let (other, ids) = &self.files[file];
            let range =
                (window.start.max(start) - start) as usize..(window.end - start).min(ids.ids.len() as u32) as usize;
            file += 1;
            if other == path || range.is_empty() {
                continue;
            }
            out.push(Stretch { file: other.clone(), ids: ids.clone(), range, likely });
        }
    }
}

/// Two adjacent tokens as one key.
fn pair_key(pair: &[u32]) -> u64 {
    (u64::from(pair[0]) << 32) | u64::from(pair[1])
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
