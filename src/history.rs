//! Functions as their authors wrote them, from a git repository's history: for every commit on the
//! first-parent line (a merge counts as the one change it brings), oldest first, each function it added or changed, with the whole file as it
//! was at that commit and where the function's body is. The replay benchmark (`benches/replay.rs`)
//! replays them as completions; mining a user's own repositories builds on the same walk.
//!
//! Reads with the `git` command (`log`, `diff-tree`, one `cat-file --batch` for every blob): no
//! library binding is needed for three plumbing commands, and git is where the repositories are.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

use crate::syntax::Syntax;

/// One function as it stood after a commit that added or changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub commit: String,
    /// `Name <email>` of the commit's author.
    pub author: String,
    /// Author time, seconds since the epoch.
    pub time: i64,
    /// The file, relative to the repository.
    pub path: PathBuf,
    pub language: &'static str,
    /// Outermost first (`["Cache", "get"]`).
    pub name: Vec<String>,
    /// The whole file at that commit, shared by the functions written in it.
    pub text: Arc<str>,
    /// Where the function (its first line) starts in `text`.
    pub start: usize,
    /// The body the author wrote: from its first character (after the first body line's
    /// indentation, where an editor leaves the cursor) to the end of its last line before a
    /// closing brace (the brace itself stays in the suffix).
    pub body: Range<usize>,
    /// The same function's previous text, when the commit changed one that existed.
    pub previous: Option<String>,
}

/// What to walk.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The commit to walk back from (a name or hash).
    pub until: String,
    /// Only commits by authors whose `Name <email>` contains this.
    pub author: Option<String>,
    /// Files larger than this are skipped.
    pub max_file_bytes: usize,
    /// Bodies shorter than this (in bytes, trimmed) are skipped: nothing to complete.
    pub min_body_bytes: usize,
}

