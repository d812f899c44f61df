//! Interaction capture: every suggestion shown and what became of it, written to the store. Entry:
//! [`Recorder`] (the serving stage's [`CaptureSink`], writing off the request path on a thread of
//! its own).
//!
//! The outcome of each suggestion (accepted, partial, corrected with its diff, rejected with what
//! was typed instead, ignored) is inferred from the document edits by `classify.rs` on the writer
//! thread, which also anchors taken code (retention) and, after each pass, runs the background
//! jobs it was handed (`Background`: the retention checks, rescoring, drift). The language
//! server's diagnostics, `marunochi run` and the test reports found by the workspace watcher
//! (`signals.rs`) are the execution and static signals.

pub mod classify;
mod signals;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

mod run;
pub use run::{RunError, run_and_record};

use crate::clock::now_ms;
use crate::lsp::mirror::{Change, DocumentEvent};
use crate::quality::StaticAnalysis;
use crate::retention;
use crate::serving::{CaptureSink, Diagnostic, Suggestion};
use crate::store::{Anchor, Decided, Run, Shown, Store};
use classify::{Classifier, Edit, Outcome, Tracked};

enum Event {
    Shown(Box<Shown>, Tracked),
    Accepted {
        id: String,
        at_ms: i64,
    },
    Feedback {
        id: String,
        rating: i64,
        comment: Option<String>,
    },
    Document(DocumentEvent),
    Diagnostics(String, Vec<Diagnostic>),
    Cursor {
        uri: String,
        offset: usize,
    },
    /// A test run found on disk (pytest's cache, a JUnit report).
    Run(Run),
    /// The workspace roots (local directories) the editor opened.
    Workspace(Vec<PathBuf>),
    /// A file or directory of the workspace renamed on disk: anchors follow it.
    Renamed(PathBuf, PathBuf),
    /// The editor is shutting down: settle everything and answer once it is stored.
    Settle(mpsc::Sender<()>),
}

