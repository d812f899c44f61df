//! The relay through the built binary, against a scripted language-server process that logs every
//! message it receives: exact ids, cancels, server requests, batches, bad input, crashes, lifecycle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use marunochi::lsp::codec::Incoming;
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    home: PathBuf,
    log: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let log = dir.path().join("server.log");
    Setup { home, log, root, _dir: dir }
}

fn start(s: &Setup, extra: &[&str], encoding: Option<&str>) -> Client {
    Client::spawn(proxy_command(&s.home, extra, &scripted_server(&s.log, encoding)))
}

fn received(log: &Path, method: &str) -> Vec<Value> {
    read_log(log).into_iter().filter(|m| m["method"] == method).collect()
}

#[test]
fn unknown_methods_pass_through_and_ids_come_back_exactly() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &["utf-16"]);

    client.send_request_with_id(json!("str-id"), "test/echo", json!({"a": [1, "ü"]}));
    client.send_request_with_id(json!(42), "test/echo", json!("plain"));
    client.send_request_with_id(json!(43), "custom/neverHeardOfIt", json!({}));
    assert_eq!(client.response(&json!("str-id"))["result"], json!({"a": [1, "ü"]}));
    assert_eq!(client.response(&json!(42))["result"], json!("plain"));
    let unknown = client.response(&json!(43));
    assert_eq!(unknown["error"]["code"], json!(-32601), "{unknown}");
    client.notify("custom/notification", json!({"x": 1}));
    client.notify("$/setTrace", json!({"value": "verbose"}));

    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    let echoes = received(&s.log, "test/echo");
    assert_eq!(echoes.len(), 2);
    assert!(echoes.iter().all(|m| m["id"].is_i64()), "the server sees the proxy's ids: {echoes:?}");
    assert_ne!(echoes[0]["id"], echoes[1]["id"]);
    assert_eq!(received(&s.log, "custom/notification")[0]["params"], json!({"x": 1}));
    assert_eq!(received(&s.log, "$/setTrace").len(), 1);
}

#[test]
fn server_to_client_requests_round_trip_in_order() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    let answer = client.request("test/askClient", json!(null));
    assert_eq!(answer["result"], json!({"clientAnswered": [null]}), "{answer}");
    let config = client.wait_server_request("workspace/configuration", TIMEOUT).unwrap();
    assert!(config["id"].is_i64(), "the editor sees the proxy's id: {config}");
    let progress = client.wait_notification("$/progress", TIMEOUT).unwrap();
    assert_eq!(progress["params"]["value"]["kind"], "begin");
    // The server got our answer under its own string id (otherwise it could not have replied).
    let responses: Vec<Value> = read_log(&s.log).into_iter().filter(|m| m.get("method").is_none()).collect();
    assert_eq!(responses, vec![json!({"jsonrpc": "2.0", "id": "srv-1", "result": [null]})]);
}

#[test]
fn cancel_requests_are_remapped_both_ways() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    client.send_request_with_id(json!("slow-1"), "test/slow", json!({}));
    client.notify("$/cancelRequest", json!({"id": "slow-1"}));
    let cancelled = client.response(&json!("slow-1"));
    assert_eq!(cancelled["error"]["code"], json!(-32800), "{cancelled}");
    let forwarded_id = received(&s.log, "test/slow")[0]["id"].clone();
    assert_eq!(received(&s.log, "$/cancelRequest")[0]["params"]["id"], forwarded_id);

    // A cancel for an id the server never saw is not forwarded (it could collide with ours).
    client.notify("$/cancelRequest", json!({"id": "never-sent"}));

    // The server cancelling its own request to the editor refers to the editor-side id.
    client.request("test/serverCancels", json!(null));
    let create = client.wait_server_request("window/workDoneProgress/create", TIMEOUT).unwrap();
    let cancel = client.wait_notification("$/cancelRequest", TIMEOUT).unwrap();
    assert_eq!(cancel["params"]["id"], create["id"]);
    client.request("test/echo", json!(1));
    assert_eq!(received(&s.log, "$/cancelRequest").len(), 1);
}

