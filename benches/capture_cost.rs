//! What recording costs, side by side in one run: the request path's cost per captured event
//! (`Recorder::shown`, a channel send) against a sink that does nothing, and the writer's sustained
//! insert rate into a real SQLite file (one transaction per row vs batched), redaction included.
//!
//! `cargo bench --bench capture_cost` (EVENTS=n). Target: < 50 µs per event on the request path.

use std::time::Instant;

use marunochi::capture::Recorder;
use marunochi::lsp::mirror::Position;
use marunochi::redact;
use marunochi::serving::{CaptureSink, Suggestion};
use marunochi::store::{Shown, Store};

struct Nothing;

impl CaptureSink for Nothing {
    fn shown(&mut self, _: &Suggestion) {}
    fn accepted(&mut self, _: &str) {}
    fn feedback(&mut self, _: Option<&str>, _: i64, _: Option<&str>) {}
}

fn suggestion(i: usize) -> Suggestion {
    Suggestion {
        id: format!("bench-{i}"),
        uri: "file:///p/src/module.py".into(),
        language: "python".into(),
        position: Position { line: 120, character: 14 },
        offset: 4000,
        word_start: Position { line: 120, character: 11 },
        word: "fib".into(),
        kind: "inline",
        text: "onacci(n - 1) + fibonacci(n - 2)".into(),
        model_version: "qwen2.5-coder-1.5b+python/v3".into(),
        confidence: -0.3,
        prefix: "def fibonacci(n):\n    return fib\n".repeat(300),
        suffix: "\nprint(fibonacci(10))\n".repeat(100),
        context_files: vec!["src/util.py".into()],
        sources: vec!["open_files"],
        recent_edits: Vec::new(),
        version: 7,
    }
}

fn per_event_us(sink: &mut dyn CaptureSink, events: &[Suggestion]) -> f64 {
    let started = Instant::now();
    for s in events {
        sink.shown(s);
    }
    started.elapsed().as_secs_f64() * 1e6 / events.len() as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let events: Vec<Suggestion> = (0..n).map(suggestion).collect();
    let dir = tempfile::tempdir().unwrap();

    let store = Store::open(&dir.path().join("path.db")).unwrap();
    let mut recorder = Recorder::spawn(
        store,
        "bench".into(),
        std::time::Duration::from_secs(120),
        Box::new(marunochi::jobs::WriterJobs::new(0.67)),
    );
    let baseline = per_event_us(&mut Nothing, &events);
    let recorded = per_event_us(&mut recorder, &events);
    println!(
        "request path per event: recorder {recorded:.2} µs, no-op sink {baseline:.2} µs (added {:.2} µs; target < 50 µs)",
        recorded - baseline
    );
    drop(recorder);

    let redact_started = Instant::now();
    for s in events.iter().take(200) {
        std::hint::black_box(redact::redact(&s.prefix, &s.uri));
    }
    let redact_us = redact_started.elapsed().as_secs_f64() * 1e6 / 200.0;

    let rows: Vec<Shown> = events.iter().map(|s| Recorder::shown_row(s, "bench", "user", 1_764_000_000_000)).collect();
    let mut single = Store::open(&dir.path().join("single.db")).unwrap();
    let started = Instant::now();
    for row in &rows {
        single.batch(|b| b.shown(row)).unwrap();
    }
    let single_rate = n as f64 / started.elapsed().as_secs_f64();
    let mut batched = Store::open(&dir.path().join("batched.db")).unwrap();
    let started = Instant::now();
    for chunk in rows.chunks(100) {
        batched.batch(|b| chunk.iter().try_for_each(|row| b.shown(row))).unwrap();
    }
    let batched_rate = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "writer: {single_rate:.0} rows/s one transaction each, {batched_rate:.0} rows/s in batches of 100 \
         ({:.1}x); redaction {redact_us:.0} µs per 10 KB document window",
        batched_rate / single_rate
    );
}
