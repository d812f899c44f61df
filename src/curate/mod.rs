//! `marunochi curate`: the user's graded interactions as training data, per language. Entries:
//! [`Dataset::build`] (pure: rows in, datasets out) and [`curate`] (the store in, files out).
//!
//! - **SFT examples**: accepted or corrected suggestions with quality ≥ `min_quality`, rebuilt as
//!   FIM examples from the stored prompt window with the *final* code as the target (a correction
//!   teaches what the user wanted). Weight = priority (corrected 3.0, execution failed 2.0,
//!   accepted 1.0) × SoftDedup 1/(1 + ln f) over near-duplicate clusters (`minhash.rs`).
//! - **Held out**: the newest `heldout_share` of each language's decided suggestions, by time;
//!   nothing from that span is trained on (SFT, KTO or DPO): the eval gate's ground.
//! - **Replay**: with `since` (the end of the previous training's data), older examples are the
//!   replay pool: the best of them make up `replay_share` of the set. A language with little
//!   history (< 50 examples) is topped up from the functions of the files the user worked in
//!   (`workspace.rs`), at half weight, never from held-out code.
//! - **General code** (`general.rs`, off by default): functions of the standard library's files
//!   that the gate does not score make up `general_share` of the set, rehearsed against forgetting.
//! - **Curriculum**: cyclomatic complexity < 5, 5–10, > 10, in that order (time within a tier).
//! - **KTO** (prompt, completion, desirable): accepted/corrected ones desirable, rejected ones not
//!   (weight 2.0 with a stated reason, 0.5 without). **DPO** pairs: corrected (final ≻ suggestion)
//!   and rejected with what was typed instead (typed ≻ suggestion).
//! - **Reward** (prompt, the suggestion as shown, the reward of its outcome: `reward.rs`): every
//!   decided suggestion, ignored ones included, for the optional reward stage.
//! - KTO, DPO and reward items never hold code of either held-out split, as SFT examples never do.
//!
//! Exported as our JSONL, TRL (prompt/completion, KTO label, DPO chosen/rejected) and Axolotl
//! (`input_output` segments, DPO). The text was redacted when it was stored.

mod general;
mod git;
mod minhash;
mod reward;
pub mod scaleout;
mod workspace;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::home::Language;
use crate::store::{Action, CurationRow, Forget, Forgotten, GitFunction, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Only this language (an LSP language id), or every one.
    pub language: Option<Language>,
    pub min_quality: f64,
    pub heldout_share: f64,
    pub replay_share: f64,
    /// Share of the training set made of general code (`general.rs`); 0: none.
    pub general_share: f64,
    /// RFC 3339: examples shown before this are the replay pool.
    pub since: Option<String>,
    /// Admit only by the seed's score (`quality::Rule::Score`), not by the other rules.
    pub seed_score_only: bool,
    /// Also write what another engine needs to train on the data (`--for trl|axolotl`).
    pub scale_out: Option<Box<scaleout::ScaleOut>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            language: None,
            min_quality: 70.0,
            heldout_share: 0.1,
            replay_share: 0.2,
            general_share: 0.0,
            since: None,
            seed_score_only: false,
            scale_out: None,
        }
    }
}

