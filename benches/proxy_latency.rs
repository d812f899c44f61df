//! Added latency of the proxy, measured side by side in one run: the same requests go to a server
//! started directly and to the same server behind `marunochi proxy`, interleaved, so machine noise
//! hits both alike. Prints p50/p99 of each and the difference.
//!
//! `./scripts/test-deps.sh && cargo bench --bench proxy_latency` (ROUNDS=n to change the count).

#[allow(dead_code)] // the benchmark uses a part of the tests' helpers
#[path = "../tests/it/common.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};

const TARGET_P50_MS: f64 = 0.1;
const TARGET_P99_MS: f64 = 0.5;

struct Row {
    name: &'static str,
    direct: Vec<f64>,
    proxied: Vec<f64>,
}

impl Row {
    fn print(&mut self) -> (f64, f64) {
        self.direct.sort_by(f64::total_cmp);
        self.proxied.sort_by(f64::total_cmp);
        let (d50, d99) = (percentile(&self.direct, 0.5), percentile(&self.direct, 0.99));
        let (p50, p99) = (percentile(&self.proxied, 0.5), percentile(&self.proxied, 0.99));
        println!(
            "{:<22} n={:<5} direct p50 {:>7.3} ms p99 {:>7.3} | proxied p50 {:>7.3} p99 {:>7.3} | added p50 {:>+7.3} ms p99 {:>+7.3} ms (ratio p50 {:.3})",
            self.name,
            self.direct.len(),
            d50,
            d99,
            p50,
            p99,
            p50 - d50,
            p99 - d99,
            p50 / d50
        );
        (p50 - d50, p99 - d99)
    }
}

fn timed(client: &mut Client, method: &str, params: &Value) -> f64 {
    let start = Instant::now();
    let response = client.request(method, params.clone());
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    assert!(response.get("error").is_none(), "{method}: {response}");
    elapsed
}

/// How the second column's server is reached.
#[derive(Clone, Copy, PartialEq)]
enum Second {
    Proxied,
    /// Direct too: an A/A run that shows how far two identical servers differ by themselves.
    Direct,
}

fn measure(
    name: &'static str,
    server: &[String],
    (root, home): (&Path, &Path),
    rounds: usize,
    requests: &[(&str, Value)],
    second: Second,
) -> Row {
    let mut direct = Client::spawn(direct_command(server));
    let mut proxied = Client::spawn(match second {
        Second::Proxied => proxy_command(home, &[], server),
        Second::Direct => direct_command(server),
    });
    let main = root.join("main.py");
    let text = std::fs::read_to_string(&main).unwrap();
    for client in [&mut direct, &mut proxied] {
        client.initialize(root, &["utf-16"]);
        open(client, &file_uri(&main), &text);
        for (method, params) in requests {
            for _ in 0..20 {
                timed(client, method, params); // warm-up: imports, caches, first analysis
            }
        }
    }
    let mut row = Row { name, direct: Vec::new(), proxied: Vec::new() };
    for round in 0..rounds {
        let (method, params) = &requests[round % requests.len()];
        // Alternate who goes first so neither side always runs right after the other.
        if round % 2 == 0 {
            row.direct.push(timed(&mut direct, method, params));
            row.proxied.push(timed(&mut proxied, method, params));
        } else {
            row.proxied.push(timed(&mut proxied, method, params));
            row.direct.push(timed(&mut direct, method, params));
        }
    }
    direct.shutdown_and_exit();
    proxied.shutdown_and_exit();
    row
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(400);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("main.py"),
        "import os\n\n\ndef greet(name):\n    return 'hi ' + name\n\n\ngreet('x')\nos.path.jo\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    let uri = file_uri(&root.join("main.py"));
    let hover = json!({"textDocument": {"uri": uri}, "position": {"line": 7, "character": 2}});
    let completion = json!({"textDocument": {"uri": uri}, "position": {"line": 8, "character": 10}});
    let log = dir.path().join("scripted.log");
    std::fs::write(&log, "").unwrap();

    println!("marunochi proxy latency, {rounds} rounds per row (direct vs proxied, interleaved)");
    let dirs = (root.as_path(), home.as_path());
    let big =
        json!({"items": vec![json!({"label": "completion_item_label", "kind": 6, "detail": "some detail"}); 2500]});
    let mut rows = vec![
        measure(
            "echo (scripted)",
            &scripted_server(&log, None),
            dirs,
            rounds * 5,
            &[("test/echo", json!(1))],
            Second::Proxied,
        ),
        measure(
            "echo 200 KB (scripted)",
            &scripted_server(&log, None),
            dirs,
            rounds,
            &[("test/echo", big)],
            Second::Proxied,
        ),
        measure("pylsp hover", &pylsp(), dirs, rounds, &[("textDocument/hover", hover.clone())], Second::Proxied),
        measure(
            "pylsp completion",
            &pylsp(),
            dirs,
            rounds,
            &[("textDocument/completion", completion.clone())],
            Second::Proxied,
        ),
        measure(
            "pylsp completion A/A",
            &pylsp(),
            dirs,
            rounds,
            &[("textDocument/completion", completion)],
            Second::Direct,
        ),
    ];
    let mut added = Vec::new();
    for row in &mut rows {
        added.push(row.print());
    }
    let verdict = |value: f64, target: f64| if value < target { "meets" } else { "MISSES" };
    println!(
        "target on the proxy's own overhead (small echo row): added p50 {:.3} ms < {TARGET_P50_MS} ms {}, added p99 {:.3} ms < {TARGET_P99_MS} ms {}",
        added[0].0,
        verdict(added[0].0, TARGET_P50_MS),
        added[0].1,
        verdict(added[0].1, TARGET_P99_MS)
    );
    println!(
        "pylsp rows: compare their added p50 with the A/A row, which is the difference between two identical direct servers (noise floor)"
    );
}
