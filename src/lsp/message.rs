//! JSON-RPC message shapes, kept as `serde_json::Value` so that relayed messages stay byte-for-byte
//! what the peer meant (unknown fields, unknown methods, odd ids).

use serde_json::{Map, Value, json};

/// JSON-RPC and LSP error codes we answer with.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const REQUEST_FAILED: i64 = -32803;
}

/// What a single (non-batch) message is.
#[derive(Debug)]
pub enum Kind {
    Request {
        id: Value,
        method: String,
    },
    Notification {
        method: String,
    },
    Response {
        id: Value,
    },
    /// Valid JSON but not JSON-RPC; `id` when one could be read, to answer with an error.
    Invalid {
        id: Option<Value>,
        reason: &'static str,
    },
}

pub fn classify(message: &Value) -> Kind {
    let Some(object) = message.as_object() else {
        return Kind::Invalid { id: None, reason: "message is not a JSON object" };
    };
    let id = object.get("id").filter(|id| is_valid_id(id)).cloned();
    match (object.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => Kind::Request { id, method: method.clone() },
        (Some(Value::String(method)), None) if !object.contains_key("id") => {
            Kind::Notification { method: method.clone() }
        }
        (Some(Value::String(_)), None) => Kind::Invalid { id: None, reason: "request id must be a string or a number" },
        (Some(_), id) => Kind::Invalid { id, reason: "method must be a string" },
        (None, Some(id)) => Kind::Response { id },
        // A response to a request whose id could not be read (e.g. a parse error) carries `id: null`.
        (None, None) if object.get("id") == Some(&Value::Null) => Kind::Response { id: Value::Null },
        (None, None) => Kind::Invalid { id: None, reason: "message has neither a method nor an id" },
    }
}

fn is_valid_id(id: &Value) -> bool {
    id.is_string() || id.is_number()
}

/// A hashable key for an id that keeps strings and numbers apart (`1` and `"1"` are different ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdKey(String);

impl IdKey {
    pub fn of(id: &Value) -> IdKey {
        IdKey(id.to_string())
    }
}

pub fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

pub fn response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error_response(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// `window/showMessage` with a marunochi prefix so users can tell our messages from the server's.
pub fn show_message(kind: MessageType, text: &str) -> Value {
    notification("window/showMessage", json!({"type": kind as i64, "message": format!("marunochi: {text}")}))
}

#[derive(Debug, Clone, Copy)]
pub enum MessageType {
    Error = 1,
    Warning = 2,
    Info = 3,
}

pub fn method(message: &Value) -> Option<&str> {
    message.get("method").and_then(Value::as_str)
}

pub fn params(message: &Value) -> &Value {
    message.get("params").unwrap_or(&Value::Null)
}

/// Replaces the `id` member in place, keeping the member order of everything else.
pub fn set_id(message: &mut Value, id: Value) {
    if let Some(object) = message.as_object_mut() {
        object.insert("id".to_owned(), id);
    }
}

/// `a.b.c` lookup creating objects on the way, for merging capabilities.
pub fn object_at<'a>(root: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut node = root;
    for key in path {
        let object = node.as_object_mut()?;
        node = object.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if node.is_null() || node.as_bool() == Some(true) {
            *node = Value::Object(Map::new());
        }
    }
    node.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_shape() {
        assert!(matches!(classify(&json!({"id": 1, "method": "a"})), Kind::Request { .. }));
        assert!(matches!(classify(&json!({"id": "s", "method": "a"})), Kind::Request { .. }));
        assert!(matches!(classify(&json!({"method": "a"})), Kind::Notification { .. }));
        assert!(matches!(classify(&json!({"id": 1, "result": null})), Kind::Response { .. }));
        assert!(matches!(classify(&json!({"id": null, "error": {}})), Kind::Response { id: Value::Null }));
        assert!(matches!(classify(&json!({"id": 1, "method": 5})), Kind::Invalid { id: Some(_), .. }));
        assert!(matches!(classify(&json!({"id": [1], "method": "a"})), Kind::Invalid { id: None, .. }));
        assert!(matches!(classify(&json!({"x": 1})), Kind::Invalid { id: None, .. }));
        assert!(matches!(classify(&json!(3)), Kind::Invalid { .. }));
    }

    #[test]
    fn id_keys_keep_strings_and_numbers_apart() {
        assert_ne!(IdKey::of(&json!(1)), IdKey::of(&json!("1")));
        assert_eq!(IdKey::of(&json!("a")), IdKey::of(&json!("a")));
    }

    #[test]
    fn set_id_keeps_member_order() {
        let mut m = json!({"jsonrpc": "2.0", "id": 5, "method": "x"});
        set_id(&mut m, json!("abc"));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"jsonrpc":"2.0","id":"abc","method":"x"}"#);
    }
}
