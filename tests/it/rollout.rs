//! The rollout through the real daemon with two real adapters (trained here on the tiny Qwen2):
//! completions requested through `marunochi lsp` (so the store's rows are what serving really
//! writes), the daemon generating shadow samples when idle and serving a canary share, the user's
//! decisions written into the real store, and the daemon's own rollout checks moving versions on
//! or rolling them back.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const ROLLOUT: &str = "[serving]\ndebounce_ms = 0\ncontext_files = 0\n\n[rollout]\nshadow_share = 1.0\nshadow_min_samples = 4\n\
                       canary_share = 0.5\ncanary_min_suggestions = 10\ncheck_every_secs = 1\nautomatic = false\n";

/// Turns the daemon's own rollout checks on or off (it reads the config at every check). Off
/// while a session runs and its outcomes are written: a suggestion the proxy settles as ignored
/// at exit is what the test then decides for the user.
fn automatic(home: &Path, on: bool) {
    let path = home.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config.replace(&format!("automatic = {}", !on), &format!("automatic = {on}"));
    std::fs::write(&path, config).unwrap();
}

fn lsp(home: &Path) -> Client {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marunochi"));
    cmd.env("MARUNOCHI_HOME", home).arg("lsp");
    Client::spawn(cmd)
}

fn db(home: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(home.join("marunochi.db")).unwrap()
}

/// One editor session asking for `count` completions, each in its own document; returns after
/// the proxy has gone (so every suggestion is settled in the store).
fn session(home: &Path, root: &Path, count: usize, tag: &str) {
    let mut client = lsp(home);
    client.initialize(root, &[]);
    for i in 0..count {
        let uri = file_uri(&root.join(format!("{tag}{i}.py")));
        // Where the adapters learnt their lines: v1 writes `return x * 7` here, v2 `return x * 9`.
        open(&mut client, &uri, "def f(x):\n    \n");
        inline(&mut client, &uri, 1, 4);
    }
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
}

fn states(home: &Path) -> Vec<(String, String)> {
    let (ok, stdout, stderr) = run_cli(home, &["adapters", "list", "--json"]);
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    entries.iter().map(|e| (e["version"].as_str().unwrap().into(), e["state"].as_str().unwrap().into())).collect()
}

fn wait_for_states(home: &Path, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected.iter().map(|(v, s)| (v.to_string(), s.to_string())).collect();
    eventually(&format!("the daemon's rollout check to reach {expected:?}"), || {
        (states(home) == expected).then_some(())
    });
}

fn link(home: &Path, stage: &str) -> Option<String> {
    std::fs::read_link(home.join("adapters/python").join(stage)).ok().map(|t| t.to_string_lossy().into_owned())
}

/// Decided suggestions since the last session, by the adapter that served them.
fn served_by(home: &Path, version: &str) -> Vec<String> {
    let conn = db(home);
    let mut statement = conn.prepare("SELECT id FROM interactions WHERE model_version LIKE ?1 ORDER BY id").unwrap();
    let ids = statement.query_map([format!("%+python/{version}")], |row| row.get(0)).unwrap();
    ids.collect::<Result<_, _>>().unwrap()
}

fn decide(home: &Path, ids: &[String], action: &str) {
    let conn = db(home);
    for id in ids {
        conn.execute(
            "UPDATE interactions SET action = ?2, final_code = suggestion, alternatives = NULL WHERE id = ?1",
            rusqlite::params![id, action],
        )
        .unwrap();
    }
}

fn history(home: &Path) -> String {
    run_cli(home, &["adapters", "history", "--language", "python"]).1
}

/// A home with v1 active and v2 through the gate, and a workspace.
fn v1_serving_v2_passed(dir: &Path) -> (PathBuf, PathBuf) {
    let home = two_trained_versions(dir, ROLLOUT, 20);
    gate_verdict(&home, "v1", true);
    gate_verdict(&home, "v2", true);
    assert!(run_cli(&home, &["adapters", "promote", "--language", "python", "v1"]).0);
    (home, workspace(dir))
}

