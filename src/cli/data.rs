//! The interaction store from the command line: `data path|export|forget|mine`, `run` (the execution
//! signal), `retention sweep` and `stats`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::report::{self, fail, recorded, say, strict_config};
use crate::capture::{self, RunError};
use crate::home::Home;
use crate::logging;
use crate::quality;

use crate::store::{Forget, Forgotten, Store, StoreError};

#[derive(Subcommand, Debug)]
pub enum DataAction {
    /// Print the path of the interaction store (SQLite).
    Path,
    /// Write every interaction as JSON lines (all columns, secrets already redacted).
    Export {
        /// Output format (the training formats come with `marunochi curate`).
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of stdout (created 0600).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Learn from your own history: the functions you wrote in these git repositories (commits
    /// whose author is you) become training data and a held-out set for the gate, redacted like
    /// everything else. Mining again adds only what is new; `data forget --file DIR` removes it.
    Mine {
        /// Repositories (or directories inside them); default: the current directory.
        #[arg(value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Your commits' author as they record it, name or email (default: git's `user.email`).
        #[arg(long, value_name = "WHO")]
        author: Option<String>,
        /// The history behind this revision (a branch, tag or commit; default: HEAD).
        #[arg(long, value_name = "REV")]
        rev: Option<String>,
    },
    /// Delete interactions for good (secure delete; nothing is left in the database file), and
    /// the functions mined from git among them.
    #[command(group = clap::ArgGroup::new("which").required(true).multiple(false))]
    Forget {
        /// Everything.
        #[arg(long, group = "which")]
        all: bool,
        /// Everything recorded in this file, or in any file below this directory.
        #[arg(long, value_name = "F", group = "which")]
        file: Option<PathBuf>,
        /// Everything shown before this date or time (2026-11-01, 2026-11-01T12:00:00Z).
        #[arg(long, value_name = "D", group = "which", value_parser = report::parse_date)]
        before: Option<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    Jsonl,
}

#[derive(Subcommand, Debug)]
pub enum RetentionAction {
    /// Run the retention checks that are due (30 s … 30 d after acceptance) from the files on
    /// disk, catching up with those that fell due while nothing was running, and update the
    /// quality scores they change.
    Sweep {
        /// Pretend it is this time (RFC 3339, e.g. 2026-12-25T09:00:00Z) instead of now.
        #[arg(long, value_name = "RFC3339", value_parser = report::parse_time_ms)]
        now: Option<i64>,
    },
}

pub fn data(home: &Home, action: DataAction) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "data", "info", false);
    let path = home.db_path();
    if let DataAction::Path = action {
        println!("{}", path.display());
        return ExitCode::SUCCESS;
    }
    if let DataAction::Mine { dirs, author, rev } = action {
        return mine(&path, dirs, crate::mine::Options { author, revision: rev });
    }
    if !recorded(&path) {
        return ExitCode::SUCCESS;
    }
    let forget = |what: Forget| crate::curate::forget(home, &what).map(|forgotten| forgot(home, forgotten));
    let result = match action {
        DataAction::Forget { all: true, .. } => forget(Forget::All),
        DataAction::Forget { file: Some(file), .. } => forget(Forget::File(std::path::absolute(&file).unwrap_or(file))),
        DataAction::Forget { before: Some(date), .. } => forget(Forget::Before(date)),
        action => Store::open(&path).and_then(|store| export(&store, action)).map_err(crate::curate::CurateError::from),
    };

    match result {
        Ok(summary) => {
            say(summary);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn export(store: &Store, action: DataAction) -> Result<String, StoreError> {
    match action {
        DataAction::Export { format: ExportFormat::Jsonl, out: None } => {
            store.export(&mut std::io::stdout().lock()).map(|n| format!("exported {n} interaction(s)"))
        }
        DataAction::Export { format: ExportFormat::Jsonl, out: Some(file) } => {
            let mut writer =
                crate::home::create_private(&file).map_err(|source| StoreError::Io { path: file.clone(), source })?;
            store.export(&mut writer).map(|n| format!("exported {n} interaction(s) to {}", file.display()))
        }
        DataAction::Path | DataAction::Forget { .. } | DataAction::Mine { .. } => unreachable!("answered in `data`"),
    }
}

fn mine(db: &std::path::Path, dirs: Vec<PathBuf>, options: crate::mine::Options) -> ExitCode {
    let mut store = match Store::open(db) {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    let dirs = if dirs.is_empty() { vec![PathBuf::from(".")] } else { dirs };
    let mut failed = false;
    for dir in dirs {
        let bar = report::counter("{msg} {bar:30} {pos}/{len} of your commits · ETA {eta}");
        // Shown once the walk knows how many commits it has, not as an empty bar before.
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        bar.set_message(format!("reading the history of {}", dir.display()));
        let result = crate::mine::mine(&mut store, &dir, &options, &mut |done, of| {
            if bar.is_hidden() {
                bar.set_length(of as u64);
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_position(done as u64);
        });
        bar.finish_and_clear();
        match result {
            Ok(m) => {
                let languages: Vec<String> = m.by_language.iter().map(|(l, n)| format!("{l} {n}")).collect();
                say(format!(
                    "{}: {} version(s) of functions by {} ({}; {} edit(s) of existing ones), {} new",
                    m.repository.display(),
                    m.found,
                    m.author,
                    if languages.is_empty() { "no Python or Rust".to_owned() } else { languages.join(", ") },
                    m.edits,
                    m.added
                ));
            }
            Err(e) => {
                eprintln!("marunochi: {}: {e}", dir.display());
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn forgot(home: &Home, forgotten: Forgotten) -> String {
    let mut said = format!("forgot {} interaction(s)", forgotten.interactions);
    if forgotten.git_functions > 0 {
        said.push_str(&format!(" and {} function(s) mined from git", forgotten.git_functions));
    }
    said.push_str("; curated datasets and checkpoints removed");
    if !forgotten.wal_emptied {
        said.push_str(&format!(
            "; another marunochi process has the store open, so its write-ahead log ({}-wal) still holds \
             the deleted rows until it closes",
            home.db_path().display()
        ));
    }
    said
}

pub fn run(home: &Home, command: &[String]) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let _log = logging::init(&home.logs_dir(), "run", "info", false);
    let directory = match std::env::current_dir() {
        Ok(directory) => directory,
        Err(e) => return fail(format!("cannot tell the current directory: {e}")),
    };
    match capture::run_and_record(&home.db_path(), command, &directory) {
        Ok((status, judged)) => {
            say(format!("recorded this run for {judged} accepted suggestion(s)"));
            let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Err(RunError::Record { exit, source }) => {
            say(format!("not recorded: {source}"));
            ExitCode::from(exit.unwrap_or(1).clamp(0, 255) as u8)
        }
        Err(e) => {
            say(e);
            ExitCode::from(127)
        }
    }
}

pub fn retention_sweep(home: &Home, now_ms: Option<i64>) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "retention", "info", false);
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let path = home.db_path();
    if !recorded(&path) {
        return ExitCode::SUCCESS;
    }
    let now_ms = now_ms.unwrap_or_else(crate::clock::now_ms);
    match crate::jobs::catch_up(&path, now_ms, config.retention.survival_threshold) {
        Ok((report, rescored)) => {
            let unjudged = match report.unjudged {
                0 => String::new(),
                n => format!(" ({n} could not be judged: see the log)"),
            };
            say(format!("{} retention check(s) done{unjudged}; {rescored} quality score(s) updated", report.checked));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn stats(home: &Home, html: Option<PathBuf>) -> ExitCode {
    let path = home.db_path();
    if !recorded(&path) {
        return ExitCode::SUCCESS;
    }
    let curate = match strict_config(home) {
        Ok(config) => config.curate,
        Err(code) => return code,
    };
    let stats = match quality::stats::load(&path, curate.min_quality, curate.seed_score_only) {
        Ok(stats) => stats,
        Err(e) => return fail(e),
    };
    print!("{}", quality::stats::render_terminal(&stats));
    if let Some(file) = html {
        if let Err(e) = crate::home::write_private(&file, quality::stats::render_html(&stats).as_bytes()) {
            return fail(format!("cannot write {}: {e}", file.display()));
        }
        say(format!("report written to {}", file.display()));
    }
    ExitCode::SUCCESS
}
