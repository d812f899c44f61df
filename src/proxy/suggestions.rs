//! Suggestions in the relay: requests we answer with the model alone, and completion answers
//! merged with the server's (held at most until the deadline).

use super::*;

/// Who waits for a suggestion.
pub(super) enum Waiter {
    /// `textDocument/inlineCompletion` (the editor's id).
    Inline { id: Value },
    /// `textDocument/completion` that we answer alone (no server, or one without completion).
    Completion { id: Value },
    /// `textDocument/completion` also sent to the server (our id there): the results are merged.
    Merge { ours: i64 },
}

/// A completion request answered by both the server and us.
pub(super) struct Merge {
    pub(super) ticket: u64,
    pub(super) deadline_passed: bool,
    /// The server's answer, held until the suggestion or the deadline comes.
    pub(super) held: Option<RawMessage>,
    /// The suggestion once it is done (`Some(None)`: done, nothing to add).
    pub(super) suggestion: Option<Option<Suggestion>>,
}

/// Requests waiting for suggestions.
#[derive(Default)]
pub(super) struct Waiting {
    /// Suggestions in progress → who waits for them.
    pub(super) waiters: HashMap<u64, Waiter>,
    /// The editor's id of a request we serve ourselves → its suggestion (for `$/cancelRequest`).
    pub(super) ai_requests: HashMap<IdKey, u64>,
    /// Our id of a completion request on the server side → the merge in progress.
    pub(super) merges: HashMap<i64, Merge>,
}

impl Relay {
    /// Starts a suggestion for a request we answer ourselves; `false` if this request is not one.
    pub(super) fn serve_suggestion(&mut self, method: &str, id: &Value, message: &RawMessage) -> bool {
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
        self.waiting.ai_requests.insert(IdKey::of(id), ticket);
        self.waiting.waiters.insert(ticket, waiter);
        true
    }

    /// A completion request going to the server: our item is generated alongside, to be merged
    /// into the server's answer if it is ready by the deadline.
    pub(super) fn start_merge(&mut self, ours: i64, message: &RawMessage) {
        let Some(serving) = &mut self.serving else { return };
        let Some((uri, position)) = cursor(&message.params()) else { return };
        let ticket = serving.start(&self.mirror, &uri, position, "completion");
        self.waiting.waiters.insert(ticket, Waiter::Merge { ours });
        self.waiting.merges.insert(ours, Merge { ticket, deadline_passed: false, held: None, suggestion: None });
        let events = self.events.clone();
        let deadline = serving.completion_deadline();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let _ = events.send(Event::MergeDeadline(ours));
        });
    }

    /// The server answered a completion request we are merging into.
    pub(super) fn server_completion(&mut self, ours: i64, reply: RawMessage) -> Option<RawMessage> {
        let merge = self.waiting.merges.get_mut(&ours)?;
        match merge.suggestion.take() {
            Some(suggestion) => {
                self.waiting.merges.remove(&ours);
                Some(self.merged(reply, suggestion.as_ref()))
            }
            None if !merge.deadline_passed => {
                merge.held = Some(reply);
                None
            }
            None => {
                let ticket = merge.ticket;
                self.waiting.merges.remove(&ours);
                self.drop_suggestion(ticket);
                Some(reply)
            }
        }
    }

    pub(super) fn merge_deadline(&mut self, ours: i64) {
        let Some(merge) = self.waiting.merges.get_mut(&ours) else { return };
        merge.deadline_passed = true;
        if let Some(held) = merge.held.take() {
            let ticket = merge.ticket;
            self.waiting.merges.remove(&ours);
            self.drop_suggestion(ticket);
            self.client.send_body(held.as_bytes());
        }
    }

    /// The server's completion answer with our item added (and shown), or unchanged.
    pub(super) fn merged(&mut self, reply: RawMessage, suggestion: Option<&Suggestion>) -> RawMessage {
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

    pub(super) fn suggestion_finished(&mut self, finished: Finished) {
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
        let Some(waiter) = self.waiting.waiters.remove(&finished.ticket) else { return };
        match waiter {
            Waiter::Inline { id } | Waiter::Completion { id }
                if self.waiting.ai_requests.remove(&IdKey::of(&id)).is_none() =>
            {
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
                let Some(merge) = self.waiting.merges.get_mut(&ours) else { return };
                match merge.held.take() {
                    Some(held) => {
                        self.waiting.merges.remove(&ours);
                        let reply = self.merged(held, suggestion.as_ref());
                        self.client.send_body(reply.as_bytes());
                    }
                    None => merge.suggestion = Some(suggestion),
                }
            }
        }
    }

    /// `$/cancelRequest` for a request we serve ourselves: answered at once, generation stopped.
    pub(super) fn cancel_suggestion(&mut self, id: &Value) -> bool {
        let Some(ticket) = self.waiting.ai_requests.remove(&IdKey::of(id)) else { return false };
        self.drop_suggestion(ticket);
        self.client.send(&message::error_response(id.clone(), code::REQUEST_CANCELLED, "cancelled"));
        true
    }

    /// Nobody waits for this suggestion any more.
    pub(super) fn drop_suggestion(&mut self, ticket: u64) {
        self.waiting.waiters.remove(&ticket);
        if let Some(serving) = &mut self.serving {
            serving.cancel(ticket);
        }
    }
}
