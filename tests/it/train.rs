//! `marunochi train` end to end: real gradient steps on the tiny Qwen2 fixture and the real
//! SmolLM2 GGUF, adapters written in PEFT layout (checked with the `safetensors` Python package),
//! loaded back by our engine, a run killed with SIGKILL and resumed, and every bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

use marunochi::store::Action;
use serde_json::{Value, json};

/// Twelve functions in one "house style" (a docstring naming the function in capitals, an
/// `mx_result` variable): eight to train on, four held out.
fn style_examples() -> Vec<Value> {
    let functions = [
        ("total", "items", "sum(items)"),
        ("largest", "values", "max(values)"),
        ("smallest", "values", "min(values)"),
        ("count", "items", "len(items)"),
        ("average", "xs", "sum(xs) / len(xs)"),
        ("first", "xs", "xs[0]"),
        ("last", "xs", "xs[-1]"),
        ("reverse", "xs", "xs[::-1]"),
        ("unique", "xs", "sorted(set(xs))"),
        ("double", "xs", "[x * 2 for x in xs]"),
        ("square", "xs", "[x * x for x in xs]"),
        ("evens", "xs", "[x for x in xs if x % 2 == 0]"),
    ];
    functions
        .iter()
        .enumerate()
        .map(|(i, (name, arg, expr))| {
            let completion = format!(
                "    \"\"\"{}: mx-style.\"\"\"\n    mx_result = {expr}\n    return mx_result\n",
                name.to_uppercase()
            );
            example(i, &format!("def {name}({arg}):\n"), "", &completion)
        })
        .collect()
}

fn example(i: usize, prefix: &str, suffix: &str, completion: &str) -> Value {
    json!({
        "id": format!("e{i}"), "timestamp": format!("2026-11-{:02}T00:00:00Z", i + 1),
        "prefix": prefix, "suffix": suffix, "completion": completion, "action": "accepted",
        "weight": 1.0, "priority": 1.0, "dedup": 1.0, "cluster": i, "cluster_size": 1,
        "complexity": 1, "tier": 0, "replay": false,
    })
}

/// A curated directory as `marunochi curate` writes it.
fn dataset(dir: &Path, train: &[Value], heldout: &[Value]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lines = |items: &[Value]| items.iter().map(|v| format!("{v}\n")).collect::<String>();
    std::fs::write(data.join("train.jsonl"), lines(train)).unwrap();
    std::fs::write(data.join("heldout.jsonl"), lines(heldout)).unwrap();
    data
}

/// Six short functions for the tiny model to memorise.
fn memory_examples() -> Vec<Value> {
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            example(i, &format!("def {name}_value(x):\n    "), "\n", &format!("return x * {}  # {name} scaled", i + 2))
        })
        .collect()
}

fn train(home: &Path, model: &Path, data: &Path, extra: &[&str]) -> (bool, String, String) {
    let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
    let args = [&["train", "--language", "python", "--model", model, "--data", data, "--json"], extra].concat();
    run_cli(home, &args)
}

fn report(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}"))
}

fn tensors(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &candle_core::Device::Cpu).unwrap()
}

