//! The adapter registry on real adapters (trained here on the tiny Qwen2) and a real store:
//! promote (gate required, base model checked), serving follows the `active` link, rollback,
//! remove, history, and a change interrupted between link and store reconciled.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

fn two_versions(dir: &Path) -> PathBuf {
    two_trained_versions(dir, "", 2)
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

#[test]
fn promote_rollback_and_remove_keep_link_store_and_serving_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let home = two_versions(dir.path());
    assert_eq!(list(&home), states(&[("v1", "candidate"), ("v2", "candidate")]));

    let (ok, _, stderr) = run_cli(&home, &["adapters", "promote", "--language", "python"]);
    assert!(!ok);
    assert!(stderr.contains("no candidate has passed the gate"), "{stderr}");
    gate_verdict(&home, "v1", true);
    gate_verdict(&home, "v2", false);
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

#[test]
fn rollout_steps_interrupted_between_links_and_store_are_completed() {
    let dir = tempfile::tempdir().unwrap();
    let home = two_versions(dir.path());
    gate_verdict(&home, "v1", true);
    gate_verdict(&home, "v2", true);
    // A version in shadow promoted by hand skips the rest of its rollout; its shadow link goes.
    assert!(run_cli(&home, &["adapters", "rollout", "--language", "python", "v1"]).0);
    assert_eq!(list(&home), states(&[("v1", "shadow"), ("v2", "candidate")]));
    assert!(run_cli(&home, &["adapters", "promote", "--language", "python", "v1"]).0);
    assert!(std::fs::symlink_metadata(home.join("adapters/python/shadow")).is_err());
    let (ok, _, stderr) = run_cli(&home, &["adapters", "rollout", "--language", "python"]);
    assert!(ok, "{stderr}");
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "shadow")]));
    let python = home.join("adapters/python");
    let point = |stage: &str, version: &str| {
        let _ = std::fs::remove_file(python.join(stage));
        std::os::unix::fs::symlink(version, python.join(stage)).unwrap();
    };
    let linked = |stage: &str| std::fs::read_link(python.join(stage)).ok();

    // Shadow → canary, stopped after the canary link was made: the higher stage wins.
    point("canary", "v2");
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "canary")]));
    assert_eq!(linked("shadow"), None, "the stale shadow link is gone");

    // Canary → active, stopped after the active link was switched.
    point("active", "v2");
    assert_eq!(list(&home), states(&[("v1", "retired"), ("v2", "active")]));
    assert_eq!((linked("canary"), linked("active")), (None, Some(PathBuf::from("v2"))));

    // A rollback to v1, stopped after the active link went back: v2 is rolled back, not retired
    // (so it is nobody's previous version).
    point("active", "v1");
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "rolled_back")]));

    // A canary's rollback, stopped after its link was removed.
    let (ok, stdout, stderr) = run_cli(&home, &["adapters", "rollout", "--language", "python", "v2", "--skip-shadow"]);
    assert!(ok && stdout.contains("v2 is the canary"), "{stdout}{stderr}");
    std::fs::remove_file(python.join("canary")).unwrap();
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "rolled_back")]));
    let (_, history, _) = run_cli(&home, &["adapters", "history", "--language", "python"]);
    for line in [
        "v2    candidate -> shadow: passed the gate: rollout started",
        "v2    shadow -> canary: the canary link names it (an interrupted change completed)",
        "v2    canary -> active: the active link names it (an interrupted change completed)",
        "v1    active -> retired: the active link no longer names it (an interrupted change completed)",
        "v2    active -> rolled_back: the active link no longer names it (an interrupted change completed)",
        "v2    canary -> rolled_back: the canary link no longer names it (an interrupted change completed)",
    ] {
        assert!(history.contains(line), "{line:?} in\n{history}");
    }

    // The user's rollback stops a rollout in progress before touching the active version.
    let (ok, _, _) = run_cli(&home, &["adapters", "rollout", "--language", "python", "v2"]);
    assert!(ok);
    let (ok, stdout, _) = run_cli(&home, &["adapters", "rollback", "--language", "python"]);
    assert!(ok && stdout.contains("the shadow v2 is rolled back"), "{stdout}");
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "rolled_back")]));

    // A newer rollout supersedes one under way: its version waits as a candidate again.
    let copy = std::process::Command::new("cp").arg("-r").arg(python.join("v2")).arg(python.join("v3")).status();
    assert!(copy.unwrap().success());
    assert!(run_cli(&home, &["adapters", "rollout", "--language", "python", "v2"]).0);
    assert!(run_cli(&home, &["adapters", "rollout", "--language", "python", "v3"]).0);
    assert_eq!(list(&home), states(&[("v1", "active"), ("v2", "candidate"), ("v3", "shadow")]));
    assert_eq!(linked("shadow"), Some(PathBuf::from("v3")));
}