#[test]
fn batches_are_relayed_as_batches() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    client.send(&json!([
        {"jsonrpc": "2.0", "id": "b1", "method": "test/echo", "params": 1},
        {"jsonrpc": "2.0", "method": "custom/note", "params": {}},
        {"jsonrpc": "2.0", "id": 7, "method": "test/echo", "params": 2}
    ]));
    let reply = loop {
        match client.next_item(TIMEOUT).expect("a reply to the batch") {
            Incoming::Message(payload) => match payload.to_value().unwrap() {
                Value::Array(items) => break items,
                _ => continue,
            },
            Incoming::Malformed(bad) => panic!("{bad:?}"),
        }
    };
    assert_eq!(
        reply,
        vec![json!({"jsonrpc": "2.0", "id": "b1", "result": 1}), json!({"jsonrpc": "2.0", "id": 7, "result": 2})]
    );
    let batch = read_log(&s.log).into_iter().find(Value::is_array).expect("the server received a batch");
    assert_eq!(batch.as_array().unwrap().len(), 3);
}

#[test]
fn bad_input_from_the_editor_is_answered_or_logged_and_never_wedges_the_stream() {
    let s = setup();
    std::fs::create_dir_all(&s.home).unwrap();
    std::fs::write(s.home.join("config.toml"), "[proxy]\nmax_message_mib = 1\n").unwrap();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);

    client.send_raw(b"Content-Type: LEAKED-editor-secret\r\n\r\n");
    client.send_raw(b"Content-Length: twelve LEAKED-editor-secret\r\n\r\n");
    client.send_raw(b"Content-Length: 29\r\n\r\n{not json LEAKED-editor-secret");
    let non_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":\"bad-utf8\",\"method\":\"test/echo\",\"params\":\"\xff\"}";
    client.send_raw(format!("Content-Length: {}\r\n\r\n", non_utf8.len()).as_bytes());
    client.send_raw(non_utf8);
    let huge = vec![b' '; 2 * 1024 * 1024];
    client.send_raw(format!("Content-Length: {}\r\n\r\n", huge.len()).as_bytes());
    client.send_raw(&huge);
    client.send(&json!({"jsonrpc": "2.0", "id": 5, "method": 17}));
    client.send(&json!({"jsonrpc": "2.0", "id": 123456, "result": "answer to nothing"}));
    client.send(&json!({"neither": "method nor id"}));

    let utf8_error = client.response(&json!("bad-utf8"));
    assert_eq!(utf8_error["error"]["code"], json!(-32700), "{utf8_error}");
    assert!(utf8_error["error"]["message"].as_str().unwrap().contains("UTF-8"));
    let invalid = client.response(&json!(5));
    assert_eq!(invalid["error"]["code"], json!(-32600), "{invalid}");
    assert_eq!(client.request("test/echo", json!("still alive"))["result"], json!("still alive"));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));

    let log = std::fs::read_to_string(s.home.join("logs/proxy.log")).unwrap();
    for expected in ["no Content-Length", "not a number", "not valid JSON", "exceeds the limit", "nobody asked"] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    assert!(!log.contains("LEAKED"), "the log quotes what the editor sent:\n{log}");
    assert!(received(&s.log, "test/echo").iter().all(|m| m["params"] == "still alive"));
}

#[test]
fn bad_output_from_the_server_is_survived() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    assert_eq!(client.request("test/garbageThenAnswer", json!(null))["result"], "after garbage");
    let unreadable = client.request("test/unreadableAnswer", json!(null));
    assert_eq!(unreadable["error"]["code"], json!(-32803), "{unreadable}");
    assert_eq!(client.request("test/unknownId", json!(null))["result"], "ok");
    assert_eq!(client.request("test/echo", json!(3))["result"], json!(3));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
    let log = std::fs::read_to_string(s.home.join("logs/proxy.log")).unwrap();
    assert!(log.contains("malformed message from the server"), "{log}");
    assert!(!log.contains("LEAKED"), "the log quotes what the server printed:\n{log}");
}

