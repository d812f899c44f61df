//! The prompt's context, from the document mirror: windows of the text around the cursor whose
//! starts move only in steps (so the daemon's KV cache stays valid while the user types), the other
//! open documents most recently edited first, and recent edits coalesced from the edit stream.

use super::Serving;
use crate::daemon::protocol::{ContextFile, RecentEdit};
use crate::lsp::mirror::{Change, Mirror};

/// Bytes of the document before / after the cursor sent with a request. The prompt budget
/// (~1k tokens) needs far less; the rest is only transfer and tokenizing cost.
pub(super) const PREFIX_BYTES: usize = 12 * 1024;
pub(super) const SUFFIX_BYTES: usize = 4 * 1024;
/// Bytes of each other open document offered as context (its head).
pub(super) const CONTEXT_FILE_BYTES: usize = 4 * 1024;
const RECENT_EDITS: usize = 4;

/// A run of typing in one place, coalesced from single-character changes.
pub(super) struct Edit {
    uri: String,
    /// Byte offset where the run's inserted text ends, to extend the run with the next keystroke.
    end: usize,
    removed: String,
    inserted: String,
}

impl Serving {
    pub(super) fn read_document_events(&mut self) {
        while let Ok(event) = self.documents.try_recv() {
            self.sink.document(&event);
            match event.change {
                Change::Opened { .. } => {}
                Change::Closed => {
                    self.edited.remove(&event.uri);
                    self.warmed.remove(&event.uri);
                }
                Change::Edited { start, removed, inserted } => {
                    self.edit_sequence += 1;
                    self.edited.insert(event.uri.clone(), self.edit_sequence);
                    let extends = self.edits.back().is_some_and(|e| {
                        e.uri == event.uri
                            && (e.end == start || (inserted.is_empty() && start + removed.len() == e.end))
                    });
                    if extends {
                        let edit = self.edits.back_mut().expect("checked");
                        if inserted.is_empty() && edit.inserted.len() >= removed.len() {
                            edit.inserted.truncate(edit.inserted.len() - removed.len());
                            edit.end = start;
                        } else {
                            edit.inserted.push_str(&inserted);
                            edit.end = start + inserted.len();
                        }
                    } else {
                        if self.edits.len() == RECENT_EDITS + 1 {
                            self.edits.pop_front();
                        }
                        self.edits.push_back(Edit { uri: event.uri, end: start + inserted.len(), removed, inserted });
                    }
                }
            }
        }
    }

    pub(super) fn relative_path(&self, uri: &str) -> String {
        let relative = self.roots.iter().find_map(|root| uri.strip_prefix(root.as_str()));
        relative.map_or_else(|| uri.rsplit('/').next().unwrap_or(uri).to_owned(), str::to_owned)
    }

    pub(super) fn repo_name(&self) -> Option<String> {
        let root = self.roots.first()?.trim_end_matches('/');
        Some(root.rsplit('/').next()?.to_owned())
    }

    pub(super) fn context_files(&self, mirror: &Mirror, current: &str) -> Vec<ContextFile> {
        let in_workspace = |uri: &str| self.roots.is_empty() || self.roots.iter().any(|r| uri.starts_with(r.as_str()));
        let mut others: Vec<_> = mirror.documents().filter(|d| d.uri != current && in_workspace(&d.uri)).collect();
        others.sort_by_key(|d| std::cmp::Reverse(self.edited.get(&d.uri).copied().unwrap_or(0)));
        others
            .into_iter()
            .take(self.config.context_files)
            .map(|d| ContextFile {
                path: self.relative_path(&d.uri),
                text: head(&d.text, CONTEXT_FILE_BYTES).to_owned(),
            })
            .collect()
    }

    /// Recent edits, most recent first, without the run of typing that ends at the cursor (the
    /// prefix already shows it).
    pub(super) fn recent_edits(&self, uri: &str, cursor: usize) -> Vec<RecentEdit> {
        self.edits
            .iter()
            .rev()
            .filter(|e| !(e.uri == uri && e.end == cursor))
            .filter(|e| !(e.removed.trim().is_empty() && e.inserted.trim().is_empty()))
            .take(RECENT_EDITS)
            .map(|e| RecentEdit {
                path: self.relative_path(&e.uri),
                before: e.removed.clone(),
                after: e.inserted.clone(),
            })
            .collect()
    }
}

