//! When to stay silent: a small per-user model of P(taken) for a suggestion, from what is known
//! before it is shown (the model's confidence, the suggestion's length and lines, where the cursor
//! is in its line, the context sources, time since the user last took one, their recent
//! acceptance), learned from the store's decided suggestions in milliseconds, no GPU. A suggestion
//! below the learned threshold is not shown.
//!
//! The threshold is the user's own: the newest quarter of their outcomes is held out, and the
//! highest threshold that hides at most [`MAX_LOST_CHARS`] of the characters they took there (and
//! hides at least [`MIN_HIDDEN`] of the suggestions, or the filter is not worth having) is kept;
//! then the model is fitted again on everything. With too few outcomes, or no such threshold, the
//! filter stays off and says why. A language with enough outcomes of its own gets its own model;
//! the others share one fitted on all languages.
//!
//! Logistic regression by gradient descent on standardized features: 17 weights do not justify a
//! linear-algebra crate.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::store::{Action, ShownOutcome, Store, StoreError};

/// Decided suggestions read from the store, newest.
pub const HISTORY: usize = 5000;
/// Fewer outcomes than this (or fewer than [`MIN_EACH`] taken or not taken) fit no model.
pub const MIN_OUTCOMES: usize = 60;
pub const MIN_EACH: usize = 10;
/// The share of the taken characters in the held-out quarter a threshold may hide.
pub const MAX_LOST_CHARS: f64 = 0.02;
/// The share of suggestions a threshold must hide there to be worth applying.
pub const MIN_HIDDEN: f64 = 0.05;
/// Outcomes that make "recent acceptance".
const RECENT: usize = 20;
const FEATURES: usize = 16;
/// Context sources that are features, in this order.
const SOURCES: [&str; 5] = ["definitions", "snippets", "own_examples", "open_files", "recent_edits"];

/// One suggestion as the filter sees it before it is shown.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub language: &'a str,
    pub text: &'a str,
    /// `inline` or `completion`.
    pub kind: &'a str,
    /// The model's mean log-probability of the suggestion's tokens.
    pub confidence: f64,
    /// The document before and after the cursor (only the cursor's line is read).
    pub before: &'a str,
    pub after: &'a str,
    pub sources: &'a [&'a str],
}

/// What the user did lately in one language: the features that depend on the past.
#[derive(Debug, Clone, Default)]
struct Recent {
    last_taken_ms: Option<i64>,
    outcomes: VecDeque<bool>,
}

impl Recent {
    fn record(&mut self, at_ms: i64, taken: bool) {
        if taken {
            self.last_taken_ms = Some(at_ms);
        }
        if self.outcomes.len() == RECENT {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(taken);
    }
}

fn features(shape: &Shape, recent: &Recent, now_ms: i64) -> [f64; FEATURES] {
    let line_before = shape.before.rsplit('\n').next().unwrap_or("");
    let line_after = shape.after.split('\n').next().unwrap_or("");
    let lines = shape.text.lines().count().max(1);
    let flag = |b: bool| f64::from(u8::from(b));
    // An hour or more counts as a new session: every user's outcomes have those, so the feature
    // stays in the range the model was fitted on.
    let since_taken_s = recent.last_taken_ms.map_or(3_600.0, |at| ((now_ms - at) as f64 / 1000.0).clamp(0.0, 3_600.0));
    let acceptance = if recent.outcomes.is_empty() {
        0.3
    } else {
        recent.outcomes.iter().filter(|t| **t).count() as f64 / recent.outcomes.len() as f64
    };
    let mut x = [0.0; FEATURES];
    x[0] = shape.confidence.max(-10.0);
    x[1] = (1.0 + shape.text.chars().count() as f64).ln();
    x[2] = flag(lines > 1);
    x[3] = (lines as f64).ln();
    x[4] = flag(line_before.trim().is_empty());
    x[5] = flag(line_before.ends_with(|c: char| c.is_alphanumeric() || c == '_'));
    x[6] = flag(!line_after.trim().is_empty());
    x[7] = flag(shape.kind == "completion");
    x[8] = flag(shape.text.trim().chars().count() < 3);
    for (i, source) in SOURCES.iter().enumerate() {
        x[9 + i] = flag(shape.sources.contains(source));
    }
    x[14] = (1.0 + since_taken_s).ln();
    x[15] = acceptance;
    x
}

/// A fitted model and the threshold below which a suggestion is not shown.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    #[serde(skip)]
    weights: [f64; FEATURES],
    #[serde(skip)]
    bias: f64,
    #[serde(skip)]
    mean: [f64; FEATURES],
    #[serde(skip)]
    scale: [f64; FEATURES],
    /// `None` while no threshold passed the held-out check: the model is fitted but hides nothing.
    pub threshold: Option<f64>,
    pub outcomes: usize,
    /// On the held-out quarter, at the chosen threshold.
    pub held_out: HeldOut,
}

