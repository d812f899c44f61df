//! The document mirror: our own copy of every document the editor has open, kept in step with
//! `didOpen`/`didChange`/`didClose` in the negotiated position encoding.
//!
//! Later stages read it two ways: [`Mirror::snapshot`] hands out an immutable `Arc` of a document
//! (a newer edit never changes a snapshot someone holds), and [`Mirror::subscribe`] delivers every
//! change with its byte range, the text it removed and inserted, and when it happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use tokio::sync::mpsc;

/// How LSP `Position.character` counts (LSP 3.17 `PositionEncodingKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PositionEncoding {
    Utf8,
    #[default]
    Utf16,
    Utf32,
}

impl PositionEncoding {
    pub fn from_lsp(kind: &str) -> Option<PositionEncoding> {
        match kind {
            "utf-8" => Some(PositionEncoding::Utf8),
            "utf-16" => Some(PositionEncoding::Utf16),
            "utf-32" => Some(PositionEncoding::Utf32),
            _ => None,
        }
    }

    pub fn as_lsp(self) -> &'static str {
        match self {
            PositionEncoding::Utf8 => "utf-8",
            PositionEncoding::Utf16 => "utf-16",
            PositionEncoding::Utf32 => "utf-32",
        }
    }

    fn units(self, c: char) -> u32 {
        match self {
            PositionEncoding::Utf8 => c.len_utf8() as u32,
            PositionEncoding::Utf16 => c.len_utf16() as u32,
            PositionEncoding::Utf32 => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Position {
    pub line: u32,
    pub character: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

/// One document as it was at one version. Immutable once handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentSnapshot {
    pub uri: String,
    pub language_id: String,
    pub version: i32,
    pub text: String,
    /// Byte offset of the start of every line (`\n`, `\r\n` and `\r` end lines, as in LSP).
    line_starts: Vec<usize>,
}

impl DocumentSnapshot {
    fn new(uri: String, language_id: String, version: i32, text: String) -> DocumentSnapshot {
        let line_starts = line_starts(&text);
        DocumentSnapshot { uri, language_id, version, text, line_starts }
    }

    /// Byte offset of an LSP position. Positions past the end of a line clamp to the line's end and
    /// positions inside a multi-unit character round down to its start, as the LSP spec asks.
    pub fn offset_at(&self, position: Position, encoding: PositionEncoding) -> usize {
        let Some(&start) = self.line_starts.get(position.line as usize) else {
            return self.text.len();
        };
        let end = self.line_content_end(position.line as usize);
        let mut units = 0;
        for (index, c) in self.text[start..end].char_indices() {
            units += encoding.units(c);
            if units > position.character {
                return start + index;
            }
        }
        end
    }

    /// The LSP position of a byte offset (which must lie on a character boundary).
    pub fn position_at(&self, offset: usize, encoding: PositionEncoding) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let character = self.text[start..offset].chars().map(|c| encoding.units(c)).sum();
        Position { line: line as u32, character }
    }

    fn line_content_end(&self, line: usize) -> usize {
        let start = self.line_starts[line];
        let next = self.line_starts.get(line + 1).copied().unwrap_or(self.text.len());
        let content = &self.text.as_bytes()[start..next];
        let content = content.strip_suffix(b"\n").unwrap_or(content);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        start + content.len()
    }

    fn replace(&mut self, start: usize, end: usize, new_text: &str) {
        self.text.replace_range(start..end, new_text);
        edit_line_starts(&mut self.line_starts, &self.text, start, end - start, new_text.len());
    }
}

/// Brings `starts` up to date after bytes `start..start + removed` were replaced by `inserted`
/// bytes (`text` is the result). Only the lines around the edit are scanned again: rescanning a
/// large document on every keystroke made the relay fall behind a fast typist.
fn edit_line_starts(starts: &mut Vec<usize>, text: &str, start: usize, removed: usize, inserted: usize) {
    // A line start one line before the edit, so that a `\r` just before it is seen; it keeps its
    // place because the bytes on both sides of it are unchanged.
    let first = starts.partition_point(|&s| s <= start).saturating_sub(2);
    let low = starts[first];
    // From the first line start after the edit on, the bytes on both sides of each are unchanged.
    let kept = starts.partition_point(|&s| s <= start + removed);
    let shift = |s: usize| s + inserted - removed;
    for s in &mut starts[kept..] {
        *s = shift(*s);
    }
    let high = starts.get(kept).copied().unwrap_or(text.len() + 1);
    let bytes = text.as_bytes();
    let fresh = (low + 1..high.min(text.len() + 1)).filter(|&p| match bytes[p - 1] {
        b'\n' => true,
        b'\r' => bytes.get(p) != Some(&b'\n'),
        _ => false,
    });
    starts.splice(first + 1..kept, fresh.collect::<Vec<_>>());
}

fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                starts.push(i + 2);
                i += 2;
                continue;
            }
            b'\r' | b'\n' => starts.push(i + 1),
            _ => {}
        }
        i += 1;
    }
    starts
}

