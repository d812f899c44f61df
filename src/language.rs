//! Which language the cursor is in, and which language each stretch of a mixed document is in:
//! the first picks the expert adapter of a request, the second the expert of each token when a
//! pass is routed per token (ARCHITECTURE.md, "Experts per token"). The LSP `languageId` first,
//! the file extension when the editor sent none; inside Markdown fences, reStructuredText code
//! directives, HTML `<script>`/`<style>` blocks, SQL strings in Python and Rust, and Rust's
//! `sql!`/`html!`-style macros, the language of that region.

mod source;

use std::ops::Range;

/// A stretch of a document in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub range: Range<usize>,
    pub language: String,
}

/// The language at byte `offset` of a document. A cursor at either end of an embedded region
/// (right after an opening fence line, right before `</script>`) is inside it: that is where code
/// of the region's language is typed.
pub fn language_at(language_id: &str, uri: &str, text: &str, offset: usize) -> String {
    let document = document_language(language_id, uri);
    embedded_regions(document, text)
        .into_iter()
        .find(|span| span.range.start <= offset && offset <= span.range.end)
        .map_or_else(|| document.to_owned(), |span| span.language)
}

/// The whole document as consecutive spans, in order, each in one language: embedded regions in
/// theirs, the rest in the document's own.
pub fn language_spans(language_id: &str, uri: &str, text: &str) -> Vec<Span> {
    let document = document_language(language_id, uri);
    let mut spans: Vec<Span> = Vec::new();
    let mut push = |range: Range<usize>, language: &str| {
        if range.is_empty() {
            return;
        }
        match spans.last_mut() {
            Some(last) if last.language == language => last.range.end = range.end,
            _ => spans.push(Span { range, language: language.to_owned() }),
        }
    };
    let mut at = 0;
    for region in embedded_regions(document, text) {
        push(at..region.range.start, document);
        push(region.range.clone(), &region.language);
        at = region.range.end;
    }
    push(at..text.len(), document);
    spans
}

/// The document's own language, whatever region the cursor is in: the expert to fall back on
/// when the region's language has none (README, "Experts per token").
pub fn document_language(language_id: &str, uri: &str) -> &'static str {
    normalize(language_id).or_else(|| extension(uri).and_then(normalize)).unwrap_or("plaintext")
}

/// The regions of `text` in another language than the document's, in order, not overlapping.
fn embedded_regions(document: &str, text: &str) -> Vec<Span> {
    let regions = match document {
        "markdown" => fenced_regions(text),
        "restructuredtext" => directive_regions(text),
        "html" | "vue" | "svelte" => html_regions(text),
        "python" => source::python_regions(text),
        "rust" => source::rust_regions(text),
        _ => Vec::new(),
    };
    regions.into_iter().filter(|span| span.language != document).collect()
}

/// The canonical name for an LSP language id, a fence info word or a file extension.
fn normalize(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    Some(match name.as_str() {
        "python" | "py" | "python3" | "pyi" | "pycon" => "python",
        "rust" | "rs" => "rust",
        "javascript" | "js" | "javascriptreact" | "jsx" | "mjs" | "cjs" | "node" => "javascript",
        "typescript" | "ts" | "typescriptreact" | "tsx" | "mts" | "cts" => "typescript",
        "go" | "golang" => "go",
        "c" | "h" => "c",
        "cpp" | "c++" | "cc" | "cxx" | "hpp" | "hh" => "cpp",
        "java" => "java",
        "ruby" | "rb" => "ruby",
        "lua" => "lua",
        "shellscript" | "sh" | "bash" | "zsh" | "shell" | "console" => "shell",
        "markdown" | "md" => "markdown",
        "restructuredtext" | "rst" => "restructuredtext",
        "html" | "htm" => "html",
        "css" => "css",
        "vue" => "vue",
        "svelte" => "svelte",
        "json" => "json",
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        "sql" => "sql",
        _ => return None,
    })
}

fn extension(uri: &str) -> Option<&str> {
    let name = uri.rsplit('/').next()?;
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then_some(ext)
}

/// The bodies of fenced code blocks (``` or ~~~), from the line after the opening fence to the
/// start of the closing one (or the end of an unclosed block), in their info string's language.
fn fenced_regions(text: &str) -> Vec<Span> {
    let mut regions = Vec::new();
    let mut open: Option<(char, usize, &str, usize)> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let fence = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence.map_or(0, |c| trimmed.chars().take_while(|&x| x == c).count());
        let rest = trimmed[run..].trim();
        match open {
            None if run >= 3 => open = Some((fence.unwrap_or('`'), run, rest, line_start + line.len())),
            Some((c, length, info, body)) if fence == Some(c) && run >= length && rest.is_empty() => {
                regions.push(Span { range: body..line_start, language: info_language(info) });
                open = None;
            }
            _ => {}
        }
        line_start += line.len();
    }
    if let Some((_, _, info, body)) = open {
        regions.push(Span { range: body..text.len(), language: info_language(info) });
    }
    regions
}

