//! `marunochi data mine`: the functions the user wrote, from the history of their own git
//! repositories, into the store — training data and a held-out set before the first suggestion is
//! ever taken (README: learning from your own history). Entry: [`mine`].
//!
//! Every version of a function that a commit by the user added or changed becomes a row: the file
//! before its body (the last lines) as the prompt, the body as the code, the file after it, and the
//! body the commit replaced when the signature stayed the same (an edit of one's own code is a
//! correction). A string of another language in a body that the version wrote (SQL in a Python or
//! Rust function, as [`crate::language`] finds it) is a row of that language too: the file up to
//! the string is its prompt, the string its code — an SQL expert's data (README, "Per-language
//! experts"). Text is redacted by the store; rows are keyed by repository, commit, file and name,
//! so mining again adds only what is new.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::history::{HistoryError, Walk, Written};
use crate::store::{GitFunction, Store, StoreError};

/// The prompt keeps at most this much of the file before the body (whole lines).
const PREFIX_BYTES: usize = 4000;
/// … and this much after it.
const SUFFIX_BYTES: usize = 1000;
/// Longer bodies are cut at a line end: training sees at most a few hundred tokens of target.
const MAX_BODY: usize = 2000;
/// A shorter string of another language (`"SELECT 1"`) teaches little.
const MIN_EMBEDDED: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Commits whose author (`Name <email>`) contains this; default: the repository's
    /// `user.email`.
    pub author: Option<String>,
    /// The history behind this revision; default `HEAD`.
    pub revision: Option<String>,
}

/// What one repository gave.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mined {
    pub repository: PathBuf,
    pub author: String,
    /// Function versions found.
    pub found: usize,
    /// … of which were not in the store yet.
    pub added: usize,
    /// … of which change a function that existed (correction pairs).
    pub edits: usize,
    pub by_language: BTreeMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum MineError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "git has no user.email in {0}, so the functions you wrote cannot be told from others'; pass --author \
         (your name or email as your commits record it)"
    )]
    NoIdentity(PathBuf),
}

/// Mines the repository that `dir` is in into `store`; `walked(done, of)` is told before the
/// first of the user's commits and after each.
pub fn mine(
    store: &mut Store,
    dir: &Path,
    options: &Options,
    walked: &mut dyn FnMut(usize, usize),
) -> Result<Mined, MineError> {
    let repository = crate::history::toplevel(dir)?;
    let author = match &options.author {
        Some(author) => author.clone(),
        None => crate::history::identity(&repository)
            .map(|email| format!("<{email}>"))
            .ok_or_else(|| MineError::NoIdentity(repository.clone()))?,
    };
    let walk = Walk {
        author: Some(author.clone()),
        until: options.revision.clone().unwrap_or_else(|| "HEAD".into()),
        ..Walk::default()
    };
    let mut rows = Vec::new();
    crate::history::walk_functions(&repository, &walk, walked, &mut |written| {
        rows.extend(rows_of(&repository, &written))
    })?;
    let added = store.add_git_functions(&rows)?;
    let mut by_language = BTreeMap::new();
    rows.iter().for_each(|r| *by_language.entry(r.language.clone()).or_default() += 1);
    Ok(Mined {
        repository,
        author,
        found: rows.len(),
        added,
        edits: rows.iter().filter(|r| r.previous_body.is_some()).count(),
        by_language,
    })
}

/// The function's row, then one per string of another language that this version of its body
/// wrote: a string the previous version held already was mined with that version. The n-th
/// string of the body is named `<function> <language> <n>`, so that its versions are one.
fn rows_of(repository: &Path, written: &Written) -> Vec<GitFunction> {
    let function = row(repository, written);
    let text = &*written.text;
    let previous = written.previous.as_deref().unwrap_or("");
    let embedded = crate::language::language_spans(written.language, "", text).into_iter().filter(|span| {
        let inside = written.body.start <= span.range.start && span.range.end <= written.body.end;
        span.language != written.language && inside
    });
    let mut rows = vec![];
    for (n, span) in embedded.enumerate() {
        let code = &text[span.range.clone()];
        if code.trim().len() < MIN_EMBEDDED || previous.contains(code) {
            continue;
        }
        rows.push(GitFunction {
            name: format!("{} {} {}", function.name, span.language, n + 1),
            language: span.language,
            prefix: prefix(&text[..span.range.start]).to_owned(),
            suffix: suffix(&text[span.range.end..]).to_owned(),
            body: cut_body(code).to_owned(),
            previous_body: None,
            ..function.clone()
        });
    }
    rows.insert(0, function);
    rows
}

/// The end of `before` the prompt keeps: whole lines, at most [`PREFIX_BYTES`].
fn prefix(before: &str) -> &str {
    let cut = before.ceil_char_boundary(before.len().saturating_sub(PREFIX_BYTES));
    match cut {
        0 => before,
        cut => before[cut..].find('\n').map_or("", |i| &before[cut + i + 1..]),
    }
}

