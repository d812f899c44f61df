//! The yardstick for anything that claims to make suggestions better: real public repositories'
//! history replayed as a user would have written it. Every function added or changed along the
//! first-parent line of a pinned commit (`marunochi::history`) is a request: the file as it was at
//! that commit with the function's body removed, the cursor where the body starts, sent through
//! `marunochi lsp` (the daemon, the prompt, the post-processing: what an editor gets). The oldest
//! 80 % of the functions are the "history" (the user's past, for training and retrieval), the
//! newest 20 % the "exam", scored here against what the author wrote:
//!
//! - answered: share of requests that got a suggestion;
//! - first line: the suggestion's first line equals the author's (whitespace trimmed);
//! - edit similarity: character similarity (`eval::stats::edit_similarity`) between the suggestion
//!   and as many lines of the author's body as the suggestion has (a short suggestion is judged on
//!   what it tried, not on the rest of the function);
//! - latency: request → answer, p50 and p95.
//!
//! Each request is asked once under every configuration picked from [`VARIANTS`] (context sources
//! and budgets), side by side in one run; each configuration has its own home and daemon, each
//! request a fresh workspace and documents (no KV cache shared between requests: runs repeat).
//!
//! `./scripts/test-deps.sh && ./scripts/replay-repos.sh && cargo bench --bench replay`
//! (EXAM=n exam requests per repository, evenly spread over the newest 20 %, default 40;
//! VARIANTS=name,name, default `none,examples`; MODEL=path, default SmolLM2; REPOS=name,name to
//! pick; CURSOR=line2 puts the cursor on the body's second line, its first written (see `request`);
//! EMPTY=1 prints every empty answer's cursor line; RETRIEVAL=1 generates nothing and reports how
//! often the snippets name a function the author's body calls, K=n snippets, ranked by BM25, by the
//! model's own input embeddings and by both fused; SILENCE=1 judges the
//! stay-silent filter on outcomes the author's code decides, see `silence_only`). The repositories and
//! their pinned commits are in `scripts/replay-repos.sh`.

#[allow(dead_code)] // the benchmark uses a part of the tests' helpers
#[path = "../tests/it/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use marunochi::eval::stats::edit_similarity;
use marunochi::history::{self, Walk, Written};
use serde_json::json;

/// Name, first-parent commit to replay up to (the same list as `scripts/replay-repos.sh`).
const REPOS: [(&str, &str); 3] = [
    ("more-itertools", "2fe1b2eeb9d75f994113fe3ac76d14b6bcd6fb10"),
    ("cachetools", "28d4506f2a49d781ffbcecb095fa7aba5bb80aff"),
    ("walkdir", "6fd031c82ba5a4204b4ce6eae73dacb00dc072ec"),
];

/// The LSP position (UTF-16) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset];
    let line = before.matches('\n').count() as u32;
    let column = before.rsplit('\n').next().unwrap_or("").encode_utf16().count() as u32;
    (line, column)
}

/// One request: the file as the author had it, where the cursor is, and what they wrote from there.
struct Request {
    text: String,
    cursor: usize,
    target: String,
}

/// `CURSOR=body` (the default): the body removed, the cursor where it starts. `CURSOR=line2`: the
/// body's first line written, the cursor after the second line's indentation, the rest removed
/// (a body of one line, or whose second line is blank, is asked at its start).
fn request(written: &Written) -> Request {
    let (start, end) = (written.body.start, written.body.end);
    let body = &written.text[start..end];
    let second = body.find('\n').map(|newline| newline + 1).filter(|&at| {
        std::env::var("CURSOR").as_deref() == Ok("line2")
            && body[at..].lines().next().is_some_and(|l| !l.trim().is_empty())
    });
    let cursor = match second {
        Some(at) => start + at + (body[at..].len() - body[at..].trim_start_matches([' ', '\t']).len()),
        None => start,
    };
    Request {
        text: format!("{}{}", &written.text[..cursor], &written.text[end..]),
        cursor,
        target: written.text[cursor..end].to_owned(),
    }
}

