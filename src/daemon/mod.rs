//! The daemon: one process per user that holds the model for every editor window (ARCHITECTURE.md, `src/daemon/`).
//! Entry points: [`run`] (the `marunochi daemon` process) and [`Client`] (what proxies use).

mod client;
pub mod protocol;
mod router;
mod server;

pub use client::{Client, ClientError, Daemon, PendingCompletion, PendingWarm, check_private_dir};
pub use server::{DaemonError, DaemonOptions, Outcome, run, socket_path};

/// Work the daemon runs in the background while it lives (the training schedule, the rollout
/// checks: `jobs::daemon_jobs`), each on a thread of its own.
pub trait Job: Send {
    /// How long to wait before each run.
    fn period(&self) -> std::time::Duration;
    fn run(&mut self);
}
