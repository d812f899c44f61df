//! `marunochi curate` on a real store: graded interactions in, per-language JSONL/TRL/Axolotl files
//! out (private, parseable, the held-out split apart); bad input gets clear errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;
use marunochi::store::{Action, Store};
use serde_json::Value;

fn curate(home: &Path, args: &[&str]) -> (bool, String, String) {
    run_cli(home, &[&["curate"], args].concat())
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn graded_interactions_become_private_training_files_in_three_formats() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut store = Store::open(&home.join("marunochi.db")).unwrap();
    for n in 0..10 {
        graded(
            &mut store,
            n,
            &project,
            &format!("result_{n} = compute_{n}(value_{n}) * factor_{n} + offset_{n}"),
            n == 3,
        );
    }
    // One suggestion ignored and one still undecided: the reward stage learns from the first only.
    let uri = format!("file://{}/m0.py", project.display());
    for id in ["i1", "u1"] {
        store.batch(|b| b.shown(&shown_row(id, &uri, SHOWN_AT_MS + 30_000))).unwrap();
    }
    let ignored = marunochi::store::Decided { id: "i1", action: Action::Ignored, ..Default::default() };
    store.batch(|b| b.outcome(&ignored)).unwrap();
    store.record_run(&passing_run(&project)).unwrap();
    marunochi::quality::rescore(&mut store).unwrap();
    drop(store);

    let out = dir.path().join("sets");
    let (ok, stdout, stderr) = curate(&home, &["--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("python: 9 training examples (score 9; 0 replay, 9 clusters"), "{stdout}");
    assert!(stdout.contains("1 held out") && stdout.contains("9 KTO, 1 DPO pairs, 10 reward items"), "{stdout}");
    let reward = jsonl(&out.join("python/reward.jsonl"));
    let ignored = reward.iter().find(|e| e["id"] == "i1").expect("the ignored suggestion");
    assert_eq!((ignored["reward"].as_f64(), ignored["completion"].as_str()), (Some(-1.0), Some("suggestion i1")));
    let corrected = reward.iter().find(|e| e["id"] == "s03").expect("the corrected suggestion");
    assert_eq!(
        (corrected["completion"].as_str(), corrected["action"].as_str()),
        (Some("old_guess()"), Some("corrected"))
    );
    assert!(!reward.iter().any(|e| e["id"] == "u1" || e["id"] == "s09"), "undecided and held out: not rewards");

    let python = out.join("python");
    let train = jsonl(&python.join("train.jsonl"));
    assert_eq!(train.len(), 9);
    let corrected = train.iter().find(|e| e["id"] == "s03").unwrap();
    assert_eq!((corrected["priority"].as_f64(), corrected["action"].as_str()), (Some(3.0), Some("corrected")));
    assert_eq!(jsonl(&python.join("heldout.jsonl"))[0]["id"], "s09", "the newest is held out");
    let sft = jsonl(&python.join("trl/sft.jsonl"));
    assert!(sft[0]["prompt"].as_str().unwrap().starts_with("<|fim_prefix|>def f0():"), "{}", sft[0]);
    assert!(sft[0]["completion"].as_str().unwrap().starts_with("result_0 = "));
    let dpo = jsonl(&python.join("trl/dpo.jsonl"));
    assert_eq!((dpo[0]["rejected"].as_str(), dpo.len()), (Some("old_guess()"), 1));
    let kto = jsonl(&python.join("trl/kto.jsonl"));
    assert!(kto.iter().all(|e| e["label"] == true) && kto.len() == 9, "the held-out one is not in KTO either");
    let axolotl = jsonl(&python.join("axolotl/sft.jsonl"));
    assert_eq!(
        (axolotl[0]["segments"][0]["label"].as_bool(), axolotl[0]["segments"][1]["label"].as_bool()),
        (Some(false), Some(true))
    );
    for file in ["train.jsonl", "trl/sft.jsonl", "axolotl/dpo.jsonl", "summary.json"] {
        let mode = std::fs::metadata(python.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }

    // Scale out: what TRL or Axolotl needs next to the data, for the model being served.
    let (ok, _, stderr) = curate(&home, &["--out", out.to_str().unwrap(), "--for", "trl"]);
    assert!(!ok && stderr.contains("pass --base-model"), "a GGUF or no model is nothing TRL trains: {stderr}");
    let base = ["--base-model", "Qwen/Qwen2.5-Coder-1.5B"];
    let (ok, _, stderr) = curate(&home, &[&["--out", out.to_str().unwrap(), "--for", "trl"][..], &base].concat());
    assert!(ok, "{stderr}");
    let script = python.join("trl/train.py");
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("\"base_model\": \"Qwen/Qwen2.5-Coder-1.5B\"") && text.contains("\"rank\": 16"), "{text}");
    let (ok, _, stderr) = curate(&home, &[&["--out", out.to_str().unwrap(), "--for", "axolotl"][..], &base].concat());
    assert!(ok, "{stderr}");
    let config = std::fs::read_to_string(python.join("axolotl/config.yml")).unwrap();
    assert!(config.contains("base_model: \"Qwen/Qwen2.5-Coder-1.5B\"") && config.contains("lora_r: 16"), "{config}");
    assert!(!python.join("axolotl/dpo.yml").exists(), "one correction pair is no DPO stage");
    for file in ["trl/train.py", "trl/accelerate.yaml", "axolotl/config.yml", "axolotl/accelerate.yaml"] {
        let mode = std::fs::metadata(python.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }

    // At 95 the seed's score (75: no test report) falls short, but everything that was observed
    // was perfect; with the seed's score alone nothing is admitted, and it says so.
    let (ok, stdout, _) = curate(&home, &["--out", out.to_str().unwrap(), "--min-quality", "95"]);
    assert!(ok && stdout.starts_with("python: 9 training examples (observed 9;"), "{stdout}");
    let (ok, _, stderr) = run_cli(&home, &["config", "set", "curate.seed_score_only", "true"]);
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = curate(&home, &["--out", out.to_str().unwrap(), "--min-quality", "95"]);
    assert!(
        ok && stdout.starts_with("python: 0 training examples (none admitted;")
            && stdout.contains("9 taken but not admitted at 95"),
        "{stdout}"
    );
    // An unknown language is an error.
    let (ok, _, stderr) = curate(&home, &["--language", "cobol", "--out", out.to_str().unwrap()]);
    assert!(!ok && stderr.contains("no interactions recorded for cobol"), "{stderr}");
    let (ok, _, stderr) = curate(&home, &["--since", "last week"]);
    assert!(!ok && stderr.contains("not an RFC 3339 time"), "{stderr}");
}

#[test]
fn nothing_recorded_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let (ok, _, stderr) = curate(&home, &[]);
    assert!(!ok && stderr.contains("nothing recorded yet"), "{stderr}");
}

#[test]
fn a_language_with_little_history_learns_from_the_files_worked_in() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut store = Store::open(&home.join("marunochi.db")).unwrap();
    for n in 0..3 {
        graded(&mut store, n, &project, &format!("result_{n} = compute_{n}(value_{n}) * factor_{n}"), false);
    }
    store.record_run(&passing_run(&project)).unwrap();
    marunochi::quality::rescore(&mut store).unwrap();
    drop(store);
    // The file the first suggestion was made in, as it is now: two functions of the user's own.
    let code = "def ledger_total(entries):\n    return sum(e.amount for e in entries)\n\n\n\
                def ledger_names(entries):\n    return sorted({e.name for e in entries})\n";
    std::fs::write(project.join("m0.py"), code).unwrap();

    let out = dir.path().join("sets");
    let (ok, stdout, stderr) = curate(&home, &["--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let train = jsonl(&out.join("python/train.jsonl"));
    let workspace: Vec<&Value> = train.iter().filter(|e| e["action"] == "workspace").collect();
    assert_eq!(workspace.len(), 2, "{stdout}");
    assert_eq!(workspace[0]["prefix"], "def ledger_total(entries):\n");
    assert_eq!(workspace[0]["completion"], "    return sum(e.amount for e in entries)");
    assert_eq!((workspace[0]["weight"].as_f64(), workspace[0]["replay"].as_bool()), (Some(0.5), Some(true)));
    assert!(stdout.contains("(score 2, workspace 2; 2 replay"), "{stdout}");
}

fn git(repo: &Path, args: &[&str]) {
    let status = std::process::Command::new("git").arg("-C").arg(repo).args(args).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn functions_mined_from_your_git_history_train_hold_out_and_can_be_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let repo = dir.path().join("shop");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["config", "user.email", "me@home"]);
    git(&repo, &["config", "user.name", "Me"]);
    let mut text = String::new();
    for n in 0..12 {
        text.push_str(&format!(
            "def price_{n}(cart):\n    total = sum(item.cost_{n} for item in cart)\n    return round(total * {n}, 2)\n\n"
        ));
        std::fs::write(repo.join("shop.py"), &text).unwrap();
        git(&repo, &["add", "-A"]);
        let author = if n == 5 { "Other <other@x>" } else { "Me <me@home>" };
        let date = format!("--date=2026-0{}-{:02}T10:00:00Z", 1 + n / 6, 1 + n);
        git(&repo, &["commit", "-q", "-m", "c", &format!("--author={author}"), &date]);
    }
    // An edit of one of the older functions: a correction pair.
    text = text.replace("return round(total * 1, 2)", "return round(total, 2)  # no factor");
    std::fs::write(repo.join("shop.py"), &text).unwrap();
    git(&repo, &["commit", "-qam", "edit", "--date=2026-01-20T10:00:00Z"]);

    let (ok, _, stderr) = run_cli(&home, &["data", "mine", repo.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("12 version(s) of functions by <me@home> (python 12; 1 edit(s) of existing ones), 12 new"),
        "{stderr}"
    );
    let (ok, _, missing) = run_cli(&home, &["data", "mine", repo.join("sub").to_str().unwrap()]);
    assert!(!ok && missing.contains("shop/sub"), "{missing}");
    let (ok, _, again) = run_cli(&home, &["data", "mine", repo.to_str().unwrap()]);
    assert!(ok && again.contains(", 0 new"), "mining twice adds nothing: {again}");
    let (ok, stdout, stderr) = run_cli(&home, &["stats"]);
    assert!(ok && stdout.contains("Training data (examples each rule admits at quality 70"), "{stdout}{stderr}");
    assert!(stdout.contains("  python: git 11\n"), "11 functions, one of them in two versions: {stdout}");

    let out = dir.path().join("sets");
    let (ok, stdout, stderr) = curate(&home, &["--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("python: 9 training examples (git 9; "), "{stdout}");
    assert!(stdout.contains("0 held out (+2 from git)") && stdout.contains("1 DPO pairs"), "{stdout}");
    let python = out.join("python");
    let held: Vec<String> =
        jsonl(&python.join("heldout-git.jsonl")).iter().map(|e| e["completion"].as_str().unwrap().to_owned()).collect();
    assert!(held[0].contains("cost_10") && held[1].contains("cost_11"), "the newest functions: {held:?}");
    let mode = std::fs::metadata(python.join("heldout-git.jsonl")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let train = jsonl(&python.join("train.jsonl"));
    assert!(train.iter().all(|e| e["action"] == "git" && !e["completion"].as_str().unwrap().contains("cost_5")));
    let pair = &jsonl(&python.join("dpo.jsonl"))[0];
    assert_eq!(pair["chosen"], "total = sum(item.cost_1 for item in cart)\n    return round(total, 2)  # no factor");

    let (ok, _, stderr) = run_cli(&home, &["data", "forget", "--file", repo.to_str().unwrap()]);
    assert!(ok && stderr.contains("forgot 0 interaction(s) and 12 function(s) mined from git"), "{stderr}");
    assert!(Store::open(&home.join("marunochi.db")).unwrap().git_functions().unwrap().is_empty());
}

#[test]
fn mining_without_a_repository_or_an_identity_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "");
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let (ok, _, stderr) = run_cli(&home, &["data", "mine", plain.to_str().unwrap()]);
    assert!(!ok && stderr.contains("not a git repository"), "{stderr}");
    let repo = dir.path().join("anon");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["config", "user.email", ""]);
    let (ok, _, stderr) = run_cli(&home, &["data", "mine", repo.to_str().unwrap()]);
    assert!(!ok && stderr.contains("no user.email") && stderr.contains("--author"), "{stderr}");
}
