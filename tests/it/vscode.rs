//! VS Code for real: code-server (VS Code 1.139 in the browser, installed with playwright-core by
//! `scripts/test-deps.sh`) with the packaged `editors/vscode/marunochi.vsix` installed, driven by
//! `tests/vscode/ui.mjs` through Debian's Chromium. The settings a user would write put the proxy in
//! front of pylsp with the real SmolLM2; the script types in a Python file, waits for the ghost
//! text, takes it with Tab, waits for the status bar to show the model and today's acceptance and
//! runs `marunochi: Good suggestion`. The store must then hold the suggestion accepted, and the
//! rating. Screenshots: `target/test-artifacts/vscode*.png`.

use std::process::Command;

use crate::common::*;

#[test]
fn vscode_takes_a_ghost_text_with_tab_and_the_store_records_it() {
    let deps = repo_root().join(".test-deps");
    let code_server = deps.join("vscode-ui/node_modules/.bin/code-server");
    assert!(code_server.exists(), "code-server is not installed: run ./scripts/test-deps.sh");
    let node24 = deps.join("node24/node_modules/.bin");
    let vsix = repo_root().join("editors/vscode/marunochi.vsix");
    assert!(vsix.exists(), "the extension is not packaged: run ./scripts/vscode.sh");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("fib.py"), "def fibonacci(n):\n    if n < 2:\n        return n\n    return").unwrap();
    std::fs::write(workspace.join("other.py"), "x = 1\n").unwrap();
    let data = dir.path().join("vscode");
    let settings = serde_json::json!({
        "marunochi.path": env!("CARGO_BIN_EXE_marunochi"),
        "marunochi.mode": "proxy",
        "marunochi.serverCommand": pylsp(),
        "marunochi.model": fixture("smollm2-135m-instruct.gguf"),
        "workbench.startupEditor": "none",
        "security.workspace.trust.enabled": false,
        "telemetry.telemetryLevel": "off",
        "extensions.autoCheckUpdates": false,
        "extensions.autoUpdate": false,
        "chat.disableAIFeatures": true,
    });
    std::fs::create_dir_all(data.join("user/User")).unwrap();
    std::fs::write(data.join("user/User/settings.json"), settings.to_string()).unwrap();
    let path = std::env::join_paths(
        std::iter::once(node24.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let installed = Command::new(&code_server)
        .env("PATH", &path)
        .arg("--user-data-dir")
        .arg(data.join("user"))
        .arg("--extensions-dir")
        .arg(data.join("extensions"))
        .arg("--install-extension")
        .arg(&vsix)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&installed.stdout);
    assert!(said.contains("was successfully installed"), "{said}{}", String::from_utf8_lossy(&installed.stderr));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let artifacts = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut command = Command::new(node24.join("node"));
    command
        .arg(repo_root().join("tests/vscode/ui.mjs"))
        .current_dir(deps.join("vscode-ui"))
        .env("PATH", &path)
        .env("MARUNOCHI_VSCODE_UI", deps.join("vscode-ui"))
        .env("MARUNOCHI_HOME", &home)
        .env("MARUNOCHI_CODE_SERVER", &code_server)
        .env("MARUNOCHI_VSCODE_PORT", port.to_string())
        .env("MARUNOCHI_VSCODE_FOLDER", &workspace)
        .env("MARUNOCHI_VSCODE_DATA", &data)
        .env("MARUNOCHI_ARTIFACTS", &artifacts)
        .env("MARUNOCHI_CHROMIUM", on_path("chromium", "./scripts/test-deps.sh (it installs Debian's chromium)"));
    let (verdict, stderr, status) = run_editor_script(command);
    assert!(verdict.starts_with("PASS "), "VS Code said {verdict:?} ({status:?})\n--- stderr ---\n{stderr}");
    eprintln!("{verdict}");

    let rows = |home: &std::path::Path| -> Vec<serde_json::Value> {
        let (_, export, _) = run_cli(home, &["data", "export"]);
        export.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let taken = eventually("the ghost text taken, in the store", || {
        rows(&home)
            .into_iter()
            .find(|r| r["action"] == "accepted" && r["file_path"].as_str().is_some_and(|p| p.ends_with("fib.py")))
    });
    let suggestion = taken["suggestion"].as_str().unwrap();
    let saved = std::fs::read_to_string(workspace.join("fib.py")).unwrap();
    assert!(saved.contains(&format!("return {}", suggestion.trim_start())), "{saved:?} lacks {suggestion:?}");
    // `Good suggestion` rates the last suggestion shown (VS Code asks again after the Tab).
    eventually("the rating, in the store", || rows(&home).into_iter().find(|r| r["user_rating"] == 1));
    stop_daemon(&home);
}