/// The start of `after` the prompt keeps: whole lines, at most [`SUFFIX_BYTES`].
fn suffix(after: &str) -> &str {
    let suffix_end = after.char_indices().take_while(|(i, _)| *i < SUFFIX_BYTES).filter(|(_, c)| *c == '\n').last();
    match suffix_end {
        _ if after.len() <= SUFFIX_BYTES => after,
        Some((i, _)) => &after[..i],
        None => "",
    }
}

/// A body longer than [`MAX_BODY`], cut at a line end.
fn cut_body(body: &str) -> &str {
    if body.len() <= MAX_BODY {
        return body;
    }
    &body[..body[..body.floor_char_boundary(MAX_BODY)].rfind('\n').unwrap_or(0)]
}

fn row(repository: &Path, written: &Written) -> GitFunction {
    let text = &*written.text;
    let before = &text[..written.body.start];
    let body = cut_body(&text[written.body.clone()]);
    // The old body, when the function kept its first lines up to where the body starts.
    let signature = &text[written.start..written.body.start];
    let previous_body = written.previous.as_deref().and_then(|old| {
        let rest = old.strip_prefix(signature)?;
        // The body ends before a closing brace's line, as `history` cuts the new one.
        let rest = if written.language == "python" { rest } else { &rest[..rest.rfind('\n')?] };
        (rest != body && !rest.trim().is_empty()).then(|| rest.to_owned())
    });
    GitFunction {
        repository: repository.display().to_string(),
        commit: written.commit.clone(),
        authored_at: rfc3339(written.time),
        language: written.language.to_owned(),
        file_path: crate::uri::from_path(&repository.join(&written.path)),
        name: written.name.join("."),
        prefix: prefix(before).to_owned(),
        suffix: suffix(&text[written.body.end..]).to_owned(),
        body: body.to_owned(),
        previous_body,
    }
}

