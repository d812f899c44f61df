//! Which models are on this machine: paths the user names, the Hugging Face cache, Ollama's store and
//! LM Studio's folders. Entry point: [`discover`].
//!
//! Only headers and metadata are read, never weights, so a listing stays quick with many large
//! models. An entry that cannot be read is listed with the reason rather than failing the listing,
//! and a place that does not exist is simply skipped: most users have one of these tools, not all.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, gguf_file};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::families;

/// Tokens that open a fill-in-the-middle prompt: Qwen2.5-Coder and CodeGemma, StarCoder, DeepSeek-Coder,
/// CodeLlama (with and without SentencePiece's word marker), Codestral.
const FIM_MARKERS: [&str; 6] = ["<|fim_prefix|>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "[PREFIX]"];

/// llama.cpp writes these when it recognised the FIM tokens while converting; files converted
/// before the keys existed only have the vocabulary to go by.
const GGUF_FIM_KEYS: [&str; 2] = ["tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"];

const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";
const OLLAMA_REGISTRY: &str = "registry.ollama.ai";

/// How deep model files may sit below a directory that is searched as a tree: LM Studio keeps
/// `publisher/repo/file.gguf`, and people's own model folders are rarely deeper.
const TREE_DEPTH: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Explicit,
    /// `[engine] model` in config.toml.
    Config,
    Hf,
    Ollama,
    LmStudio,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that tables can give the name a width.
        f.pad(match self {
            Source::Explicit => "explicit",
            Source::Config => "config",
            Source::Hf => "hf",
            Source::Ollama => "ollama",
            Source::LmStudio => "lmstudio",
        })
    }
}

/// How the entry was read: a GGUF file, or an HF directory (`config.json` and safetensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    Safetensors,
}

/// One model on disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// What the user knows it by: `org/name` in the HF cache, `model:tag` in Ollama, the path below
    /// the searched directory otherwise.
    pub name: String,
    /// What `Engine::load` takes: the `.gguf` file or the HF directory.
    pub path: PathBuf,
    pub source: Source,
    pub format: Format,
    /// GGUF `general.architecture` or HF `model_type`.
    pub architecture: Option<String>,
    /// GGUF: llama.cpp's file type (`Q4_K_M`), else the type holding most weights; HF: `torch_dtype`
    /// or the quantization method.
    pub quantization: Option<String>,
    /// Bytes on disk, symlinks followed (the HF cache links snapshot files to its blobs).
    pub size_bytes: u64,
    /// The tokenizer has fill-in-the-middle tokens.
    pub fim: bool,
    /// marunochi can load it: a family it implements, weights it can read and a tokenizer it can build.
    pub runnable: bool,
    /// Why the entry could not be read; the fields above are then mostly empty.
    pub error: Option<String>,
}

impl Found {
    fn new(name: String, path: &Path, source: Source, format: Format) -> Found {
        Found {
            name,
            path: path.to_owned(),
            source,
            format,
            architecture: None,
            quantization: None,
            size_bytes: fs::metadata(path).map_or(0, |m| if m.is_file() { m.len() } else { 0 }),
            fim: false,
            runnable: false,
            error: None,
        }
    }

    fn failed(mut self, error: String) -> Found {
        self.error = Some(error);
        self
    }
}

/// Where to look. Tests point these at temporary trees; [`Roots::from_env`] is the real machine.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    /// Files or directories the user named; reported even when they hold nothing readable.
    pub explicit: Vec<PathBuf>,
    /// The model config.toml names, reported like an explicit path.
    pub configured: Option<PathBuf>,
    /// Hugging Face hub caches (`models--ORG--NAME/snapshots/<rev>/`).
    pub hf_hub: Vec<PathBuf>,
    /// Ollama stores (`manifests/`, `blobs/`).
    pub ollama: Vec<PathBuf>,
    /// LM Studio model folders (`<publisher>/<repo>/*.gguf`).
    pub lmstudio: Vec<PathBuf>,
}

