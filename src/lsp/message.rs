//! JSON-RPC messages as relayed: the body bytes exactly as the peer sent them, plus where the `id`,
//! `method` and `params` members sit inside them. Relaying a message rewrites only the bytes of its
//! `id`; everything else (member order, number formatting, unknown fields, huge payloads) passes
//! through untouched and is never turned into a `serde_json::Value` tree unless an intercept needs it.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// One JSON-RPC message (not a batch).
#[derive(Clone, PartialEq)]
pub struct RawMessage {
    body: Vec<u8>,
    id: Option<Range<usize>>,
    method: Option<Range<usize>>,
    params: Option<Range<usize>>,
}

/// What a frame carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    One(RawMessage),
    Batch(Vec<RawMessage>),
}

/// The members we look at; everything else is skipped (but still validated) by serde.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// `Some` for any present member, `null` included (`"id": null` is not a missing id).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl Payload {
    /// Parses a frame body: an object, or a batch (array) of objects.
    pub fn parse(body: &[u8]) -> Result<Payload, serde_json::Error> {
        // serde skips the members we do not read without checking their UTF-8; we relay them.
        if std::str::from_utf8(body).is_err() {
            return Err(serde::de::Error::custom("body is not valid UTF-8"));
        }
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let items: Vec<&RawValue> = serde_json::from_slice(body)?;
            let messages = items.iter().map(|item| RawMessage::parse(item.get().as_bytes().to_vec()));
            return messages.collect::<Result<_, _>>().map(Payload::Batch);
        }
        RawMessage::parse(body.to_vec()).map(Payload::One)
    }

    /// The frame body for this payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::One(message) => message.body.clone(),
            Payload::Batch(messages) => join_batch(messages.iter().map(RawMessage::as_bytes)),
        }
    }

    /// The whole payload as a JSON value (for tests and intercepts).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Payload::One(message) => message.to_value(),
            Payload::Batch(messages) => {
                messages.iter().map(RawMessage::to_value).collect::<Result<_, _>>().map(Value::Array)
            }
        }
    }
}

/// `[a,b,...]` from the bodies of single messages.
pub fn join_batch<'a>(bodies: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, body) in bodies.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body);
    }
    out.push(b']');
    out
}

impl RawMessage {
    pub fn parse(body: Vec<u8>) -> Result<RawMessage, serde_json::Error> {
        let members: Members = serde_json::from_slice(&body)?;
        let at = |raw: Option<&RawValue>| raw.map(|r| offset_range(&body, r.get()));
        let (id, method, params) = (at(members.id), at(members.method), at(members.params));
        Ok(RawMessage { body, id, method, params })
    }

    pub fn from_value(value: &Value) -> RawMessage {
        let body = serde_json::to_vec(value).expect("a serde_json::Value always serialises");
        RawMessage::parse(body).expect("our own messages are JSON objects")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.body
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.body
    }

    /// Fails only beyond serde_json's nesting limit, which relaying (and `parse`) does not hit.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The `id` member as sent (`Some(Value::Null)` for `"id": null`).
    pub fn id(&self) -> Option<Value> {
        self.id.clone().and_then(|r| serde_json::from_slice(&self.body[r]).ok())
    }

    /// The `method` member, if it is a string.
    pub fn method(&self) -> Option<String> {
        self.method.clone().and_then(|r| serde_json::from_slice::<String>(&self.body[r]).ok())
    }

    /// The `params` member as JSON text (`null` when absent).
    pub fn params_json(&self) -> &[u8] {
        self.params.clone().map_or(b"null", |r| &self.body[r])
    }

    /// The `params` member parsed; `Null` when absent or nested too deeply to parse.
    pub fn params(&self) -> Value {
        let parsed = self.params.clone().map(|r| serde_json::from_slice(&self.body[r]));
        parsed.unwrap_or(Ok(Value::Null)).unwrap_or_else(|error| {
            // Where, not what: serde quotes the offending value, and params hold the user's code.
            tracing::warn!(line = error.line(), column = error.column(), "unreadable params");
            Value::Null
        })
    }

