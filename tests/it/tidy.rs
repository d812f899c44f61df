//! The layering rule (ARCHITECTURE.md, "Layers"), kept by reading the sources: a module under
//! `src/` may use only modules on lower layers, so no two modules can ever import each other.
//! The table is read from ARCHITECTURE.md itself, so the document and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → layer, from the rows `| N | `a`, `b` | … |` under the `## Layers` heading.
fn layers(architecture: &str) -> BTreeMap<String, usize> {
    let section = architecture.split("\n## Layers").nth(1).expect("ARCHITECTURE.md has a `## Layers` section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut layers = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else { continue };
        for module in cells.get(2).unwrap_or(&"").split(',') {
            let module = module.trim().trim_matches('`');
            if !module.is_empty() {
                assert!(
                    layers.insert(module.to_owned(), layer).is_none(),
                    "{module} is in two rows of the layer table"
                );
            }
        }
    }
    layers
}

/// The top-level modules `text` names through `crate::` paths (`use crate::a::b`, `crate::a::f()`,
/// `use crate::{a, b::{c, d}}`), comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|line| without_comment(line).to_owned() + "\n").collect();
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let macro_crate = rest[..at].ends_with('$');
        let word_before = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if macro_crate || word_before {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            names.extend(group_heads(group));
        } else {
            names.insert(identifier(rest).to_owned());
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// The first identifier of each item of a `{…}` use group (nested groups skipped).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut item_start) = (0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                heads.push(identifier(&group[i..]).to_owned());
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// `line` up to a `//` comment that is not inside a string literal.
fn without_comment(line: &str) -> &str {
    let mut in_string = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Every import that breaks the layering, and every module the table does not place. `files`:
/// (path relative to `src/`, text).
fn violations(layers: &BTreeMap<String, usize>, files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        if path == "lib.rs" || path == "main.rs" {
            continue;
        }
        let module = path.split('/').next().unwrap_or_default().trim_end_matches(".rs");
        let Some(&layer) = layers.get(module) else {
            found.push(format!("src/{path}: module `{module}` is not in ARCHITECTURE.md's layer table"));
            continue;
        };
        for used in imports(text).into_iter().filter(|used| used != module) {
            match layers.get(&used) {
                Some(&used_layer) if used_layer < layer => {}
                Some(&used_layer) => found.push(format!(
                    "src/{path}: `{module}` (layer {layer}) uses `{used}` (layer {used_layer}); a module may use only \
                     lower layers"
                )),
                None => found.push(format!("src/{path}: uses `{used}`, which is not in the layer table")),
            }
        }
    }
    found
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layers(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let mut files = Vec::new();
    sources(&root.join("src"), &root.join("src"), &mut files);
    assert!(files.len() > 50 && layers.len() > 10, "read {} files, {} modules", files.len(), layers.len());
    let found = violations(&layers, &files);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_checker_reports_a_backward_import() {
    let table = "# Architecture\n\n## Layers\n\n| layer | modules |\n|---|---|\n| 0 | `home` |\n| 1 | `store` |\n\
                 | 2 | `capture`, `quality` |\n\n## Next\n| 9 | `ignored` |\n";
    let layers = layers(table);
    assert_eq!(layers.len(), 4, "{layers:?}");
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let good = [
        file("store/mod.rs", "use crate::home::Home;\n// crate::capture in a comment is no import\n"),
        file("capture/mod.rs", "use crate::{home, store::{Store, StoreError}};\nlet s = \"//\"; crate::store::x();"),
        file("lib.rs", "pub mod capture;"),
    ];
    assert_eq!(violations(&layers, &good), Vec::<String>::new());

    let backward = [file("store/rows.rs", "fn f() { crate::capture::Recorder::spawn(); }")];
    let found = violations(&layers, &backward);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("`store` (layer 1) uses `capture` (layer 2)"), "{}", found[0]);

    let sideways = [file("quality/mod.rs", "use crate::{home, capture::Recorder};")];
    assert!(violations(&layers, &sideways)[0].contains("uses `capture`"), "same layer is refused too");

    let unplaced = [file("jobs/mod.rs", "use crate::home;")];
    assert!(violations(&layers, &unplaced)[0].contains("not in ARCHITECTURE.md's layer table"));
}
