//! Completion serving inside the proxy (and `marunochi lsp`). Entry: [`Serving`].
//!
//! The relay hands us a cursor (`start`) and later gets a [`Finished`] event back through the
//! callback it gave us; everything slow (debounce, reaching or starting the daemon, the generation)
//! runs in a task, never on the relay's loop. A newer request in the same document cancels the older
//! one, and the daemon stops that generation. The prompt's context comes from the document mirror:
//! the text around the cursor, the other open documents (most recently edited first) and recent edits
//! (`context.rs`); `link.rs` reaches the daemon (starting it if need be) and runs the generation.

mod context;
mod definitions;
mod examples;
pub mod items;
mod link;
mod quiet;
mod reload;
mod snippets;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use context::{Edit, PREFIX_BYTES, SUFFIX_BYTES, head, tail};
pub use definitions::{Ask, Question};
use definitions::{Definitions, Pending};
use examples::Examples;
use link::{Link, LinkState, generate};
use quiet::Quiet;
use snippets::Repository;

use crate::config::ServingConfig;
use crate::daemon::protocol::{CompleteRequest, RecentEdit};
use crate::home::Home;
use crate::language::{document_language, language_at};
use crate::lsp::mirror::{DocumentEvent, DocumentSnapshot, Mirror, Position};

/// Suggestions remembered for `marunochi.accept`/feedback lookups and the debug command.
const RECENT_SUGGESTIONS: usize = 200;

#[derive(Debug, Clone)]
pub struct ServingOptions {
    pub home: Home,
    /// The marunochi executable, to start the daemon with.
    pub exe: PathBuf,
    /// `--model`, passed on to a daemon we start.
    pub model: Option<PathBuf>,
    pub config: ServingConfig,
}

/// A suggestion shown to the user (what the capture stage records).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// Unique across proxies and restarts.
    pub id: String,
    pub uri: String,
    pub language: String,
    /// The cursor, in the negotiated position encoding.
    pub position: Position,
    /// The cursor as a byte offset into the document at `version`.
    pub offset: usize,
    /// Where the identifier being typed starts (the completion menu item replaces it).
    pub word_start: Position,
    pub word: String,
    /// `inline` (ghost text) or `completion` (an item in the completion menu).
    pub kind: &'static str,
    pub text: String,
    pub model_version: String,
    pub confidence: f64,
    /// The document window the prompt was built from, so a training example can be rebuilt.
    pub prefix: String,
    pub suffix: String,
    /// The files the prompt was offered as context (paths: definitions, repository snippets, own
    /// examples by their file's name, then other open documents), and the recent edits.
    pub context_files: Vec<String>,
    /// The context sources that offered something: `definitions`, `snippets`, `own_examples`,
    /// `open_files`, `recent_edits`.
    pub sources: Vec<&'static str>,
    pub recent_edits: Vec<RecentEdit>,
    /// The document version the suggestion was made against.
    pub version: i32,
}

/// A diagnostic of the language server, as byte offsets into the document when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub start: usize,
    pub end: usize,
    /// LSP severity: 1 error, 2 warning, 3 information, 4 hint (absent counts as error).
    pub severity: u8,
    pub message: String,
}

/// Where suggestions and what the user did with them go: the capture stage implements this.
pub trait CaptureSink: Send {
    fn shown(&mut self, suggestion: &Suggestion);
    fn accepted(&mut self, suggestion_id: &str);
    /// Explicit feedback: rating −1/0/1 for a suggestion (the last one shown when `None`).
    fn feedback(&mut self, suggestion_id: Option<&str>, rating: i64, comment: Option<&str>);
    /// Every document open/edit/close, in the order the editor sent them, interleaved correctly
    /// with the calls above (all come from the relay's loop).
    fn document(&mut self, _event: &DocumentEvent) {}
    /// The language server published the diagnostics of a document (replacing earlier ones).
    fn diagnostics(&mut self, _uri: &str, _diagnostics: Vec<Diagnostic>) {}
    /// The editor sent a request at byte `offset` of `uri`: the cursor is there.
    fn cursor(&mut self, _uri: &str, _offset: usize) {}
    /// The workspace roots the editor opened (local directories).
    fn workspace(&mut self, _roots: &[PathBuf]) {}
    /// The editor asked for `shutdown`: only `exit` may follow, and some editors kill the process
    /// right after it, so everything tracked is settled and stored before this returns.
    fn shutdown(&mut self) {}
}