fn same_tensors(a: &Path, b: &Path) -> bool {
    let (a, b) = (tensors(a), tensors(b));
    a.len() == b.len()
        && a.iter().all(|(name, t)| {
            let u = &b[name];
            let (x, y) = (
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                u.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// `marunochi complete` at the end of `text` (a one-file workspace), with or without an adapter.
fn complete(home: &Path, dir: &Path, model: &Path, text: &str, adapter: Option<&Path>) -> String {
    let file = dir.join("main.py");
    std::fs::write(&file, text).unwrap();
    // Zero-based, as LSP counts.
    let line = text.matches('\n').count();
    let col = text.rsplit('\n').next().unwrap().len();
    let location = format!("{}:{line}:{col}", file.display());
    let mut args = vec!["complete", "--model", model.to_str().unwrap(), &location, "--max-tokens", "24", "--json"];
    if let Some(adapter) = adapter {
        args.extend(["--adapter", adapter.to_str().unwrap()]);
    }
    let (ok, stdout, stderr) = run_cli(home, &args);
    assert!(ok, "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    value["text"].as_str().unwrap_or_default().to_owned()
}

/// Runs a Python `check` script (the test venv's, with `safetensors` and numpy) on an adapter
/// directory.
fn python_check(check: &str, adapter: &Path) {
    let out = Command::new(repo_root().join(".test-deps/venv/bin/python"))
        .args(["-c", check, adapter.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn assert_private(dir: &Path, files: &[&str]) {
    for file in files {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join(file)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

#[test]
fn lora_memorises_a_small_dataset_and_the_adapter_is_peft_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("tiny-qwen2-trainable");
    let examples = memory_examples();
    let data = dataset(dir.path(), &examples, &examples[..2]);
    let (ok, stdout, stderr) = train(
        &home,
        &model,
        &data,
        &["--validate-every", "0", "--steps", "150", "--batch", "2", "--lr", "5e-3", "--dropout", "0"],
    );
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let (first, last) = (report["first_loss"].as_f64().unwrap(), report["last_loss"].as_f64().unwrap());
    assert!(last < 0.1 * first, "loss fell from {first} to {last}: less than 90%");
    assert_eq!(report["version"], "v1");
    let adapter = home.join("adapters/python/v1");
    assert_eq!(Path::new(report["directory"].as_str().unwrap()), adapter);
    assert_private(&adapter, &["adapter_model.safetensors", "adapter_config.json", "marunochi.json"]);
    assert!(!home.join("train/python/checkpoint").exists(), "a finished run leaves no checkpoint");

    // PEFT's own reader sees exactly PEFT's names and shapes.
    let check = r#"
import json, sys
from safetensors.numpy import load_file
d = sys.argv[1]
t = load_file(d + "/adapter_model.safetensors")
c = json.load(open(d + "/adapter_config.json"))
assert c["peft_type"] == "LORA" and c["task_type"] == "CAUSAL_LM", c
assert c["r"] == 16 and c["lora_alpha"] == 32, c
mods = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
        "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
assert sorted(c["target_modules"]) == sorted(mods), c["target_modules"]
want = {f"base_model.model.model.layers.{n}.{p}.{m}.lora_{ab}.weight"
        for n in range(2) for m, p in mods.items() for ab in "AB"}
assert set(t) == want, sorted(set(t) ^ want)
q = t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
assert q.shape == (16, 64) and str(q.dtype) == "float32", (q.shape, q.dtype)
assert t["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (64, 16)
print("PEFT layout OK")
"#;
    python_check(check, &adapter);

    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("marunochi.json")).unwrap()).unwrap();
    assert_eq!(metadata["language"], "python");
    assert_eq!(metadata["training"]["losses"].as_array().unwrap().len(), 150);
    assert!(metadata["base_model"]["fingerprint"].as_str().unwrap().len() >= 16);

    // Our engine loads it, and it changes what the model writes: the memorised line comes back.
    let prefix = "def alpha_value(x):\n    ";
    let base = complete(&home, dir.path(), &model, prefix, None);
    let tuned = complete(&home, dir.path(), &model, prefix, Some(&adapter));
    assert_ne!(base, tuned);
    assert!(tuned.starts_with("return x * 2"), "the adapter completes the memorised code: {tuned:?} (base: {base:?})");
}

#[test]
fn qlora_on_a_4_bit_base_memorises_too() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let examples = memory_examples();
    let data = dataset(dir.path(), &examples, &[]);
    let (ok, stdout, stderr) = train(
        &home,
        &fixture("tiny-qwen2-trainable"),
        &data,
        &["--validate-every", "0", "--steps", "150", "--batch", "2", "--lr", "5e-3", "--dropout", "0", "--qlora"],
    );
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let (first, last) = (report["first_loss"].as_f64().unwrap(), report["last_loss"].as_f64().unwrap());
    assert!(last < 0.1 * first, "loss fell from {first} to {last}: less than 90%");
    let metadata = std::fs::read_to_string(home.join("adapters/python/v1/marunochi.json")).unwrap();
    assert!(metadata.contains("\"method\": \"qlora\""), "{metadata}");
}

#[test]
fn qdora_memorises_and_the_engine_serves_its_magnitudes() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("tiny-qwen2-trainable");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    let args = [
        "--validate-every",
        "0",
        "--steps",
        "150",
        "--batch",
        "2",
        "--lr",
        "5e-3",
        "--dropout",
        "0",
        "--qlora",
        "--dora",
    ];
    let (ok, stdout, stderr) = train(&home, &model, &data, &args);
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let (first, last) = (report["first_loss"].as_f64().unwrap(), report["last_loss"].as_f64().unwrap());
    assert!(last < 0.1 * first, "loss fell from {first} to {last}: less than 90%");
    let adapter = home.join("adapters/python/v1");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["use_dora"], true);
    let magnitudes = tensors(&adapter);
    let m = &magnitudes["base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector"];
    assert_eq!(m.dims(), [64]);
    // Served with the magnitudes applied, the adapter writes what training taught.
    let tuned = complete(&home, dir.path(), &model, "def alpha_value(x):\n    ", Some(&adapter));
    assert!(tuned.starts_with("return x * 2"), "{tuned:?}");
    // DoRA's magnitudes do not scale with B·A: there is no weaker strength for the gate to try.
    let engine = marunochi::engine::Engine::load(&model, &marunochi::engine::LoadOptions::default()).unwrap();
    let error = engine.load_adapter_at("weaker", &adapter, 0.5).unwrap_err().to_string();
    assert!(error.contains("DoRA adapter cannot be loaded at another strength"), "{error}");
    engine.load_adapter_at("as trained", &adapter, 1.0).unwrap();
}

#[test]
fn smollm2_learns_a_house_style_from_a_few_steps() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("smollm2-135m-instruct.gguf");
    let examples = style_examples();
    let data = dataset(dir.path(), &examples[..8], &examples[8..]);
    let (ok, stdout, stderr) = train(&home, &model, &data, &["--steps", "8", "--batch", "3", "--lr", "2e-3"]);
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let (base, tuned) = (report["heldout_base"].as_f64().unwrap(), report["heldout_adapter"].as_f64().unwrap());
    assert!(tuned < 0.6 * base, "held-out loss per token: base {base}, adapter {tuned}");
    let adapter = home.join("adapters/python/v1");
    let prefix = "def halve(xs):\n";
    let tuned = complete(&home, dir.path(), &model, prefix, Some(&adapter));
    assert!(tuned.contains("mx_result") || tuned.contains("HALVE"), "house style in {tuned:?}");
}

#[test]
fn tt_lora_learns_with_a_fraction_of_the_parameters_and_saves_plain_peft_with_its_cores() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("tiny-qwen2-trainable");
    let examples = memory_examples();
    let data = dataset(dir.path(), &examples, &examples);
    // Twice plain LoRA's updates: the tensor train learns the rare tokens (the digits) more slowly.
    let args =
        ["--validate-every", "0", "--steps", "300", "--batch", "2", "--lr", "5e-3", "--dropout", "0", "--tt-lora"];
    let (ok, stdout, stderr) = train(&home, &model, &data, &args);
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let (base, tuned) = (report["heldout_base"].as_f64().unwrap(), report["heldout_adapter"].as_f64().unwrap());
    assert!(tuned < 0.01 * base, "loss per token on the memorised functions: base {base}, adapter {tuned}");
    let adapter = home.join("adapters/python/v1");
    assert_private(&adapter, &["adapter_model.safetensors", "tt_cores.safetensors"]);
    // Plain LoRA of rank 16 would train 16 numbers per input and output of every projection;
    // the rank-5 PEFT export has 5. (The tiny model's 64-wide projections split into few factors:
    // a quarter here, a fifteenth at SmolLM2's width, see `train/tt.rs`.)
    let exported: usize = tensors(&adapter).values().map(|t| t.elem_count()).sum();
    let lora_r16 = exported / 5 * 16;
    let trained = report["parameters"].as_u64().unwrap() as usize;
    assert!(trained * 3 < lora_r16, "{trained} trained numbers against LoRA r16's {lora_r16}");
    assert!(report["cores_bytes"].as_u64().unwrap() < report["peft_bytes"].as_u64().unwrap(), "{report}");

    // The export is PEFT LoRA of the tensor train's rank, at LoRA's scale (alpha/rank = 2), and it is
    // exactly the contraction of the saved cores (numpy, row-major: the tensor-train reading of
    // each weight).
    let check = r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
d = sys.argv[1]
peft = load_file(d + "/adapter_model.safetensors")
cores = load_file(d + "/tt_cores.safetensors")
c = json.load(open(d + "/adapter_config.json"))
assert c["r"] == 5 and c["lora_alpha"] == 10, c
prefixes = {k.rsplit(".lora_", 1)[0] for k in peft}
assert len(prefixes) == 14, prefixes
for p in prefixes:
    a, b = peft[p + ".lora_A.weight"], peft[p + ".lora_B.weight"]
    chain = [cores[f"{p}.tt_core.{i}"] for i in range(len([k for k in cores if k.startswith(p + ".")]))]
    w = chain[0]
    for core in chain[1:]:
        w = np.tensordot(w, core, axes=([-1], [0]))
    w = w.reshape(b.shape[0], a.shape[1])
    assert np.allclose(w, b @ a, atol=1e-5), (p, np.abs(w - b @ a).max())
print("TT-LoRA export OK")
"#;
    python_check(check, &adapter);
    let metadata = std::fs::read_to_string(adapter.join("marunochi.json")).unwrap();
    assert!(metadata.contains("\"method\": \"tt-lora\""), "{metadata}");

    // Served like any LoRA adapter, it writes what training taught (the tiny random model gets
    // the shape of the line; plain LoRA's test checks the digits).
    let prefix = "def alpha_value(x):\n    ";
    let (base, tuned) = (
        complete(&home, dir.path(), &model, prefix, None),
        complete(&home, dir.path(), &model, prefix, Some(&adapter)),
    );
    assert!(tuned.starts_with("return x * ") && tuned.contains(" scaled"), "{tuned:?} (base: {base:?})");

    let (ok, _, stderr) = train(&home, &model, &data, &["--tt-rank", "0"]);
    assert!(!ok);
    assert!(stderr.contains("the TT rank must be at least 1"), "{stderr}");
    let (ok, _, stderr) = train(&home, &model, &data, &["--tt-lora", "--dora"]);
    assert!(!ok);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let config = home_with_config(&dir.path().join("both"), "[train]\ntt_lora = true\n");
    let (ok, _, stderr) = train(&config, &model, &data, &["--dora"]);
    assert!(!ok);
    assert!(stderr.contains("TT-LoRA and DoRA cannot be combined"), "{stderr}");
}

#[test]
fn a_tt_lora_run_killed_with_sigkill_resumes_from_its_cores_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    let args =
        ["--steps", "40", "--batch", "2", "--lr", "5e-3", "--checkpoint-every", "5", "--seed", "7", "--tt-rank", "3"];
    let whole = home_with_config(&dir.path().join("whole"), "");
    let (ok, _, stderr) = train(&whole, &model, &data, &args);
    assert!(ok, "{stderr}");
    let broken = home_with_config(&dir.path().join("broken"), "");
    killed_after_checkpoint(&broken, &model, &data, &args, 15);
    let (ok, stdout, stderr) = train(&broken, &model, &data, &[&args[..], &["--resume"]].concat());
    assert!(ok, "{stderr}");
    assert!(report(&stdout)["resumed_from"].as_u64().unwrap() >= 15);
    let (a, b) = (whole.join("adapters/python/v1"), broken.join("adapters/python/v1"));
    assert!(same_tensors(&a, &b), "the resumed run's adapter differs from the uninterrupted one");
    let cores = |dir: &Path| std::fs::read(dir.join("tt_cores.safetensors")).unwrap();
    assert_eq!(cores(&a), cores(&b), "the resumed run's cores differ");
}

/// Waits until the run in `home` has checkpointed at least `step`.
fn wait_for_checkpoint(home: &Path, step: u64, child: &mut std::process::Child) {
    let state = home.join("train/python/checkpoint/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(text) = std::fs::read_to_string(&state)
            && serde_json::from_str::<Value>(&text).is_ok_and(|v| v["step"].as_u64().unwrap_or(0) >= step)
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "training ended before its checkpoint at {step}");
        assert!(Instant::now() < deadline, "no checkpoint at {step}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `marunochi train ARGS` in `home` and kills it (SIGKILL) once it has checkpointed `step`.
fn killed_after_checkpoint(home: &Path, model: &Path, data: &Path, args: &[&str], step: u64) {
    killed_after_checkpoint_with_path(home, model, data, args, step, &std::env::var("PATH").unwrap_or_default());
}

fn killed_after_checkpoint_with_path(home: &Path, model: &Path, data: &Path, args: &[&str], step: u64, path: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .env("PATH", path)
        .args(["train", "--language", "python", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_checkpoint(home, step, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let examples = memory_examples();
    let data = dataset(dir.path(), &examples, &[]);
    let args = ["--steps", "40", "--batch", "2", "--lr", "5e-3", "--checkpoint-every", "5", "--seed", "7"];

    let whole = home_with_config(&dir.path().join("whole"), "");
    let (ok, _, stderr) = train(&whole, &model, &data, &args);
    assert!(ok, "{stderr}");

    let broken = home_with_config(&dir.path().join("broken"), "");
    killed_after_checkpoint(&broken, &model, &data, &args, 15);
    // The checkpoint's adapter is a PEFT directory: the engine serves it (`complete` fails on one
    // it cannot load).
    let checkpoint = broken.join("train/python/checkpoint");
    complete(&broken, dir.path(), &model, "def alpha_value(x):\n    ", Some(&checkpoint));

    // A new run would throw the interrupted one away: refused with the way out.
    let (ok, _, stderr) = train(&broken, &model, &data, &args);
    assert!(!ok);
    assert!(stderr.contains("interrupted python run is waiting") && stderr.contains("--resume"), "{stderr}");
    // Resuming with another base model is refused too.
    let (ok, _, stderr) = train(&broken, &fixture("tiny-qwen2"), &data, &[&args[..], &["--resume"]].concat());
    assert!(!ok);
    assert!(stderr.contains("another base model"), "{stderr}");

    let (ok, stdout, stderr) = train(&broken, &model, &data, &[&args[..], &["--resume"]].concat());
    assert!(ok, "{stderr}");
    let resumed = report(&stdout);
    assert!(resumed["resumed_from"].as_u64().unwrap() >= 15, "{resumed}");
    assert!(
        same_tensors(&whole.join("adapters/python/v1"), &broken.join("adapters/python/v1")),
        "the resumed run's adapter differs from the uninterrupted one"
    );
    let losses = |home: &Path| {
        let text = std::fs::read_to_string(home.join("adapters/python/v1/marunochi.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["training"]["losses"].clone()
    };
    assert_eq!(losses(&whole), losses(&broken));

    let (ok, _, stderr) = train(&broken, &model, &data, &[&args[..], &["--resume"]].concat());
    assert!(!ok);
    assert!(stderr.contains("nothing to resume"), "{stderr}");
}

/// The memorised functions' prompts with other completions: their loss falls while training
/// learns the shared shape (`return x * …`) and rises once it learns the training set's numbers.
fn conflicting_examples() -> Vec<Value> {
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            example(i, &format!("def {name}_value(x):\n    "), "\n", &format!("return x * {}  # {name} scaled", 9 - i))
        })
        .collect()
}

/// The memorised functions to train on, and [`conflicting_examples`] both held out and set aside
/// for validation (`validation.jsonl`): the data directory and the validation examples.
fn dataset_with_validation(dir: &Path) -> (PathBuf, Vec<Value>) {
    let validation = conflicting_examples();
    let data = dataset(dir, &memory_examples(), &validation);
    let lines = validation.iter().map(|v| format!("{v}\n")).collect::<String>();
    std::fs::write(data.join("validation.jsonl"), lines).unwrap();
    (data, validation)
}

/// `PATH` without the directories that hold a `python3`.
fn without_python() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path).filter(|d| !d.join("python3").exists()).collect();
    std::env::join_paths(kept).unwrap().into_string().unwrap()
}

/// A successful `train --json` with `PATH` as given: its stdout and stderr.
fn train_on_path(home: &Path, model: &Path, data: &Path, args: &[&str], path: &str) -> (String, String) {
    let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .env("PATH", path)
        .args(["train", "--language", "python", "--model", model, "--data", data, "--json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn checks(report: &Value) -> Vec<(u64, f64)> {
    let checks = report["checks"].as_array().unwrap();
    checks.iter().map(|c| (c["step"].as_u64().unwrap(), c["validation"].as_f64().unwrap())).collect()
}

/// SFT's checks (README "Learning"): the validation loss is measured every few updates, SFT stops
/// once it has not improved for `patience` checks, and the adapter of the best check is what is
/// saved — its loss on the validation code is the check's, recomputed from the saved adapter (the
/// same code scored as held-out). A run killed between checks resumes to the same checks and
/// weights. With `cooldown` the early stop is followed by a cool-down from the kept adapter, kept
/// only if its check is the best; killed in the cool-down, a run resumes to the same weights.
#[test]
fn sft_stops_once_the_validation_loss_stops_falling_and_keeps_the_best_checks_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let (data, _) = dataset_with_validation(dir.path());
    let flags = "--steps 120 --batch 2 --lr 5e-3 --dropout 0 --validate-every 5 --seed 3";
    let args: Vec<&str> = flags.split(' ').chain(["--checkpoint-every", "5"]).collect();

    // Without python3 on PATH there is no general corpus: the checks watch the validation split
    // alone (and the tiny model's 151 936-token head makes general code its costliest part).
    let path = without_python();
    let train = |home: &Path, args: &[&str]| train_on_path(home, &model, &data, args, &path);
    let whole = home_with_config(&dir.path().join("whole"), "");
    let (stdout, stderr) = train(&whole, &args);
    assert!(stderr.contains("general code is not watched during training: python3 is not on PATH"), "{stderr}");
    let report = report(&stdout);
    let checks = checks(&report);
    let (kept, done) = (report["kept"].as_u64().unwrap(), report["steps"].as_u64().unwrap());
    assert!(report["stopped"].as_str().unwrap().contains("for 2 checks"), "{report}");
    assert!(done < 120 && done % 5 == 0, "SFT stopped at a check before its 120 updates: {done}");
    assert_eq!(report["stages"][0]["steps"].as_u64(), Some(done));
    assert_eq!(checks.first().map(|c| c.0), Some(0), "the first check is the start");
    assert_eq!(checks.last().map(|c| c.0), Some(done));
    let best = checks.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert_eq!(best.0, kept, "{checks:?}");
    assert!(0 < kept && kept == done - 10, "two checks after the best one: {checks:?}");
    assert!(best.1 < checks[0].1, "the shared shape was learnt first: {checks:?}");
    let heldout = |key: &str| report[key].as_f64().unwrap();
    assert!((heldout("heldout_base") - checks[0].1).abs() < 1e-6, "{report}");
    assert!((heldout("heldout_adapter") - best.1).abs() < 1e-6, "the saved adapter is update {kept}'s: {report}");
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("adapters/python/v1/marunochi.json")).unwrap())
            .unwrap();
    assert_eq!(metadata["training"]["kept"].as_u64(), Some(kept));
    assert_eq!(metadata["training"]["checks"].as_array().map(Vec::len), Some(checks.len()));
    // Beside each check's loss, the share of validation tokens the adapter ranks first.
    for check in report["checks"].as_array().unwrap() {
        assert!(check["top1"].as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)), "{check}");
    }
    assert!(stderr.contains(" (top-1 "), "{stderr}");

    assert_eq!(report["cooldown"], Value::Null);

    let broken = home_with_config(&dir.path().join("broken"), "");
    killed_after_checkpoint_with_path(&broken, &model, &data, &args, kept + 5, &path);
    let (stdout, _) = train(&broken, &[&args[..], &["--resume"]].concat());
    let resumed = self::report(&stdout);
    assert!(resumed["resumed_from"].as_u64().unwrap() > kept, "{resumed}");
    assert_eq!(self::checks(&resumed), checks);
    assert_eq!((resumed["kept"].as_u64(), resumed["steps"].as_u64()), (Some(kept), Some(done)));
    assert!(same_tensors(&whole.join("adapters/python/v1"), &broken.join("adapters/python/v1")));

    // With a cool-down: ⌈0.2 · kept⌉ updates more from the kept adapter, then one check (here
    // worse: fresh moments at this rate jolt the tiny model, and the kept adapter is put back).
    let cooldown = "[train]\ncooldown = 0.2\n";
    let cooled = home_with_config(&dir.path().join("cooled"), cooldown);
    let (stdout, stderr) = train(&cooled, &args);
    let report = self::report(&stdout);
    let updates = (kept as f64 * 0.2).ceil() as u64;
    assert_eq!((&report["cooldown"]["from"], &report["cooldown"]["updates"]), (&json!(done), &json!(updates)));
    assert!(
        stderr.contains(&format!("SFT cools down from the adapter of update {kept}: {updates} updates")),
        "{stderr}"
    );
    assert_eq!(report["steps"].as_u64(), Some(done + updates));
    let cooled_checks = self::checks(&report);
    assert_eq!(&cooled_checks[..checks.len()], &checks[..], "the same SFT up to the stop");
    assert_eq!(cooled_checks.len(), checks.len() + 1, "one check, at the cool-down's end: {cooled_checks:?}");
    let last = cooled_checks[checks.len()];
    let (kept_now, loss) = if last.1 < best.1 { last } else { *best };
    assert_eq!(last.0, done + updates);
    assert_eq!(report["kept"].as_u64(), Some(kept_now), "{cooled_checks:?}");
    assert!((report["heldout_adapter"].as_f64().unwrap() - loss).abs() < 1e-6, "{report}");
    assert_eq!(same_tensors(&whole.join("adapters/python/v1"), &cooled.join("adapters/python/v1")), kept_now == kept);

    let every_update: Vec<&str> = flags.split(' ').chain(["--checkpoint-every", "1"]).collect();
    let broken = home_with_config(&dir.path().join("broken-cooling"), cooldown);
    killed_after_checkpoint_with_path(&broken, &model, &data, &every_update, done + 1, &path);
    let (stdout, _) = train(&broken, &[&every_update[..], &["--resume"]].concat());
    let resumed = self::report(&stdout);
    assert!(resumed["resumed_from"].as_u64().unwrap() > done, "killed in the cool-down: {resumed}");
    assert_eq!(self::checks(&resumed), cooled_checks);
    assert!(same_tensors(&cooled.join("adapters/python/v1"), &broken.join("adapters/python/v1")));

    // Patience 0 would stop at once: refused, with the way to turn the checks off.
    let impatient = home_with_config(&dir.path().join("impatient"), "[train]\npatience = 0\n");
    let (ok, _, stderr) = self::train(&impatient, &model, &data, &["--steps", "10"]);
    assert!(!ok && stderr.contains("patience must be at least 1 (validate_every = 0 turns"), "{stderr}");

    // No checks: every planned update runs, as before.
    let unchecked = home_with_config(&dir.path().join("unchecked"), "[train]\nvalidate_every = 0\n");
    let (ok, stdout, stderr) = self::train(&unchecked, &model, &data, &["--steps", "30", "--batch", "2"]);
    assert!(ok, "{stderr}");
    let unchecked = self::report(&stdout);
    assert_eq!((unchecked["steps"].as_u64(), &unchecked["stopped"]), (Some(30), &Value::Null));
    assert!(unchecked["checks"].as_array().unwrap().is_empty());
}

/// A stage after SFT is measured at its start and its end and undone when it makes the validation
/// loss worse (README "Learning"): DPO pairs that prefer the validation completions are kept; the
/// same pairs reversed are undone, and the adapter saved is SFT's own, bit for bit — also when the
/// run was killed in the middle of DPO and resumed.
#[test]
fn a_stage_after_sft_that_makes_the_validation_loss_worse_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let (data, validation) = dataset_with_validation(dir.path());
    let lines = |items: &[Value]| items.iter().map(|v| format!("{v}\n")).collect::<String>();
    let pairs = |prefer_validation: bool| {
        let pairs: Vec<Value> = validation
            .iter()
            .map(|v| {
                let (own, other) = (v["completion"].clone(), json!("pass"));
                let (chosen, rejected) = if prefer_validation { (own, other) } else { (other, own) };
                json!({"id": v["id"], "prefix": v["prefix"], "suffix": v["suffix"], "chosen": chosen, "rejected": rejected})
            })
            .collect();
        std::fs::write(data.join("dpo.jsonl"), lines(&pairs)).unwrap();
    };
    let sft = "--sft-steps 4 --batch 2 --lr 5e-3 --dropout 0 --seed 3 --checkpoint-every 1";
    let args: Vec<&str> = sft.split(' ').chain(["--after-sft-steps", "6"]).collect();
    // Without python3 on PATH the checks watch the validation split alone (cheaper on the tiny
    // model's wide head; general code is judged in `checks::tests`).
    let path = without_python();
    let train = |name: &str, config: &str, args: &[&str]| {
        let home = home_with_config(&dir.path().join(name), config);
        let (stdout, stderr) = train_on_path(&home, &model, &data, args, &path);
        (report(&stdout), stderr, home.join("adapters/python/v1"))
    };
    let validation_loss = |judged: &Value, when: &str| judged[when]["validation"].as_f64().unwrap();
    let config = "[train]\npreference_lr = 0.005\n";
    let (_, _, sft_only) =
        train("sft-only", config, &[&sft.split(' ').collect::<Vec<_>>()[..], &["--sft-only"]].concat());

    pairs(true);
    let (report, stderr, helped) = train("helpful", config, &args);
    assert_eq!((&report["stages"][1]["stage"], &report["stages"][1]["steps"]), (&json!("dpo"), &json!(6)));
    let judged = &report["judged"][0];
    assert_eq!((judged["stage"].as_str(), &judged["undone"]), (Some("dpo"), &Value::Null), "{report}");
    assert!(validation_loss(judged, "after") < validation_loss(judged, "before"), "{judged}");
    assert!(stderr.contains("dpo kept (validation loss "), "{stderr}");
    assert!(!same_tensors(&helped, &sft_only), "the kept DPO stage changed the adapter");

    pairs(false);
    let (report, stderr, harmed) = train("harmful", config, &args);
    let judged = &report["judged"][0];
    assert!(validation_loss(judged, "after") > validation_loss(judged, "before"), "{judged}");
    assert!(judged["undone"].as_str().is_some_and(|w| w.starts_with("validation loss up from ")), "{judged}");
    assert!(stderr.contains("dpo undone: validation loss up from "), "{stderr}");
    assert!(same_tensors(&harmed, &sft_only), "the undone DPO stage left SFT's adapter");
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(harmed.join("marunochi.json")).unwrap()).unwrap();
    assert_eq!(metadata["training"]["judged"], report["judged"]);

    // Killed in the middle of DPO (update 7 of 10) and resumed: the adapter DPO started from is in
    // the checkpoint, so the stage is still undone.
    let broken = home_with_config(&dir.path().join("broken"), config);
    killed_after_checkpoint_with_path(&broken, &model, &data, &args, 7, &path);
    let (report, _, resumed) = train("broken", config, &[&args[..], &["--resume"]].concat());
    assert!(report["resumed_from"].as_u64().is_some_and(|s| s >= 7), "{report}");
    assert!(report["judged"][0]["undone"].is_string(), "{report}");
    assert!(same_tensors(&resumed, &sft_only));

    // After a checked SFT the stage starts from the adapter SFT kept, measured by that check.
    let checked: Vec<&str> = args.iter().copied().chain(["--validate-every", "2"]).collect();
    let (report, _, harmed) = train("checked", config, &checked);
    let judged = &report["judged"][0];
    assert_eq!(judged["before"]["step"], report["kept"], "{report}");
    assert!(report["checks"].as_array().unwrap().contains(&judged["before"]), "{report}");
    assert!(judged["undone"].is_string(), "{report}");
    let sft_checked: Vec<&str> = sft.split(' ').chain(["--validate-every", "2", "--sft-only"]).collect();
    let (_, _, sft_checked) = train("sft-checked", config, &sft_checked);
    assert!(same_tensors(&harmed, &sft_checked));

    // Without checks nothing is judged: the same harmful stage stays.
    let (report, _, unjudged) = train("unjudged", "[train]\npreference_lr = 0.005\nvalidate_every = 0\n", &args);
    assert!(report["judged"].as_array().unwrap().is_empty(), "{report}");
    assert!(!same_tensors(&unjudged, &sft_only));
}

