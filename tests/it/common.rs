//! A real LSP client for end-to-end tests: spawns a process (the marunochi binary, or a language
//! server directly), frames messages with the crate's codec and answers server→client requests the
//! way an editor would.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use marunochi::lsp::codec::{self, Incoming};
use marunochi::store::{Action, Decided, Shown};
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn test_dep(relative: &str) -> String {
    let path = repo_root().join(".test-deps").join(relative);
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh (./scripts/test.sh does)", path.display());
    path.to_string_lossy().into_owned()
}

/// A generated (or linked) model fixture under `.test-deps/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(test_dep(&format!("fixtures/{name}")))
}

/// An empty workspace root, `dir/ws`.
pub fn workspace(dir: &Path) -> PathBuf {
    let root = dir.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// A fresh MARUNOCHI_HOME under `dir` with this config.toml.
pub fn home_with_config(dir: &Path, config: &str) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

pub fn pylsp() -> Vec<String> {
    vec![test_dep("venv/bin/pylsp")]
}

pub fn pyright() -> Vec<String> {
    vec![test_dep("node/node_modules/.bin/pyright-langserver"), "--stdio".into()]
}

pub fn scripted_server(log: &Path, encoding: Option<&str>) -> Vec<String> {
    let mut cmd = vec![
        "python3".to_string(),
        repo_root().join("tests/fixtures/scripted_server.py").to_string_lossy().into_owned(),
        log.to_string_lossy().into_owned(),
    ];
    if let Some(encoding) = encoding {
        cmd.extend(["--encoding".to_string(), encoding.to_string()]);
    }
    cmd
}

/// `marunochi proxy [extra...] -- server...` with its own MARUNOCHI_HOME.
pub fn proxy_command(home: &Path, extra: &[&str], server: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marunochi"));
    cmd.env("MARUNOCHI_HOME", home).arg("proxy").args(extra).arg("--").args(server);
    cmd
}

pub fn lsp_command(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marunochi"));
    cmd.env("MARUNOCHI_HOME", home).arg("lsp");
    cmd
}

pub fn direct_command(server: &[String]) -> Command {
    let mut cmd = Command::new(&server[0]);
    cmd.args(&server[1..]);
    cmd
}

pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    incoming: Receiver<Incoming>,
    next_id: i64,
    /// Notifications and unsolicited messages seen so far, oldest first.
    pub notifications: VecDeque<Value>,
    /// Server→client requests seen (after we answered them).
    pub server_requests: Vec<Value>,
    /// Responses that arrived while waiting for another one.
    pending_responses: Vec<Value>,
}

impl Client {
    pub fn spawn(mut cmd: Command) -> Client {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdin = child.stdin.take();
        let (tx, incoming) = mpsc::channel();
        codec::spawn_reader(child.stdout.take().unwrap(), tx);
        Client {
            child,
            stdin,
            incoming,
            next_id: 1,
            notifications: VecDeque::new(),
            server_requests: Vec::new(),
            pending_responses: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, message: &Value) {
        self.send_raw(&codec::encode(message));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request with the next integer id and returns that id.
    pub fn send_request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        self.send_request_with_id(id.clone(), method, params);
        id
    }

    pub fn send_request_with_id(&mut self, id: Value, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    }

    /// Sends a request and waits for its whole response message.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        self.response(&id)
    }

    /// The response with this id, answering server requests and keeping notifications meanwhile.
    pub fn response(&mut self, id: &Value) -> Value {
        if let Some(i) = self.pending_responses.iter().position(|r| &r["id"] == id) {
            return self.pending_responses.remove(i);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.next_message(deadline).unwrap_or_else(|| panic!("no response to request {id}"));
            if message.get("method").is_none() {
                if &message["id"] == id {
                    return message;
                }
                self.pending_responses.push(message);
            }
        }
    }

    /// Waits for a notification with this method (answering server requests meanwhile).
    pub fn wait_notification(&mut self, method: &str, timeout: Duration) -> Option<Value> {
        if let Some(i) = self.notifications.iter().position(|n| n["method"] == method) {
            return self.notifications.remove(i);
        }
        let deadline = Instant::now() + timeout;
        while let Some(message) = self.next_message(deadline) {
            if message["method"] == method && message.get("id").is_none() {
                self.notifications.retain(|n| n != &message);
                return Some(message);
            }
            if message.get("method").is_none() {
                self.pending_responses.push(message);
            }
        }
        None
    }