/// The sink when nothing records (the store could not be opened): suggestions and outcomes go to
/// the log only.
pub struct LogSink;

impl CaptureSink for LogSink {
    fn shown(&mut self, s: &Suggestion) {
        tracing::info!(id = s.id, uri = s.uri, language = s.language, model = s.model_version, "suggestion shown");
    }

    fn accepted(&mut self, suggestion_id: &str) {
        tracing::info!(id = suggestion_id, "suggestion accepted");
    }

    fn feedback(&mut self, suggestion_id: Option<&str>, rating: i64, comment: Option<&str>) {
        // The comment is the user's own words, which the log does not keep (the store redacts them).
        tracing::info!(id = suggestion_id, rating, comment_bytes = comment.map(str::len), "feedback");
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Suggested(Box<Suggestion>),
    /// The model had nothing worth showing here.
    Nothing,
    /// Superseded by a newer keystroke, or cancelled by the editor.
    Cancelled,
    /// No daemon could be reached or started, or it has no model.
    Unavailable(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub ticket: u64,
    pub outcome: Outcome,
}

/// What a generation asks the retrieval sources for once its debounce is over.
pub(crate) struct Retrieval {
    /// The language server's answers about the names before the cursor, asked at the keystroke.
    definitions: Option<(Arc<Definitions>, Pending)>,
    definition_count: usize,
    definitions_wait: Duration,
    repository: Option<Arc<Repository>>,
    snippets: usize,
    examples: Option<Arc<Examples>>,
    own_examples: usize,
    /// Each item's share of the context budget.
    max_bytes: usize,
    current: Option<PathBuf>,
    /// The stay-silent filter, which may hold the answer back.
    quiet: Option<Arc<Quiet>>,
}

/// The ticket of the connection warm-up at start (and of prompt warm-ups): it answers no request.
pub const WARM_UP: u64 = 0;

/// A warm-up waits this long for the cursor to stop moving (arrow keys held down move it a line
/// every 30-50 ms).
const WARM_DEBOUNCE: Duration = Duration::from_millis(100);

type Notify = Arc<dyn Fn(Finished) + Send + Sync>;

pub struct Serving {
    config: ServingConfig,
    link: Arc<Link>,
    notify: Notify,
    inflight: HashMap<u64, watch::Sender<bool>>,
    latest_by_document: HashMap<String, u64>,
    next_ticket: u64,
    id_prefix: String,
    documents: mpsc::UnboundedReceiver<DocumentEvent>,
    /// Per document, the sequence number of its last edit (higher is more recent).
    edited: HashMap<String, u64>,
    edit_sequence: u64,
    edits: VecDeque<Edit>,
    roots: Vec<String>,
    /// The workspace's functions, when `repository_snippets` is on and the editor named roots.
    repository: Option<Arc<Repository>>,
    /// The user's own best code, when `own_examples` is on.
    examples: Option<Arc<Examples>>,
    /// How to ask the language server (none behind `marunochi lsp`).
    ask: Option<Ask>,
    /// Definitions of the names at the cursor, when `definitions` is on and a server is asked.
    definitions: Option<Arc<Definitions>>,
    /// When `stay_silent` is on.
    quiet: Option<Arc<Quiet>>,
    recent: VecDeque<(Suggestion, bool)>,
    sink: Box<dyn CaptureSink>,
    /// Whether the user has been told that AI is off (told once per outage).
    told_unavailable: bool,
    /// Per document, the last suggestion shown: typing its next characters is answered with the
    /// rest of it at once, without the model.
    last_shown: HashMap<String, Suggestion>,
    /// Per document, the (version, line) last warmed or asked at: the cursor staying there needs
    /// no warm-up.
    warmed: HashMap<String, (i32, u32)>,
    /// The warm-up on its way, if any (the newest cursor move replaces it).
    warming: Option<watch::Sender<bool>>,
    /// Per document, the suggestions a warm-up made for the keystrokes it expected.
    ready: Arc<std::sync::Mutex<HashMap<String, Vec<link::Ready>>>>,
}

impl Serving {
    pub fn new(options: ServingOptions, mirror: &mut Mirror, notify: Notify) -> Serving {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let examples = (options.config.own_examples > 0).then(|| Arc::new(Examples::start(options.home.db_path())));
        let quiet = options.config.stay_silent.then(|| Arc::new(Quiet::start(options.home.db_path())));
        Serving {
            config: options.config,
            link: Arc::new(Link {
                home: options.home,
                exe: options.exe,
                model: options.model,
                state: tokio::sync::Mutex::new(LinkState::default()),
                warmed: Default::default(),
                made_ahead: Default::default(),
            }),
            notify,
            inflight: HashMap::new(),
            latest_by_document: HashMap::new(),
            next_ticket: WARM_UP + 1,
            id_prefix: format!("{}-{:x}", std::process::id(), started.as_millis()),
            documents: mirror.subscribe(),
            edited: HashMap::new(),
            edit_sequence: 0,
            edits: VecDeque::new(),
            roots: Vec::new(),
            repository: None,
            examples,
            ask: None,
            definitions: None,
            quiet,
            recent: VecDeque::new(),
            sink: Box::new(LogSink),
            told_unavailable: false,
            last_shown: HashMap::new(),
            warmed: HashMap::new(),
            warming: None,
            ready: Arc::default(),
        }
    }

    /// How long a completion menu waits for our item.
    pub fn completion_deadline(&self) -> Duration {
        self.config.completion_deadline()
    }

    pub fn set_sink(&mut self, sink: Box<dyn CaptureSink>) {
        self.sink = sink;
    }

    /// How to ask the language server behind the proxy (the definitions source).
    pub fn set_server(&mut self, ask: Ask) {
        self.ask = Some(ask);
    }

    /// Reads the workspace roots from the editor's `initialize` params.
    pub fn set_workspace(&mut self, initialize: &Value) {
        let folders = initialize.get("workspaceFolders").and_then(Value::as_array).into_iter().flatten();
        self.roots = folders.filter_map(|f| f.get("uri")?.as_str()).map(str::to_owned).collect();
        if let Some(root) = initialize.get("rootUri").and_then(Value::as_str) {
            self.roots.push(root.to_owned());
        }
        self.roots.iter_mut().for_each(|r| {
            if !r.ends_with('/') {
                r.push('/');
            }
        });
        let mut directories: Vec<PathBuf> = self.roots.iter().filter_map(|r| crate::uri::to_path(r)).collect();
        directories.sort();
        directories.dedup();
        if self.config.repository_snippets > 0 && !directories.is_empty() {
            self.repository = Some(Arc::new(Repository::start(directories.clone())));
        }
        if let Some(ask) = self.ask.clone().filter(|_| self.config.definitions > 0) {
            self.definitions = Some(Arc::new(Definitions::new(ask, directories.clone())));
        }
        self.sink.workspace(&directories);
    }

    /// Connects to (or starts) the daemon in the background, so the first keystroke does not pay
    /// for it; the result comes back as a [`Finished`] with the [`WARM_UP`] ticket.
    pub fn warm_up(&self) {
        let link = self.link.clone();
        let notify = self.notify.clone();
        tokio::spawn(async move {
            let outcome = match link.get().await {
                Ok(_) => Outcome::Nothing,
                Err(reason) => Outcome::Unavailable(reason),
            };
            notify(Finished { ticket: WARM_UP, outcome });
        });
    }

    /// Starts a suggestion at `position` of `uri`; its [`Finished`] arrives through the callback.
    pub fn start(&mut self, mirror: &Mirror, uri: &str, position: Position, kind: &'static str) -> u64 {
        self.read_document_events();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let Some(doc) = mirror.snapshot(uri) else {
            (self.notify)(Finished { ticket, outcome: Outcome::Failed(format!("{uri} is not open")) });
            return ticket;
        };
        // The keystroke's own request computes its prompt; a warm-up would only compete with it.
        self.stop_warming();
        self.warmed.insert(uri.to_owned(), (doc.version, position.line));
        let (request, shown) = self.request_at(mirror, &doc, uri, position, kind, ticket);
        if let Some(older) = self.latest_by_document.insert(uri.to_owned(), ticket) {
            self.cancel(older);
        }
        if let Some(rest) = self.typed_into_last(uri, &doc.text, shown.offset) {
            // The rest of the last suggestion: its prompt's context is what made it.
            let last = &self.last_shown[uri];
            let suggestion = Suggestion {
                text: rest.to_owned(),
                model_version: last.model_version.clone(),
                confidence: last.confidence,
                context_files: last.context_files.clone(),
                sources: last.sources.clone(),
                ..shown
            };
            (self.notify)(Finished { ticket, outcome: Outcome::Suggested(Box::new(suggestion)) });
            return ticket;
        }
        if let Some(ready) = self.ready_for(&request) {
            let suggestion = Suggestion {
                text: ready.text,
                model_version: ready.model_version,
                confidence: ready.confidence,
                context_files: ready.context_files,
                sources: ready.sources,
                ..shown
            };
            let outcome = match self.quiet.as_ref().is_some_and(|quiet| quiet.holds_back(&suggestion)) {
                true => Outcome::Nothing,
                false => Outcome::Suggested(Box::new(suggestion)),
            };
            (self.notify)(Finished { ticket, outcome });
            return ticket;
        }
        // Only now: asking the language server for definitions is wasted on the answers above.
        let retrieval = self.retrieval_at(mirror, &doc, uri, shown.offset);
        let (cancel, cancelled) = watch::channel(false);
        self.inflight.insert(ticket, cancel);
        let (link, notify, debounce) = (self.link.clone(), self.notify.clone(), self.config.debounce());
        tokio::spawn(async move {
            let outcome = generate(link, request, shown, debounce, retrieval, cancelled).await;
            notify(Finished { ticket, outcome });
        });
        ticket
    }

    /// The cursor has come to `position` of `uri` (the editor said so, or opened the document):
    /// unless `warm_ahead` is off, the prompt a keystroke there would make is computed in the
    /// daemon's idle time (README, `warm_ahead`), after [`WARM_DEBOUNCE`] without another move.
    /// Once per line and document version; never while a suggestion is on its way there.
    pub fn cursor_moved(&mut self, mirror: &Mirror, uri: &str, position: Position) {
        self.read_document_events();
        if !self.config.warm_ahead || self.latest_by_document.contains_key(uri) {
            return;
        }
        let Some(doc) = mirror.snapshot(uri) else { return };
        if self.warmed.insert(uri.to_owned(), (doc.version, position.line)) == Some((doc.version, position.line)) {
            return;
        }
        self.stop_warming();
        self.ready.lock().expect("ready").remove(uri);
        let (request, shown) = self.request_at(mirror, &doc, uri, position, "inline", WARM_UP);
        let retrieval = self.retrieval_at(mirror, &doc, uri, shown.offset);
        let expected =
            link::Expected { windows: context::opened_lines(&doc.text, shown.offset), ready: self.ready.clone() };
        let (cancel, cancelled) = watch::channel(false);
        self.warming = Some(cancel);
        tokio::spawn(link::warm(self.link.clone(), request, shown, WARM_DEBOUNCE, retrieval, cancelled, expected));
    }

    /// The suggestion made ahead for this document, when the request is the one it was made for
    /// (the same windows around the cursor); taken either way, since the document has moved on.
    fn ready_for(&self, request: &CompleteRequest) -> Option<link::Ready> {
        let ready = self.ready.lock().expect("ready").remove(&request.document)?;
        ready.into_iter().find(|ready| ready.prefix == request.prefix && ready.suffix == request.suffix)
    }

    fn stop_warming(&mut self) {
        if let Some(warming) = self.warming.take() {
            let _ = warming.send(true);
        }
    }

    /// What a suggestion at `position` of `doc` sends to the daemon, and what is shown for it.
    fn request_at(
        &mut self,
        mirror: &Mirror,
        doc: &Arc<DocumentSnapshot>,
        uri: &str,
        position: Position,
        kind: &'static str,
        ticket: u64,
    ) -> (CompleteRequest, Suggestion) {
        let offset = doc.offset_at(position, mirror.encoding());
        let word_offset = doc.text[..offset]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
            .last()
            .map_or(offset, |(i, _)| i);
        let language = language_at(&doc.language_id, uri, &doc.text, offset);
        let prefix = tail(&doc.text[..offset], PREFIX_BYTES).to_owned();
        let suffix = head(&doc.text[offset..], SUFFIX_BYTES).to_owned();
        let open_files = self.context_files(mirror, uri);
        let recent_edits = if self.config.recent_edits { self.recent_edits(uri, offset) } else { Vec::new() };
        let mut sources = Vec::new();
        if !open_files.is_empty() {
            sources.push("open_files");
        }
        if !recent_edits.is_empty() {
            sources.push("recent_edits");
        }
        let shown = Suggestion {
            id: format!("{}-{ticket}", self.id_prefix),
            uri: uri.to_owned(),
            language: language.clone(),
            position,
            offset,
            word_start: doc.position_at(word_offset, mirror.encoding()),
            word: doc.text[word_offset..offset].to_owned(),
            kind,
            text: String::new(),
            model_version: String::new(),
            confidence: 0.0,
            prefix: prefix.clone(),
            suffix: suffix.clone(),
            context_files: open_files.iter().map(|f| f.path.clone()).collect(),
            sources,
            recent_edits: recent_edits.clone(),
            version: doc.version,
        };
        let request = CompleteRequest {
            id: 0,
            document: uri.to_owned(),
            language,
            document_language: document_language(&doc.language_id, uri).to_owned(),
            path: self.relative_path(uri),
            prefix,
            suffix,
            repo_name: self.repo_name(),
            open_files,
            recent_edits,
            max_new_tokens: self.config.max_tokens,
            prompt_tokens: self.config.prompt_tokens,
            context_share: self.config.context_share,
        };
        (request, shown)
    }

    /// What a request at byte `offset` of `doc` asks of the retrieval sources (the language
    /// server's definitions are asked now, so the answers come in during the debounce).
    fn retrieval_at(&self, mirror: &Mirror, doc: &Arc<DocumentSnapshot>, uri: &str, offset: usize) -> Retrieval {
        Retrieval {
            definitions: self
                .definitions
                .as_ref()
                .map(|d| (d.clone(), d.ask(uri, doc.clone(), mirror.encoding(), offset))),
            definition_count: self.config.definitions,
            definitions_wait: self.config.definitions_wait(),
            repository: self.repository.clone(),
            snippets: self.config.repository_snippets,
            examples: self.examples.clone(),
            own_examples: self.config.own_examples,
            max_bytes: self.retrieved_bytes(),
            current: crate::uri::to_path(uri),
            quiet: self.quiet.clone(),
        }
    }

    /// Each retrieved item's share of the context budget, in bytes (code runs about three bytes a
    /// token), so that all of them fit.
    fn retrieved_bytes(&self) -> usize {
        let context_tokens = self.config.prompt_tokens * self.config.context_share as usize / 100;
        let definitions = if self.definitions.is_some() { self.config.definitions } else { 0 };
        let items = definitions + self.config.repository_snippets + self.config.own_examples;
        3 * context_tokens / items.max(1)
    }

    /// What is left of the last suggestion shown in `uri` when the user has typed its beginning
    /// since (and nothing else changed around the cursor): Copilot-style "typing through" a
    /// suggestion costs no generation.
    fn typed_into_last<'a>(&'a self, uri: &str, text: &str, offset: usize) -> Option<&'a str> {
        // Enough of the surroundings to tell that the document did not change elsewhere nearby.
        const CONTEXT: usize = 256;
        let last = self.last_shown.get(uri)?;
        let typed = text.get(last.offset..offset).filter(|t| !t.is_empty())?;
        let rest = last.text.strip_prefix(typed).filter(|rest| !rest.trim().is_empty())?;
        let mut from = last.prefix.len().saturating_sub(CONTEXT);
        while !last.prefix.is_char_boundary(from) {
            from += 1;
        }
        let before = &last.prefix[from..];
        let after = head(&last.suffix, CONTEXT);
        let unchanged = text.get(..last.offset)?.ends_with(before) && text.get(offset..)?.starts_with(after);
        unchanged.then_some(rest)
    }