/// What a threshold did to the held-out quarter of the outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HeldOut {
    pub suggestions: usize,
    pub hidden: usize,
    pub taken: usize,
    pub taken_hidden: usize,
    pub taken_chars: usize,
    pub taken_chars_hidden: usize,
}

impl Model {
    pub fn p_taken(&self, x: &[f64; FEATURES]) -> f64 {
        let z = standardized(x, &self.mean, &self.scale);
        let logit: f64 = self.bias + (0..FEATURES).map(|i| self.weights[i] * z[i]).sum::<f64>();
        1.0 / (1.0 + (-logit).exp())
    }
}

/// `x` in standard deviations from the training mean, clipped at 3: a value the user's outcomes
/// never came near (a week since the last take, when they all were minutes apart) must not
/// decide alone.
fn standardized(x: &[f64; FEATURES], mean: &[f64; FEATURES], scale: &[f64; FEATURES]) -> [f64; FEATURES] {
    let mut z = [0.0; FEATURES];
    for i in 0..FEATURES {
        z[i] = ((x[i] - mean[i]) / scale[i]).clamp(-3.0, 3.0);
    }
    z
}

/// One decided suggestion as a training example.
#[derive(Debug, Clone)]
struct Example {
    x: [f64; FEATURES],
    taken: bool,
    /// Characters of ours the user kept.
    chars: usize,
}

/// The characters of the suggestion the user kept: all of an accepted one, the final code's share
/// of a partial or corrected one (at most the suggestion's length).
pub fn taken_chars(outcome: &ShownOutcome) -> usize {
    let suggested = outcome.suggestion.chars().count();
    match outcome.action {
        Action::Accepted => suggested,
        Action::Partial | Action::Corrected => {
            outcome.final_code.as_deref().map_or(suggested, |code| code.chars().count().min(suggested))
        }
        _ => 0,
    }
}

fn fit(examples: &[&Example]) -> Model {
    let n = examples.len().max(1) as f64;
    let mut mean = [0.0; FEATURES];
    let mut scale = [1.0; FEATURES];
    for i in 0..FEATURES {
        mean[i] = examples.iter().map(|e| e.x[i]).sum::<f64>() / n;
        let variance = examples.iter().map(|e| (e.x[i] - mean[i]).powi(2)).sum::<f64>() / n;
        scale[i] = if variance > 1e-12 { variance.sqrt() } else { 1.0 };
    }
    let standardized: Vec<([f64; FEATURES], f64)> =
        examples.iter().map(|e| (standardized(&e.x, &mean, &scale), f64::from(u8::from(e.taken)))).collect();
    // L2 keeps the weights of a few hundred outcomes from chasing noise.
    const L2: f64 = 0.05;
    const STEPS: usize = 400;
    const RATE: f64 = 0.5;
    let (mut weights, mut bias) = ([0.0; FEATURES], 0.0);
    for _ in 0..STEPS {
        let (mut gradient, mut gradient_bias) = ([0.0; FEATURES], 0.0);
        for (z, y) in &standardized {
            let logit = bias + (0..FEATURES).map(|i| weights[i] * z[i]).sum::<f64>();
            let error = 1.0 / (1.0 + (-logit).exp()) - y;
            gradient_bias += error;
            for i in 0..FEATURES {
                gradient[i] += error * z[i];
            }
        }
        bias -= RATE * gradient_bias / n;
        for i in 0..FEATURES {
            weights[i] -= RATE * (gradient[i] / n + L2 * weights[i]);
        }
    }
    Model { weights, bias, mean, scale, threshold: None, outcomes: examples.len(), held_out: HeldOut::default() }
}