#[test]
fn a_crashed_server_is_restarted_with_its_documents_and_in_flight_requests_fail_cleanly() {
    let s = setup();
    let mut client = start(&s, &[], Some("utf-8"));
    let init = client.initialize(&s.root, &["utf-8", "utf-16"]);
    assert_eq!(init["result"]["capabilities"]["positionEncoding"], "utf-8");
    let uri = file_uri(&s.root.join("a.py"));
    open(&mut client, &uri, "x = '😀'\n");
    client.notify("workspace/didChangeConfiguration", json!({"settings": {"scripted": {"level": 2}}}));

    let crash = client.send_request("test/crash", json!(null));
    let crashed = client.response(&crash);
    assert_eq!(crashed["error"]["code"], json!(-32803), "{crashed}");
    // An edit made while the server is down is not lost, and comes after the document as it was at
    // the crash, so requests held with it meet the text they were made against.
    // "x = '😀'" — in UTF-8 the closing quote is at byte 9.
    let edit = json!({"textDocument": {"uri": uri, "version": 2},
           "contentChanges": [{"range": {"start": {"line": 0, "character": 9}, "end": {"line": 0, "character": 9}}, "text": "漢"}]});
    client.notify("textDocument/didChange", edit.clone());
    let warning = client.wait_notification("window/showMessage", TIMEOUT).unwrap();
    assert!(warning["params"]["message"].as_str().unwrap().contains("exited unexpectedly (exit code 3)"), "{warning}");
    assert_eq!(client.request("test/echo", json!("back"))["result"], "back");
    let info = client.wait_notification("window/showMessage", TIMEOUT).unwrap();
    assert!(info["params"]["message"].as_str().unwrap().contains("reopened 1 document"), "{info}");

    let log = read_log(&s.log);
    let methods: Vec<&str> = log.iter().filter_map(|m| m["method"].as_str()).collect();
    let restart = methods.iter().rposition(|m| *m == "initialize").unwrap();
    assert_eq!(
        &methods[restart..],
        &[
            "initialize",
            "initialized",
            "workspace/didChangeConfiguration",
            "textDocument/didOpen",
            "textDocument/didChange",
            "test/echo"
        ]
    );
    let reopened = received(&s.log, "textDocument/didOpen").pop().unwrap();
    assert_eq!(reopened["params"]["textDocument"]["text"], "x = '😀'\n");
    assert_eq!(reopened["params"]["textDocument"]["version"], 1);
    assert_eq!(received(&s.log, "textDocument/didChange").pop().unwrap()["params"], edit);
    assert_eq!(log[restart]["params"]["clientInfo"]["name"], "marunochi-tests");
    let doc =
        client.request("workspace/executeCommand", json!({"command": "marunochi.debug.document", "arguments": [uri]}));
    assert_eq!(doc["result"]["text"], "x = '😀漢'\n");
}

#[test]
fn a_server_that_keeps_crashing_is_given_up_on_with_a_message() {
    let s = setup();
    std::fs::create_dir_all(&s.home).unwrap();
    std::fs::write(s.home.join("config.toml"), "[proxy]\nmax_restarts = 1\n").unwrap();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    client.request("test/crash", json!(null));
    assert_eq!(client.request("test/echo", json!(1))["result"], json!(1));
    client.request("test/crash", json!(null));
    let message = eventually("the give-up message", || {
        let m = client.wait_notification("window/showMessage", Duration::from_millis(100))?;
        (m["params"]["type"] == 1).then_some(m)
    });
    assert!(message["params"]["message"].as_str().unwrap().contains("not restarting"), "{message}");
    let refused = client.request("test/echo", json!(2));
    assert_eq!(refused["error"]["code"], json!(-32803), "{refused}");
    // The standalone intercepts keep working for the editor.
    let inline = client.request("textDocument/inlineCompletion", json!({}));
    assert_eq!(inline["result"], json!({"items": []}));
}

#[test]
fn utf8_position_encoding_is_followed_by_the_mirror() {
    let s = setup();
    let mut client = start(&s, &[], Some("utf-8"));
    client.initialize(&s.root, &["utf-8"]);
    let uri = file_uri(&s.root.join("b.py"));
    open(&mut client, &uri, "s = \"漢字😀\"\n");
    // After `s = "漢字😀` : 5 + 3 + 3 + 4 = 15 bytes.
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 0, "character": 15}, "end": {"line": 0, "character": 15}}, "text": "!"}]}),
    );
    let doc =
        client.request("workspace/executeCommand", json!({"command": "marunochi.debug.document", "arguments": [uri]}));
    assert_eq!(doc["result"]["text"], "s = \"漢字😀!\"\n", "{doc}");
    assert_eq!(doc["result"]["positionEncoding"], "utf-8");
    assert!(received(&s.log, "workspace/executeCommand").is_empty(), "our commands stay with us");
}