    /// Stops a suggestion; its [`Finished`] still arrives (as `Cancelled`, unless it was done).
    pub fn cancel(&mut self, ticket: u64) {
        if let Some(cancel) = self.inflight.get(&ticket) {
            let _ = cancel.send(true);
        }
    }

    /// Bookkeeping for a finished suggestion; returns a message for the user when AI just became
    /// unavailable (said once per outage).
    pub fn finished(&mut self, finished: &Finished) -> Option<String> {
        self.inflight.remove(&finished.ticket);
        self.latest_by_document.retain(|_, t| *t != finished.ticket);
        match &finished.outcome {
            // The user hears about it when they ask for a suggestion, not merely for opening a file.
            Outcome::Unavailable(reason) if finished.ticket == WARM_UP => {
                tracing::warn!("AI completions are off for now: {reason}");
                None
            }
            Outcome::Unavailable(reason) if !self.told_unavailable => {
                self.told_unavailable = true;
                Some(format!("marunochi: AI completions are off ({reason}). Your language server keeps working."))
            }
            Outcome::Suggested(_) | Outcome::Nothing => {
                self.told_unavailable = false;
                None
            }
            _ => None,
        }
    }

    /// A suggestion was put in front of the user.
    pub fn shown(&mut self, suggestion: &Suggestion) {
        self.sink.shown(suggestion);
        self.last_shown.insert(suggestion.uri.clone(), suggestion.clone());
        if self.recent.len() == RECENT_SUGGESTIONS {
            self.recent.pop_front();
        }
        self.recent.push_back((suggestion.clone(), false));
    }

