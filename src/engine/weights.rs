//! Where a model's tensors come from: one GGUF file (llama.cpp names, quantized or not) or an HF
//! directory of safetensors (one file or sharded). Model files ask for tensors by their own names;
//! this module only knows how to fetch them and how to report what is wrong with the files.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::EngineError;

pub(crate) enum Weights {
    Gguf { path: PathBuf, content: gguf_file::Content, file: File, device: Device },
    Safetensors { dir: PathBuf, tensors: MmapedSafetensors, device: Device },
}

impl Weights {
    pub(crate) fn open_gguf(path: &Path, device: &Device) -> Result<Weights, EngineError> {
        let (content, file) = read_gguf(path)?;
        Ok(Weights::Gguf { path: path.to_owned(), content, file, device: device.clone() })
    }

    pub(crate) fn open_safetensors(dir: &Path, device: &Device) -> Result<Weights, EngineError> {
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; like every mmap user we rely on nobody
        // truncating them while the model is loaded.
        let tensors = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| EngineError::Corrupt {
            path: dir.to_owned(),
            reason: format!("unreadable safetensors ({})", without_backtrace(e)),
        })?;
        Ok(Weights::Safetensors { dir: dir.to_owned(), tensors, device: device.clone() })
    }

    fn location(&self) -> &Path {
        match self {
            Weights::Gguf { path, .. } => path,
            Weights::Safetensors { dir, .. } => dir,
        }
    }

    pub(crate) fn gguf_content(&self) -> Option<&gguf_file::Content> {
        match self {
            Weights::Gguf { content, .. } => Some(content),
            Weights::Safetensors { .. } => None,
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        match self {
            Weights::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            Weights::Safetensors { tensors, .. } => tensors.get(name).is_ok(),
        }
    }

    /// A weight used as the right-hand side of a matmul, kept quantized when it is.
    pub(crate) fn matmul(&mut self, name: &str) -> Result<QMatMul, EngineError> {
        match self {
            Weights::Gguf { path, .. } => {
                let path = path.clone();
                let qtensor = self.gguf_tensor(name)?;
                QMatMul::from_qtensor(qtensor).map_err(|e| corrupt(&path, name, e))
            }
            Weights::Safetensors { .. } => Ok(QMatMul::Tensor(self.tensor(name)?)),
        }
    }

    /// A tensor as F32 (norms, biases, embeddings).
    pub(crate) fn tensor(&mut self, name: &str) -> Result<Tensor, EngineError> {
        match self {
            Weights::Gguf { path, device, .. } => {
                let (path, device) = (path.clone(), device.clone());
                let qtensor = self.gguf_tensor(name)?;
                qtensor.dequantize(&device).map_err(|e| corrupt(&path, name, e))
            }
            Weights::Safetensors { dir, tensors, device } => {
                if tensors.get(name).is_err() {
                    return Err(missing(dir, name));
                }
                tensors.load(name, device).and_then(|t| t.to_dtype(DType::F32)).map_err(|e| corrupt(dir, name, e))
            }
        }
    }

    /// One tensor of a GGUF file as stored, after checking that it exists and that candle can compute
    /// with its type.
    fn gguf_tensor(&mut self, name: &str) -> Result<QTensor, EngineError> {
        let Weights::Gguf { path, content, file, device } = self else { unreachable!("only called for GGUF sources") };
        let info = content.tensor_infos.get(name).ok_or_else(|| missing(path, name))?;
        check_quantization(path, name, info.ggml_dtype)?;
        content.tensor(file, name, device).map_err(|e| corrupt(path, name, e))
    }

    /// Fails with a clear error unless the tensor has exactly `shape`.
    pub(crate) fn expect_shape(&self, name: &str, tensor: &Tensor, shape: &[usize]) -> Result<(), EngineError> {
        self.expect_dims(name, tensor.dims(), shape)
    }

    pub(crate) fn expect_matmul_shape(&self, name: &str, weight: &QMatMul, shape: &[usize]) -> Result<(), EngineError> {
        match weight {
            QMatMul::QTensor(q) => self.expect_dims(name, q.shape().dims(), shape),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => self.expect_dims(name, t.dims(), shape),
        }
    }

    fn expect_dims(&self, name: &str, dims: &[usize], shape: &[usize]) -> Result<(), EngineError> {
        if dims == shape {
            return Ok(());
        }
        Err(EngineError::Corrupt {
            path: self.location().to_owned(),
            reason: format!("tensor {name} has shape {dims:?}, the config says {shape:?}"),
        })
    }
}

/// Reads a GGUF header and checks that the file holds every tensor's bytes: a truncated download
/// parses (its header is intact) and would otherwise fail deep inside a load.
pub(crate) fn read_gguf(path: &Path) -> Result<(gguf_file::Content, File), EngineError> {
    let mut file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    // candle panics on some headers (`general.alignment = 0` divides by zero); a user's file must
    // get an error, not bring the daemon down.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gguf_file::Content::read(&mut file)));
    let content = match read {
        Ok(content) => content.map_err(|e| EngineError::Corrupt {
            path: path.to_owned(),
            reason: format!("not a readable GGUF file ({})", without_backtrace(e)),
        })?,
        Err(_) => {
            return Err(EngineError::Corrupt {
                path: path.to_owned(),
                reason: "not a readable GGUF file (its header is inconsistent, e.g. general.alignment = 0)".into(),
            });
        }
    };
    let file_len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    for (name, info) in &content.tensor_infos {
        let bytes = info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = content.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            return Err(EngineError::Corrupt {
                path: path.to_owned(),
                reason: format!("truncated: tensor {name} ends at byte {end}, the file has {file_len}"),
            });
        }
    }
    Ok((content, file))
}

/// With RUST_BACKTRACE set, candle wraps errors with a whole backtrace, which does not belong in a
/// message to the user.
pub(crate) fn without_backtrace(error: candle_core::Error) -> candle_core::Error {
    match error {
        candle_core::Error::WithBacktrace { inner, .. } => *inner,
        error => error,
    }
}

fn corrupt(path: &Path, name: &str, error: candle_core::Error) -> EngineError {
    EngineError::Corrupt { path: path.to_owned(), reason: format!("tensor {name}: {}", without_backtrace(error)) }
}

fn missing(path: &Path, name: &str) -> EngineError {
    EngineError::Corrupt { path: path.to_owned(), reason: format!("tensor {name} is missing") }
}

/// Quantizations candle's CPU kernels handle; anything else gets a clear error, not a panic.
fn check_quantization(path: &Path, name: &str, dtype: GgmlDType) -> Result<(), EngineError> {
    use GgmlDType::*;
    match dtype {
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K | Q8K => Ok(()),
        other => Err(EngineError::Unsupported {
            path: path.to_owned(),
            what: format!("quantization {other:?} (tensor {name})"),
        }),
    }
}

/// `model.safetensors`, or every shard named by `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|_| EngineError::Corrupt {
        path: dir.to_owned(),
        reason: "no model.safetensors and no model.safetensors.index.json".into(),
    })?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::Corrupt { path: index_path.clone(), reason: e.to_string() })?;
    let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(EngineError::Corrupt { path: index_path, reason: "no weight_map".into() });
    };
    let mut files: Vec<PathBuf> = map.values().filter_map(|f| f.as_str()).map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    if let Some(absent) = files.iter().find(|f| !f.exists()) {
        return Err(EngineError::Corrupt {
            path: absent.clone(),
            reason: "shard listed in the index is missing".into(),
        });
    }
    Ok(files)
}
