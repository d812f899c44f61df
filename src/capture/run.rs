//! `marunochi run -- <cmd>`: run the user's tests or build as they would, output passed through,
//! and record the result as the execution signal of the suggestions accepted since the last run.
//! We never execute the user's code ourselves; they do, and we listen.

use crate::clock::now_ms;
use crate::store::{Run, Store, StoreError};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// Lines of output kept as the run's summary.
const SUMMARY_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the command ran (exit {exit:?}) but could not be recorded: {source}")]
    Record { exit: Option<i32>, source: StoreError },
}

/// Runs `command` in `directory`, passing its output through, and records it in the store at `db`.
/// Returns its exit status and how many interactions it judged.
pub fn run_and_record(db: &Path, command: &[String], directory: &Path) -> Result<(ExitStatus, usize), RunError> {
    let shown = command.join(" ");
    let started_at_ms = now_ms();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .current_dir(directory)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Spawn { command: shown.clone(), source })?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(SUMMARY_LINES)));
    let stdout = child.stdout.take().map(|out| pass_through(out, std::io::stdout, tail.clone()));
    let stderr = child.stderr.take().map(|err| pass_through(err, std::io::stderr, tail.clone()));
    let status = child.wait().map_err(|source| RunError::Spawn { command: shown.clone(), source })?;
    for reader in [stdout, stderr].into_iter().flatten() {
        let _ = reader.join();
    }
    let summary: Vec<String> = tail.lock().expect("tail").iter().cloned().collect();
    let run = Run {
        command: shown,
        directory: directory.display().to_string(),
        started_at_ms,
        finished_at_ms: now_ms(),
        exit_code: status.code(),
        summary: summary.join("\n"),
        tests: None,
    };
    let marked = Store::open(db)
        .and_then(|mut store| {
            let marked = store.record_run(&run)?;
            crate::quality::rescore(&mut store)?;
            Ok(marked)
        })
        .map_err(|source| RunError::Record { exit: status.code(), source })?;
    Ok((status, marked))
}

/// Copies a stream through line by line, keeping the last lines.
fn pass_through<W: Write + 'static>(
    from: impl std::io::Read + Send + 'static,
    to: fn() -> W,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = to().write_all(&line);
            let mut tail = tail.lock().expect("tail");
            if tail.len() == SUMMARY_LINES {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
            line.clear();
        }
    })
}
