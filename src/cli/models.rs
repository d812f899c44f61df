//! The models on this machine: `models` lists them, `complete` runs one on a single position.

use std::path::PathBuf;
use std::process::ExitCode;

use super::report::{configured_model, fail, human_size, usage_error};
use crate::engine::discovery::{self, Found, Roots, Source};
use crate::engine::oneshot::{AdapterChoice, Location, OneShot, complete_at};
use crate::home::{Home, Language};
use crate::logging;

/// `marunochi complete`'s arguments (its help text is on `Command::Complete`).
#[derive(clap::Args, Debug)]
pub struct CompleteArgs {
    /// A .gguf file, or a directory with config.json, safetensors and tokenizer.json
    /// (default: `[engine] model` in config.toml).
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,

    /// Where to complete: FILE:LINE:COL, line and column counted from 0.
    #[arg(value_name = "FILE:LINE:COL")]
    location: Location,

    /// Print JSON: text, prompt_tokens, generated_tokens, prefill_ms, decode_tok_s, drafted_tokens,
    /// accepted_drafts, model, device, ...
    #[arg(long)]
    json: bool,

    /// Apply this PEFT LoRA adapter (adapter_model.safetensors + adapter_config.json).
    #[arg(long, value_name = "DIR", conflicts_with = "language")]
    adapter: Option<PathBuf>,

    /// Use this language's active expert adapter (MARUNOCHI_HOME/adapters/<L>/active), if any.
    #[arg(long, value_name = "L")]
    language: Option<Language>,

    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
}

pub fn complete(home: &Home, args: CompleteArgs, verbose: bool) -> ExitCode {
    let CompleteArgs { model, location, json, adapter, language, max_tokens } = args;
    let _log = logging::init(&home.logs_dir(), "complete", "info", verbose);
    let Some(model) = model.or_else(|| configured_model(home)) else {
        return usage_error(format!(
            "no model: pass --model, or set `model` under [engine] in {}",
            home.config_file().display()
        ));
    };
    let adapter = match (&adapter, &language) {
        (Some(dir), _) => AdapterChoice::Dir(dir),
        (None, Some(language)) => AdapterChoice::Language { adapters: home.adapters_dir(), language },
        (None, None) => AdapterChoice::None,
    };
    let request = OneShot { model: &model, location: &location, adapter, max_new_tokens: max_tokens };
    let result = match complete_at(&request) {
        Ok(result) => result,
        Err(e) => return fail(e),
    };
    let c = &result.completion;
    if json {
        let out = serde_json::json!({
            "text": c.text.clone().unwrap_or_default(),
            "prompt_tokens": c.stats.prompt_tokens,
            "generated_tokens": c.stats.generated_tokens,
            "prefill_ms": c.stats.prefill_ms,
            "decode_tok_s": c.stats.decode_tok_s,
            "drafted_tokens": c.stats.drafted_tokens,
            "accepted_drafts": c.stats.accepted_drafts,
            "model": result.model,
            "adapter": result.adapter,
            "device": result.device,
            "confidence": c.stats.mean_logprob,
            "template": format!("{:?}", c.template),
            "mode": format!("{:?}", c.mode),
        });
        println!("{out}");
    } else if let Some(text) = &c.text {
        println!("{text}");
    }
    ExitCode::SUCCESS
}

pub fn models(home: &Home, paths: Vec<PathBuf>, json: bool) -> ExitCode {
    let roots = Roots { explicit: paths, configured: configured_model(home), ..Roots::from_env() };
    let found = discovery::discover(&roots);
    if json {
        match serde_json::to_string_pretty(&found) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(e),
        }
    } else if !found.is_empty() {
        print_models(&found);
    }
    if found.is_empty() {
        // With --json, stdout stays pure JSON.
        let say = |line: String| if json { eprintln!("{line}") } else { println!("{line}") };
        say("No models found. Looked in:".into());
        for (source, dir) in roots.locations() {
            let missing = if dir.exists() { "" } else { " (does not exist)" };
            say(format!("  {source:<9} {}{missing}", dir.display()));
        }
        say("Name a model file or directory: marunochi models PATH".into());
    }
    // A path the user named that holds no readable model is an error; anything else is a listing.
    if found.iter().any(|f| matches!(f.source, Source::Explicit | Source::Config) && f.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_models(found: &[Found]) {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let header = ["NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "FIM", "RUNNABLE", "PATH"].map(String::from);
    let rows: Vec<[String; 8]> = found
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.source.to_string(),
                f.architecture.clone().unwrap_or_else(|| "-".into()),
                f.quantization.clone().unwrap_or_else(|| "-".into()),
                human_size(f.size_bytes),
                if f.error.is_some() { "-".into() } else { yes_no(f.fim) },
                yes_no(f.runnable),
                f.path.display().to_string(),
            ]
        })
        .collect();
    let widths: [usize; 8] =
        std::array::from_fn(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0));
    let line = |row: &[String; 8]| {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    };
    line(&header);
    for (row, f) in rows.iter().zip(found) {
        line(row);
        if let Some(error) = &f.error {
            println!("  error: {error}");
        }
    }
}