    /// `marunochi.accept`, `marunochi.feedback`, `marunochi.status` and `marunochi.debug.suggestions`;
    /// `None` for other commands. `Err` is a JSON-RPC error (code, message).
    pub fn command(&mut self, command: &str, arguments: &[Value]) -> Option<Result<Value, (i64, String)>> {
        use crate::lsp::intercept::{ACCEPT_COMMAND, DEBUG_SUGGESTIONS_COMMAND, FEEDBACK_COMMAND, STATUS_COMMAND};
        use crate::lsp::message::code::INVALID_PARAMS;
        Some(match command {
            ACCEPT_COMMAND => match arguments.first().and_then(Value::as_str) {
                Some(id) => {
                    if let Some((suggestion, accepted)) = self.recent.iter_mut().find(|(s, _)| s.id == id) {
                        *accepted = true;
                        if let Some(quiet) = &self.quiet {
                            quiet.taken(&suggestion.language);
                        }
                    } else {
                        tracing::warn!(id, "accepted a suggestion this proxy does not remember");
                    }
                    self.sink.accepted(id);
                    Ok(Value::Null)
                }
                None => Err((INVALID_PARAMS, format!("{command} takes one argument: the suggestion id"))),
            },
            FEEDBACK_COMMAND => {
                let rating = arguments.first().and_then(Value::as_i64).filter(|r| (-1..=1).contains(r));
                let Some(rating) = rating else {
                    return Some(Err((
                        INVALID_PARAMS,
                        format!("{command} takes [rating (-1, 0 or 1), comment?, suggestion id?]"),
                    )));
                };
                let comment = arguments.get(1).and_then(Value::as_str);
                let id = arguments.get(2).and_then(Value::as_str).or(self.recent.back().map(|(s, _)| s.id.as_str()));
                self.sink.feedback(id, rating, comment);
                Ok(Value::Null)
            }
            STATUS_COMMAND => Ok(self.status()),
            DEBUG_SUGGESTIONS_COMMAND => {
                let list: Vec<Value> = self
                    .recent
                    .iter()
                    .map(|(s, accepted)| {
                        json!({"id": s.id, "text": s.text, "accepted": accepted, "model_version": s.model_version,
                               "language": s.language, "uri": s.uri})
                    })
                    .collect();
                Ok(json!({"suggestions": list}))
            }
            _ => return None,
        })
    }