fn info_language(info: &str) -> String {
    let word = info.split(|c: char| c.is_whitespace() || c == ',' || c == '{').next().unwrap_or_default();
    normalize(word)
        .map_or_else(|| if word.is_empty() { "markdown".into() } else { word.to_ascii_lowercase() }, Into::into)
}

/// The bodies of reStructuredText code directives: `.. code-block:: lang` (and `code`,
/// `sourcecode`), and Sphinx's `testcode`, `testsetup`, `doctest`, which are Python. A body is
/// the lines indented deeper than its directive, after the directive's options.
fn directive_regions(text: &str) -> Vec<Span> {
    let mut regions = Vec::new();
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |start, line| {
            let at = *start;
            *start += line.len();
            Some((at, line))
        })
        .collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let blank = |line: &str| line.trim().is_empty();
    let mut i = 0;
    while i < lines.len() {
        let (_, line) = lines[i];
        i += 1;
        let Some(language) = directive_language(line.trim()) else { continue };
        let depth = indent(line);
        let inside = |line: &str| blank(line) || indent(line) > depth;
        let options = |line: &str| line.trim_start().starts_with(':') && indent(line) > depth;
        while i < lines.len() && (options(lines[i].1) || blank(lines[i].1)) {
            i += 1;
        }
        let body = lines.get(i).map_or(text.len(), |(at, _)| *at);
        while i < lines.len() && inside(lines[i].1) {
            i += 1;
        }
        // Blank lines after the body belong to the document again.
        let mut last = i;
        while last > 0 && lines[last - 1].0 >= body && blank(lines[last - 1].1) {
            last -= 1;
        }
        let end = lines.get(last).map_or(text.len(), |(at, _)| *at);
        if end > body {
            regions.push(Span { range: body..end, language });
        }
    }
    regions
}

fn directive_language(line: &str) -> Option<String> {
    let (name, argument) = line.strip_prefix(".. ")?.split_once("::")?;
    match name.trim() {
        "testcode" | "testsetup" | "testcleanup" | "doctest" => Some("python".into()),
        "code-block" | "code" | "sourcecode" => {
            let word = argument.split_whitespace().next()?;
            Some(normalize(word).map_or_else(|| word.to_ascii_lowercase(), Into::into))
        }
        _ => None,
    }
}