impl Default for Walk {
    fn default() -> Walk {
        Walk { until: "HEAD".into(), author: None, max_file_bytes: 256 << 10, min_body_bytes: 8 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot run git in {repo}: {reason}")]
    Git { repo: PathBuf, reason: String },
    #[error("git {args} in {repo} failed: {stderr}")]
    Failed { repo: PathBuf, args: String, stderr: String },
}

/// Every function added or changed along the first-parent history of `walk.until`, oldest
/// commit first (by path, then in file order, within a commit).
pub fn functions(repo: &Path, walk: &Walk) -> Result<Vec<Written>, HistoryError> {
    let mut found = Vec::new();
    walk_functions(repo, walk, &mut |_, _| {}, &mut |written| found.push(written))?;
    Ok(found)
}

/// [`functions`], each handed to `found` as soon as it is read, so that a long history's file
/// texts are not all held at once; `walked(done, of)` is told before the first commit of the walk
/// and after each (progress).
pub fn walk_functions(
    repo: &Path,
    walk: &Walk,
    walked: &mut dyn FnMut(usize, usize),
    found: &mut dyn FnMut(Written),
) -> Result<(), HistoryError> {
    // A merge on the first-parent line brings in a whole branch: it is judged against its first
    // parent, as one change.
    let log = git(repo, &["log", "--first-parent", "--reverse", "--format=%H%x00%at%x00%an <%ae>", &walk.until])?;
    let commits: Vec<(&str, &str, &str)> = log
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\0');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, _, author)| walk.author.as_ref().is_none_or(|wanted| author.contains(wanted.as_str())))
        .collect();
    let mut blobs = Blobs::open(repo)?;
    // Each file's functions as the walk last saw it: a commit's "before" is mostly the version an
    // earlier commit of the walk left, and parsing is nearly all of a walk's time.
    let mut last_seen: HashMap<String, (Arc<str>, Arc<Functions>)> = HashMap::new();
    walked(0, commits.len());
    for (done, &(commit, time, author)) in commits.iter().enumerate() {
        let changed = git(
            repo,
            &[
                "diff-tree",
                "-r",
                "--root",
                "--no-commit-id",
                "--name-status",
                "--no-renames",
                "--diff-merges=first-parent",
                commit,
            ],
        )?;
        for entry in changed.lines() {
            let Some((status, path)) = entry.split_once('\t') else { continue };
            let Some(language) = language_of(Path::new(path)) else { continue };
            if !(status == "A" || status == "M") {
                continue;
            }
            let Some(text) = blobs.read(&format!("{commit}:{path}"), walk.max_file_bytes)? else { continue };
            let text: Arc<str> = text.into();
            let before =
                if status == "M" { blobs.read(&format!("{commit}^:{path}"), walk.max_file_bytes)? } else { None };
            let previous = match (before, last_seen.get(path)) {
                (Some(before), Some((seen, functions))) if **seen == *before => functions.clone(),
                (Some(before), _) => Arc::new(function_texts(language, &before)),
                (None, _) => Arc::default(),
            };
            let ranges = function_ranges(language, &text);
            last_seen.insert(path.to_owned(), (text.clone(), Arc::new(texts_of(&text, &ranges))));
            for (name, range) in ranges {
                let written = &text[range.clone()];
                let earlier = previous.get(&name);
                if earlier.is_some_and(|e| e == written) {
                    continue;
                }
                let start = range.start;
                let Some(body) = body_of(language, &text, range) else { continue };
                if text[body.clone()].trim().len() < walk.min_body_bytes {
                    continue;
                }
                found(Written {
                    commit: commit.to_owned(),
                    author: author.to_owned(),
                    time: time.parse().unwrap_or(0),
                    path: PathBuf::from(path),
                    language,
                    name,
                    text: text.clone(),
                    start,
                    body,
                    previous: earlier.cloned(),
                });
            }
        }
        walked(done + 1, commits.len());
    }
    Ok(())
}

/// The top directory of the repository `dir` is in (a bare repository: its own directory).
pub fn toplevel(dir: &Path) -> Result<PathBuf, HistoryError> {
    let bare = git(dir, &["rev-parse", "--is-bare-repository"])?.trim() == "true";
    let asked = if bare { "--absolute-git-dir" } else { "--show-toplevel" };
    Ok(PathBuf::from(git(dir, &["rev-parse", asked])?.trim_end_matches('\n')))
}

/// The email git records as the author of new commits in `repo` (`user.email`), if one is set.
pub fn identity(repo: &Path) -> Option<String> {
    git(repo, &["config", "user.email"]).ok().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty())
}

/// The files of the repository at `commit` in `language`, path and text (for retrieval).
pub fn files_at(
    repo: &Path,
    commit: &str,
    language: &str,
    max_file_bytes: usize,
) -> Result<Vec<(PathBuf, String)>, HistoryError> {
    let listing = git(repo, &["ls-tree", "-r", "--name-only", commit])?;
    let mut blobs = Blobs::open(repo)?;
    let mut files = Vec::new();
    for path in listing.lines().filter(|p| language_of(Path::new(p)) == Some(language)) {
        if let Some(text) = blobs.read(&format!("{commit}:{path}"), max_file_bytes)? {
            files.push((PathBuf::from(path), text));
        }
    }
    Ok(files)
}

/// Python and Rust: the languages whose function bodies `body_of` can find.
fn language_of(path: &Path) -> Option<&'static str> {
    Syntax::language_of_path(path).filter(|l| matches!(*l, "python" | "rust"))
}

/// Functions (not classes) of `text`, each by its name path, in document order; a name path that
/// occurs twice (overloads behind `if`s) keeps its first.
fn function_ranges(language: &str, text: &str) -> Vec<(Vec<String>, Range<usize>)> {
    let Some(syntax) = Syntax::for_language(language) else { return Vec::new() };
    let Some(tree) = syntax.parse(text) else { return Vec::new() };
    let mut seen = std::collections::HashSet::new();
    syntax
        .scopes(&tree, text)
        .into_iter()
        .filter(|s| s.kind == "function" && seen.insert(s.path.clone()))
        .map(|s| (s.path, s.start..s.end))
        .collect()
}

