//! Replay from the user's own workspace for a language with little history: the functions of the
//! files the user worked in, each as a FIM example (its first line the prompt, its body the
//! completion), redacted like everything else. Weighted below user-validated code, and never a
//! function that contains held-out code (the gate's ground is never trained on).

use std::path::PathBuf;

use super::{Example, LanguageSet};
use crate::syntax::Syntax;

/// Below this many training examples a language has "little history".
pub const LITTLE_HISTORY: usize = 50;
/// A workspace example counts half as much as code the user took from a suggestion.
const WEIGHT: f64 = 0.5;
/// Longest body taken, in bytes; longer functions are cut at a line end.
const MAX_BODY: usize = 2000;
/// Files larger than this are not read for replay.
const MAX_FILE: u64 = 1 << 20;
/// Known code shorter than this is too common to decide anything.
const MIN_LEAK: usize = 12;

/// A file the user worked in, as it is on disk now.
pub struct WorkspaceFile {
    pub language: String,
    pub path: PathBuf,
    pub text: String,
}

/// Reads the files named by `uris` (language, URI), skipping what cannot be read as modest text.
pub fn read(uris: &[(String, String)]) -> Vec<WorkspaceFile> {
    let mut files: Vec<WorkspaceFile> = Vec::new();
    for (language, uri) in uris {
        let Some(path) = crate::uri::to_path(uri) else { continue };
        if files.iter().any(|f| f.path == path) || std::fs::metadata(&path).map_or(true, |m| m.len() > MAX_FILE) {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            let text = crate::redact::redact(&text, &path.to_string_lossy());
            files.push(WorkspaceFile { language: language.clone(), path, text });
        }
    }
    files
}

/// Adds workspace examples to `set` until it has [`LITTLE_HISTORY`] training examples.
pub fn replay(language: &str, set: &mut LanguageSet, files: &[WorkspaceFile]) {
    let Some(syntax) = Syntax::for_language(language) else { return };
    // Held-out code must never be trained on; code already in the set need not come twice.
    let known = held_out_code(set);
    let mut added = 0;
    let count = |set: &mut LanguageSet| *set.admitted.entry("workspace".into()).or_default() += 1;
    for file in files.iter().filter(|f| f.language == language) {
        let Some(tree) = syntax.parse(&file.text) else { continue };
        for (scope, example) in function_examples(syntax, &tree, &file.text, &known) {
            if set.train.len() >= LITTLE_HISTORY {
                return;
            }
            added += 1;
            count(set);
            set.train.push(Example {
                id: format!("workspace:{}:{}", file.path.display(), scope.join(".")),
                action: "workspace".into(),
                weight: WEIGHT,
                priority: WEIGHT,
                cluster: usize::MAX - added,
                ..example
            });
        }
    }
}

/// Completions of held-out code; a function holding one must not be trained on.
pub(super) fn held_out_code(set: &LanguageSet) -> Vec<String> {
    set.heldout
        .iter()
        .chain(&set.heldout_git)
        .chain(&set.validation)
        .chain(&set.train)
        .map(|e| e.completion.trim().to_owned())
        .filter(|c| c.len() >= MIN_LEAK)
        .collect()
}

/// The functions of `text` (parsed as `tree`) with their scope paths, each as a FIM example (see
/// [`function_example`]); a function holding `known` code, or without a body, is left out.
pub(super) fn function_examples<'a>(
    syntax: &'a Syntax,
    tree: &'a tree_sitter::Tree,
    text: &'a str,
    known: &'a [String],
) -> impl Iterator<Item = (Vec<String>, Example)> + 'a {
    syntax
        .scopes(tree, text)
        .into_iter()
        .filter(|scope| scope.kind == "function")
        .filter(move |scope| !known.iter().any(|code| text[scope.start..scope.end].contains(code.as_str())))
        .filter_map(move |scope| Some((scope.path.clone(), function_example(syntax, tree, text, &scope)?)))
}

