//! What training writes: checkpoints (adapter, optimizer moments, state) that a later run resumes
//! from, and the finished adapter in PEFT layout. Both are built in a temporary directory and
//! renamed into place, so a crash or a full disk leaves the previous version whole.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use super::TrainError;
use crate::engine::lora::Projection;

/// How much of each end of a model file the fingerprint reads: enough to tell models apart
/// (headers, first and last tensors) without reading gigabytes.
const FINGERPRINT_WINDOW: u64 = 4 << 20;

/// A short identity for the base model at `path` (a GGUF file or an HF directory): SHA-256 over the
/// size and both ends of every weight file, and the whole config.json.
pub fn fingerprint(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?.path();
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name == "config.json" || name.ends_with(".safetensors") {
                files.push(entry);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    for file in files {
        let mut f = std::fs::File::open(&file)?;
        let len = f.metadata()?.len();
        hasher.update(len.to_le_bytes());
        let mut window = |from: u64| -> std::io::Result<()> {
            f.seek(SeekFrom::Start(from))?;
            let mut buffer = Vec::new();
            (&mut f).take(FINGERPRINT_WINDOW).read_to_end(&mut buffer)?;
            hasher.update(&buffer);
            Ok(())
        };
        window(0)?;
        if len > FINGERPRINT_WINDOW {
            window(len.saturating_sub(FINGERPRINT_WINDOW).max(FINGERPRINT_WINDOW))?;
        }
    }
    Ok(hasher.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect())
}

/// The PEFT name of one adapter tensor (`name`: `lora_A.weight`, `lora_B.weight`,
/// `lora_magnitude_vector`).
pub(crate) fn peft_key(layer: usize, projection: Projection, name: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.{}.{name}", projection.parent(), projection.module())
}

/// Writes a directory in one piece: `fill` populates a fresh temporary sibling, which then replaces
/// `dir` (the old contents are removed only once the new ones are in place).
pub(crate) fn replace_dir(dir: &Path, fill: impl FnOnce(&Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
    let parent = dir.parent().expect("a directory we write has a parent");
    let name = dir.file_name().expect("a directory we write has a name").to_string_lossy().into_owned();
    let save_error = |path: &Path| {
        let path = path.to_owned();
        move |source| TrainError::Save { path, source }
    };
    crate::home::create_private_dir(parent).map_err(save_error(parent))?;
    let tmp = parent.join(format!(".{name}.tmp"));
    let old = parent.join(format!(".{name}.old"));
    for stale in [&tmp, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(save_error(stale))?;
        }
    }
    crate::home::create_private_dir(&tmp).map_err(save_error(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // On disk before it replaces anything: the files (safetensors does not sync them) and the
    // directory that names them; a crash or power cut after the rename finds whole files.
    sync_tree(&tmp).map_err(save_error(&tmp))?;
    // Both renames are atomic; between them only `old` holds the previous version, which
    // `existing_dir` finds.
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(save_error(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(save_error(dir))?;
    // The renames themselves are on disk only once the parent directory is.
    crate::home::sync_dir(parent).map_err(save_error(parent))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(save_error(&old))?;
    }
    Ok(())
}

/// Every file below `dir`, then each directory, to disk.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    crate::home::sync_dir(dir)
}

/// `dir`, or its previous version when a crash came between the two renames of [`replace_dir`].
pub(crate) fn existing_dir(dir: &Path) -> Option<PathBuf> {
    if dir.is_dir() {
        return Some(dir.to_owned());
    }
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let old = dir.parent()?.join(format!(".{name}.old"));
    old.is_dir().then_some(old)
}

/// A private file (0600) with these bytes, flushed to disk.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::home::write_private(path, bytes).map_err(|source| TrainError::Save { path: path.to_owned(), source })
}

/// Tensors as a private safetensors file.
pub(crate) fn write_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
    // candle writes the file itself; it lands inside a 0700 temporary directory and is made 0600
    // before that directory is renamed into place.
    candle_core::safetensors::save(tensors, path).map_err(|e| match e {
        candle_core::Error::Io(source) => TrainError::Save { path: path.to_owned(), source },
        other => TrainError::Save { path: path.to_owned(), source: std::io::Error::other(other.to_string()) },
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| TrainError::Save { path: path.to_owned(), source })
}

pub(crate) fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| TrainError::Checkpoint { path: path.to_owned(), reason: e.to_string() })
}

/// `v<N+1>` for the highest `v<N>` under `dir` (`v1` for the first).
pub(crate) fn next_version(dir: &Path) -> String {
    let highest = crate::home::adapter_versions(dir).last().map_or(0, |(n, _)| *n);
    format!("v{}", highest + 1)
}

/// An interrupted run's progress under its work directory (`train/<language>/`): (step, total).
pub fn interrupted(work: &Path) -> Option<(usize, usize)> {
    let dir = existing_dir(&work.join("checkpoint"))?;
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).ok()?).ok()?;
    Some((state.get("step")?.as_u64()? as usize, state.get("total")?.as_u64()? as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_previous_directory_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v1");
        replace_dir(&dir, |d| write_private(&d.join("a"), b"first")).unwrap();
        let failed = replace_dir(&dir, |d| {
            write_private(&d.join("a"), b"second")?;
            Err(TrainError::Save { path: d.join("b"), source: std::io::Error::other("disk full") })
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "no temporary directory is left behind");
        replace_dir(&dir, |d| write_private(&d.join("a"), b"third")).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"third");
    }

    #[test]
    fn versions_count_up() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(next_version(tmp.path()), "v1");
        std::fs::create_dir(tmp.path().join("v2")).unwrap();
        std::fs::create_dir(tmp.path().join(".v3.tmp")).unwrap();
        assert_eq!(next_version(tmp.path()), "v3");
    }

    #[test]
    fn fingerprints_tell_files_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
        std::fs::write(&a, vec![1u8; 10_000_000]).unwrap();
        let mut other = vec![1u8; 10_000_000];
        other[9_999_999] = 2;
        std::fs::write(&b, other).unwrap();
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        assert_eq!(fingerprint(&a).unwrap(), fingerprint(&a).unwrap());
    }
}