impl HeldOut {
    fn count(&mut self, hidden: bool, taken: bool, chars: usize) {
        self.suggestions += 1;
        self.hidden += usize::from(hidden);
        if taken {
            self.taken += 1;
            self.taken_chars += chars;
            if hidden {
                self.taken_hidden += 1;
                self.taken_chars_hidden += chars;
            }
        }
    }
}

fn held_out(model: &Model, examples: &[&Example], threshold: f64) -> HeldOut {
    let mut result = HeldOut::default();
    for example in examples {
        result.count(model.p_taken(&example.x) < threshold, example.taken, example.chars);
    }
    result
}

/// The model for these outcomes (oldest first), or why there is none.
fn fit_with_threshold(examples: &[&Example]) -> Result<Model, String> {
    let taken = examples.iter().filter(|e| e.taken).count();
    if examples.len() < MIN_OUTCOMES || taken < MIN_EACH || examples.len() - taken < MIN_EACH {
        return Err(format!(
            "{} decided suggestions ({taken} taken); it learns from {MIN_OUTCOMES}, with {MIN_EACH} taken and {MIN_EACH} not",
            examples.len()
        ));
    }
    let split = examples.len() * 3 / 4;
    let (older, newer) = examples.split_at(split);
    let trial = fit(older);
    let candidates = (1..=50).map(|step| f64::from(step) / 100.0).rev();
    let chosen = candidates.map(|threshold| (threshold, held_out(&trial, newer, threshold))).find(|(_, result)| {
        result.taken_chars_hidden as f64 <= MAX_LOST_CHARS * result.taken_chars as f64
            && result.hidden as f64 >= MIN_HIDDEN * result.suggestions as f64
    });
    let mut model = fit(examples);
    match chosen {
        Some((threshold, result)) => {
            model.threshold = Some(threshold);
            model.held_out = result;
        }
        None => model.held_out = held_out(&trial, newer, 0.0),
    }
    Ok(model)
}

/// Every language's filter, and the state the past-dependent features are read from.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    models: HashMap<String, Result<Model, String>>,
    /// For languages without a model of their own.
    shared: Option<Result<Model, String>>,
    recent: HashMap<String, Recent>,
}

/// For `marunochi.status`: a language's filter in words and numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub language: String,
    pub model: Option<Model>,
    pub reason: Option<String>,
}

impl Filters {
    /// Learned from the store's newest [`HISTORY`] decided suggestions.
    pub fn load(store: &Store) -> Result<Filters, StoreError> {
        Ok(Filters::learn(&store.shown_outcomes(HISTORY)?))
    }

    /// Learned from these outcomes, oldest first.
    pub fn learn(outcomes: &[ShownOutcome]) -> Filters {
        let mut recent = HashMap::new();
        let examples = examples_of(outcomes, &mut recent);
        let mut by_language: HashMap<&str, Vec<&Example>> = HashMap::new();
        for (outcome, example) in outcomes.iter().zip(&examples) {
            by_language.entry(&outcome.language).or_default().push(example);
        }
        let models = by_language
            .iter()
            .map(|(language, examples)| (language.to_string(), fit_with_threshold(examples)))
            .collect();
        let all: Vec<&Example> = examples.iter().collect();
        let shared = (!all.is_empty()).then(|| fit_with_threshold(&all));
        Filters { models, shared, recent }
    }

    fn model(&self, language: &str) -> Option<&Model> {
        match self.models.get(language) {
            Some(Ok(model)) => Some(model),
            _ => self.shared.as_ref().and_then(|shared| shared.as_ref().ok()),
        }
    }

