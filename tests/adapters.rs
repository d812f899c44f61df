//! The adapter registry on real adapters (trained here on the tiny Qwen2) and a real store:
//! promote (gate required, base model checked), serving follows the `active` link, rollback,
//! remove, history, and a change interrupted between link and store reconciled.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

/// A home serving the tiny Qwen2 with two trained python versions, v1 and v2.
fn two_versions(dir: &Path) -> PathBuf {
    let model = fixture("tiny-qwen2-trainable");
    let home = home_with_config(dir, &format!("[engine]\nmodel = \"{}\"\n", model.display()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let example = json!({"id": "e0", "timestamp": "2026-11-01T00:00:00Z", "prefix": "def f(x):\n    ", "suffix": "\n",
        "completion": "return x * 7", "action": "accepted", "weight": 1.0, "priority": 1.0, "dedup": 1.0,
        "cluster": 0, "cluster_size": 1, "complexity": 1, "tier": 0, "replay": false});
    std::fs::write(data.join("train.jsonl"), format!("{example}\n")).unwrap();
    for _ in 0..2 {
        let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
        let (ok, _, stderr) =
            run_cli(&home, &["train", "--language", "python", "--model", model, "--data", data, "--steps", "2"]);
        assert!(ok, "{stderr}");
    }
    home
}

fn list(home: &Path) -> Vec<(String, String)> {
    let (ok, stdout, stderr) = run_cli(home, &["adapters", "list", "--json"]);
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    entries
        .iter()
        .map(|e| (e["version"].as_str().unwrap().to_owned(), e["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn states(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(v, s)| (v.to_string(), s.to_string())).collect()
}

fn judged(home: &Path, version: &str, passed: bool) {
    // What `marunochi eval` leaves (tests/eval.rs runs the real gate).
    let report =
        json!({"passed": passed, "heldout": {"verdict": if passed { "better on 6 of 6" } else { "not significant" }}});
    std::fs::write(home.join("adapters/python").join(version).join("eval.json"), report.to_string()).unwrap();
}

#[test]
fn promote_rollback_and_remove_keep_link_store_and_serving_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let home = two_versions(dir.path());
    assert_eq!(list(&home), states(&[("v1", "candidate"), ("v2", "candidate")]));

    let (ok, _, stderr) = run_cli(&home, &["adapters", "promote", "--language", "python"]);
    assert!(!ok);
    assert!(stderr.contains("no candidate has passed the gate"), "{stderr}");
    judged(&home, "v1", true);
    judged(&home, "v2", false);
    let (ok, stdout, stderr) = run_cli(&home, &["adapters", "promote", "--language", "python"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("v1 is active"), "{stdout}");
    assert_eq!(std::fs::read_link(home.join("adapters/python/active")).unwrap(), Path::new("v1"));
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "candidate")]));

    // Serving reads the link: `complete --language` now applies v1.
    let file = dir.path().join("m.py");
    std::fs::write(&file, "def f(x):\n    ").unwrap();
    let location = format!("{}:1:4", file.display());
    let complete = |home: &Path| {
        let (ok, stdout, stderr) =
            run_cli(home, &["complete", &location, "--language", "python", "--json", "--max-tokens", "4"]);
        assert!(ok, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()["adapter"].clone()
    };
    assert_eq!(complete(&home), "v1");

    let (ok, _, stderr) = run_cli(&home, &["adapters", "promote", "--language", "python", "v2"]);
    assert!(!ok);
    assert!(stderr.contains("v2 failed the gate"), "{stderr}");
    let other_base = fixture("tiny-qwen2");
    let args =
        ["adapters", "promote", "--language", "python", "v2", "--force", "--model", other_base.to_str().unwrap()];
    let (ok, _, stderr) = run_cli(&home, &args);
    assert!(!ok);
    assert!(stderr.contains("v2 was trained on another base model"), "{stderr}");
    let (ok, _, stderr) = run_cli(&home, &["adapters", "promote", "--language", "python", "v2", "--force"]);
    assert!(ok, "{stderr}");
    assert_eq!(list(&home), states(&[("v1", "retired"), ("v2", "active")]));
    assert_eq!(complete(&home), "v2");

    let (ok, stdout, _) = run_cli(&home, &["adapters", "rollback", "--language", "python"]);
    assert!(ok && stdout.contains("back to v1"), "{stdout}");
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "rolled_back")]));
    assert_eq!(complete(&home), "v1");

    let (ok, _, stderr) = run_cli(&home, &["adapters", "remove", "--language", "python", "v1"]);
    assert!(!ok && stderr.contains("v1 is active"), "{stderr}");
    let (ok, _, stderr) = run_cli(&home, &["adapters", "remove", "--language", "python", "v2"]);
    assert!(ok, "{stderr}");
    assert!(!home.join("adapters/python/v2").exists());
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "removed")]));

    let (ok, stdout, _) = run_cli(&home, &["adapters", "rollback", "--language", "python"]);
    assert!(ok && stdout.contains("back to the base model"), "{stdout}");
    assert!(std::fs::symlink_metadata(home.join("adapters/python/active")).is_err());
    assert_eq!(complete(&home), Value::Null);

    let (_, history, _) = run_cli(&home, &["adapters", "history", "--language", "python"]);
    for line in [
        "v1    candidate -> active: promoted",
        "v2    candidate -> active: promoted (forced)",
        "v2    active -> rolled_back: rolled back by the user",
        "v2    rolled_back -> removed",
    ] {
        assert!(history.contains(line), "{line:?} in\n{history}");
    }
}

#[test]
fn a_promotion_interrupted_between_link_and_store_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    let home = two_versions(dir.path());
    let (ok, _, stderr) = run_cli(&home, &["adapters", "promote", "--language", "python", "v1", "--force"]);
    assert!(ok, "{stderr}");
    // A crash after the link was switched to v2 and before the store heard of it: the link is
    // what serving used, so the registry completes the change.
    let link = home.join("adapters/python/active");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("v2", &link).unwrap();
    assert_eq!(list(&home), states(&[("v1", "retired"), ("v2", "active")]));
    let (_, history, _) = run_cli(&home, &["adapters", "history", "--language", "python"]);
    assert!(history.contains("an interrupted change completed"), "{history}");
}