/// The newest fifth of `all`, `count` of them spread evenly.
fn exam(all: &[Written], count: usize) -> Vec<&Written> {
    let newest = &all[all.len() * 4 / 5..];
    let step = (newest.len() as f64 / count.max(1) as f64).max(1.0);
    (0..count.min(newest.len())).map(|i| &newest[(i as f64 * step) as usize]).collect()
}

#[derive(Default)]
struct Score {
    requests: usize,
    answered: usize,
    first_line: usize,
    similarity: Vec<f64>,
    latency_ms: Vec<f64>,
    /// How many of the suggestions each context source went into (from the variant's store).
    sources: std::collections::BTreeMap<String, usize>,
}

impl Score {
    fn add(&mut self, suggestion: &str, target: &str, ms: f64) {
        self.requests += 1;
        self.latency_ms.push(ms);
        let lines = suggestion.lines().count().max(1);
        let judged: String = target.split_inclusive('\n').take(lines).collect();
        self.similarity.push(if suggestion.is_empty() { 0.0 } else { edit_similarity(suggestion, judged.trim_end()) });
        if suggestion.trim().is_empty() {
            return;
        }
        self.answered += 1;
        let first = |s: &str| s.lines().next().unwrap_or("").trim().to_owned();
        self.first_line += usize::from(first(suggestion) == first(target));
    }

    /// The sources of the exam's suggestions, read from the store of the variant's home.
    fn count_sources(&mut self, home: &Path) {
        let db = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
        let mut rows = db.prepare("SELECT context_sources FROM interactions WHERE id NOT LIKE 'history-%'").unwrap();
        for sources in rows.query_map([], |row| row.get::<_, String>(0)).unwrap() {
            for source in serde_json::from_str::<Vec<String>>(&sources.unwrap()).unwrap() {
                *self.sources.entry(source).or_default() += 1;
            }
        }
    }

    fn row(&mut self, name: &str) -> String {
        self.latency_ms.sort_by(f64::total_cmp);
        let share = |n: usize| 100.0 * n as f64 / self.requests.max(1) as f64;
        let sources: Vec<String> = self.sources.iter().map(|(source, n)| format!("{source} {n}")).collect();
        format!(
            "{name:<28} {:>5} {:>8.1}% {:>10.1}% {:>8.3} {:>8.0} {:>8.0}  {}",
            self.requests,
            share(self.answered),
            share(self.first_line),
            marunochi::eval::stats::mean(&self.similarity),
            percentile(&self.latency_ms, 0.5),
            percentile(&self.latency_ms, 0.95),
            sources.join(", "),
        )
    }
}

/// A configuration the exam is asked under: its name and its `[serving]` settings.
const VARIANTS: [(&str, &str); 13] = [
    ("none", "repository_snippets = 0\nown_examples = 0\n"),
    ("definitions", "repository_snippets = 0\nown_examples = 0\ndefinitions = 2\n"),
    ("definitions-warm", "repository_snippets = 0\nown_examples = 0\ndefinitions = 2\ndefinitions_wait_ms = 5000\n"),
    (
        "examples-definitions",
        "repository_snippets = 0\nown_examples = 1\ndefinitions = 2\ndefinitions_wait_ms = 5000\n",
    ),
    ("snippets", "repository_snippets = 2\nown_examples = 0\n"),
    ("examples", "repository_snippets = 0\nown_examples = 1\n"),
    ("both", "repository_snippets = 2\nown_examples = 1\n"),
    ("all", "repository_snippets = 2\nown_examples = 1\ndefinitions = 2\ndefinitions_wait_ms = 5000\n"),
    ("snippets-35", "repository_snippets = 2\nown_examples = 0\ncontext_share = 35\n"),
    ("snippets-1536", "repository_snippets = 2\nown_examples = 0\nprompt_tokens = 1536\ncontext_share = 35\n"),
    ("examples-10", "repository_snippets = 0\nown_examples = 1\ncontext_share = 10\n"),
    ("examples-20", "repository_snippets = 0\nown_examples = 1\ncontext_share = 20\n"),
    ("examples-1536", "repository_snippets = 0\nown_examples = 1\nprompt_tokens = 1536\ncontext_share = 35\n"),
];