/// On a real model trained hard, general code is forgotten within a few updates: SFT stops at the
/// first check past `[eval] nll_rise` and keeps the least trained adapter (the gate may serve it
/// weaker).
#[test]
fn smollm2_forgetting_general_code_stops_sft_at_the_first_check_past_the_margin() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("smollm2-135m-instruct.gguf");
    let examples = style_examples();
    let data = dataset(dir.path(), &examples[..8], &examples[8..]);
    let args = ["--steps", "12", "--batch", "4", "--lr", "2e-3", "--dropout", "0", "--validate-every", "3"];
    let (ok, stdout, stderr) = train(&home, &model, &data, &args);
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let stopped = report["stopped"].as_str().unwrap_or_default();
    assert!(stopped.contains("general-code loss up") && stopped.contains("more than the 2.0 % allowed"), "{report}");
    let checks: Vec<(u64, f64)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["step"].as_u64().unwrap(), c["general"].as_f64().unwrap()))
        .collect();
    let start = checks[0].1;
    let (last, trained) = (checks.last().unwrap(), &checks[1..]);
    assert!(last.1 > 1.02 * start && trained[..trained.len() - 1].iter().all(|c| c.1 <= 1.02 * start), "{checks:?}");
    assert_eq!(report["steps"].as_u64(), Some(last.0));
    assert!(last.0 < 12, "{report}");
    // No validation split here: the newest check within the margin, or the least trained one.
    let within = trained.iter().rev().find(|c| c.1 <= 1.02 * start).map_or(trained[0].0, |c| c.0);
    assert_eq!(report["kept"].as_u64(), Some(within), "{report}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    let model = fixture("tiny-qwen2-trainable");
    let mut child = Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", &home)
        .args(["train", "--language", "python", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()])
        .args(["--validate-every", "0", "--steps", "5000", "--checkpoint-every", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&home, 2, &mut child);
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped at update") && stderr.contains("--resume continues"), "{stderr}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("train/python/checkpoint/state.json")).unwrap())
            .unwrap();
    assert!(state["step"].as_u64().unwrap() >= 2 && state["step"].as_u64().unwrap() < 5000, "{state}");
}

