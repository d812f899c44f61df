//! The link to the daemon: connect, or start it, on first use and again after it is lost (failing
//! fast for a while after a failure), and one generation through it, cancellable at every step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Outcome, Retrieval, Suggestion};
use crate::daemon::protocol::{CompleteRequest, Completed, ContextFile};
use crate::daemon::{Client, ClientError};
use crate::home::Home;

/// After the daemon could not be reached, requests fail fast for this long instead of each trying.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub(super) async fn generate(
    link: Arc<Link>,
    mut request: CompleteRequest,
    mut shown: Suggestion,
    debounce: Duration,
    mut retrieval: Retrieval,
    mut cancelled: watch::Receiver<bool>,
) -> Outcome {
    let client = match prepare(&link, &mut request, &mut shown, debounce, &mut retrieval, &mut cancelled).await {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let pending = client.complete(request);
    let id = pending.id;
    tokio::select! {
        result = pending.result() => match result {
            Ok(completed) => match completed.text {
                Some(text) => {
                    shown.text = text;
                    shown.model_version = completed.model_version;
                    shown.confidence = completed.confidence;
                    if retrieval.quiet.as_ref().is_some_and(|quiet| quiet.holds_back(&shown)) {
                        return Outcome::Nothing;
                    }
                    Outcome::Suggested(Box::new(shown))
                }
                None => Outcome::Nothing,
            },
            Err(ClientError::Cancelled) => Outcome::Cancelled,
            Err(ClientError::Disconnected) => Outcome::Unavailable("the daemon went away".into()),
            Err(error) => Outcome::Failed(error.to_string()),
        },
        _ = cancelled.wait_for(|c| *c) => {
            client.cancel(id);
            Outcome::Cancelled
        }
    }
}

/// A warm-up: the request a keystroke at this cursor would make, with the same context, computed
/// ahead (README, `warm_ahead`); then the suggestions for the keystrokes `expected` names (a line
/// opened below, then above) are generated in turn and kept in `ready`.
pub(super) async fn warm(
    link: Arc<Link>,
    mut request: CompleteRequest,
    mut shown: Suggestion,
    debounce: Duration,
    mut retrieval: Retrieval,
    mut cancelled: watch::Receiver<bool>,
    expected: Expected,
) {
    let prepared = prepare(&link, &mut request, &mut shown, debounce, &mut retrieval, &mut cancelled).await;
    let Ok(client) = prepared else { return };
    let pending = client.warm(request.clone());
    let id = pending.id;
    tokio::select! {
        result = pending.result() => match result {
            Ok(warmed) => {
                link.warmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (prompt, reused) = (warmed.prompt_tokens, warmed.reused_tokens);
                tracing::debug!(prompt, reused, ms = warmed.total_ms as u64, "warmed");
            }
            Err(error) => return tracing::debug!(%error, "warm-up not done"),
        },
        _ = cancelled.wait_for(|c| *c) => return client.cancel(id),
    }
    for (prefix, suffix) in expected.windows {
        // The context found for the place itself: the lines around it search alike.
        let ahead = CompleteRequest { prefix: prefix.clone(), suffix: suffix.clone(), ..request.clone() };
        let pending = client.complete_ahead(ahead);
        let id = pending.id;
        tokio::select! {
            result = pending.result() => {
                if let Ok(Completed { text: Some(text), model_version, confidence, .. }) = result {
                    let ready = Ready {
                        prefix,
                        suffix,
                        text,
                        model_version,
                        confidence,
                        sources: shown.sources.clone(),
                        context_files: shown.context_files.clone(),
                    };
                    expected.ready.lock().expect("ready").entry(shown.uri.clone()).or_default().push(ready);
                }
                // Counted once kept, so that whoever reads the count finds the suggestion there.
                link.made_ahead.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ = cancelled.wait_for(|c| *c) => return client.cancel(id),
        }
    }
}

/// The windows of the keystrokes a warm-up expects, most likely first, and where their
/// suggestions go (per document).
pub(super) struct Expected {
    pub(super) windows: Vec<(String, String)>,
    pub(super) ready: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Ready>>>>,
}

/// A suggestion generated ahead for a document, served when a request comes with these windows.
pub(super) struct Ready {
    pub(super) prefix: String,
    pub(super) suffix: String,
    pub(super) text: String,
    pub(super) model_version: String,
    pub(super) confidence: f64,
    pub(super) sources: Vec<&'static str>,
    pub(super) context_files: Vec<String>,
}

/// What a generation and a warm-up share: the debounce, the definitions, the retrieved context,
/// then the daemon. `Err` is how the request ended early.
async fn prepare(
    link: &Link,
    request: &mut CompleteRequest,
    shown: &mut Suggestion,
    debounce: Duration,
    retrieval: &mut Retrieval,
    cancelled: &mut watch::Receiver<bool>,
) -> Result<Client, Outcome> {
    // `wait_for` also returns when the sender is gone: then nobody wants the answer either.
    if !debounce.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(debounce) => {}
            _ = cancelled.wait_for(|c| *c) => return Err(Outcome::Cancelled),
        }
    }
    // The language server has had the debounce to answer; it gets a little longer, no more.
    let defined = match retrieval.definitions.take() {
        Some((definitions, pending)) => {
            let deadline = tokio::time::Instant::now() + retrieval.definitions_wait;
            tokio::select! {
                found = definitions.collect(pending, deadline, retrieval.definition_count, retrieval.max_bytes) => found,
                _ = cancelled.wait_for(|c| *c) => return Err(Outcome::Cancelled),
            }
        }
        None => Vec::new(),
    };
    // After the debounce, so a keystroke that replaces this request costs no search either.
    retrieve(retrieval, defined, request, shown);
    let client = tokio::select! {
        client = link.get() => client,
        _ = cancelled.wait_for(|c| *c) => return Err(Outcome::Cancelled),
    };
    client.map_err(Outcome::Unavailable)
}

