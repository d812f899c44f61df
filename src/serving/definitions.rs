//! Definitions (`[serving] definitions`): the names just before the cursor, looked up by the
//! user's own language server (`textDocument/definition`, asked through the relay), shown to the
//! model as the first lines of each definition: the project's functions and classes that the base
//! model has never seen.
//!
//! The questions go out when the keystroke arrives, so the answers come in during the debounce;
//! after it a generation waits at most `definitions_wait_ms` more and goes without the rest. Every
//! answer is remembered for a minute per document and name, so a slow server's late answers serve
//! the next keystrokes instead of delaying this one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::context::{head, tail};
use crate::daemon::protocol::ContextFile;
use crate::lsp::mirror::{DocumentSnapshot, PositionEncoding};

/// A request of ours for the language server, and where its result goes (the relay drops `reply`
/// when the server cannot take the question now or does not offer the method).
#[derive(Debug)]
pub struct Question {
    pub method: &'static str,
    pub params: Value,
    pub reply: oneshot::Sender<Value>,
}

/// How the serving stage hands a question to the relay.
pub type Ask = Arc<dyn Fn(Question) + Send + Sync>;

/// Names asked about per keystroke, nearest the cursor first.
const NAMES: usize = 6;
/// Lines before the cursor whose names are candidates.
const LOOKBACK_LINES: usize = 8;
/// Lines of a definition shown: its first line and what lies one level inside it.
const OUTLINE_LINES: usize = 12;
/// How long an answer stands for its document and name.
const REMEMBER: Duration = Duration::from_secs(60);
/// Remembered answers kept at most (then all are forgotten at once).
const REMEMBERED: usize = 2048;
/// Around the cursor, what a default prompt shows anyway (bytes before, after): definitions
/// there add nothing.
const NEAR_BYTES: (usize, usize) = (4096, 1024);

/// Where a name is defined: a file and a zero-based line.
#[derive(Debug, Clone, PartialEq)]
struct Location {
    path: PathBuf,
    line: usize,
}

/// A document and a name in it.
type Key = (String, String);
/// Each name's answer, and when it came in (or was asked, while none has).
type Remembered = Arc<Mutex<HashMap<Key, (Instant, Option<Location>)>>>;

pub(super) struct Definitions {
    ask: Ask,
    roots: Vec<PathBuf>,
    remembered: Remembered,
}

/// The answers one request is waiting for.
pub(super) struct Pending {
    answers: Vec<Answer>,
    current: Option<PathBuf>,
    /// The current document's text, and the lines of it the prompt shows anyway.
    document: Arc<DocumentSnapshot>,
    near_lines: std::ops::RangeInclusive<usize>,
}

enum Answer {
    Known(Option<Location>),
    Asked(JoinHandle<Option<Location>>),
}

