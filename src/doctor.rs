//! `marunochi doctor`: what is found, what is missing, and how to fix it.

use std::path::{Path, PathBuf};

use crate::config::Config;
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
