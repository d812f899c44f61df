//! When training runs (seed §1.4; ARCHITECTURE.md, `src/jobs/`). Entry points: [`status`] (what
//! is due and whether the machine is ready), [`tick`] (train the most urgent due language if it
//! is) and [`run`] (one training run as a low-priority child process).
//!
//! A language is due, most urgent first: when an interrupted run is waiting (it resumes); after an
//! *emergency* drift event (acceptance under 50%) or another drift event (acceptance or quality
//! down, errors up, a new language) newer than its last adapter, given a few examples; weekly once
//! it has `min_examples` examples of training quality. Training starts only inside the night
//! window, while the machine is idle (load average per core) and not on battery where that can be
//! told; the child process runs at nice 19 and stops itself at the window's end
//! (`train --until`), saving a checkpoint the next night resumes from.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{Config, ScheduleConfig, Window};
use crate::home::{Home, Language};
use crate::store::{CurationRow, DriftEvent, Store, StoreError};

/// Why a language is due, most urgent first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    Resume { step: usize, total: usize },
    Emergency { week: String, acceptance: Option<f64> },
    Drift { week: String, kind: String },
    Weekly { examples: usize },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Resume { step, total } => write!(f, "an interrupted run resumes (update {step} of {total})"),
            Trigger::Emergency { week, acceptance } => match acceptance {
                Some(a) => write!(f, "emergency: acceptance {:.0}% in {week}", a * 100.0),
                None => write!(f, "emergency in {week}"),
            },
            Trigger::Drift { week, kind } => write!(f, "drift ({}) in {week}", kind.replace('_', " ")),
            Trigger::Weekly { examples } => write!(f, "weekly retraining ({examples} good examples)"),
        }
    }
}

/// What the schedule knows about one language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguageFacts {
    pub language: String,
    /// Accepted or corrected suggestions of training quality.
    pub examples: usize,
    /// The newest adapter: version and when it was made (ms since the epoch).
    pub last_adapter: Option<(String, i64)>,
    pub drift: Vec<DriftEvent>,
    /// An interrupted run: (update, of).
    pub interrupted: Option<(usize, usize)>,
    /// The last scheduled run that failed: when (ms since the epoch) and why.
    pub failed: Option<(i64, String)>,
}

/// After a failed run a language waits this long (the next night), so one that keeps failing
/// neither retries every few minutes nor keeps the others from their turn.
const FAILURE_BACKOFF_MS: i64 = 12 * 3_600_000;

/// Whether `facts` call for training at `now_ms`, or why not.
pub fn decide(facts: &LanguageFacts, now_ms: i64, config: &ScheduleConfig) -> Result<Trigger, String> {
    if let Some((at, why)) = &facts.failed
        && now_ms - at < FAILURE_BACKOFF_MS
    {
        let hours = ((FAILURE_BACKOFF_MS - (now_ms - at)) as u64).div_ceil(3_600_000);
        return Err(format!("the last run failed ({why}); tried again in {hours} h"));
    }
    if let Some((step, total)) = facts.interrupted {
        return Ok(Trigger::Resume { step, total });
    }
    let trained_week = facts.last_adapter.as_ref().map(|(_, ms)| crate::clock::iso_week(*ms));
    // A rollback is the rollout answering a bad adapter; retraining on the same data would not.
    let newer = |e: &DriftEvent| trained_week.as_ref().is_none_or(|w| &e.week > w) && !e.kind.starts_with("rollback");
    let enough_for_drift = facts.examples >= config.min_drift_examples;
    if let Some(e) = facts.drift.iter().find(|e| newer(e) && e.kind == "emergency")
        && enough_for_drift
    {
        return Ok(Trigger::Emergency { week: e.week.clone(), acceptance: e.value });
    }
    if let Some(e) = facts.drift.iter().find(|e| newer(e))
        && enough_for_drift
    {
        return Ok(Trigger::Drift { week: e.week.clone(), kind: e.kind.clone() });
    }
    if facts.examples < config.min_examples {
        return Err(format!("{} of {} good examples for weekly retraining", facts.examples, config.min_examples));
    }
    let age_days = facts.last_adapter.as_ref().map(|(_, ms)| (now_ms - ms) as f64 / 86_400_000.0);
    match age_days {
        Some(days) if days < config.retrain_days as f64 => {
            Err(format!("retrained {days:.1} days ago (every {} days)", config.retrain_days))
        }
        _ => Ok(Trigger::Weekly { examples: facts.examples }),
    }
}

