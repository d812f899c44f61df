//! The training schedule on a real store: what `schedule status` says is due and why, a run
//! started by `schedule run-now` (a nice'd child that curates the store and trains), a run stopped
//! at its deadline (the window's end) and resumed by the next one.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::*;
use marunochi::store::Store;

/// A store with `n` graded Python suggestions (quality 85) and the run that executed them.
fn graded_store(home: &Path, project: &Path, n: usize) {
    std::fs::create_dir_all(project).unwrap();
    let mut store = Store::open(&home.join("marunochi.db")).unwrap();
    for i in 0..n {
        graded(&mut store, i, project, &format!("return value_{i} * {i}"), false);
    }
    store.record_run(&passing_run(project)).unwrap();
    marunochi::quality::rescore(&mut store).unwrap();
}

fn config(epochs: usize) -> String {
    format!(
        "[engine]\nmodel = \"{}\"\n\n[train]\nepochs = {epochs}\nbatch = 2\nlr = 0.005\n\n\
         [schedule]\nwindow = \"00:00-23:59\"\nmin_examples = 4\n",
        fixture("tiny-qwen2-trainable").display()
    )
}

/// `marunochi train` on the configured model stopped by its own `--until` two seconds on: an
/// interrupted run with a checkpoint. Returns what it said. The 160 updates asked for (40 epochs of
/// 8 examples, 2 a batch) are not fitted to the deadline as a plan would be.
fn interrupted_run(home: &Path) -> String {
    let until = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(2));
    let until = until.format(&time::format_description::well_known::Rfc3339).unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .args(["train", "--language", "python", "--model", model.to_str().unwrap(), "--until", &until])
        .args(["--validate-every", "0", "--steps", "160"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    stderr
}

#[test]
fn status_names_what_is_due_and_run_now_trains_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), &config(2));
    let (ok, stdout, stderr) = run_cli(&home, &["schedule", "status"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("window 00:00-23:59") && stdout.contains("no interactions recorded yet"), "{stdout}");

    graded_store(&home, &dir.path().join("project"), 3);
    let (_, stdout, _) = run_cli(&home, &["schedule", "status"]);
    assert!(stdout.contains("python: 3 good examples, no adapter yet; waiting: 3 of 4 good examples"), "{stdout}");
    let (ok, _, stderr) = run_cli(&home, &["schedule", "run-now"]);
    assert!(!ok);
    assert!(stderr.contains("no language is due"), "{stderr}");

    graded_store(&home, &dir.path().join("project2"), 8);
    let (_, stdout, _) = run_cli(&home, &["schedule", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let python = &status["languages"][0];
    assert_eq!(python["language"], "python");
    assert_eq!(python["due"]["trigger"], "weekly", "{python}");

    let (ok, _, stderr) = run_cli(&home, &["schedule", "run-now"]);
    assert!(ok, "{stderr}");
    assert!(home.join("adapters/python/v1/adapter_model.safetensors").exists(), "{stderr}");
    // The gate ran after training; one held-out example cannot show an improvement, so the new
    // version stays a candidate and the base model keeps serving.
    let gate: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("adapters/python/v1/eval.json")).unwrap()).unwrap();
    assert_eq!(gate["passed"], false);
    assert!(gate["heldout"]["verdict"].as_str().unwrap().contains("at least 6 are needed"), "{gate}");
    assert!(std::fs::symlink_metadata(home.join("adapters/python/active")).is_err());
    let (_, stdout, _) = run_cli(&home, &["schedule", "status"]);
    assert!(stdout.contains("adapter v1; waiting: retrained 0.0 days ago (every 7 days)"), "{stdout}");
}

#[test]
fn a_run_stopped_at_the_window_end_resumes_the_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), &config(40));
    graded_store(&home, &dir.path().join("project"), 8);
    let started = std::time::Instant::now();
    let stderr = interrupted_run(&home);
    assert!(stderr.contains("stopped at update") && stderr.contains("--resume continues"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));

    let (_, stdout, _) = run_cli(&home, &["schedule", "status"]);
    assert!(stdout.contains("due: an interrupted run resumes (update"), "{stdout}");
    // Another run of the same language while one holds the lock is refused.
    let lock = marunochi::home::try_lock(&home.join("train/python/lock")).unwrap().unwrap();
    let (ok, _, stderr) = run_cli(&home, &["train", "--language", "python", "--resume"]);
    assert!(!ok);
    assert!(stderr.contains("python is being trained already"), "{stderr}");
    drop(lock);

    let (ok, _, stderr) = run_cli(&home, &["schedule", "run-now"]);
    assert!(ok, "{stderr}");
    let report = std::fs::read_to_string(home.join("adapters/python/v1/marunochi.json")).unwrap();
    assert!(report.contains("\"steps\": "), "{report}");
    assert!(!home.join("train/python/checkpoint").exists());
}

#[test]
fn a_run_that_cannot_resume_backs_off_and_sets_its_checkpoint_aside() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), &config(40));
    graded_store(&home, &dir.path().join("project"), 8);
    interrupted_run(&home);
    let model = fixture("tiny-qwen2-trainable");

    // The user changes the model: the checkpoint can no longer be resumed.
    // (A busy CI machine must not make the tick below say "not ready" for another reason.)
    let other = config(40)
        .replace(model.to_str().unwrap(), fixture("tiny-qwen2").to_str().unwrap())
        .replace("min_examples = 4\n", "min_examples = 4\nmax_load_per_core = 1000.0\n");
    std::fs::write(home.join("config.toml"), other).unwrap();
    let (ok, _, _) = run_cli(&home, &["schedule", "run-now"]);
    assert!(!ok, "resuming on another base model fails");
    assert!(!home.join("train/python/checkpoint").exists(), "the checkpoint is set aside");
    let aside: Vec<_> = std::fs::read_dir(home.join("train/python"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint.failed-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept for a look");
    assert!(aside[0].path().join("state.json").exists());

    // The language waits instead of failing the same way at every tick.
    let (_, stdout, _) = run_cli(&home, &["schedule", "status"]);
    assert!(stdout.contains("waiting: the last run failed (marunochi train exit status: "), "{stdout}");
    assert!(stdout.contains("could not be resumed") && stdout.contains("tried again in 12 h"), "{stdout}");
    let (_, stdout, _) = run_cli(&home, &["schedule", "tick"]);
    assert_eq!(stdout.trim(), "NothingDue");
}