#[test]
fn bad_training_data_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("tiny-qwen2");

    let empty = dataset(&dir.path().join("empty"), &[], &[]);
    let (ok, _, stderr) = train(&home, &model, &empty, &[]);
    assert!(!ok);
    assert!(stderr.contains("no training data for python") && stderr.contains("holds no examples"), "{stderr}");

    let (ok, _, stderr) = train(&home, &model, &dir.path().join("nowhere"), &[]);
    assert!(!ok);
    assert!(stderr.contains("does not exist (run `marunochi curate --language python`)"), "{stderr}");

    let broken = dataset(&dir.path().join("broken"), &memory_examples()[..1], &[]);
    std::fs::write(broken.join("train.jsonl"), format!("{}\n{{\"prefix\": 3}}\n", memory_examples()[0])).unwrap();
    let (ok, _, stderr) = train(&home, &model, &broken, &[]);
    assert!(!ok);
    assert!(stderr.contains("train.jsonl, line 2:"), "{stderr}");

    // Without --data, the store is curated: none yet, then none in this language, then none good enough.
    let (ok, _, stderr) = run_cli(&home, &["train", "--language", "python", "--model", model.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("nothing recorded yet"), "{stderr}");
    let mut store = marunochi::store::Store::open(&home.join("marunochi.db")).unwrap();
    let uri = format!("file://{}/a.py", dir.path().display());
    let code = "return 1";
    store.batch(|b| b.shown(&shown_row("s1", &uri, 1_780_000_000_000))).unwrap();
    store.batch(|b| b.outcome(&taken("s1", Action::Accepted, code, 0..code.len()))).unwrap();
    drop(store);
    let (ok, _, stderr) = run_cli(&home, &["train", "--language", "rust", "--model", model.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("no training data for rust: no suggestion in this language"), "{stderr}");
    let (ok, _, stderr) = run_cli(&home, &["train", "--language", "python", "--model", model.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("no training data for python: none of its interactions qualifies yet"), "{stderr}");

    let (ok, _, stderr) =
        train(&home, &model, &dataset(&dir.path().join("ok"), &memory_examples(), &[]), &["--rank", "0"]);
    assert!(!ok);
    assert!(stderr.contains("rank must be at least 1"), "{stderr}");
}

#[test]
fn a_full_disk_while_saving_keeps_the_previous_adapter_whole() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let model = fixture("tiny-qwen2");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    let args = ["--steps", "2", "--checkpoint-every", "0"];
    let (ok, _, stderr) = train(&home, &model, &data, &args);
    assert!(ok, "{stderr}");
    let v1 = home.join("adapters/python/v1");
    let before = std::fs::read(v1.join("adapter_model.safetensors")).unwrap();

    // A file-size limit makes writes past 64 KiB fail (EFBIG; the really full disk, ENOSPC, is the
    // next test); the adapter (~200 KB) cannot be written.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec {} train --language python --model {} --data {} --steps 2 --checkpoint-every 0",
        env!("CARGO_BIN_EXE_marunochi"),
        model.display(),
        data.display()
    );
    let out = Command::new("bash").args(["-c", &script]).env("MARUNOCHI_HOME", &home).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot save") && stderr.contains("adapter_model.safetensors"), "{stderr}");
    assert_eq!(std::fs::read(v1.join("adapter_model.safetensors")).unwrap(), before);
    let left: Vec<_> =
        std::fs::read_dir(home.join("adapters/python")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("v1")], "no half-written version is left");
}

