//! Learning from a user's own history, replayed on real public repositories: the main author's
//! functions up to the pinned commit are mined (`marunochi data mine`), an adapter is trained on
//! them within a time budget (`marunochi train --budget`, the plan a night gets), and the gate
//! (`marunochi eval`) judges it against the base model on the newest fifth of the author's
//! functions, which curation held out (never trained on). Printed side by side per repository:
//! first-line exact match and edit similarity (on as many lines as the completion has, as the
//! replay benchmark scores; paired per function too: similarity better : worse, first lines gained
//! and lost) and the gate's own figures, base vs adapter, plus the plan's predicted
//! training time against the real one.
//!
//! `./scripts/test-deps.sh && ./scripts/replay-repos.sh && cargo bench --bench learning`
//!
//! REPOS=name,name (default `cachetools`), BUDGET (default `30m`; a night is the `[schedule]`
//! window, 5 h by default), EXAM=n held-out functions judged (default 40, the newest), MODEL=path
//! (default SmolLM2). Each repository's home is kept in `target/learning/<name>-<stages>/` (its
//! store, datasets, adapter and `eval.json`).
//!
//! The stages after SFT: STAGES=preference (default: KTO and DPO), `reward` (the reward stage
//! instead), `sft` (none). OUTCOMES=1 adds a user's outcomes on real suggestions: the store that
//! `SILENCE=1 cargo bench --bench replay` keeps in `target/replay-silence/<name>.db` (suggestions
//! taken, taken in part or rejected as the author's code dictates) becomes the home's store before
//! mining; OUTCOMES=older takes `<name>-older.db` (`SPAN=older`: older functions). Its suggestions made where an exam function starts are removed first (by the
//! function's signature line), so no stage learns from the exam's own prompts.
//!
//! ADAPTER=lora (the default), `tt` (TT-LoRA) or `dora`, each asked for in a home of its own;
//! the row shows the numbers each trained, its size on disk and its speed.
//!
//! LANGUAGE=name trains and judges that language of the repositories instead of their own: `sql`
//! for the SQL strings of sqlite-utils' Python (mined as rows of their own), in a home of its own.
//!
//! VALIDATE_EVERY=n sets SFT's checks (`--validate-every`; 0: every planned update runs), in a
//! home of its own. MARUNOCHI_BIN=path runs that copy of the binary, so that a rebuild during a
//! long run does not change what its later steps run.
//!
//! LR=x sets SFT's learning rate (`--lr`, default 2e-4).
//!
//! STEPS=n trains exactly n updates (`--steps`, shared among the stages) instead of a budget:
//! variants compared at equal updates whatever else the machine was doing (a budget's plan
//! depends on the speed measured at its start).
//!
//! SFT_STEPS=n and AFTER_SFT_STEPS=m train n SFT updates and m updates of the stages after it
//! (`--sft-steps`, `--after-sft-steps`): STAGES=reward against STAGES=preference at equal updates
//! after the same SFT.
//!
//! PROMPT_TOKENS=n trains on prompts cut to their last n tokens (`[train] max_prompt_tokens`,
//! default 512); the exam's prompts stay as served.
//!
//! GENERAL_SHARE=x makes x of the training set general code (`[curate] general_share`: standard
//! library functions the gate's forgetting check does not score).
//!
//! COOLDOWN=x sets `[train] cooldown` (the share of the kept check's updates SFT cools down for
//! when its checks stop it early; 0: none).
//!
//! RESUME=1 continues a run that was stopped (killed, machine restarted) in its kept home: no
//! mining, `train --resume` with the same variables, then the exam. A night-long run outlives a
//! working session this way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// Name, pinned commit (as in `scripts/replay-repos.sh`), main author, language.
const REPOS: [(&str, &str, &str, &str); 4] = [
    ("cachetools", "28d4506f2a49d781ffbcecb095fa7aba5bb80aff", "tkemmer@computer.org", "python"),
    ("more-itertools", "2fe1b2eeb9d75f994113fe3ac76d14b6bcd6fb10", "bbayles@gmail.com", "python"),
    ("walkdir", "6fd031c82ba5a4204b4ce6eae73dacb00dc072ec", "jamslam@gmail.com", "rust"),
    ("sqlite-utils", "56dd09702fdb9e899f577ffd51693c1f2176cb08", "swillison@gmail.com", "python"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn marunochi(home: &Path, args: &[&str]) -> (String, String) {
    // MARUNOCHI_BIN: a copy of the binary, so that rebuilding target/release during a long run
    // does not change what its later steps run.
    let binary = std::env::var_os("MARUNOCHI_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_marunochi").into());
    let out = Command::new(binary).env("MARUNOCHI_HOME", home).args(args).output().expect("marunochi runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    // The gate exits 3 when the candidate is rejected; that is a result here.
    assert!(out.status.success() || out.status.code() == Some(3), "marunochi {args:?}: {stderr}");
    (stdout, stderr)
}

fn first_line(text: &str) -> &str {
    text.trim_start().lines().next().unwrap_or("").trim_end()
}

/// The author's code cut to as many lines as the completion has.
fn same_lines<'a>(expected: &'a str, completion: &str) -> &'a str {
    let lines = completion.trim_end().lines().count().max(1);
    match expected.match_indices('\n').nth(lines - 1) {
        Some((end, _)) => &expected[..end],
        None => expected,
    }
}