/// What happened to a document, in the order the editor sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentEvent {
    pub uri: String,
    /// Document version after the event.
    pub version: i32,
    pub at: SystemTime,
    pub change: Change,
    /// No more changes of the same notification follow (a `didChange` may carry several).
    pub last_of_notification: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Opened {
        language_id: String,
        text: String,
    },
    /// One content change: bytes `start..start + removed.len()` of the previous text were replaced
    /// by `inserted`. A full-document change is reported as replacing everything.
    Edited {
        start: usize,
        removed: String,
        inserted: String,
    },
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MirrorError {
    #[error("invalid {method} params: {reason}")]
    InvalidParams { method: String, reason: String },
    #[error("{uri} is not open")]
    NotOpen { uri: String },
}

#[derive(Default)]
pub struct Mirror {
    encoding: PositionEncoding,
    documents: HashMap<String, Arc<DocumentSnapshot>>,
    subscribers: Vec<mpsc::UnboundedSender<DocumentEvent>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DidOpen {
    text_document: OpenedDocument,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenedDocument {
    uri: String,
    language_id: String,
    version: i32,
    text: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DidChange {
    text_document: VersionedDocument,
    content_changes: Vec<ContentChange>,
}

#[derive(Deserialize)]
struct VersionedDocument {
    uri: String,
    version: i32,
}

#[derive(Deserialize)]
struct ContentChange {
    range: Option<Range>,
    text: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DidClose {
    text_document: DocumentId,
}

#[derive(Deserialize)]
struct DocumentId {
    uri: String,
}

impl Mirror {
    pub fn new(encoding: PositionEncoding) -> Mirror {
        Mirror { encoding, ..Mirror::default() }
    }

    pub fn encoding(&self) -> PositionEncoding {
        self.encoding
    }

    pub fn set_encoding(&mut self, encoding: PositionEncoding) {
        self.encoding = encoding;
    }

    pub fn snapshot(&self, uri: &str) -> Option<Arc<DocumentSnapshot>> {
        self.documents.get(uri).cloned()
    }

    /// Every open document, for replaying them into a restarted server.
    pub fn documents(&self) -> impl Iterator<Item = &Arc<DocumentSnapshot>> {
        self.documents.values()
    }

    /// A stream of every later document event. Never lossy: the receiver buffers what it has not read.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<DocumentEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        rx
    }

    /// Applies a text synchronisation notification, given its `params` as JSON text. Other methods
    /// are ignored (`Ok(false)`).
    pub fn apply(&mut self, method: &str, params: &[u8]) -> Result<bool, MirrorError> {
        match method {
            "textDocument/didOpen" => self.did_open(parse(method, params)?),
            "textDocument/didChange" => self.did_change(parse(method, params)?)?,
            "textDocument/didClose" => self.did_close(parse(method, params)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn did_open(&mut self, params: DidOpen) {
        let doc = params.text_document;
        let snapshot = DocumentSnapshot::new(doc.uri.clone(), doc.language_id.clone(), doc.version, doc.text.clone());
        self.documents.insert(doc.uri.clone(), Arc::new(snapshot));
        self.publish(doc.uri, doc.version, Change::Opened { language_id: doc.language_id, text: doc.text }, true);
    }

    fn did_change(&mut self, params: DidChange) -> Result<(), MirrorError> {
        let uri = params.text_document.uri;
        let version = params.text_document.version;
        let Some(current) = self.documents.get_mut(&uri) else {
            return Err(MirrorError::NotOpen { uri });
        };
        // Copy-on-write: snapshots handed out earlier keep the old text.
        let doc = Arc::make_mut(current);
        let mut events = Vec::with_capacity(params.content_changes.len());
        for change in params.content_changes {
            let (start, end) = match change.range {
                Some(range) => {
                    let start = doc.offset_at(range.start, self.encoding);
                    let end = doc.offset_at(range.end, self.encoding).max(start);
                    (start, end)
                }
                None => (0, doc.text.len()),
            };
            let removed = doc.text[start..end].to_owned();
            doc.replace(start, end, &change.text);
            events.push(Change::Edited { start, removed, inserted: change.text });
        }
        doc.version = version;
        let count = events.len();
        for (i, change) in events.into_iter().enumerate() {
            self.publish(uri.clone(), version, change, i + 1 == count);
        }
        Ok(())
    }

    fn did_close(&mut self, params: DidClose) {
        let uri = params.text_document.uri;
        if let Some(doc) = self.documents.remove(&uri) {
            self.publish(uri, doc.version, Change::Closed, true);
        }
    }

    fn publish(&mut self, uri: String, version: i32, change: Change, last_of_notification: bool) {
        let event = DocumentEvent { uri, version, at: SystemTime::now(), change, last_of_notification };
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }
}

fn parse<T: serde::de::DeserializeOwned>(method: &str, params: &[u8]) -> Result<T, MirrorError> {
    serde_json::from_slice(params)
        .map_err(|e| MirrorError::InvalidParams { method: method.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Updating line starts around an edit gives what scanning the whole result gives,
        /// `\r\n` pairs split or joined by the edit included.
        #[test]
        fn edited_line_starts_match_a_full_scan(
            before in "[a\r\né]{0,40}",
            inserted in "[b\r\n]{0,6}",
            cut in (0usize..=40, 0usize..=8),
        ) {
            let boundaries: Vec<usize> = before.char_indices().map(|(i, _)| i).chain([before.len()]).collect();
            let start = boundaries[cut.0 % boundaries.len()];
            let end = boundaries[(cut.0 % boundaries.len() + cut.1).min(boundaries.len() - 1)];
            let mut starts = line_starts(&before);
            let mut text = before.clone();
            text.replace_range(start..end, &inserted);
            edit_line_starts(&mut starts, &text, start, end - start, inserted.len());
            prop_assert_eq!(starts, line_starts(&text));
        }
    }

    fn pos(line: u32, character: u32) -> serde_json::Value {
        json!({"line": line, "character": character})
    }

    fn open(mirror: &mut Mirror, text: &str) {
        let params =
            json!({"textDocument": {"uri": "file:///a.py", "languageId": "python", "version": 1, "text": text}});
        assert_eq!(mirror.apply("textDocument/didOpen", params.to_string().as_bytes()), Ok(true));
    }

    fn edit(mirror: &mut Mirror, version: i32, start: (u32, u32), end: (u32, u32), text: &str) {
        let params = json!({
            "textDocument": {"uri": "file:///a.py", "version": version},
            "contentChanges": [{"range": {"start": pos(start.0, start.1), "end": pos(end.0, end.1)}, "text": text}]
        });
        mirror.apply("textDocument/didChange", params.to_string().as_bytes()).unwrap();
    }

    fn text(mirror: &Mirror) -> String {
        mirror.snapshot("file:///a.py").unwrap().text.clone()
    }

    // "a😀b" — 😀 is 4 UTF-8 bytes, 2 UTF-16 units, 1 UTF-32 unit. "漢" is 3 bytes, 1 unit, 1 unit.
    #[test]
    fn edits_after_emoji_and_cjk_land_in_the_right_place_in_every_encoding() {
        for (encoding, after_emoji, after_kanji) in
            [(PositionEncoding::Utf16, 3, 5), (PositionEncoding::Utf8, 5, 9), (PositionEncoding::Utf32, 2, 4)]
        {
            let mut mirror = Mirror::new(encoding);
            open(&mut mirror, "a😀b漢c\nx = 1\n");
            edit(&mut mirror, 2, (0, after_emoji), (0, after_emoji), "|");
            assert_eq!(text(&mirror), "a😀|b漢c\nx = 1\n", "{encoding:?}");
            edit(&mut mirror, 3, (0, after_kanji + 1), (0, after_kanji + 1), "#");
            assert_eq!(text(&mirror), "a😀|b漢#c\nx = 1\n", "{encoding:?}");
            let doc = mirror.snapshot("file:///a.py").unwrap();
            let offset = doc.text.find('#').unwrap();
            assert_eq!(doc.position_at(offset, encoding), Position { line: 0, character: after_kanji + 1 });
            assert_eq!(doc.version, 3);
        }
    }

    #[test]
    fn positions_inside_a_surrogate_pair_round_down_and_past_eol_clamp() {
        let mut mirror = Mirror::new(PositionEncoding::Utf16);
        open(&mut mirror, "😀x\r\nyz\rw");
        let doc = mirror.snapshot("file:///a.py").unwrap();
        assert_eq!(doc.offset_at(Position { line: 0, character: 1 }, PositionEncoding::Utf16), 0);
        assert_eq!(doc.offset_at(Position { line: 0, character: 99 }, PositionEncoding::Utf16), 5);
        assert_eq!(doc.offset_at(Position { line: 1, character: 99 }, PositionEncoding::Utf16), 9);
        assert_eq!(doc.offset_at(Position { line: 2, character: 1 }, PositionEncoding::Utf16), 11);
        assert_eq!(doc.offset_at(Position { line: 9, character: 0 }, PositionEncoding::Utf16), 11);
    }

    #[test]
    fn multi_line_and_full_changes_and_the_event_stream() {
        let mut mirror = Mirror::new(PositionEncoding::Utf16);
        let mut events = mirror.subscribe();
        open(&mut mirror, "one\ntwo\nthree\n");
        let before = mirror.snapshot("file:///a.py").unwrap();
        edit(&mut mirror, 2, (0, 1), (2, 2), "N");
        assert_eq!(text(&mirror), "oNree\n");
        assert_eq!(before.text, "one\ntwo\nthree\n", "an earlier snapshot must not change");
        let params =
            json!({"textDocument": {"uri": "file:///a.py", "version": 3}, "contentChanges": [{"text": "all new"}]});
        mirror.apply("textDocument/didChange", params.to_string().as_bytes()).unwrap();
        assert_eq!(text(&mirror), "all new");
        mirror.apply("textDocument/didClose", br#"{"textDocument": {"uri": "file:///a.py"}}"#).unwrap();
        assert!(mirror.snapshot("file:///a.py").is_none());

        let changes: Vec<Change> = std::iter::from_fn(|| events.try_recv().ok()).map(|e| e.change).collect();
        assert_eq!(
            changes,
            vec![
                Change::Opened { language_id: "python".into(), text: "one\ntwo\nthree\n".into() },
                Change::Edited { start: 1, removed: "ne\ntwo\nth".into(), inserted: "N".into() },
                Change::Edited { start: 0, removed: "oNree\n".into(), inserted: "all new".into() },
                Change::Closed,
            ]
        );
    }

    #[test]
    fn bad_params_and_unknown_documents_are_errors_not_panics() {
        let mut mirror = Mirror::new(PositionEncoding::Utf16);
        assert!(matches!(
            mirror.apply("textDocument/didOpen", br#"{"textDocument": 3}"#),
            Err(MirrorError::InvalidParams { .. })
        ));
        let change = json!({"textDocument": {"uri": "file:///nope", "version": 1}, "contentChanges": []});
        assert_eq!(
            mirror.apply("textDocument/didChange", change.to_string().as_bytes()),
            Err(MirrorError::NotOpen { uri: "file:///nope".into() })
        );
        assert_eq!(mirror.apply("textDocument/hover", b"{}"), Ok(false));
    }
}
