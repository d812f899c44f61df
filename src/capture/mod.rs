//! Interaction capture: every suggestion shown and what became of it, in SQLite. Entries: [`Store`]
//! (the database) and [`Recorder`] (the serving stage's [`CaptureSink`], writing off the request
//! path on a thread of its own).
//!
//! Not yet here (see the capture issue): the outcome classifier that infers partial / rejected /
//! corrected / ignored from the edit stream, diagnostics and test signals, `marunochi data`.

pub mod redact;
mod store;

use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use store::{Batch, Interaction, Shown, Store, StoreError};

use crate::serving::{CaptureSink, Suggestion};

enum Event {
    Shown(Box<Shown>),
    Accepted { id: String, at_ms: i64 },
    Feedback { id: String, rating: i64, comment: Option<String> },
}

/// Hands events to the writer thread: the request path only pays for copying the suggestion into a
/// channel; redaction and SQLite happen on the writer.
pub struct Recorder {
    events: mpsc::Sender<Event>,
    session_id: String,
}

impl Recorder {
    /// Starts the writer thread over `store`. It ends when the recorder is dropped, after writing
    /// everything sent.
    pub fn spawn(mut store: Store, session_id: String) -> Recorder {
        let (events, inbox) = mpsc::channel::<Event>();
        std::thread::spawn(move || {
            while let Ok(first) = inbox.recv() {
                // Whatever queued up meanwhile goes into the same transaction.
                let mut batch: Vec<Event> = std::iter::once(first).chain(inbox.try_iter()).collect();
                for event in &mut batch {
                    if let Event::Shown(shown) = event {
                        redact_shown(shown);
                    }
                }
                let result = store.batch(|b| {
                    for event in &batch {
                        match event {
                            Event::Shown(shown) => b.shown(shown)?,
                            Event::Accepted { id, at_ms } => b.accepted(id, *at_ms)?,
                            Event::Feedback { id, rating, comment } => b.feedback(id, *rating, comment.as_deref())?,
                        }
                    }
                    Ok(())
                });
                if let Err(error) = result {
                    tracing::error!(%error, events = batch.len(), "could not record interactions");
                }
            }
        });
        Recorder { events, session_id }
    }
}

/// Secrets out of everything of the document that is stored.
fn redact_shown(shown: &mut Shown) {
    let path = shown.file_path.clone();
    for text in [&mut shown.suggestion, &mut shown.prompt_prefix, &mut shown.prompt_suffix] {
        *text = redact::redact(text, &path);
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl CaptureSink for Recorder {
    fn shown(&mut self, s: &Suggestion) {
        let shown = Shown {
            id: s.id.clone(),
            shown_at_ms: now_ms(),
            session_id: self.session_id.clone(),
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
            document_version: s.version,
        };
        let _ = self.events.send(Event::Shown(Box::new(shown)));
    }

    fn accepted(&mut self, suggestion_id: &str) {
        let _ = self.events.send(Event::Accepted { id: suggestion_id.to_owned(), at_ms: now_ms() });
    }

    fn feedback(&mut self, suggestion_id: Option<&str>, rating: i64, comment: Option<&str>) {
        let Some(id) = suggestion_id else { return };
        let comment = comment.map(ToOwned::to_owned);
        let _ = self.events.send(Event::Feedback { id: id.to_owned(), rating, comment });
    }
}
