//! Retention with real files and the real `marunochi retention sweep`: accepted code kept, moved
//! to another function or file, renamed, reformatted, partly deleted, its file deleted or renamed;
//! the clock moved with `--now` across 7 d and 30 d, everything caught up after "downtime"; files
//! that cannot be judged (binary, huge) are logged and left unjudged; the quality score follows.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

use marunochi::quality::StaticAnalysis;
use marunochi::store::{Action, Decided, RetentionCheck, Store};
use serde_json::Value;

/// 2026-01-01T00:00:00Z: the suggestions are shown then and accepted a second later.
const SHOWN_AT_MS: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;

const APP: &str = "\
import math


def area(radius):
    scaled = math.pi * radius * radius
    return round(scaled, 2)


def perimeter(radius):
    return 2 * math.pi * radius
";
/// The accepted code in `APP`.
const ACCEPTED: &str = "scaled = math.pi * radius * radius\n    return round(scaled, 2)";

/// Records a suggestion accepted as `code` inside `file` (which holds `text`), anchored as the
/// capture stage would.
fn track(store: &mut Store, id: &str, root: &Path, file: &Path, text: &str, code: &str) {
    std::fs::write(file, text).unwrap();
    let start = text.find(code).unwrap();
    let (anchor, analysis) = marunochi::retention::anchor(file, Some(root), "python", text, start..start + code.len());
    let analysis = serde_json::to_string(&StaticAnalysis { syntax: analysis, lint: None }).ok();
    let outcome =
        Decided { anchor: Some(&anchor), analysis, ..taken(id, Action::Accepted, code, start..start + code.len()) };
    store.batch(|b| b.shown(&shown_row(id, &file_uri(file), SHOWN_AT_MS))).unwrap();
    store.batch(|b| b.outcome(&outcome)).unwrap();
}

