//! Tree-sitter for the languages we grade (Python, Rust, JavaScript, TypeScript, Go): parse a file,
//! name the code unit around a range, count syntax errors and cyclomatic complexity. Entry:
//! [`Syntax::for_language`]. Shared by retention (anchors) and quality (static analysis); the
//! queries live in `grammars/<lang>/*.scm`.

use std::ops::Range;
use std::sync::OnceLock;

use streaming_iterator::StreamingIterator;
use tree_sitter::{Language, Node, Parser, Query, QueryCursor, Tree};

/// Files larger than this are not parsed (the caller says why): parsing is linear, but nobody's
/// hand-edited code is this big, and generated files are not worth grading.
pub const MAX_PARSE_BYTES: usize = 4 * 1024 * 1024;

/// A language's grammar and queries.
pub struct Syntax {
    pub name: &'static str,
    language: Language,
    scopes: Query,
    complexity: Query,
}

/// A named unit of code (function, class, impl …) and where it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// `function` or `class`.
    pub kind: String,
    /// Outermost first, e.g. `["Calculator", "add"]`; an anonymous function is `<anonymous>`.
    pub path: Vec<String>,
    pub start: usize,
    pub end: usize,
}

/// What static analysis says about a range of a file.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Analysis {
    /// ERROR and MISSING nodes overlapping the range.
    pub syntax_errors: usize,
    /// Cyclomatic complexity of the innermost function around the range (or of the range itself
    /// when it is in no function).
    pub complexity: usize,
    /// The innermost named units around the range, outermost first.
    pub scopes: Vec<Scope>,
}

