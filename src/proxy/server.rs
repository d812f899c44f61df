//! Server → proxy: every frame the language server sends, relayed to the editor with the
//! editor's ids restored, and the few answers we read (`initialize`, diagnostics pulls).

use super::*;

impl Relay {
    pub(super) fn on_server_payload(&mut self, payload: Payload) {
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

    pub(super) fn route_server_message(&mut self, message: RawMessage) -> Option<RawMessage> {
        match message.classify() {
            Kind::Response { id } => {
                let ours = id.as_i64().unwrap_or_default();
                let Some(origin) = self.ids.to_server.remove(&ours) else {
                    tracing::warn!(%id, "the server answered a request nobody asked; dropped");
                    return None;
                };
                match origin {
                    Outbound::Client { id, method } => {
                        self.ids.client_ids.remove(&IdKey::of(&id));
                        if let ("initialize", Ok(mut response)) = (method.as_str(), message.to_value()) {
                            self.server_initialized(&mut response);
                            response["id"] = id;
                            return Some(RawMessage::from_value(&response));
                        }
                        if let Some(uri) = self.ids.pulls.remove(&ours) {
                            self.pulled_diagnostics(&uri, &message);
                        }
                        let reply = message.with_id(&id);
                        if self.waiting.merges.contains_key(&ours) {
                            return self.server_completion(ours, reply);
                        }
                        Some(reply)
                    }
                    Outbound::Serving(reply) => {
                        let mut answer = message.to_value().unwrap_or_default();
                        let _ = reply.send(answer["result"].take());
                        None
                    }
                    Outbound::ReplayInitialize => {
                        let response = message.to_value();
                        self.replay_after_initialize(&response.unwrap_or_else(|e| json!({"error": e.to_string()})));
                        None
                    }
                }
            }
            Kind::Request { id, .. } => {
                let ours = self.ids.take();
                self.ids.server_ids.insert(IdKey::of(&id), ours);
                self.ids.to_client.insert(ours, InboundRequest { server_id: id, incarnation: self.incarnation });
                Some(message.with_id(&json!(ours)))
            }
            Kind::Notification { method } if method == "$/cancelRequest" => {
                let ours = *self.ids.server_ids.get(&IdKey::of(message.params().get("id")?))?;
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

    /// A question of the serving stage's; left unasked (its reply dropped) when the server cannot
    /// take requests now or does not offer the method.
    pub(super) fn ask_server(&mut self, question: Question) {
        let offered = match question.method {
            "textDocument/definition" => self.features.definition,
            _ => false,
        };
        if !offered || !self.server_accepts_requests() {
            return;
        }
        let ours = self.ids.take();
        self.send_to_server(message::request(ours, question.method, question.params));
        self.ids.to_server.insert(ours, Outbound::Serving(question.reply));
    }

    /// A full document diagnostic report (LSP 3.17 pull model) for `uri` and the related documents it
    /// names; an `unchanged` report leaves the earlier diagnostics standing.
    pub(super) fn pulled_diagnostics(&mut self, uri: &str, response: &RawMessage) {
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

    pub(super) fn malformed_from_server(&mut self, bad: crate::lsp::codec::Malformed) {
        tracing::warn!(error = %bad.error, "malformed message from the server");
        // If it was the answer to an editor request, the editor must not wait for it forever.
        let origin = bad.id.as_ref().and_then(Value::as_i64).and_then(|ours| self.ids.to_server.remove(&ours));
        if let Some(Outbound::Client { id, .. }) = origin {
            self.ids.client_ids.remove(&IdKey::of(&id));
            let text = format!("the language server sent an unreadable response: {}", bad.error);
            self.client.send(&message::error_response(id, code::REQUEST_FAILED, text));
        }
    }

    pub(super) fn server_initialized(&mut self, response: &mut Value) {
        let Some(result) = response.get_mut("result") else { return };
        // Only an accepted initialize is worth replaying into a restarted server.
        self.replay.initialize_params = self.replay.pending_initialize.take();
        self.mirror.set_encoding(intercept::negotiated_encoding(result));
        if self.serving.is_some() {
            self.features = intercept::merge_capabilities(result);
        }
    }
}
