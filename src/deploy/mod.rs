//! The adapter registry (`marunochi adapters`) and the rollout. Entries: [`Registry`],
//! [`rollout::tick`].
//!
//! Versions live in `adapters/<language>/v<N>/` (written by `train`, judged by `eval`, which leaves
//! `eval.json` there). Three links name the versions serving uses — `active`, `canary` and
//! `shadow`, each relative and optional — and the daemon's router resolves them on every request,
//! so a change applies at the next keystroke without a restart, and versions already loaded stay
//! loaded (blue-green: the previous one is still in memory should it come back). The store keeps
//! each version's state (candidate, shadow, canary, active, retired, rolled_back, removed) and the
//! history of changes with their reasons.
//!
//! Links are switched first (atomic renames), the store second. Every use of the registry starts
//! by reconciling the two, so a crash between them leaves nothing inconsistent for long: the links
//! win, and where two name one version the higher stage (active, then canary, then shadow) does.
//! Every change and every reconcile holds `adapters/.registry.lock`, so the daemon's rollout
//! checks and the user's commands never see each other's change half done.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::store::{AdapterChange, AdapterEvent, AdapterVersion, Links, Stage, Store, StoreError};

pub mod rollout;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{language} has no adapter {version} (see `marunochi adapters list`)")]
    NoSuchVersion { language: String, version: String },
    #[error("{language}: {reason}")]
    Refused { language: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One version as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub language: String,
    pub version: String,
    pub state: Stage,
    pub created_at: String,
    /// When it entered its state.
    pub since: String,
    /// lora, qlora, dora or qdora.
    pub method: Option<String>,
    pub base_fingerprint: Option<String>,
    /// From `eval.json`: whether the gate passed, and its verdict on the held-out code.
    pub gate: Option<bool>,
    pub gate_verdict: Option<String>,
}

/// What [`Registry::roll_back_newest`] took out of service.
#[derive(Debug, Clone, PartialEq)]
pub enum RolledBack {
    Rollout {
        stage: Stage,
        version: String,
    },
    /// The active version; the one restored (`None`: the base model serves).
    Active {
        restored: Option<String>,
    },
}

pub struct Registry {
    adapters: PathBuf,
    db: PathBuf,
}

impl Registry {
    pub fn new(adapters: &Path, db: &Path) -> Registry {
        Registry { adapters: adapters.to_owned(), db: db.to_owned() }
    }

    /// Every version of `language` (or of every language), after reconciling store and link.
    pub fn list(&self, language: Option<&str>) -> Result<Vec<Entry>, RegistryError> {
        let mut store = self.store()?;
        let languages = match language {
            Some(l) => vec![l.to_owned()],
            None => self.languages(),
        };
        let mut entries = Vec::new();
        for language in languages {
            for row in self.reconcile(&mut store, &language)? {
                let meta = metadata(&self.adapters.join(&language).join(&row.version));
                entries.push(Entry {
                    method: meta.method,
                    gate: meta.gate,
                    gate_verdict: meta.gate_verdict,
                    language: row.language,
                    version: row.version,
                    state: row.state,
                    created_at: row.created_at,
                    since: row.updated_at,
                    base_fingerprint: row.base_fingerprint,
                });
            }
        }
        Ok(entries)
    }