impl Syntax {
    /// The grammar for an LSP language id (or our language name); `None` for languages we do
    /// not grade.
    pub fn for_language(language: &str) -> Option<&'static Syntax> {
        static ALL: OnceLock<Vec<Syntax>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            let build = |name, language: Language, scopes, complexity| Syntax {
                name,
                scopes: Query::new(&language, scopes).unwrap_or_else(|e| panic!("grammars/{name}/scopes.scm: {e}")),
                complexity: Query::new(&language, complexity)
                    .unwrap_or_else(|e| panic!("grammars/{name}/complexity.scm: {e}")),
                language,
            };
            vec![
                build(
                    "python",
                    tree_sitter_python::LANGUAGE.into(),
                    include_str!("../grammars/python/scopes.scm"),
                    include_str!("../grammars/python/complexity.scm"),
                ),
                build(
                    "rust",
                    tree_sitter_rust::LANGUAGE.into(),
                    include_str!("../grammars/rust/scopes.scm"),
                    include_str!("../grammars/rust/complexity.scm"),
                ),
                build(
                    "javascript",
                    tree_sitter_javascript::LANGUAGE.into(),
                    include_str!("../grammars/javascript/scopes.scm"),
                    include_str!("../grammars/javascript/complexity.scm"),
                ),
                build(
                    "typescript",
                    tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
                    include_str!("../grammars/typescript/scopes.scm"),
                    // TypeScript's decisions are JavaScript's.
                    include_str!("../grammars/javascript/complexity.scm"),
                ),
                build(
                    "tsx",
                    tree_sitter_typescript::LANGUAGE_TSX.into(),
                    include_str!("../grammars/typescript/scopes.scm"),
                    include_str!("../grammars/javascript/complexity.scm"),
                ),
                build(
                    "go",
                    tree_sitter_go::LANGUAGE.into(),
                    include_str!("../grammars/go/scopes.scm"),
                    include_str!("../grammars/go/complexity.scm"),
                ),
            ]
        });
        let name = match language {
            "python" => "python",
            "rust" => "rust",
            "javascript" | "javascriptreact" => "javascript",
            "typescript" => "typescript",
            "typescriptreact" => "tsx",
            "go" => "go",
            _ => return None,
        };
        all.iter().find(|s| s.name == name)
    }

    /// The language of a source file by its extension, named as [`Syntax::for_language`] takes it.
    pub fn language_of_path(path: &std::path::Path) -> Option<&'static str> {
        match path.extension()?.to_str()? {
            "py" | "pyi" => Some("python"),
            "rs" => Some("rust"),
            "js" | "jsx" | "mjs" | "cjs" => Some("javascript"),
            "ts" | "mts" | "cts" => Some("typescript"),
            "tsx" => Some("typescriptreact"),
            "go" => Some("go"),
            _ => None,
        }
    }

    /// The syntax tree of `text`; `None` when it is too big or not text a parser accepts.
    pub fn parse(&self, text: &str) -> Option<Tree> {
        if text.len() > MAX_PARSE_BYTES {
            return None;
        }
        let mut parser = Parser::new();
        parser.set_language(&self.language).ok()?;
        parser.parse(text, None)
    }

    /// Every named unit of the file, in document order (outer before inner).
    pub fn scopes(&self, tree: &Tree, text: &str) -> Vec<Scope> {
        let name_index = self.scopes.capture_index_for_name("name");
        let mut cursor = QueryCursor::new();
        let mut matches = cursor.matches(&self.scopes, tree.root_node(), text.as_bytes());
        let mut units: Vec<(Node, String, String)> = Vec::new();
        while let Some(m) = matches.next() {
            let name = m
                .captures()
                .iter()
                .find(|c| Some(c.index) == name_index)
                .and_then(|c| c.node.utf8_text(text.as_bytes()).ok())
                .unwrap_or("<anonymous>");
            if let Some(unit) = m.captures().iter().find(|c| Some(c.index) != name_index) {
                let kind = self.scopes.capture_names()[unit.index as usize].to_owned();
                units.push((unit.node, kind, name.to_owned()));
            }
        }
        units.sort_by_key(|(node, ..)| (node.start_byte(), std::cmp::Reverse(node.end_byte())));
        units.dedup_by_key(|(node, ..)| node.id());
        let mut scopes: Vec<Scope> = Vec::with_capacity(units.len());
        for (node, kind, name) in &units {
            let enclosing = scopes.iter().rev().find(|s| s.start <= node.start_byte() && node.end_byte() <= s.end);
            let mut path = enclosing.map(|s| s.path.clone()).unwrap_or_default();
            path.push(name.clone());
            scopes.push(Scope { kind: kind.clone(), path, start: node.start_byte(), end: node.end_byte() });
        }
        scopes
    }

    /// Static analysis of bytes `range` of the parsed `text`.
    pub fn analyze(&self, tree: &Tree, text: &str, range: Range<usize>) -> Analysis {
        let scopes = self.scopes(tree, text);
        let around: Vec<Scope> =
            scopes.iter().filter(|s| s.start <= range.start && range.end <= s.end).cloned().collect();
        let function = around.iter().rev().find(|s| s.kind == "function");
        let measured = function.map_or(range.clone(), |f| f.start..f.end);
        // Decisions inside nested functions belong to those functions.
        let nested: Vec<Range<usize>> = scopes
            .iter()
            .filter(|s| s.kind == "function" && measured.start <= s.start && s.end <= measured.end)
            .filter(|s| function.is_none_or(|f| f.start != s.start || f.end != s.end))
            .map(|s| s.start..s.end)
            .collect();
        let complexity = self.decisions(tree, text, measured, &nested);
        Analysis { syntax_errors: syntax_errors(tree.root_node(), &range), complexity, scopes: around }
    }

    /// 1 + the decision points in `range`, not counting those inside `excluded` ranges.
    fn decisions(&self, tree: &Tree, text: &str, range: Range<usize>, excluded: &[Range<usize>]) -> usize {
        let default = self.complexity.capture_index_for_name("default");
        let mut cursor = QueryCursor::new();
        cursor.set_byte_range(range.clone());
        let mut count: isize = 1;
        let mut captures = cursor.captures(&self.complexity, tree.root_node(), text.as_bytes());
        while let Some((m, index)) = captures.next() {
            let capture = m.captures()[*index];
            let node = capture.node;
            let inside = range.start <= node.start_byte() && node.end_byte() <= range.end;
            let in_nested = excluded.iter().any(|r| r.start <= node.start_byte() && node.end_byte() <= r.end);
            if inside && !in_nested {
                count += if Some(capture.index) == default { -1 } else { 1 };
            }
        }
        count.max(1) as usize
    }
}

/// ERROR and MISSING nodes that overlap `range` (a zero-width one at its edge included).
fn syntax_errors(root: Node, range: &Range<usize>) -> usize {
    if !root.has_error() {
        return 0;
    }
    let mut count = 0;
    let mut cursor = root.walk();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.start_byte() > range.end || node.end_byte() < range.start {
            continue;
        }
        if node.is_error() || node.is_missing() {
            count += 1;
            continue;
        }
        if node.has_error() {
            stack.extend(node.children(&mut cursor));
        }
    }
    count
}

/// Words (identifiers, numbers) and single punctuation characters; whitespace dropped, both quote
/// characters the same token (formatters swap them).
pub fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / 4);
    token_spans(text, |_, token| out.push(token));
    out
}

