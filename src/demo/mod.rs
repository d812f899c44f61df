//! `marunochi demo`: the loop on a sample project, stage by stage — a scripted editor behind the
//! real proxy and language server takes, partly takes, rejects and corrects real suggestions; the
//! store shows what it learned; retention and quality run with the clock moved a month on; the
//! graded interactions are curated into training sets; an expert adapter is trained on the
//! project's own code (a house style the base model does not follow), judged by the eval gate,
//! promoted, and its completions shown next to the base model's. Everything happens in a home of
//! its own (`MARUNOCHI_HOME/demo/<time>/`), never in the user's store. Entry: [`run`].

mod editor;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::store::Store;
use editor::Editor;

/// The demo's model: the one named, else the configured one, else a Qwen2.5-Coder model found on
/// this machine (the family marunochi is built for), else `fallback` (the README's main job passes
/// SmolLM2 from PyPI).
pub fn choose_model(
    named: Option<&Path>,
    configured: Option<&Path>,
    found: &[crate::engine::discovery::Found],
    fallback: Option<&Path>,
) -> Result<PathBuf, String> {
    if let Some(path) = named.or(configured) {
        return Ok(path.to_owned());
    }
    let coder = |f: &&crate::engine::discovery::Found| {
        f.runnable && f.error.is_none() && f.name.to_lowercase().replace(['_', ' '], "-").contains("qwen2.5-coder")
    };
    if let Some(found) = found.iter().filter(coder).min_by_key(|f| !f.fim) {
        return Ok(found.path.clone());
    }
    fallback.map(Path::to_owned).ok_or_else(|| {
        "no model: pass --model, set [engine] model in config.toml, or run ./scripts/main.sh (it fetches SmolLM2)"
            .to_owned()
    })
}

