//! Training throughput and peak memory, side by side in one run: LoRA vs QLoRA, with and without
//! gradient checkpointing, and DoRA and TT-LoRA (rank 5) against LoRA, on the real SmolLM2-135M
//! GGUF and the tiny Qwen2 — each a separate `marunochi train` process so its peak resident
//! memory (VmHWM) is its own. Ends with what that means for a night of training on
//! Qwen2.5-Coder 0.5B / 1.5B here.
//!
//! A PyTorch + PEFT reference is not part of this run: PyPI's Linux `torch` wheel brings ~2.5 GB
//! of CUDA libraries and the CPU-only wheels live on download.pytorch.org, which is unreachable
//! from these machines.
//!
//! `./scripts/test-deps.sh && cargo bench --bench train_speed`

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/fixtures").join(name);
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh", path.display());
    path
}

/// Sixteen functions of a few dozen tokens each, like the suggestions a user takes.
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lines: String = (0..16)
        .map(|i| {
            let prefix = format!("import math\n\n\ndef metric_{i}(values, scale={i}):\n    \"\"\"Metric {i}.\"\"\"\n");
            let completion = format!(
                "    total = sum(v * scale for v in values)\n    return math.sqrt(total) / max(len(values), {})\n",
                i + 1
            );
            let e = json!({"id": i.to_string(), "timestamp": "2026-11-01T00:00:00Z", "prefix": prefix, "suffix": "",
                "completion": completion, "action": "accepted", "weight": 1.0, "priority": 1.0, "dedup": 1.0,
                "cluster": i, "cluster_size": 1, "complexity": 1, "tier": 0, "replay": false});
            format!("{e}\n")
        })
        .collect();
    std::fs::write(data.join("train.jsonl"), lines).unwrap();
    data
}

struct Run {
    tokens_per_s: f64,
    peak_mib: f64,
    frozen_mib: f64,
}

fn run(model: &Path, data: &Path, steps: usize, flags: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let steps = steps.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home.path())
        .args(["train", "--language", "python", "--json", "--sft-only", "--batch", "2", "--steps", &steps])
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    Run {
        tokens_per_s: report["tokens_per_s"].as_f64().unwrap(),
        peak_mib: report["peak_memory"].as_f64().unwrap() / (1 << 20) as f64,
        frozen_mib: report["frozen_base_bytes"].as_f64().unwrap() / (1 << 20) as f64,
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let configs: [(&str, &[&str]); 6] = [
        ("LoRA, checkpointing", &[]),
        ("LoRA, no checkpointing", &["--no-gradient-checkpointing"]),
        ("QLoRA, checkpointing", &["--qlora"]),
        ("QLoRA, no checkpointing", &["--qlora", "--no-gradient-checkpointing"]),
        ("DoRA, checkpointing", &["--dora"]),
        ("TT-LoRA r5, checkpointing", &["--tt-lora"]),
    ];
    let mut smollm2_qlora = 0.0;
    for (name, model, steps) in
        [("tiny Qwen2", fixture("tiny-qwen2"), 16), ("SmolLM2-135M Q4_1", fixture("smollm2-135m-instruct.gguf"), 4)]
    {
        println!("{name} ({steps} updates of 2 examples, ~90 tokens each):");
        println!("  {:<26} {:>9} {:>12} {:>14}", "", "tok/s", "peak MiB", "frozen base MiB");
        let runs: Vec<Run> = configs.iter().map(|(_, flags)| run(&model, &data, steps, flags)).collect();
        for ((label, _), r) in configs.iter().zip(&runs) {
            println!("  {label:<26} {:>9.1} {:>12.0} {:>14.0}", r.tokens_per_s, r.peak_mib, r.frozen_mib);
        }
        let (lora, lora_full, qlora, dora, tt) = (&runs[0], &runs[1], &runs[2], &runs[4], &runs[5]);
        println!(
            "  QLoRA / LoRA: speed {:.2}x, peak memory {:.2}x; checkpointing off / on (LoRA): speed {:.2}x, memory {:.2}x",
            qlora.tokens_per_s / lora.tokens_per_s,
            qlora.peak_mib / lora.peak_mib,
            lora_full.tokens_per_s / lora.tokens_per_s,
            lora_full.peak_mib / lora.peak_mib,
        );
        println!(
            "  DoRA / LoRA: speed {:.2}x; TT-LoRA / LoRA: speed {:.2}x, peak memory {:.2}x",
            dora.tokens_per_s / lora.tokens_per_s,
            tt.tokens_per_s / lora.tokens_per_s,
            tt.peak_mib / lora.peak_mib,
        );
        smollm2_qlora = runs[2].tokens_per_s;
    }
    // Training cost grows with the non-embedding parameters (6 FLOPs each per token, plus the
    // recomputation); SmolLM2-135M has ~106 M of them, Qwen2.5-Coder 0.5B ~360 M, 1.5B ~1.3 G.
    println!("Estimated QLoRA with checkpointing for a night (8 h) on this machine, scaled from SmolLM2:");
    for (name, params) in [("Qwen2.5-Coder-0.5B", 360e6), ("Qwen2.5-Coder-1.5B", 1.31e9)] {
        let tok_s = smollm2_qlora * 106e6 / params;
        println!("  {name}: ~{tok_s:.1} tok/s, ~{:.2} M tokens", tok_s * 8.0 * 3600.0 / 1e6);
    }
}