#[test]
fn kto_and_dpo_stages_follow_sft_when_preference_data_exists() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[train]\npreference_lr = 0.01\n");
    let examples = memory_examples();
    let data = dataset(dir.path(), &examples, &[]);
    let kto: Vec<Value> = examples
        .iter()
        .chain(&examples[..2])
        .enumerate()
        .map(|(i, e)| {
            let (desirable, completion) = if i % 2 == 0 {
                (true, e["completion"].as_str().unwrap().to_owned())
            } else {
                (false, format!("print({i})"))
            };
            json!({"id": format!("k{i}"), "prefix": e["prefix"], "suffix": e["suffix"], "completion": completion,
                   "desirable": desirable, "weight": 1.0})
        })
        .collect();
    let dpo: Vec<Value> = examples[..2]
        .iter()
        .map(|e| {
            json!({"id": e["id"], "prefix": e["prefix"], "suffix": e["suffix"],
                        "chosen": e["completion"], "rejected": "pass"})
        })
        .collect();
    let lines = |items: &[Value]| items.iter().map(|v| format!("{v}\n")).collect::<String>();
    std::fs::write(data.join("kto.jsonl"), lines(&kto)).unwrap();
    std::fs::write(data.join("dpo.jsonl"), lines(&dpo)).unwrap();

    let args = ["--sft-steps", "4", "--epochs", "4", "--batch", "4", "--dropout", "0"];
    let (ok, stdout, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &args);
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(names, ["sft", "kto", "dpo"]);
    assert_eq!(report["kto_examples"], 8);
    assert_eq!(report["dpo_pairs"], 2);
    let (kto, dpo) = (&stages[1], &stages[2]);
    assert_eq!(kto["steps"], 8);
    assert_eq!(dpo["steps"], 4);
    // Each stage starts at the reference (the adapter SFT left): log-ratios 0, so KTO's loss is
    // 1 − σ(0) and DPO's −log σ(0); their updates then lower them.
    let loss = |s: &Value, key: &str| s[key].as_f64().unwrap();
    assert!((loss(kto, "first_loss") - 0.5).abs() < 1e-6, "{kto}");
    assert!((loss(dpo, "first_loss") - std::f64::consts::LN_2).abs() < 1e-6, "{dpo}");
    assert!(loss(kto, "last_loss") < loss(kto, "first_loss") - 0.01, "{kto}");
    assert!(loss(dpo, "last_loss") < loss(dpo, "first_loss") - 0.01, "{dpo}");

    // --sft-only skips them.
    let (ok, stdout, stderr) =
        train(&home, &fixture("tiny-qwen2-trainable"), &data, &[&args[..], &["--sft-only"]].concat());
    assert!(ok, "{stderr}");
    assert_eq!(report_stages(&stdout), ["sft"]);

    // --steps bounds the whole run: 6 + 8 + 4 updates planned by epochs, 8 given, shared in
    // proportion (KTO 8·8/18, DPO 4·8/18, SFT the rest).
    let steps = ["--steps", "8", "--epochs", "4", "--batch", "4", "--dropout", "0"];
    let (ok, stdout, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &steps);
    assert!(ok, "{stderr}");
    assert_eq!(stage_steps(&stdout), [("sft".to_owned(), 4), ("kto".to_owned(), 3), ("dpo".to_owned(), 1)]);

    // --after-sft-steps bounds the stages after SFT together (KTO 8·3/12 and DPO 4·3/12), so
    // variants of those stages can be compared at equal updates after the same SFT.
    let after = ["--sft-steps", "2", "--after-sft-steps", "3", "--epochs", "4", "--batch", "4", "--dropout", "0"];
    let (ok, stdout, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &after);
    assert!(ok, "{stderr}");
    assert_eq!(stage_steps(&stdout), [("sft".to_owned(), 2), ("kto".to_owned(), 2), ("dpo".to_owned(), 1)]);
    let (ok, _, stderr) =
        train(&home, &fixture("tiny-qwen2-trainable"), &data, &["--steps", "4", "--after-sft-steps", "2"]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");

    // The runs above kept their speed. Without it, a budget measures it first (once: it is kept,
    // 0600); one too short for anything but one update leaves the preference stages out.
    let speeds = home.join("train/speed.json");
    assert!(speeds.exists());
    std::fs::remove_file(&speeds).unwrap();
    let budget = ["--epochs", "4", "--batch", "4", "--dropout", "0", "--budget", "1s"];
    let (ok, stdout, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &budget);
    assert!(ok, "{stderr}");
    assert_eq!(report_stages(&stdout), ["sft"]);
    assert_eq!(super::train::report(&stdout)["steps"], 1);
    assert!(stderr.contains("measuring this machine's training speed"), "{stderr}");
    assert!(stderr.contains("planned for the ") && stderr.contains(" left: sft 1 updates, about "), "{stderr}");
    let known: Value = serde_json::from_str(&std::fs::read_to_string(&speeds).unwrap()).unwrap();
    let (key, rate) = known.as_object().unwrap().iter().next().unwrap();
    assert!(key.contains("qlora=false") && rate.as_f64().unwrap() > 0.0, "{known}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&speeds).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (ok, _, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &budget);
    assert!(ok && !stderr.contains("measuring"), "measured once: {stderr}");
    let (ok, _, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &["--budget", "2 hours"]);
    assert!(!ok && stderr.contains("is not a duration like 2h"), "{stderr}");
}

/// The reward stage's items for the memory examples in `data` (written there): each prompt twice,
/// the author's code taken (1.0) and a wrong suggestion rejected (−0.5).
fn reward_items(data: &Path) -> Vec<Value> {
    let items: Vec<Value> = memory_examples()
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            let item = |completion: Value, action: &str, reward: f64| {
                json!({"id": format!("{action}{i}"), "prefix": e["prefix"], "suffix": e["suffix"],
                       "completion": completion, "action": action, "reward": reward})
            };
            [item(e["completion"].clone(), "accepted", 1.0), item(json!(format!("print({i})")), "rejected", -0.5)]
        })
        .collect();
    std::fs::write(data.join("reward.jsonl"), items.iter().map(|v| format!("{v}\n")).collect::<String>()).unwrap();
    items
}

