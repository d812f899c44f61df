//! The interaction store with real SQLite files: suggestions shown through the real proxy (SmolLM2
//! behind pylsp) land in `marunochi.db` with their acceptance and feedback, secrets redacted; a
//! damaged store costs nothing but the recording; rows committed before a `kill -9` survive it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;
use marunochi::store::{Action, Interaction, Shown, Store};
use serde_json::{Value, json};

const SOURCE: &str = "API_KEY = \"sk-live-abcdefghijklmnopqrstuvwxyz123456\"\n\n\ndef fibonacci(n):\n    if n < 2:\n        return n\n    return fib\n";

/// Every file under `dir` (any depth) whose bytes contain `marker`.
fn files_holding(dir: &Path, marker: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for path in std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()) {
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path).unwrap().windows(marker.len()).any(|w| w == marker.as_bytes()) {
                found.push(path);
            }
        }
    }
    found
}

/// The stored row of suggestion `id` once its fate is decided.
fn settled(db: &Path, id: &str) -> Option<Interaction> {
    Store::open(db).ok()?.interaction(id).ok()?.filter(|r| r.action != Action::Shown)
}

fn proxy(home: &Path) -> Client {
    let model = fixture("smollm2-135m-instruct.gguf");
    Client::spawn(proxy_command(home, &["--model", &model.to_string_lossy()], &pylsp()))
}

#[test]
fn shown_accepted_and_rated_suggestions_are_stored_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("fib.py"));
    let mut client = proxy(&home);
    client.initialize(&root, &[]);
    open(&mut client, &uri, SOURCE);
    let answer = inline(&mut client, &uri, 6, 14);
    let id = answer["result"]["items"][0]["command"]["arguments"][0].as_str().expect("a suggestion").to_owned();
    std::thread::sleep(std::time::Duration::from_millis(300));
    client.request("workspace/executeCommand", json!({"command": "marunochi.accept", "arguments": [id]}));
    let leaky = "spot on but my token is ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    client.request("workspace/executeCommand", json!({"command": "marunochi.feedback", "arguments": [1, leaky]}));

    let row = eventually("the rated row", || {
        let store = Store::open(&home.join("marunochi.db")).ok()?;
        store.interaction(&id).ok()?.filter(|r| r.user_rating.is_some())
    });
    assert_eq!(row.action, Action::Accepted);
    assert!(row.time_to_action.unwrap() >= 300, "{row:?}");
    assert_eq!(
        (row.user_rating, row.user_comment.as_deref()),
        (Some(1), Some("spot on but my token is «redacted:github-token»"))
    );
    assert_eq!((row.language.as_str(), row.model_version.as_str()), ("python", "smollm2-135m-instruct.gguf"));
    assert!(row.suggestion.starts_with("onacci"), "{row:?}");
    assert!(row.prompt_prefix.ends_with("    return fib"), "{row:?}");
    assert!(!row.prompt_prefix.contains("sk-live") && row.prompt_prefix.contains("«redacted"), "{row:?}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
    // Nowhere under the home: database, WAL, logs, and the datasets curated from them.
    let (ok, _, stderr) = run_cli(&home, &["curate", "--min-quality", "0"]);
    assert!(ok, "{stderr}");
    assert!(home.join("datasets").exists());
    for secret in ["sk-live-abcdefghijklmnopqrstuvwxyz123456", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"] {
        assert_eq!(files_holding(&home, secret), Vec::<std::path::PathBuf>::new(), "{secret}");
    }
}

#[test]
fn a_damaged_store_is_left_alone_and_suggestions_still_come() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let db = home.join("marunochi.db");
    let garbage = b"not a database; somebody's notes".repeat(200);
    std::fs::write(&db, &garbage).unwrap();
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("fib.py"));
    let mut client = proxy(&home);
    client.initialize(&root, &[]);
    open(&mut client, &uri, SOURCE);
    let answer = inline(&mut client, &uri, 6, 14);
    assert!(answer["result"]["items"][0]["insertText"].is_string(), "{answer}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "the damaged file is never overwritten");
    let log = std::fs::read_to_string(home.join("logs/proxy.log")).unwrap();
    assert!(log.contains("marunochi.db") && log.contains("untouched"), "{log}");
    stop_daemon(&home);
}

const WRITER_ENV: &str = "MARUNOCHI_TEST_WRITER_DB";

