//! The relay: one event loop between the editor and the real language server.
//!
//! Every message from either side arrives as an [`Event`] on one channel and is handled to the end
//! before the next, so per-direction order is exactly arrival order. Request ids are remapped on
//! the way through (ours are plain integers, the peer's originals are restored on the way back), which
//! lets the proxy issue requests of its own and survive a server restart.

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::ProxyConfig;
use crate::lsp::codec::Incoming;
use crate::lsp::downstream::{Downstream, ServerEvent};
use crate::lsp::intercept::{self, ServerFeatures};
use crate::lsp::message::{self, IdKey, Kind, MessageType, Payload, RawMessage, code};
use crate::lsp::mirror::{DocumentEvent, DocumentSnapshot, Mirror, PositionEncoding};
use crate::lsp::transport::{self, Writer};
use crate::serving::{CaptureSink, Finished, Outcome, Serving, ServingOptions, Suggestion, items};

/// How long after `exit` the server gets to leave on its own.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What runs behind the proxy.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `marunochi proxy -- <cmd...>`: relay to this language server.
    Server(Vec<String>),
    /// `marunochi lsp`: no server; we answer everything ourselves.
    Standalone,
}

pub struct ProxyOptions {
    pub backend: Backend,
    /// `None` (`--no-ai`): a pure relay that adds nothing to the conversation.
    pub ai: Option<ServingOptions>,
    /// Where suggestions and their outcomes are recorded (the log only when `None`).
    pub capture: Option<Box<dyn CaptureSink>>,
    pub config: ProxyConfig,
}

/// The LSP proxy / companion server. Construct, optionally subscribe to document events, then run.
pub struct Proxy {
    options: ProxyOptions,
    mirror: Mirror,
}

impl Proxy {
    pub fn new(options: ProxyOptions) -> Proxy {
        Proxy { options, mirror: Mirror::new(PositionEncoding::default()) }
    }

    /// Every document open/edit/close the editor sends, in order (for the capture stage).
    pub fn subscribe_documents(&mut self) -> mpsc::UnboundedReceiver<DocumentEvent> {
        self.mirror.subscribe()
    }

    /// Serves the editor on stdin/stdout until it exits or goes away. Must run on a current-thread
    /// runtime (see `downstream::die_with_parent`).
    pub async fn run(mut self) -> anyhow::Result<ExitCode> {
        let (events, mut inbox) = mpsc::unbounded_channel();
        let capture = self.options.capture.take();
        let serving = self.options.ai.take().map(|options| {
            let events = events.clone();
            let mut serving =
                Serving::new(options, &mut self.mirror, Arc::new(move |done| drop(events.send(Event::Ai(done)))));
            if let Some(capture) = capture {
                serving.set_sink(capture);
            }
            serving
        });
        let max = self.options.config.max_message_bytes();
        let client = Writer::spawn_blocking(std::io::stdout());
        transport::spawn_blocking_reader(std::io::stdin(), max, events.clone(), Event::Client, Event::ClientClosed);
        spawn_signal_watcher(events.clone());

        let mut relay = Relay::new(self.options, serving, self.mirror, client, events);
        if let Backend::Server(command) = &relay.options.backend {
            let command = command.clone();
            relay
                .start_server(&command)
                .map_err(|e| anyhow::anyhow!("could not start the language server `{}`: {e}", command.join(" ")))?;
        }
        let code = loop {
            let event = inbox.recv().await.expect("the relay holds a sender");
            if let Some(code) = relay.handle(event) {
                break code;
            }
        };
        relay.finish().await;
        Ok(code)
    }
}

