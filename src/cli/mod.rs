//! Command-line entry: parse arguments, call one library entry, print. No logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::doctor::{self, Status};
use crate::home::Home;
use crate::logging;
use crate::lsp::{Backend, Proxy, ProxyOptions};

/// A local, offline coding companion that learns from you.
///
/// marunochi sits between your editor and your language server, adds local AI completions, and
/// learns from what you do with them. Nothing leaves your machine.
#[derive(Parser, Debug)]
#[command(name = "marunochi", version, propagate_version = true)]
struct Cli {
    /// Also log to stderr (the log file under MARUNOCHI_HOME/logs is always written).
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as an LSP proxy on stdio in front of a real language server.
    ///
    /// Configure your editor to start this instead of the server, e.g. in Neovim:
    /// cmd = { "marunochi", "proxy", "--", "pylsp" }
    #[command(arg_required_else_help = true)]
    Proxy {
        /// Relay only: add no AI features and answer nothing ourselves.
        #[arg(long)]
        no_ai: bool,

        /// The language server command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "SERVER CMD")]
        server: Vec<String>,
    },
    /// Run the standalone companion LSP server on stdio (no language server behind it).
    ///
    /// For editors that keep their own language server next to it, such as VS Code.
    Lsp,
    /// Check the installation: data directory, configuration, logs, language servers.
    Doctor,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match Home::resolve() {
        Ok(home) => home,
        Err(e) => {
            eprintln!("marunochi: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Proxy { no_ai, server } => serve(&home, "proxy", cli.verbose, Backend::Server(server), !no_ai),
        Command::Lsp => serve(&home, "lsp", cli.verbose, Backend::Standalone, true),
        Command::Doctor => run_doctor(&home),
    }
}

/// Runs the proxy or the standalone server. A broken config must not cost the user their language
/// server, so it is reported and the defaults are used.
fn serve(home: &Home, name: &str, verbose: bool, backend: Backend, ai: bool) -> ExitCode {
    let (config, config_error) = match Config::load(&home.config_file()) {
        Ok(config) => (config, None),
        Err(e) => (Config::default(), Some(e)),
    };
    let _log = logging::init(&home.logs_dir(), name, &config.log.level, verbose);
    if let Some(e) = config_error {
        tracing::error!("{e}; using the defaults");
        eprintln!("marunochi: {e}; using the defaults");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("marunochi: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let proxy = Proxy::new(ProxyOptions { backend, ai, config: config.proxy });
    match runtime.block_on(proxy.run()) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("marunochi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_doctor(home: &Home) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "doctor", "info", false);
    let report = doctor::run(home);
    println!("marunochi {}", env!("CARGO_PKG_VERSION"));
    for check in &report.checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        println!("[{mark}] {}: {}", check.what, check.detail);
        if let Some(fix) = &check.fix {
            println!("       fix: {fix}");
        }
    }
    if report.healthy() {
        println!("\nmarunochi is ready.");
        ExitCode::SUCCESS
    } else {
        println!("\nSome checks failed; see `fix:` above.");
        ExitCode::FAILURE
    }
}
