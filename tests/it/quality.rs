//! Our cyclomatic complexity of Python against radon's (PyPI, installed by
//! `scripts/test-deps.sh`) on a file with every kind of decision radon counts: each function,
//! method and closure must get the same number.

use std::process::Command;

use crate::common::repo_root;
use marunochi::syntax::Syntax;
use serde_json::Value;

#[test]
fn python_complexity_equals_radons_for_every_function() {
    let file = repo_root().join("tests/fixtures/complexity/sample.py");
    let radon = repo_root().join(".test-deps/venv/bin/radon");
    assert!(radon.exists(), "{} is missing: run ./scripts/test-deps.sh", radon.display());
    let out = Command::new(radon).args(["cc", "-j"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut functions: Vec<(String, u64, u64)> = Vec::new();
    let mut pending: Vec<Value> = report[file.to_str().unwrap()].as_array().unwrap().clone();
    while let Some(block) = pending.pop() {
        for key in ["methods", "closures"] {
            pending.extend(block[key].as_array().cloned().unwrap_or_default());
        }
        if block["type"] != "class" {
            let name = block["name"].as_str().unwrap().to_owned();
            functions.push((name, block["lineno"].as_u64().unwrap(), block["complexity"].as_u64().unwrap()));
        }
    }
    assert!(functions.len() >= 10, "radon found {functions:?}");

    let text = std::fs::read_to_string(&file).unwrap();
    let syntax = Syntax::for_language("python").unwrap();
    let tree = syntax.parse(&text).unwrap();
    let line_start = |line: u64| text.split_inclusive('\n').take(line as usize - 1).map(str::len).sum::<usize>();
    let mut differences = Vec::new();
    for (name, line, expected) in &functions {
        let at = line_start(*line) + text[line_start(*line)..].find("def ").unwrap();
        let ours = syntax.analyze(&tree, &text, at..at + 3).complexity as u64;
        if ours != *expected {
            differences.push(format!("{name} (line {line}): radon {expected}, ours {ours}"));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}

/// ruff (PyPI) as the optional external linter: only its findings on the lines of the accepted
/// code count, and the text linted is the editor's, not the file on disk.
#[test]
fn ruff_findings_inside_the_code_count_and_those_outside_do_not() {
    let ruff = repo_root().join(".test-deps/venv/bin/ruff");
    assert!(ruff.exists(), "{} is missing: run ./scripts/test-deps.sh", ruff.display());
    let text = "import os\n\n\ndef total(items):\n    return sum(item.price for item in itemz)\n";
    let code = "return sum(item.price for item in itemz)";
    let at = text.find(code).unwrap();
    let path = std::path::Path::new("/nonexistent/project/cart.py");
    let lint = marunochi::quality::lint::ruff_check(&ruff, path, text, at..at + code.len()).unwrap();
    assert_eq!(lint.tool, "ruff");
    assert_eq!(lint.errors, 1, "F821 undefined `itemz` inside; F401 unused `os` outside: {lint:?}");
    assert!(lint.messages[0].starts_with("F821"), "{lint:?}");

    let clean = marunochi::quality::lint::ruff_check(&ruff, path, "x = 1\n", 0..5).unwrap();
    assert_eq!(clean.errors, 0);

    // A report bigger than a pipe's buffer (thousands of findings) is read while ruff writes it.
    let noisy: String = (0..3000).map(|i| format!("import os{i}\n")).collect();
    let last = noisy.len() - "import os2999\n".len();
    let lint = marunochi::quality::lint::ruff_check(&ruff, path, &noisy, last..noisy.len() - 1).unwrap();
    assert_eq!(lint.errors, 1, "{lint:?}");
}
