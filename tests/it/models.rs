//! Model discovery (`marunochi models`) on fake HF cache, Ollama and LM Studio trees built from the
//! real generated fixtures (`scripts/fixtures.sh`), plus GGUF files written here for the cases the
//! fixtures do not cover (other architectures, SentencePiece tokenizers, missing file types) and
//! broken files, which must be reported without failing the listing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use marunochi::engine::discovery::{Format, Found, Roots, Source, discover};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/fixtures").join(name);
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh (./scripts/test.sh does)", path.display());
    path.canonicalize().unwrap()
}

fn size(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn link(target: &Path, at: &Path) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, at).unwrap();
}

fn write(at: &Path, contents: &str) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    fs::write(at, contents).unwrap();
}

/// An HF cache entry the way huggingface_hub lays it out: snapshot files are relative links into
/// the repo's `blobs/` (here the blobs link on to the fixtures).
fn hf_repo(hub: &Path, id: &str, files: &[(&str, &Path)]) {
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let revision = "0123456789abcdef0123456789abcdef01234567";
    write(&repo.join("refs/main"), revision);
    for (i, (name, target)) in files.iter().enumerate() {
        let blob = format!("{i:064x}");
        link(target, &repo.join("blobs").join(&blob));
        link(Path::new(&format!("../../blobs/{blob}")), &repo.join("snapshots").join(revision).join(name));
    }
}

fn ollama_model(store: &Path, manifest: &str, digest_byte: char, blob: Option<&Path>) {
    let digest = digest_byte.to_string().repeat(64);
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": format!("sha256:{}", "c".repeat(64)), "size": 10},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": format!("sha256:{}", "d".repeat(64)), "size": 10},
            {"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{digest}"), "size": 10},
        ],
    });
    write(&store.join("manifests").join(manifest), &json.to_string());
    if let Some(blob) = blob {
        link(blob, &store.join("blobs").join(format!("sha256-{digest}")));
    }
}

/// A machine with models in every place: `home/` (LM Studio), `hf/hub/`, `ollama/`.
fn machine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    let hub = root.join("hf/hub");
    hf_repo(
        &hub,
        "marunochi/tiny-qwen2",
        &[
            ("config.json", &fixture("tiny-qwen2/config.json")),
            ("model.safetensors", &fixture("tiny-qwen2/model.safetensors")),
            ("tokenizer.json", &fixture("tiny-qwen2/tokenizer.json")),
        ],
    );
    hf_repo(&hub, "Qwen/tiny-qwen2-GGUF", &[("tiny-qwen2-q4_0.gguf", &fixture("tiny-qwen2-q4_0.gguf"))]);
    let gptq_config = root.join("gptq-config.json");
    write(
        &gptq_config,
        r#"{"model_type": "llama", "torch_dtype": "float16", "quantization_config": {"quant_method": "gptq", "bits": 4}}"#,
    );
    hf_repo(
        &hub,
        "someone/tiny-llama-GPTQ",
        &[
            ("config.json", &gptq_config),
            ("model.safetensors", &fixture("tiny-llama/model.safetensors")),
            ("tokenizer.json", &fixture("tiny-llama/tokenizer.json")),
        ],
    );
    // Datasets share the cache; a model-looking file in one is not a model.
    write(&hub.join("datasets--someone--code/snapshots/abc/data.gguf"), "not a model");

    let ollama = root.join("ollama");
    ollama_model(&ollama, "registry.ollama.ai/library/smollm2/135m", 'a', Some(&fixture("smollm2-135m-instruct.gguf")));
    ollama_model(&ollama, "hf.co/bartowski/tiny-qwen2-GGUF/Q8_0", 'b', Some(&fixture("tiny-qwen2-q8_0.gguf")));
    ollama_model(&ollama, "registry.ollama.ai/library/gone/latest", 'e', None);

    let lmstudio = root.join("home/.lmstudio/models/lmstudio-community/SmolLM2-135M-Instruct-GGUF");
    link(&fixture("smollm2-135m-instruct.gguf"), &lmstudio.join("SmolLM2-135M-Instruct-Q4_1.gguf"));
    write(&lmstudio.join("broken.gguf"), "GGUF, but only in name");
    link(
        &fixture("tiny-llama-q8_0.gguf"),
        &root.join("home/.cache/lm-studio/models/old/tiny-llama-GGUF/tiny-llama-q8_0.gguf"),
    );
    dir
}

