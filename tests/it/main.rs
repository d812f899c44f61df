//! The integration tests: one binary (one link of candle), one module per part of the loop.
//! Slow suites keep their names (`cargo test --release --test it serving::` runs one of them).

mod common;

mod adapters;
mod capture;
mod cli;
mod curate;
mod demo;
mod emacs;
mod engine;
mod eval;
mod models;
mod nvim;
mod quality;
mod real_servers;
mod relay;
mod retention;
mod rollout;
mod schedule;
mod serving;
mod tidy;
mod train;
mod vscode;