/// The history (the oldest 80 %) as code the user took and kept with an excellent score: what the
/// store of a user who wrote it with marunochi would hold, the pool of `own_examples`.
fn seed_store(home: &Path, history: &[Written]) {
    let mut store = marunochi::store::Store::open(&home.join("marunochi.db")).unwrap();
    for (i, written) in history.iter().enumerate() {
        let id = format!("history-{i}");
        let body = &written.text[written.body.clone()];
        let shown = marunochi::store::Shown {
            language: written.language.into(),
            suggestion: body.into(),
            prompt_prefix: written.text[..written.body.start].into(),
            ..shown_row(&id, &format!("file:///history/{}", written.path.display()), SHOWN_AT_MS + i as i64)
        };
        store.batch(|b| b.shown(&shown)).unwrap();
        store.batch(|b| b.outcome(&taken(&id, marunochi::store::Action::Accepted, body, 0..body.len()))).unwrap();
    }
    drop(store);
    let db = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
    db.execute("UPDATE interactions SET quality_score = 95", []).unwrap();
}

/// The workspace as the author had it when writing `written`: the files of the commit before it,
/// and the file being written as it is at the commit with the function's body removed. The root
/// carries the repository's name (Qwen's prompts name it); a new root per request gives each its
/// own documents, so no request reuses another's KV cache and runs are repeatable.
fn workspace_for(dir: &Path, repo: &Path, name: &str, written: &Written, text: &str) -> PathBuf {
    let root = dir.join(name);
    let before = format!("{}^", written.commit);
    for (path, content) in history::files_at(repo, &before, written.language, 512 * 1024).unwrap_or_default() {
        std::fs::create_dir_all(root.join(&path).parent().unwrap()).unwrap();
        std::fs::write(root.join(&path), content).unwrap();
    }
    std::fs::create_dir_all(root.join(&written.path).parent().unwrap()).unwrap();
    std::fs::write(root.join(&written.path), text).unwrap();
    root
}

/// Asks `marunochi lsp` for the suggestion at the start of `written`'s body in `root`; with a
/// `definitions` variant, `marunochi proxy` in front of pylsp for Python (rust-analyzer is not
/// installed here: Rust goes without).
fn ask(
    home: &Path,
    model: &Path,
    root: &Path,
    written: &Written,
    asked: &Request,
    settings: &str,
) -> (String, f64, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_marunochi"));
    command.env("MARUNOCHI_HOME", home);
    if settings.contains("definitions = 2") && written.language == "python" {
        command.args(["proxy", "--model", &model.to_string_lossy(), "--"]).args(pylsp());
    } else {
        command.args(["lsp", "--model", &model.to_string_lossy()]);
    }
    let mut editor = Client::spawn(command);
    editor.initialize(root, &[]);
    // The repository index and the examples are read in the background; an editor would ask
    // before they are done, but the exam is about what they add.
    let started = Instant::now();
    loop {
        let status =
            editor.request("workspace/executeCommand", json!({"command": "marunochi.status", "arguments": []}));
        let ready = |source: &serde_json::Value| source.is_null() || source.is_object();
        let (repository, examples) = (&status["result"]["repository"], &status["result"]["own_examples"]);
        if (ready(repository) && ready(examples)) || started.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let uri = file_uri(&root.join(&written.path));
    let (line, character) = position(&asked.text, asked.cursor);
    open_as(&mut editor, &uri, written.language, &asked.text);
    let asked = Instant::now();
    let answer = inline(&mut editor, &uri, line, character);
    let ms = asked.elapsed().as_secs_f64() * 1000.0;
    editor.shutdown_and_exit();
    let item = &answer["result"]["items"][0];
    let id = item["command"]["arguments"][0].as_str().unwrap_or("").to_owned();
    (item["insertText"].as_str().unwrap_or("").to_owned(), ms, id)
}

/// The name a unit defines: the identifier after its first `def`/`fn`.
fn defined_name(unit: &str) -> Option<&str> {
    let first = unit.lines().next()?;
    let after = first.split_once("def ").or_else(|| first.split_once("fn "))?.1;
    let end = after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len());
    (end > 0).then_some(&after[..end])
}

