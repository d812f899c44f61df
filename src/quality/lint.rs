//! External linters, when the user has them: ruff for Python. Never required — absent means the
//! static dimension rests on tree-sitter and the language server alone. (clippy is not run: it needs
//! a build of the whole crate; rust-analyzer's diagnostics, which run `cargo check`/clippy on save,
//! reach us through the language server.)

use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A linter slower than this on one file is given up on (and killed).
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a linter said about a range of a file.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Lint {
    pub tool: String,
    /// Findings overlapping the range.
    pub errors: usize,
    /// `CODE message` of each, for the report.
    pub messages: Vec<String>,
}

/// Lints bytes `region` of `text` (the file at `path`) with the language's linter, if one is on
/// `PATH`; `None` when there is none or it failed (logged).
pub fn external(language: &str, path: &Path, text: &str, region: Range<usize>) -> Option<Lint> {
    if language != "python" {
        return None;
    }
    let ruff = find_tool("ruff", &std::env::var_os("PATH")?)?;
    ruff_check(&ruff, path, text, region)
        .inspect_err(|error| tracing::warn!(error, tool = %ruff.display(), "linter failed; not used"))
        .ok()
}

/// The first executable `name` in the directories of `path_var` (a `PATH` value).
pub fn find_tool(name: &str, path_var: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `ruff check` on the text (not the file on disk: the editor's version is what was judged), its
/// findings on the lines of `region` counted.
pub fn ruff_check(ruff: &Path, path: &Path, text: &str, region: Range<usize>) -> Result<Lint, String> {
    let mut child = Command::new(ruff)
        .args(["check", "--no-cache", "--quiet", "--exit-zero", "--output-format", "json", "--stdin-filename"])
        .arg(path)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = text.to_owned();
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    // Read while it runs: a big report would otherwise fill the pipe and stall ruff until the timeout.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer in {} s", TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    let stdout = out.join().map_err(|_| "reader panicked".to_owned())?.map_err(|e| e.to_string())?;
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("exit {:?}: {}", status.code(), stderr.trim()));
    }
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&stdout).map_err(|e| format!("unreadable output: {e}"))?;
    // ruff reports 1-based rows; the region's rows are those its bytes span.
    let row_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() as u64 + 1;
    let (first, last) = (row_of(region.start), row_of(region.end));
    let mut lint = Lint { tool: "ruff".into(), ..Lint::default() };
    for finding in findings {
        let start = finding.pointer("/location/row").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let end = finding.pointer("/end_location/row").and_then(serde_json::Value::as_u64).unwrap_or(start);
        if start <= last && end >= first {
            lint.errors += 1;
            let code = finding["code"].as_str().unwrap_or("?");
            lint.messages.push(format!("{code} {}", finding["message"].as_str().unwrap_or_default()));
        }
    }
    Ok(lint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_missing_from_path_is_none() {
        assert_eq!(find_tool("ruff", std::ffi::OsStr::new("/nonexistent:/also/not/here")), None);
        assert_eq!(external("rust", Path::new("a.rs"), "fn main() {}", 0..2), None, "no linter for Rust");
    }
}
