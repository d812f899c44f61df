//! The user's own best code as few-shot examples (`[serving] own_examples`): code they took and
//! kept, excellent by its quality score (≥ 90) — or, while nothing reaches 90 in a language, the
//! best there is — each with the lines that led to it, ranked for the cursor like repository
//! snippets (`retrieve::Index`). Read from the store on a thread at start and again every ten
//! minutes (`reload.rs`); a request never waits for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::context::head;
use super::reload::FromStore;
use crate::daemon::protocol::ContextFile;
use crate::quality::Band;
use crate::retrieve::{Index, MAX_UNIT_LINES};
use crate::store::{Store, StoreError, TakenCode};

/// Examples kept per language, best first.
pub const POOL: usize = 2000;
/// Lines before the taken code that make an example readable.
const LEAD_LINES: usize = 8;

pub(super) struct Examples {
    by_language: FromStore<HashMap<String, Index>>,
}

impl Examples {
    pub(super) fn start(db: PathBuf) -> Examples {
        Examples { by_language: FromStore::start(db, "own examples", load) }
    }

    /// For `marunochi.status`: examples per language, or that they are being read.
    pub(super) fn status(&self) -> serde_json::Value {
        let counts = self.by_language.with(|by_language| {
            by_language.iter().map(|(language, index)| (language.clone(), index.len())).collect::<HashMap<_, _>>()
        });
        counts.map_or_else(|| serde_json::json!("loading"), |counts| serde_json::json!(counts))
    }

    /// The `k` examples in `language` most like the lines before the cursor, each at most
    /// `max_bytes` (whole lines). One the window already shows is dropped by the engine.
    pub(super) fn search(&self, language: &str, prefix: &str, k: usize, max_bytes: usize) -> Vec<ContextFile> {
        let hits = self.by_language.with(|by_language| {
            by_language.get(language).map(|index| index.search(prefix, k, |_, _| false)).unwrap_or_default()
        });
        hits.unwrap_or_default()
            .into_iter()
            .map(|hit| ContextFile {
                path: hit.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                text: head(&hit.text, max_bytes).trim_end().to_owned(),
            })
            .collect()
    }
}

fn load(store: &Store) -> Result<HashMap<String, Index>, StoreError> {
    Ok(indexes(&chosen(store.taken_code(POOL)?)))
}

/// Per language, the excellent rows (quality ≥ 90) when there are any, else all of them (the best
/// available; `stats` says which).
fn chosen(rows: Vec<TakenCode>) -> Vec<TakenCode> {
    let mut excellent: HashMap<String, bool> = HashMap::new();
    for row in &rows {
        *excellent.entry(row.language.clone()).or_default() |= Band::of(row.quality) == Band::Excellent;
    }
    rows.into_iter().filter(|row| !excellent[&row.language] || Band::of(row.quality) == Band::Excellent).collect()
}

fn indexes(rows: &[TakenCode]) -> HashMap<String, Index> {
    let mut by_language: HashMap<String, Index> = HashMap::new();
    for row in rows.iter().filter(|row| !row.code.trim().is_empty()) {
        // One path per example (under its id); the model is shown the file's name.
        let name = row.file_path.rsplit('/').next().unwrap_or_default();
        let path = Path::new(&row.id).join(name);
        by_language.entry(row.language.clone()).or_default().set_units(&path, vec![example(row)]);
    }
    by_language
}

/// The last lines before the taken code, then the code, at most `MAX_UNIT_LINES` lines.
fn example(row: &TakenCode) -> String {
    let lead_start =
        row.prefix.trim_end_matches([' ', '\t']).rmatch_indices('\n').nth(LEAD_LINES).map_or(0, |(i, _)| i + 1);
    let text = format!("{}{}", &row.prefix[lead_start..], row.code);
    let lines: String = text.split_inclusive('\n').take(MAX_UNIT_LINES).collect();
    lines.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, language: &str, quality: f64, code: &str) -> TakenCode {
        TakenCode {
            id: id.into(),
            language: language.into(),
            file_path: "file:///p/pkg/util.py".into(),
            prefix: "import os\n\n\ndef tidy(path):\n    ".into(),
            code: code.into(),
            quality,
        }
    }

    #[test]
    fn excellent_code_is_the_pool_and_the_best_stands_in_without_it() {
        let rows = vec![
            row("a", "python", 95.0, "return os.path.normpath(path)"),
            row("b", "python", 60.0, "return path"),
            row("c", "rust", 55.0, "path.trim()"),
            row("d", "rust", 40.0, "path"),
        ];
        let ids: Vec<String> = chosen(rows).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a", "c", "d"], "python has excellent code; rust has none, so all of it stands in");

        let pool = indexes(&chosen(vec![row("a", "python", 95.0, "return os.path.normpath(path)")]));
        let hits = pool["python"].search("def clean(path):\n    \"\"\"Tidy a path.\"\"\"\n", 1, |_, _| false);
        assert_eq!(hits[0].path, Path::new("a/util.py"), "one path per example, named by its file");
        assert_eq!(hits[0].text, "import os\n\n\ndef tidy(path):\n    return os.path.normpath(path)");
    }
}