#[derive(Debug)]
enum Event {
    Client(Incoming),
    ClientClosed,
    Server(ServerEvent),
    RestartDue,
    ExitDeadline,
    Signal(&'static str),
    /// A suggestion is done (or failed, or was cancelled).
    Ai(Finished),
    /// The AI item of this completion request (our id on the server side) may not wait any longer.
    MergeDeadline(i64),
}

impl From<ServerEvent> for Event {
    fn from(event: ServerEvent) -> Event {
        Event::Server(event)
    }
}

/// Where a request we sent to the server came from.
enum Outbound {
    Client { id: Value, method: String },
    ReplayInitialize,
}

/// A server→client request waiting for the editor's answer.
struct InboundRequest {
    server_id: Value,
    incarnation: u32,
}

/// Who waits for a suggestion.
enum Waiter {
    /// `textDocument/inlineCompletion` (the editor's id).
    Inline { id: Value },
    /// `textDocument/completion` that we answer alone (no server, or one without completion).
    Completion { id: Value },
    /// `textDocument/completion` also sent to the server (our id there): the results are merged.
    Merge { ours: i64 },
}

/// A completion request answered by both the server and us.
struct Merge {
    ticket: u64,
    deadline_passed: bool,
    /// The server's answer, held until the suggestion or the deadline comes.
    held: Option<RawMessage>,
    /// The suggestion once it is done (`Some(None)`: done, nothing to add).
    suggestion: Option<Option<Suggestion>>,
}

enum ServerState {
    /// No server configured (`marunochi lsp`).
    Standalone,
    /// Running; `initializing` while a replayed `initialize` is outstanding after a restart.
    Up { server: Downstream, initializing: bool },
    /// Crashed; a restart is scheduled.
    Restarting,
    /// Exited after shutdown, or crashed too often.
    Down,
}

struct Relay {
    options: ProxyOptions,
    serving: Option<Serving>,
    /// Suggestions in progress → who waits for them.
    waiters: HashMap<u64, Waiter>,
    /// The editor's id of a request we serve ourselves → its suggestion (for `$/cancelRequest`).
    ai_requests: HashMap<IdKey, u64>,
    /// Our id of a completion request on the server side → the merge in progress.
    merges: HashMap<i64, Merge>,
    /// Our id of a `textDocument/diagnostic` pull on the server side → its document.
    pulls: HashMap<i64, String>,
    /// The editor takes snippet completion items (its `initialize` said so).
    client_snippets: bool,
    mirror: Mirror,
    client: Writer,
    events: mpsc::UnboundedSender<Event>,
    state: ServerState,
    incarnation: u32,
    features: ServerFeatures,
    next_id: i64,
    /// Our id on the server side → origin.
    to_server: HashMap<i64, Outbound>,
    /// The client's id → our id on the server side (for `$/cancelRequest`).
    client_ids: HashMap<IdKey, i64>,
    /// Our id on the client side → the server's request.
    to_client: HashMap<i64, InboundRequest>,
    /// The server's id → our id on the client side (for the server's `$/cancelRequest`).
    server_ids: HashMap<IdKey, i64>,
    /// Client messages held while the server is restarting, replayed in order once it is up.
    held: Vec<RawMessage>,
    /// The open documents as they were when the server died: reopened in the new server, followed by
    /// the held messages (edits included), so held requests meet the text they were made against.
    reopen: Vec<Arc<DocumentSnapshot>>,
    /// The editor's `initialize` params once the server has accepted them (replayed after a crash).
    initialize_params: Option<Value>,
    /// The params of an `initialize` forwarded but not yet answered.
    pending_initialize: Option<Value>,
    last_configuration: Option<Value>,
    shutdown_requested: bool,
    exit_requested: bool,
    crashes: VecDeque<Instant>,
}

impl Relay {
    fn new(
        options: ProxyOptions,
        serving: Option<Serving>,
        mirror: Mirror,
        client: Writer,
        events: mpsc::UnboundedSender<Event>,
    ) -> Relay {
        let state = match options.backend {
            Backend::Standalone => ServerState::Standalone,
            Backend::Server(_) => ServerState::Down,
        };
        Relay {
            options,
            serving,
            waiters: HashMap::new(),
            ai_requests: HashMap::new(),
            merges: HashMap::new(),
            pulls: HashMap::new(),
            client_snippets: false,
            mirror,
            client,
            events,
            state,
            incarnation: 0,
            features: ServerFeatures::default(),
            next_id: 1,
            to_server: HashMap::new(),
            client_ids: HashMap::new(),
            to_client: HashMap::new(),
            server_ids: HashMap::new(),
            held: Vec::new(),
            reopen: Vec::new(),
            initialize_params: None,
            pending_initialize: None,
            last_configuration: None,
            shutdown_requested: false,
            exit_requested: false,
            crashes: VecDeque::new(),
        }
    }