/// What the author would have done with `suggestion`: taken whole when the author's body starts
/// with it, in part (its first lines) when at least its first line is theirs, else rejected.
fn decided(suggestion: &str, target: &str) -> (marunochi::store::Action, String) {
    use marunochi::store::Action;
    let first = |s: &str| s.lines().next().unwrap_or("").trim().to_owned();
    if suggestion.trim().is_empty() || first(suggestion) != first(target) {
        return (Action::Rejected, String::new());
    }
    if target.starts_with(suggestion) {
        return (Action::Accepted, suggestion.to_owned());
    }
    let kept: String = suggestion
        .split_inclusive('\n')
        .zip(target.split_inclusive('\n'))
        .take_while(|(ours, theirs)| ours.trim_end() == theirs.trim_end())
        .map(|(ours, _)| ours)
        .collect();
    (Action::Partial, kept)
}

/// `SILENCE=1`: the stay-silent filter on a user's real outcomes. `3 × EXAM` functions spread over
/// the newest 40 % of the history are asked in time order (default configuration, no own
/// examples); each suggestion is taken, taken in part or rejected as the author's code dictates
/// (`decided`) and written to the store as the capture stage would. The filter learns from the
/// oldest two thirds (`silence::Filters::load`'s rule: its own held-out quarter picks the
/// threshold) and is judged on the newest third: suggestions shown and characters taken, with
/// the filter and without. The outcomes are kept in `target/replay-silence/<repository>.db`;
/// `SILENCE=judge` judges them again without asking the model. SPAN=older asks functions of the
/// 40 %–80 % stretch of the history instead, away from the newest functions that the learning
/// benchmark's exam holds out, and keeps them in `target/replay-silence/<repository>-older.db`.
fn silence_only(name: &str, repo: &Path, commit: &str, model: &Path, count: usize) -> String {
    let all = history::functions(repo, &Walk { until: commit.into(), ..Walk::default() }).unwrap();
    let older = std::env::var("SPAN").is_ok_and(|s| s == "older");
    let newest = if older { &all[all.len() * 2 / 5..all.len() * 4 / 5] } else { &all[all.len() * 3 / 5..] };
    let step = (newest.len() as f64 / (3 * count) as f64).max(1.0);
    let asked: Vec<&Written> =
        (0..(3 * count).min(newest.len())).map(|i| &newest[(i as f64 * step) as usize]).collect();
    let kept =
        repo_root().join("target/replay-silence").join(format!("{name}{}.db", if older { "-older" } else { "" }));
    if std::env::var("SILENCE").as_deref() != Ok("judge") {
        ask_in_order(name, repo, model, &asked, &kept);
    }
    let outcomes = marunochi::store::Store::open(&kept).unwrap().shown_outcomes(usize::MAX).unwrap();
    let split = outcomes.len() * 2 / 3;
    let filters = marunochi::silence::Filters::learn(&outcomes[..split]);
    let judged = filters.judge(&outcomes[split..]);
    let model = filters.summary().into_iter().next();
    let threshold = model.as_ref().and_then(|m| m.model.as_ref()?.threshold);
    let reason = model.and_then(|m| m.reason).unwrap_or_default();
    format!(
        "{name:<16} {:>7} | {:>6} {:>6} {:>10} | {:>9}   {:>6} {:>6} {:>10}   {}",
        split,
        judged.suggestions,
        judged.taken,
        judged.taken_chars,
        threshold.map_or_else(|| "none".to_owned(), |t| format!("{t:.2}")),
        judged.suggestions - judged.hidden,
        judged.taken - judged.taken_hidden,
        judged.taken_chars - judged.taken_chars_hidden,
        reason,
    )
}

