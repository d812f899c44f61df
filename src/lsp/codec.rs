//! The LSP base protocol: `Content-Length` framed JSON bodies.
//!
//! [`Decoder`] is a synchronous state machine fed with raw bytes; [`FrameReader`] drives it from an
//! async reader. The decoder never gives up on a stream: whatever arrives (garbage, a wrong
//! `Content-Length`, invalid JSON, huge bodies) it reports a [`Malformed`] item and resynchronises on
//! the next `Content-Length` header, so one bad frame never wedges the editor or the server.

use bytes::{Buf, BytesMut};
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::message::Payload;

/// Headers are tiny in practice (`Content-Length` and maybe `Content-Type`); anything longer is
/// garbage and is discarded rather than buffered forever.
const MAX_HEADER_BYTES: usize = 8 * 1024;
const CONTENT_LENGTH: &[u8] = b"content-length";

/// One decoded item of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON object or batch; what kind of JSON-RPC message it is gets decided later.
    Message(Payload),
    /// A frame that could not be turned into JSON. `id` is set when it could still be read, so the
    /// sender can be answered with an error.
    Malformed(Malformed),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub error: FrameError,
    pub id: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    // The errors say where and how big, never what: they go to the log, and a server's stray
    // output (a debug print of its environment) must not.
    #[error("a header block of {0} bytes has no Content-Length")]
    MissingContentLength(usize),
    #[error("a Content-Length of {0} bytes is not a number")]
    BadContentLength(usize),
    #[error("header block longer than {MAX_HEADER_BYTES} bytes without a blank line; skipped")]
    HeaderTooLong,
    #[error("message of {len} bytes exceeds the limit of {max} bytes; skipped")]
    TooLarge { len: usize, max: usize },
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body is not a JSON-RPC message or batch: {0}")]
    NotJsonRpc(String),
    #[error("stream ended inside a frame ({0} bytes unread)")]
    Truncated(usize),
}

/// Decodes the frames of a blocking stream (a child's stdout) on a thread of its own, sending each
/// item to `tx` until the stream ends or the receiver is gone.
pub fn spawn_reader(mut from: impl std::io::Read + Send + 'static, tx: std::sync::mpsc::Sender<Incoming>) {
    std::thread::spawn(move || {
        let mut decoder = Decoder::new(usize::MAX);
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                return;
            }
            decoder.extend(&buf[..n]);
            while let Some(item) = decoder.decode() {
                if tx.send(item).is_err() {
                    return;
                }
            }
        }
    });
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// Bytes of an oversized body still to be thrown away as they arrive.
    skip: usize,
    /// Body length of the frame whose header was already consumed.
    body_len: Option<usize>,
    max_body: usize,
}

