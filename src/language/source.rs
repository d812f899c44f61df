//! Regions of Python and Rust source written in another language: SQL in string literals
//! (`cur.execute("SELECT …")`, `sqlx::query!("…")`) and the bodies of Rust's `sql!`/`html!`-style
//! macros. A small lexer, not a parser: it knows comments, string and character literals and
//! brackets — enough to find where a literal or a macro body starts and ends, also while the user
//! is still typing in it (an unclosed Python string runs to the end of its line, or of the text
//! when triple-quoted; an unclosed Rust string or macro, which may span lines, to the end of the
//! text).

use std::ops::Range;

use super::Span;

/// Rust macros whose body is another language: `sql!`, and the HTML templates of yew/maud
/// (`html!`), dioxus (`rsx!`) and leptos (`view!`).
const MACROS: [(&str, &str); 4] = [("sql", "sql"), ("html", "html"), ("rsx", "html"), ("view", "html")];

/// An SQL statement's first word and the words its statement has (none: it is SQL only in
/// capitals).
const STATEMENTS: [(&str, &[&str]); 11] = [
    ("select", &["from"]),
    ("insert", &["into"]),
    ("update", &["set"]),
    ("delete", &["from"]),
    ("create", &["table", "index", "view", "trigger"]),
    ("alter", &["table"]),
    ("drop", &["table", "index", "view", "trigger"]),
    ("with", &["select"]),
    ("replace", &["into"]),
    ("explain", &["select", "query"]),
    ("pragma", &[]),
];

/// What, beside its words, tells a statement in lower case from prose ("insert into cache",
/// "select a file from disk"): operators, placeholders (`{}` of a formatted one), lists, and
/// the words of its other clauses.
const SQL_SIGNS: [&str; 9] = ["*", "=", "?", "%s", "(", ",", ";", "$1", "{"];
const SQL_WORDS: [&str; 9] = ["where", "limit", "order", "group", "join", "values", "exists", "distinct", "returning"];

/// String literals of Python source that read as SQL.
pub(super) fn python_regions(text: &str) -> Vec<Span> {
    let bytes = text.as_bytes();
    let mut regions = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => i = line_end(bytes, i),
            quote @ (b'"' | b'\'') => {
                let triple = bytes[i..].starts_with(&[quote; 3]);
                let delimiter: &[u8] = if triple { &bytes[i..i + 3] } else { &bytes[i..i + 1] };
                let start = i + delimiter.len();
                let (content, next) = literal(bytes, start, delimiter, !triple);
                push_sql(&mut regions, text, content);
                i = next;
            }
            _ => i += 1,
        }
    }
    regions
}

/// String literals of Rust source that read as SQL, and the bodies of [`MACROS`].
pub(super) fn rust_regions(text: &str) -> Vec<Span> {
    let bytes = text.as_bytes();
    let mut regions = Vec::new();
    let mut depth = 0usize;
    // A macro body being read: where it starts, the bracket depth inside it, its language.
    let mut body: Option<(usize, usize, &str)> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            i = line_end(bytes, i);
            continue;
        }
        if bytes[i..].starts_with(b"/*") {
            i = block_comment_end(bytes, i);
            continue;
        }
        match bytes[i] {
            b'"' => {
                let (content, next) = literal(bytes, i + 1, b"\"", false);
                if body.is_none() {
                    push_sql(&mut regions, text, content);
                }
                i = next;
            }
            b'\'' => i = after_char_or_lifetime(text, i),
            b'(' | b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b')' | b']' | b'}' => {
                if let Some((start, inside, language)) = body
                    && depth == inside
                {
                    regions.push(Span { range: start..i, language: language.into() });
                    body = None;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                let word = &text[i..end];
                i = end;
                if matches!(word, "r" | "br" | "cr") {
                    let hashes = bytes[end..].iter().take_while(|b| **b == b'#').count();
                    if bytes.get(end + hashes) == Some(&b'"') {
                        let mut closing = vec![b'"'];
                        closing.extend(std::iter::repeat_n(b'#', hashes));
                        let (content, next) = raw_literal(bytes, end + hashes + 1, &closing);
                        if body.is_none() {
                            push_sql(&mut regions, text, content);
                        }
                        i = next;
                    }
                } else if bytes.get(end) == Some(&b'!')
                    && body.is_none()
                    && let Some((_, language)) = MACROS.iter().find(|(name, _)| *name == word)
                {
                    let open = end + 1 + bytes[end + 1..].iter().take_while(|b| b.is_ascii_whitespace()).count();
                    if matches!(bytes.get(open), Some(b'(' | b'[' | b'{')) {
                        depth += 1;
                        body = Some((open + 1, depth, language));
                        i = open + 1;
                    }
                }
            }
            _ => i += 1,
        }
    }
    if let Some((start, _, language)) = body {
        regions.push(Span { range: start..text.len(), language: language.into() });
    }
    regions
}

fn push_sql(regions: &mut Vec<Span>, text: &str, content: Range<usize>) {
    if reads_as_sql(&text[content.clone()]) {
        regions.push(Span { range: content, language: "sql".into() });
    }
}