/// Whether the machine may train now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    pub window: Window,
    /// Local time, minutes since midnight.
    pub minute: u16,
    pub in_window: bool,
    /// 1-minute load average per core, where /proc tells.
    pub load_per_core: Option<f64>,
    pub idle: bool,
    /// `None` where power cannot be told (a desktop without power-supply entries counts as AC).
    pub on_ac: Option<bool>,
}

impl Machine {
    pub fn ready(&self) -> Result<(), String> {
        if !self.in_window {
            return Err(format!("outside the training window {}", self.window));
        }
        if !self.idle {
            return Err(format!("busy (load {:.2} per core)", self.load_per_core.unwrap_or(f64::NAN)));
        }
        if self.on_ac == Some(false) {
            return Err("on battery".into());
        }
        Ok(())
    }
}

/// The local time of day, minutes since midnight (libc's view of the time zone).
pub fn local_minute(now: SystemTime) -> u16 {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as libc::time_t;
    // SAFETY: localtime_r only writes the struct we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    (tm.tm_hour * 60 + tm.tm_min) as u16
}

/// AC or battery from `/sys/class/power_supply` (under `root`): on AC when a mains supply is
/// online, or when no battery is discharging; `None` with no supplies listed.
pub fn on_ac_power(root: &Path) -> Option<bool> {
    let dir = root.join("sys/class/power_supply");
    let mut mains_online = None;
    let mut discharging = false;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).map(|s| s.trim().to_owned());
        match read("type").as_deref() {
            Ok("Mains") | Ok("USB") => {
                let online = read("online").is_ok_and(|s| s == "1");
                mains_online = Some(mains_online.unwrap_or(false) || online);
            }
            Ok("Battery") => discharging |= read("status").is_ok_and(|s| s == "Discharging"),
            _ => {}
        }
    }
    match (mains_online, discharging) {
        (Some(online), _) => Some(online),
        (None, true) => Some(false),
        (None, false) => None,
    }
}