struct Side {
    first_line: f64,
    similarity: f64,
    answered: f64,
}

/// One completion's score: its first line is the author's, and its edit similarity (0 when empty).
fn scored(example: &Value, which: &str) -> Option<(bool, f64)> {
    let expected = example["expected"].as_str().unwrap_or_default();
    let completion = example[which]["completion"].as_str().unwrap_or_default();
    if completion.trim().is_empty() {
        return None;
    }
    let similarity = marunochi::eval::stats::edit_similarity(completion.trim_end(), same_lines(expected, completion));
    Some((first_line(completion) == first_line(expected), similarity))
}

fn side(examples: &[Value], which: &str) -> Side {
    let n = examples.len().max(1) as f64;
    let (mut first, mut similarity, mut answered) = (0.0, 0.0, 0.0);
    for (is_first, s) in examples.iter().filter_map(|e| scored(e, which)) {
        answered += 1.0;
        first += f64::from(is_first);
        similarity += s;
    }
    Side { first_line: first / n, similarity: similarity / n, answered: answered / n }
}

/// Per function, adapter against base: similarity better / worse, first lines gained / lost.
fn paired(examples: &[Value]) -> String {
    let (mut better, mut worse, mut gained, mut lost) = (0, 0, 0, 0);
    for e in examples {
        let (base, adapter) = (scored(e, "reference").unwrap_or_default(), scored(e, "candidate").unwrap_or_default());
        better += usize::from(adapter.1 > base.1);
        worse += usize::from(adapter.1 < base.1);
        gained += usize::from(adapter.0 && !base.0);
        lost += usize::from(base.0 && !adapter.0);
    }
    format!("{better} : {worse}, first lines +{gained} −{lost}")
}

/// The last line of `prefix` that starts a function: where a request for its body was made.
fn signature(prefix: &str) -> Option<&str> {
    let starts =
        |l: &&str| l.starts_with("def ") || l.starts_with("async def ") || (l.contains("fn ") && l.ends_with('{'));
    prefix.lines().rev().map(str::trim).find(starts)
}

/// Removes from the home's store the suggestions made where a held-out function starts.
fn drop_exam_prompts(home: &Path, language: &str) -> usize {
    let out = home.join("curated-before-pruning");
    marunochi(home, &["curate", "--language", language, "--out", out.to_str().unwrap()]);
    let held = std::fs::read_to_string(out.join(language).join("heldout-git.jsonl")).unwrap();
    let signatures: HashSet<String> = held
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| signature(e["prefix"].as_str()?).map(str::to_owned))
        .collect();
    let db = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT id, coalesce(prompt_prefix, '') FROM interactions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let exam: Vec<&String> = rows
        .iter()
        .filter(|(_, prefix)| signature(prefix).is_some_and(|s| signatures.contains(s)))
        .map(|(id, _)| id)
        .collect();
    for id in &exam {
        db.execute("DELETE FROM interactions WHERE id = ?1", [id]).unwrap();
    }
    exam.len()
}