/// [`tokens`], each handed to `each` with the byte offset it starts at.
pub fn token_spans<'t>(text: &'t str, mut each: impl FnMut(usize, &'t str)) {
    let mut word_start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '_' {
            word_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = word_start.take() {
            each(start, &text[start..i]);
        }
        if !c.is_whitespace() {
            each(i, if c == '\'' { "\"" } else { &text[i..i + c.len_utf8()] });
        }
    }
    if let Some(start) = word_start {
        each(start, &text[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze(language: &str, text: &str, marker: &str) -> Analysis {
        let syntax = Syntax::for_language(language).unwrap();
        let tree = syntax.parse(text).unwrap();
        let at = text.find(marker).unwrap_or_else(|| panic!("{marker} not in the text"));
        syntax.analyze(&tree, text, at..at + marker.len())
    }

    #[test]
    fn every_query_compiles() {
        for language in ["python", "rust", "javascript", "typescript", "typescriptreact", "go"] {
            assert!(Syntax::for_language(language).is_some(), "{language}");
        }
        assert!(Syntax::for_language("cobol").is_none());
    }

    #[test]
    fn python_complexity_follows_radon() {
        // Hand-computed with radon's rules (and equal to `radon cc -s`, checked in tests/quality.rs):
        // 1 + if + elif + (and: 1) + for + for-else + except×2 + try-else + comprehension(for + if)
        // + ternary + assert = 13; the nested function's while is its own.
        let text = "\
def busy(items, flag):
    if flag and items:
        pass
    elif not items:
        return 0
    for item in items:
        print(item)
    else:
        pass
    try:
        x = 1
    except ValueError:
        pass
    except KeyError:
        pass
    else:
        pass
    squares = [i * i for i in items if i > 2]
    y = 1 if flag else 2
    assert y
    def inner():
        while True:
            break
    return squares
";
        let analysis = analyze("python", text, "squares = [i * i");
        assert_eq!(analysis.complexity, 13);
        assert_eq!(analysis.scopes.iter().map(|s| s.path.join(".")).collect::<Vec<_>>(), ["busy"]);
        assert_eq!(analysis.syntax_errors, 0);
        assert_eq!(analyze("python", text, "break").complexity, 2, "inner: 1 + while");
    }

    #[test]
    fn python_match_does_not_count_the_wildcard() {
        let text = "def f(x):\n    match x:\n        case 1:\n            return 1\n        case 2:\n            return 2\n        case _:\n            return 0\n";
        assert_eq!(analyze("python", text, "return 2").complexity, 3);
    }

    #[test]
    fn rust_complexity_and_scopes() {
        let text = "\
impl Calculator {
    fn classify(&self, n: i32) -> &str {
        if n < 0 || n > 100 {
            return \"out\";
        }
        for _ in 0..n {}
        while false {}
        match n {
            0 => \"zero\",
            1 => \"one\",
            _ => \"many\",
        }
    }
}
";
        // 1 + if + || + for + while + 2 arms (the wildcard not counted) = 7.
        let analysis = analyze("rust", text, "\"zero\"");
        assert_eq!(analysis.complexity, 7);
        let paths: Vec<String> = analysis.scopes.iter().map(|s| s.path.join("::")).collect();
        assert_eq!(paths, ["Calculator", "Calculator::classify"]);
    }

    #[test]
    fn syntax_errors_are_counted_in_the_range_only() {
        let text = "def ok():\n    return 1\n\ndef broken(:\n    return (1 +\n";
        assert_eq!(analyze("python", text, "return 1").syntax_errors, 0);
        assert!(analyze("python", text, "return (1 +").syntax_errors > 0);
    }

    #[test]
    fn javascript_typescript_and_go_scopes() {
        let js = "class Cart {\n  total(items) {\n    return items.length > 0 ? 1 : 0;\n  }\n}\n";
        let analysis = analyze("javascript", js, "items.length");
        assert_eq!(analysis.scopes.last().unwrap().path, ["Cart", "total"]);
        assert_eq!(analysis.complexity, 2);
        let ts = "const add = (a: number, b: number): number => a && b ? a + b : 0;\n";
        assert_eq!(analyze("typescript", ts, "a + b").scopes.last().unwrap().path, ["add"]);
        let go = "package m\n\nfunc Max(a, b int) int {\n\tif a > b {\n\t\treturn a\n\t}\n\treturn b\n}\n";
        let analysis = analyze("go", go, "return a");
        assert_eq!((analysis.scopes[0].path.clone(), analysis.complexity), (vec!["Max".to_string()], 2));
    }
}