/// How long `shutdown` waits for the writer to store what it settled.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// Hands events to the writer thread: the request path only pays for copying the suggestion into a
/// channel; classification, redaction and SQLite happen on the writer.
pub struct Recorder {
    events: mpsc::Sender<Event>,
    session_id: String,
    user_id: String,
    /// Watches the workspace for test reports once its roots are known.
    watcher: Option<crate::watch::Watcher>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Recorder {
    /// Waits for the writer to settle and store what was sent: the process may exit right after.
    fn drop(&mut self) {
        // The watcher holds a sender too; the writer only sees the end once it is gone.
        drop(self.watcher.take());
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.events, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// What the writer runs after each pass, beside its own writes (the retention checks, rescoring
/// and drift: `jobs::WriterJobs`, which decides what is due).
pub trait Background: Send {
    /// `open_document`: a document's text as the editor has it, by path; `wrote`: this pass
    /// stored something; `closing`: the last pass, the proxy is going away.
    fn after_pass(
        &mut self,
        store: &mut Store,
        open_document: &dyn Fn(&Path) -> Option<String>,
        wrote: bool,
        closing: bool,
    );
}

impl Recorder {
    /// Starts the writer thread over `store`. It ends when the recorder is dropped, after settling
    /// and writing everything sent.
    /// `correction_window`: how long after acceptance an edit inside the code is a correction.
    pub fn spawn(
        store: Store,
        session_id: String,
        correction_window: Duration,
        background: Box<dyn Background>,
    ) -> Recorder {
        let (events, inbox) = mpsc::channel::<Event>();
        let writer = Writer {
            store,
            classifier: Classifier::new(correction_window.as_millis() as i64),
            documents: HashMap::new(),
            roots: Vec::new(),
            background,
        };
        let writer = std::thread::spawn(move || writer.run(inbox));
        Recorder { events, session_id, user_id: user_id(), watcher: None, writer: Some(writer) }
    }
}

/// The writer thread's state: the classifier, the open documents as the editor has them (for
/// anchors and retention checks of unsaved code) and the store.
struct Writer {
    store: Store,
    classifier: Classifier,
    /// URI → (language id, text).
    documents: HashMap<String, (String, String)>,
    roots: Vec<PathBuf>,
    background: Box<dyn Background>,
}

/// An outcome with where its code lives, when it was taken and its document known.
struct Settled {
    outcome: Outcome,
    anchor: Option<(Anchor, StaticAnalysis)>,
}

impl Writer {
    fn run(mut self, inbox: mpsc::Receiver<Event>) {
        loop {
            // A second without events still closes correction windows that ran out.
            let (first, gone) = match inbox.recv_timeout(Duration::from_secs(1)) {
                Ok(event) => (Some(event), false),
                Err(mpsc::RecvTimeoutError::Timeout) => (None, false),
                Err(mpsc::RecvTimeoutError::Disconnected) => (None, true),
            };
            let mut batch: Vec<Event> = first.into_iter().chain(inbox.try_iter()).collect();
            let mut settled = Vec::new();
            for event in &mut batch {
                let outcomes = self.handle(event);
                settled.extend(self.settle(outcomes));
                if let Event::Document(event) = event {
                    self.apply(event);
                    if event.last_of_notification
                        && let Some((_, text)) = self.documents.get(&event.uri)
                    {
                        let at_ms = millis(event.at);
                        let outcomes = self.classifier.changes_end(&event.uri, text, at_ms);
                        settled.extend(self.settle(outcomes));
                    }
                }
            }
            let outcomes = if gone { self.classifier.settle_all() } else { self.classifier.tick(now_ms()) };
            settled.extend(self.settle(outcomes));
            let wrote = !batch.is_empty() || !settled.is_empty();
            if wrote {
                write(&mut self.store, &batch, &settled);
            }
            // After the outcomes: a run judges what was settled before it.
            for event in &batch {
                match event {
                    Event::Run(run) => match self.store.record_run(run) {
                        Ok(judged) => tracing::info!(command = run.command, judged, "test run recorded"),
                        Err(error) => tracing::error!(%error, "could not record a test run"),
                    },
                    Event::Settle(stored) => drop(stored.send(())),
                    _ => {}
                }
            }
            let documents = &self.documents;
            let open_document = |path: &Path| {
                documents
                    .iter()
                    .find(|(uri, _)| crate::uri::to_path(uri).as_deref() == Some(path))
                    .map(|(_, d)| d.1.clone())
            };
            self.background.after_pass(&mut self.store, &open_document, wrote, gone);
            if gone {
                break;
            }
        }
    }

    fn handle(&mut self, event: &mut Event) -> Vec<Outcome> {
        let classifier = &mut self.classifier;
        match event {
            Event::Shown(_, tracked) => classifier.shown(tracked.clone()),
            Event::Accepted { id, at_ms } => {
                classifier.accept_command(id, *at_ms);
                Vec::new()
            }
            Event::Document(event) => classify_document(classifier, event),
            Event::Diagnostics(uri, list) => {
                classifier.diagnostics(uri, std::mem::take(list));
                Vec::new()
            }
            Event::Cursor { uri, offset } => classifier.cursor(uri, *offset),
            Event::Workspace(roots) => {
                self.roots = std::mem::take(roots);
                Vec::new()
            }
            Event::Renamed(from, to) => {
                match self.store.renamed(from, to) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(from = %from.display(), to = %to.display(), anchors = n, "renamed"),
                    Err(error) => tracing::error!(%error, "anchors not moved with a rename"),
                }
                Vec::new()
            }
            Event::Settle(_) => classifier.settle_all(),
            Event::Feedback { .. } | Event::Run(_) => Vec::new(),
        }
    }

    /// Anchors taken code in its document as it is now (before the event that settled it is
    /// applied: a close leaves the text it closed with).
    fn settle(&self, outcomes: Vec<Outcome>) -> Vec<Settled> {
        outcomes
            .into_iter()
            .map(|outcome| {
                let anchor = outcome.region.clone().and_then(|region| {
                    let (language, text) = self.documents.get(&outcome.uri)?;
                    let path = crate::uri::to_path(&outcome.uri)?;
                    let root = self.roots.iter().filter(|r| path.starts_with(r)).max_by_key(|r| r.as_os_str().len());
                    if region.end > text.len() {
                        return None;
                    }
                    let (anchor, syntax) =
                        retention::anchor(&path, root.map(PathBuf::as_path), language, text, region.clone());
                    let lint = crate::quality::lint::external(language, &path, text, region);
                    Some((anchor, StaticAnalysis { syntax, lint }))
                });
                Settled { outcome, anchor }
            })
            .collect()
    }

    /// Keeps the open documents' text in step with the editor.
    fn apply(&mut self, event: &DocumentEvent) {
        match &event.change {
            Change::Opened { language_id, text } => {
                self.documents.insert(event.uri.clone(), (language_id.clone(), text.clone()));
            }
            Change::Edited { start, removed, inserted } => {
                if let Some((_, text)) = self.documents.get_mut(&event.uri)
                    && text.is_char_boundary(*start)
                    && text.is_char_boundary(start + removed.len())
                {
                    text.replace_range(*start..start + removed.len(), inserted);
                }
            }
            Change::Closed => {
                self.documents.remove(&event.uri);
            }
        }
    }
}

/// A document event's time, in ms since the epoch (as the classifier counts it).
fn millis(at: std::time::SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn classify_document(classifier: &mut Classifier, event: &DocumentEvent) -> Vec<Outcome> {
    let at_ms = millis(event.at);
    match &event.change {
        Change::Edited { start, removed, inserted } => classifier.edit(&Edit {
            uri: &event.uri,
            start: *start,
            removed_len: removed.len(),
            inserted,
            at_ms,
            more: !event.last_of_notification,
        }),
        Change::Closed => classifier.closed(&event.uri, Some(at_ms)),
        Change::Opened { .. } => Vec::new(),
    }
}

fn write(store: &mut Store, batch: &[Event], settled: &[Settled]) {
    let result = store.batch(|b| {
        for event in batch {
            match event {
                Event::Shown(shown, _) => b.shown(shown)?,
                Event::Accepted { id, at_ms } => b.accepted(id, *at_ms)?,
                Event::Feedback { id, rating, comment } => b.feedback(id, *rating, comment.as_deref())?,
                Event::Document(_)
                | Event::Diagnostics(..)
                | Event::Cursor { .. }
                | Event::Run(_)
                | Event::Workspace(_)
                | Event::Renamed(..)
                | Event::Settle(_) => {}
            }
        }
        settled.iter().try_for_each(|s| b.outcome(&decided(s)))
    });
    if let Err(error) = result {
        tracing::error!(%error, events = batch.len(), "could not record interactions");
    }
}

/// The row an outcome writes, with where taken code lives and its static analysis.
fn decided(settled: &Settled) -> Decided<'_> {
    let outcome = &settled.outcome;
    Decided {
        id: &outcome.id,
        document: &outcome.uri,
        action: outcome.action,
        time_to_action_ms: outcome.time_to_action_ms,
        final_code: outcome.final_code.as_deref(),
        diff: outcome.diff.as_deref(),
        typed_instead: outcome.typed_instead.as_deref(),
        diagnostics: outcome.diagnostics.iter().map(|d| (d.severity, d.message.as_str())).collect(),
        shown_ms: outcome.shown_ms,
        region: outcome.region.clone(),
        anchor: settled.anchor.as_ref().map(|(anchor, _)| anchor),
        analysis: settled.anchor.as_ref().and_then(|(_, analysis)| serde_json::to_string(analysis).ok()),
    }
}

impl Recorder {
    /// The row for a suggestion shown at `shown_at_ms` in session `session_id`.
    pub fn shown_row(s: &Suggestion, session_id: &str, user_id: &str, shown_at_ms: i64) -> Shown {
        Shown {
            id: s.id.clone(),
            shown_at_ms,
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            file_path: s.uri.clone(),
            language: s.language.clone(),
            line: s.position.line,
            character: s.position.character,
            suggestion: s.text.clone(),
            suggestion_type: s.kind,
            model_version: s.model_version.clone(),
            confidence: s.confidence,
            prompt_prefix: s.prefix.clone(),
            prompt_suffix: s.suffix.clone(),
            context_files: s.context_files.clone(),
            context_sources: s.sources.iter().map(|s| (*s).to_owned()).collect(),
            recent_edits: serde_json::to_string(&s.recent_edits).unwrap_or_default(),
            document_version: s.version,
        }
    }
}

/// Secrets out of everything of the document that is stored.
/// The seed's `user_id`: one user per machine account, so the login name (the uid without one).
fn user_id() -> String {
    let login = ["USER", "LOGNAME"].iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    // SAFETY: getuid has no preconditions and cannot fail.
    login.unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

impl CaptureSink for Recorder {
    fn shown(&mut self, s: &Suggestion) {
        let shown = Recorder::shown_row(s, &self.session_id, &self.user_id, now_ms());
        let tracked = Tracked {
            id: s.id.clone(),
            uri: s.uri.clone(),
            offset: s.offset,
            text: s.text.clone(),
            word: s.word.clone(),
            shown_at_ms: shown.shown_at_ms,
        };
        let _ = self.events.send(Event::Shown(Box::new(shown), tracked));
    }

    fn accepted(&mut self, suggestion_id: &str) {
        let _ = self.events.send(Event::Accepted { id: suggestion_id.to_owned(), at_ms: now_ms() });
    }

    fn feedback(&mut self, suggestion_id: Option<&str>, rating: i64, comment: Option<&str>) {
        let Some(id) = suggestion_id else { return };
        let comment = comment.map(ToOwned::to_owned);
        let _ = self.events.send(Event::Feedback { id: id.to_owned(), rating, comment });
    }

    fn document(&mut self, event: &DocumentEvent) {
        let _ = self.events.send(Event::Document(event.clone()));
    }

    fn diagnostics(&mut self, uri: &str, diagnostics: Vec<Diagnostic>) {
        let _ = self.events.send(Event::Diagnostics(uri.to_owned(), diagnostics));
    }

    fn cursor(&mut self, uri: &str, offset: usize) {
        let _ = self.events.send(Event::Cursor { uri: uri.to_owned(), offset });
    }

    fn shutdown(&mut self) {
        let (stored, wait) = mpsc::channel();
        if self.events.send(Event::Settle(stored)).is_ok() && wait.recv_timeout(SETTLE_WAIT).is_err() {
            tracing::warn!("the outcomes settled at shutdown were not stored within {SETTLE_WAIT:?}");
        }
    }

    fn workspace(&mut self, roots: &[PathBuf]) {
        let _ = self.events.send(Event::Workspace(roots.to_vec()));
        let events = self.events.clone();
        let watched = roots.to_vec();
        let watcher = crate::watch::watch(roots, move |changes| {
            for (from, to) in changes.renamed {
                let _ = events.send(Event::Renamed(from, to));
            }
            for run in signals::runs(&changes.files, &watched) {
                let _ = events.send(Event::Run(run));
            }
        });
        match watcher {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(error) => tracing::warn!(%error, "test reports in the workspace will not be seen"),
        }
    }
}
