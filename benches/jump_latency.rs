//! Time to the first suggestion after the cursor jumps to another place in a big real file:
//! more-itertools' `more_itertools/more.py` (5 564 lines) at the replay benchmark's pinned commit,
//! through `marunochi lsp` and the daemon it starts, as an editor with our plugin meets it.
//!
//! Each jump: the plugin says where the cursor came to rest (`marunochi/cursor`, at the end of a
//! line in a function body, far from the last place), the user reads for DWELL_MS, then opens a
//! new line (Vim's `o` below — what a warm-up expects and makes a suggestion for — on half the
//! jumps, `O` above on the other half; one change with the editor's indentation) and the editor
//! asks for an inline completion there; that request's latency is the time to the first
//! suggestion. Then a short move: the cursor goes 3 to 6 lines further down in the same
//! function, and a line is opened below. Every edit is undone after its request, so each place
//! sees the file as published.
//!
//! Cold is `warm_ahead = false` (the prompt is computed when the keystroke comes); warm is the
//! default. Each run has its own home and daemon. Printed per model and dwell: p50 / p95
//! keystroke → suggestion for each kind, and for the requests the daemon served the median share
//! of the prompt it found computed, prefill time and tokens generated (from its log), cold and
//! warm side by side with their ratio.
//!
//! `./scripts/test-deps.sh && ./scripts/replay-repos.sh && cargo bench --bench jump_latency`
//! (JUMPS=n places, DWELL_MS=a,b,… reading times). Target with SmolLM2 on 2 cores: after a
//! jump, p50 < 300 ms and p95 < 1 s.

#[allow(dead_code)] // the benchmark uses a part of the tests' helpers
#[path = "../tests/it/common.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const PINNED: &str = "2fe1b2eeb9d75f994113fe3ac76d14b6bcd6fb10";
const TARGET_P50_MS: f64 = 300.0;
const TARGET_P95_MS: f64 = 1000.0;

/// A place to type at: the end of line `line`, whose indentation is `indent`.
#[derive(Clone, Copy)]
struct Place {
    line: usize,
    indent: usize,
}

/// Lines of code inside function bodies (indented, not blank, not a comment, not in a docstring).
fn code_lines(lines: &[&str]) -> Vec<Place> {
    let mut in_docstring = false;
    let mut places = Vec::new();
    for (line, text) in lines.iter().enumerate() {
        let quotes = text.matches("\"\"\"").count();
        let was = in_docstring;
        if quotes % 2 == 1 {
            in_docstring = !in_docstring;
        }
        let indent = text.len() - text.trim_start().len();
        let trimmed = text.trim();
        if was || quotes > 0 || indent < 4 || trimmed.is_empty() || trimmed.starts_with('#') || trimmed.ends_with('\\')
        {
            continue;
        }
        places.push(Place { line, indent });
    }
    places
}

/// JUMPS places spread over the file (a fixed sequence), each with a short move after it: 3 to 6
/// code lines further down, in the same function (same indentation or deeper, no line at column 0
/// in between).
fn itinerary(lines: &[&str], jumps: usize) -> Vec<(Place, Place)> {
    let places = code_lines(lines);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut chosen: Vec<(Place, Place)> = Vec::new();
    while chosen.len() < jumps {
        let i = next() % places.len();
        let jump = places[i];
        let far = chosen.last().is_none_or(|(last, _)| last.line.abs_diff(jump.line) > 300);
        if jump.line < 200 || !far {
            continue;
        }
        let step = 3 + next() % 4;
        let Some(&near) = places.get(i + step) else { continue };
        let same_function = (jump.line..near.line).all(|l| lines[l].is_empty() || lines[l].starts_with(' '));
        if same_function && near.line - jump.line < 20 {
            chosen.push((jump, near));
        }
    }
    chosen
}

