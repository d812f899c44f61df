//! Editor → proxy: every frame the editor sends, relayed (ids remapped), answered here, or held
//! while the server restarts.

use super::*;

impl Relay {
    pub(super) fn on_client_payload(&mut self, payload: Payload) -> Option<ExitCode> {
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
    pub(super) fn route_client_message(&mut self, message: RawMessage) -> Option<RawMessage> {
        match message.classify() {
            Kind::Request { id, method } => {
                if let (Some(serving), Some((uri, position))) = (&mut self.serving, cursor(&message.params())) {
                    serving.cursor(&self.mirror, &uri, position);
                    // Editors ask these where the cursor is (a hover is where the mouse is).
                    if matches!(method.as_str(), "textDocument/documentHighlight" | "textDocument/signatureHelp") {
                        serving.cursor_moved(&self.mirror, &uri, position);
                    }
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
                let ours = self.ids.take();
                match method.as_str() {
                    "initialize" => {
                        let params = message.params();
                        self.client_initialized(&params);
                        self.replay.pending_initialize = Some(params);
                    }
                    "shutdown" => self.editor_shutting_down(),
                    "textDocument/completion" => self.start_merge(ours, &message),
                    "textDocument/diagnostic" if self.serving.is_some() => {
                        if let Some(uri) = message.params().pointer("/textDocument/uri").and_then(Value::as_str) {
                            self.ids.pulls.insert(ours, uri.to_owned());
                        }
                    }
                    _ => {}
                }
                self.ids.to_server.insert(ours, Outbound::Client { id: id.clone(), method });
                self.ids.client_ids.insert(IdKey::of(&id), ours);
                Some(message.with_id(&json!(ours)))
            }
            Kind::Notification { method } => self.client_notification(&method, message),
            Kind::Response { id } => {
                let request = id.as_i64().and_then(|ours| self.ids.to_client.remove(&ours));
                match request {
                    Some(request) if request.incarnation == self.incarnation => {
                        self.ids.server_ids.remove(&IdKey::of(&request.server_id));
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

    pub(super) fn client_notification(&mut self, method: &str, mut message: RawMessage) -> Option<RawMessage> {
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
                let Some(&ours) = self.ids.client_ids.get(&IdKey::of(&theirs)) else {
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
                    // Where the cursor is in a file just opened is the editor's to say (`CURSOR_NOTIFICATION`);
                    // until it does, its start: the context before every prompt in it is what is computed.
                    let uri = message.params().pointer("/textDocument/uri").and_then(Value::as_str).map(str::to_owned);
                    if let Some(uri) = uri.filter(|_| method == "textDocument/didOpen") {
                        serving.cursor_moved(
                            &self.mirror,
                            &uri,
                            crate::lsp::mirror::Position { line: 0, character: 0 },
                        );
                    }
                }
            }
            intercept::CURSOR_NOTIFICATION => {
                if let (Some(serving), Some((uri, position))) = (&mut self.serving, cursor(&message.params())) {
                    serving.cursor_moved(&self.mirror, &uri, position);
                }
                return None;
            }
            "workspace/didChangeConfiguration" => self.replay.last_configuration = Some(message.params()),
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
                self.replay.held.push(message);
                None
            }
            ServerState::Up { initializing: false, .. } => Some(message),
        }
    }

    /// Requests we answer ourselves, whatever the server would say.
    pub(super) fn answer_locally(
        &mut self,
        method: &str,
        message: &RawMessage,
    ) -> Option<Result<Value, (i64, String)>> {
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

    pub(super) fn our_command(&mut self, params: &Value) -> Result<Value, (i64, String)> {
        let command = params.get("command").and_then(Value::as_str).unwrap_or_default();
        let arguments = params.get("arguments").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        match self.serving.as_mut().and_then(|s| s.command(command, arguments)) {
            Some(result) => result,
            None => intercept::execute_command(params, &self.mirror),
        }
    }

    /// What the editor's `initialize` tells the AI side: its workspace, whether it takes snippets.
    pub(super) fn client_initialized(&mut self, params: &Value) {
        let snippets = params.pointer("/capabilities/textDocument/completion/completionItem/snippetSupport");
        self.client_snippets = snippets == Some(&Value::Bool(true));
        if let Some(serving) = &mut self.serving {
            serving.set_workspace(params);
        }
    }

    pub(super) fn standalone_request(&mut self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => {
                let encoding = intercept::choose_encoding(params);
                self.mirror.set_encoding(encoding);
                self.client_initialized(params);
                Ok(intercept::standalone_initialize_result(encoding))
            }
            "shutdown" => {
                self.editor_shutting_down();
                Ok(Value::Null)
            }
            "textDocument/inlineCompletion" => Ok(intercept::empty_inline_completion()),
            "textDocument/completion" => Ok(intercept::empty_completion()),
            "workspace/executeCommand" => self.our_command(params),
            "completionItem/resolve" => Ok(params.clone()),
            _ => Err((code::METHOD_NOT_FOUND, format!("marunochi lsp does not handle {method}"))),
        }
    }

    fn editor_shutting_down(&mut self) {
        self.shutdown_requested = true;
        if let Some(serving) = &mut self.serving {
            serving.editor_shutting_down();
        }
    }

    pub(super) fn server_accepts_requests(&self) -> bool {
        matches!(self.state, ServerState::Up { initializing: false, .. })
    }

    pub(super) fn hold_or_refuse(&mut self, message: RawMessage, id: Value) -> Option<RawMessage> {
        match self.state {
            ServerState::Restarting | ServerState::Up { initializing: true, .. } => self.replay.held.push(message),
            _ => self.client.send(&message::error_response(
                id,
                code::REQUEST_FAILED,
                "the language server is not running (it exited; see the marunochi log)",
            )),
        }
        None
    }

    pub(super) fn send_to_server(&self, value: Value) {
        if let ServerState::Up { server, .. } = &self.state {
            server.send(&value);
        }
    }

    pub(super) fn send_body_to_server(&self, body: &[u8]) {
        if let ServerState::Up { server, .. } = &self.state {
            server.send_body(body);
        }
    }
}