    /// Makes `version` (default: the newest version that passed the gate) the active adapter of
    /// `language`; the previous one is retired. Refused for an adapter trained on another base
    /// model than `base_fingerprint`, and — unless `force` — for one that has not passed the gate.
    pub fn promote(
        &self,
        language: &str,
        version: Option<&str>,
        base_fingerprint: &str,
        force: bool,
    ) -> Result<String, RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        let version = self.eligible(language, &rows, version, base_fingerprint, force)?;
        let previous = rows.iter().find(|r| r.state == Stage::Active);
        self.point(language, Stage::Active, Some(&version))?;
        self.unlink_stage_of(&rows, language, &version)?;
        let mut changes = vec![change(
            language,
            &version,
            Stage::Active,
            &format!("promoted{}", if force { " (forced)" } else { "" }),
        )];
        if let Some(previous) = previous {
            changes.push(change(language, &previous.version, Stage::Retired, &format!("replaced by {version}")));
        }
        store.set_adapter_states(&changes)?;
        Ok(version)
    }

    /// Starts the rollout of `version` (default: the newest candidate that passed the gate): it
    /// becomes the shadow, or the canary straight away when `skip_shadow`. A rollout already
    /// under way for `language` is superseded (its version a candidate again: it never served
    /// everyone, so it is nobody's "previous version"). Refused like `promote`.
    pub fn start_rollout(
        &self,
        language: &str,
        version: Option<&str>,
        base_fingerprint: &str,
        skip_shadow: bool,
    ) -> Result<String, RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        let version = self.eligible(language, &rows, version, base_fingerprint, false)?;
        let stage = if skip_shadow { Stage::Canary } else { Stage::Shadow };
        let mut changes = Vec::new();
        for running in
            rows.iter().filter(|r| (r.state == Stage::Shadow || r.state == Stage::Canary) && r.version != version)
        {
            self.point(language, running.state, None)?;
            changes.push(change(language, &running.version, Stage::Candidate, &format!("superseded by {version}")));
        }
        self.point(language, stage, Some(&version))?;
        changes.push(change(language, &version, stage, "passed the gate: rollout started"));
        store.set_adapter_states(&changes)?;
        Ok(version)
    }

    /// Moves `language`'s version in stage `from` (shadow or canary) one stage on: shadow →
    /// canary, canary → active (the previous active one retired, still loaded).
    pub fn advance(&self, language: &str, from: Stage, reason: &str) -> Result<String, RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        let row = self.in_stage(&rows, language, from)?;
        let to = if from == Stage::Shadow { Stage::Canary } else { Stage::Active };
        self.point(language, to, Some(&row.version))?;
        self.point(language, from, None)?;
        let mut changes = vec![change(language, &row.version, to, reason)];
        if let Some(previous) = rows.iter().find(|r| r.state == Stage::Active).filter(|_| to == Stage::Active) {
            changes.push(change(language, &previous.version, Stage::Retired, &format!("replaced by {}", row.version)));
        }
        store.set_adapter_states(&changes)?;
        Ok(row.version.clone())
    }

    /// Ends the rollout of `language`'s version in stage `stage` (shadow or canary): rolled back.
    pub fn abort(&self, language: &str, stage: Stage, reason: &str) -> Result<String, RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        let row = self.in_stage(&rows, language, stage)?;
        self.point(language, stage, None)?;
        store.set_adapter_states(&[change(language, &row.version, Stage::RolledBack, reason)])?;
        Ok(row.version.clone())
    }

    /// What `marunochi adapters rollback` does: stops the rollout in progress (the canary, else the
    /// shadow); with none, takes the active adapter out ([`Registry::rollback`]).
    pub fn roll_back_newest(&self, language: &str, reason: &str) -> Result<RolledBack, RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        drop(store);
        for stage in [Stage::Canary, Stage::Shadow] {
            if rows.iter().any(|r| r.state == stage) {
                let version = self.abort(language, stage, reason)?;
                return Ok(RolledBack::Rollout { stage, version });
            }
        }
        Ok(RolledBack::Active { restored: self.rollback(language, reason)? })
    }

    /// Takes the active adapter of `language` out of service (rolled back, with `reason`) and
    /// restores the one it replaced, or the base model when there was none.
    pub fn rollback(&self, language: &str, reason: &str) -> Result<Option<String>, RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        let active = self.in_stage(&rows, language, Stage::Active)?;
        let previous = rows.iter().filter(|r| r.state == Stage::Retired).max_by(|a, b| a.updated_at.cmp(&b.updated_at));
        self.point(language, Stage::Active, previous.map(|p| p.version.as_str()))?;
        let mut changes = vec![change(language, &active.version, Stage::RolledBack, reason)];
        if let Some(previous) = previous {
            changes.push(change(
                language,
                &previous.version,
                Stage::Active,
                &format!("restored: {} rolled back", active.version),
            ));
        }
        store.set_adapter_states(&changes)?;
        Ok(previous.map(|p| p.version.clone()))
    }

    /// Deletes a version that is not active.
    pub fn remove(&self, language: &str, version: &str) -> Result<(), RegistryError> {
        let mut store = self.store()?;
        let rows = self.reconcile(&mut store, language)?;
        let no_such = || RegistryError::NoSuchVersion { language: language.to_owned(), version: version.to_owned() };
        let row = rows.iter().find(|r| r.version == version && r.state != Stage::Removed).ok_or_else(no_such)?;
        if row.state == Stage::Active {
            return Err(RegistryError::Refused {
                language: language.to_owned(),
                reason: format!("{version} is active; promote another version or roll back first"),
            });
        }
        let dir = self.adapters.join(language).join(version);
        std::fs::remove_dir_all(&dir).map_err(|source| RegistryError::Io { path: dir, source })?;
        store.set_adapter_states(&[change(language, version, Stage::Removed, "removed by the user")])?;
        Ok(())
    }

    /// Enters a PEFT adapter trained anywhere (TRL, Axolotl, a PEFT script) as a candidate of
    /// `language`: its settings are ones the engine can serve, and every tensor fits the base model
    /// at `model` (loaded here; its fingerprint is recorded, as training records it). The files are
    /// copied; the gate and the rollout then treat it like any trained version.
    pub fn import(&self, language: &str, source: &Path, model: &Path) -> Result<Imported, RegistryError> {
        let refused = |reason: String| RegistryError::Refused {
            language: language.to_owned(),
            reason: format!("{}: {reason}", source.display()),
        };
        let config_path = source.join("adapter_config.json");
        let weights_path = source.join("adapter_model.safetensors");
        let text = match std::fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(refused("no adapter_config.json: not a PEFT adapter directory".into()));
            }
            Err(e) => return Err(io_error(&config_path)(e)),
        };
        if !weights_path.is_file() {
            return Err(refused(if source.join("adapter_model.bin").is_file() {
                "the weights are a pickle (adapter_model.bin); marunochi reads only safetensors: save the adapter \
                 with `save_pretrained(dir, safe_serialization=True)`"
                    .into()
            } else {
                "no adapter_model.safetensors".into()
            }));
        }
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| refused(format!("adapter_config.json: {e}")))?;
        let (method, rank, target_modules) = check_peft_config(&config).map_err(refused)?;
        let engine = crate::engine::Engine::load(model, &crate::engine::LoadOptions::default())
            .map_err(|e| refused(format!("the base model {} could not be loaded: {e}", model.display())))?;
        engine.load_adapter("import", source).map_err(|e| refused(e.to_string()))?;
        let fingerprint = crate::train::fingerprint(model).map_err(io_error(model))?;
        if let Some(theirs) = metadata(source).base_fingerprint.filter(|f| *f != fingerprint) {
            return Err(refused(format!(
                "it was trained by marunochi on another base model (fingerprint {theirs}; {} is {fingerprint})",
                model.display()
            )));
        }
        let info = engine.info();
        let other_base_name = config["base_model_name_or_path"]
            .as_str()
            .filter(|name| !name.is_empty() && !info.name().contains(name.rsplit('/').next().unwrap_or(name)))
            .map(str::to_owned);

        let mut store = self.store()?;
        self.reconcile(&mut store, language)?;
        let dir = self.adapters.join(language);
        crate::home::create_private_dir(&dir).map_err(io_error(&dir))?;
        let number = crate::home::adapter_versions(&dir).last().map_or(1, |(n, _)| n + 1);
        let version = format!("v{number}");
        let staging = dir.join(format!(".import-{version}"));
        let _ = std::fs::remove_dir_all(&staging);
        crate::home::create_private_dir(&staging).map_err(io_error(&staging))?;
        for name in ["adapter_config.json", "adapter_model.safetensors"] {
            let bytes = std::fs::read(source.join(name)).map_err(io_error(&source.join(name)))?;
            crate::home::write_private(&staging.join(name), &bytes).map_err(io_error(&staging.join(name)))?;
        }
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339);
        let record = serde_json::json!({
            "language": language,
            "version": version,
            "created_at": now.unwrap_or_default(),
            "imported_from": source,
            "base_model": {
                "path": info.path,
                "name": info.name(),
                "family": info.family,
                "quantization": info.quantization,
                "fingerprint": fingerprint,
            },
            "training": { "method": method, "peft_base_model": config["base_model_name_or_path"] },
        });
        let record = serde_json::to_string_pretty(&record).expect("json");
        let path = staging.join("marunochi.json");
        crate::home::write_private(&path, record.as_bytes()).map_err(io_error(&path))?;
        let target = dir.join(&version);
        std::fs::rename(&staging, &target).map_err(io_error(&target))?;
        crate::home::sync_dir(&dir).map_err(io_error(&dir))?;
        let mut entered = change(language, &version, Stage::Candidate, &format!("imported from {}", source.display()));
        entered.base_fingerprint = Some(fingerprint);
        store.set_adapter_states(&[entered])?;
        Ok(Imported { version, method, rank, target_modules, other_base_name })
    }

    /// The history of `language`'s adapters.
    pub fn history(&self, language: &str) -> Result<Vec<AdapterEvent>, RegistryError> {
        Ok(Store::open(&self.db)?.adapter_events(language)?)
    }

    /// The version `promote` or `start_rollout` may put into service: the one named, else the
    /// newest candidate that passed the gate; refused when trained on another base model or —
    /// unless `force` — not passed through the gate.
    fn eligible(
        &self,
        language: &str,
        rows: &[AdapterVersion],
        version: Option<&str>,
        base_fingerprint: &str,
        force: bool,
    ) -> Result<String, RegistryError> {
        let refused = |reason: String| RegistryError::Refused { language: language.to_owned(), reason };
        let version = match version {
            Some(v) => v.to_owned(),
            None => rows
                .iter()
                .rev()
                .filter(|r| r.state == Stage::Candidate)
                .find(|r| metadata(&self.adapters.join(language).join(&r.version)).gate == Some(true))
                .map(|r| r.version.clone())
                .ok_or_else(|| refused("no candidate has passed the gate (`marunochi eval`)".into()))?,
        };
        let row = rows
            .iter()
            .find(|r| r.version == version && r.state != Stage::Removed)
            .ok_or_else(|| RegistryError::NoSuchVersion { language: language.to_owned(), version: version.clone() })?;
        if row.state == Stage::Active {
            return Err(refused(format!("{version} is already active")));
        }
        let trained_on = metadata(&self.adapters.join(language).join(&version)).base_fingerprint;
        if let Some(trained_on) = trained_on.as_ref().or(row.base_fingerprint.as_ref())
            && trained_on != base_fingerprint
        {
            return Err(refused(format!(
                "{version} was trained on another base model (fingerprint {trained_on}, the model now is {base_fingerprint})"
            )));
        }
        let gate = metadata(&self.adapters.join(language).join(&version)).gate;
        if gate != Some(true) && !force {
            let why = if gate.is_none() { "has not been through the gate" } else { "failed the gate" };
            return Err(refused(format!(
                "{version} {why}; run `marunochi eval --language {language}` or pass --force"
            )));
        }
        Ok(version)
    }

    fn in_stage<'r>(
        &self,
        rows: &'r [AdapterVersion],
        language: &str,
        stage: Stage,
    ) -> Result<&'r AdapterVersion, RegistryError> {
        rows.iter().find(|r| r.state == stage).ok_or_else(|| RegistryError::Refused {
            language: language.to_owned(),
            reason: if stage == Stage::Active {
                "no adapter is active; the base model is serving".into()
            } else {
                format!("no adapter is in {stage}")
            },
        })
    }

    /// The store, with the registry's lock held until it is dropped.
    fn store(&self) -> Result<Locked, RegistryError> {
        crate::home::create_private_dir(&self.adapters).map_err(io_error(&self.adapters))?;
        let path = self.adapters.join(".registry.lock");
        let lock = crate::home::lock(&path).map_err(io_error(&path))?;
        Ok(Locked { store: Store::open(&self.db)?, _lock: lock })
    }

    fn languages(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.adapters)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Brings the store in line with the directories and the links: new versions become
    /// candidates, vanished ones removed, a version a link names is in that stage (the higher
    /// link wins; a lower one naming the same version is removed), and a version in a stage no
    /// link names any more has left it (retired when another version is active, else rolled back).
    fn reconcile(&self, store: &mut Store, language: &str) -> Result<Vec<AdapterVersion>, RegistryError> {
        let dir = self.adapters.join(language);
        let rows = store.adapter_versions(Some(language))?;
        let on_disk = versions_on_disk(&dir);
        let links = Links::read(&dir);
        let mut linked: Vec<(Stage, String)> = Vec::new();
        for (stage, version) in Stage::SERVED.into_iter().zip([links.active, links.canary, links.shadow]) {
            let Some(version) = version else { continue };
            if linked.iter().any(|(_, v)| *v == version) {
                self.point(language, stage, None)?;
            } else {
                linked.push((stage, version));
            }
        }
        let stage_of = |version: &str| linked.iter().find(|(_, v)| v == version).map(|(stage, _)| *stage);
        let mut changes = Vec::new();
        for version in &on_disk {
            if !rows.iter().any(|r| &r.version == version) {
                let mut c = match stage_of(version) {
                    Some(stage) => change(language, version, stage, &format!("{stage} before the registry knew it")),
                    None => change(language, version, Stage::Candidate, "trained"),
                };
                c.base_fingerprint = metadata(&dir.join(version)).base_fingerprint;
                changes.push(c);
            }
        }
        // The version the active link names now, as the store last knew it: a retired one means the
        // interrupted change was a rollback (the one it replaced is rolled back, not retired).
        let now_active = linked.iter().find(|(stage, _)| *stage == Stage::Active).map(|(_, v)| v.as_str());
        let now_active_was = now_active.and_then(|v| rows.iter().find(|r| r.version == v)).map(|r| r.state);
        for row in &rows {
            if !on_disk.contains(&row.version) {
                if row.state != Stage::Removed {
                    changes.push(change(language, &row.version, Stage::Removed, "its directory is gone"));
                }
                continue;
            }
            match stage_of(&row.version) {
                Some(stage) if row.state != stage => changes.push(change(
                    language,
                    &row.version,
                    stage,
                    &format!("the {stage} link names it (an interrupted change completed)"),
                )),
                None if row.state.is_served() => {
                    let replaced =
                        row.state == Stage::Active && now_active.is_some() && now_active_was != Some(Stage::Retired);
                    let to = if replaced { Stage::Retired } else { Stage::RolledBack };
                    changes.push(change(
                        language,
                        &row.version,
                        to,
                        &format!("the {} link no longer names it (an interrupted change completed)", row.state),
                    ));
                }
                _ => {}
            }
        }
        if !changes.is_empty() {
            store.set_adapter_states(&changes)?;
        }
        Ok(store.adapter_versions(Some(language))?)
    }

    /// Removes the shadow or canary link naming `version` (it is being promoted past them).
    fn unlink_stage_of(&self, rows: &[AdapterVersion], language: &str, version: &str) -> Result<(), RegistryError> {
        match rows.iter().find(|r| r.version == version).map(|r| r.state) {
            Some(stage @ (Stage::Shadow | Stage::Canary)) => self.point(language, stage, None),
            _ => Ok(()),
        }
    }

    /// Points `adapters/<language>/<stage>` at `version` (or removes it: for `active`, the base
    /// model serves), atomically: a new link is renamed over the old one.
    fn point(&self, language: &str, stage: Stage, version: Option<&str>) -> Result<(), RegistryError> {
        let dir = self.adapters.join(language);
        let link = dir.join(stage.as_str());
        match version {
            Some(version) => {
                let tmp = dir.join(format!(".{stage}.tmp"));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(version, &tmp).map_err(io_error(&tmp))?;
                std::fs::rename(&tmp, &link).map_err(io_error(&link))
            }
            None => match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&link)(e)),
                _ => Ok(()),
            },
        }
    }
}

