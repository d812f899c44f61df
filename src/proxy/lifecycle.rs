//! The language server's life: start, exit, crash, restart with backoff, and the replay that
//! brings a new server to where the old one was.

use super::*;

/// What a restarted server is given again.
#[derive(Default)]
pub(super) struct Replay {
    /// Client messages held while the server is restarting, replayed in order once it is up.
    pub(super) held: Vec<RawMessage>,
    /// The open documents as they were when the server died: reopened in the new server, followed by
    /// the held messages (edits included), so held requests meet the text they were made against.
    pub(super) reopen: Vec<Arc<DocumentSnapshot>>,
    /// The editor's `initialize` params once the server has accepted them (replayed after a crash).
    pub(super) initialize_params: Option<Value>,
    /// The params of an `initialize` forwarded but not yet answered.
    pub(super) pending_initialize: Option<Value>,
    pub(super) last_configuration: Option<Value>,
    pub(super) crashes: VecDeque<Instant>,
}

impl Relay {
    pub(super) fn start_server(&mut self, command: &[String]) -> std::io::Result<()> {
        self.incarnation += 1;
        let max = self.options.config.max_message_bytes();
        let backlog = self.server_backlog.clone();
        let server = Downstream::spawn(command, self.incarnation, max, backlog, self.events.clone())?;
        self.state = ServerState::Up { server, initializing: false };
        Ok(())
    }

    pub(super) fn server_exited(&mut self, status: &str) -> Option<ExitCode> {
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
        self.replay.crashes.retain(|t| now.duration_since(*t) < window);
        self.replay.crashes.push_back(now);
        let attempt = self.replay.crashes.len() as u32;
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
        self.replay.reopen = self.mirror.documents().cloned().collect();
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
    pub(super) fn fail_in_flight(&mut self, text: &str) {
        let mut pending: Vec<(i64, Value)> = self
            .ids
            .to_server
            .drain()
            .filter_map(|(ours, o)| match o {
                Outbound::Client { id, .. } => Some((ours, id)),
                Outbound::ReplayInitialize | Outbound::Serving(_) => None,
            })
            .collect();
        pending.sort_by_key(|(ours, _)| *ours);
        for (_, id) in pending {
            self.client.send(&message::error_response(id, code::REQUEST_FAILED, text));
        }
        // Answers already in hand go out as they are; their suggestions are not waited for.
        for (_, merge) in std::mem::take(&mut self.waiting.merges) {
            self.drop_suggestion(merge.ticket);
            if let Some(held) = merge.held {
                self.client.send_body(held.as_bytes());
            }
        }
        self.ids.client_ids.clear();
        self.ids.to_client.clear();
        self.ids.server_ids.clear();
        self.ids.pulls.clear();
    }

    pub(super) fn restart(&mut self) {
        let Backend::Server(command) = self.options.backend.clone() else { return };
        if !matches!(self.state, ServerState::Restarting) {
            return;
        }
        if let Err(error) = self.start_server(&command) {
            tracing::error!(%error, "restarting the language server failed");
            self.server_exited(&format!("restart failed: {error}"));
            return;
        }
        match self.replay.initialize_params.clone() {
            Some(params) => {
                let ours = self.ids.take();
                self.ids.to_server.insert(ours, Outbound::ReplayInitialize);
                self.send_to_server(message::request(ours, "initialize", params));
                if let ServerState::Up { initializing, .. } = &mut self.state {
                    *initializing = true;
                }
            }
            None => {
                // Nothing was initialized, so nothing can be open: the held messages say it all.
                self.replay.reopen.clear();
                self.release_held();
            }
        }
    }

    pub(super) fn replay_after_initialize(&mut self, response: &Value) {
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
        if let Some(settings) = self.replay.last_configuration.clone() {
            self.send_to_server(message::notification("workspace/didChangeConfiguration", settings));
        }
        let mut reopened = 0;
        let documents: Vec<Value> = std::mem::take(&mut self.replay.reopen)
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

    pub(super) fn release_held(&mut self) {
        for message in std::mem::take(&mut self.replay.held) {
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

    pub(super) fn cancel_held(&mut self, id: &Value) {
        let held =
            self.replay.held.iter().position(|m| matches!(m.classify(), Kind::Request { id: held, .. } if &held == id));
        if let Some(index) = held {
            self.replay.held.remove(index);
            self.client.send(&message::error_response(id.clone(), code::REQUEST_CANCELLED, "cancelled"));
        }
    }

    pub(super) fn refuse_held(&mut self) {
        for held in std::mem::take(&mut self.replay.held) {
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
