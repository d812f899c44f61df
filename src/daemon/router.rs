//! Per-language expert routing: a request's language picks that language's promoted adapter from
//! the registry directory (`<adapters>/<language>/active`, a directory or a link to one), else the
//! base model. The link is resolved on every request, so promoting or rolling back an adapter takes
//! effect at the next keystroke without restarting anything.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::engine::Engine;

pub struct Router {
    adapters: PathBuf,
    /// Adapter directories already loaded into the engine, by canonical path → engine name.
    loaded: HashMap<PathBuf, String>,
    /// Directories that failed to load, so a broken adapter is reported once, not per keystroke.
    broken: HashMap<PathBuf, String>,
}

impl Router {
    pub fn new(adapters: PathBuf) -> Router {
        Router { adapters, loaded: HashMap::new(), broken: HashMap::new() }
    }

    /// The engine name of `language`'s active adapter (loading it on first use), `None` for the base
    /// model. Names are `<language>/<directory name>`, which is also what `model_version` shows.
    pub fn adapter_for(&mut self, engine: &Engine, language: &str) -> Option<String> {
        if language.is_empty() || language.contains(['/', '\\']) || language.starts_with('.') {
            return None;
        }
        let dir = std::fs::canonicalize(self.adapters.join(language).join("active")).ok()?;
        if let Some(name) = self.loaded.get(&dir) {
            return Some(name.clone());
        }
        if self.broken.contains_key(&dir) {
            return None;
        }
        let version = dir.file_name().map_or_else(|| "active".into(), |n| n.to_string_lossy().into_owned());
        let name = format!("{language}/{version}");
        match engine.load_adapter(&name, &dir) {
            Ok(()) => {
                tracing::info!(language, adapter = %dir.display(), "expert adapter loaded");
                self.loaded.insert(dir, name.clone());
                Some(name)
            }
            Err(error) => {
                tracing::error!(language, %error, "the active adapter cannot be used; serving the base model");
                self.broken.insert(dir, error.to_string());
                None
            }
        }
    }

    /// Every adapter loaded so far.
    pub fn loaded(&self) -> Vec<String> {
        let mut names: Vec<String> = self.loaded.values().cloned().collect();
        names.sort();
        names
    }
}