/// What [`Registry::import`] entered.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub version: String,
    /// lora or dora.
    pub method: String,
    pub rank: usize,
    pub target_modules: Vec<String>,
    /// The base model the adapter names (`base_model_name_or_path`), when it differs from the
    /// name of the one it was checked against: shapes decide, the name is only reported.
    pub other_base_name: Option<String>,
}

/// The PEFT settings an adapter trained elsewhere may have: what the engine cannot apply is
/// refused by name before any tensor is read.
fn check_peft_config(config: &serde_json::Value) -> Result<(String, usize, Vec<String>), String> {
    if let Some(kind) = config["peft_type"].as_str().filter(|k| *k != "LORA") {
        return Err(format!("peft_type is {kind}; only LoRA (and DoRA) adapters can be imported"));
    }
    let rank = config["r"].as_u64().filter(|r| *r > 0).ok_or("`r` (the rank) is missing or 0")? as usize;
    let set = |key: &str| match &config[key] {
        serde_json::Value::Null => false,
        serde_json::Value::Array(items) => !items.is_empty(),
        serde_json::Value::Object(items) => !items.is_empty(),
        serde_json::Value::Bool(on) => *on,
        _ => true,
    };
    for (key, why) in [
        ("modules_to_save", "it trains whole modules besides the low-rank updates"),
        ("rank_pattern", "it gives some modules another rank"),
        ("alpha_pattern", "it gives some modules another alpha"),
        ("lora_bias", "it adds a bias to the updates"),
        ("layer_replication", "it stacks copies of the base model's layers"),
    ] {
        if set(key) {
            return Err(format!("`{key}` is set: {why}, which marunochi cannot serve"));
        }
    }
    if config["fan_in_fan_out"].as_bool() == Some(true) {
        return Err("`fan_in_fan_out` is true (GPT-2-style Conv1D weights); this base model has Linear layers".into());
    }
    let ours: Vec<&str> = crate::engine::lora::Projection::ALL.iter().map(|p| p.module()).collect();
    let targets: Vec<String> = match &config["target_modules"] {
        serde_json::Value::String(all) if all == "all-linear" => ours.iter().map(|m| m.to_string()).collect(),
        serde_json::Value::String(one) => vec![one.clone()],
        serde_json::Value::Array(items) => items.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect(),
        _ => return Err("`target_modules` is missing".into()),
    };
    if let Some(other) = targets.iter().find(|m| !ours.contains(&m.as_str())) {
        return Err(format!(
            "target module {other:?} is not one of the projections marunochi adapts ({})",
            ours.join(", ")
        ));
    }
    let method = if config["use_dora"].as_bool() == Some(true) { "dora" } else { "lora" };
    Ok((method.to_owned(), rank, targets))
}