/// Seconds since the epoch as the store's RFC 3339 (`2026-11-03T10:00:00.000Z`).
fn rfc3339(seconds: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(repo: &Path, args: &[&str]) {
        let status = Command::new("git").arg("-C").arg(repo).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn commit(repo: &Path, author: &str, when: &str, files: &[(&str, &str)]) {
        for (path, text) in files {
            std::fs::write(repo.join(path), text).unwrap();
        }
        git(repo, &["add", "-A"]);
        let status = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["commit", "-q", "-m", "c", &format!("--author={author}"), &format!("--date={when}")])
            .env("GIT_COMMITTER_DATE", when)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn the_users_own_functions_and_edits_are_mined_once_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("my project");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["config", "user.email", "me@home"]);
        git(&repo, &["config", "user.name", "Me"]);
        let first = "import os\n\ndef total(prices):\n    return sum(prices)\n";
        commit(&repo, "Me <me@home>", "2026-01-02T10:00:00Z", &[("shop.py", first)]);
        commit(
            &repo,
            "Other <other@x>",
            "2026-01-03T10:00:00Z",
            &[("theirs.py", "def theirs():\n    return 'not mine'\n")],
        );
        let second = "import os\n\ndef total(prices):\n    kept = [p for p in prices if p]\n    return sum(kept)\n\n\
                      def key():\n    token = \"AKIAIOSFODNN7EXAMPLE\"\n    return token\n";
        commit(&repo, "Me <me@home>", "2026-01-04T10:00:00Z", &[("shop.py", second)]);
        let rust = "fn area(w: u32, h: u32) -> u32 {\n    let a = w * h;\n    a\n}\n";
        commit(&repo, "Me <me@home>", "2026-01-05T10:00:00Z", &[("lib.rs", rust)]);
        let rust2 = rust.replace("let a = w * h;\n    a", "w.saturating_mul(h)");
        commit(&repo, "Me <me@home>", "2026-01-06T10:00:00Z", &[("lib.rs", &rust2)]);

        let mut store = Store::open(&dir.path().join("marunochi.db")).unwrap();
        let mined = mine(&mut store, &repo, &Options::default(), &mut |_, _| {}).unwrap();
        assert_eq!(mined.author, "<me@home>");
        assert_eq!((mined.found, mined.added, mined.edits), (5, 5, 2));
        assert_eq!(mined.by_language, BTreeMap::from([("python".into(), 3), ("rust".into(), 2)]));

        let rows = store.git_functions().unwrap();
        let summary: Vec<(&str, &str, &str, Option<&str>)> = rows
            .iter()
            .map(|r| (&r.authored_at[..10], r.name.as_str(), r.body.as_str(), r.previous_body.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("2026-01-02", "total", "return sum(prices)", None),
                (
                    "2026-01-04",
                    "total",
                    "kept = [p for p in prices if p]\n    return sum(kept)",
                    Some("return sum(prices)")
                ),
                ("2026-01-04", "key", "token = \"«redacted:aws-key»\"\n    return token", None),
                ("2026-01-05", "area", "let a = w * h;\n    a", None),
                ("2026-01-06", "area", "w.saturating_mul(h)", Some("let a = w * h;\n    a")),
            ]
        );
        let total = &rows[0];
        assert_eq!((total.prefix.as_str(), total.suffix.as_str()), ("import os\n\ndef total(prices):\n    ", "\n"));
        assert!(total.file_path.ends_with("/my%20project/shop.py"), "{}", total.file_path);
        assert_eq!(rows[4].suffix, "\n}\n");

        let again = mine(&mut store, &repo, &Options::default(), &mut |_, _| {}).unwrap();
        assert_eq!((again.found, again.added), (5, 0), "mining twice adds nothing");
        let theirs =
            mine(&mut store, &repo, &Options { author: Some("other@x".into()), ..Options::default() }, &mut |_, _| {})
                .unwrap();
        assert_eq!(theirs.added, 1);
    }

    #[test]
    fn sql_strings_a_version_wrote_are_sql_rows_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        let first =
            "def open_items(db):\n    return db.execute(\"SELECT id, title FROM items WHERE done = 0\").fetchall()\n";
        commit(&repo, "Me <me@home>", "2026-01-02T10:00:00Z", &[("db.py", first)]);
        // The same query kept while the function changes: no new SQL row.
        let second = first.replace(").fetchall()", ").fetchall() or []");
        commit(&repo, "Me <me@home>", "2026-01-03T10:00:00Z", &[("db.py", &second)]);
        // A new query, one too short to teach anything, and prose.
        let third = format!(
            "{second}\ndef count(db, table):\n    db.execute(\"SELECT 1\")\n    print(\"Select a table from the list\")\n    \
             return db.execute(f\"select count(*) from [{{table}}]\").fetchone()[0]\n"
        );
        commit(&repo, "Me <me@home>", "2026-01-04T10:00:00Z", &[("db.py", &third)]);
        let rust = "fn names(conn: &Connection) -> Vec<String> {\n    query(conn, \"SELECT name FROM people ORDER BY name\")\n}\n";
        commit(&repo, "Me <me@home>", "2026-01-05T10:00:00Z", &[("lib.rs", rust)]);

        let mut store = Store::open(&dir.path().join("marunochi.db")).unwrap();
        let options = Options { author: Some("me@home".into()), ..Options::default() };
        let mined = mine(&mut store, &repo, &options, &mut |_, _| {}).unwrap();
        assert_eq!(mined.by_language, BTreeMap::from([("python".into(), 3), ("rust".into(), 1), ("sql".into(), 3)]));
        assert_eq!(mined.edits, 1, "an SQL row is never a correction pair");
        let sql: Vec<(String, String, String)> = store
            .git_functions()
            .unwrap()
            .into_iter()
            .filter(|r| r.language == "sql")
            .map(|r| (r.name, r.body, r.prefix.lines().last().unwrap_or_default().to_owned()))
            .collect();
        assert_eq!(
            sql,
            [
                (
                    "open_items sql 1".to_owned(),
                    "SELECT id, title FROM items WHERE done = 0".to_owned(),
                    "    return db.execute(\"".to_owned()
                ),
                (
                    "count sql 2".to_owned(),
                    "select count(*) from [{table}]".to_owned(),
                    "    return db.execute(f\"".to_owned()
                ),
                (
                    "names sql 1".to_owned(),
                    "SELECT name FROM people ORDER BY name".to_owned(),
                    "    query(conn, \"".to_owned()
                ),
            ]
        );
        let rows = store.git_functions().unwrap();
        let first_sql = rows.iter().find(|r| r.language == "sql").unwrap();
        assert!(first_sql.prefix.starts_with("def open_items(db):\n"), "{:?}", first_sql.prefix);
        assert_eq!(first_sql.suffix, "\").fetchall()\n");
    }

    #[test]
    fn no_identity_and_no_repository_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("marunochi.db")).unwrap();
        let error = mine(&mut store, dir.path(), &Options::default(), &mut |_, _| {}).unwrap_err().to_string();
        assert!(error.contains("not a git repository"), "{error}");
        let repo = dir.path().join("r");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        // An empty email in the repository's own config hides any global one.
        git(&repo, &["config", "user.email", ""]);
        std::fs::write(repo.join("a.py"), "def f():\n    return 1\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["-c", "user.email=x@y", "commit", "-q", "-m", "c"]);
        let error = mine(&mut store, &repo, &Options::default(), &mut |_, _| {}).unwrap_err().to_string();
        assert!(error.contains("no user.email") && error.contains("--author"), "{error}");
        let text = format!("{}def f():\n    return 1\n", "# filler line\n".repeat(400));
        let start = text.find("def f").unwrap();
        let body = start + 13..text.len() - 1;
        assert_eq!(&text[body.clone()], "return 1");
        let prefix_cut = row(
            Path::new("/r"),
            &Written {
                commit: "c".into(),
                author: "Me <me@home>".into(),
                time: 0,
                path: "a.py".into(),
                language: "python",
                name: vec!["f".into()],
                text: text.as_str().into(),
                start,
                body,
                previous: None,
            },
        );
        assert!(prefix_cut.prefix.starts_with("# filler") && prefix_cut.prefix.len() <= PREFIX_BYTES);
        assert!(prefix_cut.prefix.ends_with("def f():\n    "), "{:?}", prefix_cut.prefix);
    }
}