impl Roots {
    /// The places each tool uses on this machine, after the environment variables they honour.
    pub fn from_env() -> Roots {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_owned());
        let in_home = |relative: &str| home.as_ref().map(|h| h.join(relative));
        // huggingface_hub's own order of precedence.
        let hf_hub = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
            .or_else(|| in_home(".cache/huggingface/hub"));
        let ollama = match var("OLLAMA_MODELS") {
            Some(dir) => vec![dir],
            // Linux installs run Ollama as a service user whose store is under /usr/share/ollama.
            None => in_home(".ollama/models")
                .into_iter()
                .chain([PathBuf::from("/usr/share/ollama/.ollama/models")])
                .collect(),
        };
        // LM Studio 0.3 moved its models from the cache directory to ~/.lmstudio.
        let lmstudio = [".lmstudio/models", ".cache/lm-studio/models"].into_iter().filter_map(in_home).collect();
        Roots { explicit: Vec::new(), configured: None, hf_hub: hf_hub.into_iter().collect(), ollama, lmstudio }
    }

    /// The searched places (not the explicit paths), for telling the user where we looked.
    pub fn locations<'a>(&'a self) -> Vec<(Source, &'a Path)> {
        let tagged = |source, dirs: &'a [PathBuf]| dirs.iter().map(move |d| (source, d.as_path()));
        tagged(Source::Hf, &self.hf_hub)
            .chain(tagged(Source::Ollama, &self.ollama))
            .chain(tagged(Source::LmStudio, &self.lmstudio))
            .collect()
    }
}

/// Every model under `roots`: explicit paths first, then the HF cache, Ollama and LM Studio, each in
/// name order. A file named explicitly is not listed a second time under the place it lives in.
pub fn discover(roots: &Roots) -> Vec<Found> {
    let mut found = Vec::new();
    for path in &roots.explicit {
        named(path, Source::Explicit, &mut found);
    }
    if let Some(path) = &roots.configured {
        named(path, Source::Config, &mut found);
    }
    let named: HashSet<PathBuf> = found.iter().filter_map(|f| entry(&f.path)).collect();
    let mut searched = Vec::new();
    for root in &roots.hf_hub {
        hf_cache(root, &mut searched);
    }
    for root in &roots.ollama {
        ollama(root, &mut searched);
    }
    for root in &roots.lmstudio {
        tree(root, root, "", Source::LmStudio, TREE_DEPTH, &mut searched);
    }
    searched.retain(|f| entry(&f.path).is_none_or(|e| !named.contains(&e)));
    found.extend(searched);
    found
}

/// The model to serve when the user named none: the first one marunochi can run, preferring models
/// with fill-in-the-middle tokens (they see the code after the cursor too).
pub fn default_model(found: &[Found]) -> Option<&Found> {
    found.iter().filter(|f| f.runnable && f.error.is_none()).min_by_key(|f| !f.fim)
}

/// The directory entry `path` names, however it is spelled. Not the file it may link to: Ollama tags
/// and HF revisions share blobs, and each is a model of its own.
fn entry(path: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(path).ok()?;
    Some(path.parent()?.canonicalize().ok()?.join(path.file_name()?))
}

/// A path the user named (on the command line or in the config).
fn named(path: &Path, source: Source, out: &mut Vec<Found>) {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let before = out.len();
            tree(path, path, &name, source, TREE_DEPTH, out);
            if out.len() == before {
                let reason = "no model here (give a .gguf file or a directory with config.json and safetensors)";
                out.push(Found::new(name, path, source, Format::Safetensors).failed(reason.into()));
            }
        }
        Ok(_) => out.push(gguf(name, path, source)),
        Err(e) => out.push(Found::new(name, path, source, Format::Gguf).failed(e.to_string())),
    }
}

/// Sorted entries of `dir`; none when it cannot be read (a missing root is not an error).
fn children(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    paths
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Lists the models in `dir` and below: every `.gguf` file, and `dir` itself when it is an HF model
/// directory. Names are `prefix/` plus the path below `root`.
fn tree(root: &Path, dir: &Path, prefix: &str, source: Source, depth: usize, out: &mut Vec<Found>) {
    let name = |path: &Path| {
        let below = path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned();
        match (prefix.is_empty(), below.is_empty()) {
            (_, true) => prefix.to_owned(),
            (true, false) => below,
            (false, false) => format!("{prefix}/{below}"),
        }
    };
    let entries = children(dir);
    let weights: Vec<&PathBuf> = entries.iter().filter(|p| has_extension(p, "safetensors")).collect();
    if !weights.is_empty() && dir.join("config.json").is_file() {
        out.push(hf_dir(name(dir), dir, &weights, source));
    }
    for path in &entries {
        // Symlinked directories are not entered: a link back up would never end.
        let is_real_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if is_real_dir && depth > 0 {
            tree(root, path, prefix, source, depth - 1, out);
        } else if !is_real_dir && has_extension(path, "gguf") {
            out.push(gguf(name(path), path, source));
        }
    }
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case(extension))
}