    /// Handles one event; `Some(code)` ends the loop.
    fn handle(&mut self, event: Event) -> Option<ExitCode> {
        match event {
            Event::Client(Incoming::Message(payload)) => self.on_client_payload(payload),
            Event::Client(Incoming::Malformed(bad)) => {
                tracing::warn!(error = %bad.error, "malformed message from the editor");
                if let Some(id) = bad.id {
                    self.client.send(&message::error_response(id, code::PARSE_ERROR, bad.error.to_string()));
                }
                None
            }
            Event::ClientClosed => {
                tracing::info!("the editor closed the connection");
                Some(self.exit_code())
            }
            Event::Signal(name) => {
                tracing::info!(signal = name, "stopping on signal");
                Some(ExitCode::FAILURE)
            }
            Event::Server(ServerEvent::Message { incarnation, item }) if incarnation == self.incarnation => {
                match item {
                    Incoming::Message(payload) => self.on_server_payload(payload),
                    Incoming::Malformed(bad) => self.malformed_from_server(bad),
                }
                None
            }
            Event::Server(ServerEvent::Exited { incarnation, status }) if incarnation == self.incarnation => {
                self.server_exited(&status)
            }
            Event::Server(stale) => {
                tracing::debug!(?stale, "event from a replaced server incarnation");
                None
            }
            Event::RestartDue => {
                self.restart();
                None
            }
            Event::ExitDeadline => {
                tracing::warn!("the server did not exit within {EXIT_GRACE:?} of `exit`; stopping it");
                Some(self.exit_code())
            }
            Event::Ai(finished) => {
                self.suggestion_finished(finished);
                None
            }
            Event::MergeDeadline(ours) => {
                self.merge_deadline(ours);
                None
            }
        }
    }

    fn exit_code(&self) -> ExitCode {
        // LSP: exit code 0 only if `shutdown` came before `exit`.
        if self.exit_requested && self.shutdown_requested { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }

    async fn finish(mut self) {
        if let ServerState::Up { server, .. } = std::mem::replace(&mut self.state, ServerState::Down) {
            server.stop().await;
        }
        // An editor that stopped reading (but did not close) must not keep us alive.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.close()).await;
    }

    // ---- editor → proxy ----

    fn on_client_payload(&mut self, payload: Payload) -> Option<ExitCode> {
        match payload {
            Payload::Batch(batch) if batch.is_empty() => tracing::warn!("empty batch from the editor; ignored"),
            Payload::Batch(batch) => {
                let forwarded: Vec<RawMessage> =
                    batch.into_iter().filter_map(|m| self.route_client_message(m)).collect();
                if !forwarded.is_empty() {
                    self.send_body_to_server(&message::join_batch(forwarded.iter().map(RawMessage::as_bytes)));
                }
            }
            Payload::One(one) => {
                if let Some(forward) = self.route_client_message(one) {
                    self.send_body_to_server(forward.as_bytes());
                }
            }
        }
        if self.exit_requested && !matches!(self.state, ServerState::Up { .. }) {
            return Some(self.exit_code());
        }
        None
    }

    /// Handles one client message; returns it (rewritten) if it must go on to the server.
    fn route_client_message(&mut self, message: RawMessage) -> Option<RawMessage> {
        match message.classify() {
            Kind::Request { id, method } => {
                if let (Some(serving), Some((uri, position))) = (&mut self.serving, cursor(&message.params())) {
                    serving.cursor(&self.mirror, &uri, position);
                }
                if self.serve_suggestion(&method, &id, &message) {
                    return None;
                }
                if let Some(answer) = self.answer_locally(&method, &message) {
                    let reply = match answer {
                        Ok(result) => message::response(id, result),
                        Err((code, text)) => message::error_response(id, code, text),
                    };
                    self.client.send(&reply);
                    return None;
                }
                if !self.server_accepts_requests() {
                    return self.hold_or_refuse(message, id);
                }
                let ours = self.take_id();
                match method.as_str() {
                    "initialize" => {
                        let params = message.params();
                        self.client_initialized(&params);
                        self.pending_initialize = Some(params);
                    }
                    "shutdown" => self.shutdown_requested = true,
                    "textDocument/completion" => self.start_merge(ours, &message),
                    "textDocument/diagnostic" if self.serving.is_some() => {
                        if let Some(uri) = message.params().pointer("/textDocument/uri").and_then(Value::as_str) {
                            self.pulls.insert(ours, uri.to_owned());
                        }
                    }
                    _ => {}
                }
                self.to_server.insert(ours, Outbound::Client { id: id.clone(), method });
                self.client_ids.insert(IdKey::of(&id), ours);
                Some(message.with_id(&json!(ours)))
            }
            Kind::Notification { method } => self.client_notification(&method, message),
            Kind::Response { id } => {
                let request = id.as_i64().and_then(|ours| self.to_client.remove(&ours));
                match request {
                    Some(request) if request.incarnation == self.incarnation => {
                        self.server_ids.remove(&IdKey::of(&request.server_id));
                        Some(message.with_id(&request.server_id))
                    }
                    Some(_) => None,
                    None => {
                        tracing::warn!(%id, "the editor answered a request nobody asked; dropped");
                        None
                    }
                }
            }
            Kind::Invalid { id, reason } => {
                tracing::warn!(reason, "invalid message from the editor");
                if let Some(id) = id {
                    self.client.send(&message::error_response(id, code::INVALID_REQUEST, reason));
                }
                None
            }
        }
    }

    fn client_notification(&mut self, method: &str, mut message: RawMessage) -> Option<RawMessage> {
        match method {
            "exit" => {
                self.exit_requested = true;
                if matches!(self.state, ServerState::Up { .. }) {
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(EXIT_GRACE).await;
                        let _ = events.send(Event::ExitDeadline);
                    });
                }
            }
            "$/cancelRequest" => {
                // Only requests that went to the server can be cancelled there; ours finish at once,
                // and one still held for a restarting server is simply never sent.
                let theirs = message.params().get("id").cloned()?;
                let Some(&ours) = self.client_ids.get(&IdKey::of(&theirs)) else {
                    if !self.cancel_suggestion(&theirs) {
                        self.cancel_held(&theirs);
                    }
                    return None;
                };
                message = with_cancelled_id(&message, ours)?;
            }
            method if is_document_sync(method) => {
                if let Err(error) = self.mirror.apply(method, message.params_json()) {
                    tracing::warn!(%error, "document mirror");
                }
                if let Some(serving) = &mut self.serving {
                    serving.documents_changed();
                }
            }
            "workspace/didChangeConfiguration" => self.last_configuration = Some(message.params()),
            "initialized" => {
                if let Some(serving) = &self.serving {
                    serving.warm_up();
                }
            }
            _ => {}
        }
        match self.state {
            ServerState::Standalone | ServerState::Down => None,
            ServerState::Restarting | ServerState::Up { initializing: true, .. } => {
                self.held.push(message);
                None
            }
            ServerState::Up { initializing: false, .. } => Some(message),
        }
    }