    /// Waits for a server→client request with this method; it is answered automatically.
    pub fn wait_server_request(&mut self, method: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.server_requests.iter().find(|r| r["method"] == method) {
                return Some(found.clone());
            }
            let message = self.next_message(deadline)?;
            if message.get("method").is_none() {
                self.pending_responses.push(message);
            }
        }
    }

    /// The next response to any of our requests that arrives before `deadline`.
    #[allow(dead_code)] // benches/serving_latency.rs reads responses in arrival order; the tests wait by id
    pub fn next_response(&mut self, deadline: Instant) -> Option<Value> {
        if !self.pending_responses.is_empty() {
            return Some(self.pending_responses.remove(0));
        }
        while let Some(message) = self.next_message(deadline) {
            if message.get("method").is_none() {
                return Some(message);
            }
        }
        None
    }

    /// The next raw item (for malformed-frame tests), without any handling.
    pub fn next_item(&mut self, timeout: Duration) -> Option<Incoming> {
        self.incoming.recv_timeout(timeout).ok()
    }

    fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = self.incoming.recv_timeout(left).ok()?;
        let Incoming::Message(payload) = item else { panic!("malformed frame from the peer: {item:?}") };
        let message = payload.to_value().unwrap();
        match (message.get("method").and_then(Value::as_str), message.get("id")) {
            (Some(method), Some(id)) => {
                let result = editor_answer(method, &message["params"]);
                self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
                self.server_requests.push(message.clone());
            }
            (Some(_), None) => self.notifications.push_back(message.clone()),
            _ => {}
        }
        Some(message)
    }

    /// Closes stdin (the editor goes away) and waits for the process to exit.
    pub fn close_and_wait(&mut self) -> std::process::ExitStatus {
        self.stdin = None;
        self.wait()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// initialize + initialized, returning the initialize response.
    pub fn initialize(&mut self, root: &Path, encodings: &[&str]) -> Value {
        let params = initialize_params(root, encodings);
        let response = self.request("initialize", params);
        self.notify("initialized", json!({}));
        response
    }

    pub fn shutdown_and_exit(&mut self) -> std::process::ExitStatus {
        let response = self.request("shutdown", Value::Null);
        assert_eq!(response["result"], Value::Null, "{response}");
        self.notify("exit", Value::Null);
        self.wait()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a cooperative editor answers to the server requests real servers send.
fn editor_answer(method: &str, params: &Value) -> Value {
    match method {
        "workspace/configuration" => {
            let items = params["items"].as_array().map_or(0, Vec::len);
            Value::Array(vec![Value::Null; items])
        }
        "workspace/applyEdit" => json!({"applied": true}),
        _ => Value::Null,
    }
}

pub fn initialize_params(root: &Path, encodings: &[&str]) -> Value {
    let uri = file_uri(root);
    json!({
        "processId": std::process::id(),
        "clientInfo": {"name": "marunochi-tests"},
        "rootUri": uri,
        "workspaceFolders": [{"uri": uri, "name": "ws"}],
        "capabilities": {
            "general": {"positionEncodings": encodings},
            "workspace": {"configuration": true, "applyEdit": true, "workspaceFolders": true,
                          "didChangeConfiguration": {"dynamicRegistration": true}},
            "window": {"workDoneProgress": true, "showMessage": {}},
            "textDocument": {
                "hover": {"contentFormat": ["markdown", "plaintext"]},
                "completion": {"completionItem": {"snippetSupport": false}},
                "synchronization": {"didSave": true, "dynamicRegistration": true},
                "publishDiagnostics": {},
                "rename": {"prepareSupport": true}
            }
        }
    })
}

pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

pub fn open(client: &mut Client, uri: &str, text: &str) {
    open_as(client, uri, "python", text);
}

pub fn open_as(client: &mut Client, uri: &str, language_id: &str, text: &str) {
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": language_id, "version": 1, "text": text}}),
    );
}

/// `textDocument/inlineCompletion` at a position, as Neovim sends it.
pub fn inline(client: &mut Client, uri: &str, line: u32, character: u32) -> Value {
    client.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
               "context": {"triggerKind": 2}}),
    )
}

