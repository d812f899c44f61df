//! The proxy in front of real language servers (pylsp, pyright): every answer through the proxy
//! must equal what the same server answers directly, and a killed server must come back with the
//! editor's documents as they are now.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const MAIN_PY: &str = r#"import os


def greet(name):
    """Say hello to name."""
    return "hello " + name


message = greet("world")
os.path.jo
"#;

/// One editing session; returns the answers worth comparing, labelled.
fn session(client: &mut Client, root: &Path) -> Vec<(&'static str, Value)> {
    let uri = file_uri(&root.join("main.py"));
    let mut answers = vec![("initialize", client.initialize(root, &["utf-16"])["result"].clone())];
    open(client, &uri, MAIN_PY);
    let mut ask = |label, method: &str, params: Value| {
        let response = client.request(method, params);
        assert!(response.get("error").is_none(), "{label}: {response}");
        answers.push((label, response["result"].clone()));
    };
    ask("hover", "textDocument/hover", position(&uri, 8, 12));
    ask("completion", "textDocument/completion", position(&uri, 9, 10));
    ask("definition", "textDocument/definition", position(&uri, 8, 12));
    ask("references", "textDocument/references", {
        let mut p = position(&uri, 3, 5);
        p["context"] = json!({"includeDeclaration": true});
        p
    });
    ask("documentSymbol", "textDocument/documentSymbol", json!({"textDocument": {"uri": uri}}));
    ask("rename", "textDocument/rename", {
        let mut p = position(&uri, 3, 5);
        p["newName"] = json!("welcome");
        p
    });
    answers
}

/// A request cancelled at once comes back under its own id, as a result or as RequestCancelled.
fn cancel_round_trip(client: &mut Client, root: &Path) {
    let uri = file_uri(&root.join("main.py"));
    client.send_request_with_id(json!("cancel-me"), "textDocument/completion", position(&uri, 9, 10));
    client.notify("$/cancelRequest", json!({"id": "cancel-me"}));
    let response = client.response(&json!("cancel-me"));
    assert!(
        response.get("result").is_some() || response["error"]["code"] == json!(-32800),
        "unexpected answer to a cancelled request: {response}"
    );
}

fn without_our_capabilities(mut initialize: Value, direct: &Value) -> Value {
    let caps = &mut initialize["capabilities"];
    assert_eq!(caps["inlineCompletionProvider"], json!({}), "{caps}");
    caps.as_object_mut().unwrap().remove("inlineCompletionProvider");
    let commands = caps["executeCommandProvider"]["commands"].as_array_mut().unwrap();
    let ours: Vec<Value> = commands.iter().filter(|c| c.as_str().unwrap().starts_with("marunochi.")).cloned().collect();
    assert_eq!(ours, vec![json!("marunochi.accept"), json!("marunochi.feedback")]);
    commands.retain(|c| !c.as_str().unwrap().starts_with("marunochi."));
    if direct["capabilities"].get("executeCommandProvider").is_none() {
        caps.as_object_mut().unwrap().remove("executeCommandProvider");
    }
    initialize
}

fn compare_direct_and_proxied(server: Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("main.py"), MAIN_PY).unwrap();
    let home = dir.path().join("home");

    let mut direct = Client::spawn(direct_command(&server));
    let expected = session(&mut direct, &root);
    cancel_round_trip(&mut direct, &root);
    direct.shutdown_and_exit();

    for extra in [&["--no-ai"][..], &[][..]] {
        let mut proxied = Client::spawn(proxy_command(&home, extra, &server));
        let mut got = session(&mut proxied, &root);
        if extra.is_empty() {
            got[0].1 = without_our_capabilities(got[0].1.clone(), &expected[0].1);
        }
        for ((label, want), (_, have)) in expected.iter().zip(&got) {
            assert_eq!(have, want, "{label} differs through the proxy {extra:?}");
        }
        cancel_round_trip(&mut proxied, &root);
        let direct_requests: Vec<&Value> = direct.server_requests.iter().map(|r| &r["method"]).collect();
        let proxied_requests: Vec<&Value> = proxied.server_requests.iter().map(|r| &r["method"]).collect();
        for method in &direct_requests {
            assert!(proxied_requests.contains(method), "server request {method} missing through the proxy");
        }
        assert_eq!(proxied.shutdown_and_exit().code(), Some(0));
    }
}

#[test]
fn pylsp_answers_the_same_through_the_proxy() {
    compare_direct_and_proxied(pylsp());
}

#[test]
fn pyright_answers_the_same_through_the_proxy() {
    compare_direct_and_proxied(pyright());
}