/// A fresh home: the replayed outcomes (if asked), the author's mined functions, and no outcome
/// on an exam function's own prompt.
fn prepare(
    home: &Path,
    (name, commit, author, language): (&str, &str, &str, &str),
    mirror: &Path,
    outcomes: Option<&str>,
) {
    let _ = std::fs::remove_dir_all(home);
    std::fs::create_dir_all(home).unwrap();
    if let Some(span) = outcomes {
        let kept = root().join("target/replay-silence").join(format!("{name}{span}.db"));
        assert!(
            kept.exists(),
            "{} is missing: run SILENCE=1{} REPOS={name} cargo bench --bench replay",
            kept.display(),
            if span.is_empty() { "" } else { " SPAN=older" }
        );
        std::fs::copy(&kept, home.join("marunochi.db")).unwrap();
    }
    eprintln!("== {name}: mining {author}'s functions up to {}", &commit[..12]);
    let (_, said) = marunochi(home, &["data", "mine", mirror.to_str().unwrap(), "--author", author, "--rev", commit]);
    eprint!("{said}");
    if outcomes.is_some() {
        let dropped = drop_exam_prompts(home, language);
        eprintln!("== {name}: {dropped} outcomes on the exam's own prompts removed");
    }
}

fn main() {
    let wanted = std::env::var("REPOS").unwrap_or_else(|_| "cachetools".into());
    let budget = std::env::var("BUDGET").unwrap_or_else(|_| "30m".into());
    let exam: usize = std::env::var("EXAM").ok().and_then(|n| n.parse().ok()).unwrap_or(40);
    let model = std::env::var_os("MODEL")
        .map_or_else(|| root().join(".test-deps/fixtures/smollm2-135m-instruct.gguf"), PathBuf::from);
    assert!(model.exists(), "{} is missing: run ./scripts/test-deps.sh", model.display());
    let model = model.to_str().expect("a UTF-8 path");
    let stages = std::env::var("STAGES").unwrap_or_else(|_| "preference".into());
    let stage_flags: &[&str] = match stages.as_str() {
        "preference" => &[],
        "reward" => &["--reward", "--no-preference"],
        "sft" => &["--sft-only"],
        other => panic!("STAGES={other}: preference, reward or sft"),
    };
    // A home per variant asked for: ADAPTER=lora does not reuse (and wipe) the default's home,
    // where a long run may be waiting to be resumed.
    let asked = std::env::var("ADAPTER").ok();
    let method = asked.clone().unwrap_or_else(|| "lora".into());
    let adapter_flags: &[&str] = match method.as_str() {
        "lora" => &[],
        "tt" => &["--tt-lora"],
        "dora" => &["--dora"],
        other => panic!("ADAPTER={other}: lora, tt or dora"),
    };
    let prompt_tokens = std::env::var("PROMPT_TOKENS").ok().map(|n| n.parse::<usize>().expect("PROMPT_TOKENS=n"));
    let general_share = std::env::var("GENERAL_SHARE").ok().map(|x| x.parse::<f64>().expect("GENERAL_SHARE=share"));
    let cooldown = std::env::var("COOLDOWN").ok().map(|x| x.parse::<f64>().expect("COOLDOWN=share"));
    let lr = std::env::var("LR").ok();
    let validate_every = std::env::var("VALIDATE_EVERY").ok();
    let steps = std::env::var("STEPS").ok();
    let sft_steps = std::env::var("SFT_STEPS").ok();
    let after_sft_steps = std::env::var("AFTER_SFT_STEPS").ok();
    let only = std::env::var("LANGUAGE").ok();
    let variant = only.as_ref().map(|l| format!("-{l}")).unwrap_or_default()
        + &asked.map(|m| format!("-{m}")).unwrap_or_default()
        + &steps.as_ref().map(|n| format!("-s{n}")).unwrap_or_default()
        + &sft_steps.as_ref().map(|n| format!("-sft{n}")).unwrap_or_default()
        + &after_sft_steps.as_ref().map(|n| format!("-after{n}")).unwrap_or_default()
        + &prompt_tokens.map(|n| format!("-p{n}")).unwrap_or_default()
        + &general_share.map(|x| format!("-general{x}")).unwrap_or_default()
        + &cooldown.map(|x| format!("-cool{x}")).unwrap_or_default()
        + &lr.as_ref().map(|lr| format!("-lr{lr}")).unwrap_or_default()
        + &validate_every.as_ref().map(|n| format!("-v{n}")).unwrap_or_default();
    let outcomes = match std::env::var("OUTCOMES").as_deref() {
        Ok("1") => Some(""),
        Ok("older") => Some("-older"),
        Ok(other) => panic!("OUTCOMES={other}: 1 or older"),
        Err(_) => None,
    };
    let resume = std::env::var_os("RESUME").is_some();
    let (mut rows, mut plans) = (Vec::new(), Vec::new());
    for &(name, commit, author, own) in REPOS.iter().filter(|(n, ..)| wanted.split(',').any(|w| w == *n)) {
        let language = only.as_deref().unwrap_or(own);
        let mirror = root().join(".test-deps/replay").join(format!("{name}.git"));
        assert!(mirror.exists(), "{} is missing: run ./scripts/replay-repos.sh", mirror.display());
        let home =
            root().join("target/learning").join(format!("{name}-{stages}{}{variant}", outcomes.unwrap_or_default()));
        if resume {
            assert!(home.join("marunochi.db").exists(), "RESUME=1: no run kept in {}", home.display());
        } else {
            prepare(&home, (name, commit, author, language), &mirror, outcomes);
            let mut config = String::from("[train]\n");
            if let Some(n) = prompt_tokens {
                config.push_str(&format!("max_prompt_tokens = {n}\n"));
            }
            if let Some(share) = cooldown {
                config.push_str(&format!("cooldown = {share}\n"));
            }
            if let Some(share) = general_share {
                config.push_str(&format!("[curate]\ngeneral_share = {share}\n"));
            }
            std::fs::write(home.join("config.toml"), config).unwrap();
        }

        let mut bound = match (&steps, &sft_steps) {
            (Some(n), _) => vec!["--steps", n.as_str()],
            (None, Some(n)) => vec!["--sft-steps", n.as_str()],
            (None, None) => vec!["--budget", budget.as_str()],
        };
        if let Some(n) = &after_sft_steps {
            bound.extend(["--after-sft-steps", n.as_str()]);
        }
        eprintln!("== {name}: training ({language}, {})", bound.join(" "));
        let started = Instant::now();
        let mut args = vec!["train", "--language", language, "--model", model, "--json"];
        args.extend(bound);
        args.extend(stage_flags);
        args.extend(adapter_flags);
        if let Some(lr) = &lr {
            args.extend(["--lr", lr]);
        }
        if let Some(n) = &validate_every {
            args.extend(["--validate-every", n]);
        }
        if resume {
            args.push("--resume");
        }
        let (report, said) = marunochi(&home, &args);
        let trained_s = started.elapsed().as_secs_f64();
        let report: Value = serde_json::from_str(&report).expect("train --json");
        // A budget's plan is printed at a run's start; a resumed run says where it went on from
        // instead, and updates asked for are the plan.
        let planned = match (said.lines().find(|l| l.contains("planned for the")), report["resumed_from"].as_u64()) {
            (Some(line), _) => line.to_owned(),
            (None, Some(step)) => format!("resumed at update {step} (planned when the run started)"),
            (None, None) => "no budget: the updates asked for are the plan".to_owned(),
        };
        eprintln!("{planned}");
        for check in report["checks"].as_array().into_iter().flatten() {
            eprintln!(
                "check at update {}: validation {} (top-1 {}) general {}",
                check["step"], check["validation"], check["top1"], check["general"]
            );
        }
        let cooled = report["cooldown"]["updates"].as_u64().map(|n| format!(", cooled down {n} updates"));
        let kept = match (report["stopped"].as_str(), report["kept"].as_u64()) {
            (Some(why), Some(kept)) => {
                format!("; SFT stopped ({why}){}, kept update {kept}", cooled.unwrap_or_default())
            }
            (None, Some(kept)) => format!("; kept update {kept}"),
            _ => String::new(),
        };
        let judged: String = report["judged"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|j| match j["undone"].as_str() {
                Some(why) => format!("; {} undone ({why})", j["stage"].as_str().unwrap_or("?")),
                None => format!("; {} kept", j["stage"].as_str().unwrap_or("?")),
            })
            .collect();
        let kept = kept + &judged;
        let data = PathBuf::from(report["directory"].as_str().unwrap()).join("marunochi.json");
        let metadata: Value = serde_json::from_str(&std::fs::read_to_string(data).unwrap()).unwrap();
        let data_dir = PathBuf::from(metadata["data"]["directory"].as_str().unwrap());

        // The newest `exam` of the held-out functions (curation holds out the newest fifth).
        let held = std::fs::read_to_string(data_dir.join("heldout-git.jsonl")).unwrap();
        let lines: Vec<&str> = held.lines().collect();
        let exam_file = home.join("exam.jsonl");
        std::fs::write(&exam_file, lines[lines.len().saturating_sub(exam)..].join("\n") + "\n").unwrap();
        eprintln!("== {name}: judging on {} of {} held-out functions", lines.len().min(exam), lines.len());
        let (gate, _) = marunochi(
            &home,
            &[
                "eval",
                "--language",
                language,
                "--model",
                model,
                "--heldout",
                exam_file.to_str().unwrap(),
                "--problems",
                "5",
                "--json",
            ],
        );
        let gate: Value = serde_json::from_str(&gate).expect("eval --json");
        let examples = gate["heldout"]["examples"].as_array().cloned().unwrap_or_default();
        let (base, adapter) = (side(&examples, "reference"), side(&examples, "candidate"));
        rows.push(format!(
            "| {name} | {} ex., {} KTO, {} DPO, {} reward; {} updates ({}{kept}) | {method}: {} numbers, {} KiB{} | {:.0} s / {:.0} s, {:.0} tok/s | {:.1} % / {:.3} / {:.0} % | {:.1} % / {:.3} / {:.0} % | {} | {} : {} , p {:.3} | {} | {} |",
            report["examples"],
            report["kto_examples"],
            report["dpo_pairs"],
            report["reward_items"],
            report["steps"],
            report["stages"].as_array().map(|s| s.iter().map(|s| format!("{} {}", s["stage"].as_str().unwrap_or(""), s["steps"])).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
            report["parameters"],
            report["peft_bytes"].as_u64().unwrap_or(0).div_ceil(1024),
            report["cores_bytes"].as_u64().map(|b| format!(" (cores {} KiB)", b.div_ceil(1024))).unwrap_or_default(),
            report["seconds"].as_f64().unwrap_or(0.0),
            trained_s,
            report["tokens_per_s"].as_f64().unwrap_or(0.0),
            base.first_line * 100.0,
            base.similarity,
            base.answered * 100.0,
            adapter.first_line * 100.0,
            adapter.similarity,
            adapter.answered * 100.0,
            paired(&examples),
            gate["heldout"]["wins"],
            gate["heldout"]["losses"],
            gate["heldout"]["sign_p"].as_f64().unwrap_or(1.0),
            match (gate["general"]["base_nll"].as_f64(), gate["general"]["candidate_nll"].as_f64()) {
                (Some(base), Some(candidate)) => format!("{base:.3} → {candidate:.3}"),
                _ => format!("skipped: {}", gate["general_note"].as_str().unwrap_or("no general corpus")),
            },
            match (gate["passed"] == true, gate["strength"].as_f64().unwrap_or(1.0)) {
                (true, strength) if strength < 1.0 => format!("passed at strength {strength}"),
                (true, _) => "passed".to_owned(),
                (false, _) => "rejected".to_owned(),
            },
        ));
        for judged in gate["tries"].as_array().into_iter().flatten() {
            eprintln!("gate at strength {}: {}", judged["strength"], judged["verdict"]);
        }
        plans.push(format!("{name}: {planned}"));
    }
    println!(
        "\n| repository | data, updates | adapter: trained numbers, PEFT size | training: updates' time / whole command, speed | base: first line / similarity / answered | adapter: same | per function: similarity better : worse | log-likelihood wins : losses | general-code NLL | gate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    for plan in plans {
        println!("{plan}");
    }
}