/// The child side of the kill test: commit rows one by one and say so after each commit.
fn write_until_killed(db: &Path) {
    let mut store = Store::open(db).unwrap();
    for i in 0.. {
        let shown = Shown {
            suggestion: "x".repeat(200),
            prompt_prefix: "y".repeat(2000),
            ..shown_row(&format!("row-{i}"), "file:///p/a.py", 1_764_000_000_000 + i)
        };
        store.batch(|b| b.shown(&shown)).unwrap();
        println!("committed {}", i + 1);
    }
}

#[test]
fn rows_committed_before_a_kill_survive_it() {
    if let Some(db) = std::env::var_os(WRITER_ENV) {
        write_until_killed(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("marunochi.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rows_committed_before_a_kill_survive_it", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, &db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut committed = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("committed ") {
            committed = n.parse().unwrap();
            if committed >= 300 {
                break;
            }
        }
    }
    // SAFETY: kill(2) on our own child, mid-stream.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let store = Store::open(&db).unwrap();
    assert!(store.count().unwrap() as u64 >= committed, "every row reported committed is there");
    assert_eq!(store.integrity().unwrap(), "ok");
}

fn change(client: &mut Client, uri: &str, version: i32, line: u32, from: u32, to: u32, text: &str) {
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": version},
               "contentChanges": [{"range": {"start": {"line": line, "character": from},
                                             "end": {"line": line, "character": to}}, "text": text}]}),
    );
}