    /// Requests we answer ourselves, whatever the server would say.
    fn answer_locally(&mut self, method: &str, message: &RawMessage) -> Option<Result<Value, (i64, String)>> {
        if matches!(self.state, ServerState::Standalone) {
            return Some(self.standalone_request(method, &message.params()));
        }
        self.serving.as_ref()?;
        match method {
            "textDocument/inlineCompletion" => Some(Ok(intercept::empty_inline_completion())),
            "textDocument/completion" if !self.features.completion => Some(Ok(intercept::empty_completion())),
            "workspace/executeCommand" => {
                let params = message.params();
                intercept::is_our_command(&params).then(|| self.our_command(&params))
            }
            "completionItem/resolve" => {
                let item = message.params();
                items::is_ours(&item).then_some(Ok(item))
            }
            _ => None,
        }
    }

    fn our_command(&mut self, params: &Value) -> Result<Value, (i64, String)> {
        let command = params.get("command").and_then(Value::as_str).unwrap_or_default();
        let arguments = params.get("arguments").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        match self.serving.as_mut().and_then(|s| s.command(command, arguments)) {
            Some(result) => result,
            None => intercept::execute_command(params, &self.mirror),
        }
    }

    /// What the editor's `initialize` tells the AI side: its workspace, whether it takes snippets.
    fn client_initialized(&mut self, params: &Value) {
        let snippets = params.pointer("/capabilities/textDocument/completion/completionItem/snippetSupport");
        self.client_snippets = snippets == Some(&Value::Bool(true));
        if let Some(serving) = &mut self.serving {
            serving.set_workspace(params);
        }
    }