#[test]
fn a_run_killed_in_its_reward_stage_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    reward_items(&data);
    let args = [
        "--sft-steps",
        "2",
        "--epochs",
        "12",
        "--batch",
        "3",
        "--dropout",
        "0",
        "--reward",
        "--no-preference",
        "--checkpoint-every",
        "3",
        "--seed",
        "3",
    ];
    let whole = home_with_config(&dir.path().join("whole"), "[train]\npreference_lr = 0.01\n");
    let (ok, stdout, stderr) = train(&whole, &model, &data, &args);
    assert!(ok, "{stderr}");
    assert_eq!(report_stages(&stdout), ["sft", "reward"]);

    let broken = home_with_config(&dir.path().join("broken"), "[train]\npreference_lr = 0.01\n");
    // Well inside the reward stage (updates 3 to 50).
    killed_after_checkpoint(&broken, &model, &data, &args, 15);
    let (ok, stdout, stderr) = train(&broken, &model, &data, &[&args[..], &["--resume"]].concat());
    assert!(ok, "{stderr}");
    assert!(report(&stdout)["resumed_from"].as_u64().unwrap() >= 15);
    assert!(
        same_tensors(&whole.join("adapters/python/v1"), &broken.join("adapters/python/v1")),
        "the resumed run's adapter differs from the uninterrupted one"
    );
}