/// Definitions, repository snippets, then the user's own examples, ahead of the open documents
/// (the prompt takes context in this order and puts the first nearest the cursor).
fn retrieve(retrieval: &Retrieval, defined: Vec<ContextFile>, request: &mut CompleteRequest, shown: &mut Suggestion) {
    let mut sources = Vec::new();
    if !defined.is_empty() {
        sources.push("definitions");
    }
    let mut found = defined;
    if let Some(repository) = &retrieval.repository {
        let snippets = repository.search(
            &request.prefix,
            &request.suffix,
            retrieval.current.as_deref(),
            retrieval.snippets,
            retrieval.max_bytes,
        );
        if !snippets.is_empty() {
            sources.push("snippets");
        }
        found.extend(snippets);
    }
    if let Some(examples) = &retrieval.examples {
        let own = examples.search(&request.language, &request.prefix, retrieval.own_examples, retrieval.max_bytes);
        if !own.is_empty() {
            sources.push("own_examples");
        }
        found.extend(own);
    }
    shown.sources.splice(0..0, sources);
    shown.context_files.splice(0..0, found.iter().map(|f| f.path.clone()));
    request.open_files.splice(0..0, found);
}

/// The connection to the daemon, made (and the daemon started) on first use and again after it is lost.
pub(super) struct Link {
    pub(super) home: Home,
    pub(super) exe: PathBuf,
    pub(super) model: Option<PathBuf>,
    pub(super) state: tokio::sync::Mutex<LinkState>,
    /// Warm-ups the daemon ran to their end for this proxy (`marunochi.status`).
    pub(super) warmed: std::sync::atomic::AtomicU64,
    /// Suggestions made ahead to their end for this proxy, empty ones included (`marunochi.status`).
    pub(super) made_ahead: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
pub(super) struct LinkState {
    pub(super) client: Option<Client>,
    pub(super) failed: Option<(Instant, String)>,
}

impl Link {
    pub(super) async fn get(&self) -> Result<Client, String> {
        let mut state = self.state.lock().await;
        if let Some(client) = state.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        if let Some((at, reason)) = &state.failed
            && at.elapsed() < RETRY_AFTER
        {
            return Err(reason.clone());
        }
        match Client::connect_or_spawn(&self.home, &self.exe, self.model.as_deref()).await {
            Ok(client) => {
                tracing::info!(
                    pid = client.daemon().pid,
                    model = client.daemon().model.name,
                    "connected to the daemon"
                );
                state.failed = None;
                state.client = Some(client.clone());
                Ok(client)
            }
            Err(error) => {
                tracing::warn!(%error, "no daemon");
                state.client = None;
                state.failed = Some((Instant::now(), error.to_string()));
                Err(error.to_string())
            }
        }
    }
}