/// `models--ORG--NAME/snapshots/<rev>/`: one entry per model in each downloaded revision.
fn hf_cache(hub: &Path, out: &mut Vec<Found>) {
    for repo in children(hub) {
        // The cache also holds `datasets--` and `spaces--` folders.
        let Some(id) = file_name(&repo).strip_prefix("models--").map(|id| id.replacen("--", "/", 1)) else {
            continue;
        };
        let snapshots = children(&repo.join("snapshots"));
        for snapshot in &snapshots {
            let prefix = match snapshots.len() {
                1 => id.clone(),
                _ => format!("{id}@{}", file_name(snapshot).chars().take(8).collect::<String>()),
            };
            tree(snapshot, snapshot, &prefix, Source::Hf, TREE_DEPTH, out);
        }
    }
}

#[derive(Deserialize)]
struct OllamaManifest {
    layers: Vec<OllamaLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OllamaLayer {
    media_type: String,
    digest: String,
}

/// `manifests/<registry>/<namespace>/<model>/<tag>` → the GGUF blob of its model layer.
fn ollama(store: &Path, out: &mut Vec<Found>) {
    for registry in children(&store.join("manifests")) {
        for namespace in children(&registry) {
            for model in children(&namespace) {
                for tag in children(&model) {
                    // The names `ollama list` shows: the default registry and namespace are left out.
                    let mut name = format!("{}:{}", file_name(&model), file_name(&tag));
                    if file_name(&namespace) != "library" || file_name(&registry) != OLLAMA_REGISTRY {
                        name = format!("{}/{name}", file_name(&namespace));
                    }
                    if file_name(&registry) != OLLAMA_REGISTRY {
                        name = format!("{}/{name}", file_name(&registry));
                    }
                    out.push(match ollama_blob(store, &tag) {
                        Ok(blob) => gguf(name, &blob, Source::Ollama),
                        Err(reason) => Found::new(name, &tag, Source::Ollama, Format::Gguf).failed(reason),
                    });
                }
            }
        }
    }
}

fn ollama_blob(store: &Path, manifest: &Path) -> Result<PathBuf, String> {
    let text = fs::read_to_string(manifest).map_err(|e| format!("manifest: {e}"))?;
    let manifest: OllamaManifest = serde_json::from_str(&text).map_err(|e| format!("manifest: {e}"))?;
    let layer =
        manifest.layers.iter().find(|l| l.media_type == OLLAMA_MODEL_LAYER).ok_or("the manifest has no model layer")?;
    // The digest becomes a file name, so it must not be able to point anywhere else.
    let hex = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("manifest: unexpected digest {:?}", layer.digest))?;
    Ok(store.join("blobs").join(format!("sha256-{hex}")))
}

fn gguf(name: String, path: &Path, source: Source) -> Found {
    let found = Found::new(name, path, source, Format::Gguf);
    let content = match read_gguf(path) {
        Ok(content) => content,
        Err(e) => return found.failed(e),
    };
    let md = &content.metadata;
    let text = |key: &str| md.get(key).and_then(|v| v.to_string().ok());
    let architecture = text("general.architecture").cloned();
    // The engine rebuilds only byte-level BPE tokenizers from GGUF metadata; others need the
    // model's tokenizer.json next to the file.
    let tokenizer =
        text("tokenizer.ggml.model").is_some_and(|m| m == "gpt2") || path.with_file_name("tokenizer.json").is_file();
    Found {
        runnable: architecture.as_deref().and_then(families::family).is_some() && tokenizer,
        architecture,
        quantization: gguf_quantization(&content),
        fim: gguf_fim(md),
        ..found
    }
}

