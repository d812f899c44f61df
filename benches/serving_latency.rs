//! Keystroke → suggestion latency as an editor sees it: `marunochi proxy` in front of real pylsp,
//! the daemon it starts, and a real file typed character by character. For each model, in one run:
//!
//! - cold vs warm: the first request in a freshly opened file (the whole prompt is computed) against
//!   the request after one more typed character (only the new tail is), and their ratio;
//! - typing, one `didChange` and one `textDocument/inlineCompletion` per character: first CHARS/2
//!   characters each waiting for its suggestion (p50/p95 keystroke → suggestion, every request
//!   counted), then the rest at one every INTERVAL_MS regardless (the fraction superseded: a newer
//!   keystroke cancelled them and they came back empty).
//!
//! SmolLM2 runs twice, without the definitions source (the default) and with it, to show what
//! asking the language server costs a keystroke.
//!
//! `./scripts/test-deps.sh && cargo bench --bench serving_latency` (CHARS=n, INTERVAL_MS=n,
//! SERVER=scripted for a language server that does nothing instead of pylsp).
//! Target on a 2-core CPU with SmolLM2: p50 < 250 ms.

#[allow(dead_code)] // the benchmark uses a part of the tests' helpers
#[path = "../tests/it/common.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const TARGET_P50_MS: f64 = 250.0;

fn inline_params(uri: &str, line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
           "context": {"triggerKind": 2}})
}

fn has_items(response: &Value) -> bool {
    response["result"]["items"].as_array().is_some_and(|items| !items.is_empty())
}

/// Where typing happens: line and UTF-16 column of a byte offset (the file is ASCII).
fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset];
    let line = before.matches('\n').count() as u32;
    let column = before.rfind('\n').map_or(offset, |i| offset - i - 1) as u32;
    (line, column)
}

struct Typed {
    /// Latency of requests answered before a newer keystroke superseded them, ms.
    answered: Vec<f64>,
    with_suggestion: usize,
    superseded: usize,
    total: usize,
}

fn run(model_name: &str, model: &Path, source: &str, chars: usize, interval: Duration, serving: &str) {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(dir.path(), &format!("[daemon]\nidle_exit_secs = 10\n[serving]\n{serving}"));
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let uri = file_uri(&root.join("typed.py"));
    // SERVER=scripted puts a language server that does no work of its own behind the proxy, to see
    // how much pylsp's linting on every keystroke competes with the model for the two cores.
    let server = match std::env::var("SERVER").as_deref() {
        Ok("scripted") => scripted_server(&dir.path().join("server.log"), None),
        _ => pylsp(),
    };
    let mut client = Client::spawn(proxy_command(&home, &["--model", &model.to_string_lossy()], &server));
    client.initialize(&root, &[]);

    // Start typing 40% into the file, at a line start.
    let start = source[..source.len() * 2 / 5].rfind('\n').map_or(0, |i| i + 1);
    let end = (start + chars).min(source.len());
    let mut text = source[..start].to_owned();
    open(&mut client, &uri, &text);
    let mut version = 1;

    let mut type_char = |client: &mut Client, text: &mut String, c: char| {
        let (line, character) = line_col(text, text.len());
        version += 1;
        client.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version},
                   "contentChanges": [{"range": {"start": {"line": line, "character": character},
                                                 "end": {"line": line, "character": character}},
                                       "text": c.to_string()}]}),
        );
        text.push(c);
    };
    let request_at_end = |client: &mut Client, text: &str| {
        let (line, character) = line_col(text, text.len());
        client.send_request("textDocument/inlineCompletion", inline_params(&uri, line, character))
    };
    let timed = |client: &mut Client, text: &str| {
        let started = Instant::now();
        let id = request_at_end(client, text);
        let response = client.response(&id);
        let shown = response["result"]["items"][0]["insertText"].as_str().map(str::to_owned);
        (started.elapsed().as_secs_f64() * 1000.0, shown)
    };

    // Cold: a fresh document (this also waits for the daemon to start and load the model first).
    timed(&mut client, &text);
    let mut chars_left = source[start..end].chars();
    let fresh = format!("{}_", &uri[..uri.len() - 3]);
    open(&mut client, &format!("{fresh}.py"), &text);
    let cold_uri = format!("{fresh}.py");
    let started = Instant::now();
    let id = client.send_request("textDocument/inlineCompletion", {
        let (line, character) = line_col(&text, text.len());
        inline_params(&cold_uri, line, character)
    });
    client.response(&id);
    let cold = started.elapsed().as_secs_f64() * 1000.0;
    // Warm: the same document (cached) after one more character.
    timed(&mut client, &text);
    let first = chars_left.next().unwrap();
    type_char(&mut client, &mut text, first);
    let (warm, mut previous) = timed(&mut client, &text);

    // Closed loop: each keystroke waits for its suggestion, so every request's latency counts.
    let closed_chars: Vec<char> = chars_left.by_ref().take(chars / 2).collect();
    let mut closed = Vec::new();
    // Keystrokes that typed the next character of the suggestion on screen are answered with the
    // rest of it, without the model; the others need a generation. Both are reported.
    let mut generated = Vec::new();
    let mut closed_suggestions = 0;
    for c in closed_chars {
        type_char(&mut client, &mut text, c);
        let typed_through = previous.as_deref().is_some_and(|p| p.starts_with(c) && p.len() > c.len_utf8());
        let (ms, shown) = timed(&mut client, &text);
        closed.push(ms);
        if !typed_through {
            generated.push(ms);
        }
        closed_suggestions += usize::from(shown.is_some());
        previous = shown;
        client.notifications.clear();
    }
    closed.sort_by(f64::total_cmp);
    generated.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&closed, 0.5), percentile(&closed, 0.95));

    // Open loop: a character every `interval` whatever happens; requests overtaken by the next
    // keystroke are superseded (cancelled in the daemon, answered empty).
    let mut typed = Typed { answered: Vec::new(), with_suggestion: 0, superseded: 0, total: 0 };
    let mut in_flight: Vec<(Value, Instant, bool)> = Vec::new();
    let mut next_key = Instant::now();
    for c in chars_left {
        type_char(&mut client, &mut text, c);
        for (_, _, overtaken) in &mut in_flight {
            *overtaken = true;
        }
        let id = request_at_end(&mut client, &text);
        in_flight.push((id, Instant::now(), false));
        typed.total += 1;
        next_key += interval;
        collect(&mut client, &mut in_flight, &mut typed, next_key);
        client.notifications.clear();
    }
    collect(&mut client, &mut in_flight, &mut typed, Instant::now() + Duration::from_secs(60));
    assert!(in_flight.is_empty(), "{} requests never answered", in_flight.len());
    typed.answered.sort_by(f64::total_cmp);

    println!("{model_name:<28} cold {cold:>7.1} ms  warm {warm:>6.1} ms  warm-prefix speedup {:>5.1}x", cold / warm);
    println!(
        "{:<28} keystroke -> suggestion, {} keystrokes each awaited: p50 {p50:>6.1} ms p95 {p95:>6.1} ms \
         ({closed_suggestions} with a suggestion)",
        "",
        closed.len()
    );
    println!(
        "{:<28}   of which {} typed through the suggestion shown (answered without the model); the {} that \
         needed a generation: p50 {:>6.1} ms p95 {:>6.1} ms",
        "",
        closed.len() - generated.len(),
        generated.len(),
        percentile(&generated, 0.5),
        percentile(&generated, 0.95)
    );
    println!(
        "{:<28} a keystroke every {} ms, {} keystrokes: superseded {:.0}%, the rest answered in p50 {:.1} ms",
        "",
        interval.as_millis(),
        typed.total,
        100.0 * typed.superseded as f64 / typed.total.max(1) as f64,
        percentile(&typed.answered, 0.5),
    );
    if model_name.starts_with("smollm2") {
        let verdict = if p50 < TARGET_P50_MS { "met" } else { "NOT met" };
        println!("{:<28} target p50 < {TARGET_P50_MS} ms: {verdict}", "");
    }
    client.shutdown_and_exit();
    where_the_time_goes(&home);
}