/// One suggestion at the end of `return fib` in a fresh copy of the file; its id and text.
fn suggest(client: &mut Client, uri: &str) -> (String, String) {
    open(client, uri, SOURCE);
    let answer = inline(client, uri, 6, 14);
    let item = &answer["result"]["items"][0];
    (
        item["command"]["arguments"][0].as_str().expect("a suggestion").to_owned(),
        item["insertText"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn outcomes_are_inferred_from_the_edits_accepted_corrected_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path());
    let mut client = proxy(&home);
    client.initialize(&root, &[]);

    // Accepted the way editors without the command do it: the text arrives in one change.
    let accepted_uri = file_uri(&root.join("accepted.py"));
    let (accepted, text) = suggest(&mut client, &accepted_uri);
    change(&mut client, &accepted_uri, 2, 6, 14, 14, &text);
    client.notify("textDocument/didClose", json!({"textDocument": {"uri": accepted_uri}}));

    // Accepted, then the first character of it replaced: a correction.
    let corrected_uri = file_uri(&root.join("corrected.py"));
    let (corrected, text) = suggest(&mut client, &corrected_uri);
    change(&mut client, &corrected_uri, 2, 6, 14, 14, &text);
    change(&mut client, &corrected_uri, 3, 6, 14, 15, "Z");
    client.notify("textDocument/didClose", json!({"textDocument": {"uri": corrected_uri}}));

    // Something else typed at the cursor.
    let rejected_uri = file_uri(&root.join("rejected.py"));
    let (rejected, _) = suggest(&mut client, &rejected_uri);
    change(&mut client, &rejected_uri, 2, 6, 14, 14, "#");

    let db = home.join("marunochi.db");
    let row = |id: &str| eventually(id, || settled(&db, id));
    let a = row(&accepted);
    assert_eq!(a.action, Action::Accepted, "{a:?}");
    assert!(a.final_code.as_deref().is_some_and(|c| c.starts_with("onacci")), "{a:?}");
    let c = row(&corrected);
    assert_eq!(c.action, Action::Corrected, "{c:?}");
    assert!(c.final_code.as_deref().unwrap().starts_with('Z'), "{c:?}");
    assert!(c.diff.as_deref().unwrap().contains("+Z"), "{c:?}");
    let r = row(&rejected);
    assert_eq!(r.action, Action::Rejected, "{r:?}");
    assert_eq!(r.alternatives.as_deref(), Some(r##"{"typed_instead":"#"}"##));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

fn data(home: &Path, args: &[&str]) -> (bool, String, String) {
    run_cli(home, &[&["data"], args].concat())
}

#[test]
fn data_path_export_and_forget() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let project = dir.path().join("project");
    let uri = |name: &str| format!("file://{}/{name}", project.display());
    let mut store = Store::open(&home.join("marunochi.db")).unwrap();
    // 2025-01-01, 2026-06-01, 2026-06-02 (ms since the epoch).
    store.batch(|b| b.shown(&shown_row("old", &uri("a.py"), 1_735_689_600_000))).unwrap();
    store.batch(|b| b.shown(&shown_row("lib", &uri("src/lib.py"), 1_780_272_000_000))).unwrap();
    store.batch(|b| b.shown(&shown_row("main", &uri("main.py"), 1_780_358_400_000))).unwrap();
    // A rollout's shadow sample for lib.py holds that file's code too.
    let sample = marunochi::store::ShadowSample {
        language: "python".into(),
        version: "v2".into(),
        document: uri("src/lib.py"),
        request_hash: "h".into(),
        served_model_version: "m".into(),
        served_text: "suggestion lib".into(),
        shadow_text: "shadow of lib".into(),
    };
    store.record_shadow(&sample).unwrap();
    drop(store);

    let (ok, out, _) = data(&home, &["path"]);
    assert!(ok && out.trim() == home.join("marunochi.db").display().to_string(), "{out}");
    let (ok, out, err) = data(&home, &["export"]);
    assert!(ok, "{err}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    // Exported over an existing world-readable file: private afterwards.
    let exported = dir.path().join("export.jsonl");
    std::fs::write(&exported, "").unwrap();
    std::fs::set_permissions(&exported, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (ok, _, err) = data(&home, &["export", "--out", exported.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&exported).unwrap().permissions());
    assert_eq!((mode & 0o777, std::fs::read_to_string(&exported).unwrap().lines().count()), (0o600, 3));
    assert_eq!(rows[0]["id"], "old");
    assert_eq!(rows[0]["timestamp"], "2025-01-01T00:00:00.000Z");
    assert_eq!(rows[2]["suggestion"], "suggestion main");
    assert!(rows[0].get("retention_30d").is_some() && rows[0].get("user_rating").is_some(), "every column");

    let (ok, _, err) = data(&home, &["forget"]);
    assert!(!ok && err.contains("--all"), "{err}");
    let (ok, _, err) = data(&home, &["forget", "--before", "last tuesday"]);
    assert!(!ok && err.contains("not a date"), "{err}");
    let (ok, _, err) = data(&home, &["forget", "--before", "2026-01-01"]);
    assert!(ok && err.contains("forgot 1 interaction"), "{err}");
    let (ok, _, err) = data(&home, &["forget", "--file", &project.join("src").to_string_lossy()]);
    assert!(ok && err.contains("forgot 1 interaction"), "{err}");
    let store = Store::open(&home.join("marunochi.db")).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    assert!(store.interaction("main").unwrap().is_some());
    let bytes = std::fs::read(home.join("marunochi.db")).unwrap();
    assert!(!bytes.windows(14).any(|w| w == b"suggestion lib"), "forgotten text is gone from the file");
    assert!(!bytes.windows(13).any(|w| w == b"shadow of lib"), "and its shadow sample with it");
    let (ok, _, err) = data(&home, &["forget", "--all"]);
    assert!(ok && err.contains("forgot 1 interaction"), "{err}");
}

#[test]
fn pyright_errors_inside_accepted_code_are_recorded_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path());
    let model = fixture("smollm2-135m-instruct.gguf");
    let mut client = Client::spawn(proxy_command(&home, &["--model", &model.to_string_lossy()], &pyright()));
    client.initialize(&root, &[]);
    let uri = file_uri(&root.join("fib.py"));
    let (id, text) = suggest(&mut client, &uri);
    change(&mut client, &uri, 2, 6, 14, 14, &text);
    // The user turns `fibonacci(` into a name that does not exist; pyright says so.
    change(&mut client, &uri, 3, 6, 14, 20, "o_undefined");
    eventually("pyright's diagnostic", || {
        let d = client.wait_notification("textDocument/publishDiagnostics", std::time::Duration::from_millis(200))?;
        d.to_string().contains("fibo_undefined").then_some(())
    });
    client.notify("textDocument/didClose", json!({"textDocument": {"uri": uri}}));
    let db = home.join("marunochi.db");
    let row = eventually("the settled row", || settled(&db, &id));
    assert_eq!(row.action, Action::Corrected, "{row:?}");
    let diagnostics: Value = serde_json::from_str(row.diagnostics.as_deref().expect("diagnostics recorded")).unwrap();
    assert_eq!(diagnostics[0]["severity"], 1, "{diagnostics}");
    assert!(diagnostics[0]["message"].as_str().unwrap().contains("fibo_undefined"), "{diagnostics}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

/// Pull diagnostics (LSP 3.17): with the client declaring support, pyright publishes nothing and
/// answers `textDocument/diagnostic` instead. The correction window here ends with the cursor
/// leaving the code (a hover above it), not with the document closing.
#[test]
fn pulled_diagnostics_count_and_the_cursor_leaving_settles_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path());
    let model = fixture("smollm2-135m-instruct.gguf");
    let mut client = Client::spawn(proxy_command(&home, &["--model", &model.to_string_lossy()], &pyright()));
    let mut params = initialize_params(&root, &[]);
    params["capabilities"]["textDocument"]["diagnostic"] = json!({"dynamicRegistration": true});
    client.request("initialize", params);
    client.notify("initialized", json!({}));
    let uri = file_uri(&root.join("fib.py"));
    let (id, text) = suggest(&mut client, &uri);
    change(&mut client, &uri, 2, 6, 14, 14, &text);
    change(&mut client, &uri, 3, 6, 14, 20, "o_undefined");
    eventually("pyright's pulled diagnostic", || {
        let report = client.request("textDocument/diagnostic", json!({"textDocument": {"uri": uri}}));
        report["result"]["items"].to_string().contains("fibo_undefined").then_some(())
    });
    let db = home.join("marunochi.db");
    assert!(settled(&db, &id).is_none(), "still inside its correction window");
    client.request("textDocument/hover", position(&uri, 0, 2));
    let row = eventually("the row settled by the cursor leaving", || settled(&db, &id));
    assert_eq!(row.action, Action::Corrected, "{row:?}");
    let diagnostics: Value = serde_json::from_str(row.diagnostics.as_deref().expect("diagnostics recorded")).unwrap();
    assert!(diagnostics[0]["message"].as_str().unwrap().contains("fibo_undefined"), "{diagnostics}");
    // Where the final code sat when it settled: from `return fib|` to the end of the corrected text.
    let region: Value = serde_json::from_str(row.anchor.as_deref().expect("the region")).unwrap();
    let start = SOURCE.find("    return fib\n").unwrap() + "    return fib".len();
    let final_code = row.final_code.as_deref().unwrap();
    assert_eq!(
        (region["start"].as_u64(), region["end"].as_u64()),
        (Some(start as u64), Some((start + final_code.len()) as u64))
    );
    assert!(row.shown_ms.is_some_and(|ms| ms >= 0) && row.user_id.is_some(), "{row:?}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

/// The user runs real pytest in the workspace themselves; the proxy's watcher reads the cache and
/// the JUnit report it leaves and judges the suggestion accepted there.
#[test]
fn test_runs_the_user_starts_are_read_from_pytest_cache_and_junit_reports() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path()).canonicalize().unwrap();
    std::fs::write(
        root.join("test_fib.py"),
        "from fib import fibonacci\n\ndef test_small():\n    assert fibonacci(1) == 1\n\ndef test_wrong():\n    assert fibonacci(6) == 7\n",
    )
    .unwrap();
    let mut client = proxy(&home);
    client.initialize(&root, &[]);
    let uri = file_uri(&root.join("fib.py"));
    let (id, text) = suggest(&mut client, &uri);
    change(&mut client, &uri, 2, 6, 14, 14, &text);
    client.request("textDocument/hover", position(&uri, 0, 2));
    let db = home.join("marunochi.db");
    eventually("the accepted row", || settled(&db, &id));
    std::fs::write(
        root.join("fib.py"),
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    )
    .unwrap();

    let pytest = Command::new(repo_root().join(".test-deps/venv/bin/pytest"))
        .args(["-q", "-p", "no:randomly", "--junitxml=reports/junit.xml"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(pytest.status.code(), Some(1), "{}", String::from_utf8_lossy(&pytest.stdout));
    let row = eventually("the row judged by the test run", || {
        let (_, export, _) = data(&home, &["export"]);
        let rows: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        rows.into_iter().find(|r| r["id"] == id.as_str() && r["executed"] == 1)
    });
    assert_eq!(row["execution_success"], 0, "{row}");
    let results: Value = serde_json::from_str(row["test_results"].as_str().expect("test results")).unwrap();
    assert_eq!((results["tests"].as_u64(), results["failures"].as_u64()), (Some(2), Some(1)), "{results}");
    assert!(results["failed"].to_string().contains("test_wrong"), "{results}");
    assert!(row["error_message"].as_str().unwrap().contains("test_wrong"), "{row}");
    // Both files pytest left are recorded as runs; only the first one judged the suggestion.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let runs: Vec<(String, i64)> = conn
        .prepare("SELECT command, interactions FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().any(|(c, _)| c == "JUnit report reports/junit.xml"), "{runs:?}");
    assert_eq!(runs.iter().map(|(_, n)| n).sum::<i64>(), 1, "{runs:?}");
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}

#[test]
fn run_records_test_results_for_suggestions_accepted_since_the_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut store = Store::open(&home.join("marunochi.db")).unwrap();
    let uri = |path: &Path| format!("file://{}", path.display());
    store.batch(|b| b.shown(&shown_row("mine", &uri(&project.join("a.py")), 1_780_000_000_000))).unwrap();
    store.batch(|b| b.accepted("mine", 1_780_000_001_000)).unwrap();
    store.batch(|b| b.shown(&shown_row("elsewhere", &uri(&dir.path().join("other/b.py")), 1_780_000_000_000))).unwrap();
    store.batch(|b| b.accepted("elsewhere", 1_780_000_001_000)).unwrap();
    store.batch(|b| b.shown(&shown_row("only-shown", &uri(&project.join("c.py")), 1_780_000_000_000))).unwrap();
    drop(store);

    let marunochi = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_marunochi"))
            .env("MARUNOCHI_HOME", &home)
            .current_dir(&project)
            .args(args)
            .output()
            .unwrap()
    };
    let out =
        marunochi(&["run", "--", "sh", "-c", "echo collected 3 items; echo 'FAILED test_a.py::test_fib' >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "the command's exit code passes through");
    assert!(String::from_utf8_lossy(&out.stdout).contains("collected 3 items"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAILED test_a.py") && stderr.contains("for 1 accepted suggestion"), "{stderr}");

    let (_, export, _) = data(&home, &["export"]);
    let rows: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!((row("mine")["executed"].clone(), row("mine")["execution_success"].clone()), (json!(1), json!(0)));
    assert!(row("mine")["error_message"].as_str().unwrap().contains("FAILED test_a.py::test_fib"));
    assert_eq!(row("elsewhere")["executed"], Value::Null, "a file outside the run's directory is not judged by it");
    assert_eq!(row("only-shown")["executed"], Value::Null, "a suggestion never accepted is not judged");

    let again = marunochi(&["run", "--", "true"]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("for 0 accepted suggestion"),
        "only what is new since the last run"
    );
    let missing = marunochi(&["run", "--", "no-such-command-anywhere"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot run `no-such-command-anywhere`"));
}

/// `data forget --file` leaves the forgotten code in no file under MARUNOCHI_HOME: the store
/// (rows, WAL), the curated datasets made from it, checkpoints. Documents are matched by the path
/// their URI names (an editor's `%20`), with the file system's case (`Proj` is not `proj`).
#[test]
fn forget_leaves_the_text_nowhere_under_the_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let (forgotten, kept) = (dir.path().join("My Proj"), dir.path().join("my proj"));
    std::fs::create_dir_all(&forgotten).unwrap();
    std::fs::create_dir_all(&kept).unwrap();
    let mut store = Store::open(&home.join("marunochi.db")).unwrap();
    for n in 0..4 {
        graded(&mut store, n, &forgotten, &format!("return forget_me_{n}_4242"), false);
        graded(&mut store, n + 10, &kept, &format!("return keep_me_{n}_4242"), false);
    }
    // Editors send percent-encoded URIs.
    let conn = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
    conn.execute("UPDATE interactions SET file_path = replace(file_path, ' ', '%20')", []).unwrap();
    // The kept project's rows saw edits of both projects (one workspace above both; names relative
    // to it).
    let edits = json!([{"path": "My%20Proj/a.py", "before": "", "after": "return forget_me_edit_4242"},
                       {"path": "my%20proj/b.py", "before": "", "after": "return keep_me_edit_4242"}]);
    let context = json!(["My%20Proj/a.py", "my%20proj/b.py"]);
    let set = "UPDATE interactions SET recent_edits = ?1, context_files = ?2 WHERE file_path GLOB '*my%20proj*'";
    assert_eq!(conn.execute(set, [edits.to_string(), context.to_string()]).unwrap(), 4);
    drop((conn, store));
    let (ok, _, err) = run_cli(&home, &["curate", "--min-quality", "0"]);
    assert!(ok, "{err}");
    let checkpoint = home.join("train/python/checkpoint");
    std::fs::create_dir_all(&checkpoint).unwrap();
    std::fs::write(checkpoint.join("state.json"), "{}").unwrap();
    let holding = |marker: &str| files_holding(&home, marker);
    assert!(holding("forget_me_0_4242").iter().any(|p| p.to_string_lossy().contains("datasets")), "curated first");

    let (ok, _, err) = run_cli(&home, &["data", "forget", "--file", &forgotten.to_string_lossy()]);
    assert!(ok && err.contains("forgot 4 interaction(s)"), "{err}");
    for marker in (0..4).map(|n| format!("forget_me_{n}_4242")).chain(["forget_me_edit_4242".into()]) {
        assert_eq!(holding(&marker), Vec::<std::path::PathBuf>::new(), "{marker} is still on disk");
    }
    assert!(!checkpoint.exists() && !home.join("datasets").exists(), "copies made from the store are gone");
    let store = Store::open(&home.join("marunochi.db")).unwrap();
    assert_eq!(store.count().unwrap(), 4, "the other project (another case) is kept");
    let conn = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
    let (edits, context): (String, String) = conn
        .query_row("SELECT recent_edits, context_files FROM interactions LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert!(edits.contains("keep_me_edit_4242") && !edits.contains("My%20Proj"), "{edits}");
    assert_eq!(context, json!(["my%20proj/b.py"]).to_string());
}

/// Every stored interaction and how far its fate is settled (`shown` < the rest).
fn stored_actions(db: &Path) -> std::collections::HashMap<String, String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut rows = conn.prepare("SELECT id, action FROM interactions").unwrap();
    rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn killing_the_proxy_mid_session_50_times_loses_no_committed_interaction() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 120\n[serving]\nmax_tokens = 4\n");
    let db = home.join("marunochi.db");
    let root = workspace(dir.path());
    let model = fixture("smollm2-135m-instruct.gguf");
    // A fixed seed: the kill points are random but the same in every run.
    let mut seed = 0x5eed_u64;
    let mut random = |below: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    let mut kills_with_rows = 0;
    for round in 0..50 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_marunochi"));
        command.env("MARUNOCHI_HOME", &home).args(["lsp", "--model", &model.to_string_lossy()]);
        let mut editor = Client::spawn(command);
        editor.initialize(&root, &[]);
        // Suggestions taken, rejected by typing on, and left alone, until the kill point.
        let steps = 1 + random(4);
        for step in 0..steps {
            let uri = file_uri(&root.join(format!("f{round}-{step}.py")));
            open(&mut editor, &uri, SOURCE);
            let answer = inline(&mut editor, &uri, 6, 14);
            let item = &answer["result"]["items"][0];
            // The same place again after a rejection may rightly get nothing.
            let (Some(id), Some(text)) = (item["command"]["arguments"][0].as_str(), item["insertText"].as_str()) else {
                continue;
            };
            let (id, text) = (id.to_owned(), text.to_owned());
            match step % 3 {
                0 => drop(
                    editor
                        .request("workspace/executeCommand", json!({"command": "marunochi.accept", "arguments": [id]})),
                ),
                1 => change(&mut editor, &uri, 2, 6, 14, 14, &format!("{}_other", text.len())),
                _ => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(random(200)));
        let before = if db.exists() { stored_actions(&db) } else { Default::default() };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(editor.pid() as i32, libc::SIGKILL) };
        editor.wait();
        let after = stored_actions(&db);
        let store = Store::open(&db).unwrap();
        assert_eq!(store.integrity().unwrap(), "ok", "round {round}");
        for (id, action) in &before {
            let now = after.get(id).unwrap_or_else(|| panic!("round {round}: {id} was committed and is gone"));
            assert!(now == action || action == "shown", "round {round}: {id} went from {action} to {now}");
        }
        kills_with_rows += usize::from(!before.is_empty());
    }
    let stored = stored_actions(&db);
    let settled = stored.values().filter(|a| *a != "shown").count();
    println!("50 kills: {} interactions stored ({settled} settled), integrity ok after every kill", stored.len());
    assert!(kills_with_rows >= 45 && settled > 0, "the kills came while interactions were being recorded");
    stop_daemon(&home);
}
