//! Engine speed, measured side by side in one run: prefill and decode throughput on the real
//! SmolLM2-135M GGUF and the tiny Qwen2 (drafting off, as llama.cpp decodes), warm-prefix vs cold
//! prefill for a one-character edit at the end of a ~2k-token prompt (the typing-at-the-cursor case
//! the prefix cache exists for), and greedy decoding with and without drafting from the context on
//! real code (function bodies of the standard library's `argparse.py`, the code before each as the
//! prompt), next to llama.cpp's plain decode.
//!
//! `./scripts/test-deps.sh && cargo bench --bench engine_speed`

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use marunochi::engine::{Engine, KvCache, LoadOptions, Sampling, TokenRequest};

fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/fixtures").join(name);
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh", path.display());
    path
}

/// Python-looking source of roughly `tokens` tokens.
fn long_source(engine: &Engine, tokens: usize) -> String {
    let mut text = String::new();
    let mut i = 0;
    while engine.tokenizer().encode(&text).unwrap().len() < tokens {
        text.push_str(&format!("def handler_{i}(request, limit={i}):\n    values = [x * {i} for x in request.items]\n    return sum(values[:limit])\n\n"));
        i += 1;
    }
    text
}

/// llama.cpp on the same file and prompt, when `scripts/bench-deps.sh` has installed it.
fn llama_cpp(model: &Path, prompt: &str, new_tokens: usize) -> Option<(f64, f64)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let node_modules = root.join(".test-deps/bench/node_modules");
    if !node_modules.join("node-llama-cpp").exists() {
        return None;
    }
    // Node resolves imports from the script's folder, so the script runs from next to node_modules.
    let script = root.join(".test-deps/bench/llama_cpp_reference.mjs");
    std::fs::copy(root.join("benches/llama_cpp_reference.mjs"), &script).ok()?;
    let prompt_file = std::env::temp_dir().join(format!("marunochi-bench-prompt-{}.txt", std::process::id()));
    std::fs::write(&prompt_file, prompt).ok()?;
    let threads = candle_core::utils::get_num_threads().to_string();
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(model)
        .arg(&prompt_file)
        .arg(threads)
        .arg(new_tokens.to_string())
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&prompt_file);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((json["prefill_tok_s"].as_f64()?, json["decode_tok_s"].as_f64()?))
}