/// Stops the daemon and summarises its per-completion log lines: prompt reuse and generation length.
fn where_the_time_goes(home: &Path) {
    let pid: i32 = std::fs::read_to_string(home.join("run/daemon.lock")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the daemon this run started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    eventually("the daemon to exit", || (!home.join("run/daemon.sock").exists()).then_some(()));
    let log = std::fs::read_to_string(home.join("logs/daemon.log")).unwrap();
    let field = |line: &str, name: &str| -> f64 {
        let at = line.find(&format!(" {name}=")).map(|i| i + name.len() + 2);
        at.and_then(|i| line[i..].split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
    };
    let rows: Vec<[f64; 5]> = log
        .lines()
        .filter(|l| l.contains(" completion ") || l.ends_with(" completion"))
        .map(|l| ["prompt", "reused", "generated", "prefill_ms", "total_ms"].map(|n| field(l, n)))
        .collect();
    let n = rows.len().max(1) as f64;
    let mean = |i: usize| rows.iter().map(|r| r[i]).sum::<f64>() / n;
    let recomputed = rows.iter().filter(|r| r[1] < r[0] / 2.0).count();
    println!(
        "{:<28} daemon: {} completions, prompt {:.0} tokens ({} mostly recomputed), mean prefill {:.0} ms, \
         mean {:.1} tokens generated, mean total {:.0} ms",
        "",
        rows.len(),
        mean(0),
        recomputed,
        mean(3),
        mean(2),
        mean(4)
    );
}

/// Takes the responses that arrive before `until`.
fn collect(client: &mut Client, in_flight: &mut Vec<(Value, Instant, bool)>, typed: &mut Typed, until: Instant) {
    while !in_flight.is_empty() {
        let Some(response) = client.next_response(until) else { return };
        let Some(index) = in_flight.iter().position(|(id, _, _)| id == &response["id"]) else { continue };
        let (_, sent, overtaken) = in_flight.remove(index);
        let suggestion = has_items(&response);
        if overtaken && !suggestion {
            typed.superseded += 1;
        } else {
            typed.answered.push(sent.elapsed().as_secs_f64() * 1000.0);
            typed.with_suggestion += usize::from(suggestion);
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let chars = env_or("CHARS", 240);
    let interval = Duration::from_millis(env_or("INTERVAL_MS", 150) as u64);
    let source = std::fs::read_to_string(repo_root().join("fixtures/tokenizer.py")).unwrap();
    let server = std::env::var("SERVER").unwrap_or_else(|_| "pylsp".into());
    println!("serving latency: proxy + {server} + daemon, typing fixtures/tokenizer.py");
    let smollm2 = fixture("smollm2-135m-instruct.gguf");
    run("smollm2-135m-instruct (Q4_1)", &smollm2, &source, chars, interval, "");
    // What asking the language server for definitions costs each keystroke (off by default).
    run("smollm2, definitions = 2", &smollm2, &source, chars, interval, "definitions = 2\n");
    run("tiny-qwen2 (F32, random)", &fixture("tiny-qwen2"), &source, chars, interval, "");
}