struct Run {
    /// Keystroke → suggestion after a jump: a line opened below (what a warm-up expects), a line
    /// opened above (what it does not); after a short move, a line opened below.
    below: Vec<f64>,
    above: Vec<f64>,
    moves: Vec<f64>,
    with_suggestion: usize,
    /// Per request the daemon served: prompt tokens, reused tokens, prefill ms, generated tokens
    /// (from its log; requests answered by a suggestion made ahead never reach it).
    served: Vec<[f64; 4]>,
    /// Warm-ups that ran to their end, and suggestions made ahead.
    warmed: usize,
    ahead: usize,
}

/// How editors indent a line opened below `line`: as it is, a level deeper after a block opener.
fn indent_below(line: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let deeper = if line.trim_end().ends_with([':', '{', '(', '[']) { "    " } else { "" };
    format!("{indent}{deeper}")
}

fn run(model: &Path, lines: &[&str], itinerary: &[(Place, Place)], warm: bool, dwell: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_config(
        dir.path(),
        &format!("[daemon]\nidle_exit_secs = 10\n[serving]\nwarm_ahead = {warm}\nown_examples = 0\n"),
    );
    let root = workspace(dir.path());
    let uri = file_uri(&root.join("more_itertools/more.py"));
    let mut command = lsp_command(&home);
    command.args(["--model", &model.to_string_lossy()]);
    let mut client = Client::spawn(command);
    client.initialize(&root, &[]);
    let text = lines.join("\n");
    open(&mut client, &uri, &text);
    // The daemon starts and loads the model on the first request; not counted.
    inline(&mut client, &uri, 10, 0);
    let mut version = 1;
    let mut result = Run {
        below: Vec::new(),
        above: Vec::new(),
        moves: Vec::new(),
        with_suggestion: 0,
        served: Vec::new(),
        warmed: 0,
        ahead: 0,
    };
    for (i, &(jump, near)) in itinerary.iter().enumerate() {
        let jump_below = i % 2 == 0;
        for (place, below, times) in [
            (jump, jump_below, if jump_below { &mut result.below } else { &mut result.above }),
            (near, true, &mut result.moves),
        ] {
            let line = lines[place.line];
            client.notify("marunochi/cursor", position(&uri, place.line as u32, line.len() as u32));
            std::thread::sleep(dwell);
            // Vim's `o` (Enter at the line's end) or `O`, with the editor's indentation.
            let (at, typed, cursor) = if below {
                let indent = indent_below(line);
                (
                    json!({"line": place.line, "character": line.len()}),
                    format!("\n{indent}"),
                    (place.line + 1, indent.len()),
                )
            } else {
                (
                    json!({"line": place.line, "character": 0}),
                    format!("{}\n", " ".repeat(place.indent)),
                    (place.line, place.indent),
                )
            };
            version += 1;
            client.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": version},
                       "contentChanges": [{"range": {"start": at, "end": at}, "text": typed}]}),
            );
            let started = Instant::now();
            let response = inline(&mut client, &uri, cursor.0 as u32, cursor.1 as u32);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            let items = response["result"]["items"].as_array().map_or(0, Vec::len);
            result.with_suggestion += usize::from(items > 0);
            version += 1;
            let inserted_end = if below {
                json!({"line": cursor.0, "character": cursor.1})
            } else {
                json!({"line": place.line + 1, "character": 0})
            };
            client.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": version},
                       "contentChanges": [{"range": {"start": at, "end": inserted_end}, "text": ""}]}),
            );
            client.notifications.clear();
        }
    }
    client.shutdown_and_exit();
    stop_daemon(&home);
    let log = std::fs::read_to_string(home.join("logs/daemon.log")).unwrap_or_default();
    let field = |line: &str, name: &str| -> f64 {
        let at = line.find(&format!(" {name}=")).map(|i| i + name.len() + 2);
        at.and_then(|i| line[i..].split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
    };
    let completions: Vec<&str> = log.lines().filter(|l| l.contains(" completion ")).collect();
    // The first completion is the one that started the daemon.
    result.served = completions
        .iter()
        .filter(|l| l.contains("served"))
        .skip(1)
        .map(|l| ["prompt", "reused", "prefill_ms", "generated"].map(|n| field(l, n)))
        .collect();
    result.ahead = completions.iter().filter(|l| l.contains("ahead")).count();
    result.warmed = log.lines().filter(|l| l.contains(" warmed ")).count();
    result
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn median(run: &Run, of: impl Fn(&[f64; 4]) -> f64) -> f64 {
    percentile(&sorted(run.served.iter().map(of).collect()), 0.5)
}

fn report(name: &str, model: &Path, lines: &[&str], itinerary: &[(Place, Place)], dwells: &[u64]) {
    println!(
        "\n{name}: {} jumps (half then open a line below, half above), each followed by a short move",
        itinerary.len()
    );
    println!(
        "{:<22} {:>8} {:>17} {:>17} {:>17} {:>7} {:>8} {:>7} {:>13}",
        "", "dwell", "jump, below", "jump, above", "move, below", "reused", "prefill", "tokens", "warmed/ahead"
    );
    for &dwell in dwells {
        let runs = [false, true].map(|warm| run(model, lines, itinerary, warm, Duration::from_millis(dwell)));
        let p = |values: &[f64], q: f64| percentile(&sorted(values.to_vec()), q);
        for (label, run) in ["cold (warm_ahead off)", "warm (default)"].iter().zip(&runs) {
            println!(
                "{label:<22} {:>5} ms {:>6.0} / {:>5.0} ms {:>6.0} / {:>5.0} ms {:>6.0} / {:>5.0} ms {:>6.0}% {:>5.0} ms {:>7.0} {:>6} / {:<5}",
                dwell,
                p(&run.below, 0.5),
                p(&run.below, 0.95),
                p(&run.above, 0.5),
                p(&run.above, 0.95),
                p(&run.moves, 0.5),
                p(&run.moves, 0.95),
                100.0 * median(run, |row| row[1] / row[0].max(1.0)),
                median(run, |row| row[2]),
                median(run, |row| row[3]),
                run.warmed,
                run.ahead,
            );
        }
        let jumps = |run: &Run| [run.below.clone(), run.above.clone()].concat();
        let (cold, warm) = (jumps(&runs[0]), jumps(&runs[1]));
        let verdict = if p(&warm, 0.5) < TARGET_P50_MS && p(&warm, 0.95) < TARGET_P95_MS { "met" } else { "NOT met" };
        println!(
            "{:<22} all jumps p50/p95: cold {:.0} / {:.0} ms, warm {:.0} / {:.0} ms ({:.1}x / {:.1}x); target p50 < \
             {TARGET_P50_MS} ms, p95 < {TARGET_P95_MS} ms: {verdict}; {} of {} requests had a suggestion (warm)",
            "",
            p(&cold, 0.5),
            p(&cold, 0.95),
            p(&warm, 0.5),
            p(&warm, 0.95),
            p(&cold, 0.5) / p(&warm, 0.5),
            p(&cold, 0.95) / p(&warm, 0.95),
            runs[1].with_suggestion,
            2 * itinerary.len(),
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mirror = repo_root().join(".test-deps/replay/more-itertools.git");
    let shown = std::process::Command::new("git")
        .arg("-C")
        .arg(&mirror)
        .args(["show", &format!("{PINNED}:more_itertools/more.py")])
        .output()
        .expect("git runs");
    assert!(shown.status.success(), "no more-itertools mirror at {}: run ./scripts/replay-repos.sh", mirror.display());
    let source = String::from_utf8(shown.stdout).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let jumps = env_or("JUMPS", 12);
    let dwells: Vec<u64> = std::env::var("DWELL_MS")
        .unwrap_or_else(|_| "1000,2000,4000".into())
        .split(',')
        .map(|d| d.trim().parse().expect("DWELL_MS is a list of milliseconds"))
        .collect();
    let itinerary = itinerary(&lines, jumps);
    println!(
        "jump latency: marunochi lsp + daemon, more-itertools more.py ({} lines) at {}",
        lines.len(),
        &PINNED[..12]
    );
    report("smollm2-135m-instruct (Q4_1)", &fixture("smollm2-135m-instruct.gguf"), &lines, &itinerary, &dwells);
    report("tiny-qwen2 (Q8_0, random)", &fixture("tiny-qwen2-q8_0.gguf"), &lines, &itinerary, &dwells);
}