#[test]
fn ai_mode_merges_capabilities_and_no_ai_mode_is_a_pure_relay() {
    let s = setup();
    let direct = Client::spawn(direct_command(&scripted_server(&s.log, None))).initialize(&s.root, &[]);
    let mut plain = start(&s, &["--no-ai"], None);
    assert_eq!(plain.initialize(&s.root, &[])["result"], direct["result"]);
    let inline = plain.request("textDocument/inlineCompletion", json!({}));
    assert_eq!(inline["error"]["code"], json!(-32601), "--no-ai forwards everything: {inline}");

    let mut ai = start(&s, &[], None);
    let merged = ai.initialize(&s.root, &[])["result"].clone();
    let mut expected = direct["result"].clone();
    expected["capabilities"]["completionProvider"] = json!({});
    expected["capabilities"]["inlineCompletionProvider"] = json!({});
    expected["capabilities"]["executeCommandProvider"] =
        json!({"commands": ["marunochi.accept", "marunochi.feedback"]});
    assert_eq!(merged, expected);
    assert_eq!(ai.request("textDocument/inlineCompletion", json!({}))["result"], json!({"items": []}));
    assert_eq!(ai.request("textDocument/completion", json!({}))["result"], json!({"isIncomplete": false, "items": []}));
    let accept = ai.request("workspace/executeCommand", json!({"command": "marunochi.accept", "arguments": ["s-1"]}));
    assert_eq!(accept["result"], Value::Null);
    let unknown = ai.request("workspace/executeCommand", json!({"command": "marunochi.nope"}));
    assert_eq!(unknown["error"]["code"], json!(-32602));
}

#[test]
fn lifecycle_exit_codes_and_no_orphans() {
    let s = setup();
    // exit without shutdown: exit code 1 (LSP).
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    client.notify("exit", Value::Null);
    assert_eq!(client.wait().code(), Some(1));

    // The editor vanishes: the server is stopped too.
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    let server = children(client.pid());
    assert_eq!(server.len(), 1, "{server:?}");
    assert_eq!(client.close_and_wait().code(), Some(1));
    eventually("the server to be gone", || {
        let status = std::fs::read_to_string(format!("/proc/{}/stat", server[0])).unwrap_or_default();
        (status.is_empty() || status.contains(") Z ")).then_some(())
    });
}

#[test]
fn a_server_that_cannot_start_is_a_clear_error() {
    let s = setup();
    let output = proxy_command(&s.home, &[], &["/nonexistent/language-server".into()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not start the language server `/nonexistent/language-server`"), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout belongs to the LSP stream");
}

#[test]
fn standalone_lsp_answers_by_itself() {
    let s = setup();
    let mut client = Client::spawn(lsp_command(&s.home));
    let init = client.initialize(&s.root, &["utf-32", "utf-8"]);
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["positionEncoding"], "utf-32");
    assert_eq!(caps["inlineCompletionProvider"], json!({}));
    assert_eq!(init["result"]["serverInfo"]["name"], "marunochi");
    let uri = "file:///tmp/standalone.rs";
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "rust", "version": 1, "text": "let s = \"😀\";"}}),
    );
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 0, "character": 10}, "end": {"line": 0, "character": 10}}, "text": "x"}]}),
    );
    let doc =
        client.request("workspace/executeCommand", json!({"command": "marunochi.debug.document", "arguments": [uri]}));
    assert_eq!(doc["result"]["text"], "let s = \"😀x\";");
    assert_eq!(client.request("textDocument/inlineCompletion", json!({}))["result"], json!({"items": []}));
    let hover = client.request("textDocument/hover", json!({}));
    assert_eq!(hover["error"]["code"], json!(-32601));
    assert_eq!(client.shutdown_and_exit().code(), Some(0));
}