impl Decoder {
    pub fn new(max_body: usize) -> Decoder {
        Decoder { buf: BytesMut::with_capacity(16 * 1024), skip: 0, body_len: None, max_body }
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, or `None` when more bytes are needed.
    pub fn decode(&mut self) -> Option<Incoming> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if let Some(len) = self.body_len {
                if self.buf.len() < len {
                    return None;
                }
                self.body_len = None;
                let body = self.buf.split_to(len);
                return Some(self.parse_body(&body));
            }
            match self.decode_header()? {
                Ok(len) if len > self.max_body => {
                    self.skip = len;
                    return Some(malformed(FrameError::TooLarge { len, max: self.max_body }));
                }
                Ok(len) => self.body_len = Some(len),
                Err(error) => return Some(malformed(error)),
            }
        }
    }

    /// Called once the stream has ended: reports a frame cut off in the middle, if any.
    pub fn finish(&mut self) -> Option<Incoming> {
        let unread = self.buf.len();
        let leftover = self.body_len.is_some() || !self.buf.iter().all(u8::is_ascii_whitespace);
        self.buf.clear();
        self.body_len = None;
        self.skip = 0;
        leftover.then(|| malformed(FrameError::Truncated(unread)))
    }

    /// Consumes one header block. `None`: incomplete; `Some(Err)`: a bad block was dropped.
    fn decode_header(&mut self) -> Option<Result<usize, FrameError>> {
        // Blank lines between frames are harmless; skip them silently.
        let leading = self.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        self.buf.advance(leading);

        let Some(block_len) = find_blank_line(&self.buf) else {
            if self.buf.len() > MAX_HEADER_BYTES {
                self.resync();
                return Some(Err(FrameError::HeaderTooLong));
            }
            return None;
        };
        let (header_end, terminator) = block_len;
        let parsed = parse_headers(&self.buf[..header_end]);
        match parsed {
            Ok(len) => {
                self.buf.advance(header_end + terminator);
                Some(Ok(len))
            }
            Err(error) => {
                // Garbage glued in front of a real header (e.g. the tail of a body whose
                // Content-Length was too short): keep the real header, drop the garbage.
                let skip = find_content_length(&self.buf, 1).unwrap_or(header_end + terminator);
                self.buf.advance(skip);
                Some(Err(error))
            }
        }
    }

    /// Drops everything before the first `Content-Length` after the start of the buffer; without
    /// one, drops all but a tail that may hold the start of one.
    fn resync(&mut self) {
        let keep = CONTENT_LENGTH.len().min(self.buf.len());
        let skip = find_content_length(&self.buf, 1).unwrap_or(self.buf.len() - keep);
        self.buf.advance(skip);
    }

    fn parse_body(&mut self, body: &[u8]) -> Incoming {
        let mut values = serde_json::Deserializer::from_slice(body).into_iter::<IgnoredAny>();
        let parsed = match values.next() {
            Some(Ok(_)) => {
                let end = values.byte_offset();
                let rest = &body[end..];
                if !rest.iter().all(u8::is_ascii_whitespace) {
                    // A Content-Length that was too long swallowed the start of the next frame:
                    // give those bytes back so the next frame still decodes.
                    tracing::warn!(extra = rest.len(), "Content-Length longer than the JSON body; re-reading the rest");
                    let mut buf = BytesMut::from(rest);
                    buf.extend_from_slice(&self.buf);
                    self.buf = buf;
                }
                Payload::parse(&body[..end]).map_err(|e| FrameError::NotJsonRpc(where_wrong(&e)))
            }
            Some(Err(error)) => Err(FrameError::InvalidJson(where_wrong(&error))),
            None => Err(FrameError::InvalidJson("empty body".into())),
        };
        match parsed {
            Ok(payload) => Incoming::Message(payload),
            Err(_) if std::str::from_utf8(body).is_err() => {
                // Read the id from a lossy copy so the sender can still be answered.
                let lossy = String::from_utf8_lossy(body);
                let id = serde_json::from_str::<Value>(&lossy).ok().and_then(|v| v.get("id").cloned());
                Incoming::Malformed(Malformed { error: FrameError::NotUtf8, id })
            }
            Err(error) => malformed(error),
        }
    }
}

/// What kind of JSON error and where, without serde's quote of the offending value.
fn where_wrong(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the expected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

fn malformed(error: FrameError) -> Incoming {
    Incoming::Malformed(Malformed { error, id: None })
}

/// Position of the end of the header block and the length of its terminator. Accepts `\r\n\r\n`
/// (the spec) and `\n\n` (seen from hand-written clients).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let limit = buf.len().min(MAX_HEADER_BYTES + 4);
    let mut i = 0;
    while i < limit {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                let start = if i > 0 && buf[i - 1] == b'\r' { i - 1 } else { i };
                return Some((start, i + 3 - start));
            }
        }
        i += 1;
    }
    None
}

fn find_content_length(buf: &[u8], from: usize) -> Option<usize> {
    if buf.len() < CONTENT_LENGTH.len() {
        return None;
    }
    (from..=buf.len() - CONTENT_LENGTH.len())
        .find(|&i| buf[i..i + CONTENT_LENGTH.len()].eq_ignore_ascii_case(CONTENT_LENGTH))
}

fn parse_headers(block: &[u8]) -> Result<usize, FrameError> {
    let text = String::from_utf8_lossy(block);
    let mut length = None;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        let Some((name, value)) = line.split_once(':') else {
            tracing::warn!(bytes = line.len(), "ignoring a malformed header line");
            continue;
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let value = value.trim();
            length = Some(value.parse::<usize>().map_err(|_| FrameError::BadContentLength(value.len()))?);
        }
    }
    length.ok_or(FrameError::MissingContentLength(block.len()))
}

/// Reads frames from an async byte stream.
pub struct FrameReader<R> {
    inner: R,
    decoder: Decoder,
    done: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_body: usize) -> FrameReader<R> {
        FrameReader { inner, decoder: Decoder::new(max_body), done: false }
    }

    /// The next item; `Ok(None)` once the stream has ended.
    pub async fn next(&mut self) -> std::io::Result<Option<Incoming>> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(item) = self.decoder.decode() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                self.done = true;
                if let Some(item) = self.decoder.finish() {
                    return Ok(Some(item));
                }
                return Ok(None);
            }
            self.decoder.extend(&chunk[..n]);
        }
    }
}