/// A statement's first word in capitals with more after it (`"SELECT "` while it is typed, not a
/// lone `"DELETE"` HTTP method), or in lower case with its clause and an SQL sign. Title case is
/// prose (`"Select a file from disk"`, `"Delete rows from the table."`).
fn reads_as_sql(content: &str) -> bool {
    let content = content.trim_start();
    let first_end = content.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(content.len());
    let (first, rest) = content.split_at(first_end);
    let Some((_, clauses)) = STATEMENTS.iter().find(|(statement, _)| first.eq_ignore_ascii_case(statement)) else {
        return false;
    };
    if first.bytes().all(|b| b.is_ascii_uppercase()) {
        return !rest.is_empty();
    }
    let has = |words: &[&str]| {
        rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|word| words.iter().any(|known| word.eq_ignore_ascii_case(known)))
    };
    first.bytes().all(|b| b.is_ascii_lowercase())
        && has(clauses)
        && (SQL_SIGNS.iter().any(|sign| rest.contains(sign)) || has(&SQL_WORDS))
}

/// The content of a literal starting at `start` and the index after its closing `delimiter`; a
/// backslash escapes the next byte (in Python's raw strings too: `r"\""` does not end at `\"`).
/// Unclosed, it runs to the end of the line when `one_line`, else to the end of the text.
fn literal(bytes: &[u8], start: usize, delimiter: &[u8], one_line: bool) -> (Range<usize>, usize) {
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i..].starts_with(delimiter) {
            return (start..i, i + delimiter.len());
        } else if one_line && bytes[i] == b'\n' {
            return (start..i, i);
        } else {
            i += 1;
        }
    }
    (start..bytes.len(), bytes.len())
}

/// A Rust raw string's content (no escapes) from `start` to `closing` (`"` and its hashes).
fn raw_literal(bytes: &[u8], start: usize, closing: &[u8]) -> (Range<usize>, usize) {
    match bytes[start..].windows(closing.len()).position(|window| window == closing) {
        Some(at) => (start..start + at, start + at + closing.len()),
        None => (start..bytes.len(), bytes.len()),
    }
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |at| from + at)
}

/// After a (nested) `/* … */` comment starting at `from`.
fn block_comment_end(bytes: &[u8], from: usize) -> usize {
    let mut depth = 0;
    let mut i = from;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// After `'x'`, `'\n'`, `'\u{10FFFF}'` (a character literal, which may be a quote: `'"'`), or
/// after the `'` of a lifetime such as `'a`. An escape left unfinished while typing (`'\`) ends
/// right there: the rest of the file is not read as its character.
fn after_char_or_lifetime(text: &str, quote: usize) -> usize {
    const LONGEST_ESCAPE: usize = r"\u{10FFFF}".len();
    let bytes = text.as_bytes();
    if bytes.get(quote + 1) == Some(&b'\\') {
        // From the escaped character to where the longest escape's closing quote would be.
        let escape = &bytes[quote + 2..bytes.len().min(quote + 2 + LONGEST_ESCAPE)];
        let closing = escape.iter().take_while(|b| **b != b'\n').skip(1).position(|b| *b == b'\'');
        return closing.map_or(quote + 2, |at| quote + 4 + at);
    }
    match text[quote + 1..].chars().next() {
        Some(c) if bytes.get(quote + 1 + c.len_utf8()) == Some(&b'\'') => quote + 2 + c.len_utf8(),
        _ => quote + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_told_from_prose_and_http_methods() {
        for sql in [
            "SELECT ",
            "SELECT a FROM t",
            "  insert into t (a) values (?)",
            "select * from t",
            "delete from t where id = %s",
            "select name from sqlite_master where type",
            "drop table {table_name}",
            "PRAGMA journal_mode = WAL",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(reads_as_sql(sql), "{sql:?}");
        }
        for prose in [
            "Select a file from disk",
            "Delete rows from the table.",
            "insert into cache",
            "select a file from disk",
            "DELETE",
            "With this, select an item",
            "selected rows from t = 1",
            "update the cache",
            "",
        ] {
            assert!(!reads_as_sql(prose), "{prose:?}");
        }
    }

    fn texts(text: &str, regions: &[Span]) -> Vec<(String, String)> {
        regions.iter().map(|span| (span.language.clone(), text[span.range.clone()].to_owned())).collect()
    }

    #[test]
    fn an_unfinished_escape_does_not_swallow_the_rest_of_the_file() {
        let text = "let c = '\\\nlet q = conn.execute(\"SELECT a FROM t\");\nfn f<'a>() {}\n";
        assert_eq!(texts(text, &rust_regions(text)), [("sql".to_owned(), "SELECT a FROM t".to_owned())]);
        let text = "let p = html! { <p>{ '\\ }</p> };\nlet q = \"SELECT a FROM t\";\n";
        assert_eq!(
            texts(text, &rust_regions(text)),
            [("html".to_owned(), " <p>{ '\\ }</p> ".to_owned()), ("sql".to_owned(), "SELECT a FROM t".to_owned())]
        );
        for text in ["'\\", "'", "r#", "r#\"", "html!", "html! {", "\"\\", "b'", "/*"] {
            rust_regions(text);
            python_regions(text);
        }
    }
}