fn roots(root: &Path) -> Roots {
    Roots {
        explicit: Vec::new(),
        configured: None,
        hf_hub: vec![root.join("hf/hub")],
        ollama: vec![root.join("ollama")],
        lmstudio: vec![root.join("home/.lmstudio/models"), root.join("home/.cache/lm-studio/models")],
    }
}

fn by_name<'a>(found: &'a [Found], name: &str) -> &'a Found {
    found.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} not found in {found:#?}"))
}

/// (architecture, quantization, fim, runnable) of a readable entry.
fn summary(found: &Found) -> (&str, &str, bool, bool) {
    assert_eq!(found.error, None, "{found:#?}");
    (found.architecture.as_deref().unwrap(), found.quantization.as_deref().unwrap(), found.fim, found.runnable)
}

#[test]
fn finds_every_model_in_every_place() {
    let dir = machine();
    let found = discover(&roots(dir.path()));
    let names: Vec<(Source, &str)> = found.iter().map(|f| (f.source, f.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (Source::Hf, "Qwen/tiny-qwen2-GGUF/tiny-qwen2-q4_0.gguf"),
            (Source::Hf, "marunochi/tiny-qwen2"),
            (Source::Hf, "someone/tiny-llama-GPTQ"),
            (Source::Ollama, "hf.co/bartowski/tiny-qwen2-GGUF:Q8_0"),
            (Source::Ollama, "gone:latest"),
            (Source::Ollama, "smollm2:135m"),
            (Source::LmStudio, "lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_1.gguf"),
            (Source::LmStudio, "lmstudio-community/SmolLM2-135M-Instruct-GGUF/broken.gguf"),
            (Source::LmStudio, "old/tiny-llama-GGUF/tiny-llama-q8_0.gguf"),
        ]
    );

    let hf_gguf = by_name(&found, "Qwen/tiny-qwen2-GGUF/tiny-qwen2-q4_0.gguf");
    assert_eq!(summary(hf_gguf), ("qwen2", "Q4_0", true, true));
    assert_eq!(hf_gguf.format, Format::Gguf);
    assert_eq!(hf_gguf.size_bytes, size(&fixture("tiny-qwen2-q4_0.gguf")), "symlinks are followed");

    let hf_dir = by_name(&found, "marunochi/tiny-qwen2");
    assert_eq!(summary(hf_dir), ("qwen2", "float32", true, true));
    assert_eq!(hf_dir.format, Format::Safetensors);
    assert!(hf_dir.path.join("config.json").is_file(), "the path is what Engine::load takes: {hf_dir:#?}");
    assert_eq!(hf_dir.size_bytes, size(&fixture("tiny-qwen2/model.safetensors")));

    let gptq = by_name(&found, "someone/tiny-llama-GPTQ");
    assert_eq!(summary(gptq), ("llama", "gptq 4-bit", false, false), "packed weights are not runnable");

    let smollm = by_name(&found, "smollm2:135m");
    assert_eq!(summary(smollm), ("llama", "Q4_1", false, true), "SmolLM2 has no FIM tokens");
    assert_eq!(smollm.size_bytes, size(&fixture("smollm2-135m-instruct.gguf")));
    assert!(smollm.path.ends_with(format!("blobs/sha256-{}", "a".repeat(64))), "{smollm:#?}");
    assert_eq!(summary(by_name(&found, "hf.co/bartowski/tiny-qwen2-GGUF:Q8_0")), ("qwen2", "Q8_0", true, true));
    let gone = by_name(&found, "gone:latest");
    assert_eq!((gone.error.as_deref(), gone.runnable), (Some("file not found"), false));

    let lm = by_name(&found, "lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_1.gguf");
    assert_eq!(summary(lm), ("llama", "Q4_1", false, true));
    assert_eq!(summary(by_name(&found, "old/tiny-llama-GGUF/tiny-llama-q8_0.gguf")), ("llama", "Q8_0", false, true));
    let broken = by_name(&found, "lmstudio-community/SmolLM2-135M-Instruct-GGUF/broken.gguf");
    assert!(broken.error.as_deref().is_some_and(|e| e.contains("not a readable GGUF file")), "{broken:#?}");
    assert!(!broken.runnable && broken.architecture.is_none());
}

#[test]
fn missing_places_are_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(discover(&roots(&dir.path().join("nothing here"))), []);
}