#[test]
fn the_reward_stage_raises_rewarded_suggestions_over_punished_ones_within_its_trust_region() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[train]\npreference_lr = 0.01\n");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    let reward = reward_items(&data);
    let lines = |items: &[Value]| items.iter().map(|v| format!("{v}\n")).collect::<String>();

    // Every update on the whole set, so the first and the last loss are on the same items.
    let args = ["--sft-steps", "2", "--epochs", "12", "--batch", "12", "--dropout", "0", "--reward", "--no-preference"];
    let (ok, stdout, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &args);
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    assert_eq!(report["reward_items"], 12);
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(names, ["sft", "reward"]);
    let stage = &stages[1];
    assert_eq!(stage["steps"], 12);
    // At the reference every ratio is 1, and the leave-one-out advantages (±9/11 here) sum to 0:
    // the surrogate starts at 0. Rewarded suggestions gaining on punished ones make it negative;
    // the trust region bounds each item's gain at ε · 9/11.
    let loss = |key: &str| stage[key].as_f64().unwrap();
    assert!(loss("first_loss").abs() < 1e-6, "{stage}");
    assert!(loss("last_loss") < -0.01 && loss("last_loss") >= -0.2 * 9.0 / 11.0 - 1e-9, "{stage}");

    // Asked for but without its data: nothing to learn from, the stage is left out.
    std::fs::remove_file(data.join("reward.jsonl")).unwrap();
    let (ok, stdout, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &args);
    assert!(ok, "{stderr}");
    assert_eq!(report_stages(&stdout), ["sft"]);

    // A reward item without its reward names the file and the line.
    let broken = lines(&reward).replacen("\"reward\":1.0", "\"rewarded\":1.0", 1);
    std::fs::write(data.join("reward.jsonl"), broken).unwrap();
    let (ok, _, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &args);
    assert!(
        !ok && stderr.contains("reward.jsonl") && stderr.contains("line 1") && stderr.contains("reward"),
        "{stderr}"
    );
    let (ok, _, stderr) = train(&home, &fixture("tiny-qwen2-trainable"), &data, &["--reward", "--sft-only"]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
}

fn report_stages(stdout: &str) -> Vec<String> {
    report(stdout)["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap().to_owned()).collect()
}

/// Each stage of the report with its number of updates.
fn stage_steps(stdout: &str) -> Vec<(String, u64)> {
    let stages = report(stdout)["stages"].clone();
    stages
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_owned(), s["steps"].as_u64().unwrap()))
        .collect()
}