/// The store while this process holds the registry: links and states change together under the
/// lock, so a reconcile in another process (a `list` while the daemon rolls a version back) never
/// takes a change half done for an interrupted one and completes it under another reason.
struct Locked {
    store: Store,
    _lock: std::fs::File,
}

impl std::ops::Deref for Locked {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

/// `RegistryError::Io` for `path`, to hand to `map_err`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
    let path = path.to_owned();
    move |source| RegistryError::Io { path, source }
}

fn change(language: &str, version: &str, state: Stage, reason: &str) -> AdapterChange {
    AdapterChange {
        language: language.to_owned(),
        version: version.to_owned(),
        state,
        base_fingerprint: None,
        reason: reason.to_owned(),
    }
}

/// The complete versions (with their weights) under `dir`, oldest first.
fn versions_on_disk(dir: &Path) -> Vec<String> {
    let versions = crate::home::adapter_versions(dir).into_iter().map(|(_, name)| name);
    versions.filter(|name| dir.join(name).join("adapter_model.safetensors").is_file()).collect()
}

#[derive(Default)]
struct Metadata {
    method: Option<String>,
    base_fingerprint: Option<String>,
    gate: Option<bool>,
    gate_verdict: Option<String>,
}

/// What training (`marunochi.json`) and the gate (`eval.json`) recorded in a version's directory.
fn metadata(dir: &Path) -> Metadata {
    let read = |name: &str| -> serde_json::Value {
        std::fs::read_to_string(dir.join(name)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    };
    let (trained, judged) = (read("marunochi.json"), read("eval.json"));
    Metadata {
        method: trained["training"]["method"].as_str().map(str::to_owned),
        base_fingerprint: trained["base_model"]["fingerprint"].as_str().map(str::to_owned),
        gate: judged["passed"].as_bool(),
        gate_verdict: judged["heldout"]["verdict"].as_str().map(str::to_owned),
    }
}