pub struct Options {
    /// The marunochi executable (this one).
    pub exe: PathBuf,
    pub model: PathBuf,
    pub server: Vec<String>,
    /// Where the demo's own home goes (its store, workspace, datasets).
    pub dir: PathBuf,
    /// A shorter gate (2 HumanEval problems instead of 20), for CI.
    pub quick: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error("the editing session failed: {0}")]
    Session(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Curate(#[from] crate::curate::CurateError),
}

const SAMPLE: &str = "\
def total(prices):
    return sum(prices)


def average(prices):
    return 


def cheapest(prices):
    return 


def describe(item, price):
    return 


def largest(prices):
    return 
";

/// The `    return ` lines the session completes, in order: taken, partly taken, rejected, corrected.
const SPOTS: [&str; 4] = ["take", "take part of", "reject", "correct"];

fn stage(title: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(title.to_owned());
    bar
}

fn done(bar: ProgressBar, line: &str) {
    bar.finish_and_clear();
    println!("✓ {line}");
}

/// Runs the demo; prints each stage as it goes.
pub fn run(options: &Options) -> Result<(), DemoError> {
    let home = &options.dir;
    let workspace = home.join("workspace");
    std::fs::create_dir_all(&workspace).map_err(|e| DemoError::Setup(format!("{}: {e}", workspace.display())))?;
    // A daemon of its own, gone soon after the demo. The demo's adapter learns one house style in
    // 8 updates at a high learning rate and forgets some general code on the way (about +12 % log-
    // loss on the standard library, which the default margin of 2 % refuses); the demo allows 20 %
    // so the rest of the loop can be shown, and prints the figure.
    std::fs::write(home.join("config.toml"), "[daemon]\nidle_exit_secs = 10\n\n[eval]\nnll_rise = 0.2\n")
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let file = workspace.join("shop.py");
    std::fs::write(&file, SAMPLE).map_err(|e| DemoError::Setup(e.to_string()))?;
    println!("marunochi demo: everything below happens in {}", home.display());

    let bar = stage("Starting the proxy in front of the language server (and the model in the daemon)…");
    let mut command = Command::new(&options.exe);
    command.env("MARUNOCHI_HOME", home).arg("proxy").arg("--model").arg(&options.model).arg("--").args(&options.server);
    let mut session = Session::start(command, &workspace, &file)?;
    done(
        bar,
        &format!("proxy running: {} behind marunochi, model {}", options.server.join(" "), options.model.display()),
    );

    let bar = stage("Editing: asking for four suggestions and taking, partly taking, rejecting and correcting them…");
    let mut ids = Vec::new();
    for (n, what) in SPOTS.iter().enumerate() {
        bar.set_message(format!("Editing: suggestion {} of 4 ({what})…", n + 1));
        ids.push(session.act(what)?);
    }
    session.finish(&file)?;
    done(bar, "editing session over: the proxy inferred each outcome from the edits alone");

    let db = home.join("marunochi.db");
    let store = Store::open(&db)?;
    println!("  what the store recorded:");
    for (id, what) in ids.iter().zip(SPOTS) {
        let Some(id) = id else {
            println!("    {what:<13} (the model had no suggestion there)");
            continue;
        };
        if let Some(row) = store.interaction(id)? {
            let shown = row.suggestion.lines().next().unwrap_or_default();
            let kept = row
                .final_code
                .as_deref()
                .map_or(String::new(), |c| format!(" → kept {:?}", c.lines().next().unwrap_or_default()));
            println!("    {what:<13} {:<10} suggested {shown:?}{kept}", row.action);
        }
    }
    drop(store);

    let bar = stage("Retention and quality, with the clock moved 31 days on…");
    let month_later = crate::clock::now_ms() + 31 * 86_400_000;
    let (report, scored) = crate::jobs::catch_up(&db, month_later, 0.67)?;
    done(bar, &format!("{} retention checks (30 s … 30 d) and {scored} quality scores", report.checked));
    let defaults = crate::config::CurateConfig::default();
    let stats = crate::quality::stats::load(&db, defaults.min_quality, defaults.seed_score_only)?;
    for line in crate::quality::stats::render_terminal(&stats).lines() {
        println!("  {line}");
    }

    let bar = stage("Curating the graded interactions into training sets…");
    // No test run was observed, so the seed's score stays below 70 (README: which code is trained
    // on); the score over what was observed admits the clean taken code.
    let curate_options = crate::curate::Options { heldout_share: 0.0, ..crate::curate::Options::default() };
    let summaries = crate::curate::curate(&db, &home.join("datasets"), &curate_options)?;
    done(bar, "curated (quality ≥ 70, by the seed's score or by the signals observed)");
    for s in summaries {
        println!(
            "  {}: {} training examples (admitted by {}), {} KTO, {} DPO pairs -> {}",
            s.language,
            s.train,
            crate::quality::stats::rule_counts(&s.admitted),
            s.kto,
            s.dpo,
            s.directory.display()
        );
    }
    learn(options, &workspace)?;
    println!("marunochi demo: done. Look around in {}", home.display());
    Ok(())
}

/// The project's own code in its house style (a docstring naming the function in capitals, an
/// `mx_result` variable): with a week of real interactions the curated examples would be enough;
/// a four-suggestion session is not, so the demo also learns from the workspace's code.
const HOUSE_STYLE: [(&str, &str, &str); 20] = [
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
    ("odds", "xs", "[x for x in xs if x % 2 == 1]"),
    ("positive", "xs", "[x for x in xs if x > 0]"),
    ("negative", "xs", "[x for x in xs if x < 0]"),
    ("halves", "xs", "[x / 2 for x in xs]"),
    ("spread", "xs", "max(xs) - min(xs)"),
    ("middle", "xs", "sorted(xs)[len(xs) // 2]"),
    ("nonzero", "xs", "[x for x in xs if x != 0]"),
    ("rounded", "xs", "[round(x) for x in xs]"),
];

/// Trains an adapter on the workspace's house-style code, runs the gate, promotes a passing
/// version and shows base vs adapter completions.
fn learn(options: &Options, workspace: &Path) -> Result<(), DemoError> {
    let home = &options.dir;
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    let body = |name: &str, expr: &str| {
        format!("    \"\"\"{}: mx-style.\"\"\"\n    mx_result = {expr}\n    return mx_result\n", name.to_uppercase())
    };
    let module: String =
        HOUSE_STYLE.iter().map(|(name, arg, expr)| format!("def {name}({arg}):\n{}\n\n", body(name, expr))).collect();
    std::fs::write(workspace.join("stats.py"), &module).map_err(setup)?;
    // Each function is an example: its `def` line is the prompt, its body the completion; the last
    // eight are held out for the gate.
    let data = home.join("datasets/workspace-python");
    std::fs::create_dir_all(&data).map_err(setup)?;
    let line = |i: usize| {
        let (name, arg, expr) = HOUSE_STYLE[i];
        let example = json!({"id": format!("ws{i}"), "timestamp": "2026-11-01T00:00:00Z",
            "prefix": format!("def {name}({arg}):\n"), "suffix": "", "completion": body(name, expr),
            "action": "accepted", "weight": 1.0, "priority": 1.0, "dedup": 1.0, "cluster": i, "cluster_size": 1,
            "complexity": 1, "tier": 0, "replay": true});
        format!("{example}\n")
    };
    std::fs::write(data.join("train.jsonl"), (0..12).map(line).collect::<String>()).map_err(setup)?;
    std::fs::write(data.join("heldout.jsonl"), (12..20).map(line).collect::<String>()).map_err(setup)?;

    let marunochi = |args: &[&str]| -> Result<(Option<i32>, Value), DemoError> {
        let out = Command::new(&options.exe)
            .env("MARUNOCHI_HOME", home)
            .args(args)
            .output()
            .map_err(|e| DemoError::Setup(format!("{}: {e}", options.exe.display())))?;
        let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if value.is_null() {
            return Err(DemoError::Setup(format!(
                "`marunochi {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok((out.status.code(), value))
    };
    let model = options.model.to_string_lossy().into_owned();
    let bar = stage("Training a python adapter on the project's own code (LoRA, 8 updates)…");
    let data_arg = data.to_string_lossy().into_owned();
    let train = ["train", "--language", "python", "--model", &model, "--data", &data_arg, "--json"];
    let (_, report) =
        marunochi(&[&train[..], &["--steps", "8", "--batch", "3", "--lr", "2e-3", "--sft-only"]].concat())?;
    done(
        bar,
        &format!(
            "trained python/{} in {:.0} s: loss {:.3} → {:.3}, held-out loss per token {:.3} → {:.3}",
            report["version"].as_str().unwrap_or("?"),
            report["seconds"].as_f64().unwrap_or(0.0),
            report["first_loss"].as_f64().unwrap_or(f64::NAN),
            report["last_loss"].as_f64().unwrap_or(f64::NAN),
            report["heldout_base"].as_f64().unwrap_or(f64::NAN),
            report["heldout_adapter"].as_f64().unwrap_or(f64::NAN),
        ),
    );

    let problems = if options.quick { "2" } else { "20" };
    let bar = stage(&format!("The eval gate: held-out code and {problems} HumanEval problems, base vs adapter…"));
    let (code, gate) =
        marunochi(&["eval", "--language", "python", "--model", &model, "--problems", problems, "--json"])?;
    let passed = code == Some(0);
    done(bar, &format!("gate {}", if passed { "passed" } else { "failed" }));
    println!("  held-out code: {}", gate["heldout"]["verdict"].as_str().unwrap_or("?"));
    for (verdict, note) in [("general", "general_note"), ("forgetting", "forgetting_note")] {
        match (gate[verdict]["verdict"].as_str(), gate[note].as_str()) {
            (Some(verdict), _) => println!("  forgetting: {verdict}"),
            (None, Some(note)) => println!("  forgetting not checked: {note}"),
            _ => {}
        }
    }
    if passed {
        let fingerprint = crate::train::fingerprint(&options.model).map_err(setup)?;
        let registry = crate::deploy::Registry::new(&home.join("adapters"), &home.join("marunochi.db"));
        let version =
            registry.promote("python", None, &fingerprint, false).map_err(|e| DemoError::Setup(e.to_string()))?;
        println!("✓ python/{version} promoted: serving uses it from the next keystroke");
        println!(
            "  (promoted at once for the demo; after a scheduled run it would first be rolled out:\n   shadow, then canary on a share of your requests, then active — `marunochi adapters check`)"
        );
    }

    let stub = workspace.join("new.py");
    std::fs::write(&stub, "def cubes(xs):\n").map_err(setup)?;
    let location = format!("{}:1:0", stub.display());
    let complete = |adapter: &[&str]| -> Result<String, DemoError> {
        let args = ["complete", "--model", &model, &location, "--json", "--max-tokens", "40"];
        let (_, value) = marunochi(&[&args[..], adapter].concat())?;
        Ok(value["text"].as_str().unwrap_or_default().to_owned())
    };
    println!("  a new function, `def cubes(xs):`, completed by");
    for (who, text) in
        [("the base model", complete(&[])?), ("the python adapter", complete(&["--language", "python"])?)]
    {
        println!("    {who}:");
        for line in text.lines().take(4) {
            println!("      | {line}");
        }
    }
    Ok(())
}

/// The scripted editor's view of the one document.
struct Session {
    editor: Editor,
    uri: String,
    text: String,
    version: i32,
}

impl Session {
    fn start(command: Command, workspace: &Path, file: &Path) -> Result<Session, DemoError> {
        let mut editor =
            Editor::spawn(command).map_err(|e| DemoError::Setup(format!("cannot start the proxy: {e}")))?;
        let root = format!("file://{}", workspace.display());
        let params = json!({
            "processId": std::process::id(),
            "rootUri": root,
            "workspaceFolders": [{"uri": root, "name": "demo"}],
            "capabilities": {"workspace": {"configuration": true}, "textDocument": {"completion": {}}}
        });
        editor.request("initialize", params, Duration::from_secs(60)).map_err(DemoError::Session)?;
        editor.notify("initialized", json!({}));
        let uri = format!("file://{}", file.display());
        let doc = json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": SAMPLE}});
        editor.notify("textDocument/didOpen", doc);
        Ok(Session { editor, uri, text: SAMPLE.to_owned(), version: 1 })
    }

    fn position(&self, offset: usize) -> Value {
        let before = &self.text[..offset];
        let line = before.matches('\n').count();
        let character = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
        json!({"line": line, "character": character})
    }

    /// Replaces bytes `start..end` with `new` (sample text is ASCII: bytes are UTF-16 units).
    fn change(&mut self, start: usize, end: usize, new: &str) {
        let range = json!({"start": self.position(start), "end": self.position(end)});
        self.text.replace_range(start..end, new);
        self.version += 1;
        let params = json!({"textDocument": {"uri": self.uri, "version": self.version},
                            "contentChanges": [{"range": range, "text": new}]});
        self.editor.notify("textDocument/didChange", params);
    }

    /// The next empty `return ` line: asks for a suggestion there and does `what` with it.
    fn act(&mut self, what: &str) -> Result<Option<String>, DemoError> {
        let Some(line) = self.text.find("    return \n") else { return Ok(None) };
        let cursor = line + "    return ".len();
        let params = json!({"textDocument": {"uri": self.uri}, "position": self.position(cursor),
                            "context": {"triggerKind": 1}});
        let answer = self
            .editor
            .request("textDocument/inlineCompletion", params, Duration::from_secs(120))
            .map_err(DemoError::Session)?;
        let item = &answer["items"][0];
        let (Some(text), Some(id)) = (item["insertText"].as_str(), item["command"]["arguments"][0].as_str()) else {
            // Nothing to act on: fill the line by hand so the next spot is the next function.
            self.change(cursor, cursor, "None");
            return Ok(None);
        };
        let (text, id) = (text.to_owned(), id.to_owned());
        match what {
            "take" => self.change(cursor, cursor, &text),
            "take part of" => {
                // Its first word, as a word-wise accept would (typing on after it would correct it).
                let word = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|&i| i >= 2);
                self.change(cursor, cursor, &text[..word.unwrap_or(text.len())]);
            }
            "reject" => {
                let first = if text.starts_with('0') { "1" } else { "0" };
                self.change(cursor, cursor, first);
            }
            _ => {
                self.change(cursor, cursor, &text);
                // Edited inside: its last character becomes something else.
                let end = cursor + text.trim_end().len();
                let last = text.trim_end().chars().last().map_or(0, char::len_utf8);
                self.change(end - last, end, " # changed");
            }
        }
        Ok(Some(id))
    }

    /// The cursor leaves the code, the file is saved and closed, the editor exits.
    fn finish(mut self, file: &Path) -> Result<(), DemoError> {
        let hover = json!({"textDocument": {"uri": self.uri}, "position": {"line": 0, "character": 1}});
        let _ = self.editor.request("textDocument/hover", hover, Duration::from_secs(30));
        std::fs::write(file, &self.text).map_err(|e| DemoError::Session(e.to_string()))?;
        self.editor.notify("textDocument/didClose", json!({"textDocument": {"uri": self.uri}}));
        self.editor.close().map_err(DemoError::Session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qwen_coder_found_wins_over_the_fallback_but_not_over_a_named_model() {
        use crate::engine::discovery::{Format, Found, Source};
        let found = |name: &str, fim: bool, runnable: bool| Found {
            name: name.into(),
            path: PathBuf::from(format!("/m/{name}")),
            source: Source::Hf,
            format: Format::Gguf,
            architecture: Some("qwen2".into()),
            quantization: None,
            size_bytes: 1,
            fim,
            runnable,
            error: None,
        };
        let smol = Path::new("/pypi/smollm2.gguf");
        let models = [
            found("Qwen/Qwen2.5-Coder-7B-Instruct", false, false),
            found("qwen2.5-coder:1.5b-base", true, true),
            found("HuggingFaceTB/SmolLM2-360M", false, true),
        ];
        assert_eq!(choose_model(None, None, &models, Some(smol)).unwrap(), Path::new("/m/qwen2.5-coder:1.5b-base"));
        assert_eq!(choose_model(None, None, &models[2..], Some(smol)).unwrap(), smol);
        assert_eq!(choose_model(Some(Path::new("/x.gguf")), None, &models, Some(smol)).unwrap(), Path::new("/x.gguf"));
        assert!(choose_model(None, None, &[], None).unwrap_err().contains("pass --model"));
    }
}