fn sweep(home: &Path, now_ms: i64) -> String {
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(now_ms as i128 * 1_000_000).unwrap();
    let now = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .args(["retention", "sweep", "--now", &now])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn checks(db: &Path, id: &str) -> Vec<RetentionCheck> {
    Store::open(db).unwrap().retention(id).unwrap()
}

fn survival_at(db: &Path, id: &str, label: &str) -> Option<f64> {
    checks(db, id).into_iter().find(|c| c.label == label).and_then(|c| c.survival)
}

fn row(home: &Path, id: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .args(["data", "export"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|r| r["id"] == id).unwrap()
}

fn approx(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: not judged"));
    assert!((actual - expected).abs() < 1e-9, "{what}: survival {actual}, expected {expected}");
}

struct Workspace {
    _dir: tempfile::TempDir,
    home: PathBuf,
    root: PathBuf,
    db: PathBuf,
}

fn workspace_with_home() -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let root = workspace(dir.path()).canonicalize().unwrap();
    let db = home.join("marunochi.db");
    Workspace { _dir: dir, home, root, db }
}

#[test]
fn survival_after_moves_renames_reformatting_and_deletions() {
    let ws = workspace_with_home();
    let mut store = Store::open(&ws.db).unwrap();
    // One project per case, so that no case finds another's copy of the code.
    let project = |name: &str| ws.root.join(name);
    let file = |name: &str| project(name).join(format!("{name}.py"));
    for name in ["kept", "moved", "renamed", "reformatted", "halved", "deleted", "file-renamed", "other-file"] {
        std::fs::create_dir_all(project(name)).unwrap();
        track(&mut store, name, &project(name), &file(name), APP, ACCEPTED);
    }
    drop(store);

    // The code moved into another function of the same file, with lines added above it.
    let moved = "import math\nimport sys\n\n\ndef perimeter(radius):\n    return 2 * math.pi * radius\n\n\ndef disk(radius):\n    scaled = math.pi * radius * radius\n    return round(scaled, 2)\n";
    std::fs::write(file("moved"), moved).unwrap();
    // `scaled` renamed to `value` (2 of its 16 tokens).
    std::fs::write(file("renamed"), APP.replace("scaled", "value")).unwrap();
    // A formatter's rewrite: other line breaks, other quotes, same tokens.
    let reformatted = APP.replace("round(scaled, 2)", "round(\n        scaled,\n        2,\n    )");
    std::fs::write(file("reformatted"), reformatted).unwrap();
    // The second of its two lines deleted.
    std::fs::write(file("halved"), APP.replace("    return round(scaled, 2)\n", "")).unwrap();
    std::fs::remove_file(file("deleted")).unwrap();
    let geometry = project("file-renamed").join("geometry.py");
    std::fs::rename(file("file-renamed"), &geometry).unwrap();
    // Moved to another file of its project; the anchored one keeps only the rest.
    std::fs::write(file("other-file"), "def perimeter(radius):\n    return 2 * radius\n").unwrap();
    let circle = project("other-file").join("shapes/circle.py");
    std::fs::create_dir_all(circle.parent().unwrap()).unwrap();
    std::fs::write(&circle, format!("import math\n\ndef area(radius):\n    {ACCEPTED}\n")).unwrap();

    let said = sweep(&ws.home, SHOWN_AT_MS + 8 * DAY_MS);
    assert!(said.contains("40 retention check(s) done"), "5 due checks × 8: {said}");
    approx(survival_at(&ws.db, "kept", "7d"), 1.0, "kept");
    approx(survival_at(&ws.db, "moved", "7d"), 1.0, "moved to another function");
    // A changed token is one out and one in; the first `scaled` only goes out (the stretch starts
    // after it).
    approx(survival_at(&ws.db, "renamed", "7d"), 1.0 - 3.0 / 16.0, "renamed");
    approx(survival_at(&ws.db, "reformatted", "7d"), 1.0 - 1.0 / 16.0, "reformatted (one trailing comma added)");
    // The first line (9 tokens) is there, the 7 of the second are gone.
    approx(survival_at(&ws.db, "halved", "7d"), 9.0 / 16.0, "second line deleted");
    approx(survival_at(&ws.db, "deleted", "7d"), 0.0, "file deleted");
    approx(survival_at(&ws.db, "file-renamed", "7d"), 1.0, "file renamed");
    let found_in = |id: &str| checks(&ws.db, id).into_iter().find(|c| c.label == "7d").unwrap().found_in;
    assert_eq!(found_in("file-renamed").as_deref(), Some(geometry.to_str().unwrap()));
    approx(survival_at(&ws.db, "other-file", "7d"), 1.0, "moved to another file");
    assert_eq!(found_in("other-file").as_deref(), Some(circle.to_str().unwrap()));
    assert_eq!(survival_at(&ws.db, "kept", "30d"), None, "not due yet");

    // The seed's booleans at the default threshold (0.67), and the quality score's retention.
    assert_eq!(row(&ws.home, "renamed")["retention_7d"], 1);
    assert_eq!(row(&ws.home, "halved")["retention_7d"], 0);
    let dimensions: Value =
        serde_json::from_str(row(&ws.home, "kept")["quality_dimensions"].as_str().unwrap()).unwrap();
    assert_eq!(
        (dimensions["retention"].as_f64(), dimensions["total"].as_f64()),
        (Some(7.0), Some(47.0)),
        "{dimensions}"
    );

    // A month later the kept code is still there; the halved one lost the rest.
    std::fs::write(file("halved"), "import math\n").unwrap();
    sweep(&ws.home, SHOWN_AT_MS + 31 * DAY_MS);
    approx(survival_at(&ws.db, "kept", "30d"), 1.0, "kept at 30 d");
    approx(survival_at(&ws.db, "halved", "30d"), 1.0 / 16.0, "halved at 30 d: only `math` is left");
    assert_eq!(row(&ws.home, "kept")["retention_30d"], 1);
    assert_eq!(row(&ws.home, "kept")["quality_score"], 55.0, "the design's 55: accepted, kept, clean, never run");

    // What `stats` shows of it: the week, the retention curve, the bands, the new language.
    let html = ws.home.join("report.html");
    // A report written over a file anyone could read is private afterwards (it holds your code).
    std::fs::write(&html, "old").unwrap();
    std::fs::set_permissions(&html, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", &ws.home)
        .args(["stats", "--html"])
        .arg(&html)
        .output()
        .unwrap();
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(view.contains("python  acceptance by week █"), "{view}");
    let week: Vec<&str> =
        view.lines().find(|l| l.trim_start().starts_with("2026-W01")).unwrap().split_whitespace().collect();
    assert_eq!(week[..3], ["2026-W01", "8", "100%"], "{view}");
    assert!(view.contains(" 30d ") && view.contains("2026-W01 python       new_language (8 suggestions)"), "{view}");
    let none: Vec<&str> =
        view.lines().find(|l| l.trim_start().starts_with("none ")).unwrap().split_whitespace().collect();
    assert_eq!(none, ["none", "8", "100%", "75%"], "no context source: 8 shown, all taken, 6 of 8 kept at 7 d: {view}");
    assert!(
        view.contains("own examples: none reach quality 90 yet; the best of 8 taken stand in (up to 55)"),
        "{view}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&html).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the report is private");
    let report = std::fs::read_to_string(&html).unwrap();
    assert!(report.starts_with("<!doctype html>") && report.contains("<svg") && report.contains("new_language"));
    // The page as a browser shows it: its plots are there once loaded, nothing on the console.
    let dom = render_in_chromium(&html, "stats");
    assert_eq!(dom.matches("<svg").count(), report.matches("<svg").count(), "{dom}");
    assert!(dom.contains("<polyline") || dom.contains("<rect"), "the plots draw something: {dom}");
    assert!(dom.contains("new_language"), "{dom}");
    assert!(
        !report.contains("http://")
            || report.matches("http://").count() == report.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "nothing fetched"
    );
}

#[test]
fn checks_missed_during_downtime_are_all_caught_up_in_one_sweep() {
    let ws = workspace_with_home();
    let mut store = Store::open(&ws.db).unwrap();
    track(&mut store, "a", &ws.root, &ws.root.join("a.py"), APP, ACCEPTED);
    drop(store);
    let said = sweep(&ws.home, SHOWN_AT_MS + 40 * DAY_MS);
    assert!(said.contains("6 retention check(s) done"), "{said}");
    let labels: Vec<(String, Option<f64>)> = checks(&ws.db, "a").into_iter().map(|c| (c.label, c.survival)).collect();
    let want: Vec<(String, Option<f64>)> =
        ["30s", "2m", "5m", "10m", "7d", "30d"].iter().map(|l| (l.to_string(), Some(1.0))).collect();
    assert_eq!(labels, want);
    let again = sweep(&ws.home, SHOWN_AT_MS + 41 * DAY_MS);
    assert!(again.contains("0 retention check(s) done"), "nothing is checked twice: {again}");
}

#[test]
fn a_sweep_out_of_time_leaves_the_rest_due_and_moved_code_is_found_among_look_alikes() {
    let ws = workspace_with_home();
    let mut store = Store::open(&ws.db).unwrap();
    track(&mut store, "moved", &ws.root, &ws.root.join("app.py"), APP, ACCEPTED);
    // Another project, so that its copy is not where the moved code is found.
    let other = ws.home.join("other-project");
    std::fs::create_dir_all(&other).unwrap();
    track(&mut store, "kept", &other, &other.join("kept.py"), APP, ACCEPTED);
    // Forty files of look-alike code (the same helpers, other arithmetic), and the moved code in
    // one of them, as the last function of the biggest file.
    for i in 0..40 {
        let look_alike = APP.replace("radius * radius", &format!("radius + {i}"));
        std::fs::write(ws.root.join(format!("look_alike_{i}.py")), look_alike.repeat(20)).unwrap();
    }
    let target = ws.root.join("look_alike_17.py");
    let mut text = std::fs::read_to_string(&target).unwrap();
    text.push_str(&format!("\n\ndef disk(radius):\n    {ACCEPTED}\n"));
    std::fs::write(&target, text).unwrap();
    std::fs::write(ws.root.join("app.py"), "import math\n").unwrap();

    // No time at all: nothing is checked, everything stays due.
    let sweep = |budget| marunochi::retention::Sweep { threshold: 0.67, open_document: &|_| None, budget };
    let now = SHOWN_AT_MS + 8 * DAY_MS;
    let report = sweep(Some(std::time::Duration::ZERO)).run(&mut store, now).unwrap();
    assert_eq!((report.checked, report.deferred), (0, 10), "{report:?}");
    assert_eq!(survival_at(&ws.db, "moved", "7d"), None);
    let report = sweep(None).run(&mut store, now).unwrap();
    assert_eq!((report.checked, report.deferred), (10, 0), "{report:?}");
    approx(survival_at(&ws.db, "kept", "7d"), 1.0, "kept");
    approx(survival_at(&ws.db, "moved", "7d"), 1.0, "moved among look-alikes");
    let found_in = checks(&ws.db, "moved").into_iter().find(|c| c.label == "7d").unwrap().found_in;
    assert_eq!(found_in.as_deref(), Some(target.to_str().unwrap()));
}

#[test]
fn unreadable_files_are_left_unjudged_with_the_reason_logged_and_broken_code_is_still_found() {
    let ws = workspace_with_home();
    let mut store = Store::open(&ws.db).unwrap();
    for name in ["binary", "huge", "broken", "pipe", "unreadable"] {
        track(&mut store, name, &ws.root, &ws.root.join(format!("{name}.py")), APP, ACCEPTED);
    }
    drop(store);
    std::fs::write(ws.root.join("binary.py"), b"\x00\x01\x02PK binary garbage").unwrap();
    let huge = format!("{APP}{}", "# padding\n".repeat(600_000));
    std::fs::write(ws.root.join("huge.py"), huge).unwrap();
    // A named pipe where the file was would block a reader forever.
    std::fs::remove_file(ws.root.join("pipe.py")).unwrap();
    let made = Command::new("mkfifo").arg(ws.root.join("pipe.py")).status().unwrap();
    assert!(made.success());
    // Permission denied: only when not root (root reads anything; said in the README).
    let root_user = unsafe { libc::geteuid() } == 0;
    if !root_user {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ws.root.join("unreadable.py"), std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    // Unparseable Python around the code: tree-sitter recovers, tokens still match.
    std::fs::write(ws.root.join("broken.py"), APP.replace("def perimeter(radius):", "def perimeter(radius:::"))
        .unwrap();

    let said = sweep(&ws.home, SHOWN_AT_MS + 8 * DAY_MS);
    let unjudged = if root_user { 15 } else { 20 };
    assert!(said.contains(&format!("{unjudged} could not be judged")), "{said}");
    assert_eq!(survival_at(&ws.db, "pipe", "7d"), None);
    assert_eq!(survival_at(&ws.db, "binary", "7d"), None);
    assert_eq!(survival_at(&ws.db, "huge", "7d"), None);
    assert_eq!(row(&ws.home, "huge")["retention_7d"], Value::Null, "unknown, not lost");
    approx(survival_at(&ws.db, "broken", "7d"), 1.0, "broken file");
    let log = std::fs::read_to_string(ws.home.join("logs/retention.log")).unwrap();
    assert!(log.contains("a binary file") && log.contains("bytes, more than"), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
    if !root_user {
        assert!(log.contains("Permission denied"), "{log}");
    }
}

/// Through the real proxy: accepted code is anchored (tree-sitter scope included) in the document
/// as the editor has it, and the workspace watcher moves the anchor when the file is renamed on
/// disk, so the checks look there first.
#[test]
fn the_proxy_anchors_accepted_code_and_follows_a_rename_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = workspace(dir.path()).canonicalize().unwrap();
    let file = root.join("fib.py");
    let source = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib\n";
    std::fs::write(&file, source).unwrap();
    let model = fixture("smollm2-135m-instruct.gguf");
    let mut command = proxy_command(&home, &["--model", &model.to_string_lossy()], &pylsp());
    // ruff on PATH: the optional linter is used.
    let venv_bin = repo_root().join(".test-deps/venv/bin");
    command.env("PATH", format!("{}:{}", venv_bin.display(), std::env::var("PATH").unwrap_or_default()));
    let mut client = Client::spawn(command);
    client.initialize(&root, &[]);
    let uri = file_uri(&file);
    open(&mut client, &uri, source);
    let answer = inline(&mut client, &uri, 3, 14);
    let item = &answer["result"]["items"][0];
    let id = item["command"]["arguments"][0].as_str().expect("a suggestion").to_owned();
    let text = item["insertText"].as_str().unwrap().to_owned();
    client.notify(
        "textDocument/didChange",
        serde_json::json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 3, "character": 14}, "end": {"line": 3, "character": 14}},
                                   "text": text}]}),
    );
    client.request("textDocument/hover", position(&uri, 0, 1));
    let db = home.join("marunochi.db");
    let anchored = eventually("the anchored row", || {
        let row = Store::open(&db).ok()?.interaction(&id).ok()??;
        let anchor: Value = serde_json::from_str(row.anchor.as_deref()?).ok()?;
        anchor.get("path").is_some().then_some(anchor)
    });
    assert_eq!(anchored["path"], file.to_str().unwrap());
    assert_eq!(anchored["scopes"][0]["path"][0], "fibonacci", "{anchored}");
    let layout_free = marunochi::retention::fingerprint(&format!("  {}\n", text.replace(' ', "  ")));
    assert_eq!(anchored["fingerprint"], layout_free.as_str(), "the code's tokens, whatever its layout");
    let analysis: Value = serde_json::from_str(row(&home, &id)["static_analysis"].as_str().unwrap()).unwrap();
    assert_eq!(analysis["lint"]["tool"], "ruff", "{analysis}");
    assert!(analysis["complexity"].as_u64().unwrap() >= 2, "fibonacci has an if: {analysis}");

    let renamed = root.join("sequences.py");
    std::fs::write(&file, format!("{}{text}\n", source.trim_end_matches('\n'))).unwrap();
    std::fs::rename(&file, &renamed).unwrap();
    eventually("the anchor following the rename", || {
        let row = Store::open(&db).ok()?.interaction(&id).ok()??;
        let anchor: Value = serde_json::from_str(row.anchor.as_deref()?).ok()?;
        (anchor["path"] == renamed.to_str().unwrap()).then_some(())
    });
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    stop_daemon(&home);
}
