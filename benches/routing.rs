//! Per-token routing against per-request routing, side by side in one run, on mixed files: which
//! expert's update should change which tokens when one file holds several languages
//! (ARCHITECTURE.md, "Experts per token").
//!
//! Real experts trained by the learning benchmark on real histories: Python (cachetools) and
//! Rust (walkdir), SmolLM2-135M, and SQL (the SQL strings of sqlite-utils' Python) when it has
//! been trained. The corpus:
//! - **real**: cachetools' `docs/index.rst` (reST prose with `testcode`/`doctest` Python) and
//!   walkdir's `README.md` (Markdown with Rust fences), at the pinned commits;
//! - **real Python with SQL** (with the SQL expert): the newest of its held-out SQL strings (never
//!   trained on) in their files, each cut to the string's function and the lines around it;
//! - **generated**: Markdown pages, each with prose, two Python functions and two Rust functions
//!   taken from the experts' held-out functions (never trained on; the newest of each history).
//!
//! Every token of a file is scored (log-likelihood of it given all before it, in windows of
//! `WINDOW` tokens) under:
//! - **base**: no expert;
//! - **file's expert**: the expert of the file's own language on every token (none for Markdown
//!   and reST): what serving does where the cursor's language has no expert of its own;
//! - **per request**: what serving does today, the expert of the language at the cursor applied to
//!   the whole prompt (a token is predicted with its own language's expert on every position);
//! - **per span**: each position computed with the expert of its own span's language, prose with
//!   none;
//! - **per span, next**: the same, except that each position takes the expert of the token it
//!   predicts (so the first token of a code block is predicted by its expert, as at a cursor);
//! - **router**: no spans at all; a small router (softmax regression on the token ids of the last
//!   64 tokens, trained here in seconds on the user's own curated code of each expert and their
//!   own commit messages as "no expert") gives each position a distribution over {none, python,
//!   rust}; DynMoLE's rule decides per position: a confident router (Tsallis entropy, q = 2,
//!   under `GATE` × its maximum; default 0.5) routes to its top choice, an unsure one mixes the
//!   experts' updates by its probabilities;
//! - **spans + router**: per span, next where the span's language has an expert; the router on
//!   the rest (prose, and any language without an expert).
//!
//! Printed per group and language: tokens, mean negative log-likelihood per token (lower is better)
//! for each routing, and the per-span gain over per-request.
//!
//! ```text
//! BUDGET=20m ADAPTER=lora STAGES=preference OUTCOMES=older cargo bench --bench learning
//! REPOS=walkdir STAGES=sft BUDGET=15m cargo bench --bench learning
//! REPOS=sqlite-utils LANGUAGE=sql STAGES=sft STEPS=20 cargo bench --bench learning
//! cargo bench --bench routing
//! ```
//!
//! PYTHON_HOME / RUST_HOME / SQL_HOME: the learning homes holding the experts (defaults: the runs
//! above; the SQL expert is left out when its home has none); SQL_DOCS=n SQL strings (default 30);
//! ONLY=sql scores the SQL strings alone (the other groups' figures do not depend on the SQL
//! expert, and scoring costs minutes per thousand tokens);
//! WINDOW=n tokens per scored window (default 1024); DOCS=n generated pages (default 20); GATE=x
//! the router's entropy threshold, a fraction of the maximum (default 0.5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use marunochi::engine::{Engine, LoadOptions};
use marunochi::language::{document_language, language_spans};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// An expert: its language, the adapter the learning benchmark trained and the functions its
/// curation held out.
struct Expert {
    language: &'static str,
    /// The learning home it was trained in (which history it learned).
    home: String,
    adapter: PathBuf,
    /// Held-out examples as curation wrote them: prefix, completion, suffix.
    heldout: Vec<(String, String, String)>,
    /// What the expert was trained on (SFT prompts' ends and completions): the router's examples.
    trained: Vec<String>,
}