/// The function `scope` of `text` as a FIM example: everything up to the end of its first line is
/// the prompt, its body the completion (cut at a line end after [`MAX_BODY`] bytes), up to 1000
/// bytes after it the suffix. Weight 1, to be set by the caller with `id` and `action`. `None`
/// for a function without a body.
fn function_example(
    syntax: &Syntax,
    tree: &tree_sitter::Tree,
    text: &str,
    scope: &crate::syntax::Scope,
) -> Option<Example> {
    let first_line = text[scope.start..scope.end].find('\n')?;
    let body_start = scope.start + first_line + 1;
    let mut body = &text[body_start..scope.end];
    if body.len() > MAX_BODY {
        let cut = body[..MAX_BODY].rfind('\n').unwrap_or(0);
        body = &body[..cut];
    }
    if body.trim().is_empty() {
        return None;
    }
    let complexity = syntax.analyze(tree, text, scope.start..scope.end).complexity;
    let suffix_end = (scope.end + 1000).min(text.len());
    let suffix_end = (scope.end..=suffix_end).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(scope.end);
    Some(Example {
        id: String::new(),
        timestamp: String::new(),
        prefix: text[..body_start].to_owned(),
        suffix: text[scope.end..suffix_end].to_owned(),
        completion: body.to_owned(),
        action: String::new(),
        weight: 1.0,
        priority: 1.0,
        dedup: 1.0,
        cluster: 0,
        cluster_size: 1,
        complexity: Some(complexity),
        tier: super::tier(Some(complexity)),
        replay: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> WorkspaceFile {
        WorkspaceFile { language: "python".into(), path: "/ws/shop.py".into(), text: text.into() }
    }

    #[test]
    fn functions_become_examples_and_held_out_code_stays_out() {
        let text = "import os\n\n\ndef total(prices):\n    return sum(prices)\n\n\ndef secret():\n    key = \"AKIAIOSFODNN7EXAMPLE\"\n    return key\n\n\ndef held(x):\n    return x * 1234567\n";
        let files = read_back(text);
        let mut set = LanguageSet::default();
        set.heldout.push(Example { completion: "return x * 1234567".into(), ..example() });
        replay("python", &mut set, &files);
        let names: Vec<&str> = set.train.iter().map(|e| e.id.rsplit(':').next().unwrap()).collect();
        assert_eq!(names, ["total", "secret"], "the held-out function is not trained on");
        let total = &set.train[0];
        assert_eq!(total.prefix, "import os\n\n\ndef total(prices):\n");
        assert_eq!(total.completion, "    return sum(prices)");
        assert!(total.suffix.starts_with("\n\n\ndef secret"));
        assert_eq!((total.action.as_str(), total.weight, total.replay), ("workspace", 0.5, true));
        assert!(
            !set.train[1].completion.contains("AKIAIOSFODNN7EXAMPLE"),
            "secrets are redacted: {}",
            set.train[1].completion
        );
    }

    #[test]
    fn a_language_with_enough_history_gets_none() {
        let mut set = LanguageSet { train: vec![example(); LITTLE_HISTORY], ..LanguageSet::default() };
        replay("python", &mut set, &[file("def f():\n    return 1\n")]);
        assert_eq!(set.train.len(), LITTLE_HISTORY);
    }

    fn read_back(text: &str) -> Vec<WorkspaceFile> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.py");
        std::fs::write(&path, text).unwrap();
        let uri = format!("file://{}", path.display());
        read(&[("python".into(), uri.clone()), ("python".into(), uri)])
    }

    fn example() -> Example {
        Example {
            id: "e".into(),
            timestamp: String::new(),
            prefix: String::new(),
            suffix: String::new(),
            completion: "x".into(),
            action: "accepted".into(),
            weight: 1.0,
            priority: 1.0,
            dedup: 1.0,
            cluster: 0,
            cluster_size: 1,
            complexity: None,
            tier: 0,
            replay: false,
        }
    }
}