    /// `marunochi.status`: the daemon's model (or why there is none), each language's adapters
    /// (from the registry's links) and today's suggestions per language (from the store).
    fn status(&self) -> Value {
        let (model, problem) = match self.link.state.try_lock() {
            Ok(state) => (
                state.client.as_ref().filter(|c| !c.is_closed()).map(|c| c.daemon().model.name.clone()),
                state.failed.as_ref().map(|(_, reason)| reason.clone()),
            ),
            Err(_) => (None, None),
        };
        let today = crate::store::Store::open(&self.link.home.db_path()).and_then(|store| store.today());
        let today: serde_json::Map<String, Value> = match today {
            Ok(rows) => rows
                .into_iter()
                .map(|(language, shown, decided, taken)| {
                    (language, json!({"shown": shown, "decided": decided, "taken": taken}))
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "status: the store cannot be read");
                serde_json::Map::new()
            }
        };
        json!({
            "model": model,
            "problem": problem,
            "adapters": crate::store::Links::all(&self.link.home.adapters_dir()),
            "today": today,
            "repository": self.repository.as_ref().map(|r| r.status()),
            "own_examples": self.examples.as_ref().map(|e| e.status()),
            "stay_silent": self.quiet.as_ref().map(|q| q.status()),
            "warmed": self.link.warmed.load(std::sync::atomic::Ordering::Relaxed),
            "made_ahead": self.link.made_ahead.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The language server's diagnostics of `uri` (published, or the answer to a pull), replacing
    /// the earlier ones.
    pub fn diagnostics(&mut self, uri: &str, list: &[Value], mirror: &Mirror) {
        self.read_document_events();
        let Some(doc) = mirror.snapshot(uri) else { return };
        let diagnostics = list
            .iter()
            .filter_map(|d| {
                let range: crate::lsp::mirror::Range = serde_json::from_value(d.get("range")?.clone()).ok()?;
                Some(Diagnostic {
                    start: doc.offset_at(range.start, mirror.encoding()),
                    end: doc.offset_at(range.end, mirror.encoding()),
                    severity: d.get("severity").and_then(Value::as_u64).map_or(1, |s| s.min(4) as u8),
                    message: d.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
                })
            })
            .collect();
        self.sink.diagnostics(uri, diagnostics);
    }

    /// The editor asked something at `position` of `uri`: its cursor is there.
    pub fn cursor(&mut self, mirror: &Mirror, uri: &str, position: Position) {
        self.read_document_events();
        if let Some(doc) = mirror.snapshot(uri) {
            self.sink.cursor(uri, doc.offset_at(position, mirror.encoding()));
        }
    }

    /// The relay applied document changes to the mirror: the capture stage sees them now, in order.
    pub fn documents_changed(&mut self) {
        self.read_document_events();
    }

    /// The editor asked for `shutdown`: what it did with every suggestion is settled and stored
    /// now (Emacs's eglot kills the proxy right after `exit`).
    pub fn editor_shutting_down(&mut self) {
        self.read_document_events();
        self.sink.shutdown();
    }
}