fn load_per_core() -> Option<f64> {
    let load: f64 = std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()?;
    Some(load / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
}

pub fn machine(config: &ScheduleConfig, now: SystemTime) -> Result<Machine, String> {
    let window: Window = config.window.parse()?;
    let minute = local_minute(now);
    let load = load_per_core();
    Ok(Machine {
        window,
        minute,
        in_window: window.contains(minute),
        idle: load.is_none_or(|l| l < config.max_load_per_core),
        load_per_core: load,
        on_ac: on_ac_power(Path::new("/")),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub enabled: bool,
    pub machine: Machine,
    pub languages: Vec<LanguageStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LanguageStatus {
    #[serde(flatten)]
    pub facts: LanguageFacts,
    pub due: Option<Trigger>,
    /// Why it is not due.
    pub waiting: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("config.toml [schedule]: {0}")]
    Config(String),
    #[error("cannot start `marunochi train`: {0}")]
    Spawn(std::io::Error),
}

/// What is due, per language with recorded interactions, and whether the machine is ready.
pub fn status(home: &Home, config: &Config, now: SystemTime) -> Result<Status, ScheduleError> {
    let machine = machine(&config.schedule, now).map_err(ScheduleError::Config)?;
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let mut languages = Vec::new();
    let db = home.db_path();
    if db.exists() {
        let store = Store::open(&db)?;
        let rows = store.curation_rows()?;
        let mined = store.git_functions()?;
        let drift = store.drift_events()?;
        // Only languages that can name their `train/` and `adapters/` directories.
        let mut names: Vec<String> = rows
            .iter()
            .map(|r| r.language.clone())
            .chain(mined.iter().map(|f| f.language.clone()))
            .filter(|l| l.parse::<Language>().is_ok())
            .collect();
        names.sort();
        names.dedup();
        for language in names {
            let admitted = |r: &&CurationRow| {
                crate::quality::admit(&r.inputs, config.curate.min_quality, config.curate.seed_score_only).is_some()
            };
            let examples = rows.iter().filter(|r| r.language == language).filter(admitted).count()
                + mined.iter().filter(|f| f.language == language).count();
            let facts = LanguageFacts {
                examples,
                last_adapter: last_adapter(&home.adapters_dir().join(&language)),
                drift: drift.iter().filter(|e| e.language == language).cloned().collect(),
                interrupted: crate::train::interrupted(&home.root().join("train").join(&language)),
                failed: last_failure(&home.root().join("train").join(&language)),
                language,
            };
            let decision = decide(&facts, now_ms, &config.schedule);
            let (due, waiting) = match decision {
                Ok(trigger) => (Some(trigger), None),
                Err(why) => (None, Some(why)),
            };
            languages.push(LanguageStatus { facts, due, waiting });
        }
    }
    languages.sort_by_key(|l| (l.due.as_ref().map_or(4, urgency), l.facts.language.clone()));
    Ok(Status { enabled: config.schedule.enabled, machine, languages })
}

fn urgency(trigger: &Trigger) -> u8 {
    match trigger {
        Trigger::Resume { .. } => 0,
        Trigger::Emergency { .. } => 1,
        Trigger::Drift { .. } => 2,
        Trigger::Weekly { .. } => 3,
    }
}

/// The newest `v<N>` under `dir` whose metadata says when it was made, and that time.
fn last_adapter(dir: &Path) -> Option<(String, i64)> {
    crate::home::adapter_versions(dir).into_iter().rev().find_map(|(_, name)| {
        let text = std::fs::read_to_string(dir.join(&name).join("marunochi.json")).ok()?;
        let metadata: serde_json::Value = serde_json::from_str(&text).ok()?;
        let at = metadata.get("created_at")?.as_str()?;
        let created = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
        Some((name, (created.unix_timestamp_nanos() / 1_000_000) as i64))
    })
}

/// How a training child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Finished,
    /// Stopped at the deadline (or a signal) with a checkpoint: the next window resumes it.
    Paused,
    Failed(ExitStatus),
}

/// Runs `marunochi train` for `language` as a child at nice 19 (resuming an interrupted run),
/// stopping itself at `until`. Its output goes where ours does.
pub fn run(exe: &Path, home: &Home, language: &str, until: Option<SystemTime>) -> Result<RunOutcome, ScheduleError> {
    let work = home.root().join("train").join(language);
    let resuming = crate::train::interrupted(&work).is_some();
    let mut command = Command::new(exe);
    command.env("MARUNOCHI_HOME", home.root()).args(["train", "--language", language]);
    if resuming {
        command.arg("--resume");
    }
    if let Some(until) = until {
        let at = time::OffsetDateTime::from(until);
        command.args(["--until", &at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()]);
    }
    // SAFETY: setpriority is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
    tracing::info!(language, "training starts");
    let status = command.status().map_err(ScheduleError::Spawn)?;
    Ok(match status.code() {
        Some(0) => {
            let _ = std::fs::remove_file(work.join(FAILED));
            gate_and_promote(exe, home, language);
            RunOutcome::Finished
        }
        Some(130) => RunOutcome::Paused,
        _ => {
            record_failure(&work, resuming, &status);
            RunOutcome::Failed(status)
        }
    })
}

/// Where a language's last failed run is recorded (`train/<language>/`).
const FAILED: &str = "failed.json";

/// Records a failed run, so the language backs off. A checkpoint it could not resume from (the
/// model changed, the data is gone) is moved aside, kept for a look, so the next run starts afresh
/// instead of failing the same way every night.
fn record_failure(work: &Path, resumed: bool, status: &ExitStatus) {
    let now = crate::clock::now_ms();
    let mut why = format!("marunochi train {status}");
    if resumed {
        let aside = work.join(format!("checkpoint.failed-{now}"));
        match std::fs::rename(work.join("checkpoint"), &aside) {
            Ok(()) => {
                why.push_str(&format!("; its checkpoint could not be resumed and is kept in {}", aside.display()))
            }
            Err(error) => tracing::warn!(%error, "the checkpoint of a failed resume could not be moved aside"),
        }
    }
    tracing::warn!(work = %work.display(), why, "scheduled training failed");
    let record = serde_json::json!({ "at_ms": now, "why": why });
    if let Err(error) = crate::home::write_private(&work.join(FAILED), record.to_string().as_bytes()) {
        tracing::warn!(%error, "a failed run could not be recorded");
    }
}

/// The last failed run recorded under `work`: when and why.
fn last_failure(work: &Path) -> Option<(i64, String)> {
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.join(FAILED)).ok()?).ok()?;
    Some((record["at_ms"].as_i64()?, record["why"].as_str()?.to_owned()))
}