    /// The same message with another id; every other byte is kept.
    pub fn with_id(&self, id: &Value) -> RawMessage {
        let Some(range) = self.id.clone() else { return self.clone() };
        let new_id = serde_json::to_vec(id).expect("ids serialise");
        let mut body = Vec::with_capacity(self.body.len() + new_id.len());
        body.extend_from_slice(&self.body[..range.start]);
        body.extend_from_slice(&new_id);
        body.extend_from_slice(&self.body[range.end..]);
        let shift = |r: Range<usize>| {
            if r.start > range.start {
                r.start + new_id.len() - range.len()..r.end + new_id.len() - range.len()
            } else {
                r
            }
        };
        RawMessage {
            body,
            id: Some(range.start..range.start + new_id.len()),
            method: self.method.clone().map(shift),
            params: self.params.clone().map(shift),
        }
    }

    pub fn classify(&self) -> Kind {
        let id = self.id().filter(is_valid_id);
        match (self.method.is_some(), self.method(), id) {
            (true, Some(method), Some(id)) => Kind::Request { id, method },
            (true, Some(method), None) if self.id.is_none() => Kind::Notification { method },
            (true, Some(_), None) => Kind::Invalid { id: None, reason: "request id must be a string or a number" },
            (true, None, id) => Kind::Invalid { id, reason: "method must be a string" },
            (false, _, Some(id)) => Kind::Response { id },
            // A response to a request whose id could not be read (e.g. a parse error) has `id: null`.
            (false, _, None) if self.id() == Some(Value::Null) => Kind::Response { id: Value::Null },
            (false, _, None) => Kind::Invalid { id: None, reason: "message has neither a method nor an id" },
        }
    }
}

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.body))
    }
}

/// Where `inner` (a slice of `outer`, as serde's borrowed `RawValue` is) lies in `outer`.
fn offset_range(outer: &[u8], inner: &str) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

/// JSON-RPC and LSP error codes we answer with.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const REQUEST_CANCELLED: i64 = -32800;
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

    fn kind(value: Value) -> Kind {
        RawMessage::from_value(&value).classify()
    }

    #[test]
    fn classifies_every_shape() {
        assert!(matches!(kind(json!({"id": 1, "method": "a"})), Kind::Request { .. }));
        assert!(matches!(kind(json!({"id": "s", "method": "a"})), Kind::Request { .. }));
        assert!(matches!(kind(json!({"method": "a"})), Kind::Notification { .. }));
        assert!(matches!(kind(json!({"id": 1, "result": null})), Kind::Response { .. }));
        assert!(matches!(kind(json!({"id": null, "error": {}})), Kind::Response { id: Value::Null }));
        assert!(matches!(kind(json!({"id": 1, "method": 5})), Kind::Invalid { id: Some(_), .. }));
        assert!(matches!(kind(json!({"id": [1], "method": "a"})), Kind::Invalid { id: None, .. }));
        assert!(matches!(kind(json!({"x": 1})), Kind::Invalid { id: None, .. }));
        assert!(Payload::parse(b"3").is_err());
    }

    #[test]
    fn id_keys_keep_strings_and_numbers_apart() {
        assert_ne!(IdKey::of(&json!(1)), IdKey::of(&json!("1")));
        assert_eq!(IdKey::of(&json!("a")), IdKey::of(&json!("a")));
    }

    #[test]
    fn with_id_changes_only_the_id_bytes() {
        let sent = br#"{ "params" : {"b":1.50,"a":[1e3]}, "id":  12345678901, "method":"x\u0041", "extra": true }"#;
        let message = RawMessage::parse(sent.to_vec()).unwrap();
        assert_eq!(message.method().as_deref(), Some("xA"));
        let renamed = message.with_id(&json!("abc"));
        assert_eq!(
            std::str::from_utf8(renamed.as_bytes()).unwrap(),
            r#"{ "params" : {"b":1.50,"a":[1e3]}, "id":  "abc", "method":"x\u0041", "extra": true }"#
        );
        assert_eq!(renamed.id(), Some(json!("abc")));
        assert_eq!(renamed.method().as_deref(), Some("xA"));
        assert_eq!(renamed.params(), json!({"b": 1.5, "a": [1000.0]}));
        let back = renamed.with_id(&json!(12345678901i64));
        assert_eq!(back.as_bytes(), sent);
    }

    #[test]
    fn batches_keep_their_elements() {
        let payload = Payload::parse(br#" [{"id":1,"method":"a"}, {"method":"b"}]"#).unwrap();
        let Payload::Batch(items) = &payload else { panic!("{payload:?}") };
        assert_eq!(items.len(), 2);
        assert_eq!(payload.to_bytes(), br#"[{"id":1,"method":"a"},{"method":"b"}]"#);
    }
}
