//! What proxies and the daemon say to each other over the socket: JSON messages, each preceded by
//! its length as a 4-byte big-endian integer.
//!
//! The first message on a connection is the client's [`Request::Hello`]; the daemon answers with
//! [`Reply::Welcome`] once its model is loaded (or failed to load). Requests carry client-chosen ids
//! and may be answered out of order. A change to any message bumps [`PROTOCOL_VERSION`]; a client
//! that meets another version asks that daemon to shut down and starts its own.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PROTOCOL_VERSION: u32 = 4;

/// Frames larger than this are refused: a completion request is a few windows of one document.
const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
        /// The model this client was configured with, if any (the daemon serves its own; the client
        /// tells the user when they differ).
        model: Option<PathBuf>,
        /// Who is asking, for the daemon's log.
        client: String,
    },
    Complete(CompleteRequest),
    /// Work ahead of the keystroke: the cursor has come to a new place, where the user may type
    /// next. With `max_new_tokens` 0 the prompt a completion there would have is computed and
    /// nothing generated (answered with `Warmed`); with more, the completion is generated too
    /// (answered with `Completed`: a suggestion made ready for a keystroke the client expects).
    /// Runs only while no completion waits, newest first; any newer request stops it (what it
    /// computed stays cached). `Failed { cancelled: true }` when stopped or replaced by a newer one
    /// for its document.
    Warm(CompleteRequest),
    /// Stop a generation (or drop it from the queue); it is answered with `Failed { cancelled: true }`.
    Cancel {
        id: u64,
    },
    Status {
        id: u64,
    },
    /// Exit now (used when a newer client meets an older daemon).
    Shutdown,
}

/// One completion at a cursor. The daemon picks the adapter from `language`, else from
/// `document_language` when `language` has no expert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub id: u64,
    /// The KV cache to reuse: the document's URI. A newer request for the same document from the same
    /// connection replaces an older one still waiting or running.
    pub document: String,
    /// The language at the cursor (an SQL string in a Python file is `sql`).
    pub language: String,
    /// The file's own language (`python` for that SQL string).
    pub document_language: String,
    /// The file's path relative to the workspace root (what the models were trained on).
    pub path: String,
    pub prefix: String,
    pub suffix: String,
    pub repo_name: Option<String>,
    pub open_files: Vec<ContextFile>,
    pub recent_edits: Vec<RecentEdit>,
    pub max_new_tokens: usize,
    /// Tokens the prompt may take (within the model's context) and the context's share of them.
    pub prompt_tokens: usize,
    pub context_share: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextFile {
    pub path: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentEdit {
    pub path: String,
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Welcome {
        protocol: u32,
        pid: u32,
        /// What is loaded; `None` when loading failed (then `error` says why).
        model: Option<ModelSummary>,
        error: Option<String>,
    },
    Completed(Completed),
    Warmed(Warmed),
    Failed {
        id: u64,
        error: String,
        cancelled: bool,
    },
    Status(Status),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: String,
    pub path: PathBuf,
    pub family: String,
    pub quantization: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    pub id: u64,
    /// `None` when the model produced nothing worth showing.
    pub text: Option<String>,
    /// The base model, plus `+<language>/<adapter>` when an expert adapter was used.
    pub model_version: String,
    /// Mean log-probability of the generated tokens.
    pub confidence: f64,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    /// From the moment the daemon read the request (queueing included).
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warmed {
    pub id: u64,
    pub prompt_tokens: usize,
    /// Prompt tokens the cache already held; the rest were computed now.
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    /// From the moment the daemon read the request (waiting for served requests included).
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub id: u64,
    pub pid: u32,
    pub model: Option<ModelSummary>,
    /// Times a base model was loaded by this daemon (one, however many clients).
    pub model_loads: u32,
    pub clients: usize,
    pub completions: u64,
    /// Prompts computed ahead of a keystroke (`Warm` requests run to their end).
    pub warmed: u64,
    /// Adapters loaded so far, as `<language>/<name>`.
    pub adapters: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("unreadable message: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub async fn write<T: Serialize>(to: &mut (impl AsyncWrite + Unpin), message: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    to.write_all(&frame).await?;
    to.flush().await?;
    Ok(())
}

pub async fn read<T: for<'de> Deserialize<'de>>(from: &mut (impl AsyncRead + Unpin)) -> Result<T, FrameError> {
    let mut length = [0u8; 4];
    match from.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(FrameError::TooLarge(length));
    }
    // Grown as the bytes arrive: a header that claims 64 MiB and sends nothing costs nothing.
    let mut body = Vec::new();
    from.take(length as u64).read_to_end(&mut body).await?;
    if body.len() < length {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let hello = Request::Hello { protocol: PROTOCOL_VERSION, model: None, client: "test".into() };
        write(&mut a, &hello).await.unwrap();
        write(&mut a, &Request::Cancel { id: 7 }).await.unwrap();
        assert_eq!(read::<Request>(&mut b).await.unwrap(), hello);
        assert_eq!(read::<Request>(&mut b).await.unwrap(), Request::Cancel { id: 7 });

        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes()).await.unwrap();
        assert!(matches!(read::<Request>(&mut b).await, Err(FrameError::TooLarge(_))));
        // A frame cut short is an error, whatever length it claimed.
        a.write_all(&(MAX_FRAME as u32).to_be_bytes()).await.unwrap();
        a.write_all(b"{\"type\":").await.unwrap();
        drop(a);
        assert!(matches!(read::<Request>(&mut b).await, Err(FrameError::Io(_))));
        assert!(matches!(read::<Request>(&mut b).await, Err(FrameError::Closed)));
    }

    proptest::proptest! {
        /// Whatever a local process writes to the socket, reading it is an answer or an error.
        #[test]
        fn hostile_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            framed in proptest::prelude::any::<bool>(),
        ) {
            // Half the cases carry a true length, so the body itself reaches the JSON parser.
            let input = if framed { [&(bytes.len() as u32).to_be_bytes()[..], &bytes].concat() } else { bytes };
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut input = std::io::Cursor::new(input);
                for _ in 0..4 {
                    if read::<Request>(&mut input).await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        assert!(matches!(read::<Request>(&mut b).await, Err(FrameError::Json(_))));
    }
}
