//! Repository snippets for the prompt: the functions of the workspace's files, ranked by BM25
//! against the lines just before the cursor. Entry: [`Index`].
//!
//! A unit is a function that no other function encloses (methods included), cut by tree-sitter
//! (`syntax::scopes`) and shortened to its first [`MAX_UNIT_LINES`] lines: what a prompt can
//! afford, and the part that shows how a helper is called. Terms are identifiers, whole and split
//! at `_` and case changes (`parse_header` also counts as `parse` and `header`), so the query's
//! vocabulary meets a helper's name however it is spelled. The index lives in memory: a 5 000-file
//! workspace is a few tens of MB of text, built once in the background and updated file by file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::syntax::Syntax;
use crate::watch;

/// Lines of a function kept as its snippet.
pub const MAX_UNIT_LINES: usize = 30;
/// Files larger than this are not indexed (generated code, vendored bundles).
pub const MAX_FILE_BYTES: u64 = 512 * 1024;
/// Files indexed at most; the rest of a huge tree is left out (said in the log).
pub const MAX_FILES: usize = 20_000;
/// Lines before the cursor that make the query.
const QUERY_LINES: usize = 12;
/// BM25's usual constants (term-frequency saturation, length normalisation).
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// One ranked snippet.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    pub path: PathBuf,
    pub text: String,
    pub score: f64,
}

struct Unit {
    file: u32,
    text: String,
    terms: u32,
}

/// The workspace's functions and their terms.
#[derive(Default)]
pub struct Index {
    /// `None` for a unit whose file changed since (its slot is reused by the next one added).
    units: Vec<Option<Unit>>,
    free: Vec<u32>,
    files: Vec<PathBuf>,
    file_ids: HashMap<PathBuf, u32>,
    /// Per file, its units.
    file_units: HashMap<u32, Vec<u32>>,
    /// Per term, the units holding it and how often.
    postings: HashMap<Box<str>, Vec<(u32, u16)>>,
    live: usize,
    total_terms: u64,
}

impl Index {
    /// Indexes every source file under `roots` (skipping what the file watcher skips).
    pub fn build(roots: &[PathBuf]) -> Index {
        let mut index = Index::default();
        for path in source_files(roots) {
            index.update(&path);
        }
        index
    }

    /// Number of units indexed.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of files with at least one unit.
    pub fn files(&self) -> usize {
        self.file_units.len()
    }

    /// Reads `path` again: its units are replaced, or removed when it is gone, unreadable or not
    /// source code we parse.
    pub fn update(&mut self, path: &Path) {
        self.set_units(path, units_of(path));
    }

    /// Replaces the units of `path` (from [`units_of`], which a caller may run outside a lock).
    pub fn set_units(&mut self, path: &Path, units: Vec<String>) {
        self.remove_file(path);
        if units.is_empty() {
            return;
        }
        let file = self.file_id(path);
        for unit in units {
            self.add_unit(file, unit);
        }
    }

    /// Forgets the units of `path`.
    pub fn remove_file(&mut self, path: &Path) {
        let Some(&file) = self.file_ids.get(path) else { return };
        for id in self.file_units.remove(&file).unwrap_or_default() {
            let Some(unit) = self.units[id as usize].take() else { continue };
            for term in counted_terms(&unit.text).into_keys() {
                if let Some(list) = self.postings.get_mut(term.as_str()) {
                    list.retain(|&(u, _)| u != id);
                    if list.is_empty() {
                        self.postings.remove(term.as_str());
                    }
                }
            }
            self.live -= 1;
            self.total_terms -= u64::from(unit.terms);
            self.free.push(id);
        }
    }

    /// Forgets every file under `dir` (a directory renamed or removed).
    pub fn remove_tree(&mut self, dir: &Path) {
        let under: Vec<PathBuf> = self.file_ids.keys().filter(|p| p.starts_with(dir)).cloned().collect();
        for path in under {
            self.remove_file(&path);
        }
    }

