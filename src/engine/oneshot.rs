//! One completion for scripts (`marunochi complete`): load a model, read a file, complete at a
//! position, report the timing.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::{Budget, Completion, CompletionRequest, Engine, EngineError, LoadOptions, PromptInput, Sampling};

/// `FILE:LINE:COL` with 0-based line and column (the column counts characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> Result<Location, String> {
        let bad = || format!("{text:?} is not FILE:LINE:COL (0-based line and column)");
        let (rest, column) = text.rsplit_once(':').ok_or_else(bad)?;
        let (file, line) = rest.rsplit_once(':').ok_or_else(bad)?;
        if file.is_empty() {
            return Err(bad());
        }
        Ok(Location {
            file: file.into(),
            line: line.parse().map_err(|_| bad())?,
            column: column.parse().map_err(|_| bad())?,
        })
    }
}

pub struct OneShot<'a> {
    pub model: &'a Path,
    pub location: &'a Location,
    pub adapter: AdapterChoice<'a>,
    pub max_new_tokens: usize,
}

/// Which LoRA adapter, if any, the completion uses.
pub enum AdapterChoice<'a> {
    /// The base model alone.
    None,
    /// A PEFT adapter directory.
    Dir(&'a Path),
    /// The language's active expert: `<adapters root>/<language>/active` (a directory or a link to
    /// one), which the adapter registry maintains; the base model when there is none yet.
    Language { adapters: PathBuf, language: &'a str },
}

pub struct OneShotResult {
    pub completion: Completion,
    pub model: String,
    pub adapter: Option<String>,
    /// `cpu`, `cuda` or `metal`.
    pub device: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} has {lines} lines; line {line} does not exist (lines count from 0)")]
    NoSuchLine { path: PathBuf, lines: usize, line: usize },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub fn complete_at(request: &OneShot) -> Result<OneShotResult, OneShotError> {
    let location = request.location;
    let text = std::fs::read_to_string(&location.file)
        .map_err(|source| OneShotError::Read { path: location.file.clone(), source })?;
    let offset = offset_of(&text, location.line, location.column).ok_or_else(|| OneShotError::NoSuchLine {
        path: location.file.clone(),
        lines: text.lines().count(),
        line: location.line,
    })?;
    let engine = Engine::load(request.model, &LoadOptions::default())?;
    let dir = match &request.adapter {
        AdapterChoice::None => None,
        AdapterChoice::Dir(dir) => Some(dir.to_path_buf()),
        AdapterChoice::Language { adapters, language } => {
            let active = adapters.join(language).join("active");
            if active.exists() {
                Some(active)
            } else {
                tracing::info!(language, "no active adapter for this language; using the base model");
                None
            }
        }
    };
    let adapter = match dir {
        Some(dir) => {
            let name = std::fs::canonicalize(&dir)
                .unwrap_or_else(|_| dir.clone())
                .file_name()
                .map_or_else(|| "adapter".into(), |n| n.to_string_lossy().into_owned());
            engine.load_adapter(&name, &dir)?;
            Some(name)
        }
        None => None,
    };
    let path = location.file.to_string_lossy();
    let completion = engine.complete(
        &CompletionRequest {
            cache_key: &path,
            input: PromptInput {
                path: &path,
                prefix: &text[..offset],
                suffix: &text[offset..],
                repo_name: None,
                open_files: &[],
                recent_edits: &[],
            },
            adapter: adapter.as_deref(),
            sampling: Sampling::Greedy,
            max_new_tokens: request.max_new_tokens,
            budget: Budget::default(),
            stop: &[],
        },
        &AtomicBool::new(false),
    )?;
    Ok(OneShotResult { completion, model: engine.info().name(), adapter, device: engine.device_name() })
}

/// Byte offset of a 0-based (line, character) position; a column past the end clamps to it.
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    let start = if line == 0 { 0 } else { text.match_indices('\n').nth(line - 1).map(|(i, _)| i + 1)? };
    let rest = &text[start..];
    let line_len = rest.find('\n').unwrap_or(rest.len());
    Some(start + rest[..line_len].char_indices().nth(column).map_or(line_len, |(i, _)| i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_from_the_right() {
        let l: Location = "/tmp/a:b.py:3:4".parse().unwrap();
        assert_eq!(l, Location { file: "/tmp/a:b.py".into(), line: 3, column: 4 });
        assert!("a.py:3".parse::<Location>().is_err());
        assert!(":1:2".parse::<Location>().is_err());
        assert!("a.py:x:2".parse::<Location>().is_err());
    }

    #[test]
    fn offsets_count_characters_and_clamp() {
        let text = "añb\nxy\n";
        assert_eq!(offset_of(text, 0, 2), Some(3));
        assert_eq!(offset_of(text, 0, 99), Some(4));
        assert_eq!(offset_of(text, 1, 1), Some(6));
        assert_eq!(offset_of(text, 2, 0), Some(8));
        assert_eq!(offset_of(text, 3, 0), None);
    }
}
