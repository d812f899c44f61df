//! The relay: one event loop between the editor and the real language server.
//!
//! Every message from either side arrives as an [`Event`] on one channel and is handled to the end
//! before the next, so per-direction order is exactly arrival order. Request ids are remapped on
//! the way through (ours are plain integers, the peer's originals are restored on the way back), which
//! lets the proxy issue requests of its own and survive a server restart.

mod client;
mod ids;
mod lifecycle;
mod server;
mod suggestions;

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
use crate::lsp::transport::{self, Backlog, Writer};
use crate::serving::{CaptureSink, Finished, Outcome, Question, Serving, ServingOptions, Suggestion, items};
use ids::{Ids, InboundRequest, Outbound};
use lifecycle::Replay;
use suggestions::Waiting;

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
            let finished = events.clone();
            let mut serving =
                Serving::new(options, &mut self.mirror, Arc::new(move |done| drop(finished.send(Event::Ai(done)))));
            if let Some(capture) = capture {
                serving.set_sink(capture);
            }
            if let Backend::Server(_) = self.options.backend {
                let questions = events.clone();
                serving.set_server(Arc::new(move |question| drop(questions.send(Event::Ask(question)))));
            }
            serving
        });
        let max = self.options.config.max_message_bytes();
        let client = Writer::spawn_blocking(std::io::stdout());
        let server_backlog = Arc::new(Backlog::default());
        let editor = server_backlog.clone();
        transport::spawn_blocking_reader(
            std::io::stdin(),
            max,
            editor,
            events.clone(),
            Event::Client,
            Event::ClientClosed,
        );
        spawn_signal_watcher(events.clone());

        let mut relay = Relay::new(self.options, serving, self.mirror, client, server_backlog, events);
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
    /// The serving stage asks the language server something.
    Ask(Question),
    /// The AI item of this completion request (our id on the server side) may not wait any longer.
    MergeDeadline(i64),
}

impl From<ServerEvent> for Event {
    fn from(event: ServerEvent) -> Event {
        Event::Server(event)
    }
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
    /// The editor takes snippet completion items (its `initialize` said so).
    client_snippets: bool,
    mirror: Mirror,
    client: Writer,
    /// What waits for the server; the editor's reader pauses while it is full.
    server_backlog: Arc<Backlog>,
    events: mpsc::UnboundedSender<Event>,
    state: ServerState,
    incarnation: u32,
    features: ServerFeatures,
    /// Ids remapped in both directions, and the requests each stands for (`ids.rs`).
    ids: Ids,
    /// What a restarted server is given again (`lifecycle.rs`).
    replay: Replay,
    /// Requests waiting for suggestions (`suggestions.rs`).
    waiting: Waiting,
    shutdown_requested: bool,
    exit_requested: bool,
}

impl Relay {
    fn new(
        options: ProxyOptions,
        serving: Option<Serving>,
        mirror: Mirror,
        client: Writer,
        server_backlog: Arc<Backlog>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Relay {
        let state = match options.backend {
            Backend::Standalone => ServerState::Standalone,
            Backend::Server(_) => ServerState::Down,
        };
        Relay {
            options,
            serving,
            client_snippets: false,
            mirror,
            client,
            server_backlog,
            events,
            state,
            incarnation: 0,
            features: ServerFeatures::default(),
            ids: Ids::default(),
            replay: Replay::default(),
            waiting: Waiting::default(),
            shutdown_requested: false,
            exit_requested: false,
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
            Event::Ask(question) => {
                self.ask_server(question);
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