/// Stops the daemon a test's proxies started in `home` (its pid is in the lock file) and waits for it
/// to remove its socket.
/// Runs an editor's headless test script until it exits (or 150 s): its last stdout line (the
/// script's PASS/FAIL verdict), stderr, the exit status.
pub fn run_editor_script(mut command: Command) -> (String, String, std::process::ExitStatus) {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The script has its own timeout; this one catches a script that never starts.
    let deadline = Instant::now() + Duration::from_secs(150);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let verdict = String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned();
    (verdict, String::from_utf8_lossy(&output.stderr).into_owned(), output.status)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The daemon's status, asked over its socket like a proxy would (this connection counts as a client).
pub fn daemon_status(home: &Path) -> Option<marunochi::daemon::protocol::Status> {
    runtime().block_on(async {
        let socket = marunochi::daemon::socket_path(&marunochi::home::Home::at(home));
        let client = marunochi::daemon::Client::connect(&socket, None).await.ok()?;
        client.status().await.ok()
    })
}

pub fn stop_daemon(home: &Path) {
    let Ok(pid) = std::fs::read_to_string(home.join("run/daemon.lock")) else { return };
    let Ok(pid) = pid.trim().parse::<i32>() else { return };
    // SAFETY: kill(2) on the daemon the test started.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        eventually("the daemon to leave", || (!home.join("run/daemon.sock").exists()).then_some(()));
    }
}

pub fn position(uri: &str, line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
}

/// Child processes of `pid` (the proxy's language server).
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    found
}

pub fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Polls `f` until it returns `Some`, or panics after `TIMEOUT`.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stored suggestion row with placeholder content.
pub fn shown_row(id: &str, uri: &str, shown_at_ms: i64) -> Shown {
    Shown {
        id: id.into(),
        shown_at_ms,
        session_id: "s".into(),
        user_id: "u".into(),
        file_path: uri.into(),
        language: "python".into(),
        line: 0,
        character: 0,
        suggestion: format!("suggestion {id}"),
        suggestion_type: "inline",
        model_version: "m".into(),
        confidence: -0.5,
        prompt_prefix: "prefix".into(),
        prompt_suffix: String::new(),
        context_files: Vec::new(),
        context_sources: Vec::new(),
        recent_edits: "[]".into(),
        document_version: 1,
    }
}