/// The bytes of one frame carrying `message`.
pub fn encode(message: &Value) -> Vec<u8> {
    frame(&serde_json::to_vec(message).expect("a serde_json::Value always serialises"))
}

/// The bytes of one frame carrying an already serialised body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    frame.extend_from_slice(body);
    frame
}

/// Writes one frame and flushes, so the peer sees it at once.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const MAX: usize = 1 << 20;

    fn decode_all(bytes: &[u8], chunk: usize) -> Vec<Incoming> {
        let mut decoder = Decoder::new(MAX);
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.extend(piece);
            while let Some(item) = decoder.decode() {
                out.push(item);
            }
        }
        out.extend(decoder.finish());
        out
    }

    fn messages(items: &[Incoming]) -> Vec<Value> {
        items
            .iter()
            .filter_map(|i| if let Incoming::Message(p) = i { Some(p.to_value().unwrap()) } else { None })
            .collect()
    }

    fn errors(items: &[Incoming]) -> Vec<FrameError> {
        items.iter().filter_map(|i| if let Incoming::Malformed(m) = i { Some(m.error.clone()) } else { None }).collect()
    }

    #[test]
    fn round_trip_and_lenient_headers() {
        let a = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"x": "ü😀"}});
        let mut bytes = encode(&a);
        bytes.extend_from_slice(
            b"content-length: 2\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}",
        );
        bytes.extend_from_slice(b"Content-Length: 2\n\n[]");
        let items = decode_all(&bytes, 7);
        assert_eq!(messages(&items), vec![a, json!({}), json!([])]);
        assert!(errors(&items).is_empty());
    }

    #[test]
    fn bad_headers_are_reported_and_the_next_frame_survives() {
        let good = json!({"jsonrpc": "2.0", "method": "initialized", "params": {}});
        let mut bytes = b"Content-Type: text\r\n\r\n".to_vec();
        bytes.extend_from_slice(b"Content-Length: abc\r\n\r\n");
        bytes.extend_from_slice(b"garbage without a newline ");
        bytes.extend(encode(&good));
        let items = decode_all(&bytes, 1);
        assert_eq!(messages(&items), vec![good]);
        let errs = errors(&items);
        assert!(matches!(errs[0], FrameError::MissingContentLength(_)), "{errs:?}");
        assert_eq!(errs[1], FrameError::BadContentLength(3));
    }

    #[test]
    fn errors_never_quote_what_was_sent() {
        let secret = "hunter2-db-password";
        let frames = [
            format!("PASSWORD={secret}\r\n\r\n"),
            format!("Content-Length: {secret}\r\n\r\n"),
            format!("Content-Length: 24\r\n\r\n{{\"a\": \"{secret}\" x}}"),
            format!("Content-Length: 40\r\n\r\n{{\"jsonrpc\": \"2.0\", \"id\": \"{secret}\"}}"),
            format!("Content-Length: 30\r\n\r\n[\"{secret}\"]"),
        ];
        let items = decode_all(frames.concat().as_bytes(), 7);
        let said = errors(&items).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(said.len() >= 4, "{said:?}");
        assert!(said.iter().all(|e| !e.contains("hunter2")), "{said:?}");
    }

    #[test]
    fn content_length_too_long_recovers_both_frames() {
        let a = json!({"jsonrpc": "2.0", "id": 1, "result": null});
        let b = json!({"jsonrpc": "2.0", "id": 2, "result": [1, 2]});
        let body_a = serde_json::to_vec(&a).unwrap();
        let mut bytes = format!("Content-Length: {}\r\n\r\n", body_a.len() + 10).into_bytes();
        bytes.extend(&body_a);
        bytes.extend(encode(&b));
        assert_eq!(messages(&decode_all(&bytes, 1000)), vec![a, b]);
    }

    #[test]
    fn content_length_too_short_loses_only_that_frame() {
        let a = json!({"jsonrpc": "2.0", "id": 1, "result": "abcdef"});
        let b = json!({"jsonrpc": "2.0", "id": 2, "result": null});
        let body_a = serde_json::to_vec(&a).unwrap();
        let mut bytes = format!("Content-Length: {}\r\n\r\n", body_a.len() - 4).into_bytes();
        bytes.extend(&body_a);
        bytes.extend(encode(&b));
        let items = decode_all(&bytes, 3);
        assert_eq!(messages(&items), vec![b]);
        assert!(matches!(errors(&items)[0], FrameError::InvalidJson(_)));
    }

    #[test]
    fn non_utf8_body_keeps_the_id() {
        let body = b"{\"jsonrpc\":\"2.0\",\"id\":\"x7\",\"method\":\"m\",\"params\":\"\xff\xfe\"}";
        let mut bytes = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        let items = decode_all(&bytes, 5);
        assert_eq!(items, vec![Incoming::Malformed(Malformed { error: FrameError::NotUtf8, id: Some(json!("x7")) })]);
    }

    #[test]
    fn huge_message_is_skipped_without_buffering_it() {
        let mut decoder = Decoder::new(100);
        decoder.extend(b"Content-Length: 1000000\r\n\r\n");
        assert_eq!(decoder.decode(), Some(malformed(FrameError::TooLarge { len: 1_000_000, max: 100 })));
        for _ in 0..1000 {
            decoder.extend(&[b'x'; 1000]);
            assert_eq!(decoder.decode(), None);
            assert!(decoder.buf.len() <= 1000);
        }
        decoder.extend(&encode(&json!({"id": 1})));
        assert!(matches!(decoder.decode(), Some(Incoming::Message(_))));
    }

    #[test]
    fn endless_garbage_is_bounded() {
        let mut decoder = Decoder::new(MAX);
        for _ in 0..100 {
            decoder.extend(&[b'z'; 1024]);
            while decoder.decode().is_some() {}
            assert!(decoder.buf.len() <= MAX_HEADER_BYTES + 1024);
        }
    }

    #[test]
    fn json_that_is_not_json_rpc_is_reported() {
        let items = decode_all(&[encode(&json!(3)), encode(&json!([1]))].concat(), 64);
        assert!(matches!(errors(&items)[..], [FrameError::NotJsonRpc(_), FrameError::NotJsonRpc(_)]), "{items:?}");
    }

    #[test]
    fn absurdly_deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!(r#"{{"id":1,"method":"m","params":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        // Relayed untouched (the peer decides); only our own parsing of it refuses, without panicking.
        let Incoming::Message(Payload::One(message)) = decode_all(&frame(deep.as_bytes()), 4096).remove(0) else {
            panic!("a deep but valid body is still a message")
        };
        assert!(message.to_value().is_err());
        assert_eq!(message.params(), Value::Null);
        assert_eq!(message.method().as_deref(), Some("m"));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let items = decode_all(b"Content-Length: 10\r\n\r\n{\"a\"", 4);
        assert!(matches!(errors(&items)[..], [FrameError::Truncated(_)]));
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ]
    }

    fn json_message() -> impl Strategy<Value = Value> {
        let value = json_leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z$/]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (
            prop_oneof![any::<i32>().prop_map(Value::from), "[a-z0-9-]{1,10}".prop_map(Value::from)],
            "[a-z/$]{1,20}",
            value,
        )
            .prop_map(|(id, method, params)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_filter("must not look like a header", |g| find_content_length(g, 0).is_none())
    }

    // Frames per case × cases ≥ 100k frames per run (the issue's bar for the codec).
    const CASES: u32 = 1024;
    const MIN_FRAMES: usize = 100;

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn valid_frames_decode_exactly_in_any_chunking(
            msgs in prop::collection::vec(json_message(), MIN_FRAMES..MIN_FRAMES + 20),
            chunk in 1usize..300,
        ) {
            let bytes: Vec<u8> = msgs.iter().flat_map(encode).collect();
            let items = decode_all(&bytes, chunk);
            prop_assert!(errors(&items).is_empty());
            prop_assert_eq!(messages(&items), msgs);
        }

        #[test]
        fn garbage_between_frames_never_loses_the_frames_after_it(
            parts in prop::collection::vec((garbage(), json_message()), MIN_FRAMES..MIN_FRAMES + 20),
            chunk in 1usize..300,
        ) {
            let mut bytes = Vec::new();
            for (junk, msg) in &parts {
                bytes.extend(junk);
                bytes.extend(encode(msg));
            }
            let recovered = messages(&decode_all(&bytes, chunk));
            // Junk right before a header can at worst be absorbed into it; the message survives.
            let wanted: Vec<Value> = parts.into_iter().map(|(_, m)| m).collect();
            prop_assert_eq!(recovered, wanted);
        }

        #[test]
        fn random_bytes_never_panic_or_grow_without_bound(bytes in prop::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..512) {
            let mut decoder = Decoder::new(1024);
            for piece in bytes.chunks(chunk) {
                decoder.extend(piece);
                while decoder.decode().is_some() {}
                prop_assert!(decoder.buf.len() <= MAX_HEADER_BYTES + 1024 + chunk);
            }
            decoder.finish();
        }
    }
}