/// After a finished run: the gate (`marunochi eval`, also nice'd through inheritance), and the
/// rollout of the new version if it passes (shadow, then canary, then active, moved on by the
/// daemon's rollout checks; `deploy::rollout`).
fn gate_and_promote(exe: &Path, home: &Home, language: &str) {
    let mut command = Command::new(exe);
    command.env("MARUNOCHI_HOME", home.root()).args(["eval", "--language", language]);
    if full_gate_due(&home.adapters_dir().join(language), SystemTime::now()) {
        command.arg("--full");
    }
    let status = command.status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => {
            let registry = crate::deploy::Registry::new(&home.adapters_dir(), &home.db_path());
            let config = crate::config::Config::load(&home.config_file()).unwrap_or_default();
            let skip_shadow = config.rollout.shadow_share == 0.0;
            let started = crate::engine::discovery::resolve_model(None, config.engine.model.as_deref())
                .and_then(|m| crate::train::fingerprint(&m).map_err(|e| e.to_string()))
                .and_then(|f| registry.start_rollout(language, None, &f, skip_shadow).map_err(|e| e.to_string()));
            match started {
                Ok(version) => tracing::info!(language, version, "the new adapter passed the gate; rollout started"),
                Err(error) => {
                    tracing::warn!(language, %error, "the new adapter passed the gate but its rollout did not start")
                }
            }
        }
        Ok(Some(3)) => tracing::info!(language, "the new adapter did not pass the gate; it stays a candidate"),
        other => tracing::warn!(language, ?other, "the gate could not run"),
    }
}

/// All of HumanEval.
const HUMANEVAL_PROBLEMS: u64 = 164;

/// The gate checks forgetting on a fixed subset of HumanEval after each run, and on all of it
/// once a week: when no gate of the last 7 days (an `eval.json` under `language_dir`) ran the
/// full set.
fn full_gate_due(language_dir: &Path, now: SystemTime) -> bool {
    let week = Duration::from_secs(7 * 86_400);
    !crate::home::adapter_versions(language_dir).into_iter().any(|(_, name)| {
        let path = language_dir.join(name).join("eval.json");
        let recent = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|at| now.duration_since(at).unwrap_or_default() < week);
        let full = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|report| report["forgetting"]["problems"].as_u64())
            .is_some_and(|problems| problems >= HUMANEVAL_PROBLEMS);
        recent && full
    })
}

/// What [`tick`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    Disabled,
    NotReady(String),
    NothingDue,
    Trained { language: String, trigger: Trigger, outcome: RunOutcome },
}

/// If the schedule is enabled, the machine ready and a language due: trains the most urgent one
/// until the window ends.
pub fn tick(exe: &Path, home: &Home, config: &Config) -> Result<Tick, ScheduleError> {
    let now = SystemTime::now();
    let status = status(home, config, now)?;
    if !status.enabled {
        return Ok(Tick::Disabled);
    }
    if let Err(why) = status.machine.ready() {
        return Ok(Tick::NotReady(why));
    }
    let Some(first) = status.languages.into_iter().find(|l| l.due.is_some()) else { return Ok(Tick::NothingDue) };
    let until = now + Duration::from_secs(u64::from(status.machine.window.minutes_left(status.machine.minute)) * 60);
    let outcome = run(exe, home, &first.facts.language, Some(until))?;
    let trigger = first.due.expect("found by it");
    Ok(Tick::Trained { language: first.facts.language, trigger, outcome })
}

