//! Test runs the user started themselves, read from the files they leave behind: pytest's cache
//! (`.pytest_cache/v/cache/lastfailed` and `nodeids`) and JUnit XML reports (pytest
//! `--junitxml`, cargo-nextest, jest-junit, Maven Surefire, Gradle, go-junit-report). Each becomes a
//! [`Run`] judging the suggestions accepted under its workspace root since the previous run there,
//! like `marunochi run` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quick_xml::events::Event;

use crate::clock::now_ms;
use crate::store::{Run, TestResults};

/// Reports larger than this are not read (logged): no real JUnit report of one run is near it.
const MAX_REPORT_BYTES: u64 = 32 * 1024 * 1024;
/// Failed test names kept in a run's summary.
const SUMMARY_FAILURES: usize = 20;

/// The test runs that the changed `paths` under `roots` record, one per report.
pub fn runs(paths: &[PathBuf], roots: &[PathBuf]) -> Vec<Run> {
    let mut runs = BTreeMap::new();
    for path in paths {
        let Some(root) = roots.iter().filter(|r| path.starts_with(r)).max_by_key(|r| r.as_os_str().len()) else {
            continue;
        };
        if let Some(project) = pytest_project(path) {
            // One pytest session rewrites both files of its cache: one run.
            runs.entry(project.to_path_buf()).or_insert_with(|| pytest_run(project, root));
        } else if path.extension().is_some_and(|e| e == "xml") {
            match junit_run(path, root) {
                Ok(Some(run)) => {
                    runs.insert(path.clone(), Some(run));
                }
                Ok(None) => {}
                Err(reason) => tracing::warn!(path = %path.display(), reason, "test report not read"),
            }
        }
    }
    runs.into_values().flatten().collect()
}

/// The directory pytest ran in, if `path` is one of the cache files it writes after a session.
fn pytest_project(path: &Path) -> Option<&Path> {
    let name = path.file_name()?.to_str()?;
    let cache = path.parent()?;
    let in_cache = cache.ends_with(".pytest_cache/v/cache") && matches!(name, "lastfailed" | "nodeids");
    in_cache.then(|| cache.parent()?.parent()?.parent()).flatten()
}

/// pytest's cache says which tests of the last session failed (`lastfailed`, written only when that
/// set changes) and which exist (`nodeids`, written after every session).
fn pytest_run(project: &Path, root: &Path) -> Option<Run> {
    let cache = project.join(".pytest_cache/v/cache");
    let read = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&crate::watch::read_text(&cache.join(name), MAX_REPORT_BYTES).ok()?).ok()
    };
    let failed: Vec<String> =
        read("lastfailed").and_then(|v| v.as_object().map(|o| o.keys().cloned().collect())).unwrap_or_default();
    let tests = read("nodeids").and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0).max(failed.len());
    if tests == 0 {
        return None;
    }
    let results = TestResults { tests, failures: failed.len(), errors: 0, skipped: 0, failed };
    Some(run_of(format!("pytest in {}", project.display()), root, results))
}

/// A JUnit XML report: `Ok(None)` when the XML file is something else.
fn junit_run(path: &Path, root: &Path) -> Result<Option<Run>, String> {
    let text = crate::watch::read_text(path, MAX_REPORT_BYTES)?;
    let Some(results) = parse_junit(&text)? else { return Ok(None) };
    let shown = path.strip_prefix(root).unwrap_or(path);
    Ok(Some(run_of(format!("JUnit report {}", shown.display()), root, results)))
}

fn run_of(command: String, root: &Path, results: TestResults) -> Run {
    let broken = results.failures + results.errors;
    let mut summary = format!(
        "{} tests: {} failed, {} errors, {} skipped",
        results.tests, results.failures, results.errors, results.skipped
    );
    for name in results.failed.iter().take(SUMMARY_FAILURES) {
        summary.push_str(&format!("\nFAILED {name}"));
    }
    let now = now_ms();
    Run {
        command,
        directory: root.display().to_string(),
        started_at_ms: now,
        finished_at_ms: now,
        exit_code: Some(i32::from(broken > 0)),
        summary,
        tests: Some(results),
    }
}

/// Counts the `<testcase>`s of a JUnit document and names those with a `<failure>` or `<error>`;
/// `Ok(None)` when the root element is not `<testsuites>` / `<testsuite>`.
fn parse_junit(text: &str) -> Result<Option<TestResults>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut results = TestResults::default();
    let mut depth = 0usize;
    let mut case: Option<String> = None;
    let mut case_failed = false;
    loop {
        let event = reader.read_event().map_err(|e| format!("not well-formed XML: {e}"))?;
        let (element, opens) = match &event {
            Event::Start(e) => (e.clone(), true),
            Event::Empty(e) => (e.clone(), false),
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if e.local_name().as_ref() == "testcase" {
                    finish_case(&mut results, &mut case, &mut case_failed);
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = element.local_name();
        let name: String = name.as_ref().to_owned();
        if depth == 0 && !matches!(name.as_str(), "testsuites" | "testsuite") {
            return Ok(None);
        }
        let attribute = |key: &str| {
            element
                .attributes()
                .flatten()
                .find(|a| a.key.local_name().as_ref() == key)
                .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
        };
        match name.as_str() {
            "testcase" => {
                results.tests += 1;
                let class = attribute("classname").filter(|c| !c.is_empty());
                let test = attribute("name").unwrap_or_default();
                case = Some(class.map_or(test.clone(), |c| format!("{c}::{test}")));
                case_failed = false;
                if !opens {
                    finish_case(&mut results, &mut case, &mut case_failed);
                }
            }
            "failure" | "error" if case.is_some() && !case_failed => {
                case_failed = true;
                if name == "failure" { results.failures += 1 } else { results.errors += 1 }
            }
            "skipped" if case.is_some() => results.skipped += 1,
            _ => {}
        }
        if opens {
            depth += 1;
        }
    }
    Ok(Some(results))
}

/// A `<testcase>` ended.
fn finish_case(results: &mut TestResults, case: &mut Option<String>, failed: &mut bool) {
    if let Some(name) = case.take()
        && *failed
    {
        results.failed.push(name);
    }
    *failed = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counts_failures_errors_and_skips_by_test_case() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
  <testcase classname="test_fib" name="test_small" time="0.001"/>
  <testcase classname="test_fib" name="test_big" time="0.002"><failure message="assert 5 == 8">trace</failure></testcase>
  <testcase classname="test_fib" name="test_io"><error message="boom"/></testcase>
  <testcase classname="test_fib" name="test_later"><skipped message="todo"/></testcase>
</testsuite></testsuites>"#;
        let results = parse_junit(xml).unwrap().unwrap();
        assert_eq!(
            results,
            TestResults {
                tests: 4,
                failures: 1,
                errors: 1,
                skipped: 1,
                failed: vec!["test_fib::test_big".into(), "test_fib::test_io".into()],
            }
        );
    }

    #[test]
    fn other_xml_is_not_a_report_and_broken_xml_says_why() {
        assert_eq!(parse_junit("<project><modelVersion>4</modelVersion></project>").unwrap(), None);
        let error = parse_junit("<testsuite><testcase name='a'></testsuite>").unwrap_err();
        assert!(error.contains("not well-formed"), "{error}");
    }
}
