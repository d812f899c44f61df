//! General code every machine with the language installed has — Python's standard library
//! sources, the Rust toolchain's `library/` sources (the `rust-src` component). The gate measures
//! forgetting on a fixed spread of its files (`eval::general`); curation may mix functions of the
//! other files into training against forgetting (`curate`'s `general_share`), so that what the
//! gate measures is never trained on.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files scored, spread evenly over the sorted list.
const FILES: usize = 16;
/// Files outside this size range say little (stubs) or cost much.
const SIZES: std::ops::Range<u64> = 2_000..200_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Corpus {
    /// What it is, for the report (`Python 3.11 standard library (/usr/lib/python3.11)`).
    pub name: String,
    /// The files the gate scores.
    pub files: Vec<PathBuf>,
    /// Every other file of a useful size, sorted: what training may rehearse.
    pub others: Vec<PathBuf>,
}

/// The language's general corpus on this machine, or why there is none.
pub fn general(language: &str) -> Result<Corpus, String> {
    let (name, root, extension) = match language {
        "python" => {
            let python = find_python().ok_or("python3 is not on PATH")?;
            let dir = output(&python, &["-I", "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
                .ok_or("python3 does not say where its standard library is")?;
            (format!("the Python standard library ({dir})"), PathBuf::from(dir), "py")
        }
        "rust" => {
            let sysroot = output(Path::new("rustc"), &["--print", "sysroot"]).ok_or("rustc is not on PATH")?;
            let library = Path::new(&sysroot).join("lib/rustlib/src/rust/library");
            if !library.is_dir() {
                return Err(format!(
                    "the Rust library sources are not installed ({} is missing: `rustup component add rust-src`)",
                    library.display()
                ));
            }
            (format!("the Rust library sources ({})", library.display()), library, "rs")
        }
        other => return Err(format!("no general corpus is known for {other}")),
    };
    let mut all = Vec::new();
    collect(&root, extension, &mut all);
    all.sort();
    if all.is_empty() {
        return Err(format!("no .{extension} files of {SIZES:?} bytes under {}", root.display()));
    }
    let step = (all.len() / FILES).max(1);
    let (mut files, mut others) = (Vec::new(), Vec::new());
    for (i, file) in all.into_iter().enumerate() {
        if i % step == 0 && files.len() < FILES { files.push(file) } else { others.push(file) }
    }
    Ok(Corpus { name, files, others })
}

/// How much of a corpus file is read: the first 512 tokens the measures score are well inside
/// it, and a file may run to 200 KB.
const BEGINNING: u64 = 16 * 1024;

/// The beginning of a corpus file as text (a character cut at the end is replaced): what the gate
/// (`eval::general`) and training's checks score.
pub fn beginning(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(BEGINNING).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `python3` on `PATH`.
pub fn find_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("python3")).find(|p| p.is_file())
}

fn output(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Source files below `dir` of a useful size, tests and vendored packages left out.
fn collect(dir: &Path, extension: &str, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if !matches!(name.as_str(), "test" | "tests" | "site-packages" | "__pycache__" | "benches" | "idlelib") {
                collect(&path, extension, into);
            }
        } else if kind.is_file()
            && path.extension().is_some_and(|e| e == extension)
            && entry.metadata().is_ok_and(|m| SIZES.contains(&m.len()))
        {
            into.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_corpus_is_the_standard_library_spread_evenly() {
        let Ok(corpus) = general("python") else {
            panic!("python3 is installed wherever the tests run (the test dependencies need it)")
        };
        assert_eq!(corpus.files.len(), FILES, "{:?}", corpus.files);
        assert!(corpus.files.iter().all(|f| f.extension().unwrap() == "py"));
        assert!(corpus.files.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        assert_eq!(super::general("python").unwrap().files, corpus.files, "the same files every time");
        assert!(corpus.others.len() > 100, "{}", corpus.others.len());
        assert!(corpus.others.iter().all(|f| !corpus.files.contains(f)), "what is rehearsed is never scored");
        let error = super::general("cobol").unwrap_err();
        assert!(error.contains("cobol"), "{error}");
    }
}