/// The binary to start training children with.
pub fn current_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("marunochi"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ScheduleConfig {
        ScheduleConfig { min_examples: 500, min_drift_examples: 20, retrain_days: 7, ..ScheduleConfig::default() }
    }

    fn facts(examples: usize) -> LanguageFacts {
        LanguageFacts {
            language: "python".into(),
            examples,
            last_adapter: None,
            drift: Vec::new(),
            interrupted: None,
            failed: None,
        }
    }

    fn event(week: &str, kind: &str) -> DriftEvent {
        DriftEvent { week: week.into(), language: "python".into(), kind: kind.into(), value: Some(0.4), baseline: None }
    }

    /// 2026-11-25T12:00Z, a Wednesday of ISO week 48.
    const NOW: i64 = 1_795_608_000_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn windows_parse_and_may_cross_midnight() {
        let night: Window = "22:30-05:00".parse().unwrap();
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(4 * 60 + 59));
        assert!(!night.contains(5 * 60) && !night.contains(12 * 60));
        assert_eq!(night.minutes_left(23 * 60), 6 * 60);
        let early: Window = "01:00-06:00".parse().unwrap();
        assert!(early.contains(60) && !early.contains(6 * 60) && !early.contains(0));
        assert_eq!(early.to_string(), "01:00-06:00");
        for bad in ["1-6", "25:00-06:00", "01:00", "01:00-01:00", "01:60-02:00"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_full_humaneval_set_runs_once_a_week() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        assert!(full_gate_due(dir.path(), now), "never ran: due");
        let gate = |version: &str, problems: u64| {
            std::fs::create_dir_all(dir.path().join(version)).unwrap();
            let report = serde_json::json!({"forgetting": {"problems": problems}});
            std::fs::write(dir.path().join(version).join("eval.json"), report.to_string()).unwrap();
        };
        gate("v1", 20);
        assert!(full_gate_due(dir.path(), now), "only the subset ran");
        gate("v2", 164);
        assert!(!full_gate_due(dir.path(), now));
        assert!(full_gate_due(dir.path(), now + Duration::from_secs(8 * 86_400)), "a week later: due again");
    }

    #[test]
    fn weekly_needs_enough_examples_and_a_week_since_the_last_adapter() {
        assert_eq!(decide(&facts(499), NOW, &config()), Err("499 of 500 good examples for weekly retraining".into()));
        assert_eq!(decide(&facts(500), NOW, &config()), Ok(Trigger::Weekly { examples: 500 }));
        let recent = LanguageFacts { last_adapter: Some(("v3".into(), NOW - 2 * DAY)), ..facts(800) };
        assert_eq!(decide(&recent, NOW, &config()), Err("retrained 2.0 days ago (every 7 days)".into()));
        let old = LanguageFacts { last_adapter: Some(("v3".into(), NOW - 8 * DAY)), ..facts(800) };
        assert_eq!(decide(&old, NOW, &config()), Ok(Trigger::Weekly { examples: 800 }));
    }

    #[test]
    fn drift_after_the_last_adapter_retrains_at_once_and_emergencies_come_first() {
        let trained_last_week = Some(("v2".into(), NOW - 7 * DAY));
        let drifted = LanguageFacts {
            last_adapter: trained_last_week.clone(),
            drift: vec![event("2026-W47", "acceptance_drop"), event("2026-W48", "error_rise")],
            ..facts(30)
        };
        assert_eq!(
            decide(&drifted, NOW, &config()),
            Ok(Trigger::Drift { week: "2026-W48".into(), kind: "error_rise".into() })
        );
        let mut emergency = drifted.clone();
        emergency.drift.push(event("2026-W48", "emergency"));
        assert_eq!(
            decide(&emergency, NOW, &config()),
            Ok(Trigger::Emergency { week: "2026-W48".into(), acceptance: Some(0.4) })
        );
        // Events from before the last adapter are answered already; too little data waits.
        let answered = LanguageFacts { drift: vec![event("2026-W47", "emergency")], ..drifted.clone() };
        assert!(decide(&answered, NOW, &config()).is_err());
        assert!(decide(&LanguageFacts { examples: 5, ..drifted }, NOW, &config()).is_err());
        let failed = LanguageFacts { failed: Some((NOW - 2 * 3_600_000, "exit status: 1".into())), ..facts(800) };
        let why =
            decide(&LanguageFacts { interrupted: Some((40, 100)), ..failed.clone() }, NOW, &config()).unwrap_err();
        assert!(why.contains("the last run failed (exit status: 1); tried again in 10 h"), "{why}");
        assert!(decide(&failed, NOW + 10 * 3_600_000, &config()).is_ok(), "the next night it is due again");
        let resume = LanguageFacts { interrupted: Some((40, 100)), ..facts(0) };
        assert_eq!(decide(&resume, NOW, &config()), Ok(Trigger::Resume { step: 40, total: 100 }));
    }

    #[test]
    fn power_comes_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let supply = |name: &str, files: &[(&str, &str)]| {
            let dir = root.path().join("sys/class/power_supply").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for (file, text) in files {
                std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
            }
        };
        assert_eq!(on_ac_power(root.path()), None, "nothing listed");
        supply("BAT0", &[("type", "Battery"), ("status", "Discharging")]);
        assert_eq!(on_ac_power(root.path()), Some(false));
        supply("AC", &[("type", "Mains"), ("online", "0")]);
        assert_eq!(on_ac_power(root.path()), Some(false));
        supply("AC", &[("type", "Mains"), ("online", "1")]);
        assert_eq!(on_ac_power(root.path()), Some(true));
    }
}
