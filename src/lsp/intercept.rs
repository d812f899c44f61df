//! What the proxy adds to the conversation: our capabilities, our commands, and the answers to the
//! requests we serve ourselves. Everything else is relayed untouched.

use serde_json::{Value, json};

use super::message::{self, code};
use super::mirror::{Mirror, PositionEncoding};

/// Sent by editors when the user accepts one of our suggestions (argument: the suggestion id).
pub const ACCEPT_COMMAND: &str = "marunochi.accept";
/// Explicit feedback: `[rating (-1, 0, 1), comment?]`.
pub const FEEDBACK_COMMAND: &str = "marunochi.feedback";
/// Returns our mirror of a document (`[uri]`): lets tests and bug reports see what we see.
pub const DEBUG_DOCUMENT_COMMAND: &str = "marunochi.debug.document";

/// What an editor's status bar shows: the model, each language's adapters, today's acceptance.
pub const STATUS_COMMAND: &str = "marunochi.status";

/// Returns the suggestions this proxy showed recently and whether each was accepted (tests, bug reports).
pub const DEBUG_SUGGESTIONS_COMMAND: &str = "marunochi.debug.suggestions";

/// A notification our editor plugins send where the cursor comes to rest
/// (`TextDocumentPositionParams`): the prompt there is computed before the user types. Ours
/// alone; never relayed to the language server.
pub const CURSOR_NOTIFICATION: &str = "marunochi/cursor";

/// The commands we advertise in `executeCommandProvider`.
pub const ADVERTISED_COMMANDS: [&str; 2] = [ACCEPT_COMMAND, FEEDBACK_COMMAND];

/// What the real server's `initialize` result told us.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFeatures {
    pub completion: bool,
    /// It answers `textDocument/definition` (the definitions context source asks it).
    pub definition: bool,
}

/// Adds our capabilities to the server's `initialize` result, in place.
pub fn merge_capabilities(result: &mut Value) -> ServerFeatures {
    let Some(capabilities) = message::object_at(result, &["capabilities"]) else {
        return ServerFeatures::default();
    };
    let offered = |name: &str| capabilities.get(name).is_some_and(|c| !c.is_null() && c != &json!(false));
    let features =
        ServerFeatures { completion: offered("completionProvider"), definition: offered("definitionProvider") };
    if !features.completion {
        capabilities.insert("completionProvider".into(), json!({}));
    }
    if capabilities.get("inlineCompletionProvider").is_none_or(|p| p.is_null() || p == &json!(false)) {
        capabilities.insert("inlineCompletionProvider".into(), json!({}));
    }
    if let Some(provider) = message::object_at(result, &["capabilities", "executeCommandProvider"]) {
        let commands = provider.entry("commands").or_insert_with(|| json!([]));
        if let Some(list) = commands.as_array_mut() {
            for command in ADVERTISED_COMMANDS {
                if !list.iter().any(|c| c == command) {
                    list.push(json!(command));
                }
            }
        }
    }
    features
}

/// The encoding the server chose (LSP: absent means UTF-16).
pub fn negotiated_encoding(result: &Value) -> PositionEncoding {
    result
        .pointer("/capabilities/positionEncoding")
        .and_then(Value::as_str)
        .and_then(PositionEncoding::from_lsp)
        .unwrap_or_default()
}

/// Standalone mode picks the encoding itself: the client's most preferred one that we support.
pub fn choose_encoding(initialize_params: &Value) -> PositionEncoding {
    initialize_params
        .pointer("/capabilities/general/positionEncodings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(PositionEncoding::from_lsp)
        .unwrap_or_default()
}

/// Our `initialize` result when there is no server behind us.
pub fn standalone_initialize_result(encoding: PositionEncoding) -> Value {
    json!({
        "capabilities": {
            "positionEncoding": encoding.as_lsp(),
            "textDocumentSync": {"openClose": true, "change": 2},
            "completionProvider": {},
            "inlineCompletionProvider": {},
            "executeCommandProvider": {"commands": ADVERTISED_COMMANDS},
        },
        "serverInfo": {"name": "marunochi", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The answer to a completion request when no engine is serving yet.
pub fn empty_completion() -> Value {
    json!({"isIncomplete": false, "items": []})
}

pub fn empty_inline_completion() -> Value {
    json!({"items": []})
}

/// Whether a `workspace/executeCommand` request is addressed to us.
pub fn is_our_command(params: &Value) -> bool {
    params.get("command").and_then(Value::as_str).is_some_and(|c| c.starts_with("marunochi."))
}

/// Runs one of our commands that needs only the mirror (the serving stage runs the others); `Err`
/// is a JSON-RPC error (code, message).
pub fn execute_command(params: &Value, mirror: &Mirror) -> Result<Value, (i64, String)> {
    let command = params.get("command").and_then(Value::as_str).unwrap_or_default();
    let arguments = params.get("arguments").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    match command {
        DEBUG_DOCUMENT_COMMAND => {
            let Some(uri) = arguments.first().and_then(Value::as_str) else {
                return Err((code::INVALID_PARAMS, format!("{command} takes one argument: the document uri")));
            };
            let Some(doc) = mirror.snapshot(uri) else {
                return Err((code::INVALID_PARAMS, format!("{uri} is not open")));
            };
            Ok(json!({
                "uri": doc.uri,
                "languageId": doc.language_id,
                "version": doc.version,
                "text": doc.text,
                "positionEncoding": mirror.encoding().as_lsp(),
            }))
        }
        _ => Err((code::INVALID_PARAMS, format!("unknown command {command:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_ours_and_keeps_theirs() {
        let mut result = json!({
            "capabilities": {
                "hoverProvider": true,
                "completionProvider": {"triggerCharacters": ["."]},
                "executeCommandProvider": {"commands": ["pyright.organizeimports"]},
            },
            "serverInfo": {"name": "x"}
        });
        let features = merge_capabilities(&mut result);
        assert!(features.completion);
        assert_eq!(
            result,
            json!({
                "capabilities": {
                    "hoverProvider": true,
                    "completionProvider": {"triggerCharacters": ["."]},
                    "executeCommandProvider": {"commands": ["pyright.organizeimports", ACCEPT_COMMAND, FEEDBACK_COMMAND]},
                    "inlineCompletionProvider": {},
                },
                "serverInfo": {"name": "x"}
            })
        );
    }

    #[test]
    fn merge_fills_in_missing_providers() {
        let mut result = json!({"capabilities": {}});
        assert!(!merge_capabilities(&mut result).completion);
        assert_eq!(result["capabilities"]["completionProvider"], json!({}));
        assert_eq!(result["capabilities"]["executeCommandProvider"]["commands"], json!(ADVERTISED_COMMANDS));
    }

    #[test]
    fn encodings() {
        assert_eq!(negotiated_encoding(&json!({"capabilities": {}})), PositionEncoding::Utf16);
        assert_eq!(
            negotiated_encoding(&json!({"capabilities": {"positionEncoding": "utf-8"}})),
            PositionEncoding::Utf8
        );
        let params = json!({"capabilities": {"general": {"positionEncodings": ["utf-7", "utf-32", "utf-8"]}}});
        assert_eq!(choose_encoding(&params), PositionEncoding::Utf32);
        assert_eq!(choose_encoding(&json!({})), PositionEncoding::Utf16);
    }
}
