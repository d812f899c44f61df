//! Emacs for real: Debian's emacs-nox 28 with elpa-eglot (installed by `scripts/test-deps.sh`)
//! runs `tests/emacs/eglot.el` in batch mode — the README's eglot snippet verbatim, `marunochi
//! proxy -- pylsp` behind python-mode, the real SmolLM2 — and must print an explicit PASS line:
//! the marunochi item offered by completion at point among pylsp's and taken, its text in the
//! buffer. The store must then hold the suggestion, accepted.

use std::process::Command;

use crate::common::*;

const FIB: &str = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib\n";

#[test]
fn emacs_eglot_set_up_as_the_readme_says_takes_the_ai_item() {
    let emacs = on_path("emacs", "./scripts/test-deps.sh (it installs Debian's emacs-nox and elpa-eglot)");
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("smollm2-135m-instruct.gguf");
    // The completion menu waits for the AI item; a generation takes longer than the default.
    let config = format!(
        "[engine]\nmodel = {:?}\n[daemon]\nidle_exit_secs = 20\n[serving]\ncompletion_deadline_ms = 10000\n",
        model.display().to_string()
    );
    let home = home_with_config(dir.path(), &config);
    let root = dir.path().join("project");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("fib.py");
    std::fs::write(&file, FIB).unwrap();
    // The snippet names `marunochi` and `pylsp` as a user's PATH has them.
    let marunochi = std::path::Path::new(env!("CARGO_BIN_EXE_marunochi")).parent().unwrap().to_owned();
    let pylsp = std::path::Path::new(&pylsp()[0]).parent().unwrap().to_owned();
    let path = std::env::join_paths(
        [marunochi, pylsp].into_iter().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut command = Command::new(emacs);
    command
        .args(["--batch", "-l"])
        .arg(repo_root().join("tests/emacs/eglot.el"))
        .env("MARUNOCHI_HOME", &home)
        .env("HOME", dir.path())
        .env("PATH", path)
        .env("MARUNOCHI_EMACS_FILE", &file);
    let (verdict, stderr, status) = run_editor_script(command);
    assert!(verdict.starts_with("PASS "), "Emacs said {verdict:?} ({status:?})\n--- stderr ---\n{stderr}");
    eprintln!("{verdict}");
    // eglot applies the item as five changes of one notification; the store must say it was taken.
    let taken = eventually("the suggestion settled in the store", || {
        let (_, export, _) = run_cli(&home, &["data", "export"]);
        export
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["file_path"].as_str().is_some_and(|p| p.ends_with("fib.py")) && r["action"] != "shown")
    });
    assert_eq!(taken["action"], "accepted", "{taken}");
    assert!(taken["suggestion"].as_str().is_some_and(|s| !s.is_empty()), "{taken}");
    stop_daemon(&home);
}