/// The header and metadata of a GGUF file, checked exactly as the engine checks them before a load.
fn read_gguf(path: &Path) -> Result<gguf_file::Content, String> {
    match super::weights::read_gguf(path) {
        Ok((content, _)) => Ok(content),
        Err(super::EngineError::Corrupt { reason, .. }) => Err(reason),
        Err(super::EngineError::NotFound(_)) => Err("file not found".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn gguf_quantization(content: &gguf_file::Content) -> Option<String> {
    let file_type = content.metadata.get("general.file_type").and_then(|v| v.to_u32().ok());
    if let Some(name) = file_type.and_then(llama_file_type) {
        return Some(name.into());
    }
    // Without a file type, the type that holds most of the weights names the file. (Not one fixed
    // tensor: a Q4_K_M file keeps some ffn_down tensors in Q6_K.)
    let mut elements: HashMap<GgmlDType, usize> = HashMap::new();
    for info in content.tensor_infos.values() {
        *elements.entry(info.ggml_dtype).or_default() += info.shape.elem_count();
    }
    let dtype = elements.into_iter().max_by_key(|&(_, n)| n)?.0;
    // ggml's spelling (`Q4_K`), which is what users see everywhere else; candle writes `Q4K`.
    let name = format!("{dtype:?}");
    Some(name.strip_suffix('K').map_or(name.clone(), |q| format!("{q}_K")))
}

/// llama.cpp's `LLAMA_FTYPE_MOSTLY_*` names. The IQ types are left out because candle cannot read
/// files that contain them at all.
fn llama_file_type(value: u32) -> Option<&'static str> {
    Some(match value {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        21 => "Q2_K_S",
        32 => "BF16",
        _ => return None,
    })
}

fn gguf_fim(md: &HashMap<String, gguf_file::Value>) -> bool {
    if GGUF_FIM_KEYS.iter().any(|k| md.contains_key(*k)) {
        return true;
    }
    let tokens = md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok());
    tokens.into_iter().flatten().any(|t| t.to_string().is_ok_and(|t| FIM_MARKERS.contains(&t.as_str())))
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    torch_dtype: Option<String>,
    /// What newer transformers versions write instead of `torch_dtype`.
    dtype: Option<String>,
    quantization_config: Option<HfQuantization>,
    /// MLX's key for the same.
    quantization: Option<HfQuantization>,
}

#[derive(Deserialize)]
struct HfQuantization {
    quant_method: Option<String>,
    bits: Option<u32>,
}

fn hf_dir(name: String, dir: &Path, weights: &[&PathBuf], source: Source) -> Found {
    let found = Found {
        size_bytes: weights.iter().filter_map(|w| fs::metadata(w).ok()).map(|m| m.len()).sum(),
        ..Found::new(name, dir, source, Format::Safetensors)
    };
    let config: HfConfig = match fs::read_to_string(dir.join("config.json")) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(config) => config,
            Err(e) => return found.failed(format!("config.json: {e}")),
        },
        Err(e) => return found.failed(format!("config.json: {e}")),
    };
    let tokenizer = dir.join("tokenizer.json");
    let fim = if tokenizer.is_file() {
        match hf_fim(&tokenizer) {
            Ok(fim) => fim,
            Err(e) => return found.failed(format!("tokenizer.json: {e}")),
        }
    } else {
        false
    };
    // Pre-quantized checkpoints (GPTQ, AWQ, MLX, ...) store packed integers the engine cannot use.
    let packed = config.quantization_config.or(config.quantization);
    let runnable =
        packed.is_none() && tokenizer.is_file() && config.model_type.as_deref().and_then(families::family).is_some();
    let quantization = match packed {
        Some(q) => {
            let method = q.quant_method.unwrap_or_else(|| "mlx".into());
            Some(q.bits.map_or(method.clone(), |bits| format!("{method} {bits}-bit")))
        }
        None => config.torch_dtype.or(config.dtype),
    };
    Found { architecture: config.model_type, quantization, fim, runnable, ..found }
}

#[derive(Deserialize)]
struct TokenizerJson {
    #[serde(default)]
    added_tokens: Vec<TokenizerAdded>,
    #[serde(default)]
    model: TokenizerModel,
}

#[derive(Deserialize)]
struct TokenizerAdded {
    content: String,
}

#[derive(Deserialize, Default)]
struct TokenizerModel {
    /// A token → id map (BPE, WordPiece) or a list of `[token, score]` (Unigram).
    #[serde(default)]
    vocab: Value,
}

fn hf_fim(path: &Path) -> Result<bool, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let tokenizer: TokenizerJson = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let is_marker = |t: &str| FIM_MARKERS.contains(&t);
    let in_vocab = match &tokenizer.model.vocab {
        Value::Object(map) => map.keys().any(|t| is_marker(t)),
        Value::Array(entries) => entries.iter().filter_map(|e| e.get(0)?.as_str()).any(is_marker),
        _ => false,
    };
    Ok(in_vocab || tokenizer.added_tokens.iter().any(|t| is_marker(&t.content)))
}
/// The model a daemon serves: the one named (flag), else `[engine] model`, else the best model
/// discovery finds on this machine.
pub fn resolve_model(named: Option<&Path>, configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = named.or(configured) {
        return Ok(path.to_owned());
    }
    let found = discover(&Roots::from_env());
    default_model(&found).map(|f| f.path.clone()).ok_or_else(|| {
        "no model configured and none found on this machine: set `model` under [engine] in config.toml, \
         or pass --model (`marunochi models` shows what was looked for)"
            .to_owned()
    })
}