/// The bodies of `<script>` blocks (JavaScript, or TypeScript with `lang="ts"`) and `<style>`
/// blocks (CSS); an unclosed one runs to the end of the text.
fn html_regions(text: &str) -> Vec<Span> {
    // ASCII lowercasing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut regions = Vec::new();
    let mut at = 0;
    loop {
        let next = ["script", "style"]
            .into_iter()
            .filter_map(|tag| lower[at..].find(&format!("<{tag}")).map(|found| (at + found, tag)))
            .min();
        let Some((open, tag)) = next else { break };
        let Some(tag_end) = lower[open..].find('>') else { break };
        let body = open + tag_end + 1;
        let end = lower[body..].find(&format!("</{tag}")).map_or(text.len(), |found| body + found);
        let attributes = &lower[open..body];
        let language = match tag {
            "style" => "css",
            _ if attributes.contains("lang=\"ts\"") || attributes.contains("lang=\"typescript\"") => "typescript",
            _ => "javascript",
        };
        regions.push(Span { range: body..end, language: language.into() });
        at = end;
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_ids_then_extensions() {
        assert_eq!(language_at("python", "file:///a/b.txt", "", 0), "python");
        assert_eq!(language_at("typescriptreact", "file:///a/b.tsx", "", 0), "typescript");
        assert_eq!(language_at("", "file:///a/lib.rs", "", 0), "rust");
        assert_eq!(language_at("plaintext", "file:///a/main.go", "", 0), "go");
        assert_eq!(language_at("", "file:///a/README", "", 0), "plaintext");
        assert_eq!(language_at("", "file:///a/.bashrc", "", 0), "plaintext");
    }

    #[test]
    fn markdown_fences_route_by_their_info_string() {
        let text =
            "# Title\n\n```python\ndef f():\n    pass\n```\n\ntext\n~~~rust ignore\nfn main() {}\n~~~\n```\nplain\n";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(language_at("markdown", "file:///r.md", text, at("Title")), "markdown");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("def f")), "python");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("pass")), "python");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("text")), "markdown");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("fn main")), "rust");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("```python")), "markdown");
        // An unclosed fence without info runs to the end of the file.
        assert_eq!(language_at("markdown", "file:///r.md", text, at("plain")), "markdown");
        assert_eq!(language_at("markdown", "file:///r.md", text, text.len()), "markdown");
        let open = "```py\nx = ";
        assert_eq!(language_at("markdown", "file:///r.md", open, open.len()), "python");
    }

    fn spans(language_id: &str, uri: &str, text: &str) -> Vec<(String, String)> {
        language_spans(language_id, uri, text)
            .into_iter()
            .map(|span| (span.language, text[span.range].to_owned()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected.iter().map(|(language, text)| (language.to_string(), text.to_string())).collect()
    }

    #[test]
    fn a_markdown_file_is_cut_into_its_fences_languages() {
        let text = "# Use\n\n```python\nx = 1\n```\nthen\n```\nplain\n```\n~~~rust\nfn f() {}\n~~~\n```py\nopen(";
        assert_eq!(
            spans("markdown", "file:///r.md", text),
            pairs(&[
                ("markdown", "# Use\n\n```python\n"),
                ("python", "x = 1\n"),
                ("markdown", "```\nthen\n```\nplain\n```\n~~~rust\n"),
                ("rust", "fn f() {}\n"),
                ("markdown", "~~~\n```py\n"),
                ("python", "open("),
            ])
        );
        assert_eq!(spans("python", "file:///a.py", "x = '```rust'\n"), pairs(&[("python", "x = '```rust'\n")]));
        assert!(language_spans("markdown", "file:///r.md", "").is_empty());
    }

    #[test]
    fn restructuredtext_code_directives_are_in_their_language() {
        let text = "Title\n=====\n\n.. testcode::\n\n   cache = LRUCache(maxsize=2)\n\n   cache['a'] = 1\n\nProse.\n\n\
                    .. note::\n\n   Not code.\n\n   .. code-block:: rust\n      :linenos:\n\n      fn f() {}\n\n\
                    .. doctest::\n\n   >>> 1 + 1\n   2\n";
        assert_eq!(
            spans("restructuredtext", "file:///docs/index.rst", text),
            pairs(&[
                ("restructuredtext", "Title\n=====\n\n.. testcode::\n\n"),
                ("python", "   cache = LRUCache(maxsize=2)\n\n   cache['a'] = 1\n"),
                (
                    "restructuredtext",
                    "\nProse.\n\n.. note::\n\n   Not code.\n\n   .. code-block:: rust\n      :linenos:\n\n"
                ),
                ("rust", "      fn f() {}\n"),
                ("restructuredtext", "\n.. doctest::\n\n"),
                ("python", "   >>> 1 + 1\n   2\n"),
            ])
        );
        assert_eq!(language_at("", "file:///docs/index.rst", text, text.find("LRUCache").unwrap()), "python");
        assert_eq!(language_at("", "file:///docs/index.rst", text, text.find("Prose").unwrap()), "restructuredtext");
    }

    /// Every sequence of three or four of `pieces`.
    fn sequences(pieces: &[&str]) -> Vec<String> {
        let mut documents = Vec::new();
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    documents.push(format!("{a}{b}{c}"));
                    for d in pieces {
                        documents.push(format!("{a}{b}{c}{d}"));
                    }
                }
            }
        }
        documents
    }

    fn assert_spans_cover_and_agree(documents: &[String], kinds: &[(&str, &str)]) {
        for text in documents {
            for (id, uri) in kinds {
                let spans = language_spans(id, uri, text);
                let mut at = 0;
                for (i, span) in spans.iter().enumerate() {
                    assert_eq!(span.range.start, at, "{text:?}: {spans:?}");
                    assert!(!span.range.is_empty(), "{text:?}: {spans:?}");
                    assert!(i == 0 || spans[i - 1].language != span.language, "{text:?}: {spans:?}");
                    at = span.range.end;
                }
                assert_eq!(at, text.len(), "{text:?}: {spans:?}");
                // Inside a span (not on its ends, where the cursor belongs to the embedded side,
                // nor in an empty code block) the cursor's language is the span's.
                let empty: Vec<usize> = embedded_regions(document_language(id, uri), text)
                    .iter()
                    .filter(|region| region.range.is_empty())
                    .map(|region| region.range.start)
                    .collect();
                for span in &spans {
                    for offset in (span.range.start + 1..span.range.end).filter(|offset| !empty.contains(offset)) {
                        assert_eq!(
                            language_at(id, uri, text, offset),
                            span.language,
                            "{text:?} at {offset}: {spans:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn spans_cover_the_document_in_order_and_agree_with_the_language_at_the_cursor() {
        let markup = [
            "# T\n",
            "```python\n",
            "def f():\n",
            "```\n",
            "~~~~rust\n",
            "fn g() {}\n",
            "~~~~\n",
            "<script>let x;</script>",
            "text ",
            "```\n",
        ];
        assert_spans_cover_and_agree(&sequences(&markup), &[("markdown", "file:///r.md"), ("html", "file:///i.html")]);
        let source = [
            "x = ",
            "\"SELECT a FROM t\"",
            "'''\nINSERT INTO t VALUES (1)\n'''",
            "# 'DROP TABLE t'\n",
            "sql!(SELECT 1)",
            "html! { <p>{x}</p> }",
            "'\"'",
            "r#\"DELETE FROM t\"#",
            "\n(",
            ")\"\\\"",
        ];
        assert_spans_cover_and_agree(&sequences(&source), &[("python", "file:///a.py"), ("rust", "file:///lib.rs")]);
    }

    #[test]
    fn sql_strings_in_python_are_sql() {
        let text = r#"import sqlite3

# cur.execute("SELECT * FROM t")
cur.execute("SELECT name FROM users WHERE id = ?", (1,))
note = 'update the cache'
s = "it's \"SELECT\" here"
q = '''
    INSERT INTO t (a)
    VALUES (?)
'''
x = "select a, b from t
cur.execute("DELETE FROM t WHERE "#;
        assert_eq!(
            spans("python", "file:///db.py", text),
            pairs(&[
                ("python", "import sqlite3\n\n# cur.execute(\"SELECT * FROM t\")\ncur.execute(\""),
                ("sql", "SELECT name FROM users WHERE id = ?"),
                ("python", "\", (1,))\nnote = 'update the cache'\ns = \"it's \\\"SELECT\\\" here\"\nq = '''"),
                ("sql", "\n    INSERT INTO t (a)\n    VALUES (?)\n"),
                ("python", "'''\nx = \""),
                ("sql", "select a, b from t"),
                ("python", "\ncur.execute(\""),
                ("sql", "DELETE FROM t WHERE "),
            ])
        );
        assert_eq!(language_at("python", "file:///db.py", text, text.len()), "sql", "typing in an unclosed string");
        assert_eq!(language_at("python", "file:///db.py", text, text.find("note").unwrap()), "python");
    }

    #[test]
    fn sql_strings_and_template_macros_in_rust() {
        let text = r##"fn main() {
    // "SELECT * FROM t"
    let c = '"';
    let l: &'static str = "not sql";
    conn.execute("INSERT INTO t (a) VALUES (?1)", [1])?;
    let q = sqlx::query!(r#"SELECT id FROM users WHERE name = "x""#);
    let page = html! { <p class="a">{ format!("{}", x) }</p> };
    /* "UPDATE t SET a = 1" /* nested */ */
    let v = sql!(SELECT a FROM t WHERE"##;
        assert_eq!(
            spans("rust", "file:///main.rs", text),
            pairs(&[
                (
                    "rust",
                    "fn main() {\n    // \"SELECT * FROM t\"\n    let c = '\"';\n    \
                     let l: &'static str = \"not sql\";\n    conn.execute(\""
                ),
                ("sql", "INSERT INTO t (a) VALUES (?1)"),
                ("rust", "\", [1])?;\n    let q = sqlx::query!(r#\""),
                ("sql", "SELECT id FROM users WHERE name = \"x\""),
                ("rust", "\"#);\n    let page = html! {"),
                ("html", " <p class=\"a\">{ format!(\"{}\", x) }</p> "),
                ("rust", "};\n    /* \"UPDATE t SET a = 1\" /* nested */ */\n    let v = sql!("),
                ("sql", "SELECT a FROM t WHERE"),
            ])
        );
        assert_eq!(language_at("rust", "file:///main.rs", text, text.len()), "sql");
    }

    #[test]
    fn html_script_and_style_blocks() {
        let text = "<html><script type=\"module\">let x = 1;</script><style>p { }</style><p>hi</p>\
                    <script lang=\"ts\">let y: number</script>";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(language_at("html", "file:///i.html", text, at("let x")), "javascript");
        assert_eq!(language_at("html", "file:///i.html", text, at("p {")), "css");
        assert_eq!(language_at("html", "file:///i.html", text, at("hi")), "html");
        assert_eq!(language_at("html", "file:///i.html", text, at("let y")), "typescript");
    }
}