#[test]
fn a_request_held_during_a_restart_can_be_cancelled() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    let crash = client.send_request("test/crash", json!(null));
    client.response(&crash);
    // The restart waits out its backoff; meanwhile this request is held, then cancelled.
    client.send_request_with_id(json!("held-1"), "test/echo", json!("held"));
    client.notify("$/cancelRequest", json!({"id": "held-1"}));
    let cancelled = client.response(&json!("held-1"));
    assert_eq!(cancelled["error"]["code"], json!(-32800), "{cancelled}");
    assert_eq!(client.request("test/echo", json!("after"))["result"], "after");
    assert!(
        received(&s.log, "test/echo").iter().all(|m| m["params"] != "held"),
        "a cancelled held request is never sent"
    );
}

#[test]
fn a_server_dying_on_shutdown_does_not_leave_the_editor_waiting() {
    let s = setup();
    let mut client = start(&s, &[], None);
    client.initialize(&s.root, &[]);
    client.request("test/dieOnShutdown", json!(null));
    let shutdown = client.request("shutdown", Value::Null);
    assert_eq!(shutdown["error"]["code"], json!(-32803), "{shutdown}");
    client.notify("exit", Value::Null);
    assert_eq!(client.wait().code(), Some(0));
    assert!(client.notifications.iter().all(|n| n["method"] != "window/showMessage"), "no restart after shutdown");
}

#[test]
fn a_server_refusing_the_replayed_initialize_is_not_restarted_in_a_loop() {
    let s = setup();
    let marker = s.log.with_extension("initialized");
    let mut server = scripted_server(&s.log, None);
    server.extend(["--refuse-reinit".to_string(), marker.to_string_lossy().into_owned()]);
    let mut client = Client::spawn(proxy_command(&s.home, &[], &server));
    client.initialize(&s.root, &[]);
    client.request("test/crash", json!(null));
    let refused = eventually("the refusal message", || {
        let m = client.wait_notification("window/showMessage", Duration::from_millis(100))?;
        (m["params"]["type"] == 1).then_some(m)
    });
    assert!(refused["params"]["message"].as_str().unwrap().contains("refused to initialize"), "{refused}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(received(&s.log, "initialize").len(), 2, "one start, one replay, no more");
    let answer = client.request("test/echo", json!(1));
    assert_eq!(answer["error"]["code"], json!(-32803), "{answer}");
}

/// Peak resident memory of a process, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_flood_of_edits_to_a_stalled_server_keeps_memory_bounded() {
    let s = setup();
    let mut editor = start(&s, &[], None);
    editor.initialize(&s.root, &[]);
    let uri = file_uri(&s.root.join("flood.py"));
    let text: String = (0..4000).map(|i| format!("def f{i}(x):\n    return x + {i}\n")).collect();
    open(&mut editor, &uri, &text);
    let baseline = peak_rss_kib(editor.pid());
    editor.notify("test/stall", json!({"seconds": 10}));
    // 10 000 edits a second for 10 s, as fast as the proxy takes them, to a 4 000-function file: a
    // character typed and deleted again, so the document keeps its size and only queues could grow.
    let started = std::time::Instant::now();
    let mut version = 1;
    for tick in 0..1000u32 {
        for i in 0..100 {
            version += 1;
            let change = if i % 2 == 0 {
                json!({"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}, "text": "x"})
            } else {
                json!({"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}}, "text": ""})
            };
            editor.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]}),
            );
        }
        let due = started + Duration::from_millis(10 * u64::from(tick + 1));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    }
    let flood = started.elapsed();
    let peak = peak_rss_kib(editor.pid());
    // The editor's next request is answered once the server reads again.
    let answered = editor.request("test/echo", json!({"after": "flood"}));
    println!(
        "flood: 100000 didChange in {:.1} s; proxy peak RSS {} MiB (before: {} MiB); echo answered {:.1} s after the flood",
        flood.as_secs_f64(),
        peak / 1024,
        baseline / 1024,
        (started.elapsed() - flood).as_secs_f64()
    );
    assert_eq!(answered["result"], json!({"after": "flood"}));
    assert_eq!(received(&s.log, "textDocument/didChange").len(), 100_000, "every edit reached the server");
    // Before: +31 MiB, from the server's unbounded queue and from the relay's own queue (it rescanned
    // the whole 108 KB document on every edit and fell behind). The server's backlog is capped at
    // 4 MiB and the relay keeps up now.
    assert!(peak < baseline + 16 * 1024, "the proxy grew from {baseline} KiB to {peak} KiB");
}