/// pyright's organize-imports command edits through a server→client `workspace/applyEdit`.
#[test]
fn pyright_apply_edit_round_trips_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let text = "import sys\nimport os\n\nprint(os, sys)\n";
    std::fs::write(root.join("imports.py"), text).unwrap();
    let uri = file_uri(&root.join("imports.py"));

    let run = |mut client: Client| {
        client.initialize(&root, &[]);
        open(&mut client, &uri, text);
        let done = client
            .request("workspace/executeCommand", json!({"command": "pyright.organizeimports", "arguments": [uri]}));
        assert!(done.get("error").is_none(), "{done}");
        let edit = client
            .wait_server_request("workspace/applyEdit", TIMEOUT)
            .expect("pyright asks the editor to apply the edit");
        client.shutdown_and_exit();
        edit["params"].clone()
    };
    let direct = run(Client::spawn(direct_command(&pyright())));
    let proxied = run(Client::spawn(proxy_command(&dir.path().join("home"), &[], &pyright())));
    assert_eq!(proxied, direct);
    assert!(direct.to_string().contains("import os\\nimport sys"), "{direct}");
}

/// Hover on `greeting` in the last line, after two edits made in UTF-16 positions past an emoji.
const CRASH_START: &str = "s = \"😀\"\n\n\ndef f():\n    return s\n";
const CRASH_FINAL: &str = "s = \"😀\"; greeting = \"hi\"\n\n\ndef f():\n    return greeting\n";

fn hover_greeting(client: &mut Client, uri: &str) -> Value {
    client.request("textDocument/hover", position(uri, 4, 13))
}

#[test]
fn a_killed_pylsp_comes_back_with_the_documents_as_the_editor_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let uri = file_uri(&root.join("crash.py"));

    let mut direct = Client::spawn(direct_command(&pylsp()));
    direct.initialize(&root, &["utf-16"]);
    open(&mut direct, &uri, CRASH_FINAL);
    let expected = hover_greeting(&mut direct, &uri)["result"].clone();
    assert!(expected.to_string().contains("str"), "pylsp should know greeting is a str: {expected}");
    direct.shutdown_and_exit();

    let mut client = Client::spawn(proxy_command(&dir.path().join("home"), &[], &pylsp()));
    client.initialize(&root, &["utf-16"]);
    open(&mut client, &uri, CRASH_START);
    // UTF-16: `s = "😀"` is 8 units long (the emoji counts 2).
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 0, "character": 8}, "end": {"line": 0, "character": 8}},
                                   "text": "; greeting = \"hi\""}]}),
    );
    let before = client.request("textDocument/documentSymbol", json!({"textDocument": {"uri": uri}}));
    assert!(before.to_string().contains("greeting"), "{before}");

    let servers = children(client.pid());
    assert_eq!(servers.len(), 1, "{servers:?}");
    // SAFETY: kill(2) on the proxy's child, which is alive (we just read it from /proc).
    unsafe { libc::kill(servers[0] as i32, libc::SIGKILL) };
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3},
               "contentChanges": [{"range": {"start": {"line": 4, "character": 11}, "end": {"line": 4, "character": 12}},
                                   "text": "greeting"}]}),
    );
    let warning = client.wait_notification("window/showMessage", TIMEOUT).expect("the editor is told");
    assert!(warning["params"]["message"].as_str().unwrap().contains("signal 9"), "{warning}");
    let restarted = eventually("a new server process", || {
        let now = children(client.pid());
        (now.len() == 1 && now != servers).then_some(now)
    });
    assert_ne!(restarted, servers);
    let after = hover_greeting(&mut client, &uri);
    assert_eq!(after["result"], expected, "the restarted server must see the editor's current text");
    let doc =
        client.request("workspace/executeCommand", json!({"command": "marunochi.debug.document", "arguments": [uri]}));
    assert_eq!(doc["result"]["text"], CRASH_FINAL);
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
}

#[test]
fn diagnostics_and_progress_flow_to_the_editor() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let uri = file_uri(&root.join("bad.py"));
    let mut client = Client::spawn(proxy_command(&dir.path().join("home"), &[], &pyright()));
    client.initialize(&root, &[]);
    open(&mut client, &uri, "x: int = 'not an int'\n");
    let diagnostics = eventually("diagnostics for bad.py", || {
        let d = client.wait_notification("textDocument/publishDiagnostics", Duration::from_millis(200))?;
        (d["params"]["uri"] == json!(uri) && !d["params"]["diagnostics"].as_array()?.is_empty()).then_some(d)
    });
    assert!(diagnostics.to_string().contains("int"), "{diagnostics}");
    client.shutdown_and_exit();
}