#[test]
fn a_list_while_rollouts_start_and_stop_never_completes_a_change_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let home = two_versions(dir.path());
    gate_verdict(&home, "v1", true);
    gate_verdict(&home, "v2", true);
    assert!(run_cli(&home, &["adapters", "promote", "--language", "python", "v1"]).0);
    // The daemon's rollout checks and the user's commands are separate processes: each change
    // switches a link and then writes the store, and another process reconciling in between
    // would take it for a crash and complete it under another reason.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                list(&home);
            }
        });
        for _ in 0..25 {
            assert!(run_cli(&home, &["adapters", "rollout", "--language", "python", "v2", "--skip-shadow"]).0);
            assert!(run_cli(&home, &["adapters", "rollback", "--language", "python"]).0);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let (_, history, _) = run_cli(&home, &["adapters", "history", "--language", "python"]);
    assert!(!history.contains("interrupted"), "{history}");
    assert_eq!(history.matches("canary -> rolled_back: rolled back by the user").count(), 25, "{history}");
}

#[test]
fn an_adapter_trained_elsewhere_is_imported_as_a_candidate_and_a_bad_one_is_refused_with_its_reason() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = two_versions(dir.path());
    let import =
        |source: &Path| run_cli(&home, &["adapters", "import", "--language", "python", source.to_str().unwrap()]);
    // Made outside marunochi (by the fixtures script, in PEFT's layout), naming another base.
    let peft = fixture("tiny-qwen2-lora");
    let (ok, stdout, stderr) = import(&peft);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("python: v3 imported from") && stdout.contains("(lora, rank 4, q_proj, k_proj"),
        "{stdout}"
    );
    assert!(stdout.contains("next: `marunochi eval --language python"), "{stdout}");
    assert_eq!(list(&home), states(&[("v1", "candidate"), ("v2", "candidate"), ("v3", "candidate")]));
    let (_, history, _) = run_cli(&home, &["adapters", "history", "--language", "python"]);
    assert!(history.contains("v3    new -> candidate: imported from"), "{history}");
    let v3 = home.join("adapters/python/v3");
    for name in ["adapter_config.json", "adapter_model.safetensors", "marunochi.json"] {
        assert_eq!(std::fs::metadata(v3.join(name)).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
    }
    let v1: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("adapters/python/v1/marunochi.json")).unwrap())
            .unwrap();
    let imported: Value = serde_json::from_str(&std::fs::read_to_string(v3.join("marunochi.json")).unwrap()).unwrap();
    assert_eq!(imported["base_model"]["fingerprint"], v1["base_model"]["fingerprint"], "the served base's");
    assert_eq!(imported["training"]["peft_base_model"], "tiny-qwen2");
    // It serves like any version.
    assert!(run_cli(&home, &["adapters", "promote", "--language", "python", "v3", "--force"]).0);
    let file = dir.path().join("m.py");
    std::fs::write(&file, "def f(x):\n    ").unwrap();
    let location = format!("{}:1:4", file.display());
    let (ok, stdout, stderr) =
        run_cli(&home, &["complete", &location, "--language", "python", "--json", "--max-tokens", "4"]);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["adapter"], "v3");

    // Refused, each with its reason, and nothing entered.
    let bad = |name: &str, edit: &dyn Fn(&Path)| {
        let copy = dir.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&peft).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        edit(&copy);
        let (ok, _, stderr) = import(&copy);
        assert!(!ok, "{name} was imported");
        stderr
    };
    let set = |key: &'static str, value: Value| {
        move |copy: &Path| {
            let path = copy.join("adapter_config.json");
            let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            config[key] = value.clone();
            std::fs::write(&path, config.to_string()).unwrap();
        }
    };
    type Edit = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "no-config",
            Box::new(|c: &Path| std::fs::remove_file(c.join("adapter_config.json")).unwrap()),
            "not a PEFT adapter directory",
        ),
        (
            "pickle",
            Box::new(|c: &Path| {
                std::fs::rename(c.join("adapter_model.safetensors"), c.join("adapter_model.bin")).unwrap()
            }),
            "safe_serialization=True",
        ),
        ("full-modules", Box::new(set("modules_to_save", serde_json::json!(["lm_head"]))), "`modules_to_save` is set"),
        ("bias", Box::new(set("lora_bias", serde_json::json!(true))), "`lora_bias` is set"),
        (
            "embeddings",
            Box::new(set("target_modules", serde_json::json!(["q_proj", "embed_tokens"]))),
            "\"embed_tokens\" is not one of",
        ),
        ("other-rank", Box::new(set("r", serde_json::json!(8))), "trained for another base model?"),
        ("prefix-tuning", Box::new(set("peft_type", serde_json::json!("PREFIX_TUNING"))), "peft_type is PREFIX_TUNING"),
        (
            "marunochi-other-base",
            Box::new(|c: &Path| {
                std::fs::write(c.join("marunochi.json"), r#"{"base_model": {"fingerprint": "0123"}}"#).unwrap()
            }),
            "trained by marunochi on another base model",
        ),
    ];
    for (name, edit, reason) in &cases {
        let stderr = bad(name, edit.as_ref());
        assert!(stderr.contains(reason), "{name}: {stderr}");
    }
    let (ok, _, stderr) = import(&dir.path().join("nowhere"));
    assert!(!ok && stderr.contains("not a PEFT adapter directory"), "{stderr}");
    assert_eq!(list(&home), states(&[("v1", "candidate"), ("v2", "candidate"), ("v3", "active")]));
    let leftovers: Vec<_> = std::fs::read_dir(home.join("adapters/python"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with('.') && n != ".registry.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