/// A GGUF with one F32 `blk.0.ffn_down.weight` and a larger Q4_K tensor, so the dominant type and
/// the ffn_down type differ.
fn write_gguf(path: &Path, metadata: &[(&str, gguf_file::Value)]) {
    let cpu = Device::Cpu;
    let down = QTensor::quantize(&Tensor::zeros((2, 32), DType::F32, &cpu).unwrap(), GgmlDType::F32).unwrap();
    let q = QTensor::quantize(&Tensor::ones((1, 256), DType::F32, &cpu).unwrap(), GgmlDType::Q4K).unwrap();
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut file = fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &[("blk.0.ffn_down.weight", &down), ("blk.0.attn_q.weight", &q)]).unwrap();
}

fn text(s: &str) -> gguf_file::Value {
    gguf_file::Value::String(s.into())
}

fn tokens(tokens: &[&str]) -> gguf_file::Value {
    gguf_file::Value::Array(tokens.iter().map(|t| text(t)).collect())
}

#[test]
fn explicit_paths_are_inspected_and_their_problems_reported() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path();
    let gemma = own.join("gemma-fim.gguf");
    write_gguf(
        &gemma,
        &[
            ("general.architecture", text("gemma2")),
            ("tokenizer.ggml.model", text("gpt2")),
            ("tokenizer.ggml.tokens", tokens(&["a", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])),
        ],
    );
    let spm = own.join("spm/codellama.gguf");
    fs::create_dir_all(spm.parent().unwrap()).unwrap();
    write_gguf(
        &spm,
        &[
            ("general.architecture", text("llama")),
            ("general.file_type", gguf_file::Value::U32(15)),
            ("tokenizer.ggml.model", text("llama")),
            ("tokenizer.ggml.tokens", tokens(&["<s>", "▁<PRE>", "▁<SUF>", "▁<MID>"])),
        ],
    );
    let truncated = own.join("truncated.gguf");
    let whole = fs::read(fixture("tiny-llama-q8_0.gguf")).unwrap();
    fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let garbage = own.join("garbage.bin");
    fs::write(&garbage, [0u8; 100]).unwrap();
    let empty = own.join("empty");
    fs::create_dir(&empty).unwrap();
    let machine = machine();
    let lm_dir = machine.path().join("home/.lmstudio/models/lmstudio-community/SmolLM2-135M-Instruct-GGUF");
    // Spelled differently from the path LM Studio's search finds.
    let lm_file = lm_dir.join("../SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_1.gguf");

    let explicit = vec![
        gemma.clone(),
        spm.clone(),
        fixture("tiny-llama"),
        truncated,
        garbage,
        empty,
        own.join("absent.gguf"),
        lm_file.clone(),
    ];
    let found = discover(&Roots { explicit, ..roots(machine.path()) });

    // Without general.file_type the type of most weights counts, in ggml's spelling.
    assert_eq!(summary(&found[0]), ("gemma2", "Q4_K", true, false), "not a family marunochi runs");
    assert_eq!(summary(&found[1]), ("llama", "Q4_K_M", true, false), "SentencePiece needs tokenizer.json");
    assert_eq!(summary(&found[2]), ("llama", "float32", false, true));
    assert_eq!((found[2].name.as_str(), found[2].format), ("tiny-llama", Format::Safetensors));
    let errors: Vec<(&str, &str)> =
        found[3..7].iter().map(|f| (f.name.as_str(), f.error.as_deref().unwrap_or("no error"))).collect();
    assert!(errors[0].0 == "truncated.gguf" && errors[0].1.starts_with("truncated: tensor"), "{errors:?}");
    assert!(errors[1].0 == "garbage.bin" && errors[1].1.contains("not a readable GGUF file"), "{errors:?}");
    assert!(errors[2].0 == "empty" && errors[2].1.starts_with("no model here"), "{errors:?}");
    assert!(errors[3].0 == "absent.gguf" && errors[3].1.contains("No such file"), "{errors:?}");
    assert!(found[..8].iter().all(|f| f.source == Source::Explicit));
    assert_eq!(summary(&found[7]), ("llama", "Q4_1", false, true));
    assert!(
        !found.iter().any(|f| f.source == Source::LmStudio && f.name.ends_with("SmolLM2-135M-Instruct-Q4_1.gguf")),
        "a file named explicitly is not listed again under LM Studio"
    );
    assert!(found.iter().any(|f| f.name == "smollm2:135m"), "an Ollama tag sharing its bytes is a model of its own");
    assert_eq!(found.len(), 8 + 9 - 1);

    // The engine can build a SentencePiece model's tokenizer from tokenizer.json next to the file.
    fs::copy(fixture("tiny-llama/tokenizer.json"), spm.with_file_name("tokenizer.json")).unwrap();
    let found = discover(&Roots { explicit: vec![spm], ..Roots::default() });
    assert_eq!(summary(&found[0]), ("llama", "Q4_K_M", true, true));
}