/// A file's functions: name path → text.
type Functions = HashMap<Vec<String>, String>;

fn function_texts(language: &str, text: &str) -> Functions {
    texts_of(text, &function_ranges(language, text))
}

fn texts_of(text: &str, ranges: &[(Vec<String>, Range<usize>)]) -> Functions {
    ranges.iter().map(|(name, range)| (name.clone(), text[range.clone()].to_owned())).collect()
}

/// Where the body of the function at `range` starts (its first line of code, after the indentation) and
/// ends. `None` for a one-line function: there is no body line to complete.
fn body_of(language: &str, text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let function = &text[range.clone()];
    let opener = match language {
        "python" => b':',
        _ => b'{',
    };
    // The header ends at the first opener outside brackets (`def f(x: int) -> Dict[str, int]:`,
    // `fn f(a: [u8; 4]) -> Result<(), E> where T: Clone {`).
    let mut depth = 0i32;
    let mut header_end = None;
    for (i, b) in function.bytes().enumerate() {
        match b {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            // A Python default value may be a dict (`def f(x={'a': 1}):`).
            b'{' if opener == b':' => depth += 1,
            b'}' if opener == b':' => depth -= 1,
            _ if b == opener && depth == 0 => {
                header_end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let header_end = range.start + header_end?;
    let line_break = header_end + text[header_end..range.end].find('\n')?;
    // A body may open with blank lines (PEP 8 allows one after a `def`): it starts at its first
    // line of code, where a writer's cursor would be, not at column 0 of the blank line.
    let mut first_line = line_break + 1;
    while let Some(n) = text[first_line..range.end].find('\n')
        && text[first_line..first_line + n].trim().is_empty()
    {
        first_line += n + 1;
    }
    let indent = text[first_line..range.end].bytes().take_while(|b| *b == b' ' || *b == b'\t').count();
    let start = first_line + indent;
    let end = match language {
        "python" => range.end,
        // Up to the end of the line before the closing brace's.
        _ => text[..range.end].rfind('\n').filter(|&n| n > start)?,
    };
    (start < end).then_some(start..end)
}

fn git(repo: &Path, args: &[&str]) -> Result<String, HistoryError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| HistoryError::Git { repo: repo.to_owned(), reason: e.to_string() })?;
    if !out.status.success() {
        return Err(HistoryError::Failed {
            repo: repo.to_owned(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One `git cat-file --batch` for all the blobs a walk reads.
struct Blobs {
    repo: PathBuf,
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Blobs {
    fn open(repo: &Path) -> Result<Blobs, HistoryError> {
        let spawn_error = |e: std::io::Error| HistoryError::Git { repo: repo.to_owned(), reason: e.to_string() };
        let mut child = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(spawn_error)?;
        let input = child.stdin.take().expect("stdin is piped");
        let output = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Blobs { repo: repo.to_owned(), child, input, output })
    }

    /// The text of the blob `spec` (`<commit>:<path>`): `None` when it does not exist, is not a
    /// blob, is larger than `max_bytes` or is not UTF-8.
    fn read(&mut self, spec: &str, max_bytes: usize) -> Result<Option<String>, HistoryError> {
        let broken =
            |e: std::io::Error| HistoryError::Git { repo: self.repo.clone(), reason: format!("cat-file: {e}") };
        writeln!(self.input, "{spec}").and_then(|()| self.input.flush()).map_err(broken)?;
        let mut header = String::new();
        self.output.read_line(&mut header).map_err(broken)?;
        let fields: Vec<&str> = header.split_whitespace().collect();
        let [_, kind, size] = fields[..] else { return Ok(None) };
        let size: usize = size.parse().unwrap_or(0);
        let mut content = vec![0u8; size + 1];
        self.output.read_exact(&mut content).map_err(broken)?;
        content.pop();
        Ok((kind == "blob" && size <= max_bytes).then(|| String::from_utf8(content).ok()).flatten())
    }
}

impl Drop for Blobs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(repo: &Path, args: &[&str]) {
        let status = Command::new("git").arg("-C").arg(repo).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn commit(repo: &Path, author: &str, files: &[(&str, &str)]) {
        for (path, text) in files {
            std::fs::write(repo.join(path), text).unwrap();
        }
        run(repo, &["add", "-A"]);
        let who = format!("--author={author}");
        run(repo, &["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "c", &who]);
    }

    #[test]
    fn added_and_changed_functions_are_found_with_their_bodies_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        run(repo, &["init", "-q"]);
        let first = "def add(a: int, b: int) -> int:\n    return a + b\n\ndef one(): return 1\n\n\
                     def pick(x={'a': 1}):\n\n    \n    return x\n";
        commit(repo, "Ann <ann@x>", &[("m.py", first), ("notes.txt", "x")]);
        let second = "def add(a: int, b: int) -> int:\n    return a + b\n\n\
                      class Box:\n    def get(self, key: dict[str, int]):\n        value = self.items[key]\n        return value\n";
        commit(repo, "Bob <bob@x>", &[("m.py", second)]);
        let third = second.replace("return a + b", "total = a + b\n    return total");
        let rust = "fn f<T: Clone>(a: [u8; 4]) -> Result<(), T> {\n    let x = a[0];\n    Ok(())\n}\n";
        commit(repo, "Ann <ann@x>", &[("m.py", &third), ("lib.rs", rust)]);

        let all = functions(repo, &Walk::default()).unwrap();
        let named: Vec<(String, &str)> = all.iter().map(|w| (w.name.join("."), &w.text[w.body.clone()])).collect();
        assert_eq!(
            named,
            vec![
                ("add".to_owned(), "return a + b"),
                ("pick".to_owned(), "return x"),
                ("Box.get".to_owned(), "value = self.items[key]\n        return value"),
                ("f".to_owned(), "let x = a[0];\n    Ok(())"),
                ("add".to_owned(), "total = a + b\n    return total"),
            ],
            "one-line `one` has no body; `pick`'s starts after its blank lines; unchanged `add` in the second \
             commit is not repeated"
        );
        assert_eq!(all[4].previous.as_deref(), Some("def add(a: int, b: int) -> int:\n    return a + b"));
        assert!(all[0].time <= all[4].time && all[2].author == "Bob <bob@x>");

        // Ann's third commit changed Bob's version, not hers: `Box.get` is Bob's, not new.
        let (mut walked, mut anns) = (vec![], vec![]);
        let anns_only = Walk { author: Some("ann@x".into()), ..Walk::default() };
        walk_functions(repo, &anns_only, &mut |done, of| walked.push((done, of)), &mut |w| anns.push(w)).unwrap();
        assert_eq!(anns.len(), 4);
        assert_eq!(walked, [(0, 2), (1, 2), (2, 2)]);

        // A branch merged with a merge commit counts once, as the change it brings.
        run(repo, &["checkout", "-q", "-b", "feature"]);
        commit(repo, "Cid <cid@x>", &[("b.py", "def b():\n    return 'b'\n")]);
        run(repo, &["checkout", "-q", "-"]);
        run(repo, &["-c", "user.name=t", "-c", "user.email=t@x", "merge", "-q", "--no-ff", "-m", "merge", "feature"]);
        let merged = functions(repo, &Walk::default()).unwrap();
        assert_eq!(merged.len(), 6);
        assert_eq!((merged[5].name.join("."), merged[5].path.to_str()), ("b".to_owned(), Some("b.py")));
        let files = files_at(repo, "HEAD", "python", 1 << 20).unwrap();
        assert_eq!(files.iter().map(|(p, _)| p.to_str().unwrap()).collect::<Vec<_>>(), ["b.py", "m.py"]);
        assert_eq!(files[1].1, third);
    }

    #[test]
    fn a_directory_that_is_no_repository_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = functions(dir.path(), &Walk::default()).unwrap_err().to_string();
        assert!(error.contains("git log") && error.contains("not a git repository"), "{error}");
    }
}
