//! Interaction capture: every suggestion shown and what became of it, in SQLite. Entries: [`Store`]
//! (the database) and [`Recorder`] (the serving stage's [`CaptureSink`], writing off the request
//! path on a thread of its own).
//!
//! The outcome of each suggestion (accepted, partial, corrected with its diff, rejected with what
//! was typed instead, ignored) is inferred from the document edits by `classify.rs` on the writer
//! thread. Not yet here (see the capture issue): diagnostics and test signals, `marunochi data`.

pub mod classify;
pub mod redact;
mod signals;
mod store;

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use store::{Batch, Forget, Interaction, Run, Shown, Store, StoreError, TestResults};

mod run;
pub use run::{RunError, run_and_record};

use crate::lsp::mirror::{Change, DocumentEvent};
use crate::serving::{CaptureSink, Diagnostic, Suggestion};
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
}

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

impl Recorder {
    /// Starts the writer thread over `store`. It ends when the recorder is dropped, after settling
    /// and writing everything sent.
    /// `correction_window`: how long after acceptance an edit inside the code is a correction.
    pub fn spawn(mut store: Store, session_id: String, correction_window: Duration) -> Recorder {
        let (events, inbox) = mpsc::channel::<Event>();
        let writer = std::thread::spawn(move || {
            let mut classifier = Classifier::new(correction_window.as_millis() as i64);
            loop {
                // A second without events still closes correction windows that ran out.
                let (first, gone) = match inbox.recv_timeout(Duration::from_secs(1)) {
                    Ok(event) => (Some(event), false),
                    Err(mpsc::RecvTimeoutError::Timeout) => (None, false),
                    Err(mpsc::RecvTimeoutError::Disconnected) => (None, true),
                };
                let mut batch: Vec<Event> = first.into_iter().chain(inbox.try_iter()).collect();
                let mut outcomes = Vec::new();
                for event in &mut batch {
                    match event {
                        Event::Shown(shown, tracked) => {
                            redact_shown(shown);
                            outcomes.extend(classifier.shown(tracked.clone()));
                        }
                        Event::Accepted { id, at_ms } => classifier.accept_command(id, *at_ms),
                        Event::Document(event) => outcomes.extend(classify_document(&mut classifier, event)),
                        Event::Diagnostics(uri, list) => classifier.diagnostics(uri, std::mem::take(list)),
                        Event::Cursor { uri, offset } => outcomes.extend(classifier.cursor(uri, *offset)),
                        Event::Feedback { .. } | Event::Run(_) => {}
                    }
                }
                outcomes.extend(if gone { classifier.settle_all() } else { classifier.tick(now_ms()) });
                if !batch.is_empty() || !outcomes.is_empty() {
                    write(&mut store, &batch, &mut outcomes);
                }
                // After the outcomes: a run judges what was settled before it.
                for event in &batch {
                    if let Event::Run(run) = event {
                        match store.record_run(run) {
                            Ok(judged) => tracing::info!(command = run.command, judged, "test run recorded"),
                            Err(error) => tracing::error!(%error, "could not record a test run"),
                        }
                    }
                }
                if gone {
                    break;
                }
            }
        });
        Recorder { events, session_id, user_id: user_id(), watcher: None, writer: Some(writer) }
    }
}

fn classify_document(classifier: &mut Classifier, event: &DocumentEvent) -> Vec<Outcome> {
    let at_ms = event.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    match &event.change {
        Change::Edited { start, removed, inserted } => {
            classifier.edit(&Edit { uri: &event.uri, start: *start, removed_len: removed.len(), inserted, at_ms })
        }
        Change::Closed => classifier.closed(&event.uri, Some(at_ms)),
        Change::Opened { .. } => Vec::new(),
    }
}

fn write(store: &mut Store, batch: &[Event], outcomes: &mut [Outcome]) {
    for outcome in outcomes.iter_mut() {
        let path = outcome.uri.clone();
        for text in [&mut outcome.final_code, &mut outcome.diff, &mut outcome.typed_instead].into_iter().flatten() {
            *text = redact::redact(text, &path);
        }
        for diagnostic in &mut outcome.diagnostics {
            diagnostic.message = redact::redact(&diagnostic.message, &path);
        }
    }
    let result = store.batch(|b| {
        for event in batch {
            match event {
                Event::Shown(shown, _) => b.shown(shown)?,
                Event::Accepted { id, at_ms } => b.accepted(id, *at_ms)?,
                Event::Feedback { id, rating, comment } => b.feedback(id, *rating, comment.as_deref())?,
                Event::Document(_) | Event::Diagnostics(..) | Event::Cursor { .. } | Event::Run(_) => {}
            }
        }
        outcomes.iter().try_for_each(|o| b.outcome(o))
    });
    if let Err(error) = result {
        tracing::error!(%error, events = batch.len(), "could not record interactions");
    }
}

impl Shown {
    /// The row for a suggestion shown at `shown_at_ms` in session `session_id`.
    pub fn of(s: &Suggestion, session_id: &str, user_id: &str, shown_at_ms: i64) -> Shown {
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
            recent_edits: serde_json::to_string(&s.recent_edits).unwrap_or_default(),
            document_version: s.version,
        }
    }
}

/// Secrets out of everything of the document that is stored.
fn redact_shown(shown: &mut Shown) {
    let path = shown.file_path.clone();
    for text in [&mut shown.suggestion, &mut shown.prompt_prefix, &mut shown.prompt_suffix, &mut shown.recent_edits] {
        *text = redact::redact(text, &path);
    }
}

/// The seed's `user_id`: one user per machine account, so the login name (the uid without one).
fn user_id() -> String {
    let login = ["USER", "LOGNAME"].iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    // SAFETY: getuid has no preconditions and cannot fail.
    login.unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl CaptureSink for Recorder {
    fn shown(&mut self, s: &Suggestion) {
        let shown = Shown::of(s, &self.session_id, &self.user_id, now_ms());
        let tracked = Tracked {
            id: s.id.clone(),
            uri: s.uri.clone(),
            offset: s.offset,
            text: s.text.clone(),
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

    fn workspace(&mut self, roots: &[std::path::PathBuf]) {
        let events = self.events.clone();
        let watched = roots.to_vec();
        let watcher = crate::watch::watch(roots, move |changed| {
            for run in signals::runs(&changed, &watched) {
                let _ = events.send(Event::Run(run));
            }
        });
        match watcher {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(error) => tracing::warn!(%error, "test reports in the workspace will not be seen"),
        }
    }
}
