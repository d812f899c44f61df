//! Retention sweep over 10 k tracked suggestions in 1 k generated Python files (target < 1 s),
//! side by side with the floor of merely reading those files; and the workspace watcher's CPU use
//! while nothing changes (target ≈ 0). Run: `cargo bench --bench retention_sweep`
//! (FILES=n, PER_FILE=n).

use std::path::Path;
use std::time::{Duration, Instant};

use marunochi::quality::StaticAnalysis;
use marunochi::store::{Action, Decided, Shown, Store};

const SHOWN_AT_MS: i64 = 1_767_225_600_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn function(file: usize, i: usize) -> (String, String) {
    let code =
        format!("total_{file}_{i} = price_{i} * quantity + shipping_{file}\n    return round(total_{file}_{i}, 2)");
    (format!("def cost_{i}(price_{i}, quantity, shipping_{file}):\n    {code}\n\n\n"), code)
}

fn shown(id: &str, uri: &str) -> Shown {
    Shown {
        id: id.into(),
        shown_at_ms: SHOWN_AT_MS,
        session_id: "bench".into(),
        user_id: "bench".into(),
        file_path: uri.into(),
        language: "python".into(),
        line: 0,
        character: 0,
        suggestion: String::new(),
        suggestion_type: "inline",
        model_version: "m".into(),
        confidence: 0.0,
        prompt_prefix: String::new(),
        prompt_suffix: String::new(),
        context_files: Vec::new(),
        context_sources: Vec::new(),
        recent_edits: "[]".into(),
        document_version: 1,
    }
}

fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn main() {
    let files = env("FILES", 1000);
    let per_file = env("PER_FILE", 10);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspace");
    let db = dir.path().join("marunochi.db");
    let mut store = Store::open(&db).unwrap();
    for f in 0..files {
        let path = root.join(format!("pkg{}/module_{f}.py", f % 20));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let functions: Vec<(String, String)> = (0..per_file).map(|i| function(f, i)).collect();
        let text: String = functions.iter().map(|(text, _)| text.as_str()).collect();
        std::fs::write(&path, &text).unwrap();
        let uri = format!("file://{}", path.display());
        store
            .batch(|b| {
                for (i, (_, code)) in functions.iter().enumerate() {
                    let id = format!("{f}-{i}");
                    let start = text.find(code.as_str()).unwrap();
                    let region = start..start + code.len();
                    let (anchor, analysis) =
                        marunochi::retention::anchor(&path, Some(&root), "python", &text, region.clone());
                    let outcome = Decided {
                        id: &id,
                        action: Action::Accepted,
                        time_to_action_ms: Some(1000),
                        final_code: Some(code),
                        shown_ms: Some(1000),
                        region: Some(region),
                        anchor: Some(&anchor),
                        analysis: serde_json::to_string(&StaticAnalysis { syntax: analysis, lint: None }).ok(),
                        ..Decided::default()
                    };
                    b.shown(&shown(&id, &uri))?;
                    b.outcome(&outcome)?;
                }
                Ok(())
            })
            .unwrap();
    }
    drop(store);
    let tracked = files * per_file;

    // The floor: reading every file once.
    let started = Instant::now();
    let mut bytes = 0;
    for entry in walk(&root) {
        bytes += std::fs::read(entry).unwrap().len();
    }
    let read_all = started.elapsed();

    // One sweep with one check due per suggestion (the 7 d one), as a nightly catch-up meets them.
    let started = Instant::now();
    let (report, rescored) = marunochi::jobs::catch_up(&db, SHOWN_AT_MS + 8 * 86_400_000 - 1, 0.67).unwrap();
    let sweep = started.elapsed();
    assert_eq!(report.checked, tracked * 5, "every 30 s … 7 d check was due");
    println!(
        "retention sweep: {tracked} suggestions in {files} files ({} KB), {} checks: {:.0} ms (target < 1000 ms); \
         reading the files alone {:.0} ms (sweep/read {:.1}x); {rescored} scores updated",
        bytes / 1024,
        report.checked,
        sweep.as_secs_f64() * 1000.0,
        read_all.as_secs_f64() * 1000.0,
        sweep.as_secs_f64() / read_all.as_secs_f64(),
    );

    // The watcher over the same tree, idle.
    let setup = Instant::now();
    let watcher = marunochi::watch::watch(std::slice::from_ref(&root), |_| {}).unwrap();
    let setup = setup.elapsed();
    let (cpu_before, wall_before) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu = cpu_time() - cpu_before;
    let wall = wall_before.elapsed();
    drop(watcher);
    println!(
        "watcher: {} directories watched in {:.0} ms; idle for {:.1} s: {:.2} ms CPU ({:.4}% of one core; target ≈ 0)",
        walk_dirs(&root),
        setup.as_secs_f64() * 1000.0,
        wall.as_secs_f64(),
        idle_cpu.as_secs_f64() * 1000.0,
        100.0 * idle_cpu.as_secs_f64() / wall.as_secs_f64(),
    );
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

fn walk_dirs(root: &Path) -> usize {
    1 + std::fs::read_dir(root).unwrap().flatten().filter(|e| e.file_type().unwrap().is_dir()).count()
}
