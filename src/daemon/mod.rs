//! The daemon: one process per user that holds the model for every editor window (DESIGN.md §2).
//! Entry points: [`run`] (the `marunochi daemon` process) and [`Client`] (what proxies use).

mod client;
pub mod protocol;
mod router;
mod server;

use std::path::{Path, PathBuf};

pub use client::{Client, ClientError, Daemon, PendingCompletion};
pub use server::{DaemonError, DaemonOptions, Outcome, run, socket_path};

use crate::engine::discovery::{self, Roots};

/// The model a daemon serves: the one named (flag), else `[engine] model`, else the best model
/// discovery finds on this machine.
pub fn resolve_model(named: Option<&Path>, configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = named.or(configured) {
        return Ok(path.to_owned());
    }
    let found = discovery::discover(&Roots::from_env());
    discovery::default_model(&found).map(|f| f.path.clone()).ok_or_else(|| {
        "no model configured and none found on this machine: set `model` under [engine] in config.toml, \
         or pass --model (`marunochi models` shows what was looked for)"
            .to_owned()
    })
}