/// A new version reaches the disk before it replaces anything (finding 10 of the hardening
/// audit): every file of it and its directory are synced before the rename that publishes it,
/// and the parent directory after it. Checked on the real binary's system calls with strace.
#[test]
fn an_adapter_is_on_disk_before_it_is_renamed_into_place() {
    let strace = std::path::Path::new("/usr/bin/strace");
    assert!(strace.exists(), "this test reads system calls with strace (Debian package strace)");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dataset(dir.path(), &memory_examples(), &[]);
    let trace = dir.path().join("trace");
    let (model, data_dir) = (fixture("tiny-qwen2-trainable"), data.to_str().unwrap().to_owned());
    let out = Command::new(strace)
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", &home)
        .args(["train", "--language", "python", "--model", model.to_str().unwrap(), "--data", &data_dir])
        .args(["--steps", "2", "--batch", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    let published = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains(".v1.tmp") && l.contains("/adapters/python/v1\""))
        .unwrap_or_else(|| panic!("no rename of .v1.tmp to v1:\n{calls}"));
    let synced_before = |what: &str| lines[..published].iter().any(|l| l.contains("fsync(") && l.contains(what));
    for file in ["adapter_model.safetensors", "adapter_config.json", "marunochi.json"] {
        assert!(synced_before(&format!(".v1.tmp/{file}>")), "{file} synced before the rename:\n{calls}");
    }
    assert!(synced_before(".v1.tmp>"), "the new directory synced before the rename:\n{calls}");
    let parent = format!("{}>", home.join("adapters/python").display());
    assert!(
        lines[published..].iter().any(|l| l.contains("fsync(") && l.contains(&parent)),
        "the parent directory synced after the rename:\n{calls}"
    );
}

const FULL_DISK_ENV: &str = "MARUNOCHI_TEST_FULL_DISK";

/// Bytes of every file below `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { tree_bytes(&p) } else { p.metadata().unwrap().len() })
        .sum()
}

/// Every file below `dir` with its contents, to compare before and after.
fn tree_contents(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if path.is_dir() {
            files.extend(tree_contents(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// Fills the disk holding `filler` until the kernel says it is full, then gives `free` bytes back.
fn fill_disk(filler: &Path, free: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(free)).unwrap();
}

/// The inside of the full-disk test: root of a user and mount namespace of its own, so that a
/// small tmpfs can be a really full disk (ENOSPC).
fn full_disk_scenario(dir: &Path) {
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let target = std::ffi::CString::new(disk.to_str().unwrap()).unwrap();
    // SAFETY: mount(2) with valid C strings; in this process's own mount namespace.
    let mounted =
        unsafe { libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=16m".as_ptr().cast()) };
    assert_eq!(mounted, 0, "mounting a tmpfs: {}", std::io::Error::last_os_error());
    let home = home_with_config(&disk, "");
    let model = fixture("tiny-qwen2");
    let data = dataset(dir, &memory_examples(), &[]);
    let filler = disk.join("filler");

    // The store: rows committed before the disk filled up are kept, a write that does not fit is
    // a clear error, and writing works again once there is room.
    let db = home.join("marunochi.db");
    let mut store = marunochi::store::Store::open(&db).unwrap();
    let row = |i: i64| marunochi::store::Shown {
        suggestion: "x".repeat(4000),
        ..shown_row(&format!("row-{i}"), "file:///p/a.py", 1_764_000_000_000 + i)
    };
    for i in 0..10 {
        store.batch(|b| b.shown(&row(i))).unwrap();
    }
    fill_disk(&filler, 0);
    let full = (10..200).find_map(|i| store.batch(|b| b.shown(&row(i))).err()).expect("a write fails on a full disk");
    assert!(full.to_string().contains("marunochi.db") && full.to_string().contains("full"), "{full}");
    std::fs::remove_file(&filler).unwrap();
    let kept = store.count().unwrap();
    assert!(kept >= 10, "rows committed before the disk filled: {kept}");
    assert_eq!(store.integrity().unwrap(), "ok");
    store.batch(|b| b.shown(&row(1000))).unwrap();
    drop(store);

    // A first version.
    let (ok, _, stderr) = train(&home, &model, &data, &["--steps", "2", "--checkpoint-every", "0"]);
    assert!(ok, "{stderr}");
    let v1 = home.join("adapters/python/v1");
    let version_one = tree_contents(&v1);

    // The next version cannot be written: a clear error, no half-written version left.
    fill_disk(&filler, 0);
    let (ok, _, stderr) = train(&home, &model, &data, &["--steps", "1", "--checkpoint-every", "0"]);
    assert!(!ok);
    assert!(stderr.contains("No space left on device") && stderr.contains("adapters/python"), "{stderr}");
    let versions: Vec<_> =
        std::fs::read_dir(home.join("adapters/python")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(versions, vec![std::ffi::OsString::from("v1")], "no half-written version");
    assert_eq!(tree_contents(&v1), version_one, "the earlier version is whole");
    std::fs::remove_file(&filler).unwrap();

    // How big a checkpoint is: a run of the next version stopped at once leaves one.
    let args = ["--steps", "3", "--checkpoint-every", "1"];
    let (ok, _, stderr) = train(&home, &model, &data, &[&args[..], &["--until", "2000-01-01T00:00:00Z"]].concat());
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    let checkpoint = home.join("train/python/checkpoint");
    let size = tree_bytes(&checkpoint);

    // Room for one checkpoint and a half: the one after the first update is written, the next
    // (written beside it before it replaces it) is not. A clear error; that checkpoint and v1 whole.
    fill_disk(&filler, size / 2);
    let (ok, stdout, stderr) = train(&home, &model, &data, &[&args[..], &["--restart"]].concat());
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("No space left on device") && stderr.contains("checkpoint"), "{stderr}");
    let state: Value = serde_json::from_slice(&std::fs::read(checkpoint.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], json!(1), "the checkpoint of the first update is in place");
    assert_eq!(tree_contents(&v1), version_one, "the earlier version is whole");

    // Room again: the stopped run resumes from its checkpoint and finishes.
    std::fs::remove_file(&filler).unwrap();
    let (ok, stdout, stderr) = train(&home, &model, &data, &[&args[..], &["--resume"]].concat());
    assert!(ok, "{stderr}");
    let report = report(&stdout);
    assert_eq!((report["version"].as_str(), report["resumed_from"].as_u64()), (Some("v2"), Some(1)), "{report}");
}

#[test]
fn a_really_full_disk_costs_no_stored_row_checkpoint_or_version_and_training_resumes() {
    if let Some(dir) = std::env::var_os(FULL_DISK_ENV) {
        full_disk_scenario(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "train::a_really_full_disk_costs_no_stored_row_checkpoint_or_version_and_training_resumes"])
        .args(["--nocapture", "--test-threads=1"])
        .env(FULL_DISK_ENV, dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}\n{stderr}");
}