    /// The `k` best units for a cursor after `prefix`, best first; `skip` drops a candidate
    /// (a snippet the prompt already shows, the function being written).
    pub fn search(&self, prefix: &str, k: usize, skip: impl Fn(&Path, &str) -> bool) -> Vec<Snippet> {
        if self.live == 0 || k == 0 {
            return Vec::new();
        }
        let query_start = nth_line_start_from_end(prefix, QUERY_LINES);
        let query = counted_terms(&prefix[query_start..]);
        let n = self.live as f64;
        let average = self.total_terms as f64 / n;
        let mut scores: HashMap<u32, f64> = HashMap::new();
        for (term, &weight) in &query {
            let Some(list) = self.postings.get(term.as_str()) else { continue };
            let df = list.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(id, tf) in list {
                let Some(unit) = &self.units[id as usize] else { continue };
                let tf = f64::from(tf);
                let norm = K1 * (1.0 - B + B * f64::from(unit.terms) / average);
                *scores.entry(id).or_default() += f64::from(weight.min(3)) * idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(u32, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out = Vec::with_capacity(k.min(ranked.len()));
        for (id, score) in ranked {
            let unit = self.units[id as usize].as_ref().expect("scored units are live");
            let path = &self.files[unit.file as usize];
            if skip(path, &unit.text) {
                continue;
            }
            out.push(Snippet { path: path.clone(), text: unit.text.clone(), score });
            if out.len() == k {
                break;
            }
        }
        out
    }

    fn file_id(&mut self, path: &Path) -> u32 {
        if let Some(&id) = self.file_ids.get(path) {
            return id;
        }
        let id = u32::try_from(self.files.len()).expect("fewer than 4 billion files");
        self.files.push(path.to_owned());
        self.file_ids.insert(path.to_owned(), id);
        id
    }

    fn add_unit(&mut self, file: u32, text: String) {
        let counted = counted_terms(&text);
        let terms: u32 = counted.values().sum();
        let id = self.free.pop().unwrap_or_else(|| {
            self.units.push(None);
            u32::try_from(self.units.len() - 1).expect("fewer than 4 billion units")
        });
        for (term, tf) in counted {
            let tf = u16::try_from(tf).unwrap_or(u16::MAX);
            self.postings.entry(term.into_boxed_str()).or_default().push((id, tf));
        }
        self.units[id as usize] = Some(Unit { file, text, terms });
        self.file_units.entry(file).or_default().push(id);
        self.live += 1;
        self.total_terms += u64::from(terms);
    }
}

/// The units of the file at `path`: nothing when it is gone, unreadable or not source code we parse.
pub fn units_of(path: &Path) -> Vec<String> {
    let Some(language) = Syntax::language_of_path(path) else { return Vec::new() };
    match watch::read_text(path, MAX_FILE_BYTES) {
        Ok(text) => units_in(language, &text),
        Err(_) => Vec::new(),
    }
}

/// The functions of `text` that no other function encloses, each from its line's start and at
/// most [`MAX_UNIT_LINES`] long.
pub fn units_in(language: &str, text: &str) -> Vec<String> {
    let Some(syntax) = Syntax::for_language(language) else { return Vec::new() };
    let Some(tree) = syntax.parse(text) else { return Vec::new() };
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut units = Vec::new();
    for scope in syntax.scopes(&tree, text) {
        if scope.kind != "function" || taken.iter().any(|&(start, end)| start <= scope.start && scope.end <= end) {
            continue;
        }
        taken.push((scope.start, scope.end));
        let line_start = text[..scope.start].rfind('\n').map_or(0, |i| i + 1);
        let unit: String = text[line_start..scope.end].split_inclusive('\n').take(MAX_UNIT_LINES).collect();
        units.push(unit.trim_end().to_owned());
    }
    units
}

/// The source files under `roots` that [`Index::build`] reads, at most [`MAX_FILES`].
pub fn source_files(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = pending.pop() {
        if dir.join("pyvenv.cfg").exists() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && !watch::is_ignored(&path) => pending.push(path),
                Ok(kind) if kind.is_file() && Syntax::language_of_path(&path).is_some() => {
                    if found.len() == MAX_FILES {
                        tracing::warn!(
                            "more than {MAX_FILES} source files under the workspace; the rest is not indexed"
                        );
                        return found;
                    }
                    found.push(path);
                }
                _ => {}
            }
        }
    }
    found
}

/// Keywords of the languages we parse, and `self`: every function has them, so they would make
/// any function a match for any cursor.
const KEYWORDS: &[&str] = &[
    "and", "as", "async", "await", "break", "case", "class", "const", "continue", "def", "default", "del", "elif",
    "else", "enum", "except", "export", "false", "False", "finally", "fn", "for", "from", "func", "function", "go",
    "if", "impl", "import", "in", "is", "let", "match", "mod", "mut", "new", "None", "not", "null", "or", "pass",
    "pub", "raise", "return", "self", "Self", "static", "struct", "this", "true", "True", "try", "type", "use", "var",
    "where", "while", "with", "yield",
];

/// A keyword of one of the languages we parse (or `self`): a word no lookup is worth making for.
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// Terms of `text` and how often each occurs: identifiers of two characters or more, and the
/// parts of compound ones; keywords left out.
fn counted_terms(text: &str) -> HashMap<String, u32> {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.len() < 2 || word.starts_with(|c: char| c.is_ascii_digit()) || KEYWORDS.contains(&word) {
            continue;
        }
        *counts.entry(word.to_owned()).or_default() += 1;
        let parts = subwords(word);
        if parts.len() > 1 {
            for part in parts.into_iter().filter(|p| p.len() >= 2) {
                *counts.entry(part).or_default() += 1;
            }
        }
    }
    counts
}