impl Options {
    /// The `[curate]` settings, for every language.
    pub fn from_config(config: &crate::config::CurateConfig) -> Options {
        Options {
            min_quality: config.min_quality,
            heldout_share: config.heldout_share,
            replay_share: config.replay_share,
            general_share: config.general_share,
            seed_score_only: config.seed_score_only,
            ..Options::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Example {
    pub id: String,
    pub timestamp: String,
    pub prefix: String,
    pub suffix: String,
    pub completion: String,
    pub action: String,
    /// priority × dedup.
    pub weight: f64,
    pub priority: f64,
    pub dedup: f64,
    /// Examples sharing a cluster are near-duplicates; `cluster_size` of them.
    pub cluster: usize,
    pub cluster_size: usize,
    pub complexity: Option<usize>,
    /// 0: CC < 5, 1: 5–10, 2: > 10.
    pub tier: u8,
    /// From the replay pool (older than `since`).
    pub replay: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KtoExample {
    pub id: String,
    pub prefix: String,
    pub suffix: String,
    pub completion: String,
    pub desirable: bool,
    pub weight: f64,
}

/// A suggestion as the model made it and the reward of what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RewardExample {
    pub id: String,
    pub prefix: String,
    pub suffix: String,
    /// The suggestion as shown.
    pub completion: String,
    pub action: String,
    pub reward: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Pair {
    pub id: String,
    pub prefix: String,
    pub suffix: String,
    pub chosen: String,
    pub rejected: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LanguageSet {
    pub train: Vec<Example>,
    pub heldout: Vec<Example>,
    /// The newest of the functions mined from the user's git history, never trained on.
    pub heldout_git: Vec<Example>,
    /// The newest mined functions before the held-out ones: never trained on, never judged;
    /// training watches its loss on them to stop once it has learnt.
    pub validation: Vec<Example>,
    /// Training examples by what admitted them: a `quality::Rule`'s name, `git`, `workspace`.
    pub admitted: BTreeMap<String, usize>,
    pub kto: Vec<KtoExample>,
    pub dpo: Vec<Pair>,
    pub reward: Vec<RewardExample>,
    /// Candidates below the quality bar.
    pub below_quality: usize,
    pub clusters: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub languages: BTreeMap<String, LanguageSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no interactions recorded for {0}")]
    NoData(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

fn priority(row: &CurationRow) -> f64 {
    match row.action {
        Action::Corrected => 3.0,
        _ if row.execution_failed => 2.0,
        Action::Rejected if row.comment.as_deref().is_some_and(|c| !c.trim().is_empty()) => 2.0,
        Action::Rejected => 0.5,
        _ => 1.0,
    }
}

fn tier(complexity: Option<usize>) -> u8 {
    match complexity {
        Some(cc) if cc > 10 => 2,
        Some(cc) if cc >= 5 => 1,
        _ => 0,
    }
}

impl Dataset {
    /// `rows` (answered and ignored suggestions: [`Store::curation_rows`], [`Store::ignored_rows`])
    /// and `mined` ([`Store::git_functions`]) oldest first.
    pub fn build(rows: &[CurationRow], mined: &[GitFunction], options: &Options) -> Dataset {
        // Redacted when stored; again here, in case a row came from an older version's rules.
        let rows: Vec<CurationRow> = rows.iter().map(redacted).collect();
        let mut by_language: BTreeMap<&str, Vec<&CurationRow>> = BTreeMap::new();
        for row in &rows {
            // A language id that cannot name a directory (an odd editor id, a Markdown fence such as
            // `../x`) would put the set outside `out`; the unknown language keeps its name `unknown`.
            let nameable = row.language.is_empty() || row.language.parse::<Language>().is_ok();
            if nameable && options.language.as_deref().is_none_or(|l| l == row.language) {
                by_language.entry(&row.language).or_default().push(row);
            }
        }
        let mut mined_by_language: BTreeMap<&str, Vec<&GitFunction>> = BTreeMap::new();
        for function in mined {
            if options.language.as_deref().is_none_or(|l| l == function.language) {
                mined_by_language.entry(&function.language).or_default().push(function);
                by_language.entry(&function.language).or_default();
            }
        }
        let languages = by_language.into_iter().map(|(language, rows)| {
            let mined = mined_by_language.get(language).map_or(&[][..], Vec::as_slice);
            (language.to_owned(), build_language(&rows, mined, options))
        });
        Dataset { languages: languages.collect() }
    }
}

fn redacted(row: &CurationRow) -> CurationRow {
    let clean = |text: &str| crate::redact::redact(text, "");
    CurationRow {
        suggestion: clean(&row.suggestion),
        final_code: row.final_code.as_deref().map(clean),
        prefix: clean(&row.prefix),
        suffix: clean(&row.suffix),
        typed_instead: row.typed_instead.as_deref().map(clean),
        ..row.clone()
    }
}

/// `long` holds `short`, which is long enough to mean it (code shared with the gate's ground).
fn leaks(long: &str, short: &str) -> bool {
    const MIN_LEAK: usize = 12;
    let (long, short) = (long.trim(), short.trim());
    short.len() >= MIN_LEAK && long.contains(short)
}

fn build_language(rows: &[&CurationRow], mined: &[&GitFunction], options: &Options) -> LanguageSet {
    // Ignored suggestions only ever become reward items.
    let (ignored, decided): (Vec<&CurationRow>, Vec<&CurationRow>) =
        rows.iter().copied().partition(|row| row.action == Action::Ignored);
    let rows = &decided[..];
    // The newest share of the decided suggestions (by time) is held out, with everything after it.
    let heldout_count = if rows.len() < 2 || options.heldout_share <= 0.0 {
        0
    } else {
        ((rows.len() as f64 * options.heldout_share).round() as usize).max(1)
    };
    let (trainable, heldout_rows) = rows.split_at(rows.len() - heldout_count);
    let taken = |row: &&&CurationRow| matches!(row.action, Action::Accepted | Action::Corrected);
    let rule = |row: &CurationRow| crate::quality::admit(&row.inputs, options.min_quality, options.seed_score_only);
    let good = |row: &&&CurationRow| rule(row).is_some();
    let target = |row: &CurationRow| row.final_code.clone().filter(|code| !code.trim().is_empty());
    let example = |row: &CurationRow, replay: bool| {
        target(row).map(|completion| Example {
            id: row.id.clone(),
            timestamp: row.timestamp.clone(),
            prefix: row.prefix.clone(),
            suffix: row.suffix.clone(),
            completion,
            action: row.action.as_str().to_owned(),
            weight: priority(row),
            priority: priority(row),
            dedup: 1.0,
            cluster: 0,
            cluster_size: 1,
            complexity: row.complexity,
            tier: tier(row.complexity),
            replay,
        })
    };
    let mut set = LanguageSet {
        below_quality: trainable.iter().filter(taken).filter(|r| !good(r)).count(),
        heldout: heldout_rows.iter().filter(taken).filter_map(|r| example(r, false)).collect(),
        ..LanguageSet::default()
    };

    let is_replay = |row: &CurationRow| options.since.as_deref().is_some_and(|since| row.timestamp.as_str() < since);
    let mined = git::split(mined, options.since.as_deref());
    set.heldout_git = mined.heldout;
    set.validation = mined.validation;
    // Neither split the gate judges on, nor the validation split, is trained on, in part or whole.
    let judged: Vec<&str> =
        set.heldout.iter().chain(&set.heldout_git).chain(&set.validation).map(|e| e.completion.as_str()).collect();
    let unjudged = |code: &str| !judged.iter().any(|held| leaks(held, code) || leaks(code, held));
    let mut candidates: Vec<Example> = Vec::new();
    for row in trainable.iter().filter(taken) {
        if let (Some(rule), Some(example)) = (rule(row), example(row, is_replay(row)))
            && unjudged(&example.completion)
        {
            *set.admitted.entry(rule.as_str().to_owned()).or_default() += 1;
            candidates.push(example);
        }
    }
    let from_git: Vec<Example> = mined.train.into_iter().filter(|e| unjudged(&e.completion)).collect();
    if !from_git.is_empty() {
        set.admitted.insert("git".into(), from_git.len());
    }
    candidates.extend(from_git);
    let (mut pool, mut train): (Vec<Example>, Vec<Example>) = candidates.into_iter().partition(|e| e.replay);
    if !pool.is_empty() && options.replay_share > 0.0 && options.replay_share < 1.0 {
        // Replay makes up `replay_share` of the set: the highest quality first.
        let wanted =
            ((train.len() as f64 * options.replay_share / (1.0 - options.replay_share)).round() as usize).max(1);
        let quality = |e: &Example| rows.iter().find(|r| r.id == e.id).and_then(|r| r.quality).unwrap_or(0.0);
        pool.sort_by(|a, b| quality(b).total_cmp(&quality(a)));
        pool.truncate(wanted);
        train.extend(pool);
    }

    let texts: Vec<&str> = train.iter().map(|e| e.completion.as_str()).collect();
    let clusters = minhash::clusters(&texts);
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    clusters.iter().for_each(|c| *sizes.entry(*c).or_default() += 1);
    set.clusters = sizes.len();
    for (example, cluster) in train.iter_mut().zip(&clusters) {
        example.cluster = *cluster;
        example.cluster_size = sizes[cluster];
        example.dedup = 1.0 / (1.0 + (example.cluster_size as f64).ln());
        example.weight = example.priority * example.dedup;
    }
    train.sort_by(|a, b| (a.tier, &a.timestamp, &a.id).cmp(&(b.tier, &b.timestamp, &b.id)));
    set.train = train;
    set.dpo.extend(mined.pairs.into_iter().filter(|p| unjudged(&p.chosen)));

    let held_from = heldout_rows.first().map(|row| row.timestamp.as_str());
    let before_heldout = |row: &&&CurationRow| held_from.is_none_or(|from| row.timestamp.as_str() < from);
    for row in trainable.iter().chain(ignored.iter().filter(before_heldout)) {
        if let Some(reward) = reward::of(row).filter(|_| unjudged(&row.suggestion)) {
            set.reward.push(RewardExample {
                id: row.id.clone(),
                prefix: row.prefix.clone(),
                suffix: row.suffix.clone(),
                completion: row.suggestion.clone(),
                action: row.action.as_str().to_owned(),
                reward,
            });
        }
    }
    for row in trainable {
        let kto = |completion: &str, desirable: bool, weight: f64| KtoExample {
            id: row.id.clone(),
            prefix: row.prefix.clone(),
            suffix: row.suffix.clone(),
            completion: completion.to_owned(),
            desirable,
            weight,
        };
        let pair = |chosen: &str| Pair {
            id: row.id.clone(),
            prefix: row.prefix.clone(),
            suffix: row.suffix.clone(),
            chosen: chosen.to_owned(),
            rejected: row.suggestion.clone(),
        };
        match row.action {
            Action::Accepted | Action::Corrected if !row.suggestion.is_empty() => {
                if let Some(code) = target(row).filter(|code| unjudged(code)) {
                    set.kto.push(kto(&code, true, priority(row)));
                    if row.action == Action::Corrected && code != row.suggestion && unjudged(&row.suggestion) {
                        set.dpo.push(pair(&code));
                    }
                }
            }
            Action::Rejected if !row.suggestion.is_empty() && unjudged(&row.suggestion) => {
                set.kto.push(kto(&row.suggestion, false, priority(row)));
                if let Some(typed) =
                    row.typed_instead.as_deref().filter(|t| t.trim().chars().count() > 1 && unjudged(t))
                {
                    set.dpo.push(pair(typed));
                }
            }
            _ => {}
        }
    }
    set
}

/// Qwen2.5-Coder's FIM prompt: the format the exported prompts use.
pub fn fim_prompt(prefix: &str, suffix: &str) -> String {
    format!("<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>")
}

/// What `curate` wrote for one language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub language: String,
    pub directory: PathBuf,
    pub train: usize,
    pub replay: usize,
    pub heldout: usize,
    /// Held out from the functions mined from git.
    pub heldout_git: usize,
    /// Set aside for training to stop on (`validation.jsonl`).
    pub validation: usize,
    pub kto: usize,
    pub dpo: usize,
    /// Items of the reward stage (`reward.jsonl`).
    pub reward: usize,
    pub clusters: usize,
    pub below_quality: usize,
    /// Training examples by what admitted them (`LanguageSet::admitted`).
    pub admitted: BTreeMap<String, usize>,
    /// Train examples per complexity tier (< 5, 5–10, > 10).
    pub tiers: [usize; 3],
}

/// `marunochi data forget`: the interactions `what` selects, gone from the store, and every copy
/// made from the store — the curated datasets (`datasets/`) and the checkpoints of interrupted
/// training runs (`train/<language>/checkpoint*`) — since they may hold the forgotten text. The
/// next `curate` or training builds them again from what is left. Adapters already trained keep
/// what they learnt (README: how to drop one).
pub fn forget(home: &crate::home::Home, what: &Forget) -> Result<Forgotten, CurateError> {
    let forgotten = Store::open(&home.db_path())?.forget(what)?;
    let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CurateError::Write { path: dir.to_owned(), source: e })
        }
        _ => Ok(()),
    };
    remove(&home.datasets_dir())?;
    for language in std::fs::read_dir(home.root().join("train")).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(language.path()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("checkpoint") || name.starts_with(".checkpoint") {
                remove(&entry.path())?;
            }
        }
    }
    Ok(forgotten)
}

/// Reads the store at `db`, builds the datasets and writes them under `out/<language>/`.
pub fn curate(db: &Path, out: &Path, options: &Options) -> Result<Vec<Summary>, CurateError> {
    let store = Store::open(db)?;
    let mut rows = store.curation_rows()?;
    rows.extend(store.ignored_rows()?);
    rows.sort_by(|a, b| (&a.timestamp, &a.id).cmp(&(&b.timestamp, &b.id)));
    let mut dataset = Dataset::build(&rows, &store.git_functions()?, options);
    let files = workspace::read(&store.worked_files()?);
    for (language, set) in dataset.languages.iter_mut() {
        workspace::replay(language, set, &files);
        if options.general_share > 0.0
            && let Ok(corpus) = crate::corpus::general(language)
        {
            general::rehearse(language, set, options.general_share, &corpus);
        }
    }
    if let Some(language) = &options.language
        && !dataset.languages.contains_key(language.as_str())
    {
        return Err(CurateError::NoData(language.to_string()));
    }
    if dataset.languages.is_empty() {
        return Err(CurateError::NoData("any language".into()));
    }
    dataset.languages.iter().map(|(language, set)| write_language(out, language, set, options)).collect()
}

fn write_language(out: &Path, language: &str, set: &LanguageSet, options: &Options) -> Result<Summary, CurateError> {
    let name = if language.is_empty() { "unknown" } else { language };
    let dir = out.join(name);
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| CurateError::Write { path, source }
    };
    for sub in [dir.clone(), dir.join("trl"), dir.join("axolotl")] {
        crate::home::create_private_dir(&sub).map_err(failed(&sub))?;
    }
    let lines = |name: &str, values: Vec<serde_json::Value>| -> Result<(), CurateError> {
        let path = dir.join(name);
        let mut file = crate::home::create_private(&path).map_err(failed(&path))?;
        let mut text = String::new();
        for value in values {
            text.push_str(&value.to_string());
            text.push('\n');
        }
        file.write_all(text.as_bytes()).map_err(failed(&path))
    };
    fn values<T: Serialize>(items: &[T]) -> Vec<serde_json::Value> {
        items.iter().map(|item| serde_json::to_value(item).unwrap_or_default()).collect()
    }
    lines("train.jsonl", values(&set.train))?;
    lines("heldout.jsonl", values(&set.heldout))?;
    lines("heldout-git.jsonl", values(&set.heldout_git))?;
    lines("validation.jsonl", values(&set.validation))?;
    lines("kto.jsonl", values(&set.kto))?;
    lines("dpo.jsonl", values(&set.dpo))?;
    lines("reward.jsonl", values(&set.reward))?;
    lines(
        "trl/sft.jsonl",
        set.train
            .iter()
            .map(|e| json!({"prompt": fim_prompt(&e.prefix, &e.suffix), "completion": e.completion}))
            .collect(),
    )?;
    lines(
        "trl/kto.jsonl",
        set.kto
            .iter()
            .map(|e| json!({"prompt": fim_prompt(&e.prefix, &e.suffix), "completion": e.completion, "label": e.desirable}))
            .collect(),
    )?;
    let dpo: Vec<serde_json::Value> = set
        .dpo
        .iter()
        .map(|p| json!({"prompt": fim_prompt(&p.prefix, &p.suffix), "chosen": p.chosen, "rejected": p.rejected}))
        .collect();
    lines("trl/dpo.jsonl", dpo.clone())?;
    lines(
        "axolotl/sft.jsonl",
        set.train
            .iter()
            .map(|e| {
                json!({"segments": [
                    {"label": false, "text": fim_prompt(&e.prefix, &e.suffix)},
                    {"label": true, "text": e.completion},
                ]})
            })
            .collect(),
    )?;
    lines("axolotl/dpo.jsonl", dpo)?;
    let mut tiers = [0; 3];
    set.train.iter().for_each(|e| tiers[e.tier as usize] += 1);
    let summary = Summary {
        language: language.to_owned(),
        directory: dir.clone(),
        train: set.train.len(),
        replay: set.train.iter().filter(|e| e.replay).count(),
        heldout: set.heldout.len(),
        heldout_git: set.heldout_git.len(),
        validation: set.validation.len(),
        kto: set.kto.len(),
        dpo: set.dpo.len(),
        reward: set.reward.len(),
        clusters: set.clusters,
        below_quality: set.below_quality,
        admitted: set.admitted.clone(),
        tiers,
    };
    lines("summary.json", vec![serde_json::to_value(&summary).unwrap_or_default()])?;
    if let Some(plan) = &options.scale_out {
        for (path, text) in scaleout::files(&dir, name, set.dpo.len(), plan) {
            crate::home::write_private(&path, text.as_bytes()).map_err(failed(&path))?;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, action: &str, quality: f64, code: &str) -> CurationRow {
        CurationRow {
            id: format!("r{n:02}"),
            timestamp: format!("2026-11-{:02}T10:00:00.000Z", n + 1),
            language: "python".into(),
            action: action.parse().unwrap(),
            suggestion: code.into(),
            final_code: matches!(action, "accepted" | "corrected").then(|| code.into()),
            prefix: format!("def f{n}():\n    "),
            suffix: "\n".into(),
            quality: Some(quality),
            inputs: inputs(action, quality),
            ..CurationRow::default()
        }
    }

    /// Inputs that put a row on its side of the bar: run and tested at 70 and above, a failed run
    /// below.
    fn inputs(action: &str, quality: f64) -> crate::store::Inputs {
        let good = quality >= 70.0;
        crate::store::Inputs {
            action: action.parse().unwrap(),
            execution_success: Some(good),
            tests: good.then_some(crate::quality::TestCounts { tests: 2, ..Default::default() }),
            syntax_errors: Some(0),
            retention_7d: Some(good),
            ..Default::default()
        }
    }

    fn distinct(n: usize) -> String {
        format!("value_{n} = compute_{n}(input_{n}) + offset_{n} * scale_{n}")
    }

    fn options() -> Options {
        Options { heldout_share: 0.0, ..Options::default() }
    }

    #[test]
    fn selection_targets_priorities_kto_and_dpo() {
        let mut corrected = row(1, "corrected", 75.0, &distinct(1));
        corrected.final_code = Some("value = fixed()".into());
        let mut reasoned = row(3, "rejected", 20.0, &distinct(3));
        reasoned.comment = Some("wrong API".into());
        let mut typed = row(4, "rejected", 20.0, &distinct(4));
        typed.typed_instead = Some("what_i_wanted()".into());
        let rows = vec![
            row(0, "accepted", 80.0, &distinct(0)),
            corrected,
            row(2, "accepted", 60.0, &distinct(2)),
            reasoned,
            typed,
        ];
        let set = &Dataset::build(&rows, &[], &options()).languages["python"];
        let train: Vec<(&str, &str, f64)> =
            set.train.iter().map(|e| (e.id.as_str(), e.completion.as_str(), e.priority)).collect();
        assert_eq!(train, [("r00", distinct(0).as_str(), 1.0), ("r01", "value = fixed()", 3.0)]);
        assert_eq!(set.below_quality, 1);
        let kto: Vec<(&str, bool, f64)> = set.kto.iter().map(|e| (e.id.as_str(), e.desirable, e.weight)).collect();
        assert_eq!(
            kto,
            [("r00", true, 1.0), ("r01", true, 3.0), ("r02", true, 1.0), ("r03", false, 2.0), ("r04", false, 0.5)]
        );
        let dpo: Vec<(&str, &str)> = set.dpo.iter().map(|p| (p.chosen.as_str(), p.rejected.as_str())).collect();
        assert_eq!(dpo, [("value = fixed()", distinct(1).as_str()), ("what_i_wanted()", distinct(4).as_str())]);
    }

    #[test]
    fn every_outcome_before_the_held_out_span_is_a_reward_item_ignored_ones_only_there() {
        let mut rows: Vec<CurationRow> = (0..18).map(|n| row(n, "accepted", 90.0, &distinct(n))).collect();
        rows[3] = row(3, "rejected", 20.0, &distinct(3));
        rows[4] = row(4, "ignored", 0.0, &distinct(4));
        rows[5] = row(5, "partial", 0.0, &distinct(5));
        // The same text as a held-out suggestion: never trained on, whatever its outcome.
        rows[6] = row(6, "rejected", 20.0, &distinct(17));
        rows.push(row(18, "ignored", 0.0, &distinct(18)));
        let set = &Dataset::build(&rows, &[], &Options::default()).languages["python"];
        let heldout: Vec<&str> = set.heldout.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(heldout, ["r16", "r17"], "ignored suggestions do not count towards the held-out share");
        let reward: Vec<(&str, &str)> = set.reward.iter().map(|e| (e.id.as_str(), e.action.as_str())).collect();
        assert_eq!(reward.len(), 15, "{reward:?}");
        assert!(reward.contains(&("r04", "ignored")) && reward.contains(&("r05", "partial")));
        assert!(!reward.iter().any(|(id, _)| ["r06", "r16", "r17", "r18"].contains(id)), "{reward:?}");
        assert!(set.reward.iter().all(|e| e.completion == distinct(e.id[1..].parse().unwrap())), "as shown");
        assert!(!set.kto.iter().any(|e| e.id == "r04" || e.id == "r06"), "{:?}", set.kto);
        assert!(!set.train.iter().any(|e| e.id == "r04"));
    }

    #[test]
    fn the_newest_tenth_is_held_out_and_never_trained_on() {
        let rows: Vec<CurationRow> = (0..20).map(|n| row(n, "accepted", 90.0, &distinct(n))).collect();
        let set = &Dataset::build(&rows, &[], &Options::default()).languages["python"];
        let heldout: Vec<&str> = set.heldout.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(heldout, ["r18", "r19"]);
        assert!(set.train.iter().chain(&set.heldout).filter(|e| e.id == "r18").count() == 1);
        assert!(!set.kto.iter().any(|e| e.id == "r19"), "held out from KTO too");
        assert_eq!(set.train.len(), 18);
    }

    #[test]
    fn each_rule_is_counted_and_mined_functions_train_and_hold_out_without_leaking() {
        let fresh = |n: usize, action: &str| CurationRow {
            inputs: crate::store::Inputs {
                action: action.parse().unwrap(),
                syntax_errors: Some(0),
                ..Default::default()
            },
            quality: Some(40.0),
            ..row(n, action, 40.0, &distinct(n))
        };
        let mut kept = fresh(2, "accepted");
        kept.inputs.linter_errors = 5;
        kept.inputs.retention_7d = Some(true);
        let mut rows = vec![row(0, "accepted", 90.0, &distinct(0)), fresh(1, "accepted"), kept, fresh(3, "rejected")];
        // Taken code that reappears in a held-out function is not trained on.
        rows.push(fresh(4, "accepted"));
        rows[4].final_code = Some("leaked_helper(value)".into());
        let mined: Vec<GitFunction> = (0..10)
            .map(|n| GitFunction {
                repository: "/r".into(),
                commit: format!("c{n}"),
                authored_at: format!("2026-10-{:02}T10:00:00.000Z", n + 1),
                language: "python".into(),
                file_path: "file:///r/m.py".into(),
                name: format!("g{n}"),
                prefix: format!("def g{n}():\n    "),
                suffix: "\n".into(),
                body: if n == 9 { "return leaked_helper(value) + 1".into() } else { format!("return mined_{n}()") },
                previous_body: None,
            })
            .collect();
        let set = &Dataset::build(&rows, &mined, &options()).languages["python"];
        let admitted: Vec<(&str, usize)> = set.admitted.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(admitted, [("git", 8), ("observed", 1), ("retained", 1), ("score", 1)]);
        assert_eq!(
            set.heldout_git.iter().map(|e| e.completion.as_str()).collect::<Vec<_>>(),
            ["return mined_8()", "return leaked_helper(value) + 1"]
        );
        assert!(!set.train.iter().any(|e| e.completion.contains("leaked_helper")));
        let seed = &Dataset::build(&rows, &[], &Options { seed_score_only: true, ..options() }).languages["python"];
        assert_eq!(seed.train.len(), 1, "the seed's score alone admits only the tested row");
        let rust_only = Dataset::build(&[], &[GitFunction { language: "rust".into(), ..mined[0].clone() }], &options());
        assert_eq!(rust_only.languages["rust"].train.len(), 1, "a language known only from git gets a set");
    }

    #[test]
    fn near_duplicates_share_their_weight_softly() {
        let same = "total = sum(item.price * item.quantity for item in cart.items if item.available)";
        let mut rows: Vec<CurationRow> = (0..3).map(|n| row(n, "accepted", 90.0, same)).collect();
        rows.push(row(3, "accepted", 90.0, &distinct(3)));
        let set = &Dataset::build(&rows, &[], &options()).languages["python"];
        let weights: Vec<(usize, f64)> = set.train.iter().map(|e| (e.cluster_size, e.weight)).collect();
        let soft = 1.0 / (1.0 + 3f64.ln());
        assert_eq!(weights, [(3, soft), (3, soft), (3, soft), (1, 1.0)]);
        assert_eq!(set.clusters, 2);
    }

    #[test]
    fn curriculum_orders_by_complexity_tier() {
        let mut rows: Vec<CurationRow> = (0..4).map(|n| row(n, "accepted", 90.0, &distinct(n))).collect();
        for (row, cc) in rows.iter_mut().zip([Some(12), Some(3), Some(7), None]) {
            row.complexity = cc;
        }
        let set = &Dataset::build(&rows, &[], &options()).languages["python"];
        let order: Vec<(&str, u8)> = set.train.iter().map(|e| (e.id.as_str(), e.tier)).collect();
        assert_eq!(order, [("r01", 0), ("r03", 0), ("r02", 1), ("r00", 2)]);
    }

    #[test]
    fn replay_takes_the_best_older_examples_for_a_fifth_of_the_set() {
        let mut rows: Vec<CurationRow> = (0..12).map(|n| row(n, "accepted", 70.0 + n as f64, &distinct(n))).collect();
        rows[1].quality = Some(99.0);
        let since = Some(rows[4].timestamp.clone());
        let set = &Dataset::build(&rows, &[], &Options { since, ..options() }).languages["python"];
        let replay: Vec<&str> = set.train.iter().filter(|e| e.replay).map(|e| e.id.as_str()).collect();
        // 8 fresh examples; replay is a fifth of the set: 2, the best of the 4 older ones.
        assert_eq!((set.train.len(), replay.len()), (10, 2));
        assert!(replay.contains(&"r01") && replay.contains(&"r03"), "{replay:?}");
    }

    #[test]
    fn languages_are_separate_and_fim_prompts_are_qwens() {
        let mut rust = row(0, "accepted", 90.0, "let key = \"AKIAIOSFODNN7EXAMPLE\";");
        rust.language = "rust".into();
        let rows = vec![rust, row(1, "accepted", 90.0, &distinct(1))];
        let dataset = Dataset::build(&rows, &[], &options());
        assert_eq!(dataset.languages.keys().collect::<Vec<_>>(), ["python", "rust"]);
        let only = Dataset::build(&rows, &[], &Options { language: Some("rust".parse().unwrap()), ..options() });
        let outside = CurationRow { language: "../../x".into(), ..row(40, "accepted", 90.0, "x = 1") };
        let absolute = CurationRow { language: "/etc".into(), ..row(41, "accepted", 90.0, "y = 2") };
        let set = Dataset::build(&[outside, absolute], &[], &options());
        assert!(
            set.languages.is_empty(),
            "a language that is no directory name is left out: {:?}",
            set.languages.keys()
        );
        assert_eq!(only.languages.len(), 1);
        let completion = &only.languages["rust"].train[0].completion;
        assert!(!completion.contains("AKIA") && completion.contains("«redacted"), "{completion}");
        assert_eq!(fim_prompt("a", "b"), "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>");
    }
}