fn marunochi(home: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_marunochi"));
    command.env("MARUNOCHI_HOME", home.join("marunochi")).env("HOME", home);
    for var in ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "OLLAMA_MODELS"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).args(args).output().unwrap()
}

#[test]
fn the_command_prints_a_table_and_json() {
    let dir = machine();
    let root = dir.path();
    let home = root.join("home");
    let env = [("HF_HOME", &*root.join("hf")), ("OLLAMA_MODELS", &*root.join("ollama"))];

    let out = marunochi(&home, &env, &["models"]);
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("{table}");
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "FIM", "RUNNABLE", "PATH"]
    );
    let row = |name: &str| -> Vec<&str> {
        let line =
            lines.iter().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {table}"));
        line.split_whitespace().collect()
    };
    // name, source, arch, quant, size (number and unit), fim, runnable, path
    let qwen = row("marunochi/tiny-qwen2");
    assert_eq!(qwen[..8], ["marunochi/tiny-qwen2", "hf", "qwen2", "float32", "37.4", "MiB", "yes", "yes"]);
    assert!(qwen[8].ends_with("snapshots/0123456789abcdef0123456789abcdef01234567"), "{qwen:?}");
    assert_eq!(row("smollm2:135m")[1..8], ["ollama", "llama", "Q4_1", "93.8", "MiB", "no", "yes"]);
    assert_eq!(
        row("hf.co/bartowski/tiny-qwen2-GGUF:Q8_0")[1..8],
        ["ollama", "qwen2", "Q8_0", "15.6", "MiB", "yes", "yes"]
    );
    assert_eq!(row("old/tiny-llama-GGUF/tiny-llama-q8_0.gguf")[1..4], ["lmstudio", "llama", "Q8_0"]);
    let broken = "lmstudio-community/SmolLM2-135M-Instruct-GGUF/broken.gguf";
    assert_eq!(row(broken)[1..8], ["lmstudio", "-", "-", "22", "B", "-", "no"]);
    let at = lines.iter().position(|l| l.starts_with(broken)).unwrap();
    assert!(lines[at + 1].starts_with("  error: not a readable GGUF file"), "{table}");
    assert_eq!(lines.len(), 1 + 9 + 2, "a header, nine models, two error lines: {table}");

    let corrupt = root.join("corrupt.gguf");
    fs::write(&corrupt, "nope").unwrap();
    let out = marunochi(&home, &env, &["models", "--json", corrupt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a named path that is not a model fails the command");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 10);
    assert_eq!(entries[0]["source"], "explicit");
    assert!(entries[0]["error"].as_str().unwrap().contains("not a readable GGUF file"));
    let smollm = entries.iter().find(|e| e["name"] == "smollm2:135m").unwrap();
    assert_eq!(
        (&smollm["format"], &smollm["architecture"], &smollm["quantization"], &smollm["fim"], &smollm["runnable"]),
        (&"gguf".into(), &"llama".into(), &"Q4_1".into(), &false.into(), &true.into())
    );
    assert_eq!(smollm["size_bytes"], size(&fixture("smollm2-135m-instruct.gguf")));
}

#[test]
fn the_command_says_where_it_looked_when_it_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let hub = home.join("my-hub");
    let env = [("HF_HUB_CACHE", &*hub), ("HF_HOME", &*home.join("ignored")), ("OLLAMA_MODELS", &*home.join("ol"))];
    let out = marunochi(home, &env, &["models"]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("No models found. Looked in:"), "{text}");
    for place in [hub, home.join("ol"), home.join(".lmstudio/models"), home.join(".cache/lm-studio/models")] {
        assert!(text.contains(&format!("{} (does not exist)", place.display())), "{place:?}: {text}");
    }
    assert!(!text.contains("ignored"), "HF_HUB_CACHE wins over HF_HOME: {text}");

    let env = [("XDG_CACHE_HOME", &*home.join("xdg")), ("OLLAMA_MODELS", &*home.join("ol"))];
    let out = marunochi(home, &env, &["models", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]", "stdout stays JSON");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&home.join("xdg/huggingface/hub").display().to_string()), "{text}");

    let out = marunochi(home, &[], &["models", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: marunochi models"));
}