    fn standalone_request(&mut self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => {
                let encoding = intercept::choose_encoding(params);
                self.mirror.set_encoding(encoding);
                self.client_initialized(params);
                Ok(intercept::standalone_initialize_result(encoding))
            }
            "shutdown" => {
                self.shutdown_requested = true;
                Ok(Value::Null)
            }
            "textDocument/inlineCompletion" => Ok(intercept::empty_inline_completion()),
            "textDocument/completion" => Ok(intercept::empty_completion()),
            "workspace/executeCommand" => self.our_command(params),
            "completionItem/resolve" => Ok(params.clone()),
            _ => Err((code::METHOD_NOT_FOUND, format!("marunochi lsp does not handle {method}"))),
        }
    }

    fn server_accepts_requests(&self) -> bool {
        matches!(self.state, ServerState::Up { initializing: false, .. })
    }

    fn hold_or_refuse(&mut self, message: RawMessage, id: Value) -> Option<RawMessage> {
        match self.state {
            ServerState::Restarting | ServerState::Up { initializing: true, .. } => self.held.push(message),
            _ => self.client.send(&message::error_response(
                id,
                code::REQUEST_FAILED,
                "the language server is not running (it exited; see the marunochi log)",
            )),
        }
        None
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn send_to_server(&self, value: Value) {
        if let ServerState::Up { server, .. } = &self.state {
            server.send(&value);
        }
    }

    fn send_body_to_server(&self, body: &[u8]) {
        if let ServerState::Up { server, .. } = &self.state {
            server.send_body(body);
        }
    }

    // ---- server → proxy ----

    fn on_server_payload(&mut self, payload: Payload) {
        match payload {
            Payload::Batch(batch) => {
                let forwarded: Vec<RawMessage> =
                    batch.into_iter().filter_map(|m| self.route_server_message(m)).collect();
                if !forwarded.is_empty() {
                    self.client.send_body(&message::join_batch(forwarded.iter().map(RawMessage::as_bytes)));
                }
            }
            Payload::One(one) => {
                if let Some(forward) = self.route_server_message(one) {
                    self.client.send_body(forward.as_bytes());
                }
            }
        }
    }

    fn route_server_message(&mut self, message: RawMessage) -> Option<RawMessage> {
        match message.classify() {
            Kind::Response { id } => {
                let ours = id.as_i64().unwrap_or_default();
                let Some(origin) = self.to_server.remove(&ours) else {
                    tracing::warn!(%id, "the server answered a request nobody asked; dropped");
                    return None;
                };
                match origin {
                    Outbound::Client { id, method } => {
                        self.client_ids.remove(&IdKey::of(&id));
                        if let ("initialize", Ok(mut response)) = (method.as_str(), message.to_value()) {
                            self.server_initialized(&mut response);
                            response["id"] = id;
                            return Some(RawMessage::from_value(&response));
                        }
                        if let Some(uri) = self.pulls.remove(&ours) {
                            self.pulled_diagnostics(&uri, &message);
                        }
                        let reply = message.with_id(&id);
                        if self.merges.contains_key(&ours) {
                            return self.server_completion(ours, reply);
                        }
                        Some(reply)
                    }
                    Outbound::ReplayInitialize => {
                        let response = message.to_value();
                        self.replay_after_initialize(&response.unwrap_or_else(|e| json!({"error": e.to_string()})));
                        None
                    }
                }
            }
            Kind::Request { id, .. } => {
                let ours = self.take_id();
                self.server_ids.insert(IdKey::of(&id), ours);
                self.to_client.insert(ours, InboundRequest { server_id: id, incarnation: self.incarnation });
                Some(message.with_id(&json!(ours)))
            }
            Kind::Notification { method } if method == "$/cancelRequest" => {
                let ours = *self.server_ids.get(&IdKey::of(message.params().get("id")?))?;
                with_cancelled_id(&message, ours)
            }
            Kind::Notification { method } => {
                if method == "textDocument/publishDiagnostics"
                    && let Some(serving) = &mut self.serving
                {
                    let params = message.params();
                    if let (Some(uri), Some(list)) = (params["uri"].as_str(), params["diagnostics"].as_array()) {
                        serving.diagnostics(uri, list, &self.mirror);
                    }
                }
                Some(message)
            }
            Kind::Invalid { id, reason } => {
                tracing::warn!(reason, "invalid message from the server");
                if let Some(id) = id {
                    self.send_to_server(message::error_response(id, code::INVALID_REQUEST, reason));
                }
                None
            }
        }
    }

    /// A full document diagnostic report (LSP 3.17 pull model) for `uri` and the related documents it
    /// names; an `unchanged` report leaves the earlier diagnostics standing.
    fn pulled_diagnostics(&mut self, uri: &str, response: &RawMessage) {
        let (Some(serving), Ok(response)) = (&mut self.serving, response.to_value()) else { return };
        let report = &response["result"];
        let related = report["relatedDocuments"].as_object().into_iter().flatten();
        for (uri, report) in std::iter::once((uri, report)).chain(related.map(|(uri, r)| (uri.as_str(), r))) {
            if report["kind"] == "full"
                && let Some(items) = report["items"].as_array()
            {
                serving.diagnostics(uri, items, &self.mirror);
            }
        }
    }

    fn malformed_from_server(&mut self, bad: crate::lsp::codec::Malformed) {
        tracing::warn!(error = %bad.error, "malformed message from the server");
        // If it was the answer to an editor request, the editor must not wait for it forever.
        let origin = bad.id.as_ref().and_then(Value::as_i64).and_then(|ours| self.to_server.remove(&ours));
        if let Some(Outbound::Client { id, .. }) = origin {
            self.client_ids.remove(&IdKey::of(&id));
            let text = format!("the language server sent an unreadable response: {}", bad.error);
            self.client.send(&message::error_response(id, code::REQUEST_FAILED, text));
        }
    }

    fn server_initialized(&mut self, response: &mut Value) {
        let Some(result) = response.get_mut("result") else { return };
        // Only an accepted initialize is worth replaying into a restarted server.
        self.initialize_params = self.pending_initialize.take();
        self.mirror.set_encoding(intercept::negotiated_encoding(result));
        if self.serving.is_some() {
            self.features = intercept::merge_capabilities(result);
        }
    }

    // ---- server lifecycle ----

    fn start_server(&mut self, command: &[String]) -> std::io::Result<()> {
        self.incarnation += 1;
        let server =
            Downstream::spawn(command, self.incarnation, self.options.config.max_message_bytes(), self.events.clone())?;
        self.state = ServerState::Up { server, initializing: false };
        Ok(())
    }

    fn server_exited(&mut self, status: &str) -> Option<ExitCode> {
        self.state = ServerState::Down;
        if self.exit_requested {
            return Some(self.exit_code());
        }
        if self.shutdown_requested {
            tracing::info!(status, "the server exited after shutdown; waiting for `exit`");
            self.fail_in_flight(&format!("the language server exited ({status})"));
            return None;
        }
        tracing::warn!(status, "the language server exited unexpectedly");
        self.fail_in_flight(&format!("the language server exited unexpectedly ({status})"));

        let now = Instant::now();
        let window = self.options.config.restart_window();
        self.crashes.retain(|t| now.duration_since(*t) < window);
        self.crashes.push_back(now);
        let attempt = self.crashes.len() as u32;
        if attempt > self.options.config.max_restarts {
            let text = format!(
                "the language server exited {attempt} times within {}s ({status}); not restarting it again. \
                 Restart the editor's language client to try again.",
                window.as_secs()
            );
            tracing::error!("{text}");
            self.client.send(&message::show_message(MessageType::Error, &text));
            self.refuse_held();
            return None;
        }
        self.state = ServerState::Restarting;
        self.reopen = self.mirror.documents().cloned().collect();
        let delay = Duration::from_millis(100 * 2u64.pow(attempt.min(6) - 1));
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::RestartDue);
        });
        self.client.send(&message::show_message(
            MessageType::Warning,
            &format!("the language server exited unexpectedly ({status}); restarting it (attempt {attempt})"),
        ));
        None
    }

    /// Answers every request the dead server will never answer.
    fn fail_in_flight(&mut self, text: &str) {
        let mut pending: Vec<(i64, Value)> = self
            .to_server
            .drain()
            .filter_map(|(ours, o)| match o {
                Outbound::Client { id, .. } => Some((ours, id)),
                Outbound::ReplayInitialize => None,
            })
            .collect();
        pending.sort_by_key(|(ours, _)| *ours);
        for (_, id) in pending {
            self.client.send(&message::error_response(id, code::REQUEST_FAILED, text));
        }
        // Answers already in hand go out as they are; their suggestions are not waited for.
        for (_, merge) in std::mem::take(&mut self.merges) {
            self.drop_suggestion(merge.ticket);
            if let Some(held) = merge.held {
                self.client.send_body(held.as_bytes());
            }
        }
        self.client_ids.clear();
        self.to_client.clear();
        self.server_ids.clear();
        self.pulls.clear();
    }

    fn restart(&mut self) {
        let Backend::Server(command) = self.options.backend.clone() else { return };
        if !matches!(self.state, ServerState::Restarting) {
            return;
        }
        if let Err(error) = self.start_server(&command) {
            tracing::error!(%error, "restarting the language server failed");
            self.server_exited(&format!("restart failed: {error}"));
            return;
        }
        match self.initialize_params.clone() {
            Some(params) => {
                let ours = self.take_id();
                self.to_server.insert(ours, Outbound::ReplayInitialize);
                self.send_to_server(message::request(ours, "initialize", params));
                if let ServerState::Up { initializing, .. } = &mut self.state {
                    *initializing = true;
                }
            }
            None => {
                // Nothing was initialized, so nothing can be open: the held messages say it all.
                self.reopen.clear();
                self.release_held();
            }
        }
    }

    fn replay_after_initialize(&mut self, response: &Value) {
        if let Some(error) = response.get("error") {
            tracing::error!(%error, "the restarted server refused initialize");
            self.client.send(&message::show_message(
                MessageType::Error,
                &format!("the restarted language server refused to initialize: {error}"),
            ));
            // Stopping it is our decision, not a crash: its exit notice must not trigger a restart.
            self.incarnation += 1;
            self.state = ServerState::Down;
            self.refuse_held();
            return;
        }
        if let ServerState::Up { initializing, .. } = &mut self.state {
            *initializing = false;
        }
        self.send_to_server(message::notification("initialized", json!({})));
        if let Some(settings) = self.last_configuration.clone() {
            self.send_to_server(message::notification("workspace/didChangeConfiguration", settings));
        }
        let mut reopened = 0;
        let documents: Vec<Value> = std::mem::take(&mut self.reopen)
            .into_iter()
            .map(|doc| {
                reopened += 1;
                json!({"textDocument": {
                    "uri": doc.uri, "languageId": doc.language_id, "version": doc.version, "text": doc.text
                }})
            })
            .collect();
        for params in documents {
            self.send_to_server(message::notification("textDocument/didOpen", params));
        }
        tracing::info!(reopened, "language server restarted");
        self.client.send(&message::show_message(
            MessageType::Info,
            &format!("the language server is back; reopened {reopened} document(s)"),
        ));
        self.release_held();
    }

    fn release_held(&mut self) {
        for message in std::mem::take(&mut self.held) {
            match message.classify() {
                // Already in the mirror: only the server still needs them.
                Kind::Notification { method } if is_document_sync(&method) => {
                    self.send_body_to_server(message.as_bytes())
                }
                _ => {
                    self.on_client_payload(Payload::One(message));
                }
            }
        }
    }

    fn cancel_held(&mut self, id: &Value) {
        let held = self.held.iter().position(|m| matches!(m.classify(), Kind::Request { id: held, .. } if &held == id));
        if let Some(index) = held {
            self.held.remove(index);
            self.client.send(&message::error_response(id.clone(), code::REQUEST_CANCELLED, "cancelled"));
        }
    }

    fn refuse_held(&mut self) {
        for held in std::mem::take(&mut self.held) {
            if let Kind::Request { id, .. } = held.classify() {
                self.client.send(&message::error_response(
                    id,
                    code::REQUEST_FAILED,
                    "the language server is not running",
                ));
            }
        }
    }
}

