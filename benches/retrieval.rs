//! What repository snippets cost (`[serving] repository_snippets`, `marunochi::retrieve`) on a
//! large real tree: the time and memory to index 5 000 source files, and the time one search adds
//! to a suggestion, next to the time a whole index rebuild would take.
//!
//! `cargo bench --bench retrieval` indexes Python's own library (the `python3` on `PATH`: its
//! standard library and site-packages, real code on every machine that runs the tests);
//! ROOT=dir indexes another tree, FILES=n how many of its files (default 5 000), QUERIES=n how many
//! cursors (default 500, each the lines before a function's body, as in an editor).

use std::path::PathBuf;
use std::time::Instant;

use marunochi::retrieve::{self, Index};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

#[allow(dead_code)] // the benchmark uses a part of the tests' helpers
#[path = "../tests/it/common.rs"]
mod common;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn python_library() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .expect("python3 on PATH (or ROOT=dir)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn main() {
    let root = std::env::var_os("ROOT").map_or_else(python_library, PathBuf::from);
    let wanted = common::env_or("FILES", 5000);
    let queries = common::env_or("QUERIES", 500);
    let mut files = retrieve::source_files(std::slice::from_ref(&root));
    files.truncate(wanted);

    let before = rss_kib();
    let started = Instant::now();
    let mut index = Index::default();
    for path in &files {
        index.update(path);
    }
    let build = started.elapsed().as_secs_f64();
    let grown_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;

    // Cursors at the start of function bodies: the lines of a file up to a `def`/`fn` line.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut prefixes = Vec::new();
    while prefixes.len() < queries {
        let path = files.choose(&mut rng).expect("files to index");
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let heads: Vec<usize> = text
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| {
                let line = text[i..].trim_start();
                line.starts_with("def ") || line.starts_with("fn ") || line.starts_with("pub fn ")
            })
            .collect();
        if heads.is_empty() {
            continue;
        }
        let head = heads[rng.random_range(0..heads.len())];
        let end = text[head..].find('\n').map_or(text.len(), |i| head + i + 1);
        prefixes.push((path.clone(), text[..end].to_owned()));
    }
    let mut search_ms = Vec::with_capacity(prefixes.len());
    let mut found = 0;
    for (path, prefix) in &prefixes {
        let asked = Instant::now();
        let hits = index.search(prefix, 2, |p, _| p == path);
        search_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
        found += usize::from(!hits.is_empty());
    }
    search_ms.sort_by(f64::total_cmp);
    let p50 = common::percentile(&search_ms, 0.5);

    // One file changed on disk: what the watcher's update of one file costs.
    let mut update_ms: Vec<f64> = files
        .iter()
        .take(200)
        .map(|path| {
            let asked = Instant::now();
            index.update(path);
            asked.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    update_ms.sort_by(f64::total_cmp);

    println!("\nrepository snippets over {} ({} source files)", root.display(), files.len());
    println!("index: {} functions, built in {build:.1} s on one thread, +{grown_mib:.0} MiB resident", index.len());
    println!(
        "search: p50 {p50:.2} ms, p95 {:.2} ms over {} cursors ({found} found a snippet); \
         one file re-read: p50 {:.2} ms",
        common::percentile(&search_ms, 0.95),
        search_ms.len(),
        common::percentile(&update_ms, 0.5),
    );
    println!("search p50 / full rebuild: {:.5} (the index is never rebuilt per request)", p50 / (build * 1000.0));
}