fn expert(language: &'static str, variable: &str, default_home: &str, how: &str) -> Expert {
    let home = std::env::var_os(variable).map_or_else(|| root().join(default_home), PathBuf::from);
    let adapter = home.join("adapters").join(language).join("v1");
    let metadata = std::fs::read_to_string(adapter.join("marunochi.json")).unwrap_or_else(|e| {
        panic!("no {language} expert in {} ({e}); train it first: {how} (or set {variable})", home.display())
    });
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    let data = PathBuf::from(metadata["data"]["directory"].as_str().expect("data directory"));
    let heldout = std::fs::read_to_string(data.join("heldout-git.jsonl")).expect("held-out functions");
    let heldout = heldout
        .lines()
        .filter_map(|line| {
            let row: Value = serde_json::from_str(line).ok()?;
            let field = |name: &str| row[name].as_str().map(str::to_owned);
            Some((field("prefix")?, field("completion")?, field("suffix")?))
        })
        .collect();
    let trained = std::fs::read_to_string(data.join("train.jsonl")).expect("training examples");
    let trained = trained
        .lines()
        .filter_map(|line| {
            let row: Value = serde_json::from_str(line).ok()?;
            let prefix = row["prefix"].as_str()?;
            let tail = &prefix[prefix.floor_char_boundary(prefix.len().saturating_sub(600))..];
            Some(format!("{tail}{}", row["completion"].as_str()?))
        })
        .collect();
    let home = home.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    Expert { language, home, adapter, heldout, trained }
}

impl Expert {
    /// The held-out functions, whole (see [`function`]).
    fn functions(&self) -> Vec<String> {
        self.heldout.iter().filter_map(|(prefix, completion, _)| function(prefix, completion, self.language)).collect()
    }
}

/// The whole function a held-out example completes: from its signature (and decorators or
/// attributes above it) in the prefix, through the completion, dedented.
fn function(prefix: &str, completion: &str, language: &str) -> Option<String> {
    let lines: Vec<&str> = prefix.split_inclusive('\n').collect();
    let is_signature = |line: &str| {
        let line = line.trim_start();
        match language {
            "python" => line.starts_with("def ") || line.starts_with("async def "),
            _ => {
                let line = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
                line.starts_with("fn ") || line.starts_with("unsafe fn ") || line.starts_with("const fn ")
            }
        }
    };
    let mut start = lines.iter().rposition(|line| is_signature(line))?;
    let decoration = |line: &str| {
        let line = line.trim_start();
        line.starts_with('@') || line.starts_with("#[") || line.starts_with("///")
    };
    while start > 0 && decoration(lines[start - 1]) {
        start -= 1;
    }
    let indent = lines[start].len() - lines[start].trim_start().len();
    let text = lines[start..].concat() + completion;
    let dedented: Vec<&str> =
        text.lines()
            .map(|line| {
                if line.len() >= indent && line[..indent].trim().is_empty() {
                    &line[indent..]
                } else {
                    line.trim_start()
                }
            })
            .collect();
    let body = dedented.join("\n");
    (body.lines().count() >= 3 && body.len() < 2500).then_some(body)
}

struct Document {
    group: &'static str,
    uri: String,
    text: String,
}

/// The two replayed repositories the experts come from: name, pinned commit (as in
/// `scripts/replay-repos.sh`), main author.
const CACHETOOLS: (&str, &str, &str) =
    ("cachetools", "28d4506f2a49d781ffbcecb095fa7aba5bb80aff", "tkemmer@computer.org");
const WALKDIR: (&str, &str, &str) = ("walkdir", "6fd031c82ba5a4204b4ce6eae73dacb00dc072ec", "jamslam@gmail.com");

/// `git` on a replay mirror, its output as text.
fn git(repo: &str, args: &[&str]) -> String {
    let git_dir = root().join(".test-deps/replay").join(format!("{repo}.git"));
    let out = Command::new("git").arg("--git-dir").arg(&git_dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} in {repo}: run ./scripts/replay-repos.sh first");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pinned((repo, commit, _): (&str, &str, &str), path: &str) -> String {
    git(repo, &["show", &format!("{commit}:{path}")])
}

/// The newest `count` held-out SQL strings, each in its Python file: the lines before it from its
/// function's signature (at most ~1 500 bytes), the string, and the rest of its line and a few
/// more. Kept only where the cut text still reads the string as SQL (a cut inside a docstring
/// would not).
fn sql_documents(sql: &Expert, count: usize) -> Vec<Document> {
    let mut documents = Vec::new();
    for (prefix, completion, suffix) in sql.heldout.iter().rev() {
        let is_signature = |at: &usize| {
            let line = prefix[*at..].trim_start_matches(' ');
            line.starts_with("def ") || line.starts_with("async def ")
        };
        let mut lines = std::iter::once(0).chain(prefix.match_indices('\n').map(|(at, _)| at + 1));
        let signature = lines.rfind(is_signature).unwrap_or(0);
        let cut = prefix.ceil_char_boundary(prefix.len().saturating_sub(1500));
        let start = match prefix[cut..].find('\n') {
            Some(i) if cut > signature => cut + i + 1,
            _ => signature,
        };
        let head = &prefix[start..];
        let tail: String = suffix.split_inclusive('\n').take(4).collect();
        let text = format!("{head}{completion}{tail}");
        let string = head.len()..head.len() + completion.len();
        let spans = language_spans("python", "file:///sqlite-utils/db.py", &text);
        if spans.iter().any(|span| span.language == "sql" && span.range == string) {
            documents.push(Document {
                group: "real Python with SQL",
                uri: format!("file:///sqlite-utils/string{}.py", documents.len()),
                text,
            });
        }
        if documents.len() == count {
            break;
        }
    }
    documents
}