/// SmolLM2 re-quantized to Q8_0 (candle's fast CPU kernel), so ours vs llama.cpp can also be
/// compared on a format whose kernel is not the bottleneck. Written next to the fixtures once.
fn smollm2_q8_0() -> PathBuf {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    let target = fixture("smollm2-135m-instruct.gguf").with_file_name("smollm2-135m-instruct-q8_0.bench.gguf");
    if target.exists() {
        return target;
    }
    let mut file = std::fs::File::open(fixture("smollm2-135m-instruct.gguf")).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors = Vec::new();
    for (name, info) in &content.tensor_infos {
        let tensor = content.tensor(&mut file, name, &candle_core::Device::Cpu).unwrap();
        let tensor = if info.ggml_dtype == GgmlDType::Q4_1 {
            QTensor::quantize(&tensor.dequantize(&candle_core::Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap()
        } else {
            tensor
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let partial = target.with_extension("partial");
    gguf_file::write(&mut std::fs::File::create(&partial).unwrap(), &metadata, &tensors).unwrap();
    std::fs::rename(&partial, &target).unwrap();
    target
}

/// Runs per side for the throughput figures.
const ROUNDS: usize = 5;

fn throughput(name: &str) {
    let path = if name == "smollm2-135m-instruct-q8_0" { smollm2_q8_0() } else { fixture(name) };
    let engine = Engine::load(&path, &LoadOptions::default()).unwrap();
    engine.set_drafting(false);
    let prompt = long_source(&engine, 512);
    let request = TokenRequest {
        cache_key: "throughput",
        prompt: &prompt,
        adapter: None,
        sampling: Sampling::Greedy,
        max_new_tokens: 64,
        stop: &[],
    };
    let go = AtomicBool::new(false);
    engine.continue_text(&TokenRequest { cache_key: "warmup", max_new_tokens: 4, ..request }, &go).unwrap();
    // The best of several cold runs (each its own cache) on both sides, taken in turns: this
    // machine's speed wanders by a third from minute to minute, on either side.
    let gguf = path.extension().is_some_and(|e| e == "gguf");
    let mut reference = Vec::new();
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        let key = format!("run-{round}");
        runs.push(engine.continue_text(&TokenRequest { cache_key: &key, ..request }, &go).unwrap());
        reference.extend(gguf.then(|| llama_cpp(&path, &prompt, 64)).flatten());
    }
    let prefill_ms = runs.iter().map(|r| r.prefill_ms).fold(f64::MAX, f64::min);
    let decode = runs.iter().map(|r| r.decode_tok_s).fold(0.0, f64::max);
    let run = &runs[0];
    let prefill = run.prompt_tokens as f64 * 1000.0 / prefill_ms;
    println!(
        "{name:<32} prefill {prefill:>7.1} tok/s ({} tokens in {prefill_ms:.0} ms)   decode {decode:>6.1} tok/s ({} tokens)   best of {ROUNDS}",
        run.prompt_tokens, run.generated_tokens
    );
    if gguf {
        let best = (!reference.is_empty())
            .then(|| reference.iter().fold((0f64, 0f64), |(p, d), (rp, rd)| (p.max(*rp), d.max(*rd))));
        match best {
            Some((ref_prefill, ref_decode)) => println!(
                "{:<32} llama.cpp prefill {ref_prefill:>7.1} tok/s, decode {ref_decode:>6.1} tok/s → ours/llama.cpp: prefill {:.2}, decode {:.2} (target ≥ 1.0)",
                "",
                prefill / ref_prefill,
                decode / ref_decode
            ),
            None => println!("{:<32} (no llama.cpp reference: run ./scripts/bench-deps.sh)", ""),
        }
    }
}

/// Prompt tokens per forward pass, as the engine prefills a request (`engine/generate.rs`): one
/// pass over all 2 000 tokens would build whole 2 000 × 2 000 score matrices, which no request does.
const PREFILL_CHUNK: usize = 256;

fn prefill(engine: &Engine, tokens: &[u32], cache: &mut KvCache) {
    for chunk in tokens.chunks(PREFILL_CHUNK) {
        engine.logits(chunk, cache, None).unwrap();
    }
}

fn warm_vs_cold(name: &str) {
    let engine = Engine::load(&fixture(name), &LoadOptions::default()).unwrap();
    let text = long_source(&engine, 2000);
    let tokens = engine.tokenizer().encode(&text).unwrap();
    let edited = engine.tokenizer().encode(&format!("{text}x")).unwrap();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut cache = KvCache::default();
        prefill(&engine, &edited, &mut cache);
        cold.push(start.elapsed().as_secs_f64() * 1000.0);

        let mut cache = KvCache::default();
        prefill(&engine, &tokens, &mut cache);
        let shared = tokens.iter().zip(&edited).take_while(|(a, b)| a == b).count();
        let start = Instant::now();
        cache.truncate(shared);
        engine.logits(&edited[shared..], &mut cache, None).unwrap();
        warm.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let (cold, warm) = (best(&cold), best(&warm));
    println!(
        "{name:<32} one-char edit after {} tokens: cold prefill {cold:>8.1} ms, warm prefix {warm:>6.2} ms → {:.0}× faster (target ≥ 10×)",
        tokens.len(),
        cold / warm
    );
}

fn main() {
    println!("marunochi engine speed (CPU, {} threads)", candle_core::utils::get_num_threads());
    // `cargo bench --bench engine_speed -- drafting` runs that part alone.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.as_deref() == Some("drafting") {
        for name in ["smollm2-135m-instruct.gguf", "smollm2-135m-instruct-q8_0", "tiny-qwen2-q8_0.gguf"] {
            drafting(name);
        }
        return;
    }
    let models = ["smollm2-135m-instruct.gguf", "smollm2-135m-instruct-q8_0", "tiny-qwen2-q8_0.gguf", "tiny-qwen2"];
    // `cargo bench --bench engine_speed -- smollm2-135m-instruct-q8_0` runs one model's throughput.
    if let Some(name) = only.as_deref().filter(|name| models.contains(name)) {
        throughput(name);
        return;
    }
    for name in models {
        throughput(name);
    }
    for name in ["smollm2-135m-instruct.gguf", "tiny-qwen2-q8_0.gguf"] {
        warm_vs_cold(name);
    }
    for name in ["smollm2-135m-instruct.gguf", "smollm2-135m-instruct-q8_0", "tiny-qwen2-q8_0.gguf"] {
        drafting(name);
    }
}

/// Prompts of real code: up to ~4 000 characters before the body of every fourth method in the
/// second half of the standard library's `argparse.py` (the first 12).
fn real_code_prompts() -> Vec<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import argparse; print(argparse.__file__)"])
        .output()
        .expect("python3 runs");
    let text = std::fs::read_to_string(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let mut ends = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        if offset > text.len() / 2 && line.starts_with("    def ") && line.trim_end().ends_with(':') {
            ends.push(offset);
        }
    }
    ends.into_iter()
        .step_by(4)
        .take(12)
        .map(|end| {
            let mut start = end.saturating_sub(4000);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text[start..end].to_owned()
        })
        .collect()
}

/// Greedy completions of real code with drafting off and on, taken in turns (decode only; each
/// run its own cache), split by whether any drafted token was confirmed.
fn drafting(name: &str) {
    let path = if name.ends_with(".gguf") { fixture(name) } else { smollm2_q8_0() };
    let engine = Engine::load(&path, &LoadOptions::default()).unwrap();
    let go = AtomicBool::new(false);
    let (mut applied, mut not_applied) = ((0.0, 0.0, 0usize), (0.0, 0.0, 0usize));
    let (mut drafted, mut accepted, mut same) = (0, 0, 0);
    let prompts = real_code_prompts();
    for (i, prompt) in prompts.iter().enumerate() {
        let run = |on: bool| {
            engine.set_drafting(on);
            let key = format!("drafting-{i}-{on}");
            let request = TokenRequest {
                cache_key: &key,
                prompt,
                adapter: None,
                sampling: Sampling::Greedy,
                max_new_tokens: 48,
                stop: &[],
            };
            engine.continue_text(&request, &go).unwrap()
        };
        let (off, on) = (run(false), run(true));
        same += usize::from(off.text == on.text);
        drafted += on.drafted_tokens;
        accepted += on.accepted_drafts;
        let group = if on.accepted_drafts > 0 { &mut applied } else { &mut not_applied };
        *group = (group.0 + off.decode_tok_s, group.1 + on.decode_tok_s, group.2 + 1);
    }
    let line = |(off, on, n): (f64, f64, usize)| {
        if n == 0 {
            return "none".to_owned();
        }
        format!("{n} completions, {:.1} → {:.1} tok/s ({:.2}×)", off / n as f64, on / n as f64, on / off)
    };
    println!(
        "{name:<32} drafting on real code: {accepted}/{drafted} drafted tokens confirmed; same text {same}/{}",
        prompts.len()
    );
    println!("{:<32}   where drafts were confirmed: {}", "", line(applied));
    println!("{:<32}   where none was: {}", "", line(not_applied));
    let (_, on, n) = applied;
    if n > 0
        && let Some((_, reference)) = llama_cpp(&path, &prompts[0], 48)
    {
        println!(
            "{:<32}   llama.cpp plain decode (first prompt) {reference:.1} tok/s → ours where drafts apply / llama.cpp: {:.2} (target ≥ 1.5)",
            "",
            on / n as f64 / reference
        );
    }
}
