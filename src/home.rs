//! `MARUNOCHI_HOME`: where everything marunochi keeps lives. Private to the user: directories are
//! created 0700 and files 0600, because they hold the user's code.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const HOME_ENV: &str = "MARUNOCHI_HOME";

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    runtime: PathBuf,
}

impl Home {
    /// `MARUNOCHI_HOME`, else the platform data directory (`~/.local/share/marunochi` on Linux).
    pub fn resolve() -> io::Result<Home> {
        if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
            // A home of its own (tests, a second profile) gets a daemon of its own.
            return Ok(Home::at(dir));
        }
        let dirs = directories::ProjectDirs::from("", "", "marunochi").ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no home directory found; set {HOME_ENV}"))
        })?;
        let root = dirs.data_dir().to_owned();
        let runtime = dirs.runtime_dir().map_or_else(|| root.join("run"), Path::to_owned);
        Ok(Home { root, runtime })
    }

    /// A home at `root`, its runtime files under `root/run`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        let root = root.into();
        Home { runtime: root.join("run"), root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The adapter registry: `adapters/<language>/...`, with `active` the one in use.
    pub fn adapters_dir(&self) -> PathBuf {
        self.root.join("adapters")
    }

    /// The interaction store (SQLite).
    /// Where `marunochi curate` writes training sets by default.
    pub fn datasets_dir(&self) -> PathBuf {
        self.root.join("datasets")
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("marunochi.db")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Where the daemon's socket and lock live: `$XDG_RUNTIME_DIR/marunochi`, else `run/` in the home.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime
    }

    /// Creates the root and `logs/` (0700) if needed.
    pub fn ensure(&self) -> io::Result<()> {
        create_private_dir(&self.root)?;
        create_private_dir(&self.logs_dir())
    }
}

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for appending, creating it with mode 0600.
pub fn open_private_append(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Writes `bytes` to `path` (created or truncated, mode 0600) and flushes it to disk.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = create_private(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with `bytes` (0600) so that a crash leaves the old file or the new one, never a
/// half-written one: written beside it, flushed, renamed over it.
pub fn replace_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    write_private(&temporary, bytes)?;
    fs::rename(&temporary, path)?;
    path.parent().map_or(Ok(()), sync_dir)
}

/// A file opened for writing, empty and private (0600) — also when it existed with wider
/// permissions (`mode` applies only to files it creates).
pub fn create_private(path: &Path) -> io::Result<fs::File> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// A directory's entries (files created, renamed or removed in it) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The adapter versions in one language's directory (`adapters/<language>/v<N>`), as
/// `(N, "v<N>")`, oldest first.
pub fn adapter_versions(language_dir: &Path) -> Vec<(u64, String)> {
    let mut versions: Vec<(u64, String)> = fs::read_dir(language_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            Some((name.strip_prefix('v')?.parse().ok()?, name))
        })
        .collect();
    versions.sort();
    versions
}

/// Whether group or others can read or enter `path`.
pub fn is_shared(path: &Path) -> io::Result<bool> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o077 != 0)
}

/// An exclusive lock on `path` (created 0600), waited for and held until the returned file is
/// dropped.
pub fn lock(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)?;
    file.lock()?;
    Ok(file)
}

/// An exclusive `flock` on `path` (created 0600, our pid written in it), held until the returned
/// file is dropped; `None` while another process holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<fs::File>> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as the file stays open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(error) };
    }
    file.set_len(0)?;
    writeln!(&file, "{}", std::process::id())?;
    Ok(Some(file))
}

/// A language's name as it names directories (`adapters/<language>/`, `train/<language>/`): 1–64
/// ASCII letters, digits, `-`, `_` or `+`, not starting with `-`. Every LSP language id
/// (`python`, `typescriptreact`, `objective-c`) is one; nothing that could leave its directory is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);

impl Language {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(name: &str) -> Result<Language, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+');
        if (1..=64).contains(&name.len()) && name.chars().all(allowed) && !name.starts_with('-') {
            Ok(Language(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a language name: 1-64 letters, digits, '-', '_' or '+' (like python, rust, \
                 typescriptreact)"
            ))
        }
    }
}

impl TryFrom<String> for Language {
    type Error = String;
    fn try_from(name: String) -> Result<Language, String> {
        name.parse()
    }
}

impl From<Language> for String {
    fn from(language: Language) -> String {
        language.0
    }
}

impl std::ops::Deref for Language {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for Language {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_names_are_directory_names_and_nothing_more() {
        for good in ["python", "rust", "typescriptreact", "objective-c", "c++", "git_commit", "Go"] {
            assert_eq!(good.parse::<Language>().unwrap().as_str(), good);
        }
        for bad in ["", "..", "../etc", "a/b", "a\\b", ".hidden", "-rf", "py thon", "é", &"x".repeat(65)] {
            let error = bad.parse::<Language>().unwrap_err();
            assert!(error.contains("is not a language name"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn created_dirs_and_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("a/b"));
        home.ensure().unwrap();
        assert!(!is_shared(home.root()).unwrap());
        assert!(!is_shared(&home.logs_dir()).unwrap());
        let file = home.logs_dir().join("x.log");
        open_private_append(&file).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