#[test]
fn a_shadow_that_matches_the_kept_code_becomes_canary_and_a_canary_that_is_rejected_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (home, root) = v1_serving_v2_passed(dir.path());
    let (ok, stdout, stderr) = run_cli(&home, &["adapters", "rollout", "--language", "python", "v2"]);
    assert!(ok && stdout.contains("v2 is the shadow"), "{stdout}{stderr}");
    assert_eq!(link(&home, "shadow").as_deref(), Some("v2"));

    // Shadow: every answer comes from v1; v2 generates the same requests afterwards, unseen.
    session(&home, &root, 6, "a");
    let samples = eventually("shadow samples from the idle daemon", || {
        let count: i64 = db(&home).query_row("SELECT count(*) FROM shadow_samples", [], |r| r.get(0)).unwrap();
        (count >= 4).then_some(count)
    });
    assert!(served_by(&home, "v2").is_empty(), "a shadow is never shown");
    let served: i64 = db(&home)
        .query_row("SELECT count(*) FROM shadow_samples WHERE served_model_version LIKE '%+python/v1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(served, samples);
    // The user typed exactly what the shadow would have written instead of each suggestion.
    db(&home)
        .execute(
            "UPDATE interactions SET action = 'rejected', alternatives = json_object('typed_instead',
                (SELECT s.shadow_text || ' ' FROM shadow_samples s WHERE s.document = interactions.file_path))
             WHERE file_path IN (SELECT document FROM shadow_samples WHERE shadow_text != '')",
            [],
        )
        .unwrap();
    automatic(&home, true);
    wait_for_states(&home, &[("v1", "active"), ("v2", "canary")]);
    automatic(&home, false);
    assert_eq!((link(&home, "shadow"), link(&home, "canary")), (None, Some("v2".into())));
    let (served, shadow): (String, String) = db(&home)
        .query_row("SELECT served_text, shadow_text FROM shadow_samples LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((served.trim(), shadow.trim()), ("return x * 7", "return x * 9"));
    let closer: i64 = db(&home)
        .query_row("SELECT count(*) FROM shadow_samples WHERE shadow_similarity > served_similarity", [], |r| r.get(0))
        .unwrap();
    assert!(closer >= 4, "{closer} shadow samples judged closer to the kept code");
    assert!(history(&home).contains("shadow -> canary: shadow similarity to the kept code"), "{}", history(&home));

    // Canary: about half the requests are v2's, tagged so. Its suggestions are all rejected, v1's
    // all taken: the acceptance trigger rolls it back.
    session(&home, &root, 40, "b");
    let (canary, active) = (served_by(&home, "v2"), served_by(&home, "v1"));
    assert!(canary.len() >= 10 && active.len() >= 10, "{} by v2, {} by v1", canary.len(), active.len());
    decide(&home, &canary, "rejected");
    decide(&home, &active, "accepted");
    automatic(&home, true);
    wait_for_states(&home, &[("v1", "active"), ("v2", "rolled_back")]);
    assert_eq!((link(&home, "canary"), link(&home, "active")), (None, Some("v1".into())));
    let history = history(&home);
    assert!(history.contains("canary -> rolled_back: automatic rollback: acceptance 0% vs 100%"), "{history}");
    let (_, stats, _) = run_cli(&home, &["stats"]);
    assert!(stats.contains("rollback_acceptance (0%, was 100%)"), "{stats}");
    stop_daemon(&home);
}

#[test]
fn a_canary_as_good_as_the_active_takes_over_and_is_rolled_back_when_its_acceptance_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (home, root) = v1_serving_v2_passed(dir.path());
    assert!(run_cli(&home, &["adapters", "rollout", "--language", "python", "v2", "--skip-shadow"]).0);

    // Both taken alike and their code kept (retention checks found all of it).
    session(&home, &root, 40, "c");
    let (canary, active) = (served_by(&home, "v2"), served_by(&home, "v1"));
    decide(&home, &canary, "accepted");
    decide(&home, &active, "accepted");
    let conn = db(&home);
    for id in canary.iter().chain(&active) {
        conn.execute(
            "INSERT INTO retention_checks (interaction_id, label, due_ms, checked_ms, survival) VALUES (?1, '10m', 1, 1, 1.0)",
            [id],
        )
        .unwrap();
    }
    // This step by hand (`adapters check` runs what the daemon runs).
    let (ok, stdout, stderr) = run_cli(&home, &["adapters", "check"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("python v2: canary -> active (not worse on"), "{stdout}");
    assert_eq!(states(&home), [("v1".to_owned(), "retired".to_owned()), ("v2".into(), "active".into())]);
    assert_eq!((link(&home, "canary"), link(&home, "active")), (None, Some("v2".into())));
    assert!(history(&home).contains("canary -> active: not worse on"), "{}", history(&home));

    // Active: v2 now serves everything, and the user stops taking its suggestions.
    session(&home, &root, 16, "d");
    let after: Vec<String> = served_by(&home, "v2").into_iter().filter(|id| !canary.contains(id)).collect();
    assert!(after.len() >= 10, "{} suggestions", after.len());
    assert!(served_by(&home, "v1").len() == active.len(), "every request is v2's once it is active");
    decide(&home, &after, "rejected");
    automatic(&home, true);
    wait_for_states(&home, &[("v1", "active"), ("v2", "rolled_back")]);
    assert_eq!(link(&home, "active").as_deref(), Some("v1"));
    let history = history(&home);
    assert!(history.contains("active -> rolled_back: automatic rollback: acceptance 0% vs 100%"), "{history}");
    assert!(history.contains("retired -> active: restored: v2 rolled back"), "{history}");
    let rollbacks: i64 = db(&home)
        .query_row("SELECT count(*) FROM drift_events WHERE kind = 'rollback_acceptance'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rollbacks, 1);
    stop_daemon(&home);
}