/// Asks `asked` in order and writes what the author would have done with each suggestion into
/// the store, kept at `kept` (so `SILENCE=judge` can judge another filter rule without the model).
fn ask_in_order(name: &str, repo: &Path, model: &Path, asked: &[&Written], kept: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let settings = "own_examples = 0\nstay_silent = false\n";
    std::fs::write(home.join("config.toml"), format!("[daemon]\nidle_exit_secs = 60\n[serving]\n{settings}")).unwrap();
    let started = Instant::now();
    for (i, written) in asked.iter().enumerate() {
        let one = request(written);
        let root = workspace_for(&dir.path().join(i.to_string()), repo, name, written, &one.text);
        let (suggestion, _, id) = ask(&home, model, &root, written, &one, settings);
        if id.is_empty() {
            continue;
        }
        let (action, taken) = decided(&suggestion, &one.target);
        let db = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
        let changed = db
            .execute(
                "UPDATE interactions SET action = ?1, final_code = ?2 WHERE id = ?3",
                rusqlite::params![action.as_str(), taken, id],
            )
            .unwrap();
        assert_eq!(changed, 1, "the suggestion {id} is in the store");
        if (i + 1) % 20 == 0 {
            eprintln!("  {name}: {}/{} ({:.0} s)", i + 1, asked.len(), started.elapsed().as_secs_f64());
        }
    }
    stop_daemon(&home);
    let _ = std::fs::remove_file(kept);
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    let db = rusqlite::Connection::open(home.join("marunochi.db")).unwrap();
    db.execute("VACUUM INTO ?1", [kept.to_string_lossy()]).unwrap();
}

/// `RETRIEVAL=1`: no model; how often the snippets name a function the author's body calls, against
/// how often any function of the workspace (outside the file) could have; ranked by the index's
/// BM25 (what serving uses), by [`Dense`] vectors alone, and by both fused (Tabby's reciprocal-rank
/// fusion), to judge whether an embedding ranking would earn its place beside BM25.
fn retrieval_only(name: &str, repo: &Path, commit: &str, count: usize, k: usize, dense: &Dense) {
    let all = history::functions(repo, &Walk { until: commit.into(), ..Walk::default() }).unwrap();
    let exam = exam(&all, count);
    let dir = tempfile::tempdir().unwrap();
    let (mut useful, mut useful_dense, mut useful_fused, mut possible, mut any) = (0, 0, 0, 0, 0);
    for (i, written) in exam.iter().enumerate() {
        let asked = request(written);
        let target = &asked.target;
        let root = workspace_for(&dir.path().join(i.to_string()), repo, name, written, &asked.text);
        let index = marunochi::retrieve::Index::build(std::slice::from_ref(&root));
        let current = root.join(&written.path);
        let prefix = &asked.text[..asked.cursor];
        let calls = |unit: &str| defined_name(unit).is_some_and(|n| target.contains(&format!("{n}(")));
        let ranked = index.search(prefix, usize::MAX, |path, _| path == current);
        let hits = &ranked[..k.min(ranked.len())];
        let bm25: Vec<String> = ranked.iter().map(|h| h.text.clone()).collect();
        let units: Vec<String> = marunochi::retrieve::source_files(std::slice::from_ref(&root))
            .into_iter()
            .filter(|path| *path != current)
            .flat_map(|path| marunochi::retrieve::units_of(&path))
            .collect();
        let by_dense = dense.rank(prefix, &units);
        let fused = fuse(&bm25, &by_dense);
        any += usize::from(!hits.is_empty());
        useful += usize::from(hits.iter().any(|h| calls(&h.text)));
        useful_dense += usize::from(by_dense.iter().take(k).any(|u| calls(u)));
        useful_fused += usize::from(fused.iter().take(k).any(|u| calls(u)));
        possible += usize::from(units.iter().any(|u| calls(u)));
        if std::env::var_os("SHOW").is_some() {
            eprintln!("{}: {}", written.path.display(), written.name.join("."));
            for h in hits {
                eprintln!(
                    "    {:.1} {} {}",
                    h.score,
                    h.path.strip_prefix(&root).unwrap().display(),
                    h.text.lines().next().unwrap()
                );
            }
        }
    }
    println!(
        "{name}: {} requests, {any} with a snippet; top {k} hold one the body calls: BM25 {useful}, dense {useful_dense}, fused {useful_fused} (of {possible} where the body calls a workspace function)",
        exam.len()
    );
}