    /// P(taken) of a suggestion about to be shown at `now_ms`, when a model applies.
    pub fn p_taken(&self, shape: &Shape, now_ms: i64) -> Option<f64> {
        let model = self.model(shape.language)?;
        let recent = self.recent.get(shape.language).cloned().unwrap_or_default();
        Some(model.p_taken(&features(shape, &recent, now_ms)))
    }

    /// Whether to stay silent instead of showing this suggestion.
    pub fn silent(&self, shape: &Shape, now_ms: i64) -> bool {
        let Some(threshold) = self.model(shape.language).and_then(|m| m.threshold) else { return false };
        self.p_taken(shape, now_ms).is_some_and(|p| p < threshold)
    }

    /// What these filters would have done to `outcomes` (newer than the ones learned from, oldest
    /// first), each judged as it would have been when it was shown.
    pub fn judge(&self, outcomes: &[ShownOutcome]) -> HeldOut {
        let mut recent = self.recent.clone();
        let mut result = HeldOut::default();
        for (outcome, example) in outcomes.iter().zip(examples_of(outcomes, &mut recent)) {
            let model = self.model(&outcome.language);
            let hidden = model.and_then(|model| Some(model.p_taken(&example.x) < model.threshold?)).unwrap_or(false);
            result.count(hidden, example.taken, example.chars);
        }
        result
    }

    /// The user took a suggestion just now (the store hears of it later; the features need it now).
    pub fn taken(&mut self, language: &str, at_ms: i64) {
        self.recent.entry(language.to_owned()).or_default().last_taken_ms = Some(at_ms);
    }

    /// Each language's filter, then the shared one (`"*"`).
    pub fn summary(&self) -> Vec<Summary> {
        let mut languages: Vec<&String> = self.models.keys().collect();
        languages.sort();
        let describe = |language: &str, result: &Result<Model, String>| Summary {
            language: language.to_owned(),
            model: result.as_ref().ok().cloned(),
            reason: result.as_ref().err().cloned(),
        };
        let mut list: Vec<Summary> = languages.iter().map(|l| describe(l, &self.models[*l])).collect();
        list.extend(self.shared.as_ref().map(|shared| describe("*", shared)));
        list
    }
}

/// `outcomes` (oldest first) as examples, each with its features as they were when it was shown:
/// the past-dependent ones from `recent`, which walks forward through them.
fn examples_of(outcomes: &[ShownOutcome], recent: &mut HashMap<String, Recent>) -> Vec<Example> {
    outcomes
        .iter()
        .map(|outcome| {
            let sources: Vec<&str> = outcome.sources.iter().map(String::as_str).collect();
            let state = recent.entry(outcome.language.clone()).or_default();
            let x = features(&shape_of(outcome, &sources), state, outcome.at_ms);
            state.record(outcome.at_ms, outcome.action.taken());
            Example { x, taken: outcome.action.taken(), chars: taken_chars(outcome) }
        })
        .collect()
}

