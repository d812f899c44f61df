//! `marunochi demo` end to end with the real SmolLM2 and real pylsp: every stage reports, the four
//! outcomes are what the scripted editor did, the user's own store is left alone.

use std::process::Command;

use crate::common::*;

#[test]
fn the_demo_runs_every_stage_in_a_home_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let venv_bin = repo_root().join(".test-deps/venv/bin");
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", &home)
        .env("PATH", format!("{}:{}", venv_bin.display(), std::env::var("PATH").unwrap_or_default()))
        .args(["demo", "--quick", "--model"])
        .arg(fixture("smollm2-135m-instruct.gguf"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let action = |what: &str| -> String {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(what)).unwrap_or_else(|| panic!("{what}: {stdout}"));
        line.trim_start()[what.len()..].split_whitespace().next().unwrap().to_owned()
    };
    assert_eq!(action("take "), "accepted", "{stdout}");
    assert!(
        ["partial", "accepted"].contains(&action("take part of").as_str()),
        "a one-word suggestion is taken whole: {stdout}"
    );
    assert_eq!(action("reject"), "rejected", "{stdout}");
    assert_eq!(action("correct"), "corrected", "{stdout}");
    for stage in [
        "✓ proxy running: pylsp behind marunochi",
        "✓ editing session over",
        "retention checks (30 s … 30 d)",
        "✓ curated",
        "✓ trained python/v1",
        "held-out code: better on",
        "forgetting: general code NLL",
        "forgetting: HumanEval",
        "✓ gate passed",
        "✓ python/v1 promoted",
        "the python adapter:",
    ] {
        assert!(stdout.contains(stage), "{stage}: {stdout}");
    }
    assert!(!home.join("marunochi.db").exists(), "the user's own store is not touched");
    let demo_home = stdout.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert!(std::path::Path::new(demo_home).join("datasets/python/train.jsonl").exists());
    // The adapter learnt the project's style: the new function is written in it.
    let after = stdout.split("the python adapter:").nth(1).unwrap();
    assert!(after.contains("mx_result") || after.contains("CUBES"), "{stdout}");
    stop_daemon(std::path::Path::new(demo_home));

    // Without the language server on PATH: a clear error, exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", &home)
        .env("PATH", "/nonexistent")
        .args(["demo", "--model"])
        .arg(fixture("smollm2-135m-instruct.gguf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"pylsp\" is not on PATH"));
}