/// Reciprocal-rank fusion of two rankings of the same units (k = 60, as Tabby and the RRF paper).
fn fuse(first: &[String], second: &[String]) -> Vec<String> {
    let mut scores: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for ranking in [first, second] {
        for (rank, unit) in ranking.iter().enumerate() {
            *scores.entry(unit.as_str()).or_default() += 1.0 / (60.0 + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(&str, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    fused.into_iter().map(|(unit, _)| unit.to_owned()).collect()
}

/// The embedding that needs no download: the served model's own input embeddings, a text being
/// the SIF-weighted mean of its tokens' rows (weight a / (a + p(token)), p counted over the units
/// ranked) with the units' mean direction removed (Arora et al., 2017) — what model2vec-style
/// static embeddings start from.
struct Dense {
    tokenizer: marunochi::engine::TextTokenizer,
    table: Vec<f32>,
    dim: usize,
}

impl Dense {
    fn load(model: &Path) -> Dense {
        use candle_core::quantized::gguf_file;
        let mut file = std::fs::File::open(model).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let tokenizer = marunochi::engine::TextTokenizer::from_gguf(&content.metadata).unwrap();
        let table = content.tensor(&mut file, "token_embd.weight", &candle_core::Device::Cpu).unwrap();
        let table = table.dequantize(&candle_core::Device::Cpu).unwrap();
        let dim = table.dims()[1];
        Dense { tokenizer, table: table.flatten_all().unwrap().to_vec1().unwrap(), dim }
    }

    /// `units` best first for the last 12 lines of `prefix` (the query BM25 uses too).
    fn rank(&self, prefix: &str, units: &[String]) -> Vec<String> {
        let tokens: Vec<Vec<u32>> = units.iter().map(|u| self.tokenizer.encode(u).unwrap()).collect();
        let mut frequency: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
        let total = tokens.iter().map(Vec::len).sum::<usize>().max(1) as f64;
        for &t in tokens.iter().flatten() {
            *frequency.entry(t).or_default() += 1.0 / total;
        }
        let embed = |ids: &[u32]| -> Vec<f32> {
            let mut v = vec![0f32; self.dim];
            for &t in ids {
                let weight = (1e-3 / (1e-3 + frequency.get(&t).copied().unwrap_or(0.0))) as f32;
                let row = &self.table[t as usize * self.dim..(t as usize + 1) * self.dim];
                v.iter_mut().zip(row).for_each(|(x, r)| *x += weight * r);
            }
            let n = ids.len().max(1) as f32;
            v.iter_mut().for_each(|x| *x /= n);
            v
        };
        let vectors: Vec<Vec<f32>> = tokens.iter().map(|ids| embed(ids)).collect();
        let mut common = vec![0f32; self.dim];
        for v in &vectors {
            common.iter_mut().zip(v).for_each(|(c, x)| *c += x / vectors.len() as f32);
        }
        let query_lines: Vec<&str> = prefix.lines().collect();
        let query = query_lines[query_lines.len().saturating_sub(12)..].join("\n");
        let centred = |v: &[f32]| -> Vec<f32> { v.iter().zip(&common).map(|(x, c)| x - c).collect() };
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
        let query = centred(&embed(&self.tokenizer.encode(&query).unwrap()));
        let query_norm = norm(&query);
        let cosine = |v: &[f32]| {
            let v = centred(v);
            query.iter().zip(&v).map(|(x, y)| x * y).sum::<f32>() / (query_norm * norm(&v))
        };
        let mut ranked: Vec<(usize, f32)> = vectors.iter().enumerate().map(|(i, v)| (i, cosine(v))).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().map(|(i, _)| units[i].clone()).collect()
    }
}

fn replay(name: &str, repo: &Path, commit: &str, model: &Path, count: usize, variants: &[(&str, &str)]) -> Vec<Score> {
    let started = Instant::now();
    let all = history::functions(repo, &Walk { until: commit.into(), ..Walk::default() })
        .unwrap_or_else(|e| panic!("{e} (run ./scripts/replay-repos.sh first)"));
    let exam = exam(&all, count);
    eprintln!(
        "{name}: {} functions written in the history ({:.1} s to walk it); {} exam requests × {} configurations",
        all.len(),
        started.elapsed().as_secs_f64(),
        exam.len(),
        variants.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let homes: Vec<PathBuf> = variants
        .iter()
        .map(|(variant, settings)| {
            let home = dir.path().join(variant).join("home");
            std::fs::create_dir_all(&home).unwrap();
            std::fs::write(home.join("config.toml"), format!("[daemon]\nidle_exit_secs = 60\n[serving]\n{settings}"))
                .unwrap();
            if settings.contains("own_examples = 1") {
                seed_store(&home, &all[..all.len() * 4 / 5]);
            }
            home
        })
        .collect();
    let show_empty = std::env::var_os("EMPTY").is_some();
    let mut scores: Vec<Score> = variants.iter().map(|_| Score::default()).collect();
    for (i, written) in exam.iter().enumerate() {
        let asked = request(written);
        let target = &asked.target;
        for ((variant, settings), (home, score)) in variants.iter().zip(homes.iter().zip(&mut scores)) {
            let root = workspace_for(&dir.path().join(variant).join(i.to_string()), repo, name, written, &asked.text);
            let (suggestion, ms, _) = ask(home, model, &root, written, &asked, settings);
            if show_empty && suggestion.trim().is_empty() {
                let cursor_line = asked.text[..asked.cursor].rsplit('\n').next().unwrap_or("");
                eprintln!(
                    "  {variant} empty: {}: {cursor_line:?} (author: {:?})",
                    written.path.display(),
                    target.lines().next()
                );
            }
            score.add(&suggestion, target, ms);
        }
        if (i + 1) % 10 == 0 {
            eprintln!("  {name}: {}/{} ({:.0} s)", i + 1, exam.len(), started.elapsed().as_secs_f64());
        }
    }
    for (home, score) in homes.iter().zip(&mut scores) {
        stop_daemon(home);
        score.count_sources(home);
    }
    scores
}

fn main() {
    let model = std::env::var_os("MODEL").map_or_else(|| fixture("smollm2-135m-instruct.gguf"), Into::into);
    let count = env_or("EXAM", 40);
    let picked = std::env::var("REPOS").ok();
    let chosen = std::env::var("VARIANTS").unwrap_or_else(|_| "none,examples".into());
    let variants: Vec<(&str, &str)> =
        VARIANTS.iter().copied().filter(|(name, _)| chosen.split(',').any(|c| c == *name)).collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut dense = None;
    for (name, commit) in REPOS {
        if picked.as_ref().is_some_and(|p| !p.split(',').any(|n| n == name)) {
            continue;
        }
        let repo = repo_root().join(".test-deps/replay").join(format!("{name}.git"));
        if std::env::var_os("SILENCE").is_some() {
            rows.push(silence_only(name, &repo, commit, &model, count));
            continue;
        }
        if std::env::var_os("RETRIEVAL").is_some() {
            let dense = dense.get_or_insert_with(|| Dense::load(&model));
            retrieval_only(name, &repo, commit, count, env_or("K", 2), dense);
            continue;
        }
        for ((variant, _), mut score) in variants.iter().zip(replay(name, &repo, commit, &model, count, &variants)) {
            rows.push(score.row(&format!("{name} {variant}")));
        }
    }
    if std::env::var_os("SILENCE").is_some() {
        println!(
            "\nstay-silent filter with {}: learned from the older 2/3 of the outcomes, judged on the newer 1/3",
            model.display()
        );
        println!(
            "{:<16} {:>6} | {:>6} {:>6} {:>10} | {:>9}   {:>6} {:>6} {:>10}",
            "repository", "learned", "shown", "taken", "taken chr", "threshold", "shown", "taken", "taken chr"
        );
        println!("{:<16} {:>6} | without the filter {:>6} | {:>9} with the filter", "", "", "", "");
    } else {
        println!("\nreplay with {} (exam: newest 20 % of each history)", model.display());
        println!(
            "{:<28} {:>5} {:>9} {:>11} {:>8} {:>8} {:>8}  context: suggestions with it",
            "repository", "asked", "answered", "first line", "edit sim", "p50 ms", "p95 ms"
        );
    }
    for row in rows {
        println!("{row}");
    }
    println!("({:.0} s in all)", started.elapsed().as_secs_f64());
}
