//! The `git_functions` table: functions the user wrote, mined from their own repositories.

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{NOW, Store, StoreError, classify};
use crate::redact::redact;

/// One version of one function as a commit of the user's left it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GitFunction {
    pub repository: String,
    pub commit: String,
    /// RFC 3339.
    pub authored_at: String,
    pub language: String,
    /// `file://` URI.
    pub file_path: String,
    /// Dotted, outermost first.
    pub name: String,
    pub prefix: String,
    pub suffix: String,
    pub body: String,
    /// The body this commit replaced, when the signature stayed the same.
    pub previous_body: Option<String>,
}

impl GitFunction {
    /// The row's key: the same function version mined twice is one row.
    pub fn id(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.repository, &self.commit, &self.file_path, &self.name] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        format!("{:x}", hasher.finalize())[..32].to_owned()
    }
}

impl Store {
    /// Adds mined functions (redacted with their file's rules) in one transaction; those already
    /// there are left as they are. Returns how many were new.
    pub fn add_git_functions(&mut self, functions: &[GitFunction]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        let mut added = 0;
        {
            let mut insert = tx
                .prepare(&format!(
                    "INSERT OR IGNORE INTO git_functions (id, repository, commit_hash, authored_at, language, file_path,
                        name, prefix, suffix, body, previous_body, mined_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, {NOW})"
                ))
                .map_err(failed)?;
            for f in functions {
                let clean = |text: &str| redact(text, &f.file_path);
                added += insert
                    .execute(params![
                        f.id(),
                        f.repository,
                        f.commit,
                        f.authored_at,
                        f.language,
                        f.file_path,
                        f.name,
                        clean(&f.prefix),
                        clean(&f.suffix),
                        clean(&f.body),
                        f.previous_body.as_deref().map(clean),
                    ])
                    .map_err(failed)?;
            }
        }
        tx.commit().map_err(failed)?;
        Ok(added)
    }

    /// Every mined function, oldest first (in the order mined within a commit).
    pub fn git_functions(&self) -> Result<Vec<GitFunction>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT repository, commit_hash, authored_at, language, file_path, name, prefix, suffix, body,
                        previous_body
                 FROM git_functions ORDER BY authored_at, rowid",
            )
            .map_err(failed)?;
        statement
            .query_map([], |row| {
                Ok(GitFunction {
                    repository: row.get(0)?,
                    commit: row.get(1)?,
                    authored_at: row.get(2)?,
                    language: row.get(3)?,
                    file_path: row.get(4)?,
                    name: row.get(5)?,
                    prefix: row.get(6)?,
                    suffix: row.get(7)?,
                    body: row.get(8)?,
                    previous_body: row.get(9)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(failed)
    }
}