fn corpus(python: &Expert, rust: &Expert, pages: usize) -> Vec<Document> {
    let mut documents = vec![
        Document {
            group: "real reST",
            uri: "file:///cachetools/docs/index.rst".into(),
            text: pinned(CACHETOOLS, "docs/index.rst"),
        },
        Document {
            group: "real Markdown",
            uri: "file:///walkdir/README.md".into(),
            text: pinned(WALKDIR, "README.md"),
        },
    ];
    // The newest held-out functions of each history, two of each language per page.
    let newest = |expert: &Expert| expert.functions().into_iter().rev().take(2 * pages).collect::<Vec<_>>();
    let (py, rs) = (newest(python), newest(rust));
    for (page, (py, rs)) in py.chunks(2).zip(rs.chunks(2)).enumerate() {
        let (py_name, rs_name) = (name_of(&py[0]), name_of(&rs[0]));
        let text = format!(
            "# Porting notes {page}\n\nThese notes compare how the cache helpers look in Python and in the \
             directory walker in Rust. Start with `{py_name}`:\n\n```python\n{}\n```\n\nIt is used together \
             with this one:\n\n```python\n{}\n```\n\n## The Rust side\n\nThe walker's `{rs_name}` does the \
             work there:\n\n```rust\n{}\n```\n\nand it calls into:\n\n```rust\n{}\n```\n\nBoth versions keep \
             the same behaviour; the tests cover each of them.\n",
            py[0],
            py.get(1).map_or("", String::as_str),
            rs[0],
            rs.get(1).map_or("", String::as_str),
        );
        documents.push(Document { group: "generated Markdown", uri: format!("file:///notes/page{page}.md"), text });
    }
    documents
}

fn name_of(function: &str) -> String {
    let line = function.lines().find(|line| line.contains("def ") || line.contains("fn ")).unwrap_or_default();
    let after = line.split_once("def ").or_else(|| line.split_once("fn ")).map_or("", |(_, rest)| rest);
    after.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default().to_owned()
}

/// Tokens a router position looks back over.
const ROUTER_WINDOW: usize = 64;