/// `marunochi ARGS...` with its own MARUNOCHI_HOME: success, stdout, stderr.
pub fn run_cli(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi")).env("MARUNOCHI_HOME", home).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The outcome of a suggestion taken whole a second after it was shown, as `code` at `region`.
/// A suggestion taken (as `action`) with `code` at `region` of its document, as the capture
/// writer records it.
pub fn taken<'a>(id: &'a str, action: Action, code: &'a str, region: std::ops::Range<usize>) -> Decided<'a> {
    Decided {
        id,
        action,
        time_to_action_ms: Some(1000),
        final_code: Some(code),
        shown_ms: Some(1000),
        region: Some(region),
        ..Decided::default()
    }
}

pub const SHOWN_AT_MS: i64 = 1_780_000_000_000;

/// A suggestion accepted as `code` (or corrected to it), run successfully, kept, rated: quality 85.
pub fn graded(store: &mut marunochi::store::Store, n: usize, project: &Path, code: &str, corrected: bool) {
    let id = format!("s{n:02}");
    let uri = format!("file://{}/m{n}.py", project.display());
    let shown = marunochi::store::Shown {
        suggestion: if corrected { "old_guess()".into() } else { code.into() },
        prompt_prefix: format!("def f{n}():\n    "),
        ..shown_row(&id, &uri, SHOWN_AT_MS + n as i64 * 60_000)
    };
    let action = if corrected { Action::Corrected } else { Action::Accepted };
    let outcome = taken(&id, action, code, 0..code.len());
    store.batch(|b| b.shown(&shown)).unwrap();
    store.batch(|b| b.outcome(&outcome)).unwrap();
    store.batch(|b| b.feedback(&id, 1, None)).unwrap();
    let results: Vec<marunochi::store::CheckResult> = ["7d", "30d"]
        .iter()
        .map(|label| marunochi::store::CheckResult {
            interaction_id: id.clone(),
            label: label.to_string(),
            checked_ms: SHOWN_AT_MS + 40 * 86_400_000,
            survival: Some(1.0),
            found_in: None,
            kept: Some(true),
        })
        .collect();
    store.record_checks(&results).unwrap();
}

/// A successful `pytest` run in `project` at the graded suggestions' time: their execution signal.
pub fn passing_run(project: &Path) -> marunochi::store::Run {
    marunochi::store::Run {
        command: "pytest".into(),
        directory: project.display().to_string(),
        started_at_ms: SHOWN_AT_MS,
        finished_at_ms: SHOWN_AT_MS,
        exit_code: Some(0),
        summary: String::new(),
        tests: None,
    }
}

/// A home serving the tiny trainable Qwen2 (config: `[engine] model` plus `extra_config`) with two
/// python adapter versions trained here for `steps` updates each (learning rate 3e-3): v1 on
/// `return x * 7`, v2 on `return x * 9` (after `def f(x):`). From 20 updates on each has learnt
/// its line: completing there, v1 writes `return x * 7`, v2 `return x * 9` (the base model writes
/// nothing).
pub fn two_trained_versions(dir: &Path, extra_config: &str, steps: usize) -> PathBuf {
    let model = fixture("tiny-qwen2-trainable");
    let home = home_with_config(dir, &format!("[engine]\nmodel = \"{}\"\n{extra_config}", model.display()));
    for (i, completion) in ["return x * 7", "return x * 9"].into_iter().enumerate() {
        let data = dir.join(format!("data{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let example = json!({"id": "e0", "timestamp": "2026-11-01T00:00:00Z", "prefix": "def f(x):\n    ",
            "suffix": "\n", "completion": completion, "action": "accepted", "weight": 1.0, "priority": 1.0,
            "dedup": 1.0, "cluster": 0, "cluster_size": 1, "complexity": 1, "tier": 0, "replay": false});
        std::fs::write(data.join("train.jsonl"), format!("{example}\n")).unwrap();
        let (model, data, steps) = (model.to_str().unwrap(), data.to_str().unwrap(), steps.to_string());
        let (ok, _, stderr) = run_cli(
            &home,
            &["train", "--language", "python", "--model", model, "--data", data, "--steps", &steps, "--lr", "0.003"],
        );
        assert!(ok, "{stderr}");
    }
    home
}

/// What `marunochi eval` leaves in a version's directory (tests/eval.rs runs the real gate).
pub fn gate_verdict(home: &Path, version: &str, passed: bool) {
    let report =
        json!({"passed": passed, "heldout": {"verdict": if passed { "better on 6 of 6" } else { "not significant" }}});
    std::fs::write(home.join("adapters/python").join(version).join("eval.json"), report.to_string()).unwrap();
}

/// A number from the environment, else `default` (the benchmarks' knobs).
#[allow(dead_code)] // for the benchmarks
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` quantile (0 to 1) of sorted values; NaN when there are none.
#[allow(dead_code)] // for the benchmarks
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A program on PATH, else a panic saying which script installs it.
pub fn on_path(program: &str, installed_by: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: run {installed_by}"))
}

/// `page` rendered by real headless Chromium (Debian's, from `scripts/test-deps.sh`), offline:
/// the DOM after loading, with a screenshot saved as `target/test-artifacts/<name>.png`. Panics
/// on any console message (a script error, a resource that failed to load).
pub fn render_in_chromium(page: &Path, name: &str) -> String {
    let chromium = on_path("chromium", "./scripts/test-deps.sh (it installs Debian's chromium)");
    let profile = tempfile::tempdir().unwrap();
    let artifacts = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&screenshot);
    let run = |action: &str| {
        let out = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
            .args(["--disable-background-networking", "--disable-component-update", "--enable-logging=stderr"])
            .args(["--v=0", "--window-size=1200,2400"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(action)
            .arg(format!("file://{}", page.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "chromium {action}: {stderr}");
        let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).collect();
        assert!(console.is_empty(), "the page wrote to the console: {console:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&format!("--screenshot={}", screenshot.display()));
    let png = std::fs::read(&screenshot).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot at {}", screenshot.display());
    run("--dump-dom")
}