fn shape_of<'a>(outcome: &'a ShownOutcome, sources: &'a [&'a str]) -> Shape<'a> {
    Shape {
        language: &outcome.language,
        text: &outcome.suggestion,
        kind: &outcome.kind,
        confidence: outcome.confidence,
        before: &outcome.prefix_tail,
        after: &outcome.suffix_head,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user who takes confident one-liners at the end of a line and rejects the rest.
    fn outcomes(count: usize) -> Vec<ShownOutcome> {
        (0..count)
            .map(|i| {
                let confident = i % 3 != 0;
                let taken = confident && i % 7 != 0;
                ShownOutcome {
                    at_ms: 1_000_000 + i as i64 * 60_000,
                    language: "python".into(),
                    action: if taken { Action::Accepted } else { Action::Rejected },
                    suggestion: if confident { "return value".into() } else { "x".repeat(80) + "\n" + &"y".repeat(40) },
                    kind: "inline".into(),
                    confidence: if confident { -0.2 - (i % 5) as f64 * 0.05 } else { -2.5 - (i % 4) as f64 * 0.3 },
                    prefix_tail: "def f():\n    ".into(),
                    suffix_head: "\n".into(),
                    sources: vec!["open_files".into()],
                    final_code: None,
                }
            })
            .collect()
    }

    fn shape<'a>(text: &'a str, confidence: f64) -> Shape<'a> {
        Shape {
            language: "python",
            text,
            kind: "inline",
            confidence,
            before: "def g():\n    ",
            after: "\n",
            sources: &["open_files"],
        }
    }

    #[test]
    fn a_filter_learned_from_the_users_outcomes_hides_what_they_reject_and_keeps_what_they_take() {
        let filters = Filters::learn(&outcomes(300));
        let model = filters.model("python").expect("a model of its own");
        let threshold = model.threshold.expect("a threshold that passed the held-out check");
        assert!(model.held_out.taken_chars_hidden as f64 <= MAX_LOST_CHARS * model.held_out.taken_chars as f64);
        assert!(model.held_out.hidden as f64 >= MIN_HIDDEN * model.held_out.suggestions as f64, "{model:?}");
        let now = 1_000_000 + 301 * 60_000;
        let doubtful = "z".repeat(120);
        assert!(
            filters.silent(&shape(&doubtful, -3.0), now),
            "p = {:?}, threshold {threshold}",
            filters.p_taken(&shape(&doubtful, -3.0), now)
        );
        assert!(!filters.silent(&shape("return other", -0.25), now));
        // Another language has no outcomes of its own: the shared model speaks for it.
        let rust = Shape { language: "rust", ..shape(&doubtful, -3.0) };
        assert!(filters.p_taken(&rust, now).is_some());
        let summary = filters.summary();
        assert_eq!(summary.iter().map(|s| s.language.as_str()).collect::<Vec<_>>(), ["python", "*"]);

        // Judged on newer outcomes than it learned from, as each would have been when shown.
        let all = outcomes(400);
        let judged = Filters::learn(&all[..300]).judge(&all[300..]);
        assert_eq!(judged.suggestions, 100);
        assert!(judged.hidden >= 20, "{judged:?}");
        assert!(judged.taken_chars_hidden as f64 <= MAX_LOST_CHARS * judged.taken_chars as f64, "{judged:?}");
    }

    #[test]
    fn too_few_outcomes_or_no_safe_threshold_leave_every_suggestion_shown() {
        let filters = Filters::learn(&outcomes(40));
        assert!(filters.p_taken(&shape("x", -5.0), 0).is_none());
        assert!(!filters.silent(&shape("x", -5.0), 0));
        let reason = filters.summary()[0].reason.clone().unwrap();
        assert!(reason.starts_with("40 decided suggestions"), "{reason}");

        // Everything taken, whatever it looks like: any threshold that hides 5 % loses characters.
        let mut everything_taken = outcomes(300);
        for (i, outcome) in everything_taken.iter_mut().enumerate() {
            outcome.action = if i % 10 == 0 { Action::Rejected } else { Action::Accepted };
        }
        let filters = Filters::learn(&everything_taken);
        assert_eq!(filters.model("python").unwrap().threshold, None);
        assert!(!filters.silent(&shape(&"z".repeat(120), -3.0), 0));
    }

    #[test]
    fn kept_characters_count_what_of_the_suggestion_stayed() {
        let outcome = |action, final_code: Option<&str>| ShownOutcome {
            action,
            final_code: final_code.map(Into::into),
            ..outcomes(2).remove(1)
        };
        assert_eq!(taken_chars(&outcome(Action::Accepted, None)), 12);
        assert_eq!(taken_chars(&outcome(Action::Partial, Some("return"))), 6);
        assert_eq!(taken_chars(&outcome(Action::Corrected, Some("return value + 1 if value else 0"))), 12);
        assert_eq!(taken_chars(&outcome(Action::Rejected, None)), 0);
    }
}