/// Softmax regression from the ids of the last [`ROUTER_WINDOW`] tokens to a class: 0 is "no
/// expert", `1 + e` expert `e`.
struct Router {
    classes: usize,
    vocab: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Router {
    /// Trained by SGD on windows ending at every 8th token of each class's texts.
    fn train(examples: &[(usize, Vec<u32>)], classes: usize, vocab: usize) -> Router {
        let mut router = Router { classes, vocab, weights: vec![0.0; classes * vocab], bias: vec![0.0; classes] };
        let mut windows: Vec<(usize, &[u32])> = Vec::new();
        for (class, tokens) in examples {
            for end in (1..=tokens.len()).step_by(8) {
                windows.push((*class, &tokens[end.saturating_sub(ROUTER_WINDOW)..end]));
            }
        }
        // Each class weighs the same whatever its number of windows.
        let mut per_class = vec![0usize; classes];
        for (class, _) in &windows {
            per_class[*class] += 1;
        }
        let mut order: Vec<usize> = (0..windows.len()).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for epoch in 0..4 {
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            let rate = 0.5 / (1.0 + epoch as f32);
            for &w in &order {
                let (class, window) = windows[w];
                let p = router.probabilities(window);
                let scale = rate * windows.len() as f32 / (classes * per_class[class]) as f32;
                for (c, probability) in p.iter().enumerate() {
                    let gradient = (probability - f32::from(u8::from(c == class))) * scale;
                    router.bias[c] -= gradient;
                    for &token in window {
                        router.weights[c * router.vocab + token as usize] -= gradient / window.len() as f32;
                    }
                }
            }
        }
        router
    }

    fn probabilities(&self, window: &[u32]) -> Vec<f32> {
        let mut logits = self.bias.clone();
        for (c, logit) in logits.iter_mut().enumerate() {
            *logit +=
                window.iter().map(|&t| self.weights[c * self.vocab + t as usize]).sum::<f32>() / window.len() as f32;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f32 = exp.iter().sum();
        exp.iter().map(|e| e / total).collect()
    }

    /// The experts' weights at a position: top-1 when the router is sure (Tsallis entropy with
    /// q = 2 under `gate` × its maximum), its probabilities otherwise; "no expert" adds nothing.
    fn route(&self, window: &[u32], gate: f32) -> Vec<f32> {
        let p = self.probabilities(window);
        let entropy = 1.0 - p.iter().map(|x| x * x).sum::<f32>();
        let most = 1.0 - 1.0 / self.classes as f32;
        if entropy < gate * most {
            let top = (0..self.classes).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            (1..self.classes).map(|c| f32::from(u8::from(c == top))).collect()
        } else {
            p[1..].to_vec()
        }
    }
}

/// The main authors' commit messages up to the pinned commits: their own prose, the router's
/// "no expert" class (the scored documents are not among them).
fn commit_messages() -> Vec<String> {
    [CACHETOOLS, WALKDIR]
        .iter()
        .flat_map(|(repo, commit, author)| {
            git(repo, &["log", "--format=%B%x00", &format!("--author={author}"), commit])
                .split('\0')
                .map(|m| m.trim().to_owned())
                .filter(|m| m.len() > 40)
                .collect::<Vec<_>>()
        })
        .collect()
}

const ROUTINGS: [&str; 7] =
    ["base", "file's expert", "per request", "per span", "per span, next", "router", "spans + router"];

/// Summed negative log-likelihood and token count per (group, language) and routing.
#[derive(Default)]
struct Tally {
    sums: BTreeMap<(String, String), ([f64; ROUTINGS.len()], usize)>,
}

impl Tally {
    fn add(&mut self, group: &str, language: &str, nll: [f64; ROUTINGS.len()]) {
        for key in [(group.to_owned(), language.to_owned()), ("all".to_owned(), language.to_owned())] {
            let entry = self.sums.entry(key).or_default();
            for (sum, value) in entry.0.iter_mut().zip(nll) {
                *sum += value;
            }
            entry.1 += 1;
        }
    }
}

fn main() {
    let window: usize = std::env::var("WINDOW").ok().and_then(|n| n.parse().ok()).unwrap_or(1024);
    let pages: usize = std::env::var("DOCS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let python = expert(
        "python",
        "PYTHON_HOME",
        "target/learning/cachetools-preference-older-lora",
        "ADAPTER=lora STAGES=preference OUTCOMES=older BUDGET=20m cargo bench --bench learning",
    );
    let rust = expert(
        "rust",
        "RUST_HOME",
        "target/learning/walkdir-sft",
        "REPOS=walkdir STAGES=sft BUDGET=15m cargo bench --bench learning",
    );
    let sql_home = std::env::var_os("SQL_HOME")
        .map_or_else(|| root().join("target/learning/sqlite-utils-sft-sql-s20"), PathBuf::from);
    let sql = sql_home.join("adapters/sql/v1").exists().then(|| {
        let how = "REPOS=sqlite-utils LANGUAGE=sql STAGES=sft STEPS=20 cargo bench --bench learning";
        expert("sql", "SQL_HOME", "target/learning/sqlite-utils-sft-sql-s20", how)
    });
    let model = root().join(".test-deps/fixtures/smollm2-135m-instruct.gguf");
    let engine = Engine::load(&model, &LoadOptions::default()).expect("SmolLM2 (./scripts/test-deps.sh)");
    let experts: Vec<&Expert> = [Some(&python), Some(&rust), sql.as_ref()].into_iter().flatten().collect();
    for expert in &experts {
        engine.load_adapter(expert.language, &expert.adapter).unwrap();
    }
    let names: Vec<&str> = experts.iter().map(|e| e.language).collect();
    let only_sql = std::env::var("ONLY").is_ok_and(|only| only == "sql");
    let mut documents = if only_sql { Vec::new() } else { corpus(&python, &rust, pages) };
    let generated = documents.len().saturating_sub(2);
    match &sql {
        Some(sql) => {
            let count = std::env::var("SQL_DOCS").ok().and_then(|n| n.parse().ok()).unwrap_or(30);
            documents.extend(sql_documents(sql, count));
        }
        None => {
            let how = "REPOS=sqlite-utils LANGUAGE=sql STAGES=sft STEPS=20 cargo bench --bench learning trains it";
            assert!(!only_sql, "ONLY=sql: no SQL expert in {} ({how})", sql_home.display());
            eprintln!("no SQL expert in {}: the SQL group is left out ({how})", sql_home.display());
        }
    }
    eprintln!(
        "{} documents ({generated} generated pages from {} Python and {} Rust held-out functions, {} SQL strings), \
         windows of {window} tokens",
        documents.len(),
        python.heldout.len(),
        rust.heldout.len(),
        documents.iter().filter(|d| d.group == "real Python with SQL").count(),
    );

    let tokenizer = engine.tokenizer();
    let started = Instant::now();
    let gate: f32 = std::env::var("GATE").ok().and_then(|x| x.parse().ok()).unwrap_or(0.5);
    let mut examples: Vec<(usize, Vec<u32>)> =
        commit_messages().iter().map(|m| (0, tokenizer.encode(m).unwrap())).collect();
    let prose = examples.len();
    for (e, expert) in experts.iter().enumerate() {
        examples.extend(expert.trained.iter().map(|text| (e + 1, tokenizer.encode(text).unwrap())));
    }
    let router = Router::train(&examples, names.len() + 1, tokenizer.vocab_size());
    let curated: Vec<String> = experts.iter().map(|e| e.trained.len().to_string()).collect();
    eprintln!(
        "router trained in {:.1} s on {prose} commit messages and {} curated examples",
        started.elapsed().as_secs_f64(),
        curated.join(" + ")
    );

    let started = Instant::now();
    let mut tally = Tally::default();
    for document in &documents {
        let spans = language_spans("", &document.uri, &document.text);
        let tokens = tokenizer.encode(&document.text).unwrap();
        let ranges = tokenizer.token_ranges(&document.text).unwrap();
        let language_of = |token: usize| {
            let at = ranges[token].start;
            spans.iter().find(|span| span.range.contains(&at)).map_or("plaintext", |span| span.language.as_str())
        };
        let expert_of = |token: usize| names.iter().position(|name| *name == language_of(token));
        let file_expert = names.iter().position(|name| *name == document_language("", &document.uri));
        let one_hot = |expert: Option<usize>| {
            (0..names.len()).map(|e| f32::from(u8::from(Some(e) == expert))).collect::<Vec<f32>>()
        };
        for start in (0..tokens.len()).step_by(window) {
            let end = (start + window).min(tokens.len());
            if end - start < 2 {
                continue;
            }
            let pass = |row: &dyn Fn(usize) -> Vec<f32>| {
                let weights: Vec<Vec<f32>> = (start..end - 1).map(row).collect();
                engine.routed_logprobs(&tokens[start..end], &names, &weights).unwrap()
            };
            let base = pass(&|_| one_hot(None));
            let whole: Vec<Vec<f32>> = (0..names.len()).map(|e| pass(&|_| one_hot(Some(e)))).collect();
            let own = pass(&|i| one_hot(expert_of(i)));
            let next = pass(&|i| one_hot(expert_of(i + 1)));
            let routed = |i: usize| router.route(&tokens[(i + 1).saturating_sub(ROUTER_WINDOW).max(start)..=i], gate);
            let mixed = pass(&routed);
            let spans_then_router = pass(&|i| expert_of(i + 1).map_or_else(|| routed(i), |e| one_hot(Some(e))));
            let file = file_expert.map_or(&base, |e| &whole[e]);
            for i in 0..end - start - 1 {
                let predicted = start + i + 1;
                let request = expert_of(predicted).map_or(base[i], |e| whole[e][i]);
                let nll =
                    [-base[i], -file[i], -request, -own[i], -next[i], -mixed[i], -spans_then_router[i]].map(f64::from);
                tally.add(document.group, language_of(predicted), nll);
            }
        }
    }
    eprintln!("scored in {:.0} s", started.elapsed().as_secs_f64());

    let trained: Vec<String> = experts.iter().map(|e| format!("{} ({})", e.language, e.home)).collect();
    println!(
        "\nmean negative log-likelihood per token (nats; lower is better), SmolLM2-135M, experts: {}\n",
        trained.join(", ")
    );
    println!(
        "| group | language | tokens | {} | per span, next vs per request | spans + router vs per span, next |",
        ROUTINGS.join(" | ")
    );
    println!("|---|---|---|{}---|---|", "---|".repeat(ROUTINGS.len()));
    let change = |from: f64, to: f64| (from - to) / from * 100.0;
    for ((group, language), (sums, count)) in &tally.sums {
        let mean = sums.map(|sum| sum / *count as f64);
        let cells: Vec<String> = mean.iter().map(|m| format!("{m:.4}")).collect();
        println!(
            "| {group} | {language} | {count} | {} | {:+.2} % | {:+.2} % |",
            cells.join(" | "),
            change(mean[2], mean[4]),
            change(mean[4], mean[6])
        );
    }
    println!("\n(a positive % is a lower NLL: better)");
}