/// The prefix and suffix windows a request would have after the keystrokes most likely to follow
/// the cursor coming to rest on a line of code, most likely first: a new line opened below it
/// (Vim's `o`, Enter at its end), indented as that line is, a level deeper after a line that opens
/// a block (`:`, `{`, `(`, `[`), as editors indent; then a new line opened above it (Vim's `O`),
/// indented as it is. Nothing on a blank line (where nothing says what comes next).
pub(super) fn opened_lines(text: &str, offset: usize) -> Vec<(String, String)> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    if line.trim().is_empty() {
        return Vec::new();
    }
    let indent = &line[..line.len() - line.trim_start().len()];
    let deeper = if !line.trim_end().ends_with([':', '{', '(', '[']) {
        ""
    } else if indent.starts_with('\t') {
        "\t"
    } else {
        "    "
    };
    let below = format!("{}\n{indent}{deeper}", &text[..line_end]);
    let above = format!("{}{indent}", &text[..line_start]);
    let after_above = format!("\n{}", &text[line_start..]);
    vec![
        (tail(&below, PREFIX_BYTES).to_owned(), head(&text[line_end..], SUFFIX_BYTES).to_owned()),
        (tail(&above, PREFIX_BYTES).to_owned(), head(&after_above, SUFFIX_BYTES).to_owned()),
    ]
}

/// At most the last `max` bytes of `text`, starting at the first line start after a multiple of
/// `max / 4`: the start stays put while the user types at the end, so the daemon's KV cache for the
/// prompt stays valid (a start moving with every keystroke would recompute the whole prompt).
pub(super) fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let step = (max / 4).max(1);
    let mut start = (text.len() - max).div_ceil(step) * step;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    cut.find('\n').map_or(cut, |i| &cut[i + 1..])
}

/// The first `max` bytes of `text`, ending at a line end when one is in them.
pub(super) fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &text[..end];
    cut.rfind('\n').map_or(cut, |i| &cut[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cut_at_lines_and_characters() {
        let text = "aaaa\nbbbb\ncccc";
        assert_eq!(tail(text, 100), text);
        assert_eq!(tail(text, 7), "cccc");
        let mut long: String = (0..100).map(|i| format!("{i:03}\n")).collect();
        let mut starts = std::collections::BTreeSet::new();
        for _ in 0..40 {
            long.push('x');
            starts.insert(long.len() - tail(&long, 40).len());
        }
        assert!(starts.len() <= 5, "the start moves once per 10 typed bytes at most: {starts:?}");
        assert_eq!(head(text, 7), "aaaa\n");
        assert_eq!(head("ééééé", 3), "é");
        assert_eq!(tail("ééééé", 3), "é");
    }

    #[test]
    fn the_lines_opened_below_and_above_are_indented_as_editors_indent_them() {
        let text = "def f(x):\n    if x:\n        return 1\n    y = 2\n\n";
        let at = |needle: &str| text.find(needle).unwrap() + 2;
        let below = |needle| opened_lines(text, at(needle))[0].clone();
        let above = |needle| opened_lines(text, at(needle))[1].clone();
        assert_eq!(
            below("if x"),
            ("def f(x):\n    if x:\n        ".to_owned(), "\n        return 1\n    y = 2\n\n".to_owned())
        );
        assert_eq!(below("y =").0, "def f(x):\n    if x:\n        return 1\n    y = 2\n    ");
        assert_eq!(below("def").0, "def f(x):\n    ");
        assert_eq!(
            above("if x"),
            ("def f(x):\n    ".to_owned(), "\n    if x:\n        return 1\n    y = 2\n\n".to_owned())
        );
        assert_eq!(above("def"), (String::new(), format!("\n{text}")));
        assert_eq!(opened_lines(text, text.len() - 1), Vec::new(), "a blank line says nothing");
        assert_eq!(opened_lines("fn f() {\n\tg(", 12)[0].0, "fn f() {\n\tg(\n\t\t");
    }
}