impl Relay {
    // ---- suggestions ----

    /// Starts a suggestion for a request we answer ourselves; `false` if this request is not one.
    fn serve_suggestion(&mut self, method: &str, id: &Value, message: &RawMessage) -> bool {
        let Some(serving) = &mut self.serving else { return false };
        let alone = matches!(self.state, ServerState::Standalone) || !self.features.completion;
        let waiter = match method {
            "textDocument/inlineCompletion" => Waiter::Inline { id: id.clone() },
            "textDocument/completion" if alone => Waiter::Completion { id: id.clone() },
            _ => return false,
        };
        let Some((uri, position)) = cursor(&message.params()) else { return false };
        let kind = if matches!(waiter, Waiter::Inline { .. }) { "inline" } else { "completion" };
        let ticket = serving.start(&self.mirror, &uri, position, kind);
        self.ai_requests.insert(IdKey::of(id), ticket);
        self.waiters.insert(ticket, waiter);
        true
    }

    /// A completion request going to the server: our item is generated alongside, to be merged
    /// into the server's answer if it is ready by the deadline.
    fn start_merge(&mut self, ours: i64, message: &RawMessage) {
        let Some(serving) = &mut self.serving else { return };
        let Some((uri, position)) = cursor(&message.params()) else { return };
        let ticket = serving.start(&self.mirror, &uri, position, "completion");
        self.waiters.insert(ticket, Waiter::Merge { ours });
        self.merges.insert(ours, Merge { ticket, deadline_passed: false, held: None, suggestion: None });
        let events = self.events.clone();
        let deadline = serving.completion_deadline();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let _ = events.send(Event::MergeDeadline(ours));
        });
    }

    /// The server answered a completion request we are merging into.
    fn server_completion(&mut self, ours: i64, reply: RawMessage) -> Option<RawMessage> {
        let merge = self.merges.get_mut(&ours)?;
        match merge.suggestion.take() {
            Some(suggestion) => {
                self.merges.remove(&ours);
                Some(self.merged(reply, suggestion.as_ref()))
            }
            None if !merge.deadline_passed => {
                merge.held = Some(reply);
                None
            }
            None => {
                let ticket = merge.ticket;
                self.merges.remove(&ours);
                self.drop_suggestion(ticket);
                Some(reply)
            }
        }
    }

    fn merge_deadline(&mut self, ours: i64) {
        let Some(merge) = self.merges.get_mut(&ours) else { return };
        merge.deadline_passed = true;
        if let Some(held) = merge.held.take() {
            let ticket = merge.ticket;
            self.merges.remove(&ours);
            self.drop_suggestion(ticket);
            self.client.send_body(held.as_bytes());
        }
    }

    /// The server's completion answer with our item added (and shown), or unchanged.
    fn merged(&mut self, reply: RawMessage, suggestion: Option<&Suggestion>) -> RawMessage {
        let (Some(suggestion), Some(serving)) = (suggestion, &mut self.serving) else { return reply };
        let Ok(mut value) = reply.to_value() else { return reply };
        let Some(result) = value.get_mut("result") else { return reply };
        if items::merge_into(result, suggestion, self.client_snippets).is_none() {
            tracing::warn!("the server's completion result has an unknown shape; our item is left out");
            return reply;
        }
        serving.shown(suggestion);
        RawMessage::from_value(&value)
    }

    fn suggestion_finished(&mut self, finished: Finished) {
        let Some(serving) = &mut self.serving else { return };
        if let Some(text) = serving.finished(&finished) {
            tracing::warn!("{text}");
            self.client.send(&message::show_message(MessageType::Warning, &text));
        }
        let suggestion = match finished.outcome {
            Outcome::Suggested(suggestion) => Some(*suggestion),
            Outcome::Failed(error) => {
                tracing::warn!(%error, "suggestion failed");
                None
            }
            _ => None,
        };
        let Some(waiter) = self.waiters.remove(&finished.ticket) else { return };
        match waiter {
            Waiter::Inline { id } | Waiter::Completion { id } if self.ai_requests.remove(&IdKey::of(&id)).is_none() => {
                tracing::debug!(%id, "suggestion for a request already answered");
            }
            Waiter::Inline { id } => {
                if let Some(s) = &suggestion {
                    serving.shown(s);
                }
                self.client.send(&message::response(id, items::inline_result(suggestion.as_ref())));
            }
            Waiter::Completion { id } => {
                if let Some(s) = &suggestion {
                    serving.shown(s);
                }
                let result = items::completion_result(suggestion.as_ref(), self.client_snippets);
                self.client.send(&message::response(id, result));
            }
            Waiter::Merge { ours } => {
                let Some(merge) = self.merges.get_mut(&ours) else { return };
                match merge.held.take() {
                    Some(held) => {
                        self.merges.remove(&ours);
                        let reply = self.merged(held, suggestion.as_ref());
                        self.client.send_body(reply.as_bytes());
                    }
                    None => merge.suggestion = Some(suggestion),
                }
            }
        }
    }

    /// `$/cancelRequest` for a request we serve ourselves: answered at once, generation stopped.
    fn cancel_suggestion(&mut self, id: &Value) -> bool {
        let Some(ticket) = self.ai_requests.remove(&IdKey::of(id)) else { return false };
        self.drop_suggestion(ticket);
        self.client.send(&message::error_response(id.clone(), code::REQUEST_CANCELLED, "cancelled"));
        true
    }

    /// Nobody waits for this suggestion any more.
    fn drop_suggestion(&mut self, ticket: u64) {
        self.waiters.remove(&ticket);
        if let Some(serving) = &mut self.serving {
            serving.cancel(ticket);
        }
    }
}

/// The document and position of a `TextDocumentPositionParams`.
fn cursor(params: &Value) -> Option<(String, crate::lsp::mirror::Position)> {
    let uri = params.pointer("/textDocument/uri")?.as_str()?.to_owned();
    let position = serde_json::from_value(params.get("position")?.clone()).ok()?;
    Some((uri, position))
}

fn is_document_sync(method: &str) -> bool {
    matches!(method, "textDocument/didOpen" | "textDocument/didChange" | "textDocument/didClose")
}

/// A `$/cancelRequest` naming our id instead of the peer's.
fn with_cancelled_id(cancel: &RawMessage, ours: i64) -> Option<RawMessage> {
    let mut value = cancel.to_value().ok()?;
    value["params"]["id"] = json!(ours);
    Some(RawMessage::from_value(&value))
}

fn spawn_signal_watcher(events: mpsc::UnboundedSender<Event>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        let _ = events.send(Event::Signal(name));
    });
}