/// `parse_header` → parse, header; `HttpRequest` → http, request; lowercased.
fn subwords(word: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for piece in word.split('_').filter(|p| !p.is_empty()) {
        let mut current = String::new();
        let mut previous_lower = false;
        for c in piece.chars() {
            if c.is_uppercase() && previous_lower && !current.is_empty() {
                parts.push(std::mem::take(&mut current));
            }
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
            current.extend(c.to_lowercase());
        }
        if !current.is_empty() {
            parts.push(current);
        }
    }
    parts
}

/// Where the last `lines` lines of `text` start.
fn nth_line_start_from_end(text: &str, lines: usize) -> usize {
    text.trim_end_matches('\n').rmatch_indices('\n').nth(lines.saturating_sub(1)).map_or(0, |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELPERS: &str = "\
def parse_header(line):
    key, _, value = line.partition(':')
    return key.strip().lower(), value.strip()


class Reader:
    def read_headers(self, stream):
        def inner():
            return 1
        headers = {}
        for line in stream:
            key, value = parse_header(line)
            headers[key] = value
        return headers


def unrelated(total, count):
    return total / count
";

    fn index_of(files: &[(&str, &str)]) -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::create_dir_all(dir.path().join(name).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let index = Index::build(&[dir.path().to_owned()]);
        (dir, index)
    }

    #[test]
    fn outermost_functions_are_units_ranked_by_the_lines_before_the_cursor() {
        let (dir, index) = index_of(&[
            ("pkg/http.py", HELPERS),
            ("node_modules/x/big.js", "function parseHeader(line) { return line }"),
            ("notes.txt", "parse_header"),
        ]);
        assert_eq!(index.len(), 3, "parse_header, Reader.read_headers (its nested function inside it), unrelated");
        let prefix = "def headers_of(request):\n    \"\"\"Every header line parsed.\"\"\"\n    ";
        let hits = index.search(prefix, 2, |_, _| false);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].path, dir.path().join("pkg/http.py"));
        assert!(hits[0].text.starts_with("    def read_headers(self, stream):"), "{}", hits[0].text);
        assert!(hits[1].text.starts_with("def parse_header(line):"), "{}", hits[1].text);
        assert!(hits[0].score > hits[1].score);

        let skipped = index.search(prefix, 1, |_, text| text.contains("read_headers"));
        assert!(skipped[0].text.starts_with("def parse_header"), "skip drops a candidate");
        assert!(index.search("x = 1\n", 3, |_, _| false).is_empty(), "no shared term, no snippet");
    }

    #[test]
    fn files_are_replaced_and_removed_one_by_one() {
        let (dir, mut index) =
            index_of(&[("a.py", HELPERS), ("src/lib.rs", "fn checksum(data: &[u8]) -> u32 {\n    0\n}\n")]);
        assert_eq!(index.len(), 4);
        let rust = dir.path().join("src/lib.rs");
        assert_eq!(index.search("let c = checksum(&bytes);", 1, |_, _| false)[0].path, rust);

        std::fs::write(&rust, "fn crc32(data: &[u8]) -> u32 {\n    0\n}\n").unwrap();
        index.update(&rust);
        assert_eq!(index.len(), 4);
        assert!(index.search("checksum", 1, |_, _| false).is_empty(), "the old function is gone");
        assert_eq!(index.search("crc32(data)", 1, |_, _| false)[0].text, "fn crc32(data: &[u8]) -> u32 {\n    0\n}");

        std::fs::remove_file(dir.path().join("a.py")).unwrap();
        index.update(&dir.path().join("a.py"));
        assert_eq!((index.len(), index.files()), (1, 1));
        assert!(index.search("parse_header", 1, |_, _| false).is_empty());
        index.remove_tree(&dir.path().join("src"));
        assert!(index.is_empty());
        assert!(index.postings.is_empty(), "nothing is left behind in the postings");
    }

    #[test]
    fn long_functions_are_cut_and_compound_names_split() {
        let long: String = std::iter::once("def long_one():\n".to_owned())
            .chain((0..100).map(|i| format!("    x{i} = {i}\n")))
            .collect();
        let (_dir, index) = index_of(&[("long.py", &long)]);
        let hit = &index.search("long_one()", 1, |_, _| false)[0];
        assert_eq!(hit.text.lines().count(), MAX_UNIT_LINES);
        assert_eq!(subwords("HttpRequest_parse2x"), ["http", "request", "parse2x"]);
        assert_eq!(subwords("__init__"), ["init"]);
        assert_eq!(nth_line_start_from_end("a\nb\nc\n", 2), 2);
        assert_eq!(nth_line_start_from_end("a\nb", 5), 0);
    }
}