impl Definitions {
    pub(super) fn new(ask: Ask, roots: Vec<PathBuf>) -> Definitions {
        Definitions { ask, roots, remembered: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Asks about the names before byte `offset` of `document` (on the relay's loop: it only sends).
    pub(super) fn ask(
        &self,
        uri: &str,
        document: Arc<DocumentSnapshot>,
        encoding: PositionEncoding,
        offset: usize,
    ) -> Pending {
        let mut remembered = self.remembered.lock().expect("definitions");
        if remembered.len() > REMEMBERED {
            remembered.clear();
        }
        let answers = names_before(&document.text, offset)
            .into_iter()
            .map(|(name, at)| {
                let key = (uri.to_owned(), name);
                if let Some((when, location)) = remembered.get(&key)
                    && when.elapsed() < REMEMBER
                {
                    return Answer::Known(location.clone());
                }
                // Asked once: a name the server is slow to answer is not asked again at every keystroke.
                remembered.insert(key.clone(), (Instant::now(), None));
                let (reply, answer) = oneshot::channel();
                let position = document.position_at(at, encoding);
                let params = json!({"textDocument": {"uri": uri}, "position": position});
                (self.ask)(Question { method: "textDocument/definition", params, reply });
                let remembered = self.remembered.clone();
                Answer::Asked(tokio::spawn(async move {
                    let location = answer.await.ok().as_ref().and_then(location_of);
                    remembered.lock().expect("definitions").insert(key, (Instant::now(), location.clone()));
                    location
                }))
            })
            .collect();
        let text = &document.text;
        let near_start = offset - tail(&text[..offset], NEAR_BYTES.0).len();
        let near_end = offset + head(&text[offset..], NEAR_BYTES.1).len();
        let line_of = |at: usize| text[..at].matches('\n').count();
        Pending {
            answers,
            current: crate::uri::to_path(uri),
            near_lines: line_of(near_start)..=line_of(near_end),
            document,
        }
    }

    /// The first `count` definitions in the workspace that the prompt does not show anyway, as
    /// context items of at most `max_bytes`; answers not in by `deadline` are left out.
    pub(super) async fn collect(
        &self,
        pending: Pending,
        deadline: tokio::time::Instant,
        count: usize,
        max_bytes: usize,
    ) -> Vec<ContextFile> {
        let mut found: Vec<ContextFile> = Vec::new();
        let mut seen: Vec<Location> = Vec::new();
        for answer in pending.answers {
            if found.len() == count {
                break;
            }
            let location = match answer {
                Answer::Known(location) => location,
                // A late answer still lands in `remembered`: dropping the handle detaches the task.
                Answer::Asked(task) => {
                    tokio::time::timeout_at(deadline, task).await.ok().and_then(Result::ok).flatten()
                }
            };
            let Some(location) = location.filter(|l| !seen.contains(l)) else { continue };
            seen.push(location.clone());
            let Some(root) = self.roots.iter().find(|root| location.path.starts_with(root)) else { continue };
            let relative = location.path.strip_prefix(root).unwrap_or(&location.path);
            if relative.components().any(|c| crate::watch::is_ignored(Path::new(c.as_os_str()))) {
                continue;
            }
            let in_current = pending.current.as_deref() == Some(location.path.as_path());
            if in_current && pending.near_lines.contains(&location.line) {
                continue;
            }
            // Another file has the repository index's limit: anything bigger is not a source file.
            let read;
            let text = if in_current {
                Some(pending.document.text.as_str())
            } else {
                read = crate::watch::read_text(&location.path, crate::retrieve::MAX_FILE_BYTES).ok();
                read.as_deref()
            };
            let Some(outline) = text.and_then(|text| outline(text, location.line)) else { continue };
            found.push(ContextFile {
                path: relative.to_string_lossy().into_owned(),
                text: head(&outline, max_bytes).trim_end().to_owned(),
            });
        }
        found
    }
}

/// The distinct names in the lines before `offset`, nearest first (the function of a call the
/// cursor is inside before all), with the byte offset of their nearest occurrence: identifiers of
/// two characters or more, not keywords, not the word being typed at the cursor (its definition is
/// what the user is looking for).
fn names_before(text: &str, offset: usize) -> Vec<(String, usize)> {
    let start = text[..offset].rmatch_indices('\n').nth(LOOKBACK_LINES - 1).map_or(0, |(at, _)| at + 1);
    let window = &text[start..offset];
    let typing = window.chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut word_start = None;
    for (i, c) in window.char_indices().chain(std::iter::once((window.len(), ' '))) {
        let part_of_word = c.is_alphanumeric() || c == '_';
        match (part_of_word, word_start) {
            (true, None) => word_start = Some(i),
            (false, Some(from)) => {
                words.push((from, &window[from..i]));
                word_start = None;
            }
            _ => {}
        }
    }
    if typing {
        words.pop();
    }
    // Inside a call's parentheses, the function being called comes first: its signature is what
    // the next characters must fit.
    let mut open_calls = Vec::new();
    for (i, c) in window.char_indices() {
        match c {
            '(' => open_calls.push(i),
            ')' => drop(open_calls.pop()),
            _ => {}
        }
    }
    let callee = open_calls.last().and_then(|&paren| {
        let before = window[..paren].trim_end();
        words.iter().rposition(|(at, word)| at + word.len() == before.len())
    });
    let nearest_first = callee.into_iter().chain((0..words.len()).rev().filter(|i| Some(*i) != callee));
    for (at, word) in nearest_first.map(|i| words[i]) {
        let worth_asking = word.len() >= 2
            && !word.starts_with(|c: char| c.is_ascii_digit())
            && !crate::retrieve::is_keyword(word)
            && !names.iter().any(|(n, _)| n == word);
        if worth_asking {
            names.push((word.to_owned(), start + at));
            if names.len() == NAMES {
                break;
            }
        }
    }
    names
}

/// The definition starting on `line` of `text` in short: its first line and the lines one level
/// inside it (a function's signature, docstring and top statements; a class's docstring and method
/// signatures), at most [`OUTLINE_LINES`]. Works by indentation, so it fits any language whose
/// blocks are indented.
fn outline(text: &str, line: usize) -> Option<String> {
    let mut lines = text.lines().skip(line);
    let first = lines.next().filter(|l| !l.trim().is_empty())?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(first);
    let mut shown = vec![first];
    let mut inner = None;
    for next in lines {
        if shown.len() == OUTLINE_LINES {
            break;
        }
        if next.trim().is_empty() {
            continue;
        }
        let depth = indent(next);
        if depth <= base {
            // The block's closing line (`}`, `end`) belongs to it; anything else is the next definition.
            if next.trim().chars().all(|c| matches!(c, '}' | ')' | ']' | ';')) {
                shown.push(next);
            }
            break;
        }
        let level = *inner.get_or_insert(depth);
        if depth <= level {
            shown.push(next);
        }
    }
    Some(shown.join("\n"))
}

/// The first location of a `textDocument/definition` result (`Location`, `Location[]` or
/// `LocationLink[]`).
fn location_of(result: &Value) -> Option<Location> {
    let first = match result {
        Value::Array(list) => list.first()?,
        single => single,
    };
    let uri = first.get("targetUri").or_else(|| first.get("uri"))?.as_str()?;
    let range = first.get("targetSelectionRange").or_else(|| first.get("range"))?;
    let line = range.pointer("/start/line")?.as_u64()? as usize;
    Some(Location { path: crate::uri::to_path(uri)?, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_nearest_identifiers_before_the_cursor_without_keywords_or_the_word_being_typed() {
        let text = "import os\n\ndef load(path):\n    config = read_config(path)\n    return config.mer";
        let names: Vec<String> = names_before(text, text.len()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["config", "path", "read_config", "load", "os"]);
        let (name, at) = names_before(text, text.len()).remove(0);
        assert_eq!(&text[at..at + name.len()], "config");
        assert!(text[at..].starts_with("config.mer"), "the nearest occurrence");
        assert!(names_before("", 0).is_empty());
        let call = "    total = compute_total(order.items, discount=";
        let names: Vec<String> = names_before(call, call.len()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["compute_total", "discount", "items", "order", "total"], "the callee first");
        let closed = "    total = compute_total(order.items) + tax(";
        assert_eq!(names_before(closed, closed.len())[0].0, "tax");
        assert_eq!(names_before("x = é_value(", 13).len(), 1);
    }

    #[test]
    fn an_outline_keeps_a_definitions_first_level() {
        let python = "\
class Cache:
    \"\"\"A cache.\"\"\"

    def get(self, key):
        if key in self.data:
            return self.data[key]

    def put(self, key, value):
        self.data[key] = value

def other():
    pass
";
        assert_eq!(
            outline(python, 0).unwrap(),
            "class Cache:\n    \"\"\"A cache.\"\"\"\n    def get(self, key):\n    def put(self, key, value):"
        );
        assert_eq!(outline(python, 3).unwrap(), "    def get(self, key):\n        if key in self.data:");
        let rust = "pub fn walk(root: &Path) -> Walk {\n    let mut w = Walk::new(root);\n    if deep {\n        w.deep();\n    }\n    w\n}\nfn next() {}\n";
        assert_eq!(
            outline(rust, 0).unwrap(),
            "pub fn walk(root: &Path) -> Walk {\n    let mut w = Walk::new(root);\n    if deep {\n    }\n    w\n}"
        );
        assert_eq!(outline(rust, 7).unwrap(), "fn next() {}");
        assert_eq!(outline("a\n\nb", 1), None, "a blank line defines nothing");
        assert_eq!(outline("a", 5), None);
        let long: String = (0..40).map(|i| format!("    line{i}\n")).collect();
        assert_eq!(outline(&format!("def f():\n{long}"), 0).unwrap().lines().count(), OUTLINE_LINES);
    }

    #[test]
    fn every_shape_of_definition_result_gives_its_first_location() {
        let location = json!({"uri": "file:///w/a.py", "range": {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 8}}});
        let expected = Some(Location { path: "/w/a.py".into(), line: 3 });
        assert_eq!(location_of(&location), expected);
        assert_eq!(location_of(&json!([location])), expected);
        let link = json!([{"targetUri": "file:///w/a.py", "targetRange": {"start": {"line": 1, "character": 0}, "end": {"line": 9, "character": 0}},
                           "targetSelectionRange": {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 8}}}]);
        assert_eq!(location_of(&link), expected);
        assert_eq!(location_of(&Value::Null), None);
        assert_eq!(location_of(&json!([])), None);
    }
}
