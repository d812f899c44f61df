//! marunochi: a local, offline coding companion that learns from its one user.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod corpus;
pub mod curate;
pub mod daemon;
pub mod demo;
pub mod deploy;
pub mod doctor;
pub mod engine;
pub mod eval;
pub mod history;
pub mod home;
pub mod jobs;
pub mod language;
pub mod logging;
pub mod lsp;
pub mod mine;
pub mod proxy;
pub mod quality;
pub mod redact;
pub mod retention;
pub mod retrieve;
pub mod serving;
pub mod silence;
pub mod store;
pub mod syntax;
pub mod train;
pub mod uri;
pub mod watch;
